//! Mutual TLS for QUIC, derived from the cluster key: one secret gives every node a
//! certificate every other node trusts (Serf's operator experience with real mTLS).
//!
//! Promises:
//! - The cluster CA is a pure function of the [`ClusterKey`]: its Ed25519 key comes from
//!   [`ClusterKey::ca_seed`], and its name, serial and validity are fixed, so every node builds
//!   the byte-identical CA certificate without ever exchanging it.
//! - Each process gets a fresh ECDSA P-256 node key, certified by that CA for [`SERVER_NAME`]
//!   (the name every node dials, since peers are known by address only) and for its own node
//!   name, usable both as TLS server and TLS client.
//! - Connections are TLS 1.3 only, ALPN [`ALPN`], with client certificates *required*: a node
//!   of another cluster (or no cluster) can neither connect to us nor be connected to.
//! - Only the ring crypto provider is used, passed explicitly, so the process-wide default
//!   provider (and rustls' ambiguity panic) never matters.
//!
//! - With a key ring ([`TlsIdentity::from_ring`]), the node certificate comes from the
//!   primary key's CA and the CAs of *every* key in the ring are trusted, so during a
//!   rotation nodes that already present the new key's certificates and nodes that still
//!   present the old one accept each other.
//!
//! Drive it as: `TlsIdentity::new(&key, name)?` (or `from_ring`) once at start, then
//! [`endpoint`] to get one `quinn::Endpoint` that both accepts and dials
//! (`endpoint.connect(addr, SERVER_NAME)`), and [`peer_node_name`] on an established
//! connection to learn who is on the other end. After a rotation step, build a new identity
//! from the new ring and [`apply_to_endpoint`]: new connections use it, established ones keep
//! the certificates they were authenticated with.
//!
//! Trust model: anyone holding the cluster key can mint a certificate for any node name, so a
//! peer's node name is a claim made by *a member of the cluster*, not a per-node identity.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::UnixTime;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use crate::keys::{ClusterKey, ClusterLabel, Keyring};

/// The DNS name in every node certificate; dial every peer with it.
pub const SERVER_NAME: &str = "shoal.cluster";

/// The one application protocol spoken over Shoal's QUIC connections.
pub const ALPN: &[u8] = b"shoal/1";

// PKCS#8 v1 (RFC 8410) wrapping of a raw Ed25519 seed: SEQUENCE { version 0,
// AlgorithmIdentifier { id-Ed25519 }, OCTET STRING { OCTET STRING { seed } } }.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Fixed serial of the cluster CA; with the fixed name and validity it makes the CA identical
/// on every node.
const CA_SERIAL: u64 = 1;
const CA_NOT_BEFORE_YEAR: i32 = 2024;
const CA_NOT_AFTER_YEAR: i32 = 2124;
const NODE_CERT_LIFETIME_YEARS: i32 = 10;

/// QUIC timers shared by the server and client side of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicConfig {
    /// How often an idle connection sends a keep-alive, so peer connections survive quiet
    /// periods. Must be well below `max_idle_timeout`.
    pub keep_alive_interval: Duration,
    /// A connection with no traffic for this long is closed (the peer is presumed gone).
    pub max_idle_timeout: Duration,
    /// Unidirectional streams a peer may have open at once on one connection. Agents use
    /// one per connection (`peers.rs`); the cap bounds what a peer can make us track.
    pub max_concurrent_uni_streams: u32,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            // Every agent ends up connected to every peer it replicates to; at 32 nodes a 5 s
            // keep-alive was a measurable share of an idle agent's CPU, and at 15 s the pings
            // and their delayed acks were still the most frequent wake-up of an idle agent
            // (issue 17). 25 s leaves two pings per idle timeout, each retransmitted if lost.
            keep_alive_interval: Duration::from_secs(25),
            max_idle_timeout: Duration::from_secs(60),
            max_concurrent_uni_streams: 8,
        }
    }
}

/// Why a TLS identity or endpoint could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The node name cannot go into a certificate as a DNS name.
    #[error("node name {name:?} is not usable in a certificate: {reason}")]
    InvalidNodeName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// rcgen could not build or sign a key or certificate.
    #[error("cannot build certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("cannot configure TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("cannot build the client certificate verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// The crypto provider lacks the cipher suite QUIC needs for its initial packets.
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(#[from] NoInitialCipherSuite),
    /// The idle timeout does not fit QUIC's variable-length integer.
    #[error("QUIC idle timeout {0:?} is too long")]
    IdleTimeoutTooLong(Duration),
    /// The UDP socket could not be bound (or no tokio runtime is running).
    #[error("cannot open QUIC endpoint on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
}

