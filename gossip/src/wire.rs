//! The datagram format of the membership core, inside the transport's seal.
//!
//! Every datagram starts with one kind byte: [`KIND_SWIM`] carries a foca packet verbatim,
//! [`KIND_SYNC`] and [`KIND_ADS`] carry the resource-ad anti-entropy of this crate. Decoders
//! are bounded: a datagram larger than the configured maximum is refused before parsing, and
//! every collection decoded is checked against the limits below.

use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::types::{Attributes, ResourceAd, Resources};

/// Length of the kind prefix.
pub const KIND_LEN: usize = 1;
/// A foca SWIM packet follows.
pub const KIND_SWIM: u8 = 0;
/// A [`Sync`] follows.
pub const KIND_SYNC: u8 = 1;
/// An [`Ads`] batch follows.
pub const KIND_ADS: u8 = 2;
/// A [`Forget`] follows.
pub const KIND_FORGET: u8 = 3;

/// Largest CPU capacity one node may advertise: a million cores, in millicores.
pub const MAX_CPU_MILLICORES: u64 = 1_000_000 * 1000;
/// Largest memory or disk capacity one node may advertise: 1 PiB, in MiB.
pub const MAX_SIZE_MIB: u64 = 1 << 30;

/// The operator said a node is gone for good (`shoal node forget`): drop it from the known
/// membership. Sent sealed to every live member by the node where the command ran, and told
/// again by every node that forgot it (`membership/forget.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forget {
    /// The node name to forget.
    pub name: compact_str::CompactString,
    /// The newest generation of it the sender knew (0: none): a node that knows a newer one
    /// (it came back since) refuses. `None` from agents before the field, which old agents
    /// ignore (postcard leaves the trailing bytes).
    pub generation: Option<u64>,
}

/// [`Forget`] before its generation.
#[derive(Deserialize)]
struct ForgetV1 {
    name: compact_str::CompactString,
}

impl From<ForgetV1> for Forget {
    fn from(f: ForgetV1) -> Self {
        Forget {
            name: f.name,
            generation: None,
        }
    }
}

/// Most attributes one ad may carry.
pub const MAX_ATTRIBUTES: usize = 32;
/// Longest attribute key or value, in bytes.
pub const MAX_ATTRIBUTE_LEN: usize = 64;
/// Longest node name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Largest encoded ad, in bytes; an ad must fit a datagram beside a SWIM header.
pub const MAX_AD_BYTES: usize = 900;

/// Buckets of the ad digest: ads are split by a hash of their node name, and a digest sync
/// sends back only the ads of the buckets whose digests differ.
pub const DIGEST_BUCKETS: usize = 16;

/// One digest per bucket of ads (see [`DIGEST_BUCKETS`]).
pub type Digest = [u64; DIGEST_BUCKETS];

/// "Here is my ad and a digest of every ad I know." The receiver merges the ad and, when
/// `want` asks for it, answers with an [`Ads`] batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sync {
    /// Digests over `(name, generation, version)` of every ad the sender knows, by bucket.
    pub digest: Digest,
    /// What the sender wants back.
    pub want: Want,
    /// The sender's own ad.
    pub ad: ResourceAd,
}

/// What a [`Sync`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Want {
    /// Only the receiver's own ad (sent when the sender sees a new member).
    Yours,
    /// Every ad the receiver knows in the buckets whose digests differ.
    AllIfDifferent,
    /// Nothing (a push).
    Nothing,
}

/// A batch of ads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ads {
    /// Ads, each newest-known for its node at the sender.
    pub ads: Vec<ResourceAd>,
}

/// Why a datagram or ad was refused. None of these change any state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The datagram was empty.
    #[error("empty datagram")]
    Empty,
    /// The datagram is larger than the configured maximum.
    #[error("datagram of {0} bytes exceeds the maximum")]
    TooLarge(usize),
    /// The kind byte is unknown.
    #[error("unknown datagram kind {0}")]
    UnknownKind(u8),
    /// The payload did not decode.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// An ad broke a limit.
    #[error("invalid resource ad: {0}")]
    InvalidAd(String),
    /// foca refused the SWIM packet.
    #[error("swim packet refused: {0}")]
    Swim(String),
}

