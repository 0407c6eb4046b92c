//! The workload side: a Unix socket (plain TTLV) and a localhost TLS listener. Each
//! connection reads one framed request at a time, has the gateway answer it, and writes the
//! answer back; whatever goes wrong upstream, the workload reads a KMIP error response.

use std::sync::Arc;
use std::time::Duration;

use kmip::framing::{MessageReader, ReadError};
use kmip::relay::error_response;
use kmip::spec::ResultReason;
use kmip::ttlv;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::SidecarMetrics;
use crate::upstream::Upstream;

/// Once a message header has arrived, its body must follow within this.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A workload's TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection shares.
#[derive(Debug, Clone)]
pub struct Relay {
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<SidecarMetrics>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

impl Relay {
    /// Accepts on the Unix socket until shutdown.
    pub async fn serve_unix(self, listener: UnixListener) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = self.shutdown.cancelled() => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    let relay = self.clone();
                    self.tasks
                        .spawn(async move { relay.serve_connection(stream, "unix").await });
                }
                Err(e) => accept_failed(&e).await,
            }
        }
    }

    /// Accepts on the local TLS listener until shutdown.
    pub async fn serve_tls(self, listener: TcpListener, acceptor: TlsAcceptor) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = self.shutdown.cancelled() => return,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let relay = self.clone();
                    let acceptor = acceptor.clone();
                    self.tasks.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => relay.serve_connection(tls, "tls").await,
                            Ok(Err(e)) => {
                                tracing::info!(%peer, error = %e, "local TLS handshake failed")
                            }
                            Err(_) => tracing::info!(%peer, "local TLS handshake timed out"),
                        }
                    });
                }
                Err(e) => accept_failed(&e).await,
            }
        }
    }

    async fn serve_connection<S>(self, mut stream: S, listener: &'static str)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let _open = self.metrics.connection();
        loop {
            let request = tokio::select! {
                next = read_request(&mut stream) => next,
                () = self.shutdown.cancelled() => return,
            };
            let request = match request {
                Ok(Some(request)) => request,
                Ok(None) => return,
                Err(Refusal { answer, reason }) => {
                    tracing::info!(listener, reason, "workload request refused");
                    self.metrics.request(listener, false);
                    if let Some(answer) = answer {
                        let _ = stream.write_all(&answer).await;
                        let _ = stream.shutdown().await;
                        // Closing with unread input would reset the connection and could
                        // destroy the answer before the workload reads it.
                        drain(&mut stream).await;
                    }
                    return;
                }
            };
            let (answer, ok) = match self.upstream.forward(&request).await {
                Ok(answer) => (answer, true),
                Err(e) => {
                    tracing::warn!(listener, error = %e, "request not served");
                    (
                        error_response(&request, ResultReason::GeneralFailure, e.kmip_message()),
                        false,
                    )
                }
            };
            self.metrics.request(listener, ok);
            if stream.write_all(&answer).await.is_err() || stream.flush().await.is_err() {
                return;
            }
        }
    }
}

/// A request that cannot be forwarded: the connection closes, after a KMIP error when the
/// workload can still read one.
struct Refusal {
    answer: Option<Vec<u8>>,
    reason: String,
}

/// The next framed request; `None` at a clean end of stream between messages. The body
/// timeout runs from the first byte of a message.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<Vec<u8>>, Refusal> {
    let gone = |reason: String| Refusal {
        answer: None,
        reason,
    };
    let mut reader = MessageReader::new(ttlv::DEFAULT_MAX_MESSAGE_SIZE);
    match reader.first_bytes(stream).await {
        Ok(()) => {}
        Err(ReadError::Closed) => return Ok(None),
        Err(e) => return Err(gone(e.to_string())),
    }
    let mut request = Vec::new();
    match tokio::time::timeout(BODY_TIMEOUT, reader.read(stream, &mut request)).await {
        Ok(Ok(())) => Ok(Some(request)),
        Ok(Err(e @ (ReadError::Header(_) | ReadError::TooLarge { .. }))) => Err(Refusal {
            answer: Some(error_response(
                reader.header_bytes(),
                ResultReason::InvalidMessage,
                "openkcm sidecar: not a KMIP TTLV message (or larger than 1 MiB)",
            )),
            reason: e.to_string(),
        }),
        Ok(Err(e)) => Err(gone(e.to_string())),
        Err(_) => Err(gone("request body timed out".into())),
    }
}

/// Reads and discards what the peer still sends (bounded in bytes and time).
async fn drain<S: AsyncRead + Unpin>(stream: &mut S) {
    const MAX_DRAIN: usize = 64 * 1024;
    let mut scratch = [0u8; 4096];
    let mut total = 0;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while total < MAX_DRAIN {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// Accept errors (e.g. too many open files) must not spin the loop.
async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
