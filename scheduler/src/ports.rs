//! Host ports at admission (`docs/services.md`, §1): a job's static ports are checked against
//! what this node's tasks hold, its reserved ports and the host's listening ports; dynamic ones
//! are drawn from the node's range. Pure: the target's ledger and RNG come in as arguments.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use crate::hash::Rng;
use crate::ids::{AttemptId, Name};
use crate::spec::PortSpec;

/// Random draws before a linear scan (Nomad's `maxRandPortAttempts`).
const RANDOM_DRAWS: u32 = 20;

/// What the node's ports look like to one admission.
pub(crate) struct PortState<'a> {
    /// This node's name, for the reasons.
    pub(crate) node: &'a str,
    /// Port → the local task holding it (admitted and not known dead, killed ones included).
    pub(crate) held: BTreeMap<u16, &'a AttemptId>,
    /// Never handed out.
    pub(crate) reserved: &'a BTreeSet<u16>,
    /// Listening on the host, outside any task.
    pub(crate) host: &'a BTreeSet<u16>,
    /// Where dynamic ports come from.
    pub(crate) range: RangeInclusive<u16>,
}

/// The outcome of picking an attempt's ports.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Picked {
    /// Every port, in the job's order.
    Bound(Vec<(Name, u16)>),
    /// A static port is held by another attempt of the same slot, which is superseded and
    /// about to be killed: wait for it to exit.
    Wait,
    /// A port cannot be had here; why.
    Busy(String),
}

