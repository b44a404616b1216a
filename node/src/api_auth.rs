//! Who may call the agent's HTTP API, decided before any handler runs.
//!
//! What it promises (the threat model is `docs/security.md`):
//! - **A credential for every change.** Every request other than `GET`/`HEAD` must carry the
//!   agent's token, as `Authorization: Bearer TOKEN` or `X-Shoal-Token: TOKEN`, on loopback
//!   too. When the API listens off loopback, every request must carry it. A missing token is
//!   `401` (the message says how to pass it and where this agent keeps it), a wrong one `403`.
//!   Tokens are compared in constant time (SHA-256 of both sides, compared with `subtle`, so
//!   neither the content nor the length of the token leaks through timing).
//! - **Only pages of the agent itself.** A `Host` that is not one of this agent's own names is
//!   `403` (DNS rebinding: a foreign name resolving to this address); an `Origin` other than
//!   the agent's own `scheme://host:port` is `403`; a body whose content type is not
//!   `application/json` or `application/toml` is `415` (a browser sends `text/plain` and form
//!   bodies cross-origin without asking first).
//! - **The web UI's static files are the exception**: `GET /ui` and its script and style
//!   ([`crate::api_ui`]) need no token, even off loopback (a browser cannot add a header to a
//!   page load, and the files hold nothing secret); the page then sends the token the user
//!   gives it with every API call. `Host` and `Origin` are checked for them too.
//! - **A refused request runs nothing**: the checks run in [`check`], a middleware in front of
//!   every route, and a refusal returns before the request reaches a handler.
//!
//! How to drive it: at start, [`ApiToken::load_or_create`] (the default `DATA_DIR/http.token`)
//! or [`ApiToken::load`] (an operator's file); then [`Guard::new`] with where the API listens;
//! then `router.layer(axum::middleware::from_fn_with_state(guard, check))`.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::api::error;

/// The token file's name in the data dir.
pub const TOKEN_FILE: &str = "http.token";

/// Random bytes in a token this agent creates (written as twice as many hex characters).
pub const TOKEN_BYTES: usize = 32;

/// The shortest token accepted from an operator's file, in characters.
pub const MIN_TOKEN_CHARS: usize = 32;

/// The header that may carry the token instead of `Authorization`.
pub const TOKEN_HEADER: &str = "x-shoal-token";

/// Why the API token could not be loaded or created. The messages never include the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read the HTTP token file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file could not be created.
    #[error("cannot create the HTTP token file {}: {source}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Other users may read or write the file.
    #[error(
        "the HTTP token file {} is open to other users (mode {mode:o}): run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds no usable token.
    #[error(
        "the HTTP token file {} {problem}: use {MIN_TOKEN_CHARS} or more printable characters without \
         spaces, e.g. from `openssl rand -hex 32`",
        path.display()
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        problem: String,
    },
    /// The OS random number generator failed.
    #[error("the OS random number generator failed while creating an HTTP token")]
    Random,
}

/// Most tokens one token file may hold (one per line; `docs/security.md`, "Rotation").
pub const MAX_TOKENS: usize = 8;

