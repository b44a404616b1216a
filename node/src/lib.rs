//! The IO shell of a Shoal agent: the only crate that touches sockets, clocks, disks and
//! processes. It drives the sans-IO cores in `shoal-gossip` and `shoal-scheduler`.

pub mod keys;
pub mod seal;
pub mod tls;

pub mod agent;
pub mod api;
pub mod clock;
pub mod gossip_driver;
pub mod machine;
pub mod peers;
pub mod store;
