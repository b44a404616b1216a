//! The decision side of [`Scheduler`]: after every input, `reconcile` turns what changed in the
//! tables into work and runs it until quiet.
//!
//! - **Target node** (`admit_queued`): proposals addressed to this node are admitted in
//!   arrival order while they fit its capacity (the local ledger), and rejected otherwise.
//! - **Fencing** (`check_ledger`): a local task whose attempt is no longer current (superseded,
//!   lost, stopped, scaled down, purged) is killed.
//! - **Coordinator** (`coordinate_slot`): for each slot whose rendezvous coordinator is this
//!   node, place it when empty, re-place it after a rejection or failure (with back-off),
//!   mark the attempts of a dead target lost, replace attempts of an older job version.
//! - **GC** (`consider_gc`, `maybe_compact`): purge finished jobs after a grace period; fold
//!   old attempts of busy slots into a floor.

use std::collections::{BTreeMap, BTreeSet};

use shoal_gossip::{Millis, Resources};

use crate::config::ms;
use crate::disconnect::LostFate;
use crate::hash::{StableHasher, rendezvous, rendezvous_is};
use crate::ids::{AttemptId, Name, SlotKey};
use crate::placement::{NodeView, PendingReason, Request, count_by_node, fits, place};
use crate::scheduler::{ExecCommand, KillReason, LocalTask, NoRoom, Retry, Scheduler, Wake};
use crate::slot::{RejectionBackoff, SlotStatus, slot_status};
use crate::spec::{JobType, fmt_resources};
use crate::table::{Assignment, AttemptState, JobEntry, OpBody, SlotFloor, Touch};

/// Rounds of (absorb changes → act) per input before deferring to a `Work` timer.
const MAX_ROUNDS: usize = 16;

/// Per-job context while reconciling its slots.
pub(crate) struct JobCtx {
    incarnation: u64,
    entry: JobEntry,
    /// Live attempts per node (lazily computed; only spread and distinct_hosts need it).
    tasks: Option<BTreeMap<String, u32>>,
    /// A placement of this job already found no room in this pass.
    no_room: Option<PendingReason>,
}

