//! `openkcm gateway` configuration: the command-line flags, checked completely (every bad
//! value reported at once) into a typed [`GatewayConfig`] with no parsing left in it.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default KMIP listener (IANA port for KMIP over TLS).
pub const DEFAULT_KMIP_ADDR: &str = "127.0.0.1:5696";
/// Default management + KMIP-over-HTTPS listener.
pub const DEFAULT_HTTPS_ADDR: &str = "127.0.0.1:8443";
/// Default idle time allowed between two requests on one KMIP connection: long enough for
/// clients that keep a connection open between key fetches, short enough to free sockets
/// held by clients that died without a FIN.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest KMIP request accepted (header included): keysvc's default body limit, so that
/// anything the gateway forwards keysvc also accepts.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;
/// The name checked against the keysvc server certificate when none is given.
pub const DEFAULT_UPSTREAM_SERVER_NAME: &str = "keysvc";
/// How often `--upstream HOST:PORT` names are re-resolved by default.
pub const DEFAULT_UPSTREAM_RESOLVE_INTERVAL: Duration = Duration::from_secs(10);
/// Default total time a graceful stop (SIGTERM) may take: below Kubernetes' default
/// `terminationGracePeriodSeconds` (30 s).
pub const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 25;
/// Longest last stage of a graceful stop (Pingora's `graceful_shutdown_timeout_seconds`).
pub const MAX_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 5;

/// Command-line flags of `openkcm gateway`; values stay text so that every problem is
/// reported together by [`GatewayFlags::resolve`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GatewayFlags {
    /// KMIP listener (TTLV over mutual TLS).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_KMIP_ADDR)]
    pub kmip_addr: String,
    /// Management (/health, /ready, /metrics) and KMIP-over-HTTPS (POST /kmip) listener;
    /// same server certificate, client certificate optional (required by /kmip).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_HTTPS_ADDR)]
    pub https_addr: String,
    /// Server certificate chain for the KMIP listener (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of the server certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle tenant client certificates must chain to (PEM).
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// TenantRouting rule file or directory; repeatable.
    #[arg(long = "policies", value_name = "PATH")]
    pub policies: Vec<PathBuf>,
    /// keysvc replicas: IP:PORT (one replica) or HOST:PORT (every address the name
    /// resolves to, re-resolved every --upstream-resolve-interval); repeatable.
    #[arg(long = "upstream", value_name = "ADDR")]
    pub upstreams: Vec<String>,
    /// Seconds between two resolutions of the HOST:PORT upstreams, at least 1 [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub upstream_resolve_interval: Option<u64>,
    /// CA bundle the keysvc server certificates chain to (PEM).
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
    /// The gateway's client certificate towards keysvc (PEM chain).
    #[arg(long, value_name = "FILE")]
    pub upstream_cert: Option<PathBuf>,
    /// Private key of the upstream client certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub upstream_key: Option<PathBuf>,
    /// Name (SNI, and checked against the keysvc certificate) used for every replica.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_UPSTREAM_SERVER_NAME)]
    pub upstream_server_name: String,
    /// Seconds a KMIP connection may stay idle between requests.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout: u64,
    /// Seconds a graceful stop (SIGTERM) takes in total, at least 2 [default: 25]: split
    /// into Pingora's grace period (N − 5) and shutdown timeout (5); below 10 s the timeout
    /// shrinks first, each part at least 1 s.
    #[arg(long, value_name = "SECONDS")]
    pub grace_period: Option<u64>,
    /// Worker threads of each listener (KMIP, HTTPS) [default: the CPUs available].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
}

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
    pub max_message_size: usize,
    /// Pingora's `grace_period_seconds`: how long in-flight requests get after SIGTERM.
    pub grace_period_seconds: u64,
    /// Worker threads of each listener's runtime.
    pub threads: usize,
    /// Pingora's `graceful_shutdown_timeout_seconds`: the last stage, runtimes then dropped.
    pub graceful_shutdown_timeout_seconds: u64,
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

