//! How a membership view becomes the scheduler's member lists (live members, placement
//! candidates, down times), and when a down node's work may be condemned.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use shoal_gossip::{MemberInfo, MemberStatus, Millis, ResourceAd};

use crate::hash::name_hash;
use crate::ids::AttemptId;
use crate::placement::Candidate;
use crate::roles::{ABSENT_SETTLE_MS, Members, REGAIN_SETTLE_MS, Wake, down_or_gone};
use crate::scheduler::Scheduler;

impl Scheduler {
    /// The same input as [`Scheduler::handle_members`], from a view built once for many
    /// cores: the cores share its lists instead of copying them ([`MemberView`]).
    pub fn handle_member_view(&mut self, now: Millis, view: &MemberView) {
        self.members_input(now, view.members(), Some(view));
    }

    pub(crate) fn members_input(
        &mut self,
        now: Millis,
        members: &[MemberInfo],
        view: Option<&MemberView>,
    ) {
        self.tick(now);
        self.ask_to_catch_up_after(members);
        self.catalog_changes.members = true;
        if !self.update_in_place(members) {
            let before = Arc::clone(&self.members.all);
            match view {
                Some(view) => self.set_members(view),
                None => self.set_members(&MemberView::transient(members)),
            }
            if !Self::same_statuses(&before, &self.members.all) {
                self.work.everything = true;
            } else {
                self.retry_pending_soon();
            }
        }
        self.reconcile();
    }

    /// An empty view: a new core's, and a restored one's until the membership reports (the
    /// candidates hold ids into the replica's usage index).
    pub(crate) fn clear_members(&mut self) {
        self.set_members(&MemberView::transient(&[]));
    }

    /// Applies a view that differs from the current one at most in what members' ads say
    /// outside their shape (version, addresses) and in update times, which placement does not
    /// read. Returns false, changing nothing, when membership, a status, an identity or an
    /// ad's capacity, attributes, draining or left flag changed: the caller rebuilds the
    /// derived lists.
    pub(crate) fn update_in_place(&mut self, members: &[MemberInfo]) -> bool {
        // The view comes sorted by name (as the membership core lists it), like `all`: walking
        // both side by side replaces two name lookups per member. An unsorted view simply
        // takes the rebuild path.
        if members.len() != self.members.all.len() {
            return false;
        }
        let node = self.node.as_str();
        let unchanged_shape = |(cur, m): (&MemberInfo, &MemberInfo)| {
            cur.id == m.id
                && (cur.status == m.status || m.id.name == node)
                && match (&cur.ad, &m.ad) {
                    (None, None) => true,
                    (Some(a), Some(b)) => same_version(a, b) || same_shape(a, b),
                    _ => false,
                }
        };
        if !self.members.all.values().zip(members).all(unchanged_shape) {
            return false;
        }
        let same = |cur: &MemberInfo, m: &MemberInfo| {
            let same_ad = match (&cur.ad, &m.ad) {
                (Some(a), Some(b)) => same_version(a, b),
                (a, b) => a == b,
            };
            same_ad && cur.last_update == m.last_update
        };
        if self
            .members
            .all
            .values()
            .zip(members)
            .all(|(cur, m)| same(cur, m))
        {
            // Nothing to copy: a shared view stays shared.
            return true;
        }
        for (cur, m) in Arc::make_mut(&mut self.members.all)
            .values_mut()
            .zip(members)
        {
            if same(cur, m) {
                continue;
            }
            let status = cur.status;
            *cur = m.clone();
            cur.status = status;
        }
        true
    }

    /// Another node missing from the member view altogether.
    pub(crate) fn is_absent(&self, name: &str) -> bool {
        name != self.node && !self.members.all.contains_key(name)
    }

    /// Declared down or gone, or missing from the view: its live attempts are lost once
    /// [`Scheduler::settled_down`] says so.
    pub(crate) fn target_down(&self, name: &str) -> bool {
        self.members.is_down(name) || self.is_absent(name)
    }

