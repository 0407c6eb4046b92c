//! The listeners: HTTPS `POST /mutate` (AdmissionReview in, AdmissionReview out) and the
//! plain-HTTP management endpoints; the file watcher; graceful shutdown. The decision
//! itself is [`crate::mutate::mutate`]: this module only moves bytes to and from it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tlsmaterial::Changes;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admission::{parse_review, ReviewError};
use crate::config::{ConfigError, InjectorConfig};
use crate::metrics::{InjectorMetrics, RESULT_ERROR};
use crate::mutate::mutate;
use crate::tenants::ControllerTenants;
use crate::tls::{ServingCertificate, TlsError};
use crate::InjectorArgs;

/// Largest AdmissionReview accepted. A review carries the Pod twice at most (object and
/// oldObject); the API server caps an object at about 1.5 MiB (etcd's request limit), so 3
/// MiB admits every real review and bounds what one request can make us buffer.
pub const MAX_REVIEW_BYTES: usize = 3 << 20;

/// A client that has not finished its TLS handshake by then is dropped: the API server
/// takes milliseconds, and a stalled handshake holds a socket and a task.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections may finish their requests after SIGTERM. The API server's
/// webhook timeout is at most 30 s and usually 10 s; answers take microseconds, so a few
/// seconds drain everything and stay well inside the pod's termination grace period.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often the certificate, configuration and tenants files are compared with what is
/// in force.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Why the injector cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InjectorError {
    #[error("configuration {0}")]
    Config(#[from] ConfigError),
    #[error("serving certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the handlers share.
#[derive(Debug)]
struct InjectorState {
    /// The configuration file with the tenants file's namespaces merged in.
    config: ArcSwap<InjectorConfig>,
    certificate: ServingCertificate,
    metrics: InjectorMetrics,
    /// Set on SIGTERM: `/ready` fails so the Service stops sending reviews here.
    draining: AtomicBool,
}

/// A started injector: configuration and certificate loaded, both listeners bound.
pub struct Injector {
    webhook: TcpListener,
    management: TcpListener,
    webhook_addr: SocketAddr,
    management_addr: SocketAddr,
    tls: TlsAcceptor,
    state: Arc<InjectorState>,
    files: WatchedFiles,
    drain: Duration,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector")
            .field("webhook_addr", &self.webhook_addr)
            .field("management_addr", &self.management_addr)
            .finish_non_exhaustive()
    }
}

/// The configuration and tenants files, their content as of the initial load, and what
/// each holds (the certificate's files are watched by [`ServingCertificate`]).
#[derive(Debug)]
struct WatchedFiles {
    args: InjectorArgs,
    config: Changes<1>,
    /// The configuration file alone, before the tenants file is merged in.
    base: InjectorConfig,
    /// The tenants file (`--tenants`), if any, and what it holds: its last good content,
    /// empty while there is no file.
    tenants: Option<(PathBuf, Changes<1>)>,
    controller: ControllerTenants,
}

impl Injector {
    /// Loads the configuration and the serving certificate and binds both listeners; any
    /// problem is reported before anything listens.
    pub async fn bind(args: &InjectorArgs) -> Result<Self, InjectorError> {
        let config_changes = Changes::new([args.config.clone()]);
        let tenants_changes = args
            .tenants
            .as_ref()
            .map(|path| (path.clone(), Changes::new([path.clone()])));
        let base = InjectorConfig::load(&args.config)?;
        let controller = match &args.tenants {
            Some(path) => load_tenants_at_start(path)?,
            None => ControllerTenants::default(),
        };
        let config = merge(&base, &controller);
        let files = WatchedFiles {
            args: args.clone(),
            config: config_changes,
            base,
            tenants: tenants_changes,
            controller,
        };
        let metrics = InjectorMetrics::new();
        let certificate =
            ServingCertificate::load(args.cert.clone(), args.key.clone(), metrics.tls())?;
        let tls = TlsAcceptor::from(certificate.server_config()?);

        let webhook = bind(args.listen).await?;
        let management = bind(args.management).await?;
        let webhook_addr = local_addr(&webhook, args.listen)?;
        let management_addr = local_addr(&management, args.management)?;
        tracing::info!(
            %webhook_addr,
            %management_addr,
            tenants = config.tenant_count(),
            tenants_file_namespaces = files.controller.len(),
            certificate_not_after = metrics.tls().expiry("server"),
            "injector listening"
        );
        Ok(Self {
            webhook,
            management,
            webhook_addr,
            management_addr,
            tls,
            state: Arc::new(InjectorState {
                config: ArcSwap::from_pointee(config),
                certificate,
                metrics,
                draining: AtomicBool::new(false),
            }),
            files,
            drain: args.drain,
        })
    }

