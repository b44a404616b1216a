//! The [`Scheduler`]: one per node, driven by its shell. This file holds the driving API, the
//! replication protocol and persistence; `coordinator.rs` holds placement, admission, fencing,
//! repair and GC; `view.rs` the read side.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use shoal_gossip::{MemberInfo, MemberStatus, Millis, Quorum, ResourceAd, Resources};

use crate::config::{SchedulerConfig, ms};
use crate::durability::Log;
use crate::hash::{Rng, StableHasher, name_hash};
use crate::ids::{ActorId, AttemptId, Dot, HlcClock, Name, SlotKey, Stamp, TaskKey, VersionVector};
use crate::message::{Message, Outgoing};
use crate::placement::{NodeView, PendingReason};
use crate::spec::{JobSpec, NeverFitsError, SpecError};
use crate::table::{JobEntry, JobKey, Op, OpBody, Received, Replica, ReplicaLimits, Tables};

/// An instruction for the local executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecCommand {
    /// Start a process for an admitted attempt. Report `Started`, then how it ended.
    Start {
        /// The attempt.
        task: TaskKey,
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
        task: TaskKey,
        /// Why.
        reason: KillReason,
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

/// Proof of a local write, to wait for its durability with [`Scheduler::is_durable`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Job id.
    pub job: String,
    /// The job write's stamp (its version).
    pub version: Stamp,
    /// The write's dot.
    pub dot: Dot,
}

/// A checked submission or stop, before it is applied (see [`Scheduler::prepare_submit`]).
#[derive(Debug, Clone)]
pub enum Prepared {
    /// Nothing to write: the job is already so.
    Unchanged(Receipt),
    /// Log [`JobWrite::record`], then [`Scheduler::commit`].
    Write(Box<JobWrite>),
}

/// A job write prepared but not applied.
#[derive(Debug, Clone)]
pub struct JobWrite {
    incarnation: u64,
    entry: JobEntry,
    /// The job's record as it will be after the write: log it before committing.
    pub record: crate::durability::JobRecord,
    /// The counter the write will take (a commit checks nothing came in between).
    counter: u64,
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The spec is invalid.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// No current member could ever host one task.
    #[error(transparent)]
    NeverFits(#[from] NeverFitsError),
}

/// Why a stop was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopError {
    /// No such job.
    #[error("no job `{0}`")]
    NotFound(String),
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

/// Counters of one scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Stats {
    /// Rows in the replicated tables (jobs, attempts, states, tombstones).
    pub table_rows: usize,
    /// Ops received out of order and waiting for their predecessors.
    pub buffered_ops: usize,
    /// Tasks admitted here and not yet dead.
    pub local_tasks: usize,
    /// Slots this node coordinates that found no room.
    pub pending_slots: usize,
    /// Ops written by this incarnation.
    pub ops_written: u64,
    /// Messages refused because an op in them broke an ownership rule (`Scheduler::handle_message`).
    pub refused_messages: u64,
}

/// Current snapshot format.
const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    node: String,
    hlc: HlcClock,
    tables: Tables,
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

/// A local task: admitted here and not yet known to be dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalTask {
    pub(crate) resources: Resources,
    pub(crate) killing: bool,
    /// Its process was seen running (by this start of the node, or found at restart).
    pub(crate) started: bool,
    /// Found running by a restarted node, not admitted by this start: never reclaimed after a
    /// loss (`docs/faults.md`).
    pub(crate) recovered: bool,
}

impl LocalTask {
    pub(crate) fn admitted(resources: Resources) -> Self {
        LocalTask {
            resources,
            killing: false,
            started: false,
            recovered: false,
        }
    }
}

/// A scheduled wake-up.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Wake {
    /// Unfinished work from a busy call.
    Work,
    /// Send a digest.
    AntiEntropy,
    /// Re-examine slots that found no room.
    PendingRetry,
    /// A slot's back-off ends.
    Slot(SlotKey),
    /// A job's GC grace ends.
    Job(Name),
    /// Check tombstones.
    Tombstones,
    /// A held release of the node with this usage id becomes visible to placement.
    Release(usize),
    /// Without a majority: some local tasks' `stop_after_ms` may have run out.
    Disconnect,
    /// A member down has been down long enough to be acted on (`Quorum::settle_ms`).
    Settled,
}

/// Dirty sets: what to re-examine.
#[derive(Debug, Default)]
pub(crate) struct Work {
    pub(crate) everything: bool,
    pub(crate) jobs: BTreeSet<Name>,
    pub(crate) slots: BTreeSet<SlotKey>,
}

impl Work {
    pub(crate) fn is_empty(&self) -> bool {
        !self.everything && self.jobs.is_empty() && self.slots.is_empty()
    }
}

/// A slot waiting out a back-off, keyed to the attempt that ended.
#[derive(Debug, Clone)]
pub(crate) struct Retry {
    pub(crate) after: AttemptId,
    pub(crate) at: Millis,
}

/// A job's placement that found no room, and what the placer knew then.
#[derive(Debug, Clone)]
pub(crate) struct NoRoom {
    /// The job version placed (its request and constraints).
    pub(crate) epoch: Stamp,
    /// `Replica::releases` when every candidate was last known not to fit.
    pub(crate) releases: u64,
    /// `Scheduler::room_changes` then (the candidates and their shapes).
    pub(crate) room_changes: u64,
    /// Why.
    pub(crate) reason: PendingReason,
}

/// The membership as last reported, with derived lists.
#[derive(Debug, Default)]
pub(crate) struct Members {
    pub(crate) all: BTreeMap<String, MemberInfo>,
    /// Alive or suspect (coordinators are chosen among these), with name hashes, sorted.
    pub(crate) live: Vec<(String, u64)>,
    /// This node's name hash when it is among `live` (it coordinates nothing otherwise).
    pub(crate) me: Option<u64>,
    /// Placement candidates: alive, with a resource ad, not left.
    pub(crate) nodes: Vec<NodeView>,
    /// `nodes[i].usage_id`, side by side: scanned for recent releases without reading the
    /// views themselves.
    pub(crate) usage_ids: Vec<usize>,
    /// Members that have not left, this node included: the view's share of the cluster.
    pub(crate) listed: u32,
    /// When each member now down (or left) was first seen so, in this node's clock.
    pub(crate) down_since: BTreeMap<String, Millis>,
}

