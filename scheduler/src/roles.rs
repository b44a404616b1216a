//! The state of a [`Scheduler`](crate::Scheduler), one type per role, each saying which files
//! change it.
//!
//! `scheduler.rs` holds the driving API and what every room shares (the clock, timers, the
//! dirty sets, the replica and the member lists); each role keeps its own state here, so a
//! reader of one room sees what it may change. This file imports no room: the rooms import it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use shoal_gossip::{MemberInfo, MemberStatus, Millis, Quorum, Resources};

use crate::health::HealthMachine;
use crate::ids::{ActorId, AttemptId, Hlc, HlcClock, Name, SlotKey, Stamp, VersionVector};
use crate::placement::{Candidate, PendingReason};
use crate::table::{JobKey, Milestones, Op};

// ---- shared by every room ---------------------------------------------------------------

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
    /// A held release of the node with this usage id becomes visible to some pending slot
    /// of this coordinator (oldest first: `coordinator.rs`, `Scheduler::visible_at`).
    Visible(usize),
    /// Without a majority: some local tasks' `stop_after_ms` may have run out.
    Disconnect,
    /// A member down has been down long enough to be acted on (`Quorum::settle_ms`).
    Settled,
    /// A restored node's catch-up runs out ([`CATCH_UP_MAX_MS`]).
    CatchUp,
    /// A local task's `settled` or healthy-deadline clock may have run out (`settling.rs`).
    Settle(AttemptId),
    /// A drain's deadline (`drain.rs`).
    Drain,
    /// Drop the op logs of actors that stopped writing (`SchedulerConfig::quiet_log_drop`).
    QuietLogs,
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

/// The membership as last reported, with derived lists. The lists that do not depend on
/// this node are `Arc`s taken from the [`crate::MemberView`] they were built from, so cores
/// handed one view share them (the placement bench hands one view to 5,000 cores); a core
/// that must change one copies it first (`Arc::make_mut`).
#[derive(Debug, Default)]
pub(crate) struct Members {
    pub(crate) all: Arc<BTreeMap<String, MemberInfo>>,
    /// Alive or suspect (coordinators are chosen among these), with name hashes, sorted.
    pub(crate) live: Arc<Vec<(String, u64)>>,
    /// This node's index in `live` (it coordinates nothing when it is not there).
    pub(crate) live_me: Option<usize>,
    /// This node's name hash when it is among `live` (it coordinates nothing otherwise).
    pub(crate) me: Option<u64>,
    /// Placement candidates: alive, with a resource ad, not left.
    pub(crate) nodes: Arc<Vec<Candidate>>,
    /// `nodes[i].usage_id`, side by side: scanned for recent releases without reading the
    /// views themselves.
    pub(crate) usage_ids: Arc<Vec<usize>>,
    /// Usage id → index in `nodes` (`u32::MAX`: not a candidate).
    pub(crate) by_usage: Arc<Vec<u32>>,
    /// Members that have not left, this node included: the view's share of the cluster.
    pub(crate) listed: u32,
    /// When each member now down (or left) was first seen so, in this node's clock.
    pub(crate) down_since: BTreeMap<String, Millis>,
    /// Targets of live attempts missing from the view, and since when this node noticed
    /// (kept across views while they stay missing).
    pub(crate) absent_since: BTreeMap<String, Millis>,
}

impl Members {
    /// Declared down or gone. Its live attempts are lost once it has been so for the
    /// quorum's `settle_ms` ([`Scheduler::settled_down`]).
    pub(crate) fn is_down(&self, name: &str) -> bool {
        self.all.get(name).is_some_and(down_or_gone)
    }
}

pub(crate) fn down_or_gone(m: &MemberInfo) -> bool {
    matches!(m.status, MemberStatus::Down | MemberStatus::Left)
        || m.ad.as_ref().is_some_and(|a| a.left)
}

// ---- catalog ---------------------------------------------------------------------------

/// What changed since the last catalog update. Changed by `reconcile.rs` (table changes as
/// it absorbs them) and `scheduler.rs` (membership views); `catalog.rs` takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogChanges {
    /// Re-examine every job (a state merge, a restore).
    pub everything: bool,
    /// Jobs whose row or attempts changed.
    pub jobs: BTreeSet<Name>,
    /// The membership view was replaced (statuses or addresses may differ).
    pub members: bool,
}

impl CatalogChanges {
    /// Nothing to re-examine.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.everything && !self.members && self.jobs.is_empty()
    }
}

