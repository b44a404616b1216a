//! The one conversion between a scheduler attempt and its name on this host's disk, both ways.
//!
//! The executor runs [`AttemptId`]s. On the host an attempt is named by its *job key*
//! `"{job}.{incarnation}.{placer}"` plus its slot and attempt: the task directory is
//! `tasks/<job key>/<slot>/<attempt>`, the task cgroup `<job key>.<slot>.<attempt>`, the pid
//! record holds `{"job": <job key>, "slot": .., "attempt": ..}` under `task`, and the task sees
//! the job key as `SHOAL_JOB`. A restarted agent reads these names back to learn which attempts
//! its processes are, so the format is fixed: an agent must adopt the tasks an older binary
//! started. Job ids contain no `.` and incarnations are decimal digits, so the job key reads
//! back from the left (the placer, a node name, may contain dots); [`disk_name`] refuses
//! attempts whose name would not read back, and [`attempt_id`] refuses names that do not come
//! from [`disk_name`], so the two are inverse wherever they succeed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shoal_scheduler::AttemptId;

use super::is_safe_name;

/// Longest job key `{job}.{incarnation}.{placer}`, in bytes: it names a directory and heads a
/// cgroup name. The agent's limits keep every attempt under it: job ids up to 63 bytes, node
/// names up to 63 (`agent::MAX_NODE_NAME_BYTES`) and 20 digits of incarnation make 148.
pub const MAX_JOB_KEY_BYTES: usize = 160;

/// An attempt's name on disk. Serialized exactly as the pid records of every earlier agent
/// (`{"job":"web.42.n1","slot":3,"attempt":2}`); made only by [`disk_name`] or read from a
/// pid record (then checked by [`attempt_id`] before the executor trusts it as an attempt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DiskName {
    /// `{job}.{incarnation}.{placer}`.
    #[serde(rename = "job")]
    job_key: String,
    slot: u32,
    attempt: u32,
}

/// Why an attempt has no name on disk, or a name on disk is no attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The job id would not read back from the job key.
    #[error("job id `{0}` must be non-empty and contain no `.` to name a task directory")]
    JobId(String),
    /// The job key is over [`MAX_JOB_KEY_BYTES`].
    #[error(
        "job key `{key}` is {len} bytes, over the {MAX_JOB_KEY_BYTES}-byte limit on a task's \
         job key ({{job}}.{{incarnation}}.{{node}})"
    )]
    TooLong {
        /// The job key (escaped).
        key: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The job key has a character that is unsafe in a path or cgroup name.
    #[error("job key `{0}` must be of A-Z a-z 0-9 _ . - and start with a letter or digit")]
    Characters(String),
    /// The name on disk is not of the form `disk_name` writes.
    #[error("job key `{0}` is not {{job}}.{{incarnation}}.{{node}} with a decimal incarnation")]
    NotAnAttempt(String),
}

/// The name on disk of `id`: its job key `{job}.{incarnation}.{placer}`, slot and attempt.
pub(crate) fn disk_name(id: &AttemptId) -> Result<DiskName, NameError> {
    if id.job.is_empty() || id.job.contains('.') {
        return Err(NameError::JobId(id.job.escape_default().to_string()));
    }
    let job_key = format!("{}.{}.{}", id.job, id.incarnation, id.placer);
    check_job_key(&job_key)?;
    Ok(DiskName {
        job_key,
        slot: id.slot,
        attempt: id.attempt,
    })
}

/// The attempt `name` stands for: the inverse of [`disk_name`], refusing every name it would
/// not have written (so that the attempt names the same directory, cgroup and pid record).
pub(crate) fn attempt_id(name: &DiskName) -> Result<AttemptId, NameError> {
    check_job_key(&name.job_key)?;
    let not_an_attempt = || NameError::NotAnAttempt(name.job_key.escape_default().to_string());
    let (job, rest) = name.job_key.split_once('.').ok_or_else(not_an_attempt)?;
    let (incarnation, placer) = rest.split_once('.').ok_or_else(not_an_attempt)?;
    let canonical = incarnation.bytes().all(|b| b.is_ascii_digit())
        && (incarnation == "0" || !incarnation.starts_with('0'));
    let incarnation = incarnation
        .parse()
        .ok()
        .filter(|_| canonical)
        .ok_or_else(not_an_attempt)?;
    Ok(AttemptId {
        job: job.into(),
        incarnation,
        slot: name.slot,
        attempt: name.attempt,
        placer: placer.into(),
    })
}

