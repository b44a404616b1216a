//! The op-based replica around the [`Tables`]: each actor's ops delivered in order, op logs
//! kept for anti-entropy, and what changed reported to the scheduler.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use crdts::{CmRDT, CvRDT};
use shoal_gossip::Resources;

use super::elements::{Assignment, AttemptState, JobKey, Op, OpBody};
use super::lattice::Tables;
use super::usage::UsageIndex;
use crate::ids::{ActorId, AttemptId, Name, VersionVector};

/// Something in the tables changed; the scheduler re-examines it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Touch {
    /// A job write or purge.
    Job(Name),
    /// An attempt's assignment or state.
    Attempt(AttemptId),
    /// A node's intent or drain progress (`docs/services.md`, §5).
    Node(Name),
    /// A state merge: re-examine everything.
    Everything,
}

/// Limits of a replica.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplicaLimits {
    /// Ops kept per actor for anti-entropy.
    pub(crate) log_per_actor: usize,
    /// Out-of-order ops buffered per actor before giving up and asking for state.
    pub(crate) pending_per_actor: usize,
    /// Releases are held (see [`Replica::placement_usage`]) until the scheduler ends them.
    pub(crate) hold_releases: bool,
}

/// The contiguous tail of one actor's ops, each kept postcard-encoded: a replica logs every
/// actor's ops, and the encoding is about a third of the size of a decoded `Op` (whose ids
/// and stamps are separate heap strings). A received op is logged as the slice of the message
/// it arrived in ([`Op`]), shared with every other replica that received the same buffer;
/// only local writes are encoded here. Logs are read only to answer digests.
#[derive(Debug, Clone, Default)]
struct ActorLog {
    /// Counter of `ops[0]`.
    first: u64,
    ops: VecDeque<Bytes>,
    /// `first + ops.len()` at the last [`Replica::drop_quiet_logs`]: the same at the next one
    /// means the actor wrote nothing in between.
    swept_end: Option<u64>,
}

/// Actor → its op log. Looked up once per applied op, iterated only by the rare
/// [`Replica::drop_quiet_logs`] (digests walk the version vector): a hash lookup instead of a
/// tree search comparing actors.
#[allow(clippy::disallowed_types)]
type ActorLogs = rustc_hash::FxHashMap<ActorId, ActorLog>;

/// What [`Replica::receive`] did with an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// Applied (possibly releasing buffered successors).
    Applied,
    /// Already included.
    Duplicate,
    /// Waiting for its predecessors.
    Buffered,
    /// The buffer for this actor overflowed and was dropped: ask for state.
    Overflow,
}

/// Tables plus in-order delivery, op logs and derived indexes.
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    pub(super) tables: Tables,
    logs: ActorLogs,
    pending: BTreeMap<ActorId, BTreeMap<u64, Op>>,
    /// Resources held per node, and the releases placers count.
    pub(super) usage: UsageIndex,
    touched: BTreeSet<Touch>,
    limits: ReplicaLimits,
}

impl Replica {
    pub(crate) fn new(tables: Tables, limits: ReplicaLimits) -> Self {
        let mut r = Self {
            tables,
            logs: ActorLogs::default(),
            pending: BTreeMap::new(),
            usage: UsageIndex::new(limits.hold_releases),
            touched: BTreeSet::new(),
            limits,
        };
        r.rebuild_usage();
        r.touched.insert(Touch::Everything);
        r
    }

    pub(crate) fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The dense id of a node name (assigned on first use; ids are never reused).
    pub(crate) fn node_id(&mut self, node: &str) -> usize {
        self.usage.node_id(node)
    }

    /// Resources held by live attempts on the node named `node`.
    pub(crate) fn usage_by_name(&self, node: &str) -> Resources {
        self.usage.usage_by_name(node)
    }

    /// Grows whenever a live attempt's resources are released (counted when its hold ends).
    pub(crate) fn releases(&self) -> u64 {
        self.usage.releases()
    }

