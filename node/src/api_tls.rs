//! HTTPS for the API when it listens off loopback.
//!
//! What it promises:
//! - The server certificate is either issued at start by the cluster CA (a fresh P-256 key;
//!   names: the bound and advertised IPs, `127.0.0.1`, `localhost`, the node name and every
//!   `--http-name`), so any holder of the cluster key can verify it with `shoal ca`, or the
//!   operator's PEM files (`--http-tls-cert`, `--http-tls-key`).
//! - TLS 1.2 and 1.3, ring only (the process-wide default provider never matters), HTTP/1.1.
//! - A handshake never holds up the accept loop: each runs in its own task, at most
//!   [`TlsLimits::max_handshakes`] at once, each for at most [`TlsLimits::handshake_timeout`];
//!   a failed or slow one is dropped and logged at debug level.
//! - [`client_config`] is what a client verifies the API with: only the CA it is given.
//!
//! Drive it as: [`server_config`] once at start, then [`TlsListener::new`] over the bound
//! `TcpListener`, and hand the listener to `axum::serve`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::keys::ClusterKey;
use crate::tls::{self, TlsError};

/// Limits of the HTTPS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsLimits {
    /// A client that has not finished its handshake within this is dropped.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; further connections wait in the kernel's backlog.
    pub max_handshakes: NonZeroUsize,
}