// ---- replication ------------------------------------------------------------------------

/// This node's writes and what it knows of its peers' replicas. Changed by `replication.rs`
/// (writes, stamps, peers' digests), `scheduler.rs` (acks received, the clock restored) and
/// `durability.rs` (restored job records advance the clock); `jobs.rs` and `durability.rs`
/// read the write counter and the acks.
#[derive(Debug, Default)]
pub(crate) struct Replication {
    /// The hybrid logical clock that stamps job writes.
    pub(crate) hlc: HlcClock,
    /// Ops written by this incarnation (the counter of our last dot).
    pub(crate) counter: u64,
    /// Local ops not yet queued for the live peers.
    pub(crate) push: Vec<Op>,
    /// Highest counter of our actor each peer acknowledged.
    pub(crate) acks: BTreeMap<String, u64>,
    /// Messages refused for an ownership violation.
    pub(crate) refused_messages: u64,
    /// When this node last asked each peer for the ops missing before one it buffered
    /// (`replication.rs`, `ask_for_gap`).
    pub(crate) gap_asked: BTreeMap<String, Millis>,
    /// The actor of an earlier start, and its counter in the restored tables, that this node
    /// may write on as once a peer's answer shows nobody holds more of its ops
    /// (`Scheduler::continue_writing_as`).
    pub(crate) resume: Option<(ActorId, u64)>,
}

// ---- counters ------------------------------------------------------------------------------

/// Monotonic counts of what this node's core did, for metrics (`Scheduler::stats`). Nothing
/// decides on them; each is incremented where the event happens.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Attempts this node placed as a slot's coordinator (`coordinator.rs`).
    pub(crate) placements: u64,
    /// Of `placements`: attempts after the first of their slot (a re-placement after a
    /// rejection, failure, exit to restart or a lost node).
    pub(crate) replacements: u64,
    /// Proposals this node admitted as their target (`admission.rs`).
    pub(crate) admissions: u64,
    /// Proposals this node rejected as their target.
    pub(crate) rejections: u64,
    /// Ops from peers applied to the tables (`replication.rs`); duplicates not counted.
    pub(crate) ops_applied: u64,
    /// Anti-entropy digests this node started.
    pub(crate) anti_entropy_rounds: u64,
    /// Op logs of actors that stopped writing, dropped (`Replica::drop_quiet_logs`).
    pub(crate) op_logs_dropped: u64,
}

// ---- target side: admission -------------------------------------------------------------

/// The target side: what this node admitted and what waits for admission. Changed by
/// `admission.rs` (admits, defers), `reconcile.rs` (queues proposals), `fencing.rs` (marks
/// tasks killing, for itself and for `disconnect.rs`) and `scheduler.rs` (executor events,
/// restarts), `checking.rs` (health checks, their kills).
#[derive(Debug, Default)]
pub(crate) struct Target {
    /// Tasks admitted here and not yet dead.
    pub(crate) ledger: Ledger,
    /// Proposals awaiting admission, in arrival order.
    pub(crate) queue: VecDeque<AttemptId>,
    /// Proposals for a job (version) not received yet, or waiting for a static port that a
    /// superseded attempt of their slot still holds here.
    pub(crate) deferred: BTreeSet<AttemptId>,
    /// Ports listening on this host that belong to no task (`Scheduler::handle_host_ports`).
    pub(crate) host_ports: BTreeSet<u16>,
    /// The health of local tasks whose checks run (`checking.rs`).
    pub(crate) checks: BTreeMap<AttemptId, HealthMachine>,
}

impl Target {
    /// Resources admitted here and not yet released.
    pub(crate) fn allocated(&self) -> Resources {
        self.ledger.allocated()
    }
}

/// The tasks admitted here, with the sum of their resources kept as they come and go: every
/// admission checks the sum, and folding the whole ledger each time made a 10,000-task batch
/// quadratic on its target (a third of its loop's time while the batch was admitted,
/// `BENCHMARKS.md`). Reads go through `Deref`; the only changes are [`Ledger::insert`],
/// [`Ledger::remove`] and [`Ledger::get_mut`], which must not change a task's `resources`
/// (debug builds check the sum against a fold on every read).
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    tasks: BTreeMap<AttemptId, LocalTask>,
    /// Per dimension (cpu, memory, disk), wide enough never to saturate.
    total: [u128; 3],
}

