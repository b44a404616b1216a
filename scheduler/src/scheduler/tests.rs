//! Tests of the driving API: submissions, durability, snapshots, ownership rules, determinism.

use std::time::Duration;

use shoal_gossip::{Millis, Resources};

use super::*;
use crate::durability::Durability;
use crate::ids::Dot;
use crate::jobs::{StopError, SubmitError};
use crate::message::Message;
use crate::spec::JobSpec;
use crate::table::{Op, OpBody};
use crate::testing::{Behavior, Cluster};

fn spec(json_extra: &str) -> JobSpec {
    JobSpec::from_json_str(&format!(
        r#"{{"id": "web", "type": "service", "count": 2, "command": "sleep",
            "resources": {{"cpu": 100, "memory": 32}}{json_extra}}}"#
    ))
    .unwrap()
}

#[test]
fn submit_refuses_invalid_and_impossible_jobs() {
    let mut c = Cluster::new(2, 1000, 1024, 1);
    let n1 = &mut c.nodes.get_mut("n1").unwrap().sched;
    let mut bad = spec("");
    bad.count = 0;
    assert!(matches!(
        n1.submit(Millis(1), bad),
        Err(SubmitError::Invalid(_))
    ));
    let mut huge = spec("");
    huge.resources.cpu = 5000;
    let err = n1.submit(Millis(1), huge).unwrap_err().to_string();
    assert!(
        err.contains("no node can ever host it") && err.contains("1000m cpu"),
        "{err}"
    );
    assert_eq!(
        n1.stop_job(Millis(1), "nope"),
        Err(StopError::NotFound("nope".into()))
    );
}

#[test]
fn durability_needs_an_ack_from_a_live_peer() {
    let mut c = Cluster::new(3, 1000, 1024, 2);
    let receipt = c.submit("n1", spec("")).unwrap();
    assert!(!c.nodes["n1"].sched.is_durable(&receipt));
    c.step();
    c.step();
    assert!(c.nodes["n1"].sched.is_durable(&receipt));
    // Alone, a write is only local once logged (nothing else could hold it).
    let mut solo = Scheduler::new("solo".into(), SchedulerConfig::default(), 3);
    let r = solo.submit(Millis(5), spec("")).unwrap();
    assert_eq!(solo.durability(&r), Durability::Pending, "not logged yet");
    let batch = solo
        .poll_job_records()
        .expect("the job write is to be logged");
    assert_eq!(batch.records.len(), 1);
    assert_eq!(batch.records[0].job, "web");
    solo.handle_persisted(Millis(6), batch.batch);
    assert_eq!(solo.durability(&r), Durability::LocalOnly);
}

/// README: a submission is `200` "once fsynced on this node and acknowledged by a peer after
/// its own fsync". A peer whose disk has not finished its write holds its ack; a peer that
/// dies before the write finishes never acknowledges it.
#[test]
fn a_peer_acknowledges_a_write_only_once_its_own_log_holds_it() {
    let mut c = Cluster::new(3, 1000, 1024, 2);
    c.stall_disk("n2");
    c.stall_disk("n3");
    let receipt = c.submit("n1", spec("")).unwrap();
    c.run_for(1_000, |c| {
        assert_eq!(
            c.nodes["n1"].sched.durability(&receipt),
            Durability::Pending,
            "no peer has logged the write yet"
        );
    });
    for peer in ["n2", "n3"] {
        assert!(c.view(peer, "web").is_some(), "{peer} received the write");
        assert!(
            !c.nodes[peer].log.contains_key("web"),
            "{peer}'s disk is stalled"
        );
    }
    // n2 dies with the write unlogged: what it held in memory acknowledged nothing.
    c.crash("n2");
    c.run_for(200, |c| {
        assert_eq!(
            c.nodes["n1"].sched.durability(&receipt),
            Durability::Pending
        );
    });
    // n3's write finishes: its held ack leaves, and the write is durable.
    c.finish_disk_writes("n3");
    assert!(c.nodes["n3"].log.contains_key("web"));
    assert!(
        c.run_until(100, |c| c.nodes["n1"].sched.durability(&receipt)
            == Durability::Durable)
    );
}

/// A restarted node writes as a new actor; its earlier actor's op log is dropped once it has
/// been quiet for a sweep (the harness sweeps every 2 s), and a peer that comes back lacking
/// that actor's ops catches up through the state instead.
#[test]
fn an_earlier_starts_log_is_dropped_and_a_late_peer_catches_up_by_state() {
    let mut c = Cluster::new(3, 1000, 1024, 9);
    c.submit("n1", spec("")).unwrap();
    assert!(c.run_until(3_000, |c| c.running_count() == 2 && c.converged()));
    let behind = c.nodes["n3"].sched.snapshot();
    c.crash("n3");
    c.declare_down("n3");
    // n2's first start writes a job n3 never hears of, then n2 restarts as a new actor.
    let mut mid = spec("");
    mid.id = "mid".into();
    mid.count = 1;
    c.submit("n2", mid).unwrap();
    c.run_for(500, |_| {});
    let earlier = c.nodes["n2"].sched.actor().clone();
    let snapshot = c.nodes["n2"].sched.snapshot();
    c.crash("n2");
    c.restart("n2", Some(&snapshot));
    assert_ne!(c.nodes["n2"].sched.actor(), &earlier);
    c.run_for(5_000, |_| {});
    let n1 = &c.nodes["n1"].sched;
    assert!(
        !n1.replica.has_log(&earlier),
        "the earlier start's log is still kept"
    );
    assert!(n1.stats().op_logs_dropped >= 1);
    assert!(n1.replica.has_log(n1.actor()), "a node keeps its own log");
    assert!(
        n1.tables().clock().get(&earlier) > 0,
        "its writes are still counted"
    );
    c.restart("n3", Some(&behind));
    assert!(c.run_until(5_000, |c| c.converged() && c.view("n3", "mid").is_some()));
}

