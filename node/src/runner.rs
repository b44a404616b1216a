//! The process executor as the scheduler's [`TaskRunner`], and its log files as the API's
//! [`LogReader`].

use std::sync::Arc;
use std::time::Duration;

use shoal_scheduler::{AttemptId, ExecCommand, TaskEvent};

use crate::api_jobs::LogReader;
use crate::executor::{Executor, LogStream, TaskSpec};
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
    pub fn recover(&self) -> Vec<AttemptId> {
        let mut alive = Vec::new();
        for found in self.executor.recover() {
            match self.executor.adopt(&found.task) {
                Ok(true) => alive.push(found.task),
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
            .start(task, spec)
            .map_err(|e| TaskEvent::Failed {
                reason: e.to_string(),
            })
    }

    fn kill(&mut self, task: AttemptId) -> bool {
        self.executor.kill(&task, KILL_GRACE)
    }
}

/// Serves `GET /v1/tasks/.../logs` from the executor's files.
#[derive(Debug, Clone)]
pub struct ExecutorLogs(pub Executor);

impl LogReader for ExecutorLogs {
    fn read(
        &self,
        task: &AttemptId,
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
        let task = task.clone();
        Box::pin(async move {
            executor
                .read_log(&task, stream, offset, max)
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
