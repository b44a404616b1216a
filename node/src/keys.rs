//! The cluster key: the one secret every Shoal node of a cluster shares.
//!
//! Promises:
//! - A [`ClusterKey`] is 32 bytes from the OS RNG, written and read as 64 hex characters.
//!   Parsing trims surrounding whitespace (a key file usually ends in a newline) and says
//!   exactly what was wrong with a bad key, without ever echoing the key back.
//! - Every other secret is derived from it with HKDF-SHA256 under its own label, so the gossip
//!   AEAD key and the cluster CA seed are independent of each other and of the raw key.
//! - The only thing about a key that is safe to log is its [`ClusterLabel`], a short one-way
//!   fingerprint; `Debug` prints that label and never the key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

/// Length of a cluster key in bytes.
pub const CLUSTER_KEY_BYTES: usize = 32;

/// Length of the hex form of a cluster key.
pub const CLUSTER_KEY_HEX_CHARS: usize = 2 * CLUSTER_KEY_BYTES;

// Fixed salt: the input key material is already uniformly random, so the salt only separates
// Shoal's derivations from any other HKDF use of the same bytes.
const HKDF_SALT: &[u8] = b"shoal hkdf salt v1";
const GOSSIP_KEY_LABEL: &[u8] = b"shoal gossip aead v1";
const CA_SEED_LABEL: &[u8] = b"shoal cluster ca v1";
const CLUSTER_ID_LABEL: &[u8] = b"shoal cluster id v1";

/// The shared secret of a cluster. Clone it freely; it never prints itself.
#[derive(Clone)]
pub struct ClusterKey {
    bytes: [u8; CLUSTER_KEY_BYTES],
}

/// A short public fingerprint of a [`ClusterKey`], safe to log and to show operators.
///
/// It is derived one-way (HKDF), so it reveals nothing about the key, and two nodes showing
/// different labels are certainly in different clusters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterLabel([u8; 8]);

/// Why a string is not a cluster key. The messages never include the candidate key itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseKeyError {
    /// Nothing but whitespace.
    #[error("cluster key is empty (expected 64 hex characters)")]
    Empty,
    /// Not 64 characters after trimming whitespace.
    #[error("cluster key must be 64 hex characters (32 bytes), got {got}")]
    WrongLength {
        /// Number of characters found after trimming.
        got: usize,
    },
    /// A character outside `0-9a-fA-F`.
    #[error("cluster key has a non-hex character at position {position} (expected 0-9, a-f)")]
    NotHex {
        /// Zero-based character position after trimming.
        position: usize,
    },
}

/// Why a cluster key file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadKeyError {
    /// The file could not be read.
    #[error("cannot read cluster key file {}: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file was read but does not hold a key.
    #[error("cluster key file {}: {source}", path.display())]
    Parse {
        /// The file that was read.
        path: PathBuf,
        /// What was wrong with its contents.
        source: ParseKeyError,
    },
}

impl ClusterKey {
    /// A fresh key from the OS RNG.
    ///
    /// Panics only if the operating system cannot provide randomness, in which case no key
    /// (and no TLS) can be trusted anyway.
    pub fn generate() -> Self {
        let mut bytes = [0u8; CLUSTER_KEY_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the OS random number generator failed");
        Self { bytes }
    }

    /// A key from raw bytes (tests, simulations, or keys kept in another format).
    pub fn from_bytes(bytes: [u8; CLUSTER_KEY_BYTES]) -> Self {
        Self { bytes }
    }

    /// Parses the hex form; surrounding whitespace (a trailing newline) is ignored.
    pub fn parse(text: &str) -> Result<Self, ParseKeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ParseKeyError::Empty);
        }
        let got = text.chars().count();
        if got != CLUSTER_KEY_HEX_CHARS {
            return Err(ParseKeyError::WrongLength { got });
        }
        if let Some(position) = text.chars().position(|c| !c.is_ascii_hexdigit()) {
            return Err(ParseKeyError::NotHex { position });
        }
        let mut bytes = [0u8; CLUSTER_KEY_BYTES];
        // Length and alphabet were checked above, so decoding cannot fail; map anyway rather
        // than panic.
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| ParseKeyError::NotHex { position: 0 })?;
        Ok(Self { bytes })
    }

    /// Reads a key file holding the hex form (as written by `Display`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadKeyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| LoadKeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|source| LoadKeyError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The ChaCha20-Poly1305 key that seals gossip datagrams.
    pub fn gossip_key(&self) -> [u8; 32] {
        self.derive(GOSSIP_KEY_LABEL)
    }

    /// The seed of the cluster CA's Ed25519 key.
    pub fn ca_seed(&self) -> [u8; 32] {
        self.derive(CA_SEED_LABEL)
    }

    /// The public fingerprint of this key, safe to log.
    pub fn cluster_label(&self) -> ClusterLabel {
        ClusterLabel(self.derive(CLUSTER_ID_LABEL))
    }

    fn derive<const N: usize>(&self, label: &[u8]) -> [u8; N] {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&self.bytes);
        let mut out = [0u8; N];
        // HKDF-SHA256 can expand up to 255 * 32 bytes; every N used here is far below that.
        prk.expand(&[label], OutputLen(N))
            .and_then(|okm| okm.fill(&mut out))
            .expect("HKDF output length within the RFC 5869 limit");
        out
    }
}

