//! Same seed → byte-identical `report.json`; different seeds → different reports.

use std::path::Path;

use shoal_simulations::{Sabotage, Scenario, report_json, simulate};

fn scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    Scenario::load(&path).expect("scenario loads")
}

fn json(scenario: &Scenario, seed: u64) -> String {
    let replay = format!(
        "shoal simulate scenarios/{}.toml --seed {seed}",
        scenario.name
    );
    let report = simulate(scenario, seed, Sabotage::None, replay, &mut |_| {}).expect("runs");
    report_json(&report).expect("serializes")
}

#[test]
fn same_seed_gives_byte_identical_reports() {
    // Loss, duplication, jitter and crashes exercise every random draw of the network model.
    for name in ["loss-20pct.toml", "churn.toml", "workload.toml"] {
        let mut s = scenario(name);
        s.nodes = 12;
        let a = json(&s, 7);
        let b = json(&s, 7);
        assert!(a == b, "{name}: two runs of seed 7 differ");
        assert!(a.contains("\"seed\": 7"));
    }
}

#[test]
fn different_seeds_give_different_reports() {
    let mut s = scenario("rolling-crashes.toml");
    s.nodes = 12;
    let a = json(&s, 1);
    let b = json(&s, 2);
    assert_ne!(a, b);
}

#[test]
fn reports_hold_no_absolute_path_or_wall_clock() {
    let mut s = scenario("steady-state.toml");
    s.nodes = 6;
    let a = json(&s, 3);
    let here = env!("CARGO_MANIFEST_DIR");
    assert!(!a.contains(here), "report mentions the checkout path");
}
