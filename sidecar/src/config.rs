//! `openkcm sidecar` configuration in the dialect every component speaks
//! (`runtime::config`): defaults ← TOML file (`--config`) ← environment ← flags, checked
//! completely (every bad value reported at once) into a typed [`SidecarConfig`].
//!
//! The injector writes the flags into the pods it mutates; the `OPENKCM_SIDECAR_*` variable
//! of each key (and `OPENKCM_LOG_LEVEL`) keeps working besides the dialect's `OPENKCM_A__B`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use runtime::config::{ConfigErrors, EnvAlias, Flags, KeySpec, Loader, Schema, Sources};
use runtime::LogFilter;

use crate::{DEFAULT_LISTEN, DEFAULT_LOCAL_DIR, DEFAULT_MANAGEMENT, DEFAULT_SOCKET};

/// `openkcm sidecar` flags; each overrides the same key of the TOML file (`--config`) and
/// of the environment (the variable in brackets, or `OPENKCM_A__B` for key `a.b`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SidecarArgs {
    /// TOML configuration file (keys as in docs/sidecar.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The gateway's HTTPS listener (KMIP over HTTP/2, `POST /kmip`; the gateway's port 8443)
    /// [env OPENKCM_SIDECAR_GATEWAY].
    #[arg(long, value_name = "HOST:PORT")]
    pub gateway: Option<String>,
    /// The name the gateway's certificate must carry [default: HOST of --gateway]
    /// [env OPENKCM_SIDECAR_GATEWAY_SERVER_NAME].
    #[arg(long, value_name = "NAME")]
    pub gateway_server_name: Option<String>,
    /// CA bundle that signs the gateway's certificate [default: /etc/openkcm/tenant/ca.crt]
    /// [env OPENKCM_SIDECAR_GATEWAY_CA].
    #[arg(long, value_name = "FILE")]
    pub gateway_ca: Option<String>,
    /// The pod's tenant client certificate (PEM; reloaded when the file changes)
    /// [default: /etc/openkcm/tenant/tls.crt] [env OPENKCM_SIDECAR_CERT].
    #[arg(long, value_name = "FILE")]
    pub cert: Option<String>,
    /// The tenant certificate's private key (PEM) [default: /etc/openkcm/tenant/tls.key]
    /// [env OPENKCM_SIDECAR_KEY].
    #[arg(long, value_name = "FILE")]
    pub key: Option<String>,
    /// The workload's Unix socket (plain TTLV, mode 0660); `none` disables it
    /// [default: /run/openkcm/kmip.sock] [env OPENKCM_SIDECAR_SOCKET].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<String>,
    /// The workload's TLS listener (pod-local certificate for localhost / 127.0.0.1)
    /// [default: 127.0.0.1:5696] [env OPENKCM_SIDECAR_LISTEN].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Where the pod-local CA (`ca.pem`) and the local client pair (`client.pem`,
    /// `client-key.pem`) are written for the workload [default: /run/openkcm]
    /// [env OPENKCM_SIDECAR_LOCAL_DIR].
    #[arg(long, value_name = "DIR")]
    pub local_dir: Option<String>,
    /// Management listener: `/health`, `/ready`, `/metrics` (plain HTTP)
    /// [default: 0.0.0.0:15696] [env OPENKCM_SIDECAR_MANAGEMENT].
    #[arg(long, value_name = "ADDR")]
    pub management: Option<String>,
    /// Upstream (gateway) HTTP/2 connections, requests spread over them, 1 to 256
    /// [default: 4]
    /// [env OPENKCM_SIDECAR_UPSTREAM_CONNECTIONS].
    #[arg(long, value_name = "N")]
    pub upstream_connections: Option<String>,
    /// Longest wait for the gateway's answer (connect included) before the workload gets a
    /// KMIP error response [default: 5s] [env OPENKCM_SIDECAR_TIMEOUT].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Gateway connections take no new requests after this long, so that new
    /// gateway replicas get their share of a long-running workload's requests
    /// [default: 5m] [env OPENKCM_SIDECAR_UPSTREAM_MAX_AGE].
    #[arg(long, value_name = "DURATION")]
    pub upstream_max_age: Option<String>,
    /// Log level (tracing directives, e.g. `info` or `sidecar=debug`) [default: info]
    /// [env OPENKCM_LOG_LEVEL].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// What `openkcm sidecar` runs with, every value checked.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub gateway: String,
    pub gateway_server_name: Option<String>,
    pub gateway_ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub socket: PathBuf,
    pub listen: SocketAddr,
    pub local_dir: PathBuf,
    pub management: SocketAddr,
    pub upstream_connections: u16,
    pub timeout: Duration,
    pub upstream_max_age: Duration,
    pub log: LogFilter,
    /// Unknown `OPENKCM_*` variables, to be logged once logging is up.
    pub warnings: Vec<String>,
}

