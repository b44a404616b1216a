//! What `always_discovery_live_healthy`, `eventually_discovery_complete` and
//! `always_ports_unique` watch (`docs/services.md`, §3; `docs/simulator.md`, "Discovery").
//!
//! Every node keeps the catalog its agent would serve (DNS and `/v1/services`), built by the
//! production `CatalogBuilder` from its own core's tables and member view, exactly as
//! `node/src/sched_driver.rs` builds it (`Scheduler::update_catalog`). At every sample each
//! running node's catalog is brought up to date and each instance it calls healthy is held
//! against the ground truth: a process of that attempt on that node that serves (started,
//! not a bad version, not hung). One that stopped serving may still be listed for the
//! staleness bound [`Discovery::bound_ms`], counted from the latest of: when it stopped
//! serving, when its node's agent last came up, when the observer's agent last came up, and
//! since when the observer's view has shown the node alive without a break.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use shoal_gossip::{MemberInfo, MemberStatus, Millis};
use shoal_scheduler::{AttemptId, Name};

use super::{Host, ProcessState, Workbench};
use crate::shared::{index_of_name, ip_of};

/// A health op's way to every peer once the target wrote it: one push on the reliable
/// stream (latency, plus at most five 200 ms retransmissions of lost datagrams) and, when
/// the push was lost, one anti-entropy round (1 s, `SchedulerConfig::anti_entropy_interval`),
/// rounded up.
pub const REPLICATION_MS: u64 = 2_000;

/// Added to the bound when a partition was in force since the instance stopped serving: a
/// node cut off from the target never gets the op and drops the instance only when its view
/// marks the target down (SWIM: probe period 1 s, suspicion 2 s, dissemination; the library's
/// p90 from crash to every observer's down mark is 5.4 s), plus the 500 ms feed of the view
/// to the core, rounded up.
pub const DETECTION_MS: u64 = 8_000;

/// One attempt on one node: (job, slot, attempt, node index).
type Key = (Name, u32, u32, usize);

/// The discovery checker's memory.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Whether the services have ports and checks (else nothing is watched).
    pub(super) enabled: bool,
    /// The base staleness bound: check interval + timeout + [`REPLICATION_MS`].
    pub(super) base_ms: u64,
    /// From when `eventually_discovery_complete` is judged (the end of the quiet time).
    pub(super) check_from_ms: u64,
    /// Tests only: a deliberate bug (`engine::Sabotage`).
    pub(super) sabotage: DiscoverySabotage,
    /// Since when each attempt's process has not served (hung, killed, exited).
    stopped: BTreeMap<Key, Millis>,
    /// The figures for the report.
    pub figures: DiscoveryFigures,
    /// At the last sample after the quiet time: the first live, healthy instance some
    /// running node did not list (`eventually_discovery_complete`), or what was compared.
    pub complete: Option<Result<String, String>>,
}

/// Deliberate bugs in how catalogs are built or checks reported, to show the checkers bite
/// (`engine::Sabotage::{CatalogMissesTouches, ChecksAlwaysPass}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DiscoverySabotage {
    /// The honest simulator.
    #[default]
    None,
    /// The core's table touches are left out of the catalog's changes.
    MissTouches,
    /// Every probe passes.
    AlwaysPass,
}

/// What the discovery checkers saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiscoveryFigures {
    /// Probes the simulated executors ran.
    pub probes: u64,
    /// Tasks the `hang` fault hung.
    pub hangs: u64,
    /// Ports bound at process starts.
    pub port_bindings: u64,
    /// Healthy instances held against the truth (summed over nodes and samples).
    pub listed: u64,
    /// Of those, listed while their process did not serve (within the bound).
    pub stale: u64,
    /// The longest such staleness, in ms, counted as the bound counts it.
    pub longest_stale_ms: u64,
    /// The base bound, in ms.
    pub bound_ms: u64,
    /// Listings of processes that no longer served, by nodes on the minority side (stale by
    /// design, not judged).
    pub minority_stale: u64,
}

