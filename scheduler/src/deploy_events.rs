//! Rollout events (`docs/services.md` §6, `docs/observability.md`): what this replica learns
//! of each job's *current* deployment, as [`SchedEvent::VersionCreated`] and
//! [`SchedEvent::Deployment`].
//!
//! What it promises:
//! - Derived from this replica's tables, like `AttemptChanged`: every node reports every
//!   job's deployments as its merges bring them (a local write or a peer's op), so any node's
//!   stream tells a rollout's story. Nothing is written to the tables for it.
//! - Each change is reported once per replica, in the order this replica saw it: a new
//!   current deployment (`VersionCreated`, then `Started` for a job with an `[update]` block,
//!   then `Reverted` when it is a revert), each slot done (`SlotDone`), the canaries done
//!   (`AwaitingPromotion`), `Promoted`, `Failed`, `Completed`. A slot done and completion can
//!   arrive in one merge: `SlotDone` events come first.
//! - A state merge (an agent's restart from its snapshot, a state transfer) is a baseline:
//!   the deployments it brings are recorded without events, since most are old news; changes
//!   after it are reported.
//! - Only the current deployment is followed: a submission that lost the jobs table to a
//!   concurrent one (decision 5) shows in history, not here.
//! - Off, and costing nothing, when events are off (the simulator).
//!
//! How it is driven: `reconcile` calls [`Scheduler::note_deployment`] for every job a
//! touch names, and with `baseline` for every job on a state merge.

use crate::events::{DeploymentChange, SchedEvent, Seen};
use crate::ids::Name;
use crate::rollout::{Phase, canary_of, phase};
use crate::scheduler::Scheduler;
use crate::versions::show_stamp;

impl Scheduler {
    /// Reports what changed in `job`'s current deployment since the last call (nothing with
    /// `baseline`: only remember it).
    pub(crate) fn note_deployment(&mut self, job: &Name, baseline: bool) {
        if !self.events.is_on() {
            return;
        }
        let Some((incarnation, entry)) = self
            .tables()
            .job(job)
            .filter(|(_, e)| !e.stopped)
            .map(|(i, e)| (i, e.clone()))
        else {
            self.deployments_seen.remove(job);
            return;
        };
        let rollout = self.rollout_of(incarnation, &entry);
        let update = entry.spec.update.as_ref();
        let phase = update.map(|u| phase(&entry, u, &rollout));
        let now = Seen {
            incarnation,
            deployment: Some(entry.deployment.clone()),
            version: entry.version,
            done: rollout.done.clone(),
            awaiting: matches!(phase, Some(Phase::AwaitingPromotion)),
            promoted: rollout.promoted,
            failed: matches!(phase, Some(Phase::Failed(_))),
            complete: matches!(phase, Some(Phase::Complete)),
        };
        let before = self.deployments_seen.insert(job.clone(), now.clone());
        if baseline || before.as_ref() == Some(&now) {
            return;
        }
        let mut before = before.unwrap_or_default();
        let version = entry.version;
        let mut events = Vec::new();
        let deployment = |change| SchedEvent::Deployment {
            job: job.clone(),
            incarnation,
            version,
            change,
        };
        if before.deployment != now.deployment || before.incarnation != incarnation {
            events.push(SchedEvent::VersionCreated {
                job: job.clone(),
                incarnation,
                version,
                epoch: show_stamp(&entry.epoch),
            });
            if let Some(update) = update {
                events.push(deployment(DeploymentChange::Started {
                    deployment: show_stamp(&entry.deployment),
                    max_parallel: update.max_parallel,
                    canary: canary_of(&entry, update),
                }));
            }
            if entry.is_revert() {
                let to = self.version_of_epoch(incarnation, &entry);
                events.push(deployment(DeploymentChange::Reverted {
                    from: (before.deployment.is_some() && before.incarnation == incarnation)
                        .then_some(before.version),
                    to,
                    auto: entry.deployment.actor.node.as_str() == "~revert",
                }));
            }
            before = Seen::default();
        }
        if update.is_some() {
            if now.done != before.done {
                let new = (0..entry.spec.count)
                    .filter(|s| now.done.contains(*s) && !before.done.contains(*s));
                events.extend(new.map(|slot| deployment(DeploymentChange::SlotDone { slot })));
            }
            let reason = rollout.failed.map(|f| f.reason);
            for (flag, was, change) in [
                (
                    now.awaiting,
                    before.awaiting,
                    DeploymentChange::AwaitingPromotion,
                ),
                (now.promoted, before.promoted, DeploymentChange::Promoted),
                (
                    now.failed,
                    before.failed,
                    DeploymentChange::Failed {
                        reason: reason.unwrap_or_default(),
                    },
                ),
                (now.complete, before.complete, DeploymentChange::Completed),
            ] {
                if flag && !was {
                    events.push(deployment(change));
                }
            }
        }
        for e in events {
            self.events.push(e);
        }
    }
}

#[cfg(test)]
mod tests;