impl Members {
    /// Declared down or gone. Its live attempts are lost once it has been so for the
    /// quorum's `settle_ms` ([`Scheduler::settled_down`]).
    pub(crate) fn is_down(&self, name: &str) -> bool {
        self.all.get(name).is_some_and(down_or_gone)
    }
}

fn down_or_gone(m: &MemberInfo) -> bool {
    matches!(m.status, MemberStatus::Down | MemberStatus::Left)
        || m.ad.as_ref().is_some_and(|a| a.left)
}

/// The sans-IO scheduler core of one node.
///
/// # Driving it
///
/// The shell owns one `Scheduler` and calls, in any interleaving but one call at a time:
///
/// 1. **Inputs** — `handle_members` after every membership or resource-ad change (the full
///    view, this node included), `handle_message` for every message from a peer,
///    `handle_task_event` for every executor observation, `handle_timeout` when the deadline
///    from `poll_timeout` passes, and the commands `submit` / `stop_job`.
/// 2. **Outputs, after every input** — drain `poll_message` (send each reliably to every
///    named peer, in order per peer when possible; loss is repaired by anti-entropy) and
///    `poll_command` (apply to the executor in order), then re-read `poll_timeout`.
/// 3. **Persistence** — after `submit`/`stop_job` (and periodically) store `snapshot()`; a
///    submission is acknowledged to the client once stored *and* `is_durable` holds. On start,
///    `restore` the snapshot, then call `handle_recovered_tasks` with the processes found.
///
/// `now` must not go backwards (it is clamped if it does). Nothing here reads a clock, spawns a
/// thread or draws OS randomness: equal inputs and seed give equal outputs.
#[derive(Debug)]
pub struct Scheduler {
    pub(crate) node: String,
    pub(crate) actor: ActorId,
    pub(crate) config: SchedulerConfig,
    pub(crate) rng: Rng,
    pub(crate) hlc: HlcClock,
    pub(crate) counter: u64,
    pub(crate) replica: Replica,
    pub(crate) members: Members,
    /// Target side: tasks admitted here and not yet dead.
    pub(crate) ledger: BTreeMap<AttemptId, LocalTask>,
    /// Target side: proposals awaiting admission, in arrival order.
    pub(crate) admission: VecDeque<AttemptId>,
    /// Target side: proposals for a job (version) not received yet.
    pub(crate) deferred: BTreeSet<AttemptId>,
    pub(crate) work: Work,
    pub(crate) retry: BTreeMap<SlotKey, Retry>,
    pub(crate) timers: BTreeSet<(Millis, Wake)>,
    pub(crate) pending_retry_armed: bool,
    /// Grows whenever the member list changed, so a placement candidate may have gained room
    /// (the replica counts releases, see [`Scheduler::room_generation`]).
    pub(crate) room_changes: u64,
    /// [`Scheduler::room_generation`] when the pending slots were last re-examined.
    pub(crate) pending_retried_at: u64,
    /// Coordinator side: slots that found no room, with the reason.
    pub(crate) pending: BTreeMap<SlotKey, PendingReason>,
    /// Coordinator side: per job incarnation, its last placement that found no room (see
    /// [`Scheduler::still_no_room`]).
    pub(crate) no_room: BTreeMap<(Name, u64), NoRoom>,
    pub(crate) finished_since: BTreeMap<JobKey, Millis>,
    /// Batch slots below this index were final when last checked (GC scan cursor).
    pub(crate) done_cursor: BTreeMap<JobKey, u32>,
    pub(crate) tombstones: BTreeMap<JobKey, (Millis, VersionVector)>,
    pub(crate) peer_clocks: BTreeMap<String, VersionVector>,
    /// Highest counter of our actor each peer acknowledged.
    pub(crate) acks: BTreeMap<String, u64>,
    pub(crate) push: Vec<Op>,
    pub(crate) outbox: VecDeque<Outgoing>,
    pub(crate) commands: VecDeque<ExecCommand>,
    pub(crate) now: Millis,
    pub(crate) started: bool,
    /// Job records to log and acks held until they are logged (`durability.rs`).
    pub(crate) log: Log,
    /// How much of the cluster this node reaches (`disconnect.rs`).
    pub(crate) quorum: Quorum,
    /// The current streak without a stable majority (`disconnect.rs`).
    pub(crate) streak: crate::disconnect::Streak,
    /// Restored from a snapshot and not yet through one anti-entropy exchange with a live
    /// peer: places and condemns nothing (its tables may be stale). See `disconnect.rs`.
    pub(crate) catch_up: Option<crate::disconnect::CatchUp>,
    /// Messages refused for an ownership violation.
    pub(crate) refused_messages: u64,
}

impl Scheduler {
    /// A scheduler with empty tables for node `node`. `seed` drives every random choice
    /// (actor incarnation, jitter, anti-entropy peers); use a fresh OS-random seed per start in
    /// production and a derived one in simulation.
    #[must_use]
    pub fn new(node: String, config: SchedulerConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let actor = ActorId {
            node: node.as_str().into(),
            incarnation: rng.next_u64(),
        };
        let limits = ReplicaLimits::of(&config);
        let mut s = Self {
            node,
            actor,
            config,
            rng,
            hlc: HlcClock::default(),
            counter: 0,
            replica: Replica::new(Tables::default(), limits),
            members: Members::default(),
            ledger: BTreeMap::new(),
            admission: VecDeque::new(),
            deferred: BTreeSet::new(),
            work: Work::default(),
            retry: BTreeMap::new(),
            timers: BTreeSet::new(),
            pending_retry_armed: false,
            room_changes: 0,
            pending_retried_at: u64::MAX,
            pending: BTreeMap::new(),
            no_room: BTreeMap::new(),
            finished_since: BTreeMap::new(),
            done_cursor: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            peer_clocks: BTreeMap::new(),
            acks: BTreeMap::new(),
            push: Vec::new(),
            outbox: VecDeque::new(),
            commands: VecDeque::new(),
            now: Millis(0),
            started: false,
            log: Log::default(),
            quorum: Quorum::alone(Millis(0)),
            streak: crate::disconnect::Streak::default(),
            catch_up: None,
            refused_messages: 0,
        };
        s.set_members(&[]);
        s
    }

