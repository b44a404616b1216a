//! The read side: what `GET /v1/jobs/{id}` and `shoal job status` show. Computed from the
//! replicated tables and the membership, so every node with the same tables gives the same
//! answer (pending reasons are the one exception: the slot's coordinator knows its exact
//! back-off deadline, the others report what they can compute).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;
use shoal_gossip::Millis;

use crate::hash::StableHasher;
use crate::health::{TaskHealth, task_health};
use crate::ids::{AttemptId, Hlc, SlotKey};
use crate::placement::{Candidate, PendingReason, Request, place};
use crate::scheduler::Scheduler;
use crate::slot::{SlotStatus, slot_status};
use crate::spec::JobType;
use crate::table::{AttemptState, HealthStatus, JobEntry};

/// Task state as shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Not placed (see the pending reason).
    Pending,
    /// Placed; the target has not started it yet.
    Proposed,
    /// Running.
    Running,
    /// Exited by itself (see the exit code).
    Exited,
    /// Could not start or died abnormally.
    Failed,
    /// Killed.
    Killed,
    /// Its node died.
    Lost,
}

/// Job status as shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// No task runs yet.
    Pending,
    /// Every slot runs (or, for batch, runs or is done).
    Running,
    /// A service with some but not all slots running.
    Degraded,
    /// Batch: every slot exited 0.
    Complete,
    /// Batch: every slot is final and some ran out of retries; service: a slot gave up.
    Failed,
    /// Stopped; some tasks are still being killed.
    Stopping,
    /// Stopped; nothing runs.
    Stopped,
}

/// One slot of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskView {
    /// Slot index.
    pub slot: u32,
    /// Current attempt number, if placed.
    pub attempt: Option<u32>,
    /// Node name of the current attempt, if placed.
    pub node: Option<String>,
    /// State.
    pub state: TaskState,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Why it is pending (or waiting to restart), human-readable.
    pub pending_reason: Option<String>,
    /// The same, structured.
    pub reason: Option<PendingReason>,
    /// Failure or rejection detail of the current attempt.
    pub detail: Option<String>,
    /// The node address the task's ports are reached at, once its target bound them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Port name → host port of the live attempt (empty until admitted, or without ports).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
    /// `healthy` (running, and its checks pass or the job has none), `unhealthy` (a check
    /// fails) or `unknown` (not running, or its checks have not all passed yet); the rule is
    /// [`crate::health::task_health`].
    pub health: TaskHealth,
    /// The last check failure of the running attempt (`check ready: HTTP 503`), while it is
    /// not passing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_note: Option<String>,
    /// While unhealthy: the failures in a row counted toward a restart, and the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_failures: Option<CheckFailures>,
    /// The job version the slot's live attempt runs (`docs/services.md`, §4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// Consecutive failures of the check closest to restarting a task (`docs/services.md`, §10
/// decision 3: "unhealthy (1 of 3 failures before restart)").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CheckFailures {
    /// Failures in a row counted so far.
    pub failures: u32,
    /// At this many the task is restarted; 0: the check never restarts it.
    pub limit: u32,
}

impl TaskView {
    /// `health`, with the restart counter beside it when unhealthy:
    /// `unhealthy (1 of 3 failures before restart)`.
    #[must_use]
    pub fn health_summary(&self) -> String {
        match self.check_failures {
            Some(CheckFailures { failures, limit: 0 }) => format!(
                "{} ({failures} failures in a row, never restarted)",
                self.health.as_str()
            ),
            Some(CheckFailures { failures, limit }) => format!(
                "{} ({failures} of {limit} failures before restart)",
                self.health.as_str()
            ),
            None => self.health.as_str().to_string(),
        }
    }
}

/// A job as every node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobView {
    /// Job id.
    pub id: String,
    /// `service` or `batch`.
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// Status.
    pub status: JobStatus,
    /// Desired count.
    pub count: u32,
    /// Stopped by the user.
    pub stopped: bool,
    /// Version (hybrid logical clock of the last write).
    pub version: Hlc,
    /// One entry per slot.
    pub tasks: Vec<TaskView>,
    /// The job version of the current write (1 for the first submission).
    pub job_version: u32,
    /// The current deployment, for a job with an `[update]` block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<crate::versions::DeploymentView>,
}

impl JobView {
    /// Number of tasks in `state`.
    #[must_use]
    pub fn count_in(&self, state: TaskState) -> usize {
        self.tasks.iter().filter(|t| t.state == state).count()
    }
}

impl Scheduler {
    /// The view of one job (its visible incarnation).
    #[must_use]
    pub fn job(&self, id: &str) -> Option<JobView> {
        let (incarnation, entry) = self.tables().job(id)?;
        Some(self.view_job(incarnation, entry))
    }

