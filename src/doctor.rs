//! `openkcm doctor`: a connectivity check from a tenant's side. One step per layer (DNS,
//! connect, TLS, the client certificate, the tenant, a KMIP round trip, optionally a
//! Create/Get/Destroy of a probe key, latency), each printed as one line, stopping at the
//! first failure that makes the later steps meaningless. See docs/doctor.md.
//!
//! The KMIP client is the project's (`kmip::client`), its TLS configuration
//! `kmip::client::tls::client_config`, the certificate facts `PeerIdentity` and the tenant
//! prediction `RoutingTable::decide`, as `openkcm routing check` uses them.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::identity::PeerIdentity;
use gateway::routing::{Decision, RoutingTable};
use kmip::client::{tls, Client, ClientError};
use kmip::spec::{QueryFunction, ResultReason};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::AlertDescription;
use tokio::io::{AsyncRead, AsyncWrite};
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::ExtendedKeyUsage;

/// The KMIP port (IANA) when `--addr` names none.
pub const DEFAULT_PORT: u16 = 5696;
/// A client certificate with less validity left than this is a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 86_400);
/// id-kp-clientAuth (RFC 5280).
const CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
/// The gateway's answer to every request on a connection whose certificate no rule routes
/// (gateway/src/kmip_app.rs).
const UNROUTED: &str = "the client certificate is not routed to a tenant";
/// Exit code for unusable arguments (clap uses it too).
const BAD_ARGUMENTS: u8 = 2;

/// Flags of `openkcm doctor`.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// The gateway's KMIP endpoint, HOST[:PORT] (port 5696 when omitted).
    #[arg(long, value_name = "HOST[:PORT]", required_unless_present = "sidecar")]
    pub addr: Option<String>,
    /// CA bundle (PEM) the gateway's server certificate must chain to.
    #[arg(long, value_name = "CA.pem", required_unless_present = "sidecar")]
    pub ca: Option<PathBuf>,
    /// The tenant client certificate (PEM; the leaf first, then any intermediates).
    #[arg(long, value_name = "CERT.pem", required_unless_present = "sidecar")]
    pub cert: Option<PathBuf>,
    /// The tenant client certificate's private key (PEM). Never printed.
    #[arg(long, value_name = "KEY.pem", required_unless_present = "sidecar")]
    pub key: Option<PathBuf>,
    /// Name checked on the gateway's certificate [default: HOST of --addr].
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Check through a sidecar's plain KMIP endpoint instead: a Unix socket path (the
    /// sidecar's /run/openkcm/kmip.sock) or HOST:PORT of a plain-TTLV listener. No TLS or
    /// certificate steps: the sidecar presents the pod's certificate.
    #[arg(long, value_name = "SOCKET|HOST:PORT", conflicts_with_all = ["addr", "ca", "cert", "key", "server_name"])]
    pub sidecar: Option<String>,
    /// TenantRouting rule file or directory (repeatable): print which tenant these rules
    /// give the certificate (the gateway itself does not say).
    #[arg(long, value_name = "DIR_OR_FILE", requires = "cert")]
    pub routing: Vec<PathBuf>,
    /// Also Create, Get and Destroy a probe AES-256 key (always destroyed).
    #[arg(long)]
    pub write: bool,
    /// Print one JSON document instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Deadline of each step (500ms, 5s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = runtime::parse_duration)]
    pub timeout: Duration,
    /// DiscoverVersions round trips timed by the latency step.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,
}

/// What a step came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Self::Pass => "✔",
            Self::Warn => "⚠",
            Self::Fail => "✘",
            Self::Skip => "-",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Skip => "skipped",
        }
    }
}

/// One step's outcome.
#[derive(Debug)]
struct Step {
    name: &'static str,
    status: Status,
    detail: String,
    hint: Option<String>,
    elapsed: Option<Duration>,
}

impl Step {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name,
            status,
            detail: detail.into(),
            hint: None,
            elapsed: None,
        }
    }
    fn pass(name: &'static str, detail: impl Into<String>, since: Instant) -> Self {
        Self::new(name, Status::Pass, detail).timed(since)
    }
    fn fail(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Fail, detail)
    }
    fn skip(name: &'static str, why: impl Into<String>) -> Self {
        Self::new(name, Status::Skip, why)
    }
    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    fn timed(mut self, since: Instant) -> Self {
        self.elapsed = Some(since.elapsed());
        self
    }

    fn line(&self) -> String {
        let mut line = format!("{} {}: {}", self.status.mark(), self.name, self.detail);
        if let Some(elapsed) = self.elapsed {
            if self.status != Status::Fail {
                line.push_str(&format!(" ({} ms)", elapsed.as_millis()));
            }
        }
        if let Some(hint) = &self.hint {
            line.push_str(&format!("\n    hint: {hint}"));
        }
        line
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "step": self.name,
            "status": self.status.label(),
            "detail": self.detail,
            "hint": self.hint,
            "ms": self.elapsed.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        })
    }
}

