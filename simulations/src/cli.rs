//! `shoal simulate`: argument parsing, one run or a sweep, output files and the summary.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::engine::Sabotage;
use crate::plots;
use crate::report::{self, Report};
use crate::scenario::Scenario;
use crate::shared::FaultFigures;
use crate::simulate::{simulate, simulate_with_figures};

/// Arguments of `shoal simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Scenario file (TOML); with `--sweep`, a directory runs every `*.toml` in it.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Seed of the run (default: the scenario's `seed`); with `--sweep`, the first seed.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Override the scenario's node count.
    #[arg(long, value_name = "N")]
    pub nodes: Option<usize>,
    /// Output directory (default `sim-out/<scenario>-<seed>`, or `sim-out/sweep-<name>`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run many seeds: a count (`50` = seeds 1..=50, or from `--seed`) or a range `A..B`.
    #[arg(long, value_name = "SEEDS")]
    pub sweep: Option<String>,
    /// Also write `figures.json` (join, crash, partition and heal figures of the views) and
    /// `calibration.json` (the delays the membership model draws from); keeps every status
    /// change in memory while it runs (`docs/simulation-scale.md`).
    #[arg(long, conflicts_with_all = ["sweep", "model"])]
    pub figures: bool,
    /// Run the membership model instead of the cores: no SWIM, views drawn from calibrated
    /// delays (`docs/simulation-scale.md`); writes `model.json` (its figures).
    #[arg(long, conflicts_with = "sweep")]
    pub model: bool,
}

/// Runs `shoal simulate`; the exit code is non-zero when any checker failed.
pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    match &args.sweep {
        Some(spec) => sweep(&args, spec),
        None => single(&args),
    }
}

/// The path as written in replay commands: relative to the working directory when possible,
/// so reports do not depend on where the checkout lives.
fn shown_path(file: &Path) -> String {
    if file.is_relative() {
        return file.display().to_string();
    }
    let rel = std::env::current_dir()
        .ok()
        .and_then(|cwd| file.strip_prefix(cwd).ok().map(Path::to_path_buf));
    match rel {
        Some(rel) => rel.display().to_string(),
        None => file.file_name().map_or_else(
            || file.display().to_string(),
            |f| f.to_string_lossy().into(),
        ),
    }
}

/// The command that replays one run.
#[must_use]
pub fn replay_command(file: &str, seed: u64, nodes: Option<usize>) -> String {
    let mut cmd = format!("shoal simulate {file} --seed {seed}");
    if let Some(n) = nodes {
        cmd.push_str(&format!(" --nodes {n}"));
    }
    cmd
}

fn load(file: &Path, nodes: Option<usize>) -> anyhow::Result<Scenario> {
    let mut scenario = Scenario::load(file)?;
    if let Some(n) = nodes {
        scenario.nodes = n;
        scenario.plan().context("with --nodes")?;
    }
    Ok(scenario)
}

fn single(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    if args.model {
        return model(args);
    }
    let scenario = load(&args.file, args.nodes)?;
    let seed = args.seed.unwrap_or(scenario.seed);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("sim-out/{}-{seed}", scenario.name)));
    let replay = replay_command(&shown_path(&args.file), seed, args.nodes);
    let bar = progress_bar(scenario.duration_s.ceil() as u64, "s simulated");
    let mut progress = |t_ms: u64| bar.set_position(t_ms / 1000);
    let report = if args.figures {
        let (report, figures, calibration) =
            simulate_with_figures(&scenario, seed, replay, &mut progress)?;
        std::fs::create_dir_all(&out)?;
        let json = serde_json::to_string_pretty(&figures)? + "\n";
        std::fs::write(out.join("figures.json"), json)?;
        let json = serde_json::to_string_pretty(&calibration)? + "\n";
        std::fs::write(out.join("calibration.json"), json)?;
        report
    } else {
        simulate(&scenario, seed, Sabotage::None, replay, &mut progress)?
    };
    bar.finish_and_clear();
    write_outputs(&out, &report)?;
    // The report names the file relative to the working directory (so it does not depend on
    // where the checkout lives); the terminal gets the path exactly as it was typed.
    let mut shown = report.clone();
    shown.replay = replay_command(&args.file.display().to_string(), seed, args.nodes);
    print!(
        "{}",
        report::summary(&shown, Some(&out.display().to_string()))
    );
    Ok(exit_code(report.passed()))
}

/// `shoal simulate --model`: the membership model on the scenario, `model.json` and a summary.
fn model(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let scenario = load(&args.file, args.nodes)?;
    let seed = args.seed.unwrap_or(scenario.seed);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("sim-out/{}-{seed}-model", scenario.name)));
    let mut replay = replay_command(&shown_path(&args.file), seed, args.nodes);
    replay.push_str(" --model");
    let report = crate::model::run(&scenario, seed, replay)?;
    std::fs::create_dir_all(&out)?;
    let json = serde_json::to_string_pretty(&report)? + "\n";
    std::fs::write(out.join("model.json"), json)?;
    print!("{}", crate::model::summary(&report));
    println!("  output: {}/model.json", out.display());
    Ok(ExitCode::SUCCESS)
}