/// How often the agent looks whether its token file changed ([`watch_token_file`]).
pub const TOKEN_RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The management tokens: each held as its SHA-256, with the file they came from (for
/// messages). The file holds one token per line; every one is accepted, and the first is the
/// one the CLI sends, so a rotation adds the new token as the first line on every agent, moves
/// the clients over, then removes the old line.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    hashes: Vec<[u8; 32]>,
    path: PathBuf,
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ApiToken {
    /// The token in `data_dir/http.token`, created (mode 0600, [`TOKEN_BYTES`] random bytes as
    /// hex) if the file does not exist yet.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, TokenError> {
        let path = data_dir.join(TOKEN_FILE);
        match create_token_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "created the HTTP API token");
                Self::load(&path)
            }
            Err(TokenError::Create { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Self::load(&path)
            }
            Err(e) => Err(e),
        }
    }

    /// The token in an existing file, which no other user may read or write.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        // Absolute, so messages and `addresses.json` name it from any working directory.
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let read = |source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(TokenError::Exposed {
                path: path.to_path_buf(),
                mode: mode & 0o777,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let invalid = |problem: String| TokenError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        let mut hashes = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let token = line.trim();
            if token.is_empty() {
                continue;
            }
            let on_line = format!("on line {}", n + 1);
            if token.len() < MIN_TOKEN_CHARS {
                return Err(invalid(format!(
                    "holds a token of {} characters {on_line}, fewer than {MIN_TOKEN_CHARS}",
                    token.len()
                )));
            }
            if let Some(position) = token.find(|c: char| !c.is_ascii_graphic()) {
                return Err(invalid(format!(
                    "has a space or a non-printable character {on_line} at position {position}"
                )));
            }
            hashes.push(sha256(token.as_bytes()));
        }
        if hashes.is_empty() {
            return Err(invalid("holds no token".into()));
        }
        if hashes.len() > MAX_TOKENS {
            return Err(invalid(format!(
                "holds {} tokens, more than {MAX_TOKENS}",
                hashes.len()
            )));
        }
        Ok(ApiToken {
            hashes,
            path: path.to_path_buf(),
        })
    }

    /// How many tokens are accepted.
    pub fn count(&self) -> usize {
        self.hashes.len()
    }

    /// Where the token is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `given` is one of the tokens, in time that depends on neither (every token is
    /// compared, whichever matches).
    pub fn matches(&self, given: &[u8]) -> bool {
        let given = sha256(given);
        let mut any = subtle::Choice::from(0);
        for hash in &self.hashes {
            any |= hash.ct_eq(&given);
        }
        any.into()
    }
}

/// Creates `path` (it must not exist) holding a fresh token: [`TOKEN_BYTES`] random bytes as
/// hex, mode 0600 from the moment the file exists. `shoal dev` uses it to share one token file
/// among its agents.
pub fn create_token_file(path: &Path) -> Result<(), TokenError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokenError::Random)?;
    let create = |source| TokenError::Create {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(create)?;
    writeln!(file, "{}", hex::encode(bytes))
        .and_then(|()| file.sync_all())
        .map_err(create)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// `http` or `https`: the scheme of an API at `addr`. The API speaks HTTPS exactly when it
/// listens off loopback, so every node derives a peer's scheme from its advertised address.
pub fn scheme_of(addr: SocketAddr) -> &'static str {
    if addr.ip().is_loopback() {
        "http"
    } else {
        "https"
    }
}

/// Why a request is refused: its status and a message saying what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `400`, `401`, `403` or `415`.
    pub status: StatusCode,
    /// What was wrong and how to do it right.
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// The policy of one API listener: its tokens and the names it answers to.
#[derive(Debug)]
pub struct Guard {
    /// Replaced when the token file changes ([`watch_token_file`]).
    token: std::sync::RwLock<ApiToken>,
    /// Reads are open: the API listens on loopback.
    open_reads: bool,
    scheme: &'static str,
    /// `host:port` pairs this API answers to (host lower-case; IPv6 without brackets).
    authorities: BTreeSet<(String, u16)>,
    /// Bound to an unspecified address: any IP literal with this port is one of ours (an IP
    /// literal cannot be a rebinding name).
    any_ip_port: Option<u16>,
}

impl Guard {
    /// The policy for an API bound to `bound`, reached by others at `advertise`, also known
    /// by the DNS `names` (with either port). `localhost` with the bound port is always
    /// accepted.
    pub fn new(
        token: ApiToken,
        bound: SocketAddr,
        advertise: SocketAddr,
        names: &[String],
    ) -> Self {
        let mut authorities = BTreeSet::new();
        let ports = [bound.port(), advertise.port()];
        for port in ports {
            authorities.insert(("localhost".to_string(), port));
            for name in names {
                authorities.insert((name.to_ascii_lowercase(), port));
            }
        }
        if !bound.ip().is_unspecified() {
            authorities.insert((bound.ip().to_string(), bound.port()));
        }
        authorities.insert((advertise.ip().to_string(), advertise.port()));
        Guard {
            token: std::sync::RwLock::new(token),
            open_reads: bound.ip().is_loopback(),
            scheme: scheme_of(bound),
            authorities,
            any_ip_port: bound.ip().is_unspecified().then_some(bound.port()),
        }
    }