impl Ledger {
    pub(crate) fn insert(&mut self, id: AttemptId, task: LocalTask) -> Option<LocalTask> {
        self.count(&task.resources, true);
        let old = self.tasks.insert(id, task);
        if let Some(old) = &old {
            self.count(&old.resources, false);
        }
        old
    }

    pub(crate) fn remove(&mut self, id: &AttemptId) -> Option<LocalTask> {
        let old = self.tasks.remove(id);
        if let Some(old) = &old {
            self.count(&old.resources, false);
        }
        old
    }

    /// A task to change; its `resources` must stay as they are.
    pub(crate) fn get_mut(&mut self, id: &AttemptId) -> Option<&mut LocalTask> {
        self.tasks.get_mut(id)
    }

    /// The sum of the tasks' resources, saturating at `u64::MAX` as a fold would.
    pub(crate) fn allocated(&self) -> Resources {
        let narrow = |n: u128| u64::try_from(n).unwrap_or(u64::MAX);
        let sum = Resources {
            cpu_millicores: narrow(self.total[0]),
            memory_mib: narrow(self.total[1]),
            disk_mib: narrow(self.total[2]),
        };
        debug_assert_eq!(
            sum,
            self.folded(),
            "the ledger's running sum differs from its tasks'"
        );
        sum
    }

    /// The sum of the tasks' resources by a walk over them: what [`Ledger::allocated`] keeps.
    fn folded(&self) -> Resources {
        self.tasks.values().fold(Resources::default(), |acc, t| {
            acc.saturating_add(&t.resources)
        })
    }

    fn count(&mut self, r: &Resources, add: bool) {
        let parts = [r.cpu_millicores, r.memory_mib, r.disk_mib];
        for (total, part) in self.total.iter_mut().zip(parts) {
            if add {
                *total += u128::from(part);
            } else {
                *total -= u128::from(part);
            }
        }
    }
}

impl std::ops::Deref for Ledger {
    type Target = BTreeMap<AttemptId, LocalTask>;

    fn deref(&self) -> &Self::Target {
        &self.tasks
    }
}

/// A local task: admitted here and not yet known to be dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalTask {
    pub(crate) resources: Resources,
    /// Host ports it holds (until it is known dead, even while being killed).
    pub(crate) ports: Vec<u16>,
    pub(crate) killing: bool,
    /// Its process was seen running (by this start of the node, or found at restart): when,
    /// by this node's hybrid logical clock (for a task found at restart, the `since` of its
    /// `Running` row). A reclaim writes it again (`docs/faults.md`, "The incumbent wins").
    pub(crate) started: Option<Hlc>,
    /// Found running by a restarted node, not admitted by this start: never reclaimed after a
    /// loss (`docs/faults.md`).
    pub(crate) recovered: bool,
    /// When this start of the node admitted it (or found it): a task admitted while this node
    /// is cut off gets its own `stop_after_ms` (`disconnect.rs`).
    pub(crate) since: Millis,
    /// Killed because a check failed too often: the `Failed` reason written when it ends.
    pub(crate) unhealthy: Option<String>,
    /// Healthy without a break since then (`settling.rs`).
    pub(crate) healthy_since: Option<Millis>,
    /// The rollout marks written for it so far (`settling.rs`).
    pub(crate) marks: Milestones,
}

impl LocalTask {
    pub(crate) fn admitted(resources: Resources, ports: Vec<u16>, now: Millis) -> Self {
        LocalTask {
            resources,
            ports,
            killing: false,
            started: None,
            recovered: false,
            since: now,
            unhealthy: None,
            healthy_since: None,
            marks: Milestones::default(),
        }
    }
}

// ---- coordination -----------------------------------------------------------------------

/// The slot coordinator's memory: why slots wait, their back-offs, and what placement last
/// found. Changed by `coordinator.rs`; `reconcile.rs` forgets slots this node no longer
/// coordinates, `members.rs` counts member-list changes, `scheduler.rs` runs the retry timer;
/// `view.rs` reads the pending reasons.
#[derive(Debug)]
pub(crate) struct Coordination {
    /// Slots that found no room (or wait for a majority), with the reason.
    pub(crate) pending: BTreeMap<SlotKey, PendingReason>,
    /// Slots waiting out a back-off.
    pub(crate) retry: BTreeMap<SlotKey, Retry>,
    /// Per job incarnation, its last placement that found no room (see
    /// `Scheduler::still_no_room`).
    pub(crate) no_room: BTreeMap<(Name, u64), NoRoom>,
    /// Grows whenever the member list changed, so a placement candidate may have gained room
    /// (the replica counts releases, see `Scheduler::room_generation`).
    pub(crate) room_changes: u64,
    /// The pending-retry timer is armed.
    pub(crate) pending_retry_armed: bool,
    /// `Scheduler::room_generation` when the pending slots were last re-examined.
    pub(crate) pending_retried_at: u64,
    /// Open release holds by usage id: when this node saw each open, and its jitter
    /// (oldest first, `Scheduler::visible_at`).
    pub(crate) holds: BTreeMap<usize, HoldSeen>,
}

