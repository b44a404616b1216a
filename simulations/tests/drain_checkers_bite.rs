//! The drain checkers (`always_drain_parallel`, `always_drain_no_new_placements`,
//! `eventually_drain_complete`) on `services-drain`: the honest run passes them, and each
//! deliberate bug in how the simulated agent drives drains is caught. `docs/simulator.md`
//! ("Drains") says what each shows, and which hand mutations of the core were checked.

mod common;

use std::path::Path;

use shoal_simulations::{Report, Sabotage, Scenario, Status, simulate};

use common::check;

fn scenario() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/services-drain.toml");
    Scenario::load(&path).expect("scenario loads")
}

fn run(seed: u64, sabotage: Sabotage) -> Report {
    simulate(&scenario(), seed, sabotage, "test".into(), &mut |_| {}).expect("runs")
}

fn fixture() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/drain-floor.toml");
    Scenario::load(&path).expect("scenario loads")
}

fn run_fixture(seed: u64, sabotage: Sabotage) -> Report {
    simulate(&fixture(), seed, sabotage, "test".into(), &mut |_| {}).expect("runs")
}

#[test]
fn honest_drain_run_passes_and_drains_move_work() {
    let r = run(1, Sabotage::None);
    assert!(r.passed(), "{:?}", r.first_failure);
    for name in [
        "always_drain_parallel",
        "always_drain_no_new_placements",
        "eventually_drain_complete",
        "always_max_parallel",
        "always_discovery_live_healthy",
    ] {
        assert_eq!(
            check(&r, name).status,
            Status::Pass,
            "{:?}",
            check(&r, name)
        );
    }
    // The drains did move services, paced, and two drained nodes were judged at the end.
    let paced = check(&r, "always_drain_parallel").detail.clone();
    assert!(!paced.starts_with("0 drain stops"), "{paced}");
    assert!(paced.contains("at most 1 of one job in flight"), "{paced}");
    let complete = check(&r, "eventually_drain_complete").detail.clone();
    assert!(complete.starts_with("2 nodes left draining"), "{complete}");
}

#[test]
fn a_drain_that_moves_a_job_all_at_once_is_caught() {
    // `tests/fixtures/drain-floor.toml` without its hangs: two services of 6 packed on 8
    // nodes. The services are submitted with max_parallel = count, so n2 stops all of a job's
    // tasks at once; the checker holds it to the scenario's max_parallel of 1.
    let mut s = fixture();
    s.faults.retain(|f| f.tasks.is_none()); // the hangs (only they name `tasks`)
    let honest = simulate(&s, 1, Sabotage::None, "test".into(), &mut |_| {}).expect("runs");
    assert!(honest.passed(), "{:?}", honest.first_failure);
    let r = simulate(
        &s,
        1,
        Sabotage::InflateMaxParallel,
        "test".into(),
        &mut |_| {},
    )
    .expect("runs");
    let c = check(&r, "always_drain_parallel");
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert!(c.detail.contains("over max_parallel 1"), "{}", c.detail);
}

#[test]
fn a_dropped_node_command_is_caught() {
    // The accepting node answers the drain and writes nothing: placers go on placing on the
    // drained nodes long after they should have known, and the nodes keep their tasks.
    let r = run(1, Sabotage::SkipNodeCommands);
    let placed = check(&r, "always_drain_no_new_placements");
    assert_eq!(placed.status, Status::Fail, "{placed:?}");
    assert!(
        placed.detail.contains("so it should have known"),
        "{}",
        placed.detail
    );
    let complete = check(&r, "eventually_drain_complete");
    assert_eq!(complete.status, Status::Fail, "{complete:?}");
}

#[test]
fn a_drain_that_counts_hung_tasks_healthy_is_caught() {
    // `tests/fixtures/drain-floor.toml`: 4 tasks hang for good at 40 s, n2 drains at 45 s.
    // Honest, the hung tasks fail their checks, the drain waits for their restarts, and the
    // floor holds. Seed 3: since binpack packs a job's slots onto one node among equals, the
    // sabotaged runs of seeds 1 and 2 no longer stop a job below its floor (3–6 all do).
    let honest = run_fixture(3, Sabotage::None);
    assert!(honest.passed(), "{:?}", honest.first_failure);
    let paced = check(&honest, "always_drain_parallel").detail.clone();
    assert!(!paced.starts_with("0 drain stops"), "{paced}");
    // A shell that swallows check timeouts: the hung tasks stay healthy in every view, and
    // n2 stops a serving task of a job that has fewer than count − 1 serving.
    let r = run_fixture(3, Sabotage::HangsPass);
    let c = check(&r, "always_drain_parallel");
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert!(
        c.detail.contains("below count − max_parallel = 5"),
        "{}",
        c.detail
    );
}

fn parse_error(faults: &str) -> String {
    let text = format!(
        "name = \"x\"\nnodes = 4\nduration_s = 200\n\
         [workload]\njobs = 1\nstart_s = 1\nuntil_s = 2\ntasks = [1, 1]\n\
         cpu_millicores = [100, 100]\nmemory_mib = [64, 64]\ntask_duration_s = [1, 1]\n\
         {faults}"
    );
    match Scenario::parse(&text) {
        Ok(_) => panic!("accepted: {faults}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_node_commands_are_refused_with_the_reason() {
    let cases = [
        (
            "[[faults]]\nat_s = 10\nkind = \"drain\"\nnodes = [7]\n",
            "node 7 does not exist (nodes = 4)",
        ),
        (
            "[[faults]]\nat_s = 10\nkind = \"drain\"\nnodes = [1]\ndeadline_s = -5\n",
            "deadline_s = -5 is not a duration",
        ),
        (
            "[[faults]]\nat_s = 10\nkind = \"undrain\"\nnodes = [1]\ndeadline_s = 5\n",
            "deadline_s is for kind = \"drain\" only",
        ),
        (
            "[[faults]]\nat_s = 10\nkind = \"eligibility\"\nnodes = [1]\n",
            "needs eligible = true or false",
        ),
        (
            "[[faults]]\nat_s = 10\nkind = \"drain\"\nrandom = 1\n",
            "names its nodes with nodes = [..] only",
        ),
        (
            "[[faults]]\nat_s = 10\nkind = \"drain\"\nnodes = []\n",
            "nodes = [] names no node",
        ),
    ];
    for (faults, want) in cases {
        let e = parse_error(faults);
        assert!(e.contains(want), "{faults}: {e}");
    }
    // Without a workload there is no scheduler to write the command.
    let e = Scenario::parse(
        "name = \"x\"\nnodes = 4\nduration_s = 200\n\
         [[faults]]\nat_s = 10\nkind = \"drain\"\nnodes = [1]\n",
    )
    .expect_err("refused");
    assert!(e.to_string().contains("needs a [workload]"), "{e}");
}