    /// The release count when the usage of node `id` last went down (0: never, its usage
    /// has only grown since this replica started or last rebuilt its usage).
    pub(crate) fn released_at(&self, id: usize) -> u64 {
        self.usage.released_at(id)
    }

    /// Node ids whose releases started being held since the last call.
    pub(crate) fn take_opened(&mut self) -> Vec<usize> {
        self.usage.take_opened()
    }

    /// Ends the hold of node `id`'s releases, counting them now.
    pub(crate) fn end_hold(&mut self, id: usize) {
        self.usage.end_hold(id);
    }

    /// What a placer counts as used on node `id`: its live attempts, or while a release
    /// there is held, the usage before the release if that is higher.
    pub(crate) fn placement_usage(&self, id: usize) -> Resources {
        self.usage.placement_usage(id)
    }

    /// Resources held by live attempts on node `id`, held releases counted as released.
    pub(crate) fn usage_of(&self, id: usize) -> Resources {
        self.usage.usage_of(id)
    }

    /// Releases folded into an open hold so far.
    pub(crate) fn folds(&self) -> u64 {
        self.usage.folds()
    }

    /// The fold count at node `id`'s last fold (0: never).
    pub(crate) fn folded_at(&self, id: usize) -> u64 {
        self.usage.folded_at(id)
    }

    /// While a release on node `id` is held: the usage before it.
    pub(crate) fn held(&self, id: usize) -> Option<Resources> {
        self.usage.held(id)
    }

    /// Take what changed since the last call.
    pub(crate) fn take_touched(&mut self) -> BTreeSet<Touch> {
        std::mem::take(&mut self.touched)
    }

    /// Receive an op from anyone (including ourselves), applying it and any buffered
    /// successors when it is the actor's next.
    pub(crate) fn receive(&mut self, op: Op) -> Received {
        let have = self.tables.clock.get(&op.dot.actor);
        if op.dot.counter <= have {
            return Received::Duplicate;
        }
        if op.dot.counter > have + 1 {
            let actor = op.dot.actor.clone();
            let buf = self.pending.entry(actor.clone()).or_default();
            buf.insert(op.dot.counter, op);
            if buf.len() > self.limits.pending_per_actor {
                self.pending.remove(&actor);
                return Received::Overflow;
            }
            return Received::Buffered;
        }
        let actor = op.dot.actor.clone();
        self.apply_next(op);
        self.drain_pending(&actor);
        Received::Applied
    }

    fn drain_pending(&mut self, actor: &ActorId) {
        loop {
            let Some(buf) = self.pending.get_mut(actor) else {
                return;
            };
            let next = self.tables.clock.get(actor) + 1;
            // Drop anything already covered (e.g. after a state merge).
            while buf.first_key_value().is_some_and(|(c, _)| *c < next) {
                buf.pop_first();
            }
            let Some(op) = buf.remove(&next) else {
                if buf.is_empty() {
                    self.pending.remove(actor);
                }
                return;
            };
            self.apply_next(op);
        }
    }

    /// Apply the actor's next op: join, update indexes, log.
    fn apply_next(&mut self, op: Op) {
        debug_assert!(self.tables.validate_op(&op).is_ok());
        match &op.body {
            OpBody::State { id, state } => self.apply_state(id, state),
            OpBody::Assign { id, assignment } => self.apply_assignment(id, assignment),
            _ => self.apply_other(&op.body),
        }
        let dot = op.dot.clone();
        self.log(op);
        self.tables.clock.apply(dot);
    }

    /// Join a lattice element that arrived outside the op stream (a job record replayed from
    /// the shell's log at restart): tables and indexes change as for an op; the version
    /// vector does not, so the op itself still arrives (and applies as a no-op) later.
    pub(crate) fn join_local(&mut self, body: &OpBody) {
        match body {
            OpBody::State { id, state } => self.apply_state(id, state),
            OpBody::Assign { id, assignment } => self.apply_assignment(id, assignment),
            _ => self.apply_other(body),
        }
    }

