//! How the CLI talks to an agent: which address, which token, which CA, and redirects.
//!
//! - The token comes from `--token` (or `SHOAL_HTTP_TOKEN`), else `--token-file` (or
//!   `SHOAL_HTTP_TOKEN_FILE`), else the local agent that listens at `--addr`, found through
//!   its `addresses.json` ([`super::local`]). A token is never sent in clear text off
//!   loopback.
//! - An `https://` agent is verified against `--ca-file` (or `SHOAL_CA_FILE`), else the
//!   cluster CA derived from `--cluster-key-file` (or `SHOAL_CLUSTER_KEY_FILE`), else the CA
//!   the local agent wrote next to its data; only that CA is trusted.
//! - Redirects are followed by the CLI itself, keeping the token, and only to the API of a
//!   member of the cluster (as `GET /v1/nodes` of the agent that redirected says); reqwest's
//!   own redirects are off (they drop the token across hosts, and would follow anywhere).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use reqwest::{Method, StatusCode, Url};
use shoal_node::keys::ClusterKey;

use super::local;

/// The longest a stream request runs before the client reconnects (`get_stream`).
const STREAM_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// At most this many redirects are followed for one request.
const MAX_REDIRECTS: usize = 3;

/// One read of a task log (`GET /v1/tasks/{job}/{slot}/logs`).
#[derive(Debug)]
pub struct LogChunk {
    /// The bytes read.
    pub bytes: Vec<u8>,
    /// Where to read on from (`X-Shoal-Next-Offset`).
    pub next: Option<u64>,
    /// The attempt the log is of (`X-Shoal-Attempt`).
    pub attempt: Option<u32>,
}

/// Where the CLI finds an agent and how it proves who it is.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Any agent's HTTP API (`https://` when it listens off loopback).
    #[arg(long, env = "SHOAL_ADDR", default_value = "http://127.0.0.1:4646")]
    pub addr: String,
    /// The agent's API token (default: the token of the local agent at --addr).
    #[arg(long, env = "SHOAL_HTTP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the agent's API token.
    #[arg(long, env = "SHOAL_HTTP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The CA certificate (PEM) that an https:// agent's certificate must chain to.
    #[arg(long, env = "SHOAL_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Verify an https:// agent against the cluster CA derived from this cluster key.
    #[arg(long, env = "SHOAL_CLUSTER_KEY_FILE")]
    pub cluster_key_file: Option<PathBuf>,
}

/// A connection to one agent's API, with its credential and trust settled.
#[derive(Debug)]
pub struct Api {
    base: Url,
    client: reqwest::Client,
    token: Option<String>,
    /// Why no token is sent, or where it came from (for messages).
    token_note: String,
}

