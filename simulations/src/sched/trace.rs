//! Reading a failing seed: with `SHOAL_SIM_TRACE=TEXT` in the environment, every table op a
//! core writes whose body mentions `TEXT` (a job such as `job-23`, a node such as `"n4"`) is
//! printed to stderr with the simulated time and the writer. Off by default: the variable is
//! read once and the check costs one branch per op.

use std::sync::OnceLock;

use shoal_gossip::Millis;
use shoal_scheduler::table::Op;

fn filter() -> Option<&'static str> {
    static FILTER: OnceLock<Option<String>> = OnceLock::new();
    FILTER
        .get_or_init(|| {
            std::env::var("SHOAL_SIM_TRACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .as_deref()
}

/// Prints `op` if it mentions the traced text.
pub(super) fn own_op(now: Millis, node: &str, op: &Op) {
    let Some(text) = filter() else {
        return;
    };
    let body = format!("{:?}", op.body);
    if body.contains(text) {
        eprintln!("{:>9.3} {node} {body}", now.0 as f64 / 1000.0);
    }
}
