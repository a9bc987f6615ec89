//! The page handlers. Each reads through the same stores, policy and approval
//! service as the JSON API, so a page never shows or allows more than the API would.

use std::collections::BTreeMap;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::Datelike;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::RegistryState;
use super::super::approvals::{self, ApprovalContext};
use super::super::audit::AuditLog;
use super::super::catalog::CatalogStore;
use super::super::usage::{self, UsageStore};
use super::{charts, render};
use crate::identity::Principal;
use crate::policy::{self, Decision};

pub fn routes() -> Router<RegistryState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/registry") }))
        .route("/login", get(login))
        .route("/registry", get(catalog))
        .route("/registry/servers/{name}", get(server))
        .route("/approvals", get(inbox))
        .route("/approvals/{id}", get(approval))
        .route("/approvals/{id}/decide", post(decide))
        .route("/audit", get(audit))
        .route("/usage", get(usage_page))
}

/// The viewer, or a redirect to the login that comes back here.
fn viewer(principal: Option<&Principal>, uri: &Uri) -> Result<Principal, Redirect> {
    principal.cloned().ok_or_else(|| {
        let next = uri.path_and_query().map_or("/", |p| p.as_str());
        Redirect::to(&format!("/auth/login?next={}", urlencode(next)))
    })
}

fn urlencode(s: &str) -> String {
    crate::percent::encode_keeping_slashes(s)
}

fn failure(status: StatusCode, message: impl std::fmt::Display) -> Response {
    tracing::warn!(%message, "a page failed");
    (status, format!("{message}")).into_response()
}

