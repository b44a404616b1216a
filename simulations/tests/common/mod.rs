//! What the checker tests share.

use shoal_simulations::{CheckResult, Report, Scenario};

/// Announces to down members every 15 s, the default until session 31 (finding 13 of
/// `docs/simulator.md`), for a seed that pins a finding: it was found under 15 s, and at 3 s
/// the views re-merge sooner and the run may no longer reach the moment it pins, so a
/// regression would pass.
#[allow(dead_code)] // not every test binary that shares this module pins a finding
pub fn as_found(s: &mut Scenario) {
    s.membership.announce_down_period_ms = Some(15_000);
}

/// The result of checker `name` in `r`; panics when the report has no such checker.
pub fn check<'a>(r: &'a Report, name: &str) -> &'a CheckResult {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no checker {name}"))
}
