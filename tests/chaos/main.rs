//! The chaos suite: five real agents, each in its own network namespace, under partitions,
//! one-way loss, SIGSTOP, `kill -9` of agents and of whole nodes, restarts and a full disk.
//! Every run records a history (requests with their answers, faults, task processes sampled
//! from `/proc`) and judges it against the rules of docs/faults.md. How it works, how to run
//! it and how to read a failure: docs/chaos.md.
//!
//! - [`net`]: the namespaces, the bridge, the packet filters.
//! - [`cluster`]: agents in the namespaces, requests, waits, the end of a run.
//! - [`faults`]: what a scenario does to the cluster.
//! - [`history`]: the record and the `/proc` sampler.
//! - [`checkers`]: the properties, as pure functions of a history (with tests that bite).
//! - [`scenarios`]: one test per scenario of issue 12.
//!
//! The scenarios need root (CI runs as root); the checker and sampler tests do not.

#[path = "../common/mod.rs"]
mod common;

mod checkers;
mod cluster;
mod faults;
mod history;
mod net;
mod scenarios;
