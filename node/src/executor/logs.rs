//! A task's output files: reading bounded ranges of regular files only, and keeping a running
//! task's logs under a size on disk (`trim_log`).

use std::io::{ErrorKind, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{ExecError, Executor, pidfile};

/// Failures of [`Executor::read_log`](super::Executor::read_log).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The task key is invalid.
    #[error(transparent)]
    InvalidTask(#[from] ExecError),
    /// No such log (the task never ran here, or its files were removed).
    #[error("no log at {}", .0.display())]
    NotFound(PathBuf),
    /// The log exists but reading failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The log file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Which output stream of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Where a task's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPaths {
    /// Standard output file.
    pub stdout: PathBuf,
    /// Standard error file.
    pub stderr: PathBuf,
}

pub(super) async fn read_range(
    path: &Path,
    offset: u64,
    limit: usize,
) -> Result<(Vec<u8>, u64), LogError> {
    let read_error = |source| LogError::Read {
        path: path.to_owned(),
        source,
    };
    // The task user may replace its log with a link or a FIFO: read only a regular file.
    let opened = pidfile::open_regular(path).map(tokio::fs::File::from_std);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(LogError::NotFound(path.to_owned()));
        }
        Err(e) => return Err(read_error(e)),
    };
    let len = file.metadata().await.map_err(read_error)?.len();
    // A trimmed log begins with a hole (`trim_log`): skip to the first byte still kept.
    // The file may have grown since `len` was read (a hole included): stay within `len`.
    let start = first_data(&file, offset.min(len))
        .map_err(read_error)?
        .min(len);
    let want = usize::try_from(len - start)
        .unwrap_or(usize::MAX)
        .min(limit);
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(read_error)?;
    let mut buf = Vec::with_capacity(want);
    (&mut file)
        .take(want as u64)
        .read_to_end(&mut buf)
        .await
        .map_err(read_error)?;
    let next = start + buf.len() as u64;
    Ok((buf, next))
}

/// The first offset at or after `from` that holds data: `from` itself in a file without holes,
/// the end when only a hole follows.
fn first_data(file: &tokio::fs::File, from: u64) -> std::io::Result<u64> {
    let Ok(at) = i64::try_from(from) else {
        return Ok(from);
    };
    match nix::unistd::lseek(file.as_fd(), at, nix::unistd::Whence::SeekData) {
        Ok(data) => Ok(u64::try_from(data).unwrap_or(from).max(from)),
        // Nothing but a hole (or the end) from here.
        Err(nix::errno::Errno::ENXIO) => Ok(file_len(file)?.max(from)),
        // A file system that cannot say: no holes to skip.
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::EOPNOTSUPP) => Ok(from),
        Err(e) => Err(e.into()),
    }
}

fn file_len(file: &tokio::fs::File) -> std::io::Result<u64> {
    let fd = file.as_fd().try_clone_to_owned()?;
    Ok(std::fs::File::from(fd).metadata()?.len())
}

/// What one [`Executor::trim_logs`] pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogTrim {
    /// Logs cut back to the cap.
    pub trimmed: u64,
    /// Disk space given back, bytes.
    pub freed_bytes: u64,
    /// Logs that could not be cut (logged).
    pub failed: u64,
}

