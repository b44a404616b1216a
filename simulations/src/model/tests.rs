//! The model's tests: determinism, crash detection within the drawn bounds, a partition
//! that heals, the built-in calibration, and the faults it refuses.

use super::*;
use crate::figures::WaveDelays;

const SCENARIO: &str = r#"
name = "model-small"
nodes = 60
duration_s = 40
[start]
stagger_ms = 2000
[[faults]]
at_s = 10
kind = "crash"
random = 3
[[faults]]
at_s = 20
kind = "partition"
fraction = 0.25
[[faults]]
at_s = 28
kind = "heal"
[checks]
quiet_s = 10
"#;

fn table(lo: u64, hi: u64) -> Vec<u64> {
    (0..=100).map(|q| lo + (hi - lo) * q / 100).collect()
}

fn wave(observers: u64) -> WaveDelays {
    WaveDelays {
        observers,
        subjects: 10,
        first_suspect_mean_ms: 1700.0,
        first_suspect_ms: Vec::new(),
        spread_ms: table(0, 900),
        down_after_ms: table(1500, 2100),
        remerge_ms: table(200, 6000),
    }
}

fn calibration() -> Calibration {
    Calibration {
        nodes: 100,
        probe_period_ms: 1000,
        join_ms: table(100, 1500),
        crash: wave(99),
        larger_sees_smaller: Some(wave(80)),
        smaller_sees_larger: Some(wave(20)),
    }
}

fn scenario() -> Scenario {
    Scenario::parse(SCENARIO).expect("scenario parses")
}

#[test]
fn a_seed_gives_the_same_report_twice() {
    let run = |seed| {
        let r = run_calibrated(&scenario(), seed, "replay".into(), &[calibration()]);
        serde_json::to_string(&r.expect("model runs")).expect("serializes")
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8), "the seed draws the delays");
}

#[test]
fn every_observer_marks_a_crash_down_within_the_drawn_bounds() {
    let s = scenario();
    let r = run_calibrated(&s, 3, String::new(), &[calibration()]).expect("model runs");
    let c = &r.figures.crash;
    let observers = s.nodes as u64 - 1;
    assert_eq!(c.crashes, 3);
    assert_eq!(c.incomplete, 0, "every witness suspected every crash");
    // Each crash is seen by every other node, the two others crashed with it included
    // (they crashed at the same instant, after the draw of the first).
    assert!(c.observer_down_ms.count as u64 >= 3 * (observers - 2));
    // Bounds: a pair is marked at its member's first suspicion plus at most the largest
    // spread (stretched by log2 of the observers over the calibration's) plus at most the
    // largest down delay.
    let stretch = (observers as f64).log2() / 99f64.log2();
    let bound = c.first_suspect_ms.max as f64 + 900.0 * stretch + 2100.0;
    assert!(c.observer_down_ms.max as f64 <= bound.ceil(), "{c:?}");
    assert!(c.observer_down_ms.min >= c.first_suspect_ms.min + 1500);
    // And the views say so at the end: every running node holds each crashed node down.
    let mut truth = World::new(&s, 3, None);
    truth.play(&s.plan().expect("plan").actions).expect("plays");
    let delays = Delays::new(&[calibration()], 3, s.nodes);
    let mut world = World::new(&s, 3, Some((delays, truth.last_starts())));
    world.play(&s.plan().expect("plan").actions).expect("plays");
    let d = world.draw.as_ref().expect("drawing");
    let end = (s.duration_s * 1000.0) as u32;
    let crashed: Vec<usize> = (0..s.nodes).filter(|&j| !world.up[j]).collect();
    assert_eq!(crashed.len(), 3);
    for i in (0..s.nodes).filter(|&i| world.up[i]) {
        for &j in &crashed {
            assert_eq!(
                d.views.pair(i, j).status_at(end),
                Status::Down,
                "{i} sees {j}"
            );
        }
    }
}

#[test]
fn a_partition_heals_and_the_views_converge() {
    let s = scenario();
    let r = run_calibrated(&s, 5, String::new(), &[calibration()]).expect("model runs");
    let p = &r.figures.partitions[0];
    assert_eq!((p.side, p.rest), (15, 45));
    assert!(p.rest_sees_side.observer_down_ms.count > 0);
    assert!(p.rest_sees_side.remerge_ms.max <= 6000);
    assert_eq!(p.rest_sees_side.not_remerged, 0);
    let converged = r.figures.converged_at_ms.expect("views converge");
    assert!((28_000..=34_000).contains(&converged), "{converged}");
    let last = r.timeline.last().expect("samples");
    assert_eq!(
        (last.alive_min, last.alive_max),
        (57, 57),
        "every view complete"
    );
}

#[test]
fn the_built_in_calibration_runs_the_bench_scenario() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/bench/membership-1000.toml"
    );
    let mut s = Scenario::load(std::path::Path::new(path)).expect("scenario loads");
    s.nodes = 300;
    let r = run(&s, 1, String::new()).expect("model runs");
    assert_eq!(r.figures.crash.crashes, 10);
    assert_eq!(r.figures.partitions[0].side, 60);
    assert!(r.figures.converged_at_ms.is_some());
}

#[test]
fn faults_it_does_not_model_are_refused_by_name() {
    let text = SCENARIO.replace(
        "kind = \"heal\"",
        "kind = \"pause\"\nnodes = [1]\nfor_s = 1",
    );
    let s = Scenario::parse(&text).expect("scenario parses");
    let err = run_calibrated(&s, 1, String::new(), &[calibration()]).expect_err("refused");
    assert!(err.to_string().contains("`pause`"), "{err}");
}