impl Default for TlsLimits {
    fn default() -> Self {
        TlsLimits {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: NonZeroUsize::new(128).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// Where the API's server certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ServerCertificate {
    /// Issued at start by the cluster CA.
    #[default]
    ClusterCa,
    /// The operator's PEM files: the chain (leaf first) and its private key.
    Files {
        /// `--http-tls-cert`.
        cert: PathBuf,
        /// `--http-tls-key`.
        key: PathBuf,
    },
}

/// Why the API's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ApiTlsError {
    /// The cluster CA could not issue the certificate.
    #[error("cannot issue the API certificate from the cluster CA: {0}")]
    Issue(#[from] TlsError),
    /// A PEM file could not be read or parsed.
    #[error("{}: {problem}", path.display())]
    Pem {
        /// The file (or what the PEM came from).
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the certificate, the key or the roots.
    #[error("cannot configure TLS for the API: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server config of the HTTPS API. `ips` and `dns_names` go into a cluster-issued
/// certificate (together with `127.0.0.1`, `localhost` and `node_name`).
pub fn server_config(
    key: &ClusterKey,
    certificate: &ServerCertificate,
    node_name: &str,
    ips: &[IpAddr],
    dns_names: &[String],
) -> Result<Arc<rustls::ServerConfig>, ApiTlsError> {
    let (chain, private_key) = match certificate {
        ServerCertificate::ClusterCa => {
            let mut all_ips = ips.to_vec();
            all_ips.push(IpAddr::from([127, 0, 0, 1]));
            all_ips.sort();
            all_ips.dedup();
            let mut names = vec!["localhost".to_string(), node_name.to_string()];
            names.extend(dns_names.iter().cloned());
            names.sort();
            names.dedup();
            tls::api_server_certificate(key, node_name, &all_ips, &names)?
        }
        ServerCertificate::Files { cert, key } => (read_chain(cert)?, read_key(key)?),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client config that trusts only the CA certificates in `ca_pem` (read from `origin`, named
/// in errors).
pub fn client_config(ca_pem: &[u8], origin: &Path) -> Result<rustls::ClientConfig, ApiTlsError> {
    let pem = |problem: String| ApiTlsError::Pem {
        path: origin.to_path_buf(),
        problem,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| pem(format!("not a PEM certificate: {e}")))?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(pem("holds no PEM certificate".to_string()));
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, ApiTlsError> {
    let pem = |problem: String| ApiTlsError::Pem {
        path: path.to_path_buf(),
        problem,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(format!("cannot read the certificate file: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(pem("holds no PEM certificate".to_string()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ApiTlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| ApiTlsError::Pem {
        path: path.to_path_buf(),
        problem: format!("not a PEM private key: {e}"),
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A listener that yields connections whose TLS handshake has completed.
#[derive(Debug)]
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` until `shutdown` changes; handshakes run as the module doc says.
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        limits: TlsLimits,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = mpsc::channel(limits.max_handshakes.get());
        tokio::spawn(accept_loop(
            tcp,
            TlsAcceptor::from(config),
            limits,
            tx,
            shutdown,
        ));
        Ok(TlsListener { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accept loop ended (shutdown): the server stops on the same signal.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    limits: TlsLimits,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_handshakes.get()));
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept an API connection");
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            },
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "API TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::from_bytes([byte; 32])
    }

    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: rustls::ClientConfig,
        name: &str,
    ) -> Result<Vec<u8>, String> {
        let (tx, shutdown) = watch::channel(false);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut listener = TlsListener::new(tcp, server, TlsLimits::default(), shutdown).unwrap();
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let echo = tokio::spawn(async move {
            let (mut io, _) = axum::serve::Listener::accept(&mut listener).await;
            let mut buf = [0u8; 5];
            io.read_exact(&mut buf).await.unwrap();
            io.write_all(&buf).await.unwrap();
            io.shutdown().await.unwrap();
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let outcome = async {
            let mut io = connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            io.write_all(b"hello").await.map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            io.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
            Ok(out)
        };
        let result = tokio::time::timeout(Duration::from_secs(10), outcome)
            .await
            .expect("handshake within 10 s");
        if result.is_ok() {
            echo.await.unwrap();
        } else {
            echo.abort();
        }
        let _ = tx.send(true);
        result
    }

    #[tokio::test]
    async fn a_cluster_issued_certificate_verifies_with_the_cluster_ca() {
        let k = key(1);
        let ips = [IpAddr::from([10, 0, 0, 5])];
        let names = ["api.example.com".to_string()];
        let server = server_config(&k, &ServerCertificate::ClusterCa, "n1", &ips, &names).unwrap();
        let ca = tls::cluster_ca_pem(&k).unwrap();
        let origin = Path::new("ca.pem");
        for name in [
            "127.0.0.1",
            "localhost",
            "n1",
            "10.0.0.5",
            "api.example.com",
        ] {
            let client = client_config(ca.as_bytes(), origin).unwrap();
            let echoed = handshake(server.clone(), client, name).await;
            assert_eq!(echoed.as_deref(), Ok(&b"hello"[..]), "{name}");
        }
        let client = client_config(ca.as_bytes(), origin).unwrap();
        let wrong_name = handshake(server.clone(), client, "10.0.0.6")
            .await
            .unwrap_err();
        assert!(wrong_name.contains("not valid for name"), "{wrong_name}");
        let other_ca = tls::cluster_ca_pem(&key(2)).unwrap();
        let client = client_config(other_ca.as_bytes(), origin).unwrap();
        let foreign = handshake(server, client, "127.0.0.1").await.unwrap_err();
        assert!(foreign.contains("UnknownIssuer"), "{foreign}");
    }

    #[test]
    fn a_client_config_needs_a_pem_certificate() {
        let origin = Path::new("/etc/ca.pem");
        let err = client_config(b"not pem", origin).unwrap_err().to_string();
        assert!(
            err.contains("/etc/ca.pem") && err.contains("no PEM"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn operator_files_are_served_and_bad_ones_named() {
        let dir = std::env::temp_dir().join(format!("shoal-api-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // An operator's certificate: here one from another CA (cluster key 3).
        let k = key(3);
        let (chain, private) =
            tls::api_server_certificate(&k, "op", &[IpAddr::from([127, 0, 0, 1])], &[]).unwrap();
        let cert_pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64_lines(chain[0].as_ref())
        );
        let key_pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64_lines(private.secret_der())
        );
        let (cert, keyf) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&keyf, key_pem).unwrap();
        let files = ServerCertificate::Files {
            cert: cert.clone(),
            key: keyf.clone(),
        };
        let server = server_config(&key(9), &files, "n1", &[], &[]).unwrap();
        let ca = tls::cluster_ca_pem(&k).unwrap();
        let client = client_config(ca.as_bytes(), Path::new("ca.pem")).unwrap();
        assert!(handshake(server, client, "127.0.0.1").await.is_ok());
        let swapped = ServerCertificate::Files {
            cert: keyf.clone(),
            key: cert.clone(),
        };
        let err = server_config(&k, &swapped, "n1", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("key.pem") && err.contains("no PEM"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Standard base64 in 64-character lines (test-only PEM writer).
    fn base64_lines(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out.as_bytes()
            .chunks(64)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }
}
