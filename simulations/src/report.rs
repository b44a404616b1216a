//! `report.json` and the human summary.
//!
//! The report holds only what the seed determines: no wall-clock time, no absolute path, maps
//! in sorted order and floats rounded to three decimals, so one seed gives one byte string.

use serde::Serialize;

use crate::checks::{CheckResult, SCHEDULER_MISSING, Status};
use crate::engine::{Counters, Life, Simulation, Violation};
use crate::observe::Sample;
use crate::scenario::NetworkParams;
use crate::shared::{Dist, FaultFigures, Quality, round3};

/// Failure detection and dissemination, against SWIM's analysis.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    /// Crashes executed.
    pub crashes: usize,
    /// Crash → first node marks it suspect.
    pub first_suspect_ms: Dist,
    /// Crash → first node marks it down.
    pub first_down_ms: Dist,
    /// Crash → each observer marks it down (one sample per observer and crash).
    pub observer_down_ms: Dist,
    /// First suspicion → the last observer up throughout has it suspect or down.
    pub dissemination_ms: Dist,
    /// Crashes some observer up throughout never marked suspect or down.
    pub dissemination_incomplete: usize,
    /// Probe period, in milliseconds.
    pub probe_period_ms: u64,
    /// Gossip (piggy-back) period, in milliseconds.
    pub gossip_period_ms: u64,
    /// Mean crash → first suspicion, in probe periods.
    pub first_suspect_periods: f64,
    /// SWIM's expected first-detection time, e/(e−1) protocol periods.
    pub swim_expected_periods: f64,
    /// Mean dissemination time in gossip rounds.
    pub dissemination_rounds: f64,
    /// log2 of the cluster size, for comparison with the rounds.
    pub log2_nodes: f64,
    /// Down marks of a running incarnation (false positives, including those a fault explains).
    pub down_marks_of_running: u64,
    /// Of those, marks made while no partition, pause, slow node or loss was in force.
    pub down_marks_unexplained: u64,
    /// Members let go of (`reap_after` after they left or were forgotten), counted once per
    /// observer that let go.
    pub members_let_go: u64,
}

/// The scheduling part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Scheduling {
    /// Jobs in the workload.
    pub jobs: usize,
    /// Tasks in the workload.
    pub tasks: u64,
    /// Shoal's own placement quality, when its scheduler core ran.
    pub shoal: Option<Quality>,
    /// Why Shoal's placement quality was not measured.
    pub shoal_not_run: Option<String>,
    /// The omniscient centralized baseline on the same arrivals and failures.
    pub baseline: Quality,
    /// What the fault checkers measured of Shoal's cores, when they ran.
    pub faults: Option<FaultFigures>,
}

/// Everything one run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Scenario description.
    pub description: String,
    /// The seed.
    pub seed: u64,
    /// Node count.
    pub nodes: usize,
    /// Simulated time.
    pub duration_ms: u64,
    /// Command that replays this run.
    pub replay: String,
    /// `pass` or `fail`.
    pub verdict: String,
    /// The first failed checker and what broke it.
    pub first_failure: Option<String>,
    /// Network parameters at time zero.
    pub network: NetworkParams,
    /// When the last fault settled and when the `eventually_*` checkers became due.
    pub last_fault_ms: u64,
    /// When the `eventually_*` checkers became due.
    pub checks_due_ms: u64,
    /// First sample after the last fault where every view matched the truth.
    pub converged_at_ms: Option<u64>,
    /// Nodes up at the end.
    pub nodes_up_at_end: usize,
    /// Counters.
    pub counters: Counters,
    /// Failure detection.
    pub detection: Detection,
    /// Every checker.
    pub checks: Vec<CheckResult>,
    /// First violation of each `always_*` checker.
    pub violations: Vec<Violation>,
    /// Scheduling, if the scenario has a workload.
    pub scheduling: Option<Scheduling>,
    /// The members-alive time series.
    pub timeline: Vec<Sample>,
    /// Raw detection latencies for the CDF plot (not in the JSON).
    #[serde(skip)]
    pub detection_samples: DetectionSamples,
}

/// Raw detection latencies, in milliseconds since the crash.
#[derive(Debug, Clone, Default)]
pub struct DetectionSamples {
    /// One per crash and observer that marked it down.
    pub observer_down_ms: Vec<u64>,
    /// One per crash that someone suspected.
    pub first_suspect_ms: Vec<u64>,
}

impl Report {
    /// Whether every checker passed (or was skipped).
    #[must_use]
    pub fn passed(&self) -> bool {
        self.verdict == "pass"
    }
}

