//! Key rotation across the cluster, like `serf keys`: the task that owns this agent's
//! [`Keyring`], applies rotation steps here and fans them out to every reachable member.
//!
//! What it promises:
//! - A step (`install`, `use`, `remove`) is applied here first: the new ring is checked (the
//!   primary cannot be removed, `use` needs an installed key), a new TLS identity is built
//!   from it, the ring file is written (0600, atomically), and only then do the gossip seal
//!   ([`GossipHandle::set_keys`]) and the QUIC endpoint (new connections) switch. A step that
//!   fails here changes nothing anywhere and is not sent on.
//! - Then the same step goes to every member that is alive or suspect, as a control message
//!   over the mutual-TLS QUIC connections ([`crate::peers::Channel::Control`]): only a peer
//!   holding a certificate from a key of our ring can send one, and the sender is known by
//!   its certificate name. Each member applies it the same way and answers with its ring
//!   (labels only). The answer lists every member's result; members that did not answer
//!   within the timeout are reported as such. Down and left members are listed as skipped.
//! - Keys never appear in logs or answers: only their labels. The full key travels only in
//!   an `install` message, inside TLS.
//!
//! Drive it as: [`spawn`] once per agent with the control channel of [`crate::peers::Peers`];
//! the API calls [`KeyringHandle::apply`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_gossip::MemberStatus;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::gossip_driver::GossipHandle;
use crate::keys::{ClusterKey, KeyRef, Keyring, KeyringError};
use crate::peers::{Inbound, Peers};
use crate::tls::{self, QuicConfig, TlsIdentity};

/// Largest control message accepted from a peer, in bytes.
pub const MAX_CONTROL_BYTES: usize = 64 * 1024;
/// Rotation steps from the API waiting for answers at once; more are refused.
const MAX_PENDING: usize = 16;
/// API requests waiting for the keyring task.
const REQUEST_QUEUE: usize = 16;

/// A rotation step, or a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOp {
    /// Report every member's keys.
    List,
    /// Add a key (not primary).
    Install(ClusterKey),
    /// Make an installed key primary.
    Use(KeyRef),
    /// Remove a key that is not primary.
    Remove(KeyRef),
}

impl KeyOp {
    fn name(&self) -> &'static str {
        match self {
            KeyOp::List => "list",
            KeyOp::Install(_) => "install",
            KeyOp::Use(_) => "use",
            KeyOp::Remove(_) => "remove",
        }
    }

    /// Applies the step to `ring`; true if it changed.
    fn apply(&self, ring: &mut Keyring) -> Result<bool, KeyringError> {
        match self {
            KeyOp::List => Ok(false),
            KeyOp::Install(key) => ring.install(key.clone()),
            KeyOp::Use(key) => ring.use_key(key),
            KeyOp::Remove(key) => ring.remove(key),
        }
    }
}

/// One member's keys, by label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeKeys {
    /// The primary key's label.
    pub primary: String,
    /// Every key's label, primary first.
    pub keys: Vec<String>,
    /// Whether this step changed the member's ring.
    pub changed: bool,
}

/// One member's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResult {
    /// The member.
    pub node: String,
    /// True when the member applied the step (or listed its keys).
    pub ok: bool,
    /// Why not, when `ok` is false.
    pub error: Option<String>,
    /// The member's keys after the step, when it answered.
    pub keys: Option<NodeKeys>,
}

/// What a step did across the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOut {
    /// `list`, `install`, `use` or `remove`.
    pub op: String,
    /// Every member asked (this node first), with its answer.
    pub results: Vec<NodeResult>,
    /// Members not asked because they are down or left.
    pub skipped: Vec<String>,
    /// True when every member asked answered `ok`.
    pub complete: bool,
}

/// A control message between agents (JSON in a control frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ControlMessage {
    /// Apply a step and answer.
    Request {
        /// Matches the answer to the request.
        id: u64,
        /// The step.
        op: WireOp,
    },
    /// The answer to a request.
    Reply {
        /// The request's id.
        id: u64,
        /// The member's keys, or why the step was refused.
        result: Result<NodeKeys, String>,
    },
}

/// A step as sent to peers. `use` and `remove` name the key by label only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum WireOp {
    /// Report keys.
    List,
    /// Install this key (hex).
    Install {
        /// The key, 64 hex characters.
        key: String,
    },
    /// Make the key with this label primary.
    Use {
        /// The label, 16 hex characters.
        label: String,
    },
    /// Remove the key with this label.
    Remove {
        /// The label, 16 hex characters.
        label: String,
    },
}

