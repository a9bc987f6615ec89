//! `inquest dev-ca`: a development certificate authority in `<data_dir>/identity/` and the
//! X.509 SVIDs it issues, one per role, for the embedded default and for tests.
//! Production identities come from SPIRE, cert-manager or the mesh instead.
//!
//! Layout: `ca.crt` and `ca.key` (the CA), `bundle.crt` (the trust bundle), and per SPIFFE
//! ID `svid/<path>.crt` and `svid/<path>.key` (`svid/server/airflow.crt`).
//!
//! Idempotent: the CA is kept while it is usable, and an SVID is issued again only when
//! it is missing, unreadable, not from the current CA or near expiry. Files are written
//! beside their final name and renamed into place, key before certificate, so a running
//! [`FileSource`] never mixes a new certificate into a published SVID (it checks that the
//! key fits, and waits otherwise).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use spiffe::{SpiffeId, TrustDomain};

use crate::config::{Config, SvidConfig};
use crate::identity::svid::{FileSource, SvidError, SvidFiles, SvidMaterial};

/// The roles that get an SVID, as paths under the trust domain.
pub const ROLES: [&str; 5] = ["agent", "registry", "server/airflow", "server/presto", "server/spark"];

const DAY: Duration = Duration::from_secs(24 * 3600);
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const SVID_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// SVIDs with less than this left are issued again; a CA with less than an SVID's
/// lifetime left is replaced, so that no SVID outlives its issuer.
const SVID_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Backdating, so that a peer whose clock runs a little behind accepts a fresh SVID.
const BACKDATE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum DevCaError {
    #[error("`{0}` is not a trust domain name: {1}")]
    BadTrustDomain(String, String),
    #[error("`{id}` is not a workload SPIFFE ID: {reason}")]
    BadId { id: String, reason: String },
    #[error("`{id}` is outside the trust domain `{trust_domain}` the development CA serves")]
    ForeignTrustDomain { id: String, trust_domain: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("generating a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// What the development CA holds after [`ensure_dev_identities`].
#[derive(Debug, Clone)]
pub struct DevPaths {
    /// `<data_dir>/identity`.
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// The trust bundle every SVID is verified against (the CA certificate).
    pub bundle: PathBuf,
    pub ca: Issued,
    pub svids: Vec<DevSvid>,
}

/// One issued SVID.
#[derive(Debug, Clone)]
pub struct DevSvid {
    pub spiffe_id: String,
    pub files: SvidFiles,
    pub status: Issued,
}

/// What this run did to a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issued {
    Created,
    Renewed { reason: String },
    Kept,
}

impl DevPaths {
    /// The files of the SVID for `spiffe_id`, if one was issued.
    pub fn files(&self, spiffe_id: &str) -> Option<&SvidFiles> {
        self.svids.iter().find(|s| s.spiffe_id == spiffe_id).map(|s| &s.files)
    }

    /// A source following that SVID's files (re-issues by a later `dev-ca` run are picked
    /// up). Must run inside a Tokio runtime.
    pub fn file_source(&self, spiffe_id: &str) -> Result<FileSource, SvidError> {
        let files = self.files(spiffe_id).ok_or_else(|| SvidError::NotIssued(spiffe_id.to_string()))?;
        FileSource::watch(files.clone())
    }
}

/// `spiffe://<trust_domain>/<role>`.
pub fn role_id(trust_domain: &str, role: &str) -> String {
    format!("spiffe://{trust_domain}/{role}")
}

/// Creates the development CA if needed and issues an SVID for every role in [`ROLES`].
pub fn ensure_dev_identities(data_dir: &Path, trust_domain: &str) -> Result<DevPaths, DevCaError> {
    ensure_dev_identities_with(data_dir, trust_domain, &[])
}

/// As [`ensure_dev_identities`], with SVIDs for `extra_ids` too (SPIFFE IDs in the same
/// trust domain, e.g. a test client that no allow list names).
pub fn ensure_dev_identities_with(
    data_dir: &Path,
    trust_domain: &str,
    extra_ids: &[String],
) -> Result<DevPaths, DevCaError> {
    let td = TrustDomain::new(trust_domain)
        .map_err(|e| DevCaError::BadTrustDomain(trust_domain.to_string(), e.to_string()))?;
    let mut ids: Vec<String> = ROLES.iter().map(|r| role_id(trust_domain, r)).collect();
    for id in extra_ids {
        check_id(id, &td)?;
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    let dir = data_dir.join("identity");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    // Two processes starting on one data directory must not each create a CA.
    let lock_path = dir.join(".lock");
    let lock = File::create(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;

    let now = SystemTime::now();
    let (ca, ca_status) = DevCa::load_or_create(&dir, now)?;
    let bundle = dir.join("bundle.crt");
    if std::fs::read_to_string(&bundle).ok().as_deref() != Some(ca.cert_pem.as_str()) {
        write_atomically(&bundle, ca.cert_pem.as_bytes(), false)?;
    }
    let mut svids = Vec::with_capacity(ids.len());
    for id in ids {
        // `svid/<path>.crt` and `.key`: the SPIFFE path as directories, so that no two
        // IDs (`a/b`, `a-b`, `a`) and no certificate and key share a file name.
        let path = id.trim_start_matches(&format!("spiffe://{trust_domain}/"));
        let base = dir.join("svid").join(path);
        if let Some(parent) = base.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // Appended, not `with_extension`: a path like `svc.v2` has a dot of its own.
        let suffixed = |suffix: &str| {
            let mut name = base.clone().into_os_string();
            name.push(suffix);
            PathBuf::from(name)
        };
        let files = SvidFiles { cert_file: suffixed(".crt"), key_file: suffixed(".key"), bundle_file: bundle.clone() };
        let status = match ca.reason_to_issue(&id, &files, now) {
            None => Issued::Kept,
            Some(reason) => {
                ca.issue(&id, &files, now)?;
                if reason == MISSING { Issued::Created } else { Issued::Renewed { reason } }
            }
        };
        svids.push(DevSvid { spiffe_id: id, files, status });
    }
    Ok(DevPaths { ca_cert: dir.join("ca.crt"), ca_key: dir.join("ca.key"), bundle, dir, ca: ca_status, svids })
}

/// `inquest dev-ca`.
pub fn command(cfg: &Config, ids: &[String]) -> anyhow::Result<ExitCode> {
    use std::fmt::Write as _;
    let paths = ensure_dev_identities_with(&cfg.data_dir, &cfg.identity.trust_domain, ids)?;
    // Written in one piece, so that a closed pipe (`| head`) is an error, not a panic.
    let mut out = String::new();
    let _ = writeln!(out, "development CA in {} ({})", paths.dir.display(), describe(&paths.ca));
    let _ = writeln!(out, "  CA certificate  {}", paths.ca_cert.display());
    let _ = writeln!(out, "  CA key          {}", paths.ca_key.display());
    let _ = writeln!(out, "  trust bundle    {}", paths.bundle.display());
    for svid in &paths.svids {
        let _ = writeln!(out, "{} ({})", svid.spiffe_id, describe(&svid.status));
        let _ = writeln!(out, "  certificate     {}", svid.files.cert_file.display());
        let _ = writeln!(out, "  key             {}", svid.files.key_file.display());
    }
    if !matches!(cfg.identity.svid, SvidConfig::Dev) {
        out.push_str(
            "note: identity.svid.source is not \"dev\"; these files serve only where a \"files\" source names them\n",
        );
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn describe(status: &Issued) -> String {
    match status {
        Issued::Created => "created".to_string(),
        Issued::Renewed { reason } => format!("issued again: {reason}"),
        Issued::Kept => "kept".to_string(),
    }
}

const MISSING: &str = "missing";

/// The loaded CA: its certificate and key.
struct DevCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl DevCa {
    fn load_or_create(dir: &Path, now: SystemTime) -> Result<(DevCa, Issued), DevCaError> {
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        let reason = match (std::fs::read_to_string(&cert_path), std::fs::read_to_string(&key_path)) {
            (Ok(cert_pem), Ok(key_pem)) => match DevCa::parse(cert_pem, &key_pem, now) {
                Ok(ca) => return Ok((ca, Issued::Kept)),
                Err(reason) => reason,
            },
            _ => MISSING.to_string(),
        };
        tracing::info!(dir = %dir.display(), reason, "creating a development CA");
        let mut params = CertificateParams::default();
        // A name of its own: peers holding another dev CA's bundle then report an
        // unknown issuer rather than a bad signature from a namesake.
        params.distinguished_name = name(&format!("Inquest development CA {:x}", since_epoch(now).as_nanos()));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_VALIDITY).into();
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write_atomically(&key_path, key.serialize_pem().as_bytes(), true)?;
        write_atomically(&cert_path, cert.pem().as_bytes(), false)?;
        let ca = DevCa { cert_pem: cert.pem(), cert_der: cert.der().clone(), key };
        let status = if reason == MISSING { Issued::Created } else { Issued::Renewed { reason } };
        Ok((ca, status))
    }

    /// A usable CA from its files, or why not.
    fn parse(cert_pem: String, key_pem: &str, now: SystemTime) -> Result<DevCa, String> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| format!("the CA key is unreadable: {e}"))?;
        let cert_der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or("the CA certificate is unreadable")?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| format!("the CA certificate is unreadable: {e}"))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err("the CA key does not fit the CA certificate".into());
        }
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0));
        if not_after < now + SVID_VALIDITY {
            return Err("the CA expires before a new SVID would".into());
        }
        Ok(DevCa { cert_pem, cert_der, key })
    }

    /// Why the SVID for `id` in `files` must be issued (again), or `None` to keep it.
    fn reason_to_issue(&self, id: &str, files: &SvidFiles, now: SystemTime) -> Option<String> {
        let (Ok(cert), Ok(key)) = (std::fs::read(&files.cert_file), std::fs::read(&files.key_file)) else {
            return Some(MISSING.to_string());
        };
        let material = match SvidMaterial::from_pem(&cert, &key, self.cert_pem.as_bytes()) {
            Ok(m) => m,
            Err(error) => return Some(format!("unusable: {error}")),
        };
        if material.spiffe_id() != id {
            return Some(format!("it names {}", material.spiffe_id()));
        }
        let at = UnixTime::since_unix_epoch(since_epoch(now));
        if let Err(error) = material.verify_peer(material.leaf(), &[], at, webpki::KeyUsage::client_auth()) {
            return Some(format!("not valid under the current CA: {error}"));
        }
        if material.not_after() < now + SVID_RENEW_BEFORE {
            let days = material.not_after().duration_since(now).unwrap_or_default().as_secs() / DAY.as_secs();
            return Some(format!("expires in {days} days"));
        }
        None
    }

    fn issue(&self, id: &str, files: &SvidFiles, now: SystemTime) -> Result<(), DevCaError> {
        self.issue_valid_for(id, files, now, SVID_VALIDITY)
    }

    fn issue_valid_for(
        &self,
        id: &str,
        files: &SvidFiles,
        now: SystemTime,
        validity: Duration,
    ) -> Result<(), DevCaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(id);
        params.subject_alt_names = vec![SanType::URI(id.try_into()?)];
        // The X.509-SVID specification has leaves state `cA=false` explicitly, and
        // strict verifiers (go-spiffe, the spiffe crate) insist on it.
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every role is both a server and a client of other roles.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + validity).into();
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)?;
        let cert = params.signed_by(&key, &issuer)?;
        write_atomically(&files.key_file, key.serialize_pem().as_bytes(), true)?;
        write_atomically(&files.cert_file, cert.pem().as_bytes(), false)?;
        tracing::debug!(spiffe_id = id, cert_file = %files.cert_file.display(), "development SVID issued");
        Ok(())
    }
}

