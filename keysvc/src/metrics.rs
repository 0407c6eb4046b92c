//! keysvc's Prometheus metrics (prometheus-client, OpenMetrics text on `/metrics`).
//!
//! ```text
//! kmip_requests_total{tenant,operation,result}   one per batch item; result = "success" or
//!                                                 the Result Reason's XML name
//! kmip_request_duration_seconds                   one per POST /v1/kmip
//! openkcm_http_requests_total{code}              every HTTP response, both listeners
//! openkcm_keysvc_cache_{hits,misses}_total,
//! openkcm_keysvc_cache_entries,
//! openkcm_keysvc_cache_bytes                      sampled from the engine's cache at scrape
//! openkcm_keysvc_integrity_failures_total         stored objects that failed their
//!                                                 integrity check (changed outside keysvc)
//! openkcm_tenant_throttled_total{tenant,reason}   a request that waited for one of its
//!                                                 tenant's slots (reason "concurrency") or
//!                                                 got none in time ("concurrency_timeout")
//! openkcm_keysvc_db_pool_connections{state}       sampled from the PostgreSQL pool at scrape
//! openkcm_keysvc_database_up                      1/0: the last store operation or probe
//!                                                 (every 10 s) reached the database
//! openkcm_certificate_expiry_timestamp_seconds{cert}
//!                                                 notAfter (Unix s) of the API listener's
//!                                                 material in force (cert = server, client_ca)
//! openkcm_tls_reloads_total{cert,result}          "ok" | "failed": changed certificate,
//!                                                 key or client CA files, once per change
//! ```
//!
//! The last two are `tlsmaterial::TlsMetrics`, named alike in every component.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use runtime::fairness::ThrottleMetrics;
use tlsmaterial::TlsMetrics;

use crate::engine::{Engine, ItemOutcome};
use crate::health::DatabaseHealth;
use crate::tenant::TenantId;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets: 100 µs doubling to ~3.3 s (16 buckets) — cached keys answer in well
/// under a millisecond, database round trips in a few, and the SLO is 50 ms at p95.
const DURATION_BUCKET_START: f64 = 0.0001;
const DURATION_BUCKETS: u16 = 16;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KmipLabels {
    tenant: String,
    operation: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: u16,
}

/// The process's metrics. Shared by both listeners.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    kmip_requests: Family<KmipLabels, Counter>,
    kmip_duration: Histogram,
    http_requests: Family<CodeLabels, Counter>,
    certificates: TlsMetrics,
    throttled: ThrottleMetrics,
}

impl Metrics {
    pub fn new(engine: &Engine, database: &DatabaseHealth) -> Self {
        let mut registry = Registry::default();
        let kmip_requests = Family::<KmipLabels, Counter>::default();
        registry.register(
            "kmip_requests",
            "KMIP operations (batch items) by tenant, operation and result",
            kmip_requests.clone(),
        );
        let kmip_duration = Histogram::new(exponential_buckets(
            DURATION_BUCKET_START,
            2.0,
            DURATION_BUCKETS,
        ));
        registry.register(
            "kmip_request_duration_seconds",
            "Time to answer one POST /v1/kmip, body read to response",
            kmip_duration.clone(),
        );
        let http_requests = Family::<CodeLabels, Counter>::default();
        registry.register(
            "openkcm_http_requests",
            "HTTP responses by status code (API and management listeners)",
            http_requests.clone(),
        );
        registry.register(
            "openkcm_keysvc_database_up",
            "Whether the last store operation or periodic probe reached the database (1) or not (0)",
            database.gauge(),
        );
        let certificates = TlsMetrics::default();
        certificates.register(&mut registry);
        let throttled = ThrottleMetrics::default();
        throttled.register(&mut registry);
        registry.register_collector(Box::new(CacheCollector {
            engine: engine.clone(),
        }));
        Self {
            registry,
            kmip_requests,
            kmip_duration,
            http_requests,
            certificates,
            throttled,
        }
    }

    /// Counts the batch items of one answered request.
    pub fn record_kmip(&self, tenant: &TenantId, outcomes: &[ItemOutcome]) {
        for outcome in outcomes {
            let labels = KmipLabels {
                tenant: tenant.as_str().to_owned(),
                operation: outcome
                    .operation
                    .map_or("Unknown", |op| op.xml_name())
                    .to_owned(),
                result: outcome
                    .reason
                    .map_or("success", |r| r.xml_name())
                    .to_owned(),
            };
            self.kmip_requests.get_or_create(&labels).inc();
        }
    }

    pub fn observe_kmip_duration(&self, seconds: f64) {
        self.kmip_duration.observe(seconds);
    }

    pub fn record_http(&self, code: u16) {
        self.http_requests.get_or_create(&CodeLabels { code }).inc();
    }

    /// Per-tenant limits hit.
    pub fn throttled(&self) -> &ThrottleMetrics {
        &self.throttled
    }

    /// The handle the certificate reloader writes to.
    pub fn certificates(&self) -> TlsMetrics {
        self.certificates.clone()
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Samples the engine's cache counters at scrape time (they live in the cache as atomics).
#[derive(Debug)]
struct CacheCollector {
    engine: Engine,
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cache = self.engine.cache();
        for (name, help, value) in [
            (
                "openkcm_keysvc_cache_hits",
                "Key lookups served from the cache",
                cache.hits(),
            ),
            (
                "openkcm_keysvc_cache_misses",
                "Key lookups that went to the database",
                cache.misses(),
            ),
            (
                "openkcm_keysvc_integrity_failures",
                "Stored objects that failed their integrity check (changed outside keysvc)",
                crate::engine::integrity_failures(),
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let entries = ConstGauge::new(i64::try_from(cache.len()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "openkcm_keysvc_cache_entries",
            "Objects currently cached",
            None,
            entries.metric_type(),
        )?;
        entries.encode(metric)?;
        let bytes = ConstGauge::new(i64::try_from(cache.bytes()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "openkcm_keysvc_cache_bytes",
            "Bytes of the objects currently cached (bounded by cache.max_bytes)",
            None,
            bytes.metric_type(),
        )?;
        bytes.encode(metric)?;
        if let Some(pool) = self.engine.store().pool_connections() {
            let mut family = encoder.encode_descriptor(
                "openkcm_keysvc_db_pool_connections",
                "Connections of the main database pool, by state",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (state, value) in [("in_use", pool.in_use), ("idle", pool.idle)] {
                let labels = [("state", state)];
                let metric = family.encode_family(&labels)?;
                ConstGauge::new(i64::from(value)).encode(metric)?;
            }
        }
        Ok(())
    }
}
