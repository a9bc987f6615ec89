//! Mesh mTLS over loopback: axum servers on port 0 behind `MtlsListener`, clients with
//! SVIDs from a development CA, identities read from files the way `inquest all` reads
//! them. Who may connect, who a client accepts, and rotation without a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::routing::get;
use axum::serve::Listener as _;
use inquest::identity::devca::{self, DevPaths};
use inquest::identity::mtls::{self, MtlsListener, MtlsPeer};
use inquest::identity::svid::{FileSource, SvidFiles, SvidSource};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{AlertDescription, CertificateError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

const TD: &str = "inquest.local";
const AGENT: &str = "spiffe://inquest.local/agent";
const REGISTRY: &str = "spiffe://inquest.local/registry";
const AIRFLOW: &str = "spiffe://inquest.local/server/airflow";
const PRESTO: &str = "spiffe://inquest.local/server/presto";
/// Issued by the same CA, named by no allow list.
const OUTSIDER: &str = "spiffe://inquest.local/test/outsider";

/// Development identities in a temporary data directory.
struct Mesh {
    dir: tempfile::TempDir,
    paths: DevPaths,
}

impl Mesh {
    fn new() -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let paths = devca::ensure_dev_identities_with(dir.path(), TD, &[OUTSIDER.to_string()]).unwrap();
        Mesh { dir, paths }
    }

    fn source(&self, id: &str) -> Arc<dyn SvidSource> {
        Arc::new(self.paths.file_source(id).unwrap())
    }

    fn client(&self, id: &str, expected_server: &[&str]) -> Arc<rustls::ClientConfig> {
        mtls::client_config(self.source(id), strings(expected_server)).unwrap()
    }
}

/// An axum server behind mTLS. `/whoami` answers with the SPIFFE ID the handler sees.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl Server {
    async fn start(source: Arc<dyn SvidSource>, allowed: &[&str]) -> Server {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = MtlsListener::new(tcp, mtls::server_config(source, strings(allowed)).unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let app = Router::new().route("/whoami", get(whoami)).with_state(hits.clone());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<MtlsPeer>())
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
        Server { addr, hits, shutdown }
    }

    fn url(&self) -> String {
        format!("https://{}/whoami", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn whoami(State(hits): State<Arc<AtomicUsize>>, ConnectInfo(peer): ConnectInfo<MtlsPeer>) -> String {
    hits.fetch_add(1, Ordering::SeqCst);
    assert!(peer.addr.ip().is_loopback());
    peer.spiffe_id.unwrap_or_else(|| "(none)".to_string())
}

/// What one connection got: the server's leaf certificate and the response body.
struct Exchange {
    server_leaf: CertificateDer<'static>,
    body: String,
}

/// Handshake, then one HTTP/1.1 request on the raw TLS stream. With TLS 1.3 the server
/// judges the client's certificate after the client's last flight, so its refusal
/// arrives as an alert on the first read: this reads to the end to see it.
async fn exchange(client: Arc<rustls::ClientConfig>, addr: SocketAddr) -> Result<Exchange, rustls::Error> {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(client).connect(ServerName::from(addr.ip()), tcp).await?;
        let server_leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned();
        tls.write_all(b"GET /whoami HTTP/1.1\r\nhost: mesh\r\nconnection: close\r\n\r\n").await?;
        let mut response = String::new();
        tls.read_to_string(&mut response).await?;
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        Ok::<_, std::io::Error>(Exchange { server_leaf, body })
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), attempt).await.expect("exchange timed out");
    outcome.map_err(|e| {
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()).cloned();
        inner.unwrap_or_else(|| panic!("not a TLS error: {e}"))
    })
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn serial(cert: &[u8]) -> String {
    x509_parser::parse_x509_certificate(cert).unwrap().1.raw_serial_as_string()
}

fn not_before(cert: &[u8]) -> i64 {
    x509_parser::parse_x509_certificate(cert).unwrap().1.validity().not_before.timestamp()
}

fn pem_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    rustls_pemfile::certs(&mut pem.as_slice()).next().unwrap().unwrap().to_vec()
}

