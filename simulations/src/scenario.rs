//! Scenario files: the cluster, the network, a fault script and an optional workload, as TOML.
//!
//! A scenario is parsed into [`Scenario`] (the file's shape, every field checked) and then
//! compiled by [`Scenario::plan`] into a [`Plan`]: a time-ordered list of primitive
//! [`Action`]s with every time in virtual milliseconds. Node selections that depend on the run
//! (`random = 3`) stay symbolic until the simulator executes them, so they are drawn from the
//! seed at that moment. See `docs/simulator.md` for the format with examples.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod jobs;
mod node_commands;

pub use jobs::{Services, Updates, Workload};

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the format.
    #[error("{path}: {source}")]
    Parse {
        /// The path given.
        path: String,
        /// The parser's complaint.
        source: Box<toml::de::Error>,
    },
    /// A field is out of range or a fault lacks what its kind needs.
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid(msg.into())
}

/// One scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in output paths.
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Number of nodes (overridable with `--nodes`).
    pub nodes: usize,
    /// Simulated time, in seconds.
    pub duration_s: f64,
    /// Seed used when `--seed` is not given.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Nodes are spread over this many racks (`rack=r0` … attributes), contiguously by index.
    #[serde(default = "default_racks")]
    pub racks: usize,
    /// Capacity of every node.
    #[serde(default)]
    pub node: NodeShape,
    /// How nodes start.
    #[serde(default)]
    pub start: StartParams,
    /// The network model at time zero.
    #[serde(default)]
    pub network: NetworkParams,
    /// Checker settings.
    #[serde(default)]
    pub checks: CheckParams,
    /// Overrides of the membership core's `Config` (defaults are the production ones).
    #[serde(default)]
    pub membership: MembershipParams,
    /// The fault script.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Job arrivals, if any.
    #[serde(default)]
    pub workload: Option<Workload>,
    /// How the scheduler cores are driven (only with a workload).
    #[serde(default)]
    pub scheduler: SchedulerParams,
}

/// How the membership core's quorum reaches the scheduler cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuorumFeed {
    /// As the agent does (`node/src/sched_driver.rs`): the membership core's `quorum()` before
    /// every members view and at every change.
    #[default]
    Fed,
    /// Never: each scheduler core keeps the quorum it starts with (a majority, no settling),
    /// which is how the agent behaved before issue 12. For the checker bites.
    None,
    /// Fed, but with `settle_ms` = 0: a down member is condemned the moment it is down. For
    /// the checker bites.
    Unsettled,
}

/// `[scheduler]`: how the scheduler cores are driven.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerParams {
    /// `fed` (default, the agent's way), `none` or `unsettled` (older behaviours, to show the
    /// checkers bite).
    pub quorum_feed: QuorumFeed,
}

fn default_seed() -> u64 {
    1
}
fn default_racks() -> usize {
    4
}

/// The capacity every node advertises.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeShape {
    /// CPU in millicores.
    pub cpu_millicores: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disk in MiB.
    pub disk_mib: u64,
}

impl Default for NodeShape {
    fn default() -> Self {
        Self {
            cpu_millicores: 8_000,
            memory_mib: 16_384,
            disk_mib: 100_000,
        }
    }
}

/// How the cluster boots.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StartParams {
    /// Nodes start at uniformly random times in `[0, stagger_ms)`; node 0 starts at 0.
    pub stagger_ms: u64,
    /// Number of seed nodes every node joins through (spread evenly over the index range).
    pub seeds: usize,
}

impl Default for StartParams {
    fn default() -> Self {
        Self {
            stagger_ms: 2_000,
            seeds: 3,
        }
    }
}

/// The network model. Every datagram independently: is lost with `loss`, else delivered
/// after `latency_ms + Exp(jitter_ms)` (so reordering falls out of the jitter), duplicated
/// with `duplicate` (the copy gets its own delay) and corrupted with `corrupt` (1–4 bytes
/// flipped).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkParams {
    /// Fixed one-way latency in milliseconds.
    pub latency_ms: f64,
    /// Mean of the exponential jitter added to the latency, in milliseconds.
    pub jitter_ms: f64,
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram has bytes flipped in flight.
    pub corrupt: f64,
    /// Model the production transport's AEAD seal: a corrupted datagram fails authentication
    /// and is dropped before the core. With `seal = false` the flipped bytes reach the core
    /// raw, which tests the decoders (the core must refuse what it cannot parse).
    pub seal: bool,
}

impl Default for NetworkParams {
    fn default() -> Self {
        Self {
            latency_ms: 0.3,
            jitter_ms: 0.5,
            loss: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            seal: true,
        }
    }
}