    /// Every job, by id.
    #[must_use]
    pub fn jobs(&self) -> Vec<JobView> {
        self.tables()
            .job_ids()
            .into_iter()
            .filter_map(|id| self.job(id))
            .collect()
    }

    fn view_job(&self, incarnation: u64, entry: &JobEntry) -> JobView {
        let mut dry_run = None;
        let tasks: Vec<TaskView> = (0..entry.spec.count)
            .map(|slot| {
                let key = SlotKey {
                    job: entry.spec.id.as_str().into(),
                    incarnation,
                    slot,
                };
                let status = slot_status(self.tables(), entry, &key, self.backoff());
                let mut v = self.view_slot(entry, &key, status, &mut dry_run);
                if v.state == TaskState::Running || v.state == TaskState::Proposed {
                    v.version = self
                        .tables()
                        .current_attempt(&key)
                        .and_then(|(_, a)| self.version_number(incarnation, entry, &a.epoch));
                }
                v
            })
            .collect();
        JobView {
            id: entry.spec.id.clone(),
            job_type: entry.spec.job_type,
            status: job_status(entry, &tasks),
            count: entry.spec.count,
            stopped: entry.stopped,
            version: entry.stamp.hlc,
            tasks,
            job_version: entry.version,
            deployment: self.deployment_view(incarnation, entry),
        }
    }

    fn view_slot(
        &self,
        entry: &JobEntry,
        key: &SlotKey,
        status: SlotStatus,
        dry_run: &mut Option<Option<PendingReason>>,
    ) -> TaskView {
        let mut v = TaskView {
            slot: key.slot,
            attempt: None,
            node: None,
            state: TaskState::Pending,
            exit_code: None,
            pending_reason: None,
            reason: None,
            detail: None,
            ip: None,
            ports: BTreeMap::new(),
            health: TaskHealth::Unknown,
            health_note: None,
            check_failures: None,
            version: None,
        };
        let mut ended = None;
        let waiting = match status {
            SlotStatus::Empty => true,
            SlotStatus::Live {
                id, target, state, ..
            } => {
                (v.attempt, v.node) = (Some(id.attempt), Some(target.to_string()));
                if let Some(b) = self.tables().binding(&id) {
                    v.ip = Some(b.ip);
                    v.ports = b.ports.iter().map(|(n, p)| (n.to_string(), *p)).collect();
                }
                v.state = if matches!(state, AttemptState::Running { .. }) {
                    TaskState::Running
                } else {
                    TaskState::Proposed
                };
                self.view_health(&mut v, entry, &id);
                false
            }
            SlotStatus::Done { id, target } => {
                (v.attempt, v.node, v.state, v.exit_code) = (
                    Some(id.attempt),
                    Some(target.to_string()),
                    TaskState::Exited,
                    Some(0),
                );
                false
            }
            SlotStatus::Retry {
                id, target, state, ..
            } => {
                (v.attempt, v.node) = (Some(id.attempt), Some(target.to_string()));
                describe_ended(&mut v, &state);
                ended = Some(state);
                true
            }
            SlotStatus::GaveUp { id, target, state } => {
                (v.attempt, v.node) = (Some(id.attempt), Some(target.to_string()));
                describe_ended(&mut v, &state);
                false
            }
        };
        if waiting {
            let reason = self.pending_reason(entry, key, ended.as_ref(), dry_run);
            v.pending_reason = reason.as_ref().map(|r| r.describe(self.now));
            v.reason = reason;
        }
        v
    }

    /// The health columns of a live attempt.
    fn view_health(&self, v: &mut TaskView, entry: &JobEntry, id: &AttemptId) {
        v.health = task_health(self.tables(), id, !entry.spec.checks.is_empty());
        if v.state != TaskState::Running || entry.spec.checks.is_empty() {
            return;
        }
        let Some(h) = self.tables().health(id) else {
            return;
        };
        if !h.note.is_empty() && h.status != HealthStatus::Passing {
            v.health_note = Some(h.note.clone());
        }
        if h.status == HealthStatus::Critical {
            v.check_failures = Some(CheckFailures {
                failures: h.failures,
                limit: h.limit,
            });
        }
    }

    /// Best explanation this node can give for a slot without a running attempt; `ended`
    /// says how its last attempt ended, when one did.
    fn pending_reason(
        &self,
        entry: &JobEntry,
        key: &SlotKey,
        ended: Option<&AttemptState>,
        dry_run: &mut Option<Option<PendingReason>>,
    ) -> Option<PendingReason> {
        if entry.stopped {
            return None;
        }
        if let Some(r) = self.coord.pending.get(key) {
            return Some(r.clone());
        }
        if !self.may_act() {
            // Whoever coordinates the slot in this node's view cannot act either.
            return Some(self.why_not_acting());
        }
        if let Some(until) = self.retry_at(key) {
            return Some(PendingReason::Backoff {
                until,
                after: ended.map_or_else(|| "previous attempt ended".into(), how_it_ended),
            });
        }
        let nofit = dry_run
            .get_or_insert_with(|| self.dry_run(entry, key))
            .clone();
        nofit.or_else(|| {
            self.coordinator_of(key).map(|c| PendingReason::Placing {
                coordinator: c.to_string(),
            })
        })
    }

