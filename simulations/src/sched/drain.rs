//! Drains in the simulated workload (`docs/services.md`, §5; `docs/simulator.md`, "Drains"):
//! the operator's node commands, written through the production core as the agent writes
//! them, and what `always_drain_parallel`, `always_drain_no_new_placements` and
//! `eventually_drain_complete` watch.
//!
//! **Who accepts a command.** The lowest-indexed running node on the majority side (ground
//! truth) that is not one of the nodes the command is about; failing that, any running node
//! of the majority side; failing that, the lowest-indexed running node. It does what
//! `node/src/sched_driver/nodes.rs` does: `prepare_node`, the record logged (the job log, at
//! once, as the agent logs it before committing), `commit`.
//!
//! **What the placer could know.** A placer `p` *knows* that node `x` refuses new work from
//! the end of the first input after which `p`'s tables say so (the intent merged), until they
//! stop saying so. Knowledge is kept as `p`'s own op counter then: an `Assign` op of `p` with a
//! higher counter targeting `x`, while `p`'s tables still say `x` refuses, was written after
//! `p` knew (exact, whatever the batching of messages). The same for admission: a `Start`
//! on `x` after `x`'s own tables said so at the end of an earlier input. And a liveness bound
//! on the replication itself, against the script: once a command is accepted at `t0`, a node
//! that has been on the majority side since `t0`, like the accepting node, has merged it by
//! `t0 +` [`REPLICATION_MS`] (one push and one anti-entropy round), so a placement or an
//! admission it writes later on a node the command made refuse work is a violation too.
//! Nodes cut off or restarted since `t0` are judged by the exact rule only.
//!
//! **Drain pacing, against the truth.** A drain stop (a `Kill` with `KillReason::Drained`)
//! before the node's deadline (its own clock, from when its current core first saw the
//! intent) is *paced*; after it, the node stops everything and the bound does not apply. A
//! paced stop of a slot is in flight until a process of that slot on another node has served
//! (answered its checks) at some instant since, or already does (or stopped within the
//! staleness bound, as the draining node's view may lag) at the stop. Per draining node and
//! job, at most `max_parallel` (1 without `[update]`) are in flight. And a paced stop of a
//! process that serves leaves at least `count − max_parallel` slots of its job serving,
//! counting a process that stopped serving within the staleness bound (the view the node
//! decided on may not have heard yet: check interval + timeout + 2 s, + 8 s after a
//! partition, as `always_discovery_live_healthy` allows).

use std::collections::BTreeMap;

use shoal_gossip::Millis;
use shoal_scheduler::{AttemptId, NodeChange, Prepared, Scheduler, table::Assignment};

use super::drain_watch::{Command, DrainSabotage, DrainWatch};
use super::serving::{DETECTION_MS, REPLICATION_MS};
use super::{Host, Proc, ProcessState, Workbench};
use crate::shared::{index_of_name, node_name};

