//! A node's row in the job log (`drain_intent.rs`): its own encoding, told apart from a
//! job record by its first bytes.

use serde::{Deserialize, Serialize};

use super::elements::OpBody;
use super::nodes::NodeRow;
use crate::ids::Name;

/// The first bytes of a node's record in the job log: tell it from a job record on restore.
const NODE_RECORD_MAGIC: [u8; 8] = *b"~shoalnd";

/// A node's row as the job log holds it (`drain_intent.rs`).
#[derive(Serialize, Deserialize)]
struct NodeRecord {
    magic: [u8; 8],
    node: Name,
    row: NodeRow,
}

/// The job log's bytes for node `name`'s row.
#[must_use]
pub fn encode_node_record(name: &str, row: &NodeRow) -> Vec<u8> {
    let record = NodeRecord {
        magic: NODE_RECORD_MAGIC,
        node: name.into(),
        row: row.clone(),
    };
    postcard::to_stdvec(&record).unwrap_or_default()
}

/// The node write a logged record holds, if `bytes` is a node's record (every byte used).
#[must_use]
pub fn decode_node_record(bytes: &[u8]) -> Option<OpBody> {
    match postcard::take_from_bytes::<NodeRecord>(bytes) {
        Ok((r, [])) if r.magic == NODE_RECORD_MAGIC => Some(OpBody::Node {
            node: r.node,
            row: r.row,
        }),
        _ => None,
    }
}
