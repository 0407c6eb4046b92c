//! `openkcm controller`: makes the administrators' resources act (docs/controller.md).
//!
//! ```text
//!  TenantRouting ─────► routing::plan ──► ConfigMap openkcm-routing (gateway reloads it)
//!                                    └──► status: Accepted (True / Invalid / Conflict)
//!  TenantCertificate ─► certs::plan ───► cert-manager Certificates in tenant namespaces
//!  Namespaces, Services,             ├──► CertificateRequestPolicy per tenant (approver-policy)
//!  Certificates                      ├──► ConfigMap openkcm-injector-tenants (injector)
//!                                    └──► status: certificates ready, notAfter, last renewal
//!  ServiceDiscovery ──► discovery::probe every 30 s ─► status: endpoints, Registered
//! ```
//!
//! Two replicas; only the holder of the Lease `openkcm-controller` writes. Everything is
//! recomputed from the API on every change (level-triggered), so a new leader needs no
//! hand-over.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use runtime::config::{ConfigErrors, EnvAlias, Flags, KeySpec, Loader, Schema, Sources};

pub mod certs;
pub mod discovery;
mod metrics;
mod reconcile;
pub mod resources;
pub mod routing;
mod server;

pub use metrics::ControllerMetrics;
pub use resources::IssuerRef;

/// ConfigMap the gateway's rules are written to (in the controller's namespace).
pub const ROUTING_CONFIGMAP: &str = "openkcm-routing";
/// Its key: the file name the gateway reads from its `--policies` directory.
pub const ROUTING_KEY: &str = "tenant-routing.yaml";
/// ConfigMap the injector's tenant map is written to.
pub const INJECTOR_CONFIGMAP: &str = "openkcm-injector-tenants";
/// Its key.
pub const INJECTOR_KEY: &str = "tenants.yaml";

/// What `openkcm controller` runs with, every value checked.
#[derive(Debug, Clone)]
pub struct ControllerArgs {
    /// The controller's own namespace: its ConfigMaps and Lease, and where it reads
    /// TenantRouting, TenantCertificate and ServiceDiscovery resources.
    pub namespace: String,
    /// This replica's name in the Lease.
    pub identity: String,
    pub lease_name: String,
    /// How long a Lease holds without renewal; a standby takes over after it.
    pub lease_duration: Duration,
    /// `/health`, `/ready`, `/metrics`.
    pub management: SocketAddr,
    /// The issuer of tenant certificates when a TenantCertificate names none.
    pub issuer: IssuerRef,
    /// Issue and watch Certificates and policies (off where cert-manager is absent).
    pub certificates: bool,
    /// The cluster's DNS domain, for endpoint names.
    pub cluster_domain: String,
    /// How often ServiceDiscovery endpoints are probed.
    pub probe_interval: Duration,
    /// The probe's client certificate (KMIP and HTTPS health); without it, no client cert.
    pub probe_cert: Option<PathBuf>,
    pub probe_key: Option<PathBuf>,
    /// The CA the probed endpoints' certificates chain to.
    pub probe_ca: Option<PathBuf>,
    /// Where to connect for a DNS name, instead of resolving it (`NAME=HOST:PORT`).
    pub resolve: Vec<(String, String)>,
    pub log: runtime::LogFilter,
}

/// `openkcm controller` flags, in the configuration dialect every component speaks.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ControllerFlags {
    /// The controller's namespace [default: openkcm-system] [env POD_NAMESPACE].
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,
    /// This replica's identity in the Lease [default: the host name] [env POD_NAME].
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
    /// The leader-election Lease [default: openkcm-controller].
    #[arg(long, value_name = "NAME")]
    pub lease_name: Option<String>,
    /// How long the Lease holds without renewal [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub lease_duration: Option<String>,
    /// Management listener: /health, /ready, /metrics [default: 0.0.0.0:8082]
    /// [env OPENKCM_CONTROLLER_MANAGEMENT].
    #[arg(long, value_name = "ADDR")]
    pub management: Option<String>,
    /// The issuer of tenant certificates, `KIND/NAME` (ClusterIssuer or Issuer)
    /// [default: ClusterIssuer/platform-mesh-ca].
    #[arg(long, value_name = "KIND/NAME")]
    pub issuer: Option<String>,
    /// Act on TenantCertificate (needs cert-manager's CRDs) [default: true].
    #[arg(long, value_name = "BOOL")]
    pub certificates: Option<String>,
    /// The cluster DNS domain [default: cluster.local].
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// How often ServiceDiscovery endpoints are probed [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub probe_interval: Option<String>,
    /// Client certificate for the endpoint probes (PEM).
    #[arg(long, value_name = "FILE")]
    pub probe_cert: Option<String>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub probe_key: Option<String>,
    /// The CA of the probed endpoints (PEM).
    #[arg(long, value_name = "FILE")]
    pub probe_ca: Option<String>,
    /// Connect to HOST:PORT for endpoint DNS name NAME (repeatable; `NAME=HOST:PORT`), as
    /// `curl --resolve` does: for a controller outside the cluster's DNS.
    #[arg(long, value_name = "NAME=HOST:PORT")]
    pub resolve: Vec<String>,
    /// Log level (tracing directives) [default: info] [env OPENKCM_LOG_LEVEL].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// Every key `openkcm controller` reads, with its flag and default.