/// The peers `s` sent a digest asking for an answer (a catch-up), draining its outbox.
fn asked(s: &mut Scheduler) -> Vec<String> {
    std::iter::from_fn(|| s.poll_message())
        .filter(|o| matches!(o.message, Message::Digest { reply: true, .. }))
        .flat_map(|o| o.to.iter().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// Member views for a lone core named `n1`: every member of `c`, and `n1` alone.
fn n1_views(c: &Cluster) -> (Vec<shoal_gossip::MemberInfo>, Vec<shoal_gossip::MemberInfo>) {
    let everyone: Vec<_> = c.nodes["n1"].sched.members.all.values().cloned().collect();
    let alone = everyone
        .iter()
        .filter(|m| &*m.id.name == "n1")
        .cloned()
        .collect();
    (everyone, alone)
}

/// A node catching up asks one live peer, not every peer as it appears (that cost a forming
/// cluster of agents given `--join` a digest and an answer per pair: +1.7 MiB per agent at
/// N = 32), and asks another only once no peer it asked is live.
#[test]
fn a_catch_up_asks_one_live_peer_at_a_time() {
    let mut c = Cluster::new(5, 1000, 1024, 11);
    c.submit("n1", spec("")).unwrap();
    assert!(c.run_until(3_000, |c| c.running_count() == 2 && c.converged()));
    c.crash("n5");
    c.restart_empty("n5", true);
    let first = asked(&mut c.nodes.get_mut("n5").unwrap().sched);
    assert_eq!(first.len(), 1, "asked {first:?}");
    // The asked peer dies before it answers: the next view shows it down, and one more is asked.
    c.crash(&first[0]);
    c.declare_down(&first[0]);
    let second = asked(&mut c.nodes.get_mut("n5").unwrap().sched);
    assert_eq!(second.len(), 1, "asked {second:?}");
    assert_ne!(second, first);
}

/// A new core not given a cluster to join (a new cluster's first node, or one back with an
/// empty data dir whose peers join it again) acts at once while alone, and catches up on its
/// first contact with a peer: a message from one, or a live peer in its view.
#[test]
fn a_new_node_without_join_catches_up_on_first_contact() {
    let c = Cluster::new(3, 1000, 1024, 12);
    let (everyone, alone) = n1_views(&c);
    assert_eq!(everyone.len(), 3);

    // Contact by a message, before any view shows the sender.
    let mut s = Scheduler::new("n1".into(), SchedulerConfig::default(), 1);
    s.catch_up_on_first_contact();
    s.handle_members(Millis(0), &alone);
    assert!(!s.catching_up(), "alone, it acts at once");
    assert!(asked(&mut s).is_empty());
    s.handle_message(Millis(5), "n3", Message::Ops { ops: Vec::new() });
    assert!(s.catching_up(), "a peer's message is a first contact");
    assert_eq!(asked(&mut s), ["n3"]);
    s.handle_members(Millis(6), &everyone);
    assert!(
        asked(&mut s).is_empty(),
        "the asked peer is live: nobody else is asked"
    );
    let clock = s.tables().clock().clone();
    s.handle_message(
        Millis(7),
        "n3",
        Message::Digest {
            clock,
            reply: false,
        },
    );
    assert!(!s.catching_up(), "the answer ends the catch-up");
    s.handle_message(Millis(8), "n2", Message::Ops { ops: Vec::new() });
    assert!(
        !s.catching_up() && asked(&mut s).is_empty(),
        "once per life"
    );

    // Contact by the view; with no answer, the catch-up ends after its deadline.
    let mut s = Scheduler::new("n1".into(), SchedulerConfig::default(), 1);
    s.catch_up_on_first_contact();
    s.handle_members(Millis(0), &alone);
    s.handle_members(Millis(10), &everyone);
    assert!(s.catching_up(), "a live peer in view is a first contact");
    assert_eq!(asked(&mut s).len(), 1);
    let deadline = Millis(10).plus_ms(crate::roles::CATCH_UP_MAX_MS);
    s.handle_timeout(deadline);
    assert!(!s.catching_up());
}

/// A restored node whose last life knew no other member (a one-node cluster restarting) has
/// nobody to catch up with: with [`Scheduler::knew_no_peer`] it places at once while alone,
/// where it used to wait [`crate::roles::CATCH_UP_MAX_MS`] for nobody, and it still asks a
/// peer that turns up before it acts again.
#[test]
fn a_restored_node_that_knew_no_peer_acts_at_once_and_asks_one_that_turns_up() {
    let c = Cluster::new(2, 1000, 1024, 13);
    let (everyone, alone) = n1_views(&c);
    let mut first = Scheduler::new("n1".into(), SchedulerConfig::default(), 1);
    first.handle_members(Millis(0), &alone);
    first.submit(Millis(1), spec("")).unwrap();
    let bytes = first.snapshot();
    let other = || {
        JobSpec::from_json_str(
            r#"{"id": "api", "type": "service", "count": 1, "command": "sleep",
                "resources": {"cpu": 100, "memory": 32}}"#,
        )
        .unwrap()
    };
    let placed = |s: &mut Scheduler| {
        std::iter::from_fn(|| s.poll_command())
            .filter(|cmd| matches!(cmd, ExecCommand::Start { .. }))
            .count()
    };

    // Without the rule: alone, the restored node waits out the catch-up before it places.
    let mut waits = Scheduler::restore("n1".into(), SchedulerConfig::default(), 2, &bytes).unwrap();
    waits.handle_members(Millis(100), &alone);
    waits.submit(Millis(101), other()).unwrap();
    assert!(waits.catching_up());
    assert_eq!(placed(&mut waits), 0, "nothing placed while catching up");
    let why = waits.job("api").unwrap().tasks[0].pending_reason.clone();
    assert!(
        why.as_deref().is_some_and(|r| r.contains("catching up")),
        "the slot says why it waits: {why:?}"
    );
    assert_eq!(waits.stats().pending_by_reason.catching_up, 1);
    waits.handle_timeout(Millis(100).plus_ms(crate::roles::CATCH_UP_MAX_MS));
    assert!(!waits.catching_up());
    assert!(placed(&mut waits) > 0, "placed once the wait ran out");

    // With it: placed at once. A clean restart still writes as a new actor: only a peer's
    // answer shows that nobody holds ops of the last start beyond its snapshot (a data dir
    // restored from a copy).
    let mut s = Scheduler::restore("n1".into(), SchedulerConfig::default(), 2, &bytes).unwrap();
    s.continue_writing_as(first.actor().start);
    assert!(s.knew_no_peer(), "a due catch-up is waived");
    assert_ne!(s.actor(), first.actor(), "not written on without an answer");
    s.handle_members(Millis(100), &alone);
    s.submit(Millis(101), other()).unwrap();
    assert!(!s.catching_up(), "nobody to catch up with");
    assert!(placed(&mut s) > 0, "placed at once");
    // A peer it never wrote down turns up live: it is asked before the node acts again.
    s.handle_members(Millis(200), &everyone);
    assert!(s.catching_up(), "a live peer in view is a first contact");
    assert_eq!(asked(&mut s), ["n2"]);

    // A catch-up already under way is left as it is.
    let mut asking =
        Scheduler::restore("n1".into(), SchedulerConfig::default(), 3, &bytes).unwrap();
    asking.handle_members(Millis(100), &everyone);
    assert!(asking.catching_up());
    assert!(!asking.knew_no_peer());
    assert!(
        asking.catching_up(),
        "the asked peer's answer is still awaited"
    );
}

#[test]
fn identical_resubmission_is_a_no_op_and_an_update_replaces_tasks() {
    let mut c = Cluster::new(2, 1000, 1024, 3);
    let r1 = c.submit("n1", spec("")).unwrap();
    assert!(c.run_until(2_000, |c| c.running_count() == 2));
    let r2 = c.submit("n2", spec("")).unwrap();
    assert_eq!(r1.version, r2.version);
    c.run_for(500, |_| {});
    assert_eq!(c.processes.len(), 2);
    let mut v2 = spec("");
    v2.args = vec!["60".into()];
    c.submit("n2", v2).unwrap();
    assert!(c.run_until(2_000, |c| c.running_count() == 2 && c.processes.len() == 4));
    let killed = c
        .processes
        .iter()
        .filter(|p| p.outcome == Some(TaskEvent::Killed))
        .count();
    assert_eq!(killed, 2, "old version's tasks are superseded");
}

#[test]
fn scaling_down_kills_the_extra_slots() {
    let mut c = Cluster::new(2, 1000, 1024, 4);
    let mut s = spec("");
    s.count = 5;
    c.submit("n1", s.clone()).unwrap();
    assert!(c.run_until(2_000, |c| c.running_count() == 5));
    s.count = 2;
    c.submit("n1", s).unwrap();
    assert!(c.run_until(3_000, |c| c.running_count() == 2));
    assert_eq!(c.view("n2", "web").unwrap().tasks.len(), 2);
    // Scaling keeps the epoch: the kept slots were not restarted.
    assert_eq!(c.processes.len(), 5);
    let mut killed: Vec<u32> = c
        .processes
        .iter()
        .filter(|p| p.outcome == Some(TaskEvent::Killed))
        .map(|p| p.task.slot)
        .collect();
    killed.sort_unstable();
    assert_eq!(killed, vec![2, 3, 4]);
}

#[test]
fn snapshot_round_trip_and_bad_snapshots() {
    let mut c = Cluster::new(2, 1000, 1024, 5);
    c.submit("n1", spec("")).unwrap();
    assert!(c.run_until(2_000, |c| c.running_count() == 2 && c.converged()));
    let n1 = &c.nodes["n1"].sched;
    let bytes = n1.snapshot();
    let r = Scheduler::restore("n1".into(), SchedulerConfig::default(), 7, &bytes).unwrap();
    assert_eq!(r.tables(), n1.tables());
    assert_ne!(
        r.actor(),
        n1.actor(),
        "a restored node writes as a new actor"
    );
    assert_eq!(r.local_allocated(), n1.local_allocated());
    assert!(matches!(
        Scheduler::restore("n2".into(), SchedulerConfig::default(), 7, &bytes),
        Err(RestoreError::WrongNode { .. })
    ));
    assert!(Scheduler::restore("n1".into(), SchedulerConfig::default(), 7, b"junk").is_err());
}

#[test]
fn stopped_job_on_a_dead_node_is_still_collected() {
    let mut c = Cluster::new(3, 1000, 1024, 6);
    let mut s = spec("");
    s.count = 3;
    s.distinct_hosts = true;
    c.submit("n1", s).unwrap();
    assert!(c.run_until(2_000, |c| c.running_count() == 3));
    c.crash("n3");
    c.declare_down("n3");
    c.stop("n1", "web");
    assert!(c.run_until(20_000, |c| c.view("n1", "web").is_none()
        && c.view("n2", "web").is_none()));
}

#[test]
fn ops_that_break_ownership_are_refused() {
    use crate::table::{Assignment, AttemptState};
    let mut n1 = Scheduler::new("n1".into(), SchedulerConfig::default(), 1);
    let author = ActorId {
        node: "n2".into(),
        start: 9,
    };
    let id = AttemptId {
        job: "web".into(),
        incarnation: 1,
        slot: 0,
        attempt: 1,
        placer: "n3".into(),
    };
    let assignment = Assignment {
        target: "n3".into(),
        resources: Resources::default(),
        epoch: n1.stamp(),
        generation: 0,
    };
    // n2 writes an assignment in n3's name: refused, nothing applied.
    let forged = Op::new(
        Dot::new(author.clone(), 1),
        OpBody::Assign {
            id: id.clone(),
            assignment: assignment.clone(),
        },
    );
    n1.handle_message(Millis(1), "n2", Message::Ops { ops: vec![forged] });
    assert_eq!(n1.stats().refused_messages, 1);
    assert!(n1.tables().assignment(&id).is_none());
    // n3's own assignment, relayed by n2, is fine; then n2 may not write its state
    // (other than lost), since the attempt runs on n3.
    let n3 = ActorId {
        node: "n3".into(),
        start: 4,
    };
    let real = Op::new(
        Dot::new(n3, 1),
        OpBody::Assign {
            id: id.clone(),
            assignment,
        },
    );
    n1.handle_message(Millis(2), "n2", Message::Ops { ops: vec![real] });
    assert!(n1.tables().assignment(&id).is_some());
    let running = Op::new(
        Dot::new(author.clone(), 1),
        OpBody::State {
            id: id.clone(),
            state: AttemptState::running(crate::Hlc::default()),
        },
    );
    n1.handle_message(Millis(3), "n2", Message::Ops { ops: vec![running] });
    assert_eq!(n1.stats().refused_messages, 2);
    let lost = Op::new(
        Dot::new(author.clone(), 1),
        OpBody::State {
            id: id.clone(),
            state: AttemptState::Lost { round: 0 },
        },
    );
    n1.handle_message(Millis(4), "n2", Message::Ops { ops: vec![lost] });
    assert_eq!(
        n1.stats().refused_messages,
        2,
        "a coordinator may mark it lost"
    );
    assert!(n1.tables().state(&id).is_lost());
    // Nor may n2 write the ports of n3's attempt.
    let ports = Op::new(
        Dot::new(author.clone(), 2),
        OpBody::Binding {
            id: id.clone(),
            binding: crate::table::Binding {
                ip: std::net::Ipv4Addr::LOCALHOST.into(),
                ports: vec![("http".into(), 8080)],
            },
        },
    );
    n1.handle_message(Millis(5), "n2", Message::Ops { ops: vec![ports] });
    assert_eq!(n1.stats().refused_messages, 3);
    assert!(n1.tables().binding(&id).is_none());
    // Nor its health.
    let health = Op::new(
        Dot::new(author.clone(), 2),
        OpBody::Health {
            id: id.clone(),
            health: crate::table::Health {
                stamp: n1.stamp(),
                status: crate::table::HealthStatus::Passing,
                note: String::new(),
                failures: 0,
                limit: 3,
            },
        },
    );
    n1.handle_message(Millis(6), "n2", Message::Ops { ops: vec![health] });
    assert_eq!(n1.stats().refused_messages, 4);
    assert!(n1.tables().health(&id).is_none());
}

#[test]
fn no_clock_reads_same_inputs_same_outputs() {
    let run = || {
        let mut c = Cluster::new(3, 1000, 1024, 9);
        c.submit("n2", spec("")).unwrap();
        c.run_for(1_000, |_| {});
        (c.digest(), c.delivered)
    };
    assert_eq!(run(), run());
}

/// The tables' rows with every `Running` start stamp zeroed (as formats 1 and 2 read back).
fn unstamped(t: &Tables) -> (Vec<String>, Vec<(AttemptId, AttemptState)>) {
    let jobs = t.jobs().map(|(k, e)| format!("{k:?} {e:?}")).collect();
    let states = t
        .assignments()
        .map(|(id, _)| {
            let s = match t.state(id) {
                AttemptState::Running { round, .. } => AttemptState::Running {
                    round,
                    since: Hlc::default(),
                },
                s => s,
            };
            (id.clone(), s)
        })
        .collect();
    (jobs, states)
}

#[test]
fn a_format_1_snapshot_and_its_job_records_are_still_read() {
    use crate::table::format1_encode::{rows_v1, tables_v1};
    let mut c = Cluster::new(2, 1000, 1024, 7);
    c.submit("n1", spec("")).unwrap();
    assert!(c.run_until(5000, |c| c.running_count() == 2));
    let n1 = &c.nodes["n1"].sched;
    let now = n1.snapshot();
    let mut old = postcard::to_stdvec(&(1u32, "n1", &n1.repl.hlc)).unwrap();
    old.extend(tables_v1(n1.tables()));
    assert_ne!(old, now);
    let restored = Scheduler::restore("n1".into(), n1.config.clone(), 1, &old).unwrap();
    assert_eq!(unstamped(restored.tables()), unstamped(n1.tables()));
    let starts = |t: &Tables| -> Vec<Option<Hlc>> {
        t.assignments()
            .map(|(id, _)| t.state(id).running_since())
            .collect()
    };
    assert!(
        starts(n1.tables())
            .iter()
            .all(|s| s.is_some_and(|t| t > Hlc::default()))
    );
    assert!(
        starts(restored.tables())
            .iter()
            .all(|s| *s == Some(Hlc::default())),
        "formats 1 and 2 have no start stamps"
    );
    let mut v2 = postcard::to_stdvec(&(2u32, "n1", &n1.repl.hlc)).unwrap();
    v2.extend(crate::table::tables_v2(n1.tables()));
    let restored = Scheduler::restore("n1".into(), n1.config.clone(), 1, &v2).unwrap();
    assert_eq!(unstamped(restored.tables()), unstamped(n1.tables()));
    let again = Scheduler::restore("n1".into(), n1.config.clone(), 1, &now).unwrap();
    assert_eq!(again.tables(), n1.tables());
    // A job record logged before the service fields joins like a current one.
    let rows: Vec<_> = n1
        .tables()
        .incarnations("web")
        .map(|(i, e)| (i, e.clone()))
        .collect();
    let mut fresh = Scheduler::new("n9".into(), SchedulerConfig::default(), 2);
    assert_eq!(fresh.restore_job_records([rows_v1(&rows).as_slice()]), 0);
    assert_eq!(
        fresh.tables().job("web").map(|(_, e)| e),
        n1.tables().job("web").map(|(_, e)| e)
    );
    assert_eq!(fresh.restore_job_records([&[1u8, 2, 3][..]]), 1);
    let future = postcard::to_stdvec(&(9u32, "n1")).unwrap();
    assert_eq!(
        Scheduler::restore("n1".into(), SchedulerConfig::default(), 1, &future).unwrap_err(),
        RestoreError::Format(9)
    );
}

#[test]
fn a_format_2_snapshot_is_still_read() {
    let mut c = Cluster::new(2, 1000, 1024, 8);
    c.submit("n1", spec(r#", "ports": [{"name": "http"}]"#))
        .unwrap();
    // Spread over both nodes: n1 holds both bindings once n2's has crossed.
    assert!(c.run_until(5000, |c| c.running_count() == 2
        && c.nodes["n1"].sched.tables().bindings().count() == 2));
    let n1 = &c.nodes["n1"].sched;
    assert_eq!(n1.tables().healths().count(), 0);
    // Format 2: no `health` map, and running attempts without their start stamp.
    let mut old = postcard::to_stdvec(&(2u32, "n1", &n1.repl.hlc)).unwrap();
    old.extend(crate::table::tables_v2(n1.tables()));
    let restored = Scheduler::restore("n1".into(), n1.config.clone(), 1, &old).unwrap();
    assert_eq!(unstamped(restored.tables()), unstamped(n1.tables()));
    assert_eq!(
        restored.tables().bindings().collect::<Vec<_>>(),
        n1.tables().bindings().collect::<Vec<_>>()
    );
    assert_eq!(restored.tables().healths().count(), 0);
    // Format-2 bytes under the current format number are refused, not misread.
    let mut wrong = postcard::to_stdvec(&(3u32, "n1", &n1.repl.hlc)).unwrap();
    wrong.extend(crate::table::tables_v2(n1.tables()));
    assert!(matches!(
        Scheduler::restore("n1".into(), n1.config.clone(), 1, &wrong),
        Err(RestoreError::Malformed(_))
    ));
}

#[test]
fn a_format_3_snapshot_and_its_job_records_are_still_read() {
    let mut c = Cluster::new(2, 1000, 1024, 9);
    let update =
        r#", "update": {"max_parallel": 1, "min_healthy_ms": 100, "healthy_deadline_ms": 1000}"#;
    c.submit("n1", spec(update)).unwrap();
    assert!(c.run_until(5000, |c| {
        c.nodes["n1"].sched.tables().all_milestones().count() == 2
            && c.nodes["n1"].sched.tables().all_versions().count() == 1
    }));
    let n1 = &c.nodes["n1"].sched;
    // Format 3: job entries without deployment, version and `skip_canary`; no milestones
    // and no versions.
    let mut old = postcard::to_stdvec(&(3u32, "n1", &n1.repl.hlc)).unwrap();
    old.extend(crate::table::tables_v3(n1.tables()));
    let restored = Scheduler::restore("n1".into(), n1.config.clone(), 1, &old).unwrap();
    assert_eq!(
        restored.tables().job("web").map(|(_, e)| e),
        n1.tables().job("web").map(|(_, e)| e),
        "the first version's entry reads back whole"
    );
    assert_eq!(
        restored.tables().assignments().count(),
        n1.tables().assignments().count()
    );
    assert_eq!(restored.tables().all_milestones().count(), 0);
    assert_eq!(restored.tables().all_versions().count(), 0);
    // The current format keeps both.
    let again = Scheduler::restore("n1".into(), n1.config.clone(), 1, &n1.snapshot()).unwrap();
    assert_eq!(again.tables(), n1.tables());
    // A job record logged in the format-3 layout joins like a current one.
    let rows: Vec<(u64, crate::table::JobEntryV3)> = n1
        .tables()
        .incarnations("web")
        .map(|(i, e)| (i, crate::table::entry_v3(e)))
        .collect();
    let bytes = postcard::to_stdvec(&(rows,)).unwrap();
    let mut fresh = Scheduler::new("n9".into(), SchedulerConfig::default(), 2);
    assert_eq!(fresh.restore_job_records([bytes.as_slice()]), 0);
    assert_eq!(
        fresh.tables().job("web").map(|(_, e)| e),
        n1.tables().job("web").map(|(_, e)| e)
    );
}

#[test]
fn a_format_4_snapshot_is_still_read_and_the_nodes_table_survives_a_restore() {
    let mut c = Cluster::new(2, 1000, 1024, 10);
    c.submit("n1", spec("")).unwrap();
    assert!(c.run_until(5000, |c| c.running_count() == 2));
    let n1 = &c.nodes["n1"].sched;
    // Format 4: no `nodes` component at the end.
    let mut old = postcard::to_stdvec(&(4u32, "n1", &n1.repl.hlc)).unwrap();
    old.extend(crate::table::tables_v4(n1.tables()));
    let restored = Scheduler::restore("n1".into(), n1.config.clone(), 1, &old).unwrap();
    // Everything format 4 held comes back; the assignments' generations, which it did not
    // hold, read as 0 (unknown).
    assert_eq!(
        crate::table::tables_v4(restored.tables()),
        crate::table::tables_v4(n1.tables())
    );
    assert!(n1.tables().assignments().all(|(_, a)| a.generation == 1));
    assert!(
        restored
            .tables()
            .assignments()
            .all(|(_, a)| a.generation == 0)
    );
    // The current format keeps an intent.
    c.node_command("n1", "n2", crate::NodeChange::Eligible(false))
        .unwrap();
    assert!(c.run_until(1000, |c| c.nodes["n2"].sched.refuses_work()));
    let n1 = &c.nodes["n1"].sched;
    let again = Scheduler::restore("n1".into(), n1.config.clone(), 1, &n1.snapshot()).unwrap();
    assert!(again.tables().refuses_work("n2"));
    assert_eq!(again.tables(), n1.tables());
}

// ---- oldest first (`docs/scheduler.md`, "Oldest first") ----

fn service(id: &str, count: u32, cpu: u64) -> JobSpec {
    JobSpec::from_json_str(&format!(
        r#"{{"id": "{id}", "type": "service", "count": {count}, "command": "sleep", "args": ["600"],
            "resources": {{"cpu": {cpu}, "memory": 32}}}}"#
    ))
    .unwrap()
}

fn all_running(c: &Cluster, job: &str, n: usize) -> bool {
    c.nodes.keys().filter(|k| c.nodes[*k].up).all(|k| {
        c.view(k, job)
            .is_some_and(|v| v.count_in(crate::TaskState::Running) == n)
    })
}

/// A config where the age of a pending slot decides, within a test's seconds, which placer
/// sees freed room first (`docs/scheduler.md`, "Oldest first").
fn oldest_first_config(age_scale_ms: u64) -> crate::SchedulerConfig {
    crate::SchedulerConfig {
        release_hold: std::time::Duration::from_millis(500),
        release_age_scale: std::time::Duration::from_millis(age_scale_ms),
        ..crate::testing::fast_config()
    }
}

fn running(c: &Cluster, job: &str) -> usize {
    c.view("n1", job)
        .map_or(0, |v| v.count_in(crate::TaskState::Running))
}

#[test]
fn freed_room_goes_to_the_oldest_pending_slots_first() {
    // 4 nodes of 1000m, full; four 1000m slots wait 10 s, four more 0.2 s; the full nodes are
    // then freed all at once: the older four take them, whoever coordinates them (the
    // younger job's name sorts first, so a pass in name order would place it first).
    let mut c = Cluster::with_config(4, 1000, 4096, 14, oldest_first_config(2_000));
    c.submit("n1", service("filler", 4, 1000)).unwrap();
    assert!(c.run_until(5_000, |c| all_running(c, "filler", 4)));
    c.submit("n2", service("waiting", 4, 1000)).unwrap();
    c.run_for(10_000, |_| {});
    c.submit("n3", service("arrived", 4, 1000)).unwrap();
    c.run_for(200, |_| {});
    assert_eq!(running(&c, "waiting") + running(&c, "arrived"), 0);
    c.stop("n1", "filler");
    assert!(
        c.run_until(5_000, |c| running(c, "waiting") == 4),
        "{:#?}",
        c.view("n1", "waiting")
    );
    assert!(c.run_until(5_000, |c| c.converged()));
    assert_eq!(running(&c, "arrived"), 0, "{:#?}", c.view("n1", "arrived"));
    c.run_for(2_000, |c| c.assert_no_overcommit());
    assert_eq!(running(&c, "waiting"), 4);
}

#[test]
fn an_old_slot_that_fits_nowhere_does_not_hold_back_younger_ones() {
    // FIFO with skipping: a 1000m slot waits for a whole free node while 400m are freed on
    // each; the younger 300m slots take them after the hold instead of waiting behind it.
    let mut c = Cluster::with_config(2, 1000, 4096, 15, oldest_first_config(2_000));
    c.submit("n1", service("wide", 2, 600)).unwrap();
    assert!(c.run_until(5_000, |c| all_running(c, "wide", 2)));
    c.submit("n1", service("narrow", 2, 400)).unwrap();
    assert!(c.run_until(5_000, |c| all_running(c, "narrow", 2)));
    c.submit("n2", service("big", 1, 1000)).unwrap();
    c.run_for(10_000, |_| {});
    c.submit("n2", service("small", 2, 300)).unwrap();
    c.run_for(200, |_| {});
    c.stop("n1", "narrow");
    assert!(
        c.run_until(3_000, |c| running(c, "small") == 2),
        "{:#?}",
        c.view("n1", "small")
    );
    assert_eq!(running(&c, "big"), 0);
    c.run_for(1_000, |c| c.assert_no_overcommit());
}

#[test]
fn a_start_reported_after_the_kill_was_decided_is_never_written_running() {
    let mut c = Cluster::new(2, 4000, 4096, 1);
    c.behavior = Box::new(|_| Behavior::Held);
    c.submit("n1", service("w", 1, 100)).unwrap();
    assert!(c.run_until(10_000, |c| !c.processes.is_empty()));
    let (task, node) = (c.processes[0].task.clone(), c.processes[0].node.clone());
    c.stop("n1", "w");
    assert!(
        c.run_until(10_000, |c| c.nodes[&node].held_kills.contains(&task)),
        "the stop reaches the target as a kill while the launch is held"
    );
    // The launch ends after the kill was decided: the executor reports the start, then the kill.
    c.report(&node, task.clone(), TaskEvent::Started { pid: 1000 });
    c.run_for(2_000, |c| {
        for (name, n) in &c.nodes {
            assert!(
                n.sched.tables().state(&task).running_since().is_none(),
                "{name} sees the doomed copy {task} running"
            );
        }
    });
    c.report(&node, task.clone(), TaskEvent::Killed);
    assert!(c.run_until(10_000, |c| {
        c.nodes
            .values()
            .all(|n| n.sched.tables().state(&task) == AttemptState::Killed)
    }));
}

#[test]
fn a_gap_in_a_writers_ops_is_asked_for_at_once() {
    // Anti-entropy far off: only the ask for the gap can bring the missing ops in time.
    let config = crate::SchedulerConfig {
        anti_entropy_interval: std::time::Duration::from_secs(600),
        ..crate::testing::fast_config()
    };
    let mut c = Cluster::with_config(3, 4000, 4096, 1, config);
    // n2 does not count n3 among its live peers while it writes job `a`: n3 never gets that
    // op (a cluster forming, as n2 heard of n3 late).
    c.believes_down
        .insert("n2".into(), ["n3".to_string()].into_iter().collect());
    c.sync_members();
    c.submit("n2", service("a", 1, 100)).unwrap();
    assert!(c.run_until(2_000, |c| c.nodes["n1"].sched.tables().job("a").is_some()));
    assert!(c.nodes["n3"].sched.tables().job("a").is_none());
    c.believes_down.clear();
    c.sync_members();
    // n2's next write reaches n3 behind the gap; n3 asks n2 for what it misses.
    c.submit("n2", service("b", 1, 100)).unwrap();
    assert!(
        c.run_until(500, |c| {
            let t = c.nodes["n3"].sched.tables();
            t.job("a").is_some() && t.job("b").is_some()
        }),
        "n3 should hold both of n2's job writes within 500 ms, not after anti-entropy"
    );
}

#[test]
fn ops_behind_a_gap_or_over_the_buffer_ask_the_writer_with_a_digest_it_answers() {
    use crate::table::Assignment;
    let config = SchedulerConfig::default();
    let limit = config.pending_ops_per_actor.get();
    let mut n1 = Scheduler::new("n1".into(), config, 1);
    let epoch = n1.stamp();
    let n2 = ActorId {
        node: "n2".into(),
        start: 9,
    };
    let op = |counter: u64| {
        let id = AttemptId {
            job: "web".into(),
            incarnation: 1,
            slot: u32::try_from(counter).unwrap(),
            attempt: 1,
            placer: "n2".into(),
        };
        let assignment = Assignment {
            target: "n3".into(),
            resources: Resources::default(),
            epoch: epoch.clone(),
            generation: 0,
        };
        Op::new(
            Dot::new(n2.clone(), counter),
            OpBody::Assign { id, assignment },
        )
    };
    let digests = |n: &mut Scheduler| {
        let mut out = Vec::new();
        while let Some(m) = n.poll_message() {
            if let Message::Digest { reply, .. } = m.message {
                out.push((m.to.iter().map(str::to_string).collect::<Vec<_>>(), reply));
            }
        }
        out
    };
    // Op 2 without op 1: buffered behind a gap; the writer is asked at once.
    n1.handle_message(Millis(1), "n2", Message::Ops { ops: vec![op(2)] });
    assert_eq!(digests(&mut n1), vec![(vec!["n2".to_string()], true)]);
    // Over the buffer: the buffer is dropped and the writer asked again, also with
    // `reply: true` (a `reply: false` digest would end a restored writer's catch-up).
    let ops: Vec<Op> = (3..u64::try_from(limit).unwrap() + 4).map(op).collect();
    n1.handle_message(Millis(1_000), "n2", Message::Ops { ops });
    assert_eq!(digests(&mut n1), vec![(vec!["n2".to_string()], true)]);
}

/// Whether `node` holds any tombstone.
fn holds_a_tombstone(c: &Cluster, node: &str) -> bool {
    !c.nodes[node].sched.tables().purged().is_empty()
}

/// The peers `node` knows to hold every tombstone it keeps (none when it keeps none).
fn holders(c: &Cluster, node: &str) -> Vec<String> {
    let t = &c.nodes[node].sched.gc.tombstones;
    let Some(&newest) = t.noticed.values().max() else {
        return Vec::new();
    };
    t.covered
        .iter()
        .filter(|&(_, &n)| n >= newest)
        .map(|(p, _)| p.to_string())
        .collect()
}

/// Sets `node`'s tombstone retention; returns the one it had.
fn set_retention(c: &mut Cluster, node: &str, retention: Duration) -> Duration {
    let config = &mut c.nodes.get_mut(node).unwrap().sched.config;
    std::mem::replace(&mut config.tombstone_retention, retention)
}

/// A stopped service, purged on every node of three: every node holds its tombstone.
fn cluster_with_a_tombstone() -> Cluster {
    let mut c = Cluster::with_config(3, 4000, 4096, 1, crate::testing::fast_config());
    c.submit("n1", service("a", 1, 100)).unwrap();
    assert!(c.run_until(10_000, |c| c.running_count() == 1));
    c.stop("n1", "a");
    let everywhere = |c: &Cluster| ["n1", "n2", "n3"].iter().all(|n| holds_a_tombstone(c, n));
    assert!(
        c.run_until(30_000, everywhere),
        "the stopped job was not purged"
    );
    c
}

/// Only a digest that covers what the node had when it saw the tombstone counts, and a later
/// one that does not (a peer restored from an older store) takes it back: a lagging peer keeps
/// the tombstone however old it is.
#[test]
fn a_digest_that_does_not_cover_the_tombstone_keeps_it() {
    let mut c = cluster_with_a_tombstone();
    let held_by_n2 = |c: &Cluster| holders(c, "n1").contains(&"n2".to_string());
    let retention = set_retention(&mut c, "n1", Duration::from_secs(3600));
    assert!(
        c.run_until(30_000, held_by_n2),
        "n2 never confirmed the tombstone"
    );
    set_retention(&mut c, "n1", retention);
    // From now on n1 hears from n2 only this digest, from before the purge.
    c.cut.insert(("n2".into(), "n1".into()));
    let now = c.now;
    let lagging = Message::Digest {
        clock: crate::ids::VersionVector::new(),
        reply: false,
    };
    c.nodes
        .get_mut("n1")
        .unwrap()
        .sched
        .handle_message(now, "n2", lagging);
    assert!(!held_by_n2(&c), "a digest without the purge still counts");
    let past_retention = u64::try_from(retention.as_millis()).unwrap() * 3;
    c.run_for(past_retention, |c| {
        assert!(
            holds_a_tombstone(c, "n1"),
            "n1 dropped a tombstone n2's last digest does not cover"
        );
    });
    c.cut.clear();
    assert!(
        c.run_until(10_000, |c| !holds_a_tombstone(c, "n1")),
        "the tombstone outlived n2's next digest"
    );
}

/// A peer that left the view (a node replaced under a new name, reaped by the membership)
/// leaves nothing behind in what a core keeps per peer: whether it holds a tombstone, and when
/// this core last asked it for a gap.
#[test]
fn what_a_core_keeps_of_a_peer_goes_when_the_peer_leaves_the_view() {
    let mut c = cluster_with_a_tombstone();
    // A retention longer than the run keeps the tombstone while the peers confirm it.
    set_retention(&mut c, "n1", Duration::from_secs(3600));
    let both = |c: &Cluster| holders(c, "n1") == ["n2", "n3"];
    assert!(
        c.run_until(30_000, both),
        "n2 and n3 never confirmed the tombstone"
    );
    let n1 = &mut c.nodes.get_mut("n1").unwrap().sched;
    n1.repl.gap_asked.insert("n3".into(), Millis(0));
    c.nodes.remove("n3");
    c.sync_members();
    assert_eq!(
        holders(&c, "n1"),
        ["n2"],
        "a peer still in the view is kept"
    );
    assert!(!c.nodes["n1"].sched.gc.tombstones.covered.contains_key("n3"));
    assert!(!c.nodes["n1"].sched.repl.gap_asked.contains_key("n3"));
}

/// The GC rule: a tombstone goes once it is older than the retention and every live peer's
/// last digest covers what the node had when it saw it. A live peer whose digests stop
/// arriving keeps it however old it is; once that peer is heard again, it goes.
#[test]
fn a_tombstone_stays_until_every_live_peer_has_said_it_holds_it() {
    let mut c = cluster_with_a_tombstone();
    // n1 still lists n3 alive, but hears nothing from it.
    c.cut.insert(("n3".into(), "n1".into()));
    let retention = c.nodes["n1"].sched.config.tombstone_retention;
    let past_retention = u64::try_from(retention.as_millis()).unwrap() * 3;
    c.run_for(past_retention, |c| {
        assert!(
            holds_a_tombstone(c, "n1"),
            "n1 dropped a tombstone n3 never confirmed"
        );
    });
    assert!(
        holders(&c, "n1") == ["n2"],
        "n2's digests confirm the tombstone meanwhile"
    );
    c.cut.clear();
    assert!(
        c.run_until(10_000, |c| !holds_a_tombstone(c, "n1")),
        "the tombstone outlived n3's confirmation"
    );
}