/// Builds the report of a finished run.
#[must_use]
pub fn build(
    sim: &Simulation,
    checks: Vec<CheckResult>,
    scheduling: Option<Scheduling>,
    replay: String,
) -> Report {
    let first_failure = checks
        .iter()
        .find(|c| c.status == Status::Fail)
        .map(|c| match c.at_ms {
            Some(t) => format!("{} at {t} ms: {}", c.name, c.detail),
            None => format!("{}: {}", c.name, c.detail),
        });
    Report {
        scenario: sim.scenario.name.clone(),
        description: sim.scenario.description.clone(),
        seed: sim.seed,
        nodes: sim.nodes.len(),
        duration_ms: sim.plan.duration_ms,
        replay,
        verdict: if first_failure.is_some() {
            "fail"
        } else {
            "pass"
        }
        .into(),
        first_failure,
        network: sim.scenario.network,
        last_fault_ms: sim.plan.last_fault_ms,
        checks_due_ms: sim.plan.check_from_ms,
        converged_at_ms: sim.converged_at_ms,
        nodes_up_at_end: sim.nodes.iter().filter(|n| n.life.is_up()).count(),
        counters: sim.counters,
        detection: detection(sim),
        checks,
        violations: sim.violations.clone(),
        scheduling,
        timeline: sim.observer.samples.clone(),
        detection_samples: samples(sim),
    }
}

/// When each node last started (`None` if it is not up at the end).
fn last_starts(sim: &Simulation) -> Vec<Option<u64>> {
    let mut starts = vec![None; sim.nodes.len()];
    for &(t, i, up) in &sim.life_log {
        starts[i] = up.then_some(t);
    }
    for (i, n) in sim.nodes.iter().enumerate() {
        if n.life != Life::Running && n.life != Life::Paused {
            starts[i] = None;
        }
    }
    starts
}

fn samples(sim: &Simulation) -> DetectionSamples {
    let crashes = &sim.observer.crashes;
    DetectionSamples {
        observer_down_ms: crashes
            .iter()
            .flat_map(|c| c.down_by.values().map(move |t| t - c.at_ms))
            .collect(),
        first_suspect_ms: crashes
            .iter()
            .filter_map(|c| c.first_suspect_ms.map(|t| t - c.at_ms))
            .collect(),
    }
}

fn detection(sim: &Simulation) -> Detection {
    let cfg = sim.config();
    let probe = cfg.probe_period.as_millis() as u64;
    let gossip = cfg.gossip_period.as_millis() as u64;
    let starts = last_starts(sim);
    let (mut suspect, mut down, mut observer, mut spread) = (vec![], vec![], vec![], vec![]);
    let mut incomplete = 0;
    for c in &sim.observer.crashes {
        if let Some(t) = c.first_suspect_ms {
            suspect.push(t - c.at_ms);
        }
        if let Some(t) = c.first_down_ms {
            down.push(t - c.at_ms);
        }
        observer.extend(c.down_by.values().map(|t| t - c.at_ms));
        let witnesses: Vec<usize> = (0..sim.nodes.len())
            .filter(|&i| i != c.node && starts[i].is_some_and(|s| s <= c.at_ms))
            .collect();
        let last = witnesses
            .iter()
            .map(|i| c.seen_by.get(i).copied())
            .collect::<Option<Vec<u64>>>();
        match (last, c.first_suspect_ms) {
            (Some(times), Some(first)) if !times.is_empty() => {
                spread.push(times.iter().max().copied().unwrap_or(first) - first);
            }
            (None, _) => incomplete += 1,
            _ => {}
        }
    }
    let suspect = Dist::of(&suspect);
    let spread = Dist::of(&spread);
    let e = std::f64::consts::E;
    Detection {
        crashes: sim.observer.crashes.len(),
        first_suspect_periods: round3(suspect.mean / probe.max(1) as f64),
        swim_expected_periods: round3(e / (e - 1.0)),
        dissemination_rounds: round3(spread.mean / gossip.max(1) as f64),
        log2_nodes: round3((sim.nodes.len().max(1) as f64).log2()),
        first_suspect_ms: suspect,
        first_down_ms: Dist::of(&down),
        observer_down_ms: Dist::of(&observer),
        dissemination_ms: spread,
        dissemination_incomplete: incomplete,
        probe_period_ms: probe,
        gossip_period_ms: gossip,
        down_marks_of_running: sim.observer.down_marks_of_running,
        down_marks_unexplained: sim.observer.down_marks_unexplained,
        members_let_go: sim.observer.reaps,
    }
}

