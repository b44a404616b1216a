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

/// Every port listening on this host, from `/proc/net` (empty where it cannot be read).
#[must_use]
pub fn scan() -> BTreeSet<u16> {
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
        assert!(scan().contains(&port));
    }
}