    /// This node's name.
    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The actor this incarnation writes as.
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
        self.ledger.values().fold(Resources::default(), |acc, t| {
            acc.saturating_add(&t.resources)
        })
    }

    /// Resources that live attempts (proposed, admitted or running) hold on `node`, as this
    /// replica knows them: what `GET /v1/nodes` shows as allocated.
    #[must_use]
    pub fn node_usage(&self, node: &str) -> Resources {
        self.replica.usage_by_name(node)
    }

    /// Counters for metrics and simulation reports.
    #[must_use]
    pub fn stats(&self) -> Stats {
        Stats {
            table_rows: self.tables().row_count(),
            buffered_ops: self.replica.pending_len(),
            local_tasks: self.ledger.len(),
            pending_slots: self.pending.len(),
            ops_written: self.counter,
            refused_messages: self.refused_messages,
        }
    }

    /// Tasks admitted on this node and not yet known dead, with their reservations.
    pub fn local_tasks(&self) -> impl Iterator<Item = (&TaskKey, Resources)> {
        self.ledger.iter().map(|(k, t)| (k, t.resources))
    }

    // ---- inputs -------------------------------------------------------------------------

    /// The full membership view after any change (this node may be absent; it is then
    /// assumed alive without a resource ad).
    pub fn handle_members(&mut self, now: Millis, members: &[MemberInfo]) {
        self.tick(now);
        self.ask_to_catch_up_after(members);
        if !self.update_in_place(members) {
            let before: Vec<(String, MemberStatus)> = self.statuses();
            self.set_members(members);
            if before != self.statuses() {
                self.work.everything = true;
            } else {
                self.retry_pending_soon();
            }
        }
        self.reconcile();
    }

    /// Applies a view that differs from the current one at most in what members' ads say
    /// outside their shape (version, addresses) and in update times, which placement does not
    /// read. Returns false, changing nothing, when membership, a status, an identity or an
    /// ad's capacity, attributes, draining or left flag changed: the caller rebuilds the
    /// derived lists.
    fn update_in_place(&mut self, members: &[MemberInfo]) -> bool {
        // The view comes sorted by name (as the membership core lists it), like `all`: walking
        // both side by side replaces two name lookups per member. An unsorted view simply
        // takes the rebuild path.
        if members.len() != self.members.all.len() {
            return false;
        }
        let node = self.node.as_str();
        let unchanged_shape = |(cur, m): (&MemberInfo, &MemberInfo)| {
            cur.id == m.id
                && (cur.status == m.status || m.id.name == node)
                && match (&cur.ad, &m.ad) {
                    (None, None) => true,
                    (Some(a), Some(b)) => same_version(a, b) || same_shape(a, b),
                    _ => false,
                }
        };
        if !self.members.all.values().zip(members).all(unchanged_shape) {
            return false;
        }
        for (cur, m) in self.members.all.values_mut().zip(members) {
            let same_ad = match (&cur.ad, &m.ad) {
                (Some(a), Some(b)) => same_version(a, b),
                (a, b) => a == b,
            };
            if same_ad && cur.last_update == m.last_update {
                continue;
            }
            let status = cur.status;
            *cur = m.clone();
            cur.status = status;
        }
        true
    }

    fn statuses(&self) -> Vec<(String, MemberStatus)> {
        self.members
            .all
            .iter()
            .map(|(n, m)| (n.clone(), m.status))
            .collect()
    }

    fn members_is_down(&self, all: &BTreeMap<String, MemberInfo>, name: &str) -> bool {
        name != self.node && all.get(name).is_some_and(down_or_gone)
    }

    /// When `name`'s work may be condemned: it is down (or left), and has been so while this
    /// node held its majority for the quorum's `settle_ms` — long enough for a node on the
    /// wrong side of a partition to have lost its majority first (`docs/faults.md`). A node
    /// that left on purpose stopped its own work and is acted on at once. `None`: not down.
    pub(crate) fn down_settles_at(&self, name: &str) -> Option<Millis> {
        let m = self.members.all.get(name)?;
        if !down_or_gone(m) {
            return None;
        }
        if m.status == MemberStatus::Left || m.ad.as_ref().is_some_and(|a| a.left) {
            return Some(Millis(0));
        }
        let down = self
            .members
            .down_since
            .get(name)
            .copied()
            .unwrap_or(self.now);
        Some(down.max(self.quorum.since).plus_ms(self.quorum.settle_ms))
    }

    /// Whether `name`'s live attempts may be marked lost now; when it is down but not yet
    /// settled, arms a wake-up for the moment it is.
    pub(crate) fn settled_down(&mut self, name: &str) -> bool {
        match self.down_settles_at(name) {
            None => false,
            Some(at) if at <= self.now => true,
            Some(at) => {
                self.timers.insert((at, Wake::Settled));
                false
            }
        }
    }

    fn set_members(&mut self, members: &[MemberInfo]) {
        let mut all: BTreeMap<String, MemberInfo> = members
            .iter()
            .map(|m| (m.id.name.to_string(), m.clone()))
            .collect();
        if let Some(me) = all.get_mut(&self.node) {
            me.status = MemberStatus::Alive;
        }
        let mut live: Vec<(String, u64)> = all
            .values()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .filter(|m| !m.ad.as_ref().is_some_and(|a| a.left))
            .map(|m| (m.id.name.to_string(), name_hash(&m.id.name)))
            .collect();
        if !all.contains_key(&self.node) {
            live.push((self.node.clone(), name_hash(&self.node)));
            live.sort();
        }
        let replica = &mut self.replica;
        let nodes: Vec<NodeView> = all
            .values()
            .filter(|m| m.status == MemberStatus::Alive)
            .filter_map(|m| m.ad.as_ref().map(|ad| (m, ad)))
            .filter(|(_, ad)| !ad.left)
            .map(|(m, ad)| NodeView {
                name: m.id.name.to_string(),
                hash: name_hash(&m.id.name),
                usage_id: replica.node_id(&m.id.name),
                capacity: ad.capacity,
                attributes: ad.attributes.clone(),
                draining: ad.draining,
            })
            .collect();
        let me = live.iter().find(|(n, _)| *n == self.node).map(|(_, h)| *h);
        let usage_ids = nodes.iter().map(|n| n.usage_id).collect();
        let not_left = all
            .values()
            .filter(|m| m.status != MemberStatus::Left && !m.ad.as_ref().is_some_and(|a| a.left))
            .count();
        let listed = u32::try_from(not_left + usize::from(!all.contains_key(&self.node)))
            .unwrap_or(u32::MAX);
        let now = self.now;
        let before = std::mem::take(&mut self.members.down_since);
        let down_since = all
            .keys()
            .filter(|name| self.members_is_down(&all, name))
            .map(|name| (name.clone(), before.get(name).copied().unwrap_or(now)))
            .collect();
        self.members = Members {
            all,
            live,
            me,
            nodes,
            usage_ids,
            listed,
            down_since,
        };
        self.room_changes += 1;
    }

    /// Submit (or update) a job. Writes it locally and replicates it; placement starts at once.
    /// Re-submitting an identical spec of a running job changes nothing. The shell logs the
    /// write afterwards ([`Scheduler::poll_job_records`]); an agent that must refuse a
    /// submission it cannot log uses [`Scheduler::prepare_submit`] and
    /// [`Scheduler::commit`] instead.
    pub fn submit(&mut self, now: Millis, spec: JobSpec) -> Result<Receipt, SubmitError> {
        match self.prepare_submit(now, spec)? {
            Prepared::Unchanged(receipt) => Ok(receipt),
            Prepared::Write(write) => Ok(self.apply_write(now, *write, false)),
        }
    }

    /// Check a submission and compute its write without applying it: log
    /// [`JobWrite::record`] durably, then [`Scheduler::commit`] it, with no other call on
    /// this scheduler in between.
    pub fn prepare_submit(&mut self, now: Millis, spec: JobSpec) -> Result<Prepared, SubmitError> {
        self.tick(now);
        spec.validate_with(&self.config.spec_limits)?;
        spec.check_can_ever_fit(self.members.all.values())?;
        let existing = self.tables().job(&spec.id).map(|(inc, e)| (inc, e.clone()));
        if let Some((_, e)) = existing
            .as_ref()
            .filter(|(_, e)| e.spec == spec && !e.stopped)
        {
            return Ok(Prepared::Unchanged(Receipt {
                job: spec.id,
                version: e.stamp.clone(),
                dot: self.last_dot(),
            }));
        }
        let stamp = self.stamp();
        let incarnation = match &existing {
            Some((inc, _)) => *inc,
            None => incarnation_of(&spec.id, &stamp),
        };
        // Only a change of what runs (or a restart after stop) starts a new epoch; scaling
        // keeps the running slots.
        let epoch = match &existing {
            Some((_, e)) if !e.stopped && same_but_count(&e.spec, &spec) => e.epoch.clone(),
            _ => stamp.clone(),
        };
        let entry = JobEntry {
            stamp,
            epoch,
            spec,
            stopped: false,
        };
        Ok(Prepared::Write(Box::new(
            self.job_write(incarnation, entry),
        )))
    }

    /// Stop a job: every task is killed, nothing is placed; the job is purged after
    /// `gc_grace`. Stopping a stopped job changes nothing.
    pub fn stop_job(&mut self, now: Millis, id: &str) -> Result<Receipt, StopError> {
        match self.prepare_stop(now, id)? {
            Prepared::Unchanged(receipt) => Ok(receipt),
            Prepared::Write(write) => Ok(self.apply_write(now, *write, false)),
        }
    }

    /// [`Scheduler::stop_job`] in two steps, like [`Scheduler::prepare_submit`].
    pub fn prepare_stop(&mut self, now: Millis, id: &str) -> Result<Prepared, StopError> {
        self.tick(now);
        let (incarnation, cur) = self
            .tables()
            .job(id)
            .map(|(inc, e)| (inc, e.clone()))
            .ok_or_else(|| StopError::NotFound(id.to_string()))?;
        if cur.stopped {
            return Ok(Prepared::Unchanged(Receipt {
                job: id.to_string(),
                version: cur.stamp,
                dot: self.last_dot(),
            }));
        }
        let entry = JobEntry {
            stamp: self.stamp(),
            stopped: true,
            ..cur
        };
        Ok(Prepared::Write(Box::new(
            self.job_write(incarnation, entry),
        )))
    }

    /// A job write and the record of the job as it will be after it.
    fn job_write(&self, incarnation: u64, entry: JobEntry) -> JobWrite {
        let mut rows: Vec<(u64, JobEntry)> = self
            .tables()
            .incarnations(&entry.spec.id)
            .filter(|(inc, _)| *inc != incarnation)
            .map(|(inc, e)| (inc, e.clone()))
            .collect();
        rows.push((incarnation, entry.clone()));
        rows.sort_by_key(|(inc, _)| *inc);
        let record = crate::durability::JobRecord {
            job: entry.spec.id.clone(),
            bytes: postcard::to_stdvec(&crate::durability::JobRows { rows }).unwrap_or_default(),
        };
        JobWrite {
            incarnation,
            entry,
            record,
            counter: self.counter + 1,
        }
    }

    /// Apply a write from [`Scheduler::prepare_submit`] or [`Scheduler::prepare_stop`] whose
    /// record the shell has logged durably.
    ///
    /// # Panics
    /// If another write happened on this scheduler since the write was prepared (a shell bug).
    pub fn commit(&mut self, now: Millis, write: JobWrite) -> Receipt {
        self.apply_write(now, write, true)
    }

    /// Apply a prepared write; `logged`: its record is durable already (otherwise the next
    /// batch of records logs it).
    fn apply_write(&mut self, now: Millis, write: JobWrite, logged: bool) -> Receipt {
        self.tick(now);
        assert_eq!(
            write.counter,
            self.counter + 1,
            "a prepared write must be committed before any other input"
        );
        let job = write.entry.spec.id.clone();
        let version = write.entry.stamp.clone();
        let dot = self.write(OpBody::Job {
            incarnation: write.incarnation,
            entry: write.entry,
        });
        if logged {
            self.log.logged_own(dot.counter);
        }
        self.reconcile();
        Receipt { job, version, dot }
    }

    /// A message from peer `from`.
    pub fn handle_message(&mut self, now: Millis, from: &str, msg: Message) {
        self.tick(now);
        match msg {
            Message::Ops { ops } => self.receive_ops(from, ops),
            Message::Digest { clock, reply } => self.receive_digest(from, clock, reply),
            Message::State { tables } => self.receive_state(*tables),
            Message::Ack { actor, counter } => {
                if actor == self.actor {
                    let a = self.acks.entry(from.to_string()).or_default();
                    *a = (*a).max(counter);
                }
            }
        }
        self.reconcile();
    }

    /// An observation of the local executor about one task.
    pub fn handle_task_event(&mut self, now: Millis, task: TaskKey, event: TaskEvent) {
        self.tick(now);
        let state = match event {
            TaskEvent::Started { .. } => {
                if let Some(t) = self.ledger.get_mut(&task) {
                    t.started = true;
                }
                crate::table::AttemptState::RUNNING
            }
            TaskEvent::Exited { code } => crate::table::AttemptState::Exited { code },
            TaskEvent::Failed { reason } => crate::table::AttemptState::Failed { reason },
            TaskEvent::Killed => crate::table::AttemptState::Killed,
        };
        if !state.is_live() {
            self.ledger.remove(&task);
        }
        self.write_state_if_mine(&task, state);
        self.reconcile();
    }

    /// After a restart: the processes the executor found still running. Tasks the tables
    /// expect here but that are gone are marked failed; processes that should not run are
    /// killed.
    pub fn handle_recovered_tasks(&mut self, now: Millis, running: &[TaskKey]) {
        self.tick(now);
        let found: BTreeSet<&TaskKey> = running.iter().collect();
        let gone: Vec<AttemptId> = self
            .ledger
            .keys()
            .filter(|k| !found.contains(k))
            .cloned()
            .collect();
        for id in gone {
            self.ledger.remove(&id);
            let reason = "process not found after agent restart".to_string();
            self.write_state_if_mine(&id, crate::table::AttemptState::Failed { reason });
        }
        for task in running {
            if !self.ledger.contains_key(task) {
                self.commands.push_back(ExecCommand::Kill {
                    task: task.clone(),
                    reason: KillReason::Orphaned,
                });
            }
        }
        self.work.everything = true;
        self.reconcile();
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
            Wake::AntiEntropy => {
                self.send_digest_to_random_peer();
                let at = self.now.plus(self.config.anti_entropy_interval);
                self.timers.insert((at, Wake::AntiEntropy));
            }
            Wake::PendingRetry => {
                self.pending_retry_armed = false;
                // A pending slot found no room at the last look; if no node gained room since,
                // the same placement fails the same way (its reason may then be slightly
                // stale: another node may have filled up, which only the view shows). The
                // timer keeps its period either way: re-arming it only when room appears would
                // make every coordinator retry at the same moment after a release and pile
                // onto the freed node (measured: 20 % more ops, mostly rejections).
                let generation = self.room_generation();
                if generation != self.pending_retried_at {
                    self.pending_retried_at = generation;
                    let keys: Vec<SlotKey> = self.pending.keys().cloned().collect();
                    self.work.slots.extend(keys);
                } else {
                    self.retry_pending_soon();
                }
            }
            Wake::Slot(key) => {
                self.work.slots.insert(key);
            }
            Wake::Release(id) => {
                self.replica.end_hold(id);
                self.retry_pending_soon();
            }
            Wake::Disconnect => self.stop_disconnected(),
            Wake::Settled => self.work.everything = true,
            Wake::Job(job) => {
                self.work.jobs.insert(job);
            }
            Wake::Tombstones => {
                self.collect_tombstones();
                let at = self.now.plus(self.config.tombstone_check_interval);
                self.timers.insert((at, Wake::Tombstones));
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

    /// Whether a write is as durable as it can be now: logged here and held by a live peer
    /// that logged it, or logged here with no live peer (see [`Scheduler::durability`]).
    #[must_use]
    pub fn is_durable(&self, receipt: &Receipt) -> bool {
        self.durability(receipt) != crate::durability::Durability::Pending
    }

    // ---- persistence --------------------------------------------------------------------

    /// Everything needed to restart: the tables and the clock (op logs are not kept; peers
    /// fall back to state transfer for what a restarted node cannot serve).
    #[must_use]
    pub fn snapshot(&self) -> Vec<u8> {
        let snap = SnapshotRef {
            format: SNAPSHOT_FORMAT,
            node: &self.node,
            hlc: &self.hlc,
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
        let snap: Snapshot =
            postcard::from_bytes(bytes).map_err(|e| RestoreError::Malformed(e.to_string()))?;
        if snap.format != SNAPSHOT_FORMAT {
            return Err(RestoreError::Format(snap.format));
        }
        if snap.node != node {
            return Err(RestoreError::WrongNode {
                found: snap.node,
                expected: node,
            });
        }
        let mut s = Scheduler::new(node, config, seed);
        while snap.tables.clock().get(&s.actor) > 0 {
            s.actor.incarnation = s.rng.next_u64();
        }
        s.hlc = snap.hlc;
        s.replica = Replica::new(snap.tables, ReplicaLimits::of(&s.config));
        // Node views hold ids into the replica's usage index: rebuild them for the new one.
        s.set_members(&[]);
        s.rebuild_ledger();
        s.catch_up = Some(crate::disconnect::CatchUp::default());
        Ok(s)
    }

    fn rebuild_ledger(&mut self) {
        let tables = self.replica.tables();
        let mine: Vec<(AttemptId, Resources)> = tables
            .assignments()
            .filter(|(id, a)| {
                a.target == self.node
                    && matches!(
                        tables.state(id),
                        crate::table::AttemptState::Admitted
                            | crate::table::AttemptState::Running { .. }
                    )
            })
            .map(|(id, a)| (id.clone(), a.resources))
            .collect();
        // Admitted by an earlier start of this node: if their processes are found, they are
        // adopted but never reclaimed after a loss (`docs/faults.md`).
        for (id, resources) in mine {
            self.ledger.insert(
                id,
                LocalTask {
                    resources,
                    killing: false,
                    started: true,
                    recovered: true,
                },
            );
        }
    }

    // ---- replication --------------------------------------------------------------------

    /// Advance time and arm the periodic timers on first use.
    pub(crate) fn tick(&mut self, now: Millis) {
        self.now = self.now.max(now);
        if !self.started {
            self.started = true;
            let jitter = self.rng.below(ms(self.config.anti_entropy_interval).max(1));
            self.timers
                .insert((self.now.plus_ms(jitter), Wake::AntiEntropy));
            let at = self.now.plus(self.config.tombstone_check_interval);
            self.timers.insert((at, Wake::Tombstones));
        }
    }

    fn stamp(&mut self) -> Stamp {
        Stamp {
            hlc: self.hlc.tick(self.now),
            actor: self.actor.clone(),
        }
    }

    fn last_dot(&self) -> Dot {
        Dot::new(self.actor.clone(), self.counter)
    }

    /// Write a local op: apply it through the replica (same path as remote ops) and queue it
    /// for every live peer.
    pub(crate) fn write(&mut self, body: OpBody) -> Dot {
        self.counter += 1;
        let dot = Dot::new(self.actor.clone(), self.counter);
        let op = Op::new(dot.clone(), body);
        let outcome = self.replica.receive(op.clone());
        debug_assert_eq!(outcome, Received::Applied, "own op must apply in order");
        self.push.push(op);
        dot
    }

    pub(crate) fn live_peers(&self) -> impl Iterator<Item = &String> {
        self.members
            .live
            .iter()
            .map(|(n, _)| n)
            .filter(|n| **n != self.node)
    }

    fn flush_push(&mut self) {
        if self.push.is_empty() {
            return;
        }
        let ops = std::mem::take(&mut self.push);
        let peers: Vec<String> = self.live_peers().cloned().collect();
        if peers.is_empty() {
            return;
        }
        for chunk in ops.chunks(self.config.max_ops_per_message.get()) {
            self.outbox.push_back(Outgoing {
                to: peers.clone(),
                message: Message::Ops {
                    ops: chunk.to_vec(),
                },
            });
        }
    }

    /// The first op of a message that its author may not write (DESIGN's ownership rules):
    /// an assignment only by the placer named in its key, a state other than `Lost` only by
    /// the attempt's target (when the assignment is known here), and nothing in the name of
    /// this start of this node that it did not write. `from` is the sending peer as its certificate
    /// names it: an op it pushes as the author must be its own; ops of other authors are
    /// relayed (answers to digests) and checked against their author.
    fn ownership_violation(&self, from: &str, ops: &[Op]) -> Option<String> {
        for op in ops {
            let author = op.dot.actor.node.as_str();
            if op.dot.actor == self.actor && op.dot.counter > self.counter && from != self.node {
                // Our own ops come back relayed (harmless duplicates); one we never wrote
                // cannot.
                return Some(format!(
                    "{from} sent an op this node never wrote in its name"
                ));
            }
            match &op.body {
                OpBody::Assign { id, .. } if id.placer.as_str() != author => {
                    return Some(format!(
                        "{author} wrote an assignment placed by {}",
                        id.placer
                    ));
                }
                OpBody::State { id, state } if !state.is_lost() => {
                    if let Some(a) = self.tables().assignment(id)
                        && a.target.as_str() != author
                    {
                        return Some(format!(
                            "{author} wrote the state of an attempt that runs on {}",
                            a.target
                        ));
                    }
                }
                _ => {}
            }
        }
        None
    }

    fn receive_ops(&mut self, from: &str, ops: Vec<Op>) {
        if let Some(why) = self.ownership_violation(from, &ops) {
            self.refused_messages += 1;
            tracing::warn!(peer = %from, %why, "refused a message that breaks an ownership rule");
            return;
        }
        // Only job writes are acknowledged: they are the writes a client waits on
        // (`durability`). Acknowledging every op doubled the replication traffic. The ack
        // leaves once the job's record is logged here (`handle_persisted`).
        let mut actors = BTreeSet::new();
        let mut overflow = false;
        for op in ops {
            if let OpBody::Job { entry, .. } = &op.body {
                self.hlc.observe(entry.stamp.hlc);
                if !actors.contains(&op.dot.actor) {
                    actors.insert(op.dot.actor.clone());
                }
            }
            overflow |= self.replica.receive(op) == Received::Overflow;
        }
        for actor in actors {
            if actor.node != self.node {
                let counter = self.tables().clock().get(&actor);
                let writer = actor.node.to_string();
                self.log.hold_ack(&writer, actor, counter);
            }
        }
        if overflow {
            let clock = self.tables().clock().clone();
            self.outbox.push_back(Outgoing::one(
                from,
                Message::Digest {
                    clock,
                    reply: false,
                },
            ));
        }
    }

    fn receive_digest(&mut self, from: &str, clock: VersionVector, reply: bool) {
        // A digest says what the peer holds in memory, not what it logged: it is no ack. It
        // does tell us which of the peer's writes we hold; ack those once logged, in case an
        // earlier ack was lost.
        let theirs: Vec<ActorId> = clock
            .iter()
            .filter(|d| d.actor.node == from)
            .map(|d| d.actor.clone())
            .collect();
        for actor in theirs {
            let held = self.tables().clock().get(&actor);
            if held > 0 {
                self.log.hold_ack(from, actor, held);
            }
        }
        if !reply {
            // The answer to a digest of ours: everything the peer had then has arrived (one
            // ordered stream per peer), so a restored node has caught up.
            if self.catch_up.take().is_some() {
                self.work.everything = true;
            }
        }
        let max = self
            .config
            .wire
            .max_ops
            .min(self.config.max_ops_per_message.get() * 64);
        match self.replica.missing_for(&clock, max) {
            Some(ops) => {
                for chunk in ops.chunks(self.config.max_ops_per_message.get()) {
                    self.outbox.push_back(Outgoing::one(
                        from,
                        Message::Ops {
                            ops: chunk.to_vec(),
                        },
                    ));
                }
            }
            None => {
                let tables = Box::new(self.tables().clone());
                self.outbox
                    .push_back(Outgoing::one(from, Message::State { tables }));
            }
        }
        let mine = self.tables().clock();
        if reply {
            // Always answered: the answer closes the exchange for the asker (it may be
            // catching up after a restart), and tells it what we lack.
            let clock = mine.clone();
            self.outbox.push_back(Outgoing::one(
                from,
                Message::Digest {
                    clock,
                    reply: false,
                },
            ));
        }
        self.peer_clocks.insert(from.to_string(), clock);
    }

    fn receive_state(&mut self, tables: Tables) {
        if let Some(max) = tables.jobs().map(|(_, e)| e.stamp.hlc).max() {
            self.hlc.observe(max);
        }
        self.replica.merge_state(tables);
    }

    fn send_digest_to_random_peer(&mut self) {
        let peers: Vec<String> = self.live_peers().cloned().collect();
        if peers.is_empty() {
            return;
        }
        let i = usize::try_from(self.rng.below(peers.len() as u64)).unwrap_or(0);
        let clock = self.tables().clock().clone();
        self.outbox.push_back(Outgoing::one(
            &peers[i],
            Message::Digest { clock, reply: true },
        ));
    }

    /// Drop tombstones older than the retention that every live peer is known to hold.
    fn collect_tombstones(&mut self) {
        let purged: Vec<JobKey> = self.tables().purged().iter().cloned().collect();
        self.tombstones.retain(|k, _| purged.contains(k));
        let retention = ms(self.config.tombstone_retention);
        let mut drop = Vec::new();
        for key in purged {
            let clock = self.tables().clock().clone();
            let (seen, at_seen) = self
                .tombstones
                .entry(key.clone())
                .or_insert((self.now, clock));
            let old = self.now.since(*seen) >= retention;
            let everywhere = self
                .members
                .live
                .iter()
                .filter(|(n, _)| *n != self.node)
                .all(|(n, _)| self.peer_clocks.get(n).is_some_and(|c| c >= at_seen));
            if old && everywhere {
                drop.push(key);
            }
        }
        for key in drop {
            self.tombstones.remove(&key);
            self.replica.drop_tombstone(&key);
        }
    }

    /// Changes whenever some placement candidate may have gained room: a live attempt this
    /// replica knows of ended or was dropped (counted when this placer's hold of the release
    /// ends), or the member list changed. Pending slots are re-examined only when it moved.
    pub(crate) fn room_generation(&self) -> u64 {
        self.room_changes.wrapping_add(self.replica.releases())
    }

    /// Arm the pending-retry timer (slots that found no room get another look).
    pub(crate) fn retry_pending_soon(&mut self) {
        if !self.pending.is_empty() && !self.pending_retry_armed {
            self.pending_retry_armed = true;
            let at = self.now.plus(self.config.pending_retry_interval);
            self.timers.insert((at, Wake::PendingRetry));
        }
    }
}

/// Whether two ads are the same version of one node's ad, hence equal: the membership core
/// stores an ad only when its `(generation, version)` is newer than the one it holds, so one
/// view never shows two contents under one version. Comparing the attribute maps of every
/// member on every feed was most of `handle_members`.
fn same_version(a: &ResourceAd, b: &ResourceAd) -> bool {
    a.key() == b.key() && a.node == b.node
}

/// Whether two ads of one member agree on everything placement and liveness derive from.
fn same_shape(a: &ResourceAd, b: &ResourceAd) -> bool {
    a.node == b.node
        && a.generation == b.generation
        && a.capacity == b.capacity
        && a.attributes == b.attributes
        && a.draining == b.draining
        && a.left == b.left
}

/// Whether two specs differ at most in `count`.
fn same_but_count(a: &JobSpec, b: &JobSpec) -> bool {
    JobSpec {
        count: b.count,
        ..a.clone()
    } == *b
}

/// A new incarnation id for a job created by this write.
fn incarnation_of(job: &str, stamp: &Stamp) -> u64 {
    StableHasher::new()
        .field(job.as_bytes())
        .int(stamp.hlc.wall_ms)
        .int(u64::from(stamp.hlc.logical))
        .field(stamp.actor.node.as_bytes())
        .int(stamp.actor.incarnation)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::Durability;
    use crate::testing::Cluster;

    fn spec(json_extra: &str) -> JobSpec {
        JobSpec::from_json_str(&format!(
            r#"{{"id": "web", "type": "service", "count": 2, "command": "sleep",
                "resources": {{"cpu": 100, "memory": 32}}{json_extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn submit_refuses_invalid_and_impossible_jobs() {
        let mut c = Cluster::new(2, 1000, 1024, 1);
        let n1 = &mut c.nodes.get_mut("n1").unwrap().sched;
        let mut bad = spec("");
        bad.count = 0;
        assert!(matches!(
            n1.submit(Millis(1), bad),
            Err(SubmitError::Invalid(_))
        ));
        let mut huge = spec("");
        huge.resources.cpu = 5000;
        let err = n1.submit(Millis(1), huge).unwrap_err().to_string();
        assert!(
            err.contains("no node can ever host it") && err.contains("1000m cpu"),
            "{err}"
        );
        assert_eq!(
            n1.stop_job(Millis(1), "nope"),
            Err(StopError::NotFound("nope".into()))
        );
    }

    #[test]
    fn durability_needs_an_ack_from_a_live_peer() {
        let mut c = Cluster::new(3, 1000, 1024, 2);
        let receipt = c.submit("n1", spec("")).unwrap();
        assert!(!c.nodes["n1"].sched.is_durable(&receipt));
        c.step();
        c.step();
        assert!(c.nodes["n1"].sched.is_durable(&receipt));
        // Alone, a write is only local once logged (nothing else could hold it).
        let mut solo = Scheduler::new("solo".into(), SchedulerConfig::default(), 3);
        let r = solo.submit(Millis(5), spec("")).unwrap();
        assert_eq!(solo.durability(&r), Durability::Pending, "not logged yet");
        let batch = solo
            .poll_job_records()
            .expect("the job write is to be logged");
        assert_eq!(batch.records.len(), 1);
        assert_eq!(batch.records[0].job, "web");
        solo.handle_persisted(Millis(6), batch.batch);
        assert_eq!(solo.durability(&r), Durability::LocalOnly);
    }

    #[test]
    fn identical_resubmission_is_a_no_op_and_an_update_replaces_tasks() {
        let mut c = Cluster::new(2, 1000, 1024, 3);
        let r1 = c.submit("n1", spec("")).unwrap();
        assert!(c.run_until(2_000, |c| c.running_count() == 2));
        let r2 = c.submit("n2", spec("")).unwrap();
        assert_eq!(r1.version, r2.version);
        c.run_for(500, |_| {});
        assert_eq!(c.processes.len(), 2);
        let mut v2 = spec("");
        v2.args = vec!["60".into()];
        c.submit("n2", v2).unwrap();
        assert!(c.run_until(2_000, |c| c.running_count() == 2 && c.processes.len() == 4));
        let killed = c
            .processes
            .iter()
            .filter(|p| p.outcome == Some(TaskEvent::Killed))
            .count();
        assert_eq!(killed, 2, "old version's tasks are superseded");
    }

    #[test]
    fn scaling_down_kills_the_extra_slots() {
        let mut c = Cluster::new(2, 1000, 1024, 4);
        let mut s = spec("");
        s.count = 5;
        c.submit("n1", s.clone()).unwrap();
        assert!(c.run_until(2_000, |c| c.running_count() == 5));
        s.count = 2;
        c.submit("n1", s).unwrap();
        assert!(c.run_until(3_000, |c| c.running_count() == 2));
        assert_eq!(c.view("n2", "web").unwrap().tasks.len(), 2);
        // Scaling keeps the epoch: the kept slots were not restarted.
        assert_eq!(c.processes.len(), 5);
        let mut killed: Vec<u32> = c
            .processes
            .iter()
            .filter(|p| p.outcome == Some(TaskEvent::Killed))
            .map(|p| p.task.slot)
            .collect();
        killed.sort_unstable();
        assert_eq!(killed, vec![2, 3, 4]);
    }

    #[test]
    fn snapshot_round_trip_and_bad_snapshots() {
        let mut c = Cluster::new(2, 1000, 1024, 5);
        c.submit("n1", spec("")).unwrap();
        assert!(c.run_until(2_000, |c| c.running_count() == 2 && c.converged()));
        let n1 = &c.nodes["n1"].sched;
        let bytes = n1.snapshot();
        let r = Scheduler::restore("n1".into(), SchedulerConfig::default(), 7, &bytes).unwrap();
        assert_eq!(r.tables(), n1.tables());
        assert_ne!(
            r.actor(),
            n1.actor(),
            "a restored node writes as a new actor"
        );
        assert_eq!(r.local_allocated(), n1.local_allocated());
        assert!(matches!(
            Scheduler::restore("n2".into(), SchedulerConfig::default(), 7, &bytes),
            Err(RestoreError::WrongNode { .. })
        ));
        assert!(Scheduler::restore("n1".into(), SchedulerConfig::default(), 7, b"junk").is_err());
    }

    #[test]
    fn stopped_job_on_a_dead_node_is_still_collected() {
        let mut c = Cluster::new(3, 1000, 1024, 6);
        let mut s = spec("");
        s.count = 3;
        s.distinct_hosts = true;
        c.submit("n1", s).unwrap();
        assert!(c.run_until(2_000, |c| c.running_count() == 3));
        c.crash("n3");
        c.declare_down("n3");
        c.stop("n1", "web");
        assert!(c.run_until(20_000, |c| c.view("n1", "web").is_none()
            && c.view("n2", "web").is_none()));
    }

    #[test]
    fn ops_that_break_ownership_are_refused() {
        use crate::table::{Assignment, AttemptState};
        let mut n1 = Scheduler::new("n1".into(), SchedulerConfig::default(), 1);
        let author = ActorId {
            node: "n2".into(),
            incarnation: 9,
        };
        let id = AttemptId {
            job: "web".into(),
            incarnation: 1,
            slot: 0,
            attempt: 1,
            placer: "n3".into(),
        };
        let assignment = Assignment {
            target: "n3".into(),
            resources: Resources::default(),
            epoch: n1.stamp(),
        };
        // n2 writes an assignment in n3's name: refused, nothing applied.
        let forged = Op::new(
            Dot::new(author.clone(), 1),
            OpBody::Assign {
                id: id.clone(),
                assignment: assignment.clone(),
            },
        );
        n1.handle_message(Millis(1), "n2", Message::Ops { ops: vec![forged] });
        assert_eq!(n1.stats().refused_messages, 1);
        assert!(n1.tables().assignment(&id).is_none());
        // n3's own assignment, relayed by n2, is fine; then n2 may not write its state
        // (other than lost), since the attempt runs on n3.
        let n3 = ActorId {
            node: "n3".into(),
            incarnation: 4,
        };
        let real = Op::new(
            Dot::new(n3, 1),
            OpBody::Assign {
                id: id.clone(),
                assignment,
            },
        );
        n1.handle_message(Millis(2), "n2", Message::Ops { ops: vec![real] });
        assert!(n1.tables().assignment(&id).is_some());
        let running = Op::new(
            Dot::new(author.clone(), 1),
            OpBody::State {
                id: id.clone(),
                state: AttemptState::RUNNING,
            },
        );
        n1.handle_message(Millis(3), "n2", Message::Ops { ops: vec![running] });
        assert_eq!(n1.stats().refused_messages, 2);
        let lost = Op::new(
            Dot::new(author, 1),
            OpBody::State {
                id: id.clone(),
                state: AttemptState::Lost { round: 0 },
            },
        );
        n1.handle_message(Millis(4), "n2", Message::Ops { ops: vec![lost] });
        assert_eq!(
            n1.stats().refused_messages,
            2,
            "a coordinator may mark it lost"
        );
        assert!(n1.tables().state(&id).is_lost());
    }

    #[test]
    fn no_clock_reads_same_inputs_same_outputs() {
        let run = || {
            let mut c = Cluster::new(3, 1000, 1024, 9);
            c.submit("n2", spec("")).unwrap();
            c.run_for(1_000, |_| {});
            (c.digest(), c.delivered)
        };
        assert_eq!(run(), run());
    }
}
