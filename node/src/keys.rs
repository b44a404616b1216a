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

impl ClusterLabel {
    /// Parses the 16-hex-character form shown by `Display`.
    pub fn parse(text: &str) -> Result<Self, ParseKeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ParseKeyError::Empty);
        }
        let got = text.chars().count();
        if got != 2 * 8 {
            return Err(ParseKeyError::WrongLength { got });
        }
        if let Some(position) = text.chars().position(|c| !c.is_ascii_hexdigit()) {
            return Err(ParseKeyError::NotHex { position });
        }
        let mut bytes = [0u8; 8];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| ParseKeyError::NotHex { position: 0 })?;
        Ok(Self(bytes))
    }
}

/// Most keys a [`Keyring`] holds. Rotation needs two; the cap keeps every datagram's key
/// lookup and every TLS trust store small, and a ring file from the network (the API or a
/// peer) cannot make an agent hold an unbounded list.
pub const MAX_RING_KEYS: usize = 8;

/// Largest keyring file accepted, in bytes ([`MAX_RING_KEYS`] keys need well under 1 KiB).
pub const MAX_RING_FILE_BYTES: usize = 16 * 1024;

/// The keys an agent holds, Serf-style: a primary that seals every outgoing datagram and
/// signs this node's certificate, and others that are still accepted (opening datagrams,
/// trusting certificates) while a rotation spreads.
///
/// Rotation: [`Keyring::install`] a new key everywhere, [`Keyring::use_key`] it everywhere,
/// then [`Keyring::remove`] the old one everywhere. Removing the primary is refused.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    /// Primary first, then the others in the order they were installed.
    keys: Vec<ClusterKey>,
}

/// A key named by an operator: the key itself, or its public label (enough to `use` or
/// `remove` a key that is already installed).
#[derive(Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// The full key (64 hex characters).
    Key(ClusterKey),
    /// The label of an installed key (16 hex characters).
    Label(ClusterLabel),
}

/// Why a keyring operation or a keyring file was refused. Never includes a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    /// `use` or `remove` named a key this ring does not hold.
    #[error("key {0} is not installed in this key ring")]
    NotInstalled(ClusterLabel),
    /// `remove` named the primary.
    #[error("key {0} is the primary key; make another key primary (`use`) before removing it")]
    RemovePrimary(ClusterLabel),
    /// `install` on a full ring.
    #[error("the key ring already holds {MAX_RING_KEYS} keys; remove one first")]
    Full,
    /// A keyring file that is not a list of keys.
    #[error("keyring file is not valid: {0}")]
    Malformed(String),
    /// A keyring file whose list holds no key.
    #[error("keyring file holds no key")]
    Empty,
    /// A keyring file with more than [`MAX_RING_KEYS`] keys.
    #[error("keyring file holds {0} keys, at most {MAX_RING_KEYS}")]
    TooMany(usize),
    /// A keyring file larger than [`MAX_RING_FILE_BYTES`].
    #[error("keyring file is {0} bytes, at most {MAX_RING_FILE_BYTES}")]
    TooLarge(usize),
    /// A key in the file is not a key.
    #[error("key #{index} of the keyring file: {source}")]
    BadKey {
        /// Zero-based position in the file's list.
        index: usize,
        /// What was wrong with it.
        source: ParseKeyError,
    },
    /// The same key twice in the file.
    #[error("key {0} appears twice in the keyring file")]
    Duplicate(ClusterLabel),
    /// Neither a key (64 hex characters) nor a label (16).
    #[error(
        "expected a key (64 hex characters) or an installed key's label (16 hex characters), got {0} characters"
    )]
    NotAKeyRef(usize),
}

/// Why a keyring file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyringFileError {
    /// Reading, writing or renaming failed.
    #[error("keyring file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file was read but is not a key ring.
    #[error("keyring file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        source: KeyringError,
    },
}

/// On-disk form: `{"keys": ["<primary hex>", "<other hex>", ...]}`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RingFile {
    keys: Vec<String>,
}

impl Keyring {
    /// A ring holding one key, which is primary.
    pub fn new(primary: ClusterKey) -> Self {
        Self {
            keys: vec![primary],
        }
    }

    /// The key that seals outgoing datagrams and signs this node's certificate.
    pub fn primary(&self) -> &ClusterKey {
        // The ring is never empty: every constructor and operation keeps the primary.
        &self.keys[0]
    }

    /// Every key, primary first.
    pub fn keys(&self) -> &[ClusterKey] {
        &self.keys
    }

    /// Labels of every key, primary first (what is safe to show).
    pub fn labels(&self) -> Vec<ClusterLabel> {
        self.keys.iter().map(ClusterKey::cluster_label).collect()
    }

