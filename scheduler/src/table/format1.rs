//! Reading what was written before the job spec gained its service fields (`docs/services.md`):
//! snapshot format 1's tables and the job records of that time, whose specs have no `ports`,
//! `checks`, `service`, `tags` or `update`. They are converted on read, with those empty; their
//! attempt states are format 2's (`format2.rs`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::elements::{JobEntry, JobKey, SlotFloor};
use super::format2::AttemptStateV2;
use super::format4::{AssignmentV4, assignments_v4};
use super::lattice::{JobMap, Tables};
use super::wire::TablesOwned;
use crate::ids::{AttemptId, SlotKey, Stamp, VersionVector};
use crate::spec::{
    Constraint, DisconnectPolicy, JobSpec, JobType, PlacementStrategy, ResourceRequest,
    RestartPolicy,
};

/// [`JobSpec`] as it was encoded before the service fields: the same fields in the same order.
#[derive(Deserialize)]
struct JobSpecV1 {
    id: String,
    job_type: JobType,
    count: u32,
    command: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    resources: ResourceRequest,
    constraints: Vec<Constraint>,
    distinct_hosts: bool,
    placement: PlacementStrategy,
    restart: RestartPolicy,
    retries: u32,
    priority: u32,
    disconnect: DisconnectPolicy,
    user: Option<String>,
}

impl From<JobSpecV1> for JobSpec {
    fn from(v: JobSpecV1) -> Self {
        JobSpec {
            id: v.id,
            job_type: v.job_type,
            count: v.count,
            command: v.command,
            args: v.args,
            env: v.env,
            workdir: v.workdir,
            resources: v.resources,
            constraints: v.constraints,
            distinct_hosts: v.distinct_hosts,
            placement: v.placement,
            restart: v.restart,
            retries: v.retries,
            priority: v.priority,
            disconnect: v.disconnect,
            user: v.user,
            ports: Vec::new(),
            checks: Vec::new(),
            service: None,
            tags: Vec::new(),
            update: None,
        }
    }
}

/// [`JobEntry`] with a format-1 spec.
#[derive(Deserialize)]
pub(crate) struct JobEntryV1 {
    stamp: Stamp,
    epoch: Stamp,
    spec: JobSpecV1,
    stopped: bool,
}

impl From<JobEntryV1> for JobEntry {
    fn from(v: JobEntryV1) -> Self {
        JobEntry {
            deployment: v.epoch.clone(),
            stamp: v.stamp,
            epoch: v.epoch,
            spec: v.spec.into(),
            stopped: v.stopped,
            version: 1,
            skip_canary: false,
        }
    }
}

/// The tables as snapshot format 1 encoded them (no `bindings`, format-1 specs).
#[derive(Deserialize)]
pub(crate) struct TablesV1 {
    jobs: BTreeMap<JobKey, JobEntryV1>,
    assignments: BTreeMap<AttemptId, AssignmentV4>,
    states: BTreeMap<AttemptId, AttemptStateV2>,
    floors: BTreeMap<SlotKey, SlotFloor>,
    purged: BTreeSet<JobKey>,
    clock: VersionVector,
}

impl From<TablesV1> for Tables {
    fn from(t: TablesV1) -> Self {
        let mut jobs = JobMap::default();
        for ((id, inc), e) in t.jobs {
            // Sorted by (id, incarnation): each list comes out sorted.
            jobs.entry(id.into()).or_default().push((inc, e.into()));
        }
        TablesOwned {
            jobs,
            assignments: assignments_v4(t.assignments),
            states: t.states.into_iter().map(|(id, s)| (id, s.into())).collect(),
            floors: t.floors,
            purged: t.purged,
            clock: t.clock,
            bindings: BTreeMap::new(),
            health: BTreeMap::new(),
            milestones: BTreeMap::new(),
            versions: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
        .into()
    }
}

/// A job record (`JobRows`) as written before the service fields: `(incarnation, entry)`.
#[derive(Deserialize)]
pub(crate) struct JobRowsV1 {
    pub(crate) rows: Vec<(u64, JobEntryV1)>,
}

/// Test support: the format-1 encodings, written the way the code before the service fields
/// wrote them (a spec without service fields encodes as format 1 plus five empty fields).
#[cfg(test)]
pub(crate) mod encode {
    use serde::{Serialize, Serializer};

    use super::super::lattice::sorted_jobs;
    use super::*;

    struct SpecV1<'a>(&'a JobSpec);

    impl Serialize for SpecV1<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let v = self.0;
            assert!(v.ports.is_empty() && v.checks.is_empty() && v.update.is_none());
            (
                (&v.id, v.job_type, v.count, &v.command, &v.args, &v.env),
                (&v.workdir, &v.resources, &v.constraints, v.distinct_hosts),
                (
                    &v.placement,
                    &v.restart,
                    v.retries,
                    v.priority,
                    &v.disconnect,
                ),
                &v.user,
            )
                .serialize(s)
        }
    }

    fn entry(e: &JobEntry) -> impl Serialize + '_ {
        (&e.stamp, &e.epoch, SpecV1(&e.spec), e.stopped)
    }

    /// `tables` as snapshot format 1 encoded them.
    pub(crate) fn tables_v1(t: &Tables) -> Vec<u8> {
        let jobs: Vec<((&str, u64), _)> = sorted_jobs(&t.jobs)
            .into_iter()
            .flat_map(|(id, incs)| {
                incs.iter()
                    .map(move |(inc, e)| ((id.as_str(), *inc), entry(e)))
            })
            .collect();
        let states: BTreeMap<&AttemptId, _> = t
            .states()
            .map(|(id, s)| (id, super::super::format2::state_v2(s)))
            .collect();
        let assignments = crate::table::format4::old_assignments(t);
        let jobs = MapOf(jobs);
        postcard::to_stdvec(&(jobs, assignments, states, &t.floors, &t.purged, &t.clock)).unwrap()
    }

    /// A job record as written before the service fields.
    pub(crate) fn rows_v1(rows: &[(u64, JobEntry)]) -> Vec<u8> {
        let rows: Vec<(u64, _)> = rows.iter().map(|(inc, e)| (*inc, entry(e))).collect();
        postcard::to_stdvec(&(rows,)).unwrap()
    }

    /// A sorted list serialized as a map.
    struct MapOf<K, V>(Vec<(K, V)>);

    impl<K: Serialize, V: Serialize> Serialize for MapOf<K, V> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
        }
    }
}
