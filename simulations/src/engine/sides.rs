//! Ground truth of who is on the majority side: a running node that reaches, both ways, more
//! than half of the nodes the cluster knows (started once and not left, crashed ones
//! included), or exactly half when its half holds the lowest known index (the membership
//! core's tie-break, `docs/faults.md`). Paused, crashed and departed nodes are not. The
//! scheduling checkers ask it through the `Host`.

use super::Simulation;
use super::node::{Life, SimNode};

impl Simulation {
    /// Recomputes every node's side after a change of the network or of the nodes' lives.
    pub(super) fn update_sides(&mut self) {
        if self.bench.is_none() {
            return;
        }
        let n = self.nodes.len();
        let known: Vec<usize> = (0..n)
            .filter(|&i| !matches!(self.nodes[i].life, Life::NotStarted | Life::Left))
            .collect();
        let lowest = known.first().copied();
        let partitioned = self.net.is_partitioned();
        for i in 0..n {
            let majority = self.nodes[i].life == Life::Running && {
                let reach: Vec<usize> = known
                    .iter()
                    .copied()
                    .filter(|&j| {
                        j == i
                            || (self.nodes[j].life == Life::Running
                                && (!partitioned
                                    || (!self.net.is_cut(i, j) && !self.net.is_cut(j, i))))
                    })
                    .collect();
                let twice = 2 * reach.len();
                twice > known.len()
                    || (twice == known.len() && lowest.is_some_and(|l| reach.contains(&l)))
            };
            let node = &mut self.nodes[i];
            if majority && node.minority {
                node.minority_until_ms = Some(self.now.0);
            }
            node.minority = !majority;
        }
    }
}

/// Ground truth: node `i` is on the majority side and has been at every instant since
/// `since_ms`.
pub(super) fn majority_side_since(nodes: &[SimNode], i: usize, since_ms: u64) -> bool {
    let node = &nodes[i];
    !node.minority && node.minority_until_ms.is_none_or(|t| t <= since_ms)
}

/// Ground truth: node `i`'s process exists and it is not on the majority side.
pub(super) fn minority_side(nodes: &[SimNode], i: usize) -> bool {
    nodes[i].life.is_up() && nodes[i].minority
}
