//! Sans-IO scheduler core of Shoal: replicated job and attempt tables, optimistic placement by
//! slot coordinators, admission by target nodes, fencing, repair and garbage collection.
//!
//! The crate never touches a socket, a thread, the wall clock or the OS RNG. Time comes in as
//! [`Millis`] arguments, randomness from the seed given to [`Scheduler::new`], and effects leave
//! through `poll_*` methods (see [`Scheduler`] for the call order). The agent (`node/`) drives
//! one instance per process; the simulator drives thousands in one process.
//!
//! Map of the crate:
//! - [`spec`] — the job spec (TOML/JSON), validation, "can it ever fit";
//! - [`table`] — the replicated tables (a join-semilattice) and the op-based replica;
//! - [`message`] — replication messages and their bounded codec;
//! - [`placement`] — filtering, scoring and pending reasons;
//! - `slot`, `coordinator` — what each slot needs and who acts on it;
//! - [`view`] — job and task views for the API;
//! - `testing` (cargo feature `testing`, for tests only) — an in-memory multi-node harness
//!   with a fake clock and executor.
//!
//! The design, ownership rules and GC safety argument are in `docs/scheduler.md`.

#![deny(missing_docs)]

mod admission;
mod config;
mod coordinator;
mod disconnect;
mod durability;
mod fencing;
mod gc;
mod hash;
mod ids;
mod jobs;
mod members;
pub mod message;
pub mod placement;
mod reconcile;
mod replication;
mod roles;
mod scheduler;
mod slot;
pub mod spec;
pub mod table;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod view;

pub use config::SchedulerConfig;
pub use durability::{Durability, JobRecord, JobRecords, JobRows, Receipt};
pub use ids::{ActorId, AttemptId, Dot, Hlc, Name, SlotKey, Stamp, TaskKey, VersionVector};
pub use jobs::{JobWrite, Prepared, StopError, SubmitError};
pub use message::{DecodeError, Message, Outgoing, WireLimits};
pub use placement::{FilterReport, PendingReason};
pub use scheduler::{ExecCommand, KillReason, RestoreError, Scheduler, Stats, TaskEvent};
pub use shoal_gossip::{MemberInfo, MemberStatus, Millis, NodeId, Quorum, ResourceAd, Resources};
pub use spec::{
    Constraint, ConstraintOp, DisconnectPolicy, JobSpec, JobType, NeverFitsError,
    PlacementStrategy, Reconcile, ResourceRequest, RestartPolicy, SpecError, SpecLimits,
};
pub use table::{AttemptState, Tables};
pub use view::{JobStatus, JobView, TaskState, TaskView};
