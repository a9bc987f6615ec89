//! Server-side web sessions and logins in progress, kept in the store so that every
//! replica behind a load balancer sees them.
//!
//! Cookie values and `state`s are random 256-bit strings; the tables hold only their
//! SHA-256, so a leaked database row cannot be replayed as a cookie.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::clock::Clock;
use crate::identity::Principal;
use crate::store::SqlStore;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a stored session is unreadable: {0}")]
    Corrupt(String),
}

/// What the callback needs to finish a login that `/auth/login` began.
pub(crate) struct LoginAttempt {
    pub nonce: SecretString,
    pub code_verifier: SecretString,
    /// Where to send the browser afterwards (already checked to be a local path).
    pub next: String,
}

pub(crate) struct SessionStore {
    store: Arc<SqlStore>,
    clock: Arc<dyn Clock>,
}

impl SessionStore {
    pub fn new(store: Arc<SqlStore>, clock: Arc<dyn Clock>) -> SessionStore {
        SessionStore { store, clock }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Creates a session for `principal` and returns the cookie value naming it.
    pub async fn create(&self, principal: &Principal, via: &str, ttl: Duration) -> Result<SecretString, SessionError> {
        let id = random_token();
        let now = self.now_ms();
        let principal = serde_json::to_string(principal).map_err(|e| SessionError::Corrupt(e.to_string()))?;
        self.purge_expired(now).await?;
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, principal, via, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(digest(id.expose_secret()))
        .bind(principal)
        .bind(via)
        .bind(now)
        .bind(now.saturating_add(millis(ttl)))
        .execute(&self.store.write)
        .await?;
        Ok(id)
    }

    /// The principal of an unexpired session, if the cookie names one.
    pub async fn principal(&self, cookie_value: &str) -> Result<Option<Principal>, SessionError> {
        let row = sqlx::query("SELECT principal FROM web_sessions WHERE id_hash = $1 AND expires_at > $2")
            .bind(digest(cookie_value))
            .bind(self.now_ms())
            .fetch_optional(&self.store.read)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let text: String = row.try_get("principal")?;
        serde_json::from_str(&text).map(Some).map_err(|e| SessionError::Corrupt(e.to_string()))
    }

    pub async fn delete(&self, cookie_value: &str) -> Result<(), SessionError> {
        sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
            .bind(digest(cookie_value))
            .execute(&self.store.write)
            .await?;
        Ok(())
    }

    /// Records a login in progress under `state`.
    pub async fn begin_login(&self, state: &str, attempt: &LoginAttempt, ttl: Duration) -> Result<(), SessionError> {
        let now = self.now_ms();
        self.purge_expired(now).await?;
        sqlx::query(
            "INSERT INTO web_logins (state_hash, nonce, code_verifier, next_path, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(digest(state))
        .bind(attempt.nonce.expose_secret())
        .bind(attempt.code_verifier.expose_secret())
        .bind(&attempt.next)
        .bind(now)
        .bind(now.saturating_add(millis(ttl)))
        .execute(&self.store.write)
        .await?;
        Ok(())
    }

    /// Takes the unexpired login recorded under `state`; a second take finds nothing,
    /// so a callback URL works once.
    pub async fn take_login(&self, state: &str) -> Result<Option<LoginAttempt>, SessionError> {
        let row = sqlx::query(
            "DELETE FROM web_logins WHERE state_hash = $1 RETURNING nonce, code_verifier, next_path, expires_at",
        )
        .bind(digest(state))
        .fetch_optional(&self.store.write)
        .await?;
        let Some(row) = row else { return Ok(None) };
        if row.try_get::<i64, _>("expires_at")? <= self.now_ms() {
            return Ok(None);
        }
        Ok(Some(LoginAttempt {
            nonce: SecretString::from(row.try_get::<String, _>("nonce")?),
            code_verifier: SecretString::from(row.try_get::<String, _>("code_verifier")?),
            next: row.try_get("next_path")?,
        }))
    }

    /// Expired rows serve nobody; removing them as new ones arrive keeps both tables
    /// small without a background task.
    async fn purge_expired(&self, now: i64) -> Result<(), SessionError> {
        sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1").bind(now).execute(&self.store.write).await?;
        sqlx::query("DELETE FROM web_logins WHERE expires_at <= $1").bind(now).execute(&self.store.write).await?;
        Ok(())
    }
}

/// A random 256-bit value, base64url: session ids, `state`, `nonce`, PKCE verifiers.
pub(crate) fn random_token() -> SecretString {
    let bytes: [u8; 32] = rand::random();
    SecretString::from(URL_SAFE_NO_PAD.encode(bytes))
}

fn digest(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    async fn sessions() -> (tempfile::TempDir, SessionStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Arc::new(SqlStore::open(&url, 2).await.unwrap());
        (dir, SessionStore::new(store, Arc::new(SystemClock)))
    }

    #[tokio::test]
    async fn sessions_resolve_until_deleted_or_expired() {
        let (_dir, s) = sessions().await;
        let alice = Principal::user("alice", &["sre"]);
        let id = s.create(&alice, "dev", Duration::from_secs(60)).await.unwrap();
        assert_eq!(id.expose_secret().len(), 43, "256 bits, base64url");
        assert_eq!(s.principal(id.expose_secret()).await.unwrap(), Some(alice.clone()));
        assert_eq!(s.principal("not-a-session").await.unwrap(), None);
        s.delete(id.expose_secret()).await.unwrap();
        assert_eq!(s.principal(id.expose_secret()).await.unwrap(), None);

        let short = s.create(&alice, "dev", Duration::from_millis(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(s.principal(short.expose_secret()).await.unwrap(), None, "expired");
    }

    #[tokio::test]
    async fn a_login_is_taken_once() {
        let (_dir, s) = sessions().await;
        let attempt =
            LoginAttempt { nonce: random_token(), code_verifier: random_token(), next: "/approvals/1".to_string() };
        s.begin_login("state-1", &attempt, Duration::from_secs(60)).await.unwrap();
        let taken = s.take_login("state-1").await.unwrap().unwrap();
        assert_eq!(taken.next, "/approvals/1");
        assert_eq!(taken.nonce.expose_secret(), attempt.nonce.expose_secret());
        assert!(s.take_login("state-1").await.unwrap().is_none());
    }
}
