//! `openkcm injector`: the mutating admission webhook that adds the KMIP sidecar to tenant
//! pods (docs/injector.md).
//!
//! ```text
//!  API server ──HTTPS POST /mutate──► server ──► admission::parse_review
//!                                        │              │ AdmissionRequest
//!                                        │              ▼
//!     config.yaml ──reload──► InjectorConfig ──► mutate::mutate (pure) ──► JSONPatch
//!     tls.crt/key ──reload──► tls (new handshakes)       │   built from shape + settings
//!                                        ◄── AdmissionReview response ◄┘
//!  kubelet / Prometheus ──HTTP──► /health /ready /metrics
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

pub mod admission;
pub mod config;
mod metrics;
pub mod mutate;
mod server;
mod settings;
mod shape;
mod tls;

pub use config::{ConfigError, InjectorConfig, PullPolicy, TenantBinding};
pub use mutate::{mutate, Admission, Outcome, SkipReason};
pub use server::{Injector, InjectorError, MAX_REVIEW_BYTES, POLL_INTERVAL};
pub use settings::{LogLevel, Quantity, SidecarSettings};
pub use shape::{KMIP_MOUNT_PATH, KMIP_VOLUME, SIDECAR_CONTAINER, TENANT_VOLUME};
pub use tls::TlsError;

/// `openkcm injector` flags (each also read from the environment variable shown in `--help`).
#[derive(Debug, Clone, Args)]
pub struct InjectorArgs {
    /// The webhook's HTTPS listener (AdmissionReview v1 at `/mutate`).
    #[arg(
        long,
        value_name = "ADDR",
        env = "OPENKCM_INJECTOR_LISTEN",
        default_value = "0.0.0.0:9443"
    )]
    pub listen: SocketAddr,
    /// The webhook's serving certificate (PEM; reloaded when the file changes).
    #[arg(
        long,
        value_name = "FILE",
        env = "OPENKCM_INJECTOR_CERT",
        default_value = "/etc/openkcm/webhook/tls.crt"
    )]
    pub cert: PathBuf,
    /// The serving certificate's private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "OPENKCM_INJECTOR_KEY",
        default_value = "/etc/openkcm/webhook/tls.key"
    )]
    pub key: PathBuf,
    /// Injection configuration (YAML): sidecar image, gateway address, tenant certificate
    /// Secret per namespace, defaults.
    #[arg(
        long,
        value_name = "FILE",
        env = "OPENKCM_INJECTOR_CONFIG",
        default_value = "/etc/openkcm/injector/config.yaml"
    )]
    pub config: PathBuf,
    /// Management listener: `/health`, `/ready`, `/metrics` (plain HTTP).
    #[arg(
        long,
        value_name = "ADDR",
        env = "OPENKCM_INJECTOR_MANAGEMENT",
        default_value = "0.0.0.0:8081"
    )]
    pub management: SocketAddr,
    /// Log level (tracing directives).
    #[arg(
        long,
        value_name = "LEVEL",
        env = "OPENKCM_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
}

/// `openkcm injector`: serves until SIGTERM / Ctrl-C. A configuration or certificate that
/// does not load stops it before it listens (exit code 2 for the configuration, as for
/// the other subcommands).
pub fn run(args: InjectorArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("openkcm injector: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match Injector::bind(&args).await {
            Ok(injector) => {
                injector.run_until(runtime::terminated()).await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "injector not started");
                eprintln!("openkcm injector: {e}");
                match e {
                    InjectorError::Config(_) => ExitCode::from(2),
                    _ => ExitCode::FAILURE,
                }
            }
        }
    })
}
