//! The member view: foca's states turned into statuses, stale suspicions expired, and foca's
//! configuration sized to the cluster.

use foca::State;

use crate::config::Config;
use crate::types::{MemberStatus, NodeId};

use super::{Indexed, MemberEvent, Membership, Record, recorded_current};

impl Membership {
    /// Reconciles the whole view with foca's membership state, emitting status events, and
    /// returns how many members it changed. The incremental updates (`resolve_changed`) keep
    /// the view current; this is the periodic safety net behind them.
    pub(super) fn refresh_view(&mut self) -> usize {
        // Identities under this node's own name are namesakes (`on_namesake`), never recorded
        // in the view, so the view has nothing to correct about them.
        let me = &self.own_ad.node;
        let changes: Vec<(NodeId, State)> = self
            .swim
            .iter_membership_state()
            .filter(|m| m.id().name != *me && !self.is_reaped(m.id()))
            .filter(|m| !recorded_current(&self.index, m.id(), m.state()))
            .map(|m| (m.id().clone(), m.state()))
            .collect();
        let n = changes.len();
        self.apply_changes(changes);
        self.resize_for(self.swim.num_members() + 1);
        n
    }

    /// Records foca's state for each changed identity, newest generation of a name last so a
    /// name's final record is its newest identity.
    pub(super) fn apply_changes(&mut self, mut changes: Vec<(NodeId, State)>) {
        changes.sort_by(|a, b| (&a.0.name, a.0.generation).cmp(&(&b.0.name, b.0.generation)));
        for (id, state) in changes {
            let status = self.status_of(&id, state);
            self.set_status(id, status);
        }
    }

    /// The status to show for an identity in foca `state`: a down member whose current ad says
    /// it left is `left`.
    pub(super) fn status_of(&self, id: &NodeId, state: State) -> MemberStatus {
        match state {
            State::Alive => MemberStatus::Alive,
            State::Suspect => MemberStatus::Suspect,
            State::Down => {
                let left = self
                    .ads
                    .lock()
                    .ads
                    .get(&id.name)
                    .is_some_and(|ad| ad.left && ad.generation == id.generation);
                if left {
                    MemberStatus::Left
                } else {
                    MemberStatus::Down
                }
            }
        }
    }

    pub(super) fn set_status(&mut self, id: NodeId, status: MemberStatus) {
        if self.is_reaped(&id) {
            return; // let go of: foca may hold it a while longer (`membership/reap.rs`)
        }
        if status == MemberStatus::Alive && !self.reaped.is_empty() {
            self.heard_alive(&id.name);
        }
        let now = self.now;
        if id.name == self.own_ad.node && id != *self.identity() {
            self.on_namesake(id, status);
            return;
        }
        if self.joining.joined_at().is_none()
            && status == MemberStatus::Alive
            && id != *self.identity()
        {
            self.joining.heard_from(now, &id);
            self.schedule_follow_ups(now);
        }
        let from = match self.records.get_mut(&id.name) {
            Some(r) if r.id.generation > id.generation => return, // an older incarnation
            Some(r) if r.id == id && r.status == status => return,
            Some(r) => {
                let from = r.status;
                r.id = id.clone();
                r.status = status;
                r.last_update = now;
                r.suspect_since = (status == MemberStatus::Suspect).then_some(now);
                Some(from)
            }
            None => {
                self.records.insert(
                    id.name.clone(),
                    Record {
                        id: id.clone(),
                        status,
                        last_update: now,
                        suspect_since: (status == MemberStatus::Suspect).then_some(now),
                    },
                );
                None
            }
        };
        self.index.insert(
            id.name.clone(),
            Indexed {
                generation: id.generation,
                addr: id.addr,
                status,
            },
        );
        self.quorum.on_status(&id.name, status, now);
        if status == MemberStatus::Suspect {
            self.suspects.insert(id.name.clone());
        } else {
            self.suspects.remove(&id.name);
        }
        match status {
            MemberStatus::Suspect => self.stats.suspect_marks += 1,
            MemberStatus::Down => self.stats.down_marks += 1,
            MemberStatus::Alive if from == Some(MemberStatus::Suspect) => {
                self.stats.suspicions_refuted += 1;
            }
            _ => {}
        }
        if status == MemberStatus::Alive
            && from != Some(MemberStatus::Alive)
            && id != *self.identity()
        {
            self.retell_forgets(id.addr);
        }
        self.events.push_back(MemberEvent::Status {
            id,
            from,
            to: status,
        });
    }

