//! The keysvc pool: one KMIP request = one `POST /v1/kmip` over HTTP/2 + mTLS, balanced
//! round robin per request (not per connection: KMIP clients hold connections for hours),
//! retried on another replica when that cannot change the outcome.
//!
//! Retry rules:
//! - the connection to a replica fails (connect, TLS, or a pooled HTTP/2 connection that
//!   died before the request headers left) → the next replica, whatever the operation;
//!   the replica is then skipped for [`DOWN_FOR`] unless every replica is down;
//! - the exchange fails after the request was sent (reset, timeout, non-200 status) → the
//!   next replica only if every batch item is read-only ([`kmip::relay::is_read_only`]); otherwise the
//!   caller answers General Failure ("may or may not have been applied").
//!
//! Replicas come from `--upstream`: an `IP:PORT` is one replica for the gateway's lifetime;
//! a `HOST:PORT` (e.g. a Kubernetes headless Service) is one replica per address the name
//! resolves to, re-resolved every `--upstream-resolve-interval` ([`UpstreamPool::start_resolver`]):
//! new addresses become replicas, replicas whose address disappeared are dropped (requests
//! in flight on them finish: each request holds the replica list it started with), and
//! replicas whose address stays keep their health state. A failed or empty lookup keeps
//! the addresses that name resolved to before. The gateway starts before the first lookup
//! answers and is not ready until some replica has answered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use kmip::contract;
use kmip::relay::is_read_only;
use pingora::connectors::http::v2::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v2::client::Http2Session;
use pingora::upstreams::peer::{HttpPeer, Peer, PeerOptions, Proxy, Tracer};
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};

use crate::config::UpstreamAddr;
use crate::metrics::GatewayMetrics;
use crate::tls::{self, TlsError};

/// How often each replica's `/ready` is polled.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Budget of one `/ready` check.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The gateway is ready while some replica answered (check or request) within this.
pub const READY_WITHIN: Duration = Duration::from_secs(10);

/// The whole exchange with one replica (connect, send, answer) must finish within this:
/// keysvc answers in milliseconds; longer means the replica is stuck.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect (TCP + TLS) budget per replica, so a dead replica costs little before the next.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a replica whose connection failed is skipped.
pub const DOWN_FOR: Duration = Duration::from_secs(5);
/// Budget of one DNS lookup of a `HOST:PORT` upstream.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled HTTP/2 connection to a replica is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Pool group of the health checks' connections (requests use group 0).
const HEALTH_CHECK_GROUP: u64 = 1;
/// Concurrent requests on one HTTP/2 connection to a replica before another connection is
/// opened; below keysvc's own limit (256).
pub const MAX_STREAMS_PER_CONNECTION: usize = 128;
/// Largest keysvc answer read: a response carries at most a few keys, far below this.
pub const MAX_RESPONSE_SIZE: usize = 16 * 1024 * 1024;

/// Who is asking, forwarded as the headers keysvc trusts from the gateway only.
#[derive(Debug, Clone)]
pub struct TenantHeaders<'a> {
    pub tenant: &'a str,
    pub database: Option<&'a str>,
    pub client: &'a str,
    pub request_id: &'a str,
}

/// Why no replica answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// No replica could be reached; the request was never sent.
    #[error("no keysvc replica reachable: {0}")]
    Unavailable(String),
    /// The request was sent and the exchange failed: it may or may not have been applied.
    #[error("upstream failed after the request was sent: {0}")]
    MaybeApplied(String),
}

/// How one attempt failed.
enum Attempt {
    /// Nothing reached the replica: always safe to try another.
    NotSent(String),
    /// The request (perhaps) reached the replica.
    Sent(String),
}

struct Replica {
    addr: SocketAddr,
    /// Replaced when the upstream client certificate is reloaded.
    peer: ArcSwap<ReplicaPeer>,
    /// Milliseconds since the pool's epoch when a connection to the replica last failed
    /// (0: it has not, or a request succeeded since); skipped for [`DOWN_FOR`] after that.
    down_since_ms: AtomicU64,
    /// The last `/ready` check answered 200 (true until the first check).
    healthy: AtomicBool,
    /// Milliseconds since the pool's epoch of the last `/ready` 200 or served request
    /// (0: never).
    last_ok_ms: AtomicU64,
    /// Held while a request takes a stream from the pool (or opens the connection). Pingora
    /// takes a connection out of its pool while it adds a stream to it, so requests that
    /// arrive together each found none and each opened a connection: a burst of 32 opened
    /// ~20. In turn, the first opens one and the others share it.
    acquire: tokio::sync::Mutex<()>,
}

