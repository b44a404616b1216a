//! The lattice's elements: the value of each component's rows and the ops that carry one each.

use std::net::IpAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_gossip::Resources;

use super::nodes::NodeRow;
use crate::ids::{ActorId, AttemptId, Dot, Hlc, Name, SlotKey, Stamp};
use crate::spec::JobSpec;

/// What [`OpBody::job`] answers for a node op: no job has this id.
pub const NODE_OP_JOB: &str = "~node";

/// A job id plus incarnation.
pub type JobKey = (String, u64);

/// One write of a job (submission, update or stop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEntry {
    /// Last-writer-wins marker of this write.
    pub stamp: Stamp,
    /// Stamp of the write that last changed the spec or restarted the job; attempts placed
    /// under an older epoch are replaced.
    pub epoch: Stamp,
    /// The spec.
    pub spec: JobSpec,
    /// Stopped by the user: every task is killed and nothing is placed.
    pub stopped: bool,
    /// Stamp of the write that started the current rollout (`docs/services.md`, §4): the
    /// write that changed what runs (then equal to `epoch`), or a revert (which reuses an
    /// older epoch under a new deployment). Keys the job's `versions` rows. Appended after
    /// snapshot format 3 (format 4).
    pub deployment: Stamp,
    /// The job version this write belongs to (1 for the first submission; writes that keep
    /// the epoch keep it).
    pub version: u32,
    /// The rollout skips its canary phase (a revert).
    pub skip_canary: bool,
}

impl JobEntry {
    /// The deterministic join of two writes of one key (unique stamps make ties impossible in
    /// practice; the fallback keeps the join commutative even for a buggy peer).
    pub(super) fn wins_over(&self, other: &JobEntry) -> bool {
        (&self.stamp, self.stopped, &self.epoch) > (&other.stamp, other.stopped, &other.epoch)
            || ((&self.stamp, self.stopped, &self.epoch)
                == (&other.stamp, other.stopped, &other.epoch)
                && postcard::to_stdvec(self).ok() > postcard::to_stdvec(other).ok())
    }

    /// Whether this write started its deployment (a new epoch, a restart or a revert): it
    /// then also carries the deployment's version row.
    #[must_use]
    pub fn starts_deployment(&self) -> bool {
        self.stamp == self.deployment
    }

    /// Whether its deployment reverts to an older version (it reuses an older epoch).
    #[must_use]
    pub fn is_revert(&self) -> bool {
        self.epoch != self.deployment
    }
}

/// The key of a job version (and of its rollout): job id, incarnation, deployment stamp.
pub type DeploymentKey = (String, u64, Stamp);

/// What one job version ran: its number, epoch and spec. Written by the job write that
/// started the deployment (derived from it on every replica: see
/// [`Tables`](super::Tables)'s `versions`); two values for one key (a buggy peer) join by
/// `max` of their encodings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRow {
    /// Version number (1, 2, …; two submissions on two nodes within a replication delay may
    /// share one: `docs/services.md`, decision 5).
    pub number: u32,
    /// The epoch its attempts are placed under (a revert reuses the reverted-to epoch).
    pub epoch: Stamp,
    /// Its spec.
    pub spec: JobSpec,
    /// The deployment skips its canary phase (a revert).
    pub skip_canary: bool,
}

impl VersionRow {
    fn wins_over(&self, other: &VersionRow) -> bool {
        postcard::to_stdvec(self).ok() > postcard::to_stdvec(other).ok()
    }
}

/// A set of slot numbers, run-length encoded: sorted, disjoint, non-adjacent half-open
/// ranges. Joined by union.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct SlotSet(Vec<(u32, u32)>);

impl SlotSet {
    /// The set `{slot}`.
    #[must_use]
    pub fn one(slot: u32) -> SlotSet {
        SlotSet(vec![(slot, slot.saturating_add(1))])
    }

    /// Whether `slot` is in the set.
    #[must_use]
    pub fn contains(&self, slot: u32) -> bool {
        self.0.iter().any(|&(a, b)| a <= slot && slot < b)
    }

    /// Whether `{0, …, n − 1}` is a subset.
    #[must_use]
    pub fn covers_below(&self, n: u32) -> bool {
        n == 0 || self.0.first().is_some_and(|&(a, b)| a == 0 && b >= n)
    }

    /// Number of slots in the set.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.0.iter().map(|&(a, b)| u64::from(b - a)).sum()
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of slots below `n` in the set.
    #[must_use]
    pub fn count_below(&self, n: u32) -> u32 {
        self.0
            .iter()
            .map(|&(a, b)| b.min(n).saturating_sub(a))
            .sum()
    }

