//! The gateway side: mutual TLS with the pod's tenant certificate, a small pool of open
//! connections, one request at a time per connection.
//!
//! - The tenant certificate, its key and the gateway CA are re-read every
//!   [`RELOAD_INTERVAL`] when the files' content changed (cert-manager renews them in the
//!   mounted Secret). A new identity is used from the next request on: idle connections
//!   made with the old one are closed, busy ones are closed when their request is answered.
//!   Files that do not load keep the identity in force (logged once per change).
//! - At most `--upstream-connections` requests are in flight; more wait for a connection.
//! - Every request has one deadline (`--timeout`) covering the wait, the connect and the
//!   exchange. When it passes, or the gateway cannot be reached, the caller answers the
//!   workload with a KMIP error ([`ForwardError`]).
//! - A connection older than `--upstream-max-age` is closed after its answer, so a long-lived
//!   workload spreads over gateway replicas added since (the gateway Service balances per
//!   connection).
//! - Connects back off after failures: while the gateway refuses connections, a new attempt
//!   is made at most every 100 ms, doubling to [`MAX_BACKOFF`]; requests in between get
//!   their KMIP error at once. A successful connect or probe ends the backoff.
//! - A pooled connection the gateway has closed is noticed before it is used; a read-only
//!   request that fails on a reused connection before any answer byte arrived is sent once
//!   more on a new connection (the gateway's own retry rule, [`kmip::relay::is_read_only`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures::FutureExt;
use kmip::framing::{read_message, ReadError};
use kmip::relay::is_read_only;
use kmip::ttlv;
use rustls::pki_types::ServerName;
use tlsmaterial::{FileBytes, Loaded, PeerIdentity, TlsError, Watched};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::timeout_at;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::metrics::SidecarMetrics;

/// How often the certificate files are compared with what is in force.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// How often the gateway is probed when no request proved it reachable.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// First and longest pause between connect attempts after failures.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a request got no answer from the gateway.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Nothing reached the gateway: the operation was not applied.
    #[error("the gateway is unreachable: {0}")]
    Unreachable(String),
    /// The request left, the answer did not come: it may or may not have been applied.
    #[error("the gateway did not answer: {0}")]
    NoAnswer(String),
    /// No tenant certificate could be loaded yet.
    #[error("no tenant certificate is loaded")]
    NoIdentity,
}

impl ForwardError {
    /// The message the workload reads in its KMIP error response.
    pub fn kmip_message(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => {
                "openkcm sidecar: the KMIP gateway is unreachable; the operation was not applied"
            }
            Self::NoAnswer(_) => {
                "openkcm sidecar: the KMIP gateway did not answer in time; the operation may \
                 or may not have been applied"
            }
            Self::NoIdentity => {
                "openkcm sidecar: no tenant certificate is loaded; the operation was not applied"
            }
        }
    }
}