impl Replica {
    /// A connection to the replica failed at `now_ms` (never 0: 0 means up).
    fn mark_down(&self, now_ms: u64) {
        self.down_since_ms.store(now_ms.max(1), Ordering::Relaxed);
    }

    /// Whether the replica is skipped at `now_ms` (a connection failed within [`DOWN_FOR`]).
    fn is_down(&self, now_ms: u64) -> bool {
        let since = self.down_since_ms.load(Ordering::Relaxed);
        since != 0 && now_ms < since + DOWN_FOR.as_millis() as u64
    }
}

/// The keysvc replicas and the HTTP/2 connector that pools connections to them.
pub struct UpstreamPool {
    server_name: String,
    ca: Arc<[WrappedX509]>,
    /// The current replicas; replaced as a whole when DNS answers change. Each request
    /// and health-check round works on the list it loaded.
    replicas: ArcSwap<Vec<Arc<Replica>>>,
    /// The upstream client certificate in force. Held while the replica list or the
    /// peers are rebuilt, so that a reload and a DNS change cannot lose each other's work.
    cert_key: Mutex<Arc<CertKey>>,
    /// The `IP:PORT` upstreams.
    static_addrs: Vec<SocketAddr>,
    /// The `HOST:PORT` upstreams.
    dns: Vec<(String, u16)>,
    next: AtomicUsize,
    /// Pingora's HTTP/2 connector and its pools (peers speak HTTP/2 only, [`make_peer`]).
    connector: Connector,
    epoch: Instant,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<_> = self.replicas.load().iter().map(|r| r.addr).collect();
        f.debug_struct("UpstreamPool")
            .field("replicas", &addrs)
            .field("dns", &self.dns)
            .finish()
    }
}

/// TLS material for the upstream connections.
#[derive(Debug, Clone)]
pub struct UpstreamTls<'a> {
    pub ca: &'a std::path::Path,
    pub cert: &'a std::path::Path,
    pub key: &'a std::path::Path,
    /// SNI and the name checked in each replica's certificate. Never empty: an empty SNI
    /// makes Pingora skip server-certificate verification.
    pub server_name: &'a str,
}

impl UpstreamPool {
    /// The `IP:PORT` upstreams become replicas now; the `HOST:PORT` ones once
    /// [`UpstreamPool::start_resolver`] has resolved them.
    pub fn new(addrs: &[UpstreamAddr], tls_files: &UpstreamTls<'_>) -> Result<Self, TlsError> {
        if tls_files.server_name.is_empty() {
            return Err(TlsError::Verifier(
                "the upstream server name must not be empty".into(),
            ));
        }
        let ca: Arc<[WrappedX509]> = tls::certs_from_pem(tls_files.ca)?
            .into_iter()
            .map(|c| WrappedX509::new(c.to_vec(), parse_x509))
            .collect::<Vec<_>>()
            .into();
        let chain: Vec<Vec<u8>> = tls::certs_from_pem(tls_files.cert)?
            .into_iter()
            .map(|c| c.to_vec())
            .collect();
        let cert_key = Arc::new(CertKey::new(chain, tls::key_der_from_pem(tls_files.key)?));
        let server_name = tls_files.server_name.to_owned();
        let mut static_addrs = Vec::new();
        let mut dns = Vec::new();
        for addr in addrs {
            match addr {
                UpstreamAddr::Ip(addr) => {
                    if !static_addrs.contains(addr) {
                        static_addrs.push(*addr);
                    }
                }
                UpstreamAddr::Dns { host, port } => dns.push((host.clone(), *port)),
            }
        }
        let replicas = static_addrs
            .iter()
            .map(|&addr| Arc::new(new_replica(addr, &server_name, &ca, cert_key.clone())))
            .collect();
        Ok(Self {
            server_name,
            ca,
            replicas: ArcSwap::from_pointee(replicas),
            cert_key: Mutex::new(cert_key),
            static_addrs,
            dns,
            next: AtomicUsize::new(0),
            connector: Connector::new(None),
            epoch: Instant::now(),
        })
    }

