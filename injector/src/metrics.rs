//! The injector's Prometheus metrics (prometheus-client), served as OpenMetrics text on
//! the management listener's `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tlsmaterial::TlsMetrics;

type Labels = Vec<(&'static str, &'static str)>;

/// `result` of a review that never reached the decision: unreadable, too large, not v1.
pub const RESULT_ERROR: &str = "error";

/// The injector's metric families, registered once.
#[derive(Debug)]
pub struct InjectorMetrics {
    registry: Registry,
    admissions: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
    tls: TlsMetrics,
}

impl Default for InjectorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl InjectorMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let admissions = Family::<Labels, Counter>::default();
        // Every result from the start, so a rate() over a fresh process sees zeros rather
        // than no series.
        for result in ["injected", "skipped", "denied", RESULT_ERROR] {
            let _ = admissions.get_or_create(&vec![("result", result)]);
        }
        registry.register(
            "injector_admissions",
            "Pod admission reviews answered, by result (injected, skipped, denied, error)",
            admissions.clone(),
        );
        let reloads = Family::<Labels, Counter>::default();
        registry.register(
            "injector_reloads",
            "Reloads of a changed configuration or tenants file, by file (config, tenants) and result (success, failure)",
            reloads.clone(),
        );
        // The serving certificate's expiry and reloads, named alike in every component.
        let tls = TlsMetrics::default();
        tls.register(&mut registry);
        Self {
            registry,
            admissions,
            reloads,
            tls,
        }
    }

    /// One review answered; `result` is an `Outcome::label` or [`RESULT_ERROR`].
    pub fn admission(&self, result: &'static str) {
        self.admissions
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    /// One reload of `file` (`config`, `tenants`; the certificate's are in
    /// [`InjectorMetrics::tls`]).
    pub fn reload(&self, file: &'static str, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads
            .get_or_create(&vec![("file", file), ("result", result)])
            .inc();
    }

    /// The serving certificate's metrics (`cert="server"`), written by its reloader.
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
