//! The process executor as the scheduler's [`TaskRunner`], and its log files as the API's
//! [`LogReader`].

use std::sync::Arc;
use std::time::Duration;

use shoal_scheduler::{ExecCommand, TaskEvent, TaskKey};

use crate::api_jobs::LogReader;
use crate::executor::{Executor, LogStream, TaskSpec, attempt_of, exec_key};
use crate::sched_driver::TaskRunner;

/// SIGTERM, then this long before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// Runs scheduler commands on the process executor (its events go straight to the scheduler
/// task, [`crate::executor::ExecEvent::into_task_event`]).
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    executor: Executor,
}

impl ProcessRunner {
    /// Wraps `executor`.
    #[must_use]
    pub fn new(executor: Executor) -> Self {
        ProcessRunner { executor }
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
}

impl TaskRunner for ProcessRunner {
    fn start(&mut self, command: ExecCommand) -> Result<(), TaskEvent> {
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
            return Ok(());
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
        self.executor
            .start(exec_key(&task), spec)
            .map_err(|e| TaskEvent::Failed {
                reason: e.to_string(),
            })
    }

    fn kill(&mut self, task: TaskKey) -> bool {
        self.executor.kill(&exec_key(&task), KILL_GRACE)
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
    use crate::executor;

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
