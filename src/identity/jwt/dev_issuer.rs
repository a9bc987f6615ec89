//! The development issuer: a local ES256 key that mints user tokens for the embedded
//! default's development login, for tests and for the CLI.
//!
//! Its tokens go through the same [`JwtValidator`] as a real provider's, against its
//! static JWKS, so nothing downstream knows or cares where a token came from. The key
//! lives in `<data_dir>/identity/dev-issuer.pem` (mode 0600) so tokens survive restarts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::jwk::{EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::{JwtError, JwtValidator, ValidatorSettings};

/// Where the key lives, relative to the data directory.
pub const DEV_ISSUER_KEY_FILE: &str = "identity/dev-issuer.pem";

#[derive(Debug, thiserror::Error)]
pub enum DevIssuerError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the development issuer key {origin} is not a P-256 private key in PKCS#8 PEM: {reason}")]
    BadKey { origin: String, reason: String },
    #[error("generating the development issuer key: {0}")]
    Generate(String),
    #[error("signing a token: {0}")]
    Sign(String),
}

/// A local token issuer for development. Never trusted unless the caller enabled the
/// development login.
pub struct DevIssuer {
    issuer: String,
    kid: String,
    key: EncodingKey,
    jwks: JwkSet,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer").field("issuer", &self.issuer).field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// The issuer identifier for a server reached at `public_url`; its JWKS is served at
    /// `<issuer>/jwks.json`.
    pub fn issuer_for(public_url: &str) -> String {
        format!("{}/auth/dev", public_url.trim_end_matches('/'))
    }

    /// Loads the key from `<data_dir>/identity/dev-issuer.pem`, creating it first if it
    /// does not exist (safely against another process doing the same).
    pub fn load_or_create(data_dir: &Path, issuer: &str) -> Result<DevIssuer, DevIssuerError> {
        let path = data_dir.join(DEV_ISSUER_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(pem) => return DevIssuer::from_pem(issuer, &pem, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(DevIssuerError::Read { path, source }),
        }
        let pem = generate_pem()?;
        publish_new_file(&path, pem.as_bytes())?;
        // Whoever published first won; read back what is there.
        let pem =
            std::fs::read_to_string(&path).map_err(|source| DevIssuerError::Read { path: path.clone(), source })?;
        tracing::info!(path = %path.display(), "created the development issuer key");
        DevIssuer::from_pem(issuer, &pem, &path.display().to_string())
    }

    /// An issuer with a fresh key that lives only in memory (tests).
    pub fn generate(issuer: &str) -> Result<DevIssuer, DevIssuerError> {
        DevIssuer::from_pem(issuer, &generate_pem()?, "(generated)")
    }

    fn from_pem(issuer: &str, pem: &str, origin: &str) -> Result<DevIssuer, DevIssuerError> {
        let bad = |reason: String| DevIssuerError::BadKey { origin: origin.to_string(), reason };
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).map_err(|e| bad(e.to_string()))?;
        match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {}
            _ => return Err(bad("not a P-256 key".into())),
        }
        // The RFC 7638 thumbprint names the key stably across restarts.
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(|e| bad(e.to_string()))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        let issuer = issuer.to_string();
        Ok(DevIssuer { issuer, kid, key, jwks: JwkSet { keys: vec![jwk] } })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key set, as served at `<issuer>/jwks.json`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// A signed token for `subject` with `groups`, meant for `audience`, valid for `ttl`.
    pub fn mint(
        &self,
        subject: &str,
        groups: &[String],
        audience: &str,
        ttl: Duration,
    ) -> Result<String, DevIssuerError> {
        let now = chrono::Utc::now().timestamp();
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(ttl),
            "jti": uuid::Uuid::now_v7().to_string(),
            "groups": groups,
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| DevIssuerError::Sign(e.to_string()))
    }

    /// A validator for this issuer's tokens meant for `audience` (ES256 only, groups in
    /// `groups`), over its static JWKS.
    pub fn validator(&self, audience: &str) -> Result<JwtValidator, JwtError> {
        let settings = ValidatorSettings {
            algorithms: vec!["ES256".to_string()],
            ..ValidatorSettings::new(&self.issuer, audience)
        };
        JwtValidator::with_static_jwks(settings, &self.jwks)
    }
}

fn generate_pem() -> Result<String, DevIssuerError> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| DevIssuerError::Generate(e.to_string()))?;
    Ok(pair.serialize_pem())
}

/// Writes `bytes` to `path` only if no file is there, never leaving a partial file
/// where a reader could see it: write a private temporary file, then hard-link it into
/// place (which fails if another process got there first).
fn publish_new_file(path: &Path, bytes: &[u8]) -> Result<(), DevIssuerError> {
    let write_err = |source| DevIssuerError::Write { path: path.to_path_buf(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let tmp = dir.join(format!(".dev-issuer.{}.{}.tmp", std::process::id(), uuid::Uuid::now_v7().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn minted_tokens_validate_and_the_key_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = DevIssuer::issuer_for("http://127.0.0.1:7400/");
        assert_eq!(issuer, "http://127.0.0.1:7400/auth/dev");
        let first = DevIssuer::load_or_create(dir.path(), &issuer).unwrap();
        let token = first.mint("alice", &["sre".to_string()], "inquest", Duration::from_secs(60)).unwrap();

        let again = DevIssuer::load_or_create(dir.path(), &issuer).unwrap();
        assert_eq!(again.kid(), first.kid());
        let valid = again.validator("inquest").unwrap().validate(&token).await.unwrap();
        assert_eq!((valid.subject.as_str(), valid.groups.clone()), ("alice", vec!["sre".to_string()]));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DEV_ISSUER_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = DevIssuer::generate(&issuer).unwrap();
        assert!(other.validator("inquest").unwrap().validate(&token).await.is_err(), "another key, another kid");
    }
}