    /// Whether the attempt `id`'s target is down for it: down in this view, by a mark that
    /// covers the attempt. A mark does not cover an attempt placed on a newer generation of
    /// the target than the one marked down: its placer saw that start alive, this node has
    /// not heard of it yet, and condemning the attempt would kill a task a restarted node
    /// just admitted (simulator finding 16). A target missing from the view is covered (it
    /// waits `ABSENT_SETTLE_MS`).
    pub(crate) fn attempt_target_down(&self, id: &AttemptId, target: &str) -> bool {
        let placed_on = self.tables().assignment(id).map_or(0, |a| a.generation);
        self.target_down(target)
            && self
                .members
                .all
                .get(target)
                .is_none_or(|m| m.id.generation >= placed_on)
    }

    /// The generation of `name` in this view (0 when it is not in the view).
    pub(crate) fn generation_of(&self, name: &str) -> u64 {
        self.members.all.get(name).map_or(0, |m| m.id.generation)
    }

    fn members_is_down(&self, all: &BTreeMap<String, MemberInfo>, name: &str) -> bool {
        name != self.node && all.get(name).is_some_and(down_or_gone)
    }

    /// When `name`'s work may be condemned: it is down (or left), and has been so while this
    /// node held its majority for the quorum's `settle_ms` — long enough for a node on the
    /// wrong side of a partition to have lost its majority first (`docs/faults.md`). A member
    /// already down when this node (re)gained its majority waits [`REGAIN_SETTLE_MS`] after
    /// the regain if that is longer: its down mark may come from this node's own cut
    /// (simulator finding 12), and the membership core announces to every down member at the
    /// regain, which a live one answers. A node that left on purpose stopped its own work and
    /// is acted on at once. `None`: not down.
    pub(crate) fn down_settles_at(&self, name: &str) -> Option<Millis> {
        let Some(m) = self.members.all.get(name) else {
            // Missing from the view: a node this one has not heard of since it restarted (a
            // joining SWIM node is not told of members already down), or not yet. Condemned
            // after a longer wait, so that a new node's join reaches the view first.
            let since = self.members.absent_since.get(name)?;
            let settle = self.reach.quorum.settle_ms.max(ABSENT_SETTLE_MS);
            return Some(since.max(&self.reach.quorum.since).plus_ms(settle));
        };
        if !down_or_gone(m) {
            return None;
        }
        if m.status == MemberStatus::Left || m.ad.as_ref().is_some_and(|a| a.left) {
            return Some(Millis(0));
        }
        let down = self
            .members
            .down_since
            .get(name)
            .copied()
            .unwrap_or(self.now);
        let regained = self.reach.quorum.since;
        let settle = if down < regained {
            self.reach.quorum.settle_ms.max(REGAIN_SETTLE_MS)
        } else {
            self.reach.quorum.settle_ms
        };
        Some(down.max(regained).plus_ms(settle))
    }

    /// Whether `name`'s live attempts may be marked lost now; when it is down but not yet
    /// settled, arms a wake-up for the moment it is.
    pub(crate) fn settled_down(&mut self, name: &str) -> bool {
        if self.is_absent(name) {
            let now = self.now;
            self.members
                .absent_since
                .entry(name.to_string())
                .or_insert(now);
        }
        match self.down_settles_at(name) {
            None => false,
            Some(at) if at <= self.now => true,
            Some(at) => {
                self.timers.insert((at, Wake::Settled));
                false
            }
        }
    }

    /// Whether the view `after` replaced (set by [`Scheduler::set_members`]) lists the same
    /// members with the same statuses as `before`.
    pub(crate) fn same_statuses(
        before: &BTreeMap<String, MemberInfo>,
        after: &BTreeMap<String, MemberInfo>,
    ) -> bool {
        before.len() == after.len()
            && before
                .iter()
                .zip(after.iter())
                .all(|((a, ma), (b, mb))| a == b && ma.status == mb.status)
    }