/// The first instant in `[from, now]` since which node `j` has been on the majority side
/// (ground truth), `from` if it was all along; it is on it now.
fn back_on_majority_side(host: &dyn Host, j: usize, from: Millis) -> Millis {
    if host.majority_side_since(j, from) {
        return from;
    }
    let (mut lo, mut hi) = (from.0, host.now().0);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if host.majority_side_since(j, Millis(mid)) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Millis(hi)
}

impl Discovery {
    /// Whether the services have ports and checks, so that discovery is watched.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The process of `task` on node `i` stopped serving now (unless it had already).
    pub(super) fn stopped_serving(&mut self, now: Millis, i: usize, task: &AttemptId) {
        if self.enabled {
            let key = (task.job.clone(), task.slot, task.attempt, i);
            self.stopped.entry(key).or_insert(now);
        }
    }

    /// A hung process of `task` on node `i` serves again.
    pub(super) fn serving_again(&mut self, i: usize, task: &AttemptId) {
        self.stopped
            .remove(&(task.job.clone(), task.slot, task.attempt, i));
    }

    /// The staleness allowed for an instance whose process stopped serving at `from`.
    fn bound_ms(&self, host: &dyn Host, from: Millis) -> u64 {
        self.base_ms
            + if host.partitioned_since(from) {
                DETECTION_MS
            } else {
                0
            }
    }
}

/// Whether a member counts as gone for the catalog (the core's `down_or_gone`).
fn gone(m: &MemberInfo) -> bool {
    matches!(m.status, MemberStatus::Down | MemberStatus::Left)
        || m.ad.as_ref().is_some_and(|a| a.left)
}

impl Workbench {
    /// After node `i`'s core got a member view: since when each member has been alive in it.
    pub(super) fn note_view(&mut self, now: Millis, i: usize, members: &[MemberInfo]) {
        if !self.discovery.enabled {
            return;
        }
        let seen = &mut self.nodes[i].alive_since;
        for m in members {
            if gone(m) {
                seen.remove(m.id.name.as_str());
            } else if !seen.contains_key(m.id.name.as_str()) {
                seen.insert(m.id.name.to_string(), now);
            }
        }
    }

    /// At every sample: every running node's catalog, brought up to date, against the truth.
    pub(super) fn check_discovery(&mut self, host: &mut dyn Host) {
        if !self.discovery.enabled {
            return;
        }
        let check_from_ms = self.discovery.check_from_ms;
        let now = host.now();
        let mut first_missing = None;
        let mut compared = 0u64;
        for j in 0..self.nodes.len() {
            if host.process(j).state != ProcessState::Running {
                continue;
            }
            let node = &mut self.nodes[j];
            let Some(core) = node.core.as_mut() else {
                continue;
            };
            match self.discovery.sabotage {
                DiscoverySabotage::MissTouches => {
                    let mut changes = core.take_catalog_changes();
                    changes.jobs.clear();
                    if !changes.is_empty() {
                        let tables = core.tables();
                        node.catalog
                            .update(tables, core.member_view(), core.node(), changes);
                    }
                }
                _ => {
                    core.update_catalog(&mut node.catalog);
                }
            }
            let healthy: BTreeSet<Key> = node
                .catalog
                .catalog()
                .services
                .values()
                .flat_map(|s| s.healthy())
                .filter_map(|inst| {
                    let t = index_of_name(&inst.node)?;
                    if inst.ip != std::net::IpAddr::V4(ip_of(t)) {
                        let event = format!(
                            "n{j} lists {}/{} (attempt {}) on {} at {}, not that node's address",
                            inst.job, inst.slot, inst.attempt, inst.node, inst.ip
                        );
                        host.violate("always_discovery_live_healthy", event);
                    }
                    Some((inst.job.clone(), inst.slot, inst.attempt, t))
                })
                .collect();
            for key in &healthy {
                self.judge_listing(host, j, key);
            }
            if now.0 >= check_from_ms && first_missing.is_none() {
                compared += 1;
                first_missing = self.unlisted(host, j, &healthy);
            }
        }
        if now.0 >= check_from_ms {
            self.discovery.complete = Some(match first_missing {
                Some(why) => Err(why),
                None => Ok(format!("{compared} running nodes")),
            });
        }
    }