pub const KEYS: &[KeySpec] = &[
    KeySpec::new("namespace", Some("--namespace"), Some("openkcm-system")),
    KeySpec::new("lease.identity", Some("--identity"), None),
    KeySpec::new(
        "lease.name",
        Some("--lease-name"),
        Some("openkcm-controller"),
    ),
    KeySpec::new("lease.duration", Some("--lease-duration"), Some("10s")),
    KeySpec::new(
        "listen.management",
        Some("--management"),
        Some("0.0.0.0:8082"),
    ),
    KeySpec::new(
        "certificates.issuer",
        Some("--issuer"),
        Some("ClusterIssuer/platform-mesh-ca"),
    ),
    KeySpec::new("certificates.enabled", Some("--certificates"), Some("true")),
    KeySpec::new(
        "discovery.cluster_domain",
        Some("--cluster-domain"),
        Some("cluster.local"),
    ),
    KeySpec::new(
        "discovery.probe_interval",
        Some("--probe-interval"),
        Some("30s"),
    ),
    KeySpec::new("discovery.probe_cert", Some("--probe-cert"), None),
    KeySpec::new("discovery.probe_key", Some("--probe-key"), None),
    KeySpec::new("discovery.probe_ca", Some("--probe-ca"), None),
    KeySpec::new("discovery.resolve", Some("--resolve"), None),
    KeySpec::new("log.level", Some("--log-level"), Some("info")),
];

static SCHEMA: Schema = Schema {
    component: "controller",
    keys: KEYS,
    env_aliases: &[
        EnvAlias::new("POD_NAMESPACE", "namespace"),
        EnvAlias::new("POD_NAME", "lease.identity"),
        EnvAlias::new("OPENKCM_CONTROLLER_MANAGEMENT", "listen.management"),
        EnvAlias::new("OPENKCM_LOG_LEVEL", "log.level"),
    ],
    command_env: &[],
};

