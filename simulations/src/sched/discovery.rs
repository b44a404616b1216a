//! What `always_discovery_live_healthy`, `eventually_discovery_complete` and
//! `always_ports_unique` watch (`docs/services.md`, §3; `docs/simulator.md`, "Discovery").
//!
//! Every node keeps the catalog its agent would serve (DNS and `/v1/services`), built by the
//! production `CatalogBuilder` from its own core's tables and member view, exactly as
//! `node/src/sched_driver.rs` builds it (`Scheduler::update_catalog`). At every sample each
//! running node's catalog is brought up to date and each instance it calls healthy is held
//! against the ground truth: a process of that attempt on that node that serves (started,
//! not a bad version, not hung). One that stopped serving may still be listed for the
//! staleness bound (`bound_ms`, plus the detection time when the process stopped while
//! its agent was down), counted from the latest of: when it stopped serving, when its node's agent last came up, when the observer's agent last came up, and
//! since when the observer's view has shown the node alive without a break.

use std::collections::BTreeSet;

use shoal_gossip::{MemberInfo, MemberStatus, Millis};

use super::serving::{DETECTION_MS, Discovery, DiscoverySabotage, Key};
use super::{Host, ProcessState, Workbench};
use crate::shared::{index_of_name, ip_of};

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

/// The staleness allowed for an instance whose process stopped serving at `from`.
fn bound_ms(d: &Discovery, host: &dyn Host, from: Millis) -> u64 {
    d.base_ms
        + if host.partitioned_since(from) {
            DETECTION_MS
        } else {
            0
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
        // A process that stopped serving while its agent is down (an orphan the watchdog
        // killed `orphan_grace` after a crash) has nobody to report it: every node drops it
        // when its view marks the agent down, as across a partition.
        let agent_down = self.nodes[*t].core.is_none();
        let bound =
            bound_ms(&self.discovery, host, from) + if agent_down { DETECTION_MS } else { 0 };
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
                if !service || now.since(from) <= bound_ms(&self.discovery, host, from) {
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
