//! What the checker tests share.

use shoal_simulations::{CheckResult, Report};

/// The result of checker `name` in `r`; panics when the report has no such checker.
pub fn check<'a>(r: &'a Report, name: &str) -> &'a CheckResult {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no checker {name}"))
}
