//! Rolling updates (`docs/services.md`, §4): who may replace a slot's running attempt with one
//! of the new version (the window rule, decided by each slot's coordinator alone), when a slot
//! counts as done, and what the job's coordinator concludes from the replicated progress
//! (complete, failed, auto-revert). Every decision reads only the tables; progress only grows,
//! so a new coordinator resumes from it and nothing is handed over.
//!
//! # The window rule
//!
//! Slot s may be replaced *voluntarily* (its current attempt, of another epoch, still live)
//! under deployment D only when D has not failed, s is a canary or the canary phase is over,
//! and `{0, …, s − mp} ⊆ done_D` in this replica's view. Because `done_D` only grows and holds
//! true facts, any two coordinators with any stale views together have at most `mp` slots
//! replaced and not yet done ([`window_allows`]; the proof is in the design, and the property
//! test below checks it under random stale views).

use crate::ids::{ActorId, Hlc, SlotKey, Stamp};
use crate::scheduler::Scheduler;
use crate::spec::UpdateSpec;
use crate::table::{AttemptState, Failure, JobEntry, OpBody, Rollout, SlotSet, clip_note};

/// What the window rule needs to know about one deployment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window<'a> {
    /// `update.max_parallel` (0: all at once).
    pub(crate) max_parallel: u32,
    /// `update.canary`, or 0 when the deployment skips its canary phase.
    pub(crate) canary: u32,
    /// Slots done, in this replica's view.
    pub(crate) done: &'a SlotSet,
    /// The operator promoted the canaries.
    pub(crate) promoted: bool,
    /// The deployment failed.
    pub(crate) failed: bool,
}

/// Whether slot `slot` may be replaced voluntarily (see the module doc).
pub(crate) fn window_allows(w: &Window<'_>, slot: u32) -> bool {
    if w.failed {
        return false;
    }
    if w.canary > 0 && !w.promoted && slot >= w.canary {
        return false;
    }
    // `{0, …, s − mp}` is `{0, …, s − mp + 1}` exclusive; empty when s < mp.
    w.max_parallel == 0 || slot < w.max_parallel || w.done.covers_below(slot - w.max_parallel + 1)
}

/// The phase of a deployment, as views show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Replacing slots.
    Deploying,
    /// The canaries are done; waiting for `shoal job promote`.
    AwaitingPromotion,
    /// Every slot is done: the version is stable.
    Complete,
    /// Failed.
    Failed(Failure),
}

/// The phase of deployment `rollout` of `entry`.
pub(crate) fn phase(entry: &JobEntry, update: &UpdateSpec, rollout: &Rollout) -> Phase {
    if let Some(f) = &rollout.failed {
        return Phase::Failed(f.clone());
    }
    if rollout.complete || rollout.done.covers_below(entry.spec.count) {
        return Phase::Complete;
    }
    let canary = canary_of(entry, update);
    if canary > 0 && !rollout.promoted && rollout.done.covers_below(canary) {
        return Phase::AwaitingPromotion;
    }
    Phase::Deploying
}

/// The canaries of a deployment: none for a revert or a job write that skips them.
pub(crate) fn canary_of(entry: &JobEntry, update: &UpdateSpec) -> u32 {
    if entry.skip_canary {
        0
    } else {
        update.canary.min(entry.spec.count)
    }
}

/// The deterministic stamp of the auto-revert of the deployment whose current write is
/// `entry`: two coordinators write identical entries, and a later user write still wins.
pub(crate) fn revert_stamp(entry: &JobEntry) -> Stamp {
    let hlc = entry.stamp.hlc;
    let next = match hlc.logical.checked_add(1) {
        Some(logical) => Hlc {
            wall_ms: hlc.wall_ms,
            logical,
        },
        None => Hlc {
            wall_ms: hlc.wall_ms.saturating_add(1),
            logical: 0,
        },
    };
    Stamp {
        hlc: next,
        actor: ActorId {
            node: "~revert".into(),
            start: 0,
        },
    }
}

impl Scheduler {
    /// The rollout of the job's current deployment, in this replica's view (empty when no
    /// progress arrived yet).
    pub(crate) fn rollout_of(&self, incarnation: u64, entry: &JobEntry) -> Rollout {
        self.tables()
            .version(&entry.spec.id, incarnation, &entry.deployment)
            .map(|v| v.rollout.clone())
            .unwrap_or_default()
    }

    /// The window rule for slot `slot` of the job's current deployment (always true without
    /// an `[update]` block: everything at once).
    pub(crate) fn may_replace(&self, incarnation: u64, entry: &JobEntry, slot: u32) -> bool {
        let Some(update) = &entry.spec.update else {
            return true;
        };
        let rollout = self.rollout_of(incarnation, entry);
        let w = Window {
            max_parallel: update.max_parallel,
            canary: canary_of(entry, update),
            done: &rollout.done,
            promoted: rollout.promoted,
            failed: rollout.failed.is_some(),
        };
        window_allows(&w, slot)
    }