/// At most [`MAX_JOB_KEY_BYTES`] of `[A-Za-z0-9_.-]`, starting with a letter or digit: one
/// path component (no `/`, no `..`, no leading dot) and part of a cgroup name.
fn check_job_key(key: &str) -> Result<(), NameError> {
    if key.len() > MAX_JOB_KEY_BYTES {
        return Err(NameError::TooLong {
            key: key.escape_default().to_string(),
            len: key.len(),
        });
    }
    if !is_safe_name(key, MAX_JOB_KEY_BYTES) {
        return Err(NameError::Characters(key.escape_default().to_string()));
    }
    Ok(())
}

impl DiskName {
    /// The name whose task directory is `<job_key>/<slot>/<attempt>`, as found on disk: not
    /// checked, so [`attempt_id`] decides whether it is an attempt's.
    pub(crate) fn from_dir(job_key: &str, slot: u32, attempt: u32) -> Self {
        DiskName {
            job_key: job_key.to_string(),
            slot,
            attempt,
        }
    }

    /// `{job}.{incarnation}.{placer}`: what the task sees as `SHOAL_JOB`.
    pub(crate) fn job_key(&self) -> &str {
        &self.job_key
    }

    /// Slot within the job (`SHOAL_SLOT`).
    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    /// Attempt of that slot (`SHOAL_ATTEMPT`).
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The task directory: `<tasks_dir>/<job key>/<slot>/<attempt>`.
    pub(crate) fn dir(&self, tasks_dir: &Path) -> PathBuf {
        tasks_dir
            .join(&self.job_key)
            .join(self.slot.to_string())
            .join(self.attempt.to_string())
    }