/// Why a control message was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Larger than [`MAX_CONTROL_BYTES`].
    #[error("control message of {0} bytes exceeds {MAX_CONTROL_BYTES}")]
    TooLarge(usize),
    /// Not a control message.
    #[error("malformed control message: {0}")]
    Malformed(String),
    /// A key or label in it does not parse.
    #[error("control message names a bad key: {0}")]
    BadKey(KeyringError),
}

impl ControlMessage {
    /// Encodes for a control frame.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a control frame; bounded, never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, ControlError> {
        if bytes.len() > MAX_CONTROL_BYTES {
            return Err(ControlError::TooLarge(bytes.len()));
        }
        // Not serde_json's own message: it may quote a string of the input, here a key.
        serde_json::from_slice(bytes)
            .map_err(|e| ControlError::Malformed(crate::keys::json_error_without_values(&e)))
    }
}

impl WireOp {
    fn of(op: &KeyOp) -> Self {
        match op {
            KeyOp::List => WireOp::List,
            KeyOp::Install(key) => WireOp::Install {
                key: key.to_string(),
            },
            KeyOp::Use(key) => WireOp::Use {
                label: key.label().to_string(),
            },
            KeyOp::Remove(key) => WireOp::Remove {
                label: key.label().to_string(),
            },
        }
    }

    /// The step this message asks for.
    pub fn to_op(&self) -> Result<KeyOp, ControlError> {
        let label = |text: &str| {
            crate::keys::ClusterLabel::parse(text)
                .map(KeyRef::Label)
                .map_err(|source| ControlError::BadKey(KeyringError::BadKey { index: 0, source }))
        };
        Ok(match self {
            WireOp::List => KeyOp::List,
            WireOp::Install { key } => {
                KeyOp::Install(ClusterKey::parse(key).map_err(|source| {
                    ControlError::BadKey(KeyringError::BadKey { index: 0, source })
                })?)
            }
            WireOp::Use { label: l } => KeyOp::Use(label(l)?),
            WireOp::Remove { label: l } => KeyOp::Remove(label(l)?),
        })
    }
}

/// Why the API's step failed before any member was asked.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// This node refused the step (its message says why); nothing changed anywhere.
    #[error("{0}")]
    Refused(String),
    /// Too many steps in flight.
    #[error("{MAX_PENDING} key ring operations are already waiting for answers; try again")]
    Busy,
    /// The keyring task is gone (the agent is stopping).
    #[error("the keyring task is stopping")]
    Stopping,
}

/// A cloneable handle on the keyring task.
#[derive(Debug, Clone)]
pub struct KeyringHandle {
    requests: mpsc::Sender<(KeyOp, oneshot::Sender<Result<FanOut, ApplyError>>)>,
}

impl KeyringHandle {
    /// Applies `op` here, then on every reachable member; resolves with every answer.
    pub async fn apply(&self, op: KeyOp) -> Result<FanOut, ApplyError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((op, tx))
            .await
            .map_err(|_| ApplyError::Stopping)?;
        rx.await.map_err(|_| ApplyError::Stopping)?
    }
}

/// What the keyring task needs.
#[derive(Debug)]
pub struct KeyringParts {
    /// The ring this agent started with.
    pub ring: Keyring,
    /// Where the ring is persisted.
    pub path: PathBuf,
    /// This node's name (for its certificate).
    pub node_name: String,
    /// QUIC timers for rebuilt identities.
    pub quic: QuicConfig,
    /// The QUIC endpoint whose server config follows the ring.
    pub endpoint: quinn::Endpoint,
    /// The gossip task (seal keys, member list).
    pub gossip: GossipHandle,
    /// Peer transport (control frames out, client config).
    pub peers: Peers,
    /// Control frames in.
    pub control: mpsc::Receiver<Inbound>,
    /// How long a fan-out waits for answers.
    pub answer_timeout: Duration,
}

