//! How a join through seeds stands, and when it is worth telling the operator.
//!
//! What it promises: a node whose seeds never answer looks, to everything else, like a healthy
//! cluster of one (it counts itself a majority of one: `docs/membership.md`, "A join nobody
//! answers"). [`JoinTracker`] keeps what the operator needs to tell the two apart
//! ([`JoinStatus`]) and decides when to say it: one [`JoinNotice::NoAnswer`] at the first
//! announce round `join_warn_after` past the first seed, then at most one every
//! `join_warn_every` while no seed answers (the rounds themselves back off from 200 ms, and a
//! line per round would flood the log while a cluster starts); and one [`JoinNotice::Joined`]
//! when the first member is heard from. Only the newest notice is kept, so a shell that never
//! polls (the simulator) holds one at most.
//!
//! How to drive it (`Membership` does): [`JoinTracker::seed_added`] for every new seed,
//! [`JoinTracker::attempted`] after every announce round that follows, and
//! [`JoinTracker::heard_from`] when another member first shows up alive; read it with
//! [`JoinTracker::status`] and [`JoinTracker::poll_notice`]. Time is an input.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Config;
use crate::types::{JoinNotice, JoinStatus, Millis, NodeId};

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One node's join through its seeds. See the module docs.
#[derive(Debug)]
pub(super) struct JoinTracker {
    warn_after_ms: u64,
    warn_every_ms: u64,
    retry_max_ms: u64,
    status: JoinStatus,
    /// When the last [`JoinNotice::NoAnswer`] was queued.
    warned_at: Option<Millis>,
    notice: Option<JoinNotice>,
}

impl JoinTracker {
    pub(super) fn new(config: &Config) -> Self {
        Self {
            warn_after_ms: ms(config.join_warn_after),
            warn_every_ms: ms(config.join_warn_every),
            retry_max_ms: ms(config.join_retry_max),
            status: JoinStatus::default(),
            warned_at: None,
            notice: None,
        }
    }

    pub(super) fn seeds(&self) -> &[SocketAddr] {
        &self.status.seeds
    }

    /// When this node first heard from another member.
    pub(super) fn joined_at(&self) -> Option<Millis> {
        self.status.joined_at
    }

    pub(super) fn status(&self) -> &JoinStatus {
        &self.status
    }

    /// A new seed, announced to at once. The first starts the clock and is the first
    /// announce round; the next round is `retry` later.
    pub(super) fn seed_added(&mut self, now: Millis, seed: SocketAddr, retry: Duration) {
        debug_assert!(!self.status.seeds.contains(&seed));
        self.status.seeds.push(seed);
        if self.status.since.is_some() {
            return;
        }
        self.status.since = Some(now);
        if !self.status.joined {
            self.status.attempts = 1;
            self.status.retry_ms = ms(retry);
        }
    }

    /// One more announce round to every seed, the next `retry` later. Past `join_warn_after`
    /// without an answer, it queues a [`JoinNotice::NoAnswer`] unless one was queued less than
    /// `join_warn_every` ago.
    pub(super) fn attempted(&mut self, now: Millis, retry: Duration) {
        if self.status.joined || self.status.since.is_none() {
            return;
        }
        self.status.attempts = self.status.attempts.saturating_add(1);
        self.status.retry_ms = ms(retry);
        let waited_ms = self.status.waited_ms(now);
        let quiet = self
            .warned_at
            .is_some_and(|at| now.since(at) < self.warn_every_ms);
        if waited_ms < self.warn_after_ms || quiet {
            return;
        }
        self.warned_at = Some(now);
        self.notice = Some(JoinNotice::NoAnswer {
            seeds: self.status.seeds.clone(),
            waited_ms,
            attempts: self.status.attempts,
            retry_ms: self.status.retry_ms,
            retry_max_ms: self.retry_max_ms,
        });
    }

    /// Another member showed up alive for the first time since this node started. A node
    /// that was given seeds says so once ([`JoinNotice::Joined`]); a node without seeds was
    /// joined by others and has nothing to report.
    pub(super) fn heard_from(&mut self, now: Millis, member: &NodeId) {
        if self.status.joined {
            return;
        }
        self.status.joined = true;
        self.status.joined_at = Some(now);
        self.status.first_member = Some(member.clone());
        self.status.retry_ms = 0;
        if self.status.since.is_some() {
            self.notice = Some(JoinNotice::Joined {
                first_member: member.clone(),
                waited_ms: self.status.waited_ms(now),
                attempts: self.status.attempts,
            });
        }
    }

