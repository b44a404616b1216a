//! What the fault checkers watch in the scheduling world (`docs/faults.md`): the copies of
//! each slot that run and how long two run at once (`always_duplicates_bounded`), kills of
//! tasks on nodes that stayed on the majority side (`always_majority_tasks_kept`), `Lost`
//! written for another node's attempt by a node without a majority
//! (`always_minority_condemns_nobody`), and when every service was back at its count after
//! the last fault (`eventually_services_back_at_count`).

use std::collections::{BTreeMap, BTreeSet};

use shoal_gossip::Millis;
use shoal_scheduler::table::{Assignment, Op, OpBody};
use shoal_scheduler::{AttemptId, KillReason, Name, Scheduler, Stamp};

use super::tally::{DUPLICATE_SLACK_MS, Deployment, ROOM_SETTLE_MS, ServiceCount};
use super::{Host, Proc, Workbench};

impl Workbench {
    /// How long a slot of job `job` may run twice, if its copies are bounded at all (a batch
    /// job without `stop_after_ms` keeps running on both sides of a partition by design).
    fn duplicate_bound(&self, job: &str) -> Option<u64> {
        let k = *self.by_name.get(job)?;
        let stop_after = self.bounds.get(k).copied().flatten()?;
        Some(stop_after + DUPLICATE_SLACK_MS)
    }

    /// A process of `task` starts on some machine; returns whether it is the slot's only one.
    pub(super) fn copy_added(&mut self, now: Millis, task: &AttemptId) -> bool {
        let key = (task.job.clone(), task.slot);
        let n = self.watch.copies.entry(key.clone()).or_default();
        *n += 1;
        if *n == 2 {
            self.watch.doubled.insert(key, now);
        }
        *n == 1
    }