/// The steps so far; printed as they come unless the output is JSON.
#[derive(Debug)]
struct Report {
    json: bool,
    steps: Vec<Step>,
}

impl Report {
    fn push(&mut self, step: Step) {
        if !self.json {
            println!("{}", step.line());
        }
        self.steps.push(step);
    }

    /// Marks every step in `names` skipped because of `cause`.
    fn skip_rest(&mut self, names: &[&'static str], cause: &str) {
        for name in names {
            self.push(Step::skip(name, format!("skipped ({cause})")));
        }
    }

    fn failed(&self) -> bool {
        self.steps.iter().any(|s| s.status == Status::Fail)
    }
}

/// Where the doctor connects.
#[derive(Debug, Clone)]
enum Target {
    /// The gateway over TCP + mTLS.
    Gateway { host: String, port: u16 },
    /// A sidecar's plain TTLV listener over TCP.
    PlainTcp { host: String, port: u16 },
    /// A sidecar's plain TTLV Unix socket.
    Unix(PathBuf),
}

/// A byte stream of any kind (TLS, TCP, Unix) under the KMIP client.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Conn = Client<Box<dyn Io>>;

/// `openkcm doctor`: 0 when every step passed (warnings allowed), 1 on a failure, 2 on
/// unusable arguments.
pub fn run(args: &DoctorArgs) -> ExitCode {
    let target = match target(args) {
        Ok(target) => target,
        Err(e) => {
            eprintln!("openkcm doctor: {e}");
            return ExitCode::from(BAD_ARGUMENTS);
        }
    };
    let routing = if args.routing.is_empty() {
        None
    } else {
        match RoutingTable::load(&args.routing) {
            Ok(table) => Some(table),
            Err(e) => {
                eprintln!("openkcm doctor: --routing: {e}");
                return ExitCode::from(BAD_ARGUMENTS);
            }
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("openkcm doctor: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report {
        json: args.json,
        steps: Vec::new(),
    };
    rt.block_on(diagnose(args, &target, routing.as_ref(), &mut report));
    let failed = report.failed();
    if args.json {
        let document = serde_json::json!({
            "target": describe(&target),
            "ok": !failed,
            "steps": report.steps.iter().map(Step::json).collect::<Vec<_>>(),
        });
        println!("{document:#}");
    } else if failed {
        let first = report.steps.iter().find(|s| s.status == Status::Fail);
        println!(
            "doctor: FAILED at {}",
            first.map_or("?", |s| s.name) // always Some when failed
        );
    } else {
        let warnings = report
            .steps
            .iter()
            .filter(|s| s.status == Status::Warn)
            .count();
        println!("doctor: ok ({warnings} warning(s))");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn describe(target: &Target) -> String {
    match target {
        Target::Gateway { host, port } => format!("gateway {}", join_host_port(host, *port)),
        Target::PlainTcp { host, port } => format!("sidecar {}", join_host_port(host, *port)),
        Target::Unix(path) => format!("sidecar {}", path.display()),
    }
}

fn target(args: &DoctorArgs) -> Result<Target, String> {
    match (&args.addr, &args.sidecar) {
        (Some(addr), None) => {
            let (host, port) = split_host_port(addr, Some(DEFAULT_PORT))
                .map_err(|e| format!("--addr {addr:?}: {e}"))?;
            Ok(Target::Gateway { host, port })
        }
        (None, Some(sidecar)) if sidecar.contains('/') => Ok(Target::Unix(sidecar.into())),
        (None, Some(sidecar)) => {
            let (host, port) = split_host_port(sidecar, None).map_err(|e| {
                format!("--sidecar {sidecar:?}: {e} (or a Unix socket path containing '/')")
            })?;
            Ok(Target::PlainTcp { host, port })
        }
        _ => Err("give --addr HOST[:PORT] (with --ca, --cert, --key) or --sidecar".into()),
    }
}

/// `host:port`, `[v6]:port`, or (with a default port) `host`, `[v6]` or a bare IPv6 address.
fn split_host_port(s: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    let port_of = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))
    };
    let missing = || "HOST:PORT expected (no port)".to_owned();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in an IPv6 address".to_owned())?;
        let port = match after.strip_prefix(':') {
            Some(p) => port_of(p)?,
            None if after.is_empty() => default_port.ok_or_else(missing)?,
            None => return Err(format!("unexpected {after:?} after ']'")),
        };
        (host.to_owned(), port)
    } else {
        match s.matches(':').count() {
            0 => (s.to_owned(), default_port.ok_or_else(missing)?),
            1 => {
                let (host, p) = s.split_once(':').unwrap_or((s, ""));
                (host.to_owned(), port_of(p)?)
            }
            // A bare IPv6 address: the port would be ambiguous.
            _ if s.parse::<std::net::Ipv6Addr>().is_ok() => {
                (s.to_owned(), default_port.ok_or_else(missing)?)
            }
            _ => return Err("write an IPv6 address with a port as [ADDR]:PORT".into()),
        }
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    Ok((host, port))
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

const AFTER_CONNECT: [&str; 6] = ["tls", "certificate", "tenant", "kmip", "write", "latency"];

async fn diagnose(
    args: &DoctorArgs,
    target: &Target,
    routing: Option<&RoutingTable>,
    report: &mut Report,
) {
    let limit = args.timeout;
    // Step 4 reads only files: it runs (and is shown in its place) whatever the network does.
    let mut certificate = match target {
        Target::Gateway { .. } => args
            .cert
            .as_ref()
            .map(|cert| certificate_step(cert, args.key.as_ref())),
        _ => None,
    };
    let mut skip_after_connect = |report: &mut Report, cause: &str| {
        report.skip_rest(&["tls"], cause);
        if let Some(step) = certificate.take() {
            report.push(step);
        } else {
            report.skip_rest(&["certificate"], cause);
        }
        report.skip_rest(&AFTER_CONNECT[2..], cause);
    };
    // 1 + 2: resolve, connect.
    let stream: Box<dyn Io> = match target {
        Target::Unix(path) => {
            report.push(Step::skip("dns", "skipped (a Unix socket)"));
            let started = Instant::now();
            match within(limit, tokio::net::UnixStream::connect(path)).await {
                Ok(stream) => {
                    report.push(Step::pass(
                        "connect",
                        format!("{} (Unix socket)", path.display()),
                        started,
                    ));
                    Box::new(stream)
                }
                Err(e) => {
                    report.push(
                        Step::fail("connect", format!("{}: {e}", path.display())).hint(
                            "is the sidecar running in this pod, and is its socket \
                         (--socket, /run/openkcm/kmip.sock) mounted here?",
                        ),
                    );
                    skip_after_connect(report, "no connection");
                    return;
                }
            }
        }
        Target::Gateway { host, port } | Target::PlainTcp { host, port } => {
            let Some(addrs) = resolve(host, *port, limit, report).await else {
                report.skip_rest(&["connect"], "no address");
                skip_after_connect(report, "no address");
                return;
            };
            let Some(tcp) = connect(&addrs, limit, report).await else {
                skip_after_connect(report, "no connection");
                return;
            };
            Box::new(tcp)
        }
    };

    // 3 + 4 + 5: TLS, the certificate (offline), the tenant.
    let (mut client, probe) = match target {
        Target::Gateway { host, .. } => {
            let server_name = args.server_name.clone().unwrap_or_else(|| host.clone());
            let tls = handshake(args, &server_name, stream, report).await;
            if let Some(step) = certificate.take() {
                report.push(step);
            }
            match tls {
                Some(connected) => connected,
                None => {
                    report.skip_rest(&AFTER_CONNECT[2..], "no TLS session");
                    return;
                }
            }
        }
        _ => {
            report.push(Step::skip(
                "tls",
                "skipped (plain KMIP to the sidecar; it holds the TLS session to the gateway)",
            ));
            report.push(Step::skip(
                "certificate",
                "skipped (the sidecar presents the pod's tenant certificate)",
            ));
            let mut client: Conn = Client::new(stream);
            client.set_timeout(limit);
            let started = Instant::now();
            let probe = client.discover_versions(&[]).await;
            (client, Probe { probe, started })
        }
    };
    if !tenant_step(args, routing, probe, report) {
        report.skip_rest(&AFTER_CONNECT[3..], "no tenant");
        return;
    }

    // 6: a read-only round trip.
    if !kmip_step(&mut client, report).await {
        report.skip_rest(&AFTER_CONNECT[4..], "KMIP round trip failed");
        return;
    }

    // 7: write.
    if args.write {
        let step = write_step(&mut client).await;
        let poisoned = step.status == Status::Fail;
        report.push(step);
        if poisoned {
            // The connection may be unusable after a failure mid-exchange.
            report.skip_rest(&["latency"], "write failed");
            return;
        }
    } else {
        report.push(Step::skip(
            "write",
            "skipped (pass --write to create a probe key)",
        ));
    }

    // 8: latency.
    report.push(latency_step(&mut client, args.rounds).await);
}

/// `fut` within `limit`, a timeout being an I/O error like the others.
async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {limit:?}"),
        )),
    }
}