    /// The tokens accepted now.
    fn token(&self) -> ApiToken {
        // A panic while holding the lock leaves a whole token set behind; keep using it.
        self.token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the token file again; `Ok(Some(n))`: it changed and `n` tokens are accepted
    /// now, `Ok(None)`: it holds the same tokens. On an error the tokens loaded before stay.
    pub fn reload_token(&self) -> Result<Option<usize>, TokenError> {
        let path = self.token().path().to_path_buf();
        let fresh = ApiToken::load(&path)?;
        let mut held = self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *held == fresh {
            return Ok(None);
        }
        let count = fresh.count();
        *held = fresh;
        Ok(Some(count))
    }

    /// Whether `host[:port]` (as in a `Host` header or an origin) names this API.
    fn is_own_authority(&self, authority: &str) -> bool {
        let default_port = if self.scheme == "https" { 443 } else { 80 };
        let Some((host, port)) = split_authority(authority, default_port) else {
            return false;
        };
        if self.authorities.contains(&(host.clone(), port)) {
            return true;
        }
        self.any_ip_port == Some(port) && host.parse::<IpAddr>().is_ok()
    }

    /// `Err(response)` when the request must not reach a handler. `ui_asset`: a read of one
    /// of the web UI's static files, which needs no token (they hold nothing secret, and a
    /// browser cannot add a header to a page load); `Host` and `Origin` are checked anyway.
    fn admit(&self, method: &Method, headers: &HeaderMap, ui_asset: bool) -> Result<(), Refusal> {
        self.check_host(headers)?;
        self.check_origin(headers)?;
        let read = *method == Method::GET || *method == Method::HEAD;
        if !(ui_asset && read) {
            self.check_token(method, headers)?;
        }
        check_content_type(headers)
    }

    fn check_host(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(host) = headers.get(header::HOST) else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "the request has no Host header",
            ));
        };
        let host = host.to_str().unwrap_or("");
        if self.is_own_authority(host) {
            return Ok(());
        }
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "Host {host:?} is not a name of this agent (refused against DNS rebinding): use \
                 its address, localhost, or a name given to the agent with --http-name"
            ),
        ))
    }

    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("");
        let own = origin.split_once("://").is_some_and(|(scheme, authority)| {
            scheme.eq_ignore_ascii_case(self.scheme) && self.is_own_authority(authority)
        });
        if own {
            return Ok(());
        }
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "requests from web pages of origin {origin:?} are refused: only pages served by \
                 this agent itself may call its API"
            ),
        ))
    }

    fn check_token(&self, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
        let read = *method == Method::GET || *method == Method::HEAD;
        if read && self.open_reads {
            return Ok(());
        }
        let given = presented_tokens(headers);
        let token = self.token();
        if given.is_empty() {
            let what = if read {
                "this agent's API listens off loopback: every request"
            } else {
                "every request that changes something"
            };
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                format!(
                    "{what} needs the agent's token, as `Authorization: Bearer TOKEN` or \
                     `X-Shoal-Token: TOKEN` (the shoal CLI: --token, SHOAL_HTTP_TOKEN or \
                     SHOAL_HTTP_TOKEN_FILE; it finds a local agent's token by itself); this agent \
                     keeps it in {}",
                    token.path().display()
                ),
            ));
        }
        if given.iter().any(|t| token.matches(t)) {
            return Ok(());
        }
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "wrong token: this agent's tokens are the ones in {}",
                token.path().display()
            ),
        ))
    }
}

