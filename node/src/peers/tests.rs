//! Peer transport tests: real QUIC endpoints on 127.0.0.1.

use super::*;
use crate::keys::ClusterKey;
use crate::tls::TlsIdentity;

const DEADLINE: Duration = Duration::from_secs(20);

fn node(key: &ClusterKey, name: &str) -> (quinn::Endpoint, quinn::ClientConfig) {
    let id = TlsIdentity::new(key, name).unwrap();
    let endpoint = tls::endpoint(&id, "127.0.0.1:0".parse().unwrap()).unwrap();
    (endpoint, id.client_config())
}

fn start(
    node: (quinn::Endpoint, quinn::ClientConfig),
    dir: Directory,
    config: PeersConfig,
    stop: watch::Receiver<bool>,
) -> (Peers, PeerInbound) {
    Peers::start(node.0, node.1, dir, config, stop)
}

/// Nodes a and b under one key, where a knows b's address; the directory and stop senders
/// live as long as this does.
struct AToB {
    pa: Peers,
    pb: Peers,
    inb: PeerInbound,
    _a_inbound: PeerInbound,
    _dir: watch::Sender<BTreeMap<String, SocketAddr>>,
    _stop: watch::Sender<bool>,
}

fn a_to_b(config_a: PeersConfig, config_b: PeersConfig) -> AToB {
    let key = ClusterKey::generate();
    let (a, b) = (node(&key, "a"), node(&key, "b"));
    let dir = BTreeMap::from([("b".to_string(), b.0.local_addr().unwrap())]);
    let (dir_tx, dir_rx) = watch::channel(dir);
    let (stop, stop_rx) = watch::channel(false);
    let (pa, ina) = start(a, dir_rx.clone(), config_a, stop_rx.clone());
    let (pb, inb) = start(b, dir_rx, config_b, stop_rx);
    AToB {
        pa,
        pb,
        inb,
        _a_inbound: ina,
        _dir: dir_tx,
        _stop: stop,
    }
}

async fn next(inbound: &mut mpsc::Receiver<Inbound>) -> Inbound {
    tokio::time::timeout(DEADLINE, inbound.recv())
        .await
        .expect("a frame within the deadline")
        .expect("the channel is open")
}

async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn frames_arrive_in_order_and_name_their_sender() {
    let key = ClusterKey::generate();
    let (a, b) = (node(&key, "a"), node(&key, "b"));
    let dir = BTreeMap::from([
        ("a".to_string(), a.0.local_addr().unwrap()),
        ("b".to_string(), b.0.local_addr().unwrap()),
    ]);
    let (_dir_tx, dir_rx) = watch::channel(dir);
    let (_stop, stop_rx) = watch::channel(false);
    let (pa, _ina) = start(a, dir_rx.clone(), PeersConfig::default(), stop_rx.clone());
    let (_pb, mut inb) = start(b, dir_rx, PeersConfig::default(), stop_rx);
    for i in 0..500u32 {
        assert!(pa.send("b", i.to_be_bytes().to_vec()));
        if i % 100 == 0 {
            assert!(pa.send_control("b", vec![0xc0, i as u8]));
        }
    }
    for i in 0..500u32 {
        let got = next(&mut inb.scheduler).await;
        assert_eq!(got.from, "a");
        assert_eq!(&got.payload[..], i.to_be_bytes());
    }
    for i in (0..500u32).step_by(100) {
        let got = next(&mut inb.control).await;
        assert_eq!(
            (got.from.as_str(), &got.payload[..]),
            ("a", &[0xc0, i as u8][..])
        );
    }
}

/// With a write to the peer less than `coalesce` ago, frames wait for the end of that window
/// and then leave together, whole and in order; a frame to a peer written to longer ago than
/// that leaves at once. The window is long here so the two cases cannot be mistaken for
/// each other on a loaded machine.
#[tokio::test]
async fn a_burst_waits_for_the_window_and_an_idle_peer_does_not() {
    const WINDOW: Duration = Duration::from_secs(2);
    let config = PeersConfig {
        coalesce: WINDOW,
        ..PeersConfig::default()
    };
    let mut ab = a_to_b(config, PeersConfig::default());
    assert!(ab.pa.send("b", vec![0]));
    assert_eq!(&next(&mut ab.inb.scheduler).await.payload[..], [0]);
    // Written just now: the next ones wait for the window's end.
    let sent = tokio::time::Instant::now();
    for i in 1..=100u8 {
        assert!(ab.pa.send("b", vec![i]));
    }
    assert_eq!(&next(&mut ab.inb.scheduler).await.payload[..], [1]);
    let waited = sent.elapsed();
    assert!(
        waited >= WINDOW / 2,
        "a frame right after a write left after {waited:?}, within the {WINDOW:?} window"
    );
    for i in 2..=100u8 {
        assert_eq!(&next(&mut ab.inb.scheduler).await.payload[..], [i]);
    }
    // Idle for longer than the window: the next frame does not wait.
    tokio::time::sleep(WINDOW + WINDOW / 2).await;
    let sent = tokio::time::Instant::now();
    assert!(ab.pa.send("b", vec![101]));
    assert_eq!(&next(&mut ab.inb.scheduler).await.payload[..], [101]);
    let took = sent.elapsed();
    assert!(
        took < WINDOW * 3 / 4,
        "a frame to an idle peer took {took:?}: it waited for a window"
    );
}

