//! The gateway side: KMIP over HTTP/2 (`POST /kmip` on the gateway's HTTPS listener,
//! ALPN h2) with the pod's tenant certificate, on a few multiplexed connections.
//!
//! - The tenant certificate, its key and the gateway CA are re-read every
//!   [`RELOAD_INTERVAL`] when the files' content changed (cert-manager renews them in the
//!   mounted Secret). A new identity is used from the next request on: connections made
//!   with the old one take no new requests and close once their requests are answered.
//!   Files that do not load keep the identity in force (logged once per change).
//! - `--upstream-connections` HTTP/2 connections, requests spread over them in turn; at most
//!   [`STREAMS_PER_CONNECTION`] requests per connection in flight, more wait.
//! - Every request has one deadline (`--timeout`) covering the wait, the connect and the
//!   exchange. When it passes, or the gateway cannot be reached, the caller answers the
//!   workload with a KMIP error ([`ForwardError`]).
//! - A connection older than `--upstream-max-age` takes no new requests, so a long-lived
//!   workload spreads over gateway replicas added since (the gateway Service balances per
//!   connection).
//! - Connects back off after failures: a first failed connect is tried again at once (behind
//!   a Service, the next connection reaches another gateway); while the gateway keeps
//!   refusing connections, a new attempt is made at most every 100 ms, doubling to
//!   [`MAX_BACKOFF`]; requests in between get their KMIP error at once. A successful
//!   connect or probe ends the backoff.
//! - Resending: a request the gateway provably never processed — the stream could not be
//!   opened (the connection was closing or gone), the gateway refused it (REFUSED_STREAM),
//!   or its stream is above a graceful GOAWAY's last stream id (a gateway stopping) — is
//!   sent again on another connection, whatever the operation, while the deadline allows
//!   (at most [`MAX_ATTEMPTS`] sends). After any other failure (the connection broke, the
//!   gateway crashed) the request may have been applied: only a read-only request is sent
//!   again ([`kmip::relay::is_read_only`]), once; the others get "may or may not have been
//!   applied".

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::{Buf, Bytes};
use kmip::relay::is_read_only;
use kmip::ttlv;
use runtime::http2::never_processed;
use rustls::pki_types::ServerName;
use tlsmaterial::{FileBytes, Loaded, PeerIdentity, TlsError, Watched};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::timeout_at;
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
    /// The gateway refused the request without executing it (HTTP status and reason).
    #[error("the gateway refused the request: {0}")]
    Refused(String),
}

