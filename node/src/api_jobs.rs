//! The jobs half of the HTTP API.
//!
//! - `POST /v1/jobs` — body: the job spec as JSON (the same flat shape as the TOML file).
//!   `200 {"durable": true}` once fsynced here and on a live peer that logged it too; `202
//!   {"durable": false, "reason"}` when persisted here only (no live peer: at once; no peer
//!   confirmed within 10 s: then); `400` invalid spec, `422` a job no node could ever host,
//!   `507` the local store failed (nothing was written or changed).
//! - `GET /v1/jobs`, `GET /v1/jobs/{id}` — views computed from the replicated tables.
//! - `DELETE /v1/jobs/{id}` — stop a job (every task is killed); acknowledged like a
//!   submission (`200`, `202`, `507`).
//! - `GET /v1/jobs/{id}/versions` — the kept versions, oldest first (`docs/services.md`, §4).
//! - `POST /v1/jobs/{id}/revert` — body `{"version": N}`: a job write with that version's
//!   spec and epoch, without canaries; acknowledged like a submission (`200`, `202`, `507`);
//!   `404` no such job, `409` no such version, an ambiguous one or the current one.
//! - `POST /v1/jobs/{id}/promote` — the canaries of the current deployment are accepted;
//!   `200 {"version"}`, `404`, `409` when no canary waits for promotion.
//! - `GET /v1/tasks/{job}/{slot}/logs?stream=stdout|stderr&offset=N&max=BYTES` — served by the
//!   node that runs the task; other nodes redirect (`307`) to its advertised address, with the
//!   scheme it speaks (`https` off loopback). `attempt=N` reads an earlier attempt of the slot,
//!   `previous=true` the newest one before the current that ran (their directories are kept
//!   until the tables drop them: the slot's last 8 attempts, a job until its purge).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use shoal_scheduler::{AttemptId, JobSpec};

use crate::api::{ApiState, error};
use crate::sched_driver::{SchedError, WhichAttempt};

/// The answer of a [`LogReader`]: the bytes and the offset to continue from.
pub type LogFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(Vec<u8>, u64), String>> + Send>>;

/// Reads task logs from the local executor.
pub trait LogReader: Send + Sync + 'static {
    /// Up to `max` bytes of `stream` from `offset`.
    fn read(&self, task: &AttemptId, stream: &str, offset: u64, max: usize) -> LogFuture;
}

/// Adds the job routes to the API router.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/jobs", get(list).post(submit))
        .route("/v1/jobs/{id}", get(show).delete(stop))
        .route("/v1/jobs/{id}/versions", get(versions))
        .route("/v1/jobs/{id}/revert", post(revert))
        .route("/v1/jobs/{id}/promote", post(promote))
        .route("/v1/tasks/{job}/{slot}/logs", get(logs))
}

/// `202`: persisted here, not (yet) held by a second node; the write keeps replicating. The
/// write's `stamp` as in a `200` answer.
fn not_durable(id: &str, e: &SchedError) -> Response {
    let stamp = match e {
        SchedError::NotReplicated(_, _, stamp) | SchedError::LocalOnly(_, stamp) => {
            Some(shoal_scheduler::show_stamp(stamp))
        }
        _ => None,
    };
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({
            "id": id, "durable": false, "reason": e.to_string(), "warning": e.to_string(),
            "stamp": stamp
        })),
    )
        .into_response()
}

fn no_scheduler() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "this agent runs no scheduler",
    )
}

