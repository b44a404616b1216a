//! What tasks leave on disk: their logs kept under a cap while they run ([`trim_logs`],
//! `docs/executor.md`, "Logs"), and their directories collected once the cluster forgot them.
//!
//! Collecting task directories (`docs/executor.md`, "Task directories"). Every
//! `--task-gc-interval-s`, the agent lists the directories of tasks that ended on this host
//! and asks its scheduler's tables about each one's attempt. It removes a directory when the
//! tables dropped the attempt for good: its job incarnation was purged (`gc_grace` after the
//! job finished) or its slot's floor passed it (a slot that kept more than `attempt_history`
//! attempts). It also removes one that no table has known for [`UNKNOWN_KEPT`] (a purge whose
//! tombstone expired while this node was away). A task that still runs here, or whose pid
//! record holds a process, keeps its directory whatever the tables say.
//!
//! The walk and the removals run on the blocking pool; the scheduler task only looks attempts
//! up, [`ASK_AT_ONCE`] at a time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::executor::{Executor, FinishedDir};
use crate::metrics::Metrics;
use crate::sched_driver::{SchedHandle, TaskRow};

/// How often, by default, the agent collects task directories (Nomad's client GC runs every
/// minute too).
pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);

/// How long the directory of a task the tables do not know at all is kept, counted from its
/// last change (the task's end). A day: the scheduler's default tombstone retention.
pub const UNKNOWN_KEPT: Duration = Duration::from_secs(24 * 3600);

/// How often running tasks' logs are checked against the cap: a task writing 100 MB/s
/// overshoots it by at most a second's worth of that in ten.
pub const LOG_TRIM_EVERY: Duration = Duration::from_secs(10);

/// The default cap on each of a task's logs (`--task-log-max-mib`): stdout and stderr keep
/// their last 50 MiB each (Nomad keeps 10 files of 10 MB per task).
pub const DEFAULT_LOG_CAP_MIB: u64 = 50;

/// Attempts looked up per request to the scheduler task.
const ASK_AT_ONCE: usize = 4096;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Directories of finished tasks found.
    pub finished: usize,
    /// Removed.
    pub removed: u64,
    /// The file system refused (logged; tried again next pass).
    pub failed: u64,
}

/// Collects every `every` until `shutdown`; the first pass is `every` after the start, when
/// the tables restored from the store have caught up with the cluster.
pub async fn run(
    executor: Executor,
    sched: SchedHandle,
    metrics: Arc<Metrics>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(every) => {}
        }
        let Some(pass) = collect_once(&executor, &sched, SystemTime::now()).await else {
            return;
        };
        metrics.task_dirs_collected(pass.removed, pass.failed);
        if pass.removed > 0 || pass.failed > 0 {
            tracing::info!(
                removed = pass.removed,
                failed = pass.failed,
                finished = pass.finished,
                "collected the directories of finished tasks whose attempts the tables dropped"
            );
        }
    }
}

/// Every [`LOG_TRIM_EVERY`] until `shutdown`, cuts each running task's stdout and stderr back
/// to their last `cap` bytes (`Executor::trim_logs`).
pub async fn trim_logs(
    executor: Executor,
    metrics: Arc<Metrics>,
    cap: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(LOG_TRIM_EVERY) => {}
        }
        let trimmer = executor.clone();
        let Ok(pass) = tokio::task::spawn_blocking(move || trimmer.trim_logs(cap)).await else {
            continue;
        };
        metrics.logs_trimmed(pass.freed_bytes);
        if pass.trimmed > 0 {
            tracing::debug!(
                logs = pass.trimmed,
                freed_bytes = pass.freed_bytes,
                "cut running tasks' logs back to the cap"
            );
        }
    }
}

/// One pass at `now`; `None` when the scheduler task is gone.
pub async fn collect_once(
    executor: &Executor,
    sched: &SchedHandle,
    now: SystemTime,
) -> Option<Pass> {
    let walker = executor.clone();
    let finished = tokio::task::spawn_blocking(move || walker.finished_task_dirs())
        .await
        .unwrap_or_default();
    let mut garbage = Vec::new();
    for chunk in finished.chunks(ASK_AT_ONCE) {
        let rows = sched
            .task_rows(chunk.iter().map(|d| d.task.clone()).collect())
            .await?;
        garbage.extend(
            chunk
                .iter()
                .zip(rows)
                .filter(|(dir, row)| is_garbage(dir, *row, now))
                .map(|(dir, _)| dir.task.clone()),
        );
    }
    let mut pass = Pass {
        finished: finished.len(),
        ..Pass::default()
    };
    if garbage.is_empty() {
        return Some(pass);
    }
    let remover = executor.clone();
    let (removed, failed) = tokio::task::spawn_blocking(move || {
        let (mut removed, mut failed) = (0, 0);
        for task in &garbage {
            match remover.remove_task_dir(task) {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) => {
                    failed += 1;
                    tracing::warn!(task = %task, error = %e, "cannot remove a finished task's directory");
                }
            }
        }
        (removed, failed)
    })
    .await
    .unwrap_or_default();
    pass.removed = removed;
    pass.failed = failed;
    Some(pass)
}

/// Whether a finished task's directory goes, given what the tables say of its attempt.
fn is_garbage(dir: &FinishedDir, row: TaskRow, now: SystemTime) -> bool {
    match row {
        TaskRow::Held => false,
        TaskRow::Dropped => true,
        TaskRow::Unknown => now
            .duration_since(dir.modified)
            .is_ok_and(|age| age >= UNKNOWN_KEPT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dropped_attempts_and_long_unknown_ones_are_garbage() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10 * 24 * 3600);
        let dir = |age: Duration| FinishedDir {
            task: shoal_scheduler::AttemptId {
                job: "web".into(),
                incarnation: 1,
                slot: 0,
                attempt: 1,
                placer: "n1".into(),
            },
            modified: now - age,
        };
        let young = dir(Duration::from_secs(60));
        let old = dir(UNKNOWN_KEPT);
        assert!(!is_garbage(&old, TaskRow::Held, now));
        assert!(is_garbage(&young, TaskRow::Dropped, now));
        assert!(!is_garbage(&young, TaskRow::Unknown, now));
        assert!(is_garbage(&old, TaskRow::Unknown, now));
        // A directory changed "in the future" (the clock stepped back) is not old.
        let future = FinishedDir {
            modified: now + Duration::from_secs(60),
            ..young
        };
        assert!(!is_garbage(&future, TaskRow::Unknown, now));
    }
}
