//! `shoal-fuzz`: runs every fuzz target over its corpus, then over random mutations of it for
//! a bounded time. A panic (or an input slower than one second) saves the input under
//! `fuzz/artifacts/<target>/` and exits non-zero with the command that replays it.
//!
//! ```sh
//! cargo run -p shoal-fuzz -- run --seconds 10            # every target, 10 s each
//! cargo run -p shoal-fuzz -- run --target seal_open --seconds 60 --seed 7
//! cargo run -p shoal-fuzz -- replay seal_open fuzz/artifacts/seal_open/crash-…
//! cargo run -p shoal-fuzz -- seed-corpus                 # rewrite the generated seeds
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use shoal_fuzz::mutate::{Rng, mutate};
use shoal_fuzz::{TARGETS, Target, corpus};

/// An input slower than this counts as a failure (a hang the runner cannot interrupt would
/// still stall the run; CI's timeout catches that).
const SLOW: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let dir = flag("--corpus").map_or_else(corpus::default_dir, PathBuf::from);
    match args.first().map(String::as_str) {
        Some("run") => {
            let seconds: f64 = flag("--seconds").map_or(Ok(5.0), |s| s.parse())?;
            let seed: u64 = match flag("--seed") {
                Some(s) => s.parse()?,
                None => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64),
            };
            let only = flag("--target");
            let targets: Vec<&Target> = TARGETS
                .iter()
                .filter(|t| only.as_deref().is_none_or(|o| o == t.name))
                .collect();
            anyhow::ensure!(!targets.is_empty(), "no target named {only:?}");
            println!(
                "fuzzing {} targets, {seconds} s each, seed {seed}",
                targets.len()
            );
            let count = targets.len();
            for target in targets {
                if !fuzz(target, &dir, Duration::from_secs_f64(seconds), seed)? {
                    println!("fuzz: 0 passed, 1 failed");
                    return Ok(ExitCode::FAILURE);
                }
            }
            println!("fuzz: {count} passed, 0 failed");
            Ok(ExitCode::SUCCESS)
        }
        Some("replay") => {
            let (Some(name), Some(file)) = (args.get(1), args.get(2)) else {
                anyhow::bail!("usage: shoal-fuzz replay TARGET FILE");
            };
            let target = TARGETS
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| anyhow::anyhow!("no target named {name}"))?;
            (target.run)(&std::fs::read(file)?);
            println!("{name}: {file} ran without a panic");
            Ok(ExitCode::SUCCESS)
        }
        Some("seed-corpus") => {
            let n = corpus::write_seeds(&dir)?;
            println!("wrote {n} seed inputs under {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        _ => anyhow::bail!(
            "usage: shoal-fuzz run [--seconds S] [--target NAME] [--seed N] [--corpus DIR] \
             | replay TARGET FILE | seed-corpus [--corpus DIR]"
        ),
    }
}

/// Corpus first, then mutations until `budget` is spent. False if an input failed.
fn fuzz(target: &Target, dir: &Path, budget: Duration, seed: u64) -> anyhow::Result<bool> {
    let corpus = corpus::load(dir, target.name)?;
    anyhow::ensure!(!corpus.is_empty(), "corpus of {} is empty", target.name);
    for (name, input) in &corpus {
        if !run_one(target, input, &format!("corpus entry {name}"))? {
            return Ok(false);
        }
    }
    let mut rng = Rng::new(seed ^ fnv(target.name));
    let start = Instant::now();
    let mut executions = 0u64;
    while start.elapsed() < budget {
        let base = &corpus[rng.below(corpus.len())].1;
        let other = &corpus[rng.below(corpus.len())].1;
        let input = mutate(&mut rng, base, other);
        executions += 1;
        if !run_one(
            target,
            &input,
            &format!("mutation {executions} of seed {seed}"),
        )? {
            return Ok(false);
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    println!(
        "{:<18} {:>4} corpus entries, {executions:>8} mutations ({:.0}/s), no failure",
        target.name,
        corpus.len(),
        executions as f64 / secs
    );
    Ok(true)
}

fn run_one(target: &Target, input: &[u8], what: &str) -> anyhow::Result<bool> {
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let slow = started.elapsed() > SLOW;
    if outcome.is_ok() && !slow {
        return Ok(true);
    }
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("artifacts")
        .join(target.name);
    std::fs::create_dir_all(&folder)?;
    let kind = if slow { "slow" } else { "crash" };
    let file = folder.join(format!("{kind}-{:016x}", fnv_bytes(input)));
    std::fs::write(&file, input)?;
    eprintln!(
        "{}: {what} {} ({:?}); saved {} bytes to {}\nreplay: cargo run -p shoal-fuzz -- replay {} {}",
        target.name,
        if slow { "was slow" } else { "panicked" },
        started.elapsed(),
        input.len(),
        file.display(),
        target.name,
        file.display()
    );
    Ok(false)
}

fn fnv(text: &str) -> u64 {
    fnv_bytes(text.as_bytes())
}

fn fnv_bytes(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
