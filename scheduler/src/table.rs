//! The replicated tables: a join-semilattice ([`Tables`]) and the op-based replica around it
//! ([`Replica`]) that delivers each actor's ops in order, keeps op logs for anti-entropy and
//! maintains derived indexes.
//!
//! # The lattice
//!
//! | component | key | value and join | single writer |
//! |---|---|---|---|
//! | `jobs` | (job id, incarnation) | [`JobEntry`], last writer wins by [`Stamp`] | the accepting node of each write |
//! | `assignments` | [`AttemptId`] | [`Assignment`], write-once | the placer named in the key |
//! | `states` | [`AttemptId`] | [`AttemptState`], max in its total order | the target; `Lost` by the coordinator |
//! | `floors` | [`SlotKey`] | [`SlotFloor`], max | the slot's coordinator |
//! | `purged` | (job id, incarnation) | set union (tombstones) | the job's coordinator |
//!
//! Every component is a map of lattices joined pointwise; `purged` and `floors` then filter
//! keys (a purged incarnation loses all its rows, a floor drops older attempts of its slot).
//! The filter depends only on keys and only grows, so join stays commutative, associative and
//! idempotent, and state merge equals the union of the ops both sides have seen. Because every
//! op is a lattice element too, *any* delivery order gives the same table; per-actor in-order
//! delivery is enforced anyway because the version vector must mean "all ops up to n", which
//! is what anti-entropy compares.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use crdts::{CmRDT, CvRDT};
use serde::{Deserialize, Serialize};
use shoal_gossip::Resources;

use crate::ids::{ActorId, AttemptId, Dot, Name, SlotKey, Stamp, VersionVector};
use crate::spec::JobSpec;

mod attempts;

use attempts::Attempts;

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
}

impl JobEntry {
    /// The deterministic join of two writes of one key (unique stamps make ties impossible in
    /// practice; the fallback keeps the join commutative even for a buggy peer).
    fn wins_over(&self, other: &JobEntry) -> bool {
        (&self.stamp, self.stopped, &self.epoch) > (&other.stamp, other.stopped, &other.epoch)
            || ((&self.stamp, self.stopped, &self.epoch)
                == (&other.stamp, other.stopped, &other.epoch)
                && postcard::to_stdvec(&self.spec).ok() > postcard::to_stdvec(&other.spec).ok())
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
}

/// The life of an attempt: a monotone lattice with the total order
/// `Proposed < Admitted < Running(0) < Lost(0) < Running(1) < Lost(1) < … < Killed < Failed <
/// Rejected < Exited`. The target node writes everything but `Lost`, which the slot's
/// coordinator writes once SWIM declares the target down. A loss is not final: a target that
/// still runs the attempt *reclaims* it by writing the next round's `Running`, and a real
/// outcome reported by the target ranks above every round (`docs/faults.md`).
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
}

impl AttemptState {
    /// `Running` before any loss.
    pub const RUNNING: AttemptState = AttemptState::Running { round: 0 };

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
        matches!(self, AttemptState::Running { round } if *round > 0)
    }

    /// The `Lost` a coordinator writes over this live state (`None` when it is not live).
    #[must_use]
    pub fn lost(&self) -> Option<AttemptState> {
        match self {
            AttemptState::Proposed | AttemptState::Admitted => {
                Some(AttemptState::Lost { round: 0 })
            }
            AttemptState::Running { round } => Some(AttemptState::Lost { round: *round }),
            _ => None,
        }
    }

    /// The `Running` a target writes to reclaim this lost state (`None` when it is not lost).
    #[must_use]
    pub fn reclaimed(&self) -> Option<AttemptState> {
        match self {
            AttemptState::Lost { round } => Some(AttemptState::Running {
                round: round.saturating_add(1),
            }),
            _ => None,
        }
    }

    /// Position in the lattice order, payloads aside.
    fn rank(&self) -> (u8, u32, u8) {
        match self {
            AttemptState::Proposed => (0, 0, 0),
            AttemptState::Admitted => (1, 0, 0),
            AttemptState::Running { round } => (2, *round, 0),
            AttemptState::Lost { round } => (2, *round, 1),
            AttemptState::Killed => (3, 0, 0),
            AttemptState::Failed { .. } => (4, 0, 0),
            AttemptState::Rejected { .. } => (5, 0, 0),
            AttemptState::Exited { .. } => (6, 0, 0),
        }
    }
}

impl Ord for AttemptState {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use AttemptState::{Exited, Failed, Rejected};
        self.rank()
            .cmp(&other.rank())
            .then_with(|| match (self, other) {
                (Failed { reason: a }, Failed { reason: b })
                | (Rejected { reason: a }, Rejected { reason: b }) => a.cmp(b),
                (Exited { code: a }, Exited { code: b }) => a.cmp(b),
                _ => std::cmp::Ordering::Equal,
            })
    }
}

impl PartialOrd for AttemptState {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
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
}

