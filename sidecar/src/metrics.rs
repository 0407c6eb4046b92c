//! The sidecar's Prometheus metrics (OpenMetrics text on the management port's `/metrics`).
//!
//! ```text
//! openkcm_sidecar_requests_total{listener,result}   one per workload request; listener =
//!                                                    "unix" | "tls", result = "ok" | "error"
//! openkcm_sidecar_upstream_errors_total{stage}      gateway failures: "connect" (not sent),
//!                                                    "exchange" (sent, no answer), "busy"
//! openkcm_sidecar_upstream_duration_seconds         gateway round trip of answered requests
//! openkcm_sidecar_connections                        open workload connections
//! openkcm_certificate_expiry_timestamp_seconds{cert="tenant"}
//!                                                    notAfter of the tenant certificate in force
//! openkcm_tls_reloads_total{cert="tenant",result}   loads of changed tenant certificate files
//! ```
//!
//! The last two are `tlsmaterial::TlsMetrics`, named alike in every component.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tlsmaterial::TlsMetrics;

/// Content type of [`SidecarMetrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

/// Counters shared by the listeners, the upstream pool and the certificate watcher.
#[derive(Debug)]
pub struct SidecarMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    upstream_errors: Family<StageLabels, Counter>,
    upstream_duration: Histogram,
    connections: Gauge,
    tls: TlsMetrics,
}

impl Default for SidecarMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SidecarMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "openkcm_sidecar_requests",
            "Workload KMIP requests by listener and result",
            requests.clone(),
        );
        let upstream_errors = Family::<StageLabels, Counter>::default();
        registry.register(
            "openkcm_sidecar_upstream_errors",
            "Requests the gateway did not answer, by stage",
            upstream_errors.clone(),
        );
        // 50 µs doubling to ~1.6 s.
        let upstream_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "openkcm_sidecar_upstream_duration_seconds",
            "Gateway round trip of answered requests",
            upstream_duration.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "openkcm_sidecar_connections",
            "Open workload connections",
            connections.clone(),
        );
        let tls = TlsMetrics::default();
        tls.register(&mut registry);
        Self {
            registry,
            requests,
            upstream_errors,
            upstream_duration,
            connections,
            tls,
        }
    }

    pub fn request(&self, listener: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.requests
            .get_or_create(&RequestLabels { listener, result })
            .inc();
    }

    pub fn requests(&self, listener: &'static str, ok: bool) -> u64 {
        let result = if ok { "ok" } else { "error" };
        self.requests
            .get_or_create(&RequestLabels { listener, result })
            .get()
    }

    pub fn upstream_error(&self, stage: &'static str) {
        self.upstream_errors
            .get_or_create(&StageLabels { stage })
            .inc();
    }

    pub fn observe_upstream(&self, seconds: f64) {
        self.upstream_duration.observe(seconds);
    }

    /// Counts an open workload connection until the guard drops.
    pub fn connection(&self) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.connections.clone())
    }

    /// The certificate metrics, written by the tenant certificate's reloader.
    pub fn tls(&self) -> TlsMetrics {
        self.tls.clone()
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Decrements the open-connection gauge when dropped.
#[derive(Debug)]
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
