//! X.509 SVIDs: this process's mesh identity (a certificate whose one URI SAN is its
//! SPIFFE ID, with its private key) and the trust bundles peers are verified against.
//!
//! Three sources sit behind [`SvidSource`]: PEM files on disk ([`FileSource`]: cert-manager,
//! Istio, spiffe-helper or `inquest dev-ca`), the SPIFFE Workload API ([`WorkloadApiSource`])
//! and fixed material ([`MemorySource`], for tests). Every source publishes whole, checked
//! [`SvidMaterial`] values: a change that does not parse, or whose key does not fit its
//! certificate, never replaces the last good one.

mod files;
mod workload;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor, UnixTime};
use rustls::sign::CertifiedKey;
use spiffe::SpiffeId;
use tokio::sync::watch;
use x509_parser::extensions::GeneralName;

pub use files::{FileSource, POLL_INTERVAL, SvidFiles};
pub use workload::WorkloadApiSource;

use crate::config::{IdentityConfig, SvidConfig};
use crate::identity::devca::{self, DevCaError};

#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
    #[error("the certificate has no URI SAN; an SVID carries exactly one, its SPIFFE ID")]
    NoUriSan,
    #[error("the certificate has {0} URI SANs; an SVID carries exactly one")]
    SeveralUriSans(usize),
    #[error("the URI SAN `{uri}` is not a SPIFFE ID: {reason}")]
    NotSpiffeId { uri: String, reason: String },
    #[error("the SPIFFE ID `{0}` names a trust domain, not a workload (it has no path)")]
    NoWorkloadPath(String),
    #[error("the certificate is a CA certificate; an SVID's leaf must not be")]
    LeafIsCa,
    #[error("{what} holds no {expected}")]
    Empty { what: String, expected: &'static str },
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the private key does not fit the certificate or cannot be used: {0}")]
    Key(rustls::Error),
    #[error("the trust bundle of `{trust_domain}` holds an unusable CA certificate: {source}")]
    Bundle { trust_domain: String, source: webpki::Error },
    #[error("no trust bundle for the SVID's own trust domain `{0}`")]
    NoOwnBundle(String),
    #[error("no trust bundle for the peer's trust domain `{0}`")]
    UnknownTrustDomain(String),
    #[error("the certificate chain does not verify: {0}")]
    Chain(webpki::Error),
    #[error("identity.trust_domain is `{configured}` but the SVID `{spiffe_id}` belongs to `{actual}`")]
    TrustDomainMismatch { configured: String, actual: String, spiffe_id: String },
    #[error("no development SVID was issued for `{0}`")]
    NotIssued(String),
    #[error("SPIFFE Workload API: {0}")]
    WorkloadApi(#[from] spiffe::X509SourceError),
    #[error("development identities: {0}")]
    Dev(#[from] DevCaError),
}

/// Where this process gets its SVID and trust bundles. Sources follow rotation: each
/// handshake asks for [`SvidSource::current`], so a new certificate or bundle is used by
/// the next handshake without a restart.
pub trait SvidSource: Send + Sync + fmt::Debug {
    /// The material to use now. Cheap (an `Arc` clone): called on every handshake.
    fn current(&self) -> Arc<SvidMaterial>;

    /// Changes to the material, for whoever wants to log or react to a rotation.
    fn updates(&self) -> watch::Receiver<Arc<SvidMaterial>>;
}

/// Builds the SVID source the configuration names. `role_id` is the SPIFFE ID this role
/// uses with development identities (`spiffe://<trust_domain>/agent`, ...); files and the
/// Workload API carry their own ID. Must run inside a Tokio runtime: sources that follow
/// rotation do so from a background task, which ends when the source is dropped.
pub async fn source_from_config(
    cfg: &IdentityConfig,
    data_dir: &Path,
    role_id: &str,
) -> Result<Arc<dyn SvidSource>, SvidError> {
    let (source, kind): (Arc<dyn SvidSource>, &str) = match &cfg.svid {
        SvidConfig::Dev => {
            let paths = devca::ensure_dev_identities_with(data_dir, &cfg.trust_domain, &[role_id.to_string()])?;
            (Arc::new(paths.file_source(role_id)?), "dev")
        }
        SvidConfig::Files { cert_file, key_file, bundle_file } => {
            let files = SvidFiles {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
                bundle_file: bundle_file.clone(),
            };
            (Arc::new(FileSource::watch(files)?), "files")
        }
        SvidConfig::WorkloadApi { socket } => (Arc::new(WorkloadApiSource::connect(socket).await?), "workload_api"),
    };
    let material = source.current();
    // Every allow list is written in the configured trust domain; an SVID from another
    // one would fail every peer check, so say so now rather than at each handshake.
    if material.trust_domain() != cfg.trust_domain {
        return Err(SvidError::TrustDomainMismatch {
            configured: cfg.trust_domain.clone(),
            actual: material.trust_domain().to_string(),
            spiffe_id: material.spiffe_id().to_string(),
        });
    }
    tracing::info!(
        source = kind,
        spiffe_id = material.spiffe_id(),
        serial = material.serial(),
        not_after = %humantime::format_rfc3339_seconds(material.not_after()),
        "mesh identity loaded"
    );
    Ok(source)
}

/// One X.509 SVID with its private key, and the trust bundles (CA certificates per trust
/// domain) that peers' SVIDs are verified against.
#[derive(Clone)]
pub struct SvidMaterial {
    spiffe_id: String,
    trust_domain: String,
    key: Arc<CertifiedKey>,
    leaf: CertificateDer<'static>,
    bundles: BTreeMap<String, Vec<TrustAnchor<'static>>>,
    not_before: SystemTime,
    not_after: SystemTime,
    serial: String,
}

impl SvidMaterial {
    /// From PEM: the certificate chain (leaf first), its private key (PKCS#8, PKCS#1 or
    /// SEC1), and the CA certificates of the SVID's own trust domain.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8], bundle_pem: &[u8]) -> Result<SvidMaterial, SvidError> {
        let chain = pem_certs(chain_pem, "the certificate file")?;
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|source| SvidError::Read { path: "the key file".into(), source })?
            .ok_or_else(|| SvidError::Empty { what: "the key file".into(), expected: "private key" })?;
        let bundle = pem_certs(bundle_pem, "the bundle file")?;
        let leaf = chain
            .first()
            .ok_or_else(|| SvidError::Empty { what: "the certificate file".into(), expected: "certificate" })?;
        let trust_domain = parse_leaf(leaf)?.id.trust_domain_name().to_string();
        SvidMaterial::from_der(chain, key, BTreeMap::from([(trust_domain, bundle)]))
    }

    /// From DER: the chain (leaf first), its key, and CA certificates per trust domain
    /// (federated domains beside the SVID's own, which must be present).
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        bundles: BTreeMap<String, Vec<CertificateDer<'static>>>,
    ) -> Result<SvidMaterial, SvidError> {
        let leaf =
            chain.first().ok_or_else(|| SvidError::Empty { what: "the chain".into(), expected: "certificate" })?;
        let info = parse_leaf(leaf)?;
        let leaf = leaf.clone();
        let trust_domain = info.id.trust_domain_name().to_string();
        let key = CertifiedKey::from_der(chain, key, &crypto_provider()).map_err(SvidError::Key)?;
        let mut anchors = BTreeMap::new();
        for (domain, certs) in bundles {
            let parsed = certs
                .iter()
                .map(|der| webpki::anchor_from_trusted_cert(der).map(|a| a.to_owned()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| SvidError::Bundle { trust_domain: domain.clone(), source })?;
            anchors.insert(domain, parsed);
        }
        if anchors.get(&trust_domain).is_none_or(|a| a.is_empty()) {
            return Err(SvidError::NoOwnBundle(trust_domain));
        }
        Ok(SvidMaterial {
            spiffe_id: info.id.to_string(),
            trust_domain,
            key: Arc::new(key),
            leaf,
            bundles: anchors,
            not_before: info.not_before,
            not_after: info.not_after,
            serial: info.serial,
        })
    }

    pub fn spiffe_id(&self) -> &str {
        &self.spiffe_id
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The chain and signing key, as TLS presents them.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }

    /// The leaf certificate (DER).
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.leaf
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The leaf's serial number, hex with colons (as `openssl x509 -serial` groups it).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Trust domains this material can verify peers of.
    pub fn trust_domains(&self) -> impl Iterator<Item = &str> {
        self.bundles.keys().map(String::as_str)
    }

    /// Verifies a peer's SVID: its leaf carries one SPIFFE ID, and the chain leads to a CA
    /// in the bundle of that ID's trust domain, valid at `now` for `usage`. Returns the ID.
    /// Whether that ID may talk to us is the caller's decision.
    pub(crate) fn verify_peer(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<String, SvidError> {
        let id = parse_leaf(end_entity)?.id;
        let anchors = self
            .bundles
            .get(id.trust_domain_name())
            .ok_or_else(|| SvidError::UnknownTrustDomain(id.trust_domain_name().to_string()))?;
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(SvidError::Chain)?;
        let algorithms = crypto_provider().signature_verification_algorithms.all;
        cert.verify_for_usage(algorithms, anchors, intermediates, now, usage, None, None).map_err(SvidError::Chain)?;
        Ok(id.to_string())
    }
}

impl fmt::Debug for SvidMaterial {
    // By hand: the key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidMaterial")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &humantime::format_rfc3339_seconds(self.not_after))
            .field("trust_domains", &self.bundles.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The SPIFFE ID of an SVID's leaf certificate (DER). An SVID carries exactly one URI SAN,
/// a SPIFFE ID naming a workload (with a path), and is not a CA certificate.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Result<String, SvidError> {
    parse_leaf(cert).map(|info| info.id.to_string())
}

/// Fixed material, replaced by hand: for tests and for callers that manage rotation
/// themselves.
#[derive(Debug)]
pub struct MemorySource {
    tx: watch::Sender<Arc<SvidMaterial>>,
}

impl MemorySource {
    pub fn new(material: SvidMaterial) -> MemorySource {
        MemorySource { tx: watch::Sender::new(Arc::new(material)) }
    }

    /// Rotates: new handshakes use `material`.
    pub fn replace(&self, material: SvidMaterial) {
        self.tx.send_replace(Arc::new(material));
    }
}

impl SvidSource for MemorySource {
    fn current(&self) -> Arc<SvidMaterial> {
        self.tx.borrow().clone()
    }

    fn updates(&self) -> watch::Receiver<Arc<SvidMaterial>> {
        self.tx.subscribe()
    }
}

/// The one crypto provider of mesh TLS. Named explicitly: with both rustls backends
/// compiled into the dependency graph, rustls cannot pick a process default by itself.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: LazyLock<Arc<CryptoProvider>> =
        LazyLock::new(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    PROVIDER.clone()
}

/// What an SVID's leaf says about itself.
struct LeafInfo {
    id: SpiffeId,
    not_before: SystemTime,
    not_after: SystemTime,
    serial: String,
}

fn parse_leaf(der: &CertificateDer<'_>) -> Result<LeafInfo, SvidError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| SvidError::BadCertificate(e.to_string()))?;
    if cert.is_ca() {
        return Err(SvidError::LeafIsCa);
    }
    let san = cert.subject_alternative_name().map_err(|e| SvidError::BadCertificate(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let uri = match uris.as_slice() {
        [] => return Err(SvidError::NoUriSan),
        [one] => *one,
        several => return Err(SvidError::SeveralUriSans(several.len())),
    };
    let id = SpiffeId::new(uri).map_err(|e| SvidError::NotSpiffeId { uri: uri.to_string(), reason: e.to_string() })?;
    if id.path().is_empty() {
        return Err(SvidError::NoWorkloadPath(uri.to_string()));
    }
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    Ok(LeafInfo {
        id,
        not_before: at(cert.validity().not_before.timestamp()),
        not_after: at(cert.validity().not_after.timestamp()),
        serial: cert.raw_serial_as_string(),
    })
}

fn pem_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, SvidError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| SvidError::Read { path: what.to_string(), source })?;
    if certs.is_empty() {
        return Err(SvidError::Empty { what: what.to_string(), expected: "certificate" });
    }
    Ok(certs)
}

#[cfg(test)]
pub(crate) mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };

    use super::*;

    /// A CA and leaves it signs, as PEM, for tests of this module and its neighbours.
    pub(crate) struct TestCa {
        pub cert: rcgen::Certificate,
        key: KeyPair,
    }

    impl TestCa {
        pub(crate) fn new() -> TestCa {
            // Distinct names: a verifier then tells strangers by issuer, not by signature.
            static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut params = CertificateParams::default();
            params.distinguished_name.push(rcgen::DnType::CommonName, format!("test CA {n}"));
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            TestCa { cert: params.self_signed(&key).unwrap(), key }
        }

        /// A leaf with these SANs; returns (cert PEM, key PEM).
        pub(crate) fn leaf(&self, sans: Vec<SanType>, ca: bool) -> (String, String) {
            let mut params = CertificateParams::default();
            params.subject_alt_names = sans;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            params.is_ca = if ca { IsCa::Ca(BasicConstraints::Unconstrained) } else { IsCa::ExplicitNoCa };
            let key = KeyPair::generate().unwrap();
            let issuer = rcgen::Issuer::from_ca_cert_der(self.cert.der(), &self.key).unwrap();
            (params.signed_by(&key, &issuer).unwrap().pem(), key.serialize_pem())
        }

        pub(crate) fn svid(&self, id: &str) -> (String, String) {
            self.leaf(vec![uri(id)], false)
        }
    }

    pub(crate) fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        pem_certs(pem.as_bytes(), "test").unwrap().remove(0)
    }

    #[test]
    fn an_svid_carries_exactly_one_spiffe_id_naming_a_workload() {
        let ca = TestCa::new();
        let dns = || SanType::DnsName("agent.example".try_into().unwrap());
        // (case, SANs, is a CA, the SPIFFE ID or a piece of the error)
        type Case = (&'static str, Vec<SanType>, bool, Result<&'static str, &'static str>);
        let cases: Vec<Case> = vec![
            ("one SPIFFE ID", vec![uri("spiffe://inquest.local/agent")], false, Ok("spiffe://inquest.local/agent")),
            ("beside a DNS name", vec![dns(), uri("spiffe://td/ns/a/sa/b")], false, Ok("spiffe://td/ns/a/sa/b")),
            ("no SAN", vec![], false, Err("no URI SAN")),
            ("only a DNS name", vec![dns()], false, Err("no URI SAN")),
            ("two URIs", vec![uri("spiffe://td/a"), uri("spiffe://td/b")], false, Err("2 URI SANs")),
            ("an https URI", vec![uri("https://td/agent")], false, Err("not a SPIFFE ID")),
            ("a bad trust domain", vec![uri("spiffe://TD!/agent")], false, Err("not a SPIFFE ID")),
            ("no path", vec![uri("spiffe://td")], false, Err("no path")),
            ("a CA", vec![uri("spiffe://td/agent")], true, Err("CA certificate")),
        ];
        for (name, sans, is_ca, expected) in cases {
            let (cert, _) = ca.leaf(sans, is_ca);
            let got = spiffe_id_of(&der(&cert)).map_err(|e| e.to_string());
            match (expected, &got) {
                (Ok(id), Ok(got)) => assert_eq!(got, id, "{name}"),
                (Err(needle), Err(message)) => assert!(message.contains(needle), "{name}: {message}"),
                _ => panic!("{name}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    fn identity_config(trust_domain: &str, svid: SvidConfig) -> IdentityConfig {
        IdentityConfig { trust_domain: trust_domain.into(), svid, oidc: None, dev_login: false, extra_peers: vec![] }
    }

    #[tokio::test]
    async fn the_configuration_picks_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let dev = identity_config("inquest.local", SvidConfig::Dev);
        let source = source_from_config(&dev, dir.path(), "spiffe://inquest.local/server/spark").await.unwrap();
        assert_eq!(source.current().spiffe_id(), "spiffe://inquest.local/server/spark");

        let issued = dir.path().join("identity");
        let files = SvidConfig::Files {
            cert_file: issued.join("svid/agent.crt"),
            key_file: issued.join("svid/agent.key"),
            bundle_file: issued.join("bundle.crt"),
        };
        let source = source_from_config(&identity_config("inquest.local", files.clone()), dir.path(), "ignored").await;
        assert_eq!(source.unwrap().current().spiffe_id(), "spiffe://inquest.local/agent");
        let err = source_from_config(&identity_config("prod.example", files), dir.path(), "ignored").await.unwrap_err();
        assert!(matches!(err, SvidError::TrustDomainMismatch { .. }), "{err}");

        let socket = identity_config("inquest.local", SvidConfig::WorkloadApi { socket: "not an endpoint".into() });
        let err = source_from_config(&socket, dir.path(), "ignored").await.unwrap_err();
        assert!(matches!(err, SvidError::WorkloadApi(_)), "{err}");
    }

    #[test]
    fn material_checks_key_and_bundle_and_verifies_peers_by_trust_domain() {
        let ca = TestCa::new();
        let (cert, key) = ca.svid("spiffe://inquest.local/agent");
        let bundle = ca.cert.pem();
        let material = SvidMaterial::from_pem(cert.as_bytes(), key.as_bytes(), bundle.as_bytes()).unwrap();
        assert_eq!((material.spiffe_id(), material.trust_domain()), ("spiffe://inquest.local/agent", "inquest.local"));

        let (_, other_key) = ca.svid("spiffe://inquest.local/other");
        let mismatch = SvidMaterial::from_pem(cert.as_bytes(), other_key.as_bytes(), bundle.as_bytes());
        assert!(matches!(mismatch, Err(SvidError::Key(_))), "{mismatch:?}");
        let no_bundle = SvidMaterial::from_pem(cert.as_bytes(), key.as_bytes(), b"");
        assert!(matches!(no_bundle, Err(SvidError::Empty { .. })), "{no_bundle:?}");

        let now = UnixTime::now();
        let usage = webpki::KeyUsage::client_auth();
        let (peer, _) = ca.svid("spiffe://inquest.local/registry");
        assert_eq!(material.verify_peer(&der(&peer), &[], now, usage).unwrap(), "spiffe://inquest.local/registry");
        let (foreign, _) = ca.svid("spiffe://elsewhere.test/registry");
        let err = material.verify_peer(&der(&foreign), &[], now, usage).unwrap_err();
        assert!(matches!(err, SvidError::UnknownTrustDomain(ref td) if td == "elsewhere.test"), "{err:?}");
        let (stranger, _) = TestCa::new().svid("spiffe://inquest.local/registry");
        let err = material.verify_peer(&der(&stranger), &[], now, usage).unwrap_err();
        assert!(matches!(err, SvidError::Chain(webpki::Error::UnknownIssuer)), "{err:?}");
    }
}
