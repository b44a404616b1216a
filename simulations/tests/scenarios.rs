//! Scenario files are checked before anything runs.

use shoal_simulations::Scenario;

#[test]
fn every_library_scenario_parses() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    for dir in [root.clone(), root.join("bench")] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
    }
}

#[test]
fn bad_scenarios_are_refused_with_a_reason() {
    let base = "name = \"x\"\nnodes = 4\nduration_s = 100\n";
    let cases = [
        ("typo = 1\n", "unknown field"),
        ("[network]\nloss = 1.5\n", "loss"),
        ("[[faults]]\nat_s = 5\nkind = \"crash\"\n", "exactly one of"),
        (
            "[[faults]]\nat_s = 5\nkind = \"crash\"\nnodes = [9]\n",
            "does not exist",
        ),
        (
            "[[faults]]\nat_s = 5\nkind = \"pause\"\nnodes = [1]\n",
            "for_s",
        ),
        ("[[faults]]\nat_s = 50\nkind = \"heal\"\n", "quiet"),
        (
            "[[faults]]\nat_s = 5\nkind = \"explode\"\n",
            "unknown variant",
        ),
    ];
    for (extra, want) in cases {
        let err = Scenario::parse(&format!("{base}{extra}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{extra:?}: {err}");
    }
}
