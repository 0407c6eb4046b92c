//! `openkcm dev`: the whole stack on one machine. A dev PKI, TenantRouting rules and a root
//! key in one directory (created once, reused afterwards), keysvc in-process on loopback and
//! the gateway on its own thread in front of it; stops on Ctrl-C / SIGTERM.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use gateway::config::GatewayFlags;
use gateway::server::Gateway;
use keysvc::config::{self, ConfigFlags, ConfigSources};
use keysvc::envelope::RootKey;
use keysvc::server::{self, KeysvcServer};
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use pki::{CertSpec, CertificateAuthority};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// Id of the root key `openkcm dev` creates.
pub const ROOT_KEY_ID: &str = "dev-root-1";
/// The gateway's identity towards keysvc: the URI SAN keysvc allow-lists.
pub const GATEWAY_URI: &str = "spiffe://openkcm.dev/gateway";
/// The gateway's upstream client certificate's CN (informational: keysvc matches the URI).
const GATEWAY_CN: &str = "openkcm-gateway";
/// The internal CA's directory under `pki/`: it issues only keysvc's server certificate and
/// the gateway's upstream client certificate, so no tenant certificate can ever reach
/// keysvc's API (a separate trust domain for the gateway→keysvc hop).
const INTERNAL_CA_DIR: &str = "internal";
/// The name the gateway checks on keysvc's certificate.
const KEYSVC_NAME: &str = "keysvc";
/// How long start-up may take before `openkcm dev` gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The tenants of the dev PKI: each gets a client certificate with `OU=<tenant>` and a rule.
const TENANTS: [&str; 2] = ["tenant-a", "tenant-b"];
/// The head of the routing rules file `openkcm dev` writes.
const ROUTING_HEADER: &str =
    "# Written by `openkcm dev`: client certificates with OU tenant-a / tenant-b get that tenant;
# every other certificate (stranger.pem) is refused.
";

/// Flags of `openkcm dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Directory for the dev PKI, the routing rules, the root key and the SQLite database;
    /// created if absent, reused if present.
    #[arg(long, value_name = "DIR", default_value = "openkcm-dev")]
    pub dir: PathBuf,
    /// KMIP listener of the gateway (TTLV over mutual TLS).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5696")]
    pub kmip_addr: SocketAddr,
    /// The gateway's HTTPS listener: KMIP over HTTPS (POST /kmip, client certificate
    /// required) and its /health, /ready, /metrics.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    pub https_addr: SocketAddr,
    /// Key store URL [default: sqlite://DIR/keys.db]. A postgres:// URL is taken as a
    /// superuser URL: keysvc migrates and then runs as a least-privilege role (its --dev).
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// keysvc's internal API listener (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub keysvc_addr: SocketAddr,
    /// Log filter (JSON log lines on stderr).
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    pub log_level: String,
    /// Worker threads of each gateway listener [default: half the CPUs available, rounded
    /// up]. keysvc shares the process and the CPUs (its runtime has a worker per CPU).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub gateway_threads: Option<u16>,
}

/// `--gateway-threads` when not given: half of `cpus`, rounded up. The standalone gateway
/// takes a worker per CPU because it has its pod's CPUs to itself; here keysvc's workers
/// run on the same CPUs, and a worker per CPU in each made more threads than cores. On 2
/// cores (docs/benchmarks.md, "Gateway threads in `openkcm dev`") one gateway worker
/// halved the context switches and served 10–35% more Gets at every load.
pub fn default_gateway_threads(cpus: usize) -> u16 {
    u16::try_from(cpus.div_ceil(2)).unwrap_or(u16::MAX).max(1)
}

/// Every file `openkcm dev` uses, under one directory.
#[derive(Debug, Clone)]
pub struct DevFiles {
    pub dir: PathBuf,
}

