//! The agent's event stream (`GET /v1/events`, `docs/observability.md`): what the cores and
//! the executor of this node did or learned, numbered in the order this node saw it.
//!
//! What it promises:
//! - Every event gets the next `index` of this agent's incarnation (1, 2, 3, …, no gaps), the
//!   wall-clock time this node recorded it, the node's name and generation, a topic, a type
//!   and a JSON payload. Indexes restart with each incarnation; `generation` says which.
//! - The last [`RING_EVENTS`] events are kept in memory. A reader resumes after any index it
//!   saw ([`Ring::read_after`]); when events it asked for were evicted, it is told how many
//!   (a [`Topic::Stream`] `Missed` notice), never left to guess.
//! - Recording never waits on a reader: a slow reader falls behind and, if the ring moves past
//!   it, gets a `Missed` notice.
//!
//! How to drive it: the gossip and scheduler tasks derive events with the pure functions here
//! ([`member_event`], [`sched_event`], [`task_event`], [`catalog_events`], …) and
//! [`EventLog::push`] them; the API reads with [`EventLog::read_after`] and waits on
//! [`EventLog::watch`].

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shoal_gossip::MemberEvent;
use shoal_scheduler::{AttemptId, AttemptState, Catalog, ExecCommand, SchedEvent, TaskEvent};
use tokio::sync::watch;

mod deploy;

/// Events kept in memory for readers that resume with `since`.
pub const RING_EVENTS: usize = 10_000;

/// What an event is about; `?topic=` filters on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Topic {
    /// Membership as this node sees it: a member's status, a member's resource ad.
    Node,
    /// Jobs submitted or stopped through this agent's API.
    Job,
    /// This node's scheduler decisions: placements (as a slot's coordinator), admissions and
    /// rejections (as the target).
    Placement,
    /// An attempt's row changed in this node's replicated tables (a local write or a merge):
    /// every node sees every attempt of the cluster here.
    Attempt,
    /// This node's executor: starts and kills asked for, and what the processes did.
    Task,
    /// The service catalog: instances registered, deregistered, their health.
    Service,
    /// Rollouts of every job's current deployment, as this node's tables tell them.
    Deployment,
    /// About the stream itself: events a reader missed. Sent whatever the filter.
    Stream,
}

impl Topic {
    /// Every topic, in order.
    pub const ALL: [Topic; 8] = [
        Topic::Node,
        Topic::Job,
        Topic::Placement,
        Topic::Attempt,
        Topic::Task,
        Topic::Service,
        Topic::Deployment,
        Topic::Stream,
    ];

    /// The topic's name, as in the JSON and in `?topic=`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Node => "Node",
            Topic::Job => "Job",
            Topic::Placement => "Placement",
            Topic::Attempt => "Attempt",
            Topic::Task => "Task",
            Topic::Service => "Service",
            Topic::Deployment => "Deployment",
            Topic::Stream => "Stream",
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Topic {
    type Err = String;

    /// Case-insensitive, so `?topic=task` works too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topic::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Topic::ALL.iter().map(|t| t.as_str()).collect();
                format!("unknown topic {s:?}: use one of {}", names.join(", "))
            })
    }
}

/// One event, as `GET /v1/events` sends it (field names are a public contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in this incarnation's stream, from 1. A `Missed` notice carries the index of
    /// the last event it stands for, so resuming after it asks for nothing missed again.
    pub index: u64,
    /// Unix milliseconds when this node recorded it.
    pub time_ms: u64,
    /// The node whose stream this is.
    pub node: String,
    /// The node's generation (incarnation): indexes restart when it changes.
    pub generation: u64,
    /// What it is about.
    pub topic: Topic,
    /// What happened (`Started`, `StatusChanged`, …; `docs/observability.md` lists them).
    #[serde(rename = "type")]
    pub kind: String,
    /// The details.
    pub payload: Value,
}

/// An event as the ring keeps it: what cursors and filters need, and its JSON, serialized once
/// when recorded (every reader sends the same bytes; a parsed `Value` would cost several
/// times the memory, 10,000 times over).
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// The event's index.
    pub index: u64,
    /// When it was recorded.
    pub time_ms: u64,
    /// Its topic.
    pub topic: Topic,
    /// The whole event as JSON.
    pub json: Arc<str>,
}

