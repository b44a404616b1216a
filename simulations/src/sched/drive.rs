//! Driving one node's scheduler core: starting it from its disk, feeding it the membership
//! view, routing what it produces (executor commands, job records, messages), its timers,
//! process exits and submissions.
//!
//! Every input to a core is followed by `drain`, which runs its executor commands, writes its
//! job records, sends its messages and re-arms its wake-up from `poll_timeout`.

use bytes::Bytes;
use rand::RngExt;
use shoal_scheduler::{Message, Scheduler};

use super::executor;
use super::{FEED_MS, Host, ProcessState, SchedEvent, Workbench};
use crate::scenario::QuorumFeed;
use crate::shared::{derive_seed, index_of_name, node_name};

impl Workbench {
    /// Starts node `i`'s scheduler core as `generation`, from its disk when it has one (the
    /// last snapshot written, then the job log), and reports the processes that survived.
    pub(super) fn start_core(&mut self, host: &mut dyn Host, i: usize, generation: u64) {
        let seed = derive_seed(self.seed, 6, i as u64, generation);
        let name = node_name(i);
        let mut config = self.config.clone();
        config.service_ip = std::net::IpAddr::V4(crate::shared::ip_of(i));
        let node = &mut self.nodes[i];
        let restored = node.disk.as_ref().and_then(|(disk, _)| {
            Scheduler::restore(name.clone(), config.clone(), seed, disk).ok()
        });
        // Taken by this start, as the agent takes it from its store.
        let final_writer = node.final_writer.take();
        let mut core = match (restored, final_writer) {
            (Some(mut core), Some(start)) => {
                core.continue_writing_as(start);
                core
            }
            (Some(core), None) => core,
            (None, _) => Scheduler::new(name, config, seed),
        };
        core.restore_job_records(node.log.values().map(Vec::as_slice));
        node.next_wake = None;
        node.feed_armed = false;
        node.members_dirty = true;
        node.own_ops_seen = 0;
        node.snapshot_armed = false;
        node.catalog = shoal_scheduler::CatalogBuilder::new();
        node.alive_since.clear();
        node.up_since = host.now();
        self.drain_core_started(i);
        self.recover(host, i, &mut core);
        self.nodes[i].core = Some(Box::new(core));
        self.feed_quorum(host, i);
        self.drain(host, i);
    }

    /// Hands node `i`'s core its membership core's quorum if it has not seen it (as the
    /// agent's `feed_quorum`); with `quorum_feed = "unsettled"` its `settle_ms` reads 0, with
    /// `"none"` nothing is handed over.
    pub(super) fn feed_quorum(&mut self, host: &mut dyn Host, i: usize) {
        if self.quorum_feed == QuorumFeed::None {
            return;
        }
        let Some(mut q) = host.quorum(i) else {
            return;
        };
        if self.quorum_feed == QuorumFeed::Unsettled {
            q.settle_ms = 0;
        }
        if let Some(core) = self.nodes[i].core.as_mut()
            && *core.quorum() != q
        {
            core.handle_quorum(host.now(), &q);
        }
    }

    /// Queues a feed for node `i` unless one is queued.
    pub(super) fn arm_feed(&mut self, host: &mut dyn Host, i: usize) {
        let node = &mut self.nodes[i];
        if !node.feed_armed {
            node.feed_armed = true;
            let era = host.process(i).era;
            host.schedule(
                host.now().plus_ms(FEED_MS),
                SchedEvent::Feed { node: i, era },
            );
        }
    }

    /// The feed: node `i`'s scheduler core gets its membership core's view if it changed since
    /// the last feed. (A paused node's feed waits for the resume.)
    pub(super) fn feed(&mut self, host: &mut dyn Host, i: usize, era: u64) {
        self.nodes[i].feed_armed = false;
        let process = host.process(i);
        if process.state == ProcessState::Paused {
            self.arm_feed(host, i);
            return;
        }
        if process.era != era || process.state != ProcessState::Running {
            return;
        }
        if self.nodes[i].members_dirty
            && let Some(members) = host.members(i)
        {
            // The quorum first: a view showing most members down is never acted on under the
            // quorum from before it (`node/src/sched_driver.rs`).
            self.feed_quorum(host, i);
            let node = &mut self.nodes[i];
            if let Some(sched) = node.core.as_mut() {
                sched.handle_members(host.now(), &members);
                node.members_dirty = false;
                self.note_view(host.now(), i, &members);
            }
        }
        self.drain(host, i);
    }