impl NetworkParams {
    fn validate(&self) -> Result<(), ScenarioError> {
        for (name, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(invalid(format!("network.{name} = {p} is not in [0, 1]")));
            }
        }
        let ok = self.latency_ms >= 0.0 && self.jitter_ms >= 0.0;
        ok.then_some(())
            .ok_or_else(|| invalid("network latency and jitter must be non-negative"))
    }
}

/// Overrides of `shoal_gossip::Config`; every field left out keeps the production default.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipParams {
    /// `probe_period`, in milliseconds.
    pub probe_period_ms: Option<u64>,
    /// `suspect_to_down_after`, in milliseconds.
    pub suspect_to_down_after_ms: Option<u64>,
    /// `gossip_period`, in milliseconds.
    pub gossip_period_ms: Option<u64>,
    /// `scan_period` (member-view reconciliation), in milliseconds.
    pub scan_period_ms: Option<u64>,
    /// `announce_period`, in milliseconds.
    pub announce_period_ms: Option<u64>,
    /// `announce_down_period` (announces to members believed down), in milliseconds.
    pub announce_down_period_ms: Option<u64>,
    /// `sync_period` (resource-ad digest sync), in milliseconds.
    pub sync_period_ms: Option<u64>,
    /// `chase_after_gossip` (a gossiped ad's unheard identity is announced to), in
    /// milliseconds.
    pub chase_after_gossip_ms: Option<u64>,
    /// `reap_after` (members that left or were forgotten are let go of), in milliseconds.
    pub reap_after_ms: Option<u64>,
}

impl MembershipParams {
    /// The production configuration with these overrides applied.
    #[must_use]
    pub fn config(&self) -> shoal_gossip::Config {
        use std::time::Duration;
        let mut c = shoal_gossip::Config::default();
        let set = |slot: &mut Duration, v: Option<u64>| {
            if let Some(ms) = v {
                *slot = Duration::from_millis(ms.max(1));
            }
        };
        set(&mut c.probe_period, self.probe_period_ms);
        set(&mut c.suspect_to_down_after, self.suspect_to_down_after_ms);
        set(&mut c.gossip_period, self.gossip_period_ms);
        set(&mut c.scan_period, self.scan_period_ms);
        set(&mut c.announce_period, self.announce_period_ms);
        set(&mut c.announce_down_period, self.announce_down_period_ms);
        set(&mut c.sync_period, self.sync_period_ms);
        set(&mut c.chase_after_gossip, self.chase_after_gossip_ms);
        set(&mut c.reap_after, self.reap_after_ms);
        c
    }
}

/// Checker settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckParams {
    /// Seconds of quiet after the last fault before the `eventually_*` checkers must hold.
    pub quiet_s: f64,
    /// Sampling period of the time series, in milliseconds.
    pub sample_ms: u64,
    /// Every service must be back at its count (or below it only for lack of room) this long
    /// after the last fault settles (`eventually_services_back_at_count`).
    pub back_at_count_s: f64,
    /// Checkers this scenario is known to break because of an open bug in a core, each with
    /// the reason. They are still evaluated and reported (`known-fail`, or `fixed?` when they
    /// pass), but do not fail the run. Keep this list short and tied to an issue.
    pub known_failures: BTreeMap<String, String>,
}

impl Default for CheckParams {
    fn default() -> Self {
        Self {
            quiet_s: 90.0,
            sample_ms: 1_000,
            back_at_count_s: 30.0,
            known_failures: BTreeMap::new(),
        }
    }
}

/// One line of the fault script, as written. Which fields a kind needs is checked by
/// [`Scenario::plan`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// When, in seconds.
    pub at_s: f64,
    /// What (see [`FaultKind`]).
    pub kind: FaultKind,
    /// Explicit node indices.
    pub nodes: Option<Vec<usize>>,
    /// Every node of one rack, such as `r1`.
    pub rack: Option<String>,
    /// This many distinct nodes drawn from the seed among the running ones.
    pub random: Option<usize>,
    /// The first `fraction` of the node indices (scales with `--nodes`).
    pub fraction: Option<f64>,
    /// Duration of a pause or slow-down, in seconds.
    pub for_s: Option<f64>,
    /// How long a crashed or departed node stays away before it comes back, in seconds.
    pub down_s: Option<f64>,
    /// Interval between steps of a rolling or churn fault, in seconds.
    pub every_s: Option<f64>,
    /// Steps of a rolling or churn fault.
    pub count: Option<usize>,
    /// Flap period in seconds (half isolated, half connected).
    pub period_s: Option<f64>,
    /// End of a flapping fault, in seconds.
    pub until_s: Option<f64>,
    /// Extra processing delay of a slow node, in milliseconds.
    pub extra_ms: Option<u64>,
    /// A one-way partition: the selected side's datagrams to the rest are dropped, the other
    /// direction still flows.
    pub one_way: Option<bool>,
    /// New network parameters (kind `network`).
    pub network: Option<NetworkParams>,
    /// Service tasks to hang, drawn from the seed among those running (kind `hang`).
    pub tasks: Option<usize>,
    /// A drain's deadline, in seconds (kind `drain`; absent: none, batch tasks finish).
    pub deadline_s: Option<f64>,
    /// Whether the nodes may take new work (kind `eligibility`).
    pub eligible: Option<bool>,
}