    /// Replaces the member lists by `view`'s. The lists that do not depend on this node are
    /// shared with the view (see [`MemberView`]) when this node is in it as alive, which a
    /// converged view says of every member; otherwise this node builds its own, counting
    /// itself alive.
    pub(crate) fn set_members(&mut self, view: &MemberView) {
        let own;
        let view = match view.all.get(&self.node) {
            Some(me) if me.status == MemberStatus::Alive => view,
            _ => {
                let mut all = (*view.all).clone();
                if let Some(me) = all.get_mut(&self.node) {
                    me.status = MemberStatus::Alive;
                }
                own = MemberView::of_map(Vec::new(), all);
                &own
            }
        };
        let all = Arc::clone(&view.all);
        let mut live = Arc::clone(&view.live);
        if !all.contains_key(&self.node) {
            let list = Arc::make_mut(&mut live);
            list.push((self.node.clone(), name_hash(&self.node)));
            list.sort();
        }
        let live_me = live
            .binary_search_by(|(n, _)| n.as_str().cmp(&self.node))
            .ok();
        let me = live_me.map(|i| live[i].1);
        let placeable = self.placeable(view);
        let not_left = all
            .values()
            .filter(|m| m.status != MemberStatus::Left && !m.ad.as_ref().is_some_and(|a| a.left))
            .count();
        let listed = u32::try_from(not_left + usize::from(!all.contains_key(&self.node)))
            .unwrap_or(u32::MAX);
        let now = self.now;
        let before = std::mem::take(&mut self.members.down_since);
        let down_since = all
            .keys()
            .filter(|name| self.members_is_down(&all, name))
            .map(|name| (name.clone(), before.get(name).copied().unwrap_or(now)))
            .collect();
        let mut absent_since = std::mem::take(&mut self.members.absent_since);
        absent_since.retain(|name, _| !all.contains_key(name));
        // What this core knew of peers no longer in the view: nothing reads it for them (the
        // tombstone rule asks live peers; a gap is asked of the sender of an op), and names
        // that never come back (nodes replaced under new names) would pile up.
        self.gc
            .tombstones
            .covered
            .retain(|name, _| all.contains_key(name.as_str()));
        self.repl.gap_asked.retain(|name, _| all.contains_key(name));
        self.members = Members {
            all,
            live,
            live_me,
            me,
            nodes: placeable.nodes,
            usage_ids: placeable.usage_ids,
            by_usage: placeable.by_usage,
            listed,
            down_since,
            absent_since,
        };
        self.coord.room_changes += 1;
        // The `nodes` component's intents count as much as the ads' flags.
        self.refresh_candidates();
    }

    /// The placement candidates of `view` with this replica's usage ids: the view's shared
    /// lists when their ids are this replica's (cores that interned the members' names in
    /// the same order), else lists of its own (the first core to ask leaves its lists in
    /// the view for the next).
    fn placeable(&mut self, view: &MemberView) -> Placeable {
        let usage_ids: Vec<usize> = view
            .candidates()
            .map(|(m, _)| self.replica.node_id(&m.id.name))
            .collect();
        if let Some(shared) = view.placeable.get()
            && *shared.usage_ids == usage_ids
        {
            return shared.clone();
        }
        let nodes: Vec<Candidate> = view
            .candidates()
            .zip(&usage_ids)
            .map(|((m, ad), &usage_id)| Candidate {
                name: m.id.name.to_string(),
                hash: name_hash(&m.id.name),
                usage_id,
                capacity: ad.capacity,
                attributes: ad.attributes.clone(),
                draining: ad.draining,
                ineligible: false,
            })
            .collect();
        let mut by_usage = vec![u32::MAX; usage_ids.iter().max().map_or(0, |m| m + 1)];
        for (i, &id) in usage_ids.iter().enumerate() {
            by_usage[id] = u32::try_from(i).unwrap_or(u32::MAX);
        }
        let placeable = Placeable {
            nodes: Arc::new(nodes),
            usage_ids: Arc::new(usage_ids),
            by_usage: Arc::new(by_usage),
        };
        let _ = view.placeable.set(placeable.clone());
        placeable
    }
}

