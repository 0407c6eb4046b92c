//! `openkcm gateway` configuration in the dialect every component speaks
//! (`runtime::config`): defaults ← TOML file (`--config`) ← `OPENKCM_*` environment ←
//! flags, checked completely (every bad value reported at once) into a typed
//! [`GatewayConfig`] with no parsing left in it.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use runtime::config::ConfigErrors;
use runtime::config::{Flags, KeySpec, Loader, Schema, Sources};
use runtime::LogFilter;

/// Default KMIP listener (IANA port for KMIP over TLS).
pub const DEFAULT_KMIP_ADDR: &str = "127.0.0.1:5696";
/// Default management + KMIP-over-HTTPS listener.
pub const DEFAULT_HTTPS_ADDR: &str = "127.0.0.1:8443";
/// Default idle time allowed between two requests on one KMIP connection: long enough for
/// clients that keep a connection open between key fetches, short enough to free sockets
/// held by clients that died without a FIN.
pub const DEFAULT_IDLE_TIMEOUT: &str = "300s";
/// A KMIP connection is closed (at a message boundary) once it is this old, busy or not,
/// so that every client re-handshakes — and is routed and verified afresh — at least this
/// often.
pub const DEFAULT_MAX_CONNECTION_AGE: &str = "1h";
/// Open KMIP connections one tenant may hold on one gateway process.
pub const DEFAULT_TENANT_CONNECTIONS: &str = "1024";
/// Requests of one tenant in flight to keysvc at once from one gateway process (below the
/// 128 streams of one upstream HTTP/2 connection, so other tenants always find a stream).
pub const DEFAULT_TENANT_REQUESTS: &str = "64";
/// Largest KMIP request accepted (header included): keysvc's default body limit, so that
/// anything the gateway forwards keysvc also accepts.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;
/// The name checked against the keysvc server certificate when none is given.
pub const DEFAULT_UPSTREAM_SERVER_NAME: &str = "keysvc";
/// How often `--upstream HOST:PORT` names are re-resolved by default.
pub const DEFAULT_UPSTREAM_RESOLVE_INTERVAL: &str = "10s";
/// Default total time a graceful stop (SIGTERM) may take: below Kubernetes' default
/// `terminationGracePeriodSeconds` (30 s).
pub const DEFAULT_GRACE_PERIOD: &str = "25s";
/// Default drain period: after SIGTERM, `/ready` answers 503 this long while everything is
/// still served and accepted, before the graceful stop proper begins.
pub const DEFAULT_DRAIN_PERIOD: &str = "5s";
/// Longest last stage of a graceful stop (Pingora's `graceful_shutdown_timeout_seconds`).
pub const MAX_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 5;

/// Command-line flags of `openkcm gateway`; each overrides the same key of the TOML file
/// (`--config`) and of the `OPENKCM_*` environment. Values stay text so that every problem
/// is reported together by [`GatewayFlags::resolve`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GatewayFlags {
    /// TOML configuration file (keys as in docs/gateway.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// KMIP listener (TTLV over mutual TLS) [default: 127.0.0.1:5696].
    #[arg(long, value_name = "ADDR")]
    pub kmip_addr: Option<String>,
    /// Management (/health, /ready, /metrics) and KMIP-over-HTTPS (POST /kmip) listener;
    /// same server certificate, client certificate optional (required by /kmip)
    /// [default: 127.0.0.1:8443].
    #[arg(long, value_name = "ADDR")]
    pub https_addr: Option<String>,
    /// Server certificate chain for the KMIP listener (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of the server certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle tenant client certificates must chain to (PEM).
    #[arg(long, value_name = "FILE", visible_alias = "tls-client-ca")]
    pub client_ca: Option<PathBuf>,
    /// TenantRouting rule file or directory; repeatable.
    #[arg(long = "policies", value_name = "PATH")]
    pub policies: Vec<PathBuf>,
    /// keysvc replicas: IP:PORT (one replica) or HOST:PORT (every address the name
    /// resolves to, re-resolved every --upstream-resolve-interval); repeatable.
    #[arg(long = "upstream", value_name = "ADDR")]
    pub upstreams: Vec<String>,
    /// How often the HOST:PORT upstreams are resolved again (e.g. 10s; a bare number is
    /// seconds), at least 1 s [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub upstream_resolve_interval: Option<String>,
    /// CA bundle the keysvc server certificates chain to (PEM).
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
    /// The gateway's client certificate towards keysvc (PEM chain).
    #[arg(long, value_name = "FILE")]
    pub upstream_cert: Option<PathBuf>,
    /// Private key of the upstream client certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub upstream_key: Option<PathBuf>,
    /// Name (SNI, and checked against the keysvc certificate) used for every replica
    /// [default: keysvc].
    #[arg(long, value_name = "NAME")]
    pub upstream_server_name: Option<String>,
    /// How long a KMIP connection may stay idle between requests (e.g. 300s) [default: 300s].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Age at which a KMIP connection is closed at the next message boundary (e.g. 1h)
    /// [default: 1h].
    #[arg(long, value_name = "DURATION")]
    pub max_connection_age: Option<String>,
    /// Open KMIP connections one tenant may hold [default: 1024].
    #[arg(long, value_name = "N")]
    pub tenant_connections: Option<String>,
    /// Requests of one tenant in flight to keysvc at once; more wait in the gateway
    /// [default: 64].
    #[arg(long, value_name = "N")]
    pub tenant_requests: Option<String>,
    /// How long a graceful stop (SIGTERM) takes in total, whole seconds, at least 2 s
    /// [default: 25s]: split into Pingora's grace period (N − 5) and shutdown timeout (5);
    /// below 10 s the timeout shrinks first, each part at least 1 s.
    #[arg(long, value_name = "DURATION")]
    pub grace_period: Option<String>,
    /// After SIGTERM and before the graceful stop: how long `/ready` answers 503 while
    /// connections are still accepted and served, so that load balancers and clients move
    /// on first [default: 5s; 0s: none].
    #[arg(long, value_name = "DURATION")]
    pub drain_period: Option<String>,
    /// Worker threads of each listener (KMIP, HTTPS) [default: the CPUs available].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
    /// Log filter (tracing directives, e.g. info or gateway=debug,info) [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// Every key `openkcm gateway` reads, with its flag and default.