/// Reloads the token file every [`TOKEN_RELOAD_EVERY`] that its metadata changed (mtime,
/// ctime, size, inode, mode) until `shutdown`: a rotation needs no restart. A file that cannot
/// be used (being written, too short, readable by others) is logged once per change and the
/// tokens loaded before stay.
pub async fn watch_token_file(guard: Arc<Guard>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    use std::os::unix::fs::MetadataExt;
    let path = guard.token().path().to_path_buf();
    let stamp = |m: &std::fs::Metadata| {
        (
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.len(),
            m.ino(),
            m.mode(),
        )
    };
    let mut seen = std::fs::metadata(&path).ok().map(|m| stamp(&m));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(TOKEN_RELOAD_EVERY) => {}
        }
        let now = std::fs::metadata(&path).ok().map(|m| stamp(&m));
        if now == seen {
            continue;
        }
        seen = now;
        match guard.reload_token() {
            Ok(Some(count)) => tracing::info!(
                path = %path.display(),
                tokens = count,
                "the HTTP API token file changed: its tokens are the ones accepted now"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                error = %e,
                "the HTTP API token file changed but cannot be used; the tokens loaded before stay"
            ),
        }
    }
}

/// The tokens a request presents, from `Authorization: Bearer` and `X-Shoal-Token`.
fn presented_tokens(headers: &HeaderMap) -> Vec<&[u8]> {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| {
            let v = v.as_bytes();
            let (scheme, rest) = v.split_at_checked(7)?;
            scheme
                .eq_ignore_ascii_case(b"bearer ")
                .then(|| rest.trim_ascii())
        });
    let header = headers
        .get_all(TOKEN_HEADER)
        .iter()
        .map(|v| v.as_bytes().trim_ascii());
    bearer.chain(header).filter(|t| !t.is_empty()).collect()
}

/// Media types a request body may have.
const BODY_TYPES: [&str; 2] = ["application/json", "application/toml"];

fn check_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let content_type = headers.get(header::CONTENT_TYPE);
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if content_type.is_none() && !has_body {
        return Ok(());
    }
    let media = content_type.and_then(|v| v.to_str().ok()).map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    if media.as_deref().is_some_and(|m| BODY_TYPES.contains(&m)) {
        return Ok(());
    }
    Err(Refusal::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "a request body must be application/json or application/toml, not {}",
            media.map_or("untyped".to_string(), |m| format!("{m:?}"))
        ),
    ))
}

