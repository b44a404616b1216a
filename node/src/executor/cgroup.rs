//! CPU and memory limits through cgroups, when this host lets the agent use them.
//!
//! [`detect`] looks for a cgroup2 mount whose root offers the `cpu` and `memory` controllers and
//! sets up `<mount>/shoal/<instance>` with both enabled for its children; failing that, cgroup v1
//! `cpu` and `memory` hierarchies, under the agent's own cgroup in each (so limits a supervisor
//! put on the agent still hold for its tasks). Detection creates the parent directories for
//! real, so "usable" means "it worked here", not "a file exists".
//!
//! Per task, [`Hierarchy::create`] makes `<parent>/<job>.<slot>.<attempt>` and writes the limits
//! before the spawn; [`TaskCgroup::add`] moves the pid in right after it; [`TaskCgroup::remove`]
//! deletes the directory once the process group is gone.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// CFS period used for CPU quotas: 100 ms, the kernel default.
const CPU_PERIOD_US: u64 = 100_000;
/// The kernel refuses quotas under 1 ms, so 10 millicores is the smallest enforceable rate.
const CPU_MIN_QUOTA_US: u64 = 1_000;

/// A cgroup hierarchy the executor can create task cgroups in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hierarchy {
    /// Unified hierarchy: one directory per task holds `cpu.max` and `memory.max`.
    V2 { parent: PathBuf },
    /// Legacy hierarchies: one directory per task in each of `cpu` and `memory`.
    V1 {
        cpu_parent: PathBuf,
        memory_parent: PathBuf,
    },
}

/// The outcome of [`detect`]: the hierarchy to use, if any, and why, in words.
#[derive(Debug, Clone)]
pub(crate) struct Detected {
    pub hierarchy: Option<Hierarchy>,
    pub note: String,
}

/// The cgroup of one task: one directory (v2) or two (v1: cpu, memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskCgroup {
    dirs: Vec<PathBuf>,
    memory_file: PathBuf,
}

/// Finds a usable hierarchy and creates `shoal/<instance>` in it.
pub(crate) fn detect(instance: &str) -> Detected {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let why_not_v2 = match try_v2(&mounts, instance) {
        Ok(h) => return found(h),
        Err(why) => why,
    };
    match try_v1(&mounts, &own, instance) {
        Ok(h) => Detected {
            note: format!(
                "{}; cgroup v2 not used: {why_not_v2}",
                found(h.clone()).note
            ),
            hierarchy: Some(h),
        },
        Err(why_not_v1) => Detected {
            hierarchy: None,
            note: format!("no usable cgroups: v2: {why_not_v2}; v1: {why_not_v1}"),
        },
    }
}

fn found(hierarchy: Hierarchy) -> Detected {
    let note = match &hierarchy {
        Hierarchy::V2 { parent } => format!("cgroup v2 under {}", parent.display()),
        Hierarchy::V1 {
            cpu_parent,
            memory_parent,
        } => format!(
            "cgroup v1 under {} and {}",
            cpu_parent.display(),
            memory_parent.display()
        ),
    };
    Detected {
        hierarchy: Some(hierarchy),
        note,
    }
}

impl Hierarchy {
    /// Where the task named `name` lives (whether or not it exists yet).
    pub fn task_cgroup(&self, name: &str) -> TaskCgroup {
        match self {
            Hierarchy::V2 { parent } => TaskCgroup {
                dirs: vec![parent.join(name)],
                memory_file: parent.join(name).join("memory.max"),
            },
            Hierarchy::V1 {
                cpu_parent,
                memory_parent,
            } => TaskCgroup {
                dirs: vec![cpu_parent.join(name), memory_parent.join(name)],
                memory_file: memory_parent.join(name).join("memory.limit_in_bytes"),
            },
        }
    }

    /// Creates the task's cgroup (reusing a stale one of the same name) and writes its limits;
    /// `0` means "no limit" for either resource.
    pub fn create(
        &self,
        name: &str,
        cpu_millicores: u64,
        memory_mib: u64,
    ) -> Result<TaskCgroup, String> {
        let cgroup = self.task_cgroup(name);
        for dir in &cgroup.dirs {
            make_dir(dir)?;
        }
        let quota = cpu_quota_us(cpu_millicores);
        let memory = memory_mib.checked_mul(1024 * 1024);
        match self {
            Hierarchy::V2 { .. } => {
                let cpu = quota.map_or(format!("max {CPU_PERIOD_US}"), |q| {
                    format!("{q} {CPU_PERIOD_US}")
                });
                write(&cgroup.dirs[0].join("cpu.max"), &cpu)?;
                let mem = memory
                    .filter(|&b| b > 0)
                    .map_or("max".to_owned(), |b| b.to_string());
                write(&cgroup.memory_file, &mem)?;
            }
            Hierarchy::V1 { .. } => {
                // cfs_period_us of a new cgroup is the kernel default, CPU_PERIOD_US, and only
                // this executor writes here: not rewritten, each write is a syscall per task.
                let cpu = quota.map_or("-1".to_owned(), |q| q.to_string());
                write(&cgroup.dirs[0].join("cpu.cfs_quota_us"), &cpu)?;
                let mem = memory
                    .filter(|&b| b > 0)
                    .map_or("-1".to_owned(), |b| b.to_string());
                write(&cgroup.memory_file, &mem)?;
            }
        }
        Ok(cgroup)
    }
}