    /// Sends one TTLV request and returns keysvc's TTLV answer, retrying per the module rules.
    pub async fn forward(
        &self,
        request: &Bytes,
        who: &TenantHeaders<'_>,
    ) -> Result<Bytes, UpstreamError> {
        let mut read_only: Option<bool> = None;
        let mut last = String::from("no replica (upstream names not resolved yet?)");
        let mut sent = false;
        for replica in self.order() {
            let replica = &*replica;
            let attempt =
                tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(replica, request, who))
                    .await
                    .unwrap_or_else(|_| Err(Attempt::Sent("timed out".into())));
            match attempt {
                Ok(answer) => {
                    replica.down_since_ms.store(0, Ordering::Relaxed);
                    replica
                        .last_ok_ms
                        .store(self.now_ms().max(1), Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(Attempt::NotSent(e)) => {
                    tracing::warn!(upstream = %replica.addr, request_id = who.request_id, error = %e, "keysvc replica unreachable");
                    replica.mark_down(self.now_ms());
                    last = format!("{}: {e}", replica.addr);
                }
                Err(Attempt::Sent(e)) => {
                    tracing::warn!(upstream = %replica.addr, request_id = who.request_id, error = %e, "keysvc exchange failed");
                    last = format!("{}: {e}", replica.addr);
                    sent = true;
                    let retry = *read_only.get_or_insert_with(|| is_read_only(request));
                    if !retry {
                        return Err(UpstreamError::MaybeApplied(last));
                    }
                }
            }
        }
        if sent {
            Err(UpstreamError::MaybeApplied(last))
        } else {
            Err(UpstreamError::Unavailable(last))
        }
    }

    /// Every replica once, starting at the next in round-robin order, the ones marked down
    /// or failing their health check last (still tried: a replica that is back is better
    /// than no answer).
    fn order(&self) -> Vec<Arc<Replica>> {
        let replicas = self.replicas.load_full();
        let n = replicas.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = self.now_ms();
        let up = |r: &Arc<Replica>| r.healthy.load(Ordering::Relaxed) && !r.is_down(now);
        let rotated = || (0..n).map(|i| &replicas[(start + i) % n]);
        let mut order = Vec::with_capacity(n);
        order.extend(rotated().filter(|r| up(r)).cloned());
        order.extend(rotated().filter(|r| !up(r)).cloned());
        order
    }

    /// Uses `cert_key` for new upstream connections (pooled ones keep theirs: the pool
    /// key includes the certificate serial).
    pub fn set_client_cert(&self, cert_key: Arc<CertKey>) {
        let mut in_force = self.cert_key.lock().unwrap_or_else(|e| e.into_inner());
        *in_force = cert_key.clone();
        for replica in self.replicas.load().iter() {
            replica.peer.store(Arc::new(ReplicaPeer::new(make_peer(
                replica.addr,
                &self.server_name,
                &self.ca,
                cert_key.clone(),
            ))));
        }
    }

    /// Whether some replica answered a health check or a request within [`READY_WITHIN`].
    pub fn ready(&self) -> bool {
        let now = self.now_ms();
        self.replicas.load().iter().any(|r| {
            let ok = r.last_ok_ms.load(Ordering::Relaxed);
            ok != 0 && now.saturating_sub(ok) <= READY_WITHIN.as_millis() as u64
        })
    }

    /// `(address, healthy)` of every replica, as the last health check saw it.
    pub fn health(&self) -> Vec<(SocketAddr, bool)> {
        self.replicas
            .load()
            .iter()
            .map(|r| (r.addr, r.healthy.load(Ordering::Relaxed)))
            .collect()
    }

    /// Polls every replica's `/ready` every [`HEALTH_CHECK_INTERVAL`] (a tokio task).
    pub fn start_health_checks(
        self: &Arc<Self>,
        metrics: Arc<GatewayMetrics>,
    ) -> tokio::task::AbortHandle {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEALTH_CHECK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                pool.check_all(&metrics).await;
            }
        })
        .abort_handle()
    }

    /// One round of health checks, all replicas concurrently.
    pub async fn check_all(&self, metrics: &GatewayMetrics) {
        let replicas = self.replicas.load_full();
        let checks = replicas.iter().map(|replica| async move {
            let ok = tokio::time::timeout(HEALTH_CHECK_TIMEOUT, self.check(replica))
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
            let was = replica.healthy.swap(ok.is_ok(), Ordering::Relaxed);
            match &ok {
                Ok(()) => {
                    replica
                        .last_ok_ms
                        .store(self.now_ms().max(1), Ordering::Relaxed);
                    if !was {
                        tracing::info!(upstream = %replica.addr, "keysvc replica healthy again");
                    }
                }
                Err(e) if was => {
                    tracing::warn!(upstream = %replica.addr, error = %e, "keysvc replica failed its health check");
                }
                Err(_) => {}
            }
            metrics.set_upstream_healthy(&replica.addr.to_string(), ok.is_ok());
        });
        futures::future::join_all(checks).await;
    }

    /// Makes the replicas exactly `desired` (order kept for the replicas that stay, new
    /// ones appended); replicas that stay keep their health state. Returns what changed.
    pub fn set_addresses(&self, desired: &[SocketAddr]) -> Reconciliation {
        let cert_key = self.cert_key.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.replicas.load_full();
        let addrs: Vec<SocketAddr> = current.iter().map(|r| r.addr).collect();
        let change = reconcile(&addrs, desired);
        if change.is_empty() {
            return change;
        }
        let replicas: Vec<Arc<Replica>> = current
            .iter()
            .filter(|r| !change.removed.contains(&r.addr))
            .cloned()
            .chain(change.added.iter().map(|&addr| {
                Arc::new(new_replica(
                    addr,
                    &self.server_name,
                    &self.ca,
                    cert_key.clone(),
                ))
            }))
            .collect();
        self.replicas.store(Arc::new(replicas));
        change
    }

    /// Resolves the `HOST:PORT` upstreams now and every `interval` (a tokio task; the first
    /// lookup starts at once), updating the replicas. `None` when every upstream is an
    /// `IP:PORT`.
    pub fn start_resolver(
        self: &Arc<Self>,
        interval: Duration,
        metrics: Arc<GatewayMetrics>,
    ) -> Option<tokio::task::AbortHandle> {
        if self.dns.is_empty() {
            return None;
        }
        let pool = Arc::downgrade(self);
        let static_addrs = self.static_addrs.clone();
        let dns = self.dns.clone();
        let task = tokio::spawn(async move {
            // What each name last resolved to (kept when a lookup fails or is empty).
            let mut resolved: Vec<Vec<SocketAddr>> = vec![Vec::new(); dns.len()];
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for ((host, port), last) in dns.iter().zip(resolved.iter_mut()) {
                    let lookup = tokio::time::timeout(
                        RESOLVE_TIMEOUT,
                        tokio::net::lookup_host((host.as_str(), *port)),
                    )
                    .await;
                    match lookup {
                        Ok(Ok(addrs)) => {
                            let mut addrs: Vec<SocketAddr> = addrs.collect();
                            addrs.sort();
                            addrs.dedup();
                            if addrs.is_empty() {
                                tracing::warn!(upstream = %host, "upstream name resolved to no address; keeping the previous ones");
                            } else {
                                *last = addrs;
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(upstream = %host, error = %e, "cannot resolve upstream name; keeping the previous addresses");
                        }
                        Err(_) => {
                            tracing::warn!(upstream = %host, "upstream name lookup timed out; keeping the previous addresses");
                        }
                    }
                }
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                let mut desired = static_addrs.clone();
                for addr in resolved.iter().flatten() {
                    if !desired.contains(addr) {
                        desired.push(*addr);
                    }
                }
                let change = pool.set_addresses(&desired);
                for addr in &change.added {
                    tracing::info!(upstream = %addr, "keysvc replica added (DNS)");
                    metrics.set_upstream_healthy(&addr.to_string(), true);
                }
                for addr in &change.removed {
                    tracing::info!(upstream = %addr, "keysvc replica removed (DNS)");
                    metrics.set_upstream_healthy(&addr.to_string(), false);
                }
            }
        });
        Some(task.abort_handle())
    }

    async fn check(&self, replica: &Replica) -> Result<(), String> {
        // Health checks keep connections of their own: a pooled HTTP/2 connection is driven
        // on the runtime that opened it, and request traffic should stay on the listeners'
        // runtimes rather than hop to the background one for every request.
        let mut peer = HttpPeer::clone(&replica.peer.load().peer);
        peer.group_key = HEALTH_CHECK_GROUP;
        let peer = &peer;
        let mut session = self.h2_session(peer).await.map_err(|e| match e {
            Attempt::NotSent(e) | Attempt::Sent(e) => e,
        })?;
        let mut header =
            RequestHeader::build("GET", b"/ready", Some(2)).map_err(|e| e.to_string())?;
        header
            .insert_header("host", &peer.sni)
            .map_err(|e| e.to_string())?;
        session
            .write_request_header(Box::new(header), true)
            .map_err(|e| e.to_string())?;
        session
            .read_response_header()
            .await
            .map_err(|e| e.to_string())?;
        let status = session
            .response_header()
            .map(|h| h.status.as_u16())
            .unwrap_or(0);
        while session
            .read_response_body()
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {}
        self.connector
            .release_http_session(session, peer, Some(POOL_IDLE_TIMEOUT));
        if status == 200 {
            Ok(())
        } else {
            Err(format!("/ready answered HTTP {status}"))
        }
    }

    /// A stream on a pooled HTTP/2 connection to `peer`, or on a new one. The connect path
    /// (TCP, TLS and HTTP/2 handshakes) is a future of several KiB: it is boxed, and taken
    /// only when no pooled connection has a free stream, so that the per-request future
    /// (allocated and moved for every request) holds only the pool lookup.
    async fn h2_session<P: Peer + Send + Sync + 'static>(
        &self,
        peer: &P,
    ) -> Result<Http2Session, Attempt> {
        if let Some(session) = self.pooled_session(peer).await? {
            return Ok(session);
        }
        match Box::pin(self.connector.new_http_session::<_, ()>(peer)).await {
            Ok(HttpSession::H2(session)) => Ok(session),
            Ok(_) => Err(Attempt::NotSent(
                "the replica did not negotiate HTTP/2 (ALPN h2)".into(),
            )),
            Err(e) => Err(Attempt::NotSent(e.to_string())),
        }
    }

    /// A stream on a pooled connection to `peer` with a free one, if there is one.
    async fn pooled_session<P: Peer + Send + Sync + 'static>(
        &self,
        peer: &P,
    ) -> Result<Option<Http2Session>, Attempt> {
        self.connector
            .reused_http_session(peer)
            .await
            .map_err(|e| Attempt::NotSent(e.to_string()))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A stream to `replica` taken in turn at its `acquire` lock: the first of a burst
    /// opens the connection and the others then find it pooled.
    async fn session_in_turn(
        &self,
        replica: &Replica,
        peer: &ReplicaPeer,
    ) -> Result<Http2Session, Attempt> {
        let waited_from = self.now_ms();
        let _turn = replica.acquire.lock().await;
        // A request ahead of this one failed to connect while this one waited: do not
        // spend another connect timeout on the replica; the caller tries the next.
        if replica.down_since_ms.load(Ordering::Relaxed) >= waited_from.max(1) {
            return Err(Attempt::NotSent(
                "a concurrent request could not connect".into(),
            ));
        }
        self.h2_session(peer).await.inspect_err(|_| {
            // Marked before the next waiter looks.
            replica.mark_down(self.now_ms());
        })
    }

    async fn exchange(
        &self,
        replica: &Replica,
        request: &Bytes,
        who: &TenantHeaders<'_>,
    ) -> Result<Bytes, Attempt> {
        let peer = &*replica.peer.load_full();
        // A pooled connection with a free stream needs no turn at `acquire`.
        let mut session = match self.pooled_session(peer).await? {
            Some(session) => session,
            None => self.session_in_turn(replica, peer).await?,
        };
        let header = request_header(peer.sni(), request.len(), who)
            .map_err(|e| Attempt::NotSent(e.to_string()))?;
        // [`EXCHANGE_TIMEOUT`] bounds the whole exchange (`forward`), so the session's own
        // per-read timers are left unset. Writing the header only queues HEADERS on the
        // stream: a failure means the pooled connection was already unusable and nothing of
        // this request left.
        session
            .write_request_header(header, false)
            .map_err(|e| Attempt::NotSent(e.to_string()))?;
        // The body goes into the stream's send buffer at once, with END_STREAM, so that
        // HEADERS and DATA leave in one write. Pingora's `write_request_body` first waits for
        // flow-control capacity, which h2 grants a new stream only after the connection task
        // has sent its HEADERS: every request then took two writes and a round trip between
        // this task and the connection's. Buffering the whole body is bounded: a KMIP
        // request is at most the listener's message size limit.
        session
            .take_request_body_writer()
            .ok_or_else(|| Attempt::NotSent("the request stream has no body writer".into()))?
            .send_data(request.clone(), true)
            .map_err(|e| Attempt::Sent(e.to_string()))?;
        session
            .read_response_header()
            .await
            .map_err(|e| Attempt::Sent(e.to_string()))?;
        let status = session
            .response_header()
            .map(|h| h.status.as_u16())
            .unwrap_or(0);
        // An answer that arrives in one DATA frame (most do) is kept as it came; only a
        // longer one is gathered into a buffer.
        let mut body = Bytes::new();
        let mut gathered: Option<BytesMut> = None;
        while let Some(chunk) = session
            .read_response_body()
            .await
            .map_err(|e| Attempt::Sent(e.to_string()))?
        {
            let len = gathered.as_ref().map_or(body.len(), BytesMut::len);
            if len + chunk.len() > MAX_RESPONSE_SIZE {
                return Err(Attempt::Sent(format!(
                    "answer larger than {MAX_RESPONSE_SIZE} bytes"
                )));
            }
            match &mut gathered {
                Some(buffer) => buffer.extend_from_slice(&chunk),
                None if body.is_empty() => body = chunk,
                None => {
                    let mut buffer = BytesMut::with_capacity(body.len() + chunk.len());
                    buffer.extend_from_slice(&body);
                    buffer.extend_from_slice(&chunk);
                    gathered = Some(buffer);
                }
            }
        }
        let body = gathered.map_or(body, BytesMut::freeze);
        self.connector
            .release_http_session(session, peer, Some(POOL_IDLE_TIMEOUT));
        if status != 200 {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(Attempt::Sent(format!("HTTP {status}: {text}")));
        }
        Ok(body)
    }
}

