//! Placement bookkeeping of a replica: the resources live attempts hold on each node, the
//! releases placers may count, and the holds that delay them.
//!
//! Nodes get dense ids (see [`UsageIndex::node_id`]) so the placer reads a node's usage by
//! index instead of a string-keyed lookup per candidate. A release (a live attempt ended or was
//! replaced) is counted at once, or, when releases are held
//! ([`crate::SchedulerConfig::release_hold`]), remembered with the usage before it until the
//! scheduler ends the hold on its timers ([`UsageIndex::placement_usage`]).

use shoal_gossip::Resources;

/// Node name → dense id (see [`UsageIndex::node_id`]). Names are kept inline (up to 24
/// bytes): every replica holds one entry per node, 25 M entries over the placement bench's
/// 5,000 cores, and a heap allocation each was most of it.
#[allow(clippy::disallowed_types)] // lookups only: iteration order never shows
type NodeIds = rustc_hash::FxHashMap<compact_str::CompactString, usize>;

/// Resources held per node, release counts and release holds (see the module doc).
#[derive(Debug, Clone)]
pub(super) struct UsageIndex {
    /// Dense ids of the node names seen as targets or placement candidates.
    /// Looked up, never iterated: a hash map is deterministic enough here and spares the
    /// string comparisons of a tree search on every released attempt.
    node_ids: NodeIds,
    /// Resources held by live attempts, per node id.
    pub(super) by_node: Vec<Resources>,
    /// How many times some node's usage went down (or was rebuilt): the placer's cue that
    /// a slot that found no room may find some now.
    releases: u64,
    /// Per node id, the value of `releases` when its usage last went down: a slot that found
    /// no room at release count `g` can fit now only on a node released after `g`.
    released: Vec<u64>,
    /// Per node id, while a release is held: the usage before it (see
    /// [`UsageIndex::placement_usage`]).
    holds: Vec<Option<Resources>>,
    /// Node ids whose hold opened since the scheduler last looked.
    opened: Vec<usize>,
    /// How many releases were folded into an open hold (a placer that already sees the
    /// hold sees them at once: `Scheduler::still_no_room`).
    folds: u64,
    /// Per node id, the value of `folds` at its last fold.
    folded_at: Vec<u64>,
    /// Releases are held until the scheduler ends them.
    hold_releases: bool,
}

impl UsageIndex {
    /// An empty index; `hold_releases`: releases wait for [`UsageIndex::end_hold`].
    pub(super) fn new(hold_releases: bool) -> Self {
        Self {
            node_ids: NodeIds::default(),
            by_node: Vec::new(),
            releases: 0,
            released: Vec::new(),
            holds: Vec::new(),
            opened: Vec::new(),
            folds: 0,
            folded_at: Vec::new(),
            hold_releases,
        }
    }

    /// The dense id of a node name (assigned on first use, with zero usage; ids are never
    /// reused).
    pub(super) fn node_id(&mut self, node: &str) -> usize {
        if let Some(&id) = self.node_ids.get(node) {
            return id;
        }
        let id = self.by_node.len();
        self.by_node.push(Resources::default());
        self.node_ids.insert(node.into(), id);
        id
    }

    /// Resources held by live attempts on the node with id `id`.
    pub(super) fn usage_of(&self, id: usize) -> Resources {
        self.by_node.get(id).copied().unwrap_or_default()
    }

    /// Resources held by live attempts on the node named `node`.
    pub(super) fn usage_by_name(&self, node: &str) -> Resources {
        self.node_ids
            .get(node)
            .map_or_else(Resources::default, |&id| self.usage_of(id))
    }

    /// Grows whenever a live attempt's resources are released (see the field).
    pub(super) fn releases(&self) -> u64 {
        self.releases
    }

    /// The release count when the usage of node `id` last went down (0: never, its usage
    /// has only grown since the index started or was last rebuilt).
    pub(super) fn released_at(&self, id: usize) -> u64 {
        self.released.get(id).copied().unwrap_or(0)
    }

    /// Adds `resources` to node `id`'s usage.
    pub(super) fn add(&mut self, id: usize, resources: &Resources) {
        self.by_node[id] = self.by_node[id].saturating_add(resources);
    }

    /// Releases some of node `id`'s usage: counted at once, or held (see
    /// [`UsageIndex::placement_usage`]).
    pub(super) fn release(&mut self, id: usize, resources: &Resources) {
        let before = self.by_node[id];
        self.by_node[id] = before.saturating_sub(resources);
        if !self.hold_releases {
            self.count_release(id);
            return;
        }
        if self.holds.len() <= id {
            self.holds.resize(id + 1, None);
        }
        match &mut self.holds[id] {
            Some(held) => {
                *held = held.max_each(&before);
                self.folds += 1;
                if self.folded_at.len() <= id {
                    self.folded_at.resize(id + 1, 0);
                }
                self.folded_at[id] = self.folds;
            }
            hold @ None => {
                *hold = Some(before);
                self.opened.push(id);
            }
        }
    }

    fn count_release(&mut self, id: usize) {
        self.releases += 1;
        if self.released.len() <= id {
            self.released.resize(id + 1, 0);
        }
        self.released[id] = self.releases;
    }

    /// Moves a contribution from `before` to `after` (node id, resources).
    pub(super) fn adjust(
        &mut self,
        before: Option<(usize, Resources)>,
        after: Option<(usize, Resources)>,
    ) {
        if before == after {
            return;
        }
        if let Some((node, r)) = before {
            self.release(node, &r);
        }
        if let Some((node, r)) = after {
            self.add(node, &r);
        }
    }

    /// Zeroes every node's usage and counts a release everywhere, before the caller adds
    /// back what live attempts hold ([`UsageIndex::end_rebuild`] once done). Open holds
    /// stay: they record what placers still count, and the scheduler ends them on its timers.
    pub(super) fn start_rebuild(&mut self) {
        self.releases += 1;
        self.by_node.fill(Resources::default());
    }

    /// Marks every node released at the rebuild's count.
    pub(super) fn end_rebuild(&mut self) {
        self.released = vec![self.releases; self.by_node.len()];
    }

    /// Node ids whose releases started being held since the last call.
    pub(super) fn take_opened(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.opened)
    }

    /// Releases folded into an open hold so far.
    pub(super) fn folds(&self) -> u64 {
        self.folds
    }

    /// The fold count at node `id`'s last fold (0: never).
    pub(super) fn folded_at(&self, id: usize) -> u64 {
        self.folded_at.get(id).copied().unwrap_or(0)
    }

    /// Ends the hold of node `id`'s releases, counting them now.
    pub(super) fn end_hold(&mut self, id: usize) {
        if self.holds.get_mut(id).and_then(Option::take).is_some() {
            self.count_release(id);
        }
    }

    /// While a release on node `id` is held: the usage before it.
    pub(super) fn held(&self, id: usize) -> Option<Resources> {
        self.holds.get(id).copied().flatten()
    }

    /// What a placer counts as used on node `id`: its live attempts, or while a release
    /// there is held, the usage before the release if that is higher.
    pub(super) fn placement_usage(&self, id: usize) -> Resources {
        let usage = self.usage_of(id);
        match self.held(id) {
            Some(held) => usage.max_each(&held),
            None => usage,
        }
    }
}
