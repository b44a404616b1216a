//! The control files of one task cgroup that a task's start and end write or read, opened
//! once and kept with the cgroup while it runs its task and while it waits as a spare
//! (`spares.rs`): a task that takes a spare opens none of them.
//!
//! Each open is a path walk 8–10 components deep through cgroupfs and a kernfs open, about
//! 4 µs on the test machine against 0.7 µs for a write to a kept descriptor, and a spare's
//! cycle made eight: what is charged to its memory cgroup (read when it is kept and again
//! when it is taken), its cpu quota and memory limit (and its pids limit when that changes),
//! and the `cgroup.procs` of each hierarchy, which the child enters through (`entry.rs`).
//!
//! The descriptors follow their directories through a `rename` (a kernfs node keeps its open
//! files), and once a directory is removed every access fails (`ENODEV`), so a kept
//! descriptor never reaches another cgroup. `cgroup.procs` is never *read* through a kept
//! descriptor: cgroup v1 serves a pid list cached per open file for up to a second, which could
//! call a cgroup empty that is not; the end of a task opens those anew.
//!
//! Bounded: at most [`MAX_KEPT`] sets are open in the process (six to eight descriptors
//! each). A task cgroup made beyond that drops its set once its process is spawned, and a
//! spare without a set opens one when it is taken, as every task did before.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Sets of kept files open at most in the process: twice the spares there can be
/// (`spares::MAX_SPARES`), so every spare and as many running tasks keep theirs.
pub(super) const MAX_KEPT: usize = 128;

/// Sets of files open now, in the whole process.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// One control file, open for reading or for writing, and its path for error messages.
#[derive(Debug)]
pub(crate) struct Control {
    file: File,
    path: PathBuf,
}

impl Control {
    fn open(path: PathBuf, write: bool) -> Result<Control, String> {
        let file = std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(Control { file, path })
    }

    /// Writes `value` in one `write`, as `echo value > file` does.
    pub fn write(&self, value: &str) -> Result<(), String> {
        match self.file.write_at(value.as_bytes(), 0) {
            Ok(n) if n == value.len() => Ok(()),
            Ok(n) => Err(format!(
                "cannot write `{value}` to {}: {n} of {} bytes written",
                self.path.display(),
                value.len()
            )),
            Err(e) => Err(format!(
                "cannot write `{value}` to {}: {e}",
                self.path.display()
            )),
        }
    }

    /// Reads the number the file holds now (a read at offset 0 makes the kernel print it anew).
    pub fn read_u64(&self) -> Result<u64, String> {
        let mut buf = [0u8; 64];
        let n = self
            .file
            .read_at(&mut buf, 0)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let text = String::from_utf8_lossy(&buf[..n]);
        text.trim()
            .parse()
            .map_err(|e| format!("{} holds `{}`: {e}", self.path.display(), text.trim()))
    }
}

/// The kept control files of one task cgroup.
#[derive(Debug)]
pub(crate) struct Files {
    /// `cgroup.procs` of each of the cgroup's directories, in the order of its directories,
    /// open for writing only.
    procs: Vec<File>,
    /// `cpu.cfs_quota_us` (v1) or `cpu.max` (v2).
    pub cpu: Control,
    /// `memory.limit_in_bytes` (v1) or `memory.max` (v2).
    pub memory: Control,
    /// `pids.max`, where the `pids` controller is used.
    pub pids: Option<Control>,
    /// What is charged to the memory cgroup (`spares.rs`), where spares are kept.
    pub charged: Option<Control>,
}

/// Where the files of one cgroup are.
pub(crate) struct Paths {
    pub procs: Vec<PathBuf>,
    pub cpu: PathBuf,
    pub memory: PathBuf,
    pub pids: Option<PathBuf>,
    pub charged: Option<PathBuf>,
}

impl Files {
    /// Opens every file of `paths`; fails naming the first that cannot be opened.
    pub fn open(paths: Paths) -> Result<Files, String> {
        let procs = paths
            .procs
            .into_iter()
            .map(|p| Control::open(p, true).map(|c| c.file))
            .collect::<Result<Vec<_>, _>>()?;
        let files = Files {
            procs,
            cpu: Control::open(paths.cpu, true)?,
            memory: Control::open(paths.memory, true)?,
            pids: paths.pids.map(|p| Control::open(p, true)).transpose()?,
            charged: paths.charged.map(|p| Control::open(p, false)).transpose()?,
        };
        OPEN.fetch_add(1, Ordering::Relaxed);
        Ok(files)
    }

    /// The `cgroup.procs` descriptors, for the child of a spawn to write to.
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Whether more sets are open than [`MAX_KEPT`]: a running task's set is then dropped.
    pub fn over_bound() -> bool {
        OPEN.load(Ordering::Relaxed) > MAX_KEPT
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}