impl PortState<'_> {
    fn free(&self, p: u16, chosen: &[(Name, u16)]) -> bool {
        !self.held.contains_key(&p)
            && !self.reserved.contains(&p)
            && !self.host.contains(&p)
            && !chosen.iter().any(|(_, q)| *q == p)
    }

    /// Picks the ports of attempt `id` of a job declaring `ports`.
    pub(crate) fn pick(&self, id: &AttemptId, ports: &[PortSpec], rng: &mut Rng) -> Picked {
        let node = self.node;
        let mut chosen: Vec<(Name, u16)> = Vec::with_capacity(ports.len());
        let mut wait = false;
        for p in ports {
            let Some(s) = p.static_port.and_then(|s| u16::try_from(s).ok()) else {
                continue;
            };
            if self.reserved.contains(&s) {
                return Picked::Busy(format!("{node}: port {s} is reserved"));
            }
            if let Some(holder) = self.held.get(&s) {
                if holder.slot_key() == id.slot_key() && *holder != id {
                    wait = true;
                } else {
                    return Picked::Busy(format!(
                        "{node}: port {s} is held by job {} slot {}",
                        holder.job, holder.slot
                    ));
                }
            } else if self.host.contains(&s) {
                return Picked::Busy(format!(
                    "{node}: port {s} is taken by a process Shoal does not run"
                ));
            }
            chosen.push((p.name.as_str().into(), s));
        }
        if wait {
            return Picked::Wait;
        }
        let (lo, hi) = (*self.range.start(), *self.range.end());
        let len = u64::from(hi.saturating_sub(lo)) + 1;
        for p in ports.iter().filter(|p| p.static_port.is_none()) {
            let draw =
                |rng: &mut Rng| lo.saturating_add(u16::try_from(rng.below(len)).unwrap_or(0));
            let mut found = None;
            if lo <= hi {
                for _ in 0..RANDOM_DRAWS {
                    let c = draw(rng);
                    if self.free(c, &chosen) {
                        found = Some(c);
                        break;
                    }
                }
                if found.is_none() {
                    let start = draw(rng);
                    found = (start..=hi)
                        .chain(lo..start)
                        .find(|c| self.free(*c, &chosen));
                }
            }
            match found {
                Some(c) => chosen.push((p.name.as_str().into(), c)),
                None => return Picked::Busy(format!("{node} has no free port in {lo}-{hi}")),
            }
        }
        // In the job's order.
        let bound = ports
            .iter()
            .filter_map(|p| chosen.iter().find(|(n, _)| n.as_str() == p.name).cloned())
            .collect();
        Picked::Bound(bound)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, proptest};

    use super::*;

    fn id(job: &str, slot: u32, attempt: u32) -> AttemptId {
        AttemptId {
            job: job.into(),
            incarnation: 1,
            slot,
            attempt,
            placer: "n1".into(),
        }
    }

    fn port(name: &str, s: Option<u32>) -> PortSpec {
        PortSpec {
            name: name.into(),
            static_port: s,
        }
    }

    #[test]
    fn static_collisions_are_refused_with_their_reason() {
        let (reserved, host) = (BTreeSet::from([22]), BTreeSet::from([5432]));
        let api = id("api", 2, 1);
        let state = PortState {
            node: "n1",
            held: BTreeMap::from([(8080, &api)]),
            reserved: &reserved,
            host: &host,
            range: 20000..=20010,
        };
        let mut rng = Rng::new(1);
        let web = id("web", 0, 1);
        let pick = |ports: &[PortSpec], rng: &mut Rng| state.pick(&web, ports, rng);
        assert_eq!(
            pick(&[port("http", Some(8080))], &mut rng),
            Picked::Busy("n1: port 8080 is held by job api slot 2".into())
        );
        assert_eq!(
            pick(&[port("ssh", Some(22))], &mut rng),
            Picked::Busy("n1: port 22 is reserved".into())
        );
        assert_eq!(
            pick(&[port("db", Some(5432))], &mut rng),
            Picked::Busy("n1: port 5432 is taken by a process Shoal does not run".into())
        );
        // The slot's own superseded attempt: wait for it to exit.
        let next = id("api", 2, 2);
        assert_eq!(
            state.pick(&next, &[port("http", Some(8080))], &mut rng),
            Picked::Wait
        );
        // Static and dynamic together, in the job's order, never the same port twice.
        let Picked::Bound(b) = pick(
            &[port("a", None), port("b", Some(20005)), port("c", None)],
            &mut rng,
        ) else {
            panic!("fits")
        };
        assert_eq!(
            b.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(b[1].1, 20005);
        assert!(b[0].1 != b[2].1 && b[0].1 != 20005 && b[2].1 != 20005);
        assert!((20000..=20010).contains(&b[0].1) && (20000..=20010).contains(&b[2].1));
    }

    #[test]
    fn reserved_ports_are_never_picked_as_dynamic_ones() {
        let reserved = BTreeSet::from([20000, 20001]);
        let none = BTreeSet::new();
        let state = PortState {
            node: "n1",
            held: BTreeMap::new(),
            reserved: &reserved,
            host: &none,
            range: 20000..=20002,
        };
        for seed in 0..20 {
            let Picked::Bound(b) =
                state.pick(&id("web", 0, 1), &[port("http", None)], &mut Rng::new(seed))
            else {
                panic!("20002 is free")
            };
            assert_eq!(b[0].1, 20002, "seed {seed}");
        }
        assert_eq!(
            state.pick(
                &id("web", 0, 1),
                &[port("a", None), port("b", None)],
                &mut Rng::new(1)
            ),
            Picked::Busy("n1 has no free port in 20000-20002".into())
        );
    }

    #[test]
    fn a_full_range_says_so() {
        let none = BTreeSet::new();
        let holders: Vec<AttemptId> = (0..3).map(|s| id("x", s, 1)).collect();
        let state = PortState {
            node: "n2",
            held: (0..3).map(|i| (30000 + i as u16, &holders[i])).collect(),
            reserved: &none,
            host: &none,
            range: 30000..=30002,
        };
        assert_eq!(
            state.pick(&id("web", 0, 1), &[port("http", None)], &mut Rng::new(3)),
            Picked::Busy("n2 has no free port in 30000-30002".into())
        );
    }

    proptest! {
        /// Admitting tasks one after another in any order, each with some ports, on a small
        /// range: no port is ever handed out twice, and the range is used to the last port
        /// before a refusal.
        #[test]
        fn ports_are_unique_on_a_node(
            wants in prop::collection::vec(1usize..4, 1..30),
            seed in any::<u64>(),
        ) {
            let none = BTreeSet::new();
            let mut rng = Rng::new(seed);
            let ids: Vec<AttemptId> = (0..wants.len() as u32).map(|s| id("j", s, 1)).collect();
            let mut held: BTreeMap<u16, &AttemptId> = BTreeMap::new();
            for (i, n) in wants.iter().enumerate() {
                let ports: Vec<PortSpec> = (0..*n).map(|k| port(&format!("p{k}"), None)).collect();
                let state = PortState {
                    node: "n1",
                    held: held.clone(),
                    reserved: &none,
                    host: &none,
                    range: 40000..=40019,
                };
                match state.pick(&ids[i], &ports, &mut rng) {
                    Picked::Bound(b) => {
                        prop_assert_eq!(b.len(), *n);
                        for (_, p) in b {
                            prop_assert!((40000..=40019).contains(&p));
                            prop_assert!(held.insert(p, &ids[i]).is_none(), "port {} twice", p);
                        }
                    }
                    Picked::Busy(why) => {
                        prop_assert!(held.len() + n > 20, "refused with room: {}", why);
                    }
                    Picked::Wait => prop_assert!(false, "no static port"),
                }
            }
        }
    }
}