/// Every key `openkcm sidecar` reads, with its flag and default.
pub const KEYS: &[KeySpec] = &[
    KeySpec::new("gateway.address", Some("--gateway"), None),
    KeySpec::new("gateway.server_name", Some("--gateway-server-name"), None),
    KeySpec::new(
        "gateway.ca",
        Some("--gateway-ca"),
        Some("/etc/openkcm/tenant/ca.crt"),
    ),
    KeySpec::new(
        "tls.cert",
        Some("--cert"),
        Some("/etc/openkcm/tenant/tls.crt"),
    ),
    KeySpec::new(
        "tls.key",
        Some("--key"),
        Some("/etc/openkcm/tenant/tls.key"),
    ),
    KeySpec::new("listen.socket", Some("--socket"), Some(DEFAULT_SOCKET)),
    KeySpec::new("listen.tls", Some("--listen"), Some(DEFAULT_LISTEN)),
    KeySpec::new("local_dir", Some("--local-dir"), Some(DEFAULT_LOCAL_DIR)),
    KeySpec::new(
        "listen.management",
        Some("--management"),
        Some(DEFAULT_MANAGEMENT),
    ),
    KeySpec::new(
        "upstream.connections",
        Some("--upstream-connections"),
        Some("4"),
    ),
    KeySpec::new("upstream.timeout", Some("--timeout"), Some("5s")),
    KeySpec::new("upstream.max_age", Some("--upstream-max-age"), Some("5m")),
    KeySpec::new("log.level", Some("--log-level"), Some("info")),
];

static SCHEMA: Schema = Schema {
    component: "sidecar",
    keys: KEYS,
    env_aliases: &[
        EnvAlias::new("OPENKCM_SIDECAR_GATEWAY", "gateway.address"),
        EnvAlias::new("OPENKCM_SIDECAR_GATEWAY_SERVER_NAME", "gateway.server_name"),
        EnvAlias::new("OPENKCM_SIDECAR_GATEWAY_CA", "gateway.ca"),
        EnvAlias::new("OPENKCM_SIDECAR_CERT", "tls.cert"),
        EnvAlias::new("OPENKCM_SIDECAR_KEY", "tls.key"),
        EnvAlias::new("OPENKCM_SIDECAR_SOCKET", "listen.socket"),
        EnvAlias::new("OPENKCM_SIDECAR_LISTEN", "listen.tls"),
        EnvAlias::new("OPENKCM_SIDECAR_LOCAL_DIR", "local_dir"),
        EnvAlias::new("OPENKCM_SIDECAR_MANAGEMENT", "listen.management"),
        EnvAlias::new(
            "OPENKCM_SIDECAR_UPSTREAM_CONNECTIONS",
            "upstream.connections",
        ),
        EnvAlias::new("OPENKCM_SIDECAR_TIMEOUT", "upstream.timeout"),
        EnvAlias::new("OPENKCM_SIDECAR_UPSTREAM_MAX_AGE", "upstream.max_age"),
        EnvAlias::new("OPENKCM_LOG_LEVEL", "log.level"),
    ],
    command_env: &[],
};

impl SidecarArgs {
    /// Checks every key from the flags, the file they name and the defaults (no
    /// environment); all problems are returned together.
    pub fn resolve(&self) -> Result<SidecarConfig, ConfigErrors> {
        self.resolve_with_env(Vec::new())
    }

