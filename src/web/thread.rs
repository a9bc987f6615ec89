//! The web thread: `/investigations` (a filtered list) and `/investigations/{id}`, a
//! live timeline. Each event reads as the same line the chat threads get
//! (`chat::render`), with a tool's raw output folded beneath it and approval cards
//! linking to the registry's approval page. New events arrive over Server-Sent Events
//! as rendered list items (a reconnecting browser resumes with `Last-Event-ID`); a
//! person who is logged in can ask a follow-up question, whose answer arrives the same
//! way. The pages work without JavaScript, except for the live part.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::api::{event_stream, resume_after};
use crate::chat::render;
use crate::engine::{Input, State as InvestigationState};
use crate::identity::Principal;
use crate::registry::ui::{origin_of, render as page, render_fragment};
use crate::store::{Asked, InvestigationFilter, InvestigationSummary, StoredEvent};

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/investigations", get(list))
        .route("/investigations/{id}", get(show))
        .route("/investigations/{id}/live", get(live))
        .route("/investigations/{id}/questions", post(ask))
        .with_state(state)
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    state: Option<String>,
    team: Option<String>,
    service: Option<String>,
    /// Opened in the last this many hours.
    hours: Option<i64>,
}

async fn list(
    State(app): State<AppState>,
    viewer: Option<Extension<Principal>>,
    Query(q): Query<ListQuery>,
) -> Response {
    let state = q.state.as_deref().filter(|s| !s.is_empty()).and_then(InvestigationState::parse);
    let team = q.team.clone().filter(|t| !t.is_empty());
    let since = q.hours.filter(|h| *h > 0).map(|h| app.clock.now() - chrono::Duration::hours(h));
    let filter = InvestigationFilter { state, team, since, limit: 200 };
    let found = match app.store.list_investigations(&filter).await {
        Ok(found) => found,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let service = q.service.clone().filter(|s| !s.is_empty());
    let rows: Vec<Value> = found
        .iter()
        .filter(|i| service.as_deref().is_none_or(|s| i.service.as_deref() == Some(s)))
        .map(|i| {
            json!({"id": i.id, "title": i.title, "team": i.team, "service": i.service, "state": i.state.as_str(),
                   "state_class": state_class(i.state), "created_at": when(i.created_at), "alerts": i.alert_count})
        })
        .collect();
    let states: Vec<&str> = InvestigationState::ALL.iter().map(|s| s.as_str()).collect();
    page(
        "investigations.html",
        json!({"nav": "investigations", "viewer": viewer.map(|v| display(&v)), "rows": rows, "states": states,
               "q": {"state": q.state, "team": q.team, "service": q.service, "hours": q.hours}}),
    )
}

async fn show(State(app): State<AppState>, viewer: Option<Extension<Principal>>, Path(id): Path<String>) -> Response {
    let inv = match app.store.investigation(&id).await {
        Ok(Some(inv)) => inv,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such investigation").into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let mut lines = Vec::new();
    let mut last = 0;
    loop {
        let events = match app.store.events(&id, last, 1000).await {
            Ok(events) => events,
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        };
        let Some(tail) = events.last() else { break };
        last = tail.seq;
        lines.extend(events.iter().filter_map(|e| line(&id, e)));
    }
    page(
        "investigation.html",
        json!({"nav": "investigations", "viewer": viewer.map(|v| display(&v)), "i": summary(&inv),
               "status": render::status_line(&inv), "lines": lines, "last_seq": last}),
    )
}

#[derive(Debug, Deserialize)]
struct LiveQuery {
    after: Option<i64>,
}

/// New timeline entries as rendered `<li>` elements (`event: line`, `id`: the seq).
async fn live(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LiveQuery>,
    headers: HeaderMap,
) -> Response {
    match app.store.investigation(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return (StatusCode::NOT_FOUND, "no such investigation").into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
    let after = resume_after(&headers, q.after);
    let rx = app.store.subscribe();
    let investigation = id.clone();
    let as_html = move |ev: &StoredEvent| {
        let html = render_fragment("line.html", json!({"l": line(&investigation, ev)?})).ok()?;
        Some(Event::default().id(ev.seq.to_string()).event("line").data(html))
    };
    Sse::new(event_stream(app, id, after, rx, as_html)).keep_alive(KeepAlive::default()).into_response()
}

#[derive(Debug, Deserialize)]
struct QuestionForm {
    question: String,
}

/// A logged-in person's follow-up question; back to the thread, where the answer
/// arrives.
async fn ask(
    State(app): State<AppState>,
    viewer: Option<Extension<Principal>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<QuestionForm>,
) -> Response {
    let Some(Extension(viewer)) = viewer else {
        let back = format!("/investigations/{id}");
        return Redirect::to(&format!("/auth/login?next={}", crate::percent::encode_keeping_slashes(&back)))
            .into_response();
    };
    // A form posted from another site is refused, as the approval page does.
    if let Some(origin) = headers.get(axum::http::header::ORIGIN).and_then(|o| o.to_str().ok())
        && origin != "null"
        && Some(origin.to_string()) != origin_of(&app.config.registry.public_url)
    {
        return (StatusCode::FORBIDDEN, "cross-site form posts are refused").into_response();
    }
    let question = form.question.trim();
    if question.is_empty() || question.chars().count() > 2000 {
        return (StatusCode::BAD_REQUEST, "a question is 1 to 2000 characters").into_response();
    }
    let input = Input::QuestionAsked { question: question.to_string(), asked_by: Some(display(&viewer)) };
    match app.store.ask(&id, &input, app.clock.now()).await {
        Ok(Asked::Queued { .. }) => Redirect::to(&format!("/investigations/{id}#ask")).into_response(),
        Ok(Asked::NotFound) => (StatusCode::NOT_FOUND, "no such investigation").into_response(),
        Ok(Asked::Refused(state)) => {
            (StatusCode::CONFLICT, format!("the investigation is {}; ask again once it has reported", state.as_str()))
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// One timeline entry (pure).
fn line(investigation_id: &str, event: &StoredEvent) -> Option<Value> {
    let p = render::post(investigation_id, event)?;
    Some(json!({"seq": p.seq, "kind": p.kind, "text": p.text, "detail": p.detail, "at": when(event.at),
                "approval": p.approval.map(|a| json!({"id": a.approval_id, "url": a.url, "what": a.what}))}))
}

fn summary(i: &InvestigationSummary) -> Value {
    json!({"id": i.id, "title": i.title, "team": i.team, "service": i.service, "state": i.state.as_str(),
           "state_class": state_class(i.state), "created_at": when(i.created_at), "alerts": i.alert_count,
           "summary": i.summary})
}

fn state_class(s: InvestigationState) -> &'static str {
    match s {
        InvestigationState::Completed => "ok",
        InvestigationState::Failed | InvestigationState::Cancelled => "bad",
        InvestigationState::AwaitingApproval => "warn",
        _ => "muted",
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn display(p: &Principal) -> String {
    match p {
        Principal::User { name: Some(name), .. } => name.clone(),
        Principal::User { subject, .. } => subject.clone(),
        Principal::Service { spiffe_id } => spiffe_id.clone(),
    }
}
