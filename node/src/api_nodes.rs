//! Drain and eligibility in the HTTP API (`docs/services.md`, §5). Both are writes: they need
//! the token (the guard refuses a mutating request without it; with scoped tokens they would
//! need `operate`, `docs/security.md`), and they are acknowledged like a job submission.
//!
//! - `POST /v1/nodes/{name}/drain` — body `{"deadline_ms": N}` (stop whatever is left N ms
//!   after the node sees the drain), `{}` or `{"deadline_ms": null}` (no deadline: batch
//!   tasks finish), `{"disable": true}` (stop draining; the node stays ineligible).
//! - `POST /v1/nodes/{name}/eligibility` — body `{"eligible": bool}`; enabling also ends a
//!   drain.
//!
//! Answers: `200 {"node", "durable": true, "version"}` once logged here and on a live peer;
//! `202 {"durable": false, "reason"}` when held here only; `404` for a node no one knows;
//! `400` for a malformed body; `507` when the local store failed (nothing written).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_scheduler::{NodeChange, NodeStatus};

use crate::api::{ApiState, NodeView, error};
use crate::sched_driver::SchedError;

/// A node's drain as `GET /v1/nodes` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DrainView {
    /// The deadline, if the drain has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// The node reported that none of its attempts is live any more.
    pub complete: bool,
    /// Live attempts that still target the node, in the answering node's view.
    pub live_tasks: u32,
}

/// `serde`'s default for `eligible`: views from agents without it were eligible.
#[must_use]
pub fn yes() -> bool {
    true
}

/// Fills a member's view with its eligibility and drain from the tables.
pub fn apply_status(v: &mut NodeView, st: &NodeStatus) {
    v.eligible = st.eligible;
    v.draining = st.draining;
    v.drain = st.draining.then_some(DrainView {
        deadline_ms: st.drain_deadline_ms,
        complete: st.drain_complete,
        live_tasks: st.live_tasks,
    });
}

/// Adds the node command routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/nodes/{name}/drain", post(drain))
        .route("/v1/nodes/{name}/eligibility", post(eligibility))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    #[serde(default)]
    deadline_ms: Option<u64>,
    #[serde(default)]
    disable: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EligibilityBody {
    eligible: bool,
}

fn parse<T: for<'de> Deserialize<'de>>(body: &str) -> Result<T, Box<Response>> {
    let body = if body.trim().is_empty() { "{}" } else { body };
    serde_json::from_str(body).map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e.to_string())))
}

async fn drain(State(s): State<ApiState>, Path(name): Path<String>, body: String) -> Response {
    let b: DrainBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let change = match (b.disable, b.deadline_ms) {
        (true, None) => NodeChange::Undrain,
        (true, Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "`disable` and `deadline_ms` exclude each other",
            );
        }
        (false, deadline_ms) => NodeChange::Drain { deadline_ms },
    };
    command(&s, name, change).await
}

async fn eligibility(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: String,
) -> Response {
    match parse::<EligibilityBody>(&body) {
        Ok(b) => command(&s, name, NodeChange::Eligible(b.eligible)).await,
        Err(r) => *r,
    }
}

async fn command(s: &ApiState, name: String, change: NodeChange) -> Response {
    let Some(sched) = s.sched.as_ref() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this agent runs no scheduler",
        );
    };
    match sched.node_command(name.clone(), change).await {
        Ok(receipt) => Json(serde_json::json!({
            "node": name, "durable": true, "version": receipt.version
        }))
        .into_response(),
        Err(e @ (SchedError::NotReplicated(..) | SchedError::LocalOnly(..))) => {
            let reason = e.to_string().replace(
                &format!("job ~node/{name}"),
                &format!("node {name}'s intent"),
            );
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "node": name, "durable": false, "reason": reason })),
            )
                .into_response()
        }
        Err(e @ SchedError::Node(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ SchedError::Storage { .. }) => {
            error(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
