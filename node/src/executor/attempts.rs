//! The scheduler's names for what the executor runs: an attempt's directory key and back, and
//! executor events as the scheduler's task events.
//!
//! The scheduler names a task by its full attempt id `(job, incarnation, slot, attempt,
//! placer)`; the executor's directories by `(job, slot, attempt)` where `job` names a
//! directory. The directory job is `"{job}.{incarnation}.{placer}"`: job ids contain no `.`,
//! so the mapping is reversible, which lets a restarted agent name the processes it finds.

use shoal_scheduler::TaskEvent;

use super::{ExecEvent, TaskKey};

/// The executor's key for a scheduler attempt.
#[must_use]
pub fn exec_key(task: &shoal_scheduler::TaskKey) -> TaskKey {
    TaskKey {
        job: format!("{}.{}.{}", task.job, task.incarnation, task.placer),
        slot: task.slot,
        attempt: task.attempt,
    }
}

/// The scheduler attempt an executor key stands for, if it is one of ours.
#[must_use]
pub fn attempt_of(key: &TaskKey) -> Option<shoal_scheduler::TaskKey> {
    let mut parts = key.job.splitn(3, '.');
    let (job, incarnation, placer) = (parts.next()?, parts.next()?, parts.next()?);
    Some(shoal_scheduler::TaskKey {
        job: job.into(),
        incarnation: incarnation.parse().ok()?,
        slot: key.slot,
        attempt: key.attempt,
        placer: placer.into(),
    })
}

impl ExecEvent {
    /// The event as the scheduler hears it: its attempt and what happened (`None` for a task
    /// that is not a scheduler attempt).
    #[must_use]
    pub fn into_task_event(self) -> Option<(shoal_scheduler::TaskKey, TaskEvent)> {
        let task = attempt_of(self.task())?;
        let event = match self {
            ExecEvent::Started { pid, .. } => TaskEvent::Started { pid },
            ExecEvent::Exited { killed: true, .. } => TaskEvent::Killed,
            ExecEvent::Exited {
                code: Some(code), ..
            } => TaskEvent::Exited { code },
            ExecEvent::Exited {
                signal: Some(signal),
                ..
            } => TaskEvent::Exited { code: -signal },
            ExecEvent::Exited { .. } => TaskEvent::Failed {
                reason: "exit status unknown: the process was adopted after an agent restart"
                    .into(),
            },
            ExecEvent::Failed { reason, .. } => TaskEvent::Failed { reason },
        };
        Some((task, event))
    }
}