    /// Add every slot of `other`; returns whether the set grew.
    pub fn union(&mut self, other: &SlotSet) -> bool {
        let before = self.0.clone();
        let mut all: Vec<(u32, u32)> = self.0.iter().chain(&other.0).copied().collect();
        all.retain(|&(a, b)| a < b);
        all.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(all.len());
        for (a, b) in all {
            match out.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        self.0 = out;
        self.0 != before
    }

    /// Whether the encoding is normal (what [`SlotSet::union`] makes); peers' sets are
    /// normalised by a union with the empty set on join.
    #[must_use]
    pub fn is_normal(&self) -> bool {
        self.0.iter().all(|&(a, b)| a < b) && self.0.windows(2).all(|w| w[0].1 < w[1].0)
    }
}

/// Why a rollout failed, as the job's coordinator saw it first; two join by `max`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Failure {
    /// The slot whose new attempt failed.
    pub slot: u32,
    /// What happened (`slot 3 not healthy by deadline`), at most [`MAX_HEALTH_NOTE`] bytes.
    pub reason: String,
}

/// The progress of one deployment (`docs/services.md`, §4): every field only grows, so the
/// join is pointwise (union, max, or, or).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Rollout {
    /// Slots whose current attempt runs the deployment's version, settled and passing (slot
    /// coordinators).
    pub done: SlotSet,
    /// The deployment failed (the job's coordinator).
    pub failed: Option<Failure>,
    /// The operator promoted its canaries (the accepting node of `shoal job promote`).
    pub promoted: bool,
    /// Every slot was done (the job's coordinator): the version is stable.
    pub complete: bool,
}

impl Rollout {
    /// Join `other` in; returns whether anything changed.
    pub fn join(&mut self, other: &Rollout) -> bool {
        let mut changed = self.done.union(&other.done);
        if other.failed > self.failed {
            self.failed.clone_from(&other.failed);
            changed = true;
        }
        changed |= !self.promoted && other.promoted;
        changed |= !self.complete && other.complete;
        self.promoted |= other.promoted;
        self.complete |= other.complete;
        changed
    }
}

/// One job version and its rollout, as the tables keep them. The row may arrive after
/// progress of its rollout (different writers).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VersionEntry {
    /// The version, once the write that started it arrived. Boxed: a `BTreeMap` leaf holds
    /// room for 11 entries, and most incarnations keep one version, so an inline spec cost
    /// ten spec-sized holes per job and replica (`docs/placement-bench.md`). Serialized as
    /// the row itself (serde's `Box` is transparent): no format change.
    pub row: Option<Box<VersionRow>>,
    /// Its rollout.
    pub rollout: Rollout,
}

impl VersionEntry {
    /// Join `other` in; returns whether anything changed.
    pub(super) fn join(&mut self, other: &VersionEntry) -> bool {
        let mut changed = self.rollout.join(&other.rollout);
        if let Some(row) = &other.row
            && self.row.as_ref().is_none_or(|cur| row.wins_over(cur))
        {
            self.row = Some(row.clone());
            changed = true;
        }
        changed
    }
}

/// Marks a target sets on an attempt for rollouts (`docs/services.md`, §2), joined by `or`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Milestones {
    /// The task stayed healthy (passing, or running without checks) for the job's
    /// `update.min_healthy_ms`.
    pub settled: bool,
    /// The task was not settled `update.healthy_deadline_ms` after its admission.
    pub deadline_missed: bool,
}

impl Milestones {
    /// Join `other` in; returns whether anything changed.
    pub fn join(&mut self, other: Milestones) -> bool {
        let joined = Milestones {
            settled: self.settled | other.settled,
            deadline_missed: self.deadline_missed | other.deadline_missed,
        };
        let changed = joined != *self;
        *self = joined;
        changed
    }

    /// Whether neither mark is set.
    #[must_use]
    pub fn is_empty(self) -> bool {
        !self.settled && !self.deadline_missed
    }
}

/// Where a coordinator placed an attempt. Written once, by the placer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Assignment {
    /// Node name that must admit and run it.
    pub target: Name,
    /// Resources reserved on the target.
    pub resources: Resources,
    /// Job epoch the attempt was placed for.
    pub epoch: Stamp,
    /// The target's generation (one start of its agent) that the placer saw alive. A down
    /// mark of an older generation does not condemn the attempt: the target has restarted
    /// since, which the placer knew and the condemner has not heard yet (`docs/faults.md`).
    /// 0 when unknown (written before snapshot format 5): any down mark condemns.
    pub generation: u64,
}