    /// A process of `task` on node `i` is gone; ends the slot's duplicate episode when one
    /// copy is left.
    pub(super) fn copy_removed(&mut self, host: &mut dyn Host, i: usize, task: &AttemptId) {
        self.nodes[i].released_at = Some(host.now());
        self.discovery.stopped_serving(host.now(), i, task);
        let key = (task.job.clone(), task.slot);
        let Some(n) = self.watch.copies.get_mut(&key) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.watch.copies.remove(&key);
        }
        let left = self.watch.copies.get(&key).copied().unwrap_or(0);
        if left < 2
            && let Some(since) = self.watch.doubled.remove(&key)
        {
            self.duplicate_ended(host, &key, since);
        }
    }

    fn duplicate_ended(&mut self, host: &mut dyn Host, key: &(Name, u32), since: Millis) {
        let now = host.now();
        let len = now.since(since);
        let bound = self.duplicate_bound(&key.0);
        let f = &mut self.watch.figures;
        f.duplicate_episodes += 1;
        match bound {
            Some(bound) => {
                if len > f.longest_bounded_duplicate_ms {
                    f.longest_bounded_duplicate_ms = len;
                    f.longest_bounded_duplicate = Some(format!("{}/{}", key.0, key.1));
                }
                if len > bound {
                    let event = format!(
                        "{}/{} ran twice for {:.1} s (from {:.1} s), over its bound of {:.1} s",
                        key.0,
                        key.1,
                        len as f64 / 1000.0,
                        since.0 as f64 / 1000.0,
                        bound as f64 / 1000.0
                    );
                    host.violate("always_duplicates_bounded", event);
                }
            }
            None => f.longest_unbounded_duplicate_ms = f.longest_unbounded_duplicate_ms.max(len),
        }
    }

    /// At every sample: a slot still running twice beyond its bound fails at once.
    pub(super) fn check_duplicates(&mut self, host: &mut dyn Host) {
        let now = host.now();
        let over: Vec<String> = self
            .watch
            .doubled
            .iter()
            .filter_map(|(key, since)| {
                let bound = self.duplicate_bound(&key.0)?;
                (now.since(*since) > bound).then(|| {
                    format!(
                        "{}/{} has run twice since {:.1} s, over its bound of {:.1} s",
                        key.0,
                        key.1,
                        since.0 as f64 / 1000.0,
                        bound as f64 / 1000.0
                    )
                })
            })
            .collect();
        if let Some(event) = over.into_iter().next() {
            host.violate("always_duplicates_bounded", event);
        }
    }

    /// The executor of node `i` kills `task` on the core's order: a task that was its slot's
    /// only copy when it started and has been reported started, on a node that has been on the
    /// majority side ever since, must not be killed (the job is never stopped or scaled down
    /// by the workload), unless a rolling update replaced it (`updated`: superseded, and of
    /// another version than the job's in the killing core's view) or its node drains.
    pub(super) fn check_kill(
        &mut self,
        host: &mut dyn Host,
        i: usize,
        task: &AttemptId,
        p: &Proc,
        reason: KillReason,
        updated: bool,
    ) {
        self.watch.figures.kills += 1;
        if p.orphan || !host.majority_side_since(i, p.started_at) {
            return;
        }
        self.watch.figures.kills_on_majority_side += 1;
        if !p.sole {
            return;
        }
        if updated {
            self.watch.figures.kills_for_update += 1;
            return;
        }
        if reason == KillReason::Drained {
            // Its node is draining: the operator asked for it (`always_drain_parallel` judges
            // how many at a time).
            self.watch.figures.kills_for_drain += 1;
            return;
        }
        if reason == KillReason::Unhealthy && (!p.serving() || p.was_hung) {
            // Its checks failed `failures` times in a row (it hangs or hung, or runs a bad
            // version): the restart its job's policy asks for.
            self.watch.figures.kills_unhealthy += 1;
            return;
        }
        if !p.reported && reason == KillReason::Superseded {
            // Fenced before the executor reported it started: no core knew it ran, so it was
            // no incumbent (two coordinators placed the slot at once and this one lost).
            self.watch.figures.kills_while_starting += 1;
            return;
        }
        let others_run = self
            .watch
            .copies
            .get(&(task.job.clone(), task.slot))
            .is_some_and(|&n| n >= 2);
        if p.raced && others_run && reason == KillReason::Superseded {
            // Two coordinators placed the slot at once and the other copy started before this
            // one was reported: the cores keep the copy first *reported* running (its `since`
            // stamp), this checker numbers copies by when they were *asked* to start, and the
            // two orders can differ by a start delay. The slot keeps running on the other copy
            // (`fault_checkers_bite::a_placement_race_while_views_differ_is_no_lost_incumbent`:
            // n2's copy was asked to start 8 ms before n17's and reported 6 ms after it).
            self.watch.figures.kills_of_raced += 1;
            return;
        }
        let event = format!(
            "n{i} killed {}/{} (attempt {}, placed by {}, reason {reason:?}), which ran there \
             since {:.1} s as its slot's only copy, on a node that stayed on the majority side",
            task.job,
            task.slot,
            task.attempt,
            task.placer,
            p.started_at.0 as f64 / 1000.0
        );
        host.violate("always_majority_tasks_kept", event);
    }

    /// Node `i`'s core sends `ops`: every `Lost` it wrote itself for another node's attempt
    /// is a condemnation, which needs a majority both by its membership core's quorum and by
    /// the ground truth.
    pub(super) fn check_condemnations(
        &mut self,
        host: &mut dyn Host,
        i: usize,
        core: &Scheduler,
        ops: &[Op],
    ) {
        let me = core.actor();
        for op in ops {
            if op.dot.actor != *me || op.dot.counter <= self.nodes[i].own_ops_seen {
                continue;
            }
            self.nodes[i].own_ops_seen = op.dot.counter;
            self.watch.op_written(me, op.dot.counter, host.now());
            super::trace::own_op(host.now(), core.node(), op);
            if let OpBody::Assign { id, assignment } = &op.body {
                self.check_placement(host, i, core, id, assignment, op.dot.counter);
                self.note_replacement(host, i, core, id, assignment);
                continue;
            }
            let OpBody::State { id, state } = &op.body else {
                continue;
            };
            if !state.is_lost() {
                continue;
            }
            let Some(target) = core.tables().assignment(id).map(|a| a.target.clone()) else {
                continue;
            };
            if target.as_str() == core.node() {
                continue;
            }
            self.watch.figures.condemnations += 1;
            let quorum = host.quorum(i);
            let why = match &quorum {
                Some(q) if !q.majority => Some(format!(
                    "its membership core's quorum says no majority ({})",
                    q.reason.as_deref().unwrap_or("no reason")
                )),
                _ if host.minority_side(i) => {
                    Some("it is on the minority side of the network (ground truth)".to_string())
                }
                _ => None,
            };
            if let Some(why) = why {
                let event = format!(
                    "n{i} wrote {state:?} for {}/{} (attempt {}) on {target} while {why}",
                    id.job, id.slot, id.attempt
                );
                host.violate("always_minority_condemns_nobody", event);
            }
        }
    }

    /// A coordinator placed `id`: when its slot still has a live attempt of another epoch in
    /// the placer's view, that is a voluntary replacement of the rolling update whose epoch
    /// `id` runs (`docs/services.md`, §4), counted until the slot is done.
    fn note_replacement(
        &mut self,
        host: &mut dyn Host,
        i: usize,
        core: &Scheduler,
        id: &AttemptId,
        assignment: &Assignment,
    ) {
        let tables = core.tables();
        let Some((inc, entry)) = tables.job(&id.job) else {
            return;
        };
        let Some(update) = entry.spec.update.as_ref() else {
            return;
        };
        if inc != id.incarnation || entry.epoch != assignment.epoch {
            return;
        }
        // The attempt `id` replaces is the slot's current one before it, as the core's slot
        // status reads it. When that one ended (rejected, lost), the slot is placed at once,
        // not voluntarily, even while an older attempt its placer still sees live is being
        // killed for it (`finding-14.toml --seed 57`: a voluntary replacement of slot 3 for
        // one deployment was rejected for the next one; its retry at the next epoch is no
        // voluntary replacement of that next deployment).
        let replaces_live = tables
            .current_attempt_below(&id.slot_key(), id.attempt)
            .is_some_and(|(other, a)| a.epoch != assignment.epoch && tables.state(other).is_live());
        if !replaces_live {
            return;
        }
        // The scenario's `max_parallel`: under the `ignore_window` sabotage the cores were
        // told 0, and the checker still holds them to this.
        let declared = self.updates.as_ref().map_or(update.max_parallel, |u| {
            u.max_parallel.min(entry.spec.count)
        });
        let key = (id.job.clone(), inc, entry.deployment.clone());
        let dep = self
            .watch
            .voluntary
            .entry(key.clone())
            .or_insert_with(|| Deployment::new(declared));
        let first = !dep.replaced(id.slot);
        if host.minority_side(i) {
            dep.minority.insert(id.slot);
        } else {
            dep.majority.insert(id.slot);
        }
        // The small side's budget exists only until it knows it is small: a core that places
        // a voluntary replacement while its own quorum says it has no majority broke the gate
        // (`Scheduler::may_act`).
        if !core.quorum().majority {
            let event = format!(
                "n{i} replaced {}/{} for a rolling update while its quorum says no majority",
                id.job, id.slot
            );
            host.violate("always_max_parallel", event);
        }
        if first {
            self.watch.figures.voluntary_replacements += 1;
            // In-flight only grows at a placement: checking here (with `core`'s `done`
            // too, since the core is out of `nodes` while it runs) makes the bound exact,
            // not sampled.
            if let Some(v) = core.tables().version(&key.0, key.1, &key.2) {
                dep.done.union(&v.rollout.done);
            }
            self.check_deployment(host, &key);
        }
    }

    /// One deployment's slots replaced and not done, against its `max_parallel`: the union
    /// of every running core's `done` joins what was seen before. Then the job's, across its
    /// overlapping deployments.
    fn check_deployment(&mut self, host: &mut dyn Host, key: &(Name, u64, Stamp)) {
        self.refresh_done(key);
        let Some(dep) = self.watch.voluntary.get(key) else {
            return;
        };
        let (job, inc, _) = key;
        let mp = dep.max_parallel;
        let in_flight: Vec<u32> = dep.slots().filter(|&s| !dep.done.contains(s)).collect();
        let n = in_flight.len() as u64;
        self.watch.figures.most_in_flight = self.watch.figures.most_in_flight.max(n);
        if n > u64::from(mp) {
            let event = format!(
                "{job}: {n} slots replaced and not done ({in_flight:?}) with max_parallel {mp}"
            );
            host.violate("always_max_parallel", event);
        }
        let (job, inc) = (job.clone(), *inc);
        self.check_job_parallel(host, &job, inc);
    }

    /// Joins every running core's `done` for deployment `key` into what was seen before.
    fn refresh_done(&mut self, key: &(Name, u64, Stamp)) {
        let Some(Deployment { done, .. }) = self.watch.voluntary.get_mut(key) else {
            return;
        };
        let (job, inc, deployment) = key;
        for core in self.nodes.iter().filter_map(|n| n.core.as_ref()) {
            if let Some(v) = core.tables().version(job, *inc, deployment) {
                done.union(&v.rollout.done);
            }
        }
    }

    /// Across the deployments of one job incarnation: a slot replaced for deployment D and
    /// not done in D is in flight until a later deployment marks it done (a superseding
    /// submission leaves D's slots outdated, and its own window replaces them). At most
    /// `2 · max_parallel` slots are in flight at once on each side of a cut
    /// (`docs/services.md`, §10, decision 1): a slot counts on the side (ground truth) of
    /// each node that placed a replacement of it (in a cut's first seconds the small side
    /// does not know it is one, and may open a window of its own, finding 19 of
    /// `docs/simulator.md`). Each time two deployments have slots in flight at once is
    /// counted as an overlap.
    fn check_job_parallel(&mut self, host: &mut dyn Host, job: &Name, inc: u64) {
        let keys: Vec<(Name, u64, Stamp)> = self
            .watch
            .voluntary
            .keys()
            .filter(|(j, i, _)| j == job && *i == inc)
            .cloned()
            .collect();
        if keys.len() < 2 {
            return;
        }
        for key in &keys {
            self.refresh_done(key);
        }
        let deps: Vec<&Deployment> = keys
            .iter()
            .filter_map(|k| self.watch.voluntary.get(k))
            .collect();
        let (majority, minority, busy) = in_flight_by_side(&deps);
        let mp = deps.last().map_or(0, |d| d.max_parallel);
        let n = majority.union(&minority).count() as u64;
        let f = &mut self.watch.figures;
        f.most_in_flight_job = f.most_in_flight_job.max(n);
        if !minority.is_empty() {
            f.most_in_flight_across_cut = f.most_in_flight_across_cut.max(n);
        }
        if busy.len() >= 2 {
            let pair = (
                job.clone(),
                inc,
                keys[busy[0]].2.clone(),
                keys[busy[1]].2.clone(),
            );
            if self.watch.overlaps.insert(pair) {
                self.watch.figures.overlaps += 1;
            }
        }
        for (side, in_flight) in [
            ("", &majority),
            (" placed on a cut's minority side", &minority),
        ] {
            if in_flight.len() as u64 > 2 * u64::from(mp) {
                let event = format!(
                    "{job}: {} slots{side} in flight across {} overlapping deployments \
                     ({in_flight:?}), over 2 × max_parallel {mp}",
                    in_flight.len(),
                    busy.len()
                );
                host.violate("always_max_parallel", event);
            }
        }
    }

    /// `always_max_parallel`: per deployment, the slots replaced voluntarily and not in its
    /// true `done` set (the union of every core's) number at most its `max_parallel`; per job,
    /// across overlapping deployments, at most twice that on each side of a cut.
    pub(super) fn check_max_parallel(&mut self, host: &mut dyn Host) {
        self.watch.figures.deployments = self.watch.voluntary.len() as u64;
        let keys: Vec<(Name, u64, Stamp)> = self.watch.voluntary.keys().cloned().collect();
        for key in keys {
            self.check_deployment(host, &key);
        }
    }

    /// `eventually_rollouts_settle`, over `core`'s tables at the end: every updated
    /// service's current deployment is complete, or is a revert that failed after a fault
    /// (one at or before `last_fault_ms` came after the revert was written). A failed
    /// deployment is reverted by `auto_revert` and the revert must then complete or fail;
    /// a failed revert is final by design (`rollout.rs`: two bad versions must not revert
    /// to each other forever, as in Nomad), and the service's count is
    /// `eventually_services_back_at_count`'s to judge. Returns the services looked at, the
    /// deployments that failed, the reverts and the failed reverts that are current, and
    /// the first service whose deployment has not settled.
    #[must_use]
    pub fn unsettled_rollout(&self, core: &Scheduler, last_fault_ms: u64) -> Settled {
        let mut settled = Settled::default();
        if self.updates.is_none() {
            return settled;
        }
        let tables = core.tables();
        for job in self.jobs.iter().filter(|j| j.service) {
            let Some((inc, entry)) = tables.job(&job.name) else {
                continue;
            };
            settled.services += 1;
            for (d, v) in tables.versions(&job.name, inc) {
                settled.failed += usize::from(v.rollout.failed.is_some());
                settled.reverts += usize::from(v.row.as_ref().is_some_and(|r| r.epoch != *d));
            }
            let rollout = tables
                .version(&job.name, inc, &entry.deployment)
                .map(|v| v.rollout.clone())
                .unwrap_or_default();
            let complete = rollout.complete || rollout.done.covers_below(entry.spec.count);
            // A revert that failed with no fault after it was written failed on its own: a
            // regression, not the final state of finding 20. (The cores' clocks are the
            // virtual clock, so the stamp's wall time is when it was written.)
            let faulted = entry.deployment.hlc.wall_ms <= last_fault_ms;
            let failed_revert = rollout.failed.is_some() && entry.is_revert() && faulted;
            settled.failed_reverts += usize::from(!complete && failed_revert);
            if !complete && !failed_revert && settled.first.is_none() {
                let why = rollout
                    .failed
                    .as_ref()
                    .map_or("not complete".to_string(), |f| {
                        format!("failed: {}", f.reason)
                    });
                settled.first = Some(format!(
                    "{}: version {} {why} ({} of {} slots done)",
                    job.name,
                    entry.version,
                    rollout.done.count_below(entry.spec.count),
                    entry.spec.count
                ));
            }
        }
        settled
    }

    /// Where the services stand: the processes of live agents (running or paused; a crashed
    /// agent's orphans are no copies the cluster keeps, and its watchdog stops them), room on
    /// the `running` nodes that the script has not made refuse new work. A node counts for
    /// room only if none of its processes ended after `settled_at`: room freed later may still
    /// be in a release hold (`docs/scheduler.md`, "Oldest first") or on its way to a placement.
    #[must_use]
    pub fn service_count(&self, running: &[usize], settled_at: Millis) -> ServiceCount {
        let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
        for node in &self.nodes {
            for (task, _) in node.running.iter().filter(|(_, p)| !p.orphan) {
                *copies.entry(task.job.as_str()).or_default() += 1;
            }
        }
        // A node an operator drained or made ineligible takes no new work: its room is none.
        let free: Vec<(u64, u64)> = running
            .iter()
            .filter(|&&i| !self.drains.refuses_at_end(i))
            .filter(|&&i| self.nodes[i].released_at.is_none_or(|r| r <= settled_at))
            .map(|&i| {
                let r = super::reserved(&self.nodes[i]);
                (
                    self.capacity
                        .cpu_millicores
                        .saturating_sub(r.cpu_millicores),
                    self.capacity.memory_mib.saturating_sub(r.memory_mib),
                )
            })
            .collect();
        let mut out = ServiceCount::default();
        for j in self
            .jobs
            .iter()
            .filter(|j| j.service && self.tally.submitted_at.contains_key(&j.name))
        {
            out.services += 1;
            let have = copies.get(j.name.as_str()).copied().unwrap_or(0);
            let want = j.tasks as usize;
            let room = free
                .iter()
                .any(|&(cpu, mem)| cpu >= j.cpu_millicores && mem >= j.memory_mib);
            if have > want || (have < want && room) {
                out.off.get_or_insert(format!(
                    "service {} runs {have} processes, wants exactly {want}{}",
                    j.name,
                    if have < want {
                        " (a running node has room for another)"
                    } else {
                        ""
                    }
                ));
            } else if have < want {
                out.short_of_room += 1;
            }
        }
        out
    }

    /// After the last fault, until the first sample at which every service is at its count.
    pub(super) fn check_back_at_count(&mut self, host: &dyn Host, up: &[usize]) {
        if self.watch.figures.back_at_count_ms.is_some() {
            return;
        }
        let running: Vec<usize> = up
            .iter()
            .copied()
            .filter(|&i| host.process(i).state == super::ProcessState::Running)
            .collect();
        // Room freed in the last moments is on its way to the oldest slots that fit it, as
        // at the end (`ROOM_SETTLE_MS`): counted, a queued service in a full cluster read as
        // off whenever any node had just freed room.
        let settled_at = Millis(host.now().0.saturating_sub(ROOM_SETTLE_MS));
        let count = self.service_count(&running, settled_at);
        match count.off {
            None => self.watch.figures.back_at_count_ms = Some(host.now().0),
            Some(why) => self.watch.off_count = Some(why),
        }
    }
}

