//! Spare task cgroups (cgroup v1): the cgroup of a task that ended with nothing left in it is
//! renamed aside instead of removed, and renamed to the next task's name instead of made anew.
//!
//! Making a v1 task cgroup is a `mkdir` in each of four hierarchies, where the kernel creates
//! every control file of each controller, and removing it is four `rmdir`s that take the
//! kernel's cgroup lock and leave work for RCU; a `rename` in each is a fraction of that
//! (`docs/executor.md`, "Spare cgroups"). Only a cgroup this executor made in this life, that
//! its task left empty without a kill round (so never frozen), becomes a spare: nothing can
//! enter an empty cgroup but a process this agent puts there, so it stays empty. Its memory
//! charge is given back first (`memory.force_empty`), and its limits are remembered so the next
//! task writes only those that differ. The kernel's own counters (`memory.failcnt`,
//! `memory.max_usage_in_bytes`, `cpuacct.usage`) do carry over; the agent reads none of them.
//!
//! Spares are named `.spare-<n>`: a task's name never starts with a dot, so no task cgroup is
//! ever taken for one. Everything that walks the task cgroups (the watchdog, the sweep of empty
//! cgroups at start and at shutdown) sees spares as empty cgroups and may remove them. v2 does
//! not allow renaming a cgroup: there, every task makes and removes its own.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::cgroup::{Hierarchy, Limits, TaskCgroup};

/// At most this many spares are kept; a cgroup beyond them is removed as before.
pub(super) const MAX_SPARES: usize = 64;

/// The spare cgroups of one executor.
#[derive(Debug)]
pub(super) struct Spares {
    hierarchy: Hierarchy,
    free: Mutex<Vec<Spare>>,
    next: AtomicU64,
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
            next: AtomicU64::new(0),
        })
    }

    /// A spare renamed to `name`, with `limits` written where they differ from the spare's.
    /// `None` when there is no spare, or when the one taken could not be used (a stale cgroup
    /// named `name` in one hierarchy, a limit the kernel refused): that spare is removed and the
    /// caller makes the cgroup as it would have without spares.
    pub fn take(&self, name: &str, limits: Limits) -> Option<TaskCgroup> {
        let spare = self.lock().pop()?;
        let from = self.hierarchy.task_cgroup(&spare.name);
        let to = self.hierarchy.task_cgroup(name);
        if let Err(e) = rename_all(&from, &to) {
            tracing::debug!(spare = spare.name, error = %e, "spare cgroup not used");
            let _ = from.remove_now();
            return None;
        }
        if let Err(e) = self
            .hierarchy
            .write_limits(name, limits, Some(spare.limits))
        {
            tracing::debug!(error = %e, "spare cgroup refused the limits; making a new one");
            let _ = to.remove_now();
            return None;
        }
        Some(to.with_limits(limits))
    }

    /// Keeps `cgroup`, named `name` and known to be empty, as a spare. Gives it back when it
    /// cannot be kept (enough spares, a rename or the uncharge failed): the caller removes it.
    pub fn keep(&self, name: &str, cgroup: TaskCgroup) -> Result<(), TaskCgroup> {
        let Some(limits) = cgroup.limits() else {
            return Err(cgroup);
        };
        if self.lock().len() >= MAX_SPARES {
            return Err(cgroup);
        }
        if let Err(e) = self.hierarchy.uncharge_memory(name) {
            tracing::debug!(error = %e, "task cgroup not kept as a spare");
            return Err(cgroup);
        }
        let spare = format!(".spare-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let to = self.hierarchy.task_cgroup(&spare);
        if let Err(e) = rename_all(&cgroup, &to) {
            tracing::debug!(error = %e, "task cgroup not kept as a spare");
            return Err(cgroup);
        }
        self.lock().push(Spare {
            name: spare,
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

/// Renames every directory of `from` to the matching one of `to` (same hierarchies, same
/// order); on a failure, renames back those already moved and returns the error.
fn rename_all(from: &TaskCgroup, to: &TaskCgroup) -> Result<(), String> {
    let pairs: Vec<_> = from.dirs().iter().zip(to.dirs()).collect();
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