/// The human summary printed on stdout.
#[must_use]
pub fn summary(r: &Report, out_dir: Option<&str>) -> String {
    let mut s = String::new();
    let push = |s: &mut String, line: String| {
        s.push_str(&line);
        s.push('\n');
    };
    push(
        &mut s,
        format!(
            "scenario {} · seed {} · {} nodes · {:.0} s simulated · {}",
            r.scenario,
            r.seed,
            r.nodes,
            r.duration_ms as f64 / 1000.0,
            r.verdict.to_uppercase()
        ),
    );
    let c = &r.counters;
    push(
        &mut s,
        format!(
            "  datagrams: {} sent, {} delivered, {} lost, {} cut by partitions, {} duplicated; \
             corrupted: {} dropped by the seal, {} reached the core (refused {}, accepted {})",
            c.datagrams_sent,
            c.datagrams_delivered,
            c.datagrams_lost,
            c.datagrams_cut,
            c.datagrams_duplicated,
            c.corrupted_sealed_out,
            c.corrupted_delivered,
            c.corrupted_refused,
            c.corrupted_accepted
        ),
    );
    let d = &r.detection;
    push(
        &mut s,
        format!(
            "  faults: {} crashes, {} restarts, {} leaves, {} pauses; {} nodes up at the end; \
             views converged {}",
            c.crashes,
            c.restarts,
            c.leaves,
            c.pauses,
            r.nodes_up_at_end,
            r.converged_at_ms
                .map_or("never (by sampling)".into(), |t| format!(
                    "at {:.1} s ({:.1} s after the last fault)",
                    t as f64 / 1000.0,
                    t.saturating_sub(r.last_fault_ms) as f64 / 1000.0
                ))
        ),
    );
    if d.crashes > 0 {
        push(
            &mut s,
            format!(
                "  detection: first suspect p50 {} ms ({:.2} probe periods mean; SWIM expects \
                 {:.2}), first down p50 {} ms, every observer p90 {} ms; dissemination {:.1} \
                 gossip rounds mean (log2 N = {:.1}); false down marks {} ({} unexplained)",
                d.first_suspect_ms.p50,
                d.first_suspect_periods,
                d.swim_expected_periods,
                d.first_down_ms.p50,
                d.observer_down_ms.p90,
                d.dissemination_rounds,
                d.log2_nodes,
                d.down_marks_of_running,
                d.down_marks_unexplained
            ),
        );
    }
    if d.members_let_go > 0 {
        push(
            &mut s,
            format!(
                "  members let go of (left or forgotten, reap_after): {} times over every view",
                d.members_let_go
            ),
        );
    }
    if let Some(sched) = &r.scheduling {
        summary_scheduling(&mut s, sched);
    }
    for check in &r.checks {
        let mark = match check.status {
            Status::Pass => "ok  ",
            Status::Fail => "FAIL",
            Status::Skipped => "skip",
            Status::KnownFail => "KNOWN",
        };
        let detail = if check.detail == SCHEDULER_MISSING {
            "not run (no workload)"
        } else {
            &check.detail
        };
        push(&mut s, format!("  [{mark}] {}: {detail}", check.name));
    }
    if let Some(f) = &r.first_failure {
        push(&mut s, format!("  FIRST FAILURE (seed {}): {f}", r.seed));
    }
    if let Some(dir) = out_dir {
        push(&mut s, format!("  output: {dir}/report.json and *.svg"));
    }
    push(&mut s, format!("  replay: {}", r.replay));
    s
}

fn summary_scheduling(s: &mut String, sched: &Scheduling) {
    let b = &sched.baseline;
    s.push_str(&format!(
        "  workload: {} jobs, {} tasks; baseline (omniscient): utilization {:.1} %, wait p50 {} \
         ms p90 {} ms, {} placements retried, {} pending at end\n",
        sched.jobs,
        sched.tasks,
        b.mean_utilization * 100.0,
        b.wait_ms.p50,
        b.wait_ms.p90,
        b.placements_retried,
        b.pending_at_end
    ));
    match &sched.shoal {
        Some(q) => s.push_str(&format!(
            "  shoal: utilization {:.1} %, wait p50 {} ms p90 {} ms, {} placements retried, {} \
             pending at end; double-runs: peak {} slots, {:.0} slot-seconds\n",
            q.mean_utilization * 100.0,
            q.wait_ms.p50,
            q.wait_ms.p90,
            q.placements_retried,
            q.pending_at_end,
            q.double_run_peak,
            q.double_run_slot_s
        )),
        None => s.push_str(&format!(
            "  shoal scheduling: {}\n",
            sched.shoal_not_run.as_deref().unwrap_or("not run")
        )),
    }
    if let Some(f) = &sched.faults {
        s.push_str(&format!(
            "  faults: longest duplicate {:.1} s (bounded jobs), {:.1} s (batch, unbounded); {} \
             kills ({} on the majority side), {} lost marks, {} watchdog kills, {} survivors \
             reported; services back at count at {}\n",
            f.longest_bounded_duplicate_ms as f64 / 1000.0,
            f.longest_unbounded_duplicate_ms as f64 / 1000.0,
            f.kills,
            f.kills_on_majority_side,
            f.condemnations,
            f.watchdog_kills,
            f.survivors_reported,
            f.back_at_count_ms
                .map_or("-".to_string(), |t| format!("{:.1} s", t as f64 / 1000.0))
        ));
    }
}
