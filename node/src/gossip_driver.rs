//! The task that owns the membership core: UDP in and out through the seal, timers, commands.
//!
//! One tokio task owns [`Membership`]; everything else talks to it through a bounded command
//! channel ([`GossipHandle`]). After every input the task drains the core's transmits (sealed
//! and sent in order) and events (published on a watch channel as the newest member view).
//! A second channel carries the operator's listing ([`GossipHandle::listed_members`]: the view
//! without members forgotten while down), republished when the view or the known membership
//! changed; the scheduler reads the first and never the second.
//!
//! A datagram reaches the core only after its seal opened ([`crate::seal`]) and its stamp
//! passed the anti-replay check ([`crate::replay`]); every refusal is counted by reason in
//! [`TransportCounters`]. Key rotation swaps the sealer's key ring through
//! [`GossipHandle::set_keys`].
//!
//! The core decides when a join through seeds is worth a log line ([`JoinNotice`]: no seed
//! answers, rate-limited; the join succeeded); this task words it ([`join_notice_text`]) and
//! publishes the join's state ([`GossipHandle::join_status`]) for `GET /v1/agent/self`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;
use shoal_gossip::{
    ForgetError, JoinNotice, JoinStatus, MemberInfo, Membership, Quorum, ResourceAd, Stats,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::{Clock, DeadlineTimer};
use crate::keys::Keyring;
use crate::probe_rtt::ProbeTimer;
use crate::replay::{ReplayConfig, ReplayGuard};
use crate::seal::{SealError, Sealer};

/// Largest datagram read from the socket; anything longer is refused by the seal.
const RECV_BUFFER_BYTES: usize = 65_536;
/// Commands waiting for the gossip task.
const COMMAND_QUEUE: usize = 256;
/// At most one warning about stale datagrams this often.
const STALE_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Transport counters, shared with the API.
#[derive(Debug, Default)]
pub struct TransportCounters {
    /// Datagrams received.
    pub datagrams_in: AtomicU64,
    /// Sealed bytes received.
    pub bytes_in: AtomicU64,
    /// Datagrams sent.
    pub datagrams_out: AtomicU64,
    /// Sealed bytes sent (what the wire carries, UDP/IP headers excluded).
    pub bytes_out: AtomicU64,
    /// Datagrams whose seal did not open: wrong cluster key, tampering or garbage.
    pub unauthentic: AtomicU64,
    /// Of `unauthentic`: sealed under a key id that is in no key of this ring.
    pub unknown_key: AtomicU64,
    /// Authentic datagrams the anti-replay check refused (replayed, stale, addressed to
    /// another node, or from a new sender while the replay table was full).
    pub replayed: AtomicU64,
    /// Of `replayed`: refused because the sender's clock was outside the freshness window.
    pub replay_stale: AtomicU64,
    /// Authentic datagrams the core refused.
    pub malformed: AtomicU64,
    /// Sends the OS refused.
    pub send_errors: AtomicU64,
    /// Round trips of acked direct probes (`crate::probe_rtt`).
    pub probe_rtt: crate::probe_rtt::ProbeRtt,
}

/// A snapshot of [`TransportCounters`] for JSON.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TransportStats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Sealed bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Sealed bytes sent.
    pub bytes_out: u64,
    /// Datagrams dropped because their seal did not open.
    pub unauthentic: u64,
    /// Of `unauthentic`: sealed under a key this node's ring does not hold.
    pub unknown_key: u64,
    /// Authentic datagrams dropped by the anti-replay check, before parsing.
    pub replayed: u64,
    /// Of `replayed`: the sender's clock was outside the freshness window.
    pub replay_stale: u64,
    /// Authentic datagrams refused by the membership core.
    pub malformed: u64,
    /// Sends the OS refused.
    pub send_errors: u64,
}

impl TransportCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> TransportStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            datagrams_in: r(&self.datagrams_in),
            bytes_in: r(&self.bytes_in),
            datagrams_out: r(&self.datagrams_out),
            bytes_out: r(&self.bytes_out),
            unauthentic: r(&self.unauthentic),
            unknown_key: r(&self.unknown_key),
            replayed: r(&self.replayed),
            replay_stale: r(&self.replay_stale),
            malformed: r(&self.malformed),
            send_errors: r(&self.send_errors),
        }
    }
}

enum Command {
    Join(SocketAddr),
    SetAd(ResourceAd, oneshot::Sender<Result<(), String>>),
    Stats(oneshot::Sender<Stats>),
    SetKeys(Keyring, oneshot::Sender<()>),
    Forget(String, oneshot::Sender<Result<(), ForgetError>>),
}