/// A release hold as this placer saw it open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HoldSeen {
    /// When the release was applied here.
    pub(crate) opened: Millis,
    /// This placer's draw for this hold, in `0..1024`: spreads placers whose slots are equally
    /// old.
    pub(crate) jitter: u64,
}

impl Default for Coordination {
    fn default() -> Self {
        Self {
            pending: BTreeMap::new(),
            retry: BTreeMap::new(),
            no_room: BTreeMap::new(),
            room_changes: 0,
            pending_retry_armed: false,
            pending_retried_at: u64::MAX,
            holds: BTreeMap::new(),
        }
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
    /// When (held releases visible to the job then were counted).
    pub(crate) at: Millis,
    /// `Replica::folds` then: a release folded since into a hold the job already saw is
    /// room it may use.
    pub(crate) folds: u64,
    /// Why.
    pub(crate) reason: PendingReason,
}

// ---- garbage collection -----------------------------------------------------------------

/// What garbage collection remembers between passes. Changed by `gc.rs`; `reconcile.rs`
/// resets a job's entries when it re-examines the whole job, and drops them on nodes that do
/// not collect it.
#[derive(Debug, Default)]
pub(crate) struct Gc {
    /// Since when each job incarnation this node collects has been finished.
    pub(crate) finished_since: BTreeMap<JobKey, Millis>,
    /// Batch slots below this index were final when last checked (GC scan cursor).
    pub(crate) done_cursor: BTreeMap<JobKey, u32>,
    /// Tombstones seen, and which peers are known to hold them.
    pub(crate) tombstones: Tombstones,
}

/// The tombstones this node has seen, and which peers are known to hold them.
///
/// A tombstone check notices the tombstones it has not seen before and notes this node's
/// version vector then (`at_seen`); a peer holds them once its last digest covers that vector.
/// This node's vector only grows, so a digest that covers one notice covers every earlier one:
/// per peer, only the newest notice its last digest covered is kept. A core that kept every
/// peer's last version vector instead held N peers × N writers entries (over a gigabyte per
/// agent at 5,000 nodes) for the same answer (`docs/scheduler.md`, GC rule).
#[derive(Debug, Default)]
pub(crate) struct Tombstones {
    /// Each tombstone kept, with the number of the notice that first saw it.
    pub(crate) noticed: BTreeMap<JobKey, u64>,
    /// The notices that still have tombstones, by number: older first, vectors growing.
    pub(crate) notices: BTreeMap<u64, Notice>,
    /// Each peer's newest notice its last digest covered; none when it covered none.
    pub(crate) covered: BTreeMap<Name, u64>,
    /// The number of the next notice.
    pub(crate) next: u64,
}

/// One tombstone check's notice of new tombstones.
#[derive(Debug)]
pub(crate) struct Notice {
    /// When.
    pub(crate) seen: Millis,
    /// This node's version vector then: a peer whose digest covers it has every op this node
    /// had, the purges included.
    pub(crate) at_seen: VersionVector,
}

// ---- disconnect and quorum --------------------------------------------------------------

/// How much of the cluster this node reaches, and a restored node's catch-up. Changed by
/// `disconnect.rs` (and `replication.rs`, whose digest answers end the catch-up, and
/// `scheduler.rs`, which starts it on restore); `members.rs` and `admission.rs` read the
/// quorum.
#[derive(Debug)]
pub(crate) struct Reach {
    /// The quorum as last reported by the membership core.
    pub(crate) quorum: Quorum,
    /// The current streak without a stable majority.
    pub(crate) streak: Streak,
    /// Restored (from a snapshot or a job log) and not yet through one anti-entropy exchange
    /// with a live peer, nor [`CATCH_UP_MAX_MS`] since it first saw the membership: places
    /// and condemns nothing (its tables may be stale).
    pub(crate) catch_up: Option<CatchUp>,
}

impl Default for Reach {
    fn default() -> Self {
        Self {
            quorum: Quorum::alone(Millis(0)),
            streak: Streak::default(),
            catch_up: None,
        }
    }
}

/// The longest a restored node waits to catch up before it acts on what it has: when no
/// peer it asked answers (they died since), or while its peers are all down. The first answer
/// ends the wait sooner. A node that knew no peer does not wait (`Scheduler::knew_no_peer`).
pub(crate) const CATCH_UP_MAX_MS: u64 = 10_000;

/// A target missing from the member view altogether (a node this node never heard of since
/// it restarted, or not yet) is treated as down once it has been so this long while this
/// node held its majority, or the quorum's `settle_ms` if longer.
pub(crate) const ABSENT_SETTLE_MS: u64 = 30_000;

/// A target already down when this node (re)gained its majority is treated as down once this
/// node has held its majority this long, or the quorum's `settle_ms` if longer. Its down mark
/// may be an artifact of this node's own cut; the membership core announces to every down
/// member at the regain and in the two probe periods after it, and a live member answers and
/// comes back as a new identity within a few round trips (`docs/faults.md`, "Settling").
/// It was `ABSENT_SETTLE_MS` (30 s, two of foca's periodic announces to down members), which
/// kept the survivors of two nodes crashing at once from replacing their work for 30 s.
pub(crate) const REGAIN_SETTLE_MS: u64 = 5_000;

/// A majority held at least this long ends a streak without one: the next loss starts the
/// `stop_after_ms` clock afresh. Shorter spells of majority (a node flapping on a one-way or
/// lossy link) do not, so a flapping node's duplicates stay within `stop_after_ms` of the
/// first loss plus the spells in between (`docs/faults.md`, "Flapping").
pub(crate) const STABLE_MAJORITY_MS: u64 = 10_000;

/// The current streak without a stable majority.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Streak {
    /// When the streak began: the first loss of the majority after a stable spell.
    pub(crate) since: Option<Millis>,
    /// When the majority last came back during the streak.
    pub(crate) regained: Option<Millis>,
}