/// Spawns the keyring task.
pub fn spawn(
    parts: KeyringParts,
    shutdown: watch::Receiver<bool>,
) -> (KeyringHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let span = tracing::info_span!("keyring", node = %parts.node_name);
    let driver = Driver {
        parts,
        pending: BTreeMap::new(),
        next_id: 1,
    };
    let task = tokio::spawn(tracing::Instrument::instrument(
        driver.run(rx, shutdown),
        span,
    ));
    (KeyringHandle { requests: tx }, task)
}

struct Pending {
    op: &'static str,
    waiting: BTreeSet<String>,
    results: Vec<NodeResult>,
    skipped: Vec<String>,
    reply: oneshot::Sender<Result<FanOut, ApplyError>>,
    deadline: Instant,
}

struct Driver {
    parts: KeyringParts,
    pending: BTreeMap<u64, Pending>,
    next_id: u64,
}

impl Driver {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<(KeyOp, oneshot::Sender<Result<FanOut, ApplyError>>)>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let deadline = self
                .pending
                .values()
                .map(|p| p.deadline)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.changed() => return,
                Some((op, reply)) = requests.recv() => self.on_request(op, reply).await,
                Some(frame) = self.parts.control.recv() => self.on_control(frame).await,
                () = tokio::time::sleep_until(deadline) => {}
            }
            self.finish_due();
        }
    }

    async fn on_request(&mut self, op: KeyOp, reply: oneshot::Sender<Result<FanOut, ApplyError>>) {
        if self.pending.len() >= MAX_PENDING {
            let _ = reply.send(Err(ApplyError::Busy));
            return;
        }
        let mine = match self.apply_here(&op).await {
            Ok(keys) => keys,
            Err(e) => {
                let _ = reply.send(Err(ApplyError::Refused(e)));
                return;
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let me = self.parts.node_name.clone();
        let mut pending = Pending {
            op: op.name(),
            waiting: BTreeSet::new(),
            results: vec![NodeResult {
                node: me.clone(),
                ok: true,
                error: None,
                keys: Some(mine),
            }],
            skipped: Vec::new(),
            reply,
            deadline: Instant::now() + self.parts.answer_timeout,
        };
        let request = ControlMessage::Request {
            id,
            op: WireOp::of(&op),
        }
        .encode();
        for member in self.parts.gossip.members() {
            let name = member.id.name.to_string();
            if name == me {
                continue;
            }
            match member.status {
                MemberStatus::Alive | MemberStatus::Suspect => {}
                MemberStatus::Down | MemberStatus::Left => {
                    pending.skipped.push(name);
                    continue;
                }
            }
            if self.parts.peers.send_control(&name, request.clone()) {
                pending.waiting.insert(name);
            } else {
                pending
                    .results
                    .push(failed(name, "could not queue the request"));
            }
        }
        tracing::info!(
            op = op.name(),
            asked = pending.waiting.len(),
            "key ring step applied here; asking the members"
        );
        self.pending.insert(id, pending);
    }

    async fn on_control(&mut self, frame: Inbound) {
        let message = match ControlMessage::decode(&frame.payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(peer = %frame.from, error = %e, "refused a control message");
                return;
            }
        };
        match message {
            ControlMessage::Request { id, op } => {
                let result = match op.to_op() {
                    Ok(op) => {
                        tracing::info!(peer = %frame.from, op = op.name(), "key ring step asked by a member");
                        self.apply_here(&op).await
                    }
                    Err(e) => Err(e.to_string()),
                };
                let answer = ControlMessage::Reply { id, result }.encode();
                if !self.parts.peers.send_control(&frame.from, answer) {
                    tracing::warn!(peer = %frame.from, "could not queue a key ring answer");
                }
            }
            ControlMessage::Reply { id, result } => {
                let Some(pending) = self.pending.get_mut(&id) else {
                    return; // late, after the timeout
                };
                if !pending.waiting.remove(&frame.from) {
                    tracing::warn!(peer = %frame.from, id, "an answer from a member that was not asked");
                    return;
                }
                pending.results.push(match result {
                    Ok(keys) => NodeResult {
                        node: frame.from,
                        ok: true,
                        error: None,
                        keys: Some(keys),
                    },
                    Err(e) => failed(frame.from, &e),
                });
            }
        }
    }

    /// Answers every fan-out that has all its answers or has timed out.
    fn finish_due(&mut self) {
        let now = Instant::now();
        let done: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.waiting.is_empty() || p.deadline <= now || p.reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let Some(mut p) = self.pending.remove(&id) else {
                continue;
            };
            for node in std::mem::take(&mut p.waiting) {
                p.results.push(failed(node, "no answer within the timeout"));
            }
            p.results[1..].sort_by(|a, b| a.node.cmp(&b.node));
            let complete = p.results.iter().all(|r| r.ok);
            let _ = p.reply.send(Ok(FanOut {
                op: p.op.to_string(),
                results: p.results,
                skipped: p.skipped,
                complete,
            }));
        }
    }

    /// Applies `op` to this node: ring, file, TLS identity, seal. All or nothing.
    async fn apply_here(&mut self, op: &KeyOp) -> Result<NodeKeys, String> {
        let mut ring = self.parts.ring.clone();
        let changed = op.apply(&mut ring).map_err(|e| e.to_string())?;
        if changed {
            let identity = TlsIdentity::from_ring(&ring, &self.parts.node_name, self.parts.quic)
                .map_err(|e| format!("cannot build a TLS identity from the new ring: {e}"))?;
            ring.save(&self.parts.path)
                .map_err(|e| format!("cannot persist the key ring: {e}"))?;
            self.parts
                .gossip
                .set_keys(ring.clone())
                .await
                .map_err(|e| e.to_string())?;
            tls::apply_to_endpoint(&identity, &mut self.parts.endpoint);
            self.parts.peers.set_client_config(identity.client_config());
            let closed = self.parts.peers.close_untrusted(&identity);
            if closed > 0 {
                tracing::info!(
                    closed,
                    "closed the connections authenticated under a removed key"
                );
            }
            tracing::info!(op = op.name(), primary = %ring.primary().cluster_label(), keys = ?ring.labels().iter().map(ToString::to_string).collect::<Vec<_>>(), "key ring changed");
            self.parts.ring = ring;
        }
        Ok(NodeKeys {
            primary: self.parts.ring.primary().cluster_label().to_string(),
            keys: self
                .parts
                .ring
                .labels()
                .iter()
                .map(ToString::to_string)
                .collect(),
            changed,
        })
    }
}

