//! Pid records: which process a task is, persisted so that a restarted agent and the watchdog
//! can find it after the agent died.
//!
//! A record names a process by pid, process group, start time and boot id: a pid alone does not
//! name a process across time, because the kernel reuses pids. The file lives in the task's
//! directory, which the task user may write to, so a record is trusted only when it is a regular
//! file (not a symlink) owned by the agent's user and was created by the agent with `O_EXCL`: a
//! task cannot forge a record that makes the agent or the watchdog signal a process that is not
//! the task's.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

#[cfg(test)]
use super::anchor::Anchor;
use super::anchor::Under;
use super::disk_name::DiskName;
use super::procfs;

/// A record is ~150 bytes; anything much larger is not one of ours.
const MAX_RECORD_BYTES: u64 = 4096;

/// What the pid file of a task holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PidRecord {
    /// The attempt's name on disk (the format of every earlier agent: a restarted agent reads
    /// it back with `disk_name::attempt_id`; the watchdog never needs it).
    pub task: DiskName,
    pub pid: u32,
    pub pgid: u32,
    pub start_time_ticks: Option<u64>,
    pub boot_id: Option<String>,
}

impl PidRecord {
    /// Same boot, same pid, same start time, not a zombie: the very process that was started.
    pub fn leader_alive(&self, boot_id: Option<&str>) -> bool {
        self.same_boot(boot_id)
            && self
                .start_time_ticks
                .is_some_and(|t| procfs::is_same_live_process(self.pid, t))
    }

    /// Whether the task's process group still has members that are the task's: its leader is
    /// alive, or the leader has exited (it is gone, or a zombie nobody reaped, as when the agent
    /// is stopped) but members of its group remain. Both are safe from pid reuse: the kernel
    /// keeps a pid number allocated while any process, a zombie too, has it as its pid or its
    /// group id, so a group `pgid` whose leader number is free, or is the recorded leader's
    /// zombie, is the old group.
    pub fn group_alive(&self, boot_id: Option<&str>) -> bool {
        if self.leader_alive(boot_id) {
            return true;
        }
        let leader_exited = match procfs::stat(self.pgid) {
            None => true,
            Some(leader) => {
                !leader.is_live()
                    && self.pid == self.pgid
                    && self.start_time_ticks == Some(leader.start_time)
            }
        };
        self.same_boot(boot_id) && leader_exited && !procfs::group_members(self.pgid).is_empty()
    }

    fn same_boot(&self, boot_id: Option<&str>) -> bool {
        boot_id.is_some() && self.boot_id.as_deref() == boot_id
    }
}

