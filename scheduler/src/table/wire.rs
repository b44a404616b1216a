//! [`Tables`] on the wire and in snapshots: the components as separate fields, in the
//! order and with the bytes they had when each was its own map (`assignments` and `states`
//! are two sorted maps; an attempt row contributes to each component it has), the jobs
//! table as one flat map keyed by `(id, incarnation)`, then `bindings` (added with
//! snapshot format 2, `docs/services.md`), `health` (format 3), then `milestones` and
//! `versions` (format 4, which also appended three fields to every job entry), then `nodes`
//! (format 5).

use std::collections::{BTreeMap, BTreeSet};

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::attempts::{AttemptRow, Attempts};
use super::elements::{
    Assignment, AttemptState, Binding, Health, JobKey, Milestones, SlotFloor, VersionEntry,
};
use super::lattice::{JobMap, Tables};
use super::nodes::NodeRow;
use crate::ids::{AttemptId, Name, SlotKey, Stamp, VersionVector};

/// The `versions` component as it is encoded.
pub(super) type Versions = BTreeMap<JobKey, BTreeMap<Stamp, VersionEntry>>;

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
        flat_jobs::serialize(self.0, serializer)
    }
}

/// The components as they are encoded. `A` is the assignments (old formats wrote them
/// without the target's generation) and `N` the nodes (`()` for format 4, which ends before
/// them: postcard writes nothing for a unit).
#[derive(Serialize)]
#[serde(rename = "Tables")]
struct TablesRef<'a, A, N> {
    jobs: Jobs<'a>,
    assignments: A,
    states: Column<'a, AttemptState>,
    floors: &'a BTreeMap<SlotKey, SlotFloor>,
    purged: &'a BTreeSet<JobKey>,
    clock: &'a VersionVector,
    bindings: Column<'a, Binding>,
    health: Column<'a, Health>,
    milestones: Column<'a, Milestones>,
    versions: &'a Versions,
    nodes: N,
}

impl<'a, A, N> TablesRef<'a, A, N> {
    fn of(t: &'a Tables, assignments: A, nodes: N) -> Self {
        TablesRef {
            jobs: Jobs(&t.jobs),
            assignments,
            states: Column {
                rows: &t.attempts,
                get: |r| r.state.as_ref(),
            },
            floors: &t.floors,
            purged: &t.purged,
            clock: &t.clock,
            bindings: Column {
                rows: &t.attempts,
                get: |r| r.binding.as_deref(),
            },
            health: Column {
                rows: &t.attempts,
                get: |r| r.health.as_deref(),
            },
            milestones: Column {
                rows: &t.attempts,
                get: |r| (!r.marks.is_empty()).then_some(&r.marks),
            },
            versions: &t.versions,
            nodes,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename = "Tables")]
pub(super) struct TablesOwned {
    #[serde(with = "flat_jobs")]
    pub(super) jobs: JobMap,
    pub(super) assignments: BTreeMap<AttemptId, Assignment>,
    pub(super) states: BTreeMap<AttemptId, AttemptState>,
    pub(super) floors: BTreeMap<SlotKey, SlotFloor>,
    pub(super) purged: BTreeSet<JobKey>,
    pub(super) clock: VersionVector,
    pub(super) bindings: BTreeMap<AttemptId, Binding>,
    pub(super) health: BTreeMap<AttemptId, Health>,
    pub(super) milestones: BTreeMap<AttemptId, Milestones>,
    pub(super) versions: Versions,
    pub(super) nodes: BTreeMap<Name, NodeRow>,
}

impl Serialize for Tables {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let assignments: Column<'_, Assignment> = Column {
            rows: &self.attempts,
            get: |r| r.assignment.as_ref(),
        };
        TablesRef::of(self, assignments, &self.nodes).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Tables {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(TablesOwned::deserialize(deserializer)?.into())
    }
}

impl From<TablesOwned> for Tables {
    fn from(t: TablesOwned) -> Self {
        let mut attempts = Attempts::default();
        for (id, a) in t.assignments {
            attempts.entry(&id).assignment = Some(a);
        }
        for (id, state) in t.states {
            attempts.entry(&id).state = Some(state);
        }
        for (id, binding) in t.bindings {
            attempts.entry(&id).binding = Some(Box::new(binding));
        }
        for (id, health) in t.health {
            attempts.entry(&id).health = Some(Box::new(health));
        }
        for (id, marks) in t.milestones {
            attempts.entry(&id).marks = marks;
        }
        let mut versions = t.versions;
        versions.retain(|_, m| !m.is_empty());
        let mut nodes = t.nodes;
        nodes.retain(|_, r| !r.is_empty());
        Tables {
            nodes,
            jobs: t.jobs,
            attempts,
            floors: t.floors,
            purged: t.purged,
            clock: t.clock,
            versions,
        }
    }
}

/// The jobs table on the wire and in snapshots: one flat map keyed by `(id, incarnation)`,
/// as before the in-memory table was nested by id.
pub(super) mod flat_jobs {
    use std::collections::BTreeMap;

    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::table::elements::{JobEntry, JobKey};
    use crate::table::lattice::{JobMap, sorted_jobs};

    pub(in crate::table) fn serialize<S: Serializer>(
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

    pub(in crate::table) fn deserialize<'de, D: Deserializer<'de>>(
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

/// Test support: `t` as snapshot format 4 encoded it (`format4::tables_v4`): the
/// components of format 5 but `nodes`, with assignments without the target's generation.
#[cfg(test)]
pub(super) fn encode_v4(t: &Tables) -> Vec<u8> {
    postcard::to_stdvec(&TablesRef::of(t, super::format4::old_assignments(t), ())).expect("encodes")
}
