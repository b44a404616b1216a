//! The service-discovery half of the HTTP API (`docs/services.md`, §3), answered from the
//! catalog the scheduler task publishes, so a reader never waits on the scheduler.
//!
//! - `GET /v1/services` — `[{"name","index","instances","healthy","tags","jobs"}]`.
//! - `GET /v1/services/{name}?healthy=true&tag=T` —
//!   `{"name","index","hash","instances":[{"job","slot","attempt","node","address","ports",
//!   "health","tags","version"}]}`. An unknown name is `200` with no instances and index 0, so a watcher
//!   can wait for it to appear.
//!
//! **Blocking queries.** Both take `?index=N&wait=DURATION` (`500ms`, `30s`, `5m`; default 5
//! min, at most 10 min). The call answers at once unless `N` equals the current index (of the
//! service, or of the whole catalog for the list); otherwise it waits until that index moves
//! or `wait` (plus up to `wait/16` of jitter, so watchers do not come back in step) runs out.
//! An index from another node or from before a restart therefore costs one immediate answer.
//!
//! **Headers.** `X-Shoal-Index` is this node's counter and means nothing on another node;
//! `X-Shoal-Content-Hash` (16 hex digits) is equal on nodes whose catalogs agree.
//!
//! These are reads: they pass the API's guard like every other `GET` (Host and Origin checks
//! always; the token only where the API listens off loopback).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_scheduler::catalog::instances_hash;
use shoal_scheduler::{Catalog, Instance, InstanceHealth};
use tokio::sync::watch;

use crate::api::{ApiState, error};

/// How long a blocking query waits when it names no `wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// The longest `wait` accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// The index header.
pub const INDEX_HEADER: &str = "x-shoal-index";
/// The content hash header.
pub const HASH_HEADER: &str = "x-shoal-content-hash";

/// Adds the service routes to the API router.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/services", get(list))
        .route("/v1/services/{name}", get(show))
}

/// The query of both routes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceQuery {
    /// Only instances discovery counts as healthy.
    #[serde(default)]
    pub healthy: Option<bool>,
    /// Only instances with this tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// Block while the index equals this.
    #[serde(default)]
    pub index: Option<u64>,
    /// How long to block (`500ms`, `30s`, `5m`).
    #[serde(default)]
    pub wait: Option<String>,
}

/// One service in `GET /v1/services`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceSummary {
    /// Discovery name.
    pub name: String,
    /// This node's index of the service's last change.
    pub index: u64,
    /// Instances, healthy or not.
    pub instances: usize,
    /// Healthy instances.
    pub healthy: usize,
    /// The union of its jobs' tags.
    pub tags: Vec<String>,
    /// The jobs registering under this name.
    pub jobs: Vec<String>,
}

/// `GET /v1/services/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceAnswer {
    /// Discovery name.
    pub name: String,
    /// This node's index of the service's last change (0: unknown here).
    pub index: u64,
    /// The content hash (16 hex digits), as in `X-Shoal-Content-Hash`.
    pub hash: String,
    /// The instances that pass the query's filters.
    pub instances: Vec<InstanceView>,
}

/// One instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceView {
    /// Job id.
    pub job: String,
    /// Slot.
    pub slot: u32,
    /// Attempt number in the slot.
    pub attempt: u32,
    /// The node it runs on.
    pub node: String,
    /// The IP its ports are reached at.
    pub address: String,
    /// Port name → host port.
    pub ports: std::collections::BTreeMap<String, u16>,
    /// `healthy`, `unhealthy` or `unknown`.
    pub health: InstanceHealth,
    /// The job's tags.
    pub tags: Vec<String>,
    /// The job version it runs.
    #[serde(default)]
    pub version: u32,
}

impl From<&Instance> for InstanceView {
    fn from(i: &Instance) -> Self {
        InstanceView {
            job: i.job.to_string(),
            slot: i.slot,
            attempt: i.attempt,
            node: i.node.to_string(),
            address: i.ip.to_string(),
            ports: i.ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            health: i.health,
            tags: i.tags.clone(),
            version: i.version,
        }
    }
}

/// Parses `500ms`, `30s`, `5m` (at most [`MAX_WAIT`]).
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let bad = || format!("wait={text:?} is not a duration: use e.g. 500ms, 30s or 5m");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let wait = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(bad()),
    };
    if wait > MAX_WAIT {
        return Err(format!(
            "wait={text:?} is longer than the 10m a query may block"
        ));
    }
    Ok(wait)
}