async fn resolve(
    host: &str,
    port: u16,
    limit: Duration,
    report: &mut Report,
) -> Option<Vec<SocketAddr>> {
    let started = Instant::now();
    match within(limit, tokio::net::lookup_host((host, port))).await {
        Ok(addrs) => {
            let mut addrs: Vec<SocketAddr> = addrs.collect();
            addrs.dedup();
            if addrs.is_empty() {
                report.push(Step::fail("dns", format!("{host}: no addresses")));
                return None;
            }
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            report.push(Step::pass(
                "dns",
                format!("{host} → {}", list.join(", ")),
                started,
            ));
            Some(addrs)
        }
        Err(e) => {
            report.push(Step::fail("dns", format!("{host}: {e}")).hint(
                "check the name (a Service is <name>.<namespace>.svc.cluster.local) \
                     and the resolver (/etc/resolv.conf)",
            ));
            None
        }
    }
}

async fn connect(
    addrs: &[SocketAddr],
    limit: Duration,
    report: &mut Report,
) -> Option<tokio::net::TcpStream> {
    let started = Instant::now();
    let mut errors = Vec::new();
    let mut refused = false;
    for addr in addrs {
        match within(limit, tokio::net::TcpStream::connect(addr)).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                report.push(Step::pass("connect", format!("TCP {addr}"), started));
                return Some(tcp);
            }
            Err(e) => {
                refused |= e.kind() == std::io::ErrorKind::ConnectionRefused;
                errors.push(format!("{addr}: {e}"));
            }
        }
    }
    let hint = if refused {
        "nothing listens there: is the gateway running, and is the port its KMIP port (5696)?"
    } else {
        "no answer: a firewall or NetworkPolicy may drop the packets \
         (is this namespace labelled as a tenant?)"
    };
    report.push(Step::fail("connect", errors.join("; ")).hint(hint));
    None
}

