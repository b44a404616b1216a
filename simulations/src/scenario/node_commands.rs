//! The operator's node commands in a fault script (`drain`, `undrain`, `eligibility`;
//! `docs/simulator.md`, "Drains"): which fields each needs, compiled to an [`Action::Node`].

use shoal_scheduler::NodeChange;

use super::{Action, Fault, FaultKind, Scenario, Step, Target, ms};

impl Scenario {
    /// A node command: the nodes named explicitly, a scheduler to write it, a deadline that
    /// is not negative. A drain settles at its deadline (its batch tasks are stopped then).
    pub(super) fn compile_node_command(&self, f: &Fault, at: u64) -> Result<Vec<Step>, String> {
        if self.workload.is_none() {
            return Err("needs a [workload]: node commands act on the scheduler cores".into());
        }
        if f.rack.is_some() || f.random.is_some() || f.fraction.is_some() {
            return Err("names its nodes with nodes = [..] only".into());
        }
        let Target::Nodes(nodes) = self.target(f)? else {
            return Err("names its nodes with nodes = [..] only".into());
        };
        if nodes.is_empty() {
            return Err("nodes = [] names no node".into());
        }
        if f.kind != FaultKind::Drain && f.deadline_s.is_some() {
            return Err("deadline_s is for kind = \"drain\" only".into());
        }
        if f.kind != FaultKind::Eligibility && f.eligible.is_some() {
            return Err("eligible is for kind = \"eligibility\" only".into());
        }
        let (change, settles) = match f.kind {
            FaultKind::Drain => {
                let deadline_ms = match f.deadline_s {
                    Some(d) if !(0.0..1e7).contains(&d) => {
                        return Err(format!(
                            "deadline_s = {d} is not a duration in seconds (>= 0)"
                        ));
                    }
                    d => d.map(ms),
                };
                (
                    NodeChange::Drain { deadline_ms },
                    at + deadline_ms.unwrap_or(0),
                )
            }
            FaultKind::Undrain => (NodeChange::Undrain, at),
            _ => {
                let eligible = f.eligible.ok_or("needs eligible = true or false")?;
                (NodeChange::Eligible(eligible), at)
            }
        };
        Ok(vec![(at, Action::Node { nodes, change }, settles)])
    }
}
