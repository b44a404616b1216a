//! Whether this node sees most of its cluster: the known membership, the last probes' outcomes
//! and stalls, folded into a [`Quorum`] (the rules are in `docs/faults.md`).
//!
//! The membership core tells the tracker about every status change, probe outcome and late
//! timer; [`QuorumTracker::evaluate`] turns that into the quorum after every input. Counts
//! are kept incrementally, so evaluating costs a few set lookups, not a walk of the members.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use compact_str::CompactString;

use crate::types::{MemberStatus, Millis, Quorum};

/// The outcome of one completed SWIM probe of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Answered, directly or through another member.
    Answered,
    /// No answer from the member (name, generation) nor through anyone asked.
    Failed(CompactString, u64),
}

/// What the quorum is computed from. Owned by the membership core.
#[derive(Debug)]
pub(crate) struct QuorumTracker {
    me: CompactString,
    /// The known membership: every name seen that has not left or been forgotten (this node
    /// included while it has not left).
    known: BTreeSet<CompactString>,
    /// The known names whose member is alive in the view (this node included).
    alive: BTreeSet<CompactString>,
    /// When each known member that is not alive was last seen to go down (or was restored
    /// from disk without being heard of yet), for `forget_down_after`.
    down_since: BTreeMap<CompactString, Millis>,
    /// When each known member that is not alive (suspect or down) was last seen to go
    /// missing, for dating a loss of the majority back to its first sign
    /// ([`QuorumTracker::loss_began`]). Restored names are not in it: they were not seen go.
    missing_since: BTreeMap<CompactString, Millis>,
    /// The last two completed probes, newest last.
    probes: VecDeque<Probe>,
    /// A probe period's probe is in flight (the last probe timer found members to probe).
    probing: bool,
    /// A probe failed during the current foca call.
    failed_now: bool,
    /// The view is stale until then: this node was stopped or starved.
    stalled_until: Option<(Millis, Duration)>,
    /// Bumped whenever `known` changes, so a shell persists it only then.
    known_version: u64,
    probe_period: Duration,
    current: Quorum,
    /// Why `current` has no majority, before it is worded (compared on every datagram).
    lack: Option<Lack>,
    /// The cluster declared this node down (when) and no probe of ours has been answered
    /// since: the others are replacing our work, whatever our own view shows (a one-way cut:
    /// we hear them, they do not hear us).
    declared_down: Option<Millis>,
    /// foca started a probe since the declaration (it may start none for a while: after a
    /// rejoin it waits to hear from a member).
    probed_since_declared: bool,
    /// When the declaration's grace began: the evaluation after the first such probe.
    grace_from: Option<Millis>,
}

/// Why a node has no majority.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lack {
    /// It sees too few of the known members.
    TooFew,
    /// The last two probes of distinct live members failed.
    Probes,
    /// It resumed from a stall this late.
    Stall(std::time::Duration),
    /// The cluster declared it down and no probe of its own was answered since.
    DeclaredDown,
}

/// For this many probe periods after the cluster declared this node down, counted from the
/// first probe foca starts after it, the declaration alone does not make the node cut off
/// (`Quorum::just_declared_down`): a node that was itself cut off declares healthy members
/// down and gossips it when it returns, and their next probe, answered within two periods,
/// ends it (simulator finding 12). After a rejoin foca starts no probe until it hears from a
/// member, which can take until the next announce (3 s) when every node rejoined at once and
/// their announces went to each other's old identities. A node on the wrong side of a one-way
/// cut hears the others, probes at once, gets no answer, and is cut off from the declaration
/// on.
const DECLARED_DOWN_GRACE_PROBES: u32 = 3;

/// The most probe periods a member must stay down before it is acted on (see
/// [`Quorum::settle_ms`]): at larger sizes a minority's members share their suspicions by
/// gossip faster than one node probes.
const MAX_SETTLE_PROBES: u32 = 8;

impl QuorumTracker {
    pub(crate) fn new(me: CompactString, probe_period: Duration, now: Millis) -> Self {
        let mut t = QuorumTracker {
            probe_period,
            known: BTreeSet::new(),
            alive: BTreeSet::new(),
            down_since: BTreeMap::new(),
            missing_since: BTreeMap::new(),
            probes: VecDeque::with_capacity(2),
            probing: false,
            failed_now: false,
            stalled_until: None,
            known_version: 0,
            current: Quorum::alone(now),
            lack: None,
            declared_down: None,
            probed_since_declared: false,
            grace_from: None,
            me: me.clone(),
        };
        t.known.insert(me.clone());
        t.alive.insert(me);
        t
    }

