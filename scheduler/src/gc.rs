//! Garbage collection: the job's GC coordinator purges a finished job incarnation after a
//! grace period, a slot's coordinator folds old attempts of a long slot history into a floor,
//! and tombstones are dropped once every live peer holds them (`docs/scheduler.md`, GC rule).

use std::collections::BTreeSet;

use shoal_gossip::MemberStatus;

use crate::config::ms;
use crate::hash::StableHasher;
use crate::ids::{AttemptId, Name, SlotKey, VersionVector};
use crate::roles::{Tombstone, Wake};
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
        let purged: Vec<JobKey> = self.tables().purged().iter().cloned().collect();
        self.gc.tombstones.retain(|k, _| purged.contains(k));
        let retention = ms(self.config.tombstone_retention);
        let mut drop = Vec::new();
        for key in purged {
            if !self.gc.tombstones.contains_key(&key) {
                let tombstone = Tombstone {
                    seen: self.now,
                    at_seen: self.tables().clock().clone(),
                    held_by: BTreeSet::new(),
                };
                self.gc.tombstones.insert(key.clone(), tombstone);
            }
            let tombstone = &self.gc.tombstones[&key];
            let old = self.now.since(tombstone.seen) >= retention;
            let everywhere = self
                .members
                .live
                .iter()
                .filter(|(n, _)| *n != self.node)
                .all(|(n, _)| tombstone.held_by.contains(n.as_str()));
            if old && everywhere {
                drop.push(key);
            }
        }
        for key in drop {
            self.gc.tombstones.remove(&key);
            self.replica.drop_tombstone(&key);
        }
    }

    /// A digest from `from` says whether it holds each tombstone this node keeps: it does while
    /// its last digest covers what this node had when it saw the tombstone. A later digest that
    /// no longer covers it (a peer restored from an older store) takes that back.
    pub(crate) fn tombstones_heard(&mut self, from: &str, clock: &VersionVector) {
        for tombstone in self.gc.tombstones.values_mut() {
            if *clock >= tombstone.at_seen {
                if !tombstone.held_by.contains(from) {
                    tombstone.held_by.insert(Name::from(from));
                }
            } else {
                tombstone.held_by.remove(from);
            }
        }
    }
}