/// The first DiscoverVersions answer on a fresh connection: it tells an accepted client
/// certificate (TLS 1.3 refuses it only after the handshake) and the tenant decision.
struct Probe {
    probe: Result<Vec<kmip::ProtocolVersion>, ClientError>,
    started: Instant,
}

/// Step 3: the TLS handshake and a first answer; `None` when the session is unusable.
async fn handshake(
    args: &DoctorArgs,
    server_name: &str,
    stream: Box<dyn Io>,
    report: &mut Report,
) -> Option<(Conn, Probe)> {
    let started = Instant::now();
    let config = match client_config(args) {
        Ok(config) => config,
        Err(e) => {
            report.push(Step::fail("tls", e));
            return None;
        }
    };
    let name = match ServerName::try_from(server_name.to_owned()) {
        Ok(name) => name,
        Err(e) => {
            report.push(Step::fail(
                "tls",
                format!("server name {server_name:?}: {e}"),
            ));
            return None;
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tls = match within(args.timeout, connector.connect(name, stream)).await {
        Ok(tls) => tls,
        Err(e) => {
            report.push(tls_failure(&e, server_name));
            return None;
        }
    };
    let (_, session) = tls.get_ref();
    let version = session
        .protocol_version()
        .map_or_else(|| "TLS".to_owned(), |v| format!("{v:?}"));
    let server = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| match PeerIdentity::from_der(leaf) {
            Ok(id) => format!("server {} (expires {})", id.subject, date(id.not_after)),
            Err(e) => format!("server certificate unreadable: {e}"),
        })
        .unwrap_or_else(|| "no server certificate".to_owned());
    let boxed: Box<dyn Io> = Box::new(tls);
    let mut client: Conn = Client::new(boxed);
    client.set_timeout(args.timeout);
    // TLS 1.3: the server judges the client certificate after the client's side of the
    // handshake is done; its refusal arrives as an alert on the first read.
    let probe_started = Instant::now();
    let probe = client.discover_versions(&[]).await;
    match &probe {
        Err(ClientError::Io(e)) if rustls_error(e).is_some() => {
            report.push(tls_failure(e, server_name));
            return None;
        }
        Err(
            e @ (ClientError::Io(_)
            | ClientError::Closed
            | ClientError::Timeout(_)
            | ClientError::Frame(_)),
        ) => {
            report.push(
                Step::fail(
                    "tls",
                    format!("handshake done, but the first request got no answer: {e}"),
                )
                .hint("is this the gateway's KMIP port (not its HTTPS port 8443)?"),
            );
            return None;
        }
        _ => {}
    }
    report.push(Step::pass(
        "tls",
        format!("{version}, chain verified against --ca, client certificate accepted; {server}"),
        started,
    ));
    Some((
        client,
        Probe {
            probe,
            started: probe_started,
        },
    ))
}

fn client_config(args: &DoctorArgs) -> Result<rustls::ClientConfig, String> {
    let (Some(ca), Some(cert), Some(key)) = (&args.ca, &args.cert, &args.key) else {
        return Err("--ca, --cert and --key are required".into());
    };
    let read = |flag: &str, path: &PathBuf, e: ClientError| match e {
        ClientError::Io(io) => format!("{flag} {}: {io}", path.display()),
        other => format!("{flag}: {other}"),
    };
    let ca_certs = tls::certs_from_pem(ca).map_err(|e| read("--ca", ca, e))?;
    let chain = tls::certs_from_pem(cert).map_err(|e| read("--cert", cert, e))?;
    let key_der = tls::key_from_pem(key).map_err(|e| read("--key", key, e))?;
    tls::client_config(ca_certs, chain, key_der).map_err(|e| format!("{e}"))
}

/// The rustls error under an I/O error, if any.
fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// A failed handshake, told apart: the server refused our certificate, we refused the
/// server's, or something else.
fn tls_failure(e: &std::io::Error, server_name: &str) -> Step {
    let step = |detail: String| Step::fail("tls", detail);
    match rustls_error(e) {
        Some(rustls::Error::AlertReceived(alert)) if client_cert_alert(*alert) => step(format!(
            "the gateway refused the client certificate (TLS alert {alert:?})"
        ))
        .hint(match alert {
            AlertDescription::CertificateExpired => {
                "the certificate expired (or is not valid yet): renew it; see the certificate step"
            }
            AlertDescription::UnknownCA => {
                "the certificate is not issued by a CA the gateway trusts for tenants"
            }
            _ => {
                "the gateway does not accept this certificate: wrong CA, expired, \
                 or no clientAuth usage; see the certificate step"
            }
        }),
        Some(rustls::Error::AlertReceived(alert)) => step(format!(
            "the server aborted the handshake (TLS alert {alert:?})"
        )),
        Some(rustls::Error::InvalidCertificate(why)) => {
            let hint = match why {
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => format!(
                    "the server certificate does not name {server_name:?}: \
                     pass the name it carries with --server-name"
                ),
                rustls::CertificateError::UnknownIssuer => {
                    "--ca is not the CA that issued the gateway's certificate".to_owned()
                }
                _ => "the gateway's certificate is not acceptable".to_owned(),
            };
            step(format!(
                "the gateway's certificate failed verification: {why:?}"
            ))
            .hint(hint)
        }
        Some(rustls::Error::InvalidMessage(_)) => step(format!("not a TLS server: {e}")).hint(
            "a plain KMIP port (a sidecar's)? use --sidecar; the gateway's KMIP port speaks TLS",
        ),
        Some(other) => step(format!("handshake failed: {other}")),
        None if e.kind() == std::io::ErrorKind::TimedOut => step(format!("handshake: {e}")),
        None => step(format!("handshake: {e}"))
            .hint("the connection was dropped during the handshake: is this a TLS port?"),
    }
}

/// Alerts a server sends when it refuses the client's certificate.
fn client_cert_alert(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
            | AlertDescription::DecryptError
    )
}

