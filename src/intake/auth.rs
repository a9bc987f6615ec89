//! Who may send alerts: bearer tokens, Grafana HMAC, PagerDuty `v1=` signatures.
//!
//! Every comparison of a secret against what a caller sent runs in constant time.
//! The decision is a pure function of the configuration, the headers and the body.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Source;
use crate::config::IntakeConfig;

/// Why a request was refused; the text goes back to the sender, so it names what is
/// wrong without revealing anything about the secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send `Authorization: Bearer <token>`")]
    MissingBearer,
    #[error("the bearer token is not one this source accepts")]
    BadBearer,
    #[error("missing signature header `{0}`")]
    MissingSignature(String),
    #[error("the signature does not match the body")]
    BadSignature,
    #[error("missing or malformed timestamp header `{0}`")]
    BadTimestamp(String),
    #[error("the timestamp is more than {0:?} away from now; refusing a possible replay")]
    StaleTimestamp(Duration),
    #[error(
        "no credentials are configured for this source, and unauthenticated alerts are accepted only from this machine"
    )]
    NotLoopback,
}

/// Checks a request for `source`. With no credentials configured for the source, only
/// loopback peers are accepted (the embedded default).
pub fn authenticate(
    cfg: &IntakeConfig,
    source: Source,
    headers: &HeaderMap,
    body: &[u8],
    peer: Option<SocketAddr>,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    match source {
        Source::Alertmanager => bearer_or_loopback(&cfg.alertmanager.tokens, headers, peer),
        Source::Generic => bearer_or_loopback(&cfg.generic.tokens, headers, peer),
        Source::Grafana => {
            let g = &cfg.grafana;
            match &g.hmac_secret {
                Some(secret) => verify_grafana(
                    secret,
                    &g.signature_header,
                    g.timestamp_header.as_deref(),
                    g.max_skew,
                    headers,
                    body,
                    now,
                ),
                None => bearer_or_loopback(&g.tokens, headers, peer),
            }
        }
        Source::Pagerduty => {
            let secrets = &cfg.pagerduty.signing_secrets;
            if secrets.is_empty() {
                return loopback_only(peer);
            }
            let header = header_str(headers, "x-pagerduty-signature")
                .ok_or_else(|| AuthError::MissingSignature("X-PagerDuty-Signature".into()))?;
            verify_pagerduty(secrets, header, body)
        }
    }
}

