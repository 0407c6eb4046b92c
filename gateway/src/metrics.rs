//! The gateway's Prometheus metrics (prometheus-client). Exposing them over HTTP comes with
//! the management listener; [`GatewayMetrics::encode`] already renders OpenMetrics text.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The gateway's metric families, registered once.
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Registry,
    denials: Family<Labels, Counter>,
    upstream_failures: Family<Labels, Counter>,
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
            "KMIP connections refused a tenant by the TenantRouting rules",
            denials.clone(),
        );
        let upstream_failures = Family::<Labels, Counter>::default();
        registry.register(
            "openkcm_upstream_failures",
            "Failed exchanges with a keysvc replica, by stage",
            upstream_failures.clone(),
        );
        Self {
            registry,
            denials,
            upstream_failures,
        }
    }

    /// One connection denied for `reason` (a `DenyReason::as_label`).
    pub fn denied(&self, reason: &str) {
        self.denials
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }

    /// How many connections were denied for `reason`.
    pub fn denials(&self, reason: &str) -> u64 {
        self.denials
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .get()
    }

    /// One failed exchange with a replica (`stage`: `connect`, `exchange`, `status`).
    pub fn upstream_failed(&self, stage: &str) {
        self.upstream_failures
            .get_or_create(&vec![("stage".to_owned(), stage.to_owned())])
            .inc();
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