/// Step 4: the client certificate on its own (offline).
fn certificate_step(cert: &PathBuf, key: Option<&PathBuf>) -> Step {
    const NAME: &str = "certificate";
    let started = Instant::now();
    let chain = match tls::certs_from_pem(cert) {
        Ok(chain) => chain,
        Err(ClientError::Io(e)) => return Step::fail(NAME, format!("{}: {e}", cert.display())),
        Err(e) => return Step::fail(NAME, format!("{e}")),
    };
    let Some(leaf) = chain.first() else {
        return Step::fail(NAME, format!("{}: no certificate", cert.display()));
    };
    let facts = match CertFacts::read(leaf) {
        Ok(facts) => facts,
        Err(e) => return Step::fail(NAME, format!("{}: {e}", cert.display())),
    };
    let id = &facts.identity;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let now = unix_now();
    let left = id.not_after.saturating_sub(now);
    let validity = if now < facts.not_before {
        problems.push(format!("not valid before {}", date(facts.not_before)));
        format!("valid from {}", date(facts.not_before))
    } else if left < 0 {
        problems.push(format!(
            "EXPIRED {} ({} days ago)",
            date(id.not_after),
            days(-left)
        ));
        format!("expired {}", date(id.not_after))
    } else {
        if u64::try_from(left).unwrap_or(0) < EXPIRY_WARNING.as_secs() {
            warnings.push(format!("expires in {} days", days(left)));
        }
        format!(
            "valid until {} ({} days left)",
            date(id.not_after),
            days(left)
        )
    };
    let usage = match &facts.extended_key_usage {
        None => "no Extended Key Usage (any use)".to_owned(),
        Some(oids) if oids.contains(&CLIENT_AUTH) => "clientAuth".to_owned(),
        Some(_) => {
            problems.push("Extended Key Usage lacks clientAuth".to_owned());
            "no clientAuth".to_owned()
        }
    };
    let key_check = match key.map(|k| key_matches(&chain, k)) {
        None => "key not given".to_owned(),
        Some(Ok(Some(()))) => "key matches".to_owned(),
        Some(Ok(None)) => {
            warnings.push("whether the key matches cannot be checked".to_owned());
            "key match unknown".to_owned()
        }
        Some(Err(e)) => {
            problems.push(e);
            "key does not match".to_owned()
        }
    };
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(",")
        }
    };
    let detail = format!(
        "{}; OU {}; SAN URI {}; issuer {}; {validity}; {usage}; {key_check}",
        id.subject,
        list(&id.subject_ou),
        list(&id.san_uri),
        id.issuer
    );
    if !problems.is_empty() {
        return Step::fail(NAME, format!("{}: {detail}", problems.join("; "))).hint(
            "issue a new tenant certificate (cert-manager renews the Secret; \
             `openkcm pki issue` in dev)",
        );
    }
    if !warnings.is_empty() {
        return Step::new(
            NAME,
            Status::Warn,
            format!("{}: {detail}", warnings.join("; ")),
        )
        .timed(started);
    }
    Step::pass(NAME, detail, started)
}