    /// Routes everything scheduler `i` produced, runs its executor commands, re-arms its
    /// wake-up and writes its snapshot when one is due.
    pub(super) fn drain(&mut self, host: &mut dyn Host, i: usize) {
        let Some(mut core) = self.nodes[i].core.take() else {
            return;
        };
        let now = host.now();
        loop {
            if let Some(cmd) = core.poll_command() {
                self.execute(host, i, &mut core, cmd);
                continue;
            }
            if let Some(batch) = core.poll_job_records() {
                let log = &mut self.nodes[i].log;
                for r in batch.records {
                    if r.bytes.is_empty() {
                        log.remove(&r.job);
                    } else {
                        log.insert(r.job, r.bytes);
                    }
                }
                core.handle_persisted(now, batch.batch);
                continue;
            }
            let Some(out) = core.poll_message() else {
                break;
            };
            if let Message::Ops { ops } = &out.message {
                self.check_condemnations(host, i, &core, ops);
            }
            let bytes = Bytes::from(out.message.encode());
            for to in out.to.iter() {
                self.send(host, i, to, bytes.clone());
            }
        }
        self.note_drain_knowledge(host, i, &core);
        let due = core.poll_timeout();
        self.nodes[i].core = Some(core);
        if let Some(due) = due {
            let process = host.process(i);
            let node = &mut self.nodes[i];
            let at = due.max(now).plus_ms(process.slow_ms);
            if node.next_wake.is_none_or(|w| at < w) {
                node.next_wake = Some(at);
                let era = process.era;
                host.schedule(at, SchedEvent::Wake { node: i, era });
            }
        }
        self.maybe_snapshot(host, i);
    }

    /// Sends one message on the reliable FIFO stream `from` → `to`.
    fn send(&mut self, host: &mut dyn Host, from: usize, to: &str, bytes: Bytes) {
        let Some(to) = index_of_name(to).filter(|&j| j < self.nodes.len()) else {
            self.tally.messages_dropped += 1;
            return;
        };
        let Some(delay) = host.reliable_delay(from, to) else {
            self.tally.messages_dropped += 1;
            return;
        };
        let link = self.link_clock.entry((from, to)).or_default();
        let at = host.now().plus_ms(delay).max(*link);
        *link = at;
        host.schedule(at, SchedEvent::Message { to, from, bytes });
    }

    /// A message arrives at node `to` (a paused node gets it after the pause).
    pub(super) fn message(&mut self, host: &mut dyn Host, to: usize, from: usize, bytes: Bytes) {
        let now = host.now();
        if host.process(to).state == ProcessState::Paused {
            host.schedule(
                now.plus_ms(FEED_MS),
                SchedEvent::Message { to, from, bytes },
            );
            return;
        }
        let Some(core) = self.nodes[to].core.as_mut() else {
            self.tally.messages_dropped += 1;
            return;
        };
        if host.scheduler_deaf(to) {
            self.tally.messages_dropped += 1;
            return;
        }
        match executor::decode(&bytes, &self.config) {
            Some(msg) => {
                self.tally.messages_delivered += 1;
                core.handle_message(now, &node_name(from), msg);
            }
            None => self.tally.undecodable += 1,
        }
        self.drain(host, to);
    }

    /// Node `i`'s queued wake-up is due.
    pub(super) fn wake(&mut self, host: &mut dyn Host, i: usize, era: u64) {
        let now = host.now();
        let process = host.process(i);
        if process.era != era || process.state == ProcessState::Paused {
            return;
        }
        let node = &mut self.nodes[i];
        if node.next_wake != Some(now) {
            return;
        }
        node.next_wake = None;
        if let Some(core) = node.core.as_mut() {
            core.handle_timeout(now);
        }
        self.drain(host, i);
    }