impl DevFiles {
    fn pki(&self, name: &str) -> PathBuf {
        self.dir.join("pki").join(name)
    }
    fn ca(&self) -> PathBuf {
        self.pki(pki::CA_CERT_FILE)
    }
    /// The internal CA (gateway ↔ keysvc).
    fn internal_ca(&self) -> PathBuf {
        self.pki(INTERNAL_CA_DIR).join(pki::CA_CERT_FILE)
    }
    fn cert(&self, name: &str) -> PathBuf {
        self.pki(&format!("{name}.pem"))
    }
    fn key(&self, name: &str) -> PathBuf {
        self.pki(&format!("{name}-key.pem"))
    }
    fn policies(&self) -> PathBuf {
        self.dir.join("policies")
    }
    fn root_key(&self) -> PathBuf {
        self.dir.join("root-key.b64")
    }
    fn database_default(&self) -> String {
        format!("sqlite://{}", self.dir.join("keys.db").display())
    }
}

/// Creates whatever is missing in `dir`; returns what was created (for the banner).
pub fn prepare(dir: &Path) -> anyhow::Result<(DevFiles, Vec<String>)> {
    std::fs::create_dir_all(dir.join("pki"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let files = DevFiles { dir };
    let mut created = Vec::new();
    let (ca, new_ca) =
        CertificateAuthority::load_or_create(&files.dir.join("pki"), "OpenKCM dev CA")
            .context("dev CA")?;
    if new_ca {
        created.push("CA".to_owned());
    }
    let internal_dir = files.pki(INTERNAL_CA_DIR);
    std::fs::create_dir_all(&internal_dir)
        .with_context(|| format!("cannot create {}", internal_dir.display()))?;
    let (internal, new_internal) =
        CertificateAuthority::load_or_create(&internal_dir, "OpenKCM dev internal CA")
            .context("dev internal CA")?;
    if new_internal {
        created.push("internal CA".to_owned());
    }
    let local = |mut spec: CertSpec| {
        spec.dns_names.push("localhost".into());
        spec.ip_addresses.push([127, 0, 0, 1].into());
        spec
    };
    // (file name, spec, issued by the internal CA?)
    let mut specs = Vec::new();
    let mut gateway = local(CertSpec::new("openkcm-gateway-kmip"));
    gateway.server = true;
    specs.push(("gateway", gateway, false));
    let mut keysvc = local(CertSpec::new(KEYSVC_NAME));
    keysvc.dns_names.push(KEYSVC_NAME.into());
    keysvc.server = true;
    specs.push(("keysvc", keysvc, true));
    let mut upstream = CertSpec::new(GATEWAY_CN);
    upstream.uris.push(GATEWAY_URI.into());
    upstream.client = true;
    specs.push(("gateway-upstream", upstream, true));
    for tenant in TENANTS {
        let mut spec = CertSpec::new(tenant);
        spec.organizational_units.push(tenant.into());
        spec.client = true;
        specs.push((tenant, spec, false));
    }
    let mut stranger = CertSpec::new("stranger");
    stranger.organizational_units.push("nobody".into());
    stranger.client = true;
    specs.push(("stranger", stranger, false));
    for (name, spec, internal_hop) in specs {
        let (cert, key) = (files.cert(name), files.key(name));
        let (issuer, new_issuer) = match internal_hop {
            true => (&internal, new_internal),
            false => (&ca, new_ca),
        };
        if new_issuer || !cert.is_file() || !key.is_file() {
            issuer
                .issue(&spec)
                .with_context(|| format!("certificate {name}"))?
                .write(&cert, &key)
                .with_context(|| format!("cannot write {}", cert.display()))?;
            created.push(format!("{name} certificate"));
        }
    }
    // mongod wants certificate and key in one PEM file.
    let bundle = files.pki("tenant-a-bundle.pem");
    let mut pem = std::fs::read_to_string(files.cert("tenant-a"))?;
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    pem.push_str(&std::fs::read_to_string(files.key("tenant-a"))?);
    write_private(&bundle, pem.as_bytes())?;

    std::fs::create_dir_all(files.policies())?;
    let rules = files.policies().join("tenant-routing.yaml");
    if !rules.is_file() {
        std::fs::write(
            &rules,
            ROUTING_HEADER.to_owned() + &gateway::routing::tenant_ou_rules(&TENANTS),
        )
        .with_context(|| format!("cannot write {}", rules.display()))?;
        created.push("routing rules".to_owned());
    }
    if !files.root_key().is_file() {
        let root = RootKey::generate(ROOT_KEY_ID).context("root key")?;
        write_private(&files.root_key(), root.to_base64().as_bytes())?;
        created.push(format!("root key {ROOT_KEY_ID}"));
    }
    Ok((files, created))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
    }
    #[cfg(not(unix))]
    options.open(path)?.write_all(bytes)?;
    Ok(())
}

/// Tells the gateway's Pingora server to stop (fast: dev has no in-flight work to drain).
#[derive(Clone, Default)]
struct StopSignal(Arc<Notify>);

#[async_trait]
impl ShutdownSignalWatch for StopSignal {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}

/// `openkcm dev`.
pub fn run(args: &DevArgs) -> ExitCode {
    let started = Instant::now();
    match runtime::LogFilter::parse(&args.log_level) {
        Ok(filter) => {
            if let Err(e) = runtime::logging::init(&filter) {
                eprintln!("openkcm dev: cannot set up logging: {e}");
                return ExitCode::FAILURE;
            }
        }
        Err(e) => {
            eprintln!("openkcm dev: --log-level: {e}");
            return ExitCode::from(2);
        }
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| {
            let served = rt.block_on(serve(args, started));
            rt.shutdown_timeout(Duration::from_millis(500));
            served
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("openkcm dev: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &DevArgs, started: Instant) -> anyhow::Result<()> {
    // Pingora retries a busy address forever (warning once a second); fail fast instead.
    for (flag, addr) in [
        ("--kmip-addr", args.kmip_addr),
        ("--https-addr", args.https_addr),
    ] {
        std::net::TcpListener::bind(addr)
            .with_context(|| format!("{flag} {addr} is not available (another openkcm dev?)"))?;
    }
    let (files, created) = prepare(&args.dir)?;
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| files.database_default());
    let postgres = database.starts_with("postgres://") || database.starts_with("postgresql://");
    let text = |p: PathBuf| p.display().to_string();
    let flags = ConfigFlags {
        listen_api: Some(args.keysvc_addr.to_string()),
        listen_management: Some("127.0.0.1:0".into()),
        tls_cert: Some(text(files.cert("keysvc"))),
        tls_key: Some(text(files.key("keysvc"))),
        tls_client_ca: Some(text(files.internal_ca())),
        allow_gateway: vec![GATEWAY_URI.into()],
        database: Some(database.clone()),
        dev: postgres,
        root_key_id: Some(ROOT_KEY_ID.into()),
        root_key_file: Some(text(files.root_key())),
        ..ConfigFlags::default()
    };
    let (config, warnings) = config::load_serve(&ConfigSources::new(flags))
        .map_err(|e| anyhow::anyhow!("keysvc configuration: {e}"))?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let store = server::open_store(&config.store.database)
        .await
        .with_context(|| format!("database {}", redact(&database)))?;
    let keysvc = KeysvcServer::start(&config, store)
        .await
        .context("keysvc")?;
    let api = keysvc.api_addr();
    let management = keysvc.management_addr();

    // `..default()` keeps this compiling when the gateway grows flags.
    #[allow(clippy::needless_update)]
    let gateway_flags = GatewayFlags {
        kmip_addr: Some(args.kmip_addr.to_string()),
        https_addr: Some(args.https_addr.to_string()),
        tls_cert: Some(files.cert("gateway")),
        tls_key: Some(files.key("gateway")),
        client_ca: Some(files.ca()),
        policies: vec![files.policies()],
        upstreams: vec![api.to_string()],
        upstream_ca: Some(files.internal_ca()),
        upstream_cert: Some(files.cert("gateway-upstream")),
        upstream_key: Some(files.key("gateway-upstream")),
        upstream_server_name: Some(KEYSVC_NAME.into()),
        log_level: Some(args.log_level.clone()),
        threads: Some(args.gateway_threads.unwrap_or_else(|| {
            default_gateway_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        })),
        ..GatewayFlags::default()
    };
    let gateway_config = match gateway_flags.resolve() {
        Ok(c) => c,
        Err(e) => {
            keysvc.shutdown().await;
            anyhow::bail!("gateway configuration: {e}");
        }
    };
    let gateway = match Gateway::build(&gateway_config) {
        Ok(g) => g,
        Err(e) => {
            keysvc.shutdown().await;
            anyhow::bail!("gateway: {e}");
        }
    };
    let stop = StopSignal::default();
    let signal = stop.clone();
    let gateway_thread = std::thread::Builder::new()
        .name("gateway".into())
        .spawn(move || gateway.run(Box::new(signal)))
        .context("cannot start the gateway thread")?;

    let probe = kmip::client::tls::connector_from_pem_files(
        files.ca(),
        files.cert("tenant-a"),
        files.key("tenant-a"),
    )
    .context("tenant-a client certificate")?;
    let ready = wait_ready(management, args.kmip_addr, &probe, &gateway_thread).await;
    if let Err(e) = ready {
        stop.0.notify_one();
        let _ = tokio::task::spawn_blocking(move || gateway_thread.join()).await;
        keysvc.shutdown().await;
        return Err(e);
    }
    let startup = started.elapsed();
    tracing::info!(startup_ms = startup.as_millis() as u64, "openkcm dev ready");
    print!(
        "{}",
        banner(args, &files, &created, &database, api, management, startup)
    );
    let _ = std::io::stdout().flush();

    runtime::terminated().await;
    let stopping = Instant::now();
    println!("openkcm dev: stopping");
    stop.0.notify_one();
    let _ = tokio::task::spawn_blocking(move || gateway_thread.join()).await;
    keysvc.shutdown().await;
    println!(
        "openkcm dev: stopped in {} ms",
        stopping.elapsed().as_millis()
    );
    let _ = std::io::stdout().flush();
    Ok(())
}

/// Waits (bounded) until keysvc's `/ready` answers 200 and the gateway's KMIP port accepts.
async fn wait_ready(
    management: SocketAddr,
    kmip: SocketAddr,
    probe: &tokio_rustls::TlsConnector,
    gateway: &std::thread::JoinHandle<()>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut keysvc_ready = false;
    loop {
        if !keysvc_ready {
            keysvc_ready = http_ready(management).await;
        }
        // A full mTLS handshake, not a bare connect (which the gateway logs as an error).
        if keysvc_ready && kmip_accepts(kmip, probe).await {
            return Ok(());
        }
        anyhow::ensure!(
            !gateway.is_finished(),
            "the gateway stopped during start-up (is {kmip} in use?)"
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "not ready after {READY_TIMEOUT:?} (keysvc ready: {keysvc_ready}, KMIP {kmip})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn kmip_accepts(kmip: SocketAddr, probe: &tokio_rustls::TlsConnector) -> bool {
    let addr = kmip.to_string();
    let connect = kmip::client::Client::connect_tls(&addr, "localhost", probe);
    matches!(
        tokio::time::timeout(Duration::from_secs(3), connect).await,
        Ok(Ok(_))
    )
}

async fn http_ready(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        tcp.write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        tcp.read_to_end(&mut buf).await.ok()?;
        Some(buf.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// A database URL without its password (nor any query value that might be one); the TLS
/// parameters and file paths stay visible.
fn redact(url: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        config::redact_url(url)
    } else {
        url.to_owned()
    }
}

fn banner(
    args: &DevArgs,
    files: &DevFiles,
    created: &[String],
    database: &str,
    api: SocketAddr,
    management: SocketAddr,
    startup: Duration,
) -> String {
    let p = |path: PathBuf| path.display().to_string();
    let kmip = args.kmip_addr;
    let mut out = String::new();
    let _ = writeln!(out, "openkcm dev ready in {} ms", startup.as_millis());
    let _ = writeln!(out);
    let _ = writeln!(out, "directory     {}", files.dir.display());
    if created.is_empty() {
        let _ = writeln!(out, "              (reused: nothing created)");
    } else {
        let _ = writeln!(out, "              created: {}", created.join(", "));
    }
    let _ = writeln!(out, "KMIP (mTLS)   {kmip}   server name localhost");
    let _ = writeln!(
        out,
        "HTTPS         https://{https}/kmip (KMIP over HTTPS, POST, client certificate)  \
         https://{https}/ready  /health  /metrics",
        https = args.https_addr
    );
    let _ = writeln!(out, "keysvc API    {api} (internal, mTLS, gateway only)");
    let _ = writeln!(
        out,
        "keysvc mgmt   http://{management}/ready  /health  /metrics"
    );
    let _ = writeln!(out, "key store     {}", redact(database));
    let _ = writeln!(out, "root key      {} ({ROOT_KEY_ID})", p(files.root_key()));
    let _ = writeln!(
        out,
        "routing       {}",
        p(files.policies().join("tenant-routing.yaml"))
    );
    let _ = writeln!(out, "CA            {}", p(files.ca()));
    let _ = writeln!(
        out,
        "internal CA   {} (gateway → keysvc only)",
        p(files.internal_ca())
    );
    for who in ["tenant-a", "tenant-b", "stranger"] {
        let note = if who == "stranger" {
            "no rule matches: every request is refused".to_owned()
        } else {
            format!("OU {who} -> tenant {who}")
        };
        let _ = writeln!(
            out,
            "{who:<13} {}  {}  ({note})",
            p(files.cert(who)),
            p(files.key(who))
        );
    }
    let _ = writeln!(
        out,
        "tenant-a bundle {} (certificate + key, for mongod)",
        p(files.pki("tenant-a-bundle.pem"))
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "mongod (tenant-a), mongod.conf:");
    let _ = writeln!(out, "  security:");
    let _ = writeln!(out, "    enableEncryption: true");
    let _ = writeln!(out, "    kmip:");
    let _ = writeln!(out, "      serverName: localhost");
    let _ = writeln!(out, "      port: {}", kmip.port());
    let _ = writeln!(out, "      serverCAFile: {}", p(files.ca()));
    let _ = writeln!(
        out,
        "      clientCertificateFile: {}",
        p(files.pki("tenant-a-bundle.pem"))
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "PyKMIP 0.11 (tenant-a):");
    let _ = writeln!(out, "  from kmip.pie.client import ProxyKmipClient");
    let _ = writeln!(out, "  from kmip.core import enums");
    let _ = writeln!(
        out,
        "  client = ProxyKmipClient(hostname=\"{}\", port={}, cert=\"{}\", key=\"{}\", ca=\"{}\",",
        kmip.ip(),
        kmip.port(),
        p(files.cert("tenant-a")),
        p(files.key("tenant-a")),
        p(files.ca())
    );
    let _ = writeln!(
        out,
        "                           config=\"client\", kmip_version=enums.KMIPVersion.KMIP_1_4)"
    );
    let _ = writeln!(out, "  with client:");
    let _ = writeln!(
        out,
        "      uid = client.create(enums.CryptographicAlgorithm.AES, 256)"
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Ctrl-C stops; keys stay in the key store for the next run."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::default_gateway_threads;

    #[test]
    fn gateway_gets_half_the_cpus_and_at_least_one_thread() {
        assert_eq!(default_gateway_threads(0), 1);
        assert_eq!(default_gateway_threads(1), 1);
        assert_eq!(default_gateway_threads(2), 1);
        assert_eq!(default_gateway_threads(3), 2);
        assert_eq!(default_gateway_threads(16), 8);
    }
}