impl Kept {
    fn of(e: &Event) -> Self {
        Kept {
            index: e.index,
            time_ms: e.time_ms,
            topic: e.topic,
            // An `Event` is strings, numbers and JSON values: it always serializes.
            json: serde_json::to_string(e).unwrap_or_default().into(),
        }
    }

    /// The event, parsed back.
    #[must_use]
    pub fn event(&self) -> Option<Event> {
        serde_json::from_str(&self.json).ok()
    }
}

/// An event before it is numbered: what the derive functions return.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// Its topic.
    pub topic: Topic,
    /// Its type.
    pub kind: &'static str,
    /// Its details.
    pub payload: Value,
}

fn draft(topic: Topic, kind: &'static str, payload: Value) -> Draft {
    Draft {
        topic,
        kind,
        payload,
    }
}

/// The bounded ring of numbered events (no IO; [`EventLog`] shares it).
#[derive(Debug)]
pub struct Ring {
    node: String,
    generation: u64,
    capacity: usize,
    events: VecDeque<Kept>,
    /// The index the next event gets.
    next: u64,
    /// Events evicted to make room.
    evicted: u64,
}

/// What a reader gets: the events after its cursor, and how many it missed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Read {
    /// A `Missed` notice first, when events after the cursor were evicted.
    pub events: Vec<Kept>,
    /// The cursor to read after next time.
    pub cursor: u64,
}

impl Ring {
    /// An empty ring of `capacity` events (at least 1) for `node` in `generation`.
    #[must_use]
    pub fn new(node: String, generation: u64, capacity: usize) -> Self {
        Ring {
            node,
            generation,
            capacity: capacity.max(1),
            events: VecDeque::new(),
            next: 1,
            evicted: 0,
        }
    }

    /// Numbers `d` and keeps it, evicting the oldest event when full.
    pub fn push(&mut self, time_ms: u64, d: Draft) -> u64 {
        if self.events.len() >= self.capacity {
            self.events.pop_front();
            self.evicted += 1;
        }
        let index = self.next;
        self.next += 1;
        self.events.push_back(Kept::of(&Event {
            index,
            time_ms,
            node: self.node.clone(),
            generation: self.generation,
            topic: d.topic,
            kind: d.kind.to_string(),
            payload: d.payload,
        }));
        index
    }

    /// The notice for a reader that resumes from an earlier incarnation (`previous`): index 0,
    /// since this incarnation's indexes start again at 1 and the reader reads from the start.
    #[must_use]
    pub fn restarted_notice(&self, time_ms: u64, previous: u64) -> Kept {
        Kept::of(&Event {
            index: 0,
            time_ms,
            node: self.node.clone(),
            generation: self.generation,
            topic: Topic::Stream,
            kind: "Restarted".to_string(),
            payload: json!({
                "previous_generation": previous,
                "generation": self.generation,
                "note": "the agent restarted since this reader's last event: indexes start again, and this stream reads from the oldest event kept",
            }),
        })
    }

    /// The newest index given out (0: none yet).
    #[must_use]
    pub fn newest(&self) -> u64 {
        self.next - 1
    }

    /// Events numbered so far.
    #[must_use]
    pub fn emitted(&self) -> u64 {
        self.next - 1
    }

    /// Events evicted from the ring to make room.
    #[must_use]
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Up to `limit` events after `cursor` whose topic passes `wanted`, preceded by a
    /// `Missed` notice when events after `cursor` are no longer kept. `cursor` must not be
    /// ahead of [`Ring::newest`] (the API refuses such a `since`).
    #[must_use]
    pub fn read_after(&self, cursor: u64, wanted: &dyn Fn(Topic) -> bool, limit: usize) -> Read {
        let mut out = Vec::new();
        let oldest = self.events.front().map_or(self.next, |e| e.index);
        let mut cursor = cursor;
        if cursor + 1 < oldest {
            let last_missed = oldest - 1;
            out.push(Kept::of(&Event {
                index: last_missed,
                time_ms: self.events.front().map_or(0, |e| e.time_ms),
                node: self.node.clone(),
                generation: self.generation,
                topic: Topic::Stream,
                kind: "Missed".to_string(),
                payload: json!({
                    "after": cursor,
                    "missed": last_missed - cursor,
                    "oldest_kept": oldest,
                    "note": "these events were evicted from the ring before this reader asked for them",
                }),
            }));
            cursor = last_missed;
        }
        // Indexes are dense: the event after `cursor` sits at `cursor + 1 - oldest`.
        let start = usize::try_from((cursor + 1).saturating_sub(oldest)).unwrap_or(usize::MAX);
        for e in self.events.iter().skip(start).take(limit) {
            cursor = e.index;
            if wanted(e.topic) {
                out.push(e.clone());
            }
        }
        Read {
            events: out,
            cursor,
        }
    }
}