impl Workbench {
    /// An operator's node command about `nodes` (see the module doc for who accepts it).
    pub fn node_command(&mut self, host: &mut dyn Host, nodes: &[usize], change: NodeChange) {
        let now = host.now();
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                host.process(i).state == ProcessState::Running && self.nodes[i].core.is_some()
            })
            .collect();
        let majority = |i: &usize| host.majority_side_since(*i, now);
        let issuer = running
            .iter()
            .copied()
            .find(|i| !nodes.contains(i) && majority(i))
            .or_else(|| running.iter().copied().find(majority))
            .or_else(|| running.first().copied());
        for &x in nodes {
            self.drains.figures.commands += 1;
            let Some(issuer) = issuer else {
                self.drains.figures.refused += 1;
                self.drains.commands.push(Command {
                    at: now,
                    issuer: x,
                    node: x,
                    change,
                    refused: Some("no running node to accept it".into()),
                });
                continue;
            };
            let refused = if self.drains.sabotage == DrainSabotage::SkipCommands {
                None
            } else {
                self.write_node_command(host, issuer, x, change)
            };
            self.drains.figures.refused += u64::from(refused.is_some());
            self.drains.commands.push(Command {
                at: now,
                issuer,
                node: x,
                change,
                refused,
            });
        }
    }

    /// `prepare_node`, the record logged, `commit`: as the agent writes a node command.
    /// Returns why the core refused it.
    fn write_node_command(
        &mut self,
        host: &mut dyn Host,
        issuer: usize,
        x: usize,
        change: NodeChange,
    ) -> Option<String> {
        let now = host.now();
        let node = &mut self.nodes[issuer];
        let core = node.core.as_mut()?;
        let refused = match core.prepare_node(now, &node_name(x), change) {
            Ok(Prepared::Write(w)) => {
                node.log
                    .insert(w.record.job.clone(), w.record.bytes.clone());
                core.commit(now, *w);
                None
            }
            Ok(Prepared::Unchanged(_)) => None,
            Err(e) => Some(e.to_string()),
        };
        self.drain(host, issuer);
        refused
    }

    /// Node `i`'s core starts (first start or restart): what it knew went with it.
    pub(super) fn drain_core_started(&mut self, i: usize) {
        let w = &mut self.drains;
        if w.known.len() < self.nodes.len() {
            w.known.resize_with(self.nodes.len(), BTreeMap::new);
            w.last_counter.resize(self.nodes.len(), 0);
            w.seen.resize(self.nodes.len(), None);
        }
        w.known[i].clear();
        w.last_counter[i] = 0;
        w.seen[i] = None;
    }

    /// At the end of every input of node `i`: which nodes its tables say refuse work, and
    /// the drain its core carries out.
    pub(super) fn note_drain_knowledge(&mut self, host: &dyn Host, i: usize, core: &Scheduler) {
        if !self.drains.enabled {
            return;
        }
        self.drain_core_grow(i);
        let now = host.now();
        let tables = core.tables();
        let counter = tables.clock().get(core.actor());
        let w = &mut self.drains;
        w.known[i].retain(|&x, _| tables.refuses_work(&node_name(x)));
        for (name, row) in tables.nodes() {
            if !row.refuses_work() {
                continue;
            }
            let Some(x) = index_of_name(name).filter(|&x| x < self.nodes.len()) else {
                continue;
            };
            if w.known[i].contains_key(&x) {
                continue;
            }
            w.known[i].insert(x, (counter, now));
            if let Some(c) = w.in_force(x, now)
                && host.majority_side_since(i, c.at)
            {
                w.figures.longest_learn_ms = w.figures.longest_learn_ms.max(now.since(c.at));
            }
        }
        w.last_counter[i] = counter;
        Self::note_own_drain(w, i, core, now);
    }

    fn drain_core_grow(&mut self, i: usize) {
        if self.drains.known.len() <= i {
            self.drain_core_started(i);
        }
    }

    /// Since when node `i`'s current core has seen the drain it carries out.
    fn note_own_drain(w: &mut DrainWatch, i: usize, core: &Scheduler, now: Millis) {
        match core.tables().node(core.node()).and_then(|r| r.drain()) {
            Some((stamp, _)) => {
                if w.seen[i].as_ref().is_none_or(|(s, _)| s != stamp) {
                    w.seen[i] = Some((stamp.clone(), now));
                }
            }
            None => w.seen[i] = None,
        }
    }

    /// Node `i`'s core wrote an assignment (own op `counter`) of `id` to `a.target`.
    pub(super) fn check_placement(
        &mut self,
        host: &mut dyn Host,
        i: usize,
        core: &Scheduler,
        id: &AttemptId,
        a: &Assignment,
        counter: u64,
    ) {
        if !self.drains.enabled {
            return;
        }
        self.drain_core_grow(i);
        self.drains.figures.placements += 1;
        let Some(x) = index_of_name(&a.target).filter(|&x| x < self.nodes.len()) else {
            return;
        };
        let what = format!(
            "n{i} placed {}/{} (attempt {}) on n{x}",
            id.job, id.slot, id.attempt
        );
        // Written in this input (not an older op sent only now): its time is now.
        let this_input = counter > self.drains.last_counter[i];
        self.judge_new_work(host, i, core, x, counter, this_input, &what);
    }

    /// Node `i`'s executor is told to start `task` (the core admitted it just now).
    pub(super) fn check_start(
        &mut self,
        host: &mut dyn Host,
        i: usize,
        core: &Scheduler,
        task: &AttemptId,
    ) {
        if !self.drains.enabled {
            return;
        }
        self.drain_core_grow(i);
        let what = format!(
            "n{i} admitted and started {}/{} (attempt {})",
            task.job, task.slot, task.attempt
        );
        self.judge_new_work(host, i, core, i, u64::MAX, true, &what);
    }

    /// New work written by node `i` (own op `counter`; `u64::MAX` for an admission, which
    /// happens in the current input) for node `x`: against what `i` knew, and against the
    /// script with the replication bound.
    #[allow(clippy::too_many_arguments)]
    fn judge_new_work(
        &mut self,
        host: &mut dyn Host,
        i: usize,
        core: &Scheduler,
        x: usize,
        counter: u64,
        this_input: bool,
        what: &str,
    ) {
        let now = host.now();
        let refuses_now = core.tables().refuses_work(&node_name(x));
        if refuses_now
            && let Some(&(k, since)) = self.drains.known[i].get(&x)
            && counter > k
        {
            let event = format!(
                "{what}, although its tables have said since {:.1} s that n{x} refuses new work",
                since.0 as f64 / 1000.0
            );
            host.violate("always_drain_no_new_placements", event);
            return;
        }
        if refuses_now || !this_input {
            return;
        }
        let Some(c) = self.drains.in_force(x, now) else {
            return;
        };
        let (at, issuer) = (c.at, c.issuer);
        if now.since(at) > REPLICATION_MS
            && host.majority_side_since(i, at)
            && host.majority_side_since(issuer, at)
        {
            let event = format!(
                "{what} at {:.1} s, {:.1} s after n{issuer} accepted {:?} for n{x}: both on the \
                 majority side since, so it should have known within {:.1} s",
                now.0 as f64 / 1000.0,
                now.since(at) as f64 / 1000.0,
                c.change,
                REPLICATION_MS as f64 / 1000.0
            );
            host.violate("always_drain_no_new_placements", event);
        }
    }

    /// The scenario's `max_parallel` for job `job` of `count` slots (1 without updates), as
    /// the drain reads it (`update.max_parallel`, at least 1).
    fn drain_mp(&self, count: u32) -> u32 {
        self.updates
            .as_ref()
            .map_or(1, |u| u.max_parallel.min(count).max(1))
    }

    /// The staleness a draining node's view may have of a process that stopped serving at
    /// `from`: as `always_discovery_live_healthy` allows.
    fn drain_stale_ms(&self, host: &dyn Host, from: Millis) -> u64 {
        self.discovery.base_ms.max(REPLICATION_MS)
            + if host.partitioned_since(from) {
                DETECTION_MS
            } else {
                0
            }
    }

    /// Whether slot `slot` of `task`'s job incarnation has a process on another node than
    /// `except` that serves now, or stopped serving within the staleness bound.
    fn slot_serves_elsewhere(&self, host: &dyn Host, task: &AttemptId, except: usize) -> bool {
        self.serving_slots(host, task, Some(except))
            .contains(&task.slot)
    }

    /// The slots of `task`'s job incarnation with a process (on any node but `except`) that
    /// serves now or stopped serving within the staleness bound.
    fn serving_slots(
        &self,
        host: &dyn Host,
        task: &AttemptId,
        except: Option<usize>,
    ) -> std::collections::BTreeSet<u32> {
        let now = host.now();
        let mut slots = std::collections::BTreeSet::new();
        for (j, node) in self.nodes.iter().enumerate() {
            if Some(j) == except {
                continue;
            }
            for (id, p) in &node.running {
                if id.job == task.job && id.incarnation == task.incarnation && p.serving() {
                    slots.insert(id.slot);
                }
            }
        }
        let from = (task.job.clone(), 0, 0, 0);
        for ((job, slot, _, j), at) in self.discovery.stopped.range(from..) {
            if *job != task.job {
                break;
            }
            if Some(*j) != except && now.since(*at) <= self.drain_stale_ms(host, *at) {
                slots.insert(*slot);
            }
        }
        slots
    }

    /// Node `i` stops `task` (process `p`, already off the machine) for its drain.
    pub(super) fn drain_stop(
        &mut self,
        host: &mut dyn Host,
        i: usize,
        core: &Scheduler,
        task: &AttemptId,
        p: &Proc,
    ) {
        let now = host.now();
        self.drain_core_grow(i);
        Self::note_own_drain(&mut self.drains, i, core, now);
        let tables = core.tables();
        let deadline = tables
            .node(core.node())
            .and_then(|r| r.drain())
            .and_then(|(_, d)| d.deadline_ms);
        let seen = self.drains.seen[i].as_ref().map(|(_, at)| *at);
        if let (Some(d), Some(seen)) = (deadline, seen)
            && now.since(seen) >= d
        {
            self.drains.figures.deadline_stops += 1;
            return;
        }
        self.drains.figures.paced_stops += 1;
        let Some(count) = tables.job(&task.job).map(|(_, e)| e.spec.count) else {
            return;
        };
        let mp = self.drain_mp(count);
        self.judge_in_flight(host, i, task, mp);
        if p.serving() {
            // The floor: what still serves (or may still look healthy) of the job.
            let left = self.serving_slots(host, task, None).len() as i64;
            let floor = i64::from(count) - i64::from(mp);
            let f = &mut self.drains.figures;
            f.least_margin = Some(f.least_margin.map_or(left - floor, |m| m.min(left - floor)));
            if left < floor {
                let event = format!(
                    "n{i} stopped {}/{} (attempt {}) for its drain, which served, leaving {left} \
                     of {count} slots serving, below count − max_parallel = {floor}",
                    task.job, task.slot, task.attempt
                );
                host.violate("always_drain_parallel", event);
            }
        }
    }

    /// A paced stop of `task` by node `i`: in flight until its slot serves elsewhere; at most
    /// `mp` of its job from `i` at once.
    fn judge_in_flight(&mut self, host: &mut dyn Host, i: usize, task: &AttemptId, mp: u32) {
        if self.slot_serves_elsewhere(host, task, i) {
            return;
        }
        let key = (task.job.to_string(), task.incarnation, task.slot, i);
        self.drains.in_flight.insert(key, host.now());
        let mine: Vec<u32> = self
            .drains
            .in_flight
            .keys()
            .filter(|(j, inc, _, x)| *j == task.job.as_str() && *inc == task.incarnation && *x == i)
            .map(|k| k.2)
            .collect();
        let others =
            self.drains.in_flight.keys().any(|(j, inc, _, x)| {
                *j == task.job.as_str() && *inc == task.incarnation && *x != i
            });
        let f = &mut self.drains.figures;
        f.most_in_flight = f.most_in_flight.max(mine.len() as u64);
        f.overlaps += u64::from(others);
        if mine.len() as u64 > u64::from(mp) {
            let event = format!(
                "n{i} has {} slots of {} stopped for its drain and not yet serving elsewhere \
                 ({mine:?}), over max_parallel {mp}",
                mine.len(),
                task.job
            );
            host.violate("always_drain_parallel", event);
        }
    }

    /// A process of `task` on node `j` serves (started, or answers again): its slot's paced
    /// drain stops from other nodes are no longer in flight.
    pub(super) fn drain_slot_served(&mut self, j: usize, task: &AttemptId) {
        if self.drains.in_flight.is_empty() {
            return;
        }
        self.drains.in_flight.retain(|(job, inc, slot, x), _| {
            !(*job == task.job.as_str()
                && *inc == task.incarnation
                && *slot == task.slot
                && *x != j)
        });
    }
}