    /// A member's status changed in the view.
    pub(crate) fn on_status(&mut self, name: &CompactString, status: MemberStatus, now: Millis) {
        match status {
            MemberStatus::Left => {
                if self.known.remove(name) {
                    self.known_version += 1;
                }
                self.alive.remove(name);
                self.down_since.remove(name);
                self.missing_since.remove(name);
            }
            MemberStatus::Alive => {
                if self.known.insert(name.clone()) {
                    self.known_version += 1;
                }
                self.alive.insert(name.clone());
                self.down_since.remove(name);
                self.missing_since.remove(name);
            }
            MemberStatus::Suspect | MemberStatus::Down => {
                if self.known.insert(name.clone()) {
                    self.known_version += 1;
                }
                if self.alive.remove(name) {
                    self.missing_since.insert(name.clone(), now);
                }
                if status == MemberStatus::Down {
                    self.down_since.entry(name.clone()).or_insert(now);
                } else {
                    self.down_since.remove(name);
                }
            }
        }
    }

    /// Names remembered from an earlier run of this node: counted as known, not reachable,
    /// until they are heard of.
    pub(crate) fn restore(&mut self, names: impl IntoIterator<Item = CompactString>, now: Millis) {
        for name in names {
            if name == self.me || self.known.contains(&name) {
                continue;
            }
            self.known.insert(name.clone());
            self.down_since.insert(name, now);
            self.known_version += 1;
        }
    }

    /// Removes `name` from the known membership. Refused for this node and for a member
    /// alive in the view.
    pub(crate) fn forget(&mut self, name: &str) -> Result<(), ForgetError> {
        if name == self.me {
            return Err(ForgetError::Myself);
        }
        if self.alive.contains(name) {
            return Err(ForgetError::Alive(name.to_string()));
        }
        if !self.known.remove(name) {
            return Err(ForgetError::Unknown(name.to_string()));
        }
        self.down_since.remove(name);
        self.missing_since.remove(name);
        self.known_version += 1;
        Ok(())
    }