/// What [`reconcile`] found: addresses to add (in `desired` order, once each) and to
/// remove (in `current` order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    pub added: Vec<SocketAddr>,
    pub removed: Vec<SocketAddr>,
}

impl Reconciliation {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// The changes that turn the replica addresses `current` into `desired`.
pub fn reconcile(current: &[SocketAddr], desired: &[SocketAddr]) -> Reconciliation {
    let mut added: Vec<SocketAddr> = Vec::new();
    for addr in desired {
        if !current.contains(addr) && !added.contains(addr) {
            added.push(*addr);
        }
    }
    let mut removed: Vec<SocketAddr> = Vec::new();
    for addr in current {
        if !desired.contains(addr) && !removed.contains(addr) {
            removed.push(*addr);
        }
    }
    Reconciliation { added, removed }
}

fn new_replica(
    addr: SocketAddr,
    server_name: &str,
    ca: &Arc<[WrappedX509]>,
    cert_key: Arc<CertKey>,
) -> Replica {
    Replica {
        addr,
        peer: ArcSwap::from_pointee(ReplicaPeer::new(make_peer(addr, server_name, ca, cert_key))),
        down_since_ms: AtomicU64::new(0),
        healthy: AtomicBool::new(true),
        last_ok_ms: AtomicU64::new(0),
        acquire: tokio::sync::Mutex::new(()),
    }
}

/// A replica's peer with its pool key computed once. Pingora derives an `HttpPeer`'s reuse
/// hash from its fields on every pool lookup and release (two per request), formatting the
/// client certificate's serial as text each time: ~3% of the gateway's CPU under load.
/// Everything else is the `HttpPeer`'s; a certificate reload makes a new one, and the
/// options cannot be changed behind the hash (`get_mut_peer_options` stays `None`).
#[derive(Clone)]
struct ReplicaPeer {
    peer: HttpPeer,
    reuse_hash: u64,
}

impl ReplicaPeer {
    fn new(peer: HttpPeer) -> Self {
        let reuse_hash = peer.reuse_hash();
        Self { peer, reuse_hash }
    }
}

impl std::fmt::Display for ReplicaPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.peer.fmt(f)
    }
}

