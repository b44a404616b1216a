//! The placement bench is deterministic and its figures add up (no timing is asserted: the
//! bench's wall figures belong to `bench/placement.py`).

use clap::Parser;
use shoal_simulations::{PlacementArgs, PlacementReport, placement};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: PlacementArgs,
}

fn run(flags: &str) -> PlacementReport {
    let argv = std::iter::once("placement").chain(flags.split_whitespace());
    let args = Cli::try_parse_from(argv).expect("flags parse").args;
    placement(&args, &mut |_| {}).expect("the bench runs")
}

/// Everything but wall time and memory, as JSON.
fn figures(r: &PlacementReport) -> serde_json::Value {
    let mut v = serde_json::to_value(r).expect("serializes");
    for k in [
        "wall_s",
        "setup_s",
        "placements_per_s",
        "placements_per_node_s",
        "setup_rss_mib",
        "max_rss_mib",
    ] {
        v.as_object_mut().expect("object").remove(k);
    }
    v["baseline"]
        .as_object_mut()
        .expect("object")
        .remove("wall_s");
    v
}

const SMALL: &str = "--nodes 12 --jobs 40 --tasks 4 --start-s 1 --window-s 5 --duration-s 40 \
                     --run-min-s 2 --run-max-s 10 --node-cpu 2000 --node-memory 4096";

#[test]
fn same_seed_same_figures() {
    let a = run(SMALL);
    let b = run(SMALL);
    assert_eq!(figures(&a), figures(&b));
    let c = run(&format!("{SMALL} --seed 2"));
    assert_ne!(
        figures(&a),
        figures(&c),
        "another seed draws other arrivals"
    );
}

#[test]
fn every_task_is_placed_and_counted() {
    let r = run(SMALL);
    assert_eq!(r.tasks, 160);
    // Contended (12 two-core nodes, 160 tasks within 5 s), yet every slot starts by the end.
    assert!(
        r.wait_ms.p90 > 1000,
        "the load should queue: {:?}",
        r.wait_ms
    );
    assert_eq!(r.wait_ms.count as u64, r.tasks, "every slot started once");
    assert_eq!(r.placements, r.tasks + r.starts_again);
    assert!(
        r.proposals >= r.placements,
        "every start was proposed first"
    );
    assert_eq!(
        r.proposals - r.rejections,
        r.placements,
        "every admitted proposal started"
    );
    assert_eq!(r.submit_refused, 0);
    assert_eq!(
        r.ops_applied,
        r.ops_written * 11,
        "every op is applied on every other replica"
    );
    assert!(r.goodput <= r.utilization && r.goodput > 0.0);
    assert_eq!(r.baseline.wait_ms.count as u64, r.tasks);
}

#[test]
fn bad_flags_are_refused_by_name() {
    let argv = ["placement", "--nodes", "0"];
    let args = Cli::try_parse_from(argv).expect("flags parse").args;
    let err = placement(&args, &mut |_| {})
        .expect_err("zero nodes")
        .to_string();
    assert!(err.contains("--nodes"), "{err}");
    let argv = ["placement", "--duration-s", "50"];
    let args = Cli::try_parse_from(argv).expect("flags parse").args;
    let err = placement(&args, &mut |_| {})
        .expect_err("ends in the window")
        .to_string();
    assert!(err.contains("--duration-s"), "{err}");
}