/// This node's certificate and key plus the cluster CA, ready-made as QUIC configs.
pub struct TlsIdentity {
    node_name: String,
    cluster_label: ClusterLabel,
    ca_cert: CertificateDer<'static>,
    node_cert: CertificateDer<'static>,
    server_crypto: Arc<QuicServerConfig>,
    client_crypto: Arc<QuicClientConfig>,
    /// The dialing side's transport: it sends the keep-alives.
    transport: Arc<quinn::TransportConfig>,
    /// The accepting side's: the same limits, no keep-alives of its own.
    server_transport: Arc<quinn::TransportConfig>,
    /// Verifies node certificates against every CA of the ring (node certificates carry
    /// both EKUs, so the client verifier judges certificates from either side).
    verifier: Arc<dyn ClientCertVerifier>,
}

impl TlsIdentity {
    /// Builds the cluster CA from `key` and certifies a fresh key for `node_name`, which must
    /// be a DNS name (letters, digits, `-`, `_`, dots; not all-numeric; not [`SERVER_NAME`]).
    pub fn new(key: &ClusterKey, node_name: &str) -> Result<Self, TlsError> {
        Self::with_config(key, node_name, QuicConfig::default())
    }

    /// Like [`Self::new`] with explicit QUIC timers.
    pub fn with_config(
        key: &ClusterKey,
        node_name: &str,
        config: QuicConfig,
    ) -> Result<Self, TlsError> {
        Self::from_ring(&Keyring::new(key.clone()), node_name, config)
    }

    /// Certifies a fresh key for `node_name` by the CA of `ring`'s primary, and trusts the
    /// CAs of every key in `ring`.
    pub fn from_ring(
        ring: &Keyring,
        node_name: &str,
        config: QuicConfig,
    ) -> Result<Self, TlsError> {
        check_node_name(node_name)?;
        let key = ring.primary();
        let (ca_cert, issuer) = cluster_ca(key)?;
        let (node_cert, node_key) = node_certificate(&issuer, node_name)?;
        let mut trusted = vec![ca_cert.clone()];
        for other in &ring.keys()[1..] {
            trusted.push(cluster_ca(other)?.0);
        }
        let roots = root_store(&trusted)?;
        let chain = vec![node_cert.clone()];
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider()).build()?;
        let server_crypto = server_crypto(roots.clone(), chain.clone(), node_key.clone_key())?;
        let client_crypto = client_crypto(roots, chain, node_key)?;
        Ok(Self {
            node_name: node_name.to_owned(),
            cluster_label: key.cluster_label(),
            ca_cert,
            node_cert,
            server_crypto: Arc::new(server_crypto),
            client_crypto: Arc::new(client_crypto),
            transport: Arc::new(transport_config(config, true)?),
            server_transport: Arc::new(transport_config(config, false)?),
            verifier,
        })
    }

    /// A server config that accepts only peers with a certificate from this cluster's CA.
    pub fn server_config(&self) -> quinn::ServerConfig {
        let mut config = quinn::ServerConfig::with_crypto(self.server_crypto.clone());
        config.transport_config(self.server_transport.clone());
        config
    }

    /// A client config that presents this node's certificate and trusts only this cluster's CA.
    pub fn client_config(&self) -> quinn::ClientConfig {
        let mut config = quinn::ClientConfig::new(self.client_crypto.clone());
        config.transport_config(self.transport.clone());
        config
    }

    /// The node name certified for this process.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The public fingerprint of the cluster this identity belongs to.
    pub fn cluster_label(&self) -> ClusterLabel {
        self.cluster_label
    }

    /// The primary key's cluster CA certificate (DER), identical on every node of the
    /// cluster.
    pub fn ca_certificate(&self) -> &CertificateDer<'static> {
        &self.ca_cert
    }

    /// Whether a peer presenting `certificate` would be accepted now: signed by the CA of a
    /// key in this identity's ring, and valid. After a key is removed from the ring, peers
    /// whose connections were authenticated under it fail this check.
    pub fn trusts(&self, certificate: &CertificateDer<'_>) -> bool {
        self.verifier
            .verify_client_cert(certificate, &[], UnixTime::now())
            .is_ok()
    }

    /// This process's node certificate (DER).
    pub fn node_certificate(&self) -> &CertificateDer<'static> {
        &self.node_cert
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("node_name", &self.node_name)
            .field("cluster_label", &self.cluster_label)
            .finish_non_exhaustive()
    }
}

