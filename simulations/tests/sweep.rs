//! The CI sweep: every scenario of the library with six seeds (≥ 50 runs), all green.
//! Runs in debug in about half a minute on two cores. The same sweep from the CLI:
//! `shoal simulate simulations/scenarios --sweep 6`.

use std::path::{Path, PathBuf};

use shoal_simulations::{parse_seeds, sweep_rows};

#[test]
fn library_sweep_is_green() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenario dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 7,
        "the library has {} scenarios",
        files.len()
    );
    let seeds = parse_seeds("6", None).expect("seeds");
    let rows = sweep_rows(&files, &seeds, None, &|| {}).expect("sweep runs");
    assert!(rows.len() >= 50, "only {} runs", rows.len());
    let failed: Vec<String> = rows
        .iter()
        .filter(|(row, _)| row.verdict != "pass")
        .map(|(row, _)| format!("{} — {:?}", row.replay, row.first_failure))
        .collect();
    assert!(failed.is_empty(), "failed runs:\n{}", failed.join("\n"));
}

#[test]
fn seed_specs_parse() {
    assert_eq!(parse_seeds("3", None).unwrap(), vec![1, 2, 3]);
    assert_eq!(parse_seeds("3", Some(10)).unwrap(), vec![10, 11, 12]);
    assert_eq!(parse_seeds("5..8", None).unwrap(), vec![5, 6, 7]);
    assert_eq!(parse_seeds("5..=6", None).unwrap(), vec![5, 6]);
    assert!(parse_seeds("0", None).is_err());
    assert!(parse_seeds("x", None).is_err());
}
