//! The placement bench's world: N production scheduler cores on one virtual clock, a static
//! all-alive membership view, ops replicated over simulated reliable streams, and a simulated
//! executor. One thread, one seed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use bytes::Bytes;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use shoal_gossip::{MemberInfo, MemberStatus, Millis, NodeId, Quorum, ResourceAd, Resources};
use shoal_scheduler::{
    AttemptId, ExecCommand, JobSpec, MemberView, Message, Scheduler, SchedulerConfig, TaskEvent,
};

use crate::scenario::NodeShape;
use crate::shared::{Dist, derive_seed, index_of_name, ip_of, node_name, round3};
use crate::workload::JobArrival;

/// A start takes this long, drawn uniformly, from the command to `Started` (the simulator's
/// `sched/processes.rs` draws the same).
const START_DELAY_MS: (u64, u64) = (5, 80);

/// How the world is set up.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub nodes: usize,
    pub seed: u64,
    pub shape: NodeShape,
    pub racks: usize,
    /// Reliable-stream delay: `latency_ms + Exp(jitter_ms)`, rounded up, at least 1 ms.
    pub latency_ms: f64,
    pub jitter_ms: f64,
    pub end_ms: u64,
    pub sample_ms: u64,
    pub config: SchedulerConfig,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Measured {
    /// Process starts (every copy of every slot).
    pub starts: u64,
    /// Starts of a slot after its first (the same slot placed again: a duplicate or a
    /// re-placement after an end that was not a success).
    pub starts_again: u64,
    /// Slots that started at least once.
    pub slots_started: u64,
    /// Batch slots that ran to completion.
    pub completed: u64,
    /// Proposals written by coordinators (every core's `stats().placements`).
    pub proposals: u64,
    /// Proposals refused at admission (every core's `stats().rejections`).
    pub rejections: u64,
    /// Kill orders executed on a running process.
    pub kills: u64,
    /// Ops applied, summed over replicas.
    pub ops_applied: u64,
    /// Ops written (by their writers).
    pub ops_written: u64,
    /// Scheduler messages delivered.
    pub messages: u64,
    /// Bytes of scheduler messages delivered (summed over recipients).
    pub message_bytes: u64,
    /// Events the loop processed.
    pub events: u64,
    /// Submission → first start of each slot.
    pub wait_ms: Dist,
    /// Mean over samples of the CPU of every running process / capacity.
    pub utilization: f64,
    /// Mean over samples of the CPU of one copy per running slot / capacity.
    pub goodput: f64,
    /// Slots neither running nor done at the end.
    pub pending_at_end: u64,
    /// Most extra copies of running slots at one sample.
    pub double_run_peak: u64,
    /// Submissions refused by the core they were handed to.
    pub submit_refused: u64,
}

#[derive(Debug)]
enum Ev {
    Submit(u32),
    Wake(u32),
    /// One message for every recipient in `to` that it reaches at the same time (one
    /// event per broadcast and delivery time instead of one per recipient).
    Msg {
        to: Vec<u32>,
        from: u32,
        bytes: Bytes,
    },
    Started {
        pid: u64,
    },
    Exit {
        pid: u64,
    },
    Sample,
}

#[derive(Debug)]
struct Proc {
    node: u32,
    task: AttemptId,
    job: u32,
    cpu: u64,
    reported: bool,
}

struct Node {
    core: Box<Scheduler>,
    next_wake: Option<u64>,
    /// Task → pid of the process running it here.
    running: BTreeMap<AttemptId, u64>,
}

/// The world.
pub(crate) struct World<'a> {
    setup: Setup,
    jobs: &'a [JobArrival],
    by_name: rustc_hash::FxHashMap<String, u32>,
    /// Node names by index (`n<i>`), made once.
    names: Vec<String>,
    nodes: Vec<Node>,
    now: u64,
    seq: u64,
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    slab: Vec<Option<Ev>>,
    free: Vec<u32>,
    /// FIFO per ordered pair: the last delivery time, dense `from * n + to`.
    link: Vec<u32>,
    net_rng: StdRng,
    exec_rng: StdRng,
    submit_rng: StdRng,
    procs: rustc_hash::FxHashMap<u64, Proc>,
    next_pid: u64,
    submitted_at: Vec<Option<u64>>,
    /// (job, slot) → copies running now.
    copies: rustc_hash::FxHashMap<(u32, u32), u32>,
    first_start: rustc_hash::FxHashMap<(u32, u32), u64>,
    completed: rustc_hash::FxHashSet<(u32, u32)>,
    util_sum: f64,
    good_sum: f64,
    samples: u64,
    m: Measured,
}