/// Frames [`PeersConfig::urgent`] picks: here those whose body is `[255]`.
fn urgent_if_255(body: &[u8]) -> bool {
    body == [255]
}

#[tokio::test]
async fn an_urgent_frame_overtakes_the_frames_queued_before_it() {
    const WINDOW: Duration = Duration::from_secs(2);
    let config = PeersConfig {
        coalesce: WINDOW,
        urgent: urgent_if_255,
        ..PeersConfig::default()
    };
    // b does not pick urgent frames out: it shows the order they came in.
    let mut ab = a_to_b(config, PeersConfig::default());
    assert!(ab.pa.send("b", vec![0]));
    assert_eq!(&next(&mut ab.inb.scheduler).await.payload[..], [0]);
    // Written just now: these wait for the window's end, and the urgent one goes first.
    for i in 1..=100u8 {
        assert!(ab.pa.send("b", vec![i]));
    }
    // Most likely the sender has taken them into its batch by now and waits for the window
    // (the case under test); if it has not, it takes the urgent frame first all the same.
    tokio::time::sleep(WINDOW / 4).await;
    assert!(ab.pa.send("b", vec![255]));
    assert_eq!(&next(&mut ab.inb.scheduler).await.payload[..], [255]);
    for i in 1..=100u8 {
        assert_eq!(&next(&mut ab.inb.scheduler).await.payload[..], [i]);
    }
}

#[tokio::test]
async fn an_urgent_frame_is_handed_over_ahead_of_unconsumed_ones() {
    let config = PeersConfig {
        urgent: urgent_if_255,
        ..PeersConfig::default()
    };
    // a sends in order; b consumes nothing of its scheduler queue until the urgent frame
    // has come through its own.
    let mut ab = a_to_b(PeersConfig::default(), config);
    for i in 1..=100u8 {
        assert!(ab.pa.send("b", vec![i]));
    }
    assert!(ab.pa.send("b", vec![255]));
    let urgent = next(&mut ab.inb.urgent).await;
    assert_eq!(
        (&urgent.payload[..], urgent.from.as_str()),
        (&[255][..], "a")
    );
    for i in 1..=100u8 {
        assert_eq!(&next(&mut ab.inb.scheduler).await.payload[..], [i]);
    }
    assert!(ab.inb.urgent.try_recv().is_err(), "one urgent frame, once");
}

#[tokio::test]
async fn a_node_with_another_key_cannot_deliver() {
    let (k1, k2) = (ClusterKey::generate(), ClusterKey::generate());
    let (a, b) = (node(&k2, "a"), node(&k1, "b"));
    let dir = BTreeMap::from([("b".to_string(), b.0.local_addr().unwrap())]);
    let (_dir_tx, dir_rx) = watch::channel(dir);
    let (_stop, stop_rx) = watch::channel(false);
    let (pa, _ina) = start(a, dir_rx.clone(), PeersConfig::default(), stop_rx.clone());
    let (_pb, mut inb) = start(b, dir_rx, PeersConfig::default(), stop_rx);
    pa.send("b", b"hello".to_vec());
    let got = tokio::time::timeout(Duration::from_secs(2), inb.scheduler.recv()).await;
    assert!(got.is_err(), "a foreign node delivered a frame: {got:?}");
}

