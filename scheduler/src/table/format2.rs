//! Reading what was written before a running attempt carried its start stamp (snapshot
//! formats 1 and 2): their attempt states have `Running { round }` without `since`. They are
//! converted on read with `since` zero, older than every stamped start, which is what they are.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::elements::{AttemptState, Binding, JobKey, SlotFloor};
use super::format3::{JobEntryV3, jobs_v3};
use super::format4::{AssignmentV4, assignments_v4};
use super::lattice::Tables;
use super::wire::TablesOwned;
use crate::ids::{AttemptId, Hlc, SlotKey, VersionVector};

/// [`AttemptState`] as formats 1 and 2 encoded it: the same variants in the same order.
#[derive(Serialize, Deserialize)]
pub(crate) enum AttemptStateV2 {
    Proposed,
    Admitted,
    Running { round: u32 },
    Lost { round: u32 },
    Killed,
    Failed { reason: String },
    Rejected { reason: String },
    Exited { code: i32 },
}

impl From<AttemptStateV2> for AttemptState {
    fn from(v: AttemptStateV2) -> Self {
        match v {
            AttemptStateV2::Proposed => AttemptState::Proposed,
            AttemptStateV2::Admitted => AttemptState::Admitted,
            AttemptStateV2::Running { round } => AttemptState::Running {
                round,
                since: Hlc::default(),
            },
            AttemptStateV2::Lost { round } => AttemptState::Lost { round },
            AttemptStateV2::Killed => AttemptState::Killed,
            AttemptStateV2::Failed { reason } => AttemptState::Failed { reason },
            AttemptStateV2::Rejected { reason } => AttemptState::Rejected { reason },
            AttemptStateV2::Exited { code } => AttemptState::Exited { code },
        }
    }
}

/// The tables as snapshot format 2 encoded them: the current components, format-2 states.
#[derive(Deserialize)]
pub(crate) struct TablesV2 {
    jobs: BTreeMap<JobKey, JobEntryV3>,
    assignments: BTreeMap<AttemptId, AssignmentV4>,
    states: BTreeMap<AttemptId, AttemptStateV2>,
    floors: BTreeMap<SlotKey, SlotFloor>,
    purged: BTreeSet<JobKey>,
    clock: VersionVector,
    bindings: BTreeMap<AttemptId, Binding>,
}

impl From<TablesV2> for Tables {
    fn from(t: TablesV2) -> Self {
        TablesOwned {
            jobs: jobs_v3(t.jobs),
            assignments: assignments_v4(t.assignments),
            states: t.states.into_iter().map(|(id, s)| (id, s.into())).collect(),
            floors: t.floors,
            purged: t.purged,
            clock: t.clock,
            bindings: t.bindings,
            health: BTreeMap::new(),
            milestones: BTreeMap::new(),
            versions: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
        .into()
    }
}

/// Test support: `tables` as snapshot format 2 encoded them.
#[cfg(test)]
pub(crate) fn tables_v2(t: &Tables) -> Vec<u8> {
    let jobs: BTreeMap<JobKey, JobEntryV3> = t
        .jobs()
        .map(|((id, inc), e)| ((id.to_string(), inc), super::format3::entry_v3(e)))
        .collect();
    let states: BTreeMap<&AttemptId, _> = t.states().map(|(id, s)| (id, state_v2(s))).collect();
    let assignments = crate::table::format4::old_assignments(t);
    let bindings: BTreeMap<&AttemptId, &Binding> = t.bindings().collect();
    let parts = (jobs, assignments, states, &t.floors, &t.purged);
    postcard::to_stdvec(&(
        parts.0, parts.1, parts.2, parts.3, parts.4, &t.clock, bindings,
    ))
    .expect("encodes")
}

/// Test support: a state as formats 1 and 2 encoded it.
#[cfg(test)]
pub(crate) fn state_v2(s: &AttemptState) -> AttemptStateV2 {
    match s.clone() {
        AttemptState::Proposed => AttemptStateV2::Proposed,
        AttemptState::Admitted => AttemptStateV2::Admitted,
        AttemptState::Running { round, .. } => AttemptStateV2::Running { round },
        AttemptState::Lost { round } => AttemptStateV2::Lost { round },
        AttemptState::Killed | AttemptState::Drained => AttemptStateV2::Killed,
        AttemptState::Failed { reason } => AttemptStateV2::Failed { reason },
        AttemptState::Rejected { reason } => AttemptStateV2::Rejected { reason },
        AttemptState::Exited { code } => AttemptStateV2::Exited { code },
    }
}