impl OpBody {
    /// The job this op is about.
    #[must_use]
    pub fn job(&self) -> &str {
        match self {
            OpBody::Job { entry, .. } => &entry.spec.id,
            OpBody::Assign { id, .. } | OpBody::State { id, .. } => &id.job,
            OpBody::Floor { slot, .. } => &slot.job,
            OpBody::Purge { job, .. } => job,
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

/// An op applied out of order (see [`CmRDT::validate_op`] on [`Tables`]).
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

/// The live incarnations of one job id, sorted (almost always one: a `BTreeMap` here would
/// allocate a whole node of entries per job).
type Incarnations = Vec<(u64, JobEntry)>;

/// One attempt's rows of the `assignments` and `states` components, kept together: applying
/// an op and reading the attempt afterwards (its target, whether it is live) then search one
/// tree instead of two. At least one of the two is set.
#[derive(Debug, Clone, PartialEq, Default)]
struct AttemptRow {
    assignment: Option<Assignment>,
    state: Option<AttemptState>,
}

/// The replicated state: see the module doc. On the wire and in snapshots it is the six
/// components of the module doc, `assignments` and `states` as two sorted maps (see
/// [`wire`]), whatever the in-memory layout.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tables {
    /// Job id → writes by incarnation. Nested so a lookup by id borrows the `&str` instead of
    /// building a `(String, u64)` key; on the wire it is the flat `(id, incarnation)` map,
    /// sorted. A hash map: every replica looks a job up for every op it applies, and a tree
    /// search compared the id with a dozen cold heap strings; whatever iterates it sorts first.
    jobs: JobMap,
    /// The `assignments` and `states` components, by attempt. Every replica applies every op
    /// of the cluster: with two trees, each op walked two cold paths. Grouped by job
    /// ([`attempts`]).
    attempts: Attempts,
    floors: BTreeMap<SlotKey, SlotFloor>,
    purged: BTreeSet<JobKey>,
    clock: VersionVector,
}

impl Tables {
    /// The version vector: for every actor, the number of its ops included.
    #[must_use]
    pub fn clock(&self) -> &VersionVector {
        &self.clock
    }

    /// The visible write of job `id`: the newest across its live incarnations.
    #[must_use]
    pub fn job(&self, id: &str) -> Option<(u64, &JobEntry)> {
        self.incarnations(id)
            .max_by(|a, b| a.1.stamp.cmp(&b.1.stamp))
    }

    /// Every live incarnation of job `id`.
    pub fn incarnations<'a>(
        &'a self,
        id: &str,
    ) -> impl Iterator<Item = (u64, &'a JobEntry)> + use<'a> {
        self.jobs
            .get(id)
            .into_iter()
            .flat_map(|incs| incs.iter().map(|(inc, e)| (*inc, e)))
    }

    /// All job writes, by (id, incarnation).
    pub fn jobs(&self) -> impl Iterator<Item = ((&str, u64), &JobEntry)> {
        sorted_jobs(&self.jobs)
            .into_iter()
            .flat_map(|(id, incs)| incs.iter().map(move |(inc, e)| ((id.as_str(), *inc), e)))
    }

    /// Job ids with at least one live incarnation, sorted.
    #[must_use]
    pub fn job_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.jobs.keys().map(Name::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// The assignment of an attempt.
    #[must_use]
    pub fn assignment(&self, id: &AttemptId) -> Option<&Assignment> {
        self.attempts.get(id)?.assignment.as_ref()
    }

    /// The state of an attempt (`Proposed` when none was written yet).
    #[must_use]
    pub fn state(&self, id: &AttemptId) -> AttemptState {
        self.attempts
            .get(id)
            .and_then(|r| r.state.clone())
            .unwrap_or_default()
    }

    /// An attempt's assignment and state (`Proposed` when none was written yet), from one
    /// lookup and without cloning the state.
    pub(crate) fn assignment_and_state(
        &self,
        id: &AttemptId,
    ) -> Option<(&Assignment, &AttemptState)> {
        static PROPOSED: AttemptState = AttemptState::Proposed;
        let row = self.attempts.get(id)?;
        Some((
            row.assignment.as_ref()?,
            row.state.as_ref().unwrap_or(&PROPOSED),
        ))
    }

    /// Whether an attempt is live (proposed, admitted or running), without cloning its state.
    pub(crate) fn is_live(&self, id: &AttemptId) -> bool {
        self.attempts
            .get(id)
            .and_then(|r| r.state.as_ref())
            .is_none_or(AttemptState::is_live)
    }

    /// Attempts of one slot, oldest first.
    pub fn slot_attempts<'a>(
        &'a self,
        slot: &SlotKey,
    ) -> impl DoubleEndedIterator<Item = (&'a AttemptId, &'a Assignment)> + 'a {
        self.attempts
            .slot(slot)
            .filter_map(|(id, r)| Some((id, r.assignment.as_ref()?)))
    }

    /// The attempt of a slot that should run, by the same rule on every replica
    /// (`docs/faults.md`, "The incumbent wins"): the oldest attempt whose process runs
    /// (`Running` in any round: never lost, or reclaimed after a loss), among those placed for
    /// the same job version as the newest attempt; when none runs, the newest attempt. Every
    /// other attempt of the slot is superseded. A copy that runs thus never loses to a
    /// replacement placed while its node looked dead, whatever order the replicas learn the
    /// replacement and the loss in; a new job version always wins (its attempts are newer and
    /// the old ones are of another version). `keep_newest` (a job that keeps replacements)
    /// makes the newest attempt current whatever runs.
    pub fn current_attempt<'a>(
        &'a self,
        slot: &SlotKey,
    ) -> Option<(&'a AttemptId, &'a Assignment)> {
        let newest = self.slot_attempts(slot).next_back()?;
        let keep_newest = self.job(&slot.job).is_some_and(|(inc, e)| {
            inc == slot.incarnation
                && e.spec.disconnect.reconcile == crate::spec::Reconcile::KeepReplacement
        });
        if keep_newest {
            return Some(newest);
        }
        let incumbent = self
            .attempts
            .slot(slot)
            .filter_map(|(id, r)| Some((id, r.assignment.as_ref()?, r.state.as_ref()?)))
            .find(|(_, a, s)| {
                matches!(s, AttemptState::Running { .. }) && a.epoch == newest.1.epoch
            })
            .map(|(id, a, _)| (id, a));
        incumbent.or(Some(newest))
    }

