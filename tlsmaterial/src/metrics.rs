//! The certificate metrics every component exports under the same names, so one alert rule
//! and one dashboard panel cover them all (the scrape job tells the components apart):
//!
//! ```text
//! openkcm_certificate_expiry_timestamp_seconds{cert}  notAfter (Unix seconds) of the
//!                                                     certificate in force; for a CA bundle
//!                                                     the earliest
//! openkcm_tls_reloads_total{cert,result}              loads of changed files, "ok" | "failed"
//!                                                     (a broken file counts once per change)
//! ```
//!
//! `cert` names the material: `server`, `client_ca`, `upstream_client` (gateway → keysvc),
//! `tenant` (the sidecar's tenant certificate).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// The outcome of loading changed files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    Ok,
    Failed,
}

impl ReloadResult {
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
        }
    }
}

/// The certificate metric families; cheap to clone (the families are shared).
#[derive(Clone, Debug, Default)]
pub struct TlsMetrics {
    expiry: Family<Labels, Gauge>,
    reloads: Family<Labels, Counter>,
}

impl TlsMetrics {
    /// Registers both families in a component's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "openkcm_certificate_expiry_timestamp_seconds",
            "notAfter (Unix time) of the certificates in force (for a CA bundle: the earliest)",
            self.expiry.clone(),
        );
        registry.register(
            "openkcm_tls_reloads",
            "Loads of changed certificate, key or CA files, by material and result",
            self.reloads.clone(),
        );
    }

    /// Creates both reload series of `cert`, so that `increase()` sees the first failure.
    pub fn declare(&self, cert: &'static str) {
        for result in [ReloadResult::Ok, ReloadResult::Failed] {
            drop(self.reloads.get_or_create(&reload_labels(cert, result)));
        }
    }

    pub fn set_expiry(&self, cert: &'static str, not_after_unix: i64) {
        self.expiry
            .get_or_create(&vec![("cert", cert)])
            .set(not_after_unix);
    }

    /// The notAfter exported for `cert` (0 when none was).
    pub fn expiry(&self, cert: &'static str) -> i64 {
        self.expiry.get_or_create(&vec![("cert", cert)]).get()
    }

    pub fn record_reload(&self, cert: &'static str, result: ReloadResult) {
        self.reloads
            .get_or_create(&reload_labels(cert, result))
            .inc();
    }

    pub fn reloads(&self, cert: &'static str, result: ReloadResult) -> u64 {
        self.reloads
            .get_or_create(&reload_labels(cert, result))
            .get()
    }
}

fn reload_labels(cert: &'static str, result: ReloadResult) -> Labels {
    vec![("cert", cert), ("result", result.label())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_are_exported_with_their_labels() {
        let metrics = TlsMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.declare("server");
        metrics.set_expiry("server", 1_900_000_000);
        metrics.record_reload("server", ReloadResult::Failed);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains(
                "openkcm_certificate_expiry_timestamp_seconds{cert=\"server\"} 1900000000"
            ),
            "{text}"
        );
        assert!(
            text.contains("openkcm_tls_reloads_total{cert=\"server\",result=\"failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("openkcm_tls_reloads_total{cert=\"server\",result=\"ok\"} 0"),
            "{text}"
        );
    }
}