pub const KEYS: &[KeySpec] = &[
    KeySpec::new("listen.kmip", Some("--kmip-addr"), Some(DEFAULT_KMIP_ADDR)),
    KeySpec::new(
        "listen.https",
        Some("--https-addr"),
        Some(DEFAULT_HTTPS_ADDR),
    ),
    KeySpec::new("tls.cert", Some("--tls-cert"), None),
    KeySpec::new("tls.key", Some("--tls-key"), None),
    KeySpec::new("tls.client_ca", Some("--client-ca"), None),
    KeySpec::new("routing.policies", Some("--policies"), None),
    KeySpec::new("upstream.addresses", Some("--upstream"), None),
    KeySpec::new(
        "upstream.resolve_interval",
        Some("--upstream-resolve-interval"),
        Some(DEFAULT_UPSTREAM_RESOLVE_INTERVAL),
    ),
    KeySpec::new("upstream.ca", Some("--upstream-ca"), None),
    KeySpec::new("upstream.cert", Some("--upstream-cert"), None),
    KeySpec::new("upstream.key", Some("--upstream-key"), None),
    KeySpec::new(
        "upstream.server_name",
        Some("--upstream-server-name"),
        Some(DEFAULT_UPSTREAM_SERVER_NAME),
    ),
    KeySpec::new(
        "kmip.idle_timeout",
        Some("--idle-timeout"),
        Some(DEFAULT_IDLE_TIMEOUT),
    ),
    KeySpec::new(
        "kmip.max_connection_age",
        Some("--max-connection-age"),
        Some(DEFAULT_MAX_CONNECTION_AGE),
    ),
    KeySpec::new(
        "kmip.tenant_connections",
        Some("--tenant-connections"),
        Some(DEFAULT_TENANT_CONNECTIONS),
    ),
    KeySpec::new(
        "kmip.tenant_requests",
        Some("--tenant-requests"),
        Some(DEFAULT_TENANT_REQUESTS),
    ),
    KeySpec::new(
        "shutdown.grace_period",
        Some("--grace-period"),
        Some(DEFAULT_GRACE_PERIOD),
    ),
    KeySpec::new(
        "shutdown.drain_period",
        Some("--drain-period"),
        Some(DEFAULT_DRAIN_PERIOD),
    ),
    KeySpec::new("threads", Some("--threads"), None),
    KeySpec::new("log.level", Some("--log-level"), Some("info")),
];

static SCHEMA: Schema = Schema {
    component: "gateway",
    keys: KEYS,
    env_aliases: &[],
    command_env: &[],
};

