//! Agents running on this machine, found through the `addresses.json` each writes into its
//! data dir: the CLI reads there which token file and CA belong to the API at `--addr`.
//!
//! Where it looks, in order: `./shoal-data/*/` (the default data dir of `shoal agent`), then
//! `shoal dev`'s clusters, `DEV_ROOT/*/*/` where `DEV_ROOT` is `$XDG_RUNTIME_DIR/shoal-dev`
//! or, without that variable, `/tmp/shoal-dev-UID`. Only agents whose process still runs
//! count, and only directories of this user (or root) are trusted.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::Deserialize;

/// At most this many entries of one directory are looked at (every scan is bounded).
const MAX_ENTRIES: usize = 1024;

/// A local agent's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAgent {
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Where it keeps its API token.
    pub token_file: Option<PathBuf>,
    /// The CA its HTTPS certificate chains to, when it wrote one.
    pub ca_file: Option<PathBuf>,
}

/// The parts of `addresses.json` the CLI uses.
#[derive(Debug, Deserialize)]
struct Addresses {
    http: SocketAddr,
    #[serde(default)]
    http_url: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    pid: u32,
}

/// Where `shoal dev` keeps its clusters (one directory per `shoal dev` process).
pub fn dev_root() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("shoal-dev"),
        _ => std::env::temp_dir().join(format!("shoal-dev-{}", uid())),
    }
}

/// This process's user id (the owner of `/proc/self`).
pub fn uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// Where [`find`] looks, for messages.
pub fn places() -> String {
    format!("./shoal-data/*/ or {}/*/*/", dev_root().display())
}

/// The running local agent whose API is `url`, if one is found.
pub fn find(url: &Url) -> Option<LocalAgent> {
    let data = Path::new("shoal-data");
    let root = dev_root();
    let dev = if trusted(&root) {
        subdirs(&root)
    } else {
        Vec::new()
    };
    std::iter::once(data.to_path_buf())
        .chain(dev)
        .flat_map(|dir| subdirs(&dir))
        .find_map(|dir| matching(&dir, url))
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .take(MAX_ENTRIES)
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// A directory of this user or root, not writable by others.
fn trusted(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && (m.uid() == uid() || m.uid() == 0) && m.mode() & 0o022 == 0)
}

fn matching(dir: &Path, url: &Url) -> Option<LocalAgent> {
    let text = std::fs::read_to_string(dir.join("addresses.json")).ok()?;
    let a: Addresses = serde_json::from_str(&text).ok()?;
    if !Path::new(&format!("/proc/{}", a.pid)).exists() {
        return None;
    }
    let advertised = a.http_url.as_deref().and_then(|u| Url::parse(u).ok());
    let same = advertised.is_some_and(|adv| same_api(&adv, url)) || bound_at(a.http, url);
    same.then(|| LocalAgent {
        data_dir: dir.to_path_buf(),
        token_file: a.token_file,
        ca_file: a.ca_file,
    })
}

fn same_api(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.port_or_known_default() == b.port_or_known_default()
        && a.host_str()
            .zip(b.host_str())
            .is_some_and(|(x, y)| x.eq_ignore_ascii_case(y))
}

/// Whether an API bound to `bound` answers at `url` (`localhost` is any loopback address;
/// an unspecified bound address answers on every IP).
fn bound_at(bound: SocketAddr, url: &Url) -> bool {
    if url.port_or_known_default() != Some(bound.port()) {
        return false;
    }
    match super::client::host_ip(url) {
        Some(ip) => ip == bound.ip() || bound.ip().is_unspecified(),
        None => {
            url.host_str()
                .is_some_and(|h| h.eq_ignore_ascii_case("localhost"))
                && (bound.ip().is_loopback() || bound.ip().is_unspecified())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn an_api_is_matched_by_its_bound_or_advertised_address() {
        let bound: SocketAddr = "127.0.0.1:4646".parse().unwrap();
        assert!(bound_at(bound, &url("http://127.0.0.1:4646")));
        assert!(bound_at(bound, &url("http://localhost:4646/")));
        assert!(!bound_at(bound, &url("http://127.0.0.1:4647")));
        assert!(!bound_at(bound, &url("http://127.0.0.2:4646")));
        let every: SocketAddr = "0.0.0.0:4646".parse().unwrap();
        assert!(bound_at(every, &url("https://10.0.0.1:4646")));
        assert!(same_api(
            &url("https://10.0.0.1:4646"),
            &url("https://10.0.0.1:4646/v1")
        ));
        assert!(!same_api(
            &url("https://10.0.0.1:4646"),
            &url("http://10.0.0.1:4646")
        ));
    }
}
