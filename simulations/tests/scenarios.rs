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

#[test]
fn services_and_hangs_are_checked() {
    let base = "name = \"x\"\nnodes = 4\nduration_s = 200\n[checks]\nquiet_s = 10\n";
    let workload = "[workload]\njobs = 2\nstart_s = 0\nuntil_s = 1\ntasks = [1, 1]\n\
                    cpu_millicores = [1, 1]\nmemory_mib = [1, 1]\ntask_duration_s = [1, 1]\n";
    let cases = [
        ("[[faults]]\nat_s = 5\nkind = \"hang\"\n", "needs tasks"),
        (
            "[workload.services]\ninterval_ms = 1000\ntimeout_ms = 2000\n",
            "timeout_ms",
        ),
        (
            "[workload.services]\nports = 0\ninterval_ms = 1000\ntimeout_ms = 500\n",
            "ports 1..=16",
        ),
        (
            "[workload.updates]\ncount = 1\nevery_s = 10\nmax_parallel = 1\n\
             min_healthy_ms = 1\nhealthy_deadline_ms = 2\nsupersede_after_s = 10\n",
            "supersede_after_s",
        ),
    ];
    for (extra, want) in cases {
        let text = if extra.starts_with("[[faults]]") {
            format!("{base}{extra}")
        } else {
            format!("{base}{workload}{extra}")
        };
        let err = Scenario::parse(&text).unwrap_err().to_string();
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    let ok = format!(
        "{base}{workload}[workload.services]\ninterval_ms = 1000\ntimeout_ms = 500\n\
         [[faults]]\nat_s = 5\nkind = \"hang\"\ntasks = 2\nfor_s = 3\n"
    );
    // `[[faults]]` after `[workload.services]` is a top-level array of tables again.
    Scenario::parse(&ok).expect("services and a hang parse");
}
