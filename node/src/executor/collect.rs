//! Finished tasks' directories: found, and removed once the agent decides they are garbage
//! (`crate::task_gc` asks the scheduler's tables; `docs/executor.md`, "Task directories").
//!
//! Only a *finished* directory is ever a candidate: a task this executor does not run (nor
//! adopt), with no pid record that recovery and the watchdog would trust (a regular file of
//! the agent's, not empty: a process of a crashed agent may be behind it), and whose
//! task cgroup, where there are cgroups, holds no process (a task may delete its own record;
//! it cannot leave its cgroup). Such a directory is never touched here, whatever the tables
//! say. A record the agent would not trust (a directory, a file of the task user's) does not
//! pin the directory: the task user could otherwise keep it, and every other finished task's,
//! from ever being collected.

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
    /// The newest change of the directory, its pid record (emptied at the task's end) and its
    /// logs (the task's last output): when the task ended, near enough.
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
    /// of a task not running here, with no trusted pid record and an empty task cgroup: the
    /// module doc), sorted by task. Names that do not read back as an attempt are left alone.
    /// Blocking: it walks the whole tree.
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
                    if !self.has_ended(&name, &attempt) {
                        continue;
                    }
                    let Some(modified) = last_change(&attempt) else {
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
    /// (or is adopted) here, its pid record is one recovery would trust, or its cgroup holds a
    /// process; `Ok(true)` also when it was already gone. Blocking.
    ///
    /// The caller must know that `task` never starts here again (the tables dropped it):
    /// nothing stops a start of the same key racing this removal.
    pub fn remove_task_dir(&self, task: &AttemptId) -> Result<bool, RemoveError> {
        let name = super::name_of(task)?;
        let dir = self.inner.task_dir(&name);
        if self.inner.lock().running.contains_key(task) || !self.has_ended(&name, &dir) {
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

impl Executor {
    /// Whether the task of `dir` (named `name`) has ended as far as this host can tell: no pid
    /// record recovery would trust, and no process in its task cgroup.
    fn has_ended(&self, name: &DiskName, dir: &Path) -> bool {
        !holds_record(dir, self.inner.users.agent_uid)
            && self
                .inner
                .cgroups
                .as_ref()
                .is_none_or(|h| h.task_cgroup(&name.cgroup()).procs().is_empty())
    }
}

/// `dir` holds a pid record that recovery and the watchdog would read (`pidfile::read`'s
/// rule): a regular file, owned by the agent, not empty.
fn holds_record(dir: &Path, owner: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    dir.join("pid")
        .symlink_metadata()
        .is_ok_and(|m| m.is_file() && m.uid() == owner && m.len() > 0)
}

/// The newest modification time of `dir` itself, its pid record and its two logs.
fn last_change(dir: &Path) -> Option<SystemTime> {
    let own = dir.symlink_metadata().and_then(|m| m.modified()).ok()?;
    let files = ["pid", "stdout", "stderr"].iter().filter_map(|f| {
        dir.join(f)
            .symlink_metadata()
            .and_then(|m| m.modified())
            .ok()
    });
    files.chain([own]).max()
}

/// A directory name that is a decimal `u32`.
fn number(path: &Path) -> Option<u32> {
    path.file_name()?.to_str()?.parse().ok()
}