    /// Node `j` lists `key` as healthy: its process must serve, or have stopped within the
    /// bound.
    fn judge_listing(&mut self, host: &mut dyn Host, j: usize, key: &Key) {
        let (job, slot, attempt, t) = key;
        self.discovery.figures.listed += 1;
        let proc = self.nodes[*t]
            .running
            .iter()
            .find(|(id, _)| id.job == *job && id.slot == *slot && id.attempt == *attempt);
        if proc.is_some_and(|(_, p)| p.serving()) {
            return;
        }
        let since = self
            .discovery
            .stopped
            .get(key)
            .copied()
            .or(proc.map(|(_, p)| p.started_at))
            .unwrap_or(Millis(0));
        let target_up = self.nodes[*t].up_since;
        let observer_up = self.nodes[j].up_since;
        let seen_alive = if *t == j {
            observer_up
        } else {
            self.nodes[j]
                .alive_since
                .get(crate::shared::node_name(*t).as_str())
                .copied()
                .unwrap_or(host.now())
        };
        let mut from = since.max(target_up).max(observer_up).max(seen_alive);
        if host.minority_side(j) {
            // A node without a majority answers from its own replica, possibly stale, by
            // design (`docs/services.md`, §3): its answers are judged from when it is back.
            self.discovery.figures.minority_stale += 1;
            return;
        }
        from = from.max(back_on_majority_side(host, j, from));
        let stale = host.now().since(from);
        let bound = self.discovery.bound_ms(host, from);
        let f = &mut self.discovery.figures;
        f.stale += 1;
        f.longest_stale_ms = f.longest_stale_ms.max(stale);
        if stale > bound {
            let what = match proc {
                Some((_, p)) if p.hung => "hangs",
                Some((_, p)) if p.fails => "fails its checks",
                Some(_) => "has not started",
                None => "is gone",
            };
            let event = format!(
                "n{j} lists {job}/{slot} (attempt {attempt}) on n{t} as healthy, but its process \
                 {what} since {:.1} s ({:.1} s, over the bound of {:.1} s)",
                since.0 as f64 / 1000.0,
                stale as f64 / 1000.0,
                bound as f64 / 1000.0
            );
            host.violate("always_discovery_live_healthy", event);
        }
    }

    /// The first process that serves on a running agent, as an instance of a service, for
    /// longer than the bound, and that node `j` does not list as healthy.
    fn unlisted(&self, host: &dyn Host, j: usize, healthy: &BTreeSet<Key>) -> Option<String> {
        let now = host.now();
        for (t, node) in self.nodes.iter().enumerate() {
            if host.process(t).state != ProcessState::Running {
                continue;
            }
            for (id, p) in &node.running {
                let Some(since) = p.serving_since.filter(|_| !p.orphan) else {
                    continue;
                };
                let service = self
                    .by_name
                    .get(id.job.as_str())
                    .is_some_and(|&k| self.jobs[k].service);
                let from = since.max(node.up_since).max(self.nodes[j].up_since);
                if !service || now.since(from) <= self.discovery.bound_ms(host, from) {
                    continue;
                }
                let key = (id.job.clone(), id.slot, id.attempt, t);
                if !healthy.contains(&key) {
                    return Some(format!(
                        "n{j} does not list {}/{} (attempt {}) on n{t} as healthy, which has \
                         served since {:.1} s",
                        id.job,
                        id.slot,
                        id.attempt,
                        since.0 as f64 / 1000.0
                    ));
                }
            }
        }
        None
    }
}