fn bearer_or_loopback(tokens: &[SecretString], headers: &HeaderMap, peer: Option<SocketAddr>) -> Result<(), AuthError> {
    if tokens.is_empty() {
        return loopback_only(peer);
    }
    let presented = header_str(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .ok_or(AuthError::MissingBearer)?;
    if tokens.iter().any(|t| ct_eq_str(t.expose_secret(), presented.trim())) {
        Ok(())
    } else {
        Err(AuthError::BadBearer)
    }
}

fn loopback_only(peer: Option<SocketAddr>) -> Result<(), AuthError> {
    match peer {
        Some(p) if p.ip().is_loopback() => Ok(()),
        _ => Err(AuthError::NotLoopback),
    }
}

/// Grafana: hex HMAC-SHA256 of the body, or of `"<timestamp>:<body>"` when a timestamp
/// header is configured (then the timestamp must be within `max_skew` of now).
pub fn verify_grafana(
    secret: &SecretString,
    signature_header: &str,
    timestamp_header: Option<&str>,
    max_skew: Duration,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    let sig =
        header_str(headers, signature_header).ok_or_else(|| AuthError::MissingSignature(signature_header.into()))?;
    let expected = match timestamp_header {
        None => hmac_sha256(secret.expose_secret().as_bytes(), &[body]),
        Some(name) => {
            let ts_text = header_str(headers, name).ok_or_else(|| AuthError::BadTimestamp(name.into()))?;
            let ts: i64 = ts_text.trim().parse().map_err(|_| AuthError::BadTimestamp(name.into()))?;
            // Grafana sends seconds; tolerate milliseconds too.
            let ts_secs = if ts > 100_000_000_000 { ts / 1000 } else { ts };
            if (now.timestamp() - ts_secs).unsigned_abs() > max_skew.as_secs() {
                return Err(AuthError::StaleTimestamp(max_skew));
            }
            hmac_sha256(secret.expose_secret().as_bytes(), &[ts_text.trim().as_bytes(), b":", body])
        }
    };
    if ct_eq_hex(&expected, sig.trim().strip_prefix("sha256=").unwrap_or(sig.trim())) {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// PagerDuty: the header holds one or more comma-separated `v1=<hex>`; any signature
/// made with any configured secret is accepted, so secrets rotate without downtime.
pub fn verify_pagerduty(secrets: &[SecretString], header: &str, body: &[u8]) -> Result<(), AuthError> {
    let presented: Vec<&str> = header.split(',').filter_map(|part| part.trim().strip_prefix("v1=")).collect();
    if presented.is_empty() {
        return Err(AuthError::MissingSignature("X-PagerDuty-Signature (v1=...)".into()));
    }
    let mut ok = false;
    for secret in secrets {
        let expected = hmac_sha256(secret.expose_secret().as_bytes(), &[body]);
        for sig in &presented {
            // No early exit: the time taken does not depend on which one matched.
            ok |= ct_eq_hex(&expected, sig);
        }
    }
    if ok { Ok(()) } else { Err(AuthError::BadSignature) }
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail; the fallback keeps the
    // function total without an unwrap.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0u8; 32],
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Compares a MAC with a hex string from a header, in constant time.
pub fn ct_eq_hex(expected: &[u8; 32], presented_hex: &str) -> bool {
    match hex::decode(presented_hex) {
        Ok(bytes) if bytes.len() == expected.len() => bool::from(bytes.as_slice().ct_eq(expected)),
        _ => false,
    }
}

/// Compares two secrets in constant time, also hiding their lengths by comparing digests.
pub fn ct_eq_str(a: &str, b: &str) -> bool {
    let da = Sha256::digest(a.as_bytes());
    let db = Sha256::digest(b.as_bytes());
    bool::from(da.as_slice().ct_eq(db.as_slice()))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hmac_known_answers() {
        // GitHub's published vector for X-Hub-Signature-256.
        assert_eq!(
            hex::encode(hmac_sha256(b"It's a Secret to Everybody", &[b"Hello, World!"])),
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        // RFC 4231 test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn pagerduty_accepts_any_matching_v1_signature() {
        let body = br#"{"event":{}}"#;
        let old = secret("old-secret");
        let new = secret("new-secret");
        let sig_new = hex::encode(hmac_sha256(b"new-secret", &[body]));
        let header = format!("v1=deadbeef,v1={sig_new}");
        assert_eq!(verify_pagerduty(&[old.clone(), new.clone()], &header, body), Ok(()));
        assert_eq!(verify_pagerduty(std::slice::from_ref(&old), &header, body), Err(AuthError::BadSignature));
        assert_eq!(verify_pagerduty(std::slice::from_ref(&new), &header, b"tampered"), Err(AuthError::BadSignature));
        assert!(matches!(verify_pagerduty(&[new], "sha256=abc", body), Err(AuthError::MissingSignature(_))));
    }

    #[test]
    fn grafana_body_and_timestamped_signatures() {
        let body = br#"{"status":"firing"}"#;
        let now = DateTime::from_timestamp(1_764_150_000, 0).unwrap();
        let s = secret("grafana-secret");
        let plain = hex::encode(hmac_sha256(b"grafana-secret", &[body]));
        let h = headers(&[("x-grafana-alerting-signature", &plain)]);
        let skew = Duration::from_secs(300);
        assert_eq!(verify_grafana(&s, "X-Grafana-Alerting-Signature", None, skew, &h, body, now), Ok(()));
        assert_eq!(
            verify_grafana(&s, "X-Grafana-Alerting-Signature", None, skew, &h, b"other", now),
            Err(AuthError::BadSignature)
        );
        let ts = "1764150000";
        let with_ts = hex::encode(hmac_sha256(b"grafana-secret", &[ts.as_bytes(), b":", body]));
        let h = headers(&[("x-sig", &with_ts), ("x-ts", ts)]);
        assert_eq!(verify_grafana(&s, "X-Sig", Some("X-Ts"), skew, &h, body, now), Ok(()));
        let later = now + chrono::Duration::seconds(301);
        assert_eq!(
            verify_grafana(&s, "X-Sig", Some("X-Ts"), skew, &h, body, later),
            Err(AuthError::StaleTimestamp(skew))
        );
        let h = headers(&[("x-sig", &with_ts)]);
        assert_eq!(
            verify_grafana(&s, "X-Sig", Some("X-Ts"), skew, &h, body, now),
            Err(AuthError::BadTimestamp("X-Ts".into()))
        );
    }

    #[test]
    fn bearer_tokens_and_loopback() {
        let tokens = [secret("t1"), secret("t2")];
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let remote: SocketAddr = "192.0.2.1:1".parse().unwrap();
        assert_eq!(bearer_or_loopback(&tokens, &headers(&[("authorization", "Bearer t2")]), Some(remote)), Ok(()));
        assert_eq!(
            bearer_or_loopback(&tokens, &headers(&[("authorization", "Bearer t3")]), Some(lo)),
            Err(AuthError::BadBearer)
        );
        assert_eq!(bearer_or_loopback(&tokens, &headers(&[]), Some(lo)), Err(AuthError::MissingBearer));
        assert_eq!(bearer_or_loopback(&[], &headers(&[]), Some(lo)), Ok(()));
        assert_eq!(bearer_or_loopback(&[], &headers(&[]), Some(remote)), Err(AuthError::NotLoopback));
    }
}
