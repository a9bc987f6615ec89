//! Small stand-ins the registry tests share: a clock the test moves, and the
//! authentication layer's part played by a test header.

use std::sync::Mutex;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use inquest::clock::Clock;
use inquest::identity::Principal;

/// A clock that says what the test set (`*clock.0.lock().unwrap() += ...`).
pub struct TestClock(pub Mutex<DateTime<Utc>>);

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// What the authentication layer does in production, from a test header: the
/// `Principal` named in `x-test-principal` (JSON), if any.
pub async fn test_identity(mut req: Request, next: Next) -> Response {
    let principal =
        req.headers().get("x-test-principal").and_then(|v| serde_json::from_slice::<Principal>(v.as_bytes()).ok());
    if let Some(p) = principal {
        req.extensions_mut().insert(p);
    }
    next.run(req).await
}