/// One QUIC endpoint on `bind` that accepts cluster peers and dials them (with
/// `connect(addr, SERVER_NAME)`). Must be called inside a tokio runtime.
pub fn endpoint(identity: &TlsIdentity, bind: SocketAddr) -> Result<quinn::Endpoint, TlsError> {
    let mut endpoint = quinn::Endpoint::server(identity.server_config(), bind)
        .map_err(|source| TlsError::Bind { addr: bind, source })?;
    endpoint.set_default_client_config(identity.client_config());
    Ok(endpoint)
}

/// Makes `endpoint` use `identity` for every connection it accepts from now on, and for the
/// connections this handle dials with `connect`; connections already established keep the
/// certificates they were authenticated with.
///
/// The server config is shared by every clone of an endpoint handle, but the default client
/// config belongs to the handle: clones made earlier keep dialing with the old identity
/// (`peers.rs` dials with its own current config for that reason).
pub fn apply_to_endpoint(identity: &TlsIdentity, endpoint: &mut quinn::Endpoint) {
    endpoint.set_server_config(Some(identity.server_config()));
    endpoint.set_default_client_config(identity.client_config());
}

/// The peer's certificate, once the handshake has completed.
pub fn peer_certificate(connection: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().cloned()
}

/// The node name in the peer's certificate, once the handshake has completed.
///
/// The certificate chain was verified against the cluster CA during the handshake, so the
/// name is one a cluster member vouched for. `None` before the handshake or if the
/// certificate carries no node name (not one issued by [`TlsIdentity`]).
pub fn peer_node_name(connection: &quinn::Connection) -> Option<String> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_name_in(chain.first()?)
}

/// The first DNS name in a certificate's SANs other than the shared [`SERVER_NAME`].
fn node_name_in(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    cert.valid_dns_names()
        .find(|name| *name != SERVER_NAME)
        .map(str::to_owned)
}

fn check_node_name(node_name: &str) -> Result<(), TlsError> {
    let invalid = |reason| TlsError::InvalidNodeName {
        name: node_name.to_owned(),
        reason,
    };
    if node_name.eq_ignore_ascii_case(SERVER_NAME) {
        return Err(invalid("it is the shared cluster name"));
    }
    DnsName::try_from(node_name)
        .map(|_| ())
        .map_err(|_| invalid("not a DNS name (use letters, digits, '-', '_' and dots)"))
}

/// The cluster CA certificate as PEM: what clients of the HTTPS API trust (`shoal ca`).
/// Identical on every node and for every holder of the cluster key.
pub fn cluster_ca_pem(key: &ClusterKey) -> Result<String, TlsError> {
    let ca_key = ca_key_pair(key)?;
    Ok(ca_params(key.cluster_label()).self_signed(&ca_key)?.pem())
}

/// A TLS server certificate for the HTTP API, signed by the cluster CA, for a fresh P-256 key:
/// valid for the IP addresses `ips` and the DNS names `dns_names` (each must be a DNS name),
/// usable only as a server. Returns the chain (the certificate alone; clients hold the CA)
/// and the key.
pub fn api_server_certificate(
    key: &ClusterKey,
    common_name: &str,
    ips: &[std::net::IpAddr],
    dns_names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let (_, issuer) = cluster_ca(key)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    for name in dns_names {
        params
            .subject_alt_names
            .push(SanType::DnsName(name.as_str().try_into()?));
    }
    params.not_before = rcgen::date_time_ymd(CA_NOT_BEFORE_YEAR, 1, 1);
    params.not_after = rcgen::date_time_ymd(current_year() + NODE_CERT_LIFETIME_YEARS, 1, 1);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&server_key, &issuer)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    Ok((vec![cert.der().clone()], der))
}

/// The cluster CA certificate and the issuer that signs node certificates.
fn cluster_ca(
    key: &ClusterKey,
) -> Result<(CertificateDer<'static>, Issuer<'static, KeyPair>), TlsError> {
    let ca_key = ca_key_pair(key)?;
    let params = ca_params(key.cluster_label());
    let ca_cert = params.self_signed(&ca_key)?.der().clone();
    Ok((ca_cert, Issuer::new(params, ca_key)))
}