/// What `PeerIdentity` does not carry: the start of validity and the Extended Key Usage.
struct CertFacts {
    identity: PeerIdentity,
    not_before: i64,
    /// `None`: no EKU extension.
    extended_key_usage: Option<Vec<ObjectIdentifier>>,
}

impl CertFacts {
    fn read(der: &CertificateDer<'_>) -> Result<Self, String> {
        let identity = PeerIdentity::from_der(der).map_err(|e| e.to_string())?;
        let cert = x509_cert::Certificate::from_der(der).map_err(|e| e.to_string())?;
        let tbs = &cert.tbs_certificate;
        let not_before =
            i64::try_from(tbs.validity.not_before.to_unix_duration().as_secs()).unwrap_or(0);
        let extended_key_usage = tbs
            .get::<ExtendedKeyUsage>()
            .map_err(|e| format!("unreadable Extended Key Usage: {e}"))?
            .map(|(_critical, eku)| eku.0);
        Ok(Self {
            identity,
            not_before,
            extended_key_usage,
        })
    }
}

/// `Ok(Some(()))` the key is the certificate's, `Ok(None)` unknown, `Err` mismatch or
/// unreadable.
fn key_matches(chain: &[CertificateDer<'static>], key: &PathBuf) -> Result<Option<()>, String> {
    let der = match tls::key_from_pem(key) {
        Ok(der) => der,
        Err(ClientError::Io(e)) => return Err(format!("--key {}: {e}", key.display())),
        Err(e) => return Err(format!("--key: {e}")),
    };
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("--key {}: {e}", key.display()))?;
    let certified = rustls::sign::CertifiedKey::new(chain.to_vec(), signing);
    match certified.keys_match() {
        Ok(()) => Ok(Some(())),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(None),
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err("the key does not belong to the certificate".to_owned())
        }
        Err(e) => Err(format!("key check: {e}")),
    }
}

