//! Reading snapshot format 4, written before the `nodes` component (`docs/services.md`, §5)
//! and before an assignment named the target's generation (`docs/faults.md`): the same
//! components, without `nodes` at the end. [`AssignmentV4`] is the assignment of formats 1
//! to 4.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_gossip::Resources;

use super::elements::{Assignment, AttemptState, Binding, Health, JobKey, Milestones, SlotFloor};
use super::lattice::{JobMap, Tables};
use super::wire::{TablesOwned, Versions, flat_jobs};
use crate::ids::{AttemptId, Name, SlotKey, Stamp, VersionVector};

/// [`Assignment`] as formats 1 to 4 encoded it: without the target's generation, which reads
/// as 0 (unknown: any down mark of the target condemns the attempt, as it did then).
#[derive(Serialize, Deserialize)]
pub(crate) struct AssignmentV4 {
    target: Name,
    resources: Resources,
    epoch: Stamp,
}

impl From<AssignmentV4> for Assignment {
    fn from(a: AssignmentV4) -> Self {
        Assignment {
            target: a.target,
            resources: a.resources,
            epoch: a.epoch,
            generation: 0,
        }
    }
}

impl From<&Assignment> for AssignmentV4 {
    fn from(a: &Assignment) -> Self {
        AssignmentV4 {
            target: a.target.clone(),
            resources: a.resources,
            epoch: a.epoch.clone(),
        }
    }
}

/// Old assignments read as current ones.
pub(crate) fn assignments_v4(
    old: BTreeMap<AttemptId, AssignmentV4>,
) -> BTreeMap<AttemptId, Assignment> {
    old.into_iter().map(|(id, a)| (id, a.into())).collect()
}

/// Test support: the assignments of `t` as formats 1 to 4 encoded them.
#[cfg(test)]
pub(crate) fn old_assignments(t: &Tables) -> BTreeMap<&AttemptId, AssignmentV4> {
    t.assignments().map(|(id, a)| (id, a.into())).collect()
}

/// The tables as snapshot format 4 encoded them.
#[derive(Deserialize)]
pub(crate) struct TablesV4 {
    #[serde(with = "flat_jobs")]
    jobs: JobMap,
    assignments: BTreeMap<AttemptId, AssignmentV4>,
    states: BTreeMap<AttemptId, AttemptState>,
    floors: BTreeMap<SlotKey, SlotFloor>,
    purged: BTreeSet<JobKey>,
    clock: VersionVector,
    bindings: BTreeMap<AttemptId, Binding>,
    health: BTreeMap<AttemptId, Health>,
    milestones: BTreeMap<AttemptId, Milestones>,
    versions: Versions,
}

impl From<TablesV4> for Tables {
    fn from(t: TablesV4) -> Self {
        TablesOwned {
            jobs: t.jobs,
            assignments: assignments_v4(t.assignments),
            states: t.states,
            floors: t.floors,
            purged: t.purged,
            clock: t.clock,
            bindings: t.bindings,
            health: t.health,
            milestones: t.milestones,
            versions: t.versions,
            nodes: BTreeMap::new(),
        }
        .into()
    }
}

/// Test support: `tables` as snapshot format 4 encoded them (format 5 without `nodes` and
/// without the assignments' generations).
#[cfg(test)]
pub(crate) fn tables_v4(t: &Tables) -> Vec<u8> {
    assert!(
        t.nodes().next().is_none(),
        "tables_v4 takes tables without nodes"
    );
    super::wire::encode_v4(t)
}
