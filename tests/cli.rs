//! The CLI's answers to bad input: every error names the problem.

mod common;

use common::{TempDir, run};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn keygen_prints_a_fresh_64_hex_key() {
    let a = run(&["keygen"]);
    let b = run(&["keygen"]);
    let (a, b) = (
        String::from_utf8(a.stdout).unwrap(),
        String::from_utf8(b.stdout).unwrap(),
    );
    assert_eq!(a.trim().len(), 64);
    assert!(a.trim().chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}

#[test]
fn a_bad_cluster_key_file_is_named() {
    let dir = TempDir::new("badkey");
    let key = dir.0.join("bad.key");
    std::fs::write(&key, "not a key").unwrap();
    let out = run(&[
        "agent",
        "--name",
        "x",
        "--cluster-key-file",
        key.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--dns",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("bad.key"), "{err}");
    let missing = run(&[
        "agent",
        "--name",
        "x",
        "--cluster-key-file",
        "/nonexistent/k",
    ]);
    assert!(
        stderr(&missing).contains("/nonexistent/k"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn a_malformed_attribute_is_refused() {
    let dir = TempDir::new("badattr");
    let key = common::keygen(&dir.0, "k");
    let out = run(&[
        "agent",
        "--name",
        "x",
        "--cluster-key-file",
        key.to_str().unwrap(),
        "--attr",
        "rack",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("key=value"), "{}", stderr(&out));
}

#[test]
fn an_unreachable_agent_is_reported() {
    let out = run(&["node", "list", "--addr", "http://127.0.0.1:9"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach the Shoal agent at http://127.0.0.1:9"),
        "{}",
        stderr(&out)
    );
}

/// `shoal simulate` re-executes itself to keep its memory on huge pages (`src/main.rs`): the
/// re-executed run keeps every argument, and it simulates exactly what a run that was started
/// with the allocator setting already in place does.
#[test]
fn simulate_reexecutes_with_its_arguments_and_the_same_result() {
    let dir = TempDir::new("simulate");
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/simulations/scenarios/steady-state.toml"
    );
    let simulate = |out: &std::path::Path, purge: Option<&str>| {
        let mut cmd = common::shoal();
        cmd.args(["simulate", scenario, "--seed", "3", "--nodes", "8", "--out"])
            .arg(out)
            .env_remove("MIMALLOC_PURGE_DELAY");
        if let Some(v) = purge {
            cmd.env("MIMALLOC_PURGE_DELAY", v);
        }
        cmd.output().expect("shoal runs")
    };
    let (a, b) = (dir.0.join("reexecuted"), dir.0.join("preset"));
    let reexecuted = simulate(&a, None);
    assert!(reexecuted.status.success(), "{}", stderr(&reexecuted));
    assert!(
        !stderr(&reexecuted).contains("could not re-execute"),
        "{}",
        stderr(&reexecuted)
    );
    let stdout = String::from_utf8_lossy(&reexecuted.stdout);
    assert!(
        stdout.contains("--seed 3"),
        "the replay line keeps the seed: {stdout}"
    );
    let preset = simulate(&b, Some("1000"));
    assert!(preset.status.success(), "{}", stderr(&preset));
    let report = |d: &std::path::Path| std::fs::read(d.join("report.json")).expect("report.json");
    assert_eq!(report(&a), report(&b), "same seed, same report either way");
}