/// Step 5: which tenant. The gateway never names it; it refuses every request of an
/// unrouted certificate with Permission Denied, which the first answer shows.
fn tenant_step(
    args: &DoctorArgs,
    routing: Option<&RoutingTable>,
    probe: Probe,
    report: &mut Report,
) -> bool {
    const NAME: &str = "tenant";
    let predicted = routing.and_then(|table| {
        let cert = args.cert.as_ref()?;
        let pem = std::fs::read(cert).ok()?;
        let peer = PeerIdentity::from_pem(&pem).ok()?;
        Some(table.decide(&peer))
    });
    let rules = |decision: &Decision| match decision {
        Decision::Allow(route) => {
            format!("--routing gives tenant {} ({})", route.tenant, route.rule)
        }
        Decision::Deny { reason } => format!("--routing denies it ({reason})"),
    };
    match probe.probe {
        Err(ClientError::Operation {
            reason: Some(ResultReason::PermissionDenied),
            message,
            ..
        }) => {
            let (detail, hint) = if message.contains(UNROUTED) {
                (
                    "the gateway maps this certificate to no tenant".to_owned(),
                    "no TenantRouting rule matches its OU / URI SAN: add one, or check with \
                     `openkcm routing check --policies DIR --cert CERT`",
                )
            } else {
                (
                    format!("the gateway refused the request: {message}"),
                    "Permission Denied before any key was touched",
                )
            };
            let detail = match &predicted {
                Some(d) => format!("{detail}; {}", rules(d)),
                None => detail,
            };
            report.push(Step::fail(NAME, detail).hint(hint));
            false
        }
        Err(e) => {
            let hint = match &args.sidecar {
                Some(_) => {
                    "the sidecar answers with an error when it cannot reach the gateway: \
                            see its /ready and its log"
                }
                None => "the gateway could not serve the request: see its /ready and its log",
            };
            report.push(
                Step::fail(
                    NAME,
                    format!(
                        "not known: the first request (DiscoverVersions) failed: {}",
                        kmip_error(&e)
                    ),
                )
                .hint(hint),
            );
            false
        }
        // An answer from a tenant's key service: the certificate is routed.
        Ok(_) => {
            let detail = match (&predicted, &args.sidecar) {
                (Some(d @ Decision::Allow(_)), _) => {
                    format!("routed (the gateway does not say to which); {}", rules(d))
                }
                (Some(d @ Decision::Deny { .. }), _) => {
                    report.push(
                        Step::new(
                            NAME,
                            Status::Warn,
                            format!(
                                "routed by the gateway, but {}: the rule file differs from \
                                 the gateway's",
                                rules(d)
                            ),
                        )
                        .timed(probe.started),
                    );
                    return true;
                }
                (None, Some(_)) => "the sidecar's certificate is routed \
                                    (which tenant: not checked, the gateway does not say)"
                    .to_owned(),
                (None, None) => "routed (which tenant: not checked, the gateway does not say; \
                                 --routing FILE shows what the rules give)"
                    .to_owned(),
            };
            report.push(Step::pass(NAME, detail, probe.started));
            true
        }
    }
}

/// A KMIP failure as one phrase.
fn kmip_error(e: &ClientError) -> String {
    match e {
        ClientError::Operation {
            reason, message, ..
        } => match reason {
            Some(r) if message.is_empty() => format!("{r:?}"),
            Some(r) => format!("{r:?}: {message}"),
            None => message.clone(),
        },
        other => other.to_string(),
    }
}

/// Step 6: DiscoverVersions and Query.
async fn kmip_step(client: &mut Conn, report: &mut Report) -> bool {
    const NAME: &str = "kmip";
    let started = Instant::now();
    let versions = match client.discover_versions(&[]).await {
        Ok(v) => v,
        Err(e) => {
            report.push(Step::fail(
                NAME,
                format!("DiscoverVersions: {}", kmip_error(&e)),
            ));
            return false;
        }
    };
    let query = client
        .query(&[
            QueryFunction::QueryOperations,
            QueryFunction::QueryObjects,
            QueryFunction::QueryServerInformation,
        ])
        .await;
    let query = match query {
        Ok(q) => q,
        Err(e) => {
            report.push(Step::fail(NAME, format!("Query: {}", kmip_error(&e))));
            return false;
        }
    };
    let versions: Vec<String> = versions.iter().map(ToString::to_string).collect();
    let vendor = query
        .vendor_identification
        .map(|v| format!(", vendor {v:?}"))
        .unwrap_or_default();
    report.push(Step::pass(
        NAME,
        format!(
            "DiscoverVersions: {}; Query: {} operations, {} object types{vendor}",
            versions.join(", "),
            query.operations.len(),
            query.object_types.len()
        ),
        started,
    ));
    true
}

