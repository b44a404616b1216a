//! Probe round-trip times: the gossip driver times each direct SWIM probe with this host's
//! monotonic clock, and `GET /v1/metrics` exports them as `shoal_gossip_probe_rtt_seconds`.
//!
//! The membership core reports the steps of a direct probe ([`ProbeEvent`], from the vendored
//! foca's patch 6): `Started` when the ping is in its outbox, `Acked` when the probed member's
//! first direct ack was handled. foca has no clock and the core's `Millis` cannot resolve a
//! LAN round trip, so the driver notes instants itself: the start is the instant before it
//! seals and sends that outbox, the ack the instant it received the datagram (before opening
//! its seal). The time measured is what the failure detector sees: the network both ways, the
//! peer's gossip task, sealing and opening at both ends, and the time the ack waited in this
//! socket for this task. Probes that succeed only indirectly (through members asked to ping)
//! are not timed, nor are late acks (after the next probe began, a probe period later): the
//! histogram holds the direct answers within a probe period.

use std::time::Instant;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use shoal_gossip::{NodeId, ProbeEvent};

/// The histogram's buckets: 0.5 ms to about 1 s (12 buckets, doubling), for a LAN.
fn buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 12))
}

/// Round trips of acked direct probes, in seconds; shared by the driver and the API.
#[derive(Debug, Clone)]
pub struct ProbeRtt(Histogram);

impl Default for ProbeRtt {
    fn default() -> Self {
        ProbeRtt(buckets())
    }
}

impl ProbeRtt {
    /// The histogram to export (shares its figures with this one).
    #[must_use]
    pub fn histogram(&self) -> Histogram {
        self.0.clone()
    }
}

/// Pairs the start of the probe in flight with its ack (foca probes one member at a time).
#[derive(Debug, Default)]
pub struct ProbeTimer {
    in_flight: Option<(u8, NodeId, Instant)>,
    rtt: ProbeRtt,
}

impl ProbeTimer {
    /// A timer recording into `rtt`.
    #[must_use]
    pub fn new(rtt: ProbeRtt) -> Self {
        ProbeTimer {
            in_flight: None,
            rtt,
        }
    }

    /// One probe step: `sent` is when the outbox holding a started probe's ping was sent,
    /// `received` when the datagram that acked it arrived. Returns the round trip recorded.
    pub fn step(
        &mut self,
        step: ProbeEvent,
        sent: Instant,
        received: Instant,
    ) -> Option<std::time::Duration> {
        match step {
            ProbeEvent::Started { number, member } => {
                self.in_flight = Some((number, member, sent));
                None
            }
            ProbeEvent::Acked { number, member } => {
                let (started, probed, at) = self.in_flight.take()?;
                if started != number || probed != member {
                    // Not the probe in flight (its start was dropped from the core's queue).
                    return None;
                }
                let rtt = received.saturating_duration_since(at);
                self.rtt.0.observe(rtt.as_secs_f64());
                Some(rtt)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId {
            name: name.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            generation: 1,
        }
    }

    fn count(rtt: &ProbeRtt) -> String {
        let mut r = Registry::default();
        r.register("rtt", "", rtt.histogram());
        let mut out = String::new();
        encode(&mut out, &r).unwrap();
        out.lines()
            .find(|l| l.starts_with("rtt_count"))
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_start_and_its_ack_record_the_time_between_send_and_receipt() {
        let rtt = ProbeRtt::default();
        let mut timer = ProbeTimer::new(rtt.clone());
        let t0 = Instant::now();
        let start = ProbeEvent::Started {
            number: 7,
            member: node("b"),
        };
        assert_eq!(timer.step(start, t0, t0), None);
        let ack = ProbeEvent::Acked {
            number: 7,
            member: node("b"),
        };
        let later = t0 + Duration::from_micros(300);
        assert_eq!(
            timer.step(ack.clone(), t0 + Duration::from_secs(9), later),
            Some(Duration::from_micros(300))
        );
        assert_eq!(count(&rtt), "rtt_count 1");
        // The same ack again finds nothing in flight.
        assert_eq!(timer.step(ack, later, later), None);
        assert_eq!(count(&rtt), "rtt_count 1");
    }

    #[test]
    fn an_ack_of_another_probe_or_member_records_nothing() {
        let rtt = ProbeRtt::default();
        let mut timer = ProbeTimer::new(rtt.clone());
        let t0 = Instant::now();
        for (number, member) in [(8, "b"), (7, "c")] {
            let start = ProbeEvent::Started {
                number: 7,
                member: node("b"),
            };
            timer.step(start, t0, t0);
            let ack = ProbeEvent::Acked {
                number,
                member: node(member),
            };
            assert_eq!(timer.step(ack, t0, t0), None);
        }
        let orphan = ProbeEvent::Acked {
            number: 7,
            member: node("b"),
        };
        assert_eq!(timer.step(orphan, t0, t0), None);
        assert_eq!(count(&rtt), "rtt_count 0");
    }
}
