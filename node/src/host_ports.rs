//! Task ports on this host (`docs/services.md`, §1): the agent's flags (`--port-range`,
//! `--reserved-ports`, `--service-addr`) and the host's listening ports, read from
//! `/proc/net/{tcp,tcp6,udp,udp6}` every few seconds for the scheduler's admission.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use tokio::sync::watch;

use crate::sched_driver::SchedHandle;

/// How often the host's listening ports are read.
pub const SCAN_EVERY: Duration = Duration::from_secs(5);

/// The ports an agent hands to tasks and where they are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSettings {
    /// Dynamic ports come from here (`--port-range`, default 20000-32000).
    pub range: RangeInclusive<u16>,
    /// Never handed out (`--reserved-ports`); the agent adds its own ports.
    pub reserved: BTreeSet<u16>,
    /// The IP tasks' ports are reached at (`--service-addr`); `None`: the gossip IP.
    pub service_ip: Option<IpAddr>,
}

impl Default for PortSettings {
    fn default() -> Self {
        Self {
            range: shoal_scheduler::DEFAULT_PORT_RANGE,
            reserved: BTreeSet::new(),
            service_ip: None,
        }
    }
}

/// `20000-32000` → `20000..=32000` (a single port is a range of one).
pub fn parse_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{p}` is not a port (1-65535)"))
    };
    let (lo, hi) = (port(a)?, port(b)?);
    if lo > hi {
        return Err(format!("`{s}`: the range is empty ({lo} > {hi})"));
    }
    Ok(lo..=hi)
}

/// `22,8500-8600` → every port listed.
pub fn parse_list(s: &str) -> Result<BTreeSet<u16>, String> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        out.extend(parse_range(part)?);
    }
    Ok(out)
}

/// The local ports of listening TCP sockets and bound UDP sockets in the text of one
/// `/proc/net/{tcp,tcp6,udp,udp6}` file.
#[must_use]
pub fn listening_ports(proc_net: &str, udp: bool) -> BTreeSet<u16> {
    const TCP_LISTEN: &str = "0A";
    proc_net
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if !udp && state != TCP_LISTEN {
                return None;
            }
            let (_, port) = local.rsplit_once(':')?;
            u16::from_str_radix(port, 16).ok().filter(|p| *p > 0)
        })
        .collect()
}

/// Every port listening on this host: listening TCP and bound UDP sockets, from the kernel's
/// socket diagnostics (netlink, [`netlink::scan`]), or from `/proc/net` where netlink is
/// refused (empty where neither can be read).
#[must_use]
pub fn scan() -> BTreeSet<u16> {
    match netlink::scan() {
        Ok(ports) => ports,
        Err(e) => {
            tracing::debug!(error = %e, "sock_diag refused: reading /proc/net instead");
            scan_proc()
        }
    }
}

/// [`scan`] from `/proc/net/{tcp,tcp6,udp,udp6}`. Reading `/proc/net/tcp` walks the kernel's
/// whole established-connection hash table, however few sockets listen: every 5 s that was
/// 37 % of an idle agent's CPU (`established_get_first`, perf at `2b35231`).
#[must_use]
pub fn scan_proc() -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for (file, udp) in [
        ("tcp", false),
        ("tcp6", false),
        ("udp", true),
        ("udp6", true),
    ] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/net/{file}")) {
            out.extend(listening_ports(&text, udp));
        }
    }
    out
}

/// The kernel's socket diagnostics over netlink (`NETLINK_SOCK_DIAG`, what `ss -ltun` uses).
/// A dump asked for listening TCP sockets only walks the listening table, never the
/// established one.
mod netlink {
    use std::collections::BTreeSet;
    use std::io;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
        socket,
    };

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const NLMSG_HDRLEN: usize = 16;
    const AF_INET: u8 = 2;
    const AF_INET6: u8 = 10;
    const IPPROTO_TCP: u8 = 6;
    const IPPROTO_UDP: u8 = 17;
    const TCP_LISTEN: u32 = 10;
    /// `inet_diag_req_v2`: family, protocol, ext, pad, states (u32), `inet_diag_sockid` (48).
    const REQ_LEN: usize = 56;
    /// Enough for any dump on a host; a dump that does not end within it is refused.
    const MAX_DATAGRAMS: usize = 100_000;

    /// Listening TCP and bound UDP ports, IPv4 and IPv6.
    pub(super) fn scan() -> io::Result<BTreeSet<u16>> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )?;
        let mut out = BTreeSet::new();
        let mut buf = vec![0u8; 32 * 1024];
        for (seq, (family, protocol, states)) in [
            (AF_INET, IPPROTO_TCP, 1 << TCP_LISTEN),
            (AF_INET6, IPPROTO_TCP, 1 << TCP_LISTEN),
            (AF_INET, IPPROTO_UDP, u32::MAX),
            (AF_INET6, IPPROTO_UDP, u32::MAX),
        ]
        .into_iter()
        .enumerate()
        {
            let seq = u32::try_from(seq).unwrap_or(0) + 1;
            let req = request(seq, family, protocol, states);
            sendto(
                fd.as_raw_fd(),
                &req,
                &NetlinkAddr::new(0, 0),
                MsgFlags::empty(),
            )?;
            let mut done = false;
            for _ in 0..MAX_DATAGRAMS {
                let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
                if parse(&buf[..n], seq, &mut out)? {
                    done = true;
                    break;
                }
            }
            if !done {
                return Err(io::Error::other("sock_diag dump did not end"));
            }
        }
        Ok(out)
    }

    /// A dump request: `nlmsghdr` + `inet_diag_req_v2` for one family, protocol and state set.
    pub(super) fn request(seq: u32, family: u8, protocol: u8, states: u32) -> Vec<u8> {
        let len = NLMSG_HDRLEN + REQ_LEN;
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[family, protocol, 0, 0]);
        m.extend_from_slice(&states.to_ne_bytes());
        m.resize(len, 0);
        m
    }

    /// Adds the local ports of one datagram's `inet_diag_msg`s to `out`; returns whether the
    /// dump ended (`NLMSG_DONE`). Messages of another sequence number are skipped.
    pub(super) fn parse(mut data: &[u8], seq: u32, out: &mut BTreeSet<u16>) -> io::Result<bool> {
        let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag reply");
        while data.len() >= NLMSG_HDRLEN {
            let word = |at: usize| {
                u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
            };
            let len = word(0) as usize;
            let kind = u16::from_ne_bytes([data[4], data[5]]);
            if len < NLMSG_HDRLEN || len > data.len() {
                return Err(malformed());
            }
            let payload = &data[NLMSG_HDRLEN..len];
            if word(8) == seq {
                match kind {
                    NLMSG_DONE => return Ok(true),
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .ok_or_else(malformed)?;
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    SOCK_DIAG_BY_FAMILY => {
                        // `inet_diag_msg`: family, state, timer, retrans, then the socket id,
                        // whose first field is the local port in network byte order.
                        let port = payload
                            .get(4..6)
                            .map(|b| u16::from_be_bytes([b[0], b[1]]))
                            .ok_or_else(malformed)?;
                        if port > 0 {
                            out.insert(port);
                        }
                    }
                    _ => {}
                }
            }
            let aligned = (len + 3) & !3;
            data = data.get(aligned..).unwrap_or_default();
        }
        Ok(false)
    }
}

/// Logs a warning when the kernel's ephemeral range (outgoing connections) overlaps the
/// dynamic range: a task could then find its port taken by some client socket (nomad#1728).
pub fn warn_on_ephemeral_overlap(range: &RangeInclusive<u16>) {
    let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return;
    };
    let mut it = text
        .split_whitespace()
        .filter_map(|p| p.parse::<u16>().ok());
    if let (Some(lo), Some(hi)) = (it.next(), it.next())
        && lo <= *range.end()
        && *range.start() <= hi
    {
        tracing::warn!(
            ephemeral = %format!("{lo}-{hi}"),
            tasks = %format!("{}-{}", range.start(), range.end()),
            "the kernel's ephemeral port range overlaps --port-range: a task's port may be \
             taken by an outgoing connection"
        );
    }
}

/// Reports the host's listening ports to the scheduler every [`SCAN_EVERY`] until shutdown.
pub async fn report(sched: SchedHandle, mut shutdown: watch::Receiver<bool>) {
    loop {
        let ports = tokio::task::spawn_blocking(scan).await.unwrap_or_default();
        sched.host_ports(ports).await;
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(SCAN_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_with_clear_errors() {
        assert_eq!(parse_range("20000-32000"), Ok(20000..=32000));
        assert_eq!(parse_range("8080"), Ok(8080..=8080));
        assert!(parse_range("0-10").unwrap_err().contains("not a port"));
        assert!(parse_range("9-3").unwrap_err().contains("empty"));
        assert!(parse_range("x").is_err());
        assert_eq!(
            parse_list("22, 8500-8502,").unwrap(),
            BTreeSet::from([22, 8500, 8501, 8502])
        );
    }

    #[test]
    fn reads_listening_sockets_from_proc_net() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 100 0 0 10 0
";
        assert_eq!(listening_ports(tcp, false), BTreeSet::from([8080]));
        let udp = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:1F4A 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0 0
";
        assert_eq!(listening_ports(udp, true), BTreeSet::from([8010]));
        // This test process's own listener shows up in a real scan.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(scan_proc().contains(&port));
    }

    #[test]
    fn sock_diag_finds_what_proc_net_finds() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp6 = std::net::TcpListener::bind("[::1]:0").ok();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // A connected TCP socket is not listening: its local port is not reported.
        let client = std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let ports = netlink::scan().expect("sock_diag answers on Linux");
        assert!(ports.contains(&tcp.local_addr().unwrap().port()));
        assert!(ports.contains(&udp.local_addr().unwrap().port()));
        if let Some(l) = &tcp6 {
            assert!(ports.contains(&l.local_addr().unwrap().port()));
        }
        assert!(!ports.contains(&client.local_addr().unwrap().port()));
        // Both sources agree on this test's sockets.
        let proc = scan_proc();
        for p in [
            tcp.local_addr().unwrap().port(),
            udp.local_addr().unwrap().port(),
        ] {
            assert!(proc.contains(&p) && ports.contains(&p));
        }
    }

    #[test]
    fn sock_diag_replies_parse_and_bad_ones_are_refused() {
        // Two messages: a socket on port 8080 (0x1F90) of this dump, then NLMSG_DONE.
        let mut msg = vec![0u8; 16 + 72];
        msg[..4].copy_from_slice(&88u32.to_ne_bytes());
        msg[4..6].copy_from_slice(&20u16.to_ne_bytes());
        msg[8..12].copy_from_slice(&7u32.to_ne_bytes());
        msg[16 + 4..16 + 6].copy_from_slice(&8080u16.to_be_bytes());
        let mut done = vec![0u8; 20];
        done[..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&3u16.to_ne_bytes());
        done[8..12].copy_from_slice(&7u32.to_ne_bytes());
        let mut out = BTreeSet::new();
        let data = [msg.clone(), done].concat();
        assert!(netlink::parse(&data, 7, &mut out).unwrap());
        assert_eq!(out, BTreeSet::from([8080]));
        // Another dump's messages are skipped; a length past the end is refused.
        let mut other = BTreeSet::new();
        assert!(!netlink::parse(&msg, 8, &mut other).unwrap());
        assert!(other.is_empty());
        let mut bad = msg;
        bad[..4].copy_from_slice(&200u32.to_ne_bytes());
        assert!(netlink::parse(&bad, 7, &mut out).is_err());
        // A request is a header and an `inet_diag_req_v2`.
        assert_eq!(netlink::request(1, 2, 6, 1 << 10).len(), 72);
    }
}