/// The CA's Ed25519 key, from the seed the cluster key derives. Ed25519 signing is
/// deterministic, which is what makes the self-signed CA byte-identical across nodes.
fn ca_key_pair(key: &ClusterKey) -> Result<KeyPair, TlsError> {
    let mut pkcs8 = Vec::with_capacity(ED25519_PKCS8_PREFIX.len() + 32);
    pkcs8.extend_from_slice(&ED25519_PKCS8_PREFIX);
    pkcs8.extend_from_slice(&key.ca_seed());
    let der = PrivatePkcs8KeyDer::from(pkcs8);
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(
        &der,
        &rcgen::PKCS_ED25519,
    )?)
}

fn ca_params(label: ClusterLabel) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("shoal cluster CA {label}"));
    params.serial_number = Some(SerialNumber::from(CA_SERIAL));
    params.not_before = rcgen::date_time_ymd(CA_NOT_BEFORE_YEAR, 1, 1);
    params.not_after = rcgen::date_time_ymd(CA_NOT_AFTER_YEAR, 1, 1);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A fresh P-256 key for this process and its certificate, signed by the cluster CA.
fn node_certificate(
    issuer: &Issuer<'static, KeyPair>,
    node_name: &str,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let node_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = node_params(node_name)?.signed_by(&node_key, issuer)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(node_key.serialize_der()));
    Ok((cert.der().clone(), key))
}

fn node_params(node_name: &str) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, node_name);
    params.subject_alt_names = vec![
        SanType::DnsName(SERVER_NAME.try_into()?),
        SanType::DnsName(node_name.try_into()?),
    ];
    // Start with the CA rather than "now" so peers whose clocks lag ours still accept it.
    params.not_before = rcgen::date_time_ymd(CA_NOT_BEFORE_YEAR, 1, 1);
    params.not_after = rcgen::date_time_ymd(current_year() + NODE_CERT_LIFETIME_YEARS, 1, 1);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every endpoint both accepts and dials, and webpki checks EKUs when present.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// The calendar year from the wall clock, to within a day; clamped so a wildly wrong clock
/// cannot push a date outside what certificates can express.
fn current_year() -> i32 {
    const SECS_PER_YEAR: u64 = 31_556_952; // mean Gregorian year
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let years = i32::try_from(secs / SECS_PER_YEAR).unwrap_or(i32::MAX);
    (1970 + years.min(CA_NOT_AFTER_YEAR - 1970)).max(CA_NOT_BEFORE_YEAR)
}

