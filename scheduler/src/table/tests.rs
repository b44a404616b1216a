//! Unit and property tests of the tables, the replica and its usage index.

use std::collections::{BTreeMap, BTreeSet};

use crdts::{CmRDT, CvRDT};
use serde::Serialize;
use shoal_gossip::Resources;

use super::lattice::JobMap;
use super::replica::{Received, Replica, ReplicaLimits};
use super::wire::flat_jobs;
use super::*;
use crate::ids::{ActorId, AttemptId, Dot, Hlc, SlotKey, Stamp, VersionVector};
use crate::spec::JobSpec;
use crate::spec::{JobType, ResourceRequest};
use proptest::prelude::*;

fn actor(n: u8) -> ActorId {
    ActorId {
        node: format!("n{n}").into(),
        start: 7,
    }
}

fn spec(id: &str, count: u32) -> JobSpec {
    JobSpec::from_json_str(&format!(
        r#"{{"id": "{id}", "type": "service", "count": {count}, "command": "x", "resources": {{"cpu": 1, "memory": 1}}}}"#
    ))
    .unwrap()
}

fn stamp(a: u8, t: u64) -> Stamp {
    Stamp {
        hlc: Hlc {
            wall_ms: t,
            logical: 0,
        },
        actor: actor(a),
    }
}

fn at(wall_ms: u64) -> Hlc {
    Hlc {
        wall_ms,
        logical: 0,
    }
}

fn attempt(job: u8, inc: u64, slot: u32, n: u32, placer: u8) -> AttemptId {
    AttemptId {
        job: format!("j{job}").into(),
        incarnation: inc,
        slot,
        attempt: n,
        placer: format!("n{placer}").into(),
    }
}

