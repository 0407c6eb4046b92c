//! The HTTP/2 session pool: streams on pooled connections to a replica, new connections
//! taken in turn, and the replica's peer (TLS, HTTP/2 options, cached pool key).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v2::client::Http2Session;
use pingora::upstreams::peer::{HttpPeer, Peer, PeerOptions, Proxy, Tracer};
use pingora::utils::tls::{CertKey, WrappedX509};

use super::retry::Attempt;
use super::{
    Replica, UpstreamPool, CONNECT_TIMEOUT, MAX_STREAMS_PER_CONNECTION, POOL_IDLE_TIMEOUT,
};

impl UpstreamPool {
    /// A stream on a pooled HTTP/2 connection to `peer`, or on a new one. The connect path
    /// (TCP, TLS and HTTP/2 handshakes) is a future of several KiB: it is boxed, and taken
    /// only when no pooled connection has a free stream, so that the per-request future
    /// (allocated and moved for every request) holds only the pool lookup.
    pub(super) async fn h2_session<P: Peer + Send + Sync + 'static>(
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
    pub(super) async fn pooled_session<P: Peer + Send + Sync + 'static>(
        &self,
        peer: &P,
    ) -> Result<Option<Http2Session>, Attempt> {
        self.connector
            .reused_http_session(peer)
            .await
            .map_err(|e| Attempt::NotSent(e.to_string()))
    }

    /// A stream to `replica` taken in turn at its `acquire` lock: the first of a burst
    /// opens the connection and the others then find it pooled.
    pub(super) async fn session_in_turn(
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
}

/// A replica's peer with its pool key computed once. Pingora derives an `HttpPeer`'s reuse
/// hash from its fields on every pool lookup and release (two per request), formatting the
/// client certificate's serial as text each time: ~3% of the gateway's CPU under load.
/// Everything else is the `HttpPeer`'s; a certificate reload makes a new one, and the
/// options cannot be changed behind the hash (`get_mut_peer_options` stays `None`).
#[derive(Clone)]
pub(super) struct ReplicaPeer {
    pub(super) peer: HttpPeer,
    reuse_hash: u64,
}

impl ReplicaPeer {
    pub(super) fn new(peer: HttpPeer) -> Self {
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

pub(super) fn make_peer(
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