    /// The known members down for longer than `after`, which a node holding a majority
    /// forgets.
    pub(crate) fn down_longer_than(&self, after: Duration, now: Millis) -> Vec<CompactString> {
        let after = after.as_millis() as u64;
        self.down_since
            .iter()
            .filter(|(_, t)| now.since(**t) > after)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The probe timer fired: the probe started a period ago (if any) completed now.
    pub(crate) fn begin_probe_period(&mut self) {
        self.failed_now = false;
    }

    /// The cluster declared this node down (foca renewed its identity to rejoin): no majority
    /// until one of its probes is answered.
    pub(crate) fn declared_down(&mut self, now: Millis) {
        self.declared_down = Some(now);
        self.probed_since_declared = false;
        self.grace_from = None;
        // The probe in flight was started under the old identity, and foca may drop it
        // without a verdict when it renews: only a probe started from now on may clear this.
        self.probing = false;
    }

    /// foca reported the probe of `(name, generation)` failed.
    pub(crate) fn probe_failed(&mut self, name: CompactString, generation: u64) {
        self.failed_now = true;
        self.push_probe(Probe::Failed(name, generation));
    }

    /// The probe timer's foca call ended; `members` is how many members foca may probe now.
    pub(crate) fn end_probe_period(&mut self, members: usize) {
        if self.probing && !self.failed_now {
            self.push_probe(Probe::Answered);
            self.declared_down = None;
        }
        self.failed_now = false;
        self.probing = members > 0;
        self.probed_since_declared |= self.probing;
    }

    /// The probe timer fired but foca ignored it (a timer of an earlier identity or
    /// connection): no probe completed and none started. Without this, the first probe after
    /// a rejoin counted as answered before it was sent, and a node on the wrong side of a
    /// one-way cut regained its majority every few seconds.
    pub(crate) fn probe_period_skipped(&mut self) {
        self.failed_now = false;
        self.probing = false;
    }

    /// Keeps the last two completed probes *of distinct members*: a member that failed again
    /// (SWIM may probe one member twice in a row across a round) replaces its own entry. Two
    /// entries of one member never count as two failures, so before this, an isolated node
    /// that probed a suspect member twice got its majority back (its stale view still showed
    /// 3 of 5 alive) until the next probe of another member failed.
    fn push_probe(&mut self, probe: Probe) {
        if let (Probe::Failed(name, _), Some(Probe::Failed(last, _))) = (&probe, self.probes.back())
            && name == last
        {
            self.probes.pop_back();
        }
        if self.probes.len() == 2 {
            self.probes.pop_front();
        }
        self.probes.push_back(probe);
    }

    /// A timer fired `late` after it was due; past `threshold` this node was stopped or
    /// starved and its view is stale for the stall's length plus `cooldown`.
    pub(crate) fn timer_late(
        &mut self,
        late: Duration,
        threshold: Duration,
        cooldown: Duration,
        now: Millis,
    ) {
        if late <= threshold {
            return;
        }
        let until = now.plus(late + cooldown);
        if self.stalled_until.is_none_or(|(t, _)| t < until) {
            self.stalled_until = Some((until, late));
        }
    }

    /// Version of the known membership, bumped on every change.
    pub(crate) fn known_version(&self) -> u64 {
        self.known_version
    }

    /// Whether `name` is in the known membership.
    pub(crate) fn is_known(&self, name: &str) -> bool {
        self.known.contains(name)
    }

    /// The known membership, sorted.
    pub(crate) fn known(&self) -> impl Iterator<Item = &CompactString> {
        self.known.iter()
    }

    /// The quorum as last evaluated.
    pub(crate) fn current(&self) -> &Quorum {
        &self.current
    }

    /// Recomputes the quorum. `still_probed(name, generation)` says whether a member a failed
    /// probe named is still that member (alive, suspect or down at that generation; one that
    /// left or came back as a new generation does not count). Returns whether it changed.
    pub(crate) fn evaluate(
        &mut self,
        now: Millis,
        still_probed: impl Fn(&str, u64) -> bool,
    ) -> bool {
        let known = u32::try_from(self.known.len()).unwrap_or(u32::MAX);
        let reachable = u32::try_from(self.alive.len()).unwrap_or(u32::MAX);
        // The tie-break walks two trees of names: only asked on a tie (this runs after every
        // datagram, and the walks were most of its cost at 1,000 members).
        let smallest_reachable = || {
            self.known
                .first()
                .is_some_and(|first| self.alive.contains(first))
        };
        let counted = reachable.saturating_mul(2) > known
            || (reachable.saturating_mul(2) == known && smallest_reachable());
        let probes_failed = self.probes.len() == 2
            && match (&self.probes[0], &self.probes[1]) {
                (Probe::Failed(a, ga), Probe::Failed(b, gb)) => {
                    // A forgotten member no longer counts (a survivor that forgot its dead
                    // peers has nobody left to probe, so nothing would ever replace them).
                    let counts =
                        |n: &CompactString, g| self.known.contains(n) && still_probed(n, g);
                    a != b && counts(a, *ga) && counts(b, *gb)
                }
                _ => false,
            };
        if self.stalled_until.is_some_and(|(t, _)| t <= now) {
            self.stalled_until = None;
        }
        let lack = if !counted {
            Some(Lack::TooFew)
        } else if self.declared_down.is_some() {
            Some(Lack::DeclaredDown)
        } else if probes_failed {
            Some(Lack::Probes)
        } else {
            self.stalled_until.map(|(_, late)| Lack::Stall(late))
        };
        let majority = lack.is_none();
        let grace_ms = self.probe_period.as_millis() as u64 * u64::from(DECLARED_DOWN_GRACE_PROBES);
        if self.declared_down.is_some() && self.probed_since_declared {
            self.grace_from.get_or_insert(now);
        }
        let just_declared_down = lack == Some(Lack::DeclaredDown)
            && !probes_failed
            && self.grace_from.is_none_or(|at| now.since(at) < grace_ms);
        let settle_probes = known.saturating_sub(1).min(MAX_SETTLE_PROBES);
        let settle_ms = self.probe_period.as_millis() as u64 * u64::from(settle_probes);
        let same = lack == self.lack
            && majority == self.current.majority
            && just_declared_down == self.current.just_declared_down
            && known == self.current.known
            && reachable == self.current.reachable
            && settle_ms == self.current.settle_ms;
        if same {
            return false;
        }
        let since = if majority == self.current.majority {
            self.current.since
        } else if matches!(lack, Some(Lack::TooFew | Lack::Probes)) {
            self.loss_began(now, settle_ms)
        } else {
            now
        };
        let reason = lack.map(|l| match l {
            Lack::TooFew => format!("sees {reachable} of {known} members"),
            Lack::Probes => "the last 2 probes failed".to_string(),
            Lack::DeclaredDown => {
                "the cluster declared this node down and no probe was answered since".to_string()
            }
            Lack::Stall(late) => format!("resumed from a {:.1} s stall", late.as_secs_f64()),
        });
        let next = Quorum {
            known,
            reachable,
            majority,
            since,
            reason,
            settle_ms,
            stalled: matches!(lack, Some(Lack::Stall(_))),
            just_declared_down,
        };
        self.lack = lack;
        self.current = next;
        true
    }
}

impl QuorumTracker {
    /// When a loss of the majority found `now` (too few reachable, or failed probes) began:
    /// the earliest moment a member still missing went missing, within `settle_ms` of now
    /// and since the majority was gained. A node on the minority side of a cut must see
    /// several members go before it counts too few, one probe period at a time (5 s for one
    /// of four nodes cut off from eight, simulator finding 15), while its first suspicion
    /// comes within about two probe periods of the cut; the `stop_after_ms` clock of its
    /// tasks runs from the cut's first sign, not from the moment enough evidence arrived, so
    /// that the duplicate bound does not grow with the size of the minority. `settle_ms` is
    /// the longest the quorum allows a minority to take (the majority waits that long before
    /// condemning), so older marks (a node that crashed a while ago) are another event.
    fn loss_began(&self, now: Millis, settle_ms: u64) -> Millis {
        self.missing_since
            .values()
            .copied()
            .filter(|t| *t >= self.current.since && now.since(*t) <= settle_ms)
            .min()
            .map_or(now, |t| t.min(now))
    }
}

/// Why a member cannot be forgotten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgetError {
    /// A node never forgets itself.
    #[error("a node cannot forget itself")]
    Myself,
    /// The member is alive in this node's view: it is not gone.
    #[error("node {0} is alive; only a node that is down or suspect can be forgotten")]
    Alive(String),
    /// No such name in the known membership.
    #[error("node {0} is not in the known membership")]
    Unknown(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> CompactString {
        CompactString::from(s)
    }

    fn tracker_of(names: &[&str]) -> QuorumTracker {
        let mut t = QuorumTracker::new(n(names[0]), Duration::from_secs(1), Millis(0));
        for name in &names[1..] {
            t.on_status(&n(name), MemberStatus::Alive, Millis(0));
        }
        t.evaluate(Millis(0), |_, _| true);
        t
    }

    #[test]
    fn suspects_count_as_unreachable() {
        let mut t = tracker_of(&["a", "b", "c", "d", "e"]);
        assert!(t.current().majority);
        t.on_status(&n("b"), MemberStatus::Suspect, Millis(1));
        t.on_status(&n("c"), MemberStatus::Suspect, Millis(1));
        t.evaluate(Millis(1), |_, _| true);
        assert!(t.current().majority, "3 of 5 is a majority");
        t.on_status(&n("d"), MemberStatus::Down, Millis(2));
        assert!(t.evaluate(Millis(2), |_, _| true));
        let q = t.current();
        assert!(!q.majority);
        // Dated back to the first member that went missing (`loss_began`).
        assert_eq!((q.reachable, q.known, q.since), (2, 5, Millis(1)));
        assert_eq!(q.reason.as_deref(), Some("sees 2 of 5 members"));
    }

    #[test]
    fn a_loss_dates_back_to_its_first_sign_within_settle() {
        // 12 members, probe period 1 s: settle_ms is 8 s. A member down for long is another
        // event; the loss found at 25 s began when the first of the others went, at 20.5 s.
        let names: Vec<String> = (0..12).map(|i| format!("n{i:02}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut t = tracker_of(&names);
        t.on_status(&n("n11"), MemberStatus::Down, Millis(1_000));
        t.evaluate(Millis(1_000), |_, _| true);
        assert!(t.current().majority);
        for (i, at) in [
            (10, 20_500),
            (9, 21_400),
            (8, 22_300),
            (7, 23_000),
            (6, 24_000),
            (5, 25_000),
        ] {
            t.on_status(&n(&format!("n{i:02}")), MemberStatus::Suspect, Millis(at));
            t.evaluate(Millis(at), |_, _| true);
        }
        let q = t.current();
        assert!(!q.majority, "{q:?}");
        assert_eq!(q.since, Millis(20_500));
        // Back alive: the majority returns now, and a later loss dates from its own signs.
        for i in [10, 9, 8] {
            t.on_status(&n(&format!("n{i:02}")), MemberStatus::Alive, Millis(30_000));
        }
        t.evaluate(Millis(30_000), |_, _| true);
        assert!(t.current().majority);
        assert_eq!(t.current().since, Millis(30_000));
        // n07, n06 and n05 went before the majority returned: not signs of the next loss.
        for (i, at) in [(4, 50_000), (3, 51_000), (2, 52_000)] {
            t.on_status(&n(&format!("n{i:02}")), MemberStatus::Suspect, Millis(at));
            t.evaluate(Millis(at), |_, _| true);
        }
        assert!(!t.current().majority);
        assert_eq!(t.current().since, Millis(50_000));
    }

    #[test]
    fn an_exact_half_holds_only_with_the_smallest_name() {
        let mut with_smallest = tracker_of(&["a", "b", "c", "d"]);
        with_smallest.on_status(&n("c"), MemberStatus::Down, Millis(1));
        with_smallest.on_status(&n("d"), MemberStatus::Down, Millis(1));
        with_smallest.evaluate(Millis(1), |_, _| true);
        assert!(with_smallest.current().majority);
        let mut without = tracker_of(&["c", "a", "b", "d"]);
        without.on_status(&n("a"), MemberStatus::Down, Millis(1));
        without.on_status(&n("b"), MemberStatus::Down, Millis(1));
        without.evaluate(Millis(1), |_, _| true);
        assert!(!without.current().majority);
    }

    #[test]
    fn two_failed_probes_of_live_members_in_a_row_lose_the_majority() {
        let mut t = tracker_of(&["a", "b", "c", "d", "e"]);
        t.end_probe_period(4); // a probe starts
        t.begin_probe_period();
        t.probe_failed(n("b"), 1);
        t.end_probe_period(4);
        t.evaluate(Millis(1), |_, _| true);
        assert!(
            t.current().majority,
            "one failure is a dead member, not isolation"
        );
        t.begin_probe_period();
        t.probe_failed(n("c"), 1);
        t.end_probe_period(4);
        t.evaluate(Millis(2), |_, _| true);
        assert_eq!(
            t.current().reason.as_deref(),
            Some("the last 2 probes failed")
        );
        // Once the failed members are down, the view counts them instead.
        t.evaluate(Millis(3), |_, _| false);
        assert!(t.current().majority);
        // An answered probe restores it too.
        t.begin_probe_period();
        t.end_probe_period(4);
        t.evaluate(Millis(4), |_, _| true);
        assert!(t.current().majority);
    }

    #[test]
    fn declared_down_holds_the_majority_back_until_a_probe_is_answered() {
        let mut t = tracker_of(&["a", "b", "c", "d", "e"]);
        t.end_probe_period(4);
        t.declared_down(Millis(1));
        t.evaluate(Millis(1), |_, _| true);
        assert!(
            !t.current().majority,
            "all five in view, but the others think us dead"
        );
        assert!(t.current().just_declared_down && !t.current().cut_off());
        // The probe in flight at the declaration ends without a verdict: it proves nothing.
        t.begin_probe_period();
        t.end_probe_period(4);
        t.evaluate(Millis(1), |_, _| true);
        assert!(
            !t.current().majority,
            "a probe of the old identity cleared it"
        );
        // Failed probes (a one-way cut: they never hear us) keep it back.
        t.begin_probe_period();
        t.probe_failed(n("b"), 1);
        t.end_probe_period(4);
        t.evaluate(Millis(2), |_, _| true);
        assert!(!t.current().majority);
        // One answered probe: they hear us again.
        t.begin_probe_period();
        t.end_probe_period(4);
        t.evaluate(Millis(3), |_, _| true);
        assert!(t.current().majority);
    }

    /// Simulator finding 12: a declaration answered within the grace never makes the node
    /// cut off; one that is not answered does, and so do two failed probes within it.
    #[test]
    fn a_declaration_cuts_off_only_after_its_grace_or_failed_probes() {
        let mut t = tracker_of(&["a", "b", "c", "d", "e"]);
        t.end_probe_period(4);
        t.declared_down(Millis(10_000));
        t.evaluate(Millis(10_000), |_, _| true);
        // foca ignores the probe timer of the old identity: no probe completes or starts.
        t.begin_probe_period();
        t.probe_period_skipped();
        t.evaluate(Millis(10_500), |_, _| true);
        assert!(!t.current().majority && t.current().just_declared_down);
        // So the next tick completes nothing either: the probe it starts is the first.
        t.begin_probe_period();
        t.end_probe_period(4);
        t.evaluate(Millis(11_500), |_, _| true);
        assert!(!t.current().majority, "a probe not yet sent was answered");
        // The grace runs from that first probe.
        t.evaluate(Millis(14_499), |_, _| true);
        assert!(t.current().just_declared_down);
        t.evaluate(Millis(14_500), |_, _| true);
        assert!(t.current().cut_off(), "the grace is over: cut off");
        assert_eq!(t.current().since, Millis(10_000), "since the declaration");
        t.begin_probe_period();
        t.end_probe_period(4);
        t.evaluate(Millis(15_000), |_, _| true);
        assert!(t.current().majority);

        // No probe at all (foca heard from nobody since the rejoin): not known cut off.
        t.declared_down(Millis(16_000));
        t.begin_probe_period();
        t.probe_period_skipped();
        t.evaluate(Millis(30_000), |_, _| true);
        assert!(!t.current().majority && t.current().just_declared_down);
        t.begin_probe_period();
        t.end_probe_period(4);
        t.begin_probe_period();
        t.end_probe_period(4);
        t.evaluate(Millis(31_000), |_, _| true);
        assert!(t.current().majority);

        // Two failed probes within the grace: cut off at once.
        t.declared_down(Millis(20_000));
        for m in ["b", "c"] {
            t.begin_probe_period();
            t.probe_failed(n(m), 1);
            t.end_probe_period(4);
        }
        t.evaluate(Millis(21_000), |_, _| true);
        assert!(t.current().cut_off());
    }

    #[test]
    fn the_same_member_failing_twice_is_one_dead_member() {
        let mut t = tracker_of(&["a", "b"]);
        for _ in 0..2 {
            t.begin_probe_period();
            t.probe_failed(n("b"), 1);
            t.end_probe_period(1);
        }
        t.evaluate(Millis(1), |_, _| true);
        assert!(t.current().majority);
    }

    #[test]
    fn a_stall_holds_the_majority_back_for_its_length_plus_the_cooldown() {
        let mut t = tracker_of(&["a", "b", "c"]);
        let (threshold, cooldown) = (Duration::from_secs(1), Duration::from_secs(5));
        t.timer_late(
            Duration::from_millis(900),
            threshold,
            cooldown,
            Millis(1_000),
        );
        t.evaluate(Millis(1_000), |_, _| true);
        assert!(t.current().majority, "under the threshold is jitter");
        t.timer_late(Duration::from_secs(6), threshold, cooldown, Millis(10_000));
        t.evaluate(Millis(10_000), |_, _| true);
        assert_eq!(
            t.current().reason.as_deref(),
            Some("resumed from a 6.0 s stall")
        );
        t.evaluate(Millis(20_999), |_, _| true);
        assert!(!t.current().majority);
        t.evaluate(Millis(21_000), |_, _| true);
        assert!(t.current().majority);
        assert_eq!(t.current().since, Millis(21_000));
    }

    #[test]
    fn left_and_forgotten_members_leave_the_denominator() {
        let mut t = tracker_of(&["a", "b", "c"]);
        t.on_status(&n("b"), MemberStatus::Left, Millis(1));
        t.on_status(&n("c"), MemberStatus::Down, Millis(1));
        t.evaluate(Millis(1), |_, _| true);
        assert!(
            t.current().majority,
            "a of a, c: the smallest name holds the half"
        );
        assert_eq!(t.forget("a"), Err(ForgetError::Myself));
        assert_eq!(t.forget("zz"), Err(ForgetError::Unknown("zz".into())));
        t.forget("c").unwrap();
        t.evaluate(Millis(2), |_, _| true);
        assert_eq!((t.current().known, t.current().reachable), (1, 1));
    }

    #[test]
    fn restored_names_count_until_heard_of() {
        let mut t = QuorumTracker::new(n("c"), Duration::from_secs(1), Millis(0));
        t.restore([n("a"), n("b"), n("c")], Millis(0));
        t.evaluate(Millis(0), |_, _| true);
        assert!(
            !t.current().majority,
            "a restarted node alone is not its cluster"
        );
        t.on_status(&n("a"), MemberStatus::Alive, Millis(1));
        t.evaluate(Millis(1), |_, _| true);
        assert!(t.current().majority);
        assert_eq!(
            t.down_longer_than(Duration::from_millis(5), Millis(10)),
            vec![n("b")]
        );
        assert_eq!(t.forget("a"), Err(ForgetError::Alive("a".into())));
    }
}