/// A small op vocabulary over a tiny key space so collisions (the interesting part) happen.
fn arb_body(writer: u8, t: u64) -> impl Strategy<Value = OpBody> {
    let job = (0u8..2, 0u64..2, 1u32..4, any::<bool>(), 0u64..3).prop_map(
        move |(j, inc, count, stopped, dep)| {
            let st = stamp(writer, t);
            // `dep == 0`: the write starts a deployment (and carries a version row).
            let deployment = if dep == 0 { st.clone() } else { stamp(0, dep) };
            OpBody::Job {
                incarnation: inc,
                entry: JobEntry {
                    stamp: st.clone(),
                    epoch: deployment.clone(),
                    spec: spec(&format!("j{j}"), count),
                    stopped,
                    deployment,
                    version: u32::from(j) + count,
                    skip_canary: stopped,
                },
            }
        },
    );
    let marks = (
        (0u8..2, 0u64..2, 0u32..2, 1u32..4, 0u8..2),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |((j, i, s, n, p), settled, deadline_missed)| OpBody::Milestones {
                id: attempt(j, i, s, n, p),
                marks: Milestones {
                    settled,
                    deadline_missed,
                },
            },
        );
    let rollout = (0u8..2, 0u64..2, 0u64..3, 0u32..4, 0u8..3, any::<bool>()).prop_map(
        |(j, i, dep, slot, failed, flag)| OpBody::Rollout {
            job: format!("j{j}"),
            incarnation: i,
            deployment: stamp(0, dep),
            rollout: Rollout {
                done: SlotSet::one(slot),
                failed: (failed > 0).then(|| Failure {
                    slot,
                    reason: format!("r{failed}"),
                }),
                promoted: flag,
                complete: !flag && slot == 3,
            },
        },
    );
    let key = (0u8..2, 0u64..2, 0u32..2, 1u32..4, 0u8..2);
    let assign =
        (key.clone(), 0u8..3, 1u64..5).prop_map(|((j, i, s, n, p), target, cpu)| OpBody::Assign {
            id: attempt(j, i, s, n, p),
            assignment: Assignment {
                target: format!("n{target}").into(),
                resources: Resources {
                    cpu_millicores: cpu,
                    memory_mib: 1,
                    disk_mib: 0,
                },
                epoch: stamp(0, 1),
                generation: 0,
            },
        });
    let binding = (key.clone(), 0u8..2, 20000u16..20003).prop_map(|((j, i, s, n, p), ip, port)| {
        OpBody::Binding {
            id: attempt(j, i, s, n, p),
            binding: Binding {
                ip: std::net::IpAddr::from([127, 0, 0, 1 + ip]),
                ports: vec![("http".into(), port)],
            },
        }
    });
    let health = (key.clone(), 0u64..4, 0u8..3, 0u8..3, 0u8..2).prop_map(
        |((j, i, s, n, p), t, w, status, note)| OpBody::Health {
            id: attempt(j, i, s, n, p),
            health: Health {
                // Few stamps, so that equal stamps with different values (a buggy peer) occur.
                stamp: stamp(w, t),
                status: [
                    HealthStatus::Unknown,
                    HealthStatus::Passing,
                    HealthStatus::Critical,
                ][usize::from(status)],
                note: if note == 0 {
                    String::new()
                } else {
                    "check ready: HTTP 503".into()
                },
                failures: u32::from(note),
                limit: 3,
            },
        },
    );
    let state = (key, 0u8..8, -1i32..2, 0u64..3).prop_map(|((j, i, s, n, p), k, code, at)| {
        OpBody::State {
            id: attempt(j, i, s, n, p),
            state: match k {
                0 => AttemptState::Admitted,
                // Two starts of one attempt with different stamps (a buggy or restarted writer)
                // must still join.
                1 => AttemptState::Running {
                    round: u32::from(code == 1),
                    since: Hlc {
                        wall_ms: at,
                        logical: 0,
                    },
                },
                2 => AttemptState::Lost {
                    round: u32::from(code == 1),
                },
                3 => AttemptState::Killed,
                4 => AttemptState::Failed { reason: "x".into() },
                5 => AttemptState::Rejected { reason: "y".into() },
                6 if code == 0 => AttemptState::Drained,
                _ => AttemptState::Exited { code },
            },
        }
    });
    let floor =
        (0u8..2, 0u64..2, 0u32..2, 1u32..4, 0u32..3).prop_map(|(j, i, s, below, failures)| {
            OpBody::Floor {
                slot: SlotKey {
                    job: format!("j{j}").into(),
                    incarnation: i,
                    slot: s,
                },
                floor: SlotFloor { below, failures },
            }
        });
    let purge = (0u8..2, 0u64..2).prop_map(|(j, i)| OpBody::Purge {
        job: format!("j{j}"),
        incarnation: i,
    });
    // Few stamps, so that equal stamps with different intents (a buggy peer) occur.
    let node = (0u8..2, 0u64..3, 0u8..3, 0u64..3, any::<bool>()).prop_map(
        move |(n, t, kind, deadline, done)| OpBody::Node {
            node: format!("n{n}").into(),
            row: crate::table::NodeRow {
                intent: (kind > 0).then(|| crate::table::NodeIntent {
                    stamp: stamp(writer, t),
                    eligible: kind == 1,
                    drain: (kind == 2).then_some(crate::table::DrainSpec {
                        deadline_ms: (deadline > 0).then_some(deadline * 1000),
                    }),
                }),
                progress: (kind == 0).then(|| crate::table::DrainProgress {
                    drain: stamp(0, t),
                    done,
                }),
            },
        },
    );
    prop_oneof![
        2 => node,
        3 => job,
        4 => assign,
        5 => state,
        2 => binding,
        2 => health,
        2 => marks,
        2 => rollout,
        1 => floor,
        1 => purge
    ]
}

/// Per-actor op sequences for three actors, with dots 1..=n and unique stamps.
fn arb_history() -> impl Strategy<Value = Vec<Vec<Op>>> {
    (0u8..3)
        .map(|w| {
            prop::collection::vec(any::<u16>(), 0..12).prop_flat_map(move |ts| {
                ts.into_iter()
                    .enumerate()
                    .map(|(i, _)| arb_body(w, i as u64 + 1))
                    .collect::<Vec<_>>()
                    .prop_map(move |bodies| {
                        bodies
                            .into_iter()
                            .enumerate()
                            .map(|(i, body)| Op::new(Dot::new(actor(w), i as u64 + 1), body))
                            .collect::<Vec<_>>()
                    })
            })
        })
        .collect::<Vec<_>>()
}

/// A replica state that saw a prefix of each actor's ops, interleaved by `order`.
fn state_from(history: &[Vec<Op>], cuts: &[usize], order: &[u8]) -> Tables {
    let mut t = Tables::default();
    let mut next = vec![0usize; history.len()];
    for &pick in order {
        let a = pick as usize % history.len();
        let limit = cuts[a].min(history[a].len());
        if next[a] < limit {
            t.apply(history[a][next[a]].clone());
            next[a] += 1;
        }
    }
    for a in 0..history.len() {
        let limit = cuts[a].min(history[a].len());
        while next[a] < limit {
            t.apply(history[a][next[a]].clone());
            next[a] += 1;
        }
    }
    t
}

