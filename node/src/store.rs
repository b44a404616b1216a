//! The agent's durable state in one redb file under the data dir.
//!
//! Two kinds of writes, with different costs:
//! - **the job log** (`put_job_records`): the scheduler's [`JobRecord`]s — every change to the
//!   jobs table, by job — committed with an fsync before anything acknowledges them
//!   (`docs/faults.md`, "Acknowledgements mean what they say");
//! - **table snapshots** (`put_snapshot`): the whole replicated state, written in the
//!   background at a bounded rate; the same transaction empties the job log, whose records
//!   the snapshot holds. On restart the snapshot is loaded and every logged record joined in.
//!   The snapshot written at a clean shutdown (`put_final_snapshot`) also names the start of
//!   the scheduler that wrote it, its last act: the next start takes that name back
//!   (`take_final_writer`) and writes on as the same actor (`docs/scheduler.md`, "Actors are
//!   per start").
//!
//! A failed write (a full disk, say) is returned as an error naming the file and the cause;
//! nothing already committed is touched, because redb commits are atomic. After a failure the
//! database is reopened on the next call, so the store recovers by itself once the disk has
//! room again (redb refuses every transaction after an I/O error until it is reopened).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use shoal_scheduler::JobRecord;

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const JOB_LOG: TableDefinition<&str, &[u8]> = TableDefinition::new("job_log");
const SNAPSHOT_KEY: &str = "scheduler";
/// In the snapshot table beside the snapshot, only when a clean shutdown wrote it: the start
/// (8 bytes, little-endian) of the scheduler whose last act it was.
const FINAL_WRITER_KEY: &str = "final-writer";

/// Errors of the store; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open the state database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: redb::DatabaseError,
    },
    /// A read or write failed.
    #[error("state database {path}: {what}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
}

/// The redb-backed store. Calls are serialized by a mutex (the scheduler task is the only
/// writer; the lock only guards the reopen after a failure).
#[derive(Debug)]
pub struct Store {
    /// `None` after a failed write: reopened by the next call.
    db: Mutex<Option<Database>>,
    path: PathBuf,
}

impl Store {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (or creates) `data_dir/state.redb`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join("state.redb");
        let db = open_db(&path)?;
        Ok(Store {
            db: Mutex::new(Some(db)),
            path,
        })
    }

    fn err(&self, what: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            what,
            reason: e.to_string(),
        }
    }

    /// Runs `body` on the open database, reopening it first if a previous call failed.
    fn with_db<T>(
        &self,
        what: &'static str,
        body: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let mut slot = self
            .db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(open_db(&self.path)?);
            tracing::info!(path = %self.path.display(), "state database reopened after a failure");
        }
        let db = slot.as_ref().ok_or_else(|| self.err(what, "not open"))?;
        match body(db) {
            Ok(v) => Ok(v),
            Err(e) => {
                // redb refuses everything after an I/O error until reopened: drop the handle
                // so the next call starts afresh.
                *slot = None;
                Err(self.err(what, e))
            }
        }
    }

    fn write(
        &self,
        what: &'static str,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        self.with_db(what, |db| {
            let tx = db.begin_write()?;
            body(&tx)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Durably logs job records, in one fsynced transaction: a record replaces the job's older
    /// one; an empty record deletes it.
    pub fn put_job_records(&self, records: &[JobRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.write("logging job writes", |tx| {
            let mut t = tx.open_table(JOB_LOG)?;
            for r in records {
                if r.bytes.is_empty() {
                    t.remove(r.job.as_str())?;
                } else {
                    t.insert(r.job.as_str(), r.bytes.as_slice())?;
                }
            }
            Ok(())
        })
    }

    /// Every logged job record, by job.
    pub fn job_records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with_db("reading the job log", |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(JOB_LOG)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                out.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// Replaces the snapshot of the replicated tables and empties the job log, whose records
    /// the snapshot holds (take the snapshot after the records were handed out).
    pub fn put_snapshot(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_snapshot_by(bytes, None)
    }

    /// [`Store::put_snapshot`] as the last act of the scheduler start `writer`, in the same
    /// transaction: the snapshot holds every op that start wrote, so the next start may write
    /// on as it ([`Store::take_final_writer`]).
    pub fn put_final_snapshot(&self, bytes: &[u8], writer: u64) -> Result<(), StoreError> {
        self.put_snapshot_by(bytes, Some(writer))
    }

    fn put_snapshot_by(&self, bytes: &[u8], writer: Option<u64>) -> Result<(), StoreError> {
        self.write("writing the table snapshot", |tx| {
            let mut t = tx.open_table(SNAPSHOT)?;
            t.insert(SNAPSHOT_KEY, bytes)?;
            match writer {
                Some(start) => t.insert(FINAL_WRITER_KEY, &start.to_le_bytes()[..])?,
                None => t.remove(FINAL_WRITER_KEY)?,
            };
            drop(t);
            tx.delete_table(JOB_LOG)?;
            tx.open_table(JOB_LOG)?;
            Ok(())
        })
    }

    /// The scheduler start whose last act was the snapshot, if a clean shutdown wrote it,
    /// removed in a committed transaction before this returns: one start may write on as it,
    /// and a start that dies before its own final snapshot leaves nothing for the next.
    pub fn take_final_writer(&self) -> Result<Option<u64>, StoreError> {
        // Read first: most starts find nothing, and need no write (nor its fsync).
        let present = self.with_db("reading the final snapshot's writer", |db| {
            let tx = db.begin_read()?;
            Ok(tx.open_table(SNAPSHOT)?.get(FINAL_WRITER_KEY)?.is_some())
        })?;
        if !present {
            return Ok(None);
        }
        let mut taken = None;
        self.write("taking the final snapshot's writer", |tx| {
            let mut t = tx.open_table(SNAPSHOT)?;
            taken = t
                .remove(FINAL_WRITER_KEY)?
                .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
                .map(u64::from_le_bytes);
            Ok(())
        })?;
        Ok(taken)
    }

    /// The last snapshot written, if any.
    pub fn snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_db("reading the snapshot", |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(SNAPSHOT)?;
            let value = table.get(SNAPSHOT_KEY)?;
            Ok(value.map(|v| v.value().to_vec()))
        })
    }
}