/// The life of an attempt: a monotone lattice with the total order
/// `Proposed < Admitted < Running(0) < Lost(0) < Running(1) < Lost(1) < … < Killed < Drained <
/// Failed < Rejected < Exited`. The target node writes everything but `Lost`, which the slot's
/// coordinator writes once SWIM declares the target down. A loss is not final: a target that
/// still runs the attempt *reclaims* it by writing the next round's `Running`, and a real
/// outcome reported by the target ranks above every round (`docs/faults.md`).
///
/// `Running` carries `since`, when the target first saw the process run (its clock then);
/// it decides which of two running attempts of a slot is the incumbent
/// ([`Tables::current_attempt`](super::Tables::current_attempt)). Two `Running` of one round
/// with different `since` (only a buggy or restarted writer makes them) order by `since`, so
/// the order stays total and the join stays `max`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum AttemptState {
    /// Written by the coordinator with the assignment (implicit: no state row).
    #[default]
    Proposed,
    /// The target reserved the resources and is starting the process.
    Admitted,
    /// The process runs; `round` counts the losses it was reclaimed from (0: never lost).
    Running {
        /// Reclaims so far.
        round: u32,
        /// When the target first saw the process run, by its hybrid logical clock; a reclaim
        /// keeps the first start's reading. Zero for rows read from a snapshot written before
        /// the stamp existed (format 2 and older): older than anything stamped.
        since: Hlc,
    },
    /// The target was declared down while the attempt was live in `round`.
    Lost {
        /// The round that was lost.
        round: u32,
    },
    /// Killed (stopped, superseded, scaled down, cut off from the majority).
    Killed,
    /// Could not be started or died abnormally.
    Failed {
        /// Why.
        reason: String,
    },
    /// The target refused it (no room, constraint, draining, superseded).
    Rejected {
        /// Why.
        reason: String,
    },
    /// The process exited by itself.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// Stopped by its target because the node drains (`docs/services.md`, §5): re-placed at
    /// once, spending neither restart attempts nor retries. Appended last so the earlier
    /// variants keep their encoding; ranked between `Killed` and `Failed`.
    Drained,
}

impl AttemptState {
    /// `Running` before any loss, started at `since`.
    #[must_use]
    pub const fn running(since: Hlc) -> AttemptState {
        AttemptState::Running { round: 0, since }
    }

    /// When the process of a running attempt first ran (`None` when it is not running).
    #[must_use]
    pub fn running_since(&self) -> Option<Hlc> {
        match self {
            AttemptState::Running { since, .. } => Some(*since),
            _ => None,
        }
    }

    /// Whether the attempt holds (or may soon hold) resources on its target.
    #[must_use]
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            AttemptState::Proposed | AttemptState::Admitted | AttemptState::Running { .. }
        )
    }

    /// Whether this is a success (exit code 0).
    #[must_use]
    pub fn is_success(&self) -> bool {
        matches!(self, AttemptState::Exited { code: 0 })
    }

    /// Whether the coordinator declared the attempt lost (and its target has not reclaimed it).
    #[must_use]
    pub fn is_lost(&self) -> bool {
        matches!(self, AttemptState::Lost { .. })
    }

    /// Whether the attempt runs again after its target reclaimed it from a loss.
    #[must_use]
    pub fn is_reclaimed(&self) -> bool {
        matches!(self, AttemptState::Running { round, .. } if *round > 0)
    }

    /// The `Lost` a coordinator writes over this live state (`None` when it is not live).
    #[must_use]
    pub fn lost(&self) -> Option<AttemptState> {
        match self {
            AttemptState::Proposed | AttemptState::Admitted => {
                Some(AttemptState::Lost { round: 0 })
            }
            AttemptState::Running { round, .. } => Some(AttemptState::Lost { round: *round }),
            _ => None,
        }
    }

    /// The `Running` a target writes to reclaim this lost state (`None` when it is not lost):
    /// the next round, with `since` the first start of the process (the target's own record,
    /// since a `Lost` row no longer holds it).
    #[must_use]
    pub fn reclaimed(&self, since: Hlc) -> Option<AttemptState> {
        match self {
            AttemptState::Lost { round } => Some(AttemptState::Running {
                round: round.saturating_add(1),
                since,
            }),
            _ => None,
        }
    }

    /// Position in the lattice order, payloads aside.
    fn rank(&self) -> (u8, u32, u8) {
        match self {
            AttemptState::Proposed => (0, 0, 0),
            AttemptState::Admitted => (1, 0, 0),
            AttemptState::Running { round, .. } => (2, *round, 0),
            AttemptState::Lost { round } => (2, *round, 1),
            AttemptState::Killed => (3, 0, 0),
            AttemptState::Drained => (4, 0, 0),
            AttemptState::Failed { .. } => (5, 0, 0),
            AttemptState::Rejected { .. } => (6, 0, 0),
            AttemptState::Exited { .. } => (7, 0, 0),
        }
    }
}