impl Peer for ReplicaPeer {
    fn address(&self) -> &pingora::protocols::l4::socket::SocketAddr {
        self.peer.address()
    }

    fn tls(&self) -> bool {
        self.peer.tls()
    }

    fn sni(&self) -> &str {
        self.peer.sni()
    }

    fn reuse_hash(&self) -> u64 {
        self.reuse_hash
    }

    fn get_peer_options(&self) -> Option<&PeerOptions> {
        self.peer.get_peer_options()
    }

    fn get_proxy(&self) -> Option<&Proxy> {
        self.peer.get_proxy()
    }

    fn matches_fd<V: std::os::fd::AsRawFd>(&self, fd: V) -> bool {
        self.peer.matches_fd(fd)
    }

    fn get_client_cert_key(&self) -> Option<&Arc<CertKey>> {
        self.peer.get_client_cert_key()
    }

    fn get_tracer(&self) -> Option<Tracer> {
        self.peer.get_tracer()
    }
}

fn make_peer(
    addr: SocketAddr,
    server_name: &str,
    ca: &Arc<[WrappedX509]>,
    cert_key: Arc<CertKey>,
) -> HttpPeer {
    let mut peer = HttpPeer::new_mtls(addr, server_name.to_owned(), cert_key);
    peer.options.ca = Some(ca.clone());
    // HTTP/2 only: many requests multiplexed on one connection per replica. Pingora's
    // default is one stream per connection, which made every concurrent request open (and
    // every finished one park) a connection of its own.
    peer.options.set_http_version(2, 2);
    peer.options.max_h2_streams = MAX_STREAMS_PER_CONNECTION;
    peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
    peer.options.total_connection_timeout = Some(CONNECT_TIMEOUT);
    peer.options.idle_timeout = Some(POOL_IDLE_TIMEOUT);
    peer
}

