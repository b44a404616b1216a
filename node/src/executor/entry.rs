//! Putting a task's process into its cgroups between its start and `exec` (the child's side is
//! in `spawn.rs`).
//!
//! The agent opens the `cgroup.procs` file of each of the task's cgroups (one per v1
//! hierarchy) before the spawn, as itself; the child, already the task user, writes `0` ("the
//! calling process") into each of them just before `exec`. The kernel checks a migration
//! against the credentials of whoever *opened* the file, so the unprivileged child may use
//! these. The files are close-on-exec: the task never holds them. A failed write fails the
//! spawn with that OS error, so a task never runs outside its cgroups, and it cannot have forked
//! before it was in them. A cgroup that keeps its control files open (`control_files.rs`) lends
//! its kept `cgroup.procs` descriptors instead of opening them again.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use super::control_files::Files;

/// The open `cgroup.procs` files of one task cgroup, ready to be written by its child.
#[derive(Debug)]
pub(crate) enum Entry {
    /// Opened for this spawn.
    Opened(Vec<File>),
    /// The cgroup's kept files.
    Kept(Arc<Files>),
}

impl Entry {
    /// The kept `cgroup.procs` files of `files`.
    pub fn kept(files: Arc<Files>) -> Entry {
        Entry::Kept(files)
    }

    /// Opens `cgroup.procs` in each of `dirs` for writing (close-on-exec, as std always opens).
    pub fn open(dirs: &[PathBuf]) -> Result<Entry, String> {
        let procs = dirs
            .iter()
            .map(|dir| {
                let path = dir.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Entry::Opened(procs))
    }

    /// The open files' descriptors, for the child to write to (`spawn.rs`). They stay open as
    /// long as this `Entry` does: keep it until the spawn has returned.
    pub fn fds(&self) -> Vec<RawFd> {
        match self {
            Entry::Opened(procs) => procs.iter().map(AsRawFd::as_raw_fd).collect(),
            Entry::Kept(files) => files.procs_fds(),
        }
    }
}
