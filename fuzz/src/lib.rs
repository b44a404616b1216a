//! Fuzz targets: every decoder that reads bytes from the network or the API, each wrapped as
//! a function that must return (never panic, never hang) whatever it is given.
//!
//! Each target is run over its committed corpus (`fuzz/corpus/<target>/`) by this crate's
//! test (a regression check in every test run), and over random mutations of that corpus for
//! a bounded time by the `shoal-fuzz` binary (`.ci/run`). The mutations are not coverage
//! guided (no libFuzzer: it needs a nightly toolchain and an instrumented rebuild of every
//! dependency, more than CI's two minutes on two cores allow); the corpus holds real encoded
//! messages so mutations start deep inside each format. `docs/security.md` says more.

use std::net::SocketAddr;
use std::sync::OnceLock;

use shoal_gossip::{Config, Membership, Millis, NodeId, ResourceAd, Resources};
use shoal_node::keys::{ClusterKey, KeyRef, Keyring};
use shoal_node::replay::{ReplayConfig, ReplayGuard};
use shoal_node::seal::Sealer;
use shoal_scheduler::{JobSpec, Message, WireLimits};

pub mod corpus;
pub mod mutate;

/// A fuzz target: a name (its corpus folder) and the function under test.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Folder name under `fuzz/corpus/`.
    pub name: &'static str,
    /// Must return for every input.
    pub run: fn(&[u8]),
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "gossip_datagram",
        run: gossip_datagram,
    },
    Target {
        name: "seal_open",
        run: seal_open,
    },
    Target {
        name: "peer_frames",
        run: peer_frames,
    },
    Target {
        name: "control_message",
        run: control_message,
    },
    Target {
        name: "scheduler_message",
        run: scheduler_message,
    },
    Target {
        name: "job_spec_json",
        run: job_spec_json,
    },
    Target {
        name: "job_spec_toml",
        run: job_spec_toml,
    },
    Target {
        name: "keyring_file",
        run: keyring_file,
    },
];

/// The key the `seal_open` corpus was sealed with, so mutations of it reach the stamp check.
pub fn fuzz_key() -> ClusterKey {
    ClusterKey::from_bytes([0x5e; 32])
}

/// The address the `seal_open` corpus is stamped for.
pub fn fuzz_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7946))
}

/// The time the corpus is stamped with, and the receiver's clock in the target.
pub const FUZZ_NOW_MS: u64 = 1_700_000_000_000;

/// A fresh membership core, as an agent has after start (the input is a datagram to it).
pub fn membership(name: &str, port: u16) -> Membership {
    let id = NodeId {
        name: name.into(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        generation: 1,
    };
    let ad = ResourceAd::new(
        name,
        Resources {
            cpu_millicores: 1000,
            memory_mib: 1024,
            disk_mib: 1024,
        },
    );
    Membership::new(id, ad, Config::default(), 7, Millis(FUZZ_NOW_MS))
}

/// The gossip core's datagram decoding (`gossip/src/wire.rs` and foca's), after the seal.
fn gossip_datagram(data: &[u8]) {
    let mut core = membership("fuzz", 7946);
    let from = SocketAddr::from(([127, 0, 0, 1], 7000));
    let _ = core.handle_datagram(Millis(FUZZ_NOW_MS), from, data);
    while core.poll_transmit().is_some() {}
    let _ = shoal_gossip::wire::decode_ad(data);
}

/// The seal (`node/src/seal.rs`) and the anti-replay check on whatever opens.
fn seal_open(data: &[u8]) {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    let sealer = SEALER.get_or_init(|| Sealer::new(&fuzz_key()));
    if let Ok(opened) = sealer.open(data) {
        let mut guard = ReplayGuard::new(fuzz_addr(), ReplayConfig::default());
        let first = guard.check(&opened.stamp, FUZZ_NOW_MS);
        assert!(
            first.is_err() || guard.check(&opened.stamp, FUZZ_NOW_MS).is_err(),
            "a stamp was accepted twice"
        );
        gossip_datagram(&opened.plaintext);
    }
    // A forgery cannot get past the tag, so also take the input as a plaintext: sealing and
    // opening must give it back with the stamp it was sealed with.
    let now = data
        .first_chunk::<8>()
        .map_or(FUZZ_NOW_MS, |b| u64::from_be_bytes(*b));
    let packet = sealer.seal(data, fuzz_addr(), now);
    if data.len() <= sealer.max_plaintext_len() {
        let opened = sealer.open(&packet).expect("a packet we sealed opens");
        assert_eq!(opened.plaintext, data);
        assert_eq!((opened.stamp.sent_ms, opened.stamp.to), (now, fuzz_addr()));
    } else {
        assert!(sealer.open(&packet).is_err(), "an oversized packet opened");
    }
}

/// The QUIC frame decoding of `node/src/peers.rs`.
fn peer_frames(data: &[u8]) {
    let _ = shoal_node::peers::decode_frames(data, 1 << 20);
    if let Some(header) = data.first_chunk::<{ shoal_node::peers::FRAME_HEADER_LEN }>() {
        let _ = shoal_node::peers::decode_frame_header(*header, 64);
    }
}

/// Key rotation control messages between agents (`node/src/keyring.rs`).
fn control_message(data: &[u8]) {
    if let Ok(shoal_node::keyring::ControlMessage::Request { op, .. }) =
        shoal_node::keyring::ControlMessage::decode(data)
    {
        let _ = op.to_op();
    }
}

/// Scheduler messages from peers, both decoders.
fn scheduler_message(data: &[u8]) {
    let limits = WireLimits::default();
    let plain = Message::decode(data, &limits);
    let shared = Message::decode_shared(&bytes::Bytes::copy_from_slice(data), &limits);
    // The two decoders promise the same verdict.
    assert_eq!(
        plain.is_ok(),
        shared.is_ok(),
        "decode and decode_shared disagree: {plain:?} vs {shared:?}"
    );
}

/// Job specs from the API, JSON.
fn job_spec_json(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(spec) = JobSpec::from_json_str(&text) {
        let _ = spec.validate();
    }
}

/// Job specs from the API, TOML.
fn job_spec_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(spec) = JobSpec::from_toml_str(&text) {
        let _ = spec.validate();
    }
}

/// The keyring file, and keys or labels named over the API.
fn keyring_file(data: &[u8]) {
    if let Ok(ring) = Keyring::parse_file(data) {
        let again = Keyring::parse_file(ring.to_file_text().as_bytes());
        assert_eq!(again.as_ref(), Ok(&ring), "a parsed ring must round-trip");
    }
    let _ = KeyRef::parse(&String::from_utf8_lossy(data));
}