/// Splits `host[:port]` (IPv6 in brackets) into a lower-case host and a port.
fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => return None,
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// The middleware: refuses what [`Guard`] refuses, before any handler runs.
pub async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let ui_asset = crate::api_ui::is_ui_asset(req.uri().path());
    if let Err(refusal) = guard.admit(req.method(), req.headers(), ui_asset) {
        tracing::debug!(
            method = %req.method(),
            path = %req.uri().path(),
            status = refusal.status.as_u16(),
            "API request refused"
        );
        return error(refusal.status, refusal.message);
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn token_in(dir: &Path) -> ApiToken {
        ApiToken::load_or_create(dir).unwrap()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("shoal-auth-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn status(guard: &Guard, method: Method, pairs: &[(&'static str, &str)]) -> u16 {
        match guard.admit(&method, &headers(pairs), false) {
            Ok(()) => 200,
            Err(r) => r.status.as_u16(),
        }
    }

    #[test]
    fn a_created_token_is_private_random_and_stable() {
        let dir = temp_dir("create");
        let token = token_in(&dir);
        let path = dir.join(TOKEN_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 2 * TOKEN_BYTES);
        assert!(text.trim().chars().all(|c| c.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(token.matches(text.trim().as_bytes()));
        assert!(!token.matches(b"nope"));
        // A restart reuses the file.
        assert!(token_in(&dir).matches(text.trim().as_bytes()));
        let other = temp_dir("create-other");
        assert!(!token_in(&other).matches(text.trim().as_bytes()));
        let debug = format!("{token:?}");
        assert!(!debug.contains(text.trim()), "{debug}");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&other).unwrap();
    }

    #[test]
    fn bad_token_files_are_named() {
        let dir = temp_dir("bad");
        let path = dir.join("t");
        std::fs::write(&path, "a".repeat(40)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ApiToken::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("644"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "short\n").unwrap();
        let err = ApiToken::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("5 characters") && !err.contains("short"),
            "{err}"
        );
        std::fs::write(&path, format!("{} {}", "a".repeat(20), "b".repeat(20))).unwrap();
        let err = ApiToken::load(&path).unwrap_err().to_string();
        assert!(err.contains("position 20"), "{err}");
        let err = ApiToken::load(&dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn guard(bound: &str, advertise: &str) -> (Guard, String, PathBuf) {
        let dir = temp_dir("guard");
        let token = token_in(&dir);
        let text = std::fs::read_to_string(dir.join(TOKEN_FILE)).unwrap();
        let names = vec!["api.example.com".to_string()];
        let g = Guard::new(
            token,
            bound.parse().unwrap(),
            advertise.parse().unwrap(),
            &names,
        );
        (g, text.trim().to_string(), dir)
    }

    #[test]
    fn loopback_reads_are_open_and_changes_need_the_token() {
        let (g, token, dir) = guard("127.0.0.1:4646", "127.0.0.1:4646");
        let host = ("host", "127.0.0.1:4646");
        let bearer = format!("Bearer {token}");
        assert_eq!(status(&g, Method::GET, &[host]), 200);
        assert_eq!(status(&g, Method::HEAD, &[host]), 200);
        assert_eq!(status(&g, Method::POST, &[host]), 401);
        assert_eq!(status(&g, Method::DELETE, &[host]), 401);
        assert_eq!(status(&g, Method::OPTIONS, &[host]), 401);
        assert_eq!(
            status(&g, Method::DELETE, &[host, ("authorization", "Bearer x")]),
            403
        );
        assert_eq!(
            status(&g, Method::DELETE, &[host, ("authorization", &bearer)]),
            200
        );
        let lower = format!("bearer {token}");
        assert_eq!(
            status(&g, Method::DELETE, &[host, ("authorization", &lower)]),
            200
        );
        assert_eq!(
            status(&g, Method::DELETE, &[host, ("x-shoal-token", &token)]),
            200
        );
        // Basic auth carrying the token is not a bearer token.
        let basic = format!("Basic {token}");
        assert_eq!(
            status(&g, Method::DELETE, &[host, ("authorization", &basic)]),
            401
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_401_says_how_and_where() {
        let (g, _, dir) = guard("127.0.0.1:4646", "127.0.0.1:4646");
        let refusal = g
            .admit(
                &Method::POST,
                &headers(&[("host", "127.0.0.1:4646")]),
                false,
            )
            .unwrap_err();
        let body = refusal.message;
        assert!(body.contains("Authorization: Bearer TOKEN"), "{body}");
        assert!(body.contains("X-Shoal-Token"), "{body}");
        assert!(
            body.contains(&dir.join(TOKEN_FILE).display().to_string()),
            "{body}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn off_loopback_every_request_needs_the_token() {
        let (g, token, dir) = guard("10.0.0.1:4646", "10.0.0.1:4646");
        let host = ("host", "10.0.0.1:4646");
        assert_eq!(status(&g, Method::GET, &[host]), 401);
        assert_eq!(
            status(&g, Method::GET, &[host, ("x-shoal-token", "wrong")]),
            403
        );
        assert_eq!(
            status(&g, Method::GET, &[host, ("x-shoal-token", &token)]),
            200
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_ui_files_need_no_token_but_their_host_and_origin_are_checked() {
        let (g, _, dir) = guard("10.0.0.1:4646", "10.0.0.1:4646");
        let ui = |method: Method, pairs: &[(&'static str, &str)]| match g.admit(
            &method,
            &headers(pairs),
            true,
        ) {
            Ok(()) => 200,
            Err(r) => r.status.as_u16(),
        };
        let host = ("host", "10.0.0.1:4646");
        assert_eq!(ui(Method::GET, &[host]), 200);
        assert_eq!(ui(Method::HEAD, &[host]), 200);
        // Only reads: a write to such a path still needs the token.
        assert_eq!(ui(Method::POST, &[host]), 401);
        assert_eq!(ui(Method::GET, &[("host", "evil.example:4646")]), 403);
        let foreign = ("origin", "https://evil.example");
        assert_eq!(ui(Method::GET, &[host, foreign]), 403);
        // And the API itself is not opened by it.
        assert_eq!(status(&g, Method::GET, &[host]), 401);
        for path in ["/ui", "/ui/ui.js", "/"] {
            assert!(crate::api_ui::is_ui_asset(path), "{path}");
        }
        for path in ["/v1/nodes", "/ui/../v1/nodes", "/uix", "/ui/secret"] {
            assert!(!crate::api_ui::is_ui_asset(path), "{path}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_own_hosts_are_served() {
        let (g, _, dir) = guard("127.0.0.1:4646", "127.0.0.1:4646");
        for ok in [
            "127.0.0.1:4646",
            "localhost:4646",
            "LOCALHOST:4646",
            "api.example.com:4646",
        ] {
            assert_eq!(status(&g, Method::GET, &[("host", ok)]), 200, "{ok}");
        }
        for bad in [
            "evil.example:4646",
            "127.0.0.1:4647",
            "127.0.0.1",
            "localhost",
            "[::1]:4646",
            "",
            "127.0.0.1:4646:1",
            "user@127.0.0.1:4646",
        ] {
            assert_eq!(status(&g, Method::GET, &[("host", bad)]), 403, "{bad}");
        }
        assert_eq!(status(&g, Method::GET, &[]), 400);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unspecified_bind_accepts_ip_literals_and_the_advertised_address() {
        let (g, token, dir) = guard("0.0.0.0:4646", "192.0.2.7:14646");
        let t = ("x-shoal-token", token.as_str());
        for ok in [
            "10.1.2.3:4646",
            "[fd00::1]:4646",
            "192.0.2.7:14646",
            "api.example.com:14646",
        ] {
            assert_eq!(status(&g, Method::GET, &[("host", ok), t]), 200, "{ok}");
        }
        for bad in ["rebind.example:4646", "10.1.2.3:14647"] {
            assert_eq!(status(&g, Method::GET, &[("host", bad), t]), 403, "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_own_origins_are_served() {
        let (g, token, dir) = guard("127.0.0.1:4646", "127.0.0.1:4646");
        let host = ("host", "127.0.0.1:4646");
        let t = ("x-shoal-token", token.as_str());
        for ok in ["http://127.0.0.1:4646", "HTTP://localhost:4646"] {
            assert_eq!(
                status(&g, Method::POST, &[host, t, ("origin", ok)]),
                200,
                "{ok}"
            );
        }
        for bad in [
            "http://evil.example",
            "https://127.0.0.1:4646",
            "http://127.0.0.1:4647",
            "http://127.0.0.1",
            "null",
            "",
            "127.0.0.1:4646",
        ] {
            // Refused with the token too, and for reads too.
            assert_eq!(
                status(&g, Method::POST, &[host, t, ("origin", bad)]),
                403,
                "{bad}"
            );
            assert_eq!(
                status(&g, Method::GET, &[host, ("origin", bad)]),
                403,
                "{bad}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bodies_must_be_json_or_toml() {
        let (g, token, dir) = guard("127.0.0.1:4646", "127.0.0.1:4646");
        let host = ("host", "127.0.0.1:4646");
        let t = ("x-shoal-token", token.as_str());
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/TOML",
        ] {
            let pairs = [host, t, ("content-type", ok), ("content-length", "2")];
            assert_eq!(status(&g, Method::POST, &pairs), 200, "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
            "",
        ] {
            let pairs = [host, t, ("content-type", bad), ("content-length", "2")];
            assert_eq!(status(&g, Method::POST, &pairs), 415, "{bad}");
        }
        assert_eq!(
            status(&g, Method::POST, &[host, t, ("content-length", "2")]),
            415
        );
        let chunked = [host, t, ("transfer-encoding", "chunked")];
        assert_eq!(status(&g, Method::POST, &chunked), 415);
        assert_eq!(status(&g, Method::DELETE, &[host, t]), 200);
        assert_eq!(
            status(&g, Method::DELETE, &[host, t, ("content-length", "0")]),
            200
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn authorities_are_split_strictly() {
        assert_eq!(split_authority("a:1", 80), Some(("a".into(), 1)));
        assert_eq!(split_authority("A", 443), Some(("a".into(), 443)));
        assert_eq!(split_authority("[::1]:9", 80), Some(("::1".into(), 9)));
        assert_eq!(split_authority("[::1]", 80), Some(("::1".into(), 80)));
        for bad in [
            "", ":1", "a:", "a:x", "a:99999", "[::1", "[::1]x", "a/b:1", "a@b:1", "a:b:1",
        ] {
            assert_eq!(split_authority(bad, 80), None, "{bad}");
        }
        assert_eq!(scheme_of("127.0.0.1:1".parse().unwrap()), "http");
        assert_eq!(scheme_of("[::1]:1".parse().unwrap()), "http");
        assert_eq!(scheme_of("10.0.0.1:1".parse().unwrap()), "https");
    }

    /// Writes `text` to `path` with mode 0600.
    fn private_file(path: &Path, text: &str) {
        let _ = std::fs::remove_file(path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_token_file_may_hold_several_tokens_one_per_line() {
        let dir = temp_dir("several");
        let path = dir.join("t");
        let (new, old) = ("n".repeat(40), "o".repeat(40));
        private_file(&path, &format!("{new}\n\n  {old}  \n"));
        let token = ApiToken::load(&path).unwrap();
        assert_eq!(token.count(), 2);
        assert!(token.matches(new.as_bytes()) && token.matches(old.as_bytes()));
        assert!(!token.matches(b"nnnn"));
        // Each line is checked, and the message names the line (never the token).
        private_file(&path, &format!("{new}\nshort\n"));
        let e = ApiToken::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("on line 2") && e.contains("fewer than 32"),
            "{e}"
        );
        assert!(!e.contains(&new), "{e}");
        private_file(&path, "\n \n");
        let e = ApiToken::load(&path).unwrap_err().to_string();
        assert!(e.contains("holds no token"), "{e}");
        private_file(&path, &format!("{new}\n").repeat(MAX_TOKENS + 1));
        let e = ApiToken::load(&path).unwrap_err().to_string();
        assert!(e.contains("more than 8"), "{e}");
    }

    #[test]
    fn a_reload_takes_the_new_tokens_and_keeps_the_old_on_a_bad_file() {
        let dir = temp_dir("reload");
        let path = dir.join("t");
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        private_file(&path, &a);
        let guard = Guard::new(
            ApiToken::load(&path).unwrap(),
            "127.0.0.1:4646".parse().unwrap(),
            "127.0.0.1:4646".parse().unwrap(),
            &[],
        );
        let post = |guard: &Guard, token: &str| {
            status(
                guard,
                Method::DELETE,
                &[("host", "127.0.0.1:4646"), ("x-shoal-token", token)],
            )
        };
        assert_eq!((post(&guard, &a), post(&guard, &b)), (200, 403));
        assert_eq!(guard.reload_token().unwrap(), None, "unchanged");
        // Rotation: both for a while, then only the new one.
        private_file(&path, &format!("{b}\n{a}\n"));
        assert_eq!(guard.reload_token().unwrap(), Some(2));
        assert_eq!((post(&guard, &a), post(&guard, &b)), (200, 200));
        private_file(&path, &b);
        assert_eq!(guard.reload_token().unwrap(), Some(1));
        assert_eq!((post(&guard, &a), post(&guard, &b)), (403, 200));
        // A file that cannot be used leaves the tokens as they were.
        private_file(&path, "half-writ");
        assert!(guard.reload_token().is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            guard
                .reload_token()
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
        std::fs::remove_file(&path).unwrap();
        assert!(guard.reload_token().is_err());
        assert_eq!((post(&guard, &a), post(&guard, &b)), (403, 200));
    }
}