    /// Attempts of one job incarnation, by slot then attempt.
    pub fn job_attempts<'a>(
        &'a self,
        job: &'a str,
        incarnation: u64,
    ) -> impl Iterator<Item = (&'a AttemptId, &'a Assignment)> + 'a {
        self.attempts
            .job(job, incarnation)
            .filter_map(|(id, r)| Some((id, r.assignment.as_ref()?)))
    }

    /// Every assignment.
    pub fn assignments(&self) -> impl Iterator<Item = (&AttemptId, &Assignment)> {
        self.attempts
            .iter()
            .filter_map(|(id, r)| Some((id, r.assignment.as_ref()?)))
    }

    /// Every written state (`Proposed` attempts have none).
    fn states(&self) -> impl Iterator<Item = (&AttemptId, &AttemptState)> {
        self.attempts
            .iter()
            .filter_map(|(id, r)| Some((id, r.state.as_ref()?)))
    }

    /// The floor of a slot.
    #[must_use]
    pub fn floor(&self, slot: &SlotKey) -> SlotFloor {
        self.floors.get(slot).copied().unwrap_or_default()
    }

    /// Tombstones of purged job incarnations.
    #[must_use]
    pub fn purged(&self) -> &BTreeSet<JobKey> {
        &self.purged
    }

    /// Number of rows (jobs, attempts, states, floors, tombstones), for metrics and GC tests.
    #[must_use]
    pub fn row_count(&self) -> usize {
        self.jobs.values().map(Vec::len).sum::<usize>()
            + self.assignments().count()
            + self.states().count()
            + self.floors.len()
            + self.purged.len()
    }

    fn is_purged(&self, job: &str, incarnation: u64) -> bool {
        // Avoid allocating the key on the hot path when there are no tombstones.
        !self.purged.is_empty() && self.purged.contains(&(job.to_string(), incarnation))
    }

    fn is_filtered(&self, id: &AttemptId) -> bool {
        self.is_purged(&id.job, id.incarnation)
            || (!self.floors.is_empty()
                && self
                    .floors
                    .get(&id.slot_key())
                    .is_some_and(|f| id.attempt < f.below))
    }

    /// Join one lattice element into the tables. Returns whether anything changed.
    pub(crate) fn join_body(&mut self, body: &OpBody) -> bool {
        match body {
            OpBody::Job { incarnation, entry } => self.join_job(*incarnation, entry),
            OpBody::Assign { id, assignment } => self.join_assignment(id, assignment),
            OpBody::State { id, state } => self.join_state(id, state),
            OpBody::Floor { slot, floor } => self.join_floor(slot, *floor),
            OpBody::Purge { job, incarnation } => self.join_purge(job, *incarnation),
        }
    }

    fn join_job(&mut self, incarnation: u64, entry: &JobEntry) -> bool {
        // A spec a peer should never have sent is ignored deterministically everywhere.
        if entry
            .spec
            .validate_with(&crate::spec::SpecLimits::WIRE)
            .is_err()
            || self.is_purged(&entry.spec.id, incarnation)
        {
            return false;
        }
        if !self.jobs.contains_key(entry.spec.id.as_str()) {
            self.jobs.insert(entry.spec.id.as_str().into(), Vec::new());
        }
        let Some(incs) = self.jobs.get_mut(entry.spec.id.as_str()) else {
            return false;
        };
        match incs.binary_search_by_key(&incarnation, |(inc, _)| *inc) {
            Ok(k) if !entry.wins_over(&incs[k].1) => false,
            Ok(k) => {
                incs[k].1 = entry.clone();
                true
            }
            Err(k) => {
                incs.insert(k, (incarnation, entry.clone()));
                true
            }
        }
    }

    fn join_assignment(&mut self, id: &AttemptId, a: &Assignment) -> bool {
        self.join_assignment_from(id, a).is_some()
    }

    /// [`Tables::join_assignment`], returning the replaced assignment (if any) when it
    /// changed: one tree search, where a lookup before and after the join took three.
    fn join_assignment_from(
        &mut self,
        id: &AttemptId,
        a: &Assignment,
    ) -> Option<Option<Assignment>> {
        if self.is_filtered(id) {
            return None;
        }
        let row = self.attempts.entry(id);
        match &mut row.assignment {
            Some(cur) if &*cur >= a => None,
            cur => Some(cur.replace(a.clone())),
        }
    }

    fn join_state(&mut self, id: &AttemptId, s: &AttemptState) -> bool {
        self.join_state_row(id, s).is_some()
    }

    /// [`Tables::join_state`], returning, when it changed, whether the attempt was live before
    /// and its assignment: one tree search, so the replica's usage index need not look again.
    fn join_state_row(
        &mut self,
        id: &AttemptId,
        s: &AttemptState,
    ) -> Option<(bool, Option<&Assignment>)> {
        if self.is_filtered(id) || *s == AttemptState::Proposed {
            return None;
        }
        let row = self.attempts.entry(id);
        let was_live = match &mut row.state {
            Some(cur) if &*cur >= s => return None,
            Some(cur) => {
                let was_live = cur.is_live();
                cur.clone_from(s);
                was_live
            }
            cur @ None => {
                *cur = Some(s.clone());
                true
            }
        };
        Some((was_live, row.assignment.as_ref()))
    }

    fn join_floor(&mut self, slot: &SlotKey, floor: SlotFloor) -> bool {
        if self.is_purged(&slot.job, slot.incarnation) || self.floor(slot) >= floor {
            return false;
        }
        self.floors.insert(slot.clone(), floor);
        let doomed: Vec<AttemptId> = self
            .attempts
            .slot(slot)
            .map(|(id, _)| id.clone())
            .filter(|id| id.attempt < floor.below)
            .collect();
        for id in doomed {
            self.attempts.remove(&id);
        }
        true
    }

    fn join_purge(&mut self, job: &str, incarnation: u64) -> bool {
        if !self.purged.insert((job.to_string(), incarnation)) {
            return false;
        }
        if let Some(incs) = self.jobs.get_mut(job) {
            incs.retain(|(inc, _)| *inc != incarnation);
            if incs.is_empty() {
                self.jobs.remove(job);
            }
        }
        self.attempts.remove_job(job, incarnation);
        self.floors
            .retain(|s, _| !(s.job == job && s.incarnation == incarnation));
        true
    }

    /// Forget a tombstone (local, outside the lattice: see `docs/scheduler.md`, GC rule).
    pub(crate) fn drop_tombstone(&mut self, key: &JobKey) {
        self.purged.remove(key);
    }

    /// Every row of `other` as lattice elements, tombstones and floors first.
    fn elements(other: &Tables) -> impl Iterator<Item = OpBody> + '_ {
        let purges = other.purged.iter().map(|(job, incarnation)| OpBody::Purge {
            job: job.clone(),
            incarnation: *incarnation,
        });
        let floors = other.floors.iter().map(|(slot, floor)| OpBody::Floor {
            slot: slot.clone(),
            floor: *floor,
        });
        let jobs = other.jobs().map(|((_, inc), e)| OpBody::Job {
            incarnation: inc,
            entry: e.clone(),
        });
        let assigns = other.assignments().map(|(id, a)| OpBody::Assign {
            id: id.clone(),
            assignment: a.clone(),
        });
        let states = other.states().map(|(id, s)| OpBody::State {
            id: id.clone(),
            state: s.clone(),
        });
        purges
            .chain(floors)
            .chain(jobs)
            .chain(assigns)
            .chain(states)
    }
}

impl CvRDT for Tables {
    type Validation = MergeError;

    fn validate_merge(&self, _other: &Self) -> Result<(), MergeError> {
        Ok(())
    }

    fn merge(&mut self, other: Self) {
        for body in Tables::elements(&other) {
            self.join_body(&body);
        }
        self.clock.merge(other.clock);
    }
}

impl CmRDT for Tables {
    type Op = Op;
    type Validation = OpOrderError;

    /// Unlike `crdts::Map::validate_op` (rust-crdt #159), this checks exactly "the next op of
    /// this actor".
    fn validate_op(&self, op: &Op) -> Result<(), OpOrderError> {
        let expected = self.clock.get(&op.dot.actor).saturating_add(1);
        if op.dot.counter == expected {
            Ok(())
        } else {
            Err(OpOrderError {
                actor: op.dot.actor.clone(),
                counter: op.dot.counter,
                expected,
            })
        }
    }

    /// Joins the op's effect unless its dot is already included. Order is the caller's
    /// business ([`Replica`] buffers): joining out of order is harmless for the content but
    /// would make the version vector claim ops it does not have.
    fn apply(&mut self, op: Op) {
        if op.dot.counter > self.clock.get(&op.dot.actor) {
            self.join_body(&op.body);
            self.clock.apply(op.dot);
        }
    }
}

/// Something in the tables changed; the scheduler re-examines it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Touch {
    /// A job write or purge.
    Job(Name),
    /// An attempt's assignment or state.
    Attempt(AttemptId),
    /// A state merge: re-examine everything.
    Everything,
}

/// Limits of a replica.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplicaLimits {
    /// Ops kept per actor for anti-entropy.
    pub(crate) log_per_actor: usize,
    /// Out-of-order ops buffered per actor before giving up and asking for state.
    pub(crate) pending_per_actor: usize,
    /// Releases are held (see [`Replica::placement_usage`]) until the scheduler ends them.
    pub(crate) hold_releases: bool,
}

impl ReplicaLimits {
    /// The limits a scheduler with `config` gives its replica.
    pub(crate) fn of(config: &crate::SchedulerConfig) -> Self {
        Self {
            log_per_actor: config.op_log_per_actor.get(),
            pending_per_actor: config.pending_ops_per_actor.get(),
            hold_releases: !config.release_hold.is_zero(),
        }
    }
}