    /// A placement: the usage index moves from the replaced assignment (if any) to the new
    /// one, while the attempt is live (its state is not changed by this op).
    fn apply_assignment(&mut self, id: &AttemptId, assignment: &Assignment) {
        let Some(replaced) = self.tables.join_assignment_from(id, assignment) else {
            return;
        };
        if self.tables.is_live(id) {
            let usage = &mut self.usage;
            let mut contribution = |a: &Assignment| (usage.node_id(&a.target), a.resources);
            let before = replaced.as_ref().map(&mut contribution);
            let after = Some(contribution(assignment));
            self.usage.adjust(before, after);
        }
        self.touched.insert(Touch::Attempt(id.clone()));
    }

    /// A job write, floor or purge.
    fn apply_other(&mut self, body: &OpBody) {
        if self.tables.join_body(body) {
            match body {
                OpBody::State { .. } | OpBody::Assign { .. } => {}
                OpBody::Binding { id, .. }
                | OpBody::Health { id, .. }
                | OpBody::Milestones { id, .. } => {
                    self.touched.insert(Touch::Attempt(id.clone()));
                }
                OpBody::Rollout { job, .. } => {
                    self.touched.insert(Touch::Job(job.as_str().into()));
                }
                OpBody::Job { entry, .. } => {
                    self.touched
                        .insert(Touch::Job(entry.spec.id.as_str().into()));
                }
                OpBody::Floor { slot, .. } => {
                    self.rebuild_usage();
                    self.touched.insert(Touch::Job(slot.job.clone()));
                }
                OpBody::Purge { job, .. } => {
                    self.rebuild_usage();
                    self.touched.insert(Touch::Job(job.as_str().into()));
                }
                OpBody::Node { node, .. } => {
                    self.touched.insert(Touch::Node(node.clone()));
                }
            }
        }
    }

    /// A state write: the attempt's usage is released when a live attempt with an assignment
    /// ends, and counted again when one comes back to life: states only grow, but a `Lost`
    /// attempt that its target reclaims is `Running` in a later round (a node back from a
    /// partition keeps its tasks), and that node uses their resources again. Without the
    /// second case the index said such a node was emptier than it is (a random history of
    /// `replica_buffers_out_of_order_ops` found it).
    fn apply_state(&mut self, id: &AttemptId, state: &AttemptState) {
        let Some((was_live, assignment)) = self.tables.join_state_row(id, state) else {
            return;
        };
        if was_live != state.is_live()
            && let Some(a) = assignment
        {
            let node = self.usage.node_id(&a.target);
            let resources = a.resources;
            if was_live {
                self.usage.release(node, &resources);
            } else {
                self.usage.add(node, &resources);
            }
        }
        self.touched.insert(Touch::Attempt(id.clone()));
    }

    /// Append the actor's next op to its log: the bytes it was received as, or (a local
    /// write) its encoding.
    fn log(&mut self, mut op: Op) {
        let bytes = op
            .take_encoding()
            .or_else(|| encode_exact(&op).map(Bytes::from));
        let counter = op.dot.counter;
        let log = self.logs.entry(op.dot.actor).or_default();
        if log.first + log.ops.len() as u64 != counter {
            log.ops.clear();
            log.first = counter;
        }
        let Some(bytes) = bytes else {
            // Cannot happen for our own types; a gap makes digests fall back to state.
            log.ops.clear();
            log.first = counter + 1;
            return;
        };
        log.ops.push_back(bytes);
        if log.ops.len() > self.limits.log_per_actor {
            log.ops.pop_front();
            log.first += 1;
        }
    }

    /// Recomputes usage from the rows, counting a release everywhere. Open holds stay: they
    /// record what placers still count, and the scheduler ends them on its timers.
    pub(super) fn rebuild_usage(&mut self) {
        self.usage.start_rebuild();
        for row in self.tables.attempts.values() {
            let live = row.state.as_ref().is_none_or(AttemptState::is_live);
            if let Some(a) = row.assignment.as_ref().filter(|_| live)
                && a.resources != Resources::default()
            {
                let node = self.usage.node_id(&a.target);
                self.usage.add(node, &a.resources);
            }
        }
        self.usage.end_rebuild();
    }

