//! Shoal's deterministic failure simulator.
//!
//! Thousands of the **production** membership cores (`shoal_gossip::Membership`) run in one
//! process on a virtual clock, talking through a simulated network with latency, loss,
//! duplication, reordering, corruption and partitions, while a fault script crashes, restarts,
//! pauses, slows, partitions and churns nodes. Everything random is drawn from one seed, so a
//! seed names one exact history: `shoal simulate FILE --seed S` replays it byte for byte.
//!
//! Checkers named by when they hold (`always_*`, `eventually_*`, `finally_*`) run on every
//! simulation; a violation fails the run with the seed and the first event that broke it.
//!
//! Where the production scheduler cores (`shoal_scheduler::Scheduler`) run too, one per node:
//! in scenarios with a `[workload]`, beside an omniscient baseline scheduler on the same jobs.
//!
//! How to drive it from code: load a [`Scenario`], call [`simulate()`], look at the
//! [`Report`]. The CLI entry point is [`run`] with [`SimulateArgs`]. `docs/simulator.md`
//! explains the model, the scenario format and the checkers.
//!
//! # The rooms
//!
//! - `scenario.rs`: the scenario file and its compiled fault plan; `scenario/jobs.rs` its
//!   `[workload]` (arrivals, updates, the services' ports and checks);
//!   `scenario/node_commands.rs` the operator's node commands (drains) in the script.
//! - `engine.rs`: the event loop, and under `engine/` the membership cores (`membership.rs`),
//!   the fault script (`faults.rs`), a machine's ground truth (`node.rs`), the event queue
//!   (`agenda.rs`), counters and violations (`record.rs`), what the engine lends the
//!   scheduling world (`scheduling.rs`) and the ground truth of who is on the majority side
//!   (`sides.rs`).
//! - `net.rs`: the simulated network. `observe.rs`: the views rebuilt from the cores' events.
//! - `sched.rs`: the scheduling world (scheduler cores, executors, disks, measurements) and the
//!   contract by which the engine drives it; membership changes enter the scheduler cores at
//!   `Workbench::handle_members_changed` and are handed over in `sched/drive.rs`'s `feed`.
//! - `workload.rs`: job arrivals. `baseline.rs`: the omniscient scheduler.
//! - `placement.rs`: the placement bench (scheduler cores only, a static all-alive view, no
//!   membership cores; `docs/placement-bench.md`), its world in `placement/world.rs`.
//! - `figures.rs`: the membership figures (join, crash, partition and heal delays of the
//!   views), measured on a full run (`--figures`) or the model, and the delays the model is
//!   calibrated with.
//! - `model.rs`: the membership model (`--model`): no SWIM, the views drawn from the ground
//!   truth and calibrated delays, one dense 16-byte entry per pair (`model/views.rs`), the
//!   draws in `model/delays.rs`.
//! - `checks.rs`: the checkers. `report.rs`: `report.json` and the summary. `plots.rs` and
//!   `svg.rs`: the SVG plots (plotters). `simulate.rs`: one run, scenario to report. `cli.rs`: `shoal
//!   simulate`.
//! - `shared.rs`: seed derivation, node names, `Dist`, `Quality`; imports nothing.
//!
//! # Module graph
//!
//! Who imports whom among the rooms (edges inside a room left out). There is no circle, and
//! `tests/module_graph.rs` fails when this list and the imports disagree.
//!
//! ```text
//! baseline → scenario, shared, workload
//! checks → engine, sched
//! cli → engine, model, plots, report, scenario, shared, simulate
//! engine → net, observe, scenario, sched, shared
//! figures → engine, observe, scenario, shared
//! lib → checks, cli, engine, placement, report, scenario, shared, simulate
//! model → figures, observe, scenario, shared
//! net → scenario
//! observe → shared
//! placement → baseline, scenario, shared, workload
//! plots → observe, report, svg
//! report → checks, engine, observe, scenario, shared
//! scenario → (nothing)
//! sched → scenario, shared, workload
//! shared → (nothing)
//! simulate → baseline, checks, engine, figures, report, scenario, workload
//! svg → (nothing)
//! workload → scenario, shared
//! ```
#![deny(missing_docs)]

mod baseline;
mod checks;
mod cli;
mod engine;
mod figures;
mod model;
mod net;
mod observe;
mod placement;
mod plots;
mod report;
mod scenario;
mod sched;
mod shared;
mod simulate;
mod svg;
mod workload;

pub use checks::{CheckResult, Status};
pub use cli::{SimulateArgs, SweepRow, parse_seeds, replay_command, report_json, run, sweep_rows};
pub use engine::{Sabotage, Simulation};
pub use placement::{Baseline, PlacementArgs, PlacementReport, placement, run_placement, summary};
pub use report::Report;
pub use scenario::{Scenario, ScenarioError};
pub use shared::{Dist, derive_seed};
pub use simulate::simulate;
