//! The per-pod KMIP sidecar proxy.
//!
//! `openkcm sidecar` ([`run`]) gives the workload a local KMIP endpoint — a Unix socket with
//! plain TTLV and a localhost TLS port with a pod-local CA — and forwards every request to the
//! gateway over mTLS with the pod's tenant certificate. The admission webhook that adds it to
//! tenant pods (`openkcm injector`) is the `injector` crate; it takes the paths below
//! ([`DEFAULT_SOCKET`], [`DEFAULT_LOCAL_DIR`], [`DEFAULT_TENANT_DIR`]) from here.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod config;
pub mod local_tls;
mod management;
pub mod metrics;
mod proxy;
pub mod upstream;

pub use config::{SidecarArgs, SidecarConfig, KEYS};
use metrics::SidecarMetrics;
use upstream::{IdentityFiles, Upstream};

/// Default path of the workload's Unix socket (plain TTLV).
pub const DEFAULT_SOCKET: &str = "/run/openkcm/kmip.sock";
/// Default directory of the pod-local CA and client pair (shared with the workload).
pub const DEFAULT_LOCAL_DIR: &str = "/run/openkcm";
/// Default local TLS listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5696";
/// Default management listener (`/health`, `/ready`, `/metrics`; plain HTTP for kubelet probes).
pub const DEFAULT_MANAGEMENT: &str = "0.0.0.0:15696";
/// Where the tenant certificate Secret is mounted (cert-manager's `tls.crt`, `tls.key`,
/// `ca.crt`).
pub const DEFAULT_TENANT_DIR: &str = "/etc/openkcm/tenant";

/// How long open workload connections get to finish their request at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// File mode of the Unix socket: the pod's containers share a group (fsGroup).
const SOCKET_MODE: u32 = 0o660;

/// Why the sidecar cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("--gateway {0:?}: expected HOST:PORT")]
    GatewayAddress(String),
    #[error("{0}")]
    Config(String),
    #[error("pod-local PKI: {0}")]
    LocalPki(String),
    #[error("{what} {addr}: {error}")]
    Listen {
        what: &'static str,
        addr: String,
        error: std::io::Error,
    },
}

/// A started sidecar: its bound addresses, and the handle that stops it.
#[derive(Debug)]
pub struct RunningSidecar {
    pub tls_addr: SocketAddr,
    pub management_addr: SocketAddr,
    pub socket: Option<PathBuf>,
    pub metrics: Arc<SidecarMetrics>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl RunningSidecar {
    /// Binds the listeners (port 0 takes a free port), writes the pod-local CA files and
    /// starts serving on the current tokio runtime.
    pub async fn start(args: &SidecarConfig) -> Result<Self, SidecarError> {
        let server_name = match &args.gateway_server_name {
            Some(name) => name.clone(),
            None => gateway_host(&args.gateway)?,
        };
        let metrics = Arc::new(SidecarMetrics::new());
        let upstream = Arc::new(
            Upstream::new(
                args.gateway.clone(),
                &server_name,
                IdentityFiles {
                    gateway_ca: args.gateway_ca.clone(),
                    cert: args.cert.clone(),
                    key: args.key.clone(),
                },
                usize::from(args.upstream_connections),
                args.timeout,
                args.upstream_max_age,
                metrics.clone(),
            )
            .map_err(SidecarError::Config)?,
        );
        let acceptor = TlsAcceptor::from(local_tls::prepare(&args.local_dir)?);
        let listen = |what: &'static str, addr: String| {
            move |error| SidecarError::Listen { what, addr, error }
        };
        let tls = TcpListener::bind(args.listen)
            .await
            .map_err(listen("local TLS listener", args.listen.to_string()))?;
        let management = TcpListener::bind(args.management)
            .await
            .map_err(listen("management listener", args.management.to_string()))?;
        let socket = (args.socket.as_os_str() != "none").then(|| args.socket.clone());
        let unix = match &socket {
            Some(path) => {
                Some(bind_unix(path).map_err(listen("Unix socket", path.display().to_string()))?)
            }
            None => None,
        };
        let tls_addr = tls
            .local_addr()
            .map_err(listen("local TLS listener", args.listen.to_string()))?;
        let management_addr = management
            .local_addr()
            .map_err(listen("management listener", args.management.to_string()))?;

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let relay = proxy::Relay {
            upstream: upstream.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
        };
        tasks.spawn(relay.clone().serve_tls(tls, acceptor));
        if let Some(unix) = unix {
            tasks.spawn(relay.serve_unix(unix));
        }
        tasks.spawn(management::serve(
            management,
            upstream.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(watch(upstream, shutdown.clone()));
        tracing::info!(
            gateway = %args.gateway,
            tls = %tls_addr,
            socket = socket.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            management = %management_addr,
            "sidecar serving"
        );
        Ok(Self {
            tls_addr,
            management_addr,
            socket,
            metrics,
            shutdown,
            tasks,
        })
    }

    /// Stops accepting, lets open connections finish the request they are in (at most
    /// [`DRAIN_TIMEOUT`]), removes the socket file.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("workload connections still open after the drain timeout");
        }
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Certificate reload and gateway probes, until shutdown.
async fn watch(upstream: Arc<Upstream>, shutdown: CancellationToken) {
    let mut reload = tokio::time::interval(upstream::RELOAD_INTERVAL);
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = reload.tick() => {}
            () = shutdown.cancelled() => return,
        }
        upstream.reload_if_changed();
        if upstream.needs_probe() {
            upstream.probe().await;
        }
    }
}

/// The HOST part of HOST:PORT (brackets of an IPv6 literal removed).
fn gateway_host(addr: &str) -> Result<String, SidecarError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| SidecarError::GatewayAddress(addr.to_owned()))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(SidecarError::GatewayAddress(addr.to_owned()));
    }
    Ok(host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned())
}

/// Binds the workload's socket, replacing a stale one left by a previous run.
fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    Ok(listener)
}

/// `openkcm sidecar`: serves until SIGTERM / Ctrl-C.
pub fn run(args: SidecarConfig) -> ExitCode {
    // One thread: a sidecar relays one pod's requests; this keeps its memory small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("openkcm sidecar: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let sidecar = match RunningSidecar::start(&args).await {
            Ok(sidecar) => sidecar,
            Err(e) => {
                tracing::error!(error = %e, "sidecar cannot start");
                eprintln!("openkcm sidecar: {e}");
                return ExitCode::FAILURE;
            }
        };
        runtime::terminated().await;
        tracing::info!("sidecar stopping");
        sidecar.shutdown().await;
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_host_is_the_name_before_the_port() {
        assert_eq!(gateway_host("gw.example:5696").unwrap(), "gw.example");
        assert_eq!(gateway_host("[::1]:5696").unwrap(), "::1");
        assert!(gateway_host("gw.example").is_err());
        assert!(gateway_host(":5696").is_err());
        assert!(gateway_host("gw:http").is_err());
    }
}