/// A cheap, cloneable handle on the gossip task.
#[derive(Debug, Clone)]
pub struct GossipHandle {
    commands: mpsc::Sender<Command>,
    members: watch::Receiver<Vec<MemberInfo>>,
    listed: watch::Receiver<Vec<MemberInfo>>,
    quorum: watch::Receiver<Quorum>,
    join: watch::Receiver<JoinStatus>,
    /// `--join` seeds that do not resolve yet (`crate::agent`'s resolver keeps it current).
    unresolved_seeds: Arc<watch::Sender<Vec<String>>>,
    conflict: watch::Receiver<Option<String>>,
    /// Transport counters.
    pub counters: Arc<TransportCounters>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Join(_) => "Join",
            Command::SetAd(..) => "SetAd",
            Command::Stats(_) => "Stats",
            Command::SetKeys(..) => "SetKeys",
            Command::Forget(..) => "Forget",
        })
    }
}

impl GossipHandle {
    /// The newest member view (this node included), sorted by name.
    #[must_use]
    pub fn members(&self) -> Vec<MemberInfo> {
        self.members.borrow().clone()
    }

    /// The member view as `GET /v1/nodes` and the metrics list it: without the members
    /// forgotten while down (`Membership::listed_members`). What the scheduler reads is
    /// [`GossipHandle::members`].
    #[must_use]
    pub fn listed_members(&self) -> Vec<MemberInfo> {
        self.listed.borrow().clone()
    }

    /// A receiver that wakes on every change of the member view.
    #[must_use]
    pub fn watch_members(&self) -> watch::Receiver<Vec<MemberInfo>> {
        self.members.clone()
    }

    /// Whether this node sees most of its cluster, as of the last input to the core.
    #[must_use]
    pub fn quorum(&self) -> Quorum {
        self.quorum.borrow().clone()
    }

    /// How the join through the seeds stands, as of the last input to the core.
    #[must_use]
    pub fn join_status(&self) -> JoinStatus {
        self.join.borrow().clone()
    }

    /// The `--join` seeds that do not resolve yet: the core knows only addresses.
    #[must_use]
    pub fn unresolved_seeds(&self) -> Vec<String> {
        self.unresolved_seeds.borrow().clone()
    }

    /// Records which `--join` seeds do not resolve yet.
    pub fn set_unresolved_seeds(&self, seeds: Vec<String>) {
        self.unresolved_seeds.send_replace(seeds);
    }

    /// A receiver that wakes on every change of the quorum.
    #[must_use]
    pub fn watch_quorum(&self) -> watch::Receiver<Quorum> {
        self.quorum.clone()
    }