impl Streak {
    /// At `at`, this node became cut off (`connected` false: no majority, and not merely
    /// resumed from a stall) or connected again.
    pub(crate) fn update(&mut self, connected: bool, at: Millis) {
        if connected {
            if self.since.is_some() && self.regained.is_none() {
                self.regained = Some(at);
            }
            return;
        }
        let stable = self
            .regained
            .is_some_and(|r| at.since(r) >= STABLE_MAJORITY_MS);
        if self.since.is_none() || stable {
            self.since = Some(at);
        }
        self.regained = None;
    }

    /// When local work with this `stop_after_ms` must stop, while cut off: `stop_after_ms`
    /// after the streak began.
    pub(crate) fn stop_at(&self, after_ms: u64, fallback: Millis) -> Millis {
        self.since.unwrap_or(fallback).plus_ms(after_ms)
    }
}

/// A restored node's catch-up with its peers.
#[derive(Debug, Default)]
pub(crate) struct CatchUp {
    /// Peers sent a digest asking for an answer.
    pub(crate) asked: BTreeSet<String>,
    /// When the restored node first heard from its shell.
    pub(crate) since: Option<Millis>,
    /// Armed only: a new node not given a cluster to join acts at once while it is alone,
    /// and catches up on its first contact with a peer ([`Scheduler::catch_up_on_first_contact`]).
    ///
    /// [`Scheduler::catch_up_on_first_contact`]: crate::Scheduler::catch_up_on_first_contact
    pub(crate) on_contact: bool,
}

// ---- drain --------------------------------------------------------------------------------

/// This node's part in drains (`drain.rs`, `docs/services.md`, §5).
#[derive(Debug, Default)]
pub(crate) struct Drain {
    /// The drain this node carries out: its intent's stamp, and when this node first saw it
    /// (its own clock: the deadline runs from then).
    pub(crate) current: Option<(Stamp, Millis)>,
    /// Local tasks stopped for the drain: their kill ends them `Drained`.
    pub(crate) stopping: BTreeSet<AttemptId>,
    /// The deadline passed and what was left was stopped.
    pub(crate) deadline_hit: bool,
    /// Per node, whether it refused work at the last look (for `Eligibility` events).
    pub(crate) refused: BTreeMap<Name, bool>,
    /// Per other node, the drain whose completion this replica last told (`DrainComplete`
    /// from a merged progress row; the draining node tells its own when it writes it).
    pub(crate) told_done: BTreeMap<Name, Stamp>,
}

