//! The agent's HTTP API (JSON). Field names here are a public contract: add, never rename.
//!
//! - `GET /v1/health` — liveness of this agent.
//! - `GET /v1/nodes` — every member as this node sees it.
//! - `GET /v1/nodes/{name}` — one member.
//! - `POST /v1/nodes/{name}/drain`, `POST /v1/nodes/{name}/eligibility` (`api_nodes.rs`).
//! - `GET /v1/agent/self` — this agent: identity, addresses, counters, quorum, join.
//! - `/v1/jobs`, `/v1/tasks` (`api_jobs.rs`), `/v1/keyring` (`api_keyring.rs`),
//!   `/v1/services` (`api_services.rs`), `/v1/events` (`api_events.rs`), the web UI at `/ui`
//!   (`api_ui.rs`).
//!
//! Every request passes [`crate::api_auth::check`] first (token, `Host`, `Origin`, content
//! type); a refused request reaches no handler.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_gossip::{JoinStatus, MemberInfo, Millis, NodeId, PortRange, Resources, Stats};

use crate::clock::Clock;
use crate::gossip_driver::{GossipHandle, TransportStats};

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// This agent's identity.
    pub id: NodeId,
    /// Where this agent's QUIC endpoint listens.
    pub quic_addr: SocketAddr,
    /// Where this API is reached (its advertised address).
    pub http_addr: SocketAddr,
    /// Short, loggable id of the cluster key.
    pub cluster: String,
    /// The gossip task.
    pub gossip: GossipHandle,
    /// The agent's clock.
    pub clock: Clock,
    /// The scheduler task, when this agent runs one.
    pub sched: Option<crate::sched_driver::SchedHandle>,
    /// Local task logs, when this agent runs an executor.
    pub logs: Option<Arc<dyn crate::api_jobs::LogReader>>,
    /// Which resource limits the executor enforces on this host (never claimed, detected).
    pub enforcement: Option<crate::executor::Enforcement>,
    /// What `GET /v1/metrics` exports.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// DNS, unless it is off.
    pub dns: Option<crate::dns::DnsInfo>,
    /// The event stream (`GET /v1/events`).
    pub events: crate::events::EventLog,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Capacity and allocation of a node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeResources {
    /// What the node offers.
    pub capacity: Resources,
    /// What live tasks (proposed, admitted or running) hold there, as this node's replicated
    /// tables show it; zero on an agent that runs no scheduler.
    pub allocated: Resources,
}

/// One member in `GET /v1/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// `alive`, `suspect`, `down` or `left`.
    pub status: String,
    /// Incarnation; grows on every restart.
    pub generation: u64,
    /// Capacity (zero until the node's first ad arrives) and allocation.
    pub resources: NodeResources,
    /// Operator attributes.
    pub attributes: BTreeMap<String, String>,
    /// Whether a drain is in force on the node (its intent in this node's tables; on an agent
    /// without a scheduler, the flag in its ad).
    pub draining: bool,
    /// Unix milliseconds of the last change of status or resources seen here.
    pub last_update_ms: u64,
    /// The node's QUIC address, once known.
    pub quic_addr: Option<SocketAddr>,
    /// The node's HTTP API address, once known.
    pub http_addr: Option<SocketAddr>,
    /// New placements may land there (`shoal node eligibility`; a drain implies `false`).
    #[serde(default = "crate::api_nodes::yes")]
    pub eligible: bool,
    /// The drain in force, as this node's tables say (`docs/services.md`, §5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<crate::api_nodes::DrainView>,
    /// The node's dynamic port range, from its ad (`docs/observability.md`, "Ports on the
    /// map"); absent until its ad arrives, or from an agent that predates the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<PortRange>,
}