impl<'a> World<'a> {
    /// Every core started and handed the static view and quorum at time 0.
    pub(crate) fn new(setup: Setup, jobs: &'a [JobArrival]) -> Self {
        let n = setup.nodes;
        // Built once and shared by every core (`MemberView`): a copy per core was ~650 bytes
        // per member per core, 16 GiB at 5,000 nodes.
        let members = MemberView::new(&static_view(n, setup.shape, setup.racks.max(1)));
        let quorum = Quorum {
            known: n as u32,
            reachable: n as u32,
            majority: true,
            since: Millis(0),
            reason: None,
            settle_ms: 0,
            stalled: false,
            just_declared_down: false,
        };
        let nodes = (0..n)
            .map(|i| {
                let mut config = setup.config.clone();
                config.service_ip = std::net::IpAddr::V4(ip_of(i));
                let seed = derive_seed(setup.seed, 6, i as u64, 1);
                let mut core = Scheduler::new(node_name(i), config, seed);
                core.handle_quorum(Millis(0), &quorum);
                core.handle_member_view(Millis(0), &members);
                Node {
                    core: Box::new(core),
                    next_wake: None,
                    running: BTreeMap::new(),
                }
            })
            .collect();
        let by_name = jobs
            .iter()
            .enumerate()
            .map(|(k, j)| (j.name.clone(), k as u32))
            .collect();
        let seed = setup.seed;
        let mut w = World {
            link: vec![0; n * n],
            setup,
            jobs,
            by_name,
            names: (0..n).map(node_name).collect(),
            nodes,
            now: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            net_rng: StdRng::seed_from_u64(derive_seed(seed, 2, 0, 0)),
            exec_rng: StdRng::seed_from_u64(derive_seed(seed, 8, 0, 0)),
            submit_rng: StdRng::seed_from_u64(derive_seed(seed, 7, 0, 0)),
            procs: Default::default(),
            next_pid: 0,
            submitted_at: vec![None; jobs.len()],
            copies: Default::default(),
            first_start: Default::default(),
            completed: Default::default(),
            util_sum: 0.0,
            good_sum: 0.0,
            samples: 0,
            m: Measured::default(),
        };
        for i in 0..n {
            w.drain(i);
        }
        for (k, j) in jobs.iter().enumerate() {
            w.schedule(j.at_ms, Ev::Submit(k as u32));
        }
        w.schedule(0, Ev::Sample);
        w
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        let idx = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(ev);
                i
            }
            None => {
                self.slab.push(Some(ev));
                (self.slab.len() - 1) as u32
            }
        };
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, idx)));
    }

    /// Runs until `end_ms`; `progress` gets the virtual time now and then.
    pub(crate) fn run(&mut self, progress: &mut dyn FnMut(u64)) {
        let mut shown = 0;
        while let Some(Reverse((at, _, idx))) = self.heap.pop() {
            if at > self.setup.end_ms {
                break;
            }
            let Some(ev) = self.slab[idx as usize].take() else {
                continue;
            };
            self.free.push(idx);
            self.now = at;
            self.m.events += 1;
            if at >= shown + 1000 {
                shown = at - at % 1000;
                progress(at);
            }
            match ev {
                Ev::Submit(k) => self.submit(k as usize),
                Ev::Wake(i) => self.wake(i as usize),
                Ev::Msg { to, from, bytes } => {
                    // Counted as one event per recipient, as when each had its own.
                    self.m.events += to.len() as u64 - 1;
                    for j in to {
                        self.deliver(j as usize, from as usize, &bytes);
                    }
                }
                Ev::Started { pid } => self.started(pid),
                Ev::Exit { pid } => self.exited(pid),
                Ev::Sample => self.sample(),
            }
        }
    }

    fn now(&self) -> Millis {
        Millis(self.now)
    }

    fn submit(&mut self, k: usize) {
        let i = self.submit_rng.random_range(0..self.nodes.len());
        let Some(spec) = spec(&self.jobs[k]) else {
            self.m.submit_refused += 1;
            return;
        };
        let now = self.now();
        match self.nodes[i].core.submit(now, spec) {
            Ok(_) => self.submitted_at[k] = Some(self.now),
            Err(_) => self.m.submit_refused += 1,
        }
        self.drain(i);
    }

    fn wake(&mut self, i: usize) {
        if self.nodes[i].next_wake != Some(self.now) {
            return;
        }
        self.nodes[i].next_wake = None;
        let now = self.now();
        self.nodes[i].core.handle_timeout(now);
        self.drain(i);
    }

    fn deliver(&mut self, to: usize, from: usize, bytes: &Bytes) {
        let now = self.now();
        let node = &mut self.nodes[to];
        match Message::decode_shared(bytes, &self.setup.config.wire) {
            Ok(msg) => {
                self.m.messages += 1;
                self.m.message_bytes += bytes.len() as u64;
                node.core.handle_message(now, &self.names[from], msg);
            }
            Err(e) => panic!("a message from n{from} to n{to} does not decode: {e}"),
        }
        self.drain(to);
    }

    /// Routes everything core `i` produced and re-arms its wake-up.
    fn drain(&mut self, i: usize) {
        let now = self.now();
        loop {
            let core = &mut self.nodes[i].core;
            if let Some(cmd) = core.poll_command() {
                self.execute(i, cmd);
                continue;
            }
            if let Some(batch) = core.poll_job_records() {
                // No disk: the job log is written at once.
                core.handle_persisted(now, batch.batch);
                continue;
            }
            let Some(out) = core.poll_message() else {
                break;
            };
            let bytes = Bytes::from(out.message.encode());
            // Recipients grouped by delivery time, the groups in the order of their first
            // recipient: the events run in the order one event per recipient ran in.
            let mut groups: Vec<(u64, Vec<u32>)> = Vec::new();
            for to in out.to.iter() {
                let Some(j) = index_of_name(to).filter(|&j| j < self.nodes.len()) else {
                    continue;
                };
                let at = self.delivery_at(i, j);
                match groups.iter_mut().find(|(t, _)| *t == at) {
                    Some((_, to)) => to.push(j as u32),
                    None => groups.push((at, vec![j as u32])),
                }
            }
            for (at, to) in groups {
                let from = i as u32;
                let bytes = bytes.clone();
                self.schedule(at, Ev::Msg { to, from, bytes });
            }
        }
        if let Some(due) = self.nodes[i].core.poll_timeout() {
            let at = due.0.max(self.now);
            let node = &mut self.nodes[i];
            if node.next_wake.is_none_or(|w| at < w) {
                node.next_wake = Some(at);
                self.schedule(at, Ev::Wake(i as u32));
            }
        }
    }

    /// When a message sent now on the stream `from` → `to` arrives (FIFO per stream).
    fn delivery_at(&mut self, from: usize, to: usize) -> u64 {
        let s = &self.setup;
        let jitter = if s.jitter_ms > 0.0 {
            let u: f64 = self.net_rng.random();
            -(1.0 - u).ln() * s.jitter_ms
        } else {
            0.0
        };
        let delay = ((s.latency_ms + jitter).ceil() as u64).max(1);
        let link = &mut self.link[from * self.nodes.len() + to];
        let at = (self.now + delay).max(u64::from(*link));
        *link = u32::try_from(at).unwrap_or(u32::MAX);
        at
    }

    fn execute(&mut self, i: usize, cmd: ExecCommand) {
        match cmd {
            ExecCommand::Start {
                task, resources, ..
            } => {
                if self.nodes[i].running.contains_key(&task) {
                    return;
                }
                let Some(&job) = self.by_name.get(task.job.as_str()) else {
                    return;
                };
                self.next_pid += 1;
                let pid = self.next_pid;
                let key = (job, task.slot);
                self.m.starts += 1;
                if self.first_start.contains_key(&key) {
                    self.m.starts_again += 1;
                } else {
                    let submitted = self.submitted_at[job as usize].unwrap_or(self.now);
                    self.first_start
                        .insert(key, self.now.saturating_sub(submitted));
                }
                *self.copies.entry(key).or_default() += 1;
                self.nodes[i].running.insert(task.clone(), pid);
                self.procs.insert(
                    pid,
                    Proc {
                        node: i as u32,
                        task,
                        job,
                        cpu: resources.cpu_millicores,
                        reported: false,
                    },
                );
                let delay = self
                    .exec_rng
                    .random_range(START_DELAY_MS.0..=START_DELAY_MS.1);
                self.schedule(self.now + delay, Ev::Started { pid });
            }
            ExecCommand::Kill { task, .. } => {
                if let Some(pid) = self.nodes[i].running.remove(&task) {
                    self.m.kills += 1;
                    self.remove_proc(pid);
                }
                let now = self.now();
                self.nodes[i]
                    .core
                    .handle_task_event(now, task, TaskEvent::Killed);
            }
            ExecCommand::Checks { .. } | ExecCommand::StopChecks { .. } => {}
        }
    }

    fn remove_proc(&mut self, pid: u64) -> Option<Proc> {
        let p = self.procs.remove(&pid)?;
        let key = (p.job, p.task.slot);
        if let Some(c) = self.copies.get_mut(&key) {
            *c -= 1;
            if *c == 0 {
                self.copies.remove(&key);
            }
        }
        Some(p)
    }

    fn started(&mut self, pid: u64) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        p.reported = true;
        let (i, task, job) = (p.node as usize, p.task.clone(), p.job as usize);
        let run = self.jobs[job].durations_ms.get(task.slot as usize).copied();
        let now = self.now();
        self.nodes[i]
            .core
            .handle_task_event(now, task, TaskEvent::Started { pid: pid as u32 });
        if let Some(run) = run {
            self.schedule(self.now + run, Ev::Exit { pid });
        }
        self.drain(i);
    }

    fn exited(&mut self, pid: u64) {
        let Some(p) = self.remove_proc(pid) else {
            return;
        };
        let i = p.node as usize;
        self.nodes[i].running.remove(&p.task);
        self.completed.insert((p.job, p.task.slot));
        let now = self.now();
        self.nodes[i]
            .core
            .handle_task_event(now, p.task, TaskEvent::Exited { code: 0 });
        self.drain(i);
    }

    fn sample(&mut self) {
        let cap = (self.nodes.len() as u64 * self.setup.shape.cpu_millicores).max(1) as f64;
        let mut used = 0;
        let mut unique: rustc_hash::FxHashMap<(u32, u32), u64> = Default::default();
        for p in self.procs.values() {
            used += p.cpu;
            unique.insert((p.job, p.task.slot), p.cpu);
        }
        let good: u64 = unique.values().sum();
        let doubles = self.procs.len() as u64 - unique.len() as u64;
        self.m.double_run_peak = self.m.double_run_peak.max(doubles);
        self.util_sum += round3(used as f64 / cap);
        self.good_sum += round3(good as f64 / cap);
        self.samples += 1;
        let next = self.now + self.setup.sample_ms.max(1);
        if next <= self.setup.end_ms {
            self.schedule(next, Ev::Sample);
        }
    }

    /// The measurements, after [`World::run`].
    pub(crate) fn measured(&self) -> Measured {
        let mut m = self.m.clone();
        for node in &self.nodes {
            let s = node.core.stats();
            m.proposals += s.placements;
            m.rejections += s.rejections;
            m.ops_applied += s.ops_applied;
            m.ops_written += s.ops_written;
        }
        let waits: Vec<u64> = self.first_start.values().copied().collect();
        m.wait_ms = Dist::of(&waits);
        m.slots_started = self.first_start.len() as u64;
        m.completed = self.completed.len() as u64;
        let samples = self.samples.max(1) as f64;
        m.utilization = round3(self.util_sum / samples);
        m.goodput = round3(self.good_sum / samples);
        let submitted: u64 = self
            .jobs
            .iter()
            .zip(&self.submitted_at)
            .filter(|(_, s)| s.is_some())
            .map(|(j, _)| u64::from(j.tasks))
            .sum();
        m.pending_at_end = submitted.saturating_sub(m.completed + self.copies.len() as u64);
        m
    }
}

