//! The agent's durable state in one redb file under the data dir.
//!
//! Two kinds of writes, with different costs:
//! - **accepted submissions** (`put_job`): small, written and committed before a submission is
//!   acknowledged, so an acknowledged job survives a crash of the accepting node;
//! - **table snapshots** (`put_snapshot`): the whole replicated state, written in the
//!   background at a bounded rate; on restart the snapshot is loaded and every accepted job
//!   newer than it is applied again.
//!
//! A failed write (a full disk, say) is returned as an error naming the file; nothing already
//! committed is touched, because redb commits are atomic.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("accepted_jobs");
const SNAPSHOT_KEY: &str = "scheduler";

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

/// The redb-backed store.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) `data_dir/state.redb`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join("state.redb");
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let store = Store { db, path };
        // Create the tables so readers never see "table does not exist".
        store.write("creating tables", |tx| {
            tx.open_table(SNAPSHOT)?;
            tx.open_table(JOBS)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn err(&self, what: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            what,
            reason: e.to_string(),
        }
    }

    fn write(
        &self,
        what: &'static str,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(what, e))?;
        body(&tx).map_err(|e| self.err(what, e))?;
        tx.commit().map_err(|e| self.err(what, e))
    }

    /// Durably records an accepted submission (`id` → encoded spec with its version).
    pub fn put_job(&self, id: &str, encoded: &[u8]) -> Result<(), StoreError> {
        self.write("recording an accepted job", |tx| {
            tx.open_table(JOBS)?.insert(id, encoded)?;
            Ok(())
        })
    }

    /// Forgets an accepted submission (after it is garbage-collected from the tables).
    pub fn remove_job(&self, id: &str) -> Result<(), StoreError> {
        self.write("removing an accepted job", |tx| {
            tx.open_table(JOBS)?.remove(id)?;
            Ok(())
        })
    }

    /// Every accepted submission, by id.
    pub fn jobs(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| self.err("reading jobs", e))?;
        let table = tx
            .open_table(JOBS)
            .map_err(|e| self.err("reading jobs", e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err("reading jobs", e))? {
            let (k, v) = entry.map_err(|e| self.err("reading jobs", e))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Replaces the snapshot of the replicated tables.
    pub fn put_snapshot(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.write("writing the table snapshot", |tx| {
            tx.open_table(SNAPSHOT)?.insert(SNAPSHOT_KEY, bytes)?;
            Ok(())
        })
    }

    /// The last snapshot written, if any.
    pub fn snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| self.err("reading the snapshot", e))?;
        let table = tx
            .open_table(SNAPSHOT)
            .map_err(|e| self.err("reading the snapshot", e))?;
        let value = table
            .get(SNAPSHOT_KEY)
            .map_err(|e| self.err("reading the snapshot", e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_and_snapshots_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("shoal-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let s = Store::open(&dir).unwrap();
            assert_eq!(s.snapshot().unwrap(), None);
            s.put_job("web", b"spec-1").unwrap();
            s.put_job("batch", b"spec-2").unwrap();
            s.put_snapshot(b"tables").unwrap();
            s.remove_job("batch").unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(
            s.jobs().unwrap(),
            vec![("web".to_string(), b"spec-1".to_vec())]
        );
        assert_eq!(s.snapshot().unwrap().as_deref(), Some(&b"tables"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
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
