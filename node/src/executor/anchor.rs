//! Directories the executor works under at every launch, held open, so that the files below
//! them are reached by a short path relative to an open descriptor (`openat`, `mkdirat`,
//! `renameat`, `unlinkat`) instead of a walk from `/`.
//!
//! A v1 task cgroup's control files are nine or ten components deep
//! (`/sys/fs/cgroup/memory/<the agent's cgroup>/shoal/<instance>/<task>/cgroup.procs`), and a
//! launch and its end open about fifteen of them. cgroupfs cannot be walked under RCU (its
//! `d_revalidate` asks for the locked walk), so every component of every such path took and
//! dropped locks and references: in a batch of `true` tasks the path walks were about 16 % of
//! the launch threads' samples (`BENCHMARKS.md`, session 25). Relative to the open parent, a
//! path is two components (`<task>/cgroup.procs`).
//!
//! An [`Anchor`] is opened `O_PATH`: it grants nothing but a starting point, and it is
//! close-on-exec, so no task inherits it. It follows its directory's inode, not its name: a
//! parent removed and made again under the same name is not the one an anchor holds. The
//! executor's parents are made at its start and removed only at its end, so that never
//! happens while it launches. Where a directory cannot be opened, the anchor holds only its
//! path and every operation walks the whole path as before.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{FchmodatFlags, Mode, fchmodat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, unlinkat};

/// A directory held open for the paths below it.
#[derive(Debug, Clone)]
pub(crate) struct Anchor {
    path: Arc<Path>,
    fd: Option<Arc<OwnedFd>>,
}

impl Anchor {
    /// Opens `path` as an anchor; one that cannot be opened anchors by its path alone.
    pub fn open(path: &Path) -> Anchor {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = openat(AT_FDCWD, path, flags, Mode::empty()).ok();
        Anchor {
            path: path.into(),
            fd: fd.map(Arc::new),
        }
    }