impl ControllerFlags {
    /// Checks every key from the flags, the environment `env` and the defaults; all
    /// problems are returned together, with the warnings on success.
    pub fn resolve_with_env(
        &self,
        env: Vec<(String, String)>,
    ) -> Result<(ControllerArgs, Vec<String>), ConfigErrors> {
        let flags = Flags::default()
            .text("namespace", self.namespace.as_ref())
            .text("lease.identity", self.identity.as_ref())
            .text("lease.name", self.lease_name.as_ref())
            .text("lease.duration", self.lease_duration.as_ref())
            .text("listen.management", self.management.as_ref())
            .text("certificates.issuer", self.issuer.as_ref())
            .text("certificates.enabled", self.certificates.as_ref())
            .text("discovery.cluster_domain", self.cluster_domain.as_ref())
            .text("discovery.probe_interval", self.probe_interval.as_ref())
            .text("discovery.probe_cert", self.probe_cert.as_ref())
            .text("discovery.probe_key", self.probe_key.as_ref())
            .text("discovery.probe_ca", self.probe_ca.as_ref())
            .list("discovery.resolve", &self.resolve)
            .text("log.level", self.log_level.as_ref());
        let sources = Sources {
            file: None,
            env,
            flags,
        };
        let mut l = Loader::new(&SCHEMA, &sources)?;
        let namespace = l.required_text("namespace");
        let identity = l.text("lease.identity");
        let lease_name = l.required_text("lease.name");
        let lease_duration = l.duration("lease.duration");
        let management = l.socket_addr("listen.management");
        let issuer = l.required_text("certificates.issuer");
        let certificates = l.bool("certificates.enabled");
        let cluster_domain = l.required_text("discovery.cluster_domain");
        let probe_interval = l.duration("discovery.probe_interval");
        let probe_cert = l.text("discovery.probe_cert").map(PathBuf::from);
        let probe_key = l.text("discovery.probe_key").map(PathBuf::from);
        let probe_ca = l.text("discovery.probe_ca").map(PathBuf::from);
        let resolve_list = l.list("discovery.resolve");
        let log = l.log_filter();
        let issuer = issuer.and_then(|text| match parse_issuer(&text) {
            Ok(issuer) => Some(issuer),
            Err(e) => {
                l.error("certificates.issuer", e);
                None
            }
        });
        let mut resolve = Vec::new();
        for entry in resolve_list {
            match entry.split_once('=') {
                Some((name, to)) if !name.is_empty() && to.contains(':') => {
                    resolve.push((name.to_owned(), to.to_owned()));
                }
                _ => l.error(
                    "discovery.resolve",
                    format!("{entry:?} is not NAME=HOST:PORT"),
                ),
            }
        }
        for (key, value) in [("namespace", &namespace), ("lease.name", &lease_name)] {
            if let Some(v) = value {
                if !is_dns_label(v) {
                    l.error(
                        key,
                        format!("{v:?} is not a Kubernetes name (a DNS-1123 label)"),
                    );
                }
            }
        }
        if let Some(d) = lease_duration {
            if d < Duration::from_secs(3) {
                l.error("lease.duration", "must be at least 3s");
            }
        }
        if probe_cert.is_some() != probe_key.is_some() {
            l.error(
                "discovery.probe_cert",
                "--probe-cert and --probe-key go together",
            );
        }
        l.finish()?;
        let missing = ConfigErrors::internal;
        let identity = identity
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("openkcm-controller-{}", std::process::id()));
        let args = ControllerArgs {
            namespace: namespace.ok_or_else(missing)?,
            identity,
            lease_name: lease_name.ok_or_else(missing)?,
            lease_duration: lease_duration.ok_or_else(missing)?,
            management: management.ok_or_else(missing)?,
            issuer: issuer.ok_or_else(missing)?,
            certificates: certificates.ok_or_else(missing)?,
            cluster_domain: cluster_domain.ok_or_else(missing)?,
            probe_interval: probe_interval.ok_or_else(missing)?,
            probe_cert,
            probe_key,
            probe_ca,
            resolve,
            log: log.ok_or_else(missing)?,
        };
        Ok((args, std::mem::take(&mut l.warnings)))
    }
}

/// A DNS-1123 label: what namespaces and these object names must be.
fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// Where the Kubernetes API is configured, found as kubectl finds it; `Err` when nowhere.
fn api_configured() -> Result<(), String> {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return Ok(());
    }
    if let Some(paths) = std::env::var_os("KUBECONFIG") {
        let missing: Vec<String> = std::env::split_paths(&paths)
            .filter(|p| !p.as_os_str().is_empty() && !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        return if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("KUBECONFIG names no file: {}", missing.join(", ")))
        };
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if home.is_some_and(|h| h.join(".kube/config").is_file()) {
        return Ok(());
    }
    Err(
        "no Kubernetes API configured: not in a cluster (KUBERNETES_SERVICE_HOST unset), \
         KUBECONFIG unset and no ~/.kube/config"
            .into(),
    )
}

fn parse_issuer(text: &str) -> Result<IssuerRef, String> {
    match text.split_once('/') {
        Some((kind @ ("ClusterIssuer" | "Issuer"), name)) if !name.is_empty() => Ok(IssuerRef {
            name: name.to_owned(),
            kind: Some(kind.to_owned()),
            group: Some("cert-manager.io".to_owned()),
        }),
        _ => Err(format!("{text:?} is not ClusterIssuer/NAME or Issuer/NAME")),
    }
}

/// `openkcm controller`: runs until SIGTERM / Ctrl-C; exit 2 on bad configuration, 1 when
/// the Kubernetes API cannot be configured or the management port not bound.
pub fn run(args: ControllerArgs) -> ExitCode {
    if let Err(e) = api_configured() {
        eprintln!("openkcm controller: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("openkcm controller: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match reconcile::Controller::start(args).await {
            Ok(controller) => {
                controller.run_until(runtime::terminated()).await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "controller not started");
                eprintln!("openkcm controller: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Shared between the reconcilers and the management endpoints.
#[derive(Debug)]
pub(crate) struct State {
    pub metrics: ControllerMetrics,
    /// Set once the API answered; cleared after repeated failures.
    pub api_ok: std::sync::atomic::AtomicBool,
    pub leader: std::sync::atomic::AtomicBool,
}

pub(crate) type Shared = Arc<State>;