fn request_header(
    authority: &str,
    len: usize,
    who: &TenantHeaders<'_>,
) -> pingora::Result<Box<RequestHeader>> {
    // No header-name case map: that is for HTTP/1 and HTTP/2 sends names in lower case.
    let mut header = RequestHeader::build_no_case("POST", contract::KMIP_PATH.as_bytes(), Some(8))?;
    header.insert_header("host", authority)?;
    header.insert_header(
        "content-type",
        http::HeaderValue::from_static("application/octet-stream"),
    )?;
    header.insert_header("content-length", http::HeaderValue::from(len))?;
    header.insert_header(contract::TENANT_HEADER, who.tenant)?;
    if let Some(database) = who.database {
        header.insert_header(contract::DATABASE_HEADER, database)?;
    }
    header.insert_header(contract::CLIENT_HEADER, who.client)?;
    // Unique per request: marked never-indexed, so that it does not churn the HTTP/2
    // header table and push out the repeated headers above (sent as one-byte indexes).
    let mut request_id = http::HeaderValue::from_str(who.request_id).map_err(|e| {
        pingora::Error::because(
            pingora::ErrorType::InvalidHTTPHeader,
            contract::REQUEST_ID_HEADER,
            e,
        )
    })?;
    request_id.set_sensitive(true);
    header.insert_header(contract::REQUEST_ID_HEADER, request_id)?;
    Ok(Box::new(header))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|a| a.parse().expect("socket address"))
            .collect()
    }

    #[test]
    fn reconcile_adds_new_and_removes_gone_addresses() {
        let change = reconcile(
            &addrs(&["10.0.0.1:9443", "10.0.0.2:9443"]),
            &addrs(&["10.0.0.2:9443", "10.0.0.3:9443", "10.0.0.3:9443"]),
        );
        assert_eq!(
            change,
            Reconciliation {
                added: addrs(&["10.0.0.3:9443"]),
                removed: addrs(&["10.0.0.1:9443"]),
            }
        );
    }

    #[test]
    fn reconcile_of_the_same_set_changes_nothing() {
        let set = addrs(&["10.0.0.1:9443", "[::1]:9443"]);
        let reversed: Vec<_> = set.iter().rev().copied().collect();
        assert!(reconcile(&set, &reversed).is_empty());
        assert!(reconcile(&[], &[]).is_empty());
    }

    #[test]
    fn reconcile_from_and_to_nothing() {
        let set = addrs(&["10.0.0.1:9443", "10.0.0.2:9443"]);
        assert_eq!(reconcile(&[], &set).added, set);
        assert_eq!(reconcile(&set, &[]).removed, set);
        assert_eq!(
            reconcile(&addrs(&["10.0.0.1:9443"]), &addrs(&["10.0.0.1:9444"])),
            Reconciliation {
                added: addrs(&["10.0.0.1:9444"]),
                removed: addrs(&["10.0.0.1:9443"]),
            }
        );
    }
}
