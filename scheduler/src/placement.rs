//! Placement: filter and score candidate nodes for one slot, and explain why a slot is pending.
//!
//! Pure functions over a snapshot of node views; the coordinator ([`crate::Scheduler`]) feeds
//! them its freshest knowledge (resource ads plus the live attempts it knows of, including its
//! own in-flight proposals) and writes the result as an attempt. The target node re-checks
//! everything at admission, so a stale view costs a rejection, never an overcommit.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use shoal_gossip::{Attributes, Millis, Resources};

use crate::hash::mix64;
use crate::spec::{JobSpec, PlacementStrategy};

/// A candidate node as the placer sees it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    /// Node name.
    pub(crate) name: String,
    /// `name_hash(name)`.
    pub(crate) hash: u64,
    /// The node's id in the replica's usage index (`Replica::node_id`).
    pub(crate) usage_id: usize,
    /// Advertised capacity.
    pub(crate) capacity: Resources,
    /// Operator attributes (shared with the ad they came from).
    pub(crate) attributes: Attributes,
    /// Draining (its ad or its intent): accepts no new work.
    pub(crate) draining: bool,
    /// Not draining, but an operator made it ineligible for new work.
    pub(crate) ineligible: bool,
}

/// What one placement needs.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// The job.
    pub(crate) spec: &'a JobSpec,
    /// Stable hash of (job, slot): rotates candidate order and breaks `spread`'s score ties
    /// for a single slot, so concurrent coordinators spread over equally good nodes.
    pub(crate) key_hash: u64,
    /// Stable hash of the job: `spread` ranks equally good candidates in an order that is the
    /// same for every slot of the job and lets slot `i` take the `i`-th (modulo their number),
    /// so coordinators placing different slots at the same time without seeing each other's
    /// proposals still end even. `binpack` breaks its ties in the same order, so those
    /// coordinators pack a job onto one node instead of scattering it over equals.
    pub(crate) job_hash: u64,
    /// The slot being placed.
    pub(crate) slot: u32,
    /// Nodes already running a task of this job (`distinct_hosts` excludes them; spread counts).
    pub(crate) job_tasks: &'a BTreeMap<String, u32>,
    /// Nodes where a live attempt of another job holds a static port this job wants, with
    /// that port (empty for jobs without static ports).
    pub(crate) ports_taken: &'a BTreeMap<String, u16>,
    /// A node to avoid unless it is the only one (it just rejected this slot).
    pub(crate) avoid: Option<&'a str>,
    /// Stop after this many feasible candidates (the "power of k choices" at large N).
    pub(crate) sample: usize,
}

/// Per-node filter outcome counts: why no node took a slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilterReport {
    /// Nodes examined (live, with a resource ad).
    pub nodes: u32,
    /// The per-task request.
    pub request: Resources,
    /// Nodes with too little free cpu.
    pub lack_cpu: u32,
    /// Nodes with too little free memory.
    pub lack_memory: u32,
    /// Nodes with too little free disk.
    pub lack_disk: u32,
    /// Nodes failing each constraint (`rack=r1` → 2).
    pub constraints: BTreeMap<String, u32>,
    /// Draining nodes.
    pub draining: u32,
    /// Nodes an operator made ineligible (`shoal node eligibility --disable`).
    #[serde(skip_serializing_if = "is_zero")]
    pub ineligible: u32,
    /// Nodes excluded by `distinct_hosts`.
    pub distinct_hosts: u32,
    /// Per static port, the nodes where another job's task holds it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ports_taken: BTreeMap<u16, u32>,
}