    /// [`SidecarArgs::resolve`] with the environment `env` as a layer between the file and
    /// the flags.
    pub fn resolve_with_env(
        &self,
        env: Vec<(String, String)>,
    ) -> Result<SidecarConfig, ConfigErrors> {
        let flags = Flags::default()
            .text("gateway.address", self.gateway.as_ref())
            .text("gateway.server_name", self.gateway_server_name.as_ref())
            .text("gateway.ca", self.gateway_ca.as_ref())
            .text("tls.cert", self.cert.as_ref())
            .text("tls.key", self.key.as_ref())
            .text("listen.socket", self.socket.as_ref())
            .text("listen.tls", self.listen.as_ref())
            .text("local_dir", self.local_dir.as_ref())
            .text("listen.management", self.management.as_ref())
            .text("upstream.connections", self.upstream_connections.as_ref())
            .text("upstream.timeout", self.timeout.as_ref())
            .text("upstream.max_age", self.upstream_max_age.as_ref())
            .text("log.level", self.log_level.as_ref());
        let sources = Sources {
            file: self.config.clone(),
            env,
            flags,
        };
        let mut l = Loader::new(&SCHEMA, &sources)?;
        let gateway = l.required_text("gateway.address");
        let gateway_server_name = l.text("gateway.server_name");
        let gateway_ca = l.path("gateway.ca");
        let cert = l.path("tls.cert");
        let key = l.path("tls.key");
        let socket = l.path("listen.socket");
        let listen = l.socket_addr("listen.tls");
        let local_dir = l.path("local_dir");
        let management = l.socket_addr("listen.management");
        let upstream_connections = l.parsed("upstream.connections", |s| match s.parse::<u16>() {
            Ok(n @ 1..=256) => Ok(n),
            _ => Err("not a whole number from 1 to 256".into()),
        });
        let timeout = l.duration("upstream.timeout");
        let upstream_max_age = l.duration("upstream.max_age");
        let log = l.log_filter();
        l.finish()?;
        let missing = ConfigErrors::internal;
        Ok(SidecarConfig {
            gateway: gateway.ok_or_else(missing)?,
            gateway_server_name,
            gateway_ca: gateway_ca.ok_or_else(missing)?,
            cert: cert.ok_or_else(missing)?,
            key: key.ok_or_else(missing)?,
            socket: socket.ok_or_else(missing)?,
            listen: listen.ok_or_else(missing)?,
            local_dir: local_dir.ok_or_else(missing)?,
            management: management.ok_or_else(missing)?,
            upstream_connections: upstream_connections.ok_or_else(missing)?,
            timeout: timeout.ok_or_else(missing)?,
            upstream_max_age: upstream_max_age.ok_or_else(missing)?,
            log: log.ok_or_else(missing)?,
            warnings: std::mem::take(&mut l.warnings),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_flags_and_the_sidecar_variables_are_read_and_every_problem_reported() {
        let args = SidecarArgs {
            gateway: Some("gw.example:5696".into()),
            ..SidecarArgs::default()
        };
        let config = args
            .resolve_with_env(vec![
                ("OPENKCM_SIDECAR_TIMEOUT".into(), "2s".into()),
                ("OPENKCM_UPSTREAM__MAX_AGE".into(), "1m".into()),
            ])
            .expect("valid");
        assert_eq!(config.gateway, "gw.example:5696");
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(config.upstream_max_age, Duration::from_secs(60));
        assert_eq!(config.upstream_connections, 4);
        assert_eq!(config.socket, PathBuf::from(DEFAULT_SOCKET));

        let bad = SidecarArgs {
            upstream_connections: Some("0".into()),
            listen: Some("localhost".into()),
            ..SidecarArgs::default()
        };
        let errors = bad
            .resolve_with_env(vec![("OPENKCM_SIDECAR_TIMEOUT".into(), "soon".into())])
            .expect_err("three problems and a missing gateway");
        for key in [
            "gateway.address",
            "upstream.connections",
            "listen.tls",
            "upstream.timeout",
        ] {
            assert!(errors.mentions(key), "{key}: {errors}");
        }
        assert!(
            errors.to_string().contains("OPENKCM_SIDECAR_TIMEOUT"),
            "{errors}"
        );
    }
}
