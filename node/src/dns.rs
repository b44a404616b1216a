//! DNS for service discovery (`docs/services.md`, §3): every agent answers for the zone
//! `shoal.` from its own service catalog, over UDP and TCP (`--dns`, default
//! `127.0.0.1:8600`, like Consul).
//!
//! # What it promises
//!
//! - `NAME.service.shoal.`: `A` = the healthy instances' IPs (deduplicated, rotated on every
//!   query); `SRV` = `1 1 PORT NODE.node.shoal.` per healthy instance, on its first declared
//!   port, with the targets' `A` records in ADDITIONAL.
//! - `_PORT._tcp.NAME.service.shoal.`: `SRV` on the port named `PORT`;
//!   `TAG.NAME.service.shoal.`: only instances tagged `TAG`.
//! - `NODE.node.shoal.`: `A` = the node's service IP (from its instances), else the IP of its
//!   gossip address.
//! - NXDOMAIN for an unknown name *or* one without a healthy instance (with the SOA, for
//!   negative caching); NODATA (NOERROR, SOA in AUTHORITY) for other types such as `AAAA`;
//!   REFUSED for names outside `shoal.` (no recursion); NOTIMP for other opcodes.
//! - TTL `--dns-ttl` (default 0). SOA: `shoal. ns.shoal. hostmaster.shoal. <catalog index>
//!   3600 600 86400 0`.
//! - Healthy means what [`shoal_scheduler::catalog::instance_health`] says, the same as
//!   `/v1/services?healthy=true`.
//! - A UDP answer larger than the client's EDNS payload (512 bytes without EDNS) is cut and
//!   sent with TC set (hickory's encoder does it; a test pins it), so the client asks again
//!   over TCP.
//!
//! # How to drive it
//!
//! [`bind`] both sockets while the agent binds the rest (a busy port fails the start), then
//! [`spawn`] the server with the scheduler's catalog receiver and the shutdown signal. The
//! answers come from [`resolve`], a pure function of the catalog; [`Handler`] adds the DNS
//! message plumbing (EDNS, header flags, counting).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use serde::Serialize;
use shoal_scheduler::{Catalog, Instance};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The default `--dns` address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8600";
/// How long a TCP client may stay silent before the connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(5);
/// Outgoing answers buffered per TCP connection.
const TCP_BUFFER: usize = 4096;
/// Tries at one OS-chosen port free on both UDP and TCP.
const PORT_TRIES: usize = 16;

/// `--dns` and `--dns-ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Where to answer; `None`: DNS is off (`--dns off`).
    pub addr: Option<SocketAddr>,
    /// The TTL of every answer, seconds.
    pub ttl: u32,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            addr: Some(DEFAULT_ADDR.parse().expect("a socket address")),
            ttl: 0,
        }
    }
}

/// Parses `--dns`: `off`, or `IP:PORT` (port 0: chosen by the OS, the same on UDP and TCP).
pub fn parse_addr(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("--dns {text:?}: expected IP:PORT (such as {DEFAULT_ADDR}) or `off`"))
}

/// The DNS sockets, bound on one port.
#[derive(Debug)]
pub struct DnsSockets {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

impl DnsSockets {
    /// Where they listen.
    pub fn local_addr(&self) -> SocketAddr {
        self.udp
            .local_addr()
            .expect("a bound socket has an address")
    }
}

/// Binds UDP and TCP on `addr`; with port 0, on one OS-chosen port free for both.
pub fn bind(addr: SocketAddr) -> anyhow::Result<DnsSockets> {
    let tries = if addr.port() == 0 { PORT_TRIES } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = std::net::UdpSocket::bind(addr)
            .with_context(|| format!("cannot bind the DNS address {addr} (UDP)"))?;
        let at = udp.local_addr()?;
        match std::net::TcpListener::bind(at) {
            Ok(tcp) => {
                udp.set_nonblocking(true)?;
                tcp.set_nonblocking(true)?;
                return Ok(DnsSockets { udp, tcp });
            }
            Err(e) => last = Some((at, e)),
        }
    }
    let (at, e) = last.expect("at least one try");
    Err(anyhow::Error::new(e).context(format!("cannot bind the DNS address {at} (TCP)")))
}

/// Answers counted by response code (`shoal_dns_queries_total{rcode}`), shown in
/// `/v1/agent/self`.
#[derive(Debug, Default)]
pub struct DnsCounters {
    noerror: AtomicU64,
    nxdomain: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
}

