//! The [`Scheduler`]: one per node, driven by its shell. This file holds the driving API
//! (inputs, outputs, persistence) and the state every room shares; each role's own state is in
//! `roles.rs`, and the rooms that act on it are listed in the crate doc.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use shoal_gossip::{MemberInfo, Millis, Resources};

use crate::config::{SchedulerConfig, ms};
use crate::events::{EventQueue, SchedEvent};
use crate::hash::Rng;
use crate::health::{CheckResult, ResolvedCheck};
use crate::ids::{ActorId, AttemptId, Hlc, HlcClock, SlotKey};
use crate::message::{Message, Outgoing};
use crate::roles::{
    CatalogChanges, CatchUp, Coordination, Counters, Drain, Gc, LocalTask, Log, Members, Reach,
    Replication, Target, Wake, Work,
};
use crate::table::{
    AttemptState, Replica, ReplicaLimits, Tables, TablesV1, TablesV2, TablesV3, TablesV4,
};

/// An instruction for the local executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecCommand {
    /// Start a process for an admitted attempt. Report `Started`, then how it ended.
    Start {
        /// The attempt.
        task: AttemptId,
        /// Program.
        command: String,
        /// Arguments.
        args: Vec<String>,
        /// Environment.
        env: BTreeMap<String, String>,
        /// Working directory, if the job set one.
        workdir: Option<String>,
        /// Reserved resources (limits to enforce where the host allows).
        resources: Resources,
        /// The user to run as, if the job names one (admission checked this node allows it).
        user: Option<String>,
    },
    /// Stop a process (SIGTERM, then SIGKILL after the grace period). Report `Killed` (or how
    /// it ended if it exited first). Also sent for tasks that never started.
    Kill {
        /// The attempt.
        task: AttemptId,
        /// Why.
        reason: KillReason,
    },
    /// Run these health checks on a started task, one timer each, replacing any the task
    /// had; report each result with `handle_check_result`.
    Checks {
        /// The attempt.
        task: AttemptId,
        /// Its checks, ports and address resolved.
        checks: Vec<ResolvedCheck>,
    },
    /// Stop running the task's checks (it is being killed, or it ended). Results still in
    /// flight are ignored.
    StopChecks {
        /// The attempt.
        task: AttemptId,
    },
}

/// Why the scheduler wants a local task dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillReason {
    /// The job was stopped.
    Stopped,
    /// A newer attempt of the slot exists (fencing).
    Superseded,
    /// The job's count shrank below this slot.
    ScaledDown,
    /// The coordinator declared the attempt lost while this node was unreachable.
    Lost,
    /// The job (incarnation) is gone.
    JobGone,
    /// A process found on restart that the tables do not know as running here.
    Orphaned,
    /// This node has been without a majority for the job's `disconnect.stop_after_ms`.
    Disconnected,
    /// A health check failed `failures` times in a row; the attempt ends `Failed` with the
    /// check's reason, and the coordinator restarts it under the job's `restart` policy.
    Unhealthy,
    /// This node drains: the attempt ends `Drained` and is placed elsewhere.
    Drained,
}

/// What the local executor observed about a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskEvent {
    /// The process runs.
    Started {
        /// OS process id.
        pid: u32,
    },
    /// The process exited by itself.
    Exited {
        /// Exit code (negative: killed by that signal).
        code: i32,
    },
    /// The process could not be started, or died abnormally.
    Failed {
        /// Why.
        reason: String,
    },
    /// The process was killed on our request.
    Killed,
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// Not a snapshot.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// Written by a newer version.
    #[error("snapshot format {0} is not supported")]
    Format(u32),
    /// Written by another node.
    #[error("snapshot belongs to node `{found}`, not `{expected}`")]
    WrongNode {
        /// Name in the snapshot.
        found: String,
        /// Name asked for.
        expected: String,
    },
}

