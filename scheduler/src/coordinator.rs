//! Coordinating a slot: for each slot whose rendezvous coordinator is this node, place it
//! when empty, re-place it after a rejection or failure (with back-off), mark the attempts of a
//! dead target lost once its death has settled, replace attempts of an older job version.

use std::collections::BTreeMap;

use shoal_gossip::{Millis, Resources};

use crate::config::ms;
use crate::events::SchedEvent;
use crate::hash::{StableHasher, rendezvous, rendezvous_is};
use crate::ids::{AttemptId, Name, SlotKey};
use crate::placement::{Candidate, PendingReason, Request, count_by_node, fits, place};
use crate::roles::{HoldSeen, NoRoom, Retry, Wake};
use crate::scheduler::Scheduler;
use crate::slot::{RejectionBackoff, SlotStatus, slot_status};
use crate::spec::JobSpec;
use crate::table::{Assignment, AttemptState, JobEntry, OpBody};

/// Per-job context while reconciling its slots.
pub(crate) struct JobCtx {
    pub(crate) incarnation: u64,
    pub(crate) entry: JobEntry,
    /// Live attempts per node (lazily computed; only spread and distinct_hosts need it).
    tasks: Option<BTreeMap<String, u32>>,
    /// A placement of this job already found no room in this pass.
    no_room: Option<PendingReason>,
}

impl Scheduler {
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
    pub(crate) fn is_coordinator(&self, key: &SlotKey) -> bool {
        self.is_mine(slot_hash(key))
    }

    /// Whether this node wins the rendezvous for `h` among the live members. The scan stops
    /// at the first member that outscores this node: after about ln N members for the slots
    /// of others, all N only for its own 1/N share. Cheaper than the memo of answers it
    /// replaced, whose lookups missed the cache on every replica.
    pub(crate) fn is_mine(&self, h: u64) -> bool {
        self.members.me.is_some_and(|me| {
            rendezvous_is(
                h,
                (self.node.as_str(), me),
                self.members.live.iter().map(|(n, h)| (n.as_str(), *h)),
            )
        })
    }

    pub(crate) fn job_ctx(&self, job: &str) -> Option<JobCtx> {
        let (incarnation, entry) = self.tables().job(job)?;
        Some(JobCtx {
            incarnation,
            entry: entry.clone(),
            tasks: None,
            no_room: None,
        })
    }

