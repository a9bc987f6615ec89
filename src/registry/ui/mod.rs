//! The registry's web UI: server-rendered pages that work without JavaScript.
//!
//! Pages: the server catalog (filtered by what the viewer may use), a server page,
//! the approvals inbox and approval page, the audit log, and the usage dashboard.

pub mod charts;
mod pages;

pub(crate) use pages::origin_of;

use std::sync::OnceLock;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;

use super::RegistryState;

pub fn routes() -> Router<RegistryState> {
    pages::routes()
}

/// The templates, compiled once.
fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // Autoescaping follows the `.html` suffix; the files ship inside the binary.
        for (name, source) in [
            ("base.html", include_str!("templates/base.html")),
            ("catalog.html", include_str!("templates/catalog.html")),
            ("server.html", include_str!("templates/server.html")),
            ("approvals.html", include_str!("templates/approvals.html")),
            ("approval.html", include_str!("templates/approval.html")),
            ("audit.html", include_str!("templates/audit.html")),
            ("usage.html", include_str!("templates/usage.html")),
            ("login.html", include_str!("templates/login.html")),
            ("investigations.html", include_str!("templates/investigations.html")),
            ("investigation.html", include_str!("templates/investigation.html")),
            ("line.html", include_str!("templates/line.html")),
        ] {
            if let Err(error) = env.add_template(name, source) {
                tracing::error!(%error, template = name, "a built-in template does not compile");
            }
        }
        env
    })
}

/// Renders a piece of a page (an element sent over a live stream).
pub(crate) fn render_fragment(name: &str, ctx: serde_json::Value) -> Result<String, minijinja::Error> {
    let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
    templates().get_template(name).and_then(|t| t.render(ctx)).inspect_err(|error| {
        tracing::error!(%error, template = name, "rendering a fragment failed");
    })
}

/// Renders a page; a template error is a 500 with the error logged, never a panic.
pub(crate) fn render(name: &str, ctx: serde_json::Value) -> Response {
    let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
    match templates().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, template = name, "rendering a page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered; see the server log").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every page renders with representative data (a template error would be a 500).
    #[test]
    fn every_template_renders() {
        let server = json!({"name": "com.example/airflow", "version": "1.0.0", "title": "Airflow", "description": "d",
            "owner_team": "data", "support_channel": "#data", "security_review": "approved", "production_approved": true,
            "health": "healthy", "health_class": "ok", "latency_ms": 3, "health_error": null, "tools": ["list_dags"],
            "remotes": ["https://x/mcp"]});
        let approval = json!({"id": "a1", "kind": "tool_call", "state": "pending", "digest": "ab".repeat(32),
            "expires_at": "2026-11-26T10:00:00Z"});
        let pages = [
            (
                "catalog.html",
                json!({"nav": "catalog", "viewer": "Bob", "servers": [server.clone()], "q": "", "all_visible": false}),
            ),
            (
                "server.html",
                json!({"nav": "catalog", "viewer": "Bob", "s": server, "tools": [{"name": "t", "description": null, "hints": "read-only", "sensitive": true, "decision": "allowed"}]}),
            ),
            (
                "approvals.html",
                json!({"nav": "approvals", "viewer": "Bob", "approvals": [{"id": "a1", "digest": "ab".repeat(32), "expires_at": "x", "summary": "s", "requester": "r", "resource": "r"}]}),
            ),
            (
                "approval.html",
                json!({"nav": "approvals", "viewer": "Bob", "a": approval, "action": "{}", "resource": "r", "requester": "q", "approvers": "group:x", "required": 1, "decisions": ["d"], "can_decide": true, "reason": null, "state_class": "warn", "flash": "done"}),
            ),
            (
                "audit.html",
                json!({"nav": "audit", "viewer": "Bob", "entries": [{"seq": 1, "at": "t", "actor": "a", "action": "x", "subject": "s", "hash": "ab".repeat(32)}]}),
            ),
            (
                "usage.html",
                json!({"nav": "usage", "viewer": "Bob", "charts": [{"title": "t", "svg": "<svg></svg>"}], "rows": []}),
            ),
            ("login.html", json!({"nav": "", "viewer": null, "oidc": "x", "dev_login": true, "next": "/"})),
            (
                "investigations.html",
                json!({"nav": "investigations", "viewer": "Bob", "states": ["queued"], "q": {"state": "queued"},
                       "rows": [{"id": "i1", "title": "t", "team": "data", "service": null, "state": "queued",
                                 "state_class": "muted", "created_at": "c", "alerts": 1}]}),
            ),
            (
                "investigation.html",
                json!({"nav": "investigations", "viewer": "Bob", "status": "s", "last_seq": 2,
                       "i": {"id": "i1", "title": "t", "team": "data", "state": "completed", "state_class": "ok",
                             "created_at": "c", "alerts": 1},
                       "lines": [{"seq": 1, "kind": "tool.called", "text": "x", "detail": "{}", "at": "t",
                                  "approval": {"id": "a1", "url": "https://r/approvals/a1", "what": "w"}}]}),
            ),
        ];
        for (name, ctx) in pages {
            let rendered = templates()
                .get_template(name)
                .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(ctx))));
            assert!(rendered.is_ok(), "{name}: {:?}", rendered.err());
        }
    }
}
