//! The sealed envelope around every gossip datagram (the memberlist/Serf precedent), with
//! the stamp that the anti-replay check ([`crate::replay`]) reads.
//!
//! Promises:
//! - [`Sealer::seal`] turns a plaintext into
//!   `[version = 2][key id: 4][nonce: 12][ciphertext of (stamp: 42 + plaintext)][tag: 16]`,
//!   encrypted and authenticated with ChaCha20-Poly1305 under the gossip key derived from the
//!   ring's primary [`ClusterKey`], with the protocol label [`AAD`] as associated data. The
//!   key id is the first 4 bytes of the key's public label, so the receiver picks the key
//!   without trial decryption.
//! - The [`Stamp`] travels inside the ciphertext, so it is authenticated: the sender's random
//!   per-start epoch, a counter that grows by one per datagram this sealer seals, the
//!   sender's wall clock in Unix milliseconds, and the address the datagram was sent to.
//! - [`Sealer::open`] returns the stamp and plaintext only for packets sealed with a key of
//!   this ring and not modified since. Anything else (foreign clusters, tampering, truncation,
//!   garbage, oversized packets) is an error the caller counts and drops; `open` never panics
//!   and never looks past the length, version and key id bytes before the tag is verified.
//!   Whether a stamp is fresh is not the seal's business: the caller runs it through a
//!   [`crate::replay::ReplayGuard`] before anything parses the plaintext.
//!
//! Drive it as: build one `Sealer` per process from the key ring (one epoch per process
//! start), `seal` before `send_to`, `open` after `recv_from`, check the stamp, and hand only
//! fresh plaintexts to the gossip core. [`Sealer::set_ring`] swaps the keys (rotation) and
//! keeps the epoch and counter, so receivers see one uninterrupted sequence.
//!
//! # Nonces
//!
//! Every node of a cluster encrypts under the same key, so nonce uniqueness has to hold across
//! the whole cluster, not per node. Fully random 96-bit nonces collide with probability about
//! n²/2⁹⁷ after n packets cluster-wide: fine for a small cluster, but a large one gossiping
//! 10⁷ packets/s would expect a collision within a year. Instead each `Sealer` draws a random
//! 96-bit starting nonce and counts up from it. Two sealers collide only if their ranges
//! overlap, about m²·k/2⁹⁶ for m sealers of k packets each, so the risk grows with the number
//! of process starts rather than with traffic. The cost is that the nonce reveals how many
//! packets this process has sealed, which the stamp's counter (encrypted) also knows and
//! gossip rates make public anyway.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::keys::{ClusterKey, Keyring};

/// The only envelope version this build writes and accepts. Version 1 (no stamp) is refused:
/// accepting it would let anyone replay old version-1 packets past the replay check.
pub const VERSION: u8 = 2;

/// Associated data bound into every tag, so a gossip packet can never be mistaken for another
/// protocol's ciphertext under a related key.
pub const AAD: &[u8] = b"shoal/gossip/2";

/// Length of the key id: the first bytes of the key's label.
pub const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// Length of the encoded [`Stamp`]: epoch, counter, sent time, and the destination as a
/// 16-byte IPv6 address (IPv4 mapped) plus a 2-byte port.
pub const STAMP_LEN: usize = 8 + 8 + 8 + 16 + 2;

/// Bytes a sealed packet adds to its plaintext: version, key id, nonce, stamp and tag.
pub const OVERHEAD: usize = HEADER_LEN + STAMP_LEN + TAG_LEN;

/// Default cap on a received packet, one Ethernet MTU.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 1500;

/// Limits of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealConfig {
    /// Packets longer than this are rejected by [`Sealer::open`] before any work is done.
    /// Senders should keep plaintexts within [`Sealer::max_plaintext_len`].
    pub max_packet_bytes: usize,
}

impl Default for SealConfig {
    fn default() -> Self {
        Self {
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
        }
    }
}

/// The authenticated facts every sealed datagram carries about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Random per sealer, that is per process start of the sender.
    pub epoch: u64,
    /// 1 for the sender's first datagram of this epoch, then one more per datagram (to any
    /// destination).
    pub counter: u64,
    /// The sender's wall clock when it sealed, Unix milliseconds.
    pub sent_ms: u64,
    /// The address the sender sent it to.
    pub to: SocketAddr,
}

