//! Accept loops for both listeners: TLS handshakes (client certificate mandatory), HTTP/1
//! and HTTP/2 connections, and graceful shutdown.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::streams::ConnectionStreams;
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
    runtime::serve::accept_until(listener, shutdown, grace, |stream, remote, watcher| {
        let app = app.clone();
        let transport = transport.clone();
        async move {
            match transport {
                Transport::Plain => {
                    let info = ConnectionInfo { remote, peer: None };
                    serve_connection(stream, app, info, watcher).await;
                }
                Transport::Tls(acceptor) => {
                    if let Some((tls, info)) = handshake(&acceptor, stream, remote).await {
                        serve_connection(tls, app, info, watcher).await;
                    }
                }
            }
        }
    })
    .await;
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

async fn serve_connection<I>(io: I, app: Router, info: ConnectionInfo, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let remote = info.remote;
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        app.clone().oneshot(req)
    });
    // The connection's streams run in its own task (see `streams`).
    let streams = ConnectionStreams::default();
    let mut builder = auto::Builder::new(streams.clone());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS);
    builder.http1().timer(TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(Unvectored(io)), service);
    if let Err(e) = streams.drive(watcher.watch(connection)).await {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

/// A connection's transport as HTTP/2 sees it: without vectored writes. h2 then copies
/// frames of up to 1 KiB into its write buffer and writes the buffer once when the
/// connection flushes; with vectored writes it sends every DATA frame of 256 bytes or more
/// (a KMIP Get answer is ~270) on its own, flushing before the next: one TLS record and one
/// system call per answer, even when a read had brought dozens of requests.
struct Unvectored<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for Unvectored<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Unvectored<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
