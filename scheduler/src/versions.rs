//! Job versions for the operator (`docs/services.md`, §4): `shoal job history` (the kept
//! versions with their rollouts), `shoal job revert ID VERSION` (a job write with that
//! version's spec and epoch, without canaries) and `shoal job promote ID` (the canaries'
//! rollout continues), and the deployment line of `shoal job status`.

use serde::Serialize;
use shoal_gossip::Millis;

use crate::ids::Stamp;
use crate::jobs::Prepared;
use crate::rollout::{Phase, canary_of, phase};
use crate::scheduler::Scheduler;
use crate::table::{JobEntry, OpBody, Rollout, VersionEntry};

/// One kept version of a job, as `GET /v1/jobs/{id}/versions` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionView {
    /// Version number.
    pub version: u32,
    /// The epoch its attempts run under, as `wall_ms.logical@node`.
    pub epoch: String,
    /// The deployment, as `wall_ms.logical@node` (equal to `epoch` unless a revert).
    pub deployment: String,
    /// When it was submitted (the accepting node's clock, ms since the Unix epoch).
    pub submitted_ms: u64,
    /// The node that accepted it (`~revert` for an automatic revert).
    pub node: String,
    /// Its rollout completed.
    pub stable: bool,
    /// `running` (the current deployment, in progress), `awaiting promotion`, `complete`,
    /// `failed: …`, or `superseded` (an older deployment that did not complete).
    pub status: String,
    /// This is the job's current deployment.
    pub current: bool,
    /// Slots done in its rollout.
    pub done: u64,
    /// The version's spec.
    pub spec: crate::spec::JobSpec,
}

/// The current deployment of a job with an `[update]` block, as `job status` heads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentView {
    /// The job version.
    pub version: u32,
    /// `deploying`, `awaiting promotion`, `complete` or `failed`.
    pub status: String,
    /// Slots done.
    pub done: u32,
    /// Slots in all.
    pub count: u32,
    /// `update.max_parallel`.
    pub max_parallel: u32,
    /// Canaries of this deployment (0 for a revert).
    pub canary: u32,
    /// Canaries done.
    pub canary_done: u32,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The version this deployment reverted to, when it is a revert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverted_to: Option<u32>,
    /// The version whose failure this deployment reverted, when it is an automatic revert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_reverted: Option<u32>,
    /// [`DeploymentView::summary`], for clients that show the JSON.
    pub summary: String,
    /// The deployment's stamp, as `wall_ms.logical@node` ([`VersionView::deployment`]): a
    /// submission that started it answered the same `stamp`.
    pub deployment: String,
}

impl DeploymentView {
    /// The line `job status` heads its table with.
    #[must_use]
    pub fn summary(&self) -> String {
        let base = format!("version {}", self.version);
        let revert = match (self.reverted_to, self.auto_reverted) {
            (Some(to), Some(from)) => format!(" (auto-revert of version {from} to version {to})"),
            (Some(to), None) => format!(" (revert to version {to})"),
            _ => String::new(),
        };
        match self.status.as_str() {
            "complete" => format!("{base}{revert} · complete"),
            "awaiting promotion" => format!(
                "{base}{revert} · waiting for promote ({} of {} canaries healthy)",
                self.canary_done, self.canary
            ),
            "failed" => format!(
                "{base}{revert} · failed: {}",
                self.failure.as_deref().unwrap_or("?")
            ),
            _ => format!(
                "{base}{revert} · deploying {}/{} done · max_parallel {}",
                self.done, self.count, self.max_parallel
            ),
        }
    }
}

/// Why a revert was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevertError {
    /// No such job.
    #[error("no job `{0}`")]
    NotFound(String),
    /// The job is stopped.
    #[error("job `{0}` is stopped: submit it to start it again")]
    Stopped(String),
    /// No kept version has this number.
    #[error("job `{job}` has no version {version} (kept: {kept})")]
    NoSuchVersion {
        /// Job id.
        job: String,
        /// Asked for.
        version: u32,
        /// The numbers kept.
        kept: String,
    },
    /// Two versions share the number (two submissions within a replication delay).
    #[error(
        "version {version} of job `{job}` is ambiguous: epochs {epochs}; submit the spec you want instead"
    )]
    Ambiguous {
        /// Job id.
        job: String,
        /// Asked for.
        version: u32,
        /// The epochs that share it.
        epochs: String,
    },
    /// The version is the one running now.
    #[error("job `{job}` already runs version {version}")]
    Current {
        /// Job id.
        job: String,
        /// Asked for.
        version: u32,
    },
}