/// Waits until `index_of(catalog) != index`, `wait` (plus jitter) runs out, or the scheduler
/// stops; returns the catalog to answer from, or why the query is refused.
async fn block(
    rx: &mut watch::Receiver<Arc<Catalog>>,
    query: &ServiceQuery,
    index_of: impl Fn(&Catalog) -> u64,
) -> Result<Arc<Catalog>, String> {
    let wait = match &query.wait {
        Some(w) => parse_wait(w)?,
        None => DEFAULT_WAIT,
    };
    let Some(index) = query.index else {
        return Ok(rx.borrow_and_update().clone());
    };
    let jitter_ms = jitter_below(wait.as_millis() as u64 / 16 + 1);
    let deadline = tokio::time::Instant::now() + wait + Duration::from_millis(jitter_ms);
    loop {
        let catalog = rx.borrow_and_update().clone();
        if index_of(&catalog) != index {
            return Ok(catalog);
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Ok(catalog) },
            () = tokio::time::sleep_until(deadline) => return Ok(catalog),
        }
    }
}

/// A number in `0..n`, drawn from std's OS-keyed hasher (jitter needs no better).
fn jitter_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.finish() % n.max(1)
}

fn with_headers(body: Response, index: u64, hash: u64) -> Response {
    let mut resp = body;
    let headers = resp.headers_mut();
    headers.insert(INDEX_HEADER, HeaderValue::from(index));
    if let Ok(v) = HeaderValue::from_str(&format!("{hash:016x}")) {
        headers.insert(HASH_HEADER, v);
    }
    resp
}

/// Blocks as the query asks on the agent's catalog; the catalog to answer from, or the
/// refusal to send.
async fn answer_from(
    s: &ApiState,
    query: &ServiceQuery,
    index_of: impl Fn(&Catalog) -> u64,
) -> Result<Arc<Catalog>, Box<Response>> {
    let Some(mut rx) = s.sched.as_ref().map(|h| h.catalog()) else {
        return Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this agent runs no scheduler",
        )));
    };
    block(&mut rx, query, index_of)
        .await
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e)))
}

fn bad_filters(query: &ServiceQuery) -> Option<Response> {
    (query.healthy.is_some() || query.tag.is_some()).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            "healthy= and tag= filter the instances of one service: use /v1/services/NAME",
        )
    })
}

async fn list(State(s): State<ApiState>, Query(query): Query<ServiceQuery>) -> Response {
    if let Some(refused) = bad_filters(&query) {
        return refused;
    }
    let catalog = match answer_from(&s, &query, |c| c.index).await {
        Ok(c) => c,
        Err(e) => return *e,
    };
    let body: Vec<ServiceSummary> = catalog
        .services
        .values()
        .map(|svc| ServiceSummary {
            name: svc.name.to_string(),
            index: svc.index,
            instances: svc.instances.len(),
            healthy: svc.healthy().count(),
            tags: svc.tags.clone(),
            jobs: svc.jobs.iter().map(ToString::to_string).collect(),
        })
        .collect();
    with_headers(
        Json(body).into_response(),
        catalog.index,
        catalog.content_hash(),
    )
}

async fn show(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<ServiceQuery>,
) -> Response {
    let index_of = |c: &Catalog| c.service(&name).map_or(0, |svc| svc.index);
    let catalog = match answer_from(&s, &query, index_of).await {
        Ok(c) => c,
        Err(e) => return *e,
    };
    let service = catalog.service(&name);
    let (index, hash) = service.map_or((0, instances_hash(&[])), |svc| (svc.index, svc.hash));
    let healthy_only = query.healthy.unwrap_or(false);
    let instances = service
        .map(|svc| svc.instances.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|i| !healthy_only || i.health == InstanceHealth::Healthy)
        .filter(|i| query.tag.as_ref().is_none_or(|t| i.tags.contains(t)))
        .map(InstanceView::from)
        .collect();
    let body = ServiceAnswer {
        name,
        index,
        hash: format!("{hash:016x}"),
        instances,
    };
    with_headers(Json(body).into_response(), index, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse_with_their_unit_and_bound() {
        assert_eq!(parse_wait("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("10m"), Ok(MAX_WAIT));
        for bad in ["", "30", "s", "3h", "-1s", "1.5s"] {
            let e = parse_wait(bad).unwrap_err();
            assert!(e.contains("not a duration"), "{bad}: {e}");
        }
        assert!(
            parse_wait("11m")
                .unwrap_err()
                .contains("longer than the 10m")
        );
    }
}
