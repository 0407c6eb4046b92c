//! The management listener: `/health` (the process runs), `/ready` (the Kubernetes API
//! answers; a standby replica is ready too, it takes over without a restart), `/metrics`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Shared;

pub(crate) async fn serve(listener: TcpListener, state: Shared, stop: CancellationToken) {
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "management listener failed");
    }
}

async fn ready(State(state): State<Shared>) -> Response {
    if state.api_ok.load(Ordering::Relaxed) {
        let role = if state.leader.load(Ordering::Relaxed) {
            "leader"
        } else {
            "standby"
        };
        format!("ready ({role})\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the Kubernetes API does not answer\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