impl Api {
    /// Settles the address, token and CA for `args`; errors say which setting is missing.
    pub fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        let base = Url::parse(args.addr.trim_end_matches('/')).with_context(|| {
            format!(
                "--addr {:?} is not a URL like http://127.0.0.1:4646",
                args.addr
            )
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            bail!("--addr {:?} must be an http:// or https:// URL", args.addr);
        }
        check_scheme(&base)?;
        let local = local::find(&base);
        let (token, token_note) = token_for(args, local.as_ref())?;
        if token.is_some() && base.scheme() == "http" && !is_loopback(&base) {
            bail!(
                "refusing to send the API token in clear text to {base}: agents off loopback \
                 speak HTTPS, use https://"
            );
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30));
        if base.scheme() == "https" {
            let (pem, origin) = ca_for(args, local.as_ref(), &base)?;
            let tls = shoal_node::api_tls::client_config(&pem, &origin)?;
            builder = builder.use_preconfigured_tls(tls);
        }
        let client = builder.build().context("cannot build the HTTP client")?;
        Ok(Api {
            base,
            client,
            token,
            token_note,
        })
    }

    /// GETs `path`; the body as text.
    pub async fn get(&self, path: &str) -> anyhow::Result<String> {
        self.request(Method::GET, path, None).await
    }

    /// Sends a request with an optional JSON body; a non-2xx answer becomes an error carrying
    /// the agent's `{"error": ...}` message.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        json_body: Option<String>,
    ) -> anyhow::Result<String> {
        let resp = self.send(method, path, json_body).await?;
        let url = resp.url().to_string();
        resp.text()
            .await
            .with_context(|| format!("reading the answer of {url}"))
    }

    /// GETs raw bytes plus the `x-shoal-next-offset` header (task logs).
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<LogChunk> {
        let resp = self.send(Method::GET, path, None).await?;
        let number = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        };
        let (next, attempt) = (number("x-shoal-next-offset"), number("x-shoal-attempt"));
        Ok(LogChunk {
            bytes: resp.bytes().await?.to_vec(),
            next,
            attempt: attempt.and_then(|a: u64| u32::try_from(a).ok()),
        })
    }

    /// GETs a stream (`/v1/events`): the response once its head arrived, without the 30 s
    /// limit of other requests (the body may flow for hours; read it with `chunk`). Redirects
    /// are not followed: a stream is one agent's.
    pub async fn get_stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let url = self.url(path)?;
        let mut req = self.client.get(url.clone()).timeout(STREAM_TIMEOUT);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| unreachable(&url, &e))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(self.refusal(&url, resp).await)
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        json_body: Option<String>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut url = self.url(path)?;
        let mut redirects = 0;
        loop {
            let resp = self
                .send_once(method.clone(), &url, json_body.clone())
                .await?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if !status.is_redirection() {
                return Err(self.refusal(&url, resp).await);
            }
            if method != Method::GET || redirects == MAX_REDIRECTS {
                bail!(
                    "{url}: {status}: the CLI follows at most {MAX_REDIRECTS} redirects of a GET"
                );
            }
            redirects += 1;
            url = self.member_target(&url, &resp).await?;
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: &Url,
        json_body: Option<String>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self.client.request(method, url.clone());
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = json_body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        req.send().await.map_err(|e| unreachable(url, &e))
    }

    fn url(&self, path: &str) -> anyhow::Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("{path:?} is not a path of {}", self.base))
    }

    /// Where a redirect from `from` points, if that is the API of a cluster member.
    async fn member_target(&self, from: &Url, resp: &reqwest::Response) -> anyhow::Result<Url> {
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .with_context(|| format!("{from}: {}: a redirect without a Location", resp.status()))?;
        let target = from
            .join(location)
            .with_context(|| format!("{from} redirects to {location:?}, which is not a URL"))?;
        let members = self.member_apis(from).await?;
        let member = target_addr(&target)
            .filter(|addr| members.contains(addr))
            .filter(|addr| target.scheme() == shoal_node::api_auth::scheme_of(*addr));
        if member.is_none() {
            bail!(
                "{from} redirects to {target}, which is not the API of a member of the cluster \
                 (GET /v1/nodes there); not following it with the token"
            );
        }
        Ok(target)
    }

    /// The advertised API addresses of every member, as the agent at `at` sees them.
    async fn member_apis(&self, at: &Url) -> anyhow::Result<Vec<SocketAddr>> {
        let url = at
            .join("/v1/nodes")
            .with_context(|| format!("no /v1/nodes beside {at}"))?;
        let resp = self.send_once(Method::GET, &url, None).await?;
        if !resp.status().is_success() {
            return Err(self.refusal(&url, resp).await);
        }
        let nodes: Vec<shoal_node::api::NodeView> = resp
            .json()
            .await
            .with_context(|| format!("unexpected answer from {url}"))?;
        Ok(nodes.into_iter().filter_map(|n| n.http_addr).collect())
    }

    /// The error for a refused request: the agent's message, plus what the CLI knows.
    async fn refusal(&self, url: &Url, resp: reqwest::Response) -> anyhow::Error {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(body);
        let hint = match status {
            StatusCode::UNAUTHORIZED => format!("\n  the CLI sent no token: {}", self.token_note),
            StatusCode::FORBIDDEN if self.token.is_some() && !same_agent(url, &self.base) => {
                format!(
                    "\n  the CLI sent the token for {} ({}); agents that redirect to each other \
                     must share one token file (--http-token-file)",
                    self.base, self.token_note
                )
            }
            StatusCode::FORBIDDEN if self.token.is_some() => {
                format!("\n  the CLI sent the token {}", self.token_note)
            }
            _ => String::new(),
        };
        anyhow::anyhow!("{url}: {status}: {message}{hint}")
    }
}