/// Current snapshot format: 2 added the `bindings` component and the spec's service fields
/// (`docs/services.md`); 3 the `health` component and the start stamp of `Running`
/// (`docs/faults.md`, "The incumbent wins"); 4 the `milestones` and `versions` components and
/// the job entry's deployment, version and `skip_canary` (`docs/services.md`, §4); 5 the
/// `nodes` component (§5). Formats 1 to 4 are still read.
const SNAPSHOT_FORMAT: u32 = 5;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    node: String,
    hlc: HlcClock,
    tables: Tables,
}

/// A format-1 snapshot.
#[derive(Deserialize)]
struct SnapshotV1 {
    node: String,
    hlc: HlcClock,
    tables: TablesV1,
}

/// A format-2 snapshot.
#[derive(Deserialize)]
struct SnapshotV2 {
    node: String,
    hlc: HlcClock,
    tables: TablesV2,
}

/// A format-3 snapshot.
#[derive(Deserialize)]
struct SnapshotV3 {
    node: String,
    hlc: HlcClock,
    tables: TablesV3,
}

/// A format-4 snapshot.
#[derive(Deserialize)]
struct SnapshotV4 {
    node: String,
    hlc: HlcClock,
    tables: TablesV4,
}

/// The format of a snapshot: its first field, whatever the rest holds.
#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

/// The same fields by reference: serde writes identical bytes, without cloning the tables
/// (a 10,000-task table clone showed up in the agent's profile).
#[derive(Serialize)]
struct SnapshotRef<'a> {
    format: u32,
    node: &'a str,
    hlc: &'a HlcClock,
    tables: &'a Tables,
}

/// The sans-IO scheduler core of one node.
///
/// # Driving it
///
/// The shell owns one `Scheduler` and calls, in any interleaving but one call at a time:
///
/// 1. **Inputs** — `handle_members` after every membership or resource-ad change (the full
///    view, this node included), `handle_message` for every message from a peer,
///    `handle_task_event` for every executor observation, `handle_check_result` for every
///    health probe's result, `handle_timeout` when the deadline
///    from `poll_timeout` passes, and the commands `submit` / `stop_job`.
/// 2. **Outputs, after every input** — drain `poll_message` (send each reliably to every
///    peer its `to.iter()` names, in order per peer when possible; loss is repaired by anti-entropy) and
///    `poll_command` (apply to the executor in order), then re-read `poll_timeout`.
/// 3. **Persistence** — after `submit`/`stop_job` (and periodically) store `snapshot()`; a
///    submission is acknowledged to the client once stored *and* `is_durable` holds. On start,
///    `restore` the snapshot, then call `handle_recovered_tasks` with the processes found.
///
/// `now` must not go backwards (it is clamped if it does). Nothing here reads a clock, spawns a
/// thread or draws OS randomness: equal inputs and seed give equal outputs.
#[derive(Debug)]
pub struct Scheduler {
    // ---- who this is, and what every room shares ----
    pub(crate) node: String,
    pub(crate) actor: ActorId,
    pub(crate) config: SchedulerConfig,
    pub(crate) rng: Rng,
    /// The latest `now` given (inputs never move it back).
    pub(crate) now: Millis,
    /// The periodic timers are armed (on the first input).
    pub(crate) started: bool,
    pub(crate) timers: BTreeSet<(Millis, Wake)>,
    /// What `reconcile.rs` re-examines next.
    pub(crate) work: Work,
    /// Messages for `poll_message`.
    pub(crate) outbox: VecDeque<Outgoing>,
    /// Executor commands for `poll_command`.
    pub(crate) commands: VecDeque<ExecCommand>,
    /// The replicated tables and their indexes.
    pub(crate) replica: Replica,
    /// The membership as last reported (`members.rs`).
    pub(crate) members: Members,
    // ---- each role's own state (`roles.rs`) ----
    /// This node's writes and its peers' replicas (`replication.rs`).
    pub(crate) repl: Replication,
    /// Tasks admitted here and proposals awaiting admission (`admission.rs`, `fencing.rs`).
    pub(crate) target: Target,
    /// The slot coordinator's memory (`coordinator.rs`).
    pub(crate) coord: Coordination,
    /// Garbage collection between passes (`gc.rs`).
    pub(crate) gc: Gc,
    /// Quorum, streak without a majority, catch-up after a restore (`disconnect.rs`).
    pub(crate) reach: Reach,
    /// Job records to log and acks held until they are logged (`durability.rs`).
    pub(crate) log: Log,
    /// What this core did, for metrics.
    pub(crate) counters: Counters,
    /// What the service catalog has not absorbed yet (`catalog.rs`).
    pub(crate) catalog_changes: CatalogChanges,
    /// Events for `poll_event` (`events.rs`).
    pub(crate) events: EventQueue,
    /// What the rollout events last said of each job (`deploy_events.rs`).
    pub(crate) deployments_seen: crate::events::SeenDeployments,
    /// This node's part in drains (`drain.rs`).
    pub(crate) drain: Drain,
}