impl NodeView {
    /// The view of member `m`, which the tables say has `allocated` in use.
    fn new(m: &MemberInfo, allocated: Resources) -> Self {
        let ad = m.ad.as_ref().filter(|ad| ad.generation == m.id.generation);
        NodeView {
            name: m.id.name.to_string(),
            addr: m.id.addr,
            status: m.status.as_str().to_string(),
            generation: m.id.generation,
            resources: NodeResources {
                capacity: ad.map(|a| a.capacity).unwrap_or_default(),
                allocated,
            },
            attributes: ad.map(|a| (*a.attributes).clone()).unwrap_or_default(),
            draining: ad.is_some_and(|a| a.draining),
            last_update_ms: m.last_update.0,
            quic_addr: ad.and_then(|a| a.quic_addr),
            http_addr: ad.and_then(|a| a.http_addr),
            eligible: !ad.is_some_and(|a| a.draining),
            drain: None,
            port_range: ad.and_then(|a| a.port_range),
        }
    }
}

/// `GET /v1/agent/self`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentSelf {
    /// This node as the cluster sees it.
    pub node: NodeView,
    /// Short id of the cluster key (safe to show).
    pub cluster: String,
    /// Shoal version.
    pub version: String,
    /// Membership counters.
    pub membership: Option<Stats>,
    /// Transport counters.
    pub transport: serde_json::Value,
    /// Which task resource limits this host enforces (`cgroup_v2`, `cgroup_v1` or
    /// `not_enforced`, with a note saying why).
    pub limits: Option<crate::executor::Enforcement>,
    /// Whether this node sees most of its cluster (`docs/faults.md`); without it, it places
    /// and condemns nothing.
    #[serde(default)]
    pub quorum: Option<shoal_gossip::Quorum>,
    /// Where this agent answers DNS (its bound address, so `--dns 127.0.0.1:0` can be found)
    /// and the answers it sent by response code; absent with `--dns off`.
    #[serde(default)]
    pub dns: Option<crate::dns::DnsView>,
    /// How this agent's join through its `--join` seeds stands; absent from agents that
    /// predate it.
    #[serde(default)]
    pub join: Option<JoinView>,
}

/// `join` in `GET /v1/agent/self`: a node whose seeds never answered counts itself a majority
/// of one, so this is how an operator tells it from a real one-node cluster
/// (`docs/membership.md`, "A join nobody answers").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinView {
    /// The seed addresses this agent announces to (`--join`, resolved).
    pub seeds: Vec<SocketAddr>,
    /// `--join` seeds that do not resolve yet (retried with back-off).
    pub unresolved: Vec<String>,
    /// This agent has heard from another member since it started (through a seed, or
    /// because another node joined through it).
    pub joined: bool,
    /// Announce rounds to the seeds before the join (the first, then one per retry).
    pub attempts: u32,
    /// When the first seed was given (Unix ms); `null` without seeds.
    pub since: Option<u64>,
    /// When this agent first heard from another member (Unix ms); `null` until then.
    pub joined_at: Option<u64>,
    /// How long it waited for a seed to answer: until the join, or until now while none has.
    pub waited_ms: u64,
    /// Until the next announce round while not joined (the back-off); 0 once joined.
    pub retry_ms: u64,
    /// The name of the first member heard from; `null` until then.
    pub first_member: Option<String>,
}

impl JoinView {
    /// The view of `status` at `now`, with the seeds that do not resolve yet.
    #[must_use]
    pub fn new(status: &JoinStatus, unresolved: Vec<String>, now: Millis) -> Self {
        JoinView {
            seeds: status.seeds.clone(),
            unresolved,
            joined: status.joined,
            attempts: status.attempts,
            since: status.since.map(|m| m.0),
            joined_at: status.joined_at.map(|m| m.0),
            waited_ms: status.waited_ms(now),
            retry_ms: status.retry_ms,
            first_member: status.first_member.as_ref().map(|m| m.name.to_string()),
        }
    }

    /// The agent was given seeds and has heard from nobody yet.
    #[must_use]
    pub fn not_joined(&self) -> bool {
        let has_seeds = !self.seeds.is_empty() || !self.unresolved.is_empty();
        has_seeds && !self.joined
    }
}