/// What `eventually_rollouts_settle` found ([`Workbench::unsettled_rollout`]).
#[derive(Debug, Default)]
pub struct Settled {
    /// Updated services looked at.
    pub services: usize,
    /// Deployments that failed, current or not.
    pub failed: usize,
    /// Reverts (automatic or not).
    pub reverts: usize,
    /// Services whose current deployment is a revert that failed (final by design).
    pub failed_reverts: usize,
    /// The first service whose current deployment has not settled, and why.
    pub first: Option<String>,
}

/// The slots of one job in flight across its deployments (oldest first), split by the side of
/// a cut their replacements were placed on: `(majority, minority, busy)`, `busy` being the
/// indices of the deployments with slots in flight. A slot replaced on both sides counts on
/// both. A slot replaced for deployment D is in flight until D marks it done or a later
/// deployment does.
fn in_flight_by_side(deps: &[&Deployment]) -> (BTreeSet<u32>, BTreeSet<u32>, Vec<usize>) {
    let (mut majority, mut minority) = (BTreeSet::new(), BTreeSet::new());
    let mut busy = Vec::new();
    for (k, dep) in deps.iter().enumerate() {
        let mine: Vec<u32> = dep
            .slots()
            .filter(|&s| !dep.done.contains(s) && !deps[k + 1..].iter().any(|d| d.done.contains(s)))
            .collect();
        if !mine.is_empty() {
            busy.push(k);
        }
        for s in mine {
            if dep.minority.contains(&s) {
                minority.insert(s);
            }
            if dep.majority.contains(&s) {
                majority.insert(s);
            }
        }
    }
    (majority, minority, busy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_scheduler::table::SlotSet;

    fn deployment(slots: &[u32], done: &[u32], cut_off: &[u32]) -> Deployment {
        let mut d = Deployment::new(2);
        for &s in done {
            d.done.union(&SlotSet::one(s));
        }
        for &s in slots {
            if cut_off.contains(&s) {
                d.minority.insert(s);
            } else {
                d.majority.insert(s);
            }
        }
        d
    }

    #[test]
    fn slots_in_flight_are_split_by_the_side_that_placed_them() {
        // Finding 19's shape: the large side's update and its revert hold four slots in
        // flight, the small side's superseding update two, placed before it knew it was cut
        // off. Each side is within 2 × max_parallel; the job is at 6.
        let v2 = deployment(&[2, 3, 4, 5], &[2, 3], &[]);
        let revert = deployment(&[6, 7], &[], &[]);
        let v3 = deployment(&[0, 1], &[], &[0, 1]);
        let (majority, minority, busy) = in_flight_by_side(&[&v2, &revert, &v3]);
        assert_eq!(majority.into_iter().collect::<Vec<_>>(), [4, 5, 6, 7]);
        assert_eq!(minority.into_iter().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(busy, [0, 1, 2]);
        // The same six on one side are over its bound.
        let v3_majority = deployment(&[0, 1], &[], &[]);
        let (majority, minority, _) = in_flight_by_side(&[&v2, &revert, &v3_majority]);
        assert_eq!(majority.len(), 6);
        assert!(minority.is_empty());
    }

    #[test]
    fn a_slot_replaced_on_both_sides_counts_on_both() {
        let mut v3 = deployment(&[0, 1], &[], &[0, 1]);
        v3.majority.insert(1);
        let v2 = deployment(&[2, 3], &[], &[]);
        let (majority, minority, _) = in_flight_by_side(&[&v2, &v3]);
        assert_eq!(majority.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(minority.into_iter().collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn a_slot_a_later_deployment_finished_is_not_in_flight() {
        let v2 = deployment(&[0, 1], &[], &[1]);
        let v3 = deployment(&[2], &[0, 1], &[]);
        let (majority, minority, busy) = in_flight_by_side(&[&v2, &v3]);
        assert_eq!(majority.into_iter().collect::<Vec<_>>(), [2]);
        assert!(minority.is_empty());
        assert_eq!(busy, [1]);
    }
}
