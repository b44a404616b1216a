//! What the core decided or learned, as events for the shell's event stream
//! (`GET /v1/events`, `docs/observability.md`).
//!
//! What it promises:
//! - Events are recorded only when [`SchedulerConfig::event_queue`](crate::SchedulerConfig)
//!   is set (the agent sets it; the simulator, which runs thousands of cores, does not), so a
//!   core nobody drains holds no queue.
//! - The queue is bounded between inputs: every event of one input is kept (a 10,000-slot
//!   submission makes tens of thousands at once), and when an input begins with more than
//!   the bound left undrained from earlier ones, the oldest are dropped and counted
//!   ([`Scheduler::events_dropped`](crate::Scheduler::events_dropped)), never silently. A
//!   shell that drains after every input, as the agent does, never loses one; one that never
//!   drains holds at most the bound plus one input's events.
//! - Events are in the order the core made the decisions or merged the changes.
//!
//! How to drive it: after every input, drain [`Scheduler::poll_event`](crate::Scheduler::poll_event)
//! alongside `poll_message` and `poll_command`.

use std::collections::VecDeque;
use std::num::NonZeroUsize;

use crate::ids::{AttemptId, Name};
use crate::table::{AttemptState, Health};

/// One thing the scheduler core decided or learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedEvent {
    /// This node, as the slot's coordinator, placed an attempt on `target`.
    Placed {
        /// The new attempt.
        task: AttemptId,
        /// The node it is proposed to.
        target: Name,
    },
    /// This node admitted a proposal addressed to it.
    Admitted {
        /// The attempt.
        task: AttemptId,
    },
    /// This node rejected a proposal addressed to it.
    Rejected {
        /// The attempt.
        task: AttemptId,
        /// Why.
        reason: String,
    },
    /// An attempt's row changed in this node's tables, by a local write or a merge from a
    /// peer: its state, or its health. Every node sees every attempt of the cluster here.
    AttemptChanged {
        /// The attempt.
        task: AttemptId,
        /// The node it is placed on.
        target: Name,
        /// Its state now.
        state: AttemptState,
        /// Its health now (none: no checks, or no result yet).
        health: Option<Health>,
    },
    // ---- Rollouts (`deploy_events.rs`): derived from this replica's tables, like
    // `AttemptChanged`, so every node reports every job's deployments. ----
    /// A job has a new current deployment: a submission with a new epoch, a restart after a
    /// stop, or a revert (`Job` topic).
    VersionCreated {
        /// The job.
        job: Name,
        /// Its incarnation.
        incarnation: u64,
        /// The new version's number.
        version: u32,
        /// The epoch its attempts run under (`wall_ms.logical@node`).
        epoch: String,
    },
    /// A step of a job's current deployment (`Deployment` topic).
    Deployment {
        /// The job.
        job: Name,
        /// Its incarnation.
        incarnation: u64,
        /// The deployment's version.
        version: u32,
        /// What happened.
        change: DeploymentChange,
    },
    // ---- drain (`drain.rs`, `docs/services.md` §5 and §6) ----
    /// Something about a node's eligibility or drain (the `Node` topic).
    Node(NodeEvent),
}

/// What happened to a deployment ([`SchedEvent::Deployment`], `docs/services.md` §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentChange {
    /// A rollout began (jobs with an `[update]` block).
    Started {
        /// The deployment (`wall_ms.logical@node`; equal to the epoch unless a revert).
        deployment: String,
        /// `update.max_parallel`.
        max_parallel: u32,
        /// Canaries of this deployment (0 for a revert).
        canary: u32,
    },
    /// The slot's attempt runs this version, settled and passing.
    SlotDone {
        /// The slot.
        slot: u32,
    },
    /// Every canary is done; the rest waits for `shoal job promote`.
    AwaitingPromotion,
    /// The operator promoted the canaries.
    Promoted,
    /// The deployment failed (its job's coordinator said so).
    Failed {
        /// Why (`slot 3 not healthy by its deadline`).
        reason: String,
    },
    /// Every slot is done: the version is stable.
    Completed,
    /// The deployment is a revert to an earlier version's spec and epoch (any job).
    Reverted {
        /// The version current before it, when this replica knew one.
        from: Option<u32>,
        /// The version whose epoch it runs again (none if no longer kept).
        to: Option<u32>,
        /// Written by the job's coordinator after a failure (`auto_revert`).
        auto: bool,
    },
}