fn merged(mut a: Tables, b: &Tables) -> Tables {
    a.merge(b.clone());
    a
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_is_a_semilattice(
        h in arb_history(),
        cuts in prop::collection::vec(prop::collection::vec(0usize..13, 3), 3),
        orders in prop::collection::vec(prop::collection::vec(0u8..3, 0..40), 3),
    ) {
        let a = state_from(&h, &cuts[0], &orders[0]);
        let b = state_from(&h, &cuts[1], &orders[1]);
        let c = state_from(&h, &cuts[2], &orders[2]);
        prop_assert_eq!(merged(a.clone(), &b), merged(b.clone(), &a));
        prop_assert_eq!(merged(merged(a.clone(), &b), &c), merged(a.clone(), &merged(b.clone(), &c)));
        prop_assert_eq!(merged(a.clone(), &a), a.clone());
        // State merge equals applying the union of the ops both saw.
        let union: Vec<usize> = (0..3).map(|i| cuts[0][i].max(cuts[1][i])).collect();
        prop_assert_eq!(merged(a, &b), state_from(&h, &union, &[]));
    }

    #[test]
    fn tables_encode_as_separate_assignment_and_state_maps(
        h in arb_history(),
        order in prop::collection::vec(0u8..3, 0..40),
    ) {
        // The layout `Tables` had when assignments and states were two maps, plus the
        // `bindings` map appended by snapshot format 2, `health` by format 3, `milestones`
        // and `versions` by format 4: snapshots and `State` messages must keep exactly these
        // bytes.
        #[derive(Serialize)]
        struct TwoMaps<'a> {
            #[serde(serialize_with = "flat_jobs::serialize")]
            jobs: &'a JobMap,
            assignments: BTreeMap<&'a AttemptId, &'a Assignment>,
            states: BTreeMap<&'a AttemptId, &'a AttemptState>,
            floors: &'a BTreeMap<SlotKey, SlotFloor>,
            purged: &'a BTreeSet<JobKey>,
            clock: &'a VersionVector,
            bindings: BTreeMap<&'a AttemptId, &'a Binding>,
            health: BTreeMap<&'a AttemptId, &'a Health>,
            milestones: BTreeMap<&'a AttemptId, Milestones>,
            versions: BTreeMap<(&'a str, u64), BTreeMap<&'a Stamp, &'a VersionEntry>>,
            nodes: BTreeMap<&'a crate::ids::Name, &'a crate::table::NodeRow>,
        }
        let t = state_from(&h, &[usize::MAX; 3], &order);
        let old = TwoMaps {
            jobs: &t.jobs,
            assignments: t.assignments().collect(),
            states: t.states().collect(),
            floors: &t.floors,
            purged: &t.purged,
            clock: &t.clock,
            bindings: t.bindings().collect(),
            health: t.healths().collect(),
            milestones: t.all_milestones().collect(),
            versions: t.all_versions().fold(BTreeMap::new(), |mut m, ((j, i, d), v)| {
                m.entry((j, i)).or_insert_with(BTreeMap::new).insert(d, v);
                m
            }),
            nodes: t.nodes().collect(),
        };
        let bytes = postcard::to_stdvec(&t).unwrap();
        prop_assert_eq!(&bytes, &postcard::to_stdvec(&old).unwrap());
        prop_assert_eq!(postcard::from_bytes::<Tables>(&bytes).unwrap(), t);
    }

    #[test]
    fn any_causal_order_gives_the_same_table(
        h in arb_history(),
        o1 in prop::collection::vec(0u8..3, 0..40),
        o2 in prop::collection::vec(0u8..3, 0..40),
    ) {
        let all = [usize::MAX; 3];
        prop_assert_eq!(state_from(&h, &all, &o1), state_from(&h, &all, &o2));
    }

    #[test]
    fn replica_buffers_out_of_order_ops(
        h in arb_history(),
        seed in any::<u64>(),
        hold in any::<bool>(),
    ) {
        // Deliver all ops in a random (not causal) order with duplicates; the replica must
        // end equal to in-order application.
        let mut ops: Vec<Op> = h.iter().flatten().cloned().collect();
        ops.extend(h.iter().flatten().take(5).cloned());
        let mut rng = crate::hash::Rng::new(seed);
        for i in (1..ops.len()).rev() {
            ops.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let limits = ReplicaLimits { log_per_actor: 100, pending_per_actor: 100, hold_releases: hold };
        let mut r = Replica::new(Tables::default(), limits);
        let mut opened = BTreeSet::new();
        for op in ops {
            let (before, releases) = (r.usage.by_node.clone(), r.releases());
            r.receive(op);
            opened.extend(r.take_opened());
            // What the placer's no-room memory relies on: a node whose usage went down
            // in any resource is marked released after the count it had seen, or, while
            // releases are held, still counts for placers what it held before.
            for (id, was) in before.iter().enumerate() {
                if was.fits_in(&r.usage.usage_of(id)) {
                    continue;
                }
                // A purge or floor recomputes usage and counts a release everywhere (a
                // held release is counted only when its hold ends, never by `receive`).
                let rebuilt = r.released_at(id) > releases;
                if hold && !rebuilt {
                    prop_assert!(opened.contains(&id), "node {} shrank without a hold", id);
                    prop_assert!(was.fits_in(&r.placement_usage(id)), "node {} hold lost usage", id);
                } else {
                    prop_assert!(r.released_at(id) > releases, "node {} shrank unmarked", id);
                }
            }
        }
        // Ending a hold counts the release and shows placers the real usage.
        let releases = r.releases();
        for id in opened {
            r.end_hold(id);
            prop_assert!(r.released_at(id) > releases, "node {} ended unmarked", id);
            prop_assert_eq!(r.placement_usage(id), r.usage.usage_of(id));
        }
        prop_assert_eq!(r.pending_len(), 0);
        prop_assert_eq!(r.tables(), &state_from(&h, &[12, 12, 12], &[]));
        // Usage index equals a rebuild.
        let mut fresh = r.clone();
        fresh.rebuild_usage();
        prop_assert_eq!(&r.usage.by_node, &fresh.usage.by_node);
    }

    #[test]
    fn anti_entropy_ships_exactly_what_is_missing(
        h in arb_history(),
        cuts in prop::collection::vec(0usize..13, 3),
    ) {
        let limits = ReplicaLimits { log_per_actor: 100, pending_per_actor: 100, hold_releases: false };
        let mut full = Replica::new(Tables::default(), limits);
        for op in h.iter().flatten() {
            full.receive(op.clone());
        }
        let mut lagging = Replica::new(state_from(&h, &cuts, &[]), limits);
        let ops = full.missing_for(lagging.tables().clock(), 1000).unwrap();
        for op in ops {
            prop_assert_eq!(lagging.receive(op), Received::Applied);
        }
        prop_assert_eq!(lagging.tables(), full.tables());
    }

    #[test]
    fn quiet_logs_are_dropped_and_peers_that_lack_them_get_the_state(
        h in arb_history(),
        cuts in prop::collection::vec(0usize..13, 3),
    ) {
        // Writer 0 is the replica's own actor. Writer 1 goes quiet, then writes one op more
        // after its log was dropped; writer 2 stops for good (a node's earlier start).
        let limits = ReplicaLimits { log_per_actor: 100, pending_per_actor: 100, hold_releases: false };
        let mut full = Replica::new(Tables::default(), limits);
        let (one, last) = match h[1].split_last() {
            Some((last, before)) => (before, Some(last)),
            None => (&h[1][..], None),
        };
        for op in h[0].iter().chain(one).chain(&h[2]) {
            full.receive(op.clone());
        }
        prop_assert_eq!(full.drop_quiet_logs(&actor(0)), 0, "the first look only notes the ends");
        let quiet = usize::from(!one.is_empty()) + usize::from(!h[2].is_empty());
        prop_assert_eq!(full.drop_quiet_logs(&actor(0)), quiet);
        prop_assert_eq!(full.log_sizes(), (usize::from(!h[0].is_empty()), h[0].len()));
        if let Some(op) = last {
            prop_assert_eq!(full.receive(op.clone()), Received::Applied);
        }
        // A peer that lacks an op of a dropped log gets the state; one that lacks only its own
        // ops and writer 1's newest gets those ops.
        let behind = state_from(&h, &cuts, &[]);
        let lacks_dropped = cuts[1].min(h[1].len()) + 1 < h[1].len()
            || cuts[2].min(h[2].len()) < h[2].len();
        match full.missing_for(behind.clock(), 1000) {
            None => prop_assert!(lacks_dropped, "state offered where the logs held every op"),
            Some(ops) => {
                prop_assert!(!lacks_dropped, "a dropped log's ops were offered");
                let mut lagging = Replica::new(behind.clone(), limits);
                for op in ops {
                    prop_assert_eq!(lagging.receive(op), Received::Applied);
                }
                prop_assert_eq!(lagging.tables(), full.tables());
            }
        }
        let mut lagging = Replica::new(behind, limits);
        lagging.merge_state(full.tables().clone());
        prop_assert_eq!(lagging.tables(), full.tables());
    }
}

#[test]
fn validate_op_checks_the_next_dot_only() {
    let mut t = Tables::default();
    let op = |n| {
        Op::new(
            Dot::new(actor(1), n),
            OpBody::Purge {
                job: format!("j{n}"),
                incarnation: 0,
            },
        )
    };
    assert!(t.validate_op(&op(1)).is_ok());
    assert!(t.validate_op(&op(2)).is_err());
    t.apply(op(1));
    assert!(t.validate_op(&op(2)).is_ok());
    assert!(t.validate_op(&op(1)).is_err());
}

#[test]
fn purge_removes_rows_and_blocks_stale_writes() {
    let mut t = Tables::default();
    let st = stamp(1, 1);
    let entry = JobEntry {
        stamp: st.clone(),
        epoch: st.clone(),
        spec: spec("j0", 1),
        stopped: false,
        deployment: st.clone(),
        version: 1,
        skip_canary: false,
    };
    t.join_body(&OpBody::Job {
        incarnation: 3,
        entry: entry.clone(),
    });
    let id = attempt(0, 3, 0, 1, 1);
    let a = Assignment {
        target: "n1".into(),
        resources: Resources::default(),
        epoch: st,
        generation: 0,
    };
    t.join_body(&OpBody::Assign {
        id: id.clone(),
        assignment: a.clone(),
    });
    assert!(t.job("j0").is_some());
    t.join_body(&OpBody::Purge {
        job: "j0".into(),
        incarnation: 3,
    });
    assert!(t.job("j0").is_none() && t.assignment(&id).is_none());
    assert!(!t.join_body(&OpBody::Job {
        incarnation: 3,
        entry: entry.clone()
    }));
    assert!(!t.join_body(&OpBody::Assign { id, assignment: a }));
    // A new incarnation is unaffected.
    assert!(t.join_body(&OpBody::Job {
        incarnation: 4,
        entry
    }));
    assert_eq!(t.job("j0").unwrap().0, 4);
}

#[test]
fn lost_loses_to_a_real_outcome_and_to_a_reclaim() {
    let lost = |round| AttemptState::Lost { round };
    let running = |round| AttemptState::Running {
        round,
        since: at(5),
    };
    assert!(AttemptState::Exited { code: 0 } > lost(7));
    assert!(AttemptState::Killed > lost(7));
    assert!(lost(0) > running(0));
    assert!(
        running(1) > lost(0),
        "a reclaim outranks the loss it answers"
    );
    assert!(lost(1) > running(1));
    assert!(running(0) > AttemptState::Admitted);
    assert_eq!(running(0).lost(), Some(lost(0)));
    assert_eq!(AttemptState::Admitted.lost(), Some(lost(0)));
    assert_eq!(lost(3).reclaimed(at(5)), Some(running(4)));
    assert_eq!(running(0).reclaimed(at(5)), None);
    assert!(
        AttemptState::running(at(6)) > AttemptState::running(at(5)),
        "two starts of one round order by stamp"
    );
    assert!(lost(0) > AttemptState::running(at(9)));
    assert_eq!(AttemptState::Killed.lost(), None);
    assert!(running(2).is_reclaimed() && !running(0).is_reclaimed());
}

#[test]
fn the_running_incumbent_is_current_whatever_order_the_rows_came_in() {
    let key = attempt(0, 1, 0, 1, 1).slot_key();
    let assign = |n: u32, placer: u8, target: u8, epoch: u64| OpBody::Assign {
        id: attempt(0, 1, 0, n, placer),
        assignment: Assignment {
            target: format!("n{target}").into(),
            resources: Resources::default(),
            epoch: stamp(1, epoch),
            generation: 0,
        },
    };
    let state = |n: u32, placer: u8, state: AttemptState| OpBody::State {
        id: attempt(0, 1, 0, n, placer),
        state,
    };
    let current = |t: &Tables| t.current_attempt(&key).map(|(id, _)| id.clone());
    let mut t = Tables::default();
    t.join_body(&assign(1, 1, 1, 1));
    t.join_body(&state(1, 1, AttemptState::running(at(10))));
    // A replacement placed while n1 looked dead reaches a replica before the loss does.
    t.join_body(&assign(2, 3, 4, 1));
    assert_eq!(
        current(&t),
        Some(attempt(0, 1, 0, 1, 1)),
        "the incumbent runs"
    );
    t.join_body(&state(2, 3, AttemptState::running(at(20))));
    assert_eq!(
        current(&t),
        Some(attempt(0, 1, 0, 1, 1)),
        "the oldest that runs"
    );
    // The loss arrives: the replacement is current; a reclaim makes the incumbent so again.
    t.join_body(&state(1, 1, AttemptState::Lost { round: 0 }));
    assert_eq!(current(&t), Some(attempt(0, 1, 0, 2, 3)));
    t.join_body(&state(
        1,
        1,
        AttemptState::Lost { round: 0 }.reclaimed(at(10)).unwrap(),
    ));
    assert_eq!(current(&t), Some(attempt(0, 1, 0, 1, 1)));
    // A new job version wins over whatever runs of the old one.
    t.join_body(&assign(3, 2, 2, 9));
    assert_eq!(current(&t), Some(attempt(0, 1, 0, 3, 2)));
}

/// Simulator finding 9: two coordinators placed attempt 2 of one slot, one on each side of a
/// partition; after the heal both run. The copy that has run for 41 s stays current although
/// the other's placer sorts first by name, and whichever started first wins across attempt
/// numbers too (a stale coordinator may number its copy lower).
#[test]
fn the_first_started_copy_wins_a_tie_of_attempt_numbers() {
    let key = attempt(0, 1, 0, 2, 0).slot_key();
    let assign = |n: u32, placer: u8, target: u8| OpBody::Assign {
        id: attempt(0, 1, 0, n, placer),
        assignment: Assignment {
            target: format!("n{target}").into(),
            resources: Resources::default(),
            epoch: stamp(1, 1),
            generation: 0,
        },
    };
    let running = |n: u32, placer: u8, since: u64| OpBody::State {
        id: attempt(0, 1, 0, n, placer),
        state: AttemptState::running(at(since)),
    };
    let current = |bodies: &[&OpBody]| {
        let mut t = Tables::default();
        for b in bodies {
            t.join_body(b);
        }
        t.current_attempt(&key).map(|(id, _)| id.clone())
    };
    let (a5, r5) = (assign(2, 5, 3), running(2, 5, 35_300));
    let (a0, r0) = (assign(2, 0, 1), running(2, 0, 76_000));
    let incumbent = Some(attempt(0, 1, 0, 2, 5));
    assert_eq!(current(&[&a5, &r5, &a0, &r0]), incumbent);
    assert_eq!(current(&[&a0, &r0, &a5, &r5]), incumbent, "any order");
    assert_eq!(
        current(&[&a5, &a0, &r0]),
        Some(attempt(0, 1, 0, 2, 0)),
        "until the incumbent's start arrives, the one seen running"
    );
    // A lower attempt number started later loses too.
    let (a1, r1) = (assign(1, 0, 1), running(1, 0, 76_000));
    assert_eq!(current(&[&a5, &r5, &a1, &r1]), incumbent);
    // Equal stamps (rows from before the stamp) fall back to the attempt key.
    let (r5, r0) = (running(2, 5, 0), running(2, 0, 0));
    assert_eq!(current(&[&a5, &r5, &a0, &r0]), Some(attempt(0, 1, 0, 2, 0)));
}

#[test]
fn format_2_states_read_as_unstamped() {
    let id = attempt(0, 1, 0, 1, 1);
    let mut t = Tables::default();
    t.join_body(&OpBody::Assign {
        id: id.clone(),
        assignment: Assignment {
            target: "n1".into(),
            resources: Resources::default(),
            epoch: stamp(1, 1),
            generation: 0,
        },
    });
    t.join_body(&OpBody::State {
        id: id.clone(),
        state: AttemptState::Running {
            round: 2,
            since: at(77),
        },
    });
    let bytes = tables_v2(&t);
    let old: TablesV2 = postcard::from_bytes(&bytes).unwrap();
    let back = Tables::from(old);
    assert_eq!(
        back.state(&id),
        AttemptState::Running {
            round: 2,
            since: Hlc::default()
        }
    );
    assert_eq!(back.assignment(&id), t.assignment(&id));
    // The current format keeps the stamp.
    let now: Tables = postcard::from_bytes(&postcard::to_stdvec(&t).unwrap()).unwrap();
    assert_eq!(now, t);
}

#[test]
fn job_type_is_kept() {
    assert_eq!(spec("a", 1).job_type, JobType::Service);
    let _ = ResourceRequest {
        cpu: 1,
        memory: 1,
        disk: 0,
    };
}

#[test]
fn format_3_reads_as_first_versions_and_the_job_write_carries_its_version_row() {
    let st = stamp(1, 5);
    let mut t = Tables::default();
    let entry = JobEntry {
        stamp: st.clone(),
        epoch: st.clone(),
        spec: spec("j0", 2),
        stopped: false,
        deployment: st.clone(),
        version: 4,
        skip_canary: false,
    };
    t.join_body(&OpBody::Job {
        incarnation: 1,
        entry: entry.clone(),
    });
    let row = t.version("j0", 1, &st).and_then(|v| v.row.clone()).unwrap();
    assert_eq!((row.number, &row.epoch), (4, &st));
    // Format 3 had neither the entry's new fields nor the versions.
    let old: TablesV3 = postcard::from_bytes(&tables_v3(&t)).unwrap();
    let back = Tables::from(old);
    let (_, e) = back.job("j0").unwrap();
    assert_eq!((e.version, &e.deployment, e.skip_canary), (1, &st, false));
    assert_eq!(back.versions("j0", 1).count(), 0);
    // An in-place write (stamp after the deployment) adds no row.
    let mut later = entry;
    later.stamp = stamp(1, 6);
    later.spec.count = 3;
    t.join_body(&OpBody::Job {
        incarnation: 1,
        entry: later,
    });
    assert_eq!(t.versions("j0", 1).count(), 1);
}

#[test]
fn versions_keep_the_newest_per_incarnation() {
    let mut t = Tables::default();
    for n in 1..=(MAX_VERSIONS as u64 + 3) {
        let st = stamp(1, n);
        t.join_body(&OpBody::Job {
            incarnation: 1,
            entry: JobEntry {
                stamp: st.clone(),
                epoch: st.clone(),
                spec: spec("j0", 1),
                stopped: false,
                deployment: st,
                version: u32::try_from(n).unwrap(),
                skip_canary: false,
            },
        });
    }
    let kept: Vec<u32> = t
        .versions("j0", 1)
        .map(|(_, v)| v.row.as_ref().unwrap().number)
        .collect();
    assert_eq!(kept, (4..=13).collect::<Vec<u32>>());
    // Progress of a dropped deployment is ignored; of a kept one, joined.
    let old = OpBody::Rollout {
        job: "j0".into(),
        incarnation: 1,
        deployment: stamp(1, 2),
        rollout: Rollout {
            done: SlotSet::one(0),
            ..Rollout::default()
        },
    };
    assert!(!t.join_body(&old));
    let kept = OpBody::Rollout {
        job: "j0".into(),
        incarnation: 1,
        deployment: stamp(1, 13),
        rollout: Rollout {
            done: SlotSet::one(0),
            ..Rollout::default()
        },
    };
    assert!(t.join_body(&kept));
    assert!(!t.join_body(&kept));
}

proptest! {
    #[test]
    fn slot_sets_union_like_sets(
        a in prop::collection::btree_set(0u32..40, 0..20),
        b in prop::collection::btree_set(0u32..40, 0..20),
    ) {
        let mut x = SlotSet::default();
        for s in &a { x.union(&SlotSet::one(*s)); }
        let mut y = SlotSet::default();
        for s in &b { y.union(&SlotSet::one(*s)); }
        prop_assert!(x.is_normal() && y.is_normal());
        x.union(&y);
        let all: BTreeSet<u32> = a.union(&b).copied().collect();
        prop_assert!(x.is_normal());
        prop_assert_eq!(x.len(), all.len() as u64);
        for s in 0..41 {
            prop_assert_eq!(x.contains(s), all.contains(&s));
            prop_assert_eq!(x.covers_below(s), (0..s).all(|k| all.contains(&k)));
            prop_assert_eq!(x.count_below(s) as usize, all.range(..s).count());
        }
    }
}
