//! The known membership on disk (`DATA_DIR/known-members`): the node names this node counts
//! as its cluster, so that a restarted node knows how big its cluster was before it hears from
//! anyone (`docs/faults.md`, "The quorum").
//!
//! One name per line, sorted; written to a temporary file, renamed, and the directory synced,
//! so a crash or a power loss leaves the old list or the new one, and a list once saved stays.
//! A restarted agent with no `--join` whose list holds only itself acts at once
//! (`Scheduler::knew_no_peer`): a list that went back to an older, smaller one after a power
//! loss would let it skip the catch-up it owes its peers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use shoal_gossip::CompactString;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The file's name in the data dir.
pub const FILE_NAME: &str = "known-members";

/// Where the known membership of the agent with this data dir lives.
#[must_use]
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Replaces the file with `names`.
pub fn save(path: &Path, names: &[CompactString]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut body = String::with_capacity(names.len() * 16);
    for name in names {
        body.push_str(name);
        body.push('\n');
    }
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(body.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))?;
    Ok(())
}

/// How long a failed save waits before it is tried again (with the newest list by then).
const RETRY: Duration = Duration::from_secs(1);

/// A known membership to save: its version and its names.
type Known = Option<(u64, Vec<CompactString>)>;

/// Saves the known membership off the gossip task, on the blocking pool: each save is two
/// `fsync`s (the file, its directory), which the gossip task (probes, acks, the membership's
/// timers) must not wait for, and a join of 32 agents changes the list up to 31 times in
/// 0.3 s at each of them. Only the newest list offered is written: versions offered while a
/// save runs are folded into the next one. A failed save (a full disk) is logged once per
/// version and tried again a second later until one succeeds; [`Saver::finish`] makes one
/// last try of the newest list, so an agent that stops leaves its last membership on disk.
#[derive(Debug)]
pub struct Saver {
    offers: watch::Sender<Known>,
    task: JoinHandle<()>,
}

impl Saver {
    /// Starts the saver of the file at `path`.
    #[must_use]
    pub fn spawn(path: PathBuf) -> Saver {
        let (offers, rx) = watch::channel(None);
        let task = tokio::spawn(save_newest(path, rx));
        Saver { offers, task }
    }

    /// Asks for `names` (the known membership at `version`) to be saved.
    pub fn offer(&self, version: u64, names: Vec<CompactString>) {
        self.offers.send_replace(Some((version, names)));
    }

    /// Saves what is still unsaved (one try if it fails) and ends.
    pub async fn finish(self) {
        drop(self.offers);
        let _ = self.task.await;
    }
}

async fn save_newest(path: PathBuf, mut offers: watch::Receiver<Known>) {
    let mut saved: Option<u64> = None;
    let mut warned: Option<u64> = None;
    loop {
        // A closed channel still holds the newest offer: it gets its save below.
        let open = offers.changed().await.is_ok();
        loop {
            let Some((version, names)) = offers.borrow_and_update().clone() else {
                break;
            };
            if saved == Some(version) {
                break;
            }
            let to = path.clone();
            let result = tokio::task::spawn_blocking(move || save(&to, &names))
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("the save did not complete: {e}")));
            match result {
                Ok(()) => {
                    saved = Some(version);
                    warned = None;
                    break;
                }
                Err(e) => {
                    if warned != Some(version) {
                        tracing::warn!(error = %format!("{e:#}"), "cannot save the known membership; trying again");
                        warned = Some(version);
                    }
                    if offers.has_changed().is_err() {
                        // Stopping: one try of the newest list, which may be newer than the
                        // one that failed (offered while it was being written).
                        if offers.borrow().as_ref().map(|k| k.0) == Some(version) {
                            return;
                        }
                        continue;
                    }
                    // Until a second has passed or a newer list (or the stop) comes.
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => {}
                        _ = offers.changed() => {}
                    }
                }
            }
        }
        if !open {
            return;
        }
    }
}