/// Where the tenant identity comes from.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    pub gateway_ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A loaded tenant identity: the connector presenting it, and which load it came from.
struct Identity {
    connector: TlsConnector,
    generation: u64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Conn {
    stream: TlsStream<TcpStream>,
    generation: u64,
    opened: Instant,
}

/// The gateway, as the listeners see it.
#[derive(Debug)]
pub struct Upstream {
    addr: String,
    server_name: ServerName<'static>,
    /// The gateway CA, the tenant certificate and its key, watched together.
    files: Watched<3>,
    identity: ArcSwapOption<Identity>,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    timeout: Duration,
    /// Connections older than this are closed after their answer (so that new gateway
    /// replicas get their share of a long-running workload's requests).
    max_age: Duration,
    max_message_size: usize,
    reachable: AtomicBool,
    /// Milliseconds since `started` of the last answer or connect (0: none yet).
    last_ok_ms: AtomicU64,
    /// Consecutive failed connects, and the time (ms since `started`) before which no new
    /// connect is attempted.
    connect_failures: AtomicU32,
    next_connect_ms: AtomicU64,
    started: Instant,
    metrics: Arc<SidecarMetrics>,
}

impl Upstream {
    pub fn new(
        addr: String,
        server_name: &str,
        files: IdentityFiles,
        connections: usize,
        timeout: Duration,
        max_age: Duration,
        metrics: Arc<SidecarMetrics>,
    ) -> Result<Self, String> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| format!("gateway server name {server_name:?}: {e}"))?;
        let upstream = Self {
            addr,
            server_name,
            files: Watched::new(
                "tenant",
                [files.gateway_ca, files.cert, files.key],
                metrics.tls(),
            ),
            identity: ArcSwapOption::empty(),
            idle: Mutex::new(Vec::with_capacity(connections)),
            permits: Semaphore::new(connections),
            timeout,
            max_age,
            max_message_size: ttlv::DEFAULT_MAX_MESSAGE_SIZE,
            reachable: AtomicBool::new(false),
            last_ok_ms: AtomicU64::new(0),
            connect_failures: AtomicU32::new(0),
            next_connect_ms: AtomicU64::new(0),
            started: Instant::now(),
            metrics,
        };
        upstream.reload_if_changed();
        Ok(upstream)
    }

    /// Whether a tenant certificate is loaded.
    pub fn has_identity(&self) -> bool {
        self.identity.load().is_some()
    }

    /// Whether the last attempt to reach the gateway succeeded.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Sends one TTLV request and returns the gateway's TTLV answer.
    pub async fn forward(&self, request: &[u8]) -> Result<Vec<u8>, ForwardError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.timeout);
        let Ok(permit) = timeout_at(deadline, self.permits.acquire()).await else {
            self.metrics.upstream_error("busy");
            return Err(ForwardError::Unreachable(
                "every upstream connection stayed busy until the deadline".into(),
            ));
        };
        let _permit = permit.expect("the semaphore is never closed");
        let identity = self.identity.load_full().ok_or(ForwardError::NoIdentity)?;
        let mut retried = false;
        loop {
            let (mut conn, reused) = match self.checkout(identity.generation) {
                Some(conn) => (conn, true),
                None => {
                    let connected = timeout_at(deadline, self.connect(&identity))
                        .await
                        .unwrap_or_else(|_| Err("connect timed out".into()));
                    match connected {
                        Ok(conn) => (conn, false),
                        Err(e) => {
                            self.reachable.store(false, Ordering::Relaxed);
                            self.metrics.upstream_error("connect");
                            return Err(ForwardError::Unreachable(e));
                        }
                    }
                }
            };
            let exchanged = timeout_at(
                deadline,
                exchange(&mut conn.stream, request, self.max_message_size),
            )
            .await
            .unwrap_or(Err(Failure {
                answered_nothing: false,
                reason: "timed out".into(),
            }));
            match exchanged {
                Ok(answer) => {
                    self.mark_ok();
                    self.checkin(conn);
                    self.metrics
                        .observe_upstream(started.elapsed().as_secs_f64());
                    return Ok(answer);
                }
                Err(failure)
                    if reused && !retried && failure.answered_nothing && is_read_only(request) =>
                {
                    tracing::debug!(reason = %failure.reason, "pooled gateway connection failed; retrying a read-only request");
                    retried = true;
                }
                Err(failure) => {
                    self.metrics.upstream_error("exchange");
                    return Err(ForwardError::NoAnswer(failure.reason));
                }
            }
        }
    }

    /// Makes sure the gateway can be reached: keeps one connection open (made now when the
    /// pool has none alive), which the next request then uses.
    pub async fn probe(&self) {
        let Some(identity) = self.identity.load_full() else {
            self.reachable.store(false, Ordering::Relaxed);
            return;
        };
        if let Some(conn) = self.checkout(identity.generation) {
            self.checkin(conn);
            return;
        }
        let Ok(_permit) = self.permits.try_acquire() else {
            return; // requests are in flight: they tell
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        match timeout_at(deadline, self.connect(&identity))
            .await
            .unwrap_or_else(|_| Err("connect timed out".into()))
        {
            Ok(conn) => {
                self.mark_ok();
                self.checkin(conn);
            }
            Err(e) => {
                if self.reachable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(gateway = %self.addr, error = %e, "gateway unreachable");
                }
            }
        }
    }

    /// Whether nothing proved the gateway reachable for `PROBE_INTERVAL`.
    pub fn needs_probe(&self) -> bool {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        last == 0 || self.now_ms().saturating_sub(last) >= PROBE_INTERVAL.as_millis() as u64
    }

    /// Loads the identity files when their content changed; true when a new identity is
    /// now in force. Files that do not load (or are not there yet) keep the identity in
    /// force; that is logged and counted once per change.
    pub fn reload_if_changed(&self) -> bool {
        let Some((connector, leaf)) = self.files.poll(load_identity) else {
            return false;
        };
        let generation = self
            .identity
            .load()
            .as_ref()
            .map_or(1, |old| old.generation + 1);
        self.identity.store(Some(Arc::new(Identity {
            connector,
            generation,
        })));
        self.idle.lock().expect("idle lock").clear();
        tracing::info!(cert = %self.files.paths()[1].display(), serial = %leaf.serial, not_after = leaf.not_after, generation, "tenant certificate loaded");
        true
    }

    /// A new connection, unless connects are backing off after failures.
    async fn connect(&self, identity: &Identity) -> Result<Conn, String> {
        let wait = self
            .next_connect_ms
            .load(Ordering::Relaxed)
            .saturating_sub(self.now_ms());
        if wait > 0 {
            return Err(format!(
                "backing off after failed connects ({wait} ms left)"
            ));
        }
        match self.connect_now(identity).await {
            Ok(conn) => {
                self.connect_failures.store(0, Ordering::Relaxed);
                self.next_connect_ms.store(0, Ordering::Relaxed);
                Ok(conn)
            }
            Err(e) => {
                let failures = self.connect_failures.fetch_add(1, Ordering::Relaxed);
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << failures.min(8))
                    .min(MAX_BACKOFF);
                self.next_connect_ms.store(
                    self.now_ms() + backoff.as_millis() as u64,
                    Ordering::Relaxed,
                );
                Err(e)
            }
        }
    }

    async fn connect_now(&self, identity: &Identity) -> Result<Conn, String> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let stream = identity
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", self.addr))?;
        Ok(Conn {
            stream,
            generation: identity.generation,
            opened: Instant::now(),
        })
    }

    /// An idle connection of `generation` that the gateway has not closed.
    fn checkout(&self, generation: u64) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("idle lock");
        while let Some(mut conn) = idle.pop() {
            if conn.generation == generation && still_open(&mut conn.stream) {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, conn: Conn) {
        let current = self.identity.load().as_ref().map(|i| i.generation);
        if current == Some(conn.generation) && conn.opened.elapsed() < self.max_age {
            self.idle.lock().expect("idle lock").push(conn);
        }
    }

    fn mark_ok(&self) {
        self.reachable.store(true, Ordering::Relaxed);
        self.last_ok_ms
            .store(self.now_ms().max(1), Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// An exchange that produced no answer.
#[derive(Debug)]
struct Failure {
    /// No byte of an answer arrived (a pooled connection the peer had closed looks so).
    answered_nothing: bool,
    reason: String,
}

async fn exchange(
    stream: &mut TlsStream<TcpStream>,
    request: &[u8],
    max_message_size: usize,
) -> Result<Vec<u8>, Failure> {
    let early = |e: std::io::Error| Failure {
        answered_nothing: true,
        reason: e.to_string(),
    };
    stream.write_all(request).await.map_err(early)?;
    stream.flush().await.map_err(early)?;
    let mut answer = Vec::new();
    match read_message(stream, max_message_size, &mut answer).await {
        Ok(()) => Ok(answer),
        Err(e) => Err(Failure {
            answered_nothing: e.nothing_received(),
            reason: match e {
                ReadError::Closed => "the gateway closed the connection".into(),
                ReadError::Io { error, .. } => error.to_string(),
                e => format!("unusable answer: {e}"),
            },
        }),
    }
}

/// Whether an idle connection is still usable: a read that would block means nothing
/// arrived (rustls consumes session tickets itself); EOF, an error or unexpected data
/// mean it must go.
fn still_open(stream: &mut TlsStream<TcpStream>) -> bool {
    let mut byte = [0u8; 1];
    stream.read(&mut byte).now_or_never().is_none()
}

/// The connector presenting the tenant certificate (PEM chain) with its key, trusting the
/// gateway CA; with the facts of the leaf (serial and notAfter, for the log and the metric).
fn load_identity(
    [ca, cert, key]: &[FileBytes; 3],
) -> Result<Loaded<(TlsConnector, PeerIdentity)>, TlsError> {
    let chain = cert.certificates()?;
    let key = key.private_key()?;
    // Facts for the log and the metric only: rustls and the gateway judge the certificate.
    let leaf = PeerIdentity::from_der(&chain.content[0]).unwrap_or_default();
    let connector = kmip::client::tls::connector(
        ca.certificates()?.content,
        chain.content,
        key.content.clone_key(),
    )
    .map_err(|e| TlsError::Settings(rustls::Error::General(e.to_string())))?;
    Ok(Loaded {
        not_after: leaf.not_after,
        value: (connector, leaf),
    })
}
