//! `openkcm injector`: the mutating admission webhook that adds the KMIP sidecar to tenant
//! pods (docs/injector.md).
//!
//! ```text
//!  API server ──HTTPS POST /mutate──► server ──► admission::parse_review
//!                                        │              │ AdmissionRequest
//!                                        │              ▼
//!     config.yaml ──reload──┬► InjectorConfig ──► mutate::mutate (pure) ──► JSONPatch
//!    tenants.yaml ──reload──┘  (merged)                  │   built from shape + settings
//!     tls.crt/key ──reload──► tls (new handshakes)       │
//!                                        ◄── AdmissionReview response ◄┘
//!  kubelet / Prometheus ──HTTP──► /health /ready /metrics
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use runtime::config::{ConfigErrors, EnvAlias, Flags, KeySpec, Loader, Schema, Sources};

pub mod admission;
pub mod config;
mod metrics;
pub mod mutate;
mod server;
mod settings;
mod shape;
mod tenants;
mod tls;

pub use config::{ConfigError, InjectorConfig, PullPolicy, SidecarMode, TenantBinding};
pub use mutate::{mutate, Admission, Outcome, SkipReason};
pub use server::{Injector, InjectorError, MAX_REVIEW_BYTES, POLL_INTERVAL};
pub use settings::{LogLevel, Quantity, SidecarSettings};
pub use shape::{KMIP_MOUNT_PATH, KMIP_VOLUME, SIDECAR_CONTAINER, TENANT_VOLUME};
pub use tenants::ControllerTenants;
pub use tls::TlsError;

/// What `openkcm injector` runs with, every value checked ([`InjectorFlags::resolve_with_env`]).
#[derive(Debug, Clone)]
pub struct InjectorArgs {
    /// The webhook's HTTPS listener (AdmissionReview v1 at `/mutate`).
    pub listen: SocketAddr,
    /// The webhook's serving certificate (PEM; reloaded when the file changes).
    pub cert: PathBuf,
    /// The serving certificate's private key (PEM).
    pub key: PathBuf,
    /// Injection configuration (YAML; reloaded when the file changes).
    pub config: PathBuf,
    /// The tenants file a controller writes (YAML; reloaded when it changes; may be
    /// missing). `None`: only the configuration file's `tenants:`.
    pub tenants: Option<PathBuf>,
    /// Management listener: `/health`, `/ready`, `/metrics` (plain HTTP).
    pub management: SocketAddr,
    /// Log filter (tracing directives).
    pub log: runtime::LogFilter,
    /// After SIGTERM, how long `/ready` answers 503 while reviews are still served, so the
    /// API server stops choosing this replica before it stops listening.
    pub drain: std::time::Duration,
}

/// `openkcm injector` flags, in the configuration dialect every component speaks
/// (`runtime::config`): defaults ← environment ← flags, every problem reported together.
/// Each key is also read from the variable in brackets (and from `OPENKCM_A__B` for key
/// `a.b`). The injector has no TOML layer: its `--config` names the injection
/// configuration (YAML), which it reloads itself.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InjectorFlags {
    /// The webhook's HTTPS listener (AdmissionReview v1 at `/mutate`) [default: 0.0.0.0:9443]
    /// [env OPENKCM_INJECTOR_LISTEN].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The webhook's serving certificate (PEM; reloaded when the file changes)
    /// [default: /etc/openkcm/webhook/tls.crt] [env OPENKCM_INJECTOR_CERT].
    #[arg(long, value_name = "FILE")]
    pub cert: Option<String>,
    /// The serving certificate's private key (PEM) [default: /etc/openkcm/webhook/tls.key]
    /// [env OPENKCM_INJECTOR_KEY].
    #[arg(long, value_name = "FILE")]
    pub key: Option<String>,
    /// Injection configuration (YAML): sidecar image, gateway address, tenant certificate
    /// Secret per namespace, defaults [default: /etc/openkcm/injector/config.yaml]
    /// [env OPENKCM_INJECTOR_CONFIG].
    #[arg(long, value_name = "FILE")]
    pub config: Option<String>,
    /// Tenants file written by the openkcm controller (YAML, `tenants:` as in the
    /// configuration; reloaded when it changes; a missing file means no tenants from it yet)
    /// [default: none] [env OPENKCM_INJECTOR_TENANTS].
    #[arg(long, value_name = "FILE")]
    pub tenants: Option<String>,
    /// Management listener: `/health`, `/ready`, `/metrics` (plain HTTP)
    /// [default: 0.0.0.0:8081] [env OPENKCM_INJECTOR_MANAGEMENT].
    #[arg(long, value_name = "ADDR")]
    pub management: Option<String>,
    /// Log level (tracing directives) [default: info] [env OPENKCM_LOG_LEVEL].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// After SIGTERM: `/ready` 503 for this long while reviews are still answered, then stop
    /// (replaces a preStop sleep) [default: 5s] [env OPENKCM_INJECTOR_DRAIN_PERIOD].
    #[arg(long, value_name = "DURATION")]
    pub drain_period: Option<String>,
}