    /// Resolves with an error message when this agent must stop because another live agent
    /// holds its name (`Membership::name_conflict`); never resolves otherwise.
    pub async fn name_conflict(&self) -> String {
        let mut rx = self.conflict.clone();
        loop {
            if let Some(msg) = rx.borrow_and_update().clone() {
                return msg;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Forgets a member that is gone for good (`shoal node forget`): it no longer counts
    /// toward the majority on this node.
    pub async fn forget(&self, name: &str) -> anyhow::Result<Result<(), ForgetError>> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Forget(name.to_string(), tx))
            .await
            .map_err(|_| anyhow::anyhow!("gossip task stopped"))?;
        rx.await.map_err(|_| anyhow::anyhow!("gossip task stopped"))
    }

    /// Adds a seed to join through.
    pub async fn join(&self, seed: SocketAddr) {
        let _ = self.commands.send(Command::Join(seed)).await;
    }

    /// Replaces this node's advertised resources.
    pub async fn set_ad(&self, ad: ResourceAd) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::SetAd(ad, tx))
            .await
            .map_err(|_| anyhow::anyhow!("gossip task stopped"))?;
        rx.await?.map_err(|e| anyhow::anyhow!(e))
    }

    /// Seals with `ring`'s primary from now on and opens with any of its keys; resolves once
    /// the gossip task applied it.
    pub async fn set_keys(&self, ring: Keyring) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::SetKeys(ring, tx))
            .await
            .map_err(|_| anyhow::anyhow!("gossip task stopped"))?;
        rx.await.map_err(|_| anyhow::anyhow!("gossip task stopped"))
    }

    /// The membership core's counters.
    pub async fn stats(&self) -> Option<Stats> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Stats(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Spawns the gossip task. It runs until `shutdown` turns true, then leaves the cluster.
/// The known membership is kept in `known_file` (`crate::known_file`, written off this task)
/// whenever it changes;
/// membership changes are recorded in `events` (`crate::events`).
pub fn spawn(
    core: Membership,
    socket: UdpSocket,
    sealer: Sealer,
    clock: Clock,
    known_file: Option<PathBuf>,
    events: Option<crate::events::EventLog>,
    shutdown: watch::Receiver<bool>,
) -> (GossipHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (members_tx, members_rx) = watch::channel(core.members());
    let (listed_tx, listed_rx) = watch::channel(core.listed_members());
    let listed_known = core.known_version();
    let (quorum_tx, quorum_rx) = watch::channel(core.quorum().clone());
    let (join_tx, join_rx) = watch::channel(core.join_status().clone());
    let (conflict_tx, conflict_rx) = watch::channel(None);
    let counters = Arc::new(TransportCounters::default());
    let replay = ReplayGuard::new(core.identity().addr, ReplayConfig::default());
    let driver = Driver {
        core,
        socket,
        sealer,
        replay,
        last_stale_warning: None,
        clock,
        members: members_tx,
        listed: listed_tx,
        listed_known,
        quorum: quorum_tx,
        join: join_tx,
        conflict: conflict_tx,
        known_offered: core_known_version_unsaved(),
        known_saver: known_file.map(crate::known_file::Saver::spawn),
        probes: ProbeTimer::new(counters.probe_rtt.clone()),
        received_at: Instant::now(),
        counters: counters.clone(),
        events,
    };
    let span = tracing::info_span!("gossip", node = %driver.core.identity().name);
    let task = tokio::spawn(tracing::Instrument::instrument(
        driver.run(rx, shutdown),
        span,
    ));
    (
        GossipHandle {
            commands: tx,
            members: members_rx,
            listed: listed_rx,
            quorum: quorum_rx,
            join: join_rx,
            unresolved_seeds: Arc::new(watch::channel(Vec::new()).0),
            conflict: conflict_rx,
            counters,
        },
        task,
    )
}

struct Driver {
    core: Membership,
    socket: UdpSocket,
    sealer: Sealer,
    replay: ReplayGuard,
    /// When a stale datagram was last worth a warning (a skewed clock would flood the log).
    last_stale_warning: Option<std::time::Instant>,
    clock: Clock,
    members: watch::Sender<Vec<MemberInfo>>,
    /// The operator's listing, and the known-membership version it was built at: a forget
    /// changes the listing without any member event.
    listed: watch::Sender<Vec<MemberInfo>>,
    listed_known: u64,
    quorum: watch::Sender<Quorum>,
    join: watch::Sender<JoinStatus>,
    conflict: watch::Sender<Option<String>>,
    /// The known-membership version last offered to `known_saver`.
    known_offered: u64,
    /// Writes the known membership to `known_file` off this task (none without a file).
    known_saver: Option<crate::known_file::Saver>,
    counters: Arc<TransportCounters>,
    /// Where membership changes are recorded (`Node` events).
    events: Option<crate::events::EventLog>,
    /// Times direct probes (`crate::probe_rtt`).
    probes: ProbeTimer,
    /// When the last datagram was received: the instant of any probe ack it carried.
    received_at: Instant,
}

/// No version saved yet: the first flush writes the file.
fn core_known_version_unsaved() -> u64 {
    u64::MAX
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; RECV_BUFFER_BYTES];
        let mut timer = DeadlineTimer::new();
        loop {
            timer.set(
                self.core
                    .poll_timeout()
                    .map(|at| self.clock.instant_of(at).into()),
            );
            tokio::select! {
                _ = shutdown.changed() => break,
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(from, &buf[..len]),
                    Err(e) => tracing::debug!(error = %e, "udp recv"),
                },
                Some(cmd) = commands.recv() => self.on_command(cmd),
                () = timer.fired(), if timer.is_armed() => {
                    self.core.handle_timeout(self.clock.now());
                }
            }
            self.flush().await;
        }
        if self.core.name_conflict().is_some() {
            // Leaving would be news about the name, which is the other agent's.
            tracing::info!("stopped without leaving: the name belongs to another agent");
            self.finish_saving().await;
            return;
        }
        self.core.leave(self.clock.now());
        self.flush().await;
        tracing::info!("left the cluster");
        self.finish_saving().await;
    }

    /// Waits for the known membership's last save.
    async fn finish_saving(&mut self) {
        if let Some(saver) = self.known_saver.take() {
            saver.finish().await;
        }
    }

    fn on_datagram(&mut self, from: SocketAddr, sealed: &[u8]) {
        self.received_at = Instant::now();
        self.counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_in
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        let opened = match self.sealer.open(sealed) {
            Ok(opened) => opened,
            Err(e) => {
                self.counters.unauthentic.fetch_add(1, Ordering::Relaxed);
                if matches!(e, SealError::UnknownKey(_)) {
                    self.counters.unknown_key.fetch_add(1, Ordering::Relaxed);
                }
                tracing::trace!(%from, error = %e, "dropped unauthentic datagram");
                return;
            }
        };
        let now = self.clock.now();
        if let Err(e) = self.replay.check(&opened.stamp, now.0) {
            self.counters.replayed.fetch_add(1, Ordering::Relaxed);
            if e.is_stale() {
                self.counters.replay_stale.fetch_add(1, Ordering::Relaxed);
                let quiet = self
                    .last_stale_warning
                    .is_some_and(|at| at.elapsed() < STALE_WARNING_EVERY);
                if !quiet {
                    self.last_stale_warning = Some(std::time::Instant::now());
                    tracing::warn!(%from, error = %e, "dropped a stale datagram: a replay, or this host's clock and the sender's differ by more than the window (check NTP)");
                }
            }
            tracing::debug!(%from, error = %e, "dropped a datagram at the anti-replay check");
            return;
        }
        if let Err(e) = self.core.handle_datagram(now, from, &opened.plaintext) {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, error = %e, "refused datagram");
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = self.clock.now();
        match cmd {
            Command::Join(seed) => self.core.join(now, seed),
            Command::SetAd(ad, reply) => {
                let _ = reply.send(self.core.set_ad(now, ad).map_err(|e| e.to_string()));
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.core.stats());
            }
            Command::SetKeys(ring, reply) => {
                self.sealer.set_ring(&ring);
                tracing::info!(primary = %ring.primary().cluster_label(), keys = ring.keys().len(), "gossip key ring changed");
                let _ = reply.send(());
            }
            Command::Forget(name, reply) => {
                let _ = reply.send(self.core.forget(now, &name));
            }
        }
    }

    async fn flush(&mut self) {
        // A probe started by the last input has its ping in this outbox.
        let sent_at = Instant::now();
        while let Some(t) = self.core.poll_transmit() {
            let sealed = self.sealer.seal(&t.payload, t.to, self.clock.now().0);
            match self.socket.send_to(&sealed, t.to).await {
                Ok(_) => {
                    self.counters.datagrams_out.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .bytes_out
                        .fetch_add(sealed.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(to = %t.to, error = %e, "udp send");
                }
            }
        }
        while let Some(step) = self.core.poll_probe() {
            self.probes.step(step, sent_at, self.received_at);
        }
        let mut changed = false;
        while let Some(event) = self.core.poll_event() {
            log_event(&event);
            if let Some(log) = &self.events {
                log.push(crate::events::member_event(&event));
            }
            changed = true;
        }
        if changed {
            self.members.send_replace(self.core.members());
        }
        let known = self.core.known_version();
        if changed || known != self.listed_known {
            self.listed_known = known;
            self.listed.send_replace(self.core.listed_members());
        }
        let quorum = self.core.quorum();
        self.quorum.send_if_modified(|q| {
            if q == quorum {
                return false;
            }
            q.clone_from(quorum);
            true
        });
        self.flush_join();
        self.save_known();
        if self.conflict.borrow().is_none()
            && let Some(holder) = self.core.name_conflict()
        {
            let me = self.core.identity();
            self.conflict.send_replace(Some(format!(
                "node name {} is already used by the live agent at {} (generation {}); \
                 pick another --name or stop that agent",
                me.name, holder.addr, holder.generation
            )));
        }
    }

    /// Logs the core's news about the join and publishes the join's state when it changed.
    fn flush_join(&mut self) {
        if let Some(notice) = self.core.poll_join_notice() {
            let text = join_notice_text(&notice);
            match notice {
                JoinNotice::NoAnswer { .. } => tracing::warn!("{text}"),
                JoinNotice::Joined { .. } => tracing::info!("{text}"),
            }
        }
        let status = self.core.join_status();
        self.join.send_if_modified(|j| {
            if j == status {
                return false;
            }
            j.clone_from(status);
            true
        });
    }

    /// Offers the known membership to the saver when it changed, so a restarted node
    /// remembers how big its cluster was (`known_file::Saver`: the writes, their retries
    /// after a failure and their log run off this task).
    fn save_known(&mut self) {
        let version = self.core.known_version();
        if version == self.known_offered {
            return;
        }
        let Some(saver) = &self.known_saver else {
            return;
        };
        saver.offer(version, self.core.known_members());
        self.known_offered = version;
    }
}

