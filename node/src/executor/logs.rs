//! Reading a task's output files: bounded ranges of regular files only.

use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{ExecError, pidfile};

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
    let start = offset.min(len);
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