/// Builds the router; `guard` decides which requests reach it.
pub fn router(state: ApiState, guard: Arc<crate::api_auth::Guard>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{name}", get(node))
        .route("/v1/nodes/{name}/forget", axum::routing::post(forget))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/metrics", get(metrics))
        .merge(crate::api_jobs::routes())
        .merge(crate::api_nodes::routes())
        .merge(crate::api_keyring::routes())
        .merge(crate::api_services::routes())
        .merge(crate::api_events::routes())
        .merge(crate::api_ui::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            guard,
            crate::api_auth::check,
        ))
        // Outermost, so refusals by the guard are counted too.
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
}

/// A JSON error body: `{"error": "..."}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn health(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok", "name": s.id.name, "now_ms": s.clock.now().0 }))
}

/// Views of `members`, with what the scheduler's tables say each has allocated.
async fn node_views(s: &ApiState, members: &[MemberInfo]) -> Vec<NodeView> {
    let names = members.iter().map(|m| m.id.name.to_string()).collect();
    let (usage, statuses) = match &s.sched {
        Some(sched) => (sched.node_usage(names).await, sched.node_statuses().await),
        None => (vec![Resources::default(); members.len()], Vec::new()),
    };
    members
        .iter()
        .zip(usage)
        .map(|(m, allocated)| {
            let mut v = NodeView::new(m, allocated);
            if let Some(st) = statuses.iter().find(|st| st.name == v.name) {
                crate::api_nodes::apply_status(&mut v, st);
            }
            v
        })
        .collect()
}

async fn nodes(State(s): State<ApiState>) -> Json<Vec<NodeView>> {
    Json(node_views(&s, &s.gossip.listed_members()).await)
}

async fn node(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    let member = s
        .gossip
        .listed_members()
        .into_iter()
        .find(|m| m.id.name == name);
    match member {
        Some(m) => Json(node_views(&s, &[m]).await.remove(0)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no node named {name:?} is known here"),
        ),
    }
}

async fn agent_self(State(s): State<ApiState>) -> Response {
    let members = s.gossip.members();
    let Some(me) = members.iter().find(|m| m.id.name == s.id.name) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this node is missing from its own view",
        );
    };
    let transport: TransportStats = s.gossip.counters.snapshot();
    Json(AgentSelf {
        node: node_views(&s, std::slice::from_ref(me)).await.remove(0),
        cluster: s.cluster.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        membership: s.gossip.stats().await,
        transport: serde_json::to_value(transport).unwrap_or_default(),
        limits: s.enforcement.clone(),
        quorum: Some(s.gossip.quorum()),
        dns: s.dns.as_ref().map(crate::dns::DnsInfo::view),
        join: Some(JoinView::new(
            &s.gossip.join_status(),
            s.gossip.unresolved_seeds(),
            s.clock.now(),
        )),
    })
    .into_response()
}

/// `GET /v1/metrics`: Prometheus metrics (`crate::metrics`).
async fn metrics(State(s): State<ApiState>, headers: axum::http::HeaderMap) -> Response {
    let scheduler = match &s.sched {
        Some(sched) => sched.stats().await,
        None => None,
    };
    let scraped = crate::metrics::Scraped {
        members: s.gossip.listed_members(),
        membership: s.gossip.stats().await,
        transport: Some(s.gossip.counters.snapshot()),
        quorum: Some(s.gossip.quorum()),
        join: Some(s.gossip.join_status()),
        scheduler,
        dns: s.dns.as_ref().map(|d| d.counters.snapshot()),
        events: Some(s.events.counts()),
        probe_rtt: Some(s.gossip.counters.probe_rtt.histogram()),
    };
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    crate::metrics::response(&s.metrics, &scraped, accept)
}

/// `POST /v1/nodes/{name}/forget`: the operator says the node is gone for good; it leaves
/// this node's known membership (`shoal node forget` sends it to every reachable agent).
async fn forget(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    match s.gossip.forget(&name).await {
        Ok(Ok(())) => Json(serde_json::json!({
            "forgotten": name,
            "quorum": s.gossip.quorum(),
        }))
        .into_response(),
        Ok(Err(e @ shoal_gossip::ForgetError::Unknown(_))) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Ok(Err(e)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
