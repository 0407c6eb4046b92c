//! The internal API: KMIP over HTTP/2 with mutual TLS, called by the gateway, plus the
//! management endpoints.
//!
//! ```text
//! mTLS listener (HTTP/2, ALPN h2)            management listener (plain HTTP)
//!   POST /v1/kmip   gateway only ─┐            GET /health  /ready  /metrics
//!   GET  /metrics   gateway only  │
//!   GET  /health /ready  any verified client cert
//!                                 ▼
//!   allow-list (peer certificate) → tenant headers → body limit → TTLV header → Engine
//! ```
//!
//! The mTLS listener's server certificate and client CA bundle follow their files
//! ([`ApiTls`]: re-read on change, new handshakes only).
//!
//! Tenant identity arrives in headers set by the gateway and is believed only when the
//! connection's verified client certificate is on the gateway allow-list. Every refusal
//! before the engine becomes an HTTP status in one place, [`ApiError`]; everything the
//! engine sees is answered in KMIP, whatever it is.

mod identity;
mod listener;
mod streams;
mod tls;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use futures::FutureExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use kmip::contract;
use runtime::fairness::{TenantSlots, Waited};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::engine::Engine;
use crate::health::READY_TIMEOUT;
use crate::metrics::{self, Metrics};
use crate::tenant::{DatabaseName, TenantContext, TenantId};

pub use identity::{GatewayAllowList, IdentityError, PeerIdentity};
pub use listener::{serve, ConnectionInfo, Transport};
pub use tls::{ApiTls, POLL_INTERVAL};
pub use tlsmaterial::TlsError;

/// The tenant the request is for (required from the gateway).
pub const TENANT_HEADER: HeaderName = HeaderName::from_static(contract::TENANT_HEADER);
/// A dedicated database named by the tenant's route (optional).
pub const DATABASE_HEADER: HeaderName = HeaderName::from_static(contract::DATABASE_HEADER);
/// The tenant client's certificate identity as the gateway saw it (audit only).
pub const CLIENT_HEADER: HeaderName = HeaderName::from_static(contract::CLIENT_HEADER);
/// Correlates gateway and keysvc logs; generated when absent, always echoed.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(contract::REQUEST_ID_HEADER);

/// Longest accepted request id or client identity header.
pub use contract::MAX_HEADER_VALUE_LEN;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    pub gateways: Arc<GatewayAllowList>,
    pub max_body_size: usize,
    /// Each tenant's slots for executing requests (`limits.tenant_concurrency`).
    pub tenant_slots: Arc<TenantSlots>,
    /// Cancelled when a graceful stop begins: `/ready` answers 503 from then on, while
    /// every request is still served (the drain period).
    pub draining: CancellationToken,
}

/// Longest a request waits for one of its tenant's slots before it is answered with a
/// KMIP error: well inside the gateway's exchange timeout, long enough to ride out a burst.
pub const TENANT_SLOT_WAIT: Duration = Duration::from_secs(5);

/// The request id of the request being handled.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Routes of the mTLS listener.
pub fn api_router(state: AppState) -> Router {
    let gateway_only = Router::new()
        .route(contract::KMIP_PATH, post(kmip))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_gateway,
        ));
    Router::new()
        .merge(gateway_only)
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}

/// Routes of the plain-HTTP management listener (kubelet probes, Prometheus).
pub fn management_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}

/// Why a request was refused before the engine: the one place such errors become
/// responses (plain-text reason, so an operator with curl sees why).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("client certificate identity {0} is not an allowed gateway")]
    NotGateway(String),
    #[error("no verified client certificate on this connection")]
    NoPeerCertificate,
    #[error("missing header {0}")]
    MissingHeader(HeaderName),
    #[error("invalid header {header}: {reason}")]
    BadHeader { header: HeaderName, reason: String },
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request body is not a KMIP TTLV message: {0}")]
    NotTtlv(String),
    #[error("request body could not be read: {0}")]
    BodyRead(String),
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotGateway(_) | Self::NoPeerCertificate => StatusCode::FORBIDDEN,
            Self::MissingHeader(_)
            | Self::BadHeader { .. }
            | Self::NotTtlv(_)
            | Self::BodyRead(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match status {
            StatusCode::FORBIDDEN => tracing::warn!(reason = %self, "refused"),
            StatusCode::INTERNAL_SERVER_ERROR => tracing::error!(reason = %self, "failed"),
            _ => tracing::info!(reason = %self, "rejected"),
        }
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}\n"),
        )
            .into_response()
    }
}