    /// The installed key `key` names, if any.
    pub fn find(&self, key: &KeyRef) -> Option<&ClusterKey> {
        self.keys.iter().find(|k| key.matches(k))
    }

    /// Adds `key` as a non-primary key. Returns false if it was already installed.
    pub fn install(&mut self, key: ClusterKey) -> Result<bool, KeyringError> {
        if self.keys.contains(&key) {
            return Ok(false);
        }
        if self.keys.len() >= MAX_RING_KEYS {
            return Err(KeyringError::Full);
        }
        self.keys.push(key);
        Ok(true)
    }

    /// Makes the installed key `key` names primary; the old primary stays installed.
    /// Returns false if it already was primary.
    pub fn use_key(&mut self, key: &KeyRef) -> Result<bool, KeyringError> {
        let at = self
            .keys
            .iter()
            .position(|k| key.matches(k))
            .ok_or(KeyringError::NotInstalled(key.label()))?;
        if at == 0 {
            return Ok(false);
        }
        let chosen = self.keys.remove(at);
        self.keys.insert(0, chosen);
        Ok(true)
    }

    /// Removes the key `key` names. Refused for the primary; returns false if it was not
    /// installed (so repeating a rotation step is harmless).
    pub fn remove(&mut self, key: &KeyRef) -> Result<bool, KeyringError> {
        if key.matches(self.primary()) {
            return Err(KeyringError::RemovePrimary(key.label()));
        }
        let before = self.keys.len();
        self.keys.retain(|k| !key.matches(k));
        Ok(self.keys.len() != before)
    }