/// What the rollout events last said of one job's current deployment (`deploy_events.rs`).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Seen {
    pub(crate) incarnation: u64,
    pub(crate) deployment: Option<crate::ids::Stamp>,
    pub(crate) version: u32,
    pub(crate) done: crate::table::SlotSet,
    pub(crate) awaiting: bool,
    pub(crate) promoted: bool,
    pub(crate) failed: bool,
    pub(crate) complete: bool,
}

/// Per job, what was last reported.
pub(crate) type SeenDeployments = std::collections::BTreeMap<Name, Seen>;

/// The `Node` topic (`docs/services.md`, §6): eligibility changes seen by every replica, and
/// the drain as the draining node carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A node became eligible for new work, or stopped being (draining or disabled), in this
    /// replica's tables.
    Eligibility {
        /// The node.
        node: Name,
        /// Whether new placements may land there.
        eligible: bool,
    },
    /// This node started carrying out a drain.
    DrainStarted {
        /// This node.
        node: Name,
        /// Its deadline (none: batch tasks finish).
        deadline_ms: Option<u64>,
    },
    /// This node stopped one of its service tasks to move it elsewhere.
    DrainMigrating {
        /// This node.
        node: Name,
        /// The task stopped.
        task: AttemptId,
    },
    /// The deadline passed: this node stopped everything left.
    DrainDeadline {
        /// This node.
        node: Name,
        /// How many tasks it stopped.
        stopped: u32,
    },
    /// None of this node's attempts is live any more: told by the draining node as it writes
    /// its progress, and by every other replica once that progress merges there.
    DrainComplete {
        /// This node.
        node: Name,
    },
    /// A new intent ended the drain before it completed.
    DrainCancelled {
        /// This node.
        node: Name,
    },
}
// ---- end of drain ----

/// A queue of events bounded between inputs (the module doc); off (records nothing) without a
/// capacity.
#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    capacity: Option<NonZeroUsize>,
    queue: VecDeque<SchedEvent>,
    dropped: u64,
}