/// Every problem found in the flags, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(e)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl GatewayFlags {
    /// Checks every flag; all problems are returned together.
    pub fn resolve(&self) -> Result<GatewayConfig, ConfigErrors> {
        let mut errors = Vec::new();
        let kmip_addr = self
            .kmip_addr
            .parse::<SocketAddr>()
            .map_err(|e| errors.push(format!("--kmip-addr {:?}: {e}", self.kmip_addr)))
            .ok();
        let https_addr = self
            .https_addr
            .parse::<SocketAddr>()
            .map_err(|e| errors.push(format!("--https-addr {:?}: {e}", self.https_addr)))
            .ok();
        let mut file = |flag: &str, value: &Option<PathBuf>| match value {
            None => {
                errors.push(format!("--{flag} is required"));
                None
            }
            Some(path) if !path.is_file() => {
                errors.push(format!("--{flag} {}: not a readable file", path.display()));
                None
            }
            Some(path) => Some(path.clone()),
        };
        let tls_cert = file("tls-cert", &self.tls_cert);
        let tls_key = file("tls-key", &self.tls_key);
        let client_ca = file("client-ca", &self.client_ca);
        let upstream_ca = file("upstream-ca", &self.upstream_ca);
        let upstream_cert = file("upstream-cert", &self.upstream_cert);
        let upstream_key = file("upstream-key", &self.upstream_key);
        if self.policies.is_empty() {
            errors.push("--policies is required (a TenantRouting file or directory)".into());
        }
        if self.upstreams.is_empty() {
            errors.push("--upstream is required (at least one keysvc replica)".into());
        }
        let mut upstreams = Vec::new();
        for upstream in &self.upstreams {
            match UpstreamAddr::parse(upstream) {
                Ok(addr) => upstreams.push(addr),
                Err(e) => errors.push(format!(
                    "--upstream {upstream:?}: {e} (IP:PORT or HOST:PORT)"
                )),
            }
        }
        let resolve_interval = self
            .upstream_resolve_interval
            .unwrap_or(DEFAULT_UPSTREAM_RESOLVE_INTERVAL.as_secs());
        if resolve_interval == 0 {
            errors.push("--upstream-resolve-interval must be at least 1 second".into());
        }
        if self.upstream_server_name.is_empty() {
            // An empty SNI makes Pingora skip server-certificate verification.
            errors.push("--upstream-server-name must not be empty".into());
        }
        if self.idle_timeout == 0 {
            errors.push("--idle-timeout must be at least 1 second".into());
        }
        let grace_period = self.grace_period.unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS);
        if grace_period < 2 {
            errors.push("--grace-period must be at least 2 seconds".into());
        }
        let (grace_period_seconds, graceful_shutdown_timeout_seconds) =
            split_grace_period(grace_period);
        match (
            kmip_addr.zip(https_addr),
            tls_cert,
            tls_key,
            client_ca,
            upstream_ca,
            upstream_cert,
            upstream_key,
        ) {
            (
                Some((kmip_addr, https_addr)),
                Some(tls_cert),
                Some(tls_key),
                Some(client_ca),
                Some(upstream_ca),
                Some(upstream_cert),
                Some(upstream_key),
            ) if errors.is_empty() => Ok(GatewayConfig {
                kmip_addr,
                https_addr,
                tls_cert,
                tls_key,
                client_ca,
                policies: self.policies.clone(),
                upstreams,
                upstream_resolve_interval: Duration::from_secs(resolve_interval),
                upstream_ca,
                upstream_cert,
                upstream_key,
                upstream_server_name: self.upstream_server_name.clone(),
                idle_timeout: Duration::from_secs(self.idle_timeout),
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                grace_period_seconds,
                graceful_shutdown_timeout_seconds,
                threads: self.threads.map_or_else(
                    || std::thread::available_parallelism().map_or(1, |n| n.get()),
                    usize::from,
                ),
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missing_flag_is_reported_at_once() {
        let flags = GatewayFlags {
            kmip_addr: "nowhere".into(),
            https_addr: "nowhere".into(),
            upstreams: vec!["keysvc".into()],
            upstream_resolve_interval: Some(0),
            grace_period: Some(1),
            ..GatewayFlags::default()
        };
        let errors = flags.resolve().expect_err("invalid flags").0;
        for needle in [
            "--kmip-addr",
            "--https-addr",
            "--tls-cert",
            "--tls-key",
            "--client-ca",
            "--policies",
            "--upstream \"keysvc\"",
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
        assert_eq!(split_grace_period(DEFAULT_GRACE_PERIOD_SECONDS), (20, 5));
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
        assert_eq!(cli.flags.grace_period, Some(40));
        assert!(Cli::try_parse_from(["gw", "--grace-period", "soon"]).is_err());
        let cli = Cli::try_parse_from(["gw", "--threads", "4"]).expect("flag");
        assert_eq!(cli.flags.threads, Some(4));
        assert!(Cli::try_parse_from(["gw", "--threads", "0"]).is_err());
    }
}
