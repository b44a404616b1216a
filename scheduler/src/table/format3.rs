//! Reading what was written before job entries carried their deployment and version
//! (snapshot formats 2 and 3, and the job records of that time): their entries end at
//! `stopped`. They are converted on read as the first version of a deployment that started
//! with their epoch; format 3 has no `milestones` and `versions` either.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::elements::{AttemptState, Binding, Health, JobEntry, JobKey, SlotFloor};
use super::format4::{AssignmentV4, assignments_v4};
use super::lattice::{JobMap, Tables};
use super::wire::TablesOwned;
use crate::ids::{AttemptId, SlotKey, Stamp, VersionVector};
use crate::spec::JobSpec;

/// [`JobEntry`] as formats 2 and 3 encoded it: the same fields, without the last three.
#[derive(Serialize, Deserialize)]
pub(crate) struct JobEntryV3 {
    pub(crate) stamp: Stamp,
    pub(crate) epoch: Stamp,
    pub(crate) spec: JobSpec,
    pub(crate) stopped: bool,
}

impl From<JobEntryV3> for JobEntry {
    fn from(v: JobEntryV3) -> Self {
        JobEntry {
            deployment: v.epoch.clone(),
            stamp: v.stamp,
            epoch: v.epoch,
            spec: v.spec,
            stopped: v.stopped,
            version: 1,
            skip_canary: false,
        }
    }
}

/// The jobs table of formats 2 and 3: a flat map of old entries, nested as in memory.
pub(super) fn jobs_v3(flat: BTreeMap<JobKey, JobEntryV3>) -> JobMap {
    let mut jobs = JobMap::default();
    for ((id, inc), e) in flat {
        // Sorted by (id, incarnation): each list comes out sorted.
        jobs.entry(id.into()).or_default().push((inc, e.into()));
    }
    jobs
}

/// The tables as snapshot format 3 encoded them.
#[derive(Deserialize)]
pub(crate) struct TablesV3 {
    jobs: BTreeMap<JobKey, JobEntryV3>,
    assignments: BTreeMap<AttemptId, AssignmentV4>,
    states: BTreeMap<AttemptId, AttemptState>,
    floors: BTreeMap<SlotKey, SlotFloor>,
    purged: BTreeSet<JobKey>,
    clock: VersionVector,
    bindings: BTreeMap<AttemptId, Binding>,
    health: BTreeMap<AttemptId, Health>,
}

impl From<TablesV3> for Tables {
    fn from(t: TablesV3) -> Self {
        TablesOwned {
            jobs: jobs_v3(t.jobs),
            assignments: assignments_v4(t.assignments),
            states: t.states,
            floors: t.floors,
            purged: t.purged,
            clock: t.clock,
            bindings: t.bindings,
            health: t.health,
            milestones: BTreeMap::new(),
            versions: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
        .into()
    }
}

/// A job record (`JobRows`) as written before entries carried their deployment.
#[derive(Deserialize)]
pub(crate) struct JobRowsV3 {
    pub(crate) rows: Vec<(u64, JobEntryV3)>,
}

/// Test support: an entry as formats 2 and 3 encoded it.
#[cfg(test)]
pub(crate) fn entry_v3(e: &JobEntry) -> JobEntryV3 {
    JobEntryV3 {
        stamp: e.stamp.clone(),
        epoch: e.epoch.clone(),
        spec: e.spec.clone(),
        stopped: e.stopped,
    }
}

/// Test support: `tables` as snapshot format 3 encoded them.
#[cfg(test)]
pub(crate) fn tables_v3(t: &Tables) -> Vec<u8> {
    let jobs: BTreeMap<JobKey, JobEntryV3> = t
        .jobs()
        .map(|((id, inc), e)| ((id.to_string(), inc), entry_v3(e)))
        .collect();
    let assignments = crate::table::format4::old_assignments(t);
    let states: BTreeMap<&AttemptId, &AttemptState> = t.states().collect();
    let bindings: BTreeMap<&AttemptId, &Binding> = t.bindings().collect();
    let health: BTreeMap<&AttemptId, &Health> = t.healths().collect();
    postcard::to_stdvec(&(
        (jobs, assignments, states, &t.floors, &t.purged),
        (&t.clock, bindings, health),
    ))
    .expect("encodes")
}
