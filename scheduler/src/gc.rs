//! Garbage collection: the job's GC coordinator purges a finished job incarnation after a
//! grace period, a slot's coordinator folds old attempts of a long slot history into a floor,
//! and tombstones are dropped once every live peer holds them (`docs/scheduler.md`, GC rule).

use std::collections::BTreeSet;

use shoal_gossip::MemberStatus;

use crate::admission::SUPERSEDED;
use crate::config::ms;
use crate::hash::StableHasher;
use crate::ids::{AttemptId, Name, SlotKey, VersionVector};
use crate::roles::{Notice, Wake};
use crate::scheduler::Scheduler;
use crate::slot::slot_status;
use crate::spec::JobType;
use crate::table::{AttemptState, JobKey, OpBody, SlotFloor};

/// How long a `Lost` attempt of a member seen down stays out of its slot's floor: the target
/// may be reclaiming it behind a partition this node has not seen heal (simulator finding
/// 10). Longer than the partitions the chaos suite and the simulator run, short enough that a
/// node that died for good holds its slots' histories for minutes, not for the hour foca
/// remembers it.
const LOST_FLOOR_HOLD_MS: u64 = 10 * 60 * 1000;

impl Scheduler {
    /// Whether this node collects the garbage of a job incarnation (its rendezvous winner
    /// among the live members, as for slots).
    pub(crate) fn is_job_coordinator(&self, job: &str, incarnation: u64) -> bool {
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
    pub(crate) fn consider_gc(&mut self, job: &str, incarnation: u64) {
        let key = (job.to_string(), incarnation);
        if !self.may_act()
            || !self.is_job_coordinator(job, incarnation)
            || !self.is_finished(job, incarnation)
        {
            self.gc.finished_since.remove(&key);
            return;
        }
        let since = *self
            .gc
            .finished_since
            .entry(key.clone())
            .or_insert(self.now);
        let at = since.plus(self.config.gc_grace);
        if self.now >= at {
            self.gc.finished_since.remove(&key);
            self.gc.done_cursor.remove(&key);
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
        let start = self.gc.done_cursor.get(&key).copied().unwrap_or(0);
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
        self.gc.done_cursor.insert(key, cursor);
        done
    }

    /// Fold the oldest finished attempts of a long slot history into its floor (this node
    /// coordinates the slot: only `coordinate_slot` and `retry_due` get here).
    pub(crate) fn maybe_compact(&mut self, key: &SlotKey) {
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
        // The slot's target turned this node's newest attempt down for another attempt it
        // holds current, and this node knows no live one: a placer on the other side of a
        // membership disagreement placed it, and its op is still on its way here. A floor is
        // a number, so it would fold that attempt too, unseen, and its target would kill a
        // copy that may be the slot's only one (simulator finding 17). Wait until it arrives.
        let superseded_by_unseen = attempts.last().is_some_and(
            |(_, s)| matches!(s, AttemptState::Rejected { reason } if reason == SUPERSEDED),
        ) && !tables
            .current_attempt(key)
            .is_some_and(|(id, _)| tables.state(id).is_live());
        if superseded_by_unseen {
            return;
        }
        let cut = attempts.len() - keep.div_ceil(2).max(1);
        let (old, kept) = attempts.split_at(cut);
        // A `Lost` attempt may be reclaimed by its target (a `Running` of the next round on
        // its way here): folding it away would make the target kill a copy that may be the
        // slot's only one (simulator finding 10). The condemning node may still believe the
        // target down while it reclaims, so a member that has not left counts, down too, for
        // [`LOST_FLOOR_HOLD_MS`] after this node saw it go down. After that, or once the
        // target left or was forgotten, the fold goes ahead: a node that never returns must
        // not grow its slots' histories by one rejected attempt per retry for good.
        let now = self.now;
        let reclaimable = |id: &AttemptId, s: &AttemptState| {
            if !s.is_lost() {
                return false;
            }
            let Some(a) = tables.assignment(id) else {
                return false;
            };
            let target = a.target.as_str();
            self.members.all.get(target).is_some_and(|m| {
                m.status != MemberStatus::Left
                    && !m.ad.as_ref().is_some_and(|ad| ad.left)
                    && self
                        .members
                        .down_since
                        .get(target)
                        .is_none_or(|t| now.since(*t) < LOST_FLOOR_HOLD_MS)
            })
        };
        if old.iter().any(|(id, s)| s.is_live() || reclaimable(id, s)) {
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

    /// Drop tombstones older than the retention that every live peer is known to hold.
    pub(crate) fn collect_tombstones(&mut self) {
        let purged = self.tables().purged();
        let new: Vec<JobKey> = purged
            .iter()
            .filter(|k| !self.gc.tombstones.noticed.contains_key(*k))
            .cloned()
            .collect();
        // This node's vector is noted only by a check that notices something.
        let at_seen = (!new.is_empty()).then(|| self.tables().clock().clone());
        let purged = purged.clone();
        let (now, retention) = (self.now, ms(self.config.tombstone_retention));
        let t = &mut self.gc.tombstones;
        t.noticed.retain(|k, _| purged.contains(k));
        if let Some(at_seen) = at_seen {
            let notice = t.next;
            t.next += 1;
            t.notices.insert(notice, Notice { seen: now, at_seen });
            t.noticed.extend(new.into_iter().map(|k| (k, notice)));
        }
        // The newest notice every live peer holds (every notice when there is no peer).
        let mut peers = self.members.live.iter().filter(|(n, _)| *n != self.node);
        let held_everywhere = peers.try_fold(u64::MAX, |held, (peer, _)| {
            t.covered.get(peer.as_str()).map(|&n| held.min(n))
        });
        let droppable = |notice: &u64| {
            held_everywhere.is_some_and(|held| *notice <= held)
                && t.notices
                    .get(notice)
                    .is_some_and(|n| now.since(n.seen) >= retention)
        };
        let drop: Vec<JobKey> = t
            .noticed
            .iter()
            .filter(|(_, notice)| droppable(notice))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &drop {
            t.noticed.remove(key);
        }
        let kept: BTreeSet<u64> = t.noticed.values().copied().collect();
        t.notices.retain(|n, _| kept.contains(n));
        for key in drop {
            self.replica.drop_tombstone(&key);
        }
    }

    /// A digest from `from` says which notices of tombstones it holds: those whose vector its
    /// clock covers. A later digest that covers fewer (a peer restored from an older store)
    /// takes them back.
    pub(crate) fn tombstones_heard(&mut self, from: &str, clock: &VersionVector) {
        let t = &mut self.gc.tombstones;
        if t.notices.is_empty() {
            return;
        }
        // The notices' vectors grow with their number: the covered ones are a prefix.
        let notices: Vec<(&u64, &Notice)> = t.notices.iter().collect();
        let covered = notices.partition_point(|(_, n)| *clock >= n.at_seen);
        match covered.checked_sub(1).map(|i| *notices[i].0) {
            Some(newest) => {
                t.covered.insert(Name::from(from), newest);
            }
            None => {
                t.covered.remove(from);
            }
        }
    }
}
