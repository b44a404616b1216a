//! The IO shell of a Shoal agent: the only crate that touches sockets, clocks, disks and
//! processes. It drives the sans-IO cores in `shoal-gossip` and `shoal-scheduler`.
//!
//! # Map of the crate
//!
//! - Start and stop: [`agent`] (bind → gossip → scheduler → API), [`machine`] (what the host
//!   offers), [`known_file`] (the known membership across restarts).
//! - Gossip: [`gossip_driver`] owns the membership core; a UDP datagram is received in its
//!   `run` loop, opened by [`seal`] (AEAD, key ring from [`keys`]) and checked by [`replay`],
//!   then handed to `Membership::handle_datagram`.
//! - Scheduling: [`sched_driver`] owns the scheduler core: member views and the quorum, frames
//!   from [`peers`] (QUIC with mTLS from [`tls`]; `peers/frame.rs` is the framing), executor
//!   events, API requests, timers; [`store`] logs job records and snapshots.
//! - Tasks: [`executor`] (launch, watch, limits by cgroup, logs; `docs/executor.md`),
//!   [`runner`] (the scheduler's commands to the executor), [`watchdog`] (kills a dead
//!   agent's tasks), [`host_ports`] (the port flags and the host's listening ports).
//! - The API: [`api`] and [`api_jobs`] (routes), [`api_auth`] (token, `Host`, `Origin`,
//!   content type), [`api_tls`], [`api_keyring`], [`api_server`]; [`keyring`] (rotation).
//! - Metrics: [`metrics`] (`GET /v1/metrics`: counted in the shell, or read from the cores
//!   at scrape time); [`probe_rtt`] (the gossip driver times SWIM probes).
//! - Discovery: [`dns`] (the `shoal.` zone from the scheduler's service catalog) and
//!   [`api_services`] (`/v1/services`).
//! - Small helpers: [`backoff`], [`clock`].

pub mod agent;
pub mod api;
pub mod api_auth;
pub mod api_events;
pub mod api_jobs;
pub mod api_keyring;
pub mod api_nodes;
pub mod api_server;
pub mod api_services;
pub mod api_tls;
pub mod api_ui;
pub mod backoff;
pub mod checks;
pub mod clock;
pub mod code_pages;
pub mod dns;
pub mod events;
pub mod executor;
pub mod gossip_driver;
pub mod host_ports;
pub mod keyring;
pub mod keys;
pub mod known_file;
pub mod machine;
pub mod metrics;
pub mod peers;
pub mod probe_rtt;
pub mod replay;
pub mod runner;
pub mod sched_driver;
pub mod seal;
pub mod store;
pub mod task_gc;
pub mod tls;
pub mod watchdog;