impl Ord for AttemptState {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use AttemptState::{Exited, Failed, Rejected, Running};
        self.rank()
            .cmp(&other.rank())
            .then_with(|| match (self, other) {
                (Failed { reason: a }, Failed { reason: b })
                | (Rejected { reason: a }, Rejected { reason: b }) => a.cmp(b),
                (Exited { code: a }, Exited { code: b }) => a.cmp(b),
                (Running { since: a, .. }, Running { since: b, .. }) => a.cmp(b),
                _ => std::cmp::Ordering::Equal,
            })
    }
}

impl PartialOrd for AttemptState {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The host ports an attempt holds on its target and the address they are reached at. Picked
/// and written once by the target at admission, before `Admitted` (`docs/services.md`, §1);
/// two different values for one attempt (a buggy peer) join by `max`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Binding {
    /// The target's service IP.
    pub ip: IpAddr,
    /// Port name (as the job declares it) → host port, in the job's order.
    pub ports: Vec<(Name, u16)>,
}

impl Binding {
    /// The host port bound to the port named `name`.
    #[must_use]
    pub fn port(&self, name: &str) -> Option<u16> {
        self.ports
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, p)| *p)
    }
}

/// Readiness of a running attempt, from its health checks (`docs/services.md`, §2): what
/// discovery uses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Not every check has passed once yet (and none failed past its grace).
    #[default]
    Unknown,
    /// Every check's last result passed.
    Passing,
    /// A check failed after its first pass or its grace.
    Critical,
}

impl HealthStatus {
    /// Stable lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Unknown => "unknown",
            HealthStatus::Passing => "passing",
            HealthStatus::Critical => "critical",
        }
    }
}

/// Longest [`Health::note`] in bytes; a longer note is cut at a character boundary.
pub const MAX_HEALTH_NOTE: usize = 256;

/// An attempt's health as its target last wrote it: written on transitions only (readiness,
/// the note, the restart counter). Two writes of one attempt join by last-writer-wins on
/// `stamp` (the whole value breaks a tie, for a buggy peer that reuses a stamp).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Health {
    /// Last-writer-wins marker (the target's hybrid logical clock).
    pub stamp: Stamp,
    /// Readiness.
    pub status: HealthStatus,
    /// The last failure (`check ready: HTTP 503`), at most [`MAX_HEALTH_NOTE`] bytes; empty
    /// when every check passes.
    pub note: String,
    /// Consecutive failures counted toward a restart, of the check closest to its limit.
    pub failures: u32,
    /// That check's limit (`failures` in its spec); 0: no check restarts the task.
    pub limit: u32,
}

impl Health {
    /// Whether readiness is `Passing` (a task without checks has no health row: see
    /// `crate::health::task_health` for the whole rule).
    #[must_use]
    pub fn is_passing(&self) -> bool {
        self.status == HealthStatus::Passing
    }
}

/// `note` cut to at most [`MAX_HEALTH_NOTE`] bytes, at a character boundary.
#[must_use]
pub fn clip_note(note: &str) -> String {
    if note.len() <= MAX_HEALTH_NOTE {
        return note.to_string();
    }
    let mut end = MAX_HEALTH_NOTE;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note[..end].to_string()
}

/// Attempts of a slot below `below` were garbage-collected; `failures` of them had failed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct SlotFloor {
    /// Attempts numbered below this are gone.
    pub below: u32,
    /// How many of them failed (counts toward batch retries).
    pub failures: u32,
}

