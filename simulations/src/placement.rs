//! The placement bench (issue 17, "placement at scale"): the production scheduler cores of N
//! simulated nodes, driven with a stream of submissions, without membership cores.
//!
//! Every node runs a `shoal_scheduler::Scheduler`, driven as `node/src/sched_driver.rs` and
//! the simulator's `sched/drive.rs` drive it (every input followed by draining commands, job
//! records and messages, then `poll_timeout`). What the full simulator gets from N foca cores
//! is replaced by a static view handed to every core once: every node alive, with its
//! capacity and rack in its resource ad, and a quorum with the majority. Messages travel as
//! reliable FIFO streams with the simulator's LAN delay model (`latency + Exp(jitter)`, at
//! least 1 ms), the executor starts processes asynchronously (5–80 ms) and batch tasks exit
//! after their drawn run time. No failures, no partitions, no membership traffic.
//!
//! The same arrivals run through the omniscient baseline (`baseline.rs`). `docs/placement-bench.md`
//! says what the bench models and leaves out; `bench/placement.py` runs it.

mod world;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use serde::Serialize;
use shoal_scheduler::SchedulerConfig;

use crate::scenario::{NodeShape, Workload};
use crate::shared::{Dist, round3};
use world::{Setup, World};

/// Arguments of the placement bench. Defaults are `simulations/scenarios/bench/scheduling-200.toml`'s
/// workload per node (5 jobs of 10 tasks per node arriving over 90 s), so `--nodes 200` is that
/// bench's load without its crashes.
#[derive(Debug, Clone, clap::Args)]
pub struct PlacementArgs {
    /// Simulated nodes (each runs a scheduler core).
    #[arg(long, default_value_t = 200)]
    pub nodes: usize,
    /// Seed of the run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Jobs submitted in all (default: 5 per node).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Tasks per job.
    #[arg(long, default_value_t = 10)]
    pub tasks: u32,
    /// Arrivals spread uniformly over `[start, start + window)` seconds.
    #[arg(long, default_value_t = 90.0)]
    pub window_s: f64,
    /// Start of the arrival window, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub start_s: f64,
    /// Simulated seconds in all.
    #[arg(long, default_value_t = 240.0)]
    pub duration_s: f64,
    /// Run time of a batch task, lower bound, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub run_min_s: f64,
    /// Run time of a batch task, upper bound, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub run_max_s: f64,
    /// Fraction of jobs that are services (run until the end).
    #[arg(long, default_value_t = 0.05)]
    pub service_fraction: f64,
    /// Base one-way delay of a scheduler message, ms (the simulator's LAN default).
    #[arg(long, default_value_t = 0.3)]
    pub latency_ms: f64,
    /// Mean of the exponential jitter added to each message's delay, ms.
    #[arg(long, default_value_t = 0.5)]
    pub jitter_ms: f64,
    /// CPU of every node, millicores (tasks ask 250–1000).
    #[arg(long, default_value_t = 8000)]
    pub node_cpu: u64,
    /// Memory of every node, MiB (tasks ask 128–1024).
    #[arg(long, default_value_t = 16384)]
    pub node_memory: u64,
    /// Racks (`rack=r<k>` attributes, contiguous).
    #[arg(long, default_value_t = 10)]
    pub racks: usize,
    /// The scheduler's `release_hold`, ms (default: the scheduler's default).
    #[arg(long)]
    pub release_hold_ms: Option<u64>,
    /// The scheduler's `release_age_scale`, ms; 0 turns oldest-first off (default: the
    /// scheduler's default).
    #[arg(long)]
    pub release_age_scale_ms: Option<u64>,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PlacementReport {
    /// Nodes.
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Jobs and tasks submitted.
    pub jobs: usize,
    /// Tasks in all.
    pub tasks: u64,
    /// Simulated seconds.
    pub simulated_s: f64,
    /// Wall seconds of the event loop (the cores' start and the baseline excluded).
    pub wall_s: f64,
    /// Wall seconds to start the cores and hand them the view.
    pub setup_s: f64,
    /// Process starts per wall second of the event loop: the headline figure.
    pub placements_per_s: f64,
    /// The same times N: placements per second of one node's share of the CPU (what one
    /// replica keeps up with when every node has a core of its own, not a wall figure).
    pub placements_per_node_s: f64,
    /// Process starts (every copy).
    pub placements: u64,
    /// Proposals written by coordinators.
    pub proposals: u64,
    /// Proposals refused at admission.
    pub rejections: u64,
    /// Starts of a slot after its first (duplicates and re-placements).
    pub starts_again: u64,
    /// Conflicts (rejections + starts again) per 1,000 placements (starts).
    pub conflicts_per_1000: f64,
    /// Kill orders executed on running processes.
    pub kills: u64,
    /// Most extra copies of running slots at one sample.
    pub double_run_peak: u64,
    /// Batch slots completed.
    pub completed: u64,
    /// Slots neither running nor done at the end.
    pub pending_at_end: u64,
    /// Submissions refused.
    pub submit_refused: u64,
    /// Mean CPU utilization (every copy counted).
    pub utilization: f64,
    /// Mean CPU utilization counting one copy per slot (goodput).
    pub goodput: f64,
    /// Submission → first start.
    pub wait_ms: Dist,
    /// The omniscient baseline on the same arrivals.
    pub baseline: Baseline,
    /// Ops written, and applied summed over replicas.
    pub ops_written: u64,
    /// Ops applied, summed over replicas.
    pub ops_applied: u64,
    /// Scheduler messages delivered, and their bytes.
    pub messages: u64,
    /// Bytes delivered, summed over recipients.
    pub message_bytes: u64,
    /// Events processed.
    pub events: u64,
    /// Resident set once every core is started and holds the view, MiB.
    pub setup_rss_mib: u64,
    /// Peak resident set of the process, MiB (from `/proc/self/status`).
    pub max_rss_mib: u64,
}

/// The baseline's figures beside ours.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// Placements.
    pub placements: u64,
    /// Mean CPU utilization (no duplicates: goodput).
    pub goodput: f64,
    /// Submission → first start.
    pub wait_ms: Dist,
    /// Tasks waiting at the end.
    pub pending_at_end: u64,
    /// Wall seconds it took.
    pub wall_s: f64,
}