impl Workbench {
    /// `eventually_drain_complete`, at the end of the run over the `running` nodes (by
    /// index): every node the script left draining (not undrained or enabled since) and that
    /// runs at the end holds no service task, holds no task at all once its deadline (from
    /// when its current core saw the drain) has passed, and has written its drain complete
    /// when it holds nothing. Returns the nodes judged, those skipped (not running: crashed
    /// for good) and the first failure; `None` when the script drains nothing.
    #[must_use]
    pub fn unfinished_drain(
        &self,
        running: &[bool],
        end: Millis,
    ) -> Option<(usize, usize, Option<String>)> {
        let (mut judged, mut skipped, mut first) = (0, 0, None);
        let mut any = false;
        for (x, node) in self.nodes.iter().enumerate() {
            let Some((at, deadline)) = self.drains.drain_in_force(x) else {
                continue;
            };
            any = true;
            if !running.get(x).copied().unwrap_or(false) {
                skipped += 1;
                continue;
            }
            judged += 1;
            let since = at.0 as f64 / 1000.0;
            let seen = self.drains.seen.get(x).cloned().flatten().map(|(_, t)| t);
            let why = if let Some((id, _)) = node.running.iter().find(|(id, _)| {
                self.by_name
                    .get(id.job.as_str())
                    .is_some_and(|&k| self.jobs[k].service)
            }) {
                Some(format!(
                    "n{x} still runs service task {}/{} (attempt {}) at the end, drained since \
                     {since:.1} s",
                    id.job, id.slot, id.attempt
                ))
            } else if let Some(seen) = seen.filter(|_| !node.running.is_empty())
                && let Some(d) = deadline.filter(|d| seen.plus_ms(*d) <= end)
            {
                node.running.keys().next().map(|id| {
                    format!(
                        "n{x} still runs batch task {}/{} at the end, although its drain's \
                         deadline passed at {:.1} s",
                        id.job,
                        id.slot,
                        seen.plus_ms(d).0 as f64 / 1000.0
                    )
                })
            } else if seen.is_none() {
                Some(format!(
                    "n{x}'s own tables hold no drain at the end, although it was drained at \
                     {since:.1} s"
                ))
            } else if node.running.is_empty()
                && !node
                    .core
                    .as_ref()
                    .and_then(|c| c.tables().node(c.node()))
                    .is_some_and(|r| r.drain_done())
            {
                Some(format!(
                    "n{x} runs nothing at the end, but has not written its drain (from \
                     {since:.1} s) complete"
                ))
            } else {
                None
            };
            if first.is_none() {
                first = why;
            }
        }
        any.then_some((judged, skipped, first))
    }
}