impl Hierarchy {
    /// Removes task cgroups that have no process left, e.g. those of an agent that was
    /// SIGKILLed. A populated cgroup refuses `rmdir` (`EBUSY`), so live tasks keep theirs for
    /// recovery. Returns how many were removed.
    pub fn sweep_empty(&self) -> usize {
        let parents = match self {
            Hierarchy::V2 { parent } => vec![parent],
            Hierarchy::V1 {
                cpu_parent,
                memory_parent,
            } => vec![cpu_parent, memory_parent],
        };
        let children = parents
            .into_iter()
            .flat_map(|p| std::fs::read_dir(p).into_iter().flatten());
        children
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| std::fs::remove_dir(e.path()).is_ok())
            .count()
    }
}

impl TaskCgroup {
    /// Moves `pid` (and so everything it forks from now on) into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        self.dirs
            .iter()
            .try_for_each(|d| write(&d.join("cgroup.procs"), &pid.to_string()))
    }

    /// The memory limit file, to read a limit back.
    #[cfg(test)]
    pub fn memory_file(&self) -> &Path {
        &self.memory_file
    }

    /// Removes the directories now; fails with `EBUSY` while a member is still exiting.
    pub fn remove_now(&self) -> std::io::Result<()> {
        for dir in &self.dirs {
            match std::fs::remove_dir(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the directories, retrying for about a second while SIGKILLed members finish
    /// exiting; after that the directory is left behind and logged (reused on the same name).
    pub async fn remove(&self) {
        let mut backoff = Duration::from_millis(2);
        let mut result = self.remove_now();
        while result.is_err() && backoff < Duration::from_millis(600) {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            result = self.remove_now();
        }
        if let Err(e) = result {
            tracing::warn!(dirs = ?self.dirs, error = %e, "task cgroup left behind");
        }
    }
}

/// The CFS quota per [`CPU_PERIOD_US`] for a rate in millicores; `None` means unlimited.
fn cpu_quota_us(cpu_millicores: u64) -> Option<u64> {
    (cpu_millicores > 0)
        .then(|| (cpu_millicores.saturating_mul(CPU_PERIOD_US) / 1000).max(CPU_MIN_QUOTA_US))
}

fn try_v2(mounts: &[Mount], instance: &str) -> Result<Hierarchy, String> {
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .ok_or("no cgroup2 mount")?;
    let controllers =
        std::fs::read_to_string(mount.point.join("cgroup.controllers")).map_err(|e| {
            format!(
                "cannot read {}/cgroup.controllers: {e}",
                mount.point.display()
            )
        })?;
    let offered: Vec<&str> = controllers.split_whitespace().collect();
    if !(offered.contains(&"cpu") && offered.contains(&"memory")) {
        return Err(format!(
            "cgroup2 at {} offers [{}], needs cpu and memory",
            mount.point.display(),
            offered.join(" ")
        ));
    }
    let mut dir = mount.point.clone();
    for level in ["shoal", instance] {
        write(&dir.join("cgroup.subtree_control"), "+cpu +memory")?;
        dir.push(level);
        make_dir(&dir)?;
    }
    write(&dir.join("cgroup.subtree_control"), "+cpu +memory")?;
    probe(&dir)?;
    Ok(Hierarchy::V2 { parent: dir })
}

fn try_v1(mounts: &[Mount], own: &str, instance: &str) -> Result<Hierarchy, String> {
    let parent = |controller: &str| -> Result<PathBuf, String> {
        let mount = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == controller))
            .ok_or(format!("no cgroup v1 `{controller}` mount"))?;
        let own_path = own_v1_path(own, controller).unwrap_or("/");
        let relative = own_path
            .strip_prefix(mount.root.as_str())
            .unwrap_or(own_path);
        let dir = mount
            .point
            .join(relative.trim_start_matches('/'))
            .join("shoal")
            .join(instance);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        probe(&dir)?;
        Ok(dir)
    };
    Ok(Hierarchy::V1 {
        cpu_parent: parent("cpu")?,
        memory_parent: parent("memory")?,
    })
}

/// The agent's own cgroup path in the v1 hierarchy holding `controller`.
fn own_v1_path<'a>(proc_self_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    super_options: String,
}

/// Parses `/proc/self/mountinfo`: `id parent dev root point opts [optional...] - fstype source superopts`.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: (*left.get(3)?).to_owned(),
                point: PathBuf::from(left.get(4)?),
                fstype: (*right.first()?).to_owned(),
                super_options: right.get(2).copied().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

/// Creates and removes a child cgroup: an existing parent (made by root, say) does not mean this
/// agent may create task cgroups in it.
fn probe(parent: &Path) -> Result<(), String> {
    let child = parent.join(format!("probe-{}", std::process::id()));
    make_dir(&child)?;
    std::fs::remove_dir(&child).map_err(|e| format!("cannot remove {}: {e}", child.display()))
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(format!("cannot create cgroup {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value)
        .map_err(|e| format!("cannot write `{value}` to {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:7 - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_finds_both_versions() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[2].point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(mounts[2].super_options, "rw,memory");
        assert_eq!(mounts[3].fstype, "cgroup2");
        assert!(parse_mountinfo("garbage\n\n - \n").is_empty());
    }

    #[test]
    fn own_v1_path_matches_whole_controller_names() {
        let own = "4:memory:/process_api/abc\n2:cpuacct:/x\n1:cpu,cpuacct:/y\n0::/\n";
        assert_eq!(own_v1_path(own, "memory"), Some("/process_api/abc"));
        assert_eq!(own_v1_path(own, "cpu"), Some("/y"));
        assert_eq!(own_v1_path(own, "pids"), None);
    }

    #[test]
    fn cpu_quota_scales_and_clamps() {
        assert_eq!(cpu_quota_us(0), None);
        assert_eq!(cpu_quota_us(1), Some(CPU_MIN_QUOTA_US));
        assert_eq!(cpu_quota_us(250), Some(25_000));
        assert_eq!(cpu_quota_us(2000), Some(200_000));
        assert!(cpu_quota_us(u64::MAX).is_some());
    }
}