/// The contiguous tail of one actor's ops, each kept postcard-encoded: a replica logs every
/// actor's ops, and the encoding is about a third of the size of a decoded `Op` (whose ids
/// and stamps are separate heap strings). A received op is logged as the slice of the message
/// it arrived in ([`Op`]), shared with every other replica that received the same buffer;
/// only local writes are encoded here. Logs are read only to answer digests.
#[derive(Debug, Clone, Default)]
struct ActorLog {
    /// Counter of `ops[0]`.
    first: u64,
    ops: VecDeque<Bytes>,
}

/// Actor → its op log. Looked up once per applied op, never iterated (digests walk the
/// version vector): a hash lookup instead of a tree search comparing actors.
#[allow(clippy::disallowed_types)]
type ActorLogs = rustc_hash::FxHashMap<ActorId, ActorLog>;

/// What [`Replica::receive`] did with an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// Applied (possibly releasing buffered successors).
    Applied,
    /// Already included.
    Duplicate,
    /// Waiting for its predecessors.
    Buffered,
    /// The buffer for this actor overflowed and was dropped: ask for state.
    Overflow,
}

/// Job id → its live incarnations. Looked up; iterated only through [`sorted_jobs`]. Ids are
/// inline [`Name`]s: sorting them (every view, and the simulator's checker every second on
/// every replica) then compares bytes already in cache.
#[allow(clippy::disallowed_types)]
type JobMap = rustc_hash::FxHashMap<Name, Incarnations>;

/// The jobs in id order.
fn sorted_jobs(jobs: &JobMap) -> Vec<(&Name, &Incarnations)> {
    let mut v: Vec<(&Name, &Incarnations)> = jobs.iter().collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    v
}

/// Node name → dense id (see [`Replica::node_id`]).
#[allow(clippy::disallowed_types)] // lookups only: iteration order never shows
type NodeIds = rustc_hash::FxHashMap<String, usize>;

/// Tables plus in-order delivery, op logs and derived indexes.
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    tables: Tables,
    logs: ActorLogs,
    pending: BTreeMap<ActorId, BTreeMap<u64, Op>>,
    /// Dense ids of the node names seen as targets or placement candidates, so the placer
    /// reads a node's usage by index instead of a string-keyed lookup per candidate.
    /// Looked up, never iterated: a hash map is deterministic enough here and spares the
    /// string comparisons of a tree search on every released attempt.
    node_ids: NodeIds,
    /// Resources held by live attempts, per node id.
    usage: Vec<Resources>,
    /// How many times some node's usage went down (or was rebuilt): the placer's cue that
    /// a slot that found no room may find some now.
    releases: u64,
    /// Per node id, the value of `releases` when its usage last went down: a slot that found
    /// no room at release count `g` can fit now only on a node released after `g`.
    released: Vec<u64>,
    /// Per node id, while a release is held: the usage before it (see
    /// [`Replica::placement_usage`]).
    holds: Vec<Option<Resources>>,
    /// Node ids whose hold opened since the scheduler last looked.
    opened: Vec<usize>,
    touched: BTreeSet<Touch>,
    limits: ReplicaLimits,
}

impl Replica {
    pub(crate) fn new(tables: Tables, limits: ReplicaLimits) -> Self {
        let mut r = Self {
            tables,
            logs: ActorLogs::default(),
            pending: BTreeMap::new(),
            node_ids: NodeIds::default(),
            usage: Vec::new(),
            releases: 0,
            released: Vec::new(),
            holds: Vec::new(),
            opened: Vec::new(),
            touched: BTreeSet::new(),
            limits,
        };
        r.rebuild_usage();
        r.touched.insert(Touch::Everything);
        r
    }

    pub(crate) fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The dense id of a node name (assigned on first use; ids are never reused).
    pub(crate) fn node_id(&mut self, node: &str) -> usize {
        intern(&mut self.node_ids, &mut self.usage, node)
    }

    /// Resources held by live attempts on the node with id `id` (see [`Replica::node_id`]).
    pub(crate) fn usage_of(&self, id: usize) -> Resources {
        self.usage.get(id).copied().unwrap_or_default()
    }

    /// Resources held by live attempts on the node named `node`.
    pub(crate) fn usage_by_name(&self, node: &str) -> Resources {
        self.node_ids
            .get(node)
            .map_or_else(Resources::default, |&id| self.usage_of(id))
    }

    /// Grows whenever a live attempt's resources are released (see the field).
    pub(crate) fn releases(&self) -> u64 {
        self.releases
    }

    /// The release count when the usage of node `id` last went down (0: never, its usage
    /// has only grown since this replica started or last rebuilt its usage).
    pub(crate) fn released_at(&self, id: usize) -> u64 {
        self.released.get(id).copied().unwrap_or(0)
    }

    /// Releases some of node `id`'s usage: counted at once, or held (see
    /// [`Replica::placement_usage`]).
    fn release(&mut self, id: usize, resources: &Resources) {
        let before = self.usage[id];
        self.usage[id] = before.saturating_sub(resources);
        if !self.limits.hold_releases {
            self.count_release(id);
            return;
        }
        if self.holds.len() <= id {
            self.holds.resize(id + 1, None);
        }
        match &mut self.holds[id] {
            Some(held) => *held = held.max_each(&before),
            hold @ None => {
                *hold = Some(before);
                self.opened.push(id);
            }
        }
    }

    fn count_release(&mut self, id: usize) {
        self.releases += 1;
        if self.released.len() <= id {
            self.released.resize(id + 1, 0);
        }
        self.released[id] = self.releases;
    }

