//! Putting a task's process into its cgroups between its start and `exec` (the child's side is
//! in `spawn.rs`).
//!
//! The agent opens the `cgroup.procs` file of each of the task's cgroups (one per v1
//! hierarchy) before the spawn, as itself; the child, already the task user, writes `0` ("the
//! calling process") into each of them just before `exec`. The kernel checks a migration
//! against the credentials of whoever *opened* the file, so the unprivileged child may use
//! these. The files are close-on-exec: the task never holds them. A failed write fails the
//! spawn with that OS error, so a task never runs outside its cgroups, and it cannot have forked
//! before it was in them.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};

use nix::fcntl::OFlag;

use super::anchor::Under;

/// The open `cgroup.procs` files of one task cgroup, ready to be written by its child.
#[derive(Debug)]
pub(crate) struct Entry {
    procs: Vec<File>,
}

impl Entry {
    /// Opens `cgroup.procs` in each of `dirs` for writing (close-on-exec).
    pub fn open(dirs: &[Under]) -> Result<Entry, String> {
        let procs = dirs
            .iter()
            .map(|dir| {
                let file = dir.join("cgroup.procs");
                file.open(OFlag::O_WRONLY, 0)
                    .map_err(|e| format!("cannot open {}: {e}", file.path().display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Entry { procs })
    }

    /// The open files' descriptors, for the child to write to (`spawn.rs`). They stay open as
    /// long as this `Entry` does: keep it until the spawn has returned.
    pub fn fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }
}