/// The gateway's configuration, every value checked.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub kmip_addr: SocketAddr,
    pub https_addr: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub client_ca: PathBuf,
    pub policies: Vec<PathBuf>,
    pub upstreams: Vec<UpstreamAddr>,
    /// How often the [`UpstreamAddr::Dns`] upstreams are re-resolved.
    pub upstream_resolve_interval: Duration,
    pub upstream_ca: PathBuf,
    pub upstream_cert: PathBuf,
    pub upstream_key: PathBuf,
    pub upstream_server_name: String,
    pub idle_timeout: Duration,
    pub max_connection_age: Duration,
    /// Open KMIP connections per tenant.
    pub tenant_connections: usize,
    /// Requests per tenant in flight to keysvc.
    pub tenant_requests: usize,
    pub max_message_size: usize,
    /// After SIGTERM, how long `/ready` says 503 while everything is still served.
    pub drain_period: Duration,
    /// Pingora's `grace_period_seconds`: how long in-flight requests get after the drain.
    pub grace_period_seconds: u64,
    /// Worker threads of each listener's runtime.
    pub threads: usize,
    /// Pingora's `graceful_shutdown_timeout_seconds`: the last stage, runtimes then dropped.
    pub graceful_shutdown_timeout_seconds: u64,
    pub log: LogFilter,
    /// Unknown `OPENKCM_*` variables, to be logged once logging is up.
    pub warnings: Vec<String>,
}

/// One `--upstream` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAddr {
    /// `IP:PORT`: one replica, for the gateway's lifetime.
    Ip(SocketAddr),
    /// `HOST:PORT`: one replica per address the name resolves to (e.g. a Kubernetes headless
    /// Service), re-resolved periodically.
    Dns { host: String, port: u16 },
}

