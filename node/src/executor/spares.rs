//! Spare task cgroups (cgroup v1): the cgroups of a task that ended with nothing left in them
//! are kept, in all four hierarchies, and the next task's are a spare renamed to its name
//! instead of made anew.
//!
//! Making a v1 task cgroup is a `mkdir` in each of four hierarchies, where the kernel creates
//! every control file of each controller, and removing it is four `rmdir`s that take the
//! kernel's cgroup lock and leave work to kernel workers; a `rename` is a fraction of either
//! (`docs/executor.md`, "Spare cgroups"). Only a cgroup this executor made in this life, that
//! its task left empty without a kill round (so never frozen), becomes a spare: nothing can
//! enter an empty cgroup but a process this agent puts there, so it stays empty. The next task
//! writes its cpu quota again even when it is the same: the write refills the CFS runtime of
//! the period, which the last task may have spent (a `true` under a 1 ms quota spent most of
//! it, and the first build that skipped the write throttled every task after it until the next
//! 100 ms period: 57 tasks/s). The pids limit is written only when it differs.
//!
//! The memory cgroup still holds what its tasks left charged to it (kernel objects freed
//! later, page cache of the files they wrote, charges the kernel batches per CPU): the next
//! task's memory limit is raised by what is charged when it takes the spare, so it has all of
//! its own room, and a spare holding more than [`MAX_LEFTOVER_BYTES`] is removed instead of
//! taken. `memory.force_empty`, which would give the charge back, drains every CPU's charge
//! cache and took up to 124 ms here. The kernel's other counters carry over (`cpuacct.usage`,
//! `cpu.stat`, `pids.events`, `memory.max_usage_in_bytes`, `memory.failcnt`); the agent reads
//! none of them.
//!
//! A spare keeps the name of the task that ended in it until the next task takes it and renames
//! it to its own, so a running task's cgroups are always named after it (recovery, the watchdog
//! and `/proc/<pid>/cgroup` find them by that name), and each task costs one `rename` per
//! hierarchy. A task whose own name is a spare's (the same attempt started again in this life)
//! takes that spare, without a rename, so a new cgroup is never made under a spare's name.
//! Everything that walks the task cgroups (the watchdog, the sweep of empty cgroups at start
//! and at shutdown) sees spares as empty cgroups and may remove them. v2 does not allow
//! renaming a cgroup: there, every task makes and removes its own.

use std::path::PathBuf;
use std::sync::Mutex;

use super::cgroup::{Held, Hierarchy, Limits, TaskCgroup};

/// At most this many spares are kept; a cgroup beyond them is removed as before.
pub(super) const MAX_SPARES: usize = 64;

/// A spare with more memory than this still charged to it is removed rather than taken: the
/// next task would be allowed up to this much more than it asked for, once the kernel frees
/// what is charged. A `true` leaves 0.3–1.1 MiB here (mostly charges the kernel batches per
/// CPU); a task that wrote files leaves their page cache, and its spare is not used.
pub(super) const MAX_LEFTOVER_BYTES: u64 = 2 << 20;

/// The spare cgroups of one executor.
#[derive(Debug)]
pub(super) struct Spares {
    hierarchy: Hierarchy,
    free: Mutex<Vec<Spare>>,
}

#[derive(Debug)]
struct Spare {
    name: String,
    limits: Limits,
}

impl Spares {
    /// Spares for `hierarchy`, where it allows them (v1).
    pub fn new(hierarchy: &Hierarchy) -> Option<Spares> {
        matches!(hierarchy, Hierarchy::V1 { .. }).then(|| Spares {
            hierarchy: hierarchy.clone(),
            free: Mutex::new(Vec::new()),
        })
    }

    /// A spare renamed to `name` (the spare named `name` itself, without a rename, when there is
    /// one), its memory limit raised by what is still charged to it, its cpu quota written again
    /// and its pids limit where it differs. `None` when there is no spare, or when the one taken
    /// is not used (more than [`MAX_LEFTOVER_BYTES`] still charged, a stale cgroup named `name`
    /// in one hierarchy, a limit the kernel refused): that spare is removed and the caller makes
    /// the cgroup as it would have without spares.
    pub fn take(&self, name: &str, limits: Limits) -> Option<TaskCgroup> {
        let spare = {
            let mut free = self.lock();
            match free.iter().position(|s| s.name == name) {
                Some(own) => free.swap_remove(own),
                None => free.pop()?,
            }
        };
        let from = self.hierarchy.task_cgroup(&spare.name);
        let leftover = self
            .hierarchy
            .memory_charged(&spare.name)
            .and_then(|bytes| {
                (bytes <= MAX_LEFTOVER_BYTES)
                    .then_some(bytes)
                    .ok_or_else(|| format!("{bytes} bytes still charged to it"))
            });
        let renamed = leftover.and_then(|leftover| {
            if spare.name == name {
                return Ok(leftover);
            }
            rename_all(from.dirs(), self.hierarchy.task_cgroup(name).dirs()).map(|()| leftover)
        });
        let leftover_bytes = match renamed {
            Ok(leftover) => leftover,
            Err(e) => {
                tracing::debug!(spare = spare.name, error = %e, "spare cgroup not used");
                remove_dirs(from.dirs());
                return None;
            }
        };
        let cgroup = self.hierarchy.task_cgroup(name);
        let held = Held::Spare {
            max_pids: spare.limits.max_pids,
            leftover_bytes,
        };
        if let Err(e) = self.hierarchy.write_limits(name, limits, held) {
            tracing::debug!(error = %e, "spare cgroup not used; making a new one");
            let _ = cgroup.remove_now();
            return None;
        }
        Some(cgroup.with_limits(limits))
    }

    /// Keeps `cgroup`, named `name` and known to be empty, as a spare, under that name. Gives it
    /// back when there are enough spares: the caller removes it.
    pub fn keep(&self, name: &str, cgroup: TaskCgroup) -> Result<(), TaskCgroup> {
        let Some(limits) = cgroup.limits() else {
            return Err(cgroup);
        };
        let mut free = self.lock();
        if free.len() >= MAX_SPARES {
            return Err(cgroup);
        }
        free.push(Spare {
            name: name.to_owned(),
            limits,
        });
        Ok(())
    }

    /// How many spares there are now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Spare>> {
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Renames every directory of `from` to the matching one of `to`; on a failure, renames back
/// those already moved and returns the error.
fn rename_all(from: &[PathBuf], to: &[PathBuf]) -> Result<(), String> {
    let pairs: Vec<_> = from.iter().zip(to).collect();
    for (done, (a, b)) in pairs.iter().enumerate() {
        if let Err(e) = std::fs::rename(a, b) {
            for (a, b) in &pairs[..done] {
                let _ = std::fs::rename(b, a);
            }
            return Err(format!(
                "cannot rename {} to {}: {e}",
                a.display(),
                b.display()
            ));
        }
    }
    Ok(())
}

/// Removes empty cgroup directories, ignoring those already gone.
fn remove_dirs(dirs: &[PathBuf]) {
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
}
