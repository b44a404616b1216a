//! Prometheus metrics at `GET /v1/metrics` (`docs/observability.md`).
//!
//! Two kinds of figures, one exposition:
//! - **Counted as they happen** by the shell: API requests (route, method, status) and their
//!   latency, executor starts and how tasks ended, start latency (start command → running) and
//!   submit → running. They live in [`Metrics`], shared by the API and the scheduler task.
//! - **Read at scrape time** from what the cores already count: membership (members by
//!   status, suspicions, refutations, down marks), gossip transport (datagrams, bytes, refused),
//!   the peer transport, the quorum, and the scheduler core (placements, re-placements,
//!   admissions, rejections, pending slots by reason, ops applied, anti-entropy rounds). No
//!   second copy of those counters is kept in the shell.
//!
//! Names follow Prometheus conventions: the `shoal_` prefix, base units (seconds, bytes),
//! `_total` on counters (added by the encoder), no unbounded label values (routes are the
//! router's path templates, never the requested path).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use shoal_gossip::{MemberInfo, MemberStatus, Quorum};
use shoal_scheduler::TaskEvent;

use crate::gossip_driver::TransportStats;
use crate::peers::PeerCounters;

/// The OpenMetrics text format `prometheus-client` writes, served to scrapers that ask for it.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format, served otherwise (what `promtool check metrics` reads).
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RcodeLabels {
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// API latencies: 0.5 ms to about 8 s.
fn api_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Task start latencies: 1 ms to about 65 s (a start can wait for a slow disk or image).
fn start_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The figures the shell counts as they happen; cheap to clone (every metric is shared).
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram>,
    starts: Counter,
    ended: Family<OutcomeLabels, Counter>,
    start_seconds: Histogram,
    submit_to_running_seconds: Histogram,
    task_dirs_removed: Counter,
    task_dir_removal_failures: Counter,
    log_bytes_trimmed: Counter,
    peers: OnceLock<Arc<PeerCounters>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(api_buckets),
            starts: Counter::default(),
            ended: Family::default(),
            start_seconds: start_buckets(),
            submit_to_running_seconds: start_buckets(),
            task_dirs_removed: Counter::default(),
            task_dir_removal_failures: Counter::default(),
            log_bytes_trimmed: Counter::default(),
            peers: OnceLock::new(),
        }
    }
}

/// What the cores and transports say at scrape time.
#[derive(Debug, Default)]
pub struct Scraped {
    /// This node's member view.
    pub members: Vec<MemberInfo>,
    /// The membership core's counters.
    pub membership: Option<shoal_gossip::Stats>,
    /// The gossip transport's counters.
    pub transport: Option<TransportStats>,
    /// Whether this node holds a majority.
    pub quorum: Option<Quorum>,
    /// How the join through the `--join` seeds stands.
    pub join: Option<shoal_gossip::JoinStatus>,
    /// The scheduler core's counters (none when this agent runs no scheduler).
    pub scheduler: Option<shoal_scheduler::Stats>,
    /// DNS answers by response code (none with `--dns off`).
    pub dns: Option<std::collections::BTreeMap<&'static str, u64>>,
    /// The event stream: (events emitted, events evicted from the ring).
    pub events: Option<(u64, u64)>,
    /// Round trips of acked direct probes (`crate::probe_rtt`).
    pub probe_rtt: Option<Histogram>,
}

impl Metrics {
    /// The peer transport whose counters are exported (set once, at start).
    pub fn set_peers(&self, counters: Arc<PeerCounters>) {
        let _ = self.peers.set(counters);
    }

    /// The executor was asked to start a task.
    pub fn task_start_requested(&self) {
        self.starts.inc();
    }

