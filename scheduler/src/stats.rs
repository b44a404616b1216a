//! The scheduler's counters and gauges ([`Stats`]), as the shell exports them
//! (`node/src/metrics.rs`).

use serde::Serialize;

use crate::placement::PendingReason;
use crate::scheduler::Scheduler;

/// Counters of one scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Stats {
    /// Rows in the replicated tables (jobs, attempts, states, tombstones).
    pub table_rows: usize,
    /// Ops received out of order and waiting for their predecessors.
    pub buffered_ops: usize,
    /// Tasks admitted here and not yet dead.
    pub local_tasks: usize,
    /// Slots this node coordinates that found no room.
    pub pending_slots: usize,
    /// Ops written by this incarnation.
    pub ops_written: u64,
    /// Messages refused because an op in them broke an ownership rule (`Scheduler::handle_message`).
    pub refused_messages: u64,
    /// Attempts placed by this node as a slot's coordinator.
    pub placements: u64,
    /// Of `placements`: attempts after the first of their slot.
    pub replacements: u64,
    /// Proposals admitted here as their target.
    pub admissions: u64,
    /// Proposals rejected here as their target.
    pub rejections: u64,
    /// Ops from peers applied to the tables.
    pub ops_applied: u64,
    /// Anti-entropy digests started by this node.
    pub anti_entropy_rounds: u64,
    /// Writers (actors: node starts) in this node's version vector; one more for every start
    /// of a node that wrote.
    pub writers: usize,
    /// Actors whose ops this node keeps to answer digests.
    pub op_logs: usize,
    /// Ops kept in `op_logs`.
    pub op_log_ops: usize,
    /// Op logs dropped because their actor stopped writing (`SchedulerConfig::quiet_log_drop`).
    pub op_logs_dropped: u64,
    /// Slots this node coordinates that wait, by reason (`PendingCounts`).
    pub pending_by_reason: PendingCounts,
}

/// Pending slots by the kind of their [`PendingReason`](crate::placement::PendingReason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PendingCounts {
    /// No live member with a resource ad.
    pub no_nodes: usize,
    /// Every node failed a filter (no room, constraints, ports).
    pub no_fit: usize,
    /// Waiting out a back-off.
    pub backoff: usize,
    /// A node fits; placing.
    pub placing: usize,
    /// No majority: nothing is placed.
    pub no_majority: usize,
    /// A restarted coordinator catching up: nothing is placed yet.
    pub catching_up: usize,
}

impl Scheduler {
    /// Counters for metrics and simulation reports.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let (op_logs, op_log_ops) = self.replica.log_sizes();
        Stats {
            table_rows: self.tables().row_count(),
            buffered_ops: self.replica.pending_len(),
            local_tasks: self.target.ledger.len(),
            pending_slots: self.coord.pending.len(),
            ops_written: self.repl.counter,
            refused_messages: self.repl.refused_messages,
            placements: self.counters.placements,
            replacements: self.counters.replacements,
            admissions: self.counters.admissions,
            rejections: self.counters.rejections,
            ops_applied: self.counters.ops_applied,
            anti_entropy_rounds: self.counters.anti_entropy_rounds,
            writers: self.tables().clock().dots.len(),
            op_logs,
            op_log_ops,
            op_logs_dropped: self.counters.op_logs_dropped,
            pending_by_reason: self.pending_by_reason(),
        }
    }

    /// The pending slots this node coordinates, counted by the kind of reason.
    fn pending_by_reason(&self) -> PendingCounts {
        let mut c = PendingCounts::default();
        for reason in self.coord.pending.values() {
            *match reason {
                PendingReason::NoNodes => &mut c.no_nodes,
                PendingReason::NoFit(_) => &mut c.no_fit,
                PendingReason::Backoff { .. } => &mut c.backoff,
                PendingReason::Placing { .. } => &mut c.placing,
                PendingReason::NoMajority { .. } => &mut c.no_majority,
                PendingReason::CatchingUp => &mut c.catching_up,
            } += 1;
        }
        c
    }
}