fn exit_code(passed: bool) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn progress_bar(len: u64, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template = format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Writes `report.json` and the plots into `dir`.
pub fn write_outputs(dir: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = report_json(report)?;
    std::fs::write(dir.join("report.json"), json)
        .with_context(|| format!("writing {}", dir.join("report.json").display()))?;
    for (name, svg) in plots::all(report) {
        std::fs::write(dir.join(name), svg)?;
    }
    Ok(())
}

/// The canonical JSON text of a report (what `report.json` holds).
pub fn report_json(report: &Report) -> anyhow::Result<String> {
    let mut json = serde_json::to_string_pretty(report)?;
    json.push('\n');
    Ok(json)
}

/// Parses `--sweep`: `N` (N seeds from `first`) or `A..B` / `A..=B`.
pub fn parse_seeds(spec: &str, first: Option<u64>) -> anyhow::Result<Vec<u64>> {
    let spec = spec.trim();
    if let Some((a, b)) = spec.split_once("..") {
        let a: u64 = a.parse().context("sweep range start")?;
        let (b, inclusive) = match b.strip_prefix('=') {
            Some(b) => (b.parse::<u64>().context("sweep range end")?, true),
            None => (b.parse::<u64>().context("sweep range end")?, false),
        };
        let end = if inclusive { b.saturating_add(1) } else { b };
        anyhow::ensure!(a < end, "empty seed range {spec}");
        return Ok((a..end).collect());
    }
    let count: u64 = spec
        .parse()
        .context("--sweep takes a count or a range A..B")?;
    anyhow::ensure!(count > 0, "--sweep 0 runs nothing");
    let first = first.unwrap_or(1);
    Ok((first..first.saturating_add(count)).collect())
}

/// One line of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// `pass` or `fail`.
    pub verdict: String,
    /// Convergence time after the last fault, if seen.
    pub converged_after_last_fault_ms: Option<u64>,
    /// First failure.
    pub first_failure: Option<String>,
    /// What the fault checkers measured, when the scheduler cores ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faults: Option<FaultFigures>,
    /// Command that replays it (path relative to the working directory).
    pub replay: String,
    /// The same command with the path as given on the command line.
    #[serde(skip)]
    pub command: String,
}

fn scenario_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no *.toml in {}", path.display());
    Ok(files)
}

/// Runs every `(scenario, seed)` pair on all cores and returns the rows in a fixed order.
pub fn sweep_rows(
    files: &[PathBuf],
    seeds: &[u64],
    nodes: Option<usize>,
    on_done: &(dyn Fn() + Sync),
) -> anyhow::Result<Vec<(SweepRow, Report)>> {
    let mut jobs = Vec::new();
    for file in files {
        let scenario = load(file, nodes)?;
        for &seed in seeds {
            jobs.push((file.clone(), scenario.clone(), seed));
        }
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((file, scenario, seed)) = jobs.get(k) else {
                        break;
                    };
                    let replay = replay_command(&shown_path(file), *seed, nodes);
                    let outcome = simulate(scenario, *seed, Sabotage::None, replay, &mut |_| {});
                    on_done();
                    if let Ok(mut r) = results.lock() {
                        r.push((k, outcome));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(k, _)| *k);
    results
        .into_iter()
        .map(|(k, outcome)| {
            let file = &jobs[k].0;
            let report = outcome?;
            let row = SweepRow {
                scenario: report.scenario.clone(),
                seed: report.seed,
                verdict: report.verdict.clone(),
                converged_after_last_fault_ms: report
                    .converged_at_ms
                    .map(|t| t.saturating_sub(report.last_fault_ms)),
                first_failure: report.first_failure.clone(),
                faults: report.scheduling.as_ref().and_then(|s| s.faults.clone()),
                replay: report.replay.clone(),
                command: replay_command(&file.display().to_string(), report.seed, nodes),
            };
            Ok((row, report))
        })
        .collect()
}

fn sweep(args: &SimulateArgs, spec: &str) -> anyhow::Result<ExitCode> {
    let seeds = parse_seeds(spec, args.seed)?;
    let files = scenario_files(&args.file)?;
    let name = if args.file.is_dir() {
        "library".to_string()
    } else {
        load(&args.file, args.nodes)?.name
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("sim-out/sweep-{name}")));
    let bar = progress_bar((files.len() * seeds.len()) as u64, "runs");
    let rows = sweep_rows(&files, &seeds, args.nodes, &|| bar.inc(1))?;
    bar.finish_and_clear();
    std::fs::create_dir_all(&out)?;
    let table: Vec<&SweepRow> = rows.iter().map(|(r, _)| r).collect();
    std::fs::write(
        out.join("sweep.json"),
        serde_json::to_string_pretty(&table)? + "\n",
    )?;
    let mut failed = 0;
    println!(
        "{:<28} {:>6}  {:<6} {:>12}  first failure",
        "scenario", "seed", "result", "converged"
    );
    for (row, report) in &rows {
        let converged = row
            .converged_after_last_fault_ms
            .map_or("-".into(), |t| format!("{:.1} s", t as f64 / 1000.0));
        println!(
            "{:<28} {:>6}  {:<6} {:>12}  {}",
            row.scenario,
            row.seed,
            row.verdict,
            converged,
            row.first_failure.as_deref().unwrap_or("")
        );
        if !report.passed() {
            failed += 1;
            write_outputs(&out.join(format!("{}-{}", row.scenario, row.seed)), report)?;
        }
    }
    println!(
        "{} runs, {} passed, {} failed; summary in {}",
        rows.len(),
        rows.len() - failed,
        failed,
        out.join("sweep.json").display()
    );
    for (row, _) in rows.iter().filter(|(r, _)| r.verdict != "pass") {
        println!("  replay: {}", row.command);
    }
    Ok(exit_code(failed == 0))
}