impl EventQueue {
    pub(crate) fn new(capacity: Option<NonZeroUsize>) -> Self {
        EventQueue {
            capacity,
            queue: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Whether events are recorded at all (callers skip building them otherwise).
    pub(crate) fn is_on(&self) -> bool {
        self.capacity.is_some()
    }

    pub(crate) fn push(&mut self, event: SchedEvent) {
        if self.capacity.is_some() {
            self.queue.push_back(event);
        }
    }

    /// An input begins: what earlier inputs left undrained is cut to the bound, oldest first.
    pub(crate) fn input_begins(&mut self) {
        let Some(capacity) = self.capacity else {
            return;
        };
        let excess = self.queue.len().saturating_sub(capacity.get());
        if excess > 0 {
            self.queue.drain(..excess);
            self.dropped += excess as u64;
            // A burst's queue is not kept at its largest.
            self.queue.shrink_to(capacity.get());
        }
    }

    pub(crate) fn pop(&mut self) -> Option<SchedEvent> {
        self.queue.pop_front()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(slot: u32) -> SchedEvent {
        SchedEvent::Admitted {
            task: AttemptId {
                job: "j".into(),
                incarnation: 1,
                slot,
                attempt: 1,
                placer: "n1".into(),
            },
        }
    }

    /// A core config that records events, keeping up to `queue` between inputs.
    fn recording(queue: usize) -> crate::SchedulerConfig {
        crate::SchedulerConfig {
            event_queue: NonZeroUsize::new(queue),
            ..crate::testing::fast_config()
        }
    }

    /// Service `web`: `count` tasks of `sleep 600`.
    fn web(count: u32) -> crate::JobSpec {
        crate::JobSpec::from_json_str(&format!(
            r#"{{"id": "web", "type": "service", "count": {count}, "command": "sleep",
                "args": ["600"], "resources": {{"cpu": 100, "memory": 32}}}}"#
        ))
        .unwrap()
    }

    /// Drains `core`'s events and counts the `DrainComplete`s it told, each of which must be
    /// about `node`; the core must have dropped none.
    fn drain_completes_told(core: &mut crate::Scheduler, node: &str) -> usize {
        let mut told = 0;
        while let Some(e) = core.poll_event() {
            if let SchedEvent::Node(NodeEvent::DrainComplete { node: about }) = e {
                assert_eq!(about.as_str(), node);
                told += 1;
            }
        }
        assert_eq!(core.events_dropped(), 0, "{} dropped events", core.node());
        told
    }

    #[test]
    fn an_off_queue_records_nothing() {
        let mut q = EventQueue::new(None);
        q.push(admitted(0));
        assert_eq!(q.pop(), None);
        assert_eq!(q.dropped(), 0);
    }

    /// A real core, not a sabotaged harness: a two-node cluster places, admits and runs a
    /// job; the coordinator's, the target's and every replica's events say so.
    #[test]
    fn the_core_reports_placements_admissions_and_every_replica_sees_the_attempts() {
        use crate::testing::Cluster;
        let mut c = Cluster::with_config(2, 4000, 4096, 7, recording(10_000));
        c.submit("n1", web(2)).unwrap();
        let running = |c: &Cluster| {
            ["n1", "n2"].iter().all(|n| {
                c.view(n, "web")
                    .is_some_and(|v| v.count_in(crate::TaskState::Running) == 2)
            })
        };
        assert!(c.run_until(10_000, running));
        let mut placed = Vec::new();
        let mut admitted = Vec::new();
        for (name, node) in &mut c.nodes {
            let mut running_seen = 0;
            while let Some(e) = node.sched.poll_event() {
                match e {
                    SchedEvent::Placed { task, target } => placed.push((task, target)),
                    SchedEvent::Admitted { task } => admitted.push(task),
                    SchedEvent::Rejected { .. } | SchedEvent::Node(_) => {}
                    SchedEvent::AttemptChanged { state, .. } => {
                        running_seen += usize::from(matches!(state, AttemptState::Running { .. }));
                    }
                    SchedEvent::VersionCreated { .. } | SchedEvent::Deployment { .. } => {}
                }
            }
            assert!(running_seen >= 2, "{name} saw {running_seen} attempts run");
            assert_eq!(node.sched.events_dropped(), 0);
        }
        placed.sort();
        admitted.sort();
        let placed_tasks: Vec<AttemptId> = placed.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(placed_tasks, admitted, "every placement admitted once");
        assert_eq!(placed.len(), 2);
    }

    /// A drain's completion is told on every node, not only on the draining one: the
    /// draining node as it writes its progress, the others once it merges (before, a page
    /// served by another node showed the drain unfinished until something else happened).
    #[test]
    fn every_replica_tells_a_drain_complete_once() {
        use crate::testing::Cluster;
        let mut c = Cluster::with_config(3, 4000, 4096, 7, recording(10_000));
        c.submit("n1", web(3)).unwrap();
        let running = |c: &Cluster| {
            c.view("n1", "web")
                .is_some_and(|v| v.count_in(crate::TaskState::Running) == 3)
        };
        assert!(c.run_until(10_000, running));
        let drain = crate::NodeChange::Drain { deadline_ms: None };
        c.node_command("n1", "n3", drain).unwrap();
        let done_everywhere = |c: &Cluster| {
            c.nodes.values().all(|n| {
                n.sched
                    .tables()
                    .node("n3")
                    .is_some_and(crate::table::NodeRow::drain_done)
            })
        };
        assert!(
            c.run_until(30_000, done_everywhere),
            "n3's drain never completed"
        );
        // A few more rounds of anti-entropy: nothing is told twice.
        let later = c.now.0 + 5_000;
        c.run_until(10_000, |c| c.now.0 >= later);
        for (name, node) in &mut c.nodes {
            let told = drain_completes_told(&mut node.sched, "n3");
            assert_eq!(told, 1, "{name} told n3's drain complete {told} times");
        }
    }

    /// A replica that learns of a completed drain by a state transfer (it was cut off, or its
    /// peer's op log had moved on) tells it too; one restored from a snapshot that holds the
    /// completed drain does not tell it again.
    #[test]
    fn a_drain_complete_from_a_state_transfer_is_told_and_a_restore_does_not_repeat_it() {
        use crate::message::Message;
        use crate::testing::Cluster;
        let config = recording(10_000);
        let mut c = Cluster::with_config(3, 4000, 4096, 7, config.clone());
        c.node_command("n1", "n3", crate::NodeChange::Drain { deadline_ms: None })
            .unwrap();
        let done = |c: &Cluster| {
            c.nodes["n2"]
                .sched
                .tables()
                .node("n3")
                .is_some_and(crate::table::NodeRow::drain_done)
        };
        assert!(c.run_until(30_000, done), "n3's drain never completed");
        let tables = Box::new(c.nodes["n2"].sched.tables().clone());
        let told = |s: &mut crate::Scheduler| drain_completes_told(s, "n3");
        let mut late = crate::Scheduler::new("n9".into(), config.clone(), 3);
        late.handle_message(c.now, "n2", Message::State { tables });
        assert_eq!(
            told(&mut late),
            1,
            "the state transfer's drain is told once"
        );
        // A restart: the snapshot, then the node rows the core had logged joined again.
        let mut logged = Vec::new();
        while let Some(batch) = late.poll_job_records() {
            logged.extend(batch.records.into_iter().map(|r| r.bytes));
        }
        assert!(!logged.is_empty(), "the merged node row was logged");
        let snapshot = late.snapshot();
        let mut again = crate::Scheduler::restore("n9".into(), config, 3, &snapshot).unwrap();
        again.restore_job_records(logged.iter().map(Vec::as_slice));
        again.handle_timeout(c.now.plus_ms(1_000));
        assert_eq!(told(&mut again), 0, "a restart does not tell it again");
    }

    #[test]
    fn an_undrained_queue_drops_the_oldest_when_the_next_input_begins_and_counts_them() {
        let mut q = EventQueue::new(NonZeroUsize::new(2));
        q.input_begins();
        for slot in 0..3 {
            q.push(admitted(slot));
        }
        assert_eq!(q.dropped(), 0, "one input's events are all kept");
        q.input_begins();
        assert_eq!(q.dropped(), 1);
        assert_eq!(q.pop(), Some(admitted(1)));
        assert_eq!(q.pop(), Some(admitted(2)));
        assert_eq!(q.pop(), None);
        q.input_begins();
        assert_eq!(q.dropped(), 1);
    }

    /// A real core: one submission places more slots than the bound in one input, and a
    /// shell that drains after the input gets every placement (the agent's 4,096 against a
    /// 10,000-slot job lost about 6,200 events per batch before).
    #[test]
    fn one_input_larger_than_the_bound_loses_no_event() {
        use crate::testing::Cluster;
        // One node: it coordinates every slot, so it places them all in the submission.
        let mut c = Cluster::with_config(1, 100_000, 100_000, 7, recording(4));
        let n1 = c.nodes.get_mut("n1").unwrap();
        while n1.sched.poll_event().is_some() {}
        let dropped_before = n1.sched.events_dropped();
        let spec = crate::JobSpec::from_json_str(
            r#"{"id": "batch", "type": "batch", "count": 50, "command": "true",
                "resources": {"cpu": 10, "memory": 1}}"#,
        )
        .unwrap();
        c.submit("n1", spec).unwrap();
        let n1 = c.nodes.get_mut("n1").unwrap();
        let mut placed = 0;
        while let Some(e) = n1.sched.poll_event() {
            placed += usize::from(matches!(e, SchedEvent::Placed { .. }));
        }
        assert_eq!(placed, 50, "every slot's placement is reported");
        assert_eq!(n1.sched.events_dropped(), dropped_before);
    }
}
