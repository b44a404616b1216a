//! Who tasks run as.
//!
//! An agent running as root runs tasks as an unprivileged user: `nobody` unless the operator
//! names another with `ExecutorConfig::task_user`. A job may name a user of its own only if the
//! operator listed it in `ExecutorConfig::allowed_task_users`. An agent that is not root cannot
//! switch users: its tasks run as its own user, and a job naming any other user is refused.
//! Names are resolved to uid and gid once, when the executor starts, so a typo fails the start
//! rather than every task.

use std::collections::{BTreeMap, BTreeSet};

use nix::unistd::{Uid, User};

/// The default task user of a root agent.
pub(crate) const DEFAULT_TASK_USER: &str = "nobody";

/// A user a task can run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The policy, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Users {
    /// The agent's effective uid.
    pub agent_uid: u32,
    /// The agent's own user name (`None` when it has no passwd entry).
    own_name: Option<String>,
    /// Root agents: who tasks run as by default. Others: `None` (no switch).
    default: Option<Account>,
    /// Root agents: the users jobs may name besides the default.
    allowed: BTreeMap<String, Account>,
}

impl Users {
    /// Resolves the policy for an agent running as `agent_uid`. Errors name the flag to fix.
    pub fn new(
        agent_uid: u32,
        task_user: Option<&str>,
        allowed: &BTreeSet<String>,
    ) -> Result<Users, String> {
        let own_name = lookup_uid(agent_uid).map(|a| a.name);
        if agent_uid != 0 {
            for name in task_user
                .into_iter()
                .chain(allowed.iter().map(String::as_str))
            {
                let account = lookup(name)?;
                if account.uid != agent_uid {
                    return Err(format!(
                        "tasks cannot run as user {name} (uid {}): the agent runs as uid \
                         {agent_uid}, not root, so tasks run as the agent's own user; run the \
                         agent as root to use --task-user or --allow-task-user",
                        account.uid
                    ));
                }
            }
            return Ok(Users {
                agent_uid,
                own_name,
                default: None,
                allowed: BTreeMap::new(),
            });
        }
        // Root in a user namespace that maps no other uid (`unshare --map-root-user`, rootless
        // containers) is not root on the host and cannot switch users: tasks run as the agent,
        // which is what an unprivileged agent does anyway.
        if task_user.is_none()
            && allowed.is_empty()
            && lookup(DEFAULT_TASK_USER).is_ok_and(|a| !uid_is_mapped(a.uid))
        {
            return Ok(Users {
                agent_uid,
                own_name,
                default: None,
                allowed: BTreeMap::new(),
            });
        }
        let default = lookup(task_user.unwrap_or(DEFAULT_TASK_USER)).map_err(|e| {
            if task_user.is_none() {
                format!("{e}; the agent runs as root and runs tasks as {DEFAULT_TASK_USER} by default: create that user or name another with --task-user")
            } else {
                e
            }
        })?;
        let allowed: BTreeMap<String, Account> = allowed
            .iter()
            .map(|name| Ok((name.clone(), lookup(name)?)))
            .collect::<Result<_, String>>()?;
        for account in std::iter::once(&default).chain(allowed.values()) {
            if !uid_is_mapped(account.uid) {
                return Err(format!(
                    "tasks cannot run as user {} (uid {}): that uid is not mapped in the agent's \
                     user namespace, so the agent cannot switch to it",
                    account.name, account.uid
                ));
            }
        }
        Ok(Users {
            agent_uid,
            own_name,
            default: Some(default),
            allowed,
        })
    }

    /// The account a task runs as: `Ok(Some)` switch to it, `Ok(None)` run as the agent's own
    /// user, `Err` the job names a user this agent does not allow (the reason names the flag).
    pub fn for_task(&self, requested: Option<&str>) -> Result<Option<&Account>, String> {
        let Some(name) = requested else {
            return Ok(self.default.as_ref());
        };
        if let Some(default) = self.default.as_ref().filter(|d| d.name == name) {
            return Ok(Some(default));
        }
        if let Some(account) = self.allowed.get(name) {
            return Ok(Some(account));
        }
        if self.default.is_none() && self.own_name.as_deref() == Some(name) {
            return Ok(None);
        }
        Err(not_allowed(name, &self.accepted()))
    }

    /// Whether tasks run as another user than the agent (a root agent).
    pub fn switches(&self) -> bool {
        self.default.is_some()
    }

    /// Every account tasks may run as (the default and the allowed ones).
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.default.iter().chain(self.allowed.values())
    }

    /// The names a job's `user` may take on this agent, sorted.
    pub fn accepted(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.allowed.keys().cloned().collect();
        match &self.default {
            Some(d) => names.extend([d.name.clone()]),
            None => names.extend(self.own_name.clone()),
        }
        names
    }

    /// Who tasks run as when the job names no user, for reports.
    pub fn default_name(&self) -> String {
        match (&self.default, &self.own_name) {
            (Some(d), _) => d.name.clone(),
            (None, Some(own)) => own.clone(),
            (None, None) => format!("uid {}", self.agent_uid),
        }
    }
}