impl fmt::Display for FilterReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: u32| if n == 1 { "node" } else { "nodes" };
        let mut parts = Vec::new();
        let r = &self.request;
        if self.lack_cpu > 0 {
            parts.push(format!(
                "{} {} lack {}m cpu",
                self.lack_cpu,
                plural(self.lack_cpu),
                r.cpu_millicores
            ));
        }
        if self.lack_memory > 0 {
            let n = self.lack_memory;
            parts.push(format!(
                "{n} {} lack {} MiB memory",
                plural(n),
                r.memory_mib
            ));
        }
        if self.lack_disk > 0 {
            let n = self.lack_disk;
            parts.push(format!("{n} {} lack {} MiB disk", plural(n), r.disk_mib));
        }
        for (c, n) in &self.constraints {
            parts.push(format!("{n} fail constraint {c}"));
        }
        if self.draining > 0 {
            parts.push(format!("{} draining", self.draining));
        }
        if self.ineligible > 0 {
            parts.push(format!("{} ineligible", self.ineligible));
        }
        for (port, n) in &self.ports_taken {
            let have = if *n == 1 { "has" } else { "have" };
            parts.push(format!("{n} {} {have} port {port} taken", plural(*n)));
        }
        if self.distinct_hosts > 0 {
            parts.push(format!(
                "{} already run a task of this job (distinct_hosts)",
                self.distinct_hosts
            ));
        }
        if parts.is_empty() {
            return write!(f, "no eligible node among {}", self.nodes);
        }
        f.write_str(&parts.join(", "))
    }
}

/// Why a slot has no running attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PendingReason {
    /// No live member with a resource ad is known.
    NoNodes,
    /// Every node failed a filter.
    NoFit(FilterReport),
    /// Waiting before the next attempt.
    Backoff {
        /// When the slot is placed again.
        until: Millis,
        /// What happened to the previous attempt.
        after: String,
    },
    /// A node fits; the slot's coordinator has not placed it yet.
    Placing {
        /// The coordinator's node name.
        coordinator: String,
    },
    /// The coordinator does not see a majority of the cluster, so it places nothing
    /// (`docs/faults.md`).
    NoMajority {
        /// Members it reaches, itself included.
        reachable: u32,
        /// Members it counts as the cluster.
        known: u32,
    },
    /// The coordinator restarted and places nothing until a peer has answered its catch-up,
    /// or the wait (10 s) runs out (`docs/faults.md`).
    CatchingUp,
}

impl PendingReason {
    /// The reason as a person reads it at `now`: a back-off says how long it still waits
    /// (`retrying in 1.9 s`), where [`fmt::Display`] gives its end on the node's clock.
    #[must_use]
    pub fn describe(&self, now: Millis) -> String {
        match self {
            PendingReason::Backoff { until, after } => {
                let left = until.since(now);
                format!("{after}; retrying in {:.1} s", left as f64 / 1000.0)
            }
            other => other.to_string(),
        }
    }
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PendingReason::NoNodes => f.write_str("no live node has advertised resources"),
            PendingReason::NoFit(r) => r.fmt(f),
            PendingReason::Backoff { until, after } => write!(f, "{after}; retrying at {until}"),
            PendingReason::Placing { coordinator } => {
                write!(f, "being placed by coordinator {coordinator}")
            }
            PendingReason::NoMajority { reachable, known } => write!(
                f,
                "waiting for a majority: the coordinator sees {reachable} of {known} members"
            ),
            PendingReason::CatchingUp => f.write_str(
                "the coordinator restarted and is catching up with a peer before it places \
                 anything (at most 10 s)",
            ),
        }
    }
}

/// Why a node fails a request, if it does. Resource shortfalls are all reported.
#[derive(Debug, Default)]
struct Verdict {
    draining: bool,
    ineligible: bool,
    port: Option<u16>,
    distinct: bool,
    constraint: Option<String>,
    lack: [bool; 3],
}

impl Verdict {
    fn fits(&self) -> bool {
        !self.draining
            && !self.ineligible
            && self.port.is_none()
            && !self.distinct
            && self.constraint.is_none()
            && self.lack == [false; 3]
    }
}

