//! `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:<timestamp>:<raw body>")>`,
//! with `X-Slack-Request-Timestamp` at most five minutes from now, so that a captured
//! request cannot be replayed later. Compared in constant time.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::intake::auth::{ct_eq_hex, hmac_sha256};

/// How far the request's timestamp may be from now, either way.
pub const WINDOW_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing or malformed `X-Slack-Request-Timestamp`")]
    BadTimestamp,
    #[error("the request's timestamp is more than {WINDOW_SECS} s from now; refusing a possible replay")]
    Stale,
    #[error("missing `X-Slack-Signature: v0=<hex>`")]
    Missing,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks a request Slack signed: `timestamp` and `signature` are the headers' values.
pub fn verify_signature(
    secret: &SecretString,
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| SignatureError::BadTimestamp)?;
    if (now.timestamp() - ts).abs() > WINDOW_SECS {
        return Err(SignatureError::Stale);
    }
    let presented = signature.trim().strip_prefix("v0=").ok_or(SignatureError::Missing)?;
    let expected = sign(secret.expose_secret().as_bytes(), timestamp.trim(), body);
    if ct_eq_hex(&expected, presented) { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// Checks a request's `X-Slack-Request-Timestamp` and `X-Slack-Signature` headers.
pub fn verify_request(
    secret: &SecretString,
    headers: &http::HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let timestamp = header("x-slack-request-timestamp").ok_or(SignatureError::BadTimestamp)?;
    let signature = header("x-slack-signature").ok_or(SignatureError::Missing)?;
    verify_signature(secret, timestamp, body, signature, now)
}

/// The v0 MAC of a request.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> [u8; 32] {
    hmac_sha256(secret, &[b"v0:", timestamp.as_bytes(), b":", body])
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's worked example ("Verifying requests from Slack"): a slash command's body.
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow\
&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect\
&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN\
&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn slacks_documented_example() {
        let secret = SecretString::from(SECRET);
        let now = at(1_531_420_618);
        assert_eq!(verify_signature(&secret, TIMESTAMP, BODY.as_bytes(), SIGNATURE, now), Ok(()));
        assert_eq!(hex::encode(sign(SECRET.as_bytes(), TIMESTAMP, BODY.as_bytes())), &SIGNATURE[3..]);
        let tampered = BODY.replace("roadrunner", "coyote");
        assert_eq!(
            verify_signature(&secret, TIMESTAMP, tampered.as_bytes(), SIGNATURE, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&SecretString::from("another"), TIMESTAMP, BODY.as_bytes(), SIGNATURE, now),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_window_is_five_minutes_either_way() {
        let secret = SecretString::from(SECRET);
        let body = BODY.as_bytes();
        for (now, expected) in [
            (1_531_420_618 + 300, Ok(())),
            (1_531_420_618 - 300, Ok(())),
            (1_531_420_618 + 301, Err(SignatureError::Stale)),
            (1_531_420_618 - 301, Err(SignatureError::Stale)),
        ] {
            assert_eq!(verify_signature(&secret, TIMESTAMP, body, SIGNATURE, at(now)), expected, "now = {now}");
        }
    }

    #[test]
    fn malformed_headers_are_named() {
        let secret = SecretString::from(SECRET);
        let now = at(1_531_420_618);
        let body = BODY.as_bytes();
        assert_eq!(verify_signature(&secret, "soon", body, SIGNATURE, now), Err(SignatureError::BadTimestamp));
        assert_eq!(verify_signature(&secret, TIMESTAMP, body, &SIGNATURE[3..], now), Err(SignatureError::Missing));
        assert_eq!(verify_signature(&secret, TIMESTAMP, body, "v1=abcd", now), Err(SignatureError::Missing));
        assert_eq!(verify_signature(&secret, TIMESTAMP, body, "v0=zz", now), Err(SignatureError::Mismatch));
    }
}