/// Runs the bench once and prints the report; the JSON goes to `--json` when given.
pub fn run_placement(args: PlacementArgs) -> anyhow::Result<ExitCode> {
    let report = placement(&args, &mut |t| {
        eprint!("\r{:>6} s simulated", t / 1000);
        let _ = std::io::stderr().flush();
    })?;
    eprintln!();
    print!("{}", summary(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the bench once.
pub fn placement(
    args: &PlacementArgs,
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<PlacementReport> {
    anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
    anyhow::ensure!(
        args.nodes <= 20_000,
        "--nodes {} is beyond 20,000 (the per-pair link clocks alone would take {} MB)",
        args.nodes,
        args.nodes * args.nodes * 4 / 1_000_000
    );
    anyhow::ensure!(args.tasks >= 1, "--tasks must be at least 1");
    anyhow::ensure!(
        args.window_s >= 0.0 && args.start_s >= 0.0,
        "--window-s and --start-s must not be negative"
    );
    anyhow::ensure!(
        args.duration_s > args.start_s + args.window_s,
        "--duration-s ({}) must end after the arrival window ({} + {} s)",
        args.duration_s,
        args.start_s,
        args.window_s
    );
    anyhow::ensure!(
        args.run_min_s > 0.0 && args.run_max_s >= args.run_min_s,
        "--run-min-s must be positive and at most --run-max-s"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.service_fraction),
        "--service-fraction must be within 0..=1"
    );
    anyhow::ensure!(
        args.latency_ms >= 0.0 && args.jitter_ms >= 0.0,
        "--latency-ms and --jitter-ms must not be negative"
    );
    anyhow::ensure!(
        args.node_cpu >= 1000 && args.node_memory >= 1024,
        "--node-cpu must be at least 1000 and --node-memory at least 1024 (the largest task asks 1000 m and 1024 MiB)"
    );
    let shape = NodeShape {
        cpu_millicores: args.node_cpu,
        memory_mib: args.node_memory,
        ..NodeShape::default()
    };
    let workload = Workload {
        jobs: args.jobs.unwrap_or(5 * args.nodes),
        start_s: args.start_s,
        until_s: args.start_s + args.window_s,
        tasks: [args.tasks, args.tasks],
        cpu_millicores: [250, 1000],
        memory_mib: [128, 1024],
        task_duration_s: [args.run_min_s, args.run_max_s],
        service_fraction: args.service_fraction,
        stop_after_ms: None,
        reconcile: None,
        updates: None,
        services: None,
        service_placement: None,
    };
    let jobs = crate::workload::generate(&workload, args.seed);
    let end_ms = (args.duration_s * 1000.0) as u64;
    let sample_ms = 1000;
    let setup = Setup {
        nodes: args.nodes,
        seed: args.seed,
        shape,
        racks: args.racks,
        latency_ms: args.latency_ms,
        jitter_ms: args.jitter_ms,
        end_ms,
        sample_ms,
        config: {
            let mut c = SchedulerConfig::default();
            if let Some(h) = args.release_hold_ms {
                c.release_hold = std::time::Duration::from_millis(h);
            }
            if let Some(a) = args.release_age_scale_ms {
                c.release_age_scale = std::time::Duration::from_millis(a);
            }
            c
        },
    };
    let t0 = Instant::now();
    let mut world = World::new(setup, &jobs);
    let setup_s = t0.elapsed().as_secs_f64();
    let setup_rss_mib = rss_mib("VmRSS:");
    let t1 = Instant::now();
    world.run(progress);
    let wall_s = t1.elapsed().as_secs_f64();
    let m = world.measured();
    drop(world);
    let t2 = Instant::now();
    let life: Vec<(u64, usize, bool)> = (0..args.nodes).map(|i| (0, i, true)).collect();
    let b = crate::baseline::run(&jobs, args.nodes, shape, &life, end_ms, sample_ms);
    let baseline_wall = t2.elapsed().as_secs_f64();
    let per_s = m.starts as f64 / wall_s.max(1e-9);
    Ok(PlacementReport {
        nodes: args.nodes,
        seed: args.seed,
        jobs: jobs.len(),
        tasks: jobs.iter().map(|j| u64::from(j.tasks)).sum(),
        simulated_s: args.duration_s,
        wall_s: round3(wall_s),
        setup_s: round3(setup_s),
        placements_per_s: round3(per_s),
        placements_per_node_s: round3(per_s * args.nodes as f64),
        placements: m.starts,
        proposals: m.proposals,
        rejections: m.rejections,
        starts_again: m.starts_again,
        conflicts_per_1000: round3(
            1000.0 * (m.rejections + m.starts_again) as f64 / m.starts.max(1) as f64,
        ),
        kills: m.kills,
        double_run_peak: m.double_run_peak,
        completed: m.completed,
        pending_at_end: m.pending_at_end,
        submit_refused: m.submit_refused,
        utilization: m.utilization,
        goodput: m.goodput,
        wait_ms: m.wait_ms,
        baseline: Baseline {
            placements: b.placements,
            goodput: b.mean_utilization,
            wait_ms: b.wait_ms,
            pending_at_end: b.pending_at_end,
            wall_s: round3(baseline_wall),
        },
        ops_written: m.ops_written,
        ops_applied: m.ops_applied,
        messages: m.messages,
        message_bytes: m.message_bytes,
        events: m.events,
        setup_rss_mib,
        max_rss_mib: rss_mib("VmHWM:"),
    })
}

/// A `/proc/self/status` figure of this process (`VmRSS:`, `VmHWM:`), in MiB (0 where
/// `/proc` is missing).
fn rss_mib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// The report as text.
#[must_use]
pub fn summary(r: &PlacementReport) -> String {
    let s = |ms: u64| ms as f64 / 1000.0;
    let b = &r.baseline;
    let ratio = |a: u64, b: u64| {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    };
    format!(
        "placement bench: {} nodes, seed {}, {} jobs / {} tasks, {} s simulated\n\
         wall {:.1} s (+{:.1} s starting the cores), {} placements: {:.1} placements/s of wall time \
         ({:.0}/s per node's share of the CPU)\n\
         conflicts: {} rejections + {} starts again per {} placements = {:.1} per 1,000 \
         ({} proposals, {} kills, double-run peak {})\n\
         goodput {:.3} (utilization {:.3}) vs baseline {:.3}\n\
         wait p50 {:.3} s p90 {:.3} s p99 {:.3} s vs baseline p50 {:.3} s p90 {:.3} s p99 {:.3} s (p90 ratio {:.2})\n\
         completed {} of {} tasks, pending at end {} (baseline {})\n\
         ops written {}, applied {} ({:.1} per op); messages {} ({:.1} MB); events {}; RSS {} MiB after starting the cores, max {} MiB\n",
        r.nodes,
        r.seed,
        r.jobs,
        r.tasks,
        r.simulated_s,
        r.wall_s,
        r.setup_s,
        r.placements,
        r.placements_per_s,
        r.placements_per_node_s,
        r.rejections,
        r.starts_again,
        r.placements,
        r.conflicts_per_1000,
        r.proposals,
        r.kills,
        r.double_run_peak,
        r.goodput,
        r.utilization,
        b.goodput,
        s(r.wait_ms.p50),
        s(r.wait_ms.p90),
        s(r.wait_ms.p99),
        s(b.wait_ms.p50),
        s(b.wait_ms.p90),
        s(b.wait_ms.p99),
        ratio(r.wait_ms.p90, b.wait_ms.p90),
        r.completed,
        r.tasks,
        r.pending_at_end,
        b.pending_at_end,
        r.ops_written,
        r.ops_applied,
        ratio(r.ops_applied, r.ops_written),
        r.messages,
        r.message_bytes as f64 / 1e6,
        r.events,
        r.setup_rss_mib,
        r.max_rss_mib,
    )
}
