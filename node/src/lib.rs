//! The IO shell of a Shoal agent: the only crate that touches sockets, clocks, disks and
//! processes. It drives the sans-IO cores in `shoal-gossip` and `shoal-scheduler`.

pub mod agent;
pub mod api;
pub mod api_auth;
pub mod api_jobs;
pub mod api_keyring;
pub mod api_server;
pub mod api_tls;
pub mod backoff;
pub mod clock;
pub mod executor;
pub mod gossip_driver;
pub mod keyring;
pub mod keys;
pub mod known_file;
pub mod machine;
pub mod peers;
pub mod replay;
pub mod runner;
pub mod sched_driver;
pub mod seal;
pub mod store;
pub mod tls;
pub mod watchdog;