impl DnsCounters {
    fn count(&self, rcode: ResponseCode) {
        let c = match rcode {
            ResponseCode::NoError => &self.noerror,
            ResponseCode::NXDomain => &self.nxdomain,
            ResponseCode::Refused => &self.refused,
            _ => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts by rcode name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        BTreeMap::from([
            ("noerror", self.noerror.load(Ordering::Relaxed)),
            ("nxdomain", self.nxdomain.load(Ordering::Relaxed)),
            ("refused", self.refused.load(Ordering::Relaxed)),
            ("other", self.other.load(Ordering::Relaxed)),
        ])
    }
}

/// What `/v1/agent/self` says of DNS.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DnsView {
    /// Where DNS is answered (UDP and TCP).
    pub addr: SocketAddr,
    /// The TTL of every answer, seconds.
    pub ttl: u32,
    /// Answers sent, by response code.
    pub queries: BTreeMap<String, u64>,
}

/// DNS as the API shows it.
#[derive(Debug, Clone)]
pub struct DnsInfo {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its TTL.
    pub ttl: u32,
    /// Its counters.
    pub counters: Arc<DnsCounters>,
}

impl DnsInfo {
    /// The view for `/v1/agent/self`.
    pub fn view(&self) -> DnsView {
        DnsView {
            addr: self.addr,
            ttl: self.ttl,
            queries: self
                .counters
                .snapshot()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }
}

/// Serves DNS on `sockets` from `catalog` until `shutdown` turns true.
pub fn spawn(
    sockets: DnsSockets,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let udp = tokio::net::UdpSocket::from_std(sockets.udp)?;
    let tcp = tokio::net::TcpListener::from_std(sockets.tcp)?;
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, TCP_BUFFER);
    Ok(tokio::spawn(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
        if let Err(e) = server.shutdown_gracefully().await {
            tracing::warn!(error = %e, "the DNS server stopped with an error");
        }
    }))
}

/// The request handler: one catalog read per query.
#[derive(Debug)]
pub struct Handler {
    catalog: watch::Receiver<Arc<Catalog>>,
    ttl: u32,
    counters: Arc<DnsCounters>,
    /// Rotates the order of answers from one query to the next.
    turn: AtomicUsize,
}

impl Handler {
    /// A handler answering from `catalog` with `ttl`, counting into `counters`.
    pub fn new(
        catalog: watch::Receiver<Arc<Catalog>>,
        ttl: u32,
        counters: Arc<DnsCounters>,
    ) -> Self {
        Handler {
            catalog,
            ttl,
            counters,
            turn: AtomicUsize::new(0),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // EDNS: echo a payload of at least 512 bytes, as hickory's own catalog does.
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e.set_version(0);
            e
        });
        let answer = match request.queries.queries() {
            _ if request.metadata.message_type != MessageType::Query => {
                Answer::code(ResponseCode::FormErr)
            }
            _ if request.metadata.op_code != OpCode::Query => Answer::code(ResponseCode::NotImp),
            [q] => {
                let catalog = self.catalog.borrow().clone();
                let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                resolve(
                    &catalog,
                    &Name::from(q.name()),
                    q.query_type(),
                    self.ttl,
                    turn,
                )
            }
            _ => Answer::code(ResponseCode::FormErr),
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = answer.rcode != ResponseCode::Refused;
        metadata.recursion_available = false;
        metadata.response_code = answer.rcode;
        self.counters.count(answer.rcode);
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answer.answers.iter(),
            std::iter::empty(),
            answer.soa.iter(),
            answer.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a DNS answer");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: failed,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// The records of one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The response code.
    pub rcode: ResponseCode,
    /// ANSWER.
    pub answers: Vec<Record>,
    /// The SOA in AUTHORITY (NXDOMAIN and NODATA).
    pub soa: Vec<Record>,
    /// ADDITIONAL (the SRV targets' addresses).
    pub additionals: Vec<Record>,
}

impl Answer {
    fn code(rcode: ResponseCode) -> Self {
        Answer {
            rcode,
            answers: Vec::new(),
            soa: Vec::new(),
            additionals: Vec::new(),
        }
    }

    fn negative(rcode: ResponseCode, catalog: &Catalog, ttl: u32) -> Self {
        Answer {
            soa: vec![soa(catalog, ttl)],
            ..Answer::code(rcode)
        }
    }
}

/// What the query for `name` (type `qtype`) gets from `catalog`; `turn` rotates the order of
/// the answers.
pub fn resolve(catalog: &Catalog, name: &Name, qtype: RecordType, ttl: u32, turn: usize) -> Answer {
    let labels: Vec<String> = name
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    let Some((zone, rest)) = labels.split_last() else {
        return Answer::code(ResponseCode::Refused);
    };
    if zone != "shoal" {
        return Answer::code(ResponseCode::Refused);
    }
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let nodata = || Answer::negative(ResponseCode::NoError, catalog, ttl);
    let nxdomain = || Answer::negative(ResponseCode::NXDomain, catalog, ttl);
    match rest.as_slice() {
        [] if qtype == RecordType::SOA => Answer {
            answers: vec![soa(catalog, ttl)],
            ..Answer::code(ResponseCode::NoError)
        },
        [] | ["service"] | ["node"] => nodata(),
        [node, "node"] => match node_ip(catalog, node) {
            None => nxdomain(),
            Some(IpAddr::V4(ip)) if qtype == RecordType::A => Answer {
                answers: vec![Record::from_rdata(name.clone(), ttl, RData::A(A(ip)))],
                ..Answer::code(ResponseCode::NoError)
            },
            Some(_) => nodata(),
        },
        [query @ .., service, "service"] => {
            let Some(query) = ServiceQuery::parse(query) else {
                return nxdomain();
            };
            let instances = healthy_instances(catalog, service, &query);
            if instances.is_empty() {
                return nxdomain();
            }
            match qtype {
                RecordType::A => a_records(name, &instances, ttl, turn),
                RecordType::SRV => srv_records(name, &instances, ttl, turn),
                _ => nodata(),
            }
        }
        _ => nxdomain(),
    }
}

/// The part of a service name before `NAME.service.shoal.`.
struct ServiceQuery<'a> {
    tag: Option<&'a str>,
    port: Option<&'a str>,
}

