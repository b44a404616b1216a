//! Rolling updates on the in-memory harness (`docs/services.md`, §4): versions and history,
//! the window rule across every slot coordinator, completion, failure by deadline with
//! auto-revert, canaries and promotion, and a manual revert.

use std::collections::BTreeSet;

use shoal_scheduler::testing::{Cluster, fast_config};
use shoal_scheduler::{AttemptId, CheckResult, JobSpec, TaskState};

fn job(version_tag: &str, extra: &str) -> JobSpec {
    JobSpec::from_toml_str(&format!(
        "id = \"web\"\ntype = \"service\"\ncount = 6\ncommand = \"serve\"\n\
         env = {{ TAG = \"{version_tag}\" }}\n\
         resources = {{ cpu = 100, memory = 32 }}\n\
         restart = {{ delay_ms = 100, backoff = 1.0 }}\n\
         [update]\nmax_parallel = 2\nmin_healthy_ms = 500\nhealthy_deadline_ms = 3000\n{extra}"
    ))
    .unwrap()
}

/// Slots whose live process (on any up node) runs: what a balancer could reach.
fn running(c: &Cluster) -> usize {
    c.nodes
        .values()
        .filter(|n| n.up)
        .flat_map(|n| n.running.keys())
        .filter(|id| id.job == "web")
        .map(|id| id.slot)
        .collect::<BTreeSet<u32>>()
        .len()
}

/// Every node's view: all 6 slots run version `v`.
fn all_on(c: &Cluster, v: u32) -> bool {
    c.nodes.keys().all(|n| {
        c.view(n, "web").is_some_and(|j| {
            j.tasks
                .iter()
                .all(|t| t.state == TaskState::Running && t.version == Some(v))
        })
    })
}

fn deployment_status(c: &Cluster, node: &str) -> String {
    c.view(node, "web")
        .and_then(|j| j.deployment)
        .map(|d| d.status)
        .unwrap_or_default()
}

/// Every attempt of the job any node knows.
fn attempts(c: &Cluster) -> BTreeSet<AttemptId> {
    c.nodes
        .values()
        .flat_map(|n| n.sched.tables().assignments().map(|(id, _)| id.clone()))
        .filter(|id| id.job == "web")
        .collect()
}

/// Slots replaced for the current deployment and not yet done, from the *true* state: an
/// attempt at its epoch in any node's tables that did not exist `before` the deployment (a
/// revert's epoch has old attempts), and the union of every node's `done`. What the
/// simulator's `always_max_parallel` checks (a slot whose new attempt ended and was placed
/// again counts once).
fn in_flight(c: &Cluster, before: &BTreeSet<AttemptId>) -> usize {
    let Some((inc, entry)) = c.nodes["n1"]
        .sched
        .tables()
        .job("web")
        .map(|(i, e)| (i, e.clone()))
    else {
        return 0;
    };
    let mut done = shoal_scheduler::table::SlotSet::default();
    let mut placed = BTreeSet::new();
    for n in c.nodes.values() {
        let t = n.sched.tables();
        if let Some(v) = t.version("web", inc, &entry.deployment) {
            done.union(&v.rollout.done);
        }
        for (id, a) in t.job_attempts("web", inc) {
            if a.epoch == entry.epoch && !before.contains(id) {
                placed.insert(id.slot);
            }
        }
    }
    placed.iter().filter(|s| !done.contains(**s)).count()
}

/// Runs up to `ms` of virtual time until `until`, asserting at every step that at most
/// `max` slots are in flight; returns the most seen.
fn run_checked(c: &mut Cluster, ms: u64, max: usize, until: impl Fn(&Cluster) -> bool) -> usize {
    let mut most = 0;
    let start = c.now.0;
    let before = attempts(c);
    while c.now.0 < start + ms {
        c.step();
        let now = in_flight(c, &before);
        most = most.max(now);
        assert!(now <= max, "{now} slots in flight at {:?}", c.now);
        if until(c) {
            return most;
        }
    }
    panic!(
        "not done after {ms} ms (most in flight {most}, running {})",
        running(c)
    );
}

