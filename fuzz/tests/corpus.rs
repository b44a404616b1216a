//! Every committed corpus entry still runs cleanly through its target (a regression check
//! on every test run; the time-bounded mutation run is `.ci/run`'s job).

use shoal_fuzz::{TARGETS, corpus};

#[test]
fn every_target_has_a_corpus_and_passes_it() {
    let dir = corpus::default_dir();
    for target in TARGETS {
        let entries = corpus::load(&dir, target.name).unwrap();
        assert!(!entries.is_empty(), "{} has no corpus", target.name);
        for (name, input) in entries {
            (target.run)(&input);
            let _ = name;
        }
    }
}

/// The seeds the current encoders make run cleanly too (when a format changes, rewrite the
/// committed corpus with `cargo run -p shoal-fuzz -- seed-corpus`).
#[test]
fn generated_seeds_run_cleanly() {
    for (target, _, input) in corpus::seeds() {
        let t = TARGETS.iter().find(|t| t.name == target).unwrap();
        (t.run)(&input);
    }
}
