//! Sans-IO scheduler core of Shoal: replicated job and attempt tables, optimistic placement by
//! slot coordinators, admission by target nodes, fencing, repair and garbage collection.
//!
//! The crate never touches a socket, a thread, the wall clock or the OS RNG. Time comes in as
//! [`Millis`] arguments, randomness from the seed given to [`Scheduler::new`], and effects leave
//! through `poll_*` methods (see [`Scheduler`] for the call order). The agent (`node/`) drives
//! one instance per process; the simulator drives thousands in one process.
//!
//! # Map of the crate
//!
//! The driving API and the state every room reads:
//! - `scheduler.rs` — [`Scheduler`]: the "Driving it" contract, the inputs (`handle_*`), the
//!   outputs (`poll_*`), snapshots and restore, and the state all rooms share;
//! - `roles.rs` — each role's own state (replication, target side, coordination, GC,
//!   reach (quorum and catch-up), durability log), each type naming the files that change it;
//! - `stats.rs` — [`Stats`]: the counters and gauges the shell exports.
//!
//! What each input does, one room per job:
//! - `jobs.rs` — submissions and stops: checked, prepared as one job write, committed;
//! - `durability.rs` — job records for the shell to log, held acks, [`Durability`];
//! - `replication.rs` — local writes, ops and digests from peers, ownership checks,
//!   anti-entropy;
//! - `members.rs` — the membership view as member lists, and when a down node's work may be
//!   condemned (`settled_down`);
//! - `disconnect.rs` — acting without a majority, stopping cut-off tasks, the catch-up of a
//!   restored node, the fate of a lost task that still runs here.
//!
//! The decision loop (`reconcile.rs`, run after every input) and its rooms:
//! - `admission.rs` — the target side: admit, defer or reject proposals for this node;
//! - `fencing.rs` — kill (or reclaim) local tasks whose attempt is no longer current;
//! - `checking.rs` — health checks of local tasks: handed to the shell when a task starts,
//!   results through [`health::HealthMachine`], health written on changes, restarts;
//! - `coordinator.rs` — coordinating a slot: place it, re-place it with back-off, mark the
//!   attempts of a dead target lost, replace outdated attempts;
//! - `rollout.rs` — rolling updates: the window rule for voluntary replacements, `done`
//!   marks, and the job coordinator's complete / failed / auto-revert;
//! - `settling.rs` — the target's rollout clocks: `settled` and `deadline_missed` marks;
//! - `versions.rs` — job versions for the operator: history, revert, promote, and the
//!   deployment line of `job status`;
//! - `gc.rs` — purge finished jobs, fold long slot histories into floors, drop tombstones;
//! - `slot.rs` — what a slot needs now, from the tables alone;
//! - [`placement`] — filtering, scoring and pending reasons.
//!
//! The data:
//! - [`spec`] — the job spec (TOML/JSON), validation, "can it ever fit";
//! - [`table`] — the replicated tables (a join-semilattice) and the op-based replica;
//! - [`message`] — replication messages and their bounded codec;
//! - `ids.rs`, `hash.rs`, `config.rs` — identities and clocks, stable hashing and rendezvous,
//!   [`SchedulerConfig`];
//! - [`health`] — the health checks' state machine, the checks as the shell runs them, and
//!   [`task_health`], the one rule for "is this attempt healthy";
//! - [`view`] — job and task views for the API;
//! - `events.rs` — [`SchedEvent`], what the core decided or merged, for the shell's event
//!   stream (recorded only when `SchedulerConfig::event_queue` is set); `deploy_events.rs`
//!   derives the rollout events from the tables;
//! - [`catalog`] — the service catalog (instances per service name) that DNS and
//!   `/v1/services` answer from;
//! - `testing` (cargo feature `testing`, for tests only) — an in-memory multi-node harness
//!   with a fake clock and executor.
//!
//! # Where is …
//!
//! - **… a task admitted?** In `admission.rs` (`Scheduler::admit_queued`), on the node the
//!   proposal targets: `reconcile.rs` (`note_attempt`) queues every proposal addressed to this
//!   node, and admission checks the job version, that the attempt is still the slot's current
//!   one, the node's constraints and its ledger against its capacity.
//! - **… a slot re-placed after a node dies?** In `coordinator.rs`
//!   (`Scheduler::coordinate_slot`), on the slot's coordinator: once the target has been down
//!   long enough (`members.rs`, `settled_down`) and this node holds a majority
//!   (`disconnect.rs`, `may_act`), the live attempt is marked `Lost`; that change brings the
//!   slot back to its coordinator, which finds it needing a new attempt at once (`slot.rs`,
//!   `SlotStatus::Retry`, no delay after a loss) and places one (`try_place`, `propose`).
//! - **… a superseded task killed?** In `fencing.rs` (`Scheduler::check_ledger`), on the node
//!   that runs it.
//! - **… a finished job purged?** In `gc.rs` (`Scheduler::consider_gc`), on the job's GC
//!   coordinator.
//!
//! # Module graph
//!
//! Who imports whom among the rooms (edges inside a room left out; a module's `tests.rs` is
//! not counted). There is no circle: the rooms that act on a [`Scheduler`] import
//! `scheduler.rs` and `roles.rs`, which import none of them (only the data: `table`, `message`,
//! `ids`, …), and `tests/module_graph.rs` fails when this list and the imports disagree.
//!
//! ```text
//! admission → events, ids, ports, roles, scheduler, spec, table
//! catalog → hash, health, ids, roles, scheduler, spec, table
//! checking → health, ids, scheduler, spec, table
//! config → message, spec
//! coordinator → config, events, hash, ids, placement, roles, scheduler, slot, spec, table
//! deploy_events → events, ids, rollout, scheduler, versions
//! disconnect → ids, message, placement, roles, scheduler, spec, table
//! drain → events, health, ids, roles, scheduler, spec, table
//! drain_intent → durability, events, ids, jobs, scheduler, table
//! durability → ids, message, roles, scheduler, table
//! events → ids, table
//! fencing → disconnect, ids, scheduler, table
//! gc → admission, config, hash, ids, roles, scheduler, slot, spec, table
//! hash → (nothing)
//! health → ids, spec, table
//! ids → (nothing)
//! jobs → durability, hash, ids, scheduler, spec, table
//! lib → catalog, config, drain_intent, durability, events, health, ids, jobs, members, message, placement, scheduler, spec, stats, table, versions, view
//! members → hash, ids, placement, roles, scheduler
//! message → ids, table
//! placement → hash, spec
//! ports → hash, ids, spec
//! reconcile → config, events, ids, roles, scheduler, slot, table
//! replication → ids, message, scheduler, table
//! roles → health, ids, placement, table
//! rollout → health, ids, scheduler, spec, table
//! scheduler → config, events, hash, health, ids, message, roles, table
//! settling → ids, roles, scheduler, spec, table
//! slot → ids, spec, table
//! spec → (nothing)
//! stats → placement, scheduler
//! table → ids, spec
//! testing → config, drain_intent, durability, hash, health, ids, jobs, message, scheduler, spec, table, view
//! versions → ids, jobs, rollout, scheduler, spec, table
//! view → hash, health, ids, placement, scheduler, slot, spec, table, versions
//! ```
//!
//! The design, ownership rules and GC safety argument are in `docs/scheduler.md`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod admission;
pub mod catalog;
mod checking;
mod config;
mod coordinator;
mod deploy_events;
mod disconnect;
mod drain;
mod drain_intent;
mod durability;
mod events;
mod fencing;
mod gc;
mod hash;
pub mod health;
mod ids;
mod jobs;
mod members;
pub mod message;
pub mod placement;
mod ports;
mod reconcile;
mod replication;
mod roles;
mod rollout;
mod scheduler;
mod settling;
mod slot;
pub mod spec;
mod stats;
pub mod table;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod versions;
pub mod view;

