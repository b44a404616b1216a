//! The draining node's side of a drain (`docs/services.md`, §5): it owns its tasks' states,
//! so it alone moves them off, after every input (`reconcile` calls
//! [`Scheduler::drive_drain`] once the rest is quiet).
//!
//! What it promises:
//! - **Services** move a few at a time: per job, at most `mp` (`update.max_parallel`, or 1)
//!   are in flight — stopped for the drain, or ended `Drained` while the slot's current
//!   attempt elsewhere is not yet healthy (and settled, for a job with `[update]`) — and a
//!   healthy task is stopped only while the job has at least `count − mp + 1` healthy
//!   instances in this node's view, so it never drops below `count − mp` because of the
//!   drain. An unhealthy task costs no healthy instance and is moved under `mp` alone.
//! - It acts only with a majority (`docs/faults.md`): a cut-off node moves nothing.
//! - With several drains, a job waits while another draining node with a smaller
//!   `(intent stamp, name)` still holds live tasks of it.
//! - **Batch tasks** run on. At the deadline (the node's own clock, from when it first saw
//!   the intent) everything left is stopped, `mp` and health ignored.
//! - A stopped task ends `Drained`: its coordinator places it again at once, elsewhere,
//!   without spending a restart attempt or a retry (`slot.rs`).
//! - Once none of its attempts is live, the node writes `DrainProgress {done}`: never before.

use std::collections::BTreeSet;

use crate::events::{NodeEvent, SchedEvent};
use crate::health::task_health;
use crate::ids::{AttemptId, Name, SlotKey, Stamp};
use crate::roles::Wake;
use crate::scheduler::{KillReason, Scheduler};
use crate::spec::JobType;
use crate::table::{AttemptState, DrainProgress, NodeRow, OpBody};

impl Scheduler {
    /// Carry this node's drain forward, if it has one (cheap when it has none).
    pub(crate) fn drive_drain(&mut self) {
        let row = self.tables().node(&self.node).cloned().unwrap_or_default();
        let Some((stamp, spec)) = row.drain().map(|(s, d)| (s.clone(), d)) else {
            if let Some((old, _)) = self.drain.current.take() {
                let done = row
                    .progress
                    .as_ref()
                    .is_some_and(|p| p.drain == old && p.done);
                if !done {
                    let node = self.node_name();
                    self.events
                        .push(SchedEvent::Node(NodeEvent::DrainCancelled { node }));
                }
            }
            return;
        };
        if self.drain.current.as_ref().is_none_or(|(s, _)| *s != stamp) {
            self.drain.current = Some((stamp.clone(), self.now));
            self.drain.deadline_hit = false;
            let node = self.node_name();
            let deadline_ms = spec.deadline_ms;
            self.events.push(SchedEvent::Node(NodeEvent::DrainStarted {
                node,
                deadline_ms,
            }));
            if let Some(d) = deadline_ms {
                self.timers.insert((self.now.plus_ms(d), Wake::Drain));
            }
        }
        if row.drain_done() {
            return;
        }
        if self.target.ledger.is_empty() {
            if !self.any_live_attempt_here() {
                self.write_drain_done(stamp);
            }
            return;
        }
        let started = self.drain.current.as_ref().map_or(self.now, |(_, at)| *at);
        if spec
            .deadline_ms
            .is_some_and(|d| self.now.since(started) >= d)
        {
            self.drain_deadline();
            return;
        }
        if self.may_act() {
            self.migrate_services(&stamp);
        }
    }

    fn node_name(&self) -> Name {
        self.node.as_str().into()
    }

    fn write_drain_done(&mut self, stamp: Stamp) {
        let node = self.node_name();
        let row = NodeRow {
            intent: None,
            progress: Some(DrainProgress {
                drain: stamp,
                done: true,
            }),
        };
        self.write(OpBody::Node {
            node: node.clone(),
            row,
        });
        self.events
            .push(SchedEvent::Node(NodeEvent::DrainComplete { node }));
    }