/// Tells ring how many bytes of HKDF output we want.
struct OutputLen(usize);

impl hkdf::KeyType for OutputLen {
    fn len(&self) -> usize {
        self.0
    }
}

impl FromStr for ClusterKey {
    type Err = ParseKeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// The hex form, for writing the key file. This is the secret: never log it.
impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.bytes))
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(label {})", self.cluster_label())
    }
}

// Compare without an early exit so equality checks do not leak how many leading bytes match.
impl PartialEq for ClusterKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes
            .iter()
            .zip(other.bytes.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Eq for ClusterKey {}

impl ClusterLabel {
    /// The raw fingerprint bytes.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Display for ClusterLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ClusterLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterLabel({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn display_is_64_lowercase_hex() {
        let key = ClusterKey::generate();
        let text = key.to_string();
        assert_eq!(text.len(), 64);
        assert!(text.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(ClusterKey::generate(), ClusterKey::generate());
    }

    #[test]
    fn parse_trims_whitespace_and_accepts_uppercase() {
        let key = ClusterKey::parse(&format!("  {}\n", SAMPLE.to_uppercase())).unwrap();
        assert_eq!(key.to_string(), SAMPLE);
        assert_eq!(SAMPLE.parse::<ClusterKey>().unwrap(), key);
    }

    #[test]
    fn parse_errors_name_the_problem() {
        assert_eq!(ClusterKey::parse(" \n"), Err(ParseKeyError::Empty));
        let short = ClusterKey::parse("abcd").unwrap_err();
        assert_eq!(short, ParseKeyError::WrongLength { got: 4 });
        assert_eq!(
            short.to_string(),
            "cluster key must be 64 hex characters (32 bytes), got 4"
        );
        let mut bad = SAMPLE.to_owned();
        bad.replace_range(10..11, "g");
        assert_eq!(
            ClusterKey::parse(&bad),
            Err(ParseKeyError::NotHex { position: 10 })
        );
        // Multi-byte characters count as one character, and never panic the slicing.
        let multibyte = "é".repeat(64);
        assert_eq!(
            ClusterKey::parse(&multibyte),
            Err(ParseKeyError::NotHex { position: 0 })
        );
    }

    #[test]
    fn load_names_the_path() {
        let dir = std::env::temp_dir().join(format!("shoal-keys-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.key");
        std::fs::write(&good, format!("{SAMPLE}\n")).unwrap();
        assert_eq!(ClusterKey::load(&good).unwrap().to_string(), SAMPLE);

        let bad = dir.join("bad.key");
        std::fs::write(&bad, "xyz").unwrap();
        let message = ClusterKey::load(&bad).unwrap_err().to_string();
        assert!(message.contains("bad.key"), "{message}");
        assert!(message.contains("got 3"), "{message}");

        let missing = dir.join("missing.key");
        let message = ClusterKey::load(&missing).unwrap_err().to_string();
        assert!(message.contains("missing.key"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn derivations_are_stable_and_distinct() {
        let key = ClusterKey::parse(SAMPLE).unwrap();
        let again = ClusterKey::parse(SAMPLE).unwrap();
        assert_eq!(key.gossip_key(), again.gossip_key());
        assert_eq!(key.ca_seed(), again.ca_seed());
        assert_eq!(key.cluster_label(), again.cluster_label());
        assert_ne!(key.gossip_key(), key.ca_seed());
        assert_ne!(key.gossip_key(), key.bytes);
        assert_ne!(&key.ca_seed()[..8], key.cluster_label().as_bytes());
    }

    #[test]
    fn debug_shows_only_the_label() {
        let key = ClusterKey::parse(SAMPLE).unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains(SAMPLE), "{debug}");
        assert!(debug.contains(&key.cluster_label().to_string()), "{debug}");
        assert_eq!(key.cluster_label().to_string().len(), 16);
    }

    proptest! {
        #[test]
        fn hex_round_trips(bytes in any::<[u8; 32]>()) {
            let key = ClusterKey::from_bytes(bytes);
            prop_assert_eq!(ClusterKey::parse(&key.to_string()).unwrap(), key);
        }

        #[test]
        fn parse_never_panics(text in ".{0,80}") {
            let _ = ClusterKey::parse(&text);
        }

        #[test]
        fn different_keys_have_different_labels(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            prop_assume!(a != b);
            let (a, b) = (ClusterKey::from_bytes(a), ClusterKey::from_bytes(b));
            prop_assert_ne!(a.cluster_label(), b.cluster_label());
            prop_assert_ne!(a.gossip_key(), b.gossip_key());
        }
    }
}
