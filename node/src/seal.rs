//! The sealed envelope around every gossip datagram (the memberlist/Serf precedent).
//!
//! Promises:
//! - [`Sealer::seal`] turns a plaintext into `[version = 1][nonce: 12][ciphertext + tag: 16]`,
//!   encrypted and authenticated with ChaCha20-Poly1305 under the gossip key derived from the
//!   [`ClusterKey`], with the protocol label [`AAD`] as associated data.
//! - [`Sealer::open`] returns the plaintext only for packets sealed with the same cluster key
//!   and not modified since. Anything else (foreign clusters, tampering, truncation, garbage,
//!   oversized packets) is an error the caller counts and drops; `open` never panics and never
//!   looks past the length and version bytes before the tag is verified.
//!
//! Drive it as: build one `Sealer` per process, share it (`&Sealer` is all either side needs),
//! `seal` before `send_to`, `open` after `recv_from`, and hand only opened plaintexts to the
//! gossip core.
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
//! packets this process has sealed, which gossip rates make public anyway.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::keys::ClusterKey;

/// The only envelope version this build writes and accepts.
pub const VERSION: u8 = 1;

/// Associated data bound into every tag, so a gossip packet can never be mistaken for another
/// protocol's ciphertext under a related key.
pub const AAD: &[u8] = b"shoal/gossip/1";

const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;

/// Bytes a sealed packet adds to its plaintext: version, nonce and tag.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

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
    /// The tag did not verify: another cluster's key, tampering, or garbage.
    #[error("packet failed authentication (foreign cluster key, tampered, or garbage)")]
    Unauthentic,
}

/// Seals and opens gossip packets for one cluster key. `Send + Sync`; share it by reference.
pub struct Sealer {
    key: LessSafeKey,
    config: SealConfig,
    /// High 4 bytes of every nonce this sealer produces (random per sealer).
    nonce_prefix: [u8; 4],
    /// Random starting point of the low 8 bytes; `next_nonce` adds the packet count to it.
    nonce_base: u64,
    sealed: AtomicU64,
}

impl Sealer {
    /// A sealer with the default limits.
    pub fn new(key: &ClusterKey) -> Self {
        Self::with_config(key, SealConfig::default())
    }

