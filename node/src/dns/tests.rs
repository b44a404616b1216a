//! Queries built with hickory-proto, answered by the real [`Handler`] and decoded back.

use std::net::Ipv4Addr;
use std::sync::Mutex;

use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Message, Query};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::zone_handler::MessageResponse;
use shoal_scheduler::{InstanceHealth, Service};

use super::*;

fn instance(job: &str, slot: u32, node: &str, ip: [u8; 4], health: InstanceHealth) -> Instance {
    Instance {
        job: job.into(),
        slot,
        attempt: 1,
        node: node.into(),
        ip: IpAddr::from(ip),
        ports: vec![
            ("http".into(), 20000 + slot as u16),
            ("admin".into(), 21000 + slot as u16),
        ],
        tags: vec!["blue".to_string()],
        health,
        version: 1,
    }
}

fn catalog(services: Vec<(&str, Vec<Instance>)>) -> Catalog {
    let mut c = Catalog {
        index: 7,
        ..Catalog::default()
    };
    for (name, instances) in services {
        c.services.insert(
            name.into(),
            Arc::new(Service {
                name: name.into(),
                index: 7,
                hash: 0,
                jobs: vec![name.into()],
                tags: vec!["blue".to_string()],
                instances,
            }),
        );
    }
    c.nodes.insert("n9".into(), IpAddr::from([10, 0, 0, 9]));
    c
}

fn web() -> Catalog {
    use InstanceHealth::*;
    catalog(vec![
        (
            "web",
            vec![
                instance("web", 0, "n1", [10, 0, 0, 1], Healthy),
                instance("web", 1, "n2", [10, 0, 0, 2], Healthy),
                instance("web", 2, "n3", [10, 0, 0, 3], Healthy),
                instance("web", 3, "n3", [10, 0, 0, 3], Unhealthy),
            ],
        ),
        (
            "sick",
            vec![instance("sick", 0, "n1", [10, 0, 0, 1], Unhealthy)],
        ),
    ])
}

/// Captures the encoded answer as hickory's UDP path would send it (at most `max` bytes).
#[derive(Clone)]
struct Capture {
    out: Arc<Mutex<Vec<u8>>>,
    max: u16,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max = response.edns().map_or(self.max, |e| e.max_payload());
        let mut buf = Vec::new();
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(max);
        let info = response.destructive_emit(&mut encoder)?;
        *self.out.lock().unwrap() = buf;
        Ok(info)
    }
}

fn ask_with(catalog: Catalog, name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new(42, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.metadata.recursion_desired = true;
    if let Some(payload) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        m.set_edns(e);
    }
    let request = Request::from_bytes(
        m.to_vec().unwrap(),
        "127.0.0.1:5353".parse().unwrap(),
        Protocol::Udp,
    )
    .unwrap();
    let (_tx, rx) = watch::channel(Arc::new(catalog));
    let handler = Handler::new(rx, 0, Arc::new(DnsCounters::default()));
    let capture = Capture {
        out: Arc::default(),
        max: 512,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(handler.handle_request::<_, TokioTime>(&request, capture.clone()));
    let bytes = capture.out.lock().unwrap().clone();
    let answer = Message::from_vec(&bytes).unwrap();
    assert_eq!(answer.metadata.id, 42);
    assert_eq!(answer.metadata.message_type, MessageType::Response);
    answer
}

fn ask(catalog: Catalog, name: &str, qtype: RecordType) -> Message {
    ask_with(catalog, name, qtype, None)
}

fn srv_of(m: &Message) -> Vec<(u16, String)> {
    let mut v: Vec<(u16, String)> = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => (s.port, s.target.to_ascii()),
            other => panic!("not SRV: {other:?}"),
        })
        .collect();
    v.sort();
    v
}

