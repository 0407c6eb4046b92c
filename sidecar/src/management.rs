//! The management listener (plain HTTP, for kubelet probes and Prometheus): `/health` (the
//! process serves), `/ready` (a tenant certificate is loaded and the gateway answered
//! recently), `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{SidecarMetrics, CONTENT_TYPE};
use crate::upstream::Upstream;

#[derive(Debug, Clone)]
struct Shared {
    upstream: Arc<Upstream>,
    metrics: Arc<SidecarMetrics>,
}

pub async fn serve(
    listener: TcpListener,
    upstream: Arc<Upstream>,
    metrics: Arc<SidecarMetrics>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(Shared { upstream, metrics });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "management listener failed");
    }
}

async fn ready(State(shared): State<Shared>) -> impl IntoResponse {
    match (shared.upstream.has_identity(), shared.upstream.reachable()) {
        (true, true) => (StatusCode::OK, "ready\n"),
        (false, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no tenant certificate loaded\n",
        ),
        (true, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the gateway is unreachable\n",
        ),
    }
}

async fn metrics_text(State(shared): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        shared.metrics.encode(),
    )
}