/// A peer that sends faster than we consume is cut off once its unconsumed bytes pass
/// the limit; after we catch up it reconnects and is heard again.
#[tokio::test]
async fn a_peer_over_its_inbound_byte_limit_is_cut_off_and_can_come_back() {
    let small = PeersConfig {
        max_frame_bytes: 4096,
        inbound_bytes_per_peer: 64 * 1024,
        ..PeersConfig::default()
    };
    let mut ab = a_to_b(PeersConfig::default(), small);
    // 32 frames of 4 KiB = 128 KiB, nobody consuming on b: b must cut a off.
    for i in 0..32u8 {
        assert!(ab.pa.send("b", vec![i; 4096]));
    }
    until("b cut a off", || {
        ab.pb.counters.cut_off.load(Ordering::Relaxed) == 1
    })
    .await;
    // What b accepted stayed within the limit.
    let mut held = Vec::new();
    while let Ok(frame) = ab.inb.scheduler.try_recv() {
        held.push(frame);
    }
    let held_bytes: usize = held.iter().map(|f| f.payload.len()).sum();
    assert!(held_bytes <= 64 * 1024, "{held_bytes} bytes held");
    assert!(held.iter().all(|f| f.from == "a"));
    drop(held); // consumed: a's budget is refunded
    // a notices the closed connection, reconnects, and is heard again.
    let mut marker_seen = false;
    let end = tokio::time::Instant::now() + DEADLINE;
    while !marker_seen {
        assert!(tokio::time::Instant::now() < end, "a was never heard again");
        ab.pa.send("b", b"again".to_vec());
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(frame) = ab.inb.scheduler.try_recv() {
            marker_seen |= frame.payload == b"again"[..];
        }
    }
}

/// A peer we cannot write to fast enough (here: not reachable at all) is cut off once its
/// queue passes the byte limit; the next frame starts a new queue that delivers once the
/// peer is reachable.
#[tokio::test]
async fn a_peer_over_its_send_queue_byte_limit_is_cut_off_and_can_come_back() {
    let key = ClusterKey::generate();
    let (a, b) = (node(&key, "a"), node(&key, "b"));
    let b_addr = b.0.local_addr().unwrap();
    let (dir_tx, dir_rx) = watch::channel(BTreeMap::new());
    let (_stop, stop_rx) = watch::channel(false);
    let small = PeersConfig {
        max_frame_bytes: 4096,
        queue_bytes_per_peer: 16 * 1024,
        ..PeersConfig::default()
    };
    let (pa, _ina) = start(a, dir_rx.clone(), small, stop_rx.clone());
    let (_pb, mut inb) = start(b, dir_rx, PeersConfig::default(), stop_rx);
    // b's address is unknown yet: frames pile up in a's queue.
    for i in 0..4u8 {
        assert!(pa.send("b", vec![i; 4096]), "frame {i} fits");
    }
    assert!(
        !pa.send("b", vec![4; 4096]),
        "the fifth 4 KiB frame passes 16 KiB"
    );
    assert_eq!(pa.counters.cut_off.load(Ordering::Relaxed), 1);
    // b becomes reachable; the next frame opens a new queue and arrives; the discarded
    // frames never do.
    dir_tx.send_replace(BTreeMap::from([("b".to_string(), b_addr)]));
    assert!(pa.send("b", b"fresh".to_vec()));
    assert_eq!(next(&mut inb.scheduler).await.payload, b"fresh"[..]);
}

/// After a key leaves the ring, connections authenticated under it are closed, both the
/// ones we accepted and the ones we dialed.
#[tokio::test]
async fn connections_under_a_removed_key_are_closed() {
    let (old, new) = (ClusterKey::generate(), ClusterKey::generate());
    let (a, b) = (node(&old, "a"), node(&old, "b"));
    let dir = BTreeMap::from([
        ("a".to_string(), a.0.local_addr().unwrap()),
        ("b".to_string(), b.0.local_addr().unwrap()),
    ]);
    let (_dir_tx, dir_rx) = watch::channel(dir);
    let (_stop, stop_rx) = watch::channel(false);
    let (pa, mut ina) = start(a, dir_rx.clone(), PeersConfig::default(), stop_rx.clone());
    let (pb, mut inb) = start(b, dir_rx, PeersConfig::default(), stop_rx);
    assert!(pa.send("b", b"a to b".to_vec()) && pb.send("a", b"b to a".to_vec()));
    assert_eq!(next(&mut inb.scheduler).await.payload, b"a to b"[..]);
    assert_eq!(next(&mut ina.scheduler).await.payload, b"b to a"[..]);
    let config = tls::QuicConfig::default();
    let mut ring = crate::keys::Keyring::new(old.clone());
    ring.install(new.clone()).unwrap();
    let still = TlsIdentity::from_ring(&ring, "b", config).unwrap();
    assert_eq!(pb.close_untrusted(&still), 0, "both keys are still trusted");
    let new_only = TlsIdentity::from_ring(&crate::keys::Keyring::new(new), "b", config).unwrap();
    // b accepted a's connection and dialed its own to a: both were under the old key.
    assert_eq!(pb.close_untrusted(&new_only), 2);
    assert_eq!(
        pb.close_untrusted(&new_only),
        0,
        "closed connections are forgotten"
    );
}