fn judge(req: &Request<'_>, node: &Candidate, used: Resources) -> Verdict {
    let want = req.spec.resources.to_resources();
    let free = node.capacity.saturating_sub(&used);
    Verdict {
        draining: node.draining,
        ineligible: node.ineligible,
        port: req.ports_taken.get(&node.name).copied(),
        distinct: req.spec.wants_distinct_hosts() && req.job_tasks.contains_key(&node.name),
        constraint: req
            .spec
            .failed_constraint(&node.name, &node.attributes)
            .map(ToString::to_string),
        lack: [
            want.cpu_millicores > free.cpu_millicores,
            want.memory_mib > free.memory_mib,
            want.disk_mib > free.disk_mib,
        ],
    }
}

/// Whether `node` passes every filter for `req` when `used` is allocated there.
pub(crate) fn fits(req: &Request<'_>, node: &Candidate, used: Resources) -> bool {
    judge(req, node, used).fits()
}

fn record(report: &mut FilterReport, v: Verdict) {
    if v.draining {
        report.draining += 1;
    } else if v.ineligible {
        report.ineligible += 1;
    } else if let Some(port) = v.port {
        *report.ports_taken.entry(port).or_default() += 1;
    } else if v.distinct {
        report.distinct_hosts += 1;
    } else if let Some(c) = v.constraint {
        *report.constraints.entry(c).or_default() += 1;
    } else {
        report.lack_cpu += u32::from(v.lack[0]);
        report.lack_memory += u32::from(v.lack[1]);
        report.lack_disk += u32::from(v.lack[2]);
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Permille utilisation of the scarcer of cpu and memory after adding `want`.
fn utilisation(node: &Candidate, used: Resources, want: Resources) -> u64 {
    let after = used.saturating_add(&want);
    let ratio = |u: u64, c: u64| u.saturating_mul(1000).checked_div(c).unwrap_or(1000);
    ratio(after.cpu_millicores, node.capacity.cpu_millicores)
        .max(ratio(after.memory_mib, node.capacity.memory_mib))
}

/// Choose a node for one slot, or explain why none fits. `used(node)` is the placer's best
/// knowledge of what is allocated there. Deterministic for equal inputs.
pub(crate) fn place<'n>(
    req: &Request<'_>,
    nodes: &'n [Candidate],
    used: impl Fn(&Candidate) -> Resources,
) -> Result<&'n Candidate, PendingReason> {
    if nodes.is_empty() {
        return Err(PendingReason::NoNodes);
    }
    let want = req.spec.resources.to_resources();
    let mut report = FilterReport {
        request: want,
        ..FilterReport::default()
    };
    let mut feasible: Vec<(&Candidate, Resources)> = Vec::new();
    let start = usize::try_from(req.key_hash % nodes.len() as u64).unwrap_or(0);
    for node in nodes[start..].iter().chain(&nodes[..start]) {
        let u = used(node);
        let verdict = judge(req, node, u);
        report.nodes += 1;
        if verdict.fits() {
            feasible.push((node, u));
            if feasible.len() >= req.sample.max(2) {
                break;
            }
        } else {
            record(&mut report, verdict);
        }
    }
    if let (Some(avoid), true) = (req.avoid, feasible.len() > 1) {
        feasible.retain(|(n, _)| n.name != avoid);
    }
    let turn = spread_turns(req, &feasible);
    let score = |(i, (node, u)): (usize, &(&Candidate, Resources))| -> (i64, i64, u64) {
        let util = i64::try_from(utilisation(node, *u, want)).unwrap_or(i64::MAX);
        match req.spec.placement {
            PlacementStrategy::Binpack => (util, 0, mix64(req.job_hash ^ node.hash)),
            PlacementStrategy::Spread if turn.is_empty() => {
                let tasks = i64::from(req.job_tasks.get(&node.name).copied().unwrap_or(0));
                (-tasks, -util, mix64(req.key_hash ^ node.hash))
            }
            PlacementStrategy::Spread => turn[i],
        }
    };
    feasible
        .iter()
        .enumerate()
        .max_by_key(|&c| score(c))
        .map(|(_, (n, _))| *n)
        .ok_or(PendingReason::NoFit(report))
}

