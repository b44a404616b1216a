//! One run from scenario to report: the engine runs it, then the checkers, the omniscient
//! baseline and the report read what it left.

use crate::engine::{Sabotage, Simulation};
use crate::figures::{self, Calibration, Figures};
use crate::report::{self, Report};
use crate::scenario::Scenario;
use crate::{baseline, checks, workload};

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

/// Runs one scenario as [`simulate`] does and also measures its membership figures (the
/// cores' status changes are kept for it, which costs memory; the report is the same).
pub fn simulate_with_figures(
    scenario: &Scenario,
    seed: u64,
    replay: String,
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<(Report, Figures, Calibration)> {
    let mut sim = Simulation::new(scenario.clone(), seed, Sabotage::None)?;
    sim.observer.keep_marks();
    sim.run(progress);
    let checks = checks::evaluate(&sim);
    let scheduling = scheduling(&sim);
    let (figures, calibration) = figures::from_simulation(&sim);
    let report = report::build(&sim, checks, scheduling, replay);
    Ok((report, figures, calibration))
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
        shoal: sim.bench.as_deref().map(|bench| bench.quality()),
        shoal_not_run: None,
        baseline,
        faults: sim.bench.as_deref().map(|b| b.watch.figures.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The figures' crash definitions are the report's: the model is compared with the full
    /// simulation on the same footing as the report states it.
    #[test]
    fn the_figures_measure_crashes_as_the_report_does() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/rack-failure.toml");
        let scenario = Scenario::load(std::path::Path::new(path)).expect("scenario loads");
        let (report, figures, calibration) =
            simulate_with_figures(&scenario, 2, String::new(), &mut |_| {}).expect("runs");
        let (d, c) = (&report.detection, &figures.crash);
        assert_eq!(c.crashes, d.crashes);
        assert_eq!(c.first_suspect_ms, d.first_suspect_ms);
        assert_eq!(c.first_down_ms, d.first_down_ms);
        assert_eq!(c.observer_down_ms, d.observer_down_ms);
        assert_eq!(c.dissemination_ms, d.dissemination_ms);
        assert_eq!(c.incomplete, d.dissemination_incomplete);
        assert_eq!(figures.converged_at_ms, report.converged_at_ms);
        assert_eq!(calibration.crash.spread_ms.len(), 101);
        assert_eq!(
            figures.join.missing, 0,
            "every pair joined before the first fault"
        );
    }
}
