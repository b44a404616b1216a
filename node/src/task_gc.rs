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

/// The default share of the data dir's file system in use above which finished tasks'
/// directories go even while the tables hold their attempts, oldest first
/// (`--task-gc-disk-percent`; Nomad's client uses 80 %).
pub const DEFAULT_DISK_PERCENT: u8 = 90;

/// Most directories one pass removes for disk space.
const MAX_PRESSURE_REMOVALS: usize = 10_000;

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
    /// Of `removed`, those removed for disk space while the tables still held their attempts.
    pub for_space: u64,
}

/// When finished tasks' directories go before the tables drop their attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskPressure {
    /// Above this share of the data dir's file system in use (percent; 100: never).
    pub percent: u8,
}

/// Collects every `every` until `shutdown`; the first pass is `every` after the start, when
/// the tables restored from the store have caught up with the cluster.
pub async fn run(
    executor: Executor,
    sched: SchedHandle,
    metrics: Arc<Metrics>,
    every: Duration,
    pressure: DiskPressure,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(every) => {}
        }
        let Some(pass) = collect_once(&executor, &sched, SystemTime::now(), pressure).await else {
            return;
        };
        metrics.task_dirs_collected(pass.removed, pass.failed);
        if pass.for_space > 0 {
            tracing::warn!(
                removed = pass.for_space,
                percent = pressure.percent,
                "the data dir's disk is over its limit: removed the directories (logs) of the \
                 oldest finished tasks that jobs still list"
            );
        }
        if pass.removed > pass.for_space || pass.failed > 0 {
            tracing::info!(
                removed = pass.removed - pass.for_space,
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
        // An idle agent runs no task: no trip to the blocking pool, whose idle threads have
        // exited by now (tokio keeps them 10 s), so each trip would start one.
        if executor.running_count() == 0 {
            continue;
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
    pressure: DiskPressure,
) -> Option<Pass> {
    let walker = executor.clone();
    let finished = tokio::task::spawn_blocking(move || walker.finished_task_dirs())
        .await
        .unwrap_or_default();
    let mut garbage = Vec::new();
    let mut held = Vec::new();
    for chunk in finished.chunks(ASK_AT_ONCE) {
        let rows = sched
            .task_rows(chunk.iter().map(|d| d.task.clone()).collect())
            .await?;
        for (dir, row) in chunk.iter().zip(rows) {
            if is_garbage(dir, row, now) {
                garbage.push(dir.task.clone());
            } else {
                held.push(dir.clone());
            }
        }
    }
    let finished = finished.len();
    let remover = executor.clone();
    let tasks_dir = executor.tasks_dir().to_owned();
    let pass = tokio::task::spawn_blocking(move || {
        let mut pass = Pass {
            finished,
            ..Pass::default()
        };
        for task in &garbage {
            remove_one(&remover, task, &mut pass);
        }
        if pressure.percent < 100 {
            let over = || is_over(pressure.percent, disk_used_percent(&tasks_dir));
            remove_for_space(&remover, held, over, &mut pass);
        }
        pass
    })
    .await
    .unwrap_or_default();
    Some(pass)
}

fn remove_one(executor: &Executor, task: &shoal_scheduler::AttemptId, pass: &mut Pass) -> bool {
    match executor.remove_task_dir(task) {
        Ok(true) => {
            pass.removed += 1;
            true
        }
        Ok(false) => false,
        Err(e) => {
            pass.failed += 1;
            tracing::warn!(task = %task, error = %e, "cannot remove a finished task's directory");
            false
        }
    }
}

/// While `over()` (the disk is fuller than allowed), removes finished tasks' directories that
/// the tables still hold, the task that ended longest ago first, at most
/// [`MAX_PRESSURE_REMOVALS`]. Their logs are gone then, though the jobs still list them: a full
/// disk would stop every task's output, the store's writes and new launches on this node.
fn remove_for_space(
    executor: &Executor,
    mut held: Vec<FinishedDir>,
    mut over: impl FnMut() -> bool,
    pass: &mut Pass,
) {
    held.sort_by(|a, b| {
        a.modified
            .cmp(&b.modified)
            .then_with(|| a.task.cmp(&b.task))
    });
    for dir in held.iter().take(MAX_PRESSURE_REMOVALS) {
        if !over() {
            return;
        }
        if remove_one(executor, &dir.task, pass) {
            pass.for_space += 1;
        }
    }
}

/// Whether a disk `used` percent full is over the threshold `percent`: at or above it, and
/// never for 100 (a full disk reads 100) or when the share cannot be read.
fn is_over(percent: u8, used: Option<u8>) -> bool {
    percent < 100 && used.is_some_and(|used| used >= percent)
}

/// The share of `dir`'s file system in use, in percent, as `df` counts it (blocks reserved for
/// root count as neither used nor available).
fn disk_used_percent(dir: &std::path::Path) -> Option<u8> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let used = st.blocks().saturating_sub(st.blocks_free());
    let total = used + st.blocks_available();
    let percent = used.checked_mul(100)?.div_ceil(total.max(1));
    u8::try_from(percent.min(100)).ok()
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
    use crate::executor::{CgroupMode, ExecutorConfig};

    fn attempt(slot: u32) -> shoal_scheduler::AttemptId {
        shoal_scheduler::AttemptId {
            job: "old".into(),
            incarnation: 1,
            slot,
            attempt: 1,
            placer: "n1".into(),
        }
    }

    /// Under disk pressure the directories go oldest first, only while the disk is over, and
    /// never one whose task runs or whose record holds a process.
    #[tokio::test]
    async fn under_pressure_the_oldest_finished_directories_go_first() {
        let root = std::env::temp_dir().join(format!("shoal-taskgc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let config = ExecutorConfig {
            cgroups: CgroupMode::Off,
            instance: format!("taskgc-{}", std::process::id()),
            ..ExecutorConfig::default()
        };
        let (exec, _events) = Executor::new(root.clone(), config).unwrap();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // Slots 0..4 ended at base + 40 − 10·slot: slot 3 is the oldest.
        for slot in 0..4 {
            let dir = exec.task_dir(&attempt(slot)).unwrap();
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("stdout"), "x").unwrap();
        }
        // Slot 1 holds a record: a process may be behind it.
        let held_record = exec.task_dir(&attempt(1)).unwrap().join("pid");
        std::fs::write(&held_record, "{\"pid\": 1}").unwrap();
        let held: Vec<FinishedDir> = (0..4)
            .map(|slot| FinishedDir {
                task: attempt(slot),
                modified: base + Duration::from_secs(40 - 10 * u64::from(slot)),
            })
            .collect();
        // Over for three checks: slots 3 and 2 go, slot 1 is refused (its record), and by the
        // fourth check the disk is fine, so slot 0 stays.
        let mut checks = 0;
        let mut pass = Pass::default();
        remove_for_space(
            &exec,
            held,
            || {
                checks += 1;
                checks <= 3
            },
            &mut pass,
        );
        let exists = |slot| exec.task_dir(&attempt(slot)).unwrap().exists();
        assert_eq!(
            (exists(0), exists(1), exists(2), exists(3)),
            (true, true, false, false),
            "{pass:?}"
        );
        assert_eq!((pass.removed, pass.for_space, pass.failed), (2, 2, 0));
        assert!(disk_used_percent(&root).is_some_and(|p| p <= 100));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_disk_threshold_is_at_or_above_and_100_means_never() {
        assert!(is_over(90, Some(90)));
        assert!(is_over(90, Some(100)));
        assert!(!is_over(90, Some(89)));
        assert!(
            !is_over(90, None),
            "an unreadable file system removes nothing"
        );
        assert!(!is_over(100, Some(100)), "100: never, even on a full disk");
        assert!(is_over(1, Some(1)));
    }

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