fn failed(node: String, error: &str) -> NodeResult {
    NodeResult {
        node,
        ok: false,
        error: Some(error.to_string()),
        keys: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_messages_round_trip_and_carry_labels_for_use_and_remove() {
        let key = ClusterKey::from_bytes([4; 32]);
        for op in [
            KeyOp::List,
            KeyOp::Install(key.clone()),
            KeyOp::Use(KeyRef::Key(key.clone())),
            KeyOp::Remove(KeyRef::Label(key.cluster_label())),
        ] {
            let message = ControlMessage::Request {
                id: 7,
                op: WireOp::of(&op),
            };
            let bytes = message.encode();
            if !matches!(op, KeyOp::Install(_)) {
                let text = String::from_utf8(bytes.clone()).unwrap();
                assert!(!text.contains(&key.to_string()), "{text}");
            }
            let decoded = ControlMessage::decode(&bytes).unwrap();
            assert_eq!(decoded, message);
            let ControlMessage::Request { op: wire, .. } = decoded else {
                unreachable!()
            };
            let back = wire.to_op().unwrap();
            let mut a = Keyring::new(ClusterKey::from_bytes([1; 32]));
            a.install(key.clone()).unwrap();
            let mut b = a.clone();
            assert_eq!(op.apply(&mut a), back.apply(&mut b));
            assert_eq!(a, b);
        }
    }

    #[test]
    fn bad_control_messages_are_refused_with_a_reason() {
        let key = ClusterKey::from_bytes([9; 32]).to_string();
        let quoted = format!(r#"{{"Request": {{"id": "{key}", "op": "List"}}}}"#);
        let error = ControlMessage::decode(quoted.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(!error.contains(&key), "{error}");
        assert!(matches!(
            ControlMessage::decode(&vec![b' '; MAX_CONTROL_BYTES + 1]),
            Err(ControlError::TooLarge(_))
        ));
        assert!(matches!(
            ControlMessage::decode(b"{\"Nope\":1}"),
            Err(ControlError::Malformed(_))
        ));
        let bad = WireOp::Use {
            label: "xyz".into(),
        };
        assert!(matches!(bad.to_op(), Err(ControlError::BadKey(_))));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(ControlMessage::Request { op, .. }) = ControlMessage::decode(&bytes) {
                let _ = op.to_op();
            }
        }
    }
}
