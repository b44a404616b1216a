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
//! cache and took up to 124 ms here. Nor is a memory cgroup that counted an OOM kill passed on:
//! the agent reads that count at the end of a task that died by a `SIGKILL` it did not send,
//! to report an OOM kill, and it must be the task's own. The kernel's other counters carry over
//! (`cpuacct.usage`, `cpu.stat`, `pids.events`, `memory.max_usage_in_bytes`, `memory.failcnt`);
//! the agent reads none of them.
//!
//! A spare keeps the name of the task that ended in it until the next task takes it and renames
//! it to its own, so a running task's cgroups are always named after it (recovery, the watchdog
//! and `/proc/<pid>/cgroup` find them by that name), and each task costs one `rename` per
//! hierarchy. A task whose own name is a spare's (the same attempt started again in this life)
//! takes that spare, without a rename, so a new cgroup is never made under a spare's name.
//! Everything that walks the task cgroups (the watchdog, the sweep of empty cgroups at start
//! and at shutdown) sees spares as empty cgroups and may remove them. v2 does not allow
//! renaming a cgroup: there, every task makes and removes its own.

use std::sync::Mutex;

use super::anchor::Under;
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
    /// The file that says what is charged to a memory cgroup: with swap accounting,
    /// `memory.memsw.usage_in_bytes` (memory and swap: a swapped-out page of the last task is
    /// charged to the cgroup again when it is swapped in), else `memory.usage_in_bytes`.
    charged_file: &'static str,
    /// Held from choosing a spare until it carries its new task's name: a spare out of the
    /// list but still under an old name is a name another launch could make a cgroup under.
    free: Mutex<Vec<Spare>>,
}

#[derive(Debug)]
struct Spare {
    name: String,
    limits: Limits,
    /// Whether its memory cgroup was kept (at most [`MAX_LEFTOVER_BYTES`] charged when its task
    /// ended); if not, the next task's is made new.
    memory: bool,
}

impl Spares {
    /// Spares for `hierarchy`, where it allows them (v1).
    pub fn new(hierarchy: &Hierarchy) -> Option<Spares> {
        let Hierarchy::V1 { memory_parent, .. } = hierarchy else {
            return None;
        };
        let charged_file = if memory_parent.join("memory.memsw.usage_in_bytes").exists() {
            "memory.memsw.usage_in_bytes"
        } else {
            "memory.usage_in_bytes"
        };
        Some(Spares {
            hierarchy: hierarchy.clone(),
            charged_file,
            free: Mutex::new(Vec::new()),
        })
    }

    /// A spare renamed to `name` (the spare named `name` itself, without a rename, when there is
    /// one), its memory limit raised by what is still charged to it, its cpu quota written again
    /// and its pids limit where it differs. `None` when there is no spare, or when the one taken
    /// is not used (more than [`MAX_LEFTOVER_BYTES`] charged, a stale cgroup named `name` in one
    /// hierarchy, a limit the kernel refused): that spare is removed and the caller makes the
    /// cgroup as it would have without spares.
    pub fn take(&self, name: &str, limits: Limits) -> Option<TaskCgroup> {
        let (spare, leftover_bytes) = {
            let mut free = self.lock();
            let spare = match free.iter().position(|s| s.name == name) {
                Some(own) => free.swap_remove(own),
                None => free.pop()?,
            };
            match self.rename(&spare, name) {
                Ok(leftover) => (spare, leftover),
                Err(e) => {
                    tracing::debug!(spare = spare.name, error = %e, "spare cgroup not used");
                    remove_dirs(self.hierarchy.task_cgroup(&spare.name).dirs());
                    return None;
                }
            }
        };
        let cgroup = self.hierarchy.task_cgroup(name);
        let memory = self.hierarchy.memory_dir(name);
        let made = if spare.memory {
            Ok(())
        } else {
            memory
                .mkdir(0o755)
                .map_err(|e| format!("cannot create cgroup {}: {e}", memory.path().display()))
        };
        let held = Held::Spare {
            max_pids: spare.limits.max_pids,
            leftover_bytes,
        };
        let written = made.and_then(|()| self.hierarchy.write_limits(name, limits, held));
        if let Err(e) = written {
            tracing::debug!(error = %e, "spare cgroup not used; making a new one");
            let _ = cgroup.remove_now();
            return None;
        }
        Some(cgroup.with_limits(limits))
    }