    /// The deadline passed: stop everything left as `Drained`.
    fn drain_deadline(&mut self) {
        let left: Vec<AttemptId> = self
            .target
            .ledger
            .iter()
            .filter(|(_, t)| !t.killing)
            .map(|(id, _)| id.clone())
            .collect();
        if !self.drain.deadline_hit || !left.is_empty() {
            self.drain.deadline_hit = true;
            let node = self.node_name();
            let stopped = u32::try_from(left.len()).unwrap_or(u32::MAX);
            self.events
                .push(SchedEvent::Node(NodeEvent::DrainDeadline { node, stopped }));
        }
        for id in left {
            self.stop_for_drain(id);
        }
    }

    fn stop_for_drain(&mut self, id: AttemptId) {
        self.drain.stopping.insert(id.clone());
        self.kill_doomed(vec![(id, KillReason::Drained)]);
    }

    /// Stop what each service job's budget allows (see the module doc).
    fn migrate_services(&mut self, mine: &Stamp) {
        let jobs: BTreeSet<Name> = self
            .target
            .ledger
            .iter()
            .filter(|(_, t)| !t.killing)
            .map(|(id, _)| id.job.clone())
            .collect();
        for job in jobs {
            for id in self.drain_budget(&job, mine) {
                let node = self.node_name();
                self.events
                    .push(SchedEvent::Node(NodeEvent::DrainMigrating {
                        node,
                        task: id.clone(),
                    }));
                self.stop_for_drain(id);
            }
        }
    }

    /// The local tasks of `job` to stop now.
    fn drain_budget(&self, job: &str, mine: &Stamp) -> Vec<AttemptId> {
        let tables = self.tables();
        let Some((inc, entry)) = tables.job(job) else {
            return Vec::new();
        };
        if entry.stopped
            || entry.spec.job_type != JobType::Service
            || self.other_drain_first(job, inc, mine)
        {
            return Vec::new();
        }
        let count = entry.spec.count;
        let mp = entry
            .spec
            .update
            .as_ref()
            .map_or(1, |u| u.max_parallel.max(1));
        let has_checks = !entry.spec.checks.is_empty();
        let settles = entry.spec.update.is_some();
        let healthy_now = |id: &AttemptId| {
            !self.drain.stopping.contains(id)
                && task_health(tables, id, has_checks).is_healthy()
                && tables
                    .assignment(id)
                    .is_some_and(|a| !self.attempt_target_down(id, &a.target))
        };
        let (mut healthy, mut in_flight) = (0u32, 0u32);
        for slot in 0..count {
            let key = SlotKey {
                job: job.into(),
                incarnation: inc,
                slot,
            };
            let current = tables.current_attempt(&key).map(|(id, _)| id);
            let cur_ok = current
                .is_some_and(|id| healthy_now(id) && (!settles || tables.milestones(id).settled));
            healthy += u32::from(current.is_some_and(healthy_now));
            let stopping = self
                .drain
                .stopping
                .range(key.first_attempt()..key.end_attempt())
                .next()
                .is_some();
            let drained_here = tables
                .slot_attempts(&key)
                .any(|(id, a)| a.target == self.node && tables.state(id) == AttemptState::Drained);
            in_flight += u32::from(stopping || (drained_here && !cur_ok));
        }
        let floor = count.saturating_sub(mp).saturating_add(1);
        let mut out = Vec::new();
        let local = self
            .target
            .ledger
            .iter()
            .filter(|(id, t)| !t.killing && id.job == job && id.incarnation == inc)
            .map(|(id, _)| id);
        for id in local {
            if in_flight >= mp {
                break;
            }
            let was_healthy = healthy_now(id);
            if was_healthy && healthy < floor {
                continue;
            }
            out.push(id.clone());
            in_flight += 1;
            healthy = healthy.saturating_sub(u32::from(was_healthy));
        }
        out
    }

    /// Whether another draining node with a smaller `(intent stamp, name)` still holds live
    /// tasks of the job in this view: it goes first.
    fn other_drain_first(&self, job: &str, inc: u64, mine: &Stamp) -> bool {
        let tables = self.tables();
        tables.nodes().any(|(name, row)| {
            name.as_str() != self.node
                && !row.drain_done()
                && row
                    .drain()
                    .is_some_and(|(s, _)| (s, name.as_str()) < (mine, self.node.as_str()))
                && tables
                    .job_attempts(job, inc)
                    .any(|(id, a)| a.target == *name && tables.is_live(id))
        })
    }
}