fn root_store(ca_certs: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca_cert in ca_certs {
        roots.add(ca_cert.clone())?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_crypto(
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<QuicServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider()).build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(QuicServerConfig::try_from(config)?)
}

fn client_crypto(
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<QuicClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(QuicClientConfig::try_from(config)?)
}

/// The transport of one side of a connection. Only the side that dialed sends keep-alives:
/// any packet keeps both ends' idle timers running and is acknowledged, so the accepting
/// side's own pings only doubled the wake-ups and packets of an idle connection (two per
/// peer pair, since each agent dials the peers it sends to).
fn transport_config(config: QuicConfig, dialer: bool) -> Result<quinn::TransportConfig, TlsError> {
    let idle = quinn::IdleTimeout::try_from(config.max_idle_timeout)
        .map_err(|_| TlsError::IdleTimeoutTooLong(config.max_idle_timeout))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(dialer.then_some(config.keep_alive_interval))
        .max_idle_timeout(Some(idle))
        .max_concurrent_uni_streams(config.max_concurrent_uni_streams.into());
    Ok(transport)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    const DEADLINE: Duration = Duration::from_secs(10);

    fn localhost() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    fn cluster(byte: u8) -> ClusterKey {
        ClusterKey::from_bytes([byte; 32])
    }

    async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(DEADLINE, future)
            .await
            .expect("test step exceeded its deadline")
    }

    /// Fails unless the handshake failed, and for the expected reason (not, say, ALPN).
    fn assert_rejected(outcome: Result<quinn::Connection, quinn::ConnectionError>, reason: &str) {
        match outcome {
            Ok(connection) => panic!("handshake with {} succeeded", connection.remote_address()),
            Err(err) => assert!(format!("{err:?}").contains(reason), "{err:?}"),
        }
    }

    #[test]
    fn cluster_ca_is_deterministic() {
        let key = cluster(1);
        let a = TlsIdentity::new(&key, "node-a").unwrap();
        let b = TlsIdentity::new(&key, "node-b").unwrap();
        assert_eq!(a.ca_certificate(), b.ca_certificate());
        assert_eq!(cluster_ca(&key).unwrap().0, cluster_ca(&key).unwrap().0);
        assert_ne!(a.node_certificate(), b.node_certificate());
        let other = TlsIdentity::new(&cluster(2), "node-a").unwrap();
        assert_ne!(a.ca_certificate(), other.ca_certificate());
    }

    #[test]
    fn node_certificate_names_the_node() {
        let identity = TlsIdentity::new(&cluster(1), "node-a.rack1").unwrap();
        let name = node_name_in(identity.node_certificate());
        assert_eq!(name.as_deref(), Some("node-a.rack1"));
    }

    #[test]
    fn bad_node_names_are_rejected() {
        for name in [
            "",
            "has space",
            "10.0.0.1",
            "shoal.cluster",
            "trailing-.x",
            "é",
        ] {
            let err = TlsIdentity::new(&cluster(1), name).unwrap_err();
            assert!(
                matches!(err, TlsError::InvalidNodeName { .. }),
                "{name:?}: {err}"
            );
        }
    }

    #[test]
    fn debug_does_not_print_key_material() {
        let identity = TlsIdentity::new(&cluster(1), "node-a").unwrap();
        let debug = format!("{identity:?}");
        assert!(
            debug.contains("node-a") && !debug.contains("key:"),
            "{debug}"
        );
    }

    #[tokio::test]
    async fn same_cluster_nodes_handshake_and_echo() {
        let key = cluster(1);
        let server = endpoint(&TlsIdentity::new(&key, "node-a").unwrap(), localhost()).unwrap();
        let client = endpoint(&TlsIdentity::new(&key, "node-b").unwrap(), localhost()).unwrap();
        let server_addr = server.local_addr().unwrap();

        let echo = tokio::spawn(async move {
            let connection = server.accept().await.unwrap().await.unwrap();
            let peer = peer_node_name(&connection);
            let (mut send, mut recv) = connection.accept_bi().await.unwrap();
            let message = recv.read_to_end(1024).await.unwrap();
            send.write_all(&message).await.unwrap();
            send.finish().unwrap();
            connection.closed().await;
            peer
        });

        let connection = within(client.connect(server_addr, SERVER_NAME).unwrap())
            .await
            .unwrap();
        assert_eq!(peer_node_name(&connection).as_deref(), Some("node-a"));
        let handshake = connection.handshake_data().unwrap();
        let handshake = handshake
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap();
        assert_eq!(handshake.protocol.as_deref(), Some(ALPN));

        let (mut send, mut recv) = within(connection.open_bi()).await.unwrap();
        send.write_all(b"hello shoal").await.unwrap();
        send.finish().unwrap();
        let reply = within(recv.read_to_end(1024)).await.unwrap();
        assert_eq!(reply, b"hello shoal");
        connection.close(0u32.into(), b"done");
        assert_eq!(within(echo).await.unwrap().as_deref(), Some("node-b"));
        client.wait_idle().await;
    }

    /// During a rotation, a node presenting the new key's certificate and a node still
    /// presenting the old one accept each other once both rings hold both keys; a node whose
    /// ring lacks the new key refuses the new certificate.
    #[tokio::test]
    async fn rings_trust_every_installed_key() {
        let (old, new) = (cluster(1), cluster(2));
        let mut switched = Keyring::new(new.clone());
        switched.install(old.clone()).unwrap();
        let mut installed = Keyring::new(old.clone());
        installed.install(new.clone()).unwrap();
        let config = QuicConfig::default();
        let server_id = TlsIdentity::from_ring(&installed, "node-a", config).unwrap();
        let server = endpoint(&server_id, localhost()).unwrap();
        let client_id = TlsIdentity::from_ring(&switched, "node-b", config).unwrap();
        let client = endpoint(&client_id, localhost()).unwrap();
        let server_addr = server.local_addr().unwrap();
        let accept = {
            let server = server.clone();
            tokio::spawn(async move { server.accept().await.unwrap().await })
        };
        let connection = within(client.connect(server_addr, SERVER_NAME).unwrap())
            .await
            .unwrap();
        assert_eq!(peer_node_name(&connection).as_deref(), Some("node-a"));
        let accepted = within(accept).await.unwrap().unwrap();
        assert_eq!(peer_node_name(&accepted).as_deref(), Some("node-b"));

        // The server forgets the new key: it refuses the client's new-CA certificate.
        let old_only = TlsIdentity::from_ring(&Keyring::new(old), "node-a", config).unwrap();
        let mut server = server;
        apply_to_endpoint(&old_only, &mut server);
        let accept = tokio::spawn(async move { server.accept().await.unwrap().await });
        let dialing = async {
            let connection = client.connect(server_addr, SERVER_NAME).unwrap().await?;
            let (mut send, mut recv) = connection.open_bi().await?;
            send.write_all(b"hi").await?;
            send.finish()?;
            recv.read_to_end(16).await?;
            anyhow::Ok(())
        };
        let (accepted, dialed) = within(async { tokio::join!(accept, dialing) }).await;
        assert_rejected(accepted.unwrap(), "UnknownIssuer");
        assert!(dialed.is_err());
    }

    #[test]
    fn an_identity_trusts_certificates_of_every_key_in_its_ring() {
        let (old, new) = (cluster(1), cluster(2));
        let config = QuicConfig::default();
        let old_cert = TlsIdentity::new(&old, "a")
            .unwrap()
            .node_certificate()
            .clone();
        let new_cert = TlsIdentity::new(&new, "b")
            .unwrap()
            .node_certificate()
            .clone();
        let mut ring = Keyring::new(old.clone());
        ring.install(new.clone()).unwrap();
        let both = TlsIdentity::from_ring(&ring, "c", config).unwrap();
        assert!(both.trusts(&old_cert) && both.trusts(&new_cert));
        let new_only = TlsIdentity::from_ring(&Keyring::new(new), "c", config).unwrap();
        assert!(!new_only.trusts(&old_cert));
        assert!(new_only.trusts(&new_cert));
    }

    #[tokio::test]
    async fn client_rejects_a_foreign_server() {
        let server = endpoint(
            &TlsIdentity::new(&cluster(2), "foreign").unwrap(),
            localhost(),
        )
        .unwrap();
        let client = endpoint(
            &TlsIdentity::new(&cluster(1), "node-b").unwrap(),
            localhost(),
        )
        .unwrap();
        let server_addr = server.local_addr().unwrap();
        let server_side = tokio::spawn(async move { server.accept().await.unwrap().await });

        let dialed = within(client.connect(server_addr, SERVER_NAME).unwrap()).await;
        assert_rejected(dialed, "UnknownIssuer");
        assert!(within(server_side).await.unwrap().is_err());
    }

    #[tokio::test]
    async fn server_rejects_a_foreign_client() {
        let home = TlsIdentity::new(&cluster(1), "node-a").unwrap();
        let server = endpoint(&home, localhost()).unwrap();
        let server_addr = server.local_addr().unwrap();
        // The intruder trusts our CA (so it would accept our server) but can only present a
        // certificate from its own cluster: only the server's client verification stops it.
        let roots = root_store(std::slice::from_ref(home.ca_certificate())).unwrap();
        let (_, foreign_ca) = cluster_ca(&cluster(2)).unwrap();
        let (foreign_cert, foreign_key) = node_certificate(&foreign_ca, "intruder").unwrap();
        let crypto = client_crypto(roots, vec![foreign_cert], foreign_key).unwrap();
        let mut intruder = quinn::Endpoint::client(localhost()).unwrap();
        intruder.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));

        let server_side = tokio::spawn(async move { server.accept().await.unwrap().await });
        let dialing = async {
            // TLS 1.3 finishes on the client before the server has checked the client's
            // certificate, so the rejection may surface on the first stream instead.
            let connection = intruder.connect(server_addr, SERVER_NAME).unwrap().await?;
            let (mut send, mut recv) = connection.open_bi().await?;
            send.write_all(b"let me in").await?;
            send.finish()?;
            recv.read_to_end(1024).await?;
            anyhow::Ok(())
        };
        let (accepted, dialed) = within(async { tokio::join!(server_side, dialing) }).await;
        assert_rejected(accepted.unwrap(), "UnknownIssuer");
        assert!(dialed.is_err(), "intruder exchanged data");
    }

    #[tokio::test]
    async fn client_without_certificate_is_rejected() {
        let home = TlsIdentity::new(&cluster(1), "node-a").unwrap();
        let server = endpoint(&home, localhost()).unwrap();
        let server_addr = server.local_addr().unwrap();
        let roots = root_store(std::slice::from_ref(home.ca_certificate())).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(config).unwrap();
        let mut anonymous = quinn::Endpoint::client(localhost()).unwrap();
        anonymous.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));

        let server_side = tokio::spawn(async move { server.accept().await.unwrap().await });
        let _ = anonymous.connect(server_addr, SERVER_NAME).unwrap().await;
        assert_rejected(
            within(server_side).await.unwrap(),
            "peer sent no certificates",
        );
    }
}
