//! Small helpers every room of the simulator uses: seed derivation, node names, rounding, the
//! distribution summary and the placement-quality figures.
//!
//! A leaf: it imports nothing from the crate, so any room may import it without making a circle.

use serde::Serialize;

/// SplitMix64 over `(seed, tag, a, b)`: independent, reproducible sub-seeds.
///
/// Tags in use: 1 start stagger, 2 network, 3 fault script, 4 membership core `(node,
/// generation)`, 5 workload, 6 scheduler core `(node, generation)`, 7 submissions.
#[must_use]
pub fn derive_seed(seed: u64, tag: u64, a: u64, b: u64) -> u64 {
    let mut z = seed
        ^ tag.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ a.wrapping_mul(0xbf58_476d_1ce4_e5b9)
        ^ b.wrapping_mul(0x94d0_49bb_1331_11eb);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The name of simulated node `index`: `n<index>`.
#[must_use]
pub fn node_name(index: usize) -> String {
    format!("n{index}")
}

/// The IP of simulated node `index`: `10.a.b.c`, the index in the low 24 bits (its gossip
/// address's, and the address its tasks' ports are reached at).
#[must_use]
pub fn ip_of(index: usize) -> std::net::Ipv4Addr {
    let i = index as u32;
    std::net::Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

/// The node index behind a simulated node name (`n<index>`).
#[must_use]
pub fn index_of_name(name: &str) -> Option<usize> {
    name.strip_prefix('n')?.parse().ok()
}

/// Rounds to three decimals so reports stay short and stable.
#[must_use]
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A distribution summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Dist {
    /// Samples.
    pub count: usize,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Dist {
    /// Summarizes `values` (any order).
    #[must_use]
    pub fn of(values: &[u64]) -> Dist {
        if values.is_empty() {
            return Dist::default();
        }
        let mut v = values.to_vec();
        v.sort_unstable();
        let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Dist {
            count: v.len(),
            min: v[0],
            p50: pick(0.5),
            p90: pick(0.9),
            p99: pick(0.99),
            max: v[v.len() - 1],
            mean: round3(v.iter().sum::<u64>() as f64 / v.len() as f64),
        }
    }
}

/// Placement quality of one scheduler on one workload (Shoal's or the baseline's).
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    /// Tasks submitted.
    pub tasks: u64,
    /// Placements made (first placements and re-placements).
    pub placements: u64,
    /// Re-placements after a node failure or a rejection.
    pub placements_retried: u64,
    /// Batch tasks that ran to completion.
    pub tasks_completed: u64,
    /// Tasks waiting at the end.
    pub pending_at_end: u64,
    /// Mean CPU utilization of running nodes over the arrival window and after.
    pub mean_utilization: f64,
    /// Time from submission to first placement, in milliseconds.
    pub wait_ms: Dist,
    /// Most slots running twice (or more) at one sample: double-runs, e.g. during a partition.
    pub double_run_peak: u64,
    /// Extra copies of slots summed over samples, times the sample period, in seconds.
    pub double_run_slot_s: f64,
    /// `(t_ms, pending tasks, CPU utilization)` samples.
    #[serde(skip)]
    pub series: Vec<(u64, u64, f64)>,
}

/// What the fault checkers measured in one run of the production scheduler cores.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FaultFigures {
    /// Times a slot went from one running process to two (or more) and back.
    pub duplicate_episodes: u64,
    /// The longest such episode of a slot whose copies are bounded (a service, or a job with
    /// `stop_after_ms`), in milliseconds.
    pub longest_bounded_duplicate_ms: u64,
    /// Which slot (`job/slot`).
    pub longest_bounded_duplicate: Option<String>,
    /// The longest episode of a slot whose job keeps running when cut off (a batch job without
    /// `stop_after_ms`), in milliseconds.
    pub longest_unbounded_duplicate_ms: u64,
    /// Processes killed on a core's order.
    pub kills: u64,
    /// Of those, on a node that had stayed on the majority side since the process started.
    pub kills_on_majority_side: u64,
    /// Of those, of the slot's only copy, superseded before its start was reported (a
    /// placement race between two coordinators, not an incumbent).
    pub kills_while_starting: u64,
    /// Of those, reported started, but another copy of the slot started before that report
    /// and still runs: a placement race the cores settled on the copy reported first.
    pub kills_of_raced: u64,
    /// Of those on the majority side, of a task a rolling update replaced (another version).
    pub kills_for_update: u64,
    /// Of those on the majority side, of a task its draining node stopped.
    pub kills_for_drain: u64,
    /// Of those on the majority side, of a task that failed its checks (restarted).
    pub kills_unhealthy: u64,
    /// `Lost` written by a core for another node's attempt.
    pub condemnations: u64,
    /// Voluntary replacements of a rolling update (a slot's live attempt of another
    /// version replaced by its coordinator).
    pub voluntary_replacements: u64,
    /// The most slots of one deployment replaced voluntarily and not yet done, at a sample.
    pub most_in_flight: u64,
    /// Deployments that had such replacements.
    pub deployments: u64,
    /// The most slots of one job in flight across its deployments at once.
    pub most_in_flight_job: u64,
    /// The same, at moments when some of them were placed by a node on the minority side of
    /// a cut (each side is held to 2 × `max_parallel`).
    pub most_in_flight_across_cut: u64,
    /// Pairs of deployments of one job that had slots in flight at once (a superseding
    /// submission during a rollout).
    pub overlaps: u64,
    /// Processes a watchdog killed after its agent stopped renewing the lease.
    pub watchdog_kills: u64,
    /// Processes a restarted agent found still running.
    pub survivors_reported: u64,
    /// First sample at or after the last fault at which every service was at its count.
    pub back_at_count_ms: Option<u64>,
}