    /// Would any node take a task of this job now? `None` if one would.
    fn dry_run(&self, entry: &JobEntry, key: &SlotKey) -> Option<PendingReason> {
        let mut tasks = self.live_tasks_by_node(&key.job, key.incarnation);
        if entry.spec.static_ports().next().is_some() {
            tasks = self.without_slot(&tasks, key);
        }
        let ports_taken = self.static_ports_taken(key, &entry.spec);
        let req = Request {
            spec: &entry.spec,
            key_hash: StableHasher::new().field(key.job.as_bytes()).finish(),
            job_hash: StableHasher::new().field(key.job.as_bytes()).finish(),
            slot: key.slot,
            job_tasks: &tasks,
            ports_taken: &ports_taken,
            avoid: None,
            sample: usize::MAX,
        };
        let used = |n: &Candidate| self.used_on(n);
        place(&req, &self.members.nodes, used).err()
    }

    /// When the next timer fires, for diagnostics.
    #[must_use]
    pub fn next_wakeup(&self) -> Option<Millis> {
        self.poll_timeout()
    }
}

/// How an attempt ended, for the reason its slot waits to be placed again ("rejected: n1 has
/// no free port in 20000-20002; retrying in 1.5 s").
fn how_it_ended(state: &AttemptState) -> String {
    match state {
        AttemptState::Rejected { reason } => format!("rejected: {reason}"),
        AttemptState::Failed { reason } => format!("failed: {reason}"),
        AttemptState::Exited { code } => format!("exited {code}"),
        AttemptState::Killed => "killed".into(),
        AttemptState::Drained => "drained off its node".into(),
        AttemptState::Lost { .. } => "lost with its node".into(),
        AttemptState::Proposed | AttemptState::Admitted | AttemptState::Running { .. } => {
            "previous attempt ended".into()
        }
    }
}

fn describe_ended(v: &mut TaskView, state: &AttemptState) {
    v.state = match state {
        AttemptState::Exited { code } => {
            v.exit_code = Some(*code);
            TaskState::Exited
        }
        AttemptState::Failed { reason } => {
            v.detail = Some(reason.clone());
            TaskState::Failed
        }
        AttemptState::Rejected { reason } => {
            v.detail = Some(format!("rejected: {reason}"));
            TaskState::Pending
        }
        AttemptState::Killed => TaskState::Killed,
        AttemptState::Drained => {
            v.detail = Some("drained off its node; being placed again".to_string());
            TaskState::Killed
        }
        AttemptState::Lost { .. } => TaskState::Lost,
        AttemptState::Proposed => TaskState::Proposed,
        AttemptState::Admitted => TaskState::Proposed,
        AttemptState::Running { .. } => TaskState::Running,
    };
}

fn job_status(entry: &JobEntry, tasks: &[TaskView]) -> JobStatus {
    let count = |s: TaskState| tasks.iter().filter(|t| t.state == s).count();
    let live = count(TaskState::Running) + count(TaskState::Proposed);
    if entry.stopped {
        return if live > 0 {
            JobStatus::Stopping
        } else {
            JobStatus::Stopped
        };
    }
    let total = tasks.len();
    let running = count(TaskState::Running);
    if entry.spec.job_type == JobType::Batch {
        let ok = tasks.iter().filter(|t| t.exit_code == Some(0)).count();
        if ok == total {
            return JobStatus::Complete;
        }
        let waiting = tasks.iter().any(|t| t.pending_reason.is_some() || live > 0);
        if !waiting && tasks.iter().all(|t| t.state != TaskState::Pending) {
            return JobStatus::Failed;
        }
        return if running + ok > 0 {
            JobStatus::Running
        } else {
            JobStatus::Pending
        };
    }
    let gave_up = tasks.iter().any(|t| {
        matches!(t.state, TaskState::Failed | TaskState::Exited) && t.pending_reason.is_none()
    });
    if gave_up {
        JobStatus::Failed
    } else if running == total {
        JobStatus::Running
    } else if running > 0 {
        JobStatus::Degraded
    } else {
        JobStatus::Pending
    }
}

/// Group views by task state (handy for CLIs and tests).
#[must_use]
pub fn state_counts(view: &JobView) -> BTreeMap<TaskState, usize> {
    let mut m = BTreeMap::new();
    for t in &view.tasks {
        *m.entry(t.state).or_default() += 1;
    }
    m
}
