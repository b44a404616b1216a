//! What the drawing pass holds beside the ground truth: the delays, the views, who is up
//! throughout (from the ground-truth pass) and the figures' accumulators.

use super::delays::Delays;
use super::views::Views;
use crate::figures::{Hist, PartitionFigures, WaveAcc};

/// The views being drawn, when this is not the ground-truth pass.
#[derive(Debug)]
pub(super) struct Drawing {
    pub(super) delays: Delays,
    pub(super) views: Views,
    /// Each node's last start if it is up at the end (from the ground-truth pass).
    pub(super) last_start: Vec<Option<u64>>,
    pub(super) join: Hist,
    pub(super) join_missing: u64,
    pub(super) crash: WaveAcc,
    pub(super) partitions: Vec<(PartitionFigures, WaveAcc, WaveAcc)>,
}

impl Drawing {
    /// Whether node `i` was up at `at` and stayed up to the end (it counts as a witness).
    pub(super) fn up_throughout(&self, i: usize, at: u64) -> bool {
        self.last_start[i].is_some_and(|s| s <= at)
    }

    /// The end of the run, as the views know it.
    pub(super) fn views_end(&self) -> u64 {
        self.views.end_ms()
    }
}
