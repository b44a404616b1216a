//! What happened during one chaos run, as data the checkers judge: every request with its
//! answer and times, every fault, and every task process seen in `/proc`.
//!
//! Task processes are sampled, not reported by the agents: the sampler reads `/proc` every
//! [`SAMPLE_PERIOD`] and keeps each process group leader of the run's namespaces whose
//! environment names a task (`SHOAL_JOB`, `SHOAL_SLOT`, `SHOAL_ATTEMPT`, `SHOAL_TASK_DIR`, set by
//! the executor). The node is the namespace the process lives in (what `ip netns identify`
//! answers, read from `/proc/PID/ns/net`); the task dir is kept as a cross-check. A process is
//! one `(pid, start time)`: a reused pid is a new process. Because a process cannot come back
//! once gone, each is stored as the interval between the first and the last sample that saw
//! it, which is exact with respect to the samples: it was alive at sample `t` iff
//! `first_ms <= t <= last_ms`.
//!
//! Times are milliseconds since the run started, on one monotonic clock shared by the
//! requests, the faults and the samples.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::net::{all_pids, netns_of};

/// How often `/proc` is read (the brief: every 100–250 ms).
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(200);

/// One run's record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// The scenario (the test's name).
    pub scenario: String,
    /// Wall clock at time 0, to line the history up with the agents' logs.
    pub started_unix_ms: u64,
    /// The nodes, in order, with the capacity each agent was started with.
    pub nodes: Vec<NodeInfo>,
    /// Submissions and stops, in the order they were sent.
    pub requests: Vec<Request>,
    /// Faults, heals, restarts: what the test did to the cluster.
    pub events: Vec<Event>,
    /// When each `/proc` sample was taken.
    pub sample_times_ms: Vec<u64>,
    /// Every task process seen, with the interval of samples that saw it.
    pub tasks: Vec<TaskSeen>,
    /// What each node answered to `GET /v1/jobs` at the end (nodes down at the end: absent).
    pub final_views: BTreeMap<String, FinalView>,
}

/// A node of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `--name`.
    pub name: String,
    /// Its address on the bridge.
    pub addr: String,
    /// `--cpu`.
    pub cpu_millicores: u64,
    /// `--memory`.
    pub memory_mib: u64,
}

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `POST /v1/jobs`.
    Submit,
    /// `DELETE /v1/jobs/{id}`.
    Stop,
}

/// One request and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Submission or stop.
    pub op: Op,
    /// The node it was sent to.
    pub node: String,
    /// The job id.
    pub job: String,
    /// The spec sent (submissions).
    pub spec: Option<Value>,
    /// When it was sent.
    pub sent_ms: u64,
    /// When the answer (or the error) came.
    pub answered_ms: u64,
    /// The HTTP status; `None` when no answer came (the error is in `body`).
    pub status: Option<u16>,
    /// The answer's body, or the transport error.
    pub body: String,
}

/// Something the test did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When.
    pub t_ms: u64,
    /// What, in words (`isolate n5`, `heal`, `kill -9 agent n3 (pid 812)`).
    pub what: String,
}

/// One task process, from the first to the last sample that saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSeen {
    /// Its pid (also its process group: the executor makes each task a group leader).
    pub pid: i32,
    /// Its start time in clock ticks after boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
    /// The node whose namespace it runs in.
    pub node: String,
    /// The job id: `SHOAL_JOB` up to its first `.`.
    pub job: String,
    /// `SHOAL_JOB` whole: `{job}.{incarnation}.{placer}` (the executor's task key; job ids
    /// hold no `.`).
    pub job_key: String,
    /// `SHOAL_SLOT`.
    pub slot: u32,
    /// `SHOAL_ATTEMPT`.
    pub attempt: u32,
    /// `SHOAL_TASK_DIR`.
    pub task_dir: String,
    /// The first sample that saw it.
    pub first_ms: u64,
    /// The last sample that saw it.
    pub last_ms: u64,
}

impl TaskSeen {
    /// Whether the process was alive at sample time `t`.
    pub fn live_at(&self, t: u64) -> bool {
        self.first_ms <= t && t <= self.last_ms
    }
}

/// A node's answer to `GET /v1/jobs` at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalView {
    /// The jobs it listed.
    Jobs(Vec<JobSeen>),
    /// It did not answer (the error).
    NoAnswer(String),
}

/// One job of a final view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSeen {
    /// Its id.
    pub id: String,
    /// Stopped by a user.
    pub stopped: bool,
    /// Its status word.
    pub status: String,
    /// The slots the node says run: (slot, node).
    pub running: Vec<(u32, String)>,
}