    pub(super) fn poll_notice(&mut self) -> Option<JoinNotice> {
        self.notice.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], 7_000 + i))
    }

    fn member() -> NodeId {
        NodeId {
            name: "n1".into(),
            addr: seed(1),
            generation: 7,
        }
    }

    /// Drives a tracker as `Membership` does with the default config: the first seed at
    /// `start`, then a round per back-off (200 ms doubling to 30 s) until `until`. Returns
    /// the times (ms after `start`) at which a `NoAnswer` was queued.
    fn no_answer_times(tracker: &mut JoinTracker, start: Millis, until_ms: u64) -> Vec<u64> {
        let config = Config::default();
        let mut backoff = config.join_retry_min;
        tracker.seed_added(start, seed(1), backoff);
        let mut at = start;
        let mut warned = Vec::new();
        // Bounded: each round advances by at least 200 ms.
        while at.since(start) < until_ms {
            at = at.plus(backoff);
            backoff = (backoff * 2).min(config.join_retry_max);
            tracker.attempted(at, backoff);
            if let Some(JoinNotice::NoAnswer { waited_ms, .. }) = tracker.poll_notice() {
                assert_eq!(waited_ms, at.since(start));
                warned.push(waited_ms);
            }
        }
        warned
    }

    #[test]
    fn no_answer_is_told_at_the_first_round_past_5_s_then_at_most_every_30_s() {
        let mut tracker = JoinTracker::new(&Config::default());
        let warned = no_answer_times(&mut tracker, Millis(1_000), 200_000);
        // Rounds at 0.2, 0.6, 1.4, 3.0, 6.2, 12.6, 25.4, 51.0, 81.0, 111.0, … s.
        assert_eq!(
            warned,
            [6_200, 51_000, 81_000, 111_000, 141_000, 171_000, 201_000]
        );
        assert!(warned.windows(2).all(|w| w[1] - w[0] >= 30_000));
        let status = tracker.status();
        assert!(!status.joined);
        assert_eq!(status.attempts, 14, "{status:?}");
        assert_eq!(status.retry_ms, 30_000);
        assert_eq!(status.waited_ms(Millis(1_000 + 201_000)), 201_000);
    }

    #[test]
    fn the_no_answer_notice_names_the_seeds_and_the_next_round() {
        let mut tracker = JoinTracker::new(&Config::default());
        let start = Millis(50);
        tracker.seed_added(start, seed(1), Duration::from_millis(200));
        tracker.seed_added(start, seed(2), Duration::from_millis(200));
        tracker.attempted(start.plus_ms(4_999), Duration::from_secs(8));
        assert_eq!(tracker.poll_notice(), None, "told before join_warn_after");
        tracker.attempted(start.plus_ms(5_000), Duration::from_secs(16));
        assert_eq!(
            tracker.poll_notice(),
            Some(JoinNotice::NoAnswer {
                seeds: vec![seed(1), seed(2)],
                waited_ms: 5_000,
                attempts: 3,
                retry_ms: 16_000,
                retry_max_ms: 30_000,
            })
        );
        assert_eq!(tracker.poll_notice(), None, "a notice is polled once");
    }

    #[test]
    fn the_join_is_told_once_and_silences_the_warnings() {
        let mut tracker = JoinTracker::new(&Config::default());
        let start = Millis(0);
        tracker.seed_added(start, seed(1), Duration::from_millis(200));
        tracker.attempted(start.plus_ms(6_000), Duration::from_secs(6));
        assert!(matches!(
            tracker.poll_notice(),
            Some(JoinNotice::NoAnswer { .. })
        ));
        tracker.heard_from(start.plus_ms(7_500), &member());
        tracker.heard_from(start.plus_ms(7_600), &member());
        assert_eq!(
            tracker.poll_notice(),
            Some(JoinNotice::Joined {
                first_member: member(),
                waited_ms: 7_500,
                attempts: 2,
            })
        );
        // Isolated later, the node goes back to its seeds: that is the quorum's to say.
        tracker.attempted(start.plus_ms(60_000), Duration::from_secs(30));
        assert_eq!(tracker.poll_notice(), None);
        let status = tracker.status();
        assert!(status.joined);
        assert_eq!(status.attempts, 2);
        assert_eq!(status.retry_ms, 0);
        assert_eq!(status.joined_at, Some(start.plus_ms(7_500)));
        assert_eq!(status.waited_ms(start.plus_ms(99_000)), 7_500);
    }

    #[test]
    fn a_node_without_seeds_that_others_joined_tells_nothing() {
        let mut tracker = JoinTracker::new(&Config::default());
        tracker.heard_from(Millis(300), &member());
        assert_eq!(tracker.poll_notice(), None);
        assert!(tracker.status().joined);
        assert_eq!(tracker.status().waited_ms(Millis(900)), 0);
        // A seed resolved later changes nothing: it is already joined.
        tracker.seed_added(Millis(1_000), seed(1), Duration::from_millis(200));
        tracker.attempted(Millis(9_000), Duration::from_millis(400));
        assert_eq!(tracker.poll_notice(), None);
        assert_eq!(tracker.status().attempts, 0);
    }
}
