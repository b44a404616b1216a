//! Finished tasks' directories: found, and removed once the agent decides they are garbage
//! (`crate::task_gc` asks the scheduler's tables; `docs/executor.md`, "Task directories").
//!
//! Only a *finished* directory is ever a candidate: a task this executor does not run (nor
//! adopt) whose pid record is absent or emptied. A non-empty record is recovery's and the
//! watchdog's (a process of a crashed agent may still be behind it), so it is never touched
//! here, whatever the tables say.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use shoal_scheduler::AttemptId;

use super::disk_name::{DiskName, attempt_id};
use super::pidfile::subdirs;
use super::{ExecError, Executor};

/// The directory of a task that ended here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedDir {
    /// The attempt it belongs to.
    pub task: AttemptId,
    /// When the directory itself last changed (its files were made, or its pid record ended).
    pub modified: SystemTime,
}

/// Why a task directory could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// The task key has no name on disk.
    #[error(transparent)]
    InvalidTask(#[from] ExecError),
    /// The file system refused (a file the agent cannot delete, an I/O error).
    #[error("cannot remove task directory {}: {source}", path.display())]
    Io {
        /// The task directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Executor {
    /// The directories of tasks that ended on this host (`tasks/<job key>/<slot>/<attempt>`
    /// whose pid record is absent or emptied and whose task is not running here), sorted by
    /// task. Names that do not read back as an attempt are left alone. Blocking: it walks the
    /// whole tree.
    #[must_use]
    pub fn finished_task_dirs(&self) -> Vec<FinishedDir> {
        let tasks_dir = &self.inner.tasks_dir;
        let mut found = Vec::new();
        for job in subdirs(tasks_dir) {
            let Some(job_key) = job.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            for slot in subdirs(&job) {
                let Some(slot_no) = number(&slot) else {
                    continue;
                };
                for attempt in subdirs(&slot) {
                    let Some(attempt_no) = number(&attempt) else {
                        continue;
                    };
                    let name = DiskName::from_dir(job_key, slot_no, attempt_no);
                    // Only the directory this very name makes (no `01` for slot 1).
                    if name.dir(tasks_dir) != attempt {
                        continue;
                    }
                    let Ok(task) = attempt_id(&name) else {
                        continue;
                    };
                    if !record_ended(&attempt) {
                        continue;
                    }
                    let Ok(modified) = attempt.symlink_metadata().and_then(|m| m.modified()) else {
                        continue;
                    };
                    found.push(FinishedDir { task, modified });
                }
            }
        }
        let running = self.inner.lock();
        found.retain(|d| !running.running.contains_key(&d.task));
        drop(running);
        found.sort_by(|a, b| a.task.cmp(&b.task));
        found
    }

    /// Removes a finished task's directory with everything in it, then its slot and job
    /// directories if that left them empty. `Ok(false)`: not removed, because the task runs
    /// (or is adopted) here or its pid record holds a process; `Ok(true)` also when it was
    /// already gone. Blocking.
    ///
    /// The caller must know that `task` never starts here again (the tables dropped it):
    /// nothing stops a start of the same key racing this removal.
    pub fn remove_task_dir(&self, task: &AttemptId) -> Result<bool, RemoveError> {
        let dir = self.task_dir(task)?;
        if self.inner.lock().running.contains_key(task) || !record_ended(&dir) {
            return Ok(false);
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => return Err(RemoveError::Io { path: dir, source }),
        }
        // The slot, then the job directory, while empty. A launch that makes a new attempt
        // of the same slot at this moment finds its slot directory gone and makes it again
        // (`launch::make_task_dir`).
        for parent in dir.ancestors().skip(1).take(2) {
            if std::fs::remove_dir(parent).is_err() {
                break;
            }
        }
        Ok(true)
    }
}

/// The pid record in `dir` is absent or emptied: the executor saw its task end.
fn record_ended(dir: &Path) -> bool {
    match dir.join("pid").symlink_metadata() {
        Ok(m) => m.is_file() && m.len() == 0,
        Err(e) => e.kind() == ErrorKind::NotFound,
    }
}

/// A directory name that is a decimal `u32`.
fn number(path: &Path) -> Option<u32> {
    path.file_name()?.to_str()?.parse().ok()
}