/// The kinds of fault a script can name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Stop the selected nodes for good (until a `restart`).
    #[default]
    Crash,
    /// Start crashed or departed nodes again with a new generation.
    Restart,
    /// Crash, then restart after `down_s`.
    CrashRestart,
    /// Freeze timers and inbound datagrams for `for_s`, then release them late.
    Pause,
    /// Add `extra_ms` to every input of the selected nodes, for `for_s` (or for good).
    Slow,
    /// Cut the selected side from the rest (both ways, or `one_way`).
    Partition,
    /// Remove every partition.
    Heal,
    /// Graceful leave of the selected nodes.
    Leave,
    /// `count` times, every `every_s`: one random running node leaves and rejoins after `down_s`.
    Churn,
    /// `count` times, every `every_s`: one random running node crashes and restarts after `down_s`.
    Rolling,
    /// Isolate the selected nodes for half of every `period_s` until `until_s`.
    Flap,
    /// Replace the network parameters.
    Network,
    /// `tasks` running service tasks (drawn) stop answering their checks while their process
    /// runs on, for `for_s` or until they are restarted.
    Hang,
    /// `shoal node drain` of the selected nodes (`nodes = [..]`), with `deadline_s` or none.
    Drain,
    /// `shoal node drain --disable` of the selected nodes.
    Undrain,
    /// `shoal node eligibility --enable` (`eligible = true`) or `--disable` (`false`).
    Eligibility,
}

/// Which nodes an action applies to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// These indices.
    Nodes(Vec<usize>),
    /// Every node of this rack.
    Rack(String),
    /// This many distinct running nodes, drawn when the action runs.
    Random(usize),
}

/// A primitive action of the compiled plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Crash the target; restart it after `restart_after_ms` if given.
    Crash {
        /// Who.
        target: Target,
        /// Restart delay.
        restart_after_ms: Option<u64>,
    },
    /// Restart crashed or departed nodes of the target.
    Restart {
        /// Who.
        target: Target,
    },
    /// Pause the target.
    Pause {
        /// Who.
        target: Target,
        /// For how long.
        for_ms: u64,
    },
    /// Slow the target down.
    Slow {
        /// Who.
        target: Target,
        /// Extra delay per input.
        extra_ms: u64,
        /// For how long (for good if `None`).
        for_ms: Option<u64>,
    },
    /// Add a partition with this id.
    Partition {
        /// Id, so a flap can remove only its own.
        id: u64,
        /// The cut-off side.
        side: Target,
        /// Only the side's outbound datagrams are dropped.
        one_way: bool,
    },
    /// Remove one partition.
    Unpartition {
        /// Its id.
        id: u64,
    },
    /// Remove every partition.
    Heal,
    /// Graceful leave, with a rejoin after `rejoin_after_ms` if given.
    Leave {
        /// Who.
        target: Target,
        /// Rejoin delay.
        rejoin_after_ms: Option<u64>,
    },
    /// Replace the network parameters.
    Network(NetworkParams),
    /// Hang this many running service tasks, drawn when the action runs.
    Hang {
        /// How many.
        tasks: usize,
        /// For how long (until restarted if `None`).
        for_ms: Option<u64>,
    },
    /// An operator's node command (`shoal node drain` / `eligibility`) about each of these
    /// nodes, accepted by a running node of the majority side (`sched/drain.rs`).
    Node {
        /// The nodes the command is about.
        nodes: Vec<usize>,
        /// What is asked of them.
        change: shoal_scheduler::NodeChange,
    },
}

/// A compiled scenario: actions sorted by time.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `(at_ms, action)`, sorted by time, script order within a time.
    pub actions: Vec<(u64, Action)>,
    /// When the last fault (including its delayed follow-ups) is over.
    pub last_fault_ms: u64,
    /// End of the run.
    pub duration_ms: u64,
    /// When the `eventually_*` checkers are evaluated.
    pub check_from_ms: u64,
}

