//! Glue between the scheduler's executor commands and the process [`Executor`].
//!
//! The scheduler names a task by its full attempt id `(job, incarnation, slot, attempt,
//! placer)`; the executor by `(job, slot, attempt)` where `job` names a directory. The executor
//! job is `"{job}.{incarnation}.{placer}"`: job ids contain no `.`, so the mapping is
//! reversible, which lets a restarted agent name the processes it finds.

use std::sync::Arc;
use std::time::Duration;

use shoal_scheduler::{ExecCommand, TaskEvent, TaskKey};
use tokio::sync::mpsc;

use crate::api_jobs::LogReader;
use crate::executor::{self, ExecEvent, Executor, LogStream, TaskSpec};
use crate::sched_driver::TaskRunner;

/// SIGTERM, then this long before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// The executor's key for a scheduler attempt.
#[must_use]
pub fn exec_key(task: &TaskKey) -> executor::TaskKey {
    executor::TaskKey {
        job: format!("{}.{}.{}", task.job, task.incarnation, task.placer),
        slot: task.slot,
        attempt: task.attempt,
    }
}

/// The scheduler attempt an executor key stands for, if it is one of ours.
#[must_use]
pub fn attempt_of(key: &executor::TaskKey) -> Option<TaskKey> {
    let mut parts = key.job.splitn(3, '.');
    let (job, incarnation, placer) = (parts.next()?, parts.next()?, parts.next()?);
    Some(TaskKey {
        job: job.into(),
        incarnation: incarnation.parse().ok()?,
        slot: key.slot,
        attempt: key.attempt,
        placer: placer.into(),
    })
}

/// Runs scheduler commands on the process executor and translates its events.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    executor: Executor,
    events: mpsc::Sender<(TaskKey, TaskEvent)>,
}

impl ProcessRunner {
    /// Wraps `executor`; its events are translated onto `events`.
    pub fn new(
        executor: Executor,
        exec_events: mpsc::Receiver<ExecEvent>,
        events: mpsc::Sender<(TaskKey, TaskEvent)>,
    ) -> Self {
        tokio::spawn(translate(exec_events, events.clone()));
        ProcessRunner { executor, events }
    }

    /// Adopts the processes a previous incarnation of this agent left behind; returns the
    /// attempts that are still running (their ends arrive as events later).
    #[must_use]
    pub fn recover(&self) -> Vec<TaskKey> {
        let mut alive = Vec::new();
        for found in self.executor.recover() {
            let Some(attempt) = attempt_of(&found.task) else {
                continue;
            };
            match self.executor.adopt(&found.task) {
                Ok(true) => alive.push(attempt),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(task = %found.task, error = %e, "cannot adopt a recovered task")
                }
            }
        }
        alive
    }

    fn report(&self, task: TaskKey, event: TaskEvent) {
        let events = self.events.clone();
        tokio::spawn(async move {
            let _ = events.send((task, event)).await;
        });
    }
}

impl TaskRunner for ProcessRunner {
    fn start(&mut self, command: ExecCommand) {
        let ExecCommand::Start {
            task,
            command,
            args,
            env,
            workdir,
            resources,
            user,
        } = command
        else {
            return;
        };
        let spec = TaskSpec {
            command,
            args,
            env,
            workdir: workdir.map(Into::into),
            cpu_millicores: resources.cpu_millicores,
            memory_mib: resources.memory_mib,
            user,
        };
        if let Err(e) = self.executor.start(exec_key(&task), spec) {
            self.report(
                task,
                TaskEvent::Failed {
                    reason: e.to_string(),
                },
            );
        }
    }

    fn kill(&mut self, task: TaskKey) {
        if !self.executor.kill(&exec_key(&task), KILL_GRACE) {
            // Never started here (or already gone): nothing to wait for.
            self.report(task, TaskEvent::Killed);
        }
    }
}

async fn translate(mut from: mpsc::Receiver<ExecEvent>, to: mpsc::Sender<(TaskKey, TaskEvent)>) {
    while let Some(event) = from.recv().await {
        let Some(task) = attempt_of(event.task()) else {
            continue;
        };
        let event = match event {
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
        if to.send((task, event)).await.is_err() {
            return;
        }
    }
}

/// Serves `GET /v1/tasks/.../logs` from the executor's files.
#[derive(Debug, Clone)]
pub struct ExecutorLogs(pub Executor);

impl LogReader for ExecutorLogs {
    fn read(
        &self,
        task: &TaskKey,
        stream: &str,
        offset: u64,
        max: usize,
    ) -> crate::api_jobs::LogFuture {
        let stream = if stream == "stderr" {
            LogStream::Stderr
        } else {
            LogStream::Stdout
        };
        let executor = self.0.clone();
        let key = exec_key(task);
        Box::pin(async move {
            executor
                .read_log(&key, stream, offset, max)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// A shared log reader.
#[must_use]
pub fn logs(executor: &Executor) -> Arc<dyn LogReader> {
    Arc::new(ExecutorLogs(executor.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_keys_map_back_to_attempts() {
        let task = TaskKey {
            job: "web-1".into(),
            incarnation: 42,
            slot: 3,
            attempt: 2,
            placer: "node-a.rack_1".into(),
        };
        let key = exec_key(&task);
        assert_eq!(key.job, "web-1.42.node-a.rack_1");
        assert_eq!(attempt_of(&key), Some(task));
        assert_eq!(
            attempt_of(&executor::TaskKey {
                job: "nodots".into(),
                slot: 0,
                attempt: 1
            }),
            None
        );
    }

    #[test]
    fn the_longest_job_id_and_node_name_still_name_a_task() {
        // The agent takes node names up to 63 bytes and specs take ids up to 63.
        let task = TaskKey {
            job: "j".repeat(63).as_str().into(),
            incarnation: u64::MAX,
            slot: u32::MAX,
            attempt: u32::MAX,
            placer: "n"
                .repeat(crate::agent::MAX_NODE_NAME_BYTES)
                .as_str()
                .into(),
        };
        let key = exec_key(&task);
        assert!(
            key.job.len() <= executor::MAX_JOB_KEY_BYTES,
            "{}",
            key.job.len()
        );
        assert!(executor::validate_task_key(&key).is_ok());
    }
}
