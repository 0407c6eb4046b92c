//! The controller's Prometheus metrics (prometheus-client), served as OpenMetrics text on
//! the management listener's `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// The reconcilers, as the `controller` label names them.
pub const RECONCILERS: [&str; 3] = ["routing", "certificates", "discovery"];

/// The controller's metric families, registered once.
#[derive(Debug)]
pub struct ControllerMetrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    leader: Gauge,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControllerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<Labels, Counter>::default();
        let durations = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        // Every series from the start: a rate() over a fresh process sees zeros.
        for controller in RECONCILERS {
            for result in ["success", "error"] {
                let _ =
                    reconciles.get_or_create(&vec![("controller", controller), ("result", result)]);
            }
            let _ = durations.get_or_create(&vec![("controller", controller)]);
        }
        registry.register(
            "controller_reconciles",
            "Reconcile passes, by controller (routing, certificates, discovery) and result (success, error)",
            reconciles.clone(),
        );
        registry.register(
            "controller_reconcile_duration_seconds",
            "Time of one reconcile pass, by controller",
            durations.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "controller_leader",
            "1 while this replica holds the leader Lease and writes, else 0",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            durations,
            leader,
        }
    }

    /// One pass of `controller` done.
    pub fn reconciled(&self, controller: &'static str, success: bool, seconds: f64) {
        let result = if success { "success" } else { "error" };
        self.reconciles
            .get_or_create(&vec![("controller", controller), ("result", result)])
            .inc();
        self.durations
            .get_or_create(&vec![("controller", controller)])
            .observe(seconds);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