/// Every node alive with the same capacity, `rack=r<k>` in contiguous racks, sorted by name
/// as the membership core lists it.
fn static_view(n: usize, shape: NodeShape, racks: usize) -> Vec<MemberInfo> {
    let per_rack = n.div_ceil(racks).max(1);
    let mut members: Vec<MemberInfo> = (0..n)
        .map(|i| {
            let name = node_name(i);
            let addr = std::net::SocketAddr::from((ip_of(i), 7946));
            MemberInfo {
                id: NodeId {
                    name: name.as_str().into(),
                    addr,
                    generation: 1,
                },
                status: MemberStatus::Alive,
                ad: Some(ResourceAd {
                    node: name.as_str().into(),
                    generation: 1,
                    version: 1,
                    capacity: Resources {
                        cpu_millicores: shape.cpu_millicores,
                        memory_mib: shape.memory_mib,
                        disk_mib: shape.disk_mib,
                    },
                    attributes: std::sync::Arc::new(
                        [("rack".to_string(), format!("r{}", i / per_rack))]
                            .into_iter()
                            .collect(),
                    ),
                    draining: false,
                    left: false,
                    port_range: None,
                    quic_addr: None,
                    http_addr: None,
                    gossip_addr: Some(addr),
                }),
                last_update: Millis(0),
            }
        })
        .collect();
    members.sort_by(|a, b| a.id.name.cmp(&b.id.name));
    members
}

/// The spec submitted for an arrival: the simulator's base spec, without ports, checks or
/// updates.
fn spec(j: &JobArrival) -> Option<JobSpec> {
    serde_json::from_value(j.base_spec()).ok()
}