fn log_event(event: &shoal_gossip::MemberEvent) {
    match event {
        shoal_gossip::MemberEvent::Status { id, from, to } => {
            tracing::info!(member = %id, from = ?from, to = %to, "member status");
        }
        shoal_gossip::MemberEvent::Resources { ad } => {
            tracing::debug!(node = %ad.node, version = ad.version, "resources changed");
        }
        // The membership core logs why (the operator, a peer, `forget_down_after`, `reap_after`).
        shoal_gossip::MemberEvent::Forgotten { .. } | shoal_gossip::MemberEvent::Reaped { .. } => {}
    }
}

/// The log line for a join notice: what happened, how long it took, and, while no seed
/// answers, what this node does meanwhile and what to check.
#[must_use]
pub fn join_notice_text(notice: &JoinNotice) -> String {
    match notice {
        JoinNotice::NoAnswer {
            seeds,
            waited_ms,
            attempts,
            retry_ms,
            retry_max_ms,
        } => {
            let retrying = if retry_ms >= retry_max_ms {
                format!("retrying every {}", seconds(*retry_ms))
            } else {
                format!(
                    "retrying in {}, backing off to every {}",
                    seconds(*retry_ms),
                    seconds(*retry_max_ms)
                )
            };
            format!(
                "cannot join: no answer from {} after {} ({attempts} attempts; {retrying}); \
                 until one answers, this node is a cluster of one (check the seed addresses, \
                 that UDP gets through, and the cluster key)",
                seed_list(seeds),
                seconds(*waited_ms),
            )
        }
        JoinNotice::Joined {
            first_member,
            waited_ms,
            attempts,
        } => format!(
            "joined the cluster after {} ({attempts} attempts): first heard from {} at {}",
            seconds(*waited_ms),
            first_member.name,
            first_member.addr
        ),
    }
}

