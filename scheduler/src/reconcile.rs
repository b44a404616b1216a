//! The decision loop of [`Scheduler`]: after every input, `reconcile` turns what changed in the
//! tables into work and runs it until quiet. Each kind of work has its room:
//!
//! - **Admission** (`admission.rs`, `admit_queued`): proposals addressed to this node are
//!   admitted in arrival order while they fit its capacity (the local ledger), and rejected
//!   otherwise.
//! - **Fencing** (`fencing.rs`, `check_ledger`): a local task whose attempt is no longer current
//!   (superseded, lost, stopped, scaled down, purged) is killed.
//! - **Coordinating a slot** (`coordinator.rs`, `coordinate_slot`): for each slot whose
//!   rendezvous coordinator is this node, place it when empty, re-place it after a rejection or
//!   failure (with back-off), mark the attempts of a dead target lost, replace attempts of an
//!   older job version.
//! - **GC** (`gc.rs`, `consider_gc`, `maybe_compact`): purge finished jobs after a grace period;
//!   fold old attempts of busy slots into a floor.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ms;
use crate::events::SchedEvent;
use crate::ids::{AttemptId, Name, SlotKey};
use crate::roles::{HoldSeen, Wake, Work};
use crate::scheduler::Scheduler;
use crate::slot::slot_status;
use crate::table::{AttemptState, Touch};

/// Rounds of (absorb changes → act) per input before deferring to a `Work` timer.
const MAX_ROUNDS: usize = 16;

impl Scheduler {
    /// Absorb changes and act on them until nothing changes (bounded).
    pub(crate) fn reconcile(&mut self) {
        for _ in 0..MAX_ROUNDS {
            self.absorb_touches();
            if self.work.is_empty() && self.target.queue.is_empty() {
                // This node's drain, if it has one, acts on the settled state.
                self.drive_drain();
                return;
            }
            self.admit_queued();
            let work = std::mem::take(&mut self.work);
            self.run_work(work);
        }
        self.timers.insert((self.now, Wake::Work));
    }

    /// Turn table changes into work items and admission candidates.
    fn absorb_touches(&mut self) {
        let hold = ms(self.config.release_hold);
        for id in self.replica.take_opened() {
            if self.ordered() {
                // Oldest first: the hold ends for each pending slot at its own time
                // (`Scheduler::visible_at`), and for everyone after `release_hold`.
                let seen = HoldSeen {
                    opened: self.now,
                    jitter: self.rng.below(1024),
                };
                self.coord.holds.insert(id, seen);
                self.timers
                    .insert((self.hold_end(&seen), Wake::Release(id)));
                self.release_visible(id);
            } else {
                let at = self.now.plus_ms(self.rng.below(hold.saturating_add(1)));
                self.timers.insert((at, Wake::Release(id)));
            }
        }
        // A release folded into an open hold is room at once for the slots that already see
        // the hold (`still_no_room` counts it); it wakes nobody: every placer that sees the
        // hold would propose in the same millisecond (measured: 4× the conflicts). The next
        // pass, or the hold's end, finds it.
        for touch in self.replica.take_touched() {
            match touch {
                Touch::Everything => {
                    self.work.everything = true;
                    self.catalog_changes.everything = true;
                    let jobs: Vec<Name> = self
                        .tables()
                        .job_ids()
                        .into_iter()
                        .map(Name::from)
                        .collect();
                    for job in jobs {
                        self.log.note_job(&job);
                        self.note_deployment(&job, true);
                    }
                    let mine: Vec<AttemptId> = self
                        .tables()
                        .assignments()
                        .filter(|(_, a)| a.target == self.node)
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in mine {
                        self.note_attempt(&id);
                    }
                    // A state transfer's node rows: each logged, its eligibility and drain
                    // completion told, as for a merged op; the candidates refreshed once.
                    let nodes: Vec<Name> = self
                        .tables()
                        .nodes()
                        .map(|(name, _)| name.clone())
                        .collect();
                    for name in &nodes {
                        self.node_row_seen(name);
                    }
                    if !nodes.is_empty() {
                        self.node_rows_changed();
                    }
                    self.requeue_deferred(None);
                }
                Touch::Job(job) => {
                    self.note_deployment(&job, false);
                    self.catalog_changes.jobs.insert(job.clone());
                    self.log.note_job(&job);
                    self.requeue_deferred(Some(&job));
                    self.work.jobs.insert(job);
                }
                Touch::Node(name) => self.node_touched(&name),
                Touch::Attempt(id) => {
                    self.catalog_changes.jobs.insert(id.job.clone());
                    self.note_attempt_event(&id);
                    self.note_attempt(&id);
                    let key = id.slot_key();
                    if self.slot_concerns_me(&key) {
                        self.work.slots.insert(key);
                    } else {
                        self.forget_slot(&key);
                    }
                }
            }
        }
    }