    /// Full-state merge (anti-entropy fallback). Logs of actors that jumped are reset, since
    /// they can no longer serve a contiguous range.
    pub(crate) fn merge_state(&mut self, other: Tables) {
        self.tables.merge(other);
        for dot in self.tables.clock.iter() {
            let log = self.logs.entry(dot.actor.clone()).or_default();
            if log.first + log.ops.len() as u64 <= dot.counter {
                log.ops.clear();
                log.first = dot.counter + 1;
            }
        }
        let actors: Vec<ActorId> = self.pending.keys().cloned().collect();
        for actor in actors {
            self.drain_pending(&actor);
        }
        self.rebuild_usage();
        self.touched.insert(Touch::Everything);
    }

    /// The ops `peer` lacks according to its version vector, oldest first per actor, or `None`
    /// when some are no longer in the logs (send the state instead) or there are more than
    /// `max`.
    pub(crate) fn missing_for(&self, peer: &VersionVector, max: usize) -> Option<Vec<Op>> {
        let mut out = Vec::new();
        // Both clocks are sorted by actor: walked side by side, not one tree search per
        // actor (a digest carries every writer's entry, N of them at N nodes).
        let mut peer_dots = peer.dots.iter().peekable();
        for dot in self.tables.clock.iter() {
            while peer_dots.next_if(|(a, _)| *a < dot.actor).is_some() {}
            let theirs = peer_dots
                .next_if(|(a, _)| *a == dot.actor)
                .map_or(0, |(_, c)| *c);
            if theirs >= dot.counter {
                continue;
            }
            let log = self.logs.get(dot.actor)?;
            if log.first > theirs + 1 || out.len() as u64 + (dot.counter - theirs) > max as u64 {
                return None;
            }
            let skip = usize::try_from(theirs + 1 - log.first).ok()?;
            for bytes in log.ops.iter().skip(skip) {
                out.push(postcard::from_bytes(bytes).ok()?);
            }
        }
        Some(out)
    }

    /// Drops the op logs of the actors other than `own` that logged no op since the previous
    /// call, and returns how many. Actors are per start, so a node's earlier starts never
    /// write again, and each kept up to `log_per_actor` ops on every replica for good (about
    /// 15 MB per busy actor, one more per agent restart). A peer that lacks ops of a dropped
    /// log gets the state instead ([`Replica::missing_for`] says `None`); an actor that
    /// writes again starts a new log at its next op.
    pub(crate) fn drop_quiet_logs(&mut self, own: &ActorId) -> usize {
        let before = self.logs.len();
        self.logs.retain(|actor, log| {
            let end = log.first + log.ops.len() as u64;
            let quiet = log.swept_end == Some(end);
            log.swept_end = Some(end);
            actor == own || !quiet
        });
        before - self.logs.len()
    }

    /// Whether `actor`'s ops are logged here.
    #[cfg(test)]
    pub(crate) fn has_log(&self, actor: &ActorId) -> bool {
        self.logs.contains_key(actor)
    }

    /// How many actors have an op log here, and how many ops they hold together.
    pub(crate) fn log_sizes(&self) -> (usize, usize) {
        let ops = self.logs.values().map(|log| log.ops.len()).sum();
        (self.logs.len(), ops)
    }

    /// Forget a tombstone (see the GC rule).
    pub(crate) fn drop_tombstone(&mut self, key: &JobKey) {
        self.tables.drop_tombstone(key);
    }

    /// Number of ops waiting for predecessors.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.values().map(BTreeMap::len).sum()
    }
}

/// `op` postcard-encoded in an allocation of exactly its size. Every replica logs every op it
/// applies: encoding into a growing `Vec` and shrinking it into a box cost several
/// reallocations per op.
fn encode_exact(op: &Op) -> Option<Box<[u8]>> {
    let mut buf = [0u8; 512];
    match postcard::to_slice(op, &mut buf) {
        Ok(bytes) => Some(Box::from(&*bytes)),
        Err(_) => postcard::to_stdvec(op).ok().map(Vec::into_boxed_slice),
    }
}