    /// An anchor that holds no descriptor: every path below it is walked whole (the watchdog,
    /// which looks at each task cgroup once).
    pub fn unopened(path: &Path) -> Anchor {
        Anchor {
            path: path.into(),
            fd: None,
        }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` below this directory.
    pub fn under(&self, rel: impl Into<PathBuf>) -> Under {
        Under {
            anchor: self.clone(),
            rel: rel.into(),
        }
    }
}

impl std::ops::Deref for Anchor {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl PartialEq for Anchor {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for Anchor {}

/// A path below an [`Anchor`]: the system calls on it start from the anchor's descriptor.
#[derive(Debug, Clone)]
pub(crate) struct Under {
    anchor: Anchor,
    rel: PathBuf,
}

impl Under {
    /// The whole path, for messages and for whoever needs it as a path.
    pub fn path(&self) -> PathBuf {
        self.anchor.path.join(&self.rel)
    }

    /// The directory this path is in, from the same anchor (`None` at the anchor itself).
    pub fn parent(&self) -> Option<Under> {
        Some(Under {
            anchor: self.anchor.clone(),
            rel: self.rel.parent()?.to_owned(),
        })
    }

    /// `name` below this path, from the same anchor.
    pub fn join(&self, name: impl AsRef<Path>) -> Under {
        Under {
            anchor: self.anchor.clone(),
            rel: self.rel.join(name),
        }
    }

    /// The descriptor and the path to give a `*at` call: relative to the anchor when it is
    /// open, else the whole path from the working directory's descriptor.
    fn at(&self) -> (BorrowedFd<'_>, std::borrow::Cow<'_, Path>) {
        match &self.anchor.fd {
            Some(fd) => (fd.as_fd(), std::borrow::Cow::Borrowed(&self.rel)),
            None => (AT_FDCWD, std::borrow::Cow::Owned(self.path())),
        }
    }

    /// Opens the file with `flags` (close-on-exec always added), creating it with `mode`
    /// when `flags` say so.
    pub fn open(&self, flags: OFlag, mode: u32) -> std::io::Result<File> {
        let (fd, path) = self.at();
        let mode = Mode::from_bits_truncate(mode);
        let owned = openat(fd, path.as_ref(), flags | OFlag::O_CLOEXEC, mode)?;
        Ok(File::from(owned))
    }

    /// Writes `value` to an existing file (a control file), as `std::fs::write` would.
    pub fn write(&self, value: &str) -> std::io::Result<()> {
        use std::io::Write;
        let mut file = self.open(OFlag::O_WRONLY | OFlag::O_TRUNC, 0)?;
        file.write_all(value.as_bytes())
    }

    /// Reads a small kernel file whole (see [`super::procfs::read_small`]).
    pub fn read_small(&self) -> std::io::Result<String> {
        super::procfs::read_small_from(self.open(OFlag::O_RDONLY, 0)?)
    }

    /// Whether the path exists (following symbolic links, as `Path::exists`).
    pub fn exists(&self) -> bool {
        self.open(OFlag::O_PATH, 0).is_ok()
    }

    /// Makes the directory (`mode` before the umask).
    pub fn mkdir(&self, mode: u32) -> std::io::Result<()> {
        let (fd, path) = self.at();
        Ok(mkdirat(fd, path.as_ref(), Mode::from_bits_truncate(mode))?)
    }

    /// Removes the (empty) directory.
    pub fn rmdir(&self) -> std::io::Result<()> {
        let (fd, path) = self.at();
        Ok(unlinkat(fd, path.as_ref(), UnlinkatFlags::RemoveDir)?)
    }

    /// The permission bits (`0o7777`), following a symbolic link as [`Under::chmod`] does.
    pub fn mode(&self) -> std::io::Result<u32> {
        let (fd, path) = self.at();
        let stat = nix::sys::stat::fstatat(fd, path.as_ref(), AtFlags::empty())?;
        Ok(stat.st_mode & 0o7777)
    }

    /// Sets the mode (following a symbolic link, as `std::fs::set_permissions`).
    pub fn chmod(&self, mode: u32) -> std::io::Result<()> {
        let (fd, path) = self.at();
        let mode = Mode::from_bits_truncate(mode);
        Ok(fchmodat(
            fd,
            path.as_ref(),
            mode,
            FchmodatFlags::FollowSymlink,
        )?)
    }

    /// Gives it to `uid` and `gid` (following a symbolic link, as `std::os::unix::fs::chown`).
    pub fn chown(&self, uid: u32, gid: u32) -> std::io::Result<()> {
        let (fd, path) = self.at();
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        Ok(fchownat(fd, path.as_ref(), uid, gid, AtFlags::empty())?)
    }

    /// Removes the file (not following a symbolic link: the link itself goes).
    pub fn unlink(&self) -> std::io::Result<()> {
        let (fd, path) = self.at();
        Ok(unlinkat(fd, path.as_ref(), UnlinkatFlags::NoRemoveDir)?)
    }

    /// Renames this path to `to`.
    pub fn rename(&self, to: &Under) -> std::io::Result<()> {
        let (from_fd, from) = self.at();
        let (to_fd, to) = to.at();
        Ok(renameat(from_fd, from.as_ref(), to_fd, to.as_ref())?)
    }
}

impl PartialEq for Under {
    fn eq(&self, other: &Self) -> bool {
        self.path() == other.path()
    }
}

impl Eq for Under {}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-anchor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn an_open_anchor_and_a_path_alone_do_the_same() {
        for opened in [true, false] {
            let root = scratch(&format!("same-{opened}"));
            let anchor = if opened {
                Anchor::open(&root)
            } else {
                Anchor::unopened(&root)
            };
            assert_eq!(anchor.fd.is_some(), opened);
            let dir = anchor.under("a");
            dir.mkdir(0o755).unwrap();
            assert_eq!(
                dir.mkdir(0o755).unwrap_err().kind(),
                std::io::ErrorKind::AlreadyExists
            );
            let file = dir.join("f");
            assert!(!file.exists());
            file.open(OFlag::O_WRONLY | OFlag::O_CREAT, 0o600).unwrap();
            file.write("hello").unwrap();
            assert_eq!(file.read_small().unwrap(), "hello");
            assert_eq!(std::fs::read_to_string(root.join("a/f")).unwrap(), "hello");
            assert_eq!(file.path(), root.join("a/f"));
            dir.rename(&anchor.under("b")).unwrap();
            assert!(root.join("b/f").exists() && !root.join("a").exists());
            assert!(anchor.under("b").rmdir().is_err(), "not empty");
            std::fs::remove_file(root.join("b/f")).unwrap();
            anchor.under("b").rmdir().unwrap();
            assert_eq!(
                anchor.under("b").rmdir().unwrap_err().kind(),
                std::io::ErrorKind::NotFound
            );
            std::fs::remove_dir_all(&root).unwrap();
        }
    }

    #[test]
    fn a_directory_that_cannot_be_opened_is_anchored_by_its_path() {
        let root = scratch("missing");
        let missing = root.join("not-yet");
        let anchor = Anchor::open(&missing);
        assert!(anchor.fd.is_none());
        std::fs::create_dir(&missing).unwrap();
        anchor.under("x").mkdir(0o755).unwrap();
        assert!(missing.join("x").is_dir());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