    /// Checks what is still charged to `spare` (when it kept its memory cgroup) and renames it
    /// to `name`; returns what is charged.
    fn rename(&self, spare: &Spare, name: &str) -> Result<u64, String> {
        let leftover = if spare.memory {
            let bytes = self.charged(&spare.name)?;
            if bytes > MAX_LEFTOVER_BYTES {
                return Err(format!("{bytes} bytes still charged to it"));
            }
            bytes
        } else {
            0
        };
        if spare.name != name {
            let dirs = |n: &str| self.kept_dirs(n, spare.memory);
            rename_all(&dirs(&spare.name), &dirs(name))?;
        }
        Ok(leftover)
    }

    /// Keeps `cgroup`, named `name` and known to be empty, as a spare, under that name; its
    /// memory cgroup only while at most [`MAX_LEFTOVER_BYTES`] is charged to it (a task that
    /// wrote files leaves their page cache there), else that one is removed now, off the next
    /// launch's path. Gives it back when it cannot be kept (enough spares, the memory cgroup's
    /// removal failed): the caller removes it.
    pub fn keep(&self, name: &str, cgroup: TaskCgroup) -> Result<(), TaskCgroup> {
        let Some(limits) = cgroup.limits() else {
            return Err(cgroup);
        };
        if self.lock().len() >= MAX_SPARES {
            return Err(cgroup);
        }
        // A memory cgroup that counted an OOM kill is not passed on: the next task's end
        // would read that count as its own (`Executor::finish`).
        let memory = self
            .charged(name)
            .is_ok_and(|bytes| bytes <= MAX_LEFTOVER_BYTES)
            && self.hierarchy.oom_kills(name).is_none_or(|n| n == 0);
        if !memory && let Err(e) = self.hierarchy.memory_dir(name).rmdir() {
            tracing::debug!(error = %e, "task cgroup not kept as a spare");
            return Err(cgroup);
        }
        let mut free = self.lock();
        if free.len() >= MAX_SPARES {
            return Err(cgroup);
        }
        free.push(Spare {
            name: name.to_owned(),
            limits,
            memory,
        });
        Ok(())
    }

    /// The memory and swap still charged to the memory cgroup of task cgroup `name`.
    fn charged(&self, name: &str) -> Result<u64, String> {
        self.hierarchy.memory_charged(name, self.charged_file)
    }

    /// The directories of cgroup `name` that a spare holds: every hierarchy's, or every one but
    /// memory's.
    fn kept_dirs(&self, name: &str, memory: bool) -> Vec<Under> {
        let memory_dir = self.hierarchy.memory_dir(name);
        let cgroup = self.hierarchy.task_cgroup(name);
        cgroup
            .dirs()
            .iter()
            .filter(|d| memory || **d != memory_dir)
            .cloned()
            .collect()
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
fn rename_all(from: &[Under], to: &[Under]) -> Result<(), String> {
    let pairs: Vec<_> = from.iter().zip(to).collect();
    for (done, (a, b)) in pairs.iter().enumerate() {
        if let Err(e) = a.rename(b) {
            for (a, b) in &pairs[..done] {
                // One that cannot be moved back is an empty spare's under the new name: removed,
                // so no cgroup is ever made into it with its charges.
                if b.rename(a).is_err() {
                    let _ = b.rmdir();
                }
            }
            return Err(format!(
                "cannot rename {} to {}: {e}",
                a.path().display(),
                b.path().display()
            ));
        }
    }
    Ok(())
}

/// Removes empty cgroup directories, ignoring those already gone.
fn remove_dirs(dirs: &[Under]) {
    for dir in dirs {
        let _ = dir.rmdir();
    }
}