    /// A sealer with explicit limits.
    ///
    /// Panics only if the OS RNG fails, like [`ClusterKey::generate`].
    pub fn with_config(key: &ClusterKey, config: SealConfig) -> Self {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key.gossip_key())
            .expect("a 32-byte key is valid for ChaCha20-Poly1305");
        let mut start = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut start)
            .expect("the OS random number generator failed");
        let (prefix, base) = start.split_at(4);
        Self {
            key: LessSafeKey::new(unbound),
            config,
            nonce_prefix: prefix.try_into().expect("split at 4 of 12"),
            nonce_base: u64::from_be_bytes(base.try_into().expect("split at 4 of 12")),
            sealed: AtomicU64::new(0),
        }
    }

    /// The largest plaintext whose sealed packet the receiving side accepts.
    pub fn max_plaintext_len(&self) -> usize {
        self.config.max_packet_bytes.saturating_sub(OVERHEAD)
    }

    /// Encrypts and authenticates `plaintext` into a new packet of `plaintext.len() + OVERHEAD`
    /// bytes. A plaintext over [`Self::max_plaintext_len`] still seals, but receivers with the
    /// same config will drop it as [`SealError::TooLarge`].
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = self.next_nonce();
        let mut packet = Vec::with_capacity(plaintext.len() + OVERHEAD);
        packet.push(VERSION);
        packet.extend_from_slice(&nonce);
        packet.extend_from_slice(plaintext);
        let tag = self
            .key
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
    pub fn open(&self, packet: &[u8]) -> Result<Vec<u8>, SealError> {
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
        let nonce =
            Nonce::try_assume_unique_for_key(&header[1..]).map_err(|_| SealError::TooShort)?;
        let mut buffer = sealed.to_vec();
        let plaintext_len = self
            .key
            .open_in_place(nonce, Aad::from(AAD), &mut buffer)
            .map_err(|_| SealError::Unauthentic)?
            .len();
        buffer.truncate(plaintext_len);
        Ok(buffer)
    }

    /// The limits this sealer enforces.
    pub fn config(&self) -> SealConfig {
        self.config
    }

    fn next_nonce(&self) -> [u8; NONCE_LEN] {
        // `fetch_add` hands every caller a distinct count, so concurrent seals never share a
        // nonce; Relaxed is enough because only uniqueness matters, not ordering.
        let count = self.sealed.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.nonce_prefix);
        nonce[4..].copy_from_slice(&self.nonce_base.wrapping_add(count).to_be_bytes());
        nonce
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("algorithm", &aead::CHACHA20_POLY1305)
            .field("config", &self.config)
            .field("sealed", &self.sealed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::from_bytes([byte; 32])
    }

    #[test]
    fn layout_is_version_nonce_ciphertext_tag() {
        let sealer = Sealer::new(&key(1));
        let packet = sealer.seal(b"ping");
        assert_eq!(OVERHEAD, 29);
        assert_eq!(packet.len(), 4 + OVERHEAD);
        assert_eq!(packet[0], VERSION);
        assert_ne!(&packet[HEADER_LEN..HEADER_LEN + 4], b"ping");
        assert_eq!(sealer.open(&packet).unwrap(), b"ping");
    }

    #[test]
    fn nonces_never_repeat_within_a_sealer() {
        let sealer = Sealer::new(&key(1));
        let a = sealer.seal(b"same");
        let b = sealer.seal(b"same");
        assert_ne!(a[1..HEADER_LEN], b[1..HEADER_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn another_sealer_with_the_same_key_opens() {
        let packet = Sealer::new(&key(7)).seal(b"hello");
        assert_eq!(Sealer::new(&key(7)).open(&packet).unwrap(), b"hello");
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
        let mut packet = sealer.seal(b"x");
        packet[0] = 2;
        assert_eq!(sealer.open(&packet), Err(SealError::UnknownVersion(2)));
        assert_eq!(
            sealer.open(&[VERSION; OVERHEAD]),
            Err(SealError::Unauthentic)
        );
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let sealer = Sealer::new(&key(3));
        assert_eq!(sealer.open(&sealer.seal(b"")).unwrap(), b"");
    }

    #[test]
    fn max_packet_is_configurable() {
        let config = SealConfig {
            max_packet_bytes: 64,
        };
        let sealer = Sealer::with_config(&key(1), config);
        assert_eq!(sealer.max_plaintext_len(), 64 - OVERHEAD);
        let fits = sealer.seal(&[0u8; 64 - OVERHEAD]);
        assert!(sealer.open(&fits).is_ok());
        let over = sealer.seal(&[0u8; 64 - OVERHEAD + 1]);
        assert_eq!(sealer.open(&over), Err(SealError::TooLarge));
    }

    #[test]
    fn nonce_low_bytes_wrap_without_panicking() {
        // The low 8 bytes wrap modulo 2^64; the sealer must not panic at the boundary.
        let mut sealer = Sealer::new(&key(1));
        sealer.nonce_base = u64::MAX;
        let packet = sealer.seal(b"edge");
        let next = sealer.seal(b"edge");
        assert_eq!(&packet[5..HEADER_LEN], &u64::MAX.to_be_bytes());
        assert_eq!(&next[5..HEADER_LEN], &0u64.to_be_bytes());
        assert_eq!(sealer.open(&next).unwrap(), b"edge");
    }

    proptest! {
        #[test]
        fn round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..=1400)) {
            let sealer = Sealer::new(&key(9));
            let packet = sealer.seal(&plaintext);
            prop_assert_eq!(packet.len(), plaintext.len() + OVERHEAD);
            prop_assert_eq!(sealer.open(&packet).unwrap(), plaintext);
        }

        #[test]
        fn garbage_never_opens(packet in proptest::collection::vec(any::<u8>(), 0..=1600)) {
            // A forgery would have to guess a 128-bit tag, so "overwhelmingly" is "always" here.
            prop_assert!(Sealer::new(&key(9)).open(&packet).is_err());
        }

        #[test]
        fn versioned_garbage_is_unauthentic(
            body in proptest::collection::vec(any::<u8>(), OVERHEAD - 1..=1400),
        ) {
            let mut packet = vec![VERSION];
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
            let packet = Sealer::new(&ClusterKey::from_bytes(a)).seal(&plaintext);
            let foreign = Sealer::new(&ClusterKey::from_bytes(b));
            prop_assert_eq!(foreign.open(&packet), Err(SealError::Unauthentic));
        }

        #[test]
        fn any_flipped_byte_fails(
            plaintext in proptest::collection::vec(any::<u8>(), 0..=1400),
            index in any::<proptest::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let sealer = Sealer::new(&key(9));
            let mut packet = sealer.seal(&plaintext);
            let at = index.index(packet.len());
            packet[at] ^= flip;
            prop_assert!(sealer.open(&packet).is_err());
        }
    }
}