    /// On the slot's coordinator: add the slot to the deployment's `done` set once its current
    /// attempt runs the current epoch, settled and healthy.
    pub(crate) fn mark_done(&mut self, incarnation: u64, entry: &JobEntry, key: &SlotKey) {
        if entry.stopped || entry.spec.update.is_none() {
            return;
        }
        let tables = self.tables();
        let Some((id, a)) = tables.current_attempt(key) else {
            return;
        };
        let healthy = crate::health::task_health(tables, id, !entry.spec.checks.is_empty());
        if a.epoch != entry.epoch || !healthy.is_healthy() || !tables.milestones(id).settled {
            return;
        }
        if self.rollout_of(incarnation, entry).done.contains(key.slot) {
            return;
        }
        self.write(OpBody::Rollout {
            job: entry.spec.id.clone(),
            incarnation,
            deployment: entry.deployment.clone(),
            rollout: Rollout {
                done: SlotSet::one(key.slot),
                ..Rollout::default()
            },
        });
    }

    /// On the job's coordinator: record a complete or failed deployment, and revert a failed
    /// one when the job asks for it. Cheap for a job without an `[update]` block or whose
    /// deployment is over; otherwise one pass over its slots.
    pub(crate) fn watch_rollout(&mut self, job: &str) {
        // Most jobs have no `[update]` block: decide that before cloning anything.
        let Some(incarnation) = self
            .tables()
            .job(job)
            .filter(|(_, e)| e.spec.update.is_some() && !e.stopped)
            .map(|(i, _)| i)
        else {
            return;
        };
        if !self.is_job_coordinator(job, incarnation) || !self.may_act() {
            return;
        }
        let Some((_, entry)) = self.tables().job(job).map(|(i, e)| (i, e.clone())) else {
            return;
        };
        let Some(update) = entry.spec.update.clone() else {
            return;
        };
        let rollout = self.rollout_of(incarnation, &entry);
        if rollout.failed.is_some() {
            if update.auto_revert && !entry.is_revert() {
                self.auto_revert(incarnation, &entry);
            }
            return;
        }
        if rollout.complete {
            return;
        }
        let progress = if rollout.done.covers_below(entry.spec.count) {
            Rollout {
                complete: true,
                ..Rollout::default()
            }
        } else if let Some(failed) = self.failed_slot(incarnation, &entry) {
            Rollout {
                failed: Some(failed),
                ..Rollout::default()
            }
        } else {
            return;
        };
        self.write(OpBody::Rollout {
            job: job.to_string(),
            incarnation,
            deployment: entry.deployment.clone(),
            rollout: progress,
        });
        // A failure may call for a revert at once.
        self.work.jobs.insert(job.into());
    }

    /// The first slot whose current attempt at the deployment's epoch missed its healthy
    /// deadline, or ended `Failed`/`Exited` before it settled.
    fn failed_slot(&self, incarnation: u64, entry: &JobEntry) -> Option<Failure> {
        let tables = self.tables();
        (0..entry.spec.count).find_map(|slot| {
            let key = SlotKey {
                job: entry.spec.id.as_str().into(),
                incarnation,
                slot,
            };
            let (id, a) = tables.current_attempt(&key)?;
            if a.epoch != entry.epoch {
                return None;
            }
            let marks = tables.milestones(id);
            let why = match tables.state(id) {
                _ if marks.deadline_missed && !marks.settled => {
                    "not healthy by its deadline".to_string()
                }
                AttemptState::Failed { reason } if !marks.settled => format!("failed: {reason}"),
                AttemptState::Exited { code } if !marks.settled => format!("exited {code}"),
                _ => return None,
            };
            Some(Failure {
                slot,
                reason: clip_note(&format!("slot {slot} {why}")),
            })
        })
    }

    /// Write the revert of the failed deployment `entry` to the newest stable version: its
    /// spec and epoch, without canaries, under [`revert_stamp`]. Nothing without a stable
    /// version.
    fn auto_revert(&mut self, incarnation: u64, entry: &JobEntry) {
        let Some(stable) = self.newest_stable(incarnation, entry) else {
            return;
        };
        let stamp = revert_stamp(entry);
        let revert = JobEntry {
            stamp: stamp.clone(),
            epoch: stable.epoch,
            spec: stable.spec,
            stopped: false,
            deployment: stamp,
            version: self.next_version(&entry.spec.id, incarnation),
            skip_canary: true,
        };
        tracing::info!(
            job = %entry.spec.id,
            from = entry.version,
            to = stable.number,
            "auto-reverting a failed deployment"
        );
        self.write(OpBody::Job {
            incarnation,
            entry: revert,
        });
    }

    /// The newest version other than `entry`'s whose rollout completed and that runs another
    /// epoch.
    fn newest_stable(
        &self,
        incarnation: u64,
        entry: &JobEntry,
    ) -> Option<crate::table::VersionRow> {
        self.tables()
            .versions(&entry.spec.id, incarnation)
            .rev()
            .filter(|(d, v)| **d != entry.deployment && v.rollout.complete)
            .filter_map(|(_, v)| v.row.as_deref().cloned())
            .find(|row| row.epoch != entry.epoch)
    }
}

#[cfg(test)]
mod tests;
