//! The run's configuration: every flag parsed and checked at once (all mistakes reported
//! together), then typed values with no parsing left in them.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use kmip::ProtocolVersion;

use crate::workload::Op;
use crate::LoadtestArgs;

/// More connections than this would exhaust the generator's file descriptors and memory long
/// before it measured anything useful; 20,000 covers the idle-connection memory benchmark
/// (10,000) with room.
pub const MAX_CONNECTIONS: u32 = 20_000;
/// A load test is a measurement, not a soak: an hour bounds a forgotten run.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Keys the set-up phase may create (or `--uid` may name): a million covers the
/// stored-keys scaling benchmark; its pre-encoded requests (~150 B per key and operation
/// used) then take ~150 MB for Get, ~500 MB for a mix.
pub const MAX_KEYS: u32 = 1_000_000;
/// Open-loop rates above this are beyond what one generator process can schedule.
pub const MAX_RATE: u32 = 1_000_000;
/// `--requests` bound: a billion requests is days at any realistic rate.
pub const MAX_REQUESTS: u64 = 1_000_000_000;
/// Per-request timeout bounds: below 1 ms every loopback request would fail, above 10 min a
/// stuck server just holds the run hostage.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Closed loop (each connection sends its next request when the last one is answered) or
/// open loop at a fixed total rate (requests are due on a schedule, whatever the server does).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    Max,
    PerSecond(u32),
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            Rate::PerSecond(r) => write!(f, "{r}/s"),
        }
    }
}

/// Where the requests go.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// KMIP TTLV over mutual TLS (any KMIP server).
    Kmip { addr: String },
    /// keysvc's internal API: TTLV in `POST /v1/kmip` bodies over HTTP/2 + mTLS, with the
    /// tenant header the gateway would add (measures keysvc without the gateway).
    KeysvcHttp2 {
        addr: String,
        authority: String,
        tenant: String,
    },
}

impl Target {
    pub fn addr(&self) -> &str {
        match self {
            Target::Kmip { addr } | Target::KeysvcHttp2 { addr, .. } => addr,
        }
    }
}

/// A checked run configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub target: Target,
    pub resolved: Vec<SocketAddr>,
    pub server_name: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub op: Op,
    pub connections: u32,
    pub rate: Rate,
    pub duration: Duration,
    pub warmup: Duration,
    pub keys: u32,
    pub uids: Vec<String>,
    pub version: ProtocolVersion,
    pub requests: Option<u64>,
    pub timeout: Duration,
    pub json: Option<PathBuf>,
    pub quiet: bool,
}

