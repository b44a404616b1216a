//! The attempt rows of the tables, grouped by job.
//!
//! Every replica applies every op of the cluster, and most ops find or create one attempt row.
//! In one tree keyed by [`AttemptId`] (64-byte keys, 10,000 rows in the 200-node simulator
//! bench) each of those searches walked four or five cold levels of 11-key nodes, about a
//! tenth of the bench's profile. Here a hash of the job id picks the job's own small tree:
//! one cold bucket, then a tree of that incarnation's few attempts. The job id is hashed
//! rather than compared: the same reasoning as the jobs table beside it.
//!
//! Whatever iterates every row gets them in [`AttemptId`] order, as from the one tree, so
//! snapshots, the wire and views are unchanged; that sorts the groups first, which only state
//! merges, snapshots and restores do.

use std::collections::BTreeMap;
use std::fmt;

use super::elements::{Assignment, AttemptState, Binding, Health, Milestones};
use crate::ids::{AttemptId, Name, SlotKey};

/// One attempt's rows of the `assignments`, `states`, `bindings` and `health` components, kept
/// together: applying an op and reading the attempt afterwards (its target, whether it is
/// live) then search one tree instead of four. At least one of them is set. The binding and
/// the health are boxed: most attempts belong to jobs without ports or checks.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct AttemptRow {
    pub(super) assignment: Option<Assignment>,
    pub(super) state: Option<AttemptState>,
    pub(super) binding: Option<Box<Binding>>,
    pub(super) health: Option<Box<Health>>,
    /// The `milestones` component (both false: none written).
    pub(super) marks: Milestones,
}

/// One job incarnation's attempts, in [`AttemptId`] order.
type Rows = BTreeMap<AttemptId, AttemptRow>;

/// Job id → its incarnations with attempt rows, sorted by incarnation (almost always one).
/// Never empty: a group is removed with its last row, so equal tables compare equal.
#[allow(clippy::disallowed_types)] // looked up; iterated only through `groups`, which sorts
type ByJob = rustc_hash::FxHashMap<Name, Vec<(u64, Rows)>>;

/// The attempt rows: a map from [`AttemptId`] to [`AttemptRow`] (see the module doc).
#[derive(Clone, Default, PartialEq)]
pub(super) struct Attempts {
    by_job: ByJob,
}

impl Attempts {
    /// The rows of one job incarnation.
    fn rows(&self, job: &str, incarnation: u64) -> Option<&Rows> {
        let incs = self.by_job.get(job)?;
        let k = incs
            .binary_search_by_key(&incarnation, |(inc, _)| *inc)
            .ok()?;
        Some(&incs[k].1)
    }

    /// The row of `id`.
    pub(super) fn get(&self, id: &AttemptId) -> Option<&AttemptRow> {
        self.rows(&id.job, id.incarnation)?.get(id)
    }

    /// The row of `id`, created empty when absent (the caller sets a component).
    pub(super) fn entry(&mut self, id: &AttemptId) -> &mut AttemptRow {
        if !self.by_job.contains_key(id.job.as_str()) {
            self.by_job.insert(id.job.clone(), Vec::new());
        }
        let incs = self
            .by_job
            .get_mut(id.job.as_str())
            .expect("inserted above");
        let k = match incs.binary_search_by_key(&id.incarnation, |(inc, _)| *inc) {
            Ok(k) => k,
            Err(k) => {
                incs.insert(k, (id.incarnation, Rows::new()));
                k
            }
        };
        let rows = &mut incs[k].1;
        // `entry` would clone the key for every lookup; rows are looked up far more often
        // than created.
        if !rows.contains_key(id) {
            rows.insert(id.clone(), AttemptRow::default());
        }
        rows.get_mut(id).expect("inserted above")
    }

    /// Removes the row of `id`, if any.
    pub(super) fn remove(&mut self, id: &AttemptId) {
        self.remove_where(&id.job, id.incarnation, |rows| {
            rows.remove(id);
        });
    }

    /// Removes every row of one job incarnation.
    pub(super) fn remove_job(&mut self, job: &str, incarnation: u64) {
        self.remove_where(job, incarnation, Rows::clear);
    }

    /// Applies `change` to one incarnation's rows, then drops the group if it emptied.
    fn remove_where(&mut self, job: &str, incarnation: u64, change: impl FnOnce(&mut Rows)) {
        let Some(incs) = self.by_job.get_mut(job) else {
            return;
        };
        let Ok(k) = incs.binary_search_by_key(&incarnation, |(inc, _)| *inc) else {
            return;
        };
        change(&mut incs[k].1);
        if incs[k].1.is_empty() {
            incs.remove(k);
            if incs.is_empty() {
                self.by_job.remove(job);
            }
        }
    }