    /// Whether a changed slot can need anything from this node: it coordinates the slot or
    /// the job's GC, or runs an attempt of the slot (which a newer attempt elsewhere fences).
    /// Every replica hears of every slot change and, at scale, almost none of them concerns
    /// it: those skip the per-job pass ([`Scheduler::reconcile_slots`] would only find that
    /// out, one table lookup at a time). Proposals aimed at this node are queued for
    /// admission by [`Scheduler::note_attempt`] either way.
    fn slot_concerns_me(&self, key: &SlotKey) -> bool {
        self.is_coordinator(key)
            || self.is_job_coordinator(&key.job, key.incarnation)
            || self
                .target
                .ledger
                .range(key.first_attempt()..key.end_attempt())
                .next()
                .is_some()
    }

    /// Records the attempt's row as it is now, when events are on.
    fn note_attempt_event(&mut self, id: &AttemptId) {
        if !self.events.is_on() {
            return;
        }
        let tables = self.tables();
        let Some((a, state)) = tables.assignment_and_state(id) else {
            return;
        };
        let event = SchedEvent::AttemptChanged {
            task: id.clone(),
            target: a.target.clone(),
            state: state.clone(),
            health: tables.health(id).cloned(),
        };
        self.events.push(event);
    }

    /// React to an attempt change: queue proposals for us, fail zombies, free pending slots.
    fn note_attempt(&mut self, id: &AttemptId) {
        let Some((a, state)) = self.tables().assignment_and_state(id) else {
            return;
        };
        let live = state.is_live();
        if a.target == self.node {
            match state {
                AttemptState::Proposed => self.target.queue.push_back(id.clone()),
                AttemptState::Admitted | AttemptState::Running { .. }
                    if !self.target.ledger.contains_key(id) =>
                {
                    // Admitted by an earlier life of this node that did not survive.
                    let reason = "not running on this node (agent restarted)".to_string();
                    self.write_state_if_mine(id, AttemptState::Failed { reason });
                }
                _ => {}
            }
        }
        if !live {
            self.retry_pending_soon();
        }
    }

    /// Jobs to examine, highest priority first.
    fn run_work(&mut self, work: Work) {
        let mut jobs: BTreeSet<Name> = work.jobs;
        if work.everything {
            jobs.extend(self.tables().job_ids().into_iter().map(Name::from));
            jobs.extend(self.target.ledger.keys().map(|id| id.job.clone()));
        }
        let mut slots: BTreeMap<Name, Vec<SlotKey>> = BTreeMap::new();
        for key in work.slots.into_iter().filter(|k| !jobs.contains(&k.job)) {
            slots.entry(key.job.clone()).or_default().push(key);
        }
        let mut order: Vec<(u32, Name, bool, u64)> = jobs
            .into_iter()
            .map(|j| (0, j, true, 0))
            .chain(slots.keys().map(|j| (0, j.clone(), false, 0)))
            .collect();
        // Most calls touch one job: no order to decide, so no priority to look up. Oldest
        // first (`SchedulerConfig::release_age_scale`): among equal priorities, the job
        // version written first is examined first.
        if order.len() > 1 {
            let ordered = self.ordered();
            for (priority, job, _, written) in &mut order {
                (*priority, *written) = self.priority_and_age(job, ordered);
            }
            order.sort_by(|a, b| {
                b.0.cmp(&a.0)
                    .then_with(|| a.3.cmp(&b.3))
                    .then_with(|| a.1.cmp(&b.1))
            });
        }
        for (_, job, whole, _) in order {
            if whole {
                self.reconcile_job(&job);
            } else if let Some(keys) = slots.remove(&job) {
                self.reconcile_slots(&job, &keys);
            }
        }
    }