    /// Node ids whose releases started being held since the last call.
    pub(crate) fn take_opened(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.opened)
    }

    /// Ends the hold of node `id`'s releases, counting them now.
    pub(crate) fn end_hold(&mut self, id: usize) {
        if self.holds.get_mut(id).and_then(Option::take).is_some() {
            self.count_release(id);
        }
    }

    /// What a placer counts as used on node `id`: its live attempts, or while a release
    /// there is held, the usage before the release if that is higher.
    pub(crate) fn placement_usage(&self, id: usize) -> Resources {
        let usage = self.usage_of(id);
        match self.holds.get(id).copied().flatten() {
            Some(held) => usage.max_each(&held),
            None => usage,
        }
    }

    /// Take what changed since the last call.
    pub(crate) fn take_touched(&mut self) -> BTreeSet<Touch> {
        std::mem::take(&mut self.touched)
    }

    /// Receive an op from anyone (including ourselves), applying it and any buffered
    /// successors when it is the actor's next.
    pub(crate) fn receive(&mut self, op: Op) -> Received {
        let have = self.tables.clock.get(&op.dot.actor);
        if op.dot.counter <= have {
            return Received::Duplicate;
        }
        if op.dot.counter > have + 1 {
            let actor = op.dot.actor.clone();
            let buf = self.pending.entry(actor.clone()).or_default();
            buf.insert(op.dot.counter, op);
            if buf.len() > self.limits.pending_per_actor {
                self.pending.remove(&actor);
                return Received::Overflow;
            }
            return Received::Buffered;
        }
        let actor = op.dot.actor.clone();
        self.apply_next(op);
        self.drain_pending(&actor);
        Received::Applied
    }

    fn drain_pending(&mut self, actor: &ActorId) {
        loop {
            let Some(buf) = self.pending.get_mut(actor) else {
                return;
            };
            let next = self.tables.clock.get(actor) + 1;
            // Drop anything already covered (e.g. after a state merge).
            while buf.first_key_value().is_some_and(|(c, _)| *c < next) {
                buf.pop_first();
            }
            let Some(op) = buf.remove(&next) else {
                if buf.is_empty() {
                    self.pending.remove(actor);
                }
                return;
            };
            self.apply_next(op);
        }
    }

    /// Apply the actor's next op: join, update indexes, log.
    fn apply_next(&mut self, op: Op) {
        debug_assert!(self.tables.validate_op(&op).is_ok());
        match &op.body {
            OpBody::State { id, state } => self.apply_state(id, state),
            OpBody::Assign { id, assignment } => self.apply_assignment(id, assignment),
            _ => self.apply_other(&op.body),
        }
        let dot = op.dot.clone();
        self.log(op);
        self.tables.clock.apply(dot);
    }

    /// Join a lattice element that arrived outside the op stream (a job record replayed from
    /// the shell's log at restart): tables and indexes change as for an op; the version
    /// vector does not, so the op itself still arrives (and applies as a no-op) later.
    pub(crate) fn join_local(&mut self, body: &OpBody) {
        match body {
            OpBody::State { id, state } => self.apply_state(id, state),
            OpBody::Assign { id, assignment } => self.apply_assignment(id, assignment),
            _ => self.apply_other(body),
        }
    }

    /// A placement: the usage index moves from the replaced assignment (if any) to the new
    /// one, while the attempt is live (its state is not changed by this op).
    fn apply_assignment(&mut self, id: &AttemptId, assignment: &Assignment) {
        let Some(replaced) = self.tables.join_assignment_from(id, assignment) else {
            return;
        };
        if self.tables.is_live(id) {
            let mut contribution = |a: &Assignment| {
                let node = intern(&mut self.node_ids, &mut self.usage, &a.target);
                (node, a.resources)
            };
            let before = replaced.as_ref().map(&mut contribution);
            let after = Some(contribution(assignment));
            self.adjust_usage(before, after);
        }
        self.touched.insert(Touch::Attempt(id.clone()));
    }

    /// A job write, floor or purge.
    fn apply_other(&mut self, body: &OpBody) {
        if self.tables.join_body(body) {
            match body {
                OpBody::State { .. } | OpBody::Assign { .. } => {}
                OpBody::Job { entry, .. } => {
                    self.touched
                        .insert(Touch::Job(entry.spec.id.as_str().into()));
                }
                OpBody::Floor { slot, .. } => {
                    self.rebuild_usage();
                    self.touched.insert(Touch::Job(slot.job.clone()));
                }
                OpBody::Purge { job, .. } => {
                    self.rebuild_usage();
                    self.touched.insert(Touch::Job(job.as_str().into()));
                }
            }
        }
    }

    /// A state write: states only grow, so the attempt's usage can only be released (when a
    /// live attempt with an assignment ends).
    fn apply_state(&mut self, id: &AttemptId, state: &AttemptState) {
        let Some((was_live, assignment)) = self.tables.join_state_row(id, state) else {
            return;
        };
        if was_live
            && !state.is_live()
            && let Some(a) = assignment
        {
            let node = intern(&mut self.node_ids, &mut self.usage, &a.target);
            let resources = a.resources;
            self.release(node, &resources);
        }
        self.touched.insert(Touch::Attempt(id.clone()));
    }

    /// Append the actor's next op to its log: the bytes it was received as, or (a local
    /// write) its encoding.
    fn log(&mut self, mut op: Op) {
        let bytes = op
            .encoding
            .take()
            .or_else(|| encode_exact(&op).map(Bytes::from));
        let counter = op.dot.counter;
        let log = self.logs.entry(op.dot.actor).or_default();
        if log.first + log.ops.len() as u64 != counter {
            log.ops.clear();
            log.first = counter;
        }
        let Some(bytes) = bytes else {
            // Cannot happen for our own types; a gap makes digests fall back to state.
            log.ops.clear();
            log.first = counter + 1;
            return;
        };
        log.ops.push_back(bytes);
        if log.ops.len() > self.limits.log_per_actor {
            log.ops.pop_front();
            log.first += 1;
        }
    }

    fn adjust_usage(
        &mut self,
        before: Option<(usize, Resources)>,
        after: Option<(usize, Resources)>,
    ) {
        if before == after {
            return;
        }
        if let Some((node, r)) = before {
            self.release(node, &r);
        }
        if let Some((node, r)) = after {
            self.usage[node] = self.usage[node].saturating_add(&r);
        }
    }

    /// Recomputes usage from the rows, counting a release everywhere. Open holds stay: they
    /// record what placers still count, and the scheduler ends them on its timers.
    fn rebuild_usage(&mut self) {
        self.releases += 1;
        self.usage.fill(Resources::default());
        for row in self.tables.attempts.values() {
            let live = row.state.as_ref().is_none_or(AttemptState::is_live);
            if let Some(a) = row.assignment.as_ref().filter(|_| live)
                && a.resources != Resources::default()
            {
                let node = intern(&mut self.node_ids, &mut self.usage, &a.target);
                self.usage[node] = self.usage[node].saturating_add(&a.resources);
            }
        }
        self.released = vec![self.releases; self.usage.len()];
    }

    /// Full-state merge (anti-entropy fallback). Logs of actors that jumped are reset, since
    /// they can no longer serve a contiguous range.
    pub(crate) fn merge_state(&mut self, other: Tables) {
        self.tables.merge(other);
        for dot in self.tables.clock.iter() {
            let log = self.logs.entry(dot.actor.clone()).or_default();
            if log.first + log.ops.len() as u64 <= dot.counter {
                log.ops.clear();
                log.first = dot.counter + 1;
            }
        }
        let actors: Vec<ActorId> = self.pending.keys().cloned().collect();
        for actor in actors {
            self.drain_pending(&actor);
        }
        self.rebuild_usage();
        self.touched.insert(Touch::Everything);
    }

    /// The ops `peer` lacks according to its version vector, oldest first per actor, or `None`
    /// when some are no longer in the logs (send the state instead) or there are more than
    /// `max`.
    pub(crate) fn missing_for(&self, peer: &VersionVector, max: usize) -> Option<Vec<Op>> {
        let mut out = Vec::new();
        for dot in self.tables.clock.iter() {
            let theirs = peer.get(dot.actor);
            if theirs >= dot.counter {
                continue;
            }
            let log = self.logs.get(dot.actor)?;
            if log.first > theirs + 1 || out.len() as u64 + (dot.counter - theirs) > max as u64 {
                return None;
            }
            let skip = usize::try_from(theirs + 1 - log.first).ok()?;
            for bytes in log.ops.iter().skip(skip) {
                out.push(postcard::from_bytes(bytes).ok()?);
            }
        }
        Some(out)
    }

    /// Forget a tombstone (see the GC rule).
    pub(crate) fn drop_tombstone(&mut self, key: &JobKey) {
        self.tables.drop_tombstone(key);
    }

    /// Number of ops waiting for predecessors.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.values().map(BTreeMap::len).sum()
    }
}