    /// The file form (holds the keys: write it only with mode 0600).
    pub fn to_file_text(&self) -> String {
        let file = RingFile {
            keys: self.keys.iter().map(ToString::to_string).collect(),
        };
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Parses the file form. Errors say what is wrong and never echo a key.
    pub fn parse_file(text: &[u8]) -> Result<Self, KeyringError> {
        if text.len() > MAX_RING_FILE_BYTES {
            return Err(KeyringError::TooLarge(text.len()));
        }
        let file: RingFile = serde_json::from_slice(text).map_err(|e| {
            KeyringError::Malformed(format!(
                "expected {{\"keys\": [\"<64 hex characters>\", ...]}}; {}",
                json_error_without_values(&e)
            ))
        })?;
        if file.keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        if file.keys.len() > MAX_RING_KEYS {
            return Err(KeyringError::TooMany(file.keys.len()));
        }
        let mut keys: Vec<ClusterKey> = Vec::with_capacity(file.keys.len());
        for (index, text) in file.keys.iter().enumerate() {
            let key =
                ClusterKey::parse(text).map_err(|source| KeyringError::BadKey { index, source })?;
            if keys.contains(&key) {
                return Err(KeyringError::Duplicate(key.cluster_label()));
            }
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// Reads a keyring file; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, KeyringFileError> {
        let io = |source| KeyringFileError::Io {
            path: path.to_owned(),
            source,
        };
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        Self::parse_file(&text)
            .map(Some)
            .map_err(|source| KeyringFileError::Parse {
                path: path.to_owned(),
                source,
            })
    }

    /// Writes the ring to `path` atomically (a temporary file renamed over it), readable and
    /// writable by the owner only (0600), and syncs it before the rename.
    pub fn save(&self, path: &Path) -> Result<(), KeyringFileError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| KeyringFileError::Io {
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(self.to_file_text().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Where and what kind of JSON error, without serde_json's message: that message may quote a
/// string value of the input ("invalid type: string \"…\""), which here can be a key.
pub fn json_error_without_values(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "unexpected field or value",
        serde_json::error::Category::Eof => "JSON ends early",
    };
    format!("{kind} at line {}, column {}", e.line(), e.column())
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("primary", &self.primary().cluster_label())
            .field("keys", &self.labels())
            .finish()
    }
}

impl KeyRef {
    /// Parses a full key (64 hex characters) or a label (16).
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        let trimmed = text.trim();
        match trimmed.chars().count() {
            CLUSTER_KEY_HEX_CHARS => ClusterKey::parse(trimmed)
                .map(KeyRef::Key)
                .map_err(|source| KeyringError::BadKey { index: 0, source }),
            16 => ClusterLabel::parse(trimmed)
                .map(KeyRef::Label)
                .map_err(|source| KeyringError::BadKey { index: 0, source }),
            other => Err(KeyringError::NotAKeyRef(other)),
        }
    }

    /// The label of the key this names.
    pub fn label(&self) -> ClusterLabel {
        match self {
            KeyRef::Key(key) => key.cluster_label(),
            KeyRef::Label(label) => *label,
        }
    }

    fn matches(&self, key: &ClusterKey) -> bool {
        match self {
            KeyRef::Key(k) => k == key,
            KeyRef::Label(label) => key.cluster_label() == *label,
        }
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRef({})", self.label())
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

    fn ring_key(byte: u8) -> ClusterKey {
        ClusterKey::from_bytes([byte; 32])
    }

    #[test]
    fn rotation_install_use_remove() {
        let (old, new) = (ring_key(1), ring_key(2));
        let mut ring = Keyring::new(old.clone());
        assert_eq!(ring.install(new.clone()), Ok(true));
        assert_eq!(ring.install(new.clone()), Ok(false));
        assert_eq!(ring.primary(), &old);
        assert_eq!(ring.use_key(&KeyRef::Label(new.cluster_label())), Ok(true));
        assert_eq!(ring.primary(), &new);
        assert_eq!(ring.keys(), [new.clone(), old.clone()]);
        assert_eq!(
            ring.remove(&KeyRef::Key(new.clone())),
            Err(KeyringError::RemovePrimary(new.cluster_label()))
        );
        assert_eq!(ring.remove(&KeyRef::Key(old.clone())), Ok(true));
        assert_eq!(ring.remove(&KeyRef::Key(old.clone())), Ok(false));
        assert_eq!(ring.keys(), [new]);
        assert_eq!(
            ring.use_key(&KeyRef::Key(old.clone())),
            Err(KeyringError::NotInstalled(old.cluster_label()))
        );
    }

    #[test]
    fn ring_is_bounded() {
        let mut ring = Keyring::new(ring_key(0));
        for b in 1..MAX_RING_KEYS as u8 {
            assert_eq!(ring.install(ring_key(b)), Ok(true));
        }
        assert_eq!(ring.install(ring_key(200)), Err(KeyringError::Full));
    }

    #[test]
    fn ring_file_round_trips_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("shoal-ring-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keyring.json");
        assert!(Keyring::load(&path).unwrap().is_none());
        let mut ring = Keyring::new(ring_key(1));
        ring.install(ring_key(2)).unwrap();
        ring.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Keyring::load(&path).unwrap(), Some(ring.clone()));
        ring.use_key(&KeyRef::Key(ring_key(2))).unwrap();
        ring.save(&path).unwrap();
        assert_eq!(
            Keyring::load(&path).unwrap().unwrap().primary(),
            &ring_key(2)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ring_file_errors_name_the_problem_without_the_key() {
        let key = ring_key(1).to_string();
        let cases: [(String, &str); 8] = [
            (
                format!(r#"{{"keys": "{key}"}}"#),
                "unexpected field or value",
            ),
            (format!(r#""{key}""#), "unexpected field or value"),
            ("not json".into(), "not valid"),
            (r#"{"keys": []}"#.into(), "no key"),
            (format!(r#"{{"keys": ["{key}", "{key}"]}}"#), "twice"),
            (r#"{"keys": ["abcd"]}"#.into(), "key #0"),
            (
                format!(r#"{{"keys": ["{key}"], "extra": 1}}"#),
                "unexpected field",
            ),
            (
                format!(
                    r#"{{"keys": [{}]}}"#,
                    vec![format!("\"{key}\""); 9].join(",")
                ),
                "at most",
            ),
        ];
        for (text, want) in cases {
            let err = Keyring::parse_file(text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(!err.contains(&key), "{err}");
        }
        let huge = vec![b' '; MAX_RING_FILE_BYTES + 1];
        assert!(matches!(
            Keyring::parse_file(&huge),
            Err(KeyringError::TooLarge(_))
        ));
    }

    #[test]
    fn key_refs_parse_keys_and_labels() {
        let key = ring_key(3);
        assert_eq!(
            KeyRef::parse(&key.to_string()),
            Ok(KeyRef::Key(key.clone()))
        );
        let label = key.cluster_label().to_string();
        assert_eq!(
            KeyRef::parse(&label),
            Ok(KeyRef::Label(key.cluster_label()))
        );
        assert_eq!(KeyRef::parse("abc"), Err(KeyringError::NotAKeyRef(3)));
        assert!(KeyRef::parse(&"z".repeat(16)).is_err());
        assert!(!format!("{:?}", KeyRef::Key(key.clone())).contains(&key.to_string()));
    }

    proptest! {
        #[test]
        fn ring_file_parse_never_panics(text in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Keyring::parse_file(&text);
        }
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