/// The ring shared by the tasks that record and the API that reads, with a watch that moves
/// on every new event.
#[derive(Debug, Clone)]
pub struct EventLog {
    ring: Arc<Mutex<Ring>>,
    newest: watch::Sender<u64>,
    clock: crate::clock::Clock,
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl EventLog {
    /// An empty log for `node` in `generation`, keeping [`RING_EVENTS`].
    #[must_use]
    pub fn new(node: String, generation: u64, clock: crate::clock::Clock) -> Self {
        Self::with_capacity(node, generation, clock, RING_EVENTS)
    }

    /// An empty log keeping `capacity` events.
    #[must_use]
    pub fn with_capacity(
        node: String,
        generation: u64,
        clock: crate::clock::Clock,
        capacity: usize,
    ) -> Self {
        EventLog {
            ring: Arc::new(Mutex::new(Ring::new(node, generation, capacity))),
            newest: watch::channel(0).0,
            clock,
            closed: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic while holding the lock leaves a consistent ring (every method is one step).
        self.ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many events the ring keeps.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// Records `d` now and wakes the readers.
    pub fn push(&self, d: Draft) {
        let index = self.lock().push(self.clock.now().0, d);
        self.newest.send_replace(index);
    }

    /// Records every draft in order.
    pub fn extend(&self, drafts: impl IntoIterator<Item = Draft>) {
        for d in drafts {
            self.push(d);
        }
    }

    /// See [`Ring::read_after`].
    #[must_use]
    pub fn read_after(&self, cursor: u64, wanted: &dyn Fn(Topic) -> bool, limit: usize) -> Read {
        self.lock().read_after(cursor, wanted, limit)
    }

    /// The newest index given out.
    #[must_use]
    pub fn newest(&self) -> u64 {
        self.lock().newest()
    }

    /// See [`Ring::restarted_notice`].
    #[must_use]
    pub fn restarted_notice(&self, previous: u64) -> Kept {
        self.lock().restarted_notice(self.clock.now().0, previous)
    }

    /// (events emitted, events evicted from the ring), for metrics.
    #[must_use]
    pub fn counts(&self) -> (u64, u64) {
        let r = self.lock();
        (r.emitted(), r.evicted())
    }

    /// A receiver that wakes on every new event (and on close).
    #[must_use]
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }

    /// The agent stops: following readers end their streams.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.newest.send_modify(|_| {});
    }

    /// Whether [`EventLog::close`] was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

// ---- deriving events from what the cores and the executor say ----------------------------

/// The fields naming an attempt in every payload.
fn task_fields(task: &AttemptId) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("task".into(), json!(task.to_string()));
    m.insert("job".into(), json!(task.job.as_str()));
    m.insert("incarnation".into(), json!(task.incarnation));
    m.insert("slot".into(), json!(task.slot));
    m.insert("attempt".into(), json!(task.attempt));
    m.insert("placer".into(), json!(task.placer.as_str()));
    m
}

fn with_task(task: &AttemptId, extra: Value) -> Value {
    let mut m = task_fields(task);
    if let Value::Object(more) = extra {
        m.extend(more);
    }
    Value::Object(m)
}

/// A membership change (`Node`: `StatusChanged`, `ResourcesChanged`, `Forgotten`, `Reaped`).
#[must_use]
pub fn member_event(e: &MemberEvent) -> Draft {
    match e {
        MemberEvent::Status { id, from, to } => draft(
            Topic::Node,
            "StatusChanged",
            json!({
                "node": id.name.as_str(),
                "generation": id.generation,
                "addr": id.addr,
                "from": from.map(|s| s.as_str()),
                "to": to.as_str(),
            }),
        ),
        MemberEvent::Resources { ad } => draft(
            Topic::Node,
            "ResourcesChanged",
            json!({
                "node": ad.node.as_str(),
                "generation": ad.generation,
                "capacity": ad.capacity,
                "draining": ad.draining,
                "attributes": &*ad.attributes,
            }),
        ),
        MemberEvent::Forgotten { name } => {
            draft(Topic::Node, "Forgotten", json!({ "node": name.as_str() }))
        }
        MemberEvent::Reaped { name } => {
            draft(Topic::Node, "Reaped", json!({ "node": name.as_str() }))
        }
    }
}

/// The short name of an attempt state, as the task views use.
fn state_name(s: &AttemptState) -> (&'static str, Value) {
    match s {
        AttemptState::Proposed => ("proposed", Value::Null),
        AttemptState::Admitted => ("admitted", Value::Null),
        AttemptState::Running { round, .. } => ("running", json!({ "round": round })),
        AttemptState::Lost { round } => ("lost", json!({ "round": round })),
        AttemptState::Killed => ("killed", Value::Null),
        AttemptState::Drained => ("drained", Value::Null),
        AttemptState::Failed { reason } => ("failed", json!({ "reason": reason })),
        AttemptState::Rejected { reason } => ("rejected", json!({ "reason": reason })),
        AttemptState::Exited { code } => ("exited", json!({ "code": code })),
    }
}

/// A scheduler core event (`Placement`: `Placed`, `Admitted`, `Rejected`; `Attempt`:
/// `Changed`; `Job`: `VersionCreated`; `Deployment`: the steps of a rollout).
#[must_use]
pub fn sched_event(e: &SchedEvent) -> Draft {
    match e {
        SchedEvent::Placed { task, target } => draft(
            Topic::Placement,
            "Placed",
            with_task(task, json!({ "node": target.as_str() })),
        ),
        SchedEvent::Admitted { task } => {
            draft(Topic::Placement, "Admitted", with_task(task, json!({})))
        }
        SchedEvent::Rejected { task, reason } => draft(
            Topic::Placement,
            "Rejected",
            with_task(task, json!({ "reason": reason })),
        ),
        SchedEvent::AttemptChanged {
            task,
            target,
            state,
            health,
        } => {
            let (name, detail) = state_name(state);
            let health = health
                .as_ref()
                .map(|h| json!({ "status": h.status, "note": h.note, "failures": h.failures }));
            draft(
                Topic::Attempt,
                "Changed",
                with_task(
                    task,
                    json!({ "node": target.as_str(), "state": name, "detail": detail, "health": health }),
                ),
            )
        }
        SchedEvent::VersionCreated {
            job,
            incarnation,
            version,
            epoch,
        } => draft(
            Topic::Job,
            "VersionCreated",
            json!({ "job": job.as_str(), "incarnation": incarnation, "version": version, "epoch": epoch }),
        ),
        SchedEvent::Deployment {
            job,
            incarnation,
            version,
            change,
        } => deploy::deployment_event(job.as_str(), *incarnation, *version, change),
        SchedEvent::Node(e) => node_event(e),
    }
}

/// The `Node` topic's drain and eligibility events (`docs/services.md`, §6).
fn node_event(e: &shoal_scheduler::NodeEvent) -> Draft {
    use shoal_scheduler::NodeEvent as N;
    let (kind, payload) = match e {
        N::Eligibility { node, eligible } => (
            "Eligibility",
            json!({ "node": node.as_str(), "eligible": eligible }),
        ),
        N::DrainStarted { node, deadline_ms } => (
            "DrainStarted",
            json!({ "node": node.as_str(), "deadline_ms": deadline_ms }),
        ),
        N::DrainMigrating { node, task } => (
            "DrainMigrating",
            with_task(task, json!({ "node": node.as_str() })),
        ),
        N::DrainDeadline { node, stopped } => (
            "DrainDeadline",
            json!({ "node": node.as_str(), "stopped": stopped }),
        ),
        N::DrainComplete { node } => ("DrainComplete", json!({ "node": node.as_str() })),
        N::DrainCancelled { node } => ("DrainCancelled", json!({ "node": node.as_str() })),
    };
    draft(Topic::Node, kind, payload)
}

/// What this node's executor observed (`Task`: `Started`, `Exited`, `Failed`, `Killed`).
#[must_use]
pub fn task_event(node: &str, task: &AttemptId, e: &TaskEvent) -> Draft {
    let (kind, extra) = match e {
        TaskEvent::Started { pid } => ("Started", json!({ "pid": pid })),
        TaskEvent::Exited { code } => ("Exited", json!({ "code": code })),
        TaskEvent::Failed { reason } => ("Failed", json!({ "reason": reason })),
        TaskEvent::Killed => ("Killed", json!({})),
    };
    let mut payload = with_task(task, extra);
    payload["node"] = json!(node);
    draft(Topic::Task, kind, payload)
}

/// An executor command this node's scheduler gave (`Task`: `StartRequested`,
/// `KillRequested`); health-check commands are not events.
#[must_use]
pub fn command_event(node: &str, c: &ExecCommand) -> Option<Draft> {
    let (kind, mut payload) = match c {
        ExecCommand::Start {
            task,
            command,
            resources,
            ..
        } => (
            "StartRequested",
            with_task(task, json!({ "command": command, "resources": resources })),
        ),
        ExecCommand::Kill { task, reason } => (
            "KillRequested",
            with_task(task, json!({ "reason": reason })),
        ),
        ExecCommand::Checks { .. } | ExecCommand::StopChecks { .. } => return None,
    };
    payload["node"] = json!(node);
    Some(draft(Topic::Task, kind, payload))
}

/// Events a core dropped from its own bounded queue before the shell drained it (`Stream`:
/// `Dropped {source, count}`): their indexes were never given out, so only this says so.
#[must_use]
pub fn core_dropped(source: &str, count: u64) -> Draft {
    draft(
        Topic::Stream,
        "Dropped",
        json!({ "source": source, "count": count }),
    )
}

/// A job write accepted by this agent's API (`Job`: `Submitted`, `Stopped`).
#[must_use]
pub fn job_event(kind: &'static str, job: &str) -> Draft {
    draft(Topic::Job, kind, json!({ "job": job }))
}

/// One catalog instance, keyed for diffing.
type InstanceKey = (String, String, u32, u32);

fn instances(c: &Catalog) -> BTreeMap<InstanceKey, &shoal_scheduler::Instance> {
    let mut out = BTreeMap::new();
    for (name, service) in &c.services {
        for i in &service.instances {
            out.insert((name.to_string(), i.job.to_string(), i.slot, i.attempt), i);
        }
    }
    out
}

fn instance_payload(service: &str, i: &shoal_scheduler::Instance) -> Value {
    json!({
        "service": service,
        "job": i.job.as_str(),
        "slot": i.slot,
        "attempt": i.attempt,
        "node": i.node.as_str(),
        "ip": i.ip,
        "ports": i.ports.iter().map(|(n, p)| json!({ "name": n.as_str(), "port": p })).collect::<Vec<_>>(),
        "health": i.health,
    })
}

/// What changed between two catalogs (`Service`: `InstanceRegistered`,
/// `InstanceDeregistered`, `InstanceHealth`), in key order.
#[must_use]
pub fn catalog_events(before: &Catalog, after: &Catalog) -> Vec<Draft> {
    let old = instances(before);
    let new = instances(after);
    let mut out = Vec::new();
    for (key, i) in &new {
        match old.get(key) {
            None => out.push(draft(
                Topic::Service,
                "InstanceRegistered",
                instance_payload(&key.0, i),
            )),
            Some(was) if was.health != i.health => {
                let mut p = instance_payload(&key.0, i);
                p["from"] = json!(was.health);
                out.push(draft(Topic::Service, "InstanceHealth", p));
            }
            Some(_) => {}
        }
    }
    for (key, i) in &old {
        if !new.contains_key(key) {
            out.push(draft(
                Topic::Service,
                "InstanceDeregistered",
                instance_payload(&key.0, i),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u64) -> Draft {
        job_event("Submitted", &format!("j{n}"))
    }

    fn all(_: Topic) -> bool {
        true
    }

    #[test]
    fn indexes_are_dense_and_a_resumed_reader_gets_exactly_the_rest() {
        let mut r = Ring::new("n1".into(), 7, 10);
        for n in 1..=5 {
            assert_eq!(r.push(n * 10, d(n)), n);
        }
        let first = r.read_after(0, &all, 3);
        let idx: Vec<u64> = first.events.iter().map(|e| e.index).collect();
        assert_eq!((idx, first.cursor), (vec![1, 2, 3], 3));
        let rest = r.read_after(first.cursor, &all, 100);
        let idx: Vec<u64> = rest.events.iter().map(|e| e.index).collect();
        assert_eq!((idx, rest.cursor), (vec![4, 5], 5));
        assert!(r.read_after(5, &all, 100).events.is_empty());
        assert_eq!(rest.events[0].event().unwrap().generation, 7);
    }

    #[test]
    fn a_reader_behind_the_ring_is_told_how_many_it_missed() {
        let mut r = Ring::new("n1".into(), 1, 3);
        for n in 1..=10 {
            r.push(n, d(n));
        }
        assert_eq!((r.emitted(), r.evicted()), (10, 7));
        let read = r.read_after(2, &all, 100);
        let first = &read.events[0].event().unwrap();
        assert_eq!(
            (first.topic, first.kind.as_str()),
            (Topic::Stream, "Missed")
        );
        assert_eq!(first.payload["missed"], 5);
        assert_eq!(first.index, 7);
        let idx: Vec<u64> = read.events[1..].iter().map(|e| e.index).collect();
        assert_eq!(idx, vec![8, 9, 10]);
        // Resuming after the notice misses nothing more.
        let next = r.read_after(first.index, &all, 100).events[0]
            .event()
            .unwrap();
        assert_eq!((next.index, next.kind.as_str()), (8, "Submitted"));
        // A reader exactly at the edge missed nothing.
        assert_eq!(r.read_after(7, &all, 100).events[0].index, 8);
    }

    #[test]
    fn the_filter_skips_topics_but_the_cursor_moves_past_them() {
        let mut r = Ring::new("n1".into(), 1, 10);
        r.push(1, d(1));
        r.push(2, draft(Topic::Task, "Started", json!({})));
        r.push(3, d(3));
        let read = r.read_after(0, &|t| t == Topic::Task, 100);
        assert_eq!(read.events.len(), 1);
        assert_eq!((read.events[0].index, read.cursor), (2, 3));
    }

    #[test]
    fn topics_parse_case_insensitively_and_unknown_ones_are_named() {
        assert_eq!("task".parse::<Topic>(), Ok(Topic::Task));
        let err = "Tasks".parse::<Topic>().unwrap_err();
        assert!(
            err.contains("\"Tasks\"") && err.contains("Placement"),
            "{err}"
        );
    }

    #[test]
    fn catalog_diffs_name_registrations_health_and_deregistrations() {
        use shoal_scheduler::{Instance, InstanceHealth, Service};
        let inst = |slot, health| Instance {
            job: "web".into(),
            slot,
            attempt: 1,
            node: "n1".into(),
            ip: "127.0.0.1".parse().unwrap(),
            ports: vec![("http".into(), 20000 + u16::try_from(slot).unwrap())],
            tags: vec![],
            version: 1,
            health,
        };
        let catalog = |instances: Vec<Instance>| {
            let mut c = Catalog::default();
            c.services.insert(
                "web".into(),
                Arc::new(Service {
                    name: "web".into(),
                    index: 1,
                    hash: 0,
                    jobs: vec!["web".into()],
                    tags: vec![],
                    instances,
                }),
            );
            c
        };
        let a = catalog(vec![
            inst(0, InstanceHealth::Unknown),
            inst(1, InstanceHealth::Healthy),
        ]);
        let b = catalog(vec![
            inst(0, InstanceHealth::Healthy),
            inst(2, InstanceHealth::Unknown),
        ]);
        let kinds: Vec<(&str, u64)> = catalog_events(&a, &b)
            .iter()
            .map(|d| (d.kind, d.payload["slot"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("InstanceHealth", 0),
                ("InstanceRegistered", 2),
                ("InstanceDeregistered", 1)
            ]
        );
        assert!(catalog_events(&b, &b).is_empty());
    }
}