impl Scheduler {
    /// A scheduler with empty tables for node `node`. `seed` drives every random choice
    /// (the actor's start id, jitter, anti-entropy peers); use a fresh OS-random seed per start in
    /// production and a derived one in simulation.
    #[must_use]
    pub fn new(node: String, config: SchedulerConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let actor = ActorId {
            node: node.as_str().into(),
            start: rng.next_u64(),
        };
        let limits = replica_limits(&config);
        let events = EventQueue::new(config.event_queue);
        let mut s = Self {
            node,
            actor,
            config,
            rng,
            now: Millis(0),
            started: false,
            timers: BTreeSet::new(),
            work: Work::default(),
            outbox: VecDeque::new(),
            commands: VecDeque::new(),
            replica: Replica::new(Tables::default(), limits),
            members: Members::default(),
            repl: Replication::default(),
            target: Target::default(),
            coord: Coordination::default(),
            gc: Gc::default(),
            reach: Reach::default(),
            log: Log::default(),
            counters: Counters::default(),
            catalog_changes: CatalogChanges::default(),
            events,
            deployments_seen: Default::default(),
            drain: Drain::default(),
        };
        s.clear_members();
        s
    }

    /// This node's name.
    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The actor this start of the scheduler writes as.
    #[must_use]
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// The replicated tables (read-only), e.g. for convergence checks in the simulator.
    #[must_use]
    pub fn tables(&self) -> &Tables {
        self.replica.tables()
    }

    /// Resources admitted on this node and not yet released (its ledger).
    #[must_use]
    pub fn local_allocated(&self) -> Resources {
        self.target.allocated()
    }

    /// Resources that live attempts (proposed, admitted or running) hold on `node`, as this
    /// replica knows them: what `GET /v1/nodes` shows as allocated.
    #[must_use]
    pub fn node_usage(&self, node: &str) -> Resources {
        self.replica.usage_by_name(node)
    }

    /// Tasks admitted on this node and not yet known dead, with their reservations.
    pub fn local_tasks(&self) -> impl Iterator<Item = (&AttemptId, Resources)> {
        self.target.ledger.iter().map(|(k, t)| (k, t.resources))
    }

    // ---- inputs -------------------------------------------------------------------------

    /// The full membership view after any change (this node may be absent; it is then
    /// assumed alive without a resource ad).
    pub fn handle_members(&mut self, now: Millis, members: &[MemberInfo]) {
        self.members_input(now, members, None);
    }

    /// A message from peer `from`.
    pub fn handle_message(&mut self, now: Millis, from: &str, msg: Message) {
        self.tick(now);
        self.contact_from(from);
        match msg {
            Message::Ops { ops } => self.receive_ops(from, ops),
            Message::Digest { clock, reply } => self.receive_digest(from, clock, reply),
            Message::State { tables } => self.receive_state(*tables),
            Message::Ack { actor, counter } => {
                if actor == self.actor {
                    let a = self.repl.acks.entry(from.to_string()).or_default();
                    *a = (*a).max(counter);
                }
            }
        }
        self.reconcile();
    }