impl UpstreamAddr {
    /// Parses `IP:PORT` (IPv6 as `[IP]:PORT`) or `HOST:PORT`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self::Ip(addr));
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| "expected IP:PORT or HOST:PORT".to_owned())?;
        let port = port
            .parse::<u16>()
            .map_err(|e| format!("port {port:?}: {e}"))?;
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        // A trailing dot (fully qualified name) is allowed.
        let host_ok = host_ok
            || (host.ends_with('.')
                && host.len() > 1
                && Self::parse(&format!("{}:{port}", &host[..host.len() - 1])).is_ok());
        if !host_ok || host.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!("{host:?} is neither an IP address nor a host name"));
        }
        Ok(Self::Dns {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(addr) => write!(f, "{addr}"),
            Self::Dns { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Splits a total graceful-stop time of `total` seconds (≥ 2) into Pingora's
/// (`grace_period_seconds`, `graceful_shutdown_timeout_seconds`): the timeout is 5 s, less
/// when `total` is short; both are at least 1 s and they add up to `total`.
pub fn split_grace_period(total: u64) -> (u64, u64) {
    let timeout = total
        .saturating_sub(1)
        .clamp(1, MAX_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS);
    (total.saturating_sub(timeout).max(1), timeout)
}

impl GatewayFlags {
    /// Checks every key from the flags, the file they name and the defaults (no
    /// environment: `openkcm dev` and tests); all problems are returned together.
    pub fn resolve(&self) -> Result<GatewayConfig, ConfigErrors> {
        self.resolve_with_env(Vec::new())
    }

    /// [`GatewayFlags::resolve`] with the `OPENKCM_*` environment `env` as a layer between
    /// the file and the flags.
    pub fn resolve_with_env(
        &self,
        env: Vec<(String, String)>,
    ) -> Result<GatewayConfig, ConfigErrors> {
        let flags = Flags::default()
            .text("listen.kmip", self.kmip_addr.as_ref())
            .text("listen.https", self.https_addr.as_ref())
            .text("tls.cert", self.tls_cert.as_ref().map(|p| p.display()))
            .text("tls.key", self.tls_key.as_ref().map(|p| p.display()))
            .text(
                "tls.client_ca",
                self.client_ca.as_ref().map(|p| p.display()),
            )
            .list(
                "routing.policies",
                &self
                    .policies
                    .iter()
                    .map(|p| p.display())
                    .collect::<Vec<_>>(),
            )
            .list("upstream.addresses", &self.upstreams)
            .text(
                "upstream.resolve_interval",
                self.upstream_resolve_interval.as_ref(),
            )
            .text(
                "upstream.ca",
                self.upstream_ca.as_ref().map(|p| p.display()),
            )
            .text(
                "upstream.cert",
                self.upstream_cert.as_ref().map(|p| p.display()),
            )
            .text(
                "upstream.key",
                self.upstream_key.as_ref().map(|p| p.display()),
            )
            .text("upstream.server_name", self.upstream_server_name.as_ref())
            .text("kmip.idle_timeout", self.idle_timeout.as_ref())
            .text("kmip.max_connection_age", self.max_connection_age.as_ref())
            .text("kmip.tenant_connections", self.tenant_connections.as_ref())
            .text("kmip.tenant_requests", self.tenant_requests.as_ref())
            .text("shutdown.grace_period", self.grace_period.as_ref())
            .text("shutdown.drain_period", self.drain_period.as_ref())
            .text("threads", self.threads)
            .text("log.level", self.log_level.as_ref());
        let sources = Sources {
            file: self.config.clone(),
            env,
            flags,
        };
        let mut l = Loader::new(&SCHEMA, &sources)?;
        let kmip_addr = l.socket_addr("listen.kmip");
        let https_addr = l.socket_addr("listen.https");
        let tls_cert = file(&mut l, "tls.cert");
        let tls_key = file(&mut l, "tls.key");
        let client_ca = file(&mut l, "tls.client_ca");
        let upstream_ca = file(&mut l, "upstream.ca");
        let upstream_cert = file(&mut l, "upstream.cert");
        let upstream_key = file(&mut l, "upstream.key");
        let policies: Vec<PathBuf> = l
            .list("routing.policies")
            .into_iter()
            .map(PathBuf::from)
            .collect();
        if policies.is_empty() {
            l.error(
                "routing.policies",
                "required (flag --policies: a TenantRouting file or directory)",
            );
        }
        let mut upstreams = Vec::new();
        let listed = l.list("upstream.addresses");
        if listed.is_empty() {
            l.error(
                "upstream.addresses",
                "required (flag --upstream: at least one keysvc replica)",
            );
        }
        for upstream in listed {
            match UpstreamAddr::parse(&upstream) {
                Ok(addr) => upstreams.push(addr),
                Err(e) => l.error(
                    "upstream.addresses",
                    format!("{upstream:?}: {e} (IP:PORT or HOST:PORT)"),
                ),
            }
        }
        let resolve_interval = l.parsed("upstream.resolve_interval", at_least(1));
        // An empty SNI makes Pingora skip server-certificate verification: required_text
        // refuses it.
        let upstream_server_name = l.required_text("upstream.server_name");
        let idle_timeout = l.parsed("kmip.idle_timeout", at_least(1));
        let max_connection_age = l.parsed("kmip.max_connection_age", at_least(1));
        let at_least_one = |s: &str| match s.parse() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err("not a whole number of at least 1".to_owned()),
        };
        let tenant_connections = l.parsed("kmip.tenant_connections", at_least_one);
        let tenant_requests = l.parsed("kmip.tenant_requests", at_least_one);
        let grace_period = l.parsed("shutdown.grace_period", at_least(2));
        let drain_period = l.parsed(
            "shutdown.drain_period",
            |s| match runtime::parse_duration(s)? {
                d if d > Duration::from_secs(600) => Err("must be at most 10m".to_owned()),
                d => Ok(d),
            },
        );
        let threads = match l.text("threads") {
            None => Some(std::thread::available_parallelism().map_or(1, |n| n.get())),
            Some(_) => l.parsed("threads", |s| match s.parse::<u16>() {
                Ok(n @ 1..=256) => Ok(usize::from(n)),
                _ => Err("not a whole number from 1 to 256".into()),
            }),
        };
        let log = l.log_filter();
        l.finish()?;
        let (grace_period_seconds, graceful_shutdown_timeout_seconds) =
            split_grace_period(grace_period.map_or(0, |d| d.as_secs()));
        Ok(GatewayConfig {
            kmip_addr: kmip_addr.ok_or_else(ConfigErrors::internal)?,
            https_addr: https_addr.ok_or_else(ConfigErrors::internal)?,
            tls_cert: tls_cert.ok_or_else(ConfigErrors::internal)?,
            tls_key: tls_key.ok_or_else(ConfigErrors::internal)?,
            client_ca: client_ca.ok_or_else(ConfigErrors::internal)?,
            policies,
            upstreams,
            upstream_resolve_interval: resolve_interval.ok_or_else(ConfigErrors::internal)?,
            upstream_ca: upstream_ca.ok_or_else(ConfigErrors::internal)?,
            upstream_cert: upstream_cert.ok_or_else(ConfigErrors::internal)?,
            upstream_key: upstream_key.ok_or_else(ConfigErrors::internal)?,
            upstream_server_name: upstream_server_name.ok_or_else(ConfigErrors::internal)?,
            idle_timeout: idle_timeout.ok_or_else(ConfigErrors::internal)?,
            max_connection_age: max_connection_age.ok_or_else(ConfigErrors::internal)?,
            tenant_connections: tenant_connections.ok_or_else(ConfigErrors::internal)?,
            tenant_requests: tenant_requests.ok_or_else(ConfigErrors::internal)?,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            drain_period: drain_period.ok_or_else(ConfigErrors::internal)?,
            grace_period_seconds,
            graceful_shutdown_timeout_seconds,
            threads: threads.ok_or_else(ConfigErrors::internal)?,
            log: log.ok_or_else(ConfigErrors::internal)?,
            warnings: std::mem::take(&mut l.warnings),
        })
    }
}

/// A required file that exists.
fn file(l: &mut Loader, key: &str) -> Option<PathBuf> {
    let path = l.path(key)?;
    if path.is_file() {
        Some(path)
    } else {
        l.error(key, format!("{}: not a readable file", path.display()));
        None
    }
}

/// A duration of at least `seconds` whole seconds.
fn at_least(seconds: u64) -> impl FnOnce(&str) -> Result<Duration, String> {
    move |s| match runtime::parse_duration(s)? {
        d if d < Duration::from_secs(seconds) => Err(format!("must be at least {seconds} s")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missing_flag_is_reported_at_once() {
        let flags = GatewayFlags {
            kmip_addr: Some("nowhere".into()),
            https_addr: Some("nowhere".into()),
            upstreams: vec!["keysvc".into()],
            upstream_resolve_interval: Some("0".into()),
            upstream_server_name: Some(String::new()),
            idle_timeout: Some("0s".into()),
            grace_period: Some("1".into()),
            ..GatewayFlags::default()
        };
        let errors: Vec<String> = flags
            .resolve()
            .expect_err("invalid flags")
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        for needle in [
            "--kmip-addr",
            "--https-addr",
            "--tls-cert",
            "--tls-key",
            "--client-ca",
            "--policies",
            "--upstream): \"keysvc\"",
            "--upstream-resolve-interval",
            "--upstream-ca",
            "--upstream-cert",
            "--upstream-key",
            "--upstream-server-name",
            "--idle-timeout",
            "--grace-period",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(needle)),
                "{needle} not in {errors:?}"
            );
        }
    }

    #[test]
    fn upstreams_are_ip_or_host_with_port() {
        assert_eq!(
            UpstreamAddr::parse("10.0.0.1:9443"),
            Ok(UpstreamAddr::Ip("10.0.0.1:9443".parse().expect("addr")))
        );
        assert_eq!(
            UpstreamAddr::parse("[::1]:9443"),
            Ok(UpstreamAddr::Ip("[::1]:9443".parse().expect("addr")))
        );
        for (text, host) in [
            ("keysvc:9443", "keysvc"),
            (
                "keysvc-headless.kcm.svc.cluster.local:9443",
                "keysvc-headless.kcm.svc.cluster.local",
            ),
            (
                "keysvc.kcm.svc.cluster.local.:9443",
                "keysvc.kcm.svc.cluster.local.",
            ),
        ] {
            assert_eq!(
                UpstreamAddr::parse(text),
                Ok(UpstreamAddr::Dns {
                    host: host.into(),
                    port: 9443
                }),
                "{text}"
            );
        }
        for bad in [
            "keysvc",
            ":9443",
            "keysvc:",
            "keysvc:99999",
            "key svc:9443",
            "::1:9443",
            "10.0.0.1",
            "a..b:1",
            "-a:1",
        ] {
            assert!(UpstreamAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grace_period_is_split_into_pingora_stages() {
        assert_eq!(split_grace_period(25), (20, 5));
        assert_eq!(split_grace_period(60), (55, 5));
        assert_eq!(split_grace_period(6), (1, 5));
        assert_eq!(split_grace_period(4), (1, 3));
        assert_eq!(split_grace_period(2), (1, 1));
    }

    #[test]
    fn grace_period_flag_parses_with_a_default() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            flags: GatewayFlags,
        }
        let cli = Cli::try_parse_from(["gw"]).expect("no flags");
        assert_eq!(cli.flags.grace_period, None);
        let cli = Cli::try_parse_from(["gw", "--grace-period", "40"]).expect("flag");
        assert_eq!(cli.flags.grace_period.as_deref(), Some("40"));
        // Parsed with every other key, and reported with them.
        let cli = Cli::try_parse_from(["gw", "--grace-period", "soon"]).expect("text");
        let errors = cli.flags.resolve().expect_err("soon is no duration");
        assert!(errors.mentions("shutdown.grace_period"), "{errors}");
        let cli = Cli::try_parse_from(["gw", "--threads", "4"]).expect("flag");
        assert_eq!(cli.flags.threads, Some(4));
        assert!(Cli::try_parse_from(["gw", "--threads", "0"]).is_err());
    }
}
