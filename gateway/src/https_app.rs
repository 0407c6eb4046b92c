//! The management + KMIP-over-HTTPS listener (HTTP/2 or HTTP/1.1 over TLS, by ALPN; a
//! Pingora `ServeHttp` app):
//!
//! - `GET /health`: liveness, always 200 while the process serves;
//! - `GET /ready`: 200 when the routing table is loaded (always, once started) and some
//!   keysvc replica answered its `/ready` (or a request) within
//!   [`crate::upstream::READY_WITHIN`], else 503; 503 from the start of a graceful stop;
//! - `GET /metrics`: OpenMetrics text;
//! - `POST /kmip`: a TTLV request as the body, the TTLV answer as the body
//!   (`application/octet-stream`), routed and forwarded exactly like on the KMIP port.
//!   A client certificate is required: none → 401; a certificate no rule routes, or one
//!   that expired or no longer verifies against the client CA bundle since the connection
//!   was opened → 403 with the KMIP *Permission Denied* answer as the body. Every request
//!   is decided and checked afresh.
//!
//! The TLS layer asks for a client certificate but accepts connections without one
//! (probes, Prometheus); a certificate that is sent must chain to the client CA.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::kmip_app::{client_header, KmipApp};
use crate::metrics::{GatewayMetrics, RequestCounters};
use crate::routing::Decision;
use crate::tls::{verified_peer, ReloadingClientVerifier};
use crate::upstream::UpstreamPool;

/// The HTTPS listener's application.
#[derive(Debug)]
pub struct HttpsApp {
    kmip: Arc<KmipApp>,
    /// The HTTPS listener's client-certificate verifier.
    verifier: Arc<ReloadingClientVerifier>,
    upstream: Arc<UpstreamPool>,
    metrics: Arc<GatewayMetrics>,
    /// Set when a graceful stop begins.
    draining: Arc<AtomicBool>,
}

impl HttpsApp {
    pub fn new(
        kmip: Arc<KmipApp>,
        verifier: Arc<ReloadingClientVerifier>,
        upstream: Arc<UpstreamPool>,
        metrics: Arc<GatewayMetrics>,
        draining: Arc<AtomicBool>,
    ) -> Self {
        Self {
            kmip,
            verifier,
            upstream,
            metrics,
            draining,
        }
    }

    async fn kmip(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let digest = session.digest().and_then(|d| d.ssl_digest.clone());
        let Some(verified) = digest.as_deref().and_then(verified_peer) else {
            return text(401, "a client certificate is required for /kmip\n");
        };
        let peer = verified.identity.clone();
        let revoked = self.kmip.recheck(verified, &self.verifier).err();
        let max = self.kmip.max_message_size();
        let mut body = BytesMut::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > max {
                        return text(413, "KMIP request too large\n");
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return text(400, &format!("request body: {e}\n")),
            }
        }
        let request: Bytes = body.freeze();
        let header: Option<[u8; kmip::ttlv::HEADER_LEN]> = request
            .get(..kmip::ttlv::HEADER_LEN)
            .and_then(|h| h.try_into().ok());
        match header.map(|h| kmip::ttlv::message_len(&h, max)) {
            Some(Ok(len)) if len == request.len() => {}
            Some(Err(e)) => return text(400, &format!("not a TTLV message: {e}\n")),
            _ => return text(400, "the body is not exactly one TTLV message\n"),
        }
        if let Some(revoked) = revoked {
            let answer = kmip::relay::error_response(
                &request,
                kmip::spec::ResultReason::PermissionDenied,
                &revoked.to_string(),
            );
            return Response::builder()
                .status(403)
                .header("content-type", "application/octet-stream")
                .header("content-length", answer.len())
                .body(answer)
                .unwrap_or_else(|_| Response::new(Vec::new()));
        }
        // One decision per HTTP request (there is no long-lived KMIP connection here).
        let decision = self.kmip.decide(Some(&peer));
        let status = match decision {
            Decision::Allow(_) => 200,
            Decision::Deny { .. } => 403,
        };
        let answer = self
            .kmip
            .answer(
                request,
                &decision,
                &client_header(&peer),
                &mut RequestCounters::default(),
            )
            .await
            .to_vec();
        Response::builder()
            .status(status)
            .header("content-type", "application/octet-stream")
            .header("content-length", answer.len())
            .body(answer)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

#[async_trait]
impl ServeHttp for HttpsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        match (method.as_str(), path.as_str()) {
            // `/management/health` is the seed deployment's probe path.
            ("GET", "/health" | "/management/health") => text(200, "ok\n"),
            ("GET", "/ready") => {
                if self.draining.load(Ordering::Relaxed) {
                    text(503, "stopping (draining)\n")
                } else if self.upstream.ready() {
                    text(200, "ready\n")
                } else {
                    text(503, "no keysvc replica answered recently\n")
                }
            }
            ("GET", "/metrics") => {
                let body = self.metrics.encode().into_bytes();
                Response::builder()
                    .status(200)
                    .header(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .header("content-length", body.len())
                    .body(body)
                    .unwrap_or_else(|_| Response::new(Vec::new()))
            }
            ("POST", "/kmip") => self.kmip(session).await,
            (_, "/health" | "/management/health" | "/ready" | "/metrics" | "/kmip") => {
                text(405, "method not allowed\n")
            }
            _ => text(404, "not found\n"),
        }
    }
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .header("content-length", body.len())
        .body(body.as_bytes().to_vec())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}