    /// The HTTPS listener's address (the real port when `--listen` asked for port 0).
    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook_addr
    }

    pub fn management_addr(&self) -> SocketAddr {
        self.management_addr
    }

    /// Serves until `signal` completes, then stops accepting reviews and lets open
    /// connections finish (at most [`SHUTDOWN_GRACE`]). The management listener stays up
    /// until the drain is over, answering `/ready` with 503.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        let shutdown = CancellationToken::new();
        let management_stop = CancellationToken::new();
        let watcher = tokio::spawn(watch_files(
            self.state.clone(),
            self.files,
            shutdown.clone(),
        ));
        let webhook = tokio::spawn(serve_webhook(
            self.webhook,
            self.tls,
            webhook_router(self.state.clone()),
            shutdown.clone(),
        ));
        let management = axum::serve(self.management, management_router(self.state.clone()))
            .with_graceful_shutdown(management_stop.clone().cancelled_owned());
        let management = tokio::spawn(async move {
            if let Err(e) = management.await {
                tracing::warn!(error = %e, "management listener failed");
            }
        });

        signal.await;
        tracing::info!(drain = ?self.drain, "shutdown requested: /ready 503, still serving");
        self.state.draining.store(true, Ordering::Relaxed);
        tokio::time::sleep(self.drain).await;
        tracing::info!("drain period over: stopping");
        shutdown.cancel();
        let _ = tokio::join!(watcher, webhook);
        management_stop.cancel();
        let _ = management.await;
        tracing::info!("injector stopped");
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, InjectorError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| InjectorError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, InjectorError> {
    listener
        .local_addr()
        .map_err(|source| InjectorError::Bind { addr, source })
}

fn webhook_router(state: Arc<InjectorState>) -> Router {
    Router::new()
        .route("/mutate", post(review))
        .with_state(state)
}

fn management_router(state: Arc<InjectorState>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// `POST /mutate`: one AdmissionReview answered.
async fn review(State(state): State<Arc<InjectorState>>, body: Body) -> Response {
    let answer = async {
        let bytes = Limited::new(body, MAX_REVIEW_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    WebhookError::TooLarge
                } else {
                    WebhookError::Unreadable(e.to_string())
                }
            })?
            .to_bytes();
        let request = parse_review(&bytes)?;
        let config = state.config.load();
        let admission = mutate(&request, &config);
        tracing::info!(
            uid = %request.uid,
            namespace = request.namespace.as_deref().unwrap_or_default(),
            pod = request.name.as_deref().unwrap_or_default(),
            operation = %request.operation,
            outcome = ?admission.outcome,
            message = admission.response.status.as_ref().map(|s| s.message.as_str()).unwrap_or_default(),
            "admission review answered"
        );
        Ok::<_, WebhookError>(admission)
    }
    .await;
    match answer {
        Ok(admission) => {
            state.metrics.admission(admission.outcome.label());
            let json = admission.response.into_review().to_string();
            ([(header::CONTENT_TYPE, "application/json")], json).into_response()
        }
        Err(e) => {
            state.metrics.admission(RESULT_ERROR);
            tracing::warn!(error = %e, "admission review refused");
            e.into_response()
        }
    }
}

/// A request that never reached the decision. The API server counts any non-200 answer as
/// a webhook failure (the pod is rejected under `failurePolicy: Fail`), and shows this text.
#[derive(Debug, thiserror::Error)]
enum WebhookError {
    #[error("the AdmissionReview is larger than {MAX_REVIEW_BYTES} bytes")]
    TooLarge,
    #[error("the request body could not be read: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Review(#[from] ReviewError),
}