async fn submit(State(s): State<ApiState>, headers: HeaderMap, body: String) -> Response {
    let Some(sched) = s.sched.as_ref() else {
        return no_scheduler();
    };
    let is_toml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("toml"));
    // JSON is only parsed here: the core's check is the one check of a spec. A TOML body is
    // checked while parsed, where its errors can name the line.
    let parsed = if is_toml {
        JobSpec::from_toml_str(&body)
    } else {
        JobSpec::parse_json(&body)
    };
    let spec = match parsed {
        Ok(spec) => spec,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let id = spec.id.clone();
    match sched.submit(spec).await {
        Ok(receipt) => Json(serde_json::json!({
            "id": id,
            "version": receipt.version,
            "stamp": shoal_scheduler::show_stamp(&receipt.version),
            "durable": true
        }))
        .into_response(),
        Err(e @ (SchedError::NotReplicated(..) | SchedError::LocalOnly(..))) => {
            not_durable(&id, &e)
        }
        Err(e @ SchedError::NeverFits(_)) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(e @ SchedError::Invalid(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ SchedError::Storage { .. }) => {
            error(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn list(State(s): State<ApiState>) -> Response {
    match s.sched.as_ref() {
        Some(h) => Json(h.jobs().await).into_response(),
        None => no_scheduler(),
    }
}

async fn show(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(h) = s.sched.as_ref() else {
        return no_scheduler();
    };
    match h.job(id.clone()).await {
        Some(job) => Json(job).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no job {id:?}")),
    }
}

async fn stop(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(h) = s.sched.as_ref() else {
        return no_scheduler();
    };
    match h.stop(id.clone()).await {
        Ok(receipt) => Json(serde_json::json!({
            "id": id, "stopped": true, "version": receipt.version, "durable": true
        }))
        .into_response(),
        Err(e @ (SchedError::NotReplicated(..) | SchedError::LocalOnly(..))) => {
            not_durable(&id, &e)
        }
        Err(e @ SchedError::NotFound(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ SchedError::Storage { .. }) => {
            error(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn versions(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(h) = s.sched.as_ref() else {
        return no_scheduler();
    };
    match h.versions(id.clone()).await {
        Some(v) => Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no job {id:?}")),
    }
}

#[derive(Debug, Deserialize)]
struct RevertBody {
    version: u32,
}

async fn revert(State(s): State<ApiState>, Path(id): Path<String>, body: String) -> Response {
    let Some(h) = s.sched.as_ref() else {
        return no_scheduler();
    };
    let version = match serde_json::from_str::<RevertBody>(&body) {
        Ok(b) => b.version,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"version\": N}}: {e}"),
            );
        }
    };
    match h.revert(id.clone(), version).await {
        Ok(receipt) => Json(serde_json::json!({
            "id": id, "reverted_to": version, "version": receipt.version, "durable": true
        }))
        .into_response(),
        Err(e @ (SchedError::NotReplicated(..) | SchedError::LocalOnly(..))) => {
            not_durable(&id, &e)
        }
        Err(SchedError::Revert(e @ shoal_scheduler::RevertError::NotFound(_))) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e @ SchedError::Revert(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ SchedError::Storage { .. }) => {
            error(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn promote(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(h) = s.sched.as_ref() else {
        return no_scheduler();
    };
    match h.promote(id.clone()).await {
        Some(Ok(version)) => {
            Json(serde_json::json!({ "id": id, "promoted": true, "version": version }))
                .into_response()
        }
        Some(Err(e @ shoal_scheduler::PromoteError::NotFound(_))) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Some(Err(e)) => error(StatusCode::CONFLICT, e.to_string()),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "the scheduler is stopping"),
    }
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    #[serde(default = "stdout")]
    stream: String,
    #[serde(default)]
    offset: u64,
    #[serde(default = "max_default")]
    max: usize,
    /// An earlier attempt of the slot, by number (default: the current one).
    #[serde(default)]
    attempt: Option<u32>,
    /// The attempt before the current one that ran (a crash loop's last failure).
    #[serde(default)]
    previous: bool,
}

fn stdout() -> String {
    "stdout".into()
}
fn max_default() -> usize {
    256 * 1024
}

async fn logs(
    State(s): State<ApiState>,
    Path((job, slot)): Path<(String, u32)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let Some(h) = s.sched.as_ref() else {
        return no_scheduler();
    };
    if q.stream != "stdout" && q.stream != "stderr" {
        return error(StatusCode::BAD_REQUEST, "stream must be stdout or stderr");
    }
    let which = match (q.attempt, q.previous) {
        (Some(_), true) => {
            return error(
                StatusCode::BAD_REQUEST,
                "give either attempt=N or previous=true, not both",
            );
        }
        (Some(n), false) => WhichAttempt::Number(n),
        (None, true) => WhichAttempt::Previous,
        (None, false) => WhichAttempt::Current,
    };
    let Some(key) = h.attempt(job.clone(), slot, which).await else {
        if h.versions(job.clone()).await.is_none() {
            return error(StatusCode::NOT_FOUND, format!("no job {job:?}"));
        }
        let what = match which {
            WhichAttempt::Current => "no placed task".to_string(),
            WhichAttempt::Previous => "no earlier attempt that ran".to_string(),
            WhichAttempt::Number(n) => format!("no attempt {n} (it may have been collected)"),
        };
        return error(
            StatusCode::NOT_FOUND,
            format!("job {job:?} has {what} in slot {slot}"),
        );
    };
    if key.1 != s.id.name {
        let owner = s.gossip.members().into_iter().find(|m| m.id.name == key.1);
        let Some(http) = owner.and_then(|m| m.ad).and_then(|ad| ad.http_addr) else {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("task runs on {} whose API address is unknown", key.1),
            );
        };
        // The token is never put in the URL: the client sends it again (the CLI does, to
        // cluster members only).
        // The attempt by number: the node that runs it resolves nothing again.
        let url = format!(
            "{}://{http}/v1/tasks/{job}/{slot}/logs?stream={}&offset={}&max={}&attempt={}",
            crate::api_auth::scheme_of(http),
            q.stream,
            q.offset,
            q.max,
            key.0.attempt
        );
        return Redirect::temporary(&url).into_response();
    }
    let Some(reader) = s.logs.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this agent runs no executor",
        );
    };
    read_local(reader, key.0, q).await
}

async fn read_local(reader: Arc<dyn LogReader>, task: AttemptId, q: LogQuery) -> Response {
    let max = q.max.min(4 * 1024 * 1024);
    match reader.read(&task, &q.stream, q.offset, max).await {
        Ok((bytes, next)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::HeaderName::from_static("x-shoal-next-offset"),
                    next.to_string(),
                ),
                (
                    header::HeaderName::from_static("x-shoal-attempt"),
                    task.attempt.to_string(),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}