    /// The rows of one slot, oldest attempt first.
    pub(super) fn slot<'a>(
        &'a self,
        slot: &SlotKey,
    ) -> impl DoubleEndedIterator<Item = (&'a AttemptId, &'a AttemptRow)> + 'a {
        let range = slot.first_attempt()..slot.end_attempt();
        self.rows(&slot.job, slot.incarnation)
            .map(move |rows| rows.range(range))
            .into_iter()
            .flatten()
    }

    /// The rows of one job incarnation, by slot then attempt.
    pub(super) fn job<'a>(
        &'a self,
        job: &str,
        incarnation: u64,
    ) -> impl Iterator<Item = (&'a AttemptId, &'a AttemptRow)> + 'a {
        self.rows(job, incarnation).into_iter().flatten()
    }

    /// Every row, in no particular order (for sums).
    pub(super) fn values(&self) -> impl Iterator<Item = &AttemptRow> {
        self.by_job
            .values()
            .flatten()
            .flat_map(|(_, rows)| rows.values())
    }

    /// Every row, in [`AttemptId`] order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&AttemptId, &AttemptRow)> {
        self.groups().into_iter().flatten()
    }

    /// The groups in [`AttemptId`] order: by incarnation, then job id.
    fn groups(&self) -> Vec<&Rows> {
        let mut groups: Vec<(u64, &Name, &Rows)> = self
            .by_job
            .iter()
            .flat_map(|(job, incs)| incs.iter().map(move |(inc, rows)| (*inc, job, rows)))
            .collect();
        groups.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        groups.into_iter().map(|(_, _, rows)| rows).collect()
    }
}

impl fmt::Debug for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(job: u8, incarnation: u64, slot: u32, attempt: u32, placer: u8) -> AttemptId {
        AttemptId {
            job: format!("j{job}").into(),
            incarnation,
            slot,
            attempt,
            placer: format!("n{placer}").into(),
        }
    }

    fn arb_id() -> impl Strategy<Value = AttemptId> {
        (0u8..4, 0u64..3, 0u32..3, 1u32..4, 0u8..3).prop_map(|(j, i, s, a, p)| id(j, i, s, a, p))
    }

    #[derive(Debug, Clone)]
    enum Step {
        Set(AttemptId),
        Remove(AttemptId),
        RemoveJob(u8, u64),
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => arb_id().prop_map(Step::Set),
            1 => arb_id().prop_map(Step::Remove),
            1 => (0u8..4, 0u64..3).prop_map(|(j, i)| Step::RemoveJob(j, i)),
        ]
    }

    proptest! {
        /// Every query answers as the one tree it replaced would, after any sequence of
        /// writes and removals, and equal contents compare equal.
        #[test]
        fn behaves_as_one_tree(steps in prop::collection::vec(arb_step(), 0..60)) {
            let mut ours = Attempts::default();
            let mut tree: BTreeMap<AttemptId, AttemptRow> = BTreeMap::new();
            for (n, step) in steps.iter().enumerate() {
                match step {
                    Step::Set(id) => {
                        let state = Some(crate::table::AttemptState::Exited { code: n as i32 });
                        ours.entry(id).state.clone_from(&state);
                        tree.entry(id.clone()).or_default().state = state;
                    }
                    Step::Remove(id) => {
                        ours.remove(id);
                        tree.remove(id);
                    }
                    Step::RemoveJob(j, i) => {
                        let job = format!("j{j}");
                        ours.remove_job(&job, *i);
                        tree.retain(|id, _| !(id.job == job && id.incarnation == *i));
                    }
                }
            }
            let all: Vec<_> = ours.iter().collect();
            prop_assert_eq!(&all, &tree.iter().collect::<Vec<_>>());
            prop_assert_eq!(ours.values().count(), tree.len());
            for probe in (0u8..4).flat_map(|j| (0u64..3).map(move |i| (j, i))) {
                let (j, i) = probe;
                let job = format!("j{j}");
                let slot = SlotKey { job: job.as_str().into(), incarnation: i, slot: 1 };
                let expect: Vec<_> =
                    tree.range(slot.first_attempt()..slot.end_attempt()).collect();
                prop_assert_eq!(ours.slot(&slot).collect::<Vec<_>>(), expect.clone());
                prop_assert_eq!(
                    ours.slot(&slot).rev().collect::<Vec<_>>(),
                    expect.into_iter().rev().collect::<Vec<_>>()
                );
                let expect: Vec<_> = tree
                    .iter()
                    .filter(|(id, _)| id.job == job && id.incarnation == i)
                    .collect();
                prop_assert_eq!(ours.job(&job, i).collect::<Vec<_>>(), expect);
                let probe_id = id(j, i, 1, 2, 1);
                prop_assert_eq!(ours.get(&probe_id), tree.get(&probe_id));
            }
            // The same contents built in sorted order compare equal (no empty groups left).
            let mut rebuilt = Attempts::default();
            for (id, row) in &tree {
                *rebuilt.entry(id) = row.clone();
            }
            prop_assert!(rebuilt == ours);
        }
    }
}
