//! The operator's side of drains (`docs/services.md`, §5): `shoal node drain` and
//! `shoal node eligibility` become one write of the `nodes` component, logged and
//! acknowledged like a job write; every replica refreshes its placement candidates when a
//! node's intent changes; and the status every node shows.
//!
//! How to drive it: [`Scheduler::prepare_node`], log [`JobWrite::record`], then
//! [`Scheduler::commit`], as for a submission. The node's record goes into the same job log,
//! under the key [`NODE_RECORD_PREFIX`]`NAME` (no job id contains `~`), and comes back on
//! restart through [`Scheduler::restore_job_records`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_gossip::Millis;

use crate::durability::{JobRecord, Receipt};
use crate::events::{NodeEvent, SchedEvent};
use crate::ids::Name;
use crate::jobs::{JobWrite, Prepared};
use crate::scheduler::Scheduler;
use crate::table::{AttemptState, DrainSpec, NodeIntent, NodeRow, OpBody, encode_node_record};

/// The job log's key of a node's record is this prefix and the node's name.
pub const NODE_RECORD_PREFIX: &str = "~node/";

/// What the operator asks of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeChange {
    /// Move its tasks off and accept no new work (`deadline_ms`: stop whatever is left
    /// this long after the node sees the intent; none: batch tasks finish).
    Drain {
        /// The deadline.
        deadline_ms: Option<u64>,
    },
    /// Stop draining; the node stays ineligible until it is enabled.
    Undrain,
    /// Allow or refuse new placements (enabling also ends a drain).
    Eligible(bool),
}

/// Why a node command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// No such node in the membership or the tables.
    #[error("no node `{name}` (known: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names this node knows, comma-separated.
        known: String,
    },
}

/// A node's eligibility and drain, as this replica sees them (`GET /v1/nodes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// The node.
    pub name: String,
    /// New placements may land there.
    pub eligible: bool,
    /// A drain is in force (complete or not).
    pub draining: bool,
    /// The drain's deadline, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_deadline_ms: Option<u64>,
    /// The node reported the drain complete (none of its attempts is live).
    pub drain_complete: bool,
    /// Live attempts (proposed, admitted, running) that target the node, in this view.
    pub live_tasks: u32,
}

impl Scheduler {
    /// Check a node command and compute its write without applying it (log the record, then
    /// [`Scheduler::commit`], as [`Scheduler::prepare_submit`]). A command that changes
    /// nothing (the same drain again, enabling an eligible node) writes nothing, so a
    /// repeated drain does not restart its deadline.
    pub fn prepare_node(
        &mut self,
        now: Millis,
        name: &str,
        change: NodeChange,
    ) -> Result<Prepared, NodeError> {
        self.tick(now);
        if !self.members.all.contains_key(name)
            && name != self.node
            && self.tables().node(name).is_none()
        {
            let mut known: Vec<&str> = self.members.all.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(NodeError::Unknown {
                name: name.to_string(),
                known: known.join(", "),
            });
        }
        let cur = self.tables().node(name).and_then(|r| r.intent.clone());
        let (eligible, drain) = match change {
            NodeChange::Drain { deadline_ms } => (false, Some(DrainSpec { deadline_ms })),
            NodeChange::Undrain => (cur.as_ref().is_some_and(|c| c.eligible), None),
            NodeChange::Eligible(true) => (true, None),
            NodeChange::Eligible(false) => (false, cur.as_ref().and_then(|c| c.drain)),
        };
        let key = format!("{NODE_RECORD_PREFIX}{name}");
        let same = match &cur {
            Some(c) => c.eligible == eligible && c.drain == drain,
            None => eligible && drain.is_none(),
        };
        if same {
            let version = cur.map_or_else(|| self.stamp(), |c| c.stamp);
            return Ok(Prepared::Unchanged(Receipt {
                job: key,
                version,
                dot: self.last_dot(),
            }));
        }
        let stamp = self.stamp();
        let intent = NodeIntent {
            stamp: stamp.clone(),
            eligible,
            drain,
        };
        let mut after = self.tables().node(name).cloned().unwrap_or_default();
        let row = NodeRow {
            intent: Some(intent),
            progress: None,
        };
        after.join(&row);
        Ok(Prepared::Write(Box::new(JobWrite {
            body: OpBody::Node {
                node: name.into(),
                row,
            },
            key: key.clone(),
            stamp,
            record: node_record(&key, name, &after),
            counter: self.repl.counter + 1,
        })))
    }

    /// The record of node `name` as the tables hold it now (for `poll_job_records`).
    pub(crate) fn node_record_now(&self, key: &str) -> Option<JobRecord> {
        let name = key.strip_prefix(NODE_RECORD_PREFIX)?;
        let row = self.tables().node(name)?;
        Some(node_record(key, name, row))
    }