    /// Declares down the members whose suspicion no foca timer will ever end. foca drops its
    /// pending suspicion timers when it renews this node's identity (its timer token
    /// changes), which left suspects nobody would ever confirm or clear (found by the
    /// simulator: `flapping-node.toml --seed 1`). Timing a suspicion out is exactly what SWIM
    /// does; a live member refutes by rejoining as a new generation.
    ///
    /// A suspicion that began before this node's last renewal lost its timer for certain, so
    /// it gets one ordinary suspicion timeout from the renewal. Waiting the safety net's
    /// longest timeout instead kept two healthy members suspect for 17 s after a node's own
    /// cut ended, so that one more fault elsewhere cost it its majority and it stopped a
    /// service on the majority side (simulator finding 11, `fault-flapping --seed 34`). Any
    /// other suspicion should end by foca's timer; the net declares it down only once it
    /// outlived the longest timeout health can stretch it to.
    pub(super) fn expire_stale_suspects(&mut self) {
        let net = self.config.suspect_to_down_after * (2 + self.config.max_health_score)
            + self.config.probe_period * 2;
        let orphaned = self.config.suspect_to_down_after * (1 + self.health);
        let (net, orphaned) = (net.as_millis() as u64, orphaned.as_millis() as u64);
        let now = self.now;
        let renewed_at = self.renewed_at;
        let stale: Vec<NodeId> = self
            .suspects
            .iter()
            .filter_map(|name| self.records.get(name))
            .filter(|r| {
                r.suspect_since.is_some_and(|t| match renewed_at {
                    Some(renewed) if t <= renewed => now.since(renewed) > orphaned,
                    _ => now.since(t) > net,
                })
            })
            .map(|r| r.id.clone())
            .collect();
        if stale.is_empty() {
            return;
        }
        let downs: Vec<foca::Member<NodeId>> = self
            .swim
            .iter_membership_state()
            .filter(|m| m.state() == State::Suspect && stale.contains(m.id()))
            .map(|m| foca::Member::new(m.id().clone(), m.incarnation(), State::Down))
            .collect();
        for m in &downs {
            tracing::info!(member = %m.id(), "suspicion outlived every timeout; declaring down");
        }
        self.swim_call(|swim, rt| swim.apply_many(downs.into_iter(), true, rt));
    }

    /// Lifeguard-style local health awareness: timers firing late mean this node is starved,
    /// so it gives suspects longer to refute before declaring them down.
    pub(super) fn adjust_health(&mut self) {
        let before = self.health;
        if self.late_since_scan {
            self.health = (self.health + 1).min(self.config.max_health_score);
        } else {
            self.health = self.health.saturating_sub(1);
        }
        self.late_since_scan = false;
        if self.health != before {
            self.apply_foca_config();
        }
    }

    pub(super) fn resize_for(&mut self, members: usize) {
        if Config::max_transmissions(members) != Config::max_transmissions(self.sized_for) {
            self.sized_for = members;
            self.apply_foca_config();
        }
    }

    pub(super) fn apply_foca_config(&mut self) {
        let cfg = self.config.foca(self.sized_for, self.health);
        if let Err(e) = self.swim.set_config(cfg) {
            tracing::warn!(error = %e, "foca refused a config change");
        }
    }
}
