//! Wiring: the Pingora server with the KMIP and HTTPS listeners, the routing watcher, the
//! certificate watcher and the keysvc pool (with its health checks), built from a
//! [`GatewayConfig`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
pub use pingora::server::UnixShutdownSignalWatch;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;

use crate::config::GatewayConfig;
use crate::https_app::HttpsApp;
use crate::kmip_app::{KmipApp, KmipLimits, SharedKmipApp};
use crate::metrics::GatewayMetrics;
use crate::reload::{TlsFiles, TlsMaterial};
use crate::routing::{RoutingError, RoutingWatcher};
use crate::tls::{self, TlsError};
use crate::upstream::{UpstreamPool, UpstreamTls};

/// How long, after SIGTERM, in-flight requests get before the process stops by default
/// (`--grace-period` 25 = this + [`GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS`]): below Kubernetes'
/// default `terminationGracePeriodSeconds` (30 s).
pub const GRACE_PERIOD_SECONDS: u64 = 20;
/// The last stage of a graceful stop by default: runtimes are then dropped.
pub const GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 5;

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    #[error("TenantRouting rules: {0}")]
    Routing(#[from] RoutingError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// A gateway ready to run: everything loaded and checked, nothing listening yet.
pub struct Gateway {
    server: Server,
    routing: Arc<RoutingWatcher>,
    metrics: Arc<GatewayMetrics>,
    upstream: Arc<UpstreamPool>,
    material: Arc<TlsMaterial>,
    tasks: Vec<tokio::task::AbortHandle>,
    /// Set when a graceful stop begins: `/ready` answers 503 from then on.
    draining: Arc<AtomicBool>,
    drain_period: Duration,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routing", &self.routing)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Loads the rules, certificates and keys; fails before anything listens. Starts the
    /// routing watcher, the certificate watcher and the replica health checks (tokio tasks:
    /// call it inside a runtime).
    pub fn build(config: &GatewayConfig) -> Result<Self, GatewayError> {
        let routing =
            RoutingWatcher::start(&config.policies, RoutingWatcher::DEFAULT_POLL_INTERVAL)?;
        let upstream = Arc::new(UpstreamPool::new(
            &config.upstreams,
            &UpstreamTls {
                ca: &config.upstream_ca,
                cert: &config.upstream_cert,
                key: &config.upstream_key,
                server_name: &config.upstream_server_name,
            },
        )?);
        let metrics = Arc::new(GatewayMetrics::new());
        let files = TlsFiles {
            cert: config.tls_cert.clone(),
            key: config.tls_key.clone(),
            client_ca: config.client_ca.clone(),
            upstream_cert: config.upstream_cert.clone(),
            upstream_key: config.upstream_key.clone(),
        };
        let material = Arc::new(TlsMaterial::load(files, metrics.clone()).map_err(TlsError::from)?);
        for (addr, healthy) in upstream.health() {
            metrics.set_upstream_healthy(&addr.to_string(), healthy);
        }
        let app = Arc::new(KmipApp::new(
            routing.clone(),
            upstream.clone(),
            metrics.clone(),
            material.kmip_verifier.clone(),
            KmipLimits {
                idle_timeout: config.idle_timeout,
                max_connection_age: config.max_connection_age,
                max_message_size: config.max_message_size,
                tenant_connections: config.tenant_connections,
                tenant_requests: config.tenant_requests,
            },
        ));
        let mut kmip = Service::new("KMIP TTLV listener".to_owned(), SharedKmipApp(app.clone()));
        // No L4 read buffer under TLS: rustls buffers the records itself, and Pingora's
        // default (64 KiB per connection, partly touched) doubled the memory of every idle
        // KMIP connection (clients hold theirs for hours).
        kmip.add_listener(
            ListenerConfig::tcp(config.kmip_addr.to_string())
                .tls(tls::kmip_listener_settings(&material)?)
                .l4_buffer(L4BufferSettings::new(0, 0)),
        );
        let draining = Arc::new(AtomicBool::new(false));
        let mut https = Service::new(
            "management and KMIP-over-HTTPS listener".to_owned(),
            HttpsApp::new(
                app,
                material.https_verifier.clone(),
                upstream.clone(),
                metrics.clone(),
                draining.clone(),
            ),
        );
        // HTTP/2 (ALPN h2) as well as HTTP/1.1: over HTTP/2 a graceful stop's GOAWAY tells
        // a client exactly which of its requests were never processed (the sidecar
        // resends those), where HTTP/1.1 can only close the connection.
        let mut https_settings = tls::https_listener_settings(&material)?;
        https_settings.enable_h2();
        https.add_tls_with_settings(&config.https_addr.to_string(), None, https_settings);
        let mut tasks = vec![
            material.start_watching({
                let upstream = upstream.clone();
                move |cert_key| upstream.set_client_cert(cert_key)
            }),
            upstream.start_health_checks(metrics.clone()),
        ];
        tasks.extend(upstream.start_resolver(config.upstream_resolve_interval, metrics.clone()));

        let conf = ServerConf {
            grace_period_seconds: Some(config.grace_period_seconds),
            threads: config.threads,
            // One thread has nothing to steal from. tokio's single-thread scheduler keeps every
            // woken task in one FIFO queue; its work-stealing one, given one worker, puts tasks
            // woken beyond a 256-task local queue in a global queue it polls only now and then,
            // and with 1,000 busy connections those waited: p95 119-127 ms, against 39-43 ms
            // with the single-thread scheduler (docs/benchmarks.md).
            work_stealing: config.threads > 1,
            graceful_shutdown_timeout_seconds: Some(config.graceful_shutdown_timeout_seconds),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        server.add_service(kmip);
        server.add_service(https);
        Ok(Self {
            server,
            routing,
            metrics,
            upstream,
            material,
            tasks,
            draining,
            drain_period: config.drain_period,
        })
    }

    pub fn metrics(&self) -> Arc<GatewayMetrics> {
        self.metrics.clone()
    }

    pub fn upstream(&self) -> Arc<UpstreamPool> {
        self.upstream.clone()
    }

    pub fn tls_material(&self) -> Arc<TlsMaterial> {
        self.material.clone()
    }

    /// Serves until `shutdown_signal` fires (SIGTERM/SIGQUIT handling when it is Pingora's
    /// own `UnixShutdownSignalWatch`), then stops the routing watcher. A graceful stop
    /// (SIGTERM) begins with the drain period: `/ready` answers 503 while every connection
    /// is still accepted and served; then the listeners close, KMIP connections are closed
    /// at their next message boundary (a request that was read is answered first) and
    /// HTTP/2 connections get GOAWAY.
    pub fn run(self, shutdown_signal: Box<dyn ShutdownSignalWatch + Send + Sync>) {
        let shutdown_signal = Box::new(Draining {
            signal: shutdown_signal,
            draining: self.draining.clone(),
            period: self.drain_period,
        });
        self.server.run(RunArgs { shutdown_signal });
        self.routing.stop();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A shutdown signal that, when it asks for a graceful stop, first drains: marks the gateway
/// not ready and waits the drain period before Pingora stops its listeners.
struct Draining {
    signal: Box<dyn ShutdownSignalWatch + Send + Sync>,
    draining: Arc<AtomicBool>,
    period: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Draining {
    async fn recv(&self) -> ShutdownSignal {
        let signal = self.signal.recv().await;
        if matches!(signal, ShutdownSignal::GracefulTerminate) {
            self.draining.store(true, Ordering::Relaxed);
            tracing::info!(
                drain_seconds = self.period.as_secs_f64(),
                "stopping: /ready answers 503; connections still served until the drain period ends"
            );
            tokio::time::sleep(self.period).await;
            tracing::info!(
                "drain period over: listeners closing, connections closed at message boundaries"
            );
        }
        signal
    }
}