pub use catalog::{Catalog, CatalogBuilder, Instance, InstanceHealth, Service};
pub use config::{DEFAULT_PORT_RANGE, SchedulerConfig};
pub use drain_intent::{NodeChange, NodeError, NodeStatus};
pub use durability::{Durability, JobRecord, JobRecords, JobRows, Receipt};
pub use events::{DeploymentChange, NodeEvent, SchedEvent};
pub use health::{CheckResult, HealthMachine, Probe, ResolvedCheck, TaskHealth, task_health};
pub use ids::{ActorId, AttemptId, Dot, Hlc, Name, SlotKey, Stamp, VersionVector};
pub use jobs::{JobWrite, Prepared, StopError, SubmitError};
pub use members::MemberView;
pub use message::{DecodeError, LivePeers, Message, Outgoing, Recipients, WireLimits};
pub use placement::{FilterReport, PendingReason};
pub use scheduler::{ExecCommand, KillReason, RestoreError, Scheduler, TaskEvent};
pub use shoal_gossip::{MemberInfo, MemberStatus, Millis, NodeId, Quorum, ResourceAd, Resources};
pub use spec::{
    Constraint, ConstraintOp, DisconnectPolicy, JobSpec, JobType, NeverFitsError,
    PlacementStrategy, Reconcile, ResourceRequest, RestartPolicy, SpecError, SpecLimits,
};
pub use stats::{PendingCounts, Stats};
pub use table::{AttemptState, Health, HealthStatus, Tables};
pub use versions::{DeploymentView, PromoteError, RevertError, VersionView, show_stamp};
pub use view::{CheckFailures, JobStatus, JobView, TaskState, TaskView};