/// Encodes `kind` + `msg`.
pub(crate) fn encode<T: Serialize>(kind: u8, msg: &T) -> Vec<u8> {
    let mut out = vec![kind];
    // postcard into a Vec cannot fail for these types (no maps with non-string keys, no
    // unsized sequences); an error here is a bug worth a loud failure in tests.
    let body = postcard::to_stdvec(msg);
    debug_assert!(body.is_ok(), "postcard encode failed");
    out.extend_from_slice(&body.unwrap_or_default());
    out
}

/// Decodes a payload and checks every ad in it.
pub(crate) fn decode_sync(payload: &[u8]) -> Result<Sync, DecodeError> {
    let sync: Sync = decode_tolerant::<Sync, SyncV1>(payload, "sync")?;
    check_ad(&sync.ad)?;
    Ok(sync)
}

/// Decodes an ads batch and checks every ad in it.
pub(crate) fn decode_forget(payload: &[u8]) -> Result<Forget, DecodeError> {
    let forget: Forget = decode_tolerant::<Forget, ForgetV1>(payload, "forget")?;
    if forget.name.is_empty() || forget.name.len() > MAX_NAME_LEN {
        return Err(DecodeError::Malformed {
            what: "forget",
            reason: format!("node name must be 1..={MAX_NAME_LEN} bytes"),
        });
    }
    Ok(forget)
}

pub(crate) fn decode_ads(payload: &[u8]) -> Result<Ads, DecodeError> {
    let ads: Ads = decode_exact::<Ads, AdsV1>(payload, "ads")?;
    ads.ads.iter().try_for_each(check_ad)?;
    Ok(ads)
}

/// Decodes one ad as carried in a foca custom broadcast.
pub fn decode_ad(data: &[u8]) -> Result<ResourceAd, DecodeError> {
    if data.len() > MAX_AD_BYTES {
        return Err(DecodeError::TooLarge(data.len()));
    }
    let ad: ResourceAd = decode_tolerant::<ResourceAd, AdV1>(data, "resource ad")?;
    check_ad(&ad)?;
    Ok(ad)
}

// ---- earlier layouts ----------------------------------------------------------------
//
// Fields are only ever appended to `ResourceAd`, and postcard writes a struct as its fields
// in order with no tags, so an ad of an earlier layout is a prefix of today's: decoding it as
// today's runs out of bytes. Such an ad (from an agent that predates `port_range`) is decoded
// with the layout it was written in and converted. An ad of a *later* layout has bytes past
// today's fields, which a single ad ignores (postcard reads a prefix); inside a batch they
// would misalign the next ad, so a batch must decode with every byte used, or it is refused.
// Mixed-version clusters are not supported (docs/observability.md, "Ports on the map"); this
// keeps membership working across one upgrade of the ad in the direction that costs nothing.

/// [`ResourceAd`] before `port_range` was appended.
#[derive(Serialize, Deserialize)]
struct AdV1 {
    node: compact_str::CompactString,
    generation: u64,
    version: u64,
    capacity: Resources,
    attributes: Attributes,
    draining: bool,
    left: bool,
    quic_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    gossip_addr: Option<SocketAddr>,
}

impl From<AdV1> for ResourceAd {
    fn from(a: AdV1) -> Self {
        ResourceAd {
            node: a.node,
            generation: a.generation,
            version: a.version,
            capacity: a.capacity,
            attributes: a.attributes,
            draining: a.draining,
            left: a.left,
            quic_addr: a.quic_addr,
            http_addr: a.http_addr,
            gossip_addr: a.gossip_addr,
            port_range: None,
        }
    }
}

/// [`Sync`] carrying an [`AdV1`].
#[derive(Serialize, Deserialize)]
struct SyncV1 {
    digest: Digest,
    want: Want,
    ad: AdV1,
}

impl From<SyncV1> for Sync {
    fn from(s: SyncV1) -> Self {
        Sync {
            digest: s.digest,
            want: s.want,
            ad: s.ad.into(),
        }
    }
}

/// [`Ads`] of [`AdV1`]s.
#[derive(Serialize, Deserialize)]
struct AdsV1 {
    ads: Vec<AdV1>,
}

impl From<AdsV1> for Ads {
    fn from(a: AdsV1) -> Self {
        Ads {
            ads: a.ads.into_iter().map(ResourceAd::from).collect(),
        }
    }
}

