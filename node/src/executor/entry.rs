//! Putting a task's process into its cgroups between `fork` and `exec`: the one `unsafe` block of
//! the workspace (`CommandExt::pre_exec`).
//!
//! The agent opens the `cgroup.procs` file of each of the task's cgroups (one per v1
//! hierarchy) before the spawn, as itself; the child, already the task user, writes `0` ("the
//! calling process") into each of them just before `exec`. The kernel checks a migration
//! against the credentials of whoever *opened* the file, so the unprivileged child may use
//! these. The files are close-on-exec: the task never holds them. A failed write fails the
//! spawn with that OS error, so a task never runs outside its cgroups, and it cannot have forked
//! before it was in them.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

/// The open `cgroup.procs` files of one task cgroup, ready to be written by its child.
#[derive(Debug)]
pub(crate) struct Entry {
    procs: Vec<File>,
}

impl Entry {
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
        Ok(Entry { procs })
    }

    /// Makes the child of `command` enter the cgroups right before `exec`. The files stay open
    /// as long as `command` does (they belong to its hook), so a spawn never writes to a
    /// descriptor that was closed and reused.
    pub fn install(self, command: &mut tokio::process::Command) {
        let procs = self.procs;
        let hook = move || enter(&procs);
        // SAFETY: `pre_exec` runs the hook in the child between `fork` and `exec`, where only
        // async-signal-safe work is allowed (the parent may have had other threads holding
        // locks, e.g. the allocator's). `enter` makes one `write(2)` per file it was given and
        // builds its error from `errno` or an `ErrorKind`: no allocation, no lock, no other
        // call. The hook owns the files, so their descriptors are open in the child.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(hook);
        }
    }
}

/// Moves the calling process into every cgroup whose `cgroup.procs` is in `procs`.
fn enter(procs: &[File]) -> std::io::Result<()> {
    for mut file in procs {
        // "0" names the writer itself; a short write would be a kernel bug, but still an error.
        if file.write(b"0")? != 1 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}