    /// Wakes node `i`'s core now, whatever was queued (after a pause).
    pub(super) fn wake_now(&mut self, host: &mut dyn Host, i: usize) {
        let now = host.now();
        let node = &mut self.nodes[i];
        node.next_wake = None;
        if let Some(core) = node.core.as_mut() {
            core.handle_timeout(now);
        }
        self.drain(host, i);
    }

    /// Arrival `k` is submitted to a running node drawn at random.
    pub(super) fn submit(&mut self, host: &mut dyn Host, k: usize) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| host.process(i).state == ProcessState::Running)
            .collect();
        let now = host.now();
        let Some(spec) = self.spec(k) else {
            return;
        };
        if running.is_empty() {
            self.tally.submit_refused.0 += 1;
            return;
        }
        let i = running[self.submit_rng.random_range(0..running.len())];
        let job = spec.id.clone();
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        match core.submit(now, spec) {
            Ok(receipt) => {
                self.nodes[i].receipts.push(receipt);
                self.tally.submitted_at.insert(job, now.0);
            }
            Err(e) => {
                self.tally.submit_refused.0 += 1;
                self.tally
                    .submit_refused
                    .1
                    .get_or_insert(format!("{job} on n{i}: {e}"));
            }
        }
        self.drain(host, i);
    }

    /// Service `k` is re-submitted as `version` to a running node drawn at random (a
    /// rolling update); refusals are counted as submissions' are.
    pub(super) fn update(&mut self, host: &mut dyn Host, k: usize, version: u32) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| host.process(i).state == ProcessState::Running)
            .collect();
        if running.is_empty() || self.versions.get(k).is_none() {
            return;
        }
        self.versions[k] = version;
        let Some(spec) = self.spec(k) else {
            return;
        };
        let i = running[self.submit_rng.random_range(0..running.len())];
        let now = host.now();
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        if let Err(e) = core.submit(now, spec) {
            self.tally.submit_refused.0 += 1;
            self.tally
                .submit_refused
                .1
                .get_or_insert(format!("update {version} of job-{k} on n{i}: {e}"));
        }
        self.drain(host, i);
    }

    /// The spec submitted for arrival `k`.
    pub(super) fn spec(&self, k: usize) -> Option<shoal_scheduler::JobSpec> {
        let j = self.jobs.get(k)?;
        let mut value = j.base_spec();
        if let Some(ms) = self.stop_after_ms {
            value["disconnect"]["stop_after_ms"] = ms.into();
        }
        if let Some(r) = self.reconcile {
            value["disconnect"]["reconcile"] = serde_json::to_value(r).ok()?;
        }
        if let Some(p) = self.service_placement.filter(|_| j.service) {
            value["placement"] = serde_json::to_value(p).ok()?;
        }
        if let Some(c) = self.services.as_ref().filter(|_| j.service) {
            let ports: Vec<serde_json::Value> = (0..c.ports)
                .map(|n| {
                    let name = if n == 0 {
                        "http".to_string()
                    } else {
                        format!("p{n}")
                    };
                    serde_json::json!({ "name": name })
                })
                .collect();
            value["ports"] = ports.into();
            value["checks"] = serde_json::json!([{
                "name": "ready",
                "type": "http",
                "port": "http",
                "path": "/health",
                "interval_ms": c.interval_ms,
                "timeout_ms": c.timeout_ms,
                "grace_ms": c.grace_ms,
                "failures": c.failures,
            }]);
        }
        if let Some(u) = self.updates.as_ref().filter(|_| j.service) {
            let declared = u.max_parallel.min(j.tasks);
            let max_parallel = if self.ignore_window {
                0
            } else if self.drains.sabotage == super::DrainSabotage::InflateMaxParallel {
                j.tasks
            } else {
                declared
            };
            value["update"] = serde_json::json!({
                "max_parallel": max_parallel,
                "min_healthy_ms": u.min_healthy_ms,
                "healthy_deadline_ms": u.healthy_deadline_ms,
                "auto_revert": u.auto_revert,
            });
            let version = self.versions.get(k).copied().unwrap_or(1);
            value["env"] = serde_json::json!({ "VERSION": version.to_string() });
            if self.bad.contains(&(k, version)) {
                value["env"]["BAD"] = "1".into();
            }
        }
        shoal_scheduler::JobSpec::from_json_value(value).ok()
    }
}