    /// An observation of the local executor about one task.
    pub fn handle_task_event(&mut self, now: Millis, task: AttemptId, event: TaskEvent) {
        self.tick(now);
        let state = match event {
            // The launch raced a kill this node had already decided (the executor was
            // launching when the kill came): the process goes away, and a start written now
            // would make a superseded copy look like the slot's incumbent to every replica,
            // which then kills the copy that should run (two placers' copies of one slot
            // each killing its own). Its `Killed` follows.
            TaskEvent::Started { .. }
                if self.target.ledger.get(&task).is_some_and(|t| t.killing) =>
            {
                self.reconcile();
                return;
            }
            TaskEvent::Started { .. } => {
                // The first report's stamp decides incumbency (`Tables::current_attempt`);
                // a repeated report keeps it.
                let known = self.target.ledger.get(&task).and_then(|t| t.started);
                let since = known.unwrap_or_else(|| self.repl.hlc.tick(self.now));
                if let Some(t) = self.target.ledger.get_mut(&task) {
                    t.started = Some(since);
                }
                AttemptState::running(since)
            }
            TaskEvent::Exited { code } => AttemptState::Exited { code },
            TaskEvent::Failed { reason } => AttemptState::Failed { reason },
            // Killed because a check kept failing: the outcome is that failure.
            TaskEvent::Killed => match self.target.ledger.get(&task) {
                Some(LocalTask {
                    unhealthy: Some(reason),
                    ..
                }) => AttemptState::Failed {
                    reason: reason.clone(),
                },
                _ if self.drain.stopping.contains(&task) => AttemptState::Drained,
                _ => AttemptState::Killed,
            },
        };
        if !state.is_live() {
            self.drain.stopping.remove(&task);
            self.stop_checks(&task);
            if let Some(gone) = self.target.ledger.remove(&task)
                && !gone.ports.is_empty()
            {
                // A proposal of the same slot may wait for this task's static port.
                self.requeue_deferred(Some(&task.job));
            }
        }
        self.write_state_if_mine(&task, state.clone());
        if matches!(state, AttemptState::Running { round: 0, .. }) {
            self.start_checks(&task);
            self.track_settling(&task);
        }
        self.reconcile();
    }

    /// The result of check `check` (its index in the job's `[[checks]]`) of a local task, as
    /// the shell's probe found it. Writes the task's health when it changes, and kills the
    /// task when a check failed `failures` times in a row. Results for a task whose checks
    /// were stopped are ignored.
    pub fn handle_check_result(
        &mut self,
        now: Millis,
        task: AttemptId,
        check: u8,
        result: CheckResult,
    ) {
        self.tick(now);
        self.record_check(&task, check, &result);
        self.reconcile();
    }

    /// After a restart: the processes the executor found still running. Tasks the tables
    /// expect here but that are gone are marked failed; processes that should not run are
    /// killed.
    pub fn handle_recovered_tasks(&mut self, now: Millis, running: &[AttemptId]) {
        self.tick(now);
        let found: BTreeSet<&AttemptId> = running.iter().collect();
        let gone: Vec<AttemptId> = self
            .target
            .ledger
            .keys()
            .filter(|k| !found.contains(k))
            .cloned()
            .collect();
        for id in gone {
            self.target.ledger.remove(&id);
            let reason = "process not found after agent restart".to_string();
            self.write_state_if_mine(&id, AttemptState::Failed { reason });
        }
        for task in running {
            if self.target.ledger.contains_key(task) {
                // Adopted: its checks start again, their grace from now, and so do its
                // rollout clocks (its marks already written stay).
                self.start_checks(task);
                self.arm_healthy_deadline(task);
            } else {
                self.commands.push_back(ExecCommand::Kill {
                    task: task.clone(),
                    reason: KillReason::Orphaned,
                });
            }
        }
        self.work.everything = true;
        self.reconcile();
    }

    /// The ports listening on this host (`/proc/net/{tcp,tcp6,udp,udp6}`), every few seconds:
    /// admission keeps clear of them. The ports of this node's own tasks are ignored, so the
    /// shell may report every listening port. The simulator never calls it.
    pub fn handle_host_ports(&mut self, now: Millis, ports: BTreeSet<u16>) {
        self.tick(now);
        let ours: BTreeSet<u16> = self
            .target
            .ledger
            .values()
            .flat_map(|t| t.ports.iter().copied())
            .collect();
        self.target.host_ports = ports.difference(&ours).copied().collect();
    }