/// [`Tables`] on the wire and in snapshots: the six components as separate fields, in the
/// order and with the bytes they had when each was its own map (`assignments` and `states`
/// are two sorted maps; an attempt row contributes to each component it has).
mod wire {
    use std::collections::{BTreeMap, BTreeSet};

    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{
        AttemptId, AttemptRow, Attempts, JobKey, JobMap, SlotFloor, SlotKey, Tables, VersionVector,
    };
    use crate::table::{Assignment, AttemptState};

    /// One component of the attempt rows, serialized as the map it used to be.
    struct Column<'a, T> {
        rows: &'a Attempts,
        get: fn(&AttemptRow) -> Option<&T>,
    }

    impl<T: Serialize> Serialize for Column<'_, T> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            // postcard needs the length up front.
            let len = self
                .rows
                .values()
                .filter(|r| (self.get)(r).is_some())
                .count();
            let mut map = serializer.serialize_map(Some(len))?;
            for (id, row) in self.rows.iter() {
                if let Some(value) = (self.get)(row) {
                    map.serialize_entry(id, value)?;
                }
            }
            map.end()
        }
    }

    struct Jobs<'a>(&'a JobMap);

    impl Serialize for Jobs<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            super::flat_jobs::serialize(self.0, serializer)
        }
    }

    #[derive(Serialize)]
    #[serde(rename = "Tables")]
    struct TablesRef<'a> {
        jobs: Jobs<'a>,
        assignments: Column<'a, Assignment>,
        states: Column<'a, AttemptState>,
        floors: &'a BTreeMap<SlotKey, SlotFloor>,
        purged: &'a BTreeSet<JobKey>,
        clock: &'a VersionVector,
    }

    #[derive(Deserialize)]
    #[serde(rename = "Tables")]
    struct TablesOwned {
        #[serde(with = "super::flat_jobs")]
        jobs: JobMap,
        assignments: BTreeMap<AttemptId, Assignment>,
        states: BTreeMap<AttemptId, AttemptState>,
        floors: BTreeMap<SlotKey, SlotFloor>,
        purged: BTreeSet<JobKey>,
        clock: VersionVector,
    }

    impl Serialize for Tables {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            TablesRef {
                jobs: Jobs(&self.jobs),
                assignments: Column {
                    rows: &self.attempts,
                    get: |r| r.assignment.as_ref(),
                },
                states: Column {
                    rows: &self.attempts,
                    get: |r| r.state.as_ref(),
                },
                floors: &self.floors,
                purged: &self.purged,
                clock: &self.clock,
            }
            .serialize(serializer)
        }
    }

    impl<'de> Deserialize<'de> for Tables {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let t = TablesOwned::deserialize(deserializer)?;
            let mut attempts = Attempts::default();
            for (id, a) in t.assignments {
                attempts.entry(&id).assignment = Some(a);
            }
            for (id, state) in t.states {
                attempts.entry(&id).state = Some(state);
            }
            Ok(Tables {
                jobs: t.jobs,
                attempts,
                floors: t.floors,
                purged: t.purged,
                clock: t.clock,
            })
        }
    }
}

/// The jobs table on the wire and in snapshots: one flat map keyed by `(id, incarnation)`,
/// as before the in-memory table was nested by id.
mod flat_jobs {
    use std::collections::BTreeMap;

    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{JobEntry, JobKey, JobMap, sorted_jobs};