/// `seed 10.0.0.1:7946` or `seeds 10.0.0.1:7946, 10.0.0.2:7946`.
#[must_use]
pub fn seed_list(seeds: &[impl std::fmt::Display]) -> String {
    let list: Vec<String> = seeds.iter().map(ToString::to_string).collect();
    let noun = if list.len() == 1 { "seed" } else { "seeds" };
    format!("{noun} {}", list.join(", "))
}

/// `0.4 s`, `6.2 s` under 10 s; whole seconds from there.
#[must_use]
pub fn seconds(ms: u64) -> String {
    if ms < 10_000 && !ms.is_multiple_of(1_000) {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else {
        format!("{} s", ms / 1_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_notices_read_as_operator_sentences() {
        let seeds: Vec<SocketAddr> = vec![
            "10.0.0.1:7946".parse().unwrap(),
            "10.0.0.2:7946".parse().unwrap(),
        ];
        let early = JoinNotice::NoAnswer {
            seeds: seeds.clone(),
            waited_ms: 6_200,
            attempts: 5,
            retry_ms: 6_400,
            retry_max_ms: 30_000,
        };
        assert_eq!(
            join_notice_text(&early),
            "cannot join: no answer from seeds 10.0.0.1:7946, 10.0.0.2:7946 after 6.2 s \
             (5 attempts; retrying in 6.4 s, backing off to every 30 s); until one answers, \
             this node is a cluster of one (check the seed addresses, that UDP gets through, \
             and the cluster key)"
        );
        let late = JoinNotice::NoAnswer {
            seeds: seeds[..1].to_vec(),
            waited_ms: 81_000,
            attempts: 9,
            retry_ms: 30_000,
            retry_max_ms: 30_000,
        };
        assert!(
            join_notice_text(&late).starts_with(
                "cannot join: no answer from seed 10.0.0.1:7946 after 81 s (9 attempts; \
                 retrying every 30 s); "
            ),
            "{}",
            join_notice_text(&late)
        );
        let joined = JoinNotice::Joined {
            first_member: shoal_gossip::NodeId {
                name: "n1".into(),
                addr: seeds[0],
                generation: 3,
            },
            waited_ms: 12_345,
            attempts: 7,
        };
        assert_eq!(
            join_notice_text(&joined),
            "joined the cluster after 12 s (7 attempts): first heard from n1 at 10.0.0.1:7946"
        );
    }
}
