//! Mutual TLS between roles, authorized by SPIFFE ID.
//!
//! Both sides present the current SVID of their [`SvidSource`] and verify the peer's
//! chain against the current trust bundle of the peer's trust domain; then the server
//! checks the client's SPIFFE ID against its allow list, and the client checks the
//! server's SPIFFE ID against the IDs it expects. DNS names play no part: connecting to
//! `127.0.0.1` works, and a certificate valid for the right host name but carrying the
//! wrong SPIFFE ID is refused. Certificates, keys and bundles are read at each handshake,
//! so a rotation takes effect on the next connection without a restart.
//!
//! Allow lists use the matchers of [`crate::policy::matches`]: exact SPIFFE IDs,
//! `spiffe://<td>/<prefix>/*` wildcards, and `*` for any peer with a verified SVID.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use crate::identity::Principal;
use crate::identity::svid::{self, SvidError, SvidSource};
use crate::web::listener::TlsListener;

#[derive(Debug, thiserror::Error)]
pub enum MtlsError {
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// A server configuration that requires a client SVID and admits only the SPIFFE IDs
/// `allowed` matches. A client outside the list fails the handshake (alert
/// `access_denied`). ALPN offers h2 and http/1.1.
pub fn server_config(
    source: Arc<dyn SvidSource>,
    allowed: Vec<String>,
) -> Result<Arc<rustls::ServerConfig>, MtlsError> {
    build_server_config(source, allowed, true)
}

/// As [`server_config`], but a client without a certificate is let in too (an MCP
/// server's listener: services present SVIDs, people's tools present bearer tokens).
/// A certificate that is presented is verified exactly as there.
pub fn server_config_client_optional(
    source: Arc<dyn SvidSource>,
    allowed: Vec<String>,
) -> Result<Arc<rustls::ServerConfig>, MtlsError> {
    build_server_config(source, allowed, false)
}

fn build_server_config(
    source: Arc<dyn SvidSource>,
    allowed: Vec<String>,
    mandatory: bool,
) -> Result<Arc<rustls::ServerConfig>, MtlsError> {
    let check = PeerCheck::new(source.clone(), allowed, webpki::KeyUsage::client_auth());
    let verifier = Arc::new(ClientVerifier(check, mandatory));
    let mut cfg = rustls::ServerConfig::builder_with_provider(svid::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(CurrentSvid(source)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // A resumed session skips certificate verification. Every connection proves itself
    // against the current bundle instead; handshakes between roles are few and cheap.
    cfg.session_storage = Arc::new(NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// A client configuration that presents this process's SVID and accepts a server only
/// if its SPIFFE ID matches one of `expected_server`. No ALPN is offered: the caller
/// sets what its HTTP stack speaks.
pub fn client_config(
    source: Arc<dyn SvidSource>,
    expected_server: Vec<String>,
) -> Result<Arc<rustls::ClientConfig>, MtlsError> {
    let verifier =
        Arc::new(ServerVerifier(PeerCheck::new(source.clone(), expected_server, webpki::KeyUsage::server_auth())));
    let mut cfg = rustls::ClientConfig::builder_with_provider(svid::crypto_provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(CurrentSvid(source)));
    // As on the server: no resumption, so every connection is verified in full.
    cfg.resumption = Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// An HTTP client that speaks mTLS with [`client_config`].
pub fn http_client(source: Arc<dyn SvidSource>, expected_server: Vec<String>) -> Result<reqwest::Client, MtlsError> {
    Ok(http_client_builder(source, expected_server)?.build()?)
}

/// As [`http_client`], for callers that set timeouts or other options first.
pub fn http_client_builder(
    source: Arc<dyn SvidSource>,
    expected_server: Vec<String>,
) -> Result<reqwest::ClientBuilder, MtlsError> {
    let mut tls = rustls::ClientConfig::clone(&*client_config(source, expected_server)?);
    // Our reqwest is built without HTTP/2; were h2 offered, a server could pick it.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder().tls_backend_preconfigured(tls))
}

/// An axum listener for mTLS: TCP accept, then the handshake off the accept loop, as
/// [`TlsListener`] does. Build its configuration with [`server_config`]; serve with
/// `into_make_service_with_connect_info::<MtlsPeer>()` so handlers see the peer.
pub struct MtlsListener(TlsListener);

impl MtlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<MtlsListener> {
        TlsListener::new(tcp, config).map(MtlsListener)
    }
}

impl axum::serve::Listener for MtlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.0.accept().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The peer of an mTLS connection, as handlers see it through `ConnectInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsPeer {
    pub addr: SocketAddr,
    /// The SPIFFE ID of the client's verified SVID. Always present behind a
    /// [`server_config`]; `None` only if the listener was given a configuration that
    /// does not require client certificates.
    pub spiffe_id: Option<String>,
}

impl Connected<IncomingStream<'_, MtlsListener>> for MtlsPeer {
    fn connect_info(stream: IncomingStream<'_, MtlsListener>) -> MtlsPeer {
        let (_, conn) = stream.io().get_ref();
        MtlsPeer { addr: *stream.remote_addr(), spiffe_id: peer_spiffe_id(conn) }
    }
}

/// The SPIFFE ID of a connection's peer, from the certificate the handshake verified.
pub fn peer_spiffe_id(conn: &rustls::CommonState) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    svid::spiffe_id_of(leaf).ok()
}

/// Presents the source's current SVID, on either side of a handshake.
#[derive(Debug)]
struct CurrentSvid(Arc<dyn SvidSource>);

impl ResolvesServerCert for CurrentSvid {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified_key().clone())
    }
}

impl ResolvesClientCert for CurrentSvid {
    fn resolve(&self, _root_hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified_key().clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies a peer's SVID against the current bundle, then its SPIFFE ID against a list.
#[derive(Debug)]
struct PeerCheck {
    source: Arc<dyn SvidSource>,
    allowed: Vec<String>,
    usage: webpki::KeyUsage,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerCheck {
    fn new(source: Arc<dyn SvidSource>, allowed: Vec<String>, usage: webpki::KeyUsage) -> PeerCheck {
        PeerCheck { source, allowed, usage, algorithms: svid::crypto_provider().signature_verification_algorithms }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<String, rustls::Error> {
        let material = self.source.current();
        let id = material.verify_peer(end_entity, intermediates, now, self.usage).map_err(|error| {
            tracing::warn!(%error, "peer SVID does not verify; handshake refused");
            rejection(error)
        })?;
        let principal = Principal::service(&id);
        if !self.allowed.iter().any(|m| crate::policy::matches(m, &principal)) {
            tracing::warn!(peer_spiffe_id = %id, allowed = ?self.allowed, "peer SPIFFE ID not allowed; handshake refused");
            return Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        }
        Ok(id)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

/// The server side: requires and checks client certificates.
#[derive(Debug)]
struct ClientVerifier(PeerCheck, bool);

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.1
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Bundles change at runtime and clients have one SVID to offer anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.check(end_entity, intermediates, now).map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algorithms.supported_schemes()
    }
}

/// The client side: checks the server's SVID, ignoring the name it was dialled by.
#[derive(Debug)]
struct ServerVerifier(PeerCheck);

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.check(end_entity, intermediates, now).map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algorithms.supported_schemes()
    }
}

/// The TLS error (and so the alert) for an SVID that does not verify.
fn rejection(error: SvidError) -> rustls::Error {
    let reason = match error {
        SvidError::UnknownTrustDomain(_) | SvidError::Chain(webpki::Error::UnknownIssuer) => {
            CertificateError::UnknownIssuer
        }
        SvidError::Chain(webpki::Error::CertExpired { .. }) => CertificateError::Expired,
        SvidError::Chain(webpki::Error::CertNotValidYet { .. }) => CertificateError::NotValidYet,
        SvidError::Chain(webpki::Error::InvalidSignatureForPublicKey) => CertificateError::BadSignature,
        SvidError::BadCertificate(_) | SvidError::Chain(webpki::Error::BadDer) => CertificateError::BadEncoding,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(reason)
}