fn is_admin(state: &RegistryState, p: &Principal) -> bool {
    policy::any_matches(&state.config.admins, p)
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login(Query(q): Query<LoginQuery>) -> Response {
    let next = q.next.unwrap_or_else(|| "/registry".to_string());
    Redirect::to(&format!("/auth/login?next={}", urlencode(&next))).into_response()
}

#[derive(Debug, Deserialize)]
struct CatalogQuery {
    q: Option<String>,
}

async fn catalog(
    State(state): State<RegistryState>,
    principal: Option<axum::Extension<Principal>>,
    uri: Uri,
    Query(query): Query<CatalogQuery>,
) -> Response {
    let viewer = match viewer(principal.as_deref(), &uri) {
        Ok(p) => p,
        Err(redirect) => return redirect.into_response(),
    };
    if let Err(e) = state.policy.ensure_fresh(&*state.store).await {
        return failure(StatusCode::SERVICE_UNAVAILABLE, e);
    }
    let entries = match state.store.latest_entries().await {
        Ok(e) => e,
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let admin = is_admin(&state, &viewer);
    let q = query.q.unwrap_or_default();
    let needle = q.to_lowercase();
    let mut servers = Vec::new();
    for entry in entries {
        let decision = state.policy.decide(&entry.name, &viewer, None);
        if matches!(decision, Decision::Deny { .. }) && !admin {
            continue;
        }
        let summary = server_summary(&state, &entry, &viewer);
        let haystack = format!("{} {} {}", entry.name, summary["title"], summary["description"]).to_lowercase();
        if needle.is_empty() || haystack.contains(&needle) {
            servers.push(summary);
        }
    }
    render(
        "catalog.html",
        json!({ "nav": "catalog", "viewer": viewer.display(), "servers": servers, "q": q, "all_visible": admin }),
    )
}

/// What the catalog and the server page show about one server, for `viewer`.
fn server_summary(state: &RegistryState, entry: &super::super::catalog::CatalogEntry, viewer: &Principal) -> Value {
    let ext = &entry.ext;
    let text = |key: &str| entry.server.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    let tools: Vec<String> = ext
        .tools
        .items
        .iter()
        .filter(|t| !matches!(state.policy.decide(&entry.name, viewer, Some(&t.name)), Decision::Deny { .. }))
        .map(|t| t.name.clone())
        .collect();
    let health = serde_json::to_value(&ext.health).unwrap_or(Value::Null);
    let status = health["status"].as_str().unwrap_or("unknown").to_string();
    let health_class = match status.as_str() {
        "healthy" => "ok",
        "degraded" => "warn",
        "unreachable" => "bad",
        _ => "muted",
    };
    let review = serde_json::to_value(&ext.security_review).unwrap_or(Value::Null);
    let production = serde_json::to_value(&ext.production).unwrap_or(Value::Null);
    let owner = serde_json::to_value(&ext.owner).unwrap_or(Value::Null);
    let remotes: Vec<String> = entry
        .server
        .get("remotes")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(|x| x["url"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    json!({
        "name": entry.name, "version": entry.version, "title": text("title"), "description": text("description"),
        "owner_team": owner["team"], "support_channel": owner["support_channel"],
        "security_review": review["state"], "production_approved": production["state"] == "approved",
        "health": status, "health_class": health_class, "latency_ms": health["latency_ms"], "health_error": health["error"],
        "tools": tools, "remotes": remotes,
    })
}

async fn server(
    State(state): State<RegistryState>,
    principal: Option<axum::Extension<Principal>>,
    uri: Uri,
    Path(name): Path<String>,
) -> Response {
    let viewer = match viewer(principal.as_deref(), &uri) {
        Ok(p) => p,
        Err(redirect) => return redirect.into_response(),
    };
    if let Err(e) = state.policy.ensure_fresh(&*state.store).await {
        return failure(StatusCode::SERVICE_UNAVAILABLE, e);
    }
    let entry = match state.store.version(&name, "latest").await {
        Ok(Some(e)) => e,
        Ok(None) => return failure(StatusCode::NOT_FOUND, format!("no server {name}")),
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let decision = state.policy.decide(&entry.name, &viewer, None);
    if matches!(decision, Decision::Deny { .. }) && !is_admin(&state, &viewer) {
        // The same answer as for a server that does not exist: no hint it does.
        return failure(StatusCode::NOT_FOUND, format!("no server {name}"));
    }
    let sensitive: Vec<String> = state.policy.sensitive_tools(&entry.name).into_iter().map(|(t, _)| t).collect();
    let tools: Vec<Value> = entry
        .ext
        .tools
        .items
        .iter()
        .map(|t| {
            let hints: Vec<&str> =
                [("readOnlyHint", "read-only"), ("destructiveHint", "destructive"), ("idempotentHint", "idempotent")]
                    .into_iter()
                    .filter(|(k, _)| t.annotations.get(*k).and_then(Value::as_bool) == Some(true))
                    .map(|(_, label)| label)
                    .collect();
            let decision = match state.policy.decide(&entry.name, &viewer, Some(&t.name)) {
                Decision::Allow { .. } => "allowed",
                Decision::NeedsApproval { .. } => "allowed with approval",
                Decision::Deny { .. } => "not allowed",
            };
            json!({"name": t.name, "description": t.description, "hints": hints.join(", "),
                   "sensitive": sensitive.contains(&t.name), "decision": decision})
        })
        .collect();
    let s = server_summary(&state, &entry, &viewer);
    render("server.html", json!({ "nav": "catalog", "viewer": viewer.display(), "s": s, "tools": tools }))
}

async fn inbox(
    State(state): State<RegistryState>,
    principal: Option<axum::Extension<Principal>>,
    uri: Uri,
) -> Response {
    let viewer = match viewer(principal.as_deref(), &uri) {
        Ok(p) => p,
        Err(redirect) => return redirect.into_response(),
    };
    let ctx = ApprovalContext::from_ref(&state);
    let query = Query(approvals::routes::ListQuery { state: Some("pending".into()), limit: Some(200) });
    let list = match approvals::routes::list(State(ctx), crate::identity::Authenticated(viewer.clone()), query).await {
        Ok(axum::Json(list)) => serde_json::to_value(list).unwrap_or(Value::Null),
        Err(e) => return e.into_response(),
    };
    let items: Vec<Value> = list["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["may_decide"] == true)
        .map(|a| {
            json!({"id": a["id"], "digest": a["digest"], "expires_at": a["expires_at"],
                   "summary": action_summary(&a["action"]), "requester": principal_text(&a["requester"]),
                   "resource": resource_text(&a["resource"])})
        })
        .collect();
    render("approvals.html", json!({ "nav": "approvals", "viewer": viewer.display(), "approvals": items }))
}

async fn approval(
    State(state): State<RegistryState>,
    principal: Option<axum::Extension<Principal>>,
    uri: Uri,
    Path(id): Path<String>,
    Query(flash): Query<FlashQuery>,
) -> Response {
    let viewer = match viewer(principal.as_deref(), &uri) {
        Ok(p) => p,
        Err(redirect) => return redirect.into_response(),
    };
    let ctx = ApprovalContext::from_ref(&state);
    let view = match approvals::routes::show(State(ctx), crate::identity::Authenticated(viewer.clone()), Path(id)).await
    {
        Ok(axum::Json(v)) => serde_json::to_value(v).unwrap_or(Value::Null),
        Err(e) => return e.into_response(),
    };
    let state_class = match view["state"].as_str() {
        Some("approved" | "consumed") => "ok",
        Some("pending") => "warn",
        _ => "bad",
    };
    let action = serde_json::to_string_pretty(&view["action"]).unwrap_or_default();
    let decisions: Vec<String> = view["approvals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            format!(
                "approved by {} at {}",
                v["name"].as_str().or(v["by"].as_str()).unwrap_or("?"),
                v["at"].as_str().unwrap_or("")
            )
        })
        .collect();
    let approvers = view["approver_policy"]["approvers"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "));
    let can_decide = view["may_decide"] == true;
    let reason = if can_decide {
        None
    } else if view["state"] != "pending" {
        Some(format!("This request is {}.", view["state"].as_str().unwrap_or("closed")))
    } else {
        Some(
            "You may not decide this request (it was asked for you or by you, or you are not one of its approvers)."
                .to_string(),
        )
    };
    render(
        "approval.html",
        json!({
            "nav": "approvals", "viewer": viewer.display(), "a": view.clone(), "action": action,
            "resource": resource_text(&view["resource"]), "requester": principal_text(&view["requester"]),
            "on_behalf_of": view.get("on_behalf_of").map(principal_text),
            "approvers": approvers.unwrap_or_default(), "required": view["approver_policy"]["required"].clone(),
            "decisions": decisions, "can_decide": can_decide, "reason": reason, "state_class": state_class,
            "flash": flash.done.map(|d| format!("Your decision was recorded: {d}.")),
        }),
    )
}

#[derive(Debug, Deserialize)]
struct FlashQuery {
    done: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DecideForm {
    decision: String,
    digest: String,
}

/// The approve/decline form. Browsers send `Origin` on POST; one that is not this
/// registry is refused, so another site cannot make a logged-in person's browser
/// approve something (the session cookie is also SameSite=Lax).
async fn decide(
    State(state): State<RegistryState>,
    principal: Option<axum::Extension<Principal>>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DecideForm>,
) -> Response {
    let viewer = match viewer(principal.as_deref(), &uri) {
        Ok(p) => p,
        Err(redirect) => return redirect.into_response(),
    };
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok())
        && origin != "null"
        && Some(origin.to_string()) != origin_of(&state.config.public_url)
    {
        return failure(StatusCode::FORBIDDEN, "cross-site form posts are refused");
    }
    let verdict = match form.decision.as_str() {
        "approve" | "decline" => form.decision.clone(),
        other => return failure(StatusCode::BAD_REQUEST, format!("`{other}` is not a decision")),
    };
    let body = json!({"decision": verdict, "digest": form.digest}).to_string();
    let ctx = ApprovalContext::from_ref(&state);
    match approvals::routes::decide(State(ctx), crate::identity::Authenticated(viewer), Path(id.clone()), body.into())
        .await
    {
        Ok(_) => Redirect::to(&format!("/approvals/{id}?done={verdict}")).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn audit(
    State(state): State<RegistryState>,
    principal: Option<axum::Extension<Principal>>,
    uri: Uri,
) -> Response {
    let viewer = match viewer(principal.as_deref(), &uri) {
        Ok(p) => p,
        Err(redirect) => return redirect.into_response(),
    };
    // The same rule as the audit API: administrators and approvers.
    let approver = state.policy.is_approver(&viewer);
    if !is_admin(&state, &viewer) && !approver {
        return failure(StatusCode::FORBIDDEN, "the audit log is for administrators and approvers");
    }
    let mut entries = Vec::new();
    let mut after = 0;
    // Newest first on the page; read forward in pages (the log only grows).
    loop {
        match state.store.audit_page(after, 500).await {
            Ok(page) if page.is_empty() => break,
            Ok(page) => {
                after = page.last().map_or(after, |r| r.seq);
                entries.extend(page);
                if entries.len() >= 5_000 {
                    break;
                }
            }
            Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
    entries.reverse();
    entries.truncate(500);
    let rows: Vec<Value> = entries
        .iter()
        .map(|r| {
            json!({"seq": r.seq, "at": r.at.format("%Y-%m-%d %H:%M:%S").to_string(), "actor": r.actor,
                        "action": r.action, "subject": r.subject, "hash": r.hash})
        })
        .collect();
    render("audit.html", json!({ "nav": "audit", "viewer": viewer.display(), "entries": rows }))
}

async fn usage_page(
    State(state): State<RegistryState>,
    principal: Option<axum::Extension<Principal>>,
    uri: Uri,
) -> Response {
    let viewer = match viewer(principal.as_deref(), &uri) {
        Ok(p) => p,
        Err(redirect) => return redirect.into_response(),
    };
    let now = state.clock.now();
    let to = (now.year(), now.month());
    let from = if to.1 == 12 { (to.0, 1) } else { (to.0 - 1, to.1 + 1) };
    let range = usage::months(from, to);
    let (Some(first), Some(last)) = (range.first(), range.last()) else {
        return failure(StatusCode::INTERNAL_SERVER_ERROR, "empty month range");
    };
    let rows = match state.store.usage_rows(first, last, None).await {
        Ok(r) => r,
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let summary = serde_json::to_value(usage::aggregate(&range, None, &rows)).unwrap_or(Value::Null);
    let months: Vec<&Value> = summary["months"].as_array().into_iter().flatten().collect();
    let series = |field: &str| -> Vec<(String, f64)> {
        months
            .iter()
            .map(|m| {
                (m["month"].as_str().unwrap_or("").get(2..).unwrap_or("").to_string(), m[field].as_f64().unwrap_or(0.0))
            })
            .collect()
    };
    let charts = vec![
        json!({"title": "Invocations by month", "svg": charts::bar_chart(&series("invocations"), 360, 140)}),
        json!({"title": "Active users by month", "svg": charts::bar_chart(&series("active_users"), 360, 140)}),
        json!({"title": "Hours saved by month", "svg": charts::bar_chart(&series("hours_saved"), 360, 140)}),
    ];
    let mut by_team: BTreeMap<(String, String), Value> = BTreeMap::new();
    for m in &months {
        for t in m["teams"].as_array().into_iter().flatten() {
            let team = t["team"].as_str().unwrap_or("(none)").to_string();
            let month = m["month"].as_str().unwrap_or("").to_string();
            by_team.insert(
                (month.clone(), team.clone()),
                json!({"month": month, "team": team, "invocations": t["invocations"], "active_users": t["active_users"],
                       "hours_saved": format!("{:.1}", t["hours_saved"].as_f64().unwrap_or(0.0))}),
            );
        }
    }
    let rows: Vec<Value> = by_team.into_values().rev().collect();
    render("usage.html", json!({ "nav": "usage", "viewer": viewer.display(), "charts": charts, "rows": rows }))
}

/// `scheme://host[:port]` of a URL, as browsers send it in `Origin`.
pub(crate) fn origin_of(url: &str) -> Option<String> {
    reqwest::Url::parse(url).ok().map(|u| u.origin().ascii_serialization())
}

fn principal_text(p: &Value) -> String {
    match p["kind"].as_str() {
        Some("service") => p["spiffe_id"].as_str().unwrap_or("?").to_string(),
        Some("user") => p["name"].as_str().or(p["subject"].as_str()).unwrap_or("?").to_string(),
        _ => p.to_string(),
    }
}

fn resource_text(r: &Value) -> String {
    match (r["server"].as_str(), r["tool"].as_str(), r["repository"].as_str()) {
        (Some(s), Some(t), _) => format!("{s} / {t}"),
        (_, _, Some(repo)) => format!("{repo} #{}", r["pull_request"].as_i64().or(r["number"].as_i64()).unwrap_or(0)),
        _ => r.to_string(),
    }
}

/// One line for the inbox: the tool and its arguments, shortened.
fn action_summary(action: &Value) -> String {
    let text = action.to_string();
    if text.chars().count() > 120 { format!("{}…", text.chars().take(120).collect::<String>()) } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_exactly() {
        assert_eq!(origin_of("http://127.0.0.1:7400").as_deref(), Some("http://127.0.0.1:7400"));
        assert_eq!(origin_of("https://inquest.example.com/base/").as_deref(), Some("https://inquest.example.com"));
        assert_ne!(origin_of("http://127.0.0.1:74000").as_deref(), Some("http://127.0.0.1:7400"));
    }
}
