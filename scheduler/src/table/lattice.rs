//! The replicated state as a join-semilattice ([`Tables`]): its reads and the join of every
//! element and of whole states (the laws are in the module doc of [`crate::table`]).

use std::collections::{BTreeMap, BTreeSet};

use crdts::{CmRDT, CvRDT};

use super::attempts::Attempts;
use super::elements::{
    Assignment, AttemptState, Binding, DeploymentKey, Health, JobEntry, JobKey, MergeError,
    Milestones, Op, OpBody, OpOrderError, Rollout, SlotFloor, VersionEntry, VersionRow,
};
use super::nodes::NodeRow;
use crate::ids::{AttemptId, Name, SlotKey, Stamp, VersionVector};

/// Versions kept per job incarnation: the newest by deployment stamp (top-k of a union is a
/// join, so dropping the rest keeps the tables a lattice).
pub const MAX_VERSIONS: usize = 10;

/// The live incarnations of one job id, sorted (almost always one: a `BTreeMap` here would
/// allocate a whole node of entries per job).
pub(super) type Incarnations = Vec<(u64, JobEntry)>;

/// The replicated state: see the module doc. On the wire and in snapshots it is the seven
/// components of the module doc, `assignments` and `states` as two sorted maps (see
/// `wire.rs`), whatever the in-memory layout.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tables {
    /// Job id → writes by incarnation. Nested so a lookup by id borrows the `&str` instead of
    /// building a `(String, u64)` key; on the wire it is the flat `(id, incarnation)` map,
    /// sorted. A hash map: every replica looks a job up for every op it applies, and a tree
    /// search compared the id with a dozen cold heap strings; whatever iterates it sorts first.
    pub(super) jobs: JobMap,
    /// The `assignments` and `states` components, by attempt. Every replica applies every op
    /// of the cluster: with two trees, each op walked two cold paths. Grouped by job
    /// (`attempts.rs`).
    pub(super) attempts: Attempts,
    pub(super) floors: BTreeMap<SlotKey, SlotFloor>,
    pub(super) purged: BTreeSet<JobKey>,
    pub(super) clock: VersionVector,
    /// The `versions` component: job versions and their rollouts, by (job, incarnation,
    /// deployment), at most [`MAX_VERSIONS`] per incarnation (`docs/services.md`, §4).
    pub(super) versions: BTreeMap<JobKey, BTreeMap<Stamp, VersionEntry>>,
    /// The `nodes` component: intents and drain progress by node name (`docs/services.md`,
    /// §5). Never purged.
    pub(super) nodes: BTreeMap<Name, NodeRow>,
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

    /// The ports an attempt's target bound for it, once it wrote them.
    #[must_use]
    pub fn binding(&self, id: &AttemptId) -> Option<&Binding> {
        self.attempts.get(id)?.binding.as_deref()
    }

    /// Every binding.
    pub fn bindings(&self) -> impl Iterator<Item = (&AttemptId, &Binding)> {
        self.attempts
            .iter()
            .filter_map(|(id, r)| Some((id, r.binding.as_deref()?)))
    }

    /// The health an attempt's target last wrote for it (none: no check has reported, or the
    /// job has no checks).
    #[must_use]
    pub fn health(&self, id: &AttemptId) -> Option<&Health> {
        self.attempts.get(id)?.health.as_deref()
    }

    /// Every health row.
    pub fn healths(&self) -> impl Iterator<Item = (&AttemptId, &Health)> {
        self.attempts
            .iter()
            .filter_map(|(id, r)| Some((id, r.health.as_deref()?)))
    }

    /// The rollout marks an attempt's target set (none yet: both false).
    #[must_use]
    pub fn milestones(&self, id: &AttemptId) -> Milestones {
        self.attempts.get(id).map(|r| r.marks).unwrap_or_default()
    }

    /// Every attempt with a rollout mark.
    pub fn all_milestones(&self) -> impl Iterator<Item = (&AttemptId, Milestones)> {
        self.attempts
            .iter()
            .filter(|(_, r)| !r.marks.is_empty())
            .map(|(id, r)| (id, r.marks))
    }

    /// One deployment's version row and rollout.
    #[must_use]
    pub fn version(
        &self,
        job: &str,
        incarnation: u64,
        deployment: &Stamp,
    ) -> Option<&VersionEntry> {
        self.versions
            .get(&(job.to_string(), incarnation))?
            .get(deployment)
    }

    /// The kept versions of a job incarnation, oldest deployment first.
    pub fn versions<'a>(
        &'a self,
        job: &'a str,
        incarnation: u64,
    ) -> impl DoubleEndedIterator<Item = (&'a Stamp, &'a VersionEntry)> + 'a {
        self.versions
            .get(&(job.to_string(), incarnation))
            .into_iter()
            .flat_map(|m| m.iter())
    }

    /// Every version row and rollout, by (job, incarnation), then deployment.
    pub fn all_versions(&self) -> impl Iterator<Item = ((&str, u64, &Stamp), &VersionEntry)> {
        self.versions
            .iter()
            .flat_map(|((j, i), m)| m.iter().map(move |(d, v)| ((j.as_str(), *i, d), v)))
    }

    /// A node's intent and drain progress (none: no operator ever touched it).
    #[must_use]
    pub fn node(&self, name: &str) -> Option<&NodeRow> {
        self.nodes.get(name)
    }

    /// Every node row, by name.
    pub fn nodes(&self) -> impl Iterator<Item = (&Name, &NodeRow)> {
        self.nodes.iter()
    }

    /// Whether the operator keeps new work off `name` (ineligible or draining).
    #[must_use]
    pub fn refuses_work(&self, name: &str) -> bool {
        self.nodes.get(name).is_some_and(NodeRow::refuses_work)
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
    /// (`docs/faults.md`, "The incumbent wins"): the attempt whose process runs (`Running` in
    /// any round: never lost, or reclaimed after a loss) and started first, by its `since`
    /// stamp, then by attempt key, among those placed for the same job version as the newest
    /// attempt; when none runs, the newest attempt. Every other attempt of the slot is
    /// superseded. A copy that runs thus never loses to a replacement placed while its node
    /// looked dead, whatever order the replicas learn the replacement and the loss in, nor to
    /// a copy that a coordinator with a stale view placed under the same or a lower attempt
    /// number (simulator finding 9); a new job version always wins (its attempts are newer and
    /// the old ones are of another version). `keep_newest` (a job that keeps replacements)
    /// makes the newest attempt current whatever runs.
    pub fn current_attempt<'a>(
        &'a self,
        slot: &SlotKey,
    ) -> Option<(&'a AttemptId, &'a Assignment)> {
        self.current_attempt_below(slot, u32::MAX)
    }

    /// [`Tables::current_attempt`] among the slot's attempts numbered below `below`: the
    /// attempt a placement numbered `below` replaced, as its placer saw the slot before it.
    pub fn current_attempt_below<'a>(
        &'a self,
        slot: &SlotKey,
        below: u32,
    ) -> Option<(&'a AttemptId, &'a Assignment)> {
        let newest = self
            .slot_attempts(slot)
            .rfind(|(id, _)| id.attempt < below)?;
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
            .filter(|(id, _)| id.attempt < below)
            .filter_map(|(id, r)| {
                let a = r.assignment.as_ref()?;
                let since = r.state.as_ref()?.running_since()?;
                (a.epoch == newest.1.epoch).then_some((since, id, a))
            })
            .min_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)))
            .map(|(_, id, a)| (id, a));
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
    pub(super) fn states(&self) -> impl Iterator<Item = (&AttemptId, &AttemptState)> {
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
            + self
                .attempts
                .values()
                .map(|r| usize::from(r.binding.is_some()) + usize::from(r.health.is_some()))
                .sum::<usize>()
            + self.floors.len()
            + self.purged.len()
            + self.versions.len()
            + self.nodes.len()
    }

    /// Whether the tables dropped attempt `id` for good: its job incarnation is purged, or
    /// its slot's floor is above it. No op or state for it is taken again and no view shows
    /// it, so its target may delete what it kept on disk for it (the agent's task directory
    /// collection, `docs/executor.md`).
    #[must_use]
    pub fn is_collected(&self, id: &AttemptId) -> bool {
        self.is_purged(&id.job, id.incarnation)
            || (!self.floors.is_empty()
                && self
                    .floors
                    .get(&id.slot_key())
                    .is_some_and(|f| id.attempt < f.below))
    }

    fn is_purged(&self, job: &str, incarnation: u64) -> bool {
        // Avoid allocating the key on the hot path when there are no tombstones.
        !self.purged.is_empty() && self.purged.contains(&(job.to_string(), incarnation))
    }

    /// Join one lattice element into the tables. Returns whether anything changed.
    pub(crate) fn join_body(&mut self, body: &OpBody) -> bool {
        match body {
            OpBody::Job { incarnation, entry } => self.join_job(*incarnation, entry),
            OpBody::Assign { id, assignment } => self.join_assignment(id, assignment),
            OpBody::State { id, state } => self.join_state(id, state),
            OpBody::Floor { slot, floor } => self.join_floor(slot, *floor),
            OpBody::Purge { job, incarnation } => self.join_purge(job, *incarnation),
            OpBody::Binding { id, binding } => self.join_binding(id, binding),
            OpBody::Health { id, health } => self.join_health(id, health),
            OpBody::Milestones { id, marks } => self.join_milestones(id, *marks),
            OpBody::Rollout {
                job,
                incarnation,
                deployment,
                rollout,
            } => {
                let entry = VersionEntry {
                    row: None,
                    rollout: normal(rollout),
                };
                self.join_version((job.clone(), *incarnation, deployment.clone()), &entry)
            }
            OpBody::Node { node, row } => {
                if row.is_empty() {
                    return false;
                }
                self.nodes.entry(node.clone()).or_default().join(row)
            }
        }
    }

    fn join_milestones(&mut self, id: &AttemptId, marks: Milestones) -> bool {
        // No empty rows: they would not survive an encoding.
        if marks.is_empty() || self.is_collected(id) {
            return false;
        }
        self.attempts.entry(id).marks.join(marks)
    }

    /// Join one version entry, keeping the newest [`MAX_VERSIONS`] of its incarnation.
    fn join_version(&mut self, key: DeploymentKey, entry: &VersionEntry) -> bool {
        let (job, incarnation, deployment) = key;
        if self.is_purged(&job, incarnation) {
            return false;
        }
        let kept = self.versions.entry((job, incarnation)).or_default();
        if !kept.contains_key(&deployment)
            && kept.len() >= MAX_VERSIONS
            && kept
                .first_key_value()
                .is_some_and(|(oldest, _)| deployment < *oldest)
        {
            return false;
        }
        let changed = kept.entry(deployment).or_default().join(entry);
        while kept.len() > MAX_VERSIONS {
            kept.pop_first();
        }
        changed
    }

    fn join_health(&mut self, id: &AttemptId, h: &Health) -> bool {
        if self.is_collected(id) {
            return false;
        }
        let row = self.attempts.entry(id);
        match &mut row.health {
            // `Health`'s order starts with its stamp: last writer wins, the rest breaks ties.
            Some(cur) if **cur >= *h => false,
            cur => {
                *cur = Some(Box::new(h.clone()));
                true
            }
        }
    }

    fn join_binding(&mut self, id: &AttemptId, b: &Binding) -> bool {
        if self.is_collected(id) {
            return false;
        }
        let row = self.attempts.entry(id);
        match &mut row.binding {
            Some(cur) if **cur >= *b => false,
            cur => {
                *cur = Some(Box::new(b.clone()));
                true
            }
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
        let changed = match incs.binary_search_by_key(&incarnation, |(inc, _)| *inc) {
            Ok(k) if !entry.wins_over(&incs[k].1) => false,
            Ok(k) => {
                incs[k].1 = entry.clone();
                true
            }
            Err(k) => {
                incs.insert(k, (incarnation, entry.clone()));
                true
            }
        };
        // The write that started a deployment also carries its version row, whether or not
        // it wins the jobs table (a concurrent submission is still a version).
        let version = entry.starts_deployment().then(|| VersionEntry {
            row: Some(Box::new(VersionRow {
                number: entry.version,
                epoch: entry.epoch.clone(),
                spec: entry.spec.clone(),
                skip_canary: entry.skip_canary,
            })),
            rollout: Rollout::default(),
        });
        let key = (entry.spec.id.clone(), incarnation, entry.deployment.clone());
        let grew = version.is_some_and(|v| self.join_version(key, &v));
        changed || grew
    }

    fn join_assignment(&mut self, id: &AttemptId, a: &Assignment) -> bool {
        self.join_assignment_from(id, a).is_some()
    }

    /// [`Tables::join_assignment`], returning the replaced assignment (if any) when it
    /// changed: one tree search, where a lookup before and after the join took three.
    pub(super) fn join_assignment_from(
        &mut self,
        id: &AttemptId,
        a: &Assignment,
    ) -> Option<Option<Assignment>> {
        if self.is_collected(id) {
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
    pub(super) fn join_state_row(
        &mut self,
        id: &AttemptId,
        s: &AttemptState,
    ) -> Option<(bool, Option<&Assignment>)> {
        if self.is_collected(id) || *s == AttemptState::Proposed {
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
        self.versions.remove(&(job.to_string(), incarnation));
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
        let bindings = other.bindings().map(|(id, b)| OpBody::Binding {
            id: id.clone(),
            binding: b.clone(),
        });
        let healths = other.healths().map(|(id, h)| OpBody::Health {
            id: id.clone(),
            health: h.clone(),
        });
        let marks = other
            .all_milestones()
            .map(|(id, marks)| OpBody::Milestones {
                id: id.clone(),
                marks,
            });
        let nodes = other.nodes.iter().map(|(node, row)| OpBody::Node {
            node: node.clone(),
            row: row.clone(),
        });
        purges
            .chain(floors)
            .chain(jobs)
            .chain(assigns)
            .chain(states)
            .chain(bindings)
            .chain(healths)
            .chain(marks)
            .chain(nodes)
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
        // Version rows have no op of their own (job writes carry them): join them directly.
        for ((job, incarnation, deployment), entry) in other.all_versions() {
            let entry = VersionEntry {
                row: entry.row.clone(),
                rollout: normal(&entry.rollout),
            };
            self.join_version((job.to_string(), incarnation, deployment.clone()), &entry);
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
    /// business (the replica buffers): joining out of order is harmless for the content but
    /// would make the version vector claim ops it does not have.
    fn apply(&mut self, op: Op) {
        if op.dot.counter > self.clock.get(&op.dot.actor) {
            self.join_body(&op.body);
            self.clock.apply(op.dot);
        }
    }
}

/// `rollout` with its slot set in normal form (a peer's may not be).
fn normal(rollout: &Rollout) -> Rollout {
    let mut out = rollout.clone();
    if !out.done.is_normal() {
        let mut done = crate::table::SlotSet::default();
        done.union(&rollout.done);
        out.done = done;
    }
    out
}

/// Job id → its live incarnations. Looked up; iterated only through [`sorted_jobs`]. Ids are
/// inline [`Name`]s: sorting them (every view, and the simulator's checker every second on
/// every replica) then compares bytes already in cache.
#[allow(clippy::disallowed_types)]
pub(super) type JobMap = rustc_hash::FxHashMap<Name, Incarnations>;

/// The jobs in id order.
pub(super) fn sorted_jobs(jobs: &JobMap) -> Vec<(&Name, &Incarnations)> {
    let mut v: Vec<(&Name, &Incarnations)> = jobs.iter().collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    v
}
