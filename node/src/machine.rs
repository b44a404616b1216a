//! What this machine has: the default resource vector of an agent.

use std::path::Path;

use shoal_gossip::Resources;

/// CPU (all cores), memory (MemTotal) and disk (free space under `data_dir`) of this host.
/// Anything that cannot be read counts as zero and is logged, so an operator sees it and can
/// set `--cpu`/`--memory` explicitly.
#[must_use]
pub fn detect(data_dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    Resources {
        cpu_millicores: cpus as u64 * 1000,
        memory_mib: memory_mib().unwrap_or_else(|| {
            tracing::warn!("could not read MemTotal from /proc/meminfo; memory counts as 0");
            0
        }),
        disk_mib: disk_free_mib(data_dir).unwrap_or_else(|| {
            tracing::warn!(dir = %data_dir.display(), "could not stat the data dir; disk counts as 0");
            0
        }),
    }
}

fn memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn disk_free_mib(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64 / (1024 * 1024))
}