/// Everything wrong with the flags, one line each.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    pub fn from_args(args: &LoadtestArgs) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, msg: String| {
            if !ok {
                problems.push(msg);
            }
        };

        let target = match (&args.addr, &args.http2_keysvc) {
            (Some(addr), None) => Some(Target::Kmip { addr: addr.clone() }),
            (None, Some(url)) => match parse_https_url(url) {
                Ok((addr, authority)) => Some(Target::KeysvcHttp2 {
                    addr,
                    authority,
                    tenant: args.tenant.clone(),
                }),
                Err(e) => {
                    check(false, format!("--http2-keysvc {url}: {e}"));
                    None
                }
            },
            (Some(_), Some(_)) => {
                check(false, "give --addr or --http2-keysvc, not both".into());
                None
            }
            (None, None) => {
                check(false, "--addr HOST:PORT is required".into());
                None
            }
        };
        let mut resolved = Vec::new();
        if let Some(t) = &target {
            match t.addr().to_socket_addrs() {
                Ok(addrs) => resolved = addrs.collect(),
                Err(e) => check(false, format!("{}: cannot resolve: {e}", t.addr())),
            }
            if !resolved.is_empty() && !args.allow_remote {
                let remote: Vec<String> = resolved
                    .iter()
                    .filter(|a| !a.ip().is_loopback())
                    .map(|a| a.to_string())
                    .collect();
                check(
                    remote.is_empty(),
                    format!(
                        "{} is not a loopback address ({}): a load test saturates its \
                         target; pass --allow-remote to load a remote server on purpose",
                        t.addr(),
                        remote.join(", ")
                    ),
                );
            }
        }

        let op = Op::parse(&args.op);
        check(
            op.is_some(),
            format!(
                "--op {}: expected get, create, encrypt, decrypt, mix, idle, \
                 create-key-pair-rsa2048, create-key-pair-p256, sign-rsa2048 or sign-p256",
                args.op
            ),
        );
        check(
            (1..=MAX_CONNECTIONS).contains(&args.connections),
            format!("--connections {}: 1 to {MAX_CONNECTIONS}", args.connections),
        );
        let rate = parse_rate(&args.rate);
        if let Err(e) = &rate {
            check(false, format!("--rate {}: {e}", args.rate));
        }
        let duration = parse_duration(&args.duration);
        match &duration {
            Ok(d) => check(
                !d.is_zero() && *d <= MAX_DURATION,
                format!("--duration {}: more than 0, at most 1h", args.duration),
            ),
            Err(e) => check(false, format!("--duration {}: {e}", args.duration)),
        }
        let warmup = parse_duration(&args.warmup);
        match &warmup {
            Ok(d) => check(
                *d <= MAX_DURATION,
                format!("--warmup {}: at most 1h", args.warmup),
            ),
            Err(e) => check(false, format!("--warmup {}: {e}", args.warmup)),
        }
        let timeout = parse_duration(&args.timeout);
        match &timeout {
            Ok(d) => check(
                (MIN_TIMEOUT..=MAX_TIMEOUT).contains(d),
                format!("--timeout {}: 1ms to 10m", args.timeout),
            ),
            Err(e) => check(false, format!("--timeout {}: {e}", args.timeout)),
        }
        check(
            (1..=MAX_KEYS).contains(&args.keys),
            format!("--keys {}: 1 to {MAX_KEYS}", args.keys),
        );
        check(
            args.uid.len() <= MAX_KEYS as usize,
            format!("--uid given {} times: at most {MAX_KEYS}", args.uid.len()),
        );
        check(
            args.uid.iter().all(|u| !u.is_empty()),
            "--uid: empty identifier".into(),
        );
        if let Some(n) = args.requests {
            check(
                (1..=MAX_REQUESTS).contains(&n),
                format!("--requests {n}: 1 to {MAX_REQUESTS}"),
            );
        }
        let version = parse_version(&args.kmip_version);
        if version.is_none() {
            check(
                false,
                format!(
                    "--kmip-version {}: one of 1.0 1.1 1.2 1.3 1.4 2.0 2.1",
                    args.kmip_version
                ),
            );
        }
        if matches!(op, Some(Op::Idle)) {
            check(
                rate.as_ref().is_ok_and(|r| *r == Rate::Max),
                "--op idle sends nothing: --rate does not apply".into(),
            );
        }

        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        // Every Option/Result below was checked above.
        let (
            Some(target),
            Some(op),
            Ok(rate),
            Ok(duration),
            Ok(warmup),
            Ok(timeout),
            Some(version),
        ) = (target, op, rate, duration, warmup, timeout, version)
        else {
            return Err(ConfigError(vec!["invalid flags".into()]));
        };
        Ok(Self {
            target,
            resolved,
            server_name: args.server_name.clone(),
            ca: args.ca.clone(),
            cert: args.cert.clone(),
            key: args.key.clone(),
            op,
            connections: args.connections,
            rate,
            duration,
            warmup,
            keys: if args.uid.is_empty() {
                args.keys
            } else {
                args.uid.len() as u32
            },
            uids: args.uid.clone(),
            version,
            requests: args.requests,
            timeout,
            json: args.json.clone(),
            quiet: args.quiet,
        })
    }
}

/// `10s`, `500ms`, `2m`, `1h`, `1.5s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| "expected a number and a unit (ms, s, m, h)".to_owned())?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} (ms, s, m, h)")),
    };
    if !seconds.is_finite() || seconds > MAX_DURATION.as_secs_f64() * 10.0 {
        return Err("out of range".into());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `max`, or requests per second (`10000`, `10000/s`, `10k`).
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let s = s.trim().trim_end_matches("/s");
    if s.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    let (digits, scale) = match s.strip_suffix(['k', 'K']) {
        Some(d) => (d, 1000),
        None => (s, 1),
    };
    let n: u32 = digits
        .parse()
        .map_err(|_| "expected `max` or requests per second".to_owned())?;
    match n.checked_mul(scale) {
        Some(r) if (1..=MAX_RATE).contains(&r) => Ok(Rate::PerSecond(r)),
        _ => Err(format!("1 to {MAX_RATE} per second")),
    }
}

fn parse_version(s: &str) -> Option<ProtocolVersion> {
    let (major, minor) = s.trim().split_once('.')?;
    let v = ProtocolVersion::new(major.parse().ok()?, minor.parse().ok()?);
    v.is_supported().then_some(v)
}

