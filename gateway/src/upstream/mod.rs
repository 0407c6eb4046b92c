//! The keysvc pool: one KMIP request = one `POST /v1/kmip` over HTTP/2 + mTLS, balanced
//! round robin per request (not per connection: KMIP clients hold connections for hours),
//! retried on another replica when that cannot change the outcome.
//!
//! Retry rule (at most [`retry::MAX_ATTEMPTS`] replicas per request):
//! - the request provably never reached the replica — connect or TLS failed, a pooled
//!   HTTP/2 connection died before the request headers left, the stream was refused
//!   (REFUSED_STREAM), or a graceful GOAWAY's last stream id is below the request's stream
//!   → one more replica, whatever the operation; the replica is then skipped for
//!   [`DOWN_FOR`] unless every replica is down;
//! - anything after the request may have reached the replica (reset mid-exchange, timeout,
//!   non-200 status, a connection broken after sending) → no retry, not even for reads: a
//!   request that crashed one replica must not be handed to the next. The caller answers
//!   General Failure ("may or may not have been applied").
//!
//! Replicas come from `--upstream`: an `IP:PORT` is one replica for the gateway's lifetime;
//! a `HOST:PORT` (e.g. a Kubernetes headless Service) is one replica per address the name
//! resolves to, re-resolved every `--upstream-resolve-interval` ([`UpstreamPool::start_resolver`]):
//! new addresses become replicas, replicas whose address disappeared are dropped (requests
//! in flight on them finish: each request holds the replica list it started with), and
//! replicas whose address stays keep their health state. A failed or empty lookup keeps
//! the addresses that name resolved to before. The gateway starts before the first lookup
//! answers and is not ready until some replica has answered.
//!
//! By concern: `replicas` (the replica set, DNS re-resolution, certificate reloads),
//! `health` (the `/ready` checks), `session` (the pooled HTTP/2 sessions and the connect
//! path), `retry` (the order replicas are tried in and the retry rule above), `request`
//! (one request's headers and exchange with one replica).

mod health;
mod replicas;
mod request;
mod retry;
mod session;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora::connectors::http::v2::Connector;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};

use crate::config::UpstreamAddr;
use crate::tls::{self, TlsError};

use replicas::new_replica;
pub use replicas::{reconcile, Reconciliation};
use session::ReplicaPeer;

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
    /// Pingora's HTTP/2 connector and its pools (peers speak HTTP/2 only, `session::make_peer`).
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

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}