/// Request id, span and status counting for every request on both listeners.
async fn request_context(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_printable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        tenant = tracing::field::Empty,
    );
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    state.metrics.record_http(status.as_u16());
    span.in_scope(|| tracing::debug!(status = status.as_u16(), "answered"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

/// Ids and identities are logged and echoed: visible ASCII only, bounded length.
fn is_printable(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_HEADER_VALUE_LEN
        && v.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// Admits only connections whose client certificate is on the gateway allow-list.
async fn require_gateway(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = match req
        .extensions()
        .get::<ConnectionInfo>()
        .and_then(|c| c.peer.as_ref())
    {
        Some(peer) => peer,
        None => return Err(ApiError::NoPeerCertificate),
    };
    if state.gateways.permits(peer).is_none() {
        return Err(ApiError::NotGateway(peer.to_string()));
    }
    Ok(next.run(req).await)
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.draining.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: stopping (draining)\n",
        )
            .into_response();
    }
    match tokio::time::timeout(READY_TIMEOUT, state.engine.store().ready()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: database unreachable\n",
            )
                .into_response()
        }
        Err(_) => {
            tracing::warn!("not ready: database did not answer in time");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: database did not answer in time\n",
            )
                .into_response()
        }
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "no such endpoint\n")
}

/// `POST /v1/kmip`: a TTLV request in, the engine's TTLV response out.
async fn kmip(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let ctx = tenant_context(&headers, request_id)?;
    tracing::Span::current().record("tenant", ctx.tenant.as_str());
    // Taken before the body is read and before any store transaction: a tenant with all
    // its slots busy queues behind its own requests and holds neither memory nor database
    // connections while it waits.
    let slot = state
        .tenant_slots
        .take_within(ctx.tenant.as_str(), TENANT_SLOT_WAIT)
        .await;
    let request = read_body(&headers, body, state.max_body_size).await?;
    check_ttlv_header(&request)?;
    let _slot = match slot {
        Waited::AtOnce(slot) => slot,
        Waited::Queued(slot) => {
            state
                .metrics
                .throttled()
                .throttled(ctx.tenant.as_str(), "concurrency");
            slot
        }
        Waited::TimedOut => {
            state
                .metrics
                .throttled()
                .throttled(ctx.tenant.as_str(), "concurrency_timeout");
            tracing::warn!(tenant = %ctx.tenant, limit = state.tenant_slots.per_tenant(), "tenant request refused: all its slots stayed busy");
            let answer = kmip::relay::error_response(
                &request,
                kmip::spec::ResultReason::GeneralFailure,
                "too many concurrent requests for this tenant; not executed, retry later",
            );
            return Ok(
                ([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response(),
            );
        }
    };

    // The engine answers every input in KMIP; a panic would be a bug, and must cost this
    // request only, not the connection with its other streams.
    let handled = std::panic::AssertUnwindSafe(state.engine.handle(&ctx, &request))
        .catch_unwind()
        .await;
    let (response, outcomes) = handled.map_err(|_| ApiError::Internal)?;
    state.metrics.record_kmip(&ctx.tenant, &outcomes);
    state
        .metrics
        .observe_kmip_duration(started.elapsed().as_secs_f64());
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        response,
    )
        .into_response())
}

