//! The gateway's Prometheus metrics (prometheus-client), served as OpenMetrics text on the
//! HTTPS listener's `/metrics` ([`GatewayMetrics::encode`]).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use runtime::fairness::ThrottleMetrics;
use tlsmaterial::TlsMetrics;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The gateway's metric families, registered once.
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Registry,
    denials: Family<Labels, Counter>,
    upstream_failures: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    duration: Histogram,
    active: Gauge,
    upstream_up: Family<Labels, Gauge>,
    tls: TlsMetrics,
    throttled: ThrottleMetrics,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let denials = Family::<Labels, Counter>::default();
        registry.register(
            "openkcm_tenant_denials",
            "KMIP connections refused a tenant by the TenantRouting rules, and requests refused because the connection's certificate expired or stopped verifying",
            denials.clone(),
        );
        let upstream_failures = Family::<Labels, Counter>::default();
        registry.register(
            "openkcm_upstream_failures",
            "Failed exchanges with a keysvc replica, by stage",
            upstream_failures.clone(),
        );
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "kmip_requests",
            "KMIP batch items answered, by tenant, operation and result status",
            requests.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "kmip_request_duration_seconds",
            "Time from a complete KMIP request to its answer (upstream exchange included)",
            duration.clone(),
        );
        let active = Gauge::default();
        registry.register(
            "kmip_active_connections",
            "Open tenant connections (KMIP TTLV listener)",
            active.clone(),
        );
        let upstream_up = Family::<Labels, Gauge>::default();
        registry.register(
            "openkcm_upstream_healthy",
            "1 when the keysvc replica answered its last /ready check with 200",
            upstream_up.clone(),
        );
        let tls = TlsMetrics::default();
        tls.register(&mut registry);
        let throttled = ThrottleMetrics::default();
        throttled.register(&mut registry);
        Self {
            registry,
            denials,
            upstream_failures,
            requests,
            duration,
            active,
            upstream_up,
            tls,
            throttled,
        }
    }

    /// One connection denied for `reason` (a `DenyReason::as_label`).
    pub fn denied(&self, reason: &str) {
        self.denials
            .get_or_create(&labels(&[("reason", reason)]))
            .inc();
    }

    /// How many connections were denied for `reason`.
    pub fn denials(&self, reason: &str) -> u64 {
        self.denials
            .get_or_create(&labels(&[("reason", reason)]))
            .get()
    }

    /// One failed exchange with a replica (`stage`: `connect`, `exchange`, `status`).
    pub fn upstream_failed(&self, stage: &str) {
        self.upstream_failures
            .get_or_create(&labels(&[("stage", stage)]))
            .inc();
    }

    /// The `kmip_requests_total` counter of one label set, to be kept and incremented
    /// ([`RequestCounters`]).
    pub fn request_counter(&self, tenant: &str, operation: &str, result: &str) -> Counter {
        self.requests
            .get_or_create(&labels(&[
                ("tenant", tenant),
                ("operation", operation),
                ("result", result),
            ]))
            .clone()
    }

    /// Answered batch items so far for this label set.
    pub fn requests(&self, tenant: &str, operation: &str, result: &str) -> u64 {
        self.request_counter(tenant, operation, result).get()
    }

    pub fn observe_duration(&self, seconds: f64) {
        self.duration.observe(seconds);
    }

    /// Counts an open connection until the guard drops.
    pub fn connection(&self) -> ConnectionGuard {
        self.active.inc();
        ConnectionGuard(self.active.clone())
    }

    pub fn active_connections(&self) -> i64 {
        self.active.get()
    }

    pub fn set_upstream_healthy(&self, upstream: &str, healthy: bool) {
        self.upstream_up
            .get_or_create(&labels(&[("upstream", upstream)]))
            .set(i64::from(healthy));
    }

    /// `openkcm_tenant_throttled_total{tenant,reason="connections"}`.
    pub fn throttled(&self) -> &ThrottleMetrics {
        &self.throttled
    }

    /// The certificate metrics (`cert` = `server`, `client_ca`, `upstream_client`), written
    /// by the reloader.
    pub fn tls(&self) -> TlsMetrics {
        self.tls.clone()
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Decrements `kmip_active_connections` on drop.
#[derive(Debug)]
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The `kmip_requests_total` counters one KMIP connection has counted into (its tenant is
/// fixed; a client sends a handful of operations): after a label set's first request, each
/// count is an increment of a held counter instead of a label set built, hashed and looked
/// up for every request.
#[derive(Debug, Default)]
pub struct RequestCounters(Vec<(&'static str, &'static str, Counter)>);

impl RequestCounters {
    /// Counts one answered batch item of `operation` with `result` for `tenant` (the same
    /// tenant for every call on one `RequestCounters`).
    pub fn inc(
        &mut self,
        metrics: &GatewayMetrics,
        tenant: &str,
        operation: &'static str,
        result: &'static str,
    ) {
        if let Some((_, _, counter)) = self
            .0
            .iter()
            .find(|(o, r, _)| *o == operation && *r == result)
        {
            counter.inc();
            return;
        }
        let counter = metrics.request_counter(tenant, operation, result);
        counter.inc();
        self.0.push((operation, result, counter));
    }
}