/// For `spread` with more than one slot: a score per feasible candidate. Each slot has a home:
/// candidates are ranked by a hash of (job, node), the same order for every slot of the job,
/// and slot `i` is at home on rank `i mod k`. A candidate holding fewer than its even share
/// (`⌈count / k⌉` tasks of the job) beats one at its share; among those, the one nearest after
/// the slot's home wins. Coordinators that place different slots of a job at the same moment,
/// without seeing each other's proposals, thus fill each node up to its share and no further:
/// ten slots on five empty nodes end 2/2/2/2/2, where "fewest tasks first" with a random
/// tie-break ended 4/3/1/1/1. Empty for a single slot or another strategy.
fn spread_turns(req: &Request<'_>, feasible: &[(&Candidate, Resources)]) -> Vec<(i64, i64, u64)> {
    let k = feasible.len();
    if req.spec.placement != PlacementStrategy::Spread || req.spec.count <= 1 || k == 0 {
        return Vec::new();
    }
    let share = u64::from(req.spec.count).div_ceil(k as u64);
    let mut order: Vec<(u64, usize)> = feasible
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (mix64(req.job_hash ^ n.hash), i))
        .collect();
    order.sort_unstable();
    let home = usize::try_from(req.slot).unwrap_or(0) % k;
    let mut turn = vec![(0, 0, 0); k];
    for (rank, (_, i)) in order.into_iter().enumerate() {
        let tasks = u64::from(req.job_tasks.get(&feasible[i].0.name).copied().unwrap_or(0));
        let distance = i64::try_from((rank + k - home) % k).unwrap_or(i64::MAX);
        turn[i] = (i64::from(tasks < share), -distance, 0);
    }
    turn
}