/// Opens the file and creates the tables, so readers never see "table does not exist".
fn open_db(path: &Path) -> Result<Database, StoreError> {
    let db = Database::create(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let create = || -> Result<(), redb::Error> {
        let tx = db.begin_write()?;
        tx.open_table(SNAPSHOT)?;
        tx.open_table(JOB_LOG)?;
        tx.commit()?;
        Ok(())
    };
    create().map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        what: "creating tables",
        reason: e.to_string(),
    })?;
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(job: &str, bytes: &[u8]) -> JobRecord {
        JobRecord {
            job: job.into(),
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn records_and_snapshots_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("shoal-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let s = Store::open(&dir).unwrap();
            assert_eq!(s.snapshot().unwrap(), None);
            s.put_job_records(&[record("web", b"v1"), record("batch", b"b1")])
                .unwrap();
            s.put_job_records(&[record("web", b"v2"), record("batch", b"")])
                .unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(
            s.job_records().unwrap(),
            vec![("web".to_string(), b"v2".to_vec())]
        );
        s.put_snapshot(b"tables").unwrap();
        assert_eq!(s.job_records().unwrap(), vec![], "the snapshot holds them");
        s.put_job_records(&[record("api", b"a1")]).unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.snapshot().unwrap().as_deref(), Some(&b"tables"[..]));
        assert_eq!(s.job_records().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A final snapshot names its writer once: taken by the next start, durably, and gone
    /// after any other snapshot.
    #[test]
    fn a_final_snapshots_writer_is_taken_once() {
        let dir = std::env::temp_dir().join(format!("shoal-final-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let s = Store::open(&dir).unwrap();
            assert_eq!(s.take_final_writer().unwrap(), None);
            s.put_final_snapshot(b"last", 0xfeed_f00d_1234).unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.snapshot().unwrap().as_deref(), Some(&b"last"[..]));
        assert_eq!(s.take_final_writer().unwrap(), Some(0xfeed_f00d_1234));
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.take_final_writer().unwrap(), None, "taken for good");
        s.put_final_snapshot(b"again", 7).unwrap();
        s.put_snapshot(b"periodic").unwrap();
        assert_eq!(
            s.take_final_writer().unwrap(),
            None,
            "a later snapshot is not final"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A full disk: the write fails naming the cause, nothing committed is lost, and the
    /// store works again once there is room, without being reopened by its owner.
    #[test]
    fn a_full_disk_fails_clearly_and_recovers_by_itself() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "SKIPPED a_full_disk_fails_clearly_and_recovers_by_itself: needs root to mount a tmpfs"
            );
            return;
        }
        let dir = std::env::temp_dir().join(format!("shoal-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount a tmpfs on {}", dir.display());
        let result = std::panic::catch_unwind(|| {
            let s = Store::open(&dir).unwrap();
            s.put_job_records(&[record("kept", b"k1")]).unwrap();
            // Fill the disk.
            let filler = dir.join("filler");
            let chunk = vec![7u8; 1 << 20];
            let mut f = std::fs::File::create(&filler).unwrap();
            for _ in 0..64 {
                if std::io::Write::write_all(&mut f, &chunk).is_err() {
                    break;
                }
            }
            drop(f);
            let big = vec![1u8; 2 << 20];
            let err = s
                .put_job_records(&[record("big", &big)])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("state.redb") && err.contains("logging job writes"),
                "{err}"
            );
            assert!(
                s.put_job_records(&[record("next", b"n")]).is_err() || s.job_records().is_ok(),
                "either still full or working"
            );
            std::fs::remove_file(&filler).unwrap();
            s.put_job_records(&[record("after", b"a1")]).unwrap();
            let jobs: Vec<String> = s
                .job_records()
                .unwrap()
                .into_iter()
                .map(|(j, _)| j)
                .collect();
            assert!(
                jobs.contains(&"kept".to_string()) && jobs.contains(&"after".to_string()),
                "{jobs:?}"
            );
            assert!(!jobs.contains(&"big".to_string()), "{jobs:?}");
        });
        let _ = std::process::Command::new("umount").arg(&dir).status();
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }

    #[test]
    fn an_unwritable_place_is_named() {
        let err = Store::open(Path::new("/proc/definitely/not/here"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/proc/definitely/not/here/state.redb"),
            "{err}"
        );
    }
}