impl Plan {
    /// Which of `n` nodes may start again after a crash or a leave (then their disk is read):
    /// the named targets of restarts, or every node when a restart's target is drawn or a
    /// rack.
    #[must_use]
    pub fn restarting(&self, n: usize) -> Vec<bool> {
        let mut mask = vec![false; n];
        for (_, a) in &self.actions {
            let target = match a {
                Action::Restart { target }
                | Action::Crash {
                    target,
                    restart_after_ms: Some(_),
                }
                | Action::Leave {
                    target,
                    rejoin_after_ms: Some(_),
                } => target,
                _ => continue,
            };
            match target {
                Target::Nodes(nodes) => nodes
                    .iter()
                    .filter(|&&i| i < n)
                    .for_each(|&i| mask[i] = true),
                _ => mask.iter_mut().for_each(|m| *m = true),
            }
        }
        mask
    }
}

fn ms(s: f64) -> u64 {
    (s.max(0.0) * 1000.0).round() as u64
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ScenarioError::Parse { source, .. } => ScenarioError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Parses and checks a scenario from TOML text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: "<text>".into(),
            source: Box::new(e),
        })?;
        scenario.plan()?;
        Ok(scenario)
    }

    /// The rack name of node `index`.
    #[must_use]
    pub fn rack_of(&self, index: usize) -> String {
        let racks = self.racks.max(1);
        format!("r{}", index * racks / self.nodes.max(1))
    }

    /// Compiles the fault script into primitive actions and checks every field.
    pub fn plan(&self) -> Result<Plan, ScenarioError> {
        self.validate_top()?;
        let mut actions = Vec::new();
        let mut last_fault_ms = 0;
        let mut next_partition_id = 1;
        for (i, fault) in self.faults.iter().enumerate() {
            let steps = self
                .compile(fault, &mut next_partition_id)
                .map_err(|e| invalid(format!("fault #{} ({:?}): {e}", i + 1, fault.kind)))?;
            for (at, action, settles_at) in steps {
                last_fault_ms = last_fault_ms.max(settles_at);
                actions.push((at, action));
            }
        }
        actions.sort_by_key(|(at, _)| *at);
        let duration_ms = ms(self.duration_s);
        let check_from_ms = last_fault_ms + ms(self.checks.quiet_s);
        if check_from_ms > duration_ms {
            return Err(invalid(format!(
                "the last fault settles at {:.1} s; with quiet_s = {} the run must last at least \
                 {:.1} s (duration_s = {})",
                last_fault_ms as f64 / 1000.0,
                self.checks.quiet_s,
                check_from_ms as f64 / 1000.0,
                self.duration_s
            )));
        }
        Ok(Plan {
            actions,
            last_fault_ms,
            duration_ms,
            check_from_ms,
        })
    }

    fn validate_top(&self) -> Result<(), ScenarioError> {
        if self.nodes == 0 || self.nodes > 1 << 24 {
            return Err(invalid(format!("nodes = {} is out of range", self.nodes)));
        }
        if !(self.duration_s > 0.0 && self.duration_s < 1e7) {
            return Err(invalid("duration_s must be positive"));
        }
        if self.checks.sample_ms == 0 {
            return Err(invalid("checks.sample_ms must be positive"));
        }
        self.network.validate()?;
        if let Some(w) = &self.workload {
            jobs::validate(w).map_err(invalid)?;
        }
        Ok(())
    }

    fn target(&self, f: &Fault) -> Result<Target, String> {
        let given = [
            f.nodes.is_some(),
            f.rack.is_some(),
            f.random.is_some(),
            f.fraction.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err("needs exactly one of nodes, rack, random, fraction".into());
        }
        if let Some(nodes) = &f.nodes {
            if let Some(bad) = nodes.iter().find(|&&n| n >= self.nodes) {
                return Err(format!(
                    "node {bad} does not exist (nodes = {})",
                    self.nodes
                ));
            }
            return Ok(Target::Nodes(nodes.clone()));
        }
        if let Some(rack) = &f.rack {
            return Ok(Target::Rack(rack.clone()));
        }
        if let Some(k) = f.random {
            return Ok(Target::Random(k));
        }
        let fraction = f.fraction.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&fraction) {
            return Err(format!("fraction {fraction} is not in [0, 1]"));
        }
        let k = ((self.nodes as f64) * fraction).round() as usize;
        Ok(Target::Nodes((0..k.min(self.nodes)).collect()))
    }

    /// One fault → `(at_ms, action, settles_at_ms)` steps.
    fn compile(&self, f: &Fault, next_id: &mut u64) -> Result<Vec<Step>, String> {
        let at = ms(f.at_s);
        let need = |v: Option<f64>, name: &str| v.map(ms).ok_or(format!("needs {name}"));
        let steps = match f.kind {
            FaultKind::Crash => vec![(
                at,
                Action::Crash {
                    target: self.target(f)?,
                    restart_after_ms: None,
                },
                at,
            )],
            FaultKind::Restart => vec![(
                at,
                Action::Restart {
                    target: self.target(f)?,
                },
                at,
            )],
            FaultKind::CrashRestart => {
                let down = need(f.down_s, "down_s")?;
                let target = self.target(f)?;
                vec![(
                    at,
                    Action::Crash {
                        target,
                        restart_after_ms: Some(down),
                    },
                    at + down,
                )]
            }
            FaultKind::Pause => {
                let for_ms = need(f.for_s, "for_s")?;
                let target = self.target(f)?;
                vec![(at, Action::Pause { target, for_ms }, at + for_ms)]
            }
            FaultKind::Slow => {
                let extra_ms = f.extra_ms.ok_or("needs extra_ms")?;
                let for_ms = f.for_s.map(ms);
                let target = self.target(f)?;
                let settles = for_ms.map_or(at, |d| at + d);
                vec![(
                    at,
                    Action::Slow {
                        target,
                        extra_ms,
                        for_ms,
                    },
                    settles,
                )]
            }
            FaultKind::Partition => {
                let id = *next_id;
                *next_id += 1;
                let side = self.target(f)?;
                let one_way = f.one_way.unwrap_or(false);
                vec![(at, Action::Partition { id, side, one_way }, at)]
            }
            FaultKind::Heal => vec![(at, Action::Heal, at)],
            FaultKind::Leave => vec![(
                at,
                Action::Leave {
                    target: self.target(f)?,
                    rejoin_after_ms: f.down_s.map(ms),
                },
                at + f.down_s.map_or(0, ms),
            )],
            FaultKind::Churn | FaultKind::Rolling => self.compile_series(f, at)?,
            FaultKind::Flap => self.compile_flap(f, at, next_id)?,
            FaultKind::Hang => {
                let tasks = f.tasks.ok_or("needs tasks")?;
                let for_ms = f.for_s.map(ms);
                let settles = at + for_ms.unwrap_or(0);
                vec![(at, Action::Hang { tasks, for_ms }, settles)]
            }
            FaultKind::Drain | FaultKind::Undrain | FaultKind::Eligibility => {
                self.compile_node_command(f, at)?
            }
            FaultKind::Network => {
                let params = f.network.ok_or("needs a [faults.network] table")?;
                params.validate().map_err(|e| e.to_string())?;
                vec![(at, Action::Network(params), at)]
            }
        };
        Ok(steps)
    }

    fn compile_series(&self, f: &Fault, at: u64) -> Result<Vec<Step>, String> {
        let count = f.count.ok_or("needs count")?;
        let every = f.every_s.map(ms).ok_or("needs every_s")?;
        let down = f.down_s.map(ms).ok_or("needs down_s")?;
        let one = Target::Random(1);
        Ok((0..count as u64)
            .map(|k| {
                let t = at + k * every;
                let action = if f.kind == FaultKind::Churn {
                    Action::Leave {
                        target: one.clone(),
                        rejoin_after_ms: Some(down),
                    }
                } else {
                    Action::Crash {
                        target: one.clone(),
                        restart_after_ms: Some(down),
                    }
                };
                (t, action, t + down)
            })
            .collect())
    }

    fn compile_flap(&self, f: &Fault, at: u64, next_id: &mut u64) -> Result<Vec<Step>, String> {
        let period = f.period_s.map(ms).ok_or("needs period_s")?;
        let until = f.until_s.map(ms).ok_or("needs until_s")?;
        if period < 2 || until <= at {
            return Err("needs period_s > 0 and until_s > at_s".into());
        }
        let side = self.target(f)?;
        let mut steps = Vec::new();
        let mut t = at;
        while t < until {
            let id = *next_id;
            *next_id += 1;
            let back = (t + period / 2).min(until);
            let cut = Action::Partition {
                id,
                side: side.clone(),
                one_way: false,
            };
            steps.push((t, cut, back));
            steps.push((back, Action::Unpartition { id }, back));
            t += period;
        }
        Ok(steps)
    }
}

type Step = (u64, Action, u64);