/// The names saved at `path`; none when the file does not exist (a first start). Lines that
/// are not a valid node name are skipped with a warning: the list only ever makes the quorum
/// stricter, so a damaged file must not stop the agent.
pub fn load(path: &Path) -> anyhow::Result<Vec<CompactString>> {
    let body = match std::fs::read_to_string(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut names = Vec::new();
    for (i, line) in body.lines().enumerate() {
        let name = line.trim();
        if name.is_empty() {
            continue;
        }
        if name.len() > crate::agent::MAX_NODE_NAME_BYTES || name.chars().any(char::is_control) {
            tracing::warn!(file = %path.display(), line = i + 1, "skipping a line that is no node name");
            continue;
        }
        names.push(CompactString::from(name));
    }
    Ok(names)
}

/// Whether the file at `path` says this node (`own`) knew no other member: it exists and
/// names nobody else. Empty counts (a node that stopped cleanly left, and a leaving node's list
/// drops itself); a missing file, one that cannot be read or one with a line that is no node
/// name says nothing, and is `false`.
#[must_use]
pub fn lists_no_peer(path: &Path, own: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|body| {
        body.lines()
            .map(str::trim)
            .all(|name| name.is_empty() || name == own)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<CompactString> {
        list.iter().map(|n| CompactString::from(*n)).collect()
    }

    #[tokio::test]
    async fn the_saver_writes_the_newest_list_and_retries_a_failed_save() {
        let dir = std::env::temp_dir().join(format!("shoal-known-saver-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // The directory is missing: the first saves fail until it exists.
        let path = path_in(&dir);
        let saver = Saver::spawn(path.clone());
        saver.offer(1, names(&["n1"]));
        saver.offer(2, names(&["n1", "n2"]));
        // Let the saver try (and fail) before the directory appears.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(load(&path).unwrap().is_empty(), "nothing saved yet");
        std::fs::create_dir_all(&dir).unwrap();
        saver.offer(3, names(&["n1", "n2", "n3"]));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while load(&path).unwrap() != names(&["n1", "n2", "n3"]) {
            assert!(
                std::time::Instant::now() < deadline,
                "the newest list was saved once the directory existed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Offered just before the end: `finish` saves it.
        saver.offer(4, names(&["n1", "n3"]));
        tokio::time::timeout(Duration::from_secs(10), saver.finish())
            .await
            .expect("finish returns");
        assert_eq!(load(&path).unwrap(), names(&["n1", "n3"]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_saver_that_cannot_save_still_finishes() {
        let dir = std::env::temp_dir().join(format!("shoal-known-nodir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let saver = Saver::spawn(path_in(&dir));
        saver.offer(1, names(&["n1"]));
        tokio::time::timeout(Duration::from_secs(10), saver.finish())
            .await
            .expect("one last try, then the saver ends");
        assert!(!dir.exists());
    }

    #[test]
    fn only_a_list_that_names_nobody_else_says_no_peer() {
        let dir = std::env::temp_dir().join(format!("shoal-known-peer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = path_in(&dir);
        let _ = std::fs::remove_file(&path);
        assert!(!lists_no_peer(&path, "n1"), "a missing file says nothing");
        save(&path, &[]).unwrap();
        assert!(lists_no_peer(&path, "n1"), "empty: it left, alone");
        save(&path, &["n1".into()]).unwrap();
        assert!(lists_no_peer(&path, "n1"));
        save(&path, &["n1".into(), "n2".into()]).unwrap();
        assert!(!lists_no_peer(&path, "n1"));
        save(&path, &["n2".into()]).unwrap();
        assert!(!lists_no_peer(&path, "n1"));
        std::fs::write(&path, "n1\n\u{7}bad\n").unwrap();
        assert!(!lists_no_peer(&path, "n1"), "a damaged line says nothing");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_round_trip_and_a_missing_file_is_empty() {
        let dir = std::env::temp_dir().join(format!("shoal-known-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = path_in(&dir);
        let _ = std::fs::remove_file(&path);
        assert!(load(&path).unwrap().is_empty());
        let names: Vec<CompactString> = ["n1", "n2", "n3"].map(CompactString::from).to_vec();
        save(&path, &names).unwrap();
        assert_eq!(load(&path).unwrap(), names);
        std::fs::write(&path, format!("n1\n\n{}\nn\u{7}x\nn2\n", "x".repeat(300))).unwrap();
        assert_eq!(
            load(&path).unwrap(),
            ["n1", "n2"].map(CompactString::from).to_vec()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
