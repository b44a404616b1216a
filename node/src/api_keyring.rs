//! Key rotation over the HTTP API (`shoal keyring ...`). Every route answers for the whole
//! cluster: the step is applied on this agent, then on every reachable member
//! ([`crate::keyring`]), and the answer lists each member's result.
//!
//! - `GET /v1/keyring` — every member's keys, by label.
//! - `POST /v1/keyring/install` `{"key": "<64 hex>"}` — add a key (not primary).
//! - `POST /v1/keyring/use` `{"key": "<key or 16-hex label>"}` — make an installed key primary.
//! - `POST /v1/keyring/remove` `{"key": "<key or label>"}` — remove a key; the primary is refused.
//!
//! Answers: `200` with a [`FanOut`] (`complete` says whether every member asked applied it),
//! `400` when this agent refused the step (nothing changed anywhere), `503` when the agent
//! runs no keyring task. The mutating routes are `POST`, so they carry the API's credential
//! check like every other mutating route. Keys never appear in an answer, only labels.
//!
//! The handle reaches the handlers as an `axum::Extension<KeyringHandle>` the agent adds to
//! its router, so these routes need nothing from `ApiState`.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use crate::api::{ApiState, error};
use crate::keyring::{ApplyError, FanOut, KeyOp, KeyringHandle};
use crate::keys::{ClusterKey, KeyRef};

/// The body of the mutating routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    /// A key (64 hex characters) or, for `use` and `remove`, an installed key's label.
    pub key: String,
}

/// The keyring routes, to merge into the API router.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/keyring", get(list))
        .route("/v1/keyring/install", post(install))
        .route("/v1/keyring/use", post(use_key))
        .route("/v1/keyring/remove", post(remove))
}

async fn list(handle: Option<Extension<KeyringHandle>>) -> Response {
    run(handle, Ok(KeyOp::List)).await
}

async fn install(
    handle: Option<Extension<KeyringHandle>>,
    body: Result<Json<KeyBody>, JsonRejection>,
) -> Response {
    let op = body_of(body).and_then(|key| {
        ClusterKey::parse(&key)
            .map(KeyOp::Install)
            .map_err(|e| format!("install needs the full key: {e}"))
    });
    run(handle, op).await
}

async fn use_key(
    handle: Option<Extension<KeyringHandle>>,
    body: Result<Json<KeyBody>, JsonRejection>,
) -> Response {
    let op = body_of(body).and_then(|key| {
        KeyRef::parse(&key)
            .map(KeyOp::Use)
            .map_err(|e| e.to_string())
    });
    run(handle, op).await
}

async fn remove(
    handle: Option<Extension<KeyringHandle>>,
    body: Result<Json<KeyBody>, JsonRejection>,
) -> Response {
    let op = body_of(body).and_then(|key| {
        KeyRef::parse(&key)
            .map(KeyOp::Remove)
            .map_err(|e| e.to_string())
    });
    run(handle, op).await
}

fn body_of(body: Result<Json<KeyBody>, JsonRejection>) -> Result<String, String> {
    // Not the rejection's own text: serde_json's message may quote the body, here a key.
    body.map(|Json(b)| b.key).map_err(|e| {
        let why = match e {
            JsonRejection::MissingJsonContentType(_) => "the content type must be application/json",
            JsonRejection::JsonSyntaxError(_) => "the body is not valid JSON",
            JsonRejection::JsonDataError(_) => "the body has an unexpected field or value",
            _ => "the body could not be read",
        };
        format!("expected a JSON body {{\"key\": \"...\"}}: {why}")
    })
}

async fn run(handle: Option<Extension<KeyringHandle>>, op: Result<KeyOp, String>) -> Response {
    let Some(Extension(handle)) = handle else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this agent runs no keyring task",
        );
    };
    let op = match op {
        Ok(op) => op,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match handle.apply(op).await {
        Ok(fan_out) => Json::<FanOut>(fan_out).into_response(),
        Err(e @ ApplyError::Refused(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ ApplyError::Busy) => error(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        Err(e @ ApplyError::Stopping) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
