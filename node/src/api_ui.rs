//! `GET /ui`: the web UI (`docs/observability.md`, "The web UI"), three static files compiled
//! into the binary (no CDN, nothing fetched from elsewhere). The page reads the JSON API and
//! the event stream with the token the user gives it; the files themselves hold nothing
//! secret, so they are served without a token even off loopback (`crate::api_auth`), with a
//! content security policy that lets them load nothing but this agent's own resources.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::api::ApiState;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/ui.js");
const STYLE: &str = include_str!("ui/ui.css");

/// Only this agent's own scripts, styles and API; no frames, no inline script.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self'; frame-ancestors 'none'; \
                      base-uri 'none'; form-action 'none'";

/// The routes of this module.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route(
            "/ui",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/ui.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/ui.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

/// Whether `path` is one of the UI's files (served without a token; `crate::api_auth`).
#[must_use]
pub fn is_ui_asset(path: &str) -> bool {
    matches!(path, "/" | "/ui" | "/ui/" | "/ui/ui.js" | "/ui/ui.css")
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Served from the binary: a new agent version brings new files.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