/// An opened packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// What the packet says about itself (authenticated).
    pub stamp: Stamp,
    /// The gossip payload.
    pub plaintext: Vec<u8>,
}

/// Why a packet did not open. Each variant is worth its own drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Shorter than the envelope overhead; cannot be a sealed packet.
    #[error("packet is shorter than the {OVERHEAD}-byte gossip envelope")]
    TooShort,
    /// Longer than the configured maximum packet size.
    #[error("packet exceeds the configured maximum gossip packet size")]
    TooLarge,
    /// A version byte this build does not know.
    #[error("unknown gossip envelope version {0}")]
    UnknownVersion(u8),
    /// Sealed under a key whose id matches no key of this ring: another cluster, or a key
    /// this node has not installed yet (a rotation step that did not reach it).
    #[error("packet sealed under key id {0:02x?}, which is not in this node's key ring")]
    UnknownKey([u8; KEY_ID_LEN]),
    /// The tag did not verify: another cluster's key, tampering, or garbage.
    #[error("packet failed authentication (foreign cluster key, tampered, or garbage)")]
    Unauthentic,
}

struct RingKey {
    id: [u8; KEY_ID_LEN],
    aead: LessSafeKey,
}

/// Seals with a key ring's primary and opens with any of its keys. `Send + Sync`; share it
/// by reference.
pub struct Sealer {
    /// Primary first.
    keys: Vec<RingKey>,
    config: SealConfig,
    epoch: u64,
    /// High 4 bytes of every nonce this sealer produces (random per sealer).
    nonce_prefix: [u8; 4],
    /// Random starting point of the low 8 bytes; `next_nonce` adds the packet count to it.
    nonce_base: u64,
    sealed: AtomicU64,
}

impl Sealer {
    /// A sealer for a ring of one key, with the default limits.
    pub fn new(key: &ClusterKey) -> Self {
        Self::with_ring(&Keyring::new(key.clone()), SealConfig::default())
    }

    /// A sealer for one key with explicit limits.
    pub fn with_config(key: &ClusterKey, config: SealConfig) -> Self {
        Self::with_ring(&Keyring::new(key.clone()), config)
    }

    /// A sealer for `ring` with explicit limits.
    ///
    /// Panics only if the OS RNG fails, like [`ClusterKey::generate`].
    pub fn with_ring(ring: &Keyring, config: SealConfig) -> Self {
        let mut start = [0u8; NONCE_LEN + 8];
        SystemRandom::new()
            .fill(&mut start)
            .expect("the OS random number generator failed");
        let word = |at: usize| u64::from_be_bytes(start[at..at + 8].try_into().expect("8 bytes"));
        Self {
            keys: ring_keys(ring),
            config,
            epoch: word(NONCE_LEN),
            nonce_prefix: start[..4].try_into().expect("4 bytes"),
            nonce_base: word(4),
            sealed: AtomicU64::new(0),
        }
    }

    /// Replaces the keys (a rotation step); the epoch and counter go on.
    pub fn set_ring(&mut self, ring: &Keyring) {
        self.keys = ring_keys(ring);
    }

    /// This sealer's epoch (random per process start).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The largest plaintext whose sealed packet the receiving side accepts.
    pub fn max_plaintext_len(&self) -> usize {
        self.config.max_packet_bytes.saturating_sub(OVERHEAD)
    }