fn a_of(records: &[Record]) -> Vec<(String, Ipv4Addr)> {
    let mut v: Vec<(String, Ipv4Addr)> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((r.name.to_ascii(), a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[test]
fn srv_lists_every_healthy_instance_with_its_target_address() {
    let m = ask(web(), "web.service.shoal.", RecordType::SRV);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative && !m.metadata.recursion_available);
    assert_eq!(
        srv_of(&m),
        [
            (20000, "n1.node.shoal.".to_string()),
            (20001, "n2.node.shoal.".to_string()),
            (20002, "n3.node.shoal.".to_string()),
        ],
        "the unhealthy slot 3 is left out"
    );
    assert!(m.answers.iter().all(|r| r.ttl == 0));
    assert_eq!(
        a_of(&m.additionals),
        [
            ("n1.node.shoal.".to_string(), Ipv4Addr::new(10, 0, 0, 1)),
            ("n2.node.shoal.".to_string(), Ipv4Addr::new(10, 0, 0, 2)),
            ("n3.node.shoal.".to_string(), Ipv4Addr::new(10, 0, 0, 3)),
        ]
    );
    // Names are case-insensitive.
    let m = ask(web(), "WEB.Service.SHOAL.", RecordType::SRV);
    assert_eq!(srv_of(&m).len(), 3);
}

#[test]
fn a_answers_each_address_once_in_turn() {
    let m = ask(web(), "web.service.shoal.", RecordType::A);
    let ips: Vec<Ipv4Addr> = a_of(&m.answers).into_iter().map(|(_, ip)| ip).collect();
    assert_eq!(
        ips,
        [[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]].map(Ipv4Addr::from)
    );
    let c = web();
    let name = Name::from_ascii("web.service.shoal.").unwrap();
    let first = |turn| match &resolve(&c, &name, RecordType::A, 0, turn).answers[0].data {
        RData::A(a) => a.0,
        _ => unreachable!(),
    };
    assert_ne!(
        first(0),
        first(1),
        "answers rotate from one query to the next"
    );
}

#[test]
fn a_named_port_and_a_tag_select() {
    let m = ask(web(), "_admin._tcp.web.service.shoal.", RecordType::SRV);
    let ports: Vec<u16> = srv_of(&m).into_iter().map(|(p, _)| p).collect();
    assert_eq!(ports, [21000, 21001, 21002]);
    let m = ask(web(), "blue.web.service.shoal.", RecordType::SRV);
    assert_eq!(srv_of(&m).len(), 3);
    for name in [
        "_nope._tcp.web.service.shoal.",
        "green.web.service.shoal.",
        "a.b.c.web.service.shoal.",
    ] {
        let m = ask(web(), name, RecordType::SRV);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
}

#[test]
fn unknown_or_unhealthy_is_nxdomain_and_other_types_nodata_with_the_soa() {
    for name in ["nope.service.shoal.", "sick.service.shoal.", "x.y.shoal."] {
        let m = ask(web(), name, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1, "{name}: the SOA");
    }
    let m = ask(web(), "web.service.shoal.", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    match &m.authorities[0].data {
        RData::SOA(soa) => {
            assert_eq!(soa.serial, 7, "the catalog index");
            assert_eq!(soa.mname.to_ascii(), "ns.shoal.");
        }
        other => panic!("not an SOA: {other:?}"),
    }
    let m = ask(web(), "shoal.", RecordType::SOA);
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn names_outside_the_zone_are_refused() {
    for name in ["example.com.", "shoal.example.com.", "."] {
        let m = ask(web(), name, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(m.answers.is_empty());
    }
}

#[test]
fn a_node_name_answers_its_address() {
    let m = ask(web(), "n2.node.shoal.", RecordType::A);
    assert_eq!(
        a_of(&m.answers),
        [("n2.node.shoal.".to_string(), Ipv4Addr::new(10, 0, 0, 2))]
    );
    let m = ask(web(), "n9.node.shoal.", RecordType::A);
    assert_eq!(
        a_of(&m.answers)[0].1,
        Ipv4Addr::new(10, 0, 0, 9),
        "from the gossip address"
    );
    let m = ask(web(), "n7.node.shoal.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn an_answer_too_large_for_udp_is_truncated() {
    let many: Vec<Instance> = (0..100)
        .map(|s| {
            instance(
                "big",
                s,
                &format!("node-{s:03}"),
                [10, 1, 0, s as u8],
                InstanceHealth::Healthy,
            )
        })
        .collect();
    let big = || catalog(vec![("big", many.clone())]);
    let m = ask(big(), "big.service.shoal.", RecordType::SRV);
    assert!(m.metadata.truncation, "512 bytes without EDNS");
    assert!(m.answers.len() < 100);
    let m = ask_with(big(), "big.service.shoal.", RecordType::SRV, Some(65000));
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
}

#[test]
fn dns_flag_parses() {
    assert_eq!(parse_addr("off"), Ok(None));
    assert_eq!(
        parse_addr("127.0.0.1:0"),
        Ok(Some("127.0.0.1:0".parse().unwrap()))
    );
    let e = parse_addr("localhost").unwrap_err();
    assert!(e.contains("expected IP:PORT"), "{e}");
}
