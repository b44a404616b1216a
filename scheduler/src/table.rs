//! The replicated tables: a join-semilattice ([`Tables`]) and the op-based replica around it
//! that delivers each actor's ops in order, keeps op logs for anti-entropy and maintains
//! derived indexes.
//!
//! # Files
//!
//! - `table/elements.rs` — the rows of each component and the ops that carry them;
//! - `table/lattice.rs` — [`Tables`]: reads, and the join of elements and whole states;
//! - `table/attempts.rs` — the attempt rows' layout in memory, grouped by job;
//! - `table/replica.rs` — in-order delivery, op logs for anti-entropy, change notes;
//! - `table/usage.rs` — what live attempts hold per node and the release holds placers count;
//! - `table/wire.rs` — the tables' encoding on the wire and in snapshots;
//! - `table/format1.rs` — reading snapshots and job records from before the service fields;
//! - `table/format2.rs` — reading snapshots from before running attempts carried a start stamp;
//! - `table/format3.rs` — reading snapshots and job records from before job entries carried
//!   their deployment and version;
//! - `table/format4.rs` — reading snapshots from before the `nodes` component;
//! - `table/nodes.rs` — the `nodes` component's rows;
//! - `table/node_record.rs` — a node's row in the job log.
//!
//! # The lattice
//!
//! | component | key | value and join | single writer |
//! |---|---|---|---|
//! | `jobs` | (job id, incarnation) | [`JobEntry`], last writer wins by [`Stamp`] | the accepting node of each write |
//! | `assignments` | [`AttemptId`] | [`Assignment`], write-once | the placer named in the key |
//! | `states` | [`AttemptId`] | [`AttemptState`], max in its total order (`Running` carries its start stamp) | the target; `Lost` by the coordinator |
//! | `floors` | [`SlotKey`] | [`SlotFloor`], max | the slot's coordinator |
//! | `purged` | (job id, incarnation) | set union (tombstones) | the job's coordinator |
//! | `bindings` | [`AttemptId`] | [`Binding`] (ports picked at admission), write-once (max) | the target |
//! | `health` | [`AttemptId`] | [`Health`] (readiness, note, restart counter), last writer wins by its stamp | the target |
//! | `milestones` | [`AttemptId`] | [`Milestones`] (`settled`, `deadline_missed`), or | the target |
//! | `nodes` | node name | [`NodeRow`]: [`NodeIntent`] (last writer wins by stamp) × [`DrainProgress`] (max) | the intent: the node that accepted the operator's command; the progress: that node itself |
//! | `versions` | (job id, incarnation, deployment [`Stamp`]) | [`VersionEntry`]: the [`VersionRow`] (write-once, max) × [`Rollout`] (done ∪, failed max, promoted ∨, complete ∨); the newest [`MAX_VERSIONS`] per incarnation | the row: the job write that started the deployment; `done`: slot coordinators; `failed`/`complete`: the job's coordinator; `promoted`: the accepting node |
//!
//! Every component is a map of lattices joined pointwise; `purged` and `floors` then filter
//! keys (a purged incarnation loses all its rows, a floor drops older attempts of its slot).
//! The filter depends only on keys and only grows, so join stays commutative, associative and
//! idempotent, and state merge equals the union of the ops both sides have seen. Because every
//! op is a lattice element too, *any* delivery order gives the same table; per-actor in-order
//! delivery is enforced anyway because the version vector must mean "all ops up to n", which
//! is what anti-entropy compares.

#[cfg(doc)]
use crate::ids::{AttemptId, SlotKey, Stamp};

mod attempts;
mod elements;
mod format1;
mod format2;
mod format3;
mod format4;
mod lattice;
mod node_record;
mod nodes;
mod replica;
mod usage;
mod wire;

pub use elements::{
    Assignment, AttemptState, Binding, DeploymentKey, Failure, Health, HealthStatus, JobEntry,
    JobKey, MAX_HEALTH_NOTE, MergeError, Milestones, NODE_OP_JOB, Op, OpBody, OpOrderError,
    Rollout, SlotFloor, SlotSet, VersionEntry, VersionRow, clip_note,
};
#[cfg(test)]
pub(crate) use format1::encode as format1_encode;
pub(crate) use format1::{JobRowsV1, TablesV1};
pub(crate) use format2::TablesV2;
#[cfg(test)]
pub(crate) use format2::tables_v2;
#[cfg(test)]
pub(crate) use format3::{JobEntryV3, entry_v3, tables_v3};
pub(crate) use format3::{JobRowsV3, TablesV3};
pub(crate) use format4::TablesV4;
#[cfg(test)]
pub(crate) use format4::tables_v4;
pub use lattice::{MAX_VERSIONS, Tables};
pub use node_record::{decode_node_record, encode_node_record};
pub use nodes::{DrainProgress, DrainSpec, NodeIntent, NodeRow};
pub(crate) use replica::{Received, Replica, ReplicaLimits, Touch};

#[cfg(test)]
mod tests;