    pub(super) fn serialize<S: Serializer>(
        jobs: &JobMap,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        // postcard needs the length up front, which a flattening iterator does not report.
        let len = jobs.values().map(Vec::len).sum();
        let mut map = serializer.serialize_map(Some(len))?;
        for (id, incs) in sorted_jobs(jobs) {
            for (inc, e) in incs {
                map.serialize_entry(&(id, inc), e)?;
            }
        }
        map.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<JobMap, D::Error> {
        let flat = BTreeMap::<JobKey, JobEntry>::deserialize(deserializer)?;
        let mut jobs = JobMap::default();
        for ((id, inc), e) in flat {
            // The flat map is sorted by (id, incarnation): each list comes out sorted.
            jobs.entry(id.into()).or_default().push((inc, e));
        }
        Ok(jobs)
    }
}

/// `op` postcard-encoded in an allocation of exactly its size. Every replica logs every op it
/// applies: encoding into a growing `Vec` and shrinking it into a box cost several
/// reallocations per op.
fn encode_exact(op: &Op) -> Option<Box<[u8]>> {
    let mut buf = [0u8; 512];
    match postcard::to_slice(op, &mut buf) {
        Ok(bytes) => Some(Box::from(&*bytes)),
        Err(_) => postcard::to_stdvec(op).ok().map(Vec::into_boxed_slice),
    }
}

/// The id of `node` in `ids`, adding it (with zero usage) when new.
fn intern(ids: &mut NodeIds, usage: &mut Vec<Resources>, node: &str) -> usize {
    if let Some(&id) = ids.get(node) {
        return id;
    }
    let id = usage.len();
    usage.push(Resources::default());
    ids.insert(node.to_string(), id);
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Hlc;
    use crate::spec::{JobType, ResourceRequest};
    use proptest::prelude::*;

    fn actor(n: u8) -> ActorId {
        ActorId {
            node: format!("n{n}").into(),
            incarnation: 7,
        }
    }

    fn spec(id: &str, count: u32) -> JobSpec {
        JobSpec::from_json_str(&format!(
            r#"{{"id": "{id}", "type": "service", "count": {count}, "command": "x", "resources": {{"cpu": 1, "memory": 1}}}}"#
        ))
        .unwrap()
    }

    fn stamp(a: u8, t: u64) -> Stamp {
        Stamp {
            hlc: Hlc {
                wall_ms: t,
                logical: 0,
            },
            actor: actor(a),
        }
    }

    fn attempt(job: u8, inc: u64, slot: u32, n: u32, placer: u8) -> AttemptId {
        AttemptId {
            job: format!("j{job}").into(),
            incarnation: inc,
            slot,
            attempt: n,
            placer: format!("n{placer}").into(),
        }
    }

    /// A small op vocabulary over a tiny key space so collisions (the interesting part) happen.
    fn arb_body(writer: u8, t: u64) -> impl Strategy<Value = OpBody> {
        let job =
            (0u8..2, 0u64..2, 1u32..4, any::<bool>()).prop_map(move |(j, inc, count, stopped)| {
                let st = stamp(writer, t);
                OpBody::Job {
                    incarnation: inc,
                    entry: JobEntry {
                        stamp: st.clone(),
                        epoch: st,
                        spec: spec(&format!("j{j}"), count),
                        stopped,
                    },
                }
            });
        let key = (0u8..2, 0u64..2, 0u32..2, 1u32..4, 0u8..2);
        let assign = (key.clone(), 0u8..3, 1u64..5).prop_map(|((j, i, s, n, p), target, cpu)| {
            OpBody::Assign {
                id: attempt(j, i, s, n, p),
                assignment: Assignment {
                    target: format!("n{target}").into(),
                    resources: Resources {
                        cpu_millicores: cpu,
                        memory_mib: 1,
                        disk_mib: 0,
                    },
                    epoch: stamp(0, 1),
                },
            }
        });
        let state = (key, 0u8..8, -1i32..2).prop_map(|((j, i, s, n, p), k, code)| OpBody::State {
            id: attempt(j, i, s, n, p),
            state: match k {
                0 => AttemptState::Admitted,
                1 => AttemptState::Running {
                    round: u32::from(code == 1),
                },
                2 => AttemptState::Lost {
                    round: u32::from(code == 1),
                },
                3 => AttemptState::Killed,
                4 => AttemptState::Failed { reason: "x".into() },
                5 => AttemptState::Rejected { reason: "y".into() },
                _ => AttemptState::Exited { code },
            },
        });
        let floor =
            (0u8..2, 0u64..2, 0u32..2, 1u32..4, 0u32..3).prop_map(|(j, i, s, below, failures)| {
                OpBody::Floor {
                    slot: SlotKey {
                        job: format!("j{j}").into(),
                        incarnation: i,
                        slot: s,
                    },
                    floor: SlotFloor { below, failures },
                }
            });
        let purge = (0u8..2, 0u64..2).prop_map(|(j, i)| OpBody::Purge {
            job: format!("j{j}"),
            incarnation: i,
        });
        prop_oneof![3 => job, 4 => assign, 5 => state, 1 => floor, 1 => purge]
    }

    /// Per-actor op sequences for three actors, with dots 1..=n and unique stamps.
    fn arb_history() -> impl Strategy<Value = Vec<Vec<Op>>> {
        (0u8..3)
            .map(|w| {
                prop::collection::vec(any::<u16>(), 0..12).prop_flat_map(move |ts| {
                    ts.into_iter()
                        .enumerate()
                        .map(|(i, _)| arb_body(w, i as u64 + 1))
                        .collect::<Vec<_>>()
                        .prop_map(move |bodies| {
                            bodies
                                .into_iter()
                                .enumerate()
                                .map(|(i, body)| Op::new(Dot::new(actor(w), i as u64 + 1), body))
                                .collect::<Vec<_>>()
                        })
                })
            })
            .collect::<Vec<_>>()
    }

    /// A replica state that saw a prefix of each actor's ops, interleaved by `order`.
    fn state_from(history: &[Vec<Op>], cuts: &[usize], order: &[u8]) -> Tables {
        let mut t = Tables::default();
        let mut next = vec![0usize; history.len()];
        for &pick in order {
            let a = pick as usize % history.len();
            let limit = cuts[a].min(history[a].len());
            if next[a] < limit {
                t.apply(history[a][next[a]].clone());
                next[a] += 1;
            }
        }
        for a in 0..history.len() {
            let limit = cuts[a].min(history[a].len());
            while next[a] < limit {
                t.apply(history[a][next[a]].clone());
                next[a] += 1;
            }
        }
        t
    }

    fn merged(mut a: Tables, b: &Tables) -> Tables {
        a.merge(b.clone());
        a
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn merge_is_a_semilattice(
            h in arb_history(),
            cuts in prop::collection::vec(prop::collection::vec(0usize..13, 3), 3),
            orders in prop::collection::vec(prop::collection::vec(0u8..3, 0..40), 3),
        ) {
            let a = state_from(&h, &cuts[0], &orders[0]);
            let b = state_from(&h, &cuts[1], &orders[1]);
            let c = state_from(&h, &cuts[2], &orders[2]);
            prop_assert_eq!(merged(a.clone(), &b), merged(b.clone(), &a));
            prop_assert_eq!(merged(merged(a.clone(), &b), &c), merged(a.clone(), &merged(b.clone(), &c)));
            prop_assert_eq!(merged(a.clone(), &a), a.clone());
            // State merge equals applying the union of the ops both saw.
            let union: Vec<usize> = (0..3).map(|i| cuts[0][i].max(cuts[1][i])).collect();
            prop_assert_eq!(merged(a, &b), state_from(&h, &union, &[]));
        }

        #[test]
        fn tables_encode_as_separate_assignment_and_state_maps(
            h in arb_history(),
            order in prop::collection::vec(0u8..3, 0..40),
        ) {
            // The layout `Tables` had when assignments and states were two maps: snapshots and
            // `State` messages must keep exactly these bytes.
            #[derive(Serialize)]
            struct TwoMaps<'a> {
                #[serde(serialize_with = "flat_jobs::serialize")]
                jobs: &'a JobMap,
                assignments: BTreeMap<&'a AttemptId, &'a Assignment>,
                states: BTreeMap<&'a AttemptId, &'a AttemptState>,
                floors: &'a BTreeMap<SlotKey, SlotFloor>,
                purged: &'a BTreeSet<JobKey>,
                clock: &'a VersionVector,
            }
            let t = state_from(&h, &[usize::MAX; 3], &order);
            let old = TwoMaps {
                jobs: &t.jobs,
                assignments: t.assignments().collect(),
                states: t.states().collect(),
                floors: &t.floors,
                purged: &t.purged,
                clock: &t.clock,
            };
            let bytes = postcard::to_stdvec(&t).unwrap();
            prop_assert_eq!(&bytes, &postcard::to_stdvec(&old).unwrap());
            prop_assert_eq!(postcard::from_bytes::<Tables>(&bytes).unwrap(), t);
        }

        #[test]
        fn any_causal_order_gives_the_same_table(
            h in arb_history(),
            o1 in prop::collection::vec(0u8..3, 0..40),
            o2 in prop::collection::vec(0u8..3, 0..40),
        ) {
            let all = [usize::MAX; 3];
            prop_assert_eq!(state_from(&h, &all, &o1), state_from(&h, &all, &o2));
        }

        #[test]
        fn replica_buffers_out_of_order_ops(
            h in arb_history(),
            seed in any::<u64>(),
            hold in any::<bool>(),
        ) {
            // Deliver all ops in a random (not causal) order with duplicates; the replica must
            // end equal to in-order application.
            let mut ops: Vec<Op> = h.iter().flatten().cloned().collect();
            ops.extend(h.iter().flatten().take(5).cloned());
            let mut rng = crate::hash::Rng::new(seed);
            for i in (1..ops.len()).rev() {
                ops.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let limits = ReplicaLimits { log_per_actor: 100, pending_per_actor: 100, hold_releases: hold };
            let mut r = Replica::new(Tables::default(), limits);
            let mut opened = BTreeSet::new();
            for op in ops {
                let (before, releases) = (r.usage.clone(), r.releases());
                r.receive(op);
                opened.extend(r.take_opened());
                // What the placer's no-room memory relies on: a node whose usage went down
                // in any resource is marked released after the count it had seen, or, while
                // releases are held, still counts for placers what it held before.
                for (id, was) in before.iter().enumerate() {
                    if was.fits_in(&r.usage_of(id)) {
                        continue;
                    }
                    // A purge or floor recomputes usage and counts a release everywhere (a
                    // held release is counted only when its hold ends, never by `receive`).
                    let rebuilt = r.released_at(id) > releases;
                    if hold && !rebuilt {
                        prop_assert!(opened.contains(&id), "node {} shrank without a hold", id);
                        prop_assert!(was.fits_in(&r.placement_usage(id)), "node {} hold lost usage", id);
                    } else {
                        prop_assert!(r.released_at(id) > releases, "node {} shrank unmarked", id);
                    }
                }
            }
            // Ending a hold counts the release and shows placers the real usage.
            let releases = r.releases();
            for id in opened {
                r.end_hold(id);
                prop_assert!(r.released_at(id) > releases, "node {} ended unmarked", id);
                prop_assert_eq!(r.placement_usage(id), r.usage_of(id));
            }
            prop_assert_eq!(r.pending_len(), 0);
            prop_assert_eq!(r.tables(), &state_from(&h, &[12, 12, 12], &[]));
            // Usage index equals a rebuild.
            let mut fresh = r.clone();
            fresh.rebuild_usage();
            prop_assert_eq!(&r.usage, &fresh.usage);
        }

        #[test]
        fn anti_entropy_ships_exactly_what_is_missing(
            h in arb_history(),
            cuts in prop::collection::vec(0usize..13, 3),
        ) {
            let limits = ReplicaLimits { log_per_actor: 100, pending_per_actor: 100, hold_releases: false };
            let mut full = Replica::new(Tables::default(), limits);
            for op in h.iter().flatten() {
                full.receive(op.clone());
            }
            let mut lagging = Replica::new(state_from(&h, &cuts, &[]), limits);
            let ops = full.missing_for(lagging.tables().clock(), 1000).unwrap();
            for op in ops {
                prop_assert_eq!(lagging.receive(op), Received::Applied);
            }
            prop_assert_eq!(lagging.tables(), full.tables());
        }
    }

    #[test]
    fn validate_op_checks_the_next_dot_only() {
        let mut t = Tables::default();
        let op = |n| {
            Op::new(
                Dot::new(actor(1), n),
                OpBody::Purge {
                    job: format!("j{n}"),
                    incarnation: 0,
                },
            )
        };
        assert!(t.validate_op(&op(1)).is_ok());
        assert!(t.validate_op(&op(2)).is_err());
        t.apply(op(1));
        assert!(t.validate_op(&op(2)).is_ok());
        assert!(t.validate_op(&op(1)).is_err());
    }

    #[test]
    fn purge_removes_rows_and_blocks_stale_writes() {
        let mut t = Tables::default();
        let st = stamp(1, 1);
        let entry = JobEntry {
            stamp: st.clone(),
            epoch: st.clone(),
            spec: spec("j0", 1),
            stopped: false,
        };
        t.join_body(&OpBody::Job {
            incarnation: 3,
            entry: entry.clone(),
        });
        let id = attempt(0, 3, 0, 1, 1);
        let a = Assignment {
            target: "n1".into(),
            resources: Resources::default(),
            epoch: st,
        };
        t.join_body(&OpBody::Assign {
            id: id.clone(),
            assignment: a.clone(),
        });
        assert!(t.job("j0").is_some());
        t.join_body(&OpBody::Purge {
            job: "j0".into(),
            incarnation: 3,
        });
        assert!(t.job("j0").is_none() && t.assignment(&id).is_none());
        assert!(!t.join_body(&OpBody::Job {
            incarnation: 3,
            entry: entry.clone()
        }));
        assert!(!t.join_body(&OpBody::Assign { id, assignment: a }));
        // A new incarnation is unaffected.
        assert!(t.join_body(&OpBody::Job {
            incarnation: 4,
            entry
        }));
        assert_eq!(t.job("j0").unwrap().0, 4);
    }

    #[test]
    fn lost_loses_to_a_real_outcome_and_to_a_reclaim() {
        let lost = |round| AttemptState::Lost { round };
        let running = |round| AttemptState::Running { round };
        assert!(AttemptState::Exited { code: 0 } > lost(7));
        assert!(AttemptState::Killed > lost(7));
        assert!(lost(0) > running(0));
        assert!(
            running(1) > lost(0),
            "a reclaim outranks the loss it answers"
        );
        assert!(lost(1) > running(1));
        assert!(running(0) > AttemptState::Admitted);
        assert_eq!(running(0).lost(), Some(lost(0)));
        assert_eq!(AttemptState::Admitted.lost(), Some(lost(0)));
        assert_eq!(lost(3).reclaimed(), Some(running(4)));
        assert_eq!(AttemptState::Killed.lost(), None);
        assert!(running(2).is_reclaimed() && !running(0).is_reclaimed());
    }

    #[test]
    fn the_running_incumbent_is_current_whatever_order_the_rows_came_in() {
        let key = attempt(0, 1, 0, 1, 1).slot_key();
        let assign = |n: u32, placer: u8, target: u8, epoch: u64| OpBody::Assign {
            id: attempt(0, 1, 0, n, placer),
            assignment: Assignment {
                target: format!("n{target}").into(),
                resources: Resources::default(),
                epoch: stamp(1, epoch),
            },
        };
        let state = |n: u32, placer: u8, state: AttemptState| OpBody::State {
            id: attempt(0, 1, 0, n, placer),
            state,
        };
        let current = |t: &Tables| t.current_attempt(&key).map(|(id, _)| id.clone());
        let mut t = Tables::default();
        t.join_body(&assign(1, 1, 1, 1));
        t.join_body(&state(1, 1, AttemptState::RUNNING));
        // A replacement placed while n1 looked dead reaches a replica before the loss does.
        t.join_body(&assign(2, 3, 4, 1));
        assert_eq!(
            current(&t),
            Some(attempt(0, 1, 0, 1, 1)),
            "the incumbent runs"
        );
        t.join_body(&state(2, 3, AttemptState::RUNNING));
        assert_eq!(
            current(&t),
            Some(attempt(0, 1, 0, 1, 1)),
            "the oldest that runs"
        );
        // The loss arrives: the replacement is current; a reclaim makes the incumbent so again.
        t.join_body(&state(1, 1, AttemptState::Lost { round: 0 }));
        assert_eq!(current(&t), Some(attempt(0, 1, 0, 2, 3)));
        t.join_body(&state(1, 1, AttemptState::Running { round: 1 }));
        assert_eq!(current(&t), Some(attempt(0, 1, 0, 1, 1)));
        // A new job version wins over whatever runs of the old one.
        t.join_body(&assign(3, 2, 2, 9));
        assert_eq!(current(&t), Some(attempt(0, 1, 0, 3, 2)));
    }

    #[test]
    fn job_type_is_kept() {
        assert_eq!(spec("a", 1).job_type, JobType::Service);
        let _ = ResourceRequest {
            cpu: 1,
            memory: 1,
            disk: 0,
        };
    }
}