/// `https://HOST:PORT[/...]` → (`HOST:PORT`, authority). Only the address is used: the path
/// is always keysvc's `/v1/kmip`.
fn parse_https_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or("expected https://HOST:PORT")?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || !authority.contains(':') {
        return Err("expected https://HOST:PORT".into());
    }
    Ok((authority.to_owned(), authority.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadtestArgs,
    }

    fn args(extra: &[&str]) -> LoadtestArgs {
        let mut argv = vec![
            "loadtest", "--ca", "ca.pem", "--cert", "c.pem", "--key", "k.pem",
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("flags parse").args
    }

    fn problems(extra: &[&str]) -> Vec<String> {
        match Config::from_args(&args(extra)) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }

    #[test]
    fn defaults_are_a_short_closed_loop_get() {
        let c = Config::from_args(&args(&["--addr", "127.0.0.1:5696"])).expect("valid");
        assert_eq!(c.op, Op::Get);
        assert_eq!(c.rate, Rate::Max);
        assert_eq!(c.duration, Duration::from_secs(10));
        assert_eq!(c.version, ProtocolVersion::V1_2);
        assert_eq!(c.server_name, "localhost");
        assert!(c.resolved.iter().all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn non_loopback_targets_are_refused_unless_allowed() {
        let p = problems(&["--addr", "192.0.2.10:5696"]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("--allow-remote"), "{p:?}");
        assert!(problems(&["--addr", "192.0.2.10:5696", "--allow-remote"]).is_empty());
        let p = problems(&["--http2-keysvc", "https://192.0.2.10:8443"]);
        assert!(p[0].contains("--allow-remote"), "{p:?}");
        assert!(problems(&["--addr", "[::1]:5696"]).is_empty());
        assert!(problems(&["--addr", "localhost:5696"]).is_empty());
    }

    #[test]
    fn bounds_are_enforced_and_every_problem_is_reported() {
        let p = problems(&[
            "--addr",
            "127.0.0.1:5696",
            "--connections",
            "20001",
            "--duration",
            "2h",
            "--keys",
            "1000001",
            "--rate",
            "0",
            "--op",
            "frobnicate",
            "--kmip-version",
            "3.0",
            "--timeout",
            "0s",
        ]);
        assert_eq!(p.len(), 7, "{p:#?}");
        for flag in [
            "--connections",
            "--duration",
            "--keys",
            "--rate",
            "--op",
            "--kmip-version",
            "--timeout",
        ] {
            assert!(p.iter().any(|l| l.starts_with(flag)), "{flag}: {p:#?}");
        }
        assert!(!problems(&["--addr", "127.0.0.1:1", "--connections", "0"]).is_empty());
        assert!(problems(&["--addr", "127.0.0.1:1", "--connections", "20000"]).is_empty());
        assert!(problems(&["--addr", "127.0.0.1:1", "--duration", "1h"]).is_empty());
        assert!(problems(&["--addr", "127.0.0.1:1", "--keys", "1000000"]).is_empty());
    }

    #[test]
    fn target_is_required_and_unique() {
        assert!(problems(&[])[0].contains("--addr"));
        let p = problems(&[
            "--addr",
            "127.0.0.1:1",
            "--http2-keysvc",
            "https://127.0.0.1:2",
        ]);
        assert!(p[0].contains("not both"), "{p:?}");
    }

    #[test]
    fn uids_set_the_key_count() {
        let c = Config::from_args(&args(&[
            "--addr",
            "127.0.0.1:1",
            "--uid",
            "a",
            "--uid",
            "b",
            "--keys",
            "7",
        ]))
        .expect("valid");
        assert_eq!(c.keys, 2);
        assert_eq!(c.uids, ["a", "b"]);
    }

    #[test]
    fn durations_and_rates_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("10000"), Ok(Rate::PerSecond(10_000)));
        assert_eq!(parse_rate("10k/s"), Ok(Rate::PerSecond(10_000)));
        assert!(parse_rate("2000000").is_err());
        assert!(parse_rate("-5").is_err());
    }

    #[test]
    fn http2_url_gives_the_address() {
        let c = Config::from_args(&args(&[
            "--http2-keysvc",
            "https://127.0.0.1:9443/v1/kmip",
            "--tenant",
            "tenant-b",
        ]))
        .expect("valid");
        assert_eq!(
            c.target,
            Target::KeysvcHttp2 {
                addr: "127.0.0.1:9443".into(),
                authority: "127.0.0.1:9443".into(),
                tenant: "tenant-b".into()
            }
        );
        assert!(!problems(&["--http2-keysvc", "http://127.0.0.1:1"]).is_empty());
    }
}