/// Removes a stale `pid` file of the directory before a spawn (unlink does not follow links).
pub(crate) fn remove(dir: &Path) -> Result<(), String> {
    let path = dir.join("pid");
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(format!(
            "cannot remove stale pid file {}: {e}",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// Ends the task's record: empties the agent's own `pid` file in place, or unlinks whatever
/// else is there. An empty record names no process ([`all`] skips it), just as a missing one.
///
/// Emptying instead of unlinking keeps the inode: on ext4 without a journal, as on this
/// project's test machines, every inode freed in the last ~30 s is skipped by the next
/// allocations (`recently_deleted`), so one unlink per task made each new task directory and
/// log file walk past every record freed before it (13 % of a busy agent's launch threads at
/// 500 tasks/s; `BENCHMARKS.md`). The file is opened without following a link and without
/// blocking, and emptied only through that descriptor once it is known to be a regular file
/// of the agent's user with one link: the directory belongs to the task user, who could have
/// put a hard link to some other file of the agent's under this name.
pub(crate) fn clear_in(dir: &Under, owner_uid: u32) -> std::io::Result<()> {
    let path = dir.join("pid");
    let opened = path.open(OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK, 0);
    match opened {
        Ok(file) => {
            let meta = file.metadata()?;
            if meta.is_file() && meta.uid() == owner_uid && meta.nlink() == 1 {
                return file.set_len(0);
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    match path.unlink() {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `pid` in one `write` of ~150 bytes to a file that must not exist yet (`O_EXCL`, no
/// symlink followed): if the task created one first, the launch fails instead of trusting it.
/// No temp file and rename: once `write` returns, an agent crash cannot tear the record, and a
/// power loss that could also kills the process it names (and changes the boot id). Inode
/// creation is the main per-task cost on ext4.
pub(crate) fn write_in(dir: &Under, record: &PidRecord) -> Result<(), String> {
    let file = dir.join("pid");
    let path = || file.path();
    let bytes = serde_json::to_vec(record).map_err(|e| format!("cannot encode pid record: {e}"))?;
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    let mut opened = file
        .open(flags, 0o644)
        .map_err(|e| format!("cannot create pid file {}: {e}", path().display()))?;
    opened
        .write_all(&bytes)
        .map_err(|e| format!("cannot write pid file {}: {e}", path().display()))
}

/// [`clear_in`] by the directory's path (tests).
#[cfg(test)]
pub(crate) fn clear(dir: &Path, owner_uid: u32) -> std::io::Result<()> {
    clear_in(&Anchor::unopened(dir).under(""), owner_uid)
}

/// [`write_in`] by the directory's path (tests).
#[cfg(test)]
pub(crate) fn write(dir: &Path, record: &PidRecord) -> Result<(), String> {
    write_in(&Anchor::unopened(dir).under(""), record)
}

/// Reads a record, trusting it only if it is a regular file owned by `owner_uid`.
pub(crate) fn read(path: &Path, owner_uid: u32) -> Result<PidRecord, String> {
    let shown = path.display();
    let mut file = open_regular(path).map_err(|e| format!("{shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if meta.uid() != owner_uid {
        return Err(format!(
            "{shown} is owned by uid {}, not by the agent (uid {owner_uid}): ignored",
            meta.uid()
        ));
    }
    if meta.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "{shown} is {} bytes, too large for a pid record",
            meta.len()
        ));
    }
    let mut text = Vec::new();
    file.read_to_end(&mut text)
        .map_err(|e| format!("{shown}: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| format!("{shown}: unreadable pid record: {e}"))
}

/// Opens `path` for reading without following a symlink and without blocking on a FIFO, and
/// refuses anything but a regular file. Task directories are writable by the task user, so the
/// agent (often root) opens what it reads there this way.
pub(crate) fn open_regular(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "not a regular file",
        ))
    }
}

/// `tasks/*/*/*/pid` under `tasks_dir` that hold a record (not emptied by [`clear_in`]), sorted.
pub(crate) fn all(tasks_dir: &Path) -> Vec<PathBuf> {
    let mut level = vec![tasks_dir.to_owned()];
    for _ in 0..3 {
        level = level.iter().flat_map(|d| subdirs(d)).collect();
    }
    let mut files: Vec<PathBuf> = level
        .into_iter()
        .map(|d| d.join("pid"))
        .filter(|p| {
            p.symlink_metadata()
                .is_ok_and(|m| m.is_file() && m.len() > 0)
        })
        .collect();
    files.sort();
    files
}

/// Subdirectories, not following symlinks (a task could plant one in its own directory).
pub(crate) fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::disk_name::disk_name;
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-pidfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record() -> PidRecord {
        let me = std::process::id();
        PidRecord {
            task: disk_name(&shoal_scheduler::AttemptId {
                job: "j".into(),
                incarnation: 7,
                slot: 1,
                attempt: 2,
                placer: "n".into(),
            })
            .unwrap(),
            pid: me,
            pgid: me,
            start_time_ticks: procfs::stat(me).map(|s| s.start_time),
            boot_id: procfs::boot_id(),
        }
    }

    fn own_uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn a_record_round_trips_and_is_never_overwritten() {
        let dir = scratch("roundtrip");
        let r = record();
        write(&dir, &r).unwrap();
        assert_eq!(read(&dir.join("pid"), own_uid()).unwrap(), r);
        let err = write(&dir, &r).unwrap_err();
        assert!(err.contains("cannot create pid file"), "{err}");
        assert!(r.leader_alive(procfs::boot_id().as_deref()));
        assert!(!r.leader_alive(Some("another-boot")));
        remove(&dir).unwrap();
        remove(&dir).unwrap();
        assert_eq!(all(&dir), Vec::<PathBuf>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn forged_records_are_refused() {
        let dir = scratch("forged");
        // Owned by someone else (as far as the check knows): refused, naming the owner.
        write(&dir, &record()).unwrap();
        let err = read(&dir.join("pid"), own_uid() + 1).unwrap_err();
        assert!(err.contains("not by the agent"), "{err}");
        // A symlink to a real record is not followed.
        let other = scratch("forged-target");
        write(&other, &record()).unwrap();
        std::fs::remove_file(dir.join("pid")).unwrap();
        std::os::unix::fs::symlink(other.join("pid"), dir.join("pid")).unwrap();
        assert!(read(&dir.join("pid"), own_uid()).is_err());
        assert!(all(&dir).is_empty());
        // Garbage is an error, not a panic.
        std::fs::remove_file(dir.join("pid")).unwrap();
        std::fs::write(dir.join("pid"), b"{not json").unwrap();
        let err = read(&dir.join("pid"), own_uid()).unwrap_err();
        assert!(err.contains("unreadable pid record"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&other).unwrap();
    }

    #[test]
    fn a_fifo_is_not_read() {
        let dir = scratch("fifo");
        let path = dir.join("pid");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let err = open_regular(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clear_empties_our_record_in_place_and_unlinks_anything_else() {
        let dir = scratch("clear");
        let path = dir.join("pid");
        write(&dir, &record()).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        clear(&dir, own_uid()).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.len(), meta.ino()), (0, inode), "emptied, same inode");
        clear(&dir, own_uid()).unwrap();

        // A name the task user put there is unlinked, and what it points at left alone.
        let other = dir.join("other");
        std::fs::write(&other, b"keep").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&other, &path).unwrap();
        clear(&dir, own_uid()).unwrap();
        assert!(path.symlink_metadata().is_err(), "symlink unlinked");
        std::fs::hard_link(&other, &path).unwrap();
        clear(&dir, own_uid()).unwrap();
        assert!(
            path.symlink_metadata().is_err(),
            "second hard link unlinked"
        );
        assert_eq!(std::fs::read(&other).unwrap(), b"keep");
        // Another user's file is unlinked, not emptied.
        std::fs::write(&path, b"x").unwrap();
        clear(&dir, own_uid() + 1).unwrap();
        assert!(path.symlink_metadata().is_err());
        // Nothing there is fine.
        clear(&dir, own_uid()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn all_skips_emptied_records() {
        let root = scratch("all-empty");
        let live = root.join("a/b/c");
        let ended = root.join("a/b/d");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::create_dir_all(&ended).unwrap();
        write(&live, &record()).unwrap();
        write(&ended, &record()).unwrap();
        clear(&ended, own_uid()).unwrap();
        assert_eq!(all(&root), vec![live.join("pid")]);
        let _ = std::fs::remove_dir_all(&root);
    }
}
