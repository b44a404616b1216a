//! Reading a failing seed: with `SHOAL_SIM_TRACE=TEXT` in the environment, every table op a
//! core writes whose body mentions `TEXT` (a job such as `job-23`, a node such as `"n4"`) is
//! printed to stderr with the simulated time and the writer. With `SHOAL_SIM_TRACE_VIEW=n2,n4`
//! every change in those nodes' member views (a member's status; with a workload, also the
//! quorum and its reason) is printed the same way. Off by default: each variable is read once and the check costs one
//! branch per op or view change.

use std::sync::OnceLock;

use shoal_gossip::{MemberEvent, Millis, Quorum};
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

fn view_filter() -> Option<&'static [String]> {
    static FILTER: OnceLock<Option<Vec<String>>> = OnceLock::new();
    FILTER
        .get_or_init(|| {
            let names = std::env::var("SHOAL_SIM_TRACE_VIEW").ok()?;
            let names: Vec<String> = names
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect();
            (!names.is_empty()).then_some(names)
        })
        .as_deref()
}

/// Whether `node`'s view is traced.
pub(crate) fn view_traced(node: &str) -> bool {
    view_filter().is_some_and(|names| names.iter().any(|n| n == node))
}

/// Prints a status change in `node`'s member view (ads are left out: they change often and
/// say nothing about reachability).
pub(crate) fn member_event(now: Millis, node: &str, event: &MemberEvent) {
    if let MemberEvent::Status { id, from, to } = event
        && view_traced(node)
    {
        eprintln!(
            "{:>9.3} {node} view: {}#{} {from:?} -> {to:?}",
            now.0 as f64 / 1000.0,
            id.name,
            id.generation
        );
    }
}

/// Prints `node`'s quorum after it changed.
pub(crate) fn quorum(now: Millis, node: &str, q: &Quorum) {
    if view_traced(node) {
        eprintln!(
            "{:>9.3} {node} quorum: reaches {} of {}, majority {} since {:.3}{}{}{}",
            now.0 as f64 / 1000.0,
            q.reachable,
            q.known,
            q.majority,
            q.since.0 as f64 / 1000.0,
            q.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            if q.stalled { " stalled" } else { "" },
            if q.just_declared_down {
                " just-declared-down"
            } else {
                ""
            },
        );
    }
}
