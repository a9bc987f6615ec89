//! `X-Hub-Signature-256`: `sha256=` and the hex HMAC-SHA256 of the raw body under the
//! webhook's secret. Any configured secret may match, so a secret can be rotated (add
//! the new one, change it on GitHub, remove the old one) without refusing deliveries.

use secrecy::{ExposeSecret, SecretString};

use crate::intake::auth::{ct_eq_hex, hmac_sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing `X-Hub-Signature-256: sha256=<hex>`")]
    Missing,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks `header` (the value of `X-Hub-Signature-256`, if sent) against `body`.
pub fn verify(secrets: &[SecretString], header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
    let presented = header.and_then(|h| h.trim().strip_prefix("sha256=")).ok_or(SignatureError::Missing)?;
    let mut ok = false;
    for secret in secrets {
        // No early exit: the time taken does not depend on which secret matched.
        ok |= ct_eq_hex(&hmac_sha256(secret.expose_secret().as_bytes(), &[body]), presented);
    }
    if ok { Ok(()) } else { Err(SignatureError::Mismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published example ("Validating webhook deliveries").
    const SECRET: &str = "It's a Secret to Everybody";
    const PAYLOAD: &[u8] = b"Hello, World!";
    const SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_test_vector() {
        let secrets = [SecretString::from(SECRET)];
        assert_eq!(verify(&secrets, Some(SIGNATURE), PAYLOAD), Ok(()));
        assert_eq!(verify(&secrets, Some(SIGNATURE), b"Hello, World?"), Err(SignatureError::Mismatch));
        assert_eq!(
            verify(&secrets, Some(&SIGNATURE.replace("sha256=", "sha1=")), PAYLOAD),
            Err(SignatureError::Missing)
        );
        assert_eq!(verify(&secrets, None, PAYLOAD), Err(SignatureError::Missing));
        assert_eq!(verify(&secrets, Some("sha256=zz"), PAYLOAD), Err(SignatureError::Mismatch));
    }

    #[test]
    fn any_configured_secret_may_match() {
        let rotating = [SecretString::from("the new one"), SecretString::from(SECRET)];
        assert_eq!(verify(&rotating, Some(SIGNATURE), PAYLOAD), Ok(()));
        assert_eq!(verify(&[], Some(SIGNATURE), PAYLOAD), Err(SignatureError::Mismatch));
    }
}
