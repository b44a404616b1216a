//! A real core on the in-memory harness: a canary rollout, its promotion, a manual revert
//! and a failed update's auto-revert, told by one replica's events.

use std::num::NonZeroUsize;

use crate::events::{DeploymentChange as C, SchedEvent};
use crate::testing::{Cluster, fast_config};
use crate::{CheckResult, JobSpec, Prepared};

fn job(tag: &str, extra: &str) -> JobSpec {
    JobSpec::from_toml_str(&format!(
        "id = \"web\"\ntype = \"service\"\ncount = 3\ncommand = \"serve\"\n\
         env = {{ TAG = \"{tag}\" }}\n\
         resources = {{ cpu = 100, memory = 32 }}\n\
         restart = {{ delay_ms = 100, backoff = 1.0 }}\n\
         [update]\nmax_parallel = 1\nmin_healthy_ms = 300\nhealthy_deadline_ms = 2000\n{extra}"
    ))
    .unwrap()
}

fn cluster(seed: u64) -> Cluster {
    let config = crate::SchedulerConfig {
        event_queue: NonZeroUsize::new(100_000),
        ..fast_config()
    };
    Cluster::with_config(3, 4000, 4096, seed, config)
}

fn status(c: &Cluster) -> String {
    c.view("n2", "web")
        .and_then(|j| j.deployment)
        .map(|d| format!("{} {}", d.version, d.status))
        .unwrap_or_default()
}

/// n3's rollout events so far, as short strings.
fn told(c: &mut Cluster) -> Vec<String> {
    let mut out = Vec::new();
    let node = c.nodes.get_mut("n3").unwrap();
    while let Some(e) = node.sched.poll_event() {
        match e {
            SchedEvent::VersionCreated { version, .. } => out.push(format!("v{version} created")),
            SchedEvent::Deployment {
                version, change, ..
            } => out.push(match change {
                C::Started {
                    max_parallel,
                    canary,
                    ..
                } => format!("v{version} started mp{max_parallel} canary{canary}"),
                C::SlotDone { slot } => format!("v{version} slot {slot} done"),
                C::AwaitingPromotion => format!("v{version} awaiting promotion"),
                C::Promoted => format!("v{version} promoted"),
                C::Failed { reason } => format!("v{version} failed: {reason}"),
                C::Completed => format!("v{version} completed"),
                C::Reverted { from, to, auto } => {
                    format!("v{version} reverted from {from:?} to {to:?} auto {auto}")
                }
            }),
            _ => {}
        }
    }
    out
}

fn slots_done(version: u32) -> Vec<String> {
    (0..3)
        .map(|s| format!("v{version} slot {s} done"))
        .collect()
}

/// The events of one version's rollout, its slots done in any order.
fn sorted_slots(mut events: Vec<String>) -> Vec<String> {
    let first = events.iter().position(|e| e.contains("slot"));
    let last = events.iter().rposition(|e| e.contains("slot"));
    if let (Some(a), Some(b)) = (first, last) {
        events[a..=b].sort();
    }
    events
}

