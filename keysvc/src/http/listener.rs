//! Accept loops for both listeners: TLS handshakes (client certificate mandatory), HTTP/1
//! and HTTP/2 connections, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::PeerIdentity;

/// A client that has not finished its TLS handshake by then is dropped: handshakes take
/// milliseconds, and a stalled one holds a socket and a task.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 pings on idle connections, so a gateway that vanished without a FIN is noticed
/// and its connection freed; well under typical load-balancer idle timeouts (60 s).
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// Concurrent streams per HTTP/2 connection: each in-flight KMIP request is one stream;
/// a gateway keeps a few connections per replica, so 256 each is ample, and it bounds what
/// one connection can make this process buffer (256 × the body limit).
const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 256;

/// How a listener's connections arrive.
#[derive(Clone)]
pub enum Transport {
    /// Plain TCP (the management listener).
    Plain,
    /// TLS with a mandatory, verified client certificate (the API listener).
    Tls(TlsAcceptor),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain => "Plain",
            Self::Tls(_) => "Tls",
        })
    }
}

/// What the listener knows about a request's connection; in every request's extensions.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub remote: SocketAddr,
    /// The verified client certificate's identities (TLS listener only).
    pub peer: Option<Arc<PeerIdentity>>,
}

/// Serves `app` on `listener` until `shutdown` fires, then stops accepting, lets open
/// connections finish their in-flight requests (HTTP/2 GOAWAY, HTTP/1 close after the
/// current response) for at most `grace`, and returns.
pub async fn serve(
    listener: TcpListener,
    transport: Transport,
    app: Router,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS);
    builder.http1().timer(TokioTimer::new());
    loop {
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the listener stays.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let app = app.clone();
        let transport = transport.clone();
        tokio::spawn(async move {
            match transport {
                Transport::Plain => {
                    let info = ConnectionInfo { remote, peer: None };
                    serve_connection(&builder, stream, app, info, watcher).await;
                }
                Transport::Tls(acceptor) => {
                    if let Some((tls, info)) = handshake(&acceptor, stream, remote).await {
                        serve_connection(&builder, tls, app, info, watcher).await;
                    }
                }
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(connections = open, "draining connections");
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "connections still open after the grace period; closing"
        );
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, ConnectionInfo)> {
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(%remote, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::info!(%remote, "TLS handshake timed out");
            return None;
        }
    };
    // The verifier requires a certificate, so one is there; its identities may not parse.
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| PeerIdentity::from_der(leaf.as_ref()));
    let peer = match peer {
        Some(Ok(peer)) => Some(Arc::new(peer)),
        Some(Err(e)) => {
            tracing::info!(%remote, error = %e, "client certificate identities unreadable");
            None
        }
        None => None,
    };
    Some((tls, ConnectionInfo { remote, peer }))
}

async fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    app: Router,
    info: ConnectionInfo,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let remote = info.remote;
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        app.clone().oneshot(req)
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}