/// Decodes `bytes` as `T` (bytes past it ignored), or else as `Old`, the layout before the
/// ad's last appended field; the error is today's layout's.
fn decode_tolerant<T, Old>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError>
where
    T: DeserializeOwned,
    Old: DeserializeOwned + Into<T>,
{
    postcard::from_bytes::<T>(bytes).or_else(|e| {
        postcard::from_bytes::<Old>(bytes)
            .map(Into::into)
            .map_err(|_| DecodeError::Malformed {
                what,
                reason: e.to_string(),
            })
    })
}

/// Decodes `bytes` as `T` or else as `Old`, either with every byte used.
fn decode_exact<T, Old>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError>
where
    T: DeserializeOwned,
    Old: DeserializeOwned + Into<T>,
{
    let reason = match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => return Ok(v),
        Ok((_, rest)) => format!("{} bytes left over", rest.len()),
        Err(e) => e.to_string(),
    };
    match postcard::take_from_bytes::<Old>(bytes) {
        Ok((v, [])) => Ok(v.into()),
        _ => Err(DecodeError::Malformed { what, reason }),
    }
}

/// Encodes an [`Ads`] datagram (kind byte included) from ads already encoded with
/// [`encode_ad`]: postcard writes a sequence as its length (a LEB128 varint) followed by the
/// elements, so the batch is their concatenation behind the count.
#[must_use]
pub(crate) fn encode_ads_batch(encoded: &[Vec<u8>]) -> Vec<u8> {
    let mut out = encode(KIND_ADS, &encoded.len());
    out.reserve(encoded.iter().map(Vec::len).sum());
    for ad in encoded {
        out.extend_from_slice(ad);
    }
    out
}

/// The node name and `(generation, version)` at the front of an encoded ad, read without
/// decoding (or allocating) the rest; `None` if they do not decode.
#[must_use]
pub(crate) fn peek_ad_key(data: &[u8]) -> Option<(&str, (u64, u64))> {
    /// The leading fields of [`ResourceAd`], in its field order.
    #[derive(Deserialize)]
    struct Head<'a> {
        node: &'a str,
        generation: u64,
        version: u64,
    }
    let (head, _rest): (Head<'_>, _) = postcard::take_from_bytes(data).ok()?;
    Some((head.node, (head.generation, head.version)))
}

/// Encodes one ad for a foca custom broadcast.
#[must_use]
pub fn encode_ad(ad: &ResourceAd) -> Vec<u8> {
    let body = postcard::to_stdvec(ad);
    debug_assert!(body.is_ok(), "postcard encode failed");
    body.unwrap_or_default()
}

/// Checks an ad against the limits, whether it came from the wire or from the operator.
pub fn check_ad(ad: &ResourceAd) -> Result<(), DecodeError> {
    let bad = |m: String| Err(DecodeError::InvalidAd(m));
    if ad.node.is_empty() || ad.node.len() > MAX_NAME_LEN {
        return bad(format!("node name must be 1..={MAX_NAME_LEN} bytes"));
    }
    for (what, value, max) in [
        (
            "cpu capacity (millicores)",
            ad.capacity.cpu_millicores,
            MAX_CPU_MILLICORES,
        ),
        (
            "memory capacity (MiB)",
            ad.capacity.memory_mib,
            MAX_SIZE_MIB,
        ),
        ("disk capacity (MiB)", ad.capacity.disk_mib, MAX_SIZE_MIB),
    ] {
        if value > max {
            return bad(format!("{what} {value} exceeds the limit of {max}"));
        }
    }
    if let Some(r) = ad.port_range
        && (r.first == 0 || r.is_empty())
    {
        return bad(format!(
            "port range {}-{}: ports are 1-65535, the first at most the last",
            r.first, r.last
        ));
    }
    if ad.attributes.len() > MAX_ATTRIBUTES {
        return bad(format!(
            "{} attributes, at most {MAX_ATTRIBUTES}",
            ad.attributes.len()
        ));
    }
    if let Some((k, _)) = ad
        .attributes
        .iter()
        .find(|(k, v)| k.is_empty() || k.len() > MAX_ATTRIBUTE_LEN || v.len() > MAX_ATTRIBUTE_LEN)
    {
        return bad(format!(
            "attribute {k:?}: keys must be 1..={MAX_ATTRIBUTE_LEN} bytes, values at most {MAX_ATTRIBUTE_LEN}"
        ));
    }
    if encode_ad(ad).len() > MAX_AD_BYTES {
        return bad(format!("encoded ad exceeds {MAX_AD_BYTES} bytes"));
    }
    Ok(())
}

