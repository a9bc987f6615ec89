//! The investigations API: list, show, and a live event stream (Server-Sent Events).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{ApiError, AppState};
use crate::engine::State as InvestigationState;
use crate::store::{Asked, InvestigationFilter, InvestigationSummary, StoredAlert, StoredEvent};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// queued, running, awaiting_approval, completed, cancelled or failed
    pub state: Option<String>,
    pub team: Option<String>,
    /// Only investigations opened at or after this RFC 3339 time.
    pub since: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvestigationList {
    pub investigations: Vec<InvestigationSummary>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvestigationDetail {
    #[serde(flatten)]
    pub investigation: InvestigationSummary,
    pub alerts: Vec<StoredAlert>,
    pub events: Vec<StoredEvent>,
}

/// List investigations, newest first.
#[utoipa::path(
    get,
    path = "/v1/investigations",
    params(ListQuery),
    responses((status = 200, body = InvestigationList), (status = 400, body = ApiError)),
    tag = "investigations"
)]
pub async fn list(State(app): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let state = match q.state.as_deref().map(|s| (s, InvestigationState::parse(s))) {
        None => None,
        Some((_, Some(st))) => Some(st),
        Some((s, None)) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("`{s}` is not a state"))
                .with_field("state")
                .into_response();
        }
    };
    let since = match q.since.as_deref().map(DateTime::parse_from_rfc3339) {
        None => None,
        Some(Ok(t)) => Some(t.with_timezone(&Utc)),
        Some(Err(e)) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("not an RFC 3339 time: {e}"))
                .with_field("since")
                .into_response();
        }
    };
    let filter = InvestigationFilter { state, team: q.team, since, limit: q.limit.unwrap_or(100).clamp(1, 1000) };
    match app.store.list_investigations(&filter).await {
        Ok(investigations) => Json(InvestigationList { investigations }).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// One investigation with its alerts and its whole event log.
#[utoipa::path(
    get,
    path = "/v1/investigations/{id}",
    params(("id" = String, Path)),
    responses((status = 200, body = InvestigationDetail), (status = 404, body = ApiError)),
    tag = "investigations"
)]
pub async fn show(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let found = match app.store.investigation(&id).await {
        Ok(Some(inv)) => inv,
        Ok(None) => return ApiError::not_found("such investigation").into_response(),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let alerts = app.store.episode_alerts(&found.episode_id, 500).await;
    let events = app.store.events(&id, 0, 10_000).await;
    match (alerts, events) {
        (Ok(alerts), Ok(events)) => Json(InvestigationDetail { investigation: found, alerts, events }).into_response(),
        (Err(e), _) | (_, Err(e)) => ApiError::internal(e).into_response(),
    }
}

/// Longest follow-up question accepted.
const QUESTION_CHARS: usize = 4_000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuestionRequest {
    pub question: String,
    /// Who asks (a chat adapter names its user), for the log.
    #[serde(default)]
    pub asked_by: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuestionAccepted {
    pub investigation_id: String,
    /// The `question.asked` event; its answer is a `question.answered` event naming it.
    pub question_seq: i64,
}

/// Ask a follow-up question. The investigation is taken up again with its context (the
/// alert, its tool calls and report) and answers with a `question.answered` event.
#[utoipa::path(
    post,
    path = "/v1/investigations/{id}/questions",
    params(("id" = String, Path)),
    request_body = QuestionRequest,
    responses(
        (status = 202, body = QuestionAccepted),
        (status = 400, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, description = "the investigation is working or was cancelled; ask once it has reported", body = ApiError)
    ),
    tag = "investigations"
)]
pub async fn ask(
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<QuestionRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(q) = match body {
        Ok(b) => b,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()).into_response(),
    };
    let question = q.question.trim();
    if question.is_empty() || question.chars().count() > QUESTION_CHARS {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("a question is 1 to {QUESTION_CHARS} characters"),
        )
        .with_field("question")
        .into_response();
    }
    let input = crate::engine::Input::QuestionAsked { question: question.to_string(), asked_by: q.asked_by };
    match app.store.ask(&id, &input, app.clock.now()).await {
        Ok(Asked::Queued { seq }) => {
            (StatusCode::ACCEPTED, Json(QuestionAccepted { investigation_id: id, question_seq: seq })).into_response()
        }
        Ok(Asked::NotFound) => ApiError::not_found("such investigation").into_response(),
        Ok(Asked::Refused(state)) => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("the investigation is {}; ask once it has reported", state.as_str()),
        )
        .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Resume after this sequence number (the `Last-Event-ID` header wins).
    pub after: Option<i64>,
}

/// The investigation's events as Server-Sent Events: the log so far, then new events
/// as they are recorded. Each event's `id` is its sequence number, so a reconnecting
/// client resumes with `Last-Event-ID`.
#[utoipa::path(
    get,
    path = "/v1/investigations/{id}/events",
    params(("id" = String, Path), EventsQuery),
    responses(
        (status = 200, description = "text/event-stream; `event` is the kind, `data` the StoredEvent JSON", content_type = "text/event-stream"),
        (status = 404, body = ApiError)
    ),
    tag = "investigations"
)]
pub async fn events(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    match app.store.investigation(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return ApiError::not_found("such investigation").into_response(),
        Err(e) => return ApiError::internal(e).into_response(),
    }
    let after = resume_after(&headers, q.after);
    let rx = app.store.subscribe();
    let as_json = |ev: &StoredEvent| {
        let data = serde_json::to_string(ev).unwrap_or_default();
        Some(Event::default().id(ev.seq.to_string()).event(ev.kind.clone()).data(data))
    };
    Sse::new(event_stream(app, id, after, rx, as_json)).keep_alive(KeepAlive::default()).into_response()
}

/// Where a stream resumes: `Last-Event-ID` when a client reconnects, else `?after=`.
pub(crate) fn resume_after(headers: &HeaderMap, after: Option<i64>) -> i64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(after)
        .unwrap_or(0)
}

/// How often a stream looks at the store even without a local notification, so events
/// written by another replica still arrive.
const POLL: Duration = Duration::from_secs(1);

struct Tail {
    app: AppState,
    id: String,
    last: i64,
    rx: broadcast::Receiver<String>,
    buffer: VecDeque<StoredEvent>,
}

/// The investigation's log after `after`, then each new event as it is recorded, as
/// `map` shows it (`None`: not shown, passed over).
pub(crate) fn event_stream(
    app: AppState,
    id: String,
    after: i64,
    rx: broadcast::Receiver<String>,
    map: impl Fn(&StoredEvent) -> Option<Event> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let tail = Tail { app, id, last: after, rx, buffer: VecDeque::new() };
    futures::stream::unfold((tail, map), |(mut t, map)| async move {
        loop {
            if let Some(ev) = t.buffer.pop_front() {
                t.last = ev.seq;
                match map(&ev) {
                    Some(event) => return Some((Ok(event), (t, map))),
                    None => continue,
                }
            }
            match t.app.store.events(&t.id, t.last, 500).await {
                Ok(events) if !events.is_empty() => {
                    t.buffer.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading events for a stream failed"),
            }
            // Wait for this investigation to change here, or for the poll interval.
            let wait = async {
                loop {
                    match t.rx.recv().await {
                        Ok(changed) if changed == t.id => return,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            tokio::select! {
                _ = t.app.shutdown.cancelled() => return None,
                _ = tokio::time::timeout(POLL, wait) => {}
            }
        }
    })
}