fn check_id(id: &str, td: &TrustDomain) -> Result<(), DevCaError> {
    let parsed = SpiffeId::new(id).map_err(|e| DevCaError::BadId { id: id.to_string(), reason: e.to_string() })?;
    if parsed.path().is_empty() {
        return Err(DevCaError::BadId { id: id.to_string(), reason: "it has no path".into() });
    }
    // The verifier looks up the bundle by the peer's trust domain, and the dev CA's
    // bundle is filed under ours: an SVID elsewhere would never verify.
    if parsed.trust_domain() != td {
        return Err(DevCaError::ForeignTrustDomain { id: id.to_string(), trust_domain: td.to_string() });
    }
    Ok(())
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Inquest development");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DevCaError + '_ {
    move |source| DevCaError::Io { path: path.display().to_string(), source }
}

/// Writes beside `path`, then renames into place: readers see the old file or the new
/// one, never a part. Private keys are readable by the owner only.
fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> Result<(), DevCaError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TD: &str = "inquest.local";

    fn statuses(paths: &DevPaths) -> Vec<(String, Issued)> {
        paths.svids.iter().map(|s| (s.spiffe_id.clone(), s.status.clone())).collect()
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn creates_every_role_once_then_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_identities(dir.path(), TD).unwrap();
        assert_eq!(first.ca, Issued::Created);
        let ids: Vec<String> = ROLES.iter().map(|r| role_id(TD, r)).collect();
        assert_eq!(statuses(&first), ids.iter().map(|id| (id.clone(), Issued::Created)).collect::<Vec<_>>());
        for svid in &first.svids {
            let m = SvidMaterial::from_pem(
                &read(&svid.files.cert_file),
                &read(&svid.files.key_file),
                &read(&svid.files.bundle_file),
            )
            .unwrap();
            assert_eq!(m.spiffe_id(), svid.spiffe_id);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.svids[0].files.key_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert_eq!(std::fs::metadata(&first.ca_key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let ca_before = read(&first.ca_cert);
        let agent_before = read(&first.svids[0].files.cert_file);

        let again = ensure_dev_identities(dir.path(), TD).unwrap();
        assert_eq!(again.ca, Issued::Kept);
        assert_eq!(statuses(&again), ids.iter().map(|id| (id.clone(), Issued::Kept)).collect::<Vec<_>>());
        assert_eq!(read(&again.ca_cert), ca_before);
        assert_eq!(read(&again.svids[0].files.cert_file), agent_before);
    }

    #[test]
    fn issues_again_only_what_is_missing_broken_or_near_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_identities(dir.path(), TD).unwrap();
        let [agent, registry, airflow, presto, _spark] = &first.svids[..] else { panic!("five roles") };
        std::fs::remove_file(&agent.files.key_file).unwrap();
        std::fs::write(&registry.files.cert_file, "-----BEGIN CERTIFICATE-----\nAAAA").unwrap();
        // An SVID with ten days left, from the same CA.
        let ca = DevCa::parse(
            std::fs::read_to_string(&first.ca_cert).unwrap(),
            &std::fs::read_to_string(&first.ca_key).unwrap(),
            SystemTime::now(),
        )
        .unwrap();
        ca.issue_valid_for(&airflow.spiffe_id, &airflow.files, SystemTime::now(), 10 * DAY).unwrap();
        // A certificate for another ID in presto's files.
        std::fs::copy(&first.svids[4].files.cert_file, &presto.files.cert_file).unwrap();
        std::fs::copy(&first.svids[4].files.key_file, &presto.files.key_file).unwrap();
        let spark_before = read(&first.svids[4].files.cert_file);

        let again = ensure_dev_identities(dir.path(), TD).unwrap();
        assert_eq!(again.ca, Issued::Kept);
        let reasons: Vec<String> = again
            .svids
            .iter()
            .map(|s| match &s.status {
                Issued::Created => "created".to_string(),
                Issued::Renewed { reason } => reason.split(':').next().unwrap().to_string(),
                Issued::Kept => "kept".to_string(),
            })
            .collect();
        assert_eq!(reasons, ["created", "unusable", "expires in 9 days", "it names spiffe", "kept"]);
        assert_eq!(read(&again.svids[4].files.cert_file), spark_before);
    }

    #[test]
    fn a_new_ca_reissues_every_svid_and_extra_ids_join_the_set() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_identities(dir.path(), TD).unwrap();
        std::fs::remove_file(&first.ca_key).unwrap();
        let extra = "spiffe://inquest.local/test/outsider".to_string();
        let again = ensure_dev_identities_with(dir.path(), TD, std::slice::from_ref(&extra)).unwrap();
        assert_eq!(again.ca, Issued::Created);
        assert!(
            again.svids[..5]
                .iter()
                .all(|s| matches!(&s.status, Issued::Renewed { reason } if reason.contains("current CA")))
        );
        assert_eq!((again.svids[5].spiffe_id.as_str(), &again.svids[5].status), (extra.as_str(), &Issued::Created));
        assert!(again.files(&extra).unwrap().cert_file.ends_with("identity/svid/test/outsider.crt"));

        let foreign = ensure_dev_identities_with(dir.path(), TD, &["spiffe://elsewhere.test/x".to_string()]);
        assert!(matches!(foreign, Err(DevCaError::ForeignTrustDomain { .. })), "{foreign:?}");
        let bare = ensure_dev_identities_with(dir.path(), TD, &["spiffe://inquest.local".to_string()]);
        assert!(matches!(bare, Err(DevCaError::BadId { .. })), "{bare:?}");
    }
}