impl History {
    /// The time of the last sample (0 before any).
    pub fn end_ms(&self) -> u64 {
        self.sample_times_ms.last().copied().unwrap_or(0)
    }

    /// The spec of the latest submission of `job`, whatever its answer.
    pub fn spec_of(&self, job: &str) -> Option<&Value> {
        self.requests
            .iter()
            .rev()
            .filter(|r| r.op == Op::Submit && r.job == job)
            .find_map(|r| r.spec.as_ref())
    }

    /// When a stop of `job` was first sent, if ever.
    pub fn stop_sent_ms(&self, job: &str) -> Option<u64> {
        self.requests
            .iter()
            .filter(|r| r.op == Op::Stop && r.job == job)
            .map(|r| r.sent_ms)
            .min()
    }

    /// Whether `job` was submitted again (an update) after `t`.
    pub fn resubmitted_after(&self, job: &str, t: u64) -> bool {
        self.requests
            .iter()
            .any(|r| r.op == Op::Submit && r.job == job && r.sent_ms > t)
    }

    /// The node's capacity, if it is a node of the run.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The largest gap between two consecutive samples: the resolution of every time measured
    /// from them.
    pub fn largest_sample_gap_ms(&self) -> u64 {
        self.sample_times_ms
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
}

/// The shared, growing history of a running scenario and its clock.
#[derive(Debug, Clone)]
pub struct Recorder {
    history: Arc<Mutex<History>>,
    t0: Instant,
}

impl Recorder {
    /// Starts the clock.
    pub fn new(scenario: &str, nodes: Vec<NodeInfo>) -> Recorder {
        let started_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Recorder {
            history: Arc::new(Mutex::new(History {
                scenario: scenario.to_string(),
                started_unix_ms,
                nodes,
                ..History::default()
            })),
            t0: Instant::now(),
        }
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// The history, locked (a panicking sampler must not hide the history from the report).
    pub fn lock(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records something the test did, now; returns its time.
    pub fn event(&self, what: impl Into<String>) -> u64 {
        let t_ms = self.now_ms();
        let what = what.into();
        eprintln!("chaos [{:>7.1} s] {what}", t_ms as f64 / 1000.0);
        self.lock().events.push(Event { t_ms, what });
        t_ms
    }

    /// Appends a request.
    pub fn request(&self, request: Request) {
        self.lock().requests.push(request);
    }

    /// A copy of the history as it is now.
    pub fn snapshot(&self) -> History {
        self.lock().clone()
    }
}

/// The background thread that reads `/proc` every [`SAMPLE_PERIOD`].
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling the processes of the given namespaces (inode → node name).
    pub fn start(recorder: Recorder, namespaces: BTreeMap<u64, String>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("chaos-sampler".into())
            .spawn(move || {
                let mut index: BTreeMap<(i32, u64), usize> = BTreeMap::new();
                let mut next = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    let t = recorder.now_ms();
                    let seen = sample_tasks(&namespaces);
                    record_sample(&mut recorder.lock(), &mut index, t, seen);
                    next += SAMPLE_PERIOD;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        // Starved (a loaded machine): sample again at once, but do not try to
                        // catch up a backlog; the gap shows in the history.
                        next = now;
                    }
                }
            })
            .expect("the sampler thread starts");
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling. Returns `false` when the sampler thread had died (panicked): the
    /// history then ends early, and the run cannot be judged.
    pub fn stop(&mut self) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take() {
            Some(h) => h.join().is_ok(),
            None => true,
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A task process found in one sample (before it is merged into the intervals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub pid: i32,
    pub start_ticks: u64,
    pub node: String,
    pub job: String,
    pub job_key: String,
    pub slot: u32,
    pub attempt: u32,
    pub task_dir: String,
}

/// Merges one sample into the history: a known process extends its interval, a new one
/// starts one.
pub fn record_sample(
    h: &mut History,
    index: &mut BTreeMap<(i32, u64), usize>,
    t: u64,
    seen: Vec<Found>,
) {
    h.sample_times_ms.push(t);
    for f in seen {
        match index.get(&(f.pid, f.start_ticks)) {
            Some(&i) => h.tasks[i].last_ms = t,
            None => {
                index.insert((f.pid, f.start_ticks), h.tasks.len());
                h.tasks.push(TaskSeen {
                    pid: f.pid,
                    start_ticks: f.start_ticks,
                    node: f.node,
                    job: f.job,
                    job_key: f.job_key,
                    slot: f.slot,
                    attempt: f.attempt,
                    task_dir: f.task_dir,
                    first_ms: t,
                    last_ms: t,
                });
            }
        }
    }
}

/// Every live task process in the given namespaces (inode → node name).
pub fn sample_tasks(namespaces: &BTreeMap<u64, String>) -> Vec<Found> {
    all_pids()
        .into_iter()
        .filter_map(|pid| {
            let node = namespaces.get(&netns_of(pid)?)?;
            task_of(pid, node)
        })
        .collect()
}

/// The task `pid` runs, if it is a live task process group leader.
pub fn task_of(pid: i32, node: &str) -> Option<Found> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, pgrp, start_ticks) = parse_stat(&stat)?;
    if state == 'Z' || pgrp != pid {
        return None;
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let env: BTreeMap<&[u8], &[u8]> = environ
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let eq = kv.iter().position(|b| *b == b'=')?;
            Some((&kv[..eq], &kv[eq + 1..]))
        })
        .collect();
    let var = |k: &str| {
        env.get(k.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let job_key = var("SHOAL_JOB")?;
    Some(Found {
        pid,
        start_ticks,
        node: node.to_string(),
        job: job_key.split('.').next().unwrap_or_default().to_string(),
        job_key,
        slot: var("SHOAL_SLOT")?.parse().ok()?,
        attempt: var("SHOAL_ATTEMPT")?.parse().ok()?,
        task_dir: var("SHOAL_TASK_DIR").unwrap_or_default(),
    })
}

/// State, process group and start time from `/proc/PID/stat` (fields 3, 5 and 22; the
/// command in field 2 may hold spaces and parentheses, so fields are counted after the last
/// `)`).
pub fn parse_stat(stat: &str) -> Option<(char, i32, u64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let pgrp = fields.get(2)?.parse().ok()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some((state, pgrp, start_ticks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn stat_fields_are_counted_after_the_command() {
        let stat =
            "4242 (we)ird (name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1 2";
        assert_eq!(parse_stat(stat), Some(('S', 4242, 987654)));
    }

    /// The sampler sees a task-like process (own group, the executor's variables) in this
    /// namespace, with its fields, and ignores it once it is gone.
    #[test]
    fn the_sampler_sees_a_task_process_and_its_end() {
        let here = netns_of(std::process::id() as i32).expect("own netns");
        let namespaces = BTreeMap::from([(here, "host".to_string())]);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("SHOAL_JOB", "probe.77.n1")
            .env("SHOAL_SLOT", "3")
            .env("SHOAL_ATTEMPT", "2")
            .env("SHOAL_TASK_DIR", "/nowhere")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // The environment is the one at exec; wait until the child has exec'd `sleep`.
        let found = (0..100)
            .find_map(|_| {
                let f = sample_tasks(&namespaces).into_iter().find(|f| f.pid == pid);
                if f.is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                f
            })
            .expect("the sampler finds the task within 2 s");
        assert_eq!(
            (
                found.node.as_str(),
                found.job.as_str(),
                found.slot,
                found.attempt
            ),
            ("host", "probe", 3, 2)
        );
        assert_eq!(
            (found.job_key.as_str(), found.task_dir.as_str()),
            ("probe.77.n1", "/nowhere")
        );
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            !sample_tasks(&namespaces).iter().any(|f| f.pid == pid),
            "a reaped process is no task"
        );
    }

    #[test]
    fn samples_merge_into_intervals_and_a_reused_pid_is_a_new_process() {
        let mut h = History::default();
        let mut index = BTreeMap::new();
        let f = |pid, start| Found {
            pid,
            start_ticks: start,
            node: "n1".into(),
            job: "j".into(),
            job_key: "j.1.n1".into(),
            slot: 0,
            attempt: 1,
            task_dir: String::new(),
        };
        record_sample(&mut h, &mut index, 0, vec![f(10, 1)]);
        record_sample(&mut h, &mut index, 200, vec![f(10, 1)]);
        record_sample(&mut h, &mut index, 400, vec![f(10, 5)]);
        assert_eq!(h.tasks.len(), 2);
        assert_eq!((h.tasks[0].first_ms, h.tasks[0].last_ms), (0, 200));
        assert_eq!((h.tasks[1].first_ms, h.tasks[1].last_ms), (400, 400));
        assert!(h.tasks[0].live_at(200) && !h.tasks[0].live_at(400));
    }
}