/// Whether `uid` exists in this process's user namespace (`/proc/self/uid_map`); true when the
/// map cannot be read (no user namespaces).
fn uid_is_mapped(uid: u32) -> bool {
    let Ok(map) = std::fs::read_to_string("/proc/self/uid_map") else {
        return true;
    };
    map.lines().any(|line| {
        let mut f = line.split_whitespace().map(str::parse::<u64>);
        match (f.next(), f.next(), f.next()) {
            (Some(Ok(inside)), Some(Ok(_)), Some(Ok(count))) => {
                (inside..inside.saturating_add(count)).contains(&u64::from(uid))
            }
            _ => false,
        }
    })
}

/// The first directory on the way to `dir` (`dir` included) that `account` may not enter,
/// judged by the mode bits that apply to it (owner, group, others). Supplementary groups are
/// not considered: tasks run with the account's primary group only.
pub(crate) fn first_closed_dir(
    dir: &std::path::Path,
    account: &Account,
) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dir = std::fs::canonicalize(dir).ok()?;
    let mut at = std::path::PathBuf::new();
    for part in dir.components() {
        at.push(part);
        let Ok(meta) = std::fs::metadata(&at) else {
            return Some(at);
        };
        let mode = meta.mode();
        let bit = if meta.uid() == account.uid {
            0o100
        } else if meta.gid() == account.gid {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return Some(at);
        }
    }
    None
}

/// The refusal for a job naming a user this agent does not allow.
pub(crate) fn not_allowed(name: &str, accepted: &BTreeSet<String>) -> String {
    let list = accepted.iter().cloned().collect::<Vec<_>>().join(", ");
    format!(
        "this agent does not run tasks as user {name} (it allows: {list}); allow it with the \
         agent flag --allow-task-user {name} (the agent must run as root)"
    )
}

fn lookup(name: &str) -> Result<Account, String> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok(account(u)),
        Ok(None) => Err(format!("task user {name} does not exist on this host")),
        Err(e) => Err(format!("cannot look up task user {name}: {e}")),
    }
}

fn lookup_uid(uid: u32) -> Option<Account> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(account)
}

fn account(u: User) -> Account {
    Account {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_root_agent_runs_tasks_as_nobody_and_only_allowed_users() {
        let users = Users::new(0, None, &set(&["root"])).unwrap();
        let nobody = users.for_task(None).unwrap().unwrap();
        assert_eq!(nobody.name, "nobody");
        assert_ne!(nobody.uid, 0);
        assert_eq!(users.for_task(Some("nobody")).unwrap(), Some(nobody));
        assert_eq!(users.for_task(Some("root")).unwrap().unwrap().uid, 0);
        let err = users.for_task(Some("daemon")).unwrap_err();
        assert!(err.contains("--allow-task-user daemon"), "{err}");
        assert!(err.contains("allows: nobody, root"), "{err}");
        assert_eq!(users.accepted(), set(&["nobody", "root"]));
        assert_eq!(users.default_name(), "nobody");
    }

    #[test]
    fn a_root_agent_can_name_another_default() {
        let users = Users::new(0, Some("daemon"), &BTreeSet::new()).unwrap();
        assert_eq!(users.for_task(None).unwrap().unwrap().name, "daemon");
        assert!(users.for_task(Some("nobody")).is_err());
        let err = Users::new(0, Some("shoal-no-such-user"), &BTreeSet::new()).unwrap_err();
        assert!(err.contains("shoal-no-such-user does not exist"), "{err}");
        let err = Users::new(0, None, &set(&["shoal-no-such-user"])).unwrap_err();
        assert!(err.contains("shoal-no-such-user does not exist"), "{err}");
    }

    #[test]
    fn an_unprivileged_agent_runs_tasks_as_itself() {
        // `nobody` stands for any unprivileged agent.
        let nobody = lookup("nobody").unwrap();
        let users = Users::new(nobody.uid, None, &BTreeSet::new()).unwrap();
        assert_eq!(users.for_task(None).unwrap(), None);
        assert_eq!(users.for_task(Some("nobody")).unwrap(), None);
        let err = users.for_task(Some("root")).unwrap_err();
        assert!(err.contains("--allow-task-user root"), "{err}");
        assert_eq!(users.accepted(), set(&["nobody"]));
        let err = Users::new(nobody.uid, Some("root"), &BTreeSet::new()).unwrap_err();
        assert!(err.contains("not root"), "{err}");
        let err = Users::new(nobody.uid, None, &set(&["root"])).unwrap_err();
        assert!(err.contains("--allow-task-user"), "{err}");
        assert!(Users::new(nobody.uid, Some("nobody"), &set(&["nobody"])).is_ok());
    }
}
