//! Sans-IO SWIM membership and resource advertisement for Shoal.
//!
//! [`Membership`] wraps a [`foca`] instance and adds what a datacenter scheduler needs on top
//! of bare SWIM: node identities `(name, addr, generation)`, join by seed address with
//! back-off, versioned resource vectors ([`ResourceAd`]) that converge even when a broadcast is
//! lost (piggy-backed broadcast, pull on join, periodic digest sync), local health awareness
//! that stretches suspicion timeouts when this node itself is starved, and a member view with
//! events.
//!
//! This crate never touches a socket, a clock, a thread or the OS RNG: time is passed in as
//! [`Millis`], randomness comes from a seed, and effects leave through `poll_*` methods. That
//! is what lets the simulator run thousands of these cores in one process, deterministically.
//!
//! # Map of the crate
//!
//! - `membership.rs` — [`Membership`]: the driving contract, the public API, timers and the
//!   calls into foca. A datagram enters at [`Membership::handle_datagram`] (after the agent's
//!   `node/src/gossip_driver.rs` opened its seal), is split by kind in `dispatch`, and goes to
//!   foca (`handle_swim`) or to the ad anti-entropy (`membership/sync.rs`, `handle_sync`).
//! - `membership/view.rs` — foca's states turned into the member view and its events;
//!   `membership/names.rs` — namesakes, newer generations of this node, forgetting long-down
//!   members; `membership/forget.rs` — the operator's forget, told until every member heard;
//!   `membership/quorum.rs` — the quorum (`docs/faults.md`); `membership/sync.rs` — joins,
//!   syncs and resource ads; `membership/join.rs` — how a join through seeds stands, and when
//!   it is worth telling the operator.
//! - `swim_io.rs` — what one foca call produced; `ads.rs` — the ad store foca's broadcast
//!   handler feeds; `wire.rs` — the datagram format and its bounded decoders; `types.rs` —
//!   plain data shared with the scheduler and the agent; `config.rs` — tunables.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod ads;
mod config;
mod membership;
mod swim_io;
mod types;
pub mod wire;

pub use ads::AdCache;
pub use compact_str::CompactString;
pub use config::Config;
pub use membership::{ForgetError, MemberEvent, Membership, Stats, Transmit};
pub use swim_io::{PROBE_EVENTS_KEPT, ProbeEvent};
pub use types::{
    Attributes, JoinNotice, JoinStatus, MemberInfo, MemberStatus, Millis, NodeId, PortRange,
    Quorum, ResourceAd, Resources,
};
pub use wire::DecodeError;