/// Every key `openkcm injector` reads, with its flag and default.
pub const KEYS: &[KeySpec] = &[
    KeySpec::new("listen.webhook", Some("--listen"), Some("0.0.0.0:9443")),
    KeySpec::new(
        "tls.cert",
        Some("--cert"),
        Some("/etc/openkcm/webhook/tls.crt"),
    ),
    KeySpec::new(
        "tls.key",
        Some("--key"),
        Some("/etc/openkcm/webhook/tls.key"),
    ),
    KeySpec::new(
        "injection.config",
        Some("--config"),
        Some("/etc/openkcm/injector/config.yaml"),
    ),
    KeySpec::new("injection.tenants", Some("--tenants"), None),
    KeySpec::new(
        "listen.management",
        Some("--management"),
        Some("0.0.0.0:8081"),
    ),
    KeySpec::new("log.level", Some("--log-level"), Some("info")),
    KeySpec::new("shutdown.drain", Some("--drain-period"), Some("5s")),
];

static SCHEMA: Schema = Schema {
    component: "injector",
    keys: KEYS,
    env_aliases: &[
        EnvAlias::new("OPENKCM_INJECTOR_LISTEN", "listen.webhook"),
        EnvAlias::new("OPENKCM_INJECTOR_CERT", "tls.cert"),
        EnvAlias::new("OPENKCM_INJECTOR_KEY", "tls.key"),
        EnvAlias::new("OPENKCM_INJECTOR_CONFIG", "injection.config"),
        EnvAlias::new("OPENKCM_INJECTOR_TENANTS", "injection.tenants"),
        EnvAlias::new("OPENKCM_INJECTOR_MANAGEMENT", "listen.management"),
        EnvAlias::new("OPENKCM_LOG_LEVEL", "log.level"),
        EnvAlias::new("OPENKCM_INJECTOR_DRAIN_PERIOD", "shutdown.drain"),
    ],
    command_env: &[],
};

impl InjectorFlags {
    /// Checks every key from the flags, the environment `env` and the defaults; all
    /// problems are returned together. On success, also the warnings (unknown `OPENKCM_*`
    /// variables).
    pub fn resolve_with_env(
        &self,
        env: Vec<(String, String)>,
    ) -> Result<(InjectorArgs, Vec<String>), ConfigErrors> {
        let flags = Flags::default()
            .text("listen.webhook", self.listen.as_ref())
            .text("tls.cert", self.cert.as_ref())
            .text("tls.key", self.key.as_ref())
            .text("injection.config", self.config.as_ref())
            .text("injection.tenants", self.tenants.as_ref())
            .text("listen.management", self.management.as_ref())
            .text("log.level", self.log_level.as_ref())
            .text("shutdown.drain", self.drain_period.as_ref());
        let sources = Sources {
            file: None,
            env,
            flags,
        };
        let mut l = Loader::new(&SCHEMA, &sources)?;
        let listen = l.socket_addr("listen.webhook");
        let cert = l.path("tls.cert");
        let key = l.path("tls.key");
        let config = l.path("injection.config");
        // Optional: unset (or set empty) reads no tenants file.
        let tenants = l
            .text("injection.tenants")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let management = l.socket_addr("listen.management");
        let log = l.log_filter();
        let drain = l.duration("shutdown.drain");
        l.finish()?;
        let missing = ConfigErrors::internal;
        let args = InjectorArgs {
            listen: listen.ok_or_else(missing)?,
            cert: cert.ok_or_else(missing)?,
            key: key.ok_or_else(missing)?,
            config: config.ok_or_else(missing)?,
            tenants,
            management: management.ok_or_else(missing)?,
            log: log.ok_or_else(missing)?,
            drain: drain.ok_or_else(missing)?,
        };
        Ok((args, std::mem::take(&mut l.warnings)))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(flags: &InjectorFlags, env: &[(&str, &str)]) -> InjectorArgs {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        flags.resolve_with_env(env).unwrap().0
    }

    #[test]
    fn the_tenants_file_is_optional_and_read_from_flag_or_env() {
        let none = InjectorFlags::default();
        assert_eq!(resolve(&none, &[]).tenants, None);
        assert_eq!(
            resolve(&none, &[("OPENKCM_INJECTOR_TENANTS", "")]).tenants,
            None
        );
        let from_env = resolve(&none, &[("OPENKCM_INJECTOR_TENANTS", "/e/tenants.yaml")]);
        assert_eq!(from_env.tenants, Some(PathBuf::from("/e/tenants.yaml")));
        let flag = InjectorFlags {
            tenants: Some("/f/tenants.yaml".into()),
            ..InjectorFlags::default()
        };
        let both = resolve(&flag, &[("OPENKCM_INJECTOR_TENANTS", "/e/tenants.yaml")]);
        assert_eq!(both.tenants, Some(PathBuf::from("/f/tenants.yaml")));
    }
}