/// Why a promotion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromoteError {
    /// No such job.
    #[error("no job `{0}`")]
    NotFound(String),
    /// Nothing waits for a promotion.
    #[error("job `{job}` has no canary waiting for promotion ({why})")]
    NothingToPromote {
        /// Job id.
        job: String,
        /// What the deployment is doing instead.
        why: String,
    },
}

/// `wall_ms.logical@node`.
/// A stamp as the API shows it: `wall_ms.logical@node` (the `epoch` and `deployment` of
/// [`VersionView`], the `deployment` of [`DeploymentView`], the `stamp` of a submission's
/// answer).
#[must_use]
pub fn show_stamp(s: &Stamp) -> String {
    format!("{}.{}@{}", s.hlc.wall_ms, s.hlc.logical, s.actor.node)
}

impl Scheduler {
    /// The kept versions of a job's visible incarnation, oldest first (`None`: no such job).
    #[must_use]
    pub fn job_versions(&self, id: &str) -> Option<Vec<VersionView>> {
        let (incarnation, entry) = self.tables().job(id)?;
        let views = self
            .tables()
            .versions(id, incarnation)
            .filter_map(|(d, v)| version_view(entry, d, v))
            .collect();
        Some(views)
    }

    /// The current deployment of a job with an `[update]` block (for `job status`).
    pub(crate) fn deployment_view(
        &self,
        incarnation: u64,
        entry: &JobEntry,
    ) -> Option<DeploymentView> {
        let update = entry.spec.update.as_ref()?;
        let rollout = self.rollout_of(incarnation, entry);
        let canary = canary_of(entry, update);
        let (status, failure) = match phase(entry, update, &rollout) {
            Phase::Deploying => ("deploying", None),
            Phase::AwaitingPromotion => ("awaiting promotion", None),
            Phase::Complete => ("complete", None),
            Phase::Failed(f) => ("failed", Some(f.reason)),
        };
        let reverted_to = entry
            .is_revert()
            .then(|| self.version_of_epoch(incarnation, entry))
            .flatten();
        let auto_reverted = (entry.deployment.actor.node.as_str() == "~revert")
            .then(|| self.failed_before(incarnation, entry))
            .flatten();
        let mut view = DeploymentView {
            version: entry.version,
            status: status.to_string(),
            done: rollout.done.count_below(entry.spec.count),
            count: entry.spec.count,
            max_parallel: update.max_parallel,
            canary,
            canary_done: rollout.done.count_below(canary),
            failure,
            reverted_to,
            auto_reverted,
            summary: String::new(),
            deployment: show_stamp(&entry.deployment),
        };
        view.summary = view.summary();
        Some(view)
    }

    /// The number of the first kept version that ran `entry`'s epoch.
    pub(crate) fn version_of_epoch(&self, incarnation: u64, entry: &JobEntry) -> Option<u32> {
        self.tables()
            .versions(&entry.spec.id, incarnation)
            .filter_map(|(_, v)| v.row.as_ref())
            .find(|r| r.epoch == entry.epoch)
            .map(|r| r.number)
    }

    /// The newest version before `entry`'s deployment whose rollout failed.
    fn failed_before(&self, incarnation: u64, entry: &JobEntry) -> Option<u32> {
        self.tables()
            .versions(&entry.spec.id, incarnation)
            .rev()
            .filter(|(d, _)| **d < entry.deployment)
            .find(|(_, v)| v.rollout.failed.is_some())
            .and_then(|(_, v)| v.row.as_ref().map(|r| r.number))
    }

    /// The job version number an attempt placed under `epoch` runs (views).
    pub(crate) fn version_number(
        &self,
        incarnation: u64,
        entry: &JobEntry,
        epoch: &Stamp,
    ) -> Option<u32> {
        if *epoch == entry.epoch {
            return Some(entry.version);
        }
        self.tables()
            .versions(&entry.spec.id, incarnation)
            .rev()
            .filter_map(|(_, v)| v.row.as_ref())
            .find(|r| r.epoch == *epoch)
            .map(|r| r.number)
    }