    /// Encrypts and authenticates `plaintext`, stamped for destination `to` at `now_ms`
    /// (Unix milliseconds), into a new packet of `plaintext.len() + OVERHEAD` bytes. A
    /// plaintext over [`Self::max_plaintext_len`] still seals, but receivers with the same
    /// config will drop it as [`SealError::TooLarge`].
    pub fn seal(&self, plaintext: &[u8], to: SocketAddr, now_ms: u64) -> Vec<u8> {
        let count = self.sealed.fetch_add(1, Ordering::Relaxed);
        let stamp = Stamp {
            epoch: self.epoch,
            counter: count.wrapping_add(1),
            sent_ms: now_ms,
            to,
        };
        let nonce = self.nonce(count);
        let primary = &self.keys[0];
        let mut packet = Vec::with_capacity(plaintext.len() + OVERHEAD);
        packet.push(VERSION);
        packet.extend_from_slice(&primary.id);
        packet.extend_from_slice(&nonce);
        encode_stamp(&stamp, &mut packet);
        packet.extend_from_slice(plaintext);
        let tag = primary
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut packet[HEADER_LEN..],
            )
            .expect("ChaCha20-Poly1305 seals any datagram-sized input");
        packet.extend_from_slice(tag.as_ref());
        debug_assert_eq!(packet.len(), plaintext.len() + OVERHEAD);
        packet
    }

    /// Verifies and decrypts a received packet. Never panics, whatever `packet` holds.
    pub fn open(&self, packet: &[u8]) -> Result<Opened, SealError> {
        if packet.len() > self.config.max_packet_bytes {
            return Err(SealError::TooLarge);
        }
        if packet.len() < OVERHEAD {
            return Err(SealError::TooShort);
        }
        let (header, sealed) = packet.split_at(HEADER_LEN);
        if header[0] != VERSION {
            return Err(SealError::UnknownVersion(header[0]));
        }
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&header[1..=KEY_ID_LEN]);
        let nonce_bytes = &header[1 + KEY_ID_LEN..];
        let mut candidates = self.keys.iter().filter(|k| k.id == id).peekable();
        if candidates.peek().is_none() {
            return Err(SealError::UnknownKey(id));
        }
        // Two keys of one ring share an id with probability 2⁻³², so this loop almost
        // always runs once; it stays correct when they do.
        for key in candidates {
            let nonce =
                Nonce::try_assume_unique_for_key(nonce_bytes).map_err(|_| SealError::TooShort)?;
            let mut buffer = sealed.to_vec();
            let Ok(opened) = key.aead.open_in_place(nonce, Aad::from(AAD), &mut buffer) else {
                continue;
            };
            let len = opened.len();
            buffer.truncate(len);
            let stamp = decode_stamp(&buffer).ok_or(SealError::TooShort)?;
            buffer.drain(..STAMP_LEN);
            return Ok(Opened {
                stamp,
                plaintext: buffer,
            });
        }
        Err(SealError::Unauthentic)
    }

    /// The limits this sealer enforces.
    pub fn config(&self) -> SealConfig {
        self.config
    }

    fn nonce(&self, count: u64) -> [u8; NONCE_LEN] {
        // `fetch_add` handed every caller a distinct count, so concurrent seals never share a
        // nonce; Relaxed is enough because only uniqueness matters, not ordering.
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.nonce_prefix);
        nonce[4..].copy_from_slice(&self.nonce_base.wrapping_add(count).to_be_bytes());
        nonce
    }
}

/// The id a sealed packet carries for `key`: the first bytes of its public label.
pub fn key_id(key: &ClusterKey) -> [u8; KEY_ID_LEN] {
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&key.cluster_label().as_bytes()[..KEY_ID_LEN]);
    id
}

fn ring_keys(ring: &Keyring) -> Vec<RingKey> {
    ring.keys()
        .iter()
        .map(|key| RingKey {
            id: key_id(key),
            aead: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, &key.gossip_key())
                    .expect("a 32-byte key is valid for ChaCha20-Poly1305"),
            ),
        })
        .collect()
}

fn encode_stamp(stamp: &Stamp, out: &mut Vec<u8>) {
    out.extend_from_slice(&stamp.epoch.to_be_bytes());
    out.extend_from_slice(&stamp.counter.to_be_bytes());
    out.extend_from_slice(&stamp.sent_ms.to_be_bytes());
    let ip = match stamp.to.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&stamp.to.port().to_be_bytes());
}

