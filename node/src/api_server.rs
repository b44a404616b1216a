//! Serving the HTTP API: from the agent's `--http-*` settings to a running server.
//!
//! What it promises:
//! - The API is guarded by [`crate::api_auth`]: the operator's token file, or
//!   `DATA_DIR/http.token` created on first start.
//! - On loopback it speaks HTTP; off loopback it speaks only HTTPS ([`crate::api_tls`]), so a
//!   token never crosses a network in clear text. Every node derives a peer's scheme from the
//!   peer's advertised address the same way ([`crate::api_auth::scheme_of`]), which is why an
//!   advertised address must be on loopback exactly when the bound one is.
//! - The advertised address (in this node's resource ad, used for redirects) is
//!   `--http-advertise`, else the bound address, else (bound to every address) the gossip IP
//!   with the bound port; an address nobody can dial (`0.0.0.0`, port 0) is never advertised.
//! - With a cluster-issued certificate, the cluster CA is written to `DATA_DIR/http-ca.pem` so
//!   a CLI on the same machine can verify the API without flags.
//!
//! Drive it as: [`ApiServer::bind`] at start (it fails early, naming the flag, on a bad
//! setting), then [`ApiServer::spawn`] once the state the handlers share exists.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::api_auth::{ApiToken, Guard};
use crate::api_tls::{self, ServerCertificate, TlsLimits, TlsListener};
use crate::keys::ClusterKey;

/// The file in the data dir holding the cluster CA certificate, when the API's certificate is
/// issued by it.
pub const CA_FILE: &str = "http-ca.pem";

/// How the HTTP API is reached and secured (the `--http-*` flags of `shoal agent`).
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// The operator's token file; `None` = `DATA_DIR/http.token`, created on first start.
    pub token_file: Option<PathBuf>,
    /// The address clients and other nodes use (`--http-advertise`); see the module doc.
    pub advertise: Option<SocketAddr>,
    /// DNS names this API also answers to (`--http-name`): accepted in `Host` and `Origin`,
    /// and put in a cluster-issued certificate.
    pub names: Vec<String>,
    /// The server certificate, used only off loopback.
    pub certificate: ServerCertificate,
    /// Limits of the HTTPS listener.
    pub tls: TlsLimits,
}

/// What [`ApiServer::bind`] needs to know about the agent.
#[derive(Debug, Clone, Copy)]
pub struct AgentFacts<'a> {
    /// The node name (in the certificate).
    pub node_name: &'a str,
    /// The gossip address (its IP is advertised when the API is bound to every address).
    pub gossip_addr: SocketAddr,
    /// The data dir.
    pub data_dir: &'a Path,
    /// The cluster key (issues the certificate).
    pub cluster_key: &'a ClusterKey,
}

/// A bound API listener with its guard and, off loopback, its TLS configuration.
#[derive(Debug)]
pub struct ApiServer {
    listener: TcpListener,
    bound: SocketAddr,
    advertise: SocketAddr,
    guard: Arc<Guard>,
    token_file: PathBuf,
    tls: Option<Arc<rustls::ServerConfig>>,
    ca_file: Option<PathBuf>,
    limits: TlsLimits,
}

impl ApiServer {
    /// Binds `addr` and prepares the guard and TLS; errors name the setting at fault.
    pub async fn bind(
        addr: SocketAddr,
        config: &ApiConfig,
        agent: AgentFacts<'_>,
    ) -> anyhow::Result<Self> {
        for name in &config.names {
            check_name(name)?;
        }
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind HTTP API address {addr}"))?;
        let bound = listener.local_addr()?;
        let advertise = advertised(config.advertise, bound, agent.gossip_addr)?;
        let token = match &config.token_file {
            Some(path) => ApiToken::load(path)?,
            None => ApiToken::load_or_create(agent.data_dir)?,
        };
        let token_file = token.path().to_path_buf();
        let guard = Arc::new(Guard::new(token, bound, advertise, &config.names));
        let off_loopback = !bound.ip().is_loopback();
        if !off_loopback && config.certificate != ServerCertificate::ClusterCa {
            bail!(
                "--http-tls-cert/--http-tls-key are given but the API listens on loopback \
                 ({bound}), where it speaks plain HTTP; bind --http off loopback to serve HTTPS"
            );
        }
        let (tls, ca_file) = if off_loopback {
            let ips: Vec<IpAddr> = [bound.ip(), advertise.ip()]
                .into_iter()
                .filter(|ip| !ip.is_unspecified())
                .collect();
            let tls = api_tls::server_config(
                agent.cluster_key,
                &config.certificate,
                agent.node_name,
                &ips,
                &config.names,
            )?;
            let ca_file = match config.certificate {
                ServerCertificate::ClusterCa => Some(write_ca(agent)?),
                ServerCertificate::Files { .. } => None,
            };
            (Some(tls), ca_file)
        } else {
            (None, None)
        };
        Ok(ApiServer {
            listener,
            bound,
            advertise,
            guard,
            token_file,
            tls,
            ca_file,
            limits: config.tls,
        })
    }