#[test]
fn a_rolling_update_keeps_count_minus_max_parallel_and_completes() {
    let mut c = Cluster::with_config(5, 4000, 4096, 21, fast_config());
    c.submit("n1", job("v1", "")).unwrap();
    run_checked(&mut c, 20_000, 6, |c| {
        all_on(c, 1) && deployment_status(c, "n2") == "complete"
    });
    c.submit("n3", job("v2", "")).unwrap();
    let most = run_checked(&mut c, 30_000, 2, |c| {
        all_on(c, 2)
            && c.nodes
                .keys()
                .all(|n| deployment_status(c, n) == "complete")
    });
    assert_eq!(most, 2, "the window was used");
    // History on any node: two versions, both stable, v2 current.
    let history = c.nodes["n5"].sched.job_versions("web").unwrap();
    let got: Vec<(u32, bool, bool)> = history
        .iter()
        .map(|v| (v.version, v.stable, v.current))
        .collect();
    assert_eq!(got, vec![(1, true, false), (2, true, true)]);
    // An in-place change (count) keeps the version.
    let mut scaled = job("v2", "");
    scaled.count = 5;
    c.submit("n1", scaled).unwrap();
    assert!(c.run_until(5000, |c| {
        c.view("n4", "web").is_some_and(|j| j.tasks.len() == 5)
    }));
    assert_eq!(c.view("n4", "web").unwrap().job_version, 2);
}

/// Passes every check of running tasks whose job version is not `bad`, in every node's
/// executor, as a prober would.
fn probe(c: &mut Cluster, bad: u32) {
    let mut results: Vec<(String, AttemptId, CheckResult)> = Vec::new();
    for (name, n) in &c.nodes {
        let Some(view) = c.view(name, "web") else {
            continue;
        };
        for id in n.checks.keys().filter(|id| id.job == "web") {
            let version = view
                .tasks
                .iter()
                .find(|t| t.slot == id.slot && t.attempt == Some(id.attempt))
                .and_then(|t| t.version);
            if version.is_some_and(|v| v != bad) {
                results.push((name.clone(), id.clone(), CheckResult::Pass));
            } else if version == Some(bad) {
                results.push((
                    name.clone(),
                    id.clone(),
                    CheckResult::Fail("HTTP 500".into()),
                ));
            }
        }
    }
    for (node, id, r) in results {
        c.check_result(&node, &id, 0, r);
    }
}

const CHECK: &str = "[[checks]]\ntype = \"command\"\ncommand = \"/bin/check\"\n\
    interval_ms = 100\ntimeout_ms = 50\ngrace_ms = 60000\nfailures = 0\n";

fn run_probed(c: &mut Cluster, ms: u64, bad: u32, min: usize, until: impl Fn(&Cluster) -> bool) {
    let start = c.now.0;
    while c.now.0 < start + ms {
        for _ in 0..10 {
            c.step();
        }
        probe(c, bad);
        let healthy = c.view("n1", "web").map_or(0, |j| {
            j.tasks.iter().filter(|t| t.health.is_healthy()).count()
        });
        assert!(
            healthy >= min || c.now.0 < start + 100,
            "only {healthy} healthy at {:?}",
            c.now
        );
        if until(c) {
            return;
        }
    }
    panic!("not done after {ms} ms");
}

#[test]
fn a_failed_update_is_reverted_by_auto_revert() {
    let mut c = Cluster::with_config(5, 4000, 4096, 22, fast_config());
    let update = |tag: &str| job(tag, &format!("auto_revert = true\n{CHECK}"));
    c.submit("n1", update("v1")).unwrap();
    run_probed(&mut c, 20_000, 99, 0, |c| {
        deployment_status(c, "n1") == "complete"
    });
    c.submit("n2", update("v2")).unwrap();
    run_probed(&mut c, 30_000, 2, 4, |c| {
        let d = c.view("n1", "web").and_then(|j| j.deployment).unwrap();
        d.version == 3 && d.status == "complete" && all_on(c, 3)
    });
    // Version 3 is version 1's spec and epoch, made by the deterministic revert.
    let history = c.nodes["n3"].sched.job_versions("web").unwrap();
    let v: Vec<(u32, &str)> = history
        .iter()
        .map(|v| (v.version, v.status.as_str()))
        .collect();
    assert_eq!(v.len(), 3, "{v:?}");
    assert_eq!((v[0].1, v[2].1), ("complete", "complete"));
    assert!(v[1].1.starts_with("failed: slot"), "{v:?}");
    assert_eq!(history[2].node, "~revert");
    assert_eq!(history[2].epoch, history[0].epoch);
    assert_eq!(history[2].spec, history[0].spec);
    let d = c.view("n4", "web").unwrap().deployment.unwrap();
    assert_eq!((d.reverted_to, d.auto_reverted), (Some(1), Some(2)));
}