    /// The task cgroup's name, `<job key>.<slot>.<attempt>`: unique because slot and attempt
    /// are numbers read from the right.
    pub(crate) fn cgroup(&self) -> String {
        format!("{}.{}.{}", self.job_key, self.slot, self.attempt)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(job: &str, incarnation: u64, slot: u32, attempt: u32, placer: &str) -> AttemptId {
        AttemptId {
            job: job.into(),
            incarnation,
            slot,
            attempt,
            placer: placer.into(),
        }
    }

    fn name(job_key: &str, slot: u32, attempt: u32) -> DiskName {
        DiskName {
            job_key: job_key.to_owned(),
            slot,
            attempt,
        }
    }

    /// The names every earlier agent wrote, byte for byte: directory, cgroup, pid record.
    #[test]
    fn names_on_disk_are_those_of_earlier_agents() {
        let task = id("web-1", 42, 3, 2, "node-a.rack_1");
        let disk = disk_name(&task).unwrap();
        assert_eq!(disk.job_key(), "web-1.42.node-a.rack_1");
        assert_eq!(
            disk.dir(Path::new("/d/tasks")),
            Path::new("/d/tasks/web-1.42.node-a.rack_1/3/2")
        );
        assert_eq!(disk.cgroup(), "web-1.42.node-a.rack_1.3.2");
        assert_eq!(
            serde_json::to_string(&disk).unwrap(),
            r#"{"job":"web-1.42.node-a.rack_1","slot":3,"attempt":2}"#
        );
        assert_eq!(attempt_id(&disk), Ok(task));
    }

    #[test]
    fn the_longest_job_id_and_node_name_still_name_a_task() {
        // The agent takes node names up to 63 bytes and specs take ids up to 63.
        let placer = "n".repeat(crate::agent::MAX_NODE_NAME_BYTES);
        let task = id(&"j".repeat(63), u64::MAX, u32::MAX, u32::MAX, &placer);
        let disk = disk_name(&task).unwrap();
        assert!(disk.job_key().len() <= MAX_JOB_KEY_BYTES);
        assert_eq!(attempt_id(&disk), Ok(task));
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let err = disk_name(&id(&"j".repeat(100), 1, 0, 0, &"n".repeat(60))).unwrap_err();
        assert!(
            matches!(err, NameError::TooLong { len: 163, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("160-byte limit"), "{err}");
        for job in ["", "a.b", "../etc"] {
            let err = disk_name(&id(job, 1, 0, 0, "n")).unwrap_err();
            assert_eq!(err, NameError::JobId(job.to_owned()));
        }
        for job in ["a/b", "x y", "_x", "é"] {
            let err = disk_name(&id(job, 1, 0, 0, "n")).unwrap_err();
            assert!(matches!(err, NameError::Characters(_)), "{job:?}: {err}");
        }
        let err = disk_name(&id("j", 1, 0, 0, "n/../x")).unwrap_err();
        assert!(matches!(err, NameError::Characters(_)), "{err}");
        for key in [
            "nodots",
            "j.5",
            "j..n",
            "j.05.n",
            "j.x.n",
            "j.99999999999999999999.n",
        ] {
            let err = attempt_id(&name(key, 0, 1)).unwrap_err();
            assert!(matches!(err, NameError::NotAnAttempt(_)), "{key}: {err}");
        }
        assert_eq!(
            attempt_id(&name("j.0.", 0, 1)),
            Ok(id("j", 0, 0, 1, "")),
            "an empty placer reads back as written"
        );
        for key in [".5.n", "j.+5.n", "j.5.n/x"] {
            let err = attempt_id(&name(key, 0, 1)).unwrap_err();
            assert!(matches!(err, NameError::Characters(_)), "{key}: {err}");
        }
        let err = attempt_id(&name(&format!("j.5.{}", "n".repeat(160)), 0, 1)).unwrap_err();
        assert!(matches!(err, NameError::TooLong { len: 164, .. }), "{err}");
    }

    fn any_attempt() -> impl Strategy<Value = AttemptId> {
        (
            "[a-z0-9A-Z_.-]{0,70}",
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            "[a-zA-Z0-9_./-]{0,70}",
        )
            .prop_map(|(job, incarnation, slot, attempt, placer)| {
                id(&job, incarnation, slot, attempt, &placer)
            })
    }

    fn valid_attempt() -> impl Strategy<Value = AttemptId> {
        (
            "[a-z0-9][a-z0-9_-]{0,62}",
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            "[a-zA-Z0-9_.-]{0,63}",
        )
            .prop_map(|(job, incarnation, slot, attempt, placer)| {
                id(&job, incarnation, slot, attempt, &placer)
            })
    }

    proptest! {
        /// Every attempt the agent can be asked to run (job ids and node names within their
        /// limits) has a name on disk, and that name reads back as the same attempt.
        #[test]
        fn valid_attempts_round_trip(task in valid_attempt()) {
            let disk = disk_name(&task).unwrap();
            prop_assert!(disk.job_key().len() <= MAX_JOB_KEY_BYTES);
            prop_assert_eq!(attempt_id(&disk), Ok(task));
        }

        /// Wherever `disk_name` succeeds, `attempt_id` inverts it.
        #[test]
        fn disk_names_read_back(task in any_attempt()) {
            if let Ok(disk) = disk_name(&task) {
                prop_assert_eq!(attempt_id(&disk), Ok(task));
            }
        }

        /// Wherever `attempt_id` succeeds, `disk_name` gives back the very name read: a name on
        /// disk read as an attempt names the same directory, cgroup and record again.
        #[test]
        fn names_read_from_disk_are_written_back_the_same(
            key in "[a-z0-9_+-]{0,4}(\\.[a-z0-9_+-]{0,4}){0,4}|[a-z]{1,8}\\.[0-9]{1,22}\\.[a-z.]{0,8}",
            slot in any::<u32>(),
            attempt in any::<u32>(),
        ) {
            let read = name(&key, slot, attempt);
            if let Ok(task) = attempt_id(&read) {
                prop_assert_eq!(disk_name(&task), Ok(read));
            }
        }
    }
}