    /// Where the API listens.
    pub fn bound(&self) -> SocketAddr {
        self.bound
    }

    /// Where clients and other nodes reach it.
    pub fn advertise(&self) -> SocketAddr {
        self.advertise
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The file holding the token.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// The cluster CA the certificate was issued by, when it was.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// Serves `state` until `shutdown` changes.
    pub fn spawn(
        self,
        state: ApiState,
        keyring: crate::keyring::KeyringHandle,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tokio::spawn(crate::api_auth::watch_token_file(
            self.guard.clone(),
            shutdown.clone(),
        ));
        // The key ring handle is an outer layer: the keyring routes read it from there.
        let app = api::router(state, self.guard).layer(axum::Extension(keyring));
        let mut stop = shutdown.clone();
        let stop = async move {
            let _ = stop.changed().await;
        };
        tokio::spawn(async move {
            let served = match self.tls {
                None => {
                    axum::serve(self.listener, app)
                        .with_graceful_shutdown(stop)
                        .await
                }
                Some(tls) => match TlsListener::new(self.listener, tls, self.limits, shutdown) {
                    Ok(listener) => {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(stop)
                            .await
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "http api stopped");
            }
        })
    }
}

/// The advertised address; see the module doc.
fn advertised(
    given: Option<SocketAddr>,
    bound: SocketAddr,
    gossip: SocketAddr,
) -> anyhow::Result<SocketAddr> {
    let advertise = match given {
        Some(a) => a,
        None if !bound.ip().is_unspecified() => bound,
        None if !gossip.ip().is_unspecified() => SocketAddr::new(gossip.ip(), bound.port()),
        None => bail!(
            "the HTTP API listens on every address ({bound}) and so does gossip: set \
             --http-advertise to the address other nodes and clients should use"
        ),
    };
    if advertise.ip().is_unspecified() || advertise.port() == 0 {
        bail!("--http-advertise {advertise} is not an address anyone can dial");
    }
    if advertise.ip().is_loopback() != bound.ip().is_loopback() {
        bail!(
            "the API would listen on {bound} but be advertised as {advertise}: one is on \
             loopback and the other is not, so peers would use the wrong scheme (the API speaks \
             HTTPS exactly when it is off loopback); set --http-advertise (or --bind) to match"
        );
    }
    Ok(advertise)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let dns = rustls::pki_types::DnsName::try_from(name).is_ok();
    if !dns || name.parse::<IpAddr>().is_ok() {
        bail!("--http-name {name:?} is not a DNS name (give IP addresses with --http-advertise)");
    }
    Ok(())
}

fn write_ca(agent: AgentFacts<'_>) -> anyhow::Result<PathBuf> {
    let pem = crate::tls::cluster_ca_pem(agent.cluster_key)?;
    let path = std::path::absolute(agent.data_dir.join(CA_FILE))?;
    let tmp = agent.data_dir.join(format!("{CA_FILE}.tmp"));
    std::fs::write(&tmp, pem)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_advertised_address_is_dialable_and_keeps_the_scheme() {
        let gossip = addr("10.0.0.1:7946");
        assert_eq!(
            advertised(None, addr("10.0.0.1:4646"), gossip).unwrap(),
            addr("10.0.0.1:4646")
        );
        assert_eq!(
            advertised(None, addr("0.0.0.0:4646"), gossip).unwrap(),
            addr("10.0.0.1:4646")
        );
        let given = Some(addr("192.0.2.9:443"));
        assert_eq!(
            advertised(given, addr("0.0.0.0:4646"), gossip).unwrap(),
            addr("192.0.2.9:443")
        );
        let every = advertised(None, addr("0.0.0.0:4646"), addr("0.0.0.0:7946"));
        assert!(every.unwrap_err().to_string().contains("--http-advertise"));
        let mixed = advertised(Some(addr("127.0.0.1:4646")), addr("0.0.0.0:4646"), gossip);
        assert!(mixed.unwrap_err().to_string().contains("wrong scheme"));
        let mixed = advertised(None, addr("0.0.0.0:4646"), addr("127.0.0.1:7946"));
        assert!(mixed.unwrap_err().to_string().contains("wrong scheme"));
        let zero = advertised(Some(addr("10.0.0.1:0")), addr("10.0.0.1:4646"), gossip);
        assert!(zero.unwrap_err().to_string().contains("dial"));
    }

    #[test]
    fn names_must_be_dns_names() {
        assert!(check_name("api.example.com").is_ok());
        for bad in ["10.0.0.1", "has space", "", "a..b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