/// The token and a note saying where it came from (or why there is none).
fn token_for(
    args: &ApiArgs,
    local: Option<&local::LocalAgent>,
) -> anyhow::Result<(Option<String>, String)> {
    if let Some(token) = &args.token {
        return Ok((Some(token.trim().to_string()), "given with --token".into()));
    }
    if let Some(path) = &args.token_file {
        let token = read_token(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        return Ok((Some(token), format!("from {}", path.display())));
    }
    let Some(agent) = local else {
        return Ok((
            None,
            format!(
                "none given (--token, SHOAL_HTTP_TOKEN, --token-file, SHOAL_HTTP_TOKEN_FILE) and \
                 no running agent at this address keeps its files in {}",
                local::places()
            ),
        ));
    };
    let Some(path) = &agent.token_file else {
        return Ok((
            None,
            format!(
                "the local agent in {} names no token file",
                agent.data_dir.display()
            ),
        ));
    };
    match read_token(path) {
        Ok(token) => Ok((Some(token), format!("from {}", path.display()))),
        Err(e) => Ok((
            None,
            format!(
                "the local agent's token file {} cannot be read ({e}): run as the agent's user or \
                 pass --token",
                path.display()
            ),
        )),
    }
}

/// The first token of a token file (one per line; an agent accepts them all and clients send
/// the first, `docs/security.md`, "Rotation").
fn read_token(path: &Path) -> std::io::Result<String> {
    Ok(first_token(&std::fs::read_to_string(path)?))
}

fn first_token(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string()
}

/// The CA (PEM) to verify an `https://` agent with, and where it came from.
fn ca_for(
    args: &ApiArgs,
    local: Option<&local::LocalAgent>,
    base: &Url,
) -> anyhow::Result<(Vec<u8>, PathBuf)> {
    let (pem, origin) = if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the CA file {}", path.display()))?;
        (pem, path.clone())
    } else if let Some(path) = &args.cluster_key_file {
        let key = ClusterKey::load(path)?;
        let pem = shoal_node::tls::cluster_ca_pem(&key)?;
        (pem.into_bytes(), path.clone())
    } else if let Some(path) = local.and_then(|a| a.ca_file.clone()) {
        let pem = std::fs::read(&path)
            .with_context(|| format!("cannot read the local agent's CA file {}", path.display()))?;
        (pem, path)
    } else {
        bail!(
            "{base} speaks HTTPS: say which CA to trust with --ca-file (or SHOAL_CA_FILE; \
             `shoal ca --cluster-key-file KEY` prints the cluster CA) or --cluster-key-file"
        );
    };
    Ok((pem, origin))
}

/// An agent on a loopback IP speaks HTTP, one off loopback HTTPS: a URL that says otherwise
/// cannot work, so say so before trying.
fn check_scheme(base: &Url) -> anyhow::Result<()> {
    let Some(addr) = target_addr(base) else {
        return Ok(());
    };
    let expected = shoal_node::api_auth::scheme_of(addr);
    if base.scheme() != expected {
        bail!(
            "{base}: an agent at {addr} speaks {expected} (HTTPS exactly when off loopback): use \
             {expected}://{addr}"
        );
    }
    Ok(())
}

fn is_loopback(url: &Url) -> bool {
    match host_ip(url) {
        Some(ip) => ip.is_loopback(),
        None => url
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case("localhost")),
    }
}

/// The host of a URL when it is an IP literal.
pub fn host_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The socket address of a URL whose host is an IP literal.
fn target_addr(url: &Url) -> Option<SocketAddr> {
    Some(SocketAddr::new(host_ip(url)?, url.port_or_known_default()?))
}

fn same_agent(a: &Url, b: &Url) -> bool {
    a.host() == b.host() && a.port_or_known_default() == b.port_or_known_default()
}

fn unreachable(url: &Url, e: &reqwest::Error) -> anyhow::Error {
    // reqwest's Display hides the cause (a refused connection, a certificate error).
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let base = format!("{}://{}", url.scheme(), url.authority());
    anyhow::anyhow!("cannot reach the Shoal agent at {base}: {e}: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn the_scheme_must_match_the_address() {
        assert!(check_scheme(&url("http://127.0.0.1:4646")).is_ok());
        assert!(check_scheme(&url("https://10.0.0.1:4646")).is_ok());
        assert!(check_scheme(&url("https://node1.example:4646")).is_ok());
        let err = check_scheme(&url("http://10.0.0.1:4646"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("use https://10.0.0.1:4646"), "{err}");
        let err = check_scheme(&url("https://[::1]:4646"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("use http://[::1]:4646"), "{err}");
    }

    #[test]
    fn loopback_and_targets() {
        assert!(is_loopback(&url("http://localhost:1")));
        assert!(is_loopback(&url("http://127.0.0.2:1")));
        assert!(!is_loopback(&url("http://example.com:1")));
        assert_eq!(
            target_addr(&url("https://[fd00::1]/x")),
            Some("[fd00::1]:443".parse().unwrap())
        );
        assert_eq!(target_addr(&url("https://example.com:1/")), None);
    }
}