    /// Every node's eligibility and drain in this replica's view: the members and the nodes
    /// an intent names, by name.
    #[must_use]
    pub fn node_statuses(&self) -> Vec<NodeStatus> {
        let tables = self.tables();
        let mut live: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
        for (id, a) in tables.assignments() {
            if tables.is_live(id) {
                *live.entry(a.target.as_str()).or_default() += 1;
            }
        }
        let mut names: Vec<&str> = self.members.all.keys().map(String::as_str).collect();
        names.extend(tables.nodes().map(|(n, _)| n.as_str()));
        names.push(self.node.as_str());
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let row = tables.node(name).cloned().unwrap_or_default();
                NodeStatus {
                    name: name.to_string(),
                    eligible: !row.refuses_work(),
                    draining: row.drain().is_some(),
                    drain_deadline_ms: row.drain().and_then(|(_, d)| d.deadline_ms),
                    drain_complete: row.drain_done(),
                    live_tasks: live.get(name).copied().unwrap_or(0),
                }
            })
            .collect()
    }

    /// Whether this node's ad should say `draining` (it refuses new work): the shell mirrors
    /// the intent into the ad.
    #[must_use]
    pub fn refuses_work(&self) -> bool {
        self.tables().refuses_work(&self.node)
    }

    /// A node's intent or progress changed in the tables: [`Scheduler::node_row_seen`], then
    /// [`Scheduler::node_rows_changed`].
    pub(crate) fn node_touched(&mut self, name: &Name) {
        self.node_row_seen(name);
        self.node_rows_changed();
    }

    /// What one changed node row needs: logged, and the event stream told when the node's
    /// eligibility flipped or (another node's) its drain completed.
    pub(crate) fn node_row_seen(&mut self, name: &Name) {
        self.log.note_job(&format!("{NODE_RECORD_PREFIX}{name}"));
        let refuses = self.tables().refuses_work(name);
        let before = self.drain.refused.insert(name.clone(), refuses);
        if before.unwrap_or(false) != refuses {
            self.events.push(SchedEvent::Node(NodeEvent::Eligibility {
                node: name.clone(),
                eligible: !refuses,
            }));
        }
        self.tell_drain_done(name);
    }

    /// What any change of node rows needs once: the candidates' flags refreshed, and placement
    /// looked at again.
    pub(crate) fn node_rows_changed(&mut self) {
        self.refresh_candidates();
        // Pending slots may fit on a node enabled again; a drained slot may wait for room.
        self.coord.room_changes += 1;
        self.work.everything = true;
        self.retry_pending_soon();
    }

    /// Another node's drain completed in this replica's tables (its `DrainProgress` merged):
    /// told once per drain, so a page or `shoal events` on any node sees the drain end, not
    /// only one on the draining node, which tells its own as it writes it (`drain.rs`).
    fn tell_drain_done(&mut self, name: &Name) {
        if *name == self.node || !self.events.is_on() {
            return;
        }
        let Some(stamp) = self
            .tables()
            .node(name)
            .and_then(NodeRow::completed_drain)
            .cloned()
        else {
            return;
        };
        if self.drain.told_done.get(name) != Some(&stamp) {
            self.drain.told_done.insert(name.clone(), stamp);
            self.events.push(SchedEvent::Node(NodeEvent::DrainComplete {
                node: name.clone(),
            }));
        }
    }

    /// Drains already complete in tables this node restored (its snapshot, its log of node
    /// rows) count as told: a restart, or the log's rows joined again, does not tell them
    /// once more. A drain that completes later, or arrives later, is told as usual.
    pub(crate) fn count_restored_drains_told(&mut self) {
        let done: Vec<(Name, crate::ids::Stamp)> = self
            .tables()
            .nodes()
            .filter(|(name, _)| name.as_str() != self.node)
            .filter_map(|(name, row)| Some((name.clone(), row.completed_drain()?.clone())))
            .collect();
        self.drain.told_done.extend(done);
    }

    /// Set the candidates' flags from their ads and the `nodes` component.
    pub(crate) fn refresh_candidates(&mut self) {
        let flags: Vec<(bool, bool)> = self
            .members
            .nodes
            .iter()
            .map(|c| self.candidate_flags(&c.name))
            .collect();
        if (self.members.nodes.iter().zip(&flags)).all(|(c, &(draining, ineligible))| {
            c.draining == draining && c.ineligible == ineligible
        }) {
            // Nothing to copy: candidates shared with a view stay shared.
            return;
        }
        let nodes = Arc::make_mut(&mut self.members.nodes);
        for (c, (draining, ineligible)) in nodes.iter_mut().zip(flags) {
            c.draining = draining;
            c.ineligible = ineligible;
        }
    }

    /// The `(draining, ineligible)` flags of the candidate `name` from its ad and the
    /// `nodes` component.
    fn candidate_flags(&self, name: &str) -> (bool, bool) {
        let row = self.replica.tables().node(name);
        let ad_draining = self
            .members
            .all
            .get(name)
            .and_then(|m| m.ad.as_ref())
            .is_some_and(|ad| ad.draining)
            && name != self.node;
        // The ad mirrors the intent: it counts as draining only where the tables know no
        // intent that explains it (one not merged here yet, or an older agent's flag).
        let refuses = row.is_some_and(NodeRow::refuses_work);
        let draining = row.is_some_and(|r| r.drain().is_some()) || (ad_draining && !refuses);
        (draining, !draining && refuses)
    }

    /// Live attempts that target this node in this replica's view.
    pub(crate) fn any_live_attempt_here(&self) -> bool {
        let tables = self.tables();
        tables.assignments().any(|(id, a)| {
            a.target == self.node
                && tables
                    .assignment_and_state(id)
                    .is_some_and(|(_, s)| s.is_live() && *s != AttemptState::Drained)
        })
    }
}

fn node_record(key: &str, name: &str, row: &NodeRow) -> JobRecord {
    JobRecord {
        job: key.to_string(),
        bytes: encode_node_record(name, row),
    }
}