impl ForwardError {
    /// The message the workload reads in its KMIP error response.
    pub fn kmip_message(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => {
                "openkcm sidecar: the KMIP gateway is unreachable; the operation was not applied"
            }
            Self::NoAnswer(_) => {
                "openkcm sidecar: the KMIP gateway did not answer (timeout or broken \
                 connection); the operation may or may not have been applied"
            }
            Self::NoIdentity => {
                "openkcm sidecar: no tenant certificate is loaded; the operation was not applied"
            }
            Self::Refused(_) => {
                "openkcm sidecar: the KMIP gateway refused the request; the operation was not \
                 applied"
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

/// Requests in flight on one gateway connection at once; more wait for a stream.
pub const STREAMS_PER_CONNECTION: usize = 64;
/// Sends of one request at most: the first, and resends of what the gateway never
/// processed (a rolling restart can refuse a request on one connection, then on the next).
pub const MAX_ATTEMPTS: usize = 3;
/// The path of KMIP over HTTPS on the gateway.
pub const KMIP_PATH: &str = "/kmip";

/// One HTTP/2 connection to the gateway.
#[derive(Debug)]
struct Conn {
    send: h2::client::SendRequest<Bytes>,
    generation: u64,
    opened: Instant,
    /// Drives the connection; finished once the connection is closed.
    driver: tokio::task::JoinHandle<()>,
}

impl Conn {
    /// Whether new requests may use it: open, of the identity in force, not too old.
    fn usable(&self, generation: u64, max_age: Duration) -> bool {
        !self.driver.is_finished()
            && self.generation == generation
            && self.opened.elapsed() < max_age
    }
}

/// The gateway, as the listeners see it.
#[derive(Debug)]
pub struct Upstream {
    addr: String,
    /// `https://ADDR/kmip`.
    uri: http::Uri,
    server_name: ServerName<'static>,
    /// The gateway CA, the tenant certificate and its key, watched together.
    files: Watched<3>,
    identity: ArcSwapOption<Identity>,
    /// The connections, used in turn; `None` until first needed or after one closed.
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next_slot: AtomicUsize,
    permits: Semaphore,
    timeout: Duration,
    /// Connections older than this take no new requests.
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

/// How one send of a request failed.
enum Failure {
    /// The gateway provably never processed it: send it again, whatever it does.
    NotProcessed(String),
    /// It may have been processed; `connection`: the connection broke (no answer at all).
    Maybe { reason: String, connection: bool },
    /// The gateway answered with a refusal (it did not execute the request).
    Refused(String),
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
        let uri: http::Uri = format!("https://{addr}{KMIP_PATH}")
            .parse()
            .map_err(|e| format!("gateway address {addr:?}: {e}"))?;
        let connections = connections.max(1);
        let upstream = Self {
            addr,
            uri,
            server_name,
            files: Watched::new(
                "tenant",
                [files.gateway_ca, files.cert, files.key],
                metrics.tls(),
            ),
            identity: ArcSwapOption::empty(),
            slots: (0..connections)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next_slot: AtomicUsize::new(0),
            permits: Semaphore::new(connections * STREAMS_PER_CONNECTION),
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
                "every upstream stream stayed busy until the deadline".into(),
            ));
        };
        let _permit = permit.expect("the semaphore is never closed");
        let identity = self.identity.load_full().ok_or(ForwardError::NoIdentity)?;
        let body = Bytes::copy_from_slice(request);
        let mut read_only_resent = false;
        let mut last = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            let slot = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len();
            let conn = match timeout_at(deadline, self.connection(slot, &identity)).await {
                Ok(Ok(conn)) => conn,
                failed => {
                    last = match failed {
                        Ok(Err(e)) => e,
                        _ => "connect timed out".to_owned(),
                    };
                    // Nothing was sent: try again while attempts remain. Behind a Service
                    // the next connection reaches another gateway (this one may have just
                    // died); while connects back off, the next attempt fails at once.
                    if attempt + 1 < MAX_ATTEMPTS {
                        continue;
                    }
                    self.reachable.store(false, Ordering::Relaxed);
                    self.metrics.upstream_error("connect");
                    return Err(ForwardError::Unreachable(last));
                }
            };
            let sent = timeout_at(deadline, self.exchange(&conn, body.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::Maybe {
                        reason: "timed out".into(),
                        connection: false,
                    })
                });
            match sent {
                Ok(answer) => {
                    self.mark_ok();
                    self.metrics
                        .observe_upstream(started.elapsed().as_secs_f64());
                    return Ok(answer);
                }
                Err(Failure::NotProcessed(reason)) => {
                    tracing::debug!(%reason, "the gateway did not process the request; sending it on another connection");
                    self.retire(slot, &conn).await;
                    last = reason;
                }
                Err(Failure::Maybe {
                    reason,
                    connection: true,
                }) if !read_only_resent && is_read_only(request) => {
                    tracing::debug!(%reason, "gateway connection broke; sending a read-only request again");
                    self.retire(slot, &conn).await;
                    read_only_resent = true;
                    last = reason;
                }
                Err(Failure::Maybe { reason, connection }) => {
                    if connection {
                        self.retire(slot, &conn).await;
                    }
                    self.metrics.upstream_error("exchange");
                    return Err(ForwardError::NoAnswer(reason));
                }
                Err(Failure::Refused(reason)) => {
                    self.metrics.upstream_error("refused");
                    return Err(ForwardError::Refused(reason));
                }
            }
        }
        self.metrics.upstream_error("exchange");
        Err(ForwardError::Unreachable(format!(
            "not processed after {MAX_ATTEMPTS} attempts: {last}"
        )))
    }

    /// Makes sure the gateway can be reached: keeps a connection open (made now when
    /// there is none), which the next requests then use.
    pub async fn probe(&self) {
        let Some(identity) = self.identity.load_full() else {
            self.reachable.store(false, Ordering::Relaxed);
            return;
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        match timeout_at(deadline, self.connection(0, &identity))
            .await
            .unwrap_or_else(|_| Err("connect timed out".into()))
        {
            Ok(_) => self.mark_ok(),
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
        tracing::info!(cert = %self.files.paths()[1].display(), serial = %leaf.serial, not_after = leaf.not_after, generation, "tenant certificate loaded");
        true
    }

    /// Slot `slot`'s connection, opened now if it has none usable.
    async fn connection(&self, slot: usize, identity: &Identity) -> Result<Arc<Conn>, String> {
        let mut held = self.slots[slot].lock().await;
        if let Some(conn) = held.as_ref() {
            if conn.usable(identity.generation, self.max_age) {
                return Ok(conn.clone());
            }
        }
        *held = None;
        let conn = Arc::new(self.connect(identity).await?);
        *held = Some(conn.clone());
        Ok(conn)
    }

    /// Takes `conn` out of `slot` (if it is still there): new requests get a new one.
    async fn retire(&self, slot: usize, conn: &Arc<Conn>) {
        let mut held = self.slots[slot].lock().await;
        if held.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *held = None;
        }
    }

    /// One send of `body` on `conn` and its answer.
    async fn exchange(&self, conn: &Conn, body: Bytes) -> Result<Vec<u8>, Failure> {
        // Until the stream is opened nothing has left: any failure is "not processed".
        let not_opened = |e: h2::Error| Failure::NotProcessed(e.to_string());
        let mut send = conn.send.clone().ready().await.map_err(not_opened)?;
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(())
            .map_err(|e| Failure::NotProcessed(e.to_string()))?;
        let (response, mut stream) = send.send_request(request, false).map_err(not_opened)?;
        // The body's failure shows again, classified, in the response's.
        let _ = stream.send_data(body, true);
        let after_send = |e: h2::Error| {
            if never_processed(&e) {
                Failure::NotProcessed(format!("{e} (not processed)"))
            } else {
                Failure::Maybe {
                    connection: e.is_io() || e.is_go_away(),
                    reason: e.to_string(),
                }
            }
        };
        let response = response.await.map_err(after_send)?;
        let status = response.status();
        let mut body = response.into_body();
        let mut answer = Vec::new();
        while let Some(chunk) = body.data().await {
            // Headers arrived: the gateway processed the request, whatever happens next.
            let chunk = chunk.map_err(|e| Failure::Maybe {
                reason: e.to_string(),
                connection: false,
            })?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if answer.len() + chunk.len() > self.max_message_size {
                return Err(Failure::Maybe {
                    reason: "answer too large".into(),
                    connection: false,
                });
            }
            answer.extend_from_slice(chunk.chunk());
        }
        match status.as_u16() {
            // 403 carries the gateway's KMIP Permission Denied answer.
            200 | 403 => Ok(answer),
            // The gateway's own refusals, before anything was forwarded.
            400 | 401 | 404 | 405 | 413 => Err(Failure::Refused(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&answer).trim()
            ))),
            _ => Err(Failure::Maybe {
                reason: format!("HTTP {status}"),
                connection: false,
            }),
        }
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
                if failures == 0 {
                    // The first failure is retried at once (see `forward`).
                    return Err(e);
                }
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << (failures - 1).min(8))
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
        let tls = identity
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", self.addr))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(format!(
                "{} did not agree to HTTP/2 (ALPN h2): is it the gateway's HTTPS listener?",
                self.addr
            ));
        }
        let (send, connection) = h2::client::handshake(tls)
            .await
            .map_err(|e| format!("HTTP/2 with {}: {e}", self.addr))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "gateway connection ended");
            }
        });
        Ok(Conn {
            send,
            generation: identity.generation,
            opened: Instant::now(),
            driver,
        })
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

/// The connector presenting the tenant certificate (PEM chain) with its key, trusting the
/// gateway CA, offering HTTP/2 only; with the facts of the leaf (serial and notAfter, for
/// the log and the metric).
fn load_identity(
    [ca, cert, key]: &[FileBytes; 3],
) -> Result<Loaded<(TlsConnector, PeerIdentity)>, TlsError> {
    let chain = cert.certificates()?;
    let key = key.private_key()?;
    // Facts for the log and the metric only: rustls and the gateway judge the certificate.
    let leaf = PeerIdentity::from_der(&chain.content[0]).unwrap_or_default();
    let mut config = kmip::client::tls::client_config(
        ca.certificates()?.content,
        chain.content,
        key.content.clone_key(),
    )
    .map_err(|e| TlsError::Settings(rustls::Error::General(e.to_string())))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        not_after: leaf.not_after,
        value: (TlsConnector::from(Arc::new(config)), leaf),
    })
}
