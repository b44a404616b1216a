//! The crate's rooms import one another in one direction only, and `lib.rs` says which way
//! (the checker is shared with the simulator: `tests/support/module_graph.rs`).

#[path = "../../tests/support/module_graph.rs"]
mod module_graph;