impl Executor {
    /// Keeps the stdout and stderr of every task running here under `cap` bytes on disk: a log
    /// that holds more loses its oldest bytes (`trim_log`). Offsets do not move, so a reader
    /// that follows a log keeps its place. Blocking.
    #[must_use]
    pub fn trim_logs(&self, cap: u64) -> LogTrim {
        let running: Vec<_> = self.inner.lock().running.keys().cloned().collect();
        let owner = self.inner.users.agent_uid;
        let mut pass = LogTrim::default();
        for task in &running {
            let Ok(paths) = self.log_paths(task) else {
                continue;
            };
            for path in [paths.stdout, paths.stderr] {
                match trim_log(&path, cap, owner) {
                    Ok(0) => {}
                    Ok(freed) => {
                        pass.trimmed += 1;
                        pass.freed_bytes += freed;
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => {
                        pass.failed += 1;
                        tracing::warn!(task = %task, path = %path.display(), error = %e, "cannot trim a task's log");
                    }
                }
            }
        }
        pass
    }
}

/// Cuts the log at `path` to its last `cap` bytes (rounded to whole blocks) when it holds
/// more on disk; returns the bytes given back. The head is punched out
/// (`FALLOC_FL_PUNCH_HOLE`): the size and every offset stay, the task keeps appending through
/// its descriptor, and nothing written while this runs is lost. Where the file system cannot
/// punch, the log is emptied instead (`ftruncate`; the task's appends start again at 0).
///
/// Only the file the agent made is touched: a regular file, opened without following a link,
/// owned by the agent's user, with no second name (a task may replace its log with a link to
/// another file; `Ok(0)` then).
pub(crate) fn trim_log(path: &Path, cap: u64, owner: u32) -> std::io::Result<u64> {
    let cheap = path.symlink_metadata()?;
    if !cheap.is_file() || cheap.blocks() * 512 <= cap {
        return Ok(0);
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.nlink() != 1 || meta.uid() != owner {
        return Ok(0);
    }
    let block = meta.blksize().max(512);
    let cut = meta.size().saturating_sub(cap) / block * block;
    let (Ok(len), true) = (i64::try_from(cut), cut > 0) else {
        return Ok(0);
    };
    let punch = nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
        | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
    match nix::fcntl::fallocate(file.as_fd(), punch, 0, len) {
        Ok(()) => {}
        Err(nix::errno::Errno::EOPNOTSUPP) => file.set_len(0)?,
        Err(e) => return Err(e.into()),
    }
    let after = file.metadata()?.blocks() * 512;
    Ok((meta.blocks() * 512).saturating_sub(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-logs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn own_uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    /// 3 MiB of `a` then `end\n`.
    fn big_log(path: &Path) -> u64 {
        let mut body = vec![b'a'; 3 << 20];
        body.extend_from_slice(b"end\n");
        std::fs::write(path, &body).unwrap();
        body.len() as u64
    }

    #[tokio::test]
    async fn a_trimmed_log_keeps_its_tail_its_size_and_its_offsets() {
        let dir = scratch("tail");
        let path = dir.join("stdout");
        let len = big_log(&path);
        let freed = trim_log(&path, 1 << 20, own_uid()).unwrap();
        assert!(freed >= (2 << 20) - 8192, "freed {freed}");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), len, "the size (and every offset) stays");
        assert!(
            meta.blocks() * 512 <= (1 << 20) + 8192,
            "{} bytes on disk",
            meta.blocks() * 512
        );
        // Read from 0: the hole is skipped, the kept tail comes back whole.
        let (kept, next) = read_range(&path, 0, 4 << 20).await.unwrap();
        assert_eq!(next, len);
        assert!(
            kept.len() >= 1 << 20 && kept.len() < (1 << 20) + 8192,
            "{}",
            kept.len()
        );
        assert!(kept.ends_with(b"aaaaend\n"));
        assert!(kept[..kept.len() - 4].iter().all(|b| *b == b'a'));
        // Under the cap: nothing to do.
        assert_eq!(trim_log(&path, 1 << 20, own_uid()).unwrap(), 0);
        // An append lands at the end; a reader at the old end reads just it.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"more\n").unwrap();
        assert_eq!(
            read_range(&path, len, 100).await.unwrap(),
            (b"more\n".to_vec(), len + 5)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_the_log_file_the_agent_made_is_trimmed() {
        let dir = scratch("foreign");
        let other = dir.join("other");
        let len = big_log(&other);
        // A link in the log's place: the file it names is not touched.
        std::os::unix::fs::symlink(&other, dir.join("stdout")).unwrap();
        assert_eq!(
            trim_log(&dir.join("stdout"), 1 << 20, own_uid()).unwrap(),
            0
        );
        // A second name for another file.
        std::fs::hard_link(&other, dir.join("stderr")).unwrap();
        assert_eq!(
            trim_log(&dir.join("stderr"), 1 << 20, own_uid()).unwrap(),
            0
        );
        // A file of another owner.
        std::fs::remove_file(dir.join("stderr")).unwrap();
        assert_eq!(trim_log(&other, 1 << 20, own_uid() + 1).unwrap(), 0);
        let meta = std::fs::metadata(&other).unwrap();
        assert!(
            meta.blocks() * 512 >= len,
            "untouched: {} bytes on disk",
            meta.blocks() * 512
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