/// The tenant context from the gateway's headers.
fn tenant_context(headers: &HeaderMap, request_id: String) -> Result<TenantContext, ApiError> {
    let text = |name: &HeaderName| -> Result<Option<&str>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str().map_err(|_| ApiError::BadHeader {
                    header: name.clone(),
                    reason: "not visible ASCII".into(),
                })
            })
            .transpose()
    };
    let tenant = text(&TENANT_HEADER)?.ok_or(ApiError::MissingHeader(TENANT_HEADER))?;
    let tenant = TenantId::parse(tenant).map_err(|e| ApiError::BadHeader {
        header: TENANT_HEADER,
        reason: e.to_string(),
    })?;
    let database = text(&DATABASE_HEADER)?
        .map(|d| {
            DatabaseName::parse(d).map_err(|_| ApiError::BadHeader {
                header: DATABASE_HEADER,
                reason: format!(
                    "1-{} characters of A-Z a-z 0-9 _",
                    contract::MAX_DATABASE_NAME_LEN
                ),
            })
        })
        .transpose()?;
    let client_identity = match text(&CLIENT_HEADER)? {
        Some(c) if is_printable(c) => c.to_owned(),
        Some(_) => {
            return Err(ApiError::BadHeader {
                header: CLIENT_HEADER,
                reason: format!("1-{MAX_HEADER_VALUE_LEN} visible ASCII characters"),
            })
        }
        None => String::new(),
    };
    Ok(TenantContext {
        tenant,
        database,
        client_identity,
        request_id,
    })
}

/// Reads the body, refusing at once when Content-Length already says it is too large and
/// otherwise stopping at the limit.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::BodyTooLarge { limit })
        }
        Err(e) => Err(ApiError::BodyRead(e.to_string())),
    }
}

/// A body that does not even start like a KMIP message is an HTTP-level mistake (wrong
/// endpoint, wrong encoding), not a KMIP request to answer.
fn check_ttlv_header(body: &[u8]) -> Result<(), ApiError> {
    let Some(header) = body.first_chunk::<{ kmip::ttlv::HEADER_LEN }>() else {
        return Err(ApiError::NotTtlv(format!(
            "{} bytes, shorter than a TTLV header",
            body.len()
        )));
    };
    kmip::ttlv::message_len(header, usize::MAX)
        .map(drop)
        .map_err(|e| ApiError::NotTtlv(format!("first 8 bytes are not a Structure header ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_structure_headers_pass_the_ttlv_check() {
        assert!(check_ttlv_header(&[0x42, 0x00, 0x78, 0x01, 0, 0, 0, 0]).is_ok());
        assert!(check_ttlv_header(b"GET / HTTP/1.1").is_err());
        assert!(check_ttlv_header(&[0x42, 0x00, 0x78, 0x02, 0, 0, 0, 4]).is_err());
        assert!(check_ttlv_header(&[0x42, 0x00]).is_err());
    }

    #[test]
    fn tenant_headers_are_validated() {
        let mut h = HeaderMap::new();
        assert!(matches!(
            tenant_context(&h, "r".into()),
            Err(ApiError::MissingHeader(_))
        ));
        h.insert(TENANT_HEADER, HeaderValue::from_static("tenant a"));
        assert!(matches!(
            tenant_context(&h, "r".into()),
            Err(ApiError::BadHeader { .. })
        ));
        h.insert(TENANT_HEADER, HeaderValue::from_static("tenant-a"));
        h.insert(DATABASE_HEADER, HeaderValue::from_static("db;drop"));
        assert!(matches!(
            tenant_context(&h, "r".into()),
            Err(ApiError::BadHeader { .. })
        ));
        h.insert(DATABASE_HEADER, HeaderValue::from_static("tenant_a_keys"));
        h.insert(CLIENT_HEADER, HeaderValue::from_static("CN=mongo"));
        let ctx = tenant_context(&h, "r".into()).expect("valid");
        assert_eq!(ctx.tenant.as_str(), "tenant-a");
        assert_eq!(
            ctx.database.as_ref().map(|d| d.as_str()),
            Some("tenant_a_keys")
        );
        assert_eq!(ctx.client_identity, "CN=mongo");
    }
}
