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
//! How to drive it from code: load a [`Scenario`], call [`simulate`], look at the
//! [`Report`]. The CLI entry point is [`run`] with [`SimulateArgs`]. `docs/simulator.md`
//! explains the model, the scenario format and the checkers.
#![deny(missing_docs)]

mod baseline;
mod checks;
mod cli;
mod engine;
mod net;
mod observe;
mod plots;
mod report;
mod scenario;
mod sched;
mod shared;
mod svg;
mod workload;

pub use checks::{CheckResult, Status};
pub use cli::{SimulateArgs, SweepRow, parse_seeds, replay_command, report_json, run, sweep_rows};
pub use engine::{Sabotage, Simulation};
pub use report::Report;
pub use scenario::{Scenario, ScenarioError};
pub use shared::{Dist, derive_seed};

/// Runs one scenario with one seed and returns its report. `progress` is called with the
/// virtual time (ms) at every sample. `sabotage` must be [`Sabotage::None`] outside tests.
pub fn simulate(
    scenario: &Scenario,
    seed: u64,
    sabotage: Sabotage,
    replay: String,
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<Report> {
    let mut sim = Simulation::new(scenario.clone(), seed, sabotage)?;
    sim.run(progress);
    let checks = checks::evaluate(&sim);
    let scheduling = scheduling(&sim);
    Ok(report::build(&sim, checks, scheduling, replay))
}

/// Shoal's placement quality beside the omniscient baseline's, on the same workload.
fn scheduling(sim: &Simulation) -> Option<report::Scheduling> {
    let w = sim.scenario.workload.as_ref()?;
    let jobs = workload::generate(w, sim.seed);
    let baseline = baseline::run(
        &jobs,
        sim.nodes.len(),
        sim.scenario.node,
        &sim.life_log,
        sim.plan.duration_ms,
        sim.scenario.checks.sample_ms,
    );
    Some(report::Scheduling {
        jobs: jobs.len(),
        tasks: jobs.iter().map(|j| u64::from(j.tasks)).sum(),
        shoal: sim.bench.as_deref().map(sched::Workbench::quality),
        shoal_not_run: None,
        baseline,
    })
}
