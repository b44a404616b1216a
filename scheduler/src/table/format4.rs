//! Reading snapshot format 4, written before the `nodes` component (`docs/services.md`, §5):
//! the same components, without `nodes` at the end.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::elements::{Assignment, AttemptState, Binding, Health, JobKey, Milestones, SlotFloor};
use super::lattice::{JobMap, Tables};
use super::wire::{TablesOwned, Versions, flat_jobs};
use crate::ids::{AttemptId, SlotKey, VersionVector};

/// The tables as snapshot format 4 encoded them.
#[derive(Deserialize)]
pub(crate) struct TablesV4 {
    #[serde(with = "flat_jobs")]
    jobs: JobMap,
    assignments: BTreeMap<AttemptId, Assignment>,
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
            assignments: t.assignments,
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

/// Test support: `tables` as snapshot format 4 encoded them (format 5 without `nodes`).
#[cfg(test)]
pub(crate) fn tables_v4(t: &Tables) -> Vec<u8> {
    let mut bytes = postcard::to_stdvec(t).expect("encodes");
    // `nodes` is the last field: an empty map encodes as one zero byte.
    assert!(
        t.nodes().next().is_none(),
        "tables_v4 takes tables without nodes"
    );
    assert_eq!(bytes.pop(), Some(0));
    bytes
}