// ---- durability -------------------------------------------------------------------------

/// A batch handed to the shell and not yet reported durable.
#[derive(Debug)]
pub(crate) struct Inflight {
    pub(crate) batch: u64,
    /// Acks to peers' writers, sent once the batch is durable: `(writer node, actor, counter)`.
    pub(crate) acks: Vec<(String, ActorId, u64)>,
    /// Our own actor's counter when the batch was taken: our writes up to it are in it.
    pub(crate) own_counter: u64,
}

/// The persistence side (`durability.rs`): job records to log and acks held until they are
/// logged. Changed by `durability.rs`; `reconcile.rs` notes changed jobs, `replication.rs` holds
/// acks, `jobs.rs` counts prepared writes as logged.
#[derive(Debug, Default)]
pub(crate) struct Log {
    /// Jobs whose rows changed since the last batch.
    pub(crate) unlogged: BTreeSet<Name>,
    /// Acks waiting for the next batch.
    pub(crate) held_acks: Vec<(String, ActorId, u64)>,
    pub(crate) inflight: VecDeque<Inflight>,
    pub(crate) next_batch: u64,
    /// Our actor's writes up to this counter are logged here.
    pub(crate) logged_counter: u64,
}

impl Log {
    pub(crate) fn note_job(&mut self, job: &str) {
        if !self.unlogged.contains(job) {
            self.unlogged.insert(job.into());
        }
    }

    /// One of our own job writes was logged before it was applied (a prepared write). Our
    /// job writes all take that path, so every one before it is logged as well.
    pub(crate) fn logged_own(&mut self, counter: u64) {
        self.logged_counter = self.logged_counter.max(counter);
    }

    /// Hold an ack to `writer` for `actor`'s ops up to `counter` until they are logged.
    pub(crate) fn hold_ack(&mut self, writer: &str, actor: ActorId, counter: u64) {
        self.held_acks.push((writer.to_string(), actor, counter));
    }
}

#[cfg(test)]
mod ledger_tests {
    use super::*;

    fn id(slot: u32) -> AttemptId {
        AttemptId {
            job: "j".into(),
            incarnation: 1,
            slot,
            attempt: 1,
            placer: "n1".into(),
        }
    }

    fn res(cpu: u64, mem: u64) -> Resources {
        Resources {
            cpu_millicores: cpu,
            memory_mib: mem,
            disk_mib: 0,
        }
    }

    /// The running sum is the fold of the tasks through inserts, a replaced entry, removes of
    /// present and absent tasks, and sums past `u64::MAX` (saturated as the fold saturates, and
    /// exact again once they fall back under it).
    #[test]
    fn the_running_sum_is_the_fold_of_the_tasks() {
        let mut l = Ledger::default();
        for slot in 0..100 {
            l.insert(
                id(slot),
                LocalTask::admitted(res(10 + u64::from(slot), 1), vec![], Millis(0)),
            );
        }
        assert_eq!(l.allocated(), l.folded());
        assert_eq!(l.allocated().cpu_millicores, (10..110).sum::<u64>());
        // The same attempt admitted again replaces its entry.
        let old = l.insert(id(5), LocalTask::admitted(res(1000, 7), vec![], Millis(0)));
        assert_eq!(old.map(|t| t.resources), Some(res(15, 1)));
        assert_eq!(l.allocated(), l.folded());
        for slot in (0..100).step_by(3) {
            assert!(l.remove(&id(slot)).is_some());
            assert!(l.remove(&id(slot)).is_none());
        }
        assert_eq!(l.allocated(), l.folded());
        l.insert(
            id(1000),
            LocalTask::admitted(res(u64::MAX, u64::MAX), vec![], Millis(0)),
        );
        l.insert(
            id(1001),
            LocalTask::admitted(res(u64::MAX, 3), vec![], Millis(0)),
        );
        assert_eq!(l.allocated(), res(u64::MAX, u64::MAX));
        assert_eq!(l.allocated(), l.folded());
        l.remove(&id(1000));
        l.remove(&id(1001));
        assert_eq!(l.allocated(), l.folded());
        while let Some(slot) = l.keys().next().map(|k| k.slot) {
            l.remove(&id(slot));
        }
        assert_eq!(l.allocated(), Resources::default());
    }
}