/// Names of nodes a set of live attempts occupy, with task counts.
pub(crate) fn count_by_node<'a>(
    targets: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for t in targets {
        *m.entry(t.to_string()).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::name_hash;
    use std::collections::BTreeSet;

    fn node(name: &str, cpu: u64, mem: u64, rack: &str) -> Candidate {
        Candidate {
            name: name.into(),
            hash: name_hash(name),
            usage_id: 0,
            capacity: Resources {
                cpu_millicores: cpu,
                memory_mib: mem,
                disk_mib: 0,
            },
            attributes: BTreeMap::from([("rack".to_string(), rack.to_string())]).into(),
            draining: false,
            ineligible: false,
        }
    }

    fn spec(extra: &str) -> JobSpec {
        JobSpec::from_toml_str(&format!(
            "id = \"j\"\ntype = \"service\"\ncommand = \"x\"\nresources = {{ cpu = 2000, memory = 100 }}\n{extra}"
        ))
        .unwrap()
    }

    static NO_PORTS: BTreeMap<String, u16> = BTreeMap::new();

    fn req<'a>(spec: &'a JobSpec, tasks: &'a BTreeMap<String, u32>, key: u64) -> Request<'a> {
        Request {
            spec,
            key_hash: key,
            job_hash: 7,
            slot: u32::try_from(key % 1000).unwrap_or(0),
            job_tasks: tasks,
            ports_taken: &NO_PORTS,
            avoid: None,
            sample: 8,
        }
    }

    #[test]
    fn a_static_port_held_elsewhere_filters_the_node() {
        let nodes = vec![
            node("a", 4000, 1000, "r1"),
            node("b", 4000, 1000, "r1"),
            node("c", 4000, 1000, "r1"),
        ];
        let s = spec("[[ports]]\nname = \"http\"\nstatic = 8080\n");
        let tasks = BTreeMap::new();
        let taken: BTreeMap<String, u16> = [("a".into(), 8080), ("b".into(), 8080)].into();
        let r = Request {
            ports_taken: &taken,
            ..req(&s, &tasks, 1)
        };
        assert_eq!(
            place(&r, &nodes, |_| Resources::default()).unwrap().name,
            "c"
        );
        let taken: BTreeMap<String, u16> =
            [("a".into(), 8080), ("b".into(), 8080), ("c".into(), 8080)].into();
        let r = Request {
            ports_taken: &taken,
            ..req(&s, &tasks, 1)
        };
        let e = place(&r, &nodes, |_| Resources::default()).unwrap_err();
        assert_eq!(e.to_string(), "3 nodes have port 8080 taken");
        // JSON of reasons without ports is unchanged.
        let plain = serde_json::to_string(&FilterReport::default()).unwrap();
        assert!(!plain.contains("ports_taken"), "{plain}");
    }

    #[test]
    fn binpack_prefers_the_fullest_node_that_fits() {
        let nodes = vec![
            node("a", 4000, 1000, "r1"),
            node("b", 4000, 1000, "r1"),
            node("c", 4000, 1000, "r1"),
        ];
        let used = |n: &Candidate| match n.name.as_str() {
            "a" => Resources {
                cpu_millicores: 1000,
                memory_mib: 0,
                disk_mib: 0,
            },
            "b" => Resources {
                cpu_millicores: 3000,
                memory_mib: 0,
                disk_mib: 0,
            },
            _ => Resources::default(),
        };
        let s = spec("placement = \"binpack\"");
        let tasks = BTreeMap::new();
        for key in 0..20 {
            assert_eq!(
                place(&req(&s, &tasks, key), &nodes, used).unwrap().name,
                "a"
            );
        }
        let s = spec("placement = \"spread\"");
        let tasks = count_by_node(["a", "a", "c"]);
        assert_eq!(
            place(&req(&s, &tasks, 1), &nodes, |_| Resources::default())
                .unwrap()
                .name,
            "b"
        );
    }

    #[test]
    fn a_back_off_is_described_by_the_time_it_still_waits() {
        let r = PendingReason::Backoff {
            until: Millis(1_796_617_826_376),
            after: "previous attempt ended".into(),
        };
        assert_eq!(
            r.describe(Millis(1_796_617_824_476)),
            "previous attempt ended; retrying in 1.9 s"
        );
        // Past its end (the node's view is a moment old): no negative wait.
        assert_eq!(
            r.describe(Millis(1_796_617_830_000)),
            "previous attempt ended; retrying in 0.0 s"
        );
        let other = PendingReason::Placing {
            coordinator: "n2".into(),
        };
        assert_eq!(other.describe(Millis(0)), other.to_string());
    }

    #[test]
    fn pending_reason_counts_every_filter() {
        let mut nodes = vec![
            node("a", 1000, 1000, "r1"),
            node("b", 1000, 1000, "r1"),
            node("c", 1000, 1000, "r1"),
            node("d", 8000, 8000, "r2"),
            node("e", 8000, 8000, "r2"),
            node("f", 8000, 8000, "r1"),
            node("g", 8000, 8000, "r1"),
        ];
        nodes[5].draining = true;
        nodes[6].ineligible = true;
        let s = spec("constraints = [\"rack == r1\"]");
        let tasks = BTreeMap::new();
        let err = place(&req(&s, &tasks, 3), &nodes, |_| Resources::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "3 nodes lack 2000m cpu, 2 fail constraint rack=r1, 1 draining, 1 ineligible"
        );
        assert_eq!(
            place(&req(&s, &tasks, 3), &[], |_| Resources::default()).unwrap_err(),
            PendingReason::NoNodes
        );
    }

    #[test]
    fn distinct_hosts_and_avoid() {
        let nodes = vec![node("a", 8000, 1000, "r1"), node("b", 8000, 1000, "r1")];
        let s = spec("distinct_hosts = true");
        let tasks = count_by_node(["a"]);
        assert_eq!(
            place(&req(&s, &tasks, 0), &nodes, |_| Resources::default())
                .unwrap()
                .name,
            "b"
        );
        let tasks = count_by_node(["a", "b"]);
        let e = place(&req(&s, &tasks, 0), &nodes, |_| Resources::default()).unwrap_err();
        assert!(e.to_string().contains("distinct_hosts"), "{e}");
        let s = spec("");
        let none = BTreeMap::new();
        let mut r = req(&s, &none, 0);
        let first = place(&r, &nodes, |_| Resources::default())
            .unwrap()
            .name
            .clone();
        r.avoid = Some(&first);
        assert_ne!(
            place(&r, &nodes, |_| Resources::default()).unwrap().name,
            first
        );
        // Avoiding the only candidate still places.
        r.avoid = Some("a");
        assert_eq!(
            place(&r, &nodes[..1], |_| Resources::default())
                .unwrap()
                .name,
            "a"
        );
    }

    /// `n` nodes `n0`, `n1`, … with the same capacity and nothing on them.
    fn empty_nodes(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| node(&format!("n{i}"), 8000, 8000, "r1"))
            .collect()
    }

    /// Where a coordinator that knows of no task of the job anywhere places `slot` (with the
    /// slot's `key` hash and the job's hash): a placement blind to the others' proposals.
    fn place_blind(s: &JobSpec, nodes: &[Candidate], key: u64, job_hash: u64, slot: u32) -> String {
        let none = BTreeMap::new();
        let mut r = req(s, &none, key);
        r.job_hash = job_hash;
        r.slot = slot;
        place(&r, nodes, |_| Resources::default())
            .unwrap()
            .name
            .clone()
    }

    #[test]
    fn spread_slots_placed_blind_end_even() {
        // Ten slots placed by coordinators that never see each other's proposals: each one
        // knows of no task of the job anywhere.
        let nodes = empty_nodes(5);
        let s = spec("placement = \"spread\"\ncount = 10");
        let mut per_node: BTreeMap<String, u32> = BTreeMap::new();
        for slot in 0..10u32 {
            let n = place_blind(&s, &nodes, mix64(u64::from(slot)), 7, slot);
            *per_node.entry(n).or_default() += 1;
        }
        assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![2; 5]);
    }

    #[test]
    fn binpack_slots_placed_blind_share_one_node_per_job() {
        // Ten slots of one job placed by coordinators that never see each other's proposals,
        // on three equally empty nodes: a tie broken by the slot would scatter the job over
        // all three; broken by the job, it lands whole on one. Different jobs still pick
        // different nodes.
        let nodes = empty_nodes(3);
        let s = spec("count = 10\nplacement = \"binpack\"");
        let mut homes = BTreeSet::new();
        for job in 0..12u64 {
            let picks: BTreeSet<String> = (0..10u32)
                .map(|slot| {
                    let key = mix64(job << 32 | u64::from(slot));
                    place_blind(&s, &nodes, key, mix64(job), slot)
                })
                .collect();
            assert_eq!(picks.len(), 1, "job {job} scattered over {picks:?}");
            homes.extend(picks);
        }
        assert!(homes.len() > 1, "every job chose {homes:?}");
    }

    #[test]
    fn sampling_bounds_the_scan() {
        let nodes: Vec<Candidate> = (0..1000)
            .map(|i| node(&format!("n{i:04}"), 8000, 8000, "r1"))
            .collect();
        let s = spec("");
        let tasks = BTreeMap::new();
        let picks: BTreeSet<String> = (0..50)
            .map(|k| {
                place(&req(&s, &tasks, mix64(k)), &nodes, |_| Resources::default())
                    .unwrap()
                    .name
                    .clone()
            })
            .collect();
        assert!(
            picks.len() > 40,
            "placements should spread over equally empty nodes"
        );
    }
}