#[tokio::test]
async fn allowed_clients_are_served_and_the_handler_sees_their_spiffe_id() {
    let mesh = Mesh::new();
    let server = Server::start(mesh.source(REGISTRY), &[AGENT, "spiffe://inquest.local/server/*"]).await;

    // Through reqwest, as roles call each other; by exact ID and by wildcard.
    for client_id in [AGENT, AIRFLOW] {
        let http = mtls::http_client(mesh.source(client_id), strings(&[REGISTRY])).unwrap();
        let response = http.get(server.url()).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), client_id);
    }
    // On the raw stream, with the server's own certificate in view.
    let got = exchange(mesh.client(AGENT, &[REGISTRY]), server.addr).await.unwrap();
    assert_eq!(got.body, AGENT);
    assert_eq!(got.server_leaf.as_ref(), pem_der(&mesh.paths.files(REGISTRY).unwrap().cert_file));
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_client_outside_the_allow_list_fails_the_handshake() {
    let mesh = Mesh::new();
    let other_ca = Mesh::new();
    let server = Server::start(mesh.source(REGISTRY), &[AGENT, "spiffe://inquest.local/server/*"]).await;

    // A valid SVID of our trust domain, named by no matcher: refused as access denied.
    let refused = exchange(mesh.client(OUTSIDER, &[REGISTRY]), server.addr).await.err();
    assert_eq!(refused, Some(rustls::Error::AlertReceived(AlertDescription::AccessDenied)));
    // The right SPIFFE ID from a CA the server does not trust (the client itself trusts
    // the server's CA): refused before any ID check.
    let forged = SvidFiles { bundle_file: mesh.paths.bundle.clone(), ..other_ca.paths.files(AGENT).unwrap().clone() };
    let stranger = mtls::client_config(Arc::new(FileSource::watch(forged).unwrap()), strings(&[REGISTRY])).unwrap();
    let refused = exchange(stranger, server.addr).await.err();
    assert!(matches!(refused, Some(rustls::Error::AlertReceived(_))), "{refused:?}");
    // The same through reqwest.
    let http = mtls::http_client(mesh.source(OUTSIDER), strings(&[REGISTRY])).unwrap();
    assert!(http.get(server.url()).send().await.is_err());

    assert_eq!(server.hits.load(Ordering::SeqCst), 0, "no refused client reached a handler");
}

#[tokio::test]
async fn a_client_refuses_a_server_with_another_spiffe_id() {
    let mesh = Mesh::new();
    let other_ca = Mesh::new();
    let server = Server::start(mesh.source(REGISTRY), &[AGENT]).await;

    // Connecting to 127.0.0.1 works; what counts is the SPIFFE ID in the certificate.
    for expected in [&[PRESTO][..], &["spiffe://inquest.local/server/*"][..]] {
        let refused = exchange(mesh.client(AGENT, expected), server.addr).await.err();
        let denied = rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        assert_eq!(refused, Some(denied), "expecting {expected:?}");
    }
    // The expected ID, but from a CA the client does not trust.
    let refused = exchange(other_ca.client(AGENT, &[REGISTRY]), server.addr).await.err();
    assert_eq!(refused, Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)));
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_rotated_svid_is_served_by_new_handshakes_without_restart() {
    let mesh = Mesh::new();
    // The server's SVID lives where cert-manager or spiffe-helper would write it.
    let mounted = mesh.dir.path().join("mounted");
    std::fs::create_dir(&mounted).unwrap();
    let issued = mesh.paths.files(REGISTRY).unwrap().clone();
    let files = SvidFiles {
        cert_file: mounted.join("tls.crt"),
        key_file: mounted.join("tls.key"),
        bundle_file: mounted.join("ca.crt"),
    };
    let copy = |from: &SvidFiles| {
        std::fs::copy(&from.key_file, &files.key_file).unwrap();
        std::fs::copy(&from.cert_file, &files.cert_file).unwrap();
        std::fs::copy(&from.bundle_file, &files.bundle_file).unwrap();
    };
    copy(&issued);
    let server = Server::start(Arc::new(FileSource::watch(files.clone()).unwrap()), &[AGENT]).await;
    let client = mesh.client(AGENT, &[REGISTRY]);
    let before = exchange(client.clone(), server.addr).await.unwrap().server_leaf;
    assert_eq!(before.as_ref(), pem_der(&issued.cert_file));

    // A new SVID for the same ID (new key, new serial), written over the old files in
    // place, one file after another, as a non-atomic writer would.
    tokio::time::sleep(Duration::from_millis(1100)).await; // a later notBefore second
    std::fs::remove_file(&issued.cert_file).unwrap();
    let reissued = devca::ensure_dev_identities(mesh.dir.path(), TD).unwrap();
    assert!(matches!(reissued.svids[1].status, devca::Issued::Created));
    copy(&issued);
    let rotated = pem_der(&issued.cert_file);

    let started = Instant::now();
    let after = loop {
        let leaf = exchange(client.clone(), server.addr).await.unwrap().server_leaf;
        if leaf.as_ref() != before.as_ref() || started.elapsed() > Duration::from_secs(10) {
            break leaf;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(serial(&after), serial(&rotated), "the rotated certificate is served");
    assert_ne!(serial(&after), serial(&before));
    assert!(after.as_ref() == rotated);
    assert!(not_before(&after) > not_before(&before));
    // Every handshake on the same listener and server task worked throughout.
    assert!(server.hits.load(Ordering::SeqCst) >= 2);
}