/// Step 7: Create, Get, Destroy of a probe key; destroyed whatever happens after Create.
async fn write_step(client: &mut Conn) -> Step {
    const NAME: &str = "write";
    let started = Instant::now();
    let name = format!("openkcm-doctor-probe-{:016x}", random_u64());
    let uid = match client.create_aes_key(256, Some(&name)).await {
        Ok(uid) => uid,
        Err(e) => {
            return Step::fail(NAME, format!("Create {name}: {}", kmip_error(&e))).hint(
                "the tenant's key service refused or failed; a PermissionDenied means the \
                 tenant may not create keys",
            )
        }
    };
    let got = client.get(&uid).await;
    let destroyed = client.destroy(&uid).await;
    match (got, destroyed) {
        (Ok(got), Ok(())) => match client.get(&uid).await {
            Err(e)
                if matches!(
                    e.result_reason(),
                    Some(ResultReason::ItemNotFound | ResultReason::ObjectNotFound)
                ) =>
            {
                Step::pass(
                    NAME,
                    format!(
                        "Create, Get ({:?}), Destroy of AES-256 key {name} (uid {uid}); \
                         a Get afterwards: not found",
                        got.object_type
                    ),
                    started,
                )
            }
            Ok(_) => Step::fail(
                NAME,
                format!("probe key {uid}: destroyed, yet a Get still returns it"),
            ),
            Err(e) => Step::fail(
                NAME,
                format!(
                    "probe key {uid}: destroyed, but a Get afterwards answered {} \
                     instead of not found",
                    kmip_error(&e)
                ),
            ),
        },
        (Err(e), Ok(())) => Step::fail(
            NAME,
            format!(
                "Get of probe key {uid}: {}; the key was destroyed",
                kmip_error(&e)
            ),
        ),
        (_, Err(e)) => Step::fail(
            NAME,
            format!(
                "Destroy of probe key {name} (uid {uid}): {}",
                kmip_error(&e)
            ),
        )
        .hint(format!(
            "the probe key is left behind: destroy uid {uid} by hand"
        )),
    }
}

/// Step 8: DiscoverVersions round trips.
async fn latency_step(client: &mut Conn, rounds: u32) -> Step {
    const NAME: &str = "latency";
    let started = Instant::now();
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        if let Err(e) = client.discover_versions(&[]).await {
            return Step::fail(
                NAME,
                format!(
                    "DiscoverVersions round trip {}: {}",
                    times.len() + 1,
                    kmip_error(&e)
                ),
            );
        }
        times.push(t.elapsed());
    }
    times.sort();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let (min, median, max) = (times[0], times[times.len() / 2], times[times.len() - 1]);
    Step::pass(
        NAME,
        format!(
            "{rounds} DiscoverVersions: min {} / median {} / max {} ms",
            ms(min),
            ms(median),
            ms(max)
        ),
        started,
    )
}

/// 64 bits from the standard library's per-process random hash keys: enough to keep two
/// probe key names apart; nothing secret depends on it.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Whole days, rounded.
fn days(seconds: i64) -> i64 {
    seconds.saturating_add(43_200) / 86_400
}

/// Unix seconds as an RFC 3339 UTC date.
fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{unix} (unix)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        let d = Some(DEFAULT_PORT);
        assert_eq!(split_host_port("gw:15696", d), Ok(("gw".into(), 15696)));
        assert_eq!(split_host_port("gw", d), Ok(("gw".into(), 5696)));
        assert_eq!(split_host_port("[::1]:7", d), Ok(("::1".into(), 7)));
        assert_eq!(split_host_port("[::1]", d), Ok(("::1".into(), 5696)));
        assert_eq!(split_host_port("::1", d), Ok(("::1".into(), 5696)));
        assert!(split_host_port("gw:0", d).is_err());
        assert!(split_host_port("gw:x", d).is_err());
        assert!(split_host_port(":5696", d).is_err());
        assert!(split_host_port("gw", None).is_err());
        assert!(split_host_port("[::1", d).is_err());
        assert!(split_host_port("a:b:c", d).is_err());
        assert_eq!(join_host_port("::1", 5), "[::1]:5");
    }

    #[test]
    fn dates_and_days() {
        assert_eq!(date(0), "1970-01-01T00:00:00Z");
        assert_eq!(days(86_400 * 3 - 100), 3);
        assert!(date(i64::MAX).contains("unix"));
    }
}