fn decode_stamp(bytes: &[u8]) -> Option<Stamp> {
    let bytes = bytes.get(..STAMP_LEN)?;
    let word = |at: usize| Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let ip: [u8; 16] = bytes.get(24..40)?.try_into().ok()?;
    let port: [u8; 2] = bytes.get(40..42)?.try_into().ok()?;
    let ip = Ipv6Addr::from(ip);
    let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
    Some(Stamp {
        epoch: word(0)?,
        counter: word(8)?,
        sent_ms: word(16)?,
        to: SocketAddr::new(ip, u16::from_be_bytes(port)),
    })
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("algorithm", &aead::CHACHA20_POLY1305)
            .field("config", &self.config)
            .field("keys", &self.keys.len())
            .field("sealed", &self.sealed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyRef;
    use proptest::prelude::*;

    const TO: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7946);
    const NOW: u64 = 1_700_000_000_000;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::from_bytes([byte; 32])
    }

    fn open_plain(sealer: &Sealer, packet: &[u8]) -> Result<Vec<u8>, SealError> {
        sealer.open(packet).map(|o| o.plaintext)
    }

    #[test]
    fn layout_is_version_key_id_nonce_ciphertext_tag() {
        let sealer = Sealer::new(&key(1));
        let packet = sealer.seal(b"ping", TO, NOW);
        assert_eq!(OVERHEAD, 75);
        assert_eq!(packet.len(), 4 + OVERHEAD);
        assert_eq!(packet[0], VERSION);
        assert_eq!(packet[1..5], key_id(&key(1)));
        assert!(!packet.windows(4).any(|w| w == b"ping"));
        let opened = sealer.open(&packet).unwrap();
        assert_eq!(opened.plaintext, b"ping");
        assert_eq!(
            opened.stamp,
            Stamp {
                epoch: sealer.epoch(),
                counter: 1,
                sent_ms: NOW,
                to: TO
            }
        );
    }

    #[test]
    fn counters_grow_and_nonces_never_repeat_within_a_sealer() {
        let sealer = Sealer::new(&key(1));
        let a = sealer.seal(b"same", TO, NOW);
        let b = sealer.seal(b"same", TO, NOW);
        assert_ne!(a[5..HEADER_LEN], b[5..HEADER_LEN]);
        assert_ne!(a, b);
        assert_eq!(sealer.open(&a).unwrap().stamp.counter, 1);
        assert_eq!(sealer.open(&b).unwrap().stamp.counter, 2);
    }

    #[test]
    fn epochs_differ_between_sealers() {
        assert_ne!(Sealer::new(&key(1)).epoch(), Sealer::new(&key(1)).epoch());
    }

    #[test]
    fn ipv6_destinations_round_trip() {
        let to: SocketAddr = "[2001:db8::7]:7000".parse().unwrap();
        let sealer = Sealer::new(&key(1));
        let packet = sealer.seal(b"x", to, NOW);
        assert_eq!(sealer.open(&packet).unwrap().stamp.to, to);
    }

    #[test]
    fn another_sealer_with_the_same_key_opens() {
        let packet = Sealer::new(&key(7)).seal(b"hello", TO, NOW);
        assert_eq!(
            open_plain(&Sealer::new(&key(7)), &packet).unwrap(),
            b"hello"
        );
    }

    #[test]
    fn a_ring_seals_with_its_primary_and_opens_with_any_key() {
        let (old, new) = (key(1), key(2));
        let mut ring = Keyring::new(old.clone());
        ring.install(new.clone()).unwrap();
        let rotating = Sealer::with_ring(&ring, SealConfig::default());
        let old_only = Sealer::new(&old);
        let new_only = Sealer::new(&new);
        // Installed but not primary: still sealing with the old key, opening both.
        let packet = rotating.seal(b"a", TO, NOW);
        assert_eq!(open_plain(&old_only, &packet).unwrap(), b"a");
        assert_eq!(
            open_plain(&rotating, &new_only.seal(b"b", TO, NOW)).unwrap(),
            b"b"
        );
        // Primary switched: seals with the new key; the epoch and counter go on.
        ring.use_key(&KeyRef::Key(new.clone())).unwrap();
        let mut rotating = rotating;
        rotating.set_ring(&ring);
        let packet = rotating.seal(b"c", TO, NOW);
        assert_eq!(
            old_only.open(&packet),
            Err(SealError::UnknownKey(key_id(&new)))
        );
        let opened = new_only.open(&packet).unwrap();
        assert_eq!(
            (opened.stamp.epoch, opened.stamp.counter),
            (rotating.epoch(), 2)
        );
    }

    #[test]
    fn errors_are_classified() {
        let sealer = Sealer::new(&key(1));
        assert_eq!(sealer.open(&[]), Err(SealError::TooShort));
        assert_eq!(
            sealer.open(&[VERSION; OVERHEAD - 1]),
            Err(SealError::TooShort)
        );
        assert_eq!(sealer.open(&[0u8; 1501]), Err(SealError::TooLarge));
        let mut packet = sealer.seal(b"x", TO, NOW);
        packet[0] = 1;
        assert_eq!(sealer.open(&packet), Err(SealError::UnknownVersion(1)));
        assert_eq!(
            sealer.open(&[VERSION; OVERHEAD]),
            Err(SealError::UnknownKey([VERSION; 4]))
        );
        let mut forged = vec![VERSION];
        forged.extend_from_slice(&key_id(&key(1)));
        forged.resize(OVERHEAD, 0);
        assert_eq!(sealer.open(&forged), Err(SealError::Unauthentic));
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let sealer = Sealer::new(&key(3));
        assert_eq!(
            open_plain(&sealer, &sealer.seal(b"", TO, NOW)).unwrap(),
            b""
        );
    }

    #[test]
    fn max_packet_is_configurable() {
        let config = SealConfig {
            max_packet_bytes: 128,
        };
        let sealer = Sealer::with_config(&key(1), config);
        assert_eq!(sealer.max_plaintext_len(), 128 - OVERHEAD);
        let fits = sealer.seal(&[0u8; 128 - OVERHEAD], TO, NOW);
        assert!(sealer.open(&fits).is_ok());
        let over = sealer.seal(&[0u8; 128 - OVERHEAD + 1], TO, NOW);
        assert_eq!(sealer.open(&over), Err(SealError::TooLarge));
    }

    #[test]
    fn nonce_low_bytes_wrap_without_panicking() {
        // The low 8 bytes wrap modulo 2^64; the sealer must not panic at the boundary.
        let mut sealer = Sealer::new(&key(1));
        sealer.nonce_base = u64::MAX;
        let packet = sealer.seal(b"edge", TO, NOW);
        let next = sealer.seal(b"edge", TO, NOW);
        assert_eq!(&packet[9..HEADER_LEN], &u64::MAX.to_be_bytes());
        assert_eq!(&next[9..HEADER_LEN], &0u64.to_be_bytes());
        assert_eq!(open_plain(&sealer, &next).unwrap(), b"edge");
    }

    proptest! {
        #[test]
        fn round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..=1400), now in any::<u64>()) {
            let sealer = Sealer::new(&key(9));
            let packet = sealer.seal(&plaintext, TO, now);
            prop_assert_eq!(packet.len(), plaintext.len() + OVERHEAD);
            let opened = sealer.open(&packet).unwrap();
            prop_assert_eq!(opened.plaintext, plaintext);
            prop_assert_eq!(opened.stamp.sent_ms, now);
        }

        #[test]
        fn garbage_never_opens(packet in proptest::collection::vec(any::<u8>(), 0..=1600)) {
            // A forgery would have to guess a 128-bit tag, so "overwhelmingly" is "always" here.
            prop_assert!(Sealer::new(&key(9)).open(&packet).is_err());
        }

        #[test]
        fn garbage_with_a_known_key_id_is_unauthentic(
            body in proptest::collection::vec(any::<u8>(), OVERHEAD - 1 - KEY_ID_LEN..=1400),
        ) {
            let mut packet = vec![VERSION];
            packet.extend_from_slice(&key_id(&key(9)));
            packet.extend_from_slice(&body);
            prop_assert_eq!(Sealer::new(&key(9)).open(&packet), Err(SealError::Unauthentic));
        }

        #[test]
        fn foreign_key_never_opens(
            a in any::<[u8; 32]>(),
            b in any::<[u8; 32]>(),
            plaintext in proptest::collection::vec(any::<u8>(), 0..=1400),
        ) {
            prop_assume!(a != b);
            let packet = Sealer::new(&ClusterKey::from_bytes(a)).seal(&plaintext, TO, NOW);
            let foreign = Sealer::new(&ClusterKey::from_bytes(b));
            prop_assert!(foreign.open(&packet).is_err());
        }

        #[test]
        fn any_flipped_byte_fails(
            plaintext in proptest::collection::vec(any::<u8>(), 0..=1400),
            index in any::<proptest::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let sealer = Sealer::new(&key(9));
            let mut packet = sealer.seal(&plaintext, TO, NOW);
            let at = index.index(packet.len());
            packet[at] ^= flip;
            prop_assert!(sealer.open(&packet).is_err());
        }
    }
}