    /// The deadline from [`Scheduler::poll_timeout`] passed.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.tick(now);
        while let Some((at, _)) = self.timers.first() {
            if *at > self.now {
                break;
            }
            let Some((_, wake)) = self.timers.pop_first() else {
                break;
            };
            self.wake(wake);
        }
        self.reconcile();
    }

    fn wake(&mut self, wake: Wake) {
        match wake {
            Wake::Work => {}
            Wake::CatchUp => self.catch_up_ran_out(),
            Wake::AntiEntropy => {
                self.send_digest_to_random_peer();
                let at = self.now.plus(self.config.anti_entropy_interval);
                self.timers.insert((at, Wake::AntiEntropy));
            }
            Wake::PendingRetry => {
                self.coord.pending_retry_armed = false;
                // A pending slot found no room at the last look; if no node gained room since,
                // the same placement fails the same way (its reason may then be slightly
                // stale: another node may have filled up, which only the view shows). The
                // timer keeps its period either way: re-arming it only when room appears would
                // make every coordinator retry at the same moment after a release and pile
                // onto the freed node (measured: 20 % more ops, mostly rejections).
                let generation = self.room_generation();
                if generation != self.coord.pending_retried_at {
                    self.coord.pending_retried_at = generation;
                    let keys: Vec<SlotKey> = self.coord.pending.keys().cloned().collect();
                    self.work.slots.extend(keys);
                } else {
                    self.retry_pending_soon();
                }
            }
            Wake::Slot(key) => {
                self.work.slots.insert(key);
            }
            Wake::Release(id) => self.end_release_hold(id),
            Wake::Visible(id) => self.release_visible(id),
            Wake::Disconnect => self.stop_disconnected(),
            Wake::Settled => self.work.everything = true,
            Wake::Settle(task) => self.settle_due(&task),
            // `reconcile` drives the drain after every input.
            Wake::Drain => {}
            Wake::Job(job) => {
                self.work.jobs.insert(job);
            }
            Wake::Tombstones => {
                self.collect_tombstones();
                let at = self.now.plus(self.config.tombstone_check_interval);
                self.timers.insert((at, Wake::Tombstones));
            }
            Wake::QuietLogs => {
                let dropped = self.replica.drop_quiet_logs(&self.actor);
                self.counters.op_logs_dropped += dropped as u64;
                let at = self.now.plus(self.config.quiet_log_drop);
                self.timers.insert((at, Wake::QuietLogs));
            }
        }
    }

    // ---- outputs ------------------------------------------------------------------------

    /// When to call [`Scheduler::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// The next message to send reliably to its recipients (by node name).
    pub fn poll_message(&mut self) -> Option<Outgoing> {
        self.flush_push();
        self.outbox.pop_front()
    }

    /// The next instruction for the local executor.
    pub fn poll_command(&mut self) -> Option<ExecCommand> {
        self.commands.pop_front()
    }

    /// The next event for the shell's event stream (none unless `SchedulerConfig::event_queue`
    /// is set; `events.rs`).
    pub fn poll_event(&mut self) -> Option<SchedEvent> {
        self.events.pop()
    }

    /// Events dropped because the shell did not drain them in time.
    #[must_use]
    pub fn events_dropped(&self) -> u64 {
        self.events.dropped()
    }

    // ---- persistence --------------------------------------------------------------------

    /// Everything needed to restart: the tables and the clock (op logs are not kept; peers
    /// fall back to state transfer for what a restarted node cannot serve).
    #[must_use]
    pub fn snapshot(&self) -> Vec<u8> {
        let snap = SnapshotRef {
            format: SNAPSHOT_FORMAT,
            node: &self.node,
            hlc: &self.repl.hlc,
            tables: self.tables(),
        };
        postcard::to_stdvec(&snap).unwrap_or_default()
    }

    /// Rebuild a scheduler from [`Scheduler::snapshot`]. It writes as a new actor (so it can
    /// never reuse a dot sent before the crash) and considers every attempt admitted here as
    /// still running until [`Scheduler::handle_recovered_tasks`] says otherwise.
    pub fn restore(
        node: String,
        config: SchedulerConfig,
        seed: u64,
        bytes: &[u8],
    ) -> Result<Self, RestoreError> {
        let malformed = |e: postcard::Error| RestoreError::Malformed(e.to_string());
        let FormatOnly { format } = postcard::from_bytes(bytes).map_err(malformed)?;
        // An older format: its own layout, converted.
        macro_rules! old {
            ($t:ty) => {{
                let (_, old): (u32, $t) = postcard::from_bytes(bytes).map_err(malformed)?;
                Snapshot {
                    format,
                    node: old.node,
                    hlc: old.hlc,
                    tables: old.tables.into(),
                }
            }};
        }
        let snap = match format {
            1 => old!(SnapshotV1),
            2 => old!(SnapshotV2),
            3 => old!(SnapshotV3),
            4 => old!(SnapshotV4),
            SNAPSHOT_FORMAT => postcard::from_bytes(bytes).map_err(malformed)?,
            _ => return Err(RestoreError::Format(format)),
        };
        if snap.node != node {
            return Err(RestoreError::WrongNode {
                found: snap.node,
                expected: node,
            });
        }
        let mut s = Scheduler::new(node, config, seed);
        while snap.tables.clock().get(&s.actor) > 0 {
            s.actor.start = s.rng.next_u64();
        }
        s.repl.hlc = snap.hlc;
        s.replica = Replica::new(snap.tables, replica_limits(&s.config));
        // Node views hold ids into the replica's usage index: rebuild them for the new one.
        s.clear_members();
        s.rebuild_ledger();
        s.count_restored_drains_told();
        s.reach.catch_up = Some(CatchUp::default());
        Ok(s)
    }

    fn rebuild_ledger(&mut self) {
        let tables = self.replica.tables();
        let mine: Vec<(AttemptId, Resources, Vec<u16>, Hlc)> = tables
            .assignments()
            .filter(|(id, a)| {
                a.target == self.node
                    && matches!(
                        tables.state(id),
                        AttemptState::Admitted | AttemptState::Running { .. }
                    )
            })
            .map(|(id, a)| {
                let ports = tables
                    .binding(id)
                    .map(|b| b.ports.iter().map(|(_, p)| *p).collect())
                    .unwrap_or_default();
                let since = tables.state(id).running_since().unwrap_or_default();
                (id.clone(), a.resources, ports, since)
            })
            .collect();
        // Admitted by an earlier start of this node: if their processes are found, they are
        // adopted but never reclaimed after a loss (`docs/faults.md`).
        for (id, resources, ports, since) in mine {
            let marks = self.replica.tables().milestones(&id);
            self.target.ledger.insert(
                id,
                LocalTask {
                    resources,
                    ports,
                    killing: false,
                    started: Some(since),
                    recovered: true,
                    since: self.now,
                    unhealthy: None,
                    healthy_since: None,
                    marks,
                },
            );
        }
    }

    // ---- time ---------------------------------------------------------------------------

    /// Advance time and arm the periodic timers on first use.
    pub(crate) fn tick(&mut self, now: Millis) {
        self.now = self.now.max(now);
        self.events.input_begins();
        if !self.started {
            self.started = true;
            let jitter = self.rng.below(ms(self.config.anti_entropy_interval).max(1));
            self.timers
                .insert((self.now.plus_ms(jitter), Wake::AntiEntropy));
            let at = self.now.plus(self.config.tombstone_check_interval);
            self.timers.insert((at, Wake::Tombstones));
            if !self.config.quiet_log_drop.is_zero() {
                let at = self.now.plus(self.config.quiet_log_drop);
                self.timers.insert((at, Wake::QuietLogs));
            }
        }
    }
}

/// The limits a scheduler with `config` gives its replica.
fn replica_limits(config: &SchedulerConfig) -> ReplicaLimits {
    ReplicaLimits {
        log_per_actor: config.op_log_per_actor.get(),
        pending_per_actor: config.pending_ops_per_actor.get(),
        hold_releases: !config.release_hold.is_zero(),
    }
}

#[cfg(test)]
mod tests;