    /// `shoal job revert ID VERSION`: a job write with that version's spec and epoch, as a
    /// new version that skips canaries. Log and commit it as a submission.
    pub fn prepare_revert(
        &mut self,
        now: Millis,
        id: &str,
        version: u32,
    ) -> Result<Prepared, RevertError> {
        self.tick(now);
        let (incarnation, cur) = self
            .tables()
            .job(id)
            .map(|(i, e)| (i, e.clone()))
            .ok_or_else(|| RevertError::NotFound(id.to_string()))?;
        if cur.stopped {
            return Err(RevertError::Stopped(id.to_string()));
        }
        let rows: Vec<crate::table::VersionRow> = self
            .tables()
            .versions(id, incarnation)
            .filter_map(|(_, v)| v.row.as_deref().cloned())
            .collect();
        let matching: Vec<&crate::table::VersionRow> =
            rows.iter().filter(|r| r.number == version).collect();
        let row = match matching.as_slice() {
            [] => {
                let kept: Vec<String> = rows.iter().map(|r| r.number.to_string()).collect();
                return Err(RevertError::NoSuchVersion {
                    job: id.to_string(),
                    version,
                    kept: kept.join(", "),
                });
            }
            [one] => (*one).clone(),
            many => {
                let epochs: Vec<String> = many.iter().map(|r| show_stamp(&r.epoch)).collect();
                return Err(RevertError::Ambiguous {
                    job: id.to_string(),
                    version,
                    epochs: epochs.join(", "),
                });
            }
        };
        if row.epoch == cur.epoch && row.spec == cur.spec {
            return Err(RevertError::Current {
                job: id.to_string(),
                version,
            });
        }
        let stamp = self.stamp();
        let entry = JobEntry {
            stamp: stamp.clone(),
            epoch: row.epoch,
            spec: row.spec,
            stopped: false,
            deployment: stamp,
            version: self.next_version(id, incarnation),
            skip_canary: true,
        };
        Ok(self.prepare_write(incarnation, entry))
    }

    /// `shoal job promote ID`: the canaries of the current deployment are accepted and the
    /// rest of its slots may be replaced. Written at once (like progress, it is not a job
    /// write: a promotion lost with this node before it replicated is given again).
    pub fn promote(&mut self, now: Millis, id: &str) -> Result<u32, PromoteError> {
        self.tick(now);
        let (incarnation, entry) = self
            .tables()
            .job(id)
            .map(|(i, e)| (i, e.clone()))
            .ok_or_else(|| PromoteError::NotFound(id.to_string()))?;
        let nothing = |why: &str| PromoteError::NothingToPromote {
            job: id.to_string(),
            why: why.to_string(),
        };
        let Some(update) = entry.spec.update.as_ref().filter(|_| !entry.stopped) else {
            return Err(nothing("no [update] block, or stopped"));
        };
        let rollout = self.rollout_of(incarnation, &entry);
        if canary_of(&entry, update) == 0 {
            return Err(nothing("the deployment has no canaries"));
        }
        match phase(&entry, update, &rollout) {
            Phase::AwaitingPromotion => {}
            Phase::Deploying if !rollout.promoted => {
                return Err(nothing("its canaries are not all healthy yet"));
            }
            Phase::Deploying => return Err(nothing("already promoted")),
            Phase::Complete => return Err(nothing("the deployment is complete")),
            Phase::Failed(f) => {
                return Err(nothing(&format!("the deployment failed: {}", f.reason)));
            }
        }
        self.write(OpBody::Rollout {
            job: id.to_string(),
            incarnation,
            deployment: entry.deployment.clone(),
            rollout: Rollout {
                promoted: true,
                ..Rollout::default()
            },
        });
        self.reconcile();
        Ok(entry.version)
    }
}

fn version_view(current: &JobEntry, deployment: &Stamp, v: &VersionEntry) -> Option<VersionView> {
    let row = v.row.as_ref()?;
    let is_current = *deployment == current.deployment;
    // Every slot done is complete, whether or not the job's coordinator has said so yet.
    let complete = v.rollout.complete || v.rollout.done.covers_below(row.spec.count);
    let status = match (&v.rollout.failed, complete, is_current) {
        (Some(f), _, _) => format!("failed: {}", f.reason),
        (None, true, _) => "complete".to_string(),
        (None, false, true) => match current.spec.update.as_ref() {
            Some(update) => match phase(current, update, &v.rollout) {
                Phase::AwaitingPromotion => "awaiting promotion".to_string(),
                _ => "running".to_string(),
            },
            None => "running".to_string(),
        },
        (None, false, false) => "superseded".to_string(),
    };
    Some(VersionView {
        version: row.number,
        epoch: show_stamp(&row.epoch),
        deployment: show_stamp(deployment),
        submitted_ms: deployment.hlc.wall_ms,
        node: deployment.actor.node.to_string(),
        stable: complete && v.rollout.failed.is_none(),
        status,
        current: is_current,
        done: v.rollout.done.len(),
        spec: row.spec.clone(),
    })
}