    /// A task event reached the core: how a task ended, and how long its start took
    /// (`started`: when the start was asked for).
    pub fn task_event(&self, event: &TaskEvent, started: Option<Instant>) {
        let outcome = match event {
            TaskEvent::Started { .. } => {
                if let Some(at) = started {
                    self.start_seconds.observe(at.elapsed().as_secs_f64());
                }
                return;
            }
            TaskEvent::Exited { code: 0 } => "exited_ok",
            TaskEvent::Exited { .. } => "exited_error",
            TaskEvent::Failed { .. } => "failed",
            TaskEvent::Killed => "killed",
        };
        self.ended.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A slot's first attempt runs, `elapsed` after its job was submitted (the accepting
    /// node's clock at the write against this node's now).
    pub fn submitted_to_running(&self, elapsed: Duration) {
        self.submit_to_running_seconds
            .observe(elapsed.as_secs_f64());
    }

    /// One pass of the task directory collection (`crate::task_gc`): directories removed,
    /// and removals the file system refused.
    pub fn task_dirs_collected(&self, removed: u64, failed: u64) {
        self.task_dirs_removed.inc_by(removed);
        self.task_dir_removal_failures.inc_by(failed);
    }

    /// Disk space given back by cutting running tasks' logs to the cap.
    pub fn logs_trimmed(&self, freed_bytes: u64) {
        self.log_bytes_trimmed.inc_by(freed_bytes);
    }

    /// One API request answered.
    fn request(&self, route: &str, method: &str, status: StatusCode, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status: status.as_u16(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// The exposition: the counted figures and `scraped`, in the OpenMetrics text format.
    #[must_use]
    pub fn render(&self, scraped: &Scraped) -> String {
        let mut r = Registry::with_prefix("shoal");
        self.register_counted(&mut r);
        register_membership(&mut r, scraped);
        if let Some(t) = &scraped.transport {
            register_transport(&mut r, t);
        }
        if let Some(h) = &scraped.probe_rtt {
            r.register_with_unit(
                "gossip_probe_rtt",
                "Round trip of a direct SWIM probe answered by the probed member (ping sent to ack received, this host's clock)",
                Unit::Seconds,
                h.clone(),
            );
        }
        if let Some(p) = self.peers.get() {
            register_peers(&mut r, p);
        }
        if let Some(s) = &scraped.scheduler {
            register_scheduler(&mut r, s);
        }
        if let Some(dns) = &scraped.dns {
            let answers = Family::<RcodeLabels, Counter>::default();
            for (rcode, n) in dns {
                answers.get_or_create(&RcodeLabels { rcode }).inc_by(*n);
            }
            r.register(
                "dns_queries",
                "DNS answers sent, by response code (noerror, nxdomain, refused, other)",
                answers,
            );
        }
        if let Some((emitted, evicted)) = scraped.events {
            r.register(
                "events_emitted",
                "Events recorded in this agent's event stream (GET /v1/events)",
                counter(emitted),
            );
            r.register(
                "events_dropped",
                "Events evicted from the event ring to make room (readers resuming before them are told)",
                counter(evicted),
            );
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }

    fn register_counted(&self, r: &mut Registry) {
        r.register(
            "api_requests",
            "HTTP API requests answered, by route template, method and status",
            self.requests.clone(),
        );
        r.register_with_unit(
            "api_request_duration",
            "Time to answer an HTTP API request, by route template",
            Unit::Seconds,
            self.request_seconds.clone(),
        );
        r.register(
            "executor_starts",
            "Task starts this node's executor was asked for",
            self.starts.clone(),
        );
        r.register(
            "executor_tasks_ended",
            "Tasks on this node that ended, by outcome (exited_ok, exited_error, failed, killed)",
            self.ended.clone(),
        );
        r.register_with_unit(
            "executor_start_duration",
            "Time from a start command to the task running on this node",
            Unit::Seconds,
            self.start_seconds.clone(),
        );
        r.register(
            "executor_task_dirs_removed",
            "Directories of finished tasks removed from this node once the tables dropped their attempts (job purged, or below the slot's floor)",
            self.task_dirs_removed.clone(),
        );
        r.register(
            "executor_task_dir_removal_failures",
            "Directories of finished tasks this node failed to remove (the file system refused; logged, tried again next pass)",
            self.task_dir_removal_failures.clone(),
        );
        r.register_with_unit(
            "executor_log_trimmed",
            "Disk space given back by cutting running tasks' logs to their last --task-log-max-mib",
            Unit::Bytes,
            self.log_bytes_trimmed.clone(),
        );
        r.register_with_unit(
            "scheduler_submit_to_running",
            "Time from a job's submission to a slot's first attempt running on this node",
            Unit::Seconds,
            self.submit_to_running_seconds.clone(),
        );
    }
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn gauge(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

fn register_membership(r: &mut Registry, s: &Scraped) {
    let members = Family::<StatusLabels, Gauge>::default();
    for status in [
        MemberStatus::Alive,
        MemberStatus::Suspect,
        MemberStatus::Down,
        MemberStatus::Left,
    ] {
        let n = s.members.iter().filter(|m| m.status == status).count();
        let label = match status {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Down => "down",
            MemberStatus::Left => "left",
        };
        members
            .get_or_create(&StatusLabels { status: label })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    r.register(
        "members",
        "Members in this node's view, by status (this node included)",
        members,
    );
    if let Some(q) = &s.quorum {
        r.register(
            "quorum_majority",
            "1 when this node reaches a majority of its known membership, else 0",
            gauge(u64::from(q.majority)),
        );
    }
    if let Some(j) = &s.join {
        r.register(
            "gossip_seeds_unanswered",
            "1 while this node was given --join seeds and has heard from no other member \
             since it started (it counts itself a cluster of one), else 0",
            gauge(u64::from(!j.seeds.is_empty() && !j.joined)),
        );
    }
    let Some(m) = &s.membership else { return };
    for (name, help, value) in [
        (
            "gossip_suspicions",
            "Times this node marked a member suspect",
            m.suspect_marks,
        ),
        (
            "gossip_suspicions_refuted",
            "Times a member this node held suspect came back alive (a false suspicion refuted)",
            m.suspicions_refuted,
        ),
        (
            "gossip_down_marks",
            "Times this node marked a member down",
            m.down_marks,
        ),
        (
            "gossip_datagrams_refused",
            "Datagrams the membership core refused (malformed, unknown kind, too large)",
            m.datagrams_refused,
        ),
        (
            "gossip_syncs",
            "Digest syncs this node started with a random member",
            m.syncs_sent,
        ),
    ] {
        r.register(name, help, counter(value));
    }
    r.register(
        "gossip_health_score",
        "The local health score of the failure detector (0 is healthy)",
        gauge(u64::from(m.health_score)),
    );
}

fn register_transport(r: &mut Registry, t: &TransportStats) {
    for (name, help, value) in [
        (
            "gossip_datagrams_received",
            "Datagrams received",
            t.datagrams_in,
        ),
        ("gossip_datagrams_sent", "Datagrams sent", t.datagrams_out),
        (
            "gossip_unauthentic_datagrams",
            "Datagrams dropped because their seal did not open",
            t.unauthentic,
        ),
        (
            "gossip_replayed_datagrams",
            "Authentic datagrams dropped by the anti-replay check",
            t.replayed,
        ),
        (
            "gossip_malformed_datagrams",
            "Authentic datagrams the membership core refused",
            t.malformed,
        ),
        ("gossip_send_errors", "Sends the OS refused", t.send_errors),
    ] {
        r.register(name, help, counter(value));
    }
    for (name, help, value) in [
        (
            "gossip_received",
            "Sealed gossip bytes received",
            t.bytes_in,
        ),
        ("gossip_sent", "Sealed gossip bytes sent", t.bytes_out),
    ] {
        r.register_with_unit(name, help, Unit::Bytes, counter(value));
    }
}

fn register_peers(r: &mut Registry, p: &PeerCounters) {
    use std::sync::atomic::Ordering::Relaxed;
    for (name, help, value) in [
        (
            "peer_frames_sent",
            "Frames sent to peers (replication)",
            &p.frames_out,
        ),
        (
            "peer_frames_received",
            "Frames received from peers",
            &p.frames_in,
        ),
        (
            "peer_frames_dropped",
            "Frames dropped: a peer's queue was full or its address unknown",
            &p.dropped,
        ),
        (
            "peer_frames_oversized",
            "Frames refused as oversized",
            &p.oversized,
        ),
        (
            "peer_cut_offs",
            "Peers cut off for exceeding a byte limit",
            &p.cut_off,
        ),
        (
            "peer_protocol_errors",
            "Peer connections closed for breaking the frame format",
            &p.protocol_errors,
        ),
    ] {
        r.register(name, help, counter(value.load(Relaxed)));
    }
}

fn register_scheduler(r: &mut Registry, s: &shoal_scheduler::Stats) {
    for (name, help, value) in [
        (
            "scheduler_placements",
            "Attempts this node placed as a slot's coordinator",
            s.placements,
        ),
        (
            "scheduler_replacements",
            "Of the placements, attempts after the first of their slot (re-placements)",
            s.replacements,
        ),
        (
            "scheduler_admissions",
            "Proposals this node admitted as their target",
            s.admissions,
        ),
        (
            "scheduler_rejections",
            "Proposals this node rejected as their target",
            s.rejections,
        ),
        (
            "replication_ops_written",
            "Ops written by this scheduler since it started",
            s.ops_written,
        ),
        (
            "replication_ops_applied",
            "Ops from peers applied to this node's tables",
            s.ops_applied,
        ),
        (
            "replication_anti_entropy_rounds",
            "Anti-entropy digests this node started",
            s.anti_entropy_rounds,
        ),
        (
            "replication_refused_messages",
            "Peer messages refused for breaking an ownership rule",
            s.refused_messages,
        ),
        (
            "replication_op_logs_dropped",
            "Op logs of writers (node starts) that stopped writing, dropped",
            s.op_logs_dropped,
        ),
    ] {
        r.register(name, help, counter(value));
    }
    let p = &s.pending_by_reason;
    let pending = Family::<ReasonLabels, Gauge>::default();
    for (reason, n) in [
        ("no_nodes", p.no_nodes),
        ("no_fit", p.no_fit),
        ("backoff", p.backoff),
        ("placing", p.placing),
        ("no_majority", p.no_majority),
        ("catching_up", p.catching_up),
    ] {
        pending
            .get_or_create(&ReasonLabels { reason })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    r.register(
        "scheduler_pending_slots",
        "Slots this node coordinates that wait, by reason",
        pending,
    );
    for (name, help, value) in [
        (
            "scheduler_local_tasks",
            "Tasks admitted on this node and not yet dead",
            s.local_tasks,
        ),
        (
            "replication_buffered_ops",
            "Ops received out of order, waiting for their predecessors (replication lag)",
            s.buffered_ops,
        ),
        (
            "scheduler_table_rows",
            "Rows in this node's replicated tables",
            s.table_rows,
        ),
        (
            "replication_writers",
            "Writers (node starts) in this node's version vector, one per start that wrote",
            s.writers,
        ),
        (
            "replication_op_logs",
            "Writers whose ops this node keeps to answer peers' digests",
            s.op_logs,
        ),
        (
            "replication_op_log_ops",
            "Ops kept in those logs",
            s.op_log_ops,
        ),
    ] {
        r.register(name, help, gauge(value as u64));
    }
}

/// Middleware: counts and times every API request by its route template.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    // Any token is a valid HTTP method: unknown ones share one label value.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    metrics.request(&route, &method, response.status(), start.elapsed());
    response
}

/// `GET /v1/metrics` once the scrape-time figures are gathered: OpenMetrics when the scraper
/// accepts it (Prometheus asks for it first), else the classic text format.
#[must_use]
pub fn response(metrics: &Metrics, scraped: &Scraped, accept: Option<&str>) -> Response {
    let text = metrics.render(scraped);
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
    } else {
        ([(header::CONTENT_TYPE, CLASSIC)], to_classic(&text)).into_response()
    }
}

/// The classic text format of an OpenMetrics exposition. They differ in three ways here: a
/// counter's `HELP` and `TYPE` name the family (`x`) in OpenMetrics but the sample (`x_total`)
/// in the classic format, `# UNIT` lines do not exist there, and neither does `# EOF`.
#[must_use]
pub fn to_classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_by_their_samples() {
        let om = "# HELP shoal_x Things.\n# TYPE shoal_x counter\nshoal_x_total 3\n\
                  # HELP shoal_d Time.\n# TYPE shoal_d histogram\n# UNIT shoal_d seconds\n\
                  shoal_d_sum 1.0\nshoal_d_count 1\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP shoal_x_total Things.\n# TYPE shoal_x_total counter\nshoal_x_total 3\n\
             # HELP shoal_d Time.\n# TYPE shoal_d histogram\nshoal_d_sum 1.0\nshoal_d_count 1\n"
        );
    }

    #[test]
    fn every_family_has_help_and_every_counter_ends_in_total() {
        let m = Metrics::default();
        m.task_start_requested();
        m.task_event(&TaskEvent::Exited { code: 0 }, None);
        m.request("/v1/jobs", "POST", StatusCode::OK, Duration::from_millis(3));
        let scraped = Scraped {
            membership: Some(shoal_gossip::Stats::default()),
            transport: Some(TransportStats::default()),
            scheduler: Some(shoal_scheduler::Stats::default()),
            events: Some((3, 1)),
            probe_rtt: Some(crate::probe_rtt::ProbeRtt::default().histogram()),
            ..Scraped::default()
        };
        let text = to_classic(&m.render(&scraped));
        let mut helped = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.insert(rest.split(' ').next().unwrap().to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(helped.contains(name), "{name} has no HELP");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                assert!(name.starts_with("shoal_"), "{line}");
            }
        }
        assert!(text.contains("shoal_executor_starts_total 1"), "{text}");
        assert!(
            text.contains("# TYPE shoal_gossip_probe_rtt_seconds histogram"),
            "{text}"
        );
    }

    /// The alert an operator sets on a node that counts itself a cluster of one: 1 only while
    /// it has seeds and no member answered (`docs/membership.md`, "A join nobody answers").
    #[test]
    fn seeds_unanswered_is_1_only_with_seeds_and_no_join() {
        let seed: std::net::SocketAddr = "10.0.0.1:7946".parse().unwrap();
        for (seeds, joined, want) in [
            (vec![seed], false, 1),
            (vec![seed], true, 0),
            (vec![], false, 0),
        ] {
            let scraped = Scraped {
                join: Some(shoal_gossip::JoinStatus {
                    seeds,
                    joined,
                    ..shoal_gossip::JoinStatus::default()
                }),
                ..Scraped::default()
            };
            let text = to_classic(&Metrics::default().render(&scraped));
            assert!(
                text.contains(&format!("shoal_gossip_seeds_unanswered {want}\n")),
                "{text}"
            );
        }
    }
}