    /// Act on one slot this node coordinates (the callers ask [`Scheduler::is_coordinator`]
    /// first, and the live members cannot change during a pass, so nothing below asks again:
    /// for its own slots the rendezvous scans every member). Returns whether the slot is
    /// final.
    pub(crate) fn coordinate_slot(&mut self, ctx: &mut JobCtx, slot: u32) -> bool {
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
                self.coord.pending.remove(&key);
            } else {
                self.coord
                    .pending
                    .insert(key.clone(), self.why_not_acting());
            }
            return status.is_final();
        }
        if ctx.entry.stopped {
            // Nothing is placed, but tasks on dead nodes are still declared lost so the job
            // can finish (and be purged).
            self.coord.pending.remove(&key);
            self.coord.retry.remove(&key);
            if let SlotStatus::Live {
                id, target, state, ..
            } = &status
                && self.attempt_target_down(id, target)
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
                self.coord.pending.remove(&key);
                self.coord.retry.remove(&key);
                if self.attempt_target_down(&id, &target) {
                    if self.settled_down(&target)
                        && let Some(lost) = state.lost()
                    {
                        self.write(OpBody::State { id, state: lost });
                    }
                } else if outdated {
                    // A voluntary replacement: only within the rollout's window.
                    if self.may_replace(ctx.incarnation, &ctx.entry, slot) {
                        self.try_place(ctx, &key, None);
                    }
                } else {
                    self.mark_done(ctx.incarnation, &ctx.entry, &key);
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
                self.coord.pending.remove(&key);
                self.coord.retry.remove(&key);
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
        let at = match self.coord.retry.get(key) {
            Some(r) if r.after == *id => r.at,
            _ => {
                let jitter = match state {
                    AttemptState::Rejected { .. } => self.rng.below(delay_ms + 1),
                    _ => 0,
                };
                let at = now.plus_ms(delay_ms + jitter);
                self.coord.retry.insert(
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
            self.coord.pending.insert(key.clone(), reason.clone());
            return;
        }
        if (distinct || spread) && ctx.tasks.is_none() {
            ctx.tasks = Some(self.live_tasks_by_node(&key.job, key.incarnation));
        }
        let spec = &ctx.entry.spec;
        let empty = BTreeMap::new();
        let mut job_tasks = ctx.tasks.as_ref().unwrap_or(&empty);
        let ports_taken = self.static_ports_taken(key, spec);
        let without_own;
        if spec.static_ports().next().is_some() {
            without_own = self.without_slot(job_tasks, key);
            job_tasks = &without_own;
        }
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
            ports_taken: &ports_taken,
            avoid,
            sample: self.config.placement_sample.get(),
        };
        let job = (key.job.clone(), key.incarnation);
        let written = ctx.entry.epoch.hlc.wall_ms;
        let known = (!distinct)
            .then(|| self.still_no_room(&job, &ctx.entry.epoch, &req))
            .flatten();
        debug_assert!(
            known.is_none()
                || place(&req, &self.members.nodes, |n| self.used_for(n, written)).is_err(),
            "still_no_room said no room for {key:?}, but a full scan finds some"
        );
        let outcome = match known {
            Some(reason) => Err((reason, true)),
            None => place(&req, &self.members.nodes, |n| self.used_for(n, written))
                .map(|n| n.name.clone())
                .map_err(|reason| (reason, false)),
        };
        match outcome {
            Ok(target) => {
                self.coord.no_room.remove(&job);
                self.propose(ctx, key, target);
            }
            Err((reason, known)) => {
                let releases = self.replica.releases();
                let (now, folds) = (self.now, self.replica.folds());
                match self.coord.no_room.get_mut(&job).filter(|_| known) {
                    Some(seen) => {
                        seen.releases = releases;
                        seen.at = now;
                        seen.folds = folds;
                    }
                    None => {
                        let seen = NoRoom {
                            epoch: ctx.entry.epoch.clone(),
                            releases,
                            room_changes: self.coord.room_changes,
                            at: now,
                            folds,
                            reason: reason.clone(),
                        };
                        self.coord.no_room.insert(job, seen);
                    }
                }
                self.coord.pending.insert(key.clone(), reason.clone());
                ctx.no_room = Some(reason);
                self.retry_pending_soon();
            }
        }
    }

    /// What the placer counts as allocated on a candidate: the live attempts it knows of there
    /// (its own proposals included), and resources released there that it still holds
    /// ([`crate::SchedulerConfig::release_hold`]).
    pub(crate) fn used_on(&self, n: &Candidate) -> Resources {
        self.replica.placement_usage(n.usage_id)
    }

    /// What the placer counts as allocated on a candidate for a slot whose job version was
    /// written at `written` (wall ms): as [`Scheduler::used_on`], except that a held release
    /// counts once it is visible to that slot ([`Scheduler::visible_at`]).
    pub(crate) fn used_for(&self, n: &Candidate, written: u64) -> Resources {
        match self.coord.holds.get(&n.usage_id) {
            Some(h) if self.ordered() && self.now >= self.visible_at(h, written) => {
                self.replica.usage_of(n.usage_id)
            }
            _ => self.used_on(n),
        }
    }

    /// Oldest first is on (`SchedulerConfig::release_age_scale`).
    pub(crate) fn ordered(&self) -> bool {
        !self.config.release_age_scale.is_zero()
    }

    /// When a release held as `hold` becomes visible to a slot whose job version was written
    /// at `written`: `g(d) = hold · scale / (scale + d)` after it opened, `d` being how old the
    /// slot was when the release happened (zero for slots written since), stretched by this
    /// placer's jitter (up to a half). The slot waiting longest sees the room first; slots written
    /// after the release see it last, `release_hold` (and the jitter) after it. Every placer
    /// computes the same `g` for the same slot, so the order holds across coordinators as long
    /// as the gaps exceed a network delay (`docs/scheduler.md`, "Oldest first").
    pub(crate) fn visible_at(&self, hold: &HoldSeen, written: u64) -> Millis {
        let h = ms(self.config.release_hold);
        let scale = ms(self.config.release_age_scale);
        let d = hold.opened.0.saturating_sub(written);
        let g = h.saturating_mul(scale) / scale.saturating_add(d).max(1);
        let g = g.saturating_add(g.saturating_mul(hold.jitter) / 2048);
        hold.opened.plus_ms(g)
    }

    /// When a release held as `hold` ends for every slot (after the latest
    /// [`Scheduler::visible_at`]).
    pub(crate) fn hold_end(&self, hold: &HoldSeen) -> Millis {
        let h = ms(self.config.release_hold);
        hold.opened
            .plus_ms(h.saturating_add(h.saturating_mul(hold.jitter) / 2048))
    }

    /// The release held on node `id` ends for every slot: counted now.
    pub(crate) fn end_release_hold(&mut self, id: usize) {
        self.replica.end_hold(id);
        self.coord.holds.remove(&id);
        self.retry_pending_soon();
    }

    /// For the held release on node `id`: whether it is visible now to some pending slot of
    /// this coordinator that fits the node's room, and when it next becomes visible to one
    /// it is not visible to yet. Resources only: the placement pass applies every filter.
    fn visible_scan(&self, id: usize) -> (bool, Option<Millis>) {
        let (Some(hold), Some(&i)) = (self.coord.holds.get(&id), self.members.by_usage.get(id))
        else {
            return (false, None);
        };
        let Some(node) = self.members.nodes.get(i as usize) else {
            return (false, None);
        };
        let room = node.capacity.saturating_sub(&self.replica.usage_of(id));
        let tables = self.tables();
        let (mut due, mut next) = (false, None::<Millis>);
        let mut last: Option<(&str, u64)> = None;
        for key in self.coord.pending.keys() {
            if last == Some((key.job.as_str(), key.incarnation)) {
                continue;
            }
            last = Some((key.job.as_str(), key.incarnation));
            let Some((inc, e)) = tables.job(&key.job) else {
                continue;
            };
            if inc != key.incarnation || !e.spec.resources.to_resources().fits_in(&room) {
                continue;
            }
            let at = self.visible_at(hold, e.epoch.hlc.wall_ms);
            if at <= self.now {
                due = true;
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        (due, next)
    }

    /// A release on node `id` opened (`absorb_touches`) or became visible to more slots
    /// ([`Wake::Visible`]): re-examine the pending slots it is now visible to, and wake when
    /// it becomes visible to the next.
    pub(crate) fn release_visible(&mut self, id: usize) {
        if !self.ordered() || self.replica.held(id).is_none() {
            return;
        }
        let (due, next) = self.visible_scan(id);
        if due {
            let keys: Vec<SlotKey> = self.coord.pending.keys().cloned().collect();
            self.work.slots.extend(keys);
        }
        if let Some(at) = next {
            self.timers.insert((at, Wake::Visible(id)));
        }
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
        let seen = self.coord.no_room.get(job)?;
        if seen.epoch != *epoch || seen.room_changes != self.coord.room_changes {
            return None;
        }
        let nodes = &self.members.nodes;
        let written = epoch.hlc.wall_ms;
        let ordered = self.ordered();
        // A held release that became visible to this job since `seen.at` counts as a release,
        // and so does a release folded since into a hold (visible to the job or not: only the
        // fit below tells).
        let newly_visible = |id: usize| {
            ordered
                && self.replica.held(id).is_some()
                && (self.replica.folded_at(id) > seen.folds
                    || self.coord.holds.get(&id).is_some_and(|h| {
                        let at = self.visible_at(h, written);
                        at > seen.at && at <= self.now
                    }))
        };
        let room_now = self
            .members
            .usage_ids
            .iter()
            .zip(nodes.iter())
            .any(|(&id, n)| {
                (self.replica.released_at(id) > seen.releases || newly_visible(id))
                    && fits(req, n, self.used_for(n, written))
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
            generation: self.generation_of(&target),
            target: target.as_str().into(),
            resources: ctx.entry.spec.resources.to_resources(),
            epoch: ctx.entry.epoch.clone(),
        };
        if let Some(tasks) = ctx.tasks.as_mut() {
            *tasks.entry(target).or_default() += 1;
        }
        self.coord.pending.remove(key);
        self.coord.retry.remove(key);
        self.counters.placements += 1;
        if attempt > 1 {
            self.counters.replacements += 1;
        }
        if self.events.is_on() {
            self.events.push(SchedEvent::Placed {
                task: id.clone(),
                target: assignment.target.clone(),
            });
        }
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

    /// Nodes where a live attempt of another job (or incarnation) holds a static port of
    /// `spec`, with that port: the placement filter of `docs/services.md`, §1. Proposals count
    /// as holding their job's static ports. Empty for a job without static ports.
    pub(crate) fn static_ports_taken(
        &self,
        key: &SlotKey,
        spec: &JobSpec,
    ) -> BTreeMap<String, u16> {
        let mut out = BTreeMap::new();
        if spec.static_ports().next().is_none() {
            return out;
        }
        let tables = self.tables();
        for ((job, inc), e) in tables.jobs() {
            if job == key.job && inc == key.incarnation {
                continue;
            }
            let Some(port) = e
                .spec
                .static_ports()
                .find(|p| spec.static_ports().any(|q| q == *p))
            else {
                continue;
            };
            for (id, a) in tables.job_attempts(job, inc) {
                if tables.is_live(id) {
                    out.entry(a.target.to_string()).or_insert(port);
                }
            }
        }
        out
    }

    /// `tasks` (live attempts of the job per node) without the slot's own live attempts: a
    /// static-port job's slot may land where its superseded attempt still runs, since
    /// admission waits for that attempt to free the port.
    pub(crate) fn without_slot(
        &self,
        tasks: &BTreeMap<String, u32>,
        key: &SlotKey,
    ) -> BTreeMap<String, u32> {
        let mut out = tasks.clone();
        let tables = self.tables();
        for (id, a) in tables.slot_attempts(key) {
            if tables.is_live(id)
                && let Some(n) = out.get_mut(a.target.as_str())
            {
                *n -= 1;
                if *n == 0 {
                    out.remove(a.target.as_str());
                }
            }
        }
        out
    }

    /// For views: whether this node is currently tracking a back-off for a slot.
    pub(crate) fn retry_at(&self, key: &SlotKey) -> Option<Millis> {
        self.coord.retry.get(key).map(|r| r.at)
    }

    /// Changes whenever some placement candidate may have gained room: a live attempt this
    /// replica knows of ended or was dropped (counted when this placer's hold of the release
    /// ends), or the member list changed. Pending slots are re-examined only when it moved.
    pub(crate) fn room_generation(&self) -> u64 {
        self.coord
            .room_changes
            .wrapping_add(self.replica.releases())
    }

    /// Arm the pending-retry timer (slots that found no room get another look).
    pub(crate) fn retry_pending_soon(&mut self) {
        if !self.coord.pending.is_empty() && !self.coord.pending_retry_armed {
            self.coord.pending_retry_armed = true;
            let at = self.now.plus(self.config.pending_retry_interval);
            self.timers.insert((at, Wake::PendingRetry));
        }
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