#[test]
fn canaries_wait_for_promote_and_a_manual_revert_goes_back() {
    let mut c = Cluster::with_config(5, 4000, 4096, 23, fast_config());
    let canary = |tag: &str| job(tag, "canary = 1\n");
    c.submit("n1", canary("v1")).unwrap();
    run_checked(&mut c, 20_000, 6, |c| {
        deployment_status(c, "n1") == "complete"
    });
    assert!(
        c.nodes
            .get_mut("n1")
            .unwrap()
            .sched
            .promote(c.now, "web")
            .is_err(),
        "nothing to promote"
    );
    c.submit("n2", canary("v2")).unwrap();
    run_checked(&mut c, 20_000, 1, |c| {
        deployment_status(c, "n3") == "awaiting promotion"
    });
    // Only the canary moved, and it stays so.
    c.run_for(2000, |_| {});
    let versions: Vec<Option<u32>> = c
        .view("n2", "web")
        .unwrap()
        .tasks
        .iter()
        .map(|t| t.version)
        .collect();
    assert_eq!(
        versions,
        vec![Some(2), Some(1), Some(1), Some(1), Some(1), Some(1)]
    );
    let now = c.now;
    assert_eq!(
        c.nodes.get_mut("n4").unwrap().sched.promote(now, "web"),
        Ok(2)
    );
    run_checked(&mut c, 30_000, 2, |c| {
        all_on(c, 2) && deployment_status(c, "n1") == "complete"
    });
    // A manual revert to version 1: version 3, no canaries, every slot back on v1's epoch.
    let now = c.now;
    let prepared = c
        .nodes
        .get_mut("n5")
        .unwrap()
        .sched
        .prepare_revert(now, "web", 1)
        .unwrap();
    match prepared {
        shoal_scheduler::Prepared::Write(w) => {
            c.nodes.get_mut("n5").unwrap().sched.commit(now, *w);
        }
        other => panic!("nothing written: {other:?}"),
    }
    run_checked(&mut c, 30_000, 2, |c| {
        all_on(c, 3) && deployment_status(c, "n2") == "complete"
    });
    let err = c
        .nodes
        .get_mut("n5")
        .unwrap()
        .sched
        .prepare_revert(now, "web", 7);
    assert!(err.is_err_and(|e| e.to_string().contains("has no version 7 (kept: 1, 2, 3)")));
}

/// Both sides of a cut number their next version alike: after the heal a revert to that
/// number is refused, naming both epochs, and the history keeps both (`docs/services.md`,
/// "revert refuses an ambiguous number").
#[test]
fn a_number_given_on_both_sides_of_a_cut_is_refused_as_ambiguous() {
    let mut c = Cluster::with_config(5, 4000, 4096, 11, fast_config());
    c.submit("n1", job("v1", "")).unwrap();
    assert!(c.run_until(20_000, |c| all_on(c, 1) && c.converged()));
    c.partition(&[&["n1", "n2", "n3"], &["n4", "n5"]]);
    c.submit("n1", job("v2-large", "")).unwrap();
    c.submit("n4", job("v2-small", "")).unwrap();
    c.run_for(2_000, |_| {});
    for side in ["n1", "n4"] {
        assert_eq!(c.view(side, "web").unwrap().job_version, 2, "{side}");
    }
    c.heal();
    assert!(c.run_until(30_000, |c| c.converged()));
    let numbers: Vec<u32> = c.nodes["n5"]
        .sched
        .job_versions("web")
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(numbers, [1, 2, 2], "the history keeps both");
    let now = c.now;
    let n2 = &mut c.nodes.get_mut("n2").unwrap().sched;
    let err = n2.prepare_revert(now, "web", 2).unwrap_err().to_string();
    assert!(
        err.contains("version 2 of job `web` is ambiguous: epochs ")
            && err.contains("submit the spec you want instead"),
        "{err}"
    );
    assert_eq!(err.matches(", ").count(), 1, "two epochs named: {err}");
    assert!(n2.prepare_revert(now, "web", 1).is_ok(), "version 1 is one");
}