/// The one place where a failed request becomes an HTTP answer.
impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unreadable(_) | Self::Review(_) => StatusCode::BAD_REQUEST,
        };
        (status, format!("openkcm-injector: {self}\n")).into_response()
    }
}

/// Ready once the certificate and configuration are loaded (they are, or `bind` would have
/// failed) and until shutdown starts.
async fn ready(State(state): State<Arc<InjectorState>>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics(State(state): State<Arc<InjectorState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Accepts TLS connections until `shutdown`, then lets open ones finish for at most
/// [`SHUTDOWN_GRACE`].
async fn serve_webhook(
    listener: TcpListener,
    tls: TlsAcceptor,
    app: Router,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    runtime::serve::accept_until(
        listener,
        shutdown,
        SHUTDOWN_GRACE,
        |stream, remote, watcher| {
            let builder = builder.clone();
            let tls = tls.clone();
            let service = TowerToHyperService::new(app.clone());
            async move {
                let Some(stream) = handshake(&tls, stream, remote).await else {
                    return;
                };
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
            }
        },
    )
    .await;
}

async fn handshake(
    tls: &TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::info!(%remote, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%remote, "TLS handshake timed out");
            None
        }
    }
}

/// The tenants file at start: missing is no tenants yet (the controller has not written
/// it); one that does not load stops the start, as the configuration file's does.
fn load_tenants_at_start(path: &Path) -> Result<ControllerTenants, ConfigError> {
    match ControllerTenants::load(path)? {
        Some(tenants) => Ok(tenants),
        None => {
            tracing::info!(
                path = %path.display(),
                "no tenants file yet: only the configuration file's tenants are in force"
            );
            Ok(ControllerTenants::default())
        }
    }
}

/// The configuration in force: the file's, with the tenants file's namespaces added. A
/// namespace in both keeps the configuration file's entry, with a warning.
fn merge(base: &InjectorConfig, controller: &ControllerTenants) -> InjectorConfig {
    let (merged, shadowed) = base.with_controller_tenants(controller);
    for namespace in shadowed {
        tracing::warn!(
            namespace,
            "namespace is in both the configuration file and the tenants file; the \
             configuration file's entry is used"
        );
    }
    merged
}

/// Every [`POLL_INTERVAL`], reloads the certificate, the configuration or the tenants file
/// whose files changed. A new file that does not load keeps the one in force (logged and
/// counted) and is retried when the files change again. A tenants file that disappears
/// means no tenants from it.
async fn watch_files(state: Arc<InjectorState>, files: WatchedFiles, shutdown: CancellationToken) {
    let WatchedFiles {
        args,
        mut config,
        mut base,
        mut tenants,
        mut controller,
    } = files;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        state.certificate.reload_if_changed();
        let mut reloaded = false;
        if config.changed() {
            match InjectorConfig::load(&args.config) {
                Ok(loaded) => {
                    base = loaded;
                    reloaded = true;
                    state.metrics.reload("config", true);
                    tracing::info!(
                        config_file_namespaces = base.tenant_count(),
                        "configuration reloaded"
                    );
                }
                Err(e) => {
                    state.metrics.reload("config", false);
                    tracing::warn!(error = %e, "new configuration not loaded; the previous one stays");
                }
            }
        }
        if let Some((path, changes)) = tenants.as_mut() {
            if changes.changed() {
                match ControllerTenants::load(path) {
                    Ok(Some(loaded)) => {
                        controller = loaded;
                        reloaded = true;
                        state.metrics.reload("tenants", true);
                        tracing::info!(
                            tenants_file_namespaces = controller.len(),
                            "tenants file reloaded"
                        );
                    }
                    Ok(None) => {
                        controller = ControllerTenants::default();
                        reloaded = true;
                        state.metrics.reload("tenants", true);
                        tracing::warn!(
                            path = %path.display(),
                            "tenants file removed: no tenants from it are in force"
                        );
                    }
                    Err(e) => {
                        state.metrics.reload("tenants", false);
                        tracing::warn!(
                            error = %e,
                            "new tenants file not loaded; the previous tenants stay"
                        );
                    }
                }
            }
        }
        if reloaded {
            let merged = merge(&base, &controller);
            tracing::info!(tenants = merged.tenant_count(), "tenants in force");
            state.config.store(Arc::new(merged));
        }
    }
}