/// The effect of one op: one lattice element.
// A job write is much larger than the other ops, but ops are short-lived in memory (the logs
// keep their encoded bytes), and a box would cost an allocation per job op on every replica.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OpBody {
    /// A job write.
    Job {
        /// Job incarnation.
        incarnation: u64,
        /// The write.
        entry: JobEntry,
    },
    /// A placement.
    Assign {
        /// Attempt.
        id: AttemptId,
        /// Where.
        assignment: Assignment,
    },
    /// A state transition.
    State {
        /// Attempt.
        id: AttemptId,
        /// New state.
        state: AttemptState,
    },
    /// Forget old attempts of a slot.
    Floor {
        /// Slot.
        slot: SlotKey,
        /// Floor.
        floor: SlotFloor,
    },
    /// Forget a finished job incarnation.
    Purge {
        /// Job id.
        job: String,
        /// Incarnation.
        incarnation: u64,
    },
    /// The ports the target bound for an attempt (appended last: the earlier variants keep
    /// their encoding).
    Binding {
        /// Attempt.
        id: AttemptId,
        /// Its ports.
        binding: Binding,
    },
    /// The health the target observed for an attempt (appended last, as `Binding`).
    Health {
        /// Attempt.
        id: AttemptId,
        /// Its health.
        health: Health,
    },
    /// Rollout marks the target set on an attempt (appended last).
    Milestones {
        /// Attempt.
        id: AttemptId,
        /// The marks.
        marks: Milestones,
    },
    /// Progress of one deployment (appended last).
    Rollout {
        /// Job id.
        job: String,
        /// Incarnation.
        incarnation: u64,
        /// The deployment.
        deployment: Stamp,
        /// What grew.
        rollout: Rollout,
    },
    /// A node's intent or drain progress (appended last; `docs/services.md`, §5).
    Node {
        /// The node's name.
        node: Name,
        /// What grew.
        row: NodeRow,
    },
}

impl OpBody {
    /// The job this op is about.
    #[must_use]
    pub fn job(&self) -> &str {
        match self {
            OpBody::Job { entry, .. } => &entry.spec.id,
            OpBody::Assign { id, .. }
            | OpBody::State { id, .. }
            | OpBody::Binding { id, .. }
            | OpBody::Health { id, .. }
            | OpBody::Milestones { id, .. } => &id.job,
            OpBody::Floor { slot, .. } => &slot.job,
            OpBody::Purge { job, .. } | OpBody::Rollout { job, .. } => job,
            // Not about a job: no job id contains `~` (`docs/services.md`, §5).
            OpBody::Node { .. } => NODE_OP_JOB,
        }
    }
}

/// A replicated op: a dot and its effect.
///
/// An op decoded by [`crate::Message::decode_shared`] also keeps its received encoding, a
/// slice of the message buffer: the replica logs those bytes instead of encoding the op again,
/// so every replica that received one broadcast logs the same buffer (refcounted). The
/// encoding is not part of the op's value: it is skipped on the wire and ignored by `==` and
/// `Debug`, and only decoding sets it (an op is never changed after it is decoded).
#[derive(Clone, Serialize, Deserialize)]
pub struct Op {
    /// Writer and sequence number.
    pub dot: Dot,
    /// Effect.
    pub body: OpBody,
    /// The bytes this op was decoded from, if it was received; `None` for local writes.
    #[serde(skip)]
    encoding: Option<Bytes>,
}

impl Op {
    /// An op without a received encoding (a local write, or one built by hand).
    #[must_use]
    pub fn new(dot: Dot, body: OpBody) -> Self {
        Self {
            dot,
            body,
            encoding: None,
        }
    }

    /// The bytes this op was received as, if any.
    #[cfg(test)]
    pub(crate) fn encoding(&self) -> Option<&Bytes> {
        self.encoding.as_ref()
    }

    /// Takes the bytes this op was received as, if any (the replica logs them).
    pub(crate) fn take_encoding(&mut self) -> Option<Bytes> {
        self.encoding.take()
    }

    /// `self`, received as exactly `encoding`.
    pub(crate) fn with_encoding(self, encoding: Bytes) -> Self {
        debug_assert!(postcard::from_bytes::<Op>(&encoding).is_ok_and(|op| op == self));
        Self {
            encoding: Some(encoding),
            ..self
        }
    }
}

impl PartialEq for Op {
    fn eq(&self, other: &Self) -> bool {
        self.dot == other.dot && self.body == other.body
    }
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // As derived before the encoding was kept.
        f.debug_struct("Op")
            .field("dot", &self.dot)
            .field("body", &self.body)
            .finish()
    }
}

/// An op applied out of order (see [`crdts::CmRDT::validate_op`] on
/// [`Tables`](crate::table::Tables)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("op {counter} of {actor} is out of order: expected {expected}")]
pub struct OpOrderError {
    /// Writer.
    pub actor: ActorId,
    /// The op's counter.
    pub counter: u64,
    /// The next counter this replica can apply.
    pub expected: u64,
}

/// A state merge was refused (never, currently: every pair of states joins).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tables cannot be merged")]
pub struct MergeError;
