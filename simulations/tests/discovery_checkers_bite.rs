//! The discovery checkers (`always_discovery_live_healthy`, `eventually_discovery_complete`)
//! and the overlap bound of `always_max_parallel` on `services-rolling-hang`: the honest run
//! passes them, and each deliberate bug in how catalogs are built or checks are reported is
//! caught. `docs/simulator.md` ("Discovery") says what each shows, and which mutations of the
//! core's own catalog and health code were checked by hand.

mod common;

use std::path::Path;

use shoal_simulations::{Report, Sabotage, Scenario, Status, simulate};

use common::check;

fn scenario(path: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    Scenario::load(&path).expect("scenario loads")
}

fn run(seed: u64, sabotage: Sabotage) -> Report {
    let s = scenario("scenarios/services-rolling-hang.toml");
    simulate(&s, seed, sabotage, "test".into(), &mut |_| {}).expect("runs")
}

/// The seed of a finding run as it was found ([`common::as_found`]).
fn found_at(mut s: Scenario, seed: u64) -> Report {
    common::as_found(&mut s);
    simulate(&s, seed, Sabotage::None, "test".into(), &mut |_| {}).expect("runs")
}

#[test]
fn honest_services_run_passes_and_overlapping_deployments_are_seen() {
    let r = run(1, Sabotage::None);
    assert!(r.passed(), "{:?}", r.first_failure);
    for name in [
        "always_discovery_live_healthy",
        "eventually_discovery_complete",
        "always_ports_unique",
        "always_max_parallel",
        "eventually_rollouts_settle",
    ] {
        assert_eq!(
            check(&r, name).status,
            Status::Pass,
            "{:?}",
            check(&r, name)
        );
    }
    let live = check(&r, "always_discovery_live_healthy").detail.clone();
    assert!(live.contains("10 tasks hung"), "{live}");
    // The superseding submissions 3 s after each update overlap two deployments of a job.
    let mp = check(&r, "always_max_parallel").detail.clone();
    assert!(
        !mp.contains(" 0 pairs of one job's deployments overlapped"),
        "{mp}"
    );
}

#[test]
fn hung_tasks_reported_healthy_are_caught() {
    // The executor swallows failed probes: the hung tasks stay `Passing` in every replica,
    // and every catalog lists them while their process no longer answers.
    let r = run(1, Sabotage::ChecksAlwaysPass);
    let c = check(&r, "always_discovery_live_healthy");
    assert_eq!(c.status, Status::Fail, "{c:?}");
    // A bad version's task is caught as well as a hung one: both fail their checks.
    assert!(
        c.detail.contains("as healthy, but its process"),
        "{}",
        c.detail
    );
}

#[test]
fn a_catalog_that_misses_table_touches_is_caught() {
    // The production `CatalogBuilder` fed the core's changes without its table touches: a
    // health change or a new instance reaches a catalog only when a member's status change
    // rebuilds every service.
    let r = run(1, Sabotage::CatalogMissesTouches);
    let live = check(&r, "always_discovery_live_healthy");
    let complete = check(&r, "eventually_discovery_complete");
    assert_eq!(live.status, Status::Fail, "{live:?}");
    assert_eq!(complete.status, Status::Fail, "{complete:?}");
}

#[test]
fn finding_14_a_renewed_identity_keeps_its_tasks() {
    // 16 nodes, rolling updates, a partition from 100 s to 140 s. After the heal every node
    // learns the other side declared it down and renews its identity; without foca patch 7
    // their messages went to identities their peers had just left and were dropped, n9
    // learnt n13's new identity only through an announce, its down mark of the old one
    // outlived `settle_ms`, and it condemned job-26/4, which n13 had run since 114.6 s as
    // its slot's only copy (views converged 22 s after the heal; 6 s with the patch). The
    // seed failed at `97a1d4d` and passes with patch 7 (`vendor/README.md`).
    let r = found_at(scenario("scenarios/rolling-updates.toml"), 52);
    let c = check(&r, "always_majority_tasks_kept");
    assert_eq!(c.status, Status::Pass, "{c:?}");
}

#[test]
fn finding_15_a_duplicate_started_at_a_cut_stays_within_its_bound() {
    // 16 nodes, 5 | 11 from 100 s: a node of the five that placed a copy just after the cut
    // saw its majority go only after marking enough of the eleven down one probe period at a
    // time, and its `stop_after_ms` clock ran from then: 15.2 s of two copies at `8b52caf`,
    // over the 15.0 s bound. The quorum now dates a loss back to its first sign
    // (`gossip/src/membership/quorum.rs`, `loss_began`; its unit test
    // `a_loss_dates_back_to_its_first_sign_within_settle` fails without it).
    let r = found_at(scenario("tests/fixtures/finding-14.toml"), 46);
    let c = check(&r, "always_duplicates_bounded");
    assert_eq!(c.status, Status::Pass, "{c:?}");
}

#[test]
fn finding_17_a_floor_never_folds_an_attempt_its_coordinator_has_not_seen() {
    // 10 nodes, rolling updates, hangs, a partition healed at 140 s. n8 places attempt 5 of
    // job-12/7 on n4, which runs it from 149.3 s; n2, the slot's other coordinator through the
    // heal, has not heard of it yet, and n4 and n5 turn down its attempts 6 to 9 as superseded.
    // Its history then passed `attempt_history`, and at 150.7 s n2 folded every attempt below 6
    // into the slot's floor, n4's unseen running attempt 5 with them: n4 killed the slot's only
    // copy as superseded. Red from `8ec8d69` (which shifted the timing) to `5443f53`; a
    // coordinator now folds nothing while its newest attempt was turned down as superseded and
    // it knows no live attempt of the slot (`gc.rs`, `maybe_compact`).
    let r = found_at(scenario("scenarios/services-rolling-hang.toml"), 20);
    let c = check(&r, "always_majority_tasks_kept");
    assert_eq!(c.status, Status::Pass, "{c:?}");
}