    /// A job's priority and, when `ordered`, when its version was written (wall ms).
    fn priority_and_age(&self, job: &str, ordered: bool) -> (u32, u64) {
        self.tables().job(job).map_or((0, 0), |(_, e)| {
            let written = if ordered { e.epoch.hlc.wall_ms } else { 0 };
            (e.spec.priority, written)
        })
    }

    /// A whole job: fencing of local tasks, every slot, GC of every incarnation.
    fn reconcile_job(&mut self, job: &str) {
        self.check_ledger(job);
        self.refresh_checks(job);
        let from = (Name::from(job), 0);
        let known: Vec<(Name, u64)> = self
            .coord
            .no_room
            .range(from..)
            .take_while(|((j, _), _)| j == job)
            .map(|(k, _)| k.clone())
            .collect();
        for k in known {
            self.coord.no_room.remove(&k);
        }
        self.gc.done_cursor.retain(|(j, _), _| j != job);
        let incarnations: Vec<u64> = self.tables().incarnations(job).map(|(i, _)| i).collect();
        let ctx = self.job_ctx(job);
        self.coord.pending.retain(|k, _| {
            k.job != job
                || ctx.as_ref().is_some_and(|c| {
                    !c.entry.stopped
                        && c.incarnation == k.incarnation
                        && k.slot < c.entry.spec.count
                })
        });
        if let Some(mut ctx) = ctx {
            for slot in 0..ctx.entry.spec.count {
                let key = SlotKey {
                    job: job.into(),
                    incarnation: ctx.incarnation,
                    slot,
                };
                if self.is_coordinator(&key) {
                    self.coordinate_slot(&mut ctx, slot);
                } else {
                    self.forget_slot(&key);
                }
            }
        }
        for inc in incarnations {
            self.consider_gc(job, inc);
        }
        self.watch_rollout(job);
    }

    /// Some slots of a job.
    fn reconcile_slots(&mut self, job: &str, keys: &[SlotKey]) {
        self.check_ledger_slots(keys);
        let Some((incarnation, count, stopped)) = self
            .tables()
            .job(job)
            .map(|(inc, e)| (inc, e.spec.count, e.stopped))
        else {
            return;
        };
        // Every node hears of every slot change, but only the slot's coordinator acts on it
        // and only the job's GC coordinator needs to know whether it is final: the others
        // skip the slot's status and the job context (a spec clone) altogether.
        let mut gc_mine = None;
        let mut mine = Vec::new();
        let mut any_final = false;
        for key in keys {
            if key.incarnation != incarnation || key.slot >= count {
                self.coord.pending.remove(key);
            } else if self.is_coordinator(key) {
                mine.push(key.slot);
            } else {
                self.forget_slot(key);
                let gc = *gc_mine.get_or_insert_with(|| self.is_job_coordinator(job, incarnation));
                any_final |= gc && self.is_final(key);
            }
        }
        if !mine.is_empty()
            && let Some(mut ctx) = self.job_ctx(job)
        {
            for slot in mine {
                any_final |= self.coordinate_slot(&mut ctx, slot);
            }
        }
        if gc_mine.unwrap_or_else(|| self.is_job_coordinator(job, incarnation)) {
            self.watch_rollout(job);
        }
        if any_final || stopped {
            if gc_mine.unwrap_or_else(|| self.is_job_coordinator(job, incarnation)) {
                self.consider_gc(job, incarnation);
            } else {
                self.gc
                    .finished_since
                    .remove(&(job.to_string(), incarnation));
            }
        }
    }

    /// A slot this node does not coordinate: it keeps no pending reason or back-off for it.
    fn forget_slot(&mut self, key: &SlotKey) {
        self.coord.pending.remove(key);
        self.coord.retry.remove(key);
    }

    /// Whether a slot of the visible incarnation is done or out of retries.
    fn is_final(&self, key: &SlotKey) -> bool {
        self.tables()
            .job(&key.job)
            .is_some_and(|(_, e)| slot_status(self.tables(), e, key, self.backoff()).is_final())
    }
}