/// The digest of a set of ads: per bucket, the wrapping sum of [`ad_hash`] over its ads. A
/// sum is order-independent and updatable in O(1) when one ad is replaced, so the store keeps
/// it current instead of hashing every ad on every sync (that cost dominated a 1,000-node
/// simulation). Deterministic across processes (no `RandomState`).
pub(crate) fn digest<'a>(ads: impl Iterator<Item = &'a ResourceAd>) -> Digest {
    let mut digest = [0u64; DIGEST_BUCKETS];
    for ad in ads {
        let b = bucket_of(&ad.node);
        digest[b] = digest[b].wrapping_add(ad_hash(ad));
    }
    digest
}

/// The digest bucket of a node name (FNV-1a, stable across processes and versions).
#[must_use]
pub(crate) fn bucket_of(node: &str) -> usize {
    (fnv1a(FNV_OFFSET, node.as_bytes()) % DIGEST_BUCKETS as u64) as usize
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues an FNV-1a hash `h` over `bytes`.
fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// FNV-1a over one ad's `(name, generation, version)`, finished with a 64-bit mix so that the
/// sum of many hashes stays well spread.
pub(crate) fn ad_hash(ad: &ResourceAd) -> u64 {
    let mut h = fnv1a(FNV_OFFSET, ad.node.as_bytes());
    h = fnv1a(h, &[0xff]);
    h = fnv1a(h, &ad.generation.to_le_bytes());
    h = fnv1a(h, &ad.version.to_le_bytes());
    // splitmix64 finalizer
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PortRange;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn arb_ad() -> impl Strategy<Value = ResourceAd> {
        (
            "[a-z][a-z0-9-]{0,20}",
            any::<u64>(),
            any::<u64>(),
            (0..=MAX_CPU_MILLICORES, 0..=MAX_SIZE_MIB, 0..=MAX_SIZE_MIB),
            proptest::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..5),
            any::<bool>(),
            any::<bool>(),
            // serde drops IPv6 flow info and scope ids, which Shoal never uses
            proptest::option::of(
                (any::<std::net::IpAddr>(), any::<u16>()).prop_map(std::net::SocketAddr::from),
            ),
            proptest::option::of((1u16.., any::<u16>()).prop_map(|(a, b)| PortRange {
                first: a.min(b.max(1)),
                last: a.max(b),
            })),
        )
            .prop_map(
                |(
                    node,
                    generation,
                    version,
                    (c, m, d),
                    attributes,
                    draining,
                    left,
                    quic,
                    ports,
                )| {
                    ResourceAd {
                        node: node.into(),
                        generation,
                        version,
                        capacity: Resources {
                            cpu_millicores: c,
                            memory_mib: m,
                            disk_mib: d,
                        },
                        attributes: attributes.into(),
                        draining,
                        left,
                        quic_addr: quic,
                        http_addr: None,
                        gossip_addr: quic,
                        port_range: ports,
                    }
                },
            )
    }

    /// `ad` as an agent from before `port_range` encoded it.
    fn v1(ad: &ResourceAd) -> AdV1 {
        AdV1 {
            node: ad.node.clone(),
            generation: ad.generation,
            version: ad.version,
            capacity: ad.capacity,
            attributes: ad.attributes.clone(),
            draining: ad.draining,
            left: ad.left,
            quic_addr: ad.quic_addr,
            http_addr: ad.http_addr,
            gossip_addr: ad.gossip_addr,
        }
    }

    /// `ad` as it reads when it came from an agent that predates `port_range`.
    fn without_ports(ad: &ResourceAd) -> ResourceAd {
        ResourceAd {
            port_range: None,
            ..ad.clone()
        }
    }

    proptest! {
        #[test]
        fn ad_round_trips(ad in arb_ad()) {
            prop_assert_eq!(decode_ad(&encode_ad(&ad)).unwrap(), ad);
        }

        #[test]
        fn the_peeked_key_is_the_ads_key(ad in arb_ad()) {
            let bytes = encode_ad(&ad);
            prop_assert_eq!(peek_ad_key(&bytes), Some((ad.node.as_str(), ad.key())));
        }

        #[test]
        fn sync_round_trips(ad in arb_ad(), digest in any::<Digest>()) {
            let msg = Sync { digest, want: Want::AllIfDifferent, ad };
            let bytes = encode(KIND_SYNC, &msg);
            prop_assert_eq!(bytes[0], KIND_SYNC);
            prop_assert_eq!(decode_sync(&bytes[1..]).unwrap(), msg);
        }

        #[test]
        fn ads_round_trip(ads in proptest::collection::vec(arb_ad(), 0..6)) {
            let msg = Ads { ads };
            let bytes = encode(KIND_ADS, &msg);
            prop_assert_eq!(decode_ads(&bytes[1..]).unwrap(), msg);
        }

        #[test]
        fn a_batch_of_encoded_ads_is_the_ads_message(
            ads in proptest::collection::vec(arb_ad(), 0..6),
            padding in 0usize..200,
        ) {
            // Past 127 elements the count takes two varint bytes.
            let ads: Vec<ResourceAd> = ads.iter().cycle().take(ads.len() * (1 + padding)).cloned().collect();
            let encoded: Vec<Vec<u8>> = ads.iter().map(encode_ad).collect();
            let msg = Ads { ads };
            prop_assert_eq!(encode_ads_batch(&encoded), encode(KIND_ADS, &msg));
        }

        #[test]
        fn an_ad_of_the_layout_before_port_range_still_decodes(ad in arb_ad()) {
            let bytes = postcard::to_stdvec(&v1(&ad)).unwrap();
            prop_assert_eq!(decode_ad(&bytes).unwrap(), without_ports(&ad));
            prop_assert_eq!(peek_ad_key(&bytes), Some((ad.node.as_str(), ad.key())));
        }

        #[test]
        fn a_sync_and_a_batch_of_the_layout_before_port_range_still_decode(
            ads in proptest::collection::vec(arb_ad(), 1..6),
            digest in any::<Digest>(),
        ) {
            let sync = SyncV1 { digest, want: Want::AllIfDifferent, ad: v1(&ads[0]) };
            let bytes = encode(KIND_SYNC, &sync);
            let expected = Sync { digest, want: Want::AllIfDifferent, ad: without_ports(&ads[0]) };
            prop_assert_eq!(decode_sync(&bytes[1..]).unwrap(), expected);
            let batch = AdsV1 { ads: ads.iter().map(v1).collect() };
            let bytes = encode(KIND_ADS, &batch);
            let expected: Vec<ResourceAd> = ads.iter().map(without_ports).collect();
            prop_assert_eq!(decode_ads(&bytes[1..]).unwrap().ads, expected);
        }

        #[test]
        fn an_agent_of_the_layout_before_reads_a_single_new_ad(ad in arb_ad()) {
            // What an agent that predates `port_range` does with a broadcast ad or a sync:
            // postcard reads its prefix and leaves the range unread.
            let old: AdV1 = postcard::from_bytes(&encode_ad(&ad)).unwrap();
            prop_assert_eq!(ResourceAd::from(old), without_ports(&ad));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = decode_ad(&bytes);
            let _ = decode_sync(&bytes);
            let _ = decode_ads(&bytes);
        }
    }

    #[test]
    fn oversized_attributes_are_refused_with_a_reason() {
        let mut attributes = BTreeMap::new();
        for i in 0..40 {
            attributes.insert(format!("k{i}"), "v".to_string());
        }
        let ad = ResourceAd {
            generation: 1,
            attributes: attributes.into(),
            ..ResourceAd::new("n1", Resources::default())
        };
        let err = check_ad(&ad).unwrap_err().to_string();
        assert!(err.contains("40 attributes"), "{err}");
    }

    #[test]
    fn an_empty_port_range_is_refused_with_a_reason() {
        for (first, last) in [(0, 10), (20, 10)] {
            let ad = ResourceAd {
                port_range: Some(PortRange { first, last }),
                ..ResourceAd::new("n1", Resources::default())
            };
            let err = check_ad(&ad).unwrap_err().to_string();
            assert!(err.contains(&format!("port range {first}-{last}")), "{err}");
        }
        let one = ResourceAd {
            port_range: Some(PortRange { first: 7, last: 7 }),
            ..ResourceAd::new("n1", Resources::default())
        };
        assert!(check_ad(&one).is_ok());
        assert_eq!(one.port_range.unwrap().len(), 1);
    }

    #[test]
    fn digest_depends_on_versions_only_through_content() {
        let a = ResourceAd {
            generation: 1,
            ..ResourceAd::new("a", Resources::default())
        };
        let mut b = a.clone();
        assert_eq!(digest([&a].into_iter()), digest([&b].into_iter()));
        b.version = 2;
        assert_ne!(digest([&a].into_iter()), digest([&b].into_iter()));
    }
}