impl<'a> ServiceQuery<'a> {
    fn parse(labels: &[&'a str]) -> Option<Self> {
        match labels {
            [] => Some(ServiceQuery {
                tag: None,
                port: None,
            }),
            [port, "_tcp"] => Some(ServiceQuery {
                tag: None,
                port: Some(port.strip_prefix('_')?),
            }),
            [tag] if !tag.starts_with('_') => Some(ServiceQuery {
                tag: Some(tag),
                port: None,
            }),
            _ => None,
        }
    }
}

/// The healthy instances the query selects, each with the port it answers with.
fn healthy_instances<'c>(
    catalog: &'c Catalog,
    service: &str,
    query: &ServiceQuery<'_>,
) -> Vec<(&'c Instance, u16)> {
    let Some(svc) = catalog.service(service) else {
        return Vec::new();
    };
    svc.healthy()
        .filter(|i| query.tag.is_none_or(|t| i.tags.iter().any(|x| x == t)))
        .filter_map(|i| {
            let port = match query.port {
                Some(p) => i.ports.iter().find(|(n, _)| n.as_str() == p)?.1,
                None => i.ports.first()?.1,
            };
            Some((i, port))
        })
        .collect()
}

fn rotated<T>(mut v: Vec<T>, turn: usize) -> Vec<T> {
    if !v.is_empty() {
        let by = turn % v.len();
        v.rotate_left(by);
    }
    v
}

fn a_records(name: &Name, instances: &[(&Instance, u16)], ttl: u32, turn: usize) -> Answer {
    let mut ips: Vec<std::net::Ipv4Addr> = instances
        .iter()
        .filter_map(|(i, _)| match i.ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
        .collect();
    ips.sort_unstable();
    ips.dedup();
    let answers = rotated(ips, turn)
        .into_iter()
        .map(|ip| Record::from_rdata(name.clone(), ttl, RData::A(A(ip))))
        .collect();
    Answer {
        answers,
        ..Answer::code(ResponseCode::NoError)
    }
}

fn srv_records(name: &Name, instances: &[(&Instance, u16)], ttl: u32, turn: usize) -> Answer {
    let mut answers = Vec::new();
    let mut targets: BTreeMap<Name, IpAddr> = BTreeMap::new();
    for (i, port) in rotated(instances.to_vec(), turn) {
        let Ok(target) = Name::from_ascii(format!("{}.node.shoal.", i.node)) else {
            tracing::debug!(node = %i.node, "a node name that is no DNS label: left out of SRV");
            continue;
        };
        let srv = SRV::new(1, 1, port, target.clone());
        answers.push(Record::from_rdata(name.clone(), ttl, RData::SRV(srv)));
        targets.insert(target, i.ip);
    }
    let additionals = targets
        .into_iter()
        .filter_map(|(target, ip)| match ip {
            IpAddr::V4(ip) => Some(Record::from_rdata(target, ttl, RData::A(A(ip)))),
            IpAddr::V6(_) => None,
        })
        .collect();
    Answer {
        answers,
        additionals,
        ..Answer::code(ResponseCode::NoError)
    }
}

/// A node's address: the service IP its instances are reached at, else its gossip IP.
fn node_ip(catalog: &Catalog, node: &str) -> Option<IpAddr> {
    catalog
        .services
        .values()
        .flat_map(|s| &s.instances)
        .find(|i| i.node == node)
        .map(|i| i.ip)
        .or_else(|| catalog.nodes.get(node).copied())
}

fn soa(catalog: &Catalog, ttl: u32) -> Record {
    let name = |s: &str| Name::from_ascii(s).expect("a valid constant name");
    let serial = (catalog.index & u64::from(u32::MAX)) as u32;
    let soa = SOA::new(
        name("ns.shoal."),
        name("hostmaster.shoal."),
        serial,
        3600,
        600,
        86400,
        0,
    );
    Record::from_rdata(name("shoal."), ttl, RData::SOA(soa))
}

#[cfg(test)]
mod tests;