impl Scheduler {
    /// Absorb changes and act on them until nothing changes (bounded).
    pub(crate) fn reconcile(&mut self) {
        for _ in 0..MAX_ROUNDS {
            self.absorb_touches();
            if self.work.is_empty() && self.admission.is_empty() {
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
            let at = self.now.plus_ms(self.rng.below(hold.saturating_add(1)));
            self.timers.insert((at, Wake::Release(id)));
        }
        for touch in self.replica.take_touched() {
            match touch {
                Touch::Everything => {
                    self.work.everything = true;
                    let jobs: Vec<Name> = self
                        .tables()
                        .job_ids()
                        .into_iter()
                        .map(Name::from)
                        .collect();
                    for job in jobs {
                        self.log.note_job(&job);
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
                    self.requeue_deferred(None);
                }
                Touch::Job(job) => {
                    self.log.note_job(&job);
                    self.requeue_deferred(Some(&job));
                    self.work.jobs.insert(job);
                }
                Touch::Attempt(id) => {
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
                .ledger
                .range(key.first_attempt()..key.end_attempt())
                .next()
                .is_some()
    }

    /// React to an attempt change: queue proposals for us, fail zombies, free pending slots.
    fn note_attempt(&mut self, id: &AttemptId) {
        let Some((a, state)) = self.tables().assignment_and_state(id) else {
            return;
        };
        let live = state.is_live();
        if a.target == self.node {
            match state {
                AttemptState::Proposed => self.admission.push_back(id.clone()),
                AttemptState::Admitted | AttemptState::Running { .. }
                    if !self.ledger.contains_key(id) =>
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

    fn requeue_deferred(&mut self, job: Option<&str>) {
        let ids: Vec<AttemptId> = self
            .deferred
            .iter()
            .filter(|id| job.is_none_or(|j| id.job == j))
            .cloned()
            .collect();
        for id in ids {
            self.deferred.remove(&id);
            self.admission.push_back(id);
        }
    }

    /// Jobs to examine, highest priority first.
    fn run_work(&mut self, work: crate::scheduler::Work) {
        let mut jobs: BTreeSet<Name> = work.jobs;
        if work.everything {
            jobs.extend(self.tables().job_ids().into_iter().map(Name::from));
            jobs.extend(self.ledger.keys().map(|id| id.job.clone()));
        }
        let mut slots: BTreeMap<Name, Vec<SlotKey>> = BTreeMap::new();
        for key in work.slots.into_iter().filter(|k| !jobs.contains(&k.job)) {
            slots.entry(key.job.clone()).or_default().push(key);
        }
        let mut order: Vec<(u32, Name, bool)> = jobs
            .into_iter()
            .map(|j| (0, j, true))
            .chain(slots.keys().map(|j| (0, j.clone(), false)))
            .collect();
        // Most calls touch one job: no order to decide, so no priority to look up.
        if order.len() > 1 {
            for (priority, job, _) in &mut order {
                *priority = self.priority(job);
            }
            order.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        }
        for (_, job, whole) in order {
            if whole {
                self.reconcile_job(&job);
            } else if let Some(keys) = slots.remove(&job) {
                self.reconcile_slots(&job, &keys);
            }
        }
    }

    fn priority(&self, job: &str) -> u32 {
        self.tables().job(job).map_or(0, |(_, e)| e.spec.priority)
    }

    fn job_ctx(&self, job: &str) -> Option<JobCtx> {
        let (incarnation, entry) = self.tables().job(job)?;
        Some(JobCtx {
            incarnation,
            entry: entry.clone(),
            tasks: None,
            no_room: None,
        })
    }

    /// A whole job: fencing of local tasks, every slot, GC of every incarnation.
    fn reconcile_job(&mut self, job: &str) {
        self.check_ledger(job);
        let from = (Name::from(job), 0);
        let known: Vec<(Name, u64)> = self
            .no_room
            .range(from..)
            .take_while(|((j, _), _)| j == job)
            .map(|(k, _)| k.clone())
            .collect();
        for k in known {
            self.no_room.remove(&k);
        }
        self.done_cursor.retain(|(j, _), _| j != job);
        let incarnations: Vec<u64> = self.tables().incarnations(job).map(|(i, _)| i).collect();
        let ctx = self.job_ctx(job);
        self.pending.retain(|k, _| {
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
                self.pending.remove(key);
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
        if any_final || stopped {
            if gc_mine.unwrap_or_else(|| self.is_job_coordinator(job, incarnation)) {
                self.consider_gc(job, incarnation);
            } else {
                self.finished_since.remove(&(job.to_string(), incarnation));
            }
        }
    }

    /// A slot this node does not coordinate: it keeps no pending reason or back-off for it.
    fn forget_slot(&mut self, key: &SlotKey) {
        self.pending.remove(key);
        self.retry.remove(key);
    }

    /// Whether a slot of the visible incarnation is done or out of retries.
    fn is_final(&self, key: &SlotKey) -> bool {
        self.tables()
            .job(&key.job)
            .is_some_and(|(_, e)| slot_status(self.tables(), e, key, self.backoff()).is_final())
    }

    // ---- target side --------------------------------------------------------------------

    /// Admit or reject queued proposals, in arrival order.
    fn admit_queued(&mut self) {
        while let Some(id) = self.admission.pop_front() {
            let Some(a) = self.tables().assignment(&id).cloned() else {
                continue;
            };
            if a.target != self.node
                || self.tables().state(&id) != AttemptState::Proposed
                || self.ledger.contains_key(&id)
            {
                continue;
            }
            match self.admission_verdict(&id, &a) {
                Verdict::Admit(entry) => self.admit(id, &a, &entry),
                Verdict::Defer => {
                    self.deferred.insert(id);
                }
                Verdict::Reject(reason) => {
                    self.write_state_if_mine(&id, AttemptState::Rejected { reason });
                }
            }
        }
    }

    fn admission_verdict(&self, id: &AttemptId, a: &Assignment) -> Verdict {
        let Some((inc, entry)) = self.tables().job(&id.job) else {
            return Verdict::Defer; // the job write has not arrived yet
        };
        if inc != id.incarnation || entry.stopped || id.slot >= entry.spec.count {
            return Verdict::Reject("job stopped, replaced or scaled down".into());
        }
        if a.epoch > entry.epoch {
            return Verdict::Defer; // placed for a job version we have not received yet
        }
        if a.epoch < entry.epoch {
            return Verdict::Reject("placed for an older version of the job".into());
        }
        let current = self
            .tables()
            .current_attempt(&id.slot_key())
            .map(|(k, _)| k);
        if current != Some(id) {
            return Verdict::Reject("superseded by another attempt of the slot".into());
        }
        if entry.spec.wants_distinct_hosts()
            && let Some(other) = self.local_sibling(id)
        {
            return Verdict::Reject(format!(
                "distinct_hosts: {} already runs slot {other} of job {}",
                self.node, id.job
            ));
        }
        match self.fits_here(entry, a.resources) {
            Ok(()) => Verdict::Admit(Box::new(entry.clone())),
            Err(reason) => Verdict::Reject(reason),
        }
    }

    /// Another slot of the same job incarnation admitted here and not being killed: two
    /// coordinators that placed concurrently cannot both put a `distinct_hosts` job here.
    fn local_sibling(&self, id: &AttemptId) -> Option<u32> {
        let from = AttemptId {
            job: id.job.clone(),
            incarnation: id.incarnation,
            slot: 0,
            attempt: 0,
            placer: Name::default(),
        };
        self.ledger
            .range(from..)
            .take_while(|(k, _)| k.job == id.job && k.incarnation == id.incarnation)
            .find(|(k, t)| k.slot != id.slot && !t.killing)
            .map(|(k, _)| k.slot)
    }

    /// The hard check: this node's own attributes and its ledger against its capacity.
    fn fits_here(&self, entry: &JobEntry, want: Resources) -> Result<(), String> {
        let me = self.members.all.get(&self.node);
        let Some(ad) = me.and_then(|m| m.ad.as_ref()) else {
            return Err(format!("{} has not advertised its resources", self.node));
        };
        if ad.draining || ad.left {
            return Err(format!("{} is draining", self.node));
        }
        if let Some(c) = entry.spec.failed_constraint(&self.node, &ad.attributes) {
            return Err(format!("{} fails constraint {c}", self.node));
        }
        if let Some(user) = &entry.spec.user
            && !self.config.task_users.contains(user)
        {
            return Err(format!(
                "{} does not run tasks as user {user} (it allows: {}); allow it with the agent \
                 flag --allow-task-user {user} (the agent must run as root)",
                self.node,
                self.config
                    .task_users
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let used = self.local_allocated();
        if used.saturating_add(&want).fits_in(&ad.capacity) {
            return Ok(());
        }
        let free = ad.capacity.saturating_sub(&used);
        Err(format!(
            "{} has {} free, needs {}",
            self.node,
            fmt_resources(&free),
            fmt_resources(&want)
        ))
    }

    fn admit(&mut self, id: AttemptId, a: &Assignment, entry: &JobEntry) {
        self.ledger
            .insert(id.clone(), LocalTask::admitted(a.resources));
        self.write_state_if_mine(&id, AttemptState::Admitted);
        if !self.quorum.majority {
            self.arm_disconnect_stop();
        }
        let spec = &entry.spec;
        self.commands.push_back(ExecCommand::Start {
            task: id,
            command: spec.command.clone(),
            args: spec.args.clone(),
            env: spec.env.clone(),
            workdir: spec.workdir.clone(),
            resources: a.resources,
            user: spec.user.clone(),
        });
    }

    /// Write a state this node owns (it is the target), if it moves the lattice forward.
    pub(crate) fn write_state_if_mine(&mut self, id: &AttemptId, state: AttemptState) {
        let mine = self
            .tables()
            .assignment(id)
            .is_some_and(|a| a.target == self.node);
        if mine && self.tables().state(id) < state {
            self.write(OpBody::State {
                id: id.clone(),
                state,
            });
        }
    }

    /// Kill local tasks of `job` that are no longer current.
    fn check_ledger(&mut self, job: &str) {
        // The ledger holds this node's tasks only (a few dozen), ordered by incarnation first:
        // the tasks of one job id across its incarnations are not contiguous, so scan it.
        let fates: Vec<(AttemptId, Fate)> = self
            .ledger
            .iter()
            .filter(|(id, t)| !t.killing && id.job == job)
            .filter_map(|(id, _)| self.fate(id).map(|f| (id.clone(), f)))
            .collect();
        self.apply_fates(fates);
    }

    /// Kill local tasks of these slots that are no longer current. Every replica asks this
    /// for every slot change it hears of, and this node almost never runs the slot: a range
    /// lookup per slot instead of a scan of the ledger. `keys` are distinct and sorted, so
    /// the kills come in ledger order, as from [`Scheduler::check_ledger`].
    fn check_ledger_slots(&mut self, keys: &[SlotKey]) {
        if self.ledger.is_empty() {
            return;
        }
        let mut fates: Vec<(AttemptId, Fate)> = Vec::new();
        for key in keys {
            for (id, t) in self.ledger.range(key.first_attempt()..key.end_attempt()) {
                if !t.killing
                    && let Some(fate) = self.fate(id)
                {
                    fates.push((id.clone(), fate));
                }
            }
        }
        self.apply_fates(fates);
    }

    fn apply_fates(&mut self, fates: Vec<(AttemptId, Fate)>) {
        let mut doomed = Vec::new();
        for (id, fate) in fates {
            match fate {
                Fate::Kill(reason) => doomed.push((id, reason)),
                Fate::Reclaim(state) => self.write_state_if_mine(&id, state),
            }
        }
        self.kill_doomed(doomed);
    }

    pub(crate) fn kill_doomed(&mut self, doomed: Vec<(AttemptId, KillReason)>) {
        for (task, reason) in doomed {
            if let Some(t) = self.ledger.get_mut(&task) {
                t.killing = true;
            }
            self.commands.push_back(ExecCommand::Kill { task, reason });
        }
    }

    /// What a local task that the tables may no longer want needs (`None`: keep it).
    fn fate(&self, id: &AttemptId) -> Option<Fate> {
        let tables = self.tables();
        let Some((inc, entry)) = tables.job(&id.job) else {
            return Some(Fate::Kill(KillReason::JobGone));
        };
        if inc != id.incarnation {
            return Some(Fate::Kill(KillReason::JobGone));
        }
        if entry.stopped {
            return Some(Fate::Kill(KillReason::Stopped));
        }
        if id.slot >= entry.spec.count {
            return Some(Fate::Kill(KillReason::ScaledDown));
        }
        let state = tables.state(id);
        if state.is_lost() {
            let outdated = tables.assignment(id).is_some_and(|a| a.epoch < entry.epoch);
            if outdated {
                return Some(Fate::Kill(KillReason::Lost));
            }
            return match self.lost_fate(id, &state, &entry.spec) {
                LostFate::Reclaim(next) => Some(Fate::Reclaim(next)),
                LostFate::Kill(reason) => Some(Fate::Kill(reason)),
                LostFate::Wait => None,
            };
        }
        let current = tables.current_attempt(&id.slot_key()).map(|(k, _)| k);
        (current != Some(id)).then_some(Fate::Kill(KillReason::Superseded))
    }

    // ---- coordinator side ---------------------------------------------------------------

    pub(crate) fn backoff(&self) -> RejectionBackoff {
        RejectionBackoff {
            base_ms: ms(self.config.rejection_backoff_base),
            max_ms: ms(self.config.rejection_backoff_max),
        }
    }

    /// Rendezvous coordinator of a slot among live members.
    pub(crate) fn coordinator_of(&self, key: &SlotKey) -> Option<&str> {
        self.coordinator_by_hash(slot_hash(key))
    }

    fn coordinator_by_hash(&self, h: u64) -> Option<&str> {
        rendezvous(h, self.members.live.iter().map(|(n, h)| (n.as_str(), *h)))
    }

    /// Whether this node coordinates the slot. Every replica asks this for every slot change
    /// it hears of (see [`Scheduler::is_mine`]).
    fn is_coordinator(&self, key: &SlotKey) -> bool {
        self.is_mine(slot_hash(key))
    }

    /// Whether this node wins the rendezvous for `h` among the live members. The scan stops
    /// at the first member that outscores this node: after about ln N members for the slots
    /// of others, all N only for its own 1/N share. Cheaper than the memo of answers it
    /// replaced, whose lookups missed the cache on every replica.
    fn is_mine(&self, h: u64) -> bool {
        self.members.me.is_some_and(|me| {
            rendezvous_is(
                h,
                (self.node.as_str(), me),
                self.members.live.iter().map(|(n, h)| (n.as_str(), *h)),
            )
        })
    }

    /// Act on one slot this node coordinates (the callers ask [`Scheduler::is_coordinator`]
    /// first, and the live members cannot change during a pass, so nothing below asks again:
    /// for its own slots the rendezvous scans every member). Returns whether the slot is
    /// final.
    fn coordinate_slot(&mut self, ctx: &mut JobCtx, slot: u32) -> bool {
        let key = SlotKey {
            job: ctx.entry.spec.id.as_str().into(),
            incarnation: ctx.incarnation,
            slot,
        };
        debug_assert!(self.is_coordinator(&key), "{key:?} is not ours");
        let status = slot_status(self.tables(), &ctx.entry, &key, self.backoff());
        if !self.may_act() {
            // Without a majority this node condemns and places nothing: a view of a minority
            // cannot tell a dead node from a cut-off one (`docs/faults.md`).
            let placed = matches!(
                status,
                SlotStatus::Live {
                    outdated: false,
                    ..
                }
            );
            if ctx.entry.stopped || placed || status.is_final() {
                self.pending.remove(&key);
            } else {
                self.pending.insert(key.clone(), self.no_majority());
            }
            return status.is_final();
        }
        if ctx.entry.stopped {
            // Nothing is placed, but tasks on dead nodes are still declared lost so the job
            // can finish (and be purged).
            self.pending.remove(&key);
            self.retry.remove(&key);
            if let SlotStatus::Live {
                id, target, state, ..
            } = &status
                && self.settled_down(target)
                && let Some(lost) = state.lost()
            {
                let id = id.clone();
                self.write(OpBody::State { id, state: lost });
            }
            return status.is_final();
        }
        match status {
            SlotStatus::Empty => self.try_place(ctx, &key, None),
            SlotStatus::Live {
                id,
                target,
                state,
                outdated,
            } => {
                self.pending.remove(&key);
                self.retry.remove(&key);
                if self.members.is_down(&target) {
                    if self.settled_down(&target)
                        && let Some(lost) = state.lost()
                    {
                        self.write(OpBody::State { id, state: lost });
                    }
                } else if outdated {
                    self.try_place(ctx, &key, None);
                }
            }
            SlotStatus::Retry {
                id,
                target,
                state,
                delay_ms,
            } => {
                let avoid = matches!(state, AttemptState::Rejected { .. }).then_some(target);
                if self.retry_due(&key, &id, &state, delay_ms) {
                    self.try_place(ctx, &key, avoid.as_deref());
                }
            }
            SlotStatus::Done { .. } | SlotStatus::GaveUp { .. } => {
                self.pending.remove(&key);
                self.retry.remove(&key);
                self.maybe_compact(&key);
                return true;
            }
        }
        false
    }

    /// Whether the back-off after attempt `id` is over; arms a timer if not. Only the
    /// coordinator keeps back-off state.
    fn retry_due(
        &mut self,
        key: &SlotKey,
        id: &AttemptId,
        state: &AttemptState,
        delay_ms: u64,
    ) -> bool {
        if delay_ms == 0 {
            return true;
        }
        let now = self.now;
        let at = match self.retry.get(key) {
            Some(r) if r.after == *id => r.at,
            _ => {
                let jitter = match state {
                    AttemptState::Rejected { .. } => self.rng.below(delay_ms + 1),
                    _ => 0,
                };
                let at = now.plus_ms(delay_ms + jitter);
                self.retry.insert(
                    key.clone(),
                    Retry {
                        after: id.clone(),
                        at,
                    },
                );
                self.timers.insert((at, Wake::Slot(key.clone())));
                self.maybe_compact(key);
                at
            }
        };
        now >= at
    }

    /// Place a slot (this node coordinates it); record why not when nothing fits.
    fn try_place(&mut self, ctx: &mut JobCtx, key: &SlotKey, avoid: Option<&str>) {
        let distinct = ctx.entry.spec.wants_distinct_hosts();
        let spread = ctx.entry.spec.placement == crate::spec::PlacementStrategy::Spread;
        if let (Some(reason), false) = (&ctx.no_room, distinct) {
            self.pending.insert(key.clone(), reason.clone());
            return;
        }
        if (distinct || spread) && ctx.tasks.is_none() {
            ctx.tasks = Some(self.live_tasks_by_node(&key.job, key.incarnation));
        }
        let spec = &ctx.entry.spec;
        let empty = BTreeMap::new();
        let job_tasks = ctx.tasks.as_ref().unwrap_or(&empty);
        let key_hash = StableHasher::new()
            .field(key.job.as_bytes())
            .int(u64::from(key.slot))
            .finish();
        let req = Request {
            spec,
            key_hash,
            job_hash: StableHasher::new().field(key.job.as_bytes()).finish(),
            slot: key.slot,
            job_tasks,
            avoid,
            sample: self.config.placement_sample.get(),
        };
        let job = (key.job.clone(), key.incarnation);
        let known = (!distinct)
            .then(|| self.still_no_room(&job, &ctx.entry.epoch, &req))
            .flatten();
        debug_assert!(
            known.is_none() || place(&req, &self.members.nodes, |n| self.used_on(n)).is_err(),
            "still_no_room said no room for {key:?}, but a full scan finds some"
        );
        let outcome = match known {
            Some(reason) => Err((reason, true)),
            None => place(&req, &self.members.nodes, |n| self.used_on(n))
                .map(|n| n.name.clone())
                .map_err(|reason| (reason, false)),
        };
        match outcome {
            Ok(target) => {
                self.no_room.remove(&job);
                self.propose(ctx, key, target);
            }
            Err((reason, known)) => {
                let releases = self.replica.releases();
                match self.no_room.get_mut(&job).filter(|_| known) {
                    Some(seen) => seen.releases = releases,
                    None => {
                        let seen = NoRoom {
                            epoch: ctx.entry.epoch.clone(),
                            releases,
                            room_changes: self.room_changes,
                            reason: reason.clone(),
                        };
                        self.no_room.insert(job, seen);
                    }
                }
                self.pending.insert(key.clone(), reason.clone());
                ctx.no_room = Some(reason);
                self.retry_pending_soon();
            }
        }
    }

    /// What the placer counts as allocated on a candidate: the live attempts it knows of there
    /// (its own proposals included), and resources released there that it still holds
    /// ([`crate::SchedulerConfig::release_hold`]).
    pub(crate) fn used_on(&self, n: &NodeView) -> Resources {
        self.replica.placement_usage(n.usage_id)
    }

    /// The reason a placement of `job` found no room, if it still finds none, known without a
    /// scan of every candidate: the job version and the candidates (with their shapes) are as
    /// they were then, and no node released resources since then (a held release counts when
    /// its hold ends; until then every node was known not to fit, and usage only grows without
    /// a release) except nodes that still do not fit. Placement decisions are therefore
    /// exactly those of a full scan; only the counts in the reason can be behind (nodes
    /// filled up since), as they can for slots the pending pass skips.
    fn still_no_room(
        &self,
        job: &(Name, u64),
        epoch: &crate::ids::Stamp,
        req: &Request<'_>,
    ) -> Option<PendingReason> {
        let seen = self.no_room.get(job)?;
        if seen.epoch != *epoch || seen.room_changes != self.room_changes {
            return None;
        }
        let nodes = &self.members.nodes;
        let room_now = self.members.usage_ids.iter().zip(nodes).any(|(&id, n)| {
            self.replica.released_at(id) > seen.releases && fits(req, n, self.used_on(n))
        });
        (!room_now).then(|| seen.reason.clone())
    }

    fn propose(&mut self, ctx: &mut JobCtx, key: &SlotKey, target: String) {
        let tables = self.tables();
        let last = tables
            .slot_attempts(key)
            .next_back()
            .map_or(0, |(id, _)| id.attempt);
        let attempt = last.max(tables.floor(key).below).saturating_add(1);
        let id = AttemptId {
            job: key.job.clone(),
            incarnation: key.incarnation,
            slot: key.slot,
            attempt,
            placer: self.node.as_str().into(),
        };
        let assignment = Assignment {
            target: target.as_str().into(),
            resources: ctx.entry.spec.resources.to_resources(),
            epoch: ctx.entry.epoch.clone(),
        };
        if let Some(tasks) = ctx.tasks.as_mut() {
            *tasks.entry(target).or_default() += 1;
        }
        self.pending.remove(key);
        self.retry.remove(key);
        self.write(OpBody::Assign { id, assignment });
    }

    /// Nodes holding live attempts of a job incarnation, with counts.
    pub(crate) fn live_tasks_by_node(&self, job: &str, incarnation: u64) -> BTreeMap<String, u32> {
        let tables = self.tables();
        count_by_node(
            tables
                .job_attempts(job, incarnation)
                .filter(|(id, _)| tables.state(id).is_live())
                .map(|(_, a)| a.target.as_str()),
        )
    }

    // ---- garbage collection -------------------------------------------------------------

    fn is_job_coordinator(&self, job: &str, incarnation: u64) -> bool {
        let h = StableHasher::new()
            .field(job.as_bytes())
            .int(incarnation)
            .field(b"gc")
            .finish();
        self.is_mine(h)
    }

    /// Purge a finished job incarnation once its grace period has passed (job coordinator
    /// only). Finished: stopped (or hidden by a newer incarnation) with no live attempt, or a
    /// batch job whose every slot is done or out of retries.
    fn consider_gc(&mut self, job: &str, incarnation: u64) {
        let key = (job.to_string(), incarnation);
        if !self.may_act()
            || !self.is_job_coordinator(job, incarnation)
            || !self.is_finished(job, incarnation)
        {
            self.finished_since.remove(&key);
            return;
        }
        let since = *self.finished_since.entry(key.clone()).or_insert(self.now);
        let at = since.plus(self.config.gc_grace);
        if self.now >= at {
            self.finished_since.remove(&key);
            self.done_cursor.remove(&key);
            self.write(OpBody::Purge {
                job: job.to_string(),
                incarnation,
            });
        } else {
            self.timers.insert((at, Wake::Job(job.into())));
        }
    }

    fn is_finished(&mut self, job: &str, incarnation: u64) -> bool {
        let tables = self.tables();
        let Some(entry) = tables
            .incarnations(job)
            .find(|(i, _)| *i == incarnation)
            .map(|(_, e)| e)
        else {
            return false;
        };
        let visible = tables.job(job).is_some_and(|(i, _)| i == incarnation);
        if entry.stopped || !visible {
            return tables.job_attempts(job, incarnation).all(|(id, a)| {
                !tables.state(id).is_live()
                    || self
                        .down_settles_at(&a.target)
                        .is_some_and(|at| at <= self.now)
            });
        }
        if entry.spec.job_type != JobType::Batch {
            return false;
        }
        let key = (job.to_string(), incarnation);
        let start = self.done_cursor.get(&key).copied().unwrap_or(0);
        let backoff = self.backoff();
        let mut cursor = start;
        while cursor < entry.spec.count {
            let slot = SlotKey {
                job: job.into(),
                incarnation,
                slot: cursor,
            };
            if !slot_status(tables, entry, &slot, backoff).is_final() {
                break;
            }
            cursor += 1;
        }
        let done = cursor >= entry.spec.count;
        self.done_cursor.insert(key, cursor);
        done
    }

    /// Fold the oldest finished attempts of a long slot history into its floor (this node
    /// coordinates the slot: only `coordinate_slot` and `retry_due` get here).
    fn maybe_compact(&mut self, key: &SlotKey) {
        if !self.may_act() {
            return;
        }
        let keep = self.config.attempt_history.get();
        let tables = self.tables();
        let attempts: Vec<(AttemptId, AttemptState)> = tables
            .slot_attempts(key)
            .map(|(id, _)| (id.clone(), tables.state(id)))
            .collect();
        if attempts.len() <= keep {
            return;
        }
        let cut = attempts.len() - keep.div_ceil(2).max(1);
        let (old, kept) = attempts.split_at(cut);
        if old.iter().any(|(_, s)| s.is_live()) {
            return;
        }
        let failures = old
            .iter()
            .filter(|(_, s)| {
                !matches!(
                    s,
                    AttemptState::Rejected { .. } | AttemptState::Exited { code: 0 }
                )
            })
            .count();
        let floor = SlotFloor {
            below: kept.first().map_or(0, |(id, _)| id.attempt),
            failures: tables
                .floor(key)
                .failures
                .saturating_add(u32::try_from(failures).unwrap_or(u32::MAX)),
        };
        self.write(OpBody::Floor {
            slot: key.clone(),
            floor,
        });
    }

    /// For views: whether this node is currently tracking a back-off for a slot.
    pub(crate) fn retry_at(&self, key: &SlotKey) -> Option<Millis> {
        self.retry.get(key).map(|r| r.at)
    }
}

/// The rendezvous key of a slot.
fn slot_hash(key: &SlotKey) -> u64 {
    StableHasher::new()
        .field(key.job.as_bytes())
        .int(key.incarnation)
        .int(u64::from(key.slot))
        .finish()
}

/// What a local task needs (see [`Scheduler::fate`]).
enum Fate {
    Kill(KillReason),
    /// Write this state: reclaim the task after a loss.
    Reclaim(AttemptState),
}

/// Outcome of admission.
enum Verdict {
    Admit(Box<JobEntry>),
    Defer,
    Reject(String),
}
