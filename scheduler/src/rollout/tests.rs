//! The window rule under many deciders with stale views, and the auto-revert stamp.

use proptest::prelude::*;

use super::*;
use crate::hash::Rng;

/// A slot of the model: still on the old version, replaced and not yet done, or done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Old,
    InFlight,
    Done,
}

/// Runs a rollout of `count` slots under `deciders` coordinators, each deciding from a
/// stale snapshot of `done` (any earlier prefix of its history), with slots finishing in a
/// random order; returns the most slots ever in flight. `rule` decides one slot from one
/// view, as [`window_allows`] does.
fn run(
    seed: u64,
    count: u32,
    deciders: usize,
    rule: impl Fn(&SlotSet, u32, &[Slot]) -> bool,
) -> (usize, bool) {
    let mut rng = Rng::new(seed);
    let mut slots = vec![Slot::Old; count as usize];
    // Every value `done` took, oldest first: a view is one of them.
    let mut history = vec![SlotSet::default()];
    let mut seen = vec![0usize; deciders];
    let mut worst = 0;
    for _ in 0..(count as usize * 40) {
        let in_flight: Vec<u32> = (0..count)
            .filter(|s| slots[*s as usize] == Slot::InFlight)
            .collect();
        if !in_flight.is_empty() && rng.below(3) == 0 {
            // Some replaced slot becomes done (any order).
            let s = in_flight[rng.below(in_flight.len() as u64) as usize];
            slots[s as usize] = Slot::Done;
            let mut next = history.last().cloned().unwrap_or_default();
            next.union(&SlotSet::one(s));
            history.push(next);
            continue;
        }
        // A decider looks at a view no older than the one it saw last (views only move
        // forward on one replica) and tries one old slot.
        let d = rng.below(deciders as u64) as usize;
        let newest = history.len() - 1;
        seen[d] += rng.below((newest - seen[d]) as u64 + 1) as usize;
        let view = &history[seen[d]];
        let s = rng.below(u64::from(count)) as u32;
        if slots[s as usize] == Slot::Old && rule(view, s, &slots) {
            slots[s as usize] = Slot::InFlight;
        }
        let now = slots.iter().filter(|x| **x == Slot::InFlight).count();
        worst = worst.max(now);
    }
    // Then the views catch up and every replaced slot finishes: the rule must let the rest
    // through (liveness), still within the bound.
    for _ in 0..=count {
        let mut next = history.last().cloned().unwrap_or_default();
        for (s, x) in slots.iter_mut().enumerate() {
            if *x == Slot::InFlight {
                *x = Slot::Done;
                next.union(&SlotSet::one(s as u32));
            }
        }
        for s in 0..count {
            if slots[s as usize] == Slot::Old && rule(&next, s, &slots) {
                slots[s as usize] = Slot::InFlight;
            }
        }
        worst = worst.max(slots.iter().filter(|x| **x == Slot::InFlight).count());
        history.push(next);
    }
    let finished = slots.iter().all(|x| *x == Slot::Done);
    (worst, finished)
}

fn window(mp: u32) -> impl Fn(&SlotSet, u32, &[Slot]) -> bool {
    move |done, s, _| {
        window_allows(
            &Window {
                max_parallel: mp,
                canary: 0,
                done,
                promoted: false,
                failed: false,
            },
            s,
        )
    }
}

proptest! {
    #[test]
    fn in_flight_never_exceeds_max_parallel_under_stale_views(
        seed in any::<u64>(),
        count in 1u32..24,
        mp in 1u32..5,
        deciders in 1usize..6,
    ) {
        let (worst, finished) = run(seed, count, deciders, window(mp));
        prop_assert!(worst <= mp as usize, "{worst} in flight with max_parallel {mp}");
        // And the rule does not stall: with enough steps every slot gets replaced.
        prop_assert!(finished, "the rollout stalled");
    }
}

#[test]
fn the_property_bites_a_rule_that_counts_in_flight_in_its_own_view() {
    // A coordinator that allows a slot while fewer than `mp` slots below it are replaced and
    // not done *in its view* (the rejected alternative of §9) exceeds `mp` with stale views.
    let mp = 2;
    let naive = move |done: &SlotSet, s: u32, slots: &[Slot]| {
        let started_below = (0..s).filter(|k| slots[*k as usize] != Slot::Old).count() as u32;
        started_below.saturating_sub(done.count_below(s)) < mp
    };
    let exceeded = (0..200).any(|seed| run(seed, 12, 4, naive).0 > mp as usize);
    assert!(
        exceeded,
        "the checker never saw a naive rule exceed max_parallel"
    );
}

#[test]
fn canaries_wait_for_promotion_and_failure_stops_everything() {
    let done = SlotSet::default();
    let w = Window {
        max_parallel: 2,
        canary: 1,
        done: &done,
        promoted: false,
        failed: false,
    };
    assert!(window_allows(&w, 0));
    assert!(!window_allows(&w, 1), "slot 1 waits for the promotion");
    let promoted = Window {
        promoted: true,
        ..w
    };
    assert!(window_allows(&promoted, 1));
    assert!(!window_allows(&promoted, 2), "slot 0 is not done yet");
    let failed = Window {
        failed: true,
        ..promoted
    };
    assert!(!window_allows(&failed, 0));
}

#[test]
fn the_revert_stamp_is_the_same_on_every_coordinator_and_after_the_write() {
    let stamp = Stamp {
        hlc: Hlc {
            wall_ms: 50,
            logical: 3,
        },
        actor: ActorId {
            node: "n1".into(),
            start: 9,
        },
    };
    let spec = crate::spec::JobSpec::from_toml_str(
        "id = \"j\"\ntype = \"service\"\ncommand = \"x\"\nresources = { cpu = 1, memory = 1 }\n",
    )
    .unwrap();
    let entry = JobEntry {
        stamp: stamp.clone(),
        epoch: stamp.clone(),
        spec,
        stopped: false,
        deployment: stamp.clone(),
        version: 3,
        skip_canary: false,
    };
    let a = revert_stamp(&entry);
    assert_eq!(a, revert_stamp(&entry.clone()));
    assert!(a > stamp);
    assert_eq!(a.actor.node.as_str(), "~revert");
}