#[test]
fn a_canary_rollout_its_promotion_and_a_revert_are_told_in_order() {
    let mut c = cluster(31);
    c.submit("n1", job("v1", "canary = 1\n")).unwrap();
    assert!(c.run_until(20_000, |c| status(c) == "1 complete"));
    // A first version replaces nothing, so all its slots start at once; once its canary is
    // done the phase (as `job status` shows it) is "awaiting promotion" until the rest are.
    let mut first = told(&mut c);
    first.retain(|e| e != "v1 awaiting promotion");
    let mut want = vec![
        "v1 created".to_string(),
        "v1 started mp1 canary1".to_string(),
    ];
    want.extend(slots_done(1));
    want.push("v1 completed".into());
    assert_eq!(sorted_slots(first), want);

    c.submit("n2", job("v2", "canary = 1\n")).unwrap();
    assert!(c.run_until(20_000, |c| status(c) == "2 awaiting promotion"));
    c.run_for(1000, |_| {});
    let canary_done = told(&mut c);
    assert_eq!(canary_done[..2], ["v2 created", "v2 started mp1 canary1"]);
    assert_eq!(canary_done[3..], ["v2 awaiting promotion"]);
    assert!(canary_done[2].ends_with("done"), "{canary_done:?}");
    let now = c.now;
    c.nodes
        .get_mut("n1")
        .unwrap()
        .sched
        .promote(now, "web")
        .unwrap();
    assert!(c.run_until(20_000, |c| status(c) == "2 complete"));
    let rest = told(&mut c);
    assert_eq!(rest.first().map(String::as_str), Some("v2 promoted"));
    assert_eq!(rest.last().map(String::as_str), Some("v2 completed"));
    assert_eq!(rest.len(), 4, "promoted, two slots, completed: {rest:?}");

    let now = c.now;
    let n1 = &mut c.nodes.get_mut("n1").unwrap().sched;
    let Prepared::Write(w) = n1.prepare_revert(now, "web", 1).unwrap() else {
        panic!("a revert writes");
    };
    n1.commit(now, *w);
    assert!(c.run_until(20_000, |c| status(c) == "3 complete"));
    let mut want = vec![
        "v3 created".to_string(),
        "v3 started mp1 canary0".to_string(),
        "v3 reverted from Some(2) to Some(1) auto false".to_string(),
    ];
    want.extend(slots_done(3));
    want.push("v3 completed".into());
    let got = told(&mut c);
    assert_eq!(sorted_slots(got), want);
    // Quiet once complete: nothing is told twice.
    c.run_for(2000, |_| {});
    assert_eq!(told(&mut c), Vec::<String>::new());
}

#[test]
fn a_failed_update_and_its_auto_revert_are_told() {
    let mut c = cluster(32);
    let failing = "auto_revert = true\n[[checks]]\ntype = \"command\"\n\
        command = \"/bin/check\"\ninterval_ms = 100\ntimeout_ms = 50\ngrace_ms = 60000\n\
        failures = 0\n";
    c.submit("n1", job("v1", failing)).unwrap();
    let pass_all_but = |c: &mut Cluster, bad: u32| {
        let mut results = Vec::new();
        for (name, n) in &c.nodes {
            let Some(view) = c.view(name, "web") else {
                continue;
            };
            for id in n.checks.keys() {
                let version = view
                    .tasks
                    .iter()
                    .find(|t| t.slot == id.slot && t.attempt == Some(id.attempt))
                    .and_then(|t| t.version);
                let result = if version == Some(bad) {
                    CheckResult::Fail("HTTP 500".into())
                } else {
                    CheckResult::Pass
                };
                results.push((name.clone(), id.clone(), result));
            }
        }
        for (node, id, r) in results {
            c.check_result(&node, &id, 0, r);
        }
    };
    let run = |c: &mut Cluster, bad: u32, until: &str| {
        for _ in 0..3000 {
            for _ in 0..10 {
                c.step();
            }
            pass_all_but(c, bad);
            if status(c) == until {
                return;
            }
        }
        panic!("not {until}: {}", status(c));
    };
    run(&mut c, 99, "1 complete");
    told(&mut c);
    c.submit("n2", job("v2", failing)).unwrap();
    run(&mut c, 2, "3 complete");
    let events = told(&mut c);
    let failed = events
        .iter()
        .position(|e| e.starts_with("v2 failed: slot"))
        .unwrap_or_else(|| panic!("{events:?}"));
    let revert = events
        .iter()
        .position(|e| e == "v3 reverted from Some(2) to Some(1) auto true")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert!(failed < revert, "{events:?}");
    assert_eq!(events[..2], ["v2 created", "v2 started mp1 canary0"]);
    assert_eq!(events.last().map(String::as_str), Some("v3 completed"));
    assert!(!events.iter().any(|e| e == "v2 completed"), "{events:?}");
}