/// A membership view prepared once for any number of scheduler cores
/// ([`Scheduler::handle_member_view`]): the members by name, the live list and the
/// placement candidates are built here once and shared (`Arc`) by every core that takes
/// the view, instead of each core copying them. A simulation that hands one view to N cores
/// holds it once instead of N times (at 5,000 members, 16 GiB before); an agent holds one
/// core and gains nothing but the copy it no longer makes.
#[derive(Debug)]
pub struct MemberView {
    /// The list as the membership core gave it.
    members: Vec<MemberInfo>,
    all: Arc<BTreeMap<String, MemberInfo>>,
    /// Alive or suspect and not left, with name hashes, sorted by name.
    live: Arc<Vec<(String, u64)>>,
    /// The candidates with the first taker's usage ids (see `Scheduler::placeable`).
    placeable: OnceLock<Placeable>,
}

/// Placement candidates with usage ids, and the two indexes over them (`Members`).
#[derive(Debug, Clone)]
struct Placeable {
    nodes: Arc<Vec<Candidate>>,
    usage_ids: Arc<Vec<usize>>,
    by_usage: Arc<Vec<u32>>,
}

impl MemberView {
    /// The view of `members`, as the membership core lists them (`Membership::members`).
    #[must_use]
    pub fn new(members: &[MemberInfo]) -> Self {
        Self::of_map(members.to_vec(), by_name(members))
    }

    /// The list the view was made from.
    #[must_use]
    pub fn members(&self) -> &[MemberInfo] {
        &self.members
    }

    /// A view for one rebuild of one core, without keeping the list.
    pub(crate) fn transient(members: &[MemberInfo]) -> Self {
        Self::of_map(Vec::new(), by_name(members))
    }

    fn of_map(members: Vec<MemberInfo>, all: BTreeMap<String, MemberInfo>) -> Self {
        let live = all
            .values()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .filter(|m| !m.ad.as_ref().is_some_and(|a| a.left))
            .map(|m| (m.id.name.to_string(), name_hash(&m.id.name)))
            .collect();
        Self {
            members,
            all: Arc::new(all),
            live: Arc::new(live),
            placeable: OnceLock::new(),
        }
    }

    /// Members placement may use: alive, with a resource ad, not left; in name order.
    fn candidates(&self) -> impl Iterator<Item = (&MemberInfo, &ResourceAd)> {
        self.all
            .values()
            .filter(|m| m.status == MemberStatus::Alive)
            .filter_map(|m| m.ad.as_ref().map(|ad| (m, ad)))
            .filter(|(_, ad)| !ad.left)
    }
}

fn by_name(members: &[MemberInfo]) -> BTreeMap<String, MemberInfo> {
    members
        .iter()
        .map(|m| (m.id.name.to_string(), m.clone()))
        .collect()
}

/// Whether two ads are the same version of one node's ad, hence equal: the membership core
/// stores an ad only when its `(generation, version)` is newer than the one it holds, so one
/// view never shows two contents under one version. Comparing the attribute maps of every
/// member on every feed was most of `handle_members`.
fn same_version(a: &ResourceAd, b: &ResourceAd) -> bool {
    a.key() == b.key() && a.node == b.node
}

/// Whether two ads of one member agree on everything placement and liveness derive from.
fn same_shape(a: &ResourceAd, b: &ResourceAd) -> bool {
    a.node == b.node
        && a.generation == b.generation
        && a.capacity == b.capacity
        && a.attributes == b.attributes
        && a.draining == b.draining
        && a.left == b.left
}
