//! `openkcm`: one binary, one subcommand per component. This file is CLI and wiring only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

mod dev;
mod doctor;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use gateway::identity::PeerIdentity;
use gateway::routing::{is_valid_tenant_id, Decision, RoutingTable};
use keysvc::config::{self, ConfigFlags, ConfigSources, SecretString};
use keysvc::envelope::RootKey;
use keysvc::server::{self, KeysvcServer};
use pki::{CertSpec, CertificateAuthority};

/// jemalloc instead of glibc's malloc. The gateway allocates and frees buffers and
/// futures of a few KiB per request, across worker threads; glibc spent ~8% of the
/// gateway's CPU on them (`malloc_consolidate` among the top symbols). With jemalloc:
/// ~12% more Gets/s through the full stack, for ~1-2 MiB more RSS per process and
/// ~0.6 KiB more per idle connection (docs/benchmarks.md, "The allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "openkcm",
    version,
    about = "OpenKCM crypto layer: multi-tenant KMIP key service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the KMIP protocol versions this build speaks.
    Versions,
    /// The key service: KMIP engine behind the gateway (HTTP/2 + mTLS), or one of its
    /// maintenance commands.
    Keysvc(Box<KeysvcArgs>),
    /// TenantRouting rules: which tenant a client certificate gets, and why.
    #[command(subcommand)]
    Routing(RoutingCommand),
    /// Dev PKI: a local CA and tenant client certificates (ECDSA P-256, PEM files).
    #[command(subcommand)]
    Pki(PkiCommand),
    /// The KMIP gateway: mTLS termination, TenantRouting, per-request forwarding to keysvc.
    Gateway(Box<gateway::config::GatewayFlags>),
    /// The whole stack locally: dev PKI, routing rules, root key, keysvc and the gateway.
    Dev(Box<dev::DevArgs>),
    /// The per-pod KMIP proxy: a local socket (Unix and TLS) for the workload, mTLS to the
    /// gateway with the pod's tenant certificate.
    Sidecar(Box<sidecar::SidecarArgs>),
    /// The mutating admission webhook that adds the sidecar to tenant pods.
    Injector(Box<injector::InjectorFlags>),
    /// KMIP load generator: drives any KMIP server over TTLV + mTLS.
    Loadtest(Box<loadtest::LoadtestArgs>),
    /// The Kubernetes controller: TenantRouting → the gateway's rules, TenantCertificate →
    /// cert-manager Certificates, ServiceDiscovery → endpoint health (docs/controller.md).
    Controller(Box<controller::ControllerFlags>),
    /// Connectivity check from a tenant's side: DNS, TCP, TLS, the client certificate, the
    /// tenant, a KMIP round trip (--write: a probe key), latency. Exit code 0: every step
    /// passed (warnings allowed), 1: a step failed, 2: bad arguments.
    Doctor(Box<doctor::DoctorArgs>),
}

#[derive(Debug, Subcommand)]
enum RoutingCommand {
    /// Validate the rules and print their warnings (on stderr: overlapping rules for
    /// different tenants, rules on fields a certificate's requester chooses); with --cert,
    /// print the certificate's identity, the tenant the rules give it (or DENIED and why)
    /// and how each rule judged it. Exit code 0: allowed (or, without --cert, the rules are
    /// valid; warnings do not change it), 3: denied, 2: bad rules or certificate.
    Check {
        /// A rule file, or a directory whose *.yaml / *.yml files are read (repeatable).
        #[arg(long, value_name = "DIR_OR_FILE", required = true)]
        policies: Vec<PathBuf>,
        /// The client certificate, PEM (the first certificate in the file).
        #[arg(long, value_name = "CERT.pem")]
        cert: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create a CA in DIR (ca.pem, ca-key.pem) unless one is there already.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Common name of a new CA.
        #[arg(long, value_name = "NAME", default_value = "OpenKCM dev CA")]
        cn: String,
    },
    /// Issue a tenant client certificate (OU=NAME, clientAuth) as OUT/NAME.pem and
    /// OUT/NAME-key.pem.
    Issue {
        /// The CA directory (see `pki init`).
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The tenant: the certificate's OU, and the file names.
        #[arg(long, value_name = "NAME")]
        tenant: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Common name [default: the tenant name].
        #[arg(long, value_name = "CN")]
        cn: Option<String>,
        /// Days of validity.
        #[arg(long, value_name = "N", default_value_t = pki::DEFAULT_VALIDITY_DAYS,
              value_parser = clap::value_parser!(i64).range(1..=36500))]
        days: i64,
        /// Replace existing certificate and key files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct KeysvcArgs {
    #[command(subcommand)]
    action: Option<KeysvcAction>,
    #[command(flatten)]
    flags: ConfigFlags,
}

#[derive(Debug, Subcommand)]
enum KeysvcAction {
    /// Create or upgrade the PostgreSQL schema as its owner and grant the runtime role.
    Migrate {
        /// The owner's URL (postgres://OWNER@HOST/DB); the runtime role must not be it.
        #[arg(long, value_name = "OWNER_URL", env = config::ENV_MIGRATE_DATABASE, hide_env_values = true)]
        database: String,
        /// The role keysvc runs as (exists already; no superuser, no BYPASSRLS).
        #[arg(long, value_name = "NAME")]
        app_role: String,
    },
    /// Rewrap every stored key under a new root key (safe while keysvc serves).
    RotateRoot(Box<RotateRootArgs>),
}

#[derive(Debug, Args)]
struct RotateRootArgs {
    #[command(flatten)]
    flags: ConfigFlags,
    /// File holding the new root key (32 bytes, base64); or set OPENKCM_NEW_ROOT_KEY.
    #[arg(long, value_name = "FILE", env = config::ENV_NEW_ROOT_KEY_FILE)]
    new_key_file: Option<PathBuf>,
    /// Id of the new root key.
    #[arg(long, value_name = "ID", env = config::ENV_NEW_ROOT_KEY_ID)]
    new_key_id: String,
    /// PostgreSQL: the table owner's URL (as for `migrate`), used only to list the tenants,
    /// which the runtime role cannot read. Prefer the environment variable: `ps` shows flags.
    #[arg(long, value_name = "OWNER_URL", env = config::ENV_MIGRATE_DATABASE, hide_env_values = true)]
    owner_database: Option<String>,
}

fn main() -> ExitCode {
    let started = Instant::now();
    match Cli::parse().command {
        Command::Versions => {
            for v in kmip::ProtocolVersion::SUPPORTED {
                println!("{v}");
            }
            ExitCode::SUCCESS
        }
        Command::Routing(RoutingCommand::Check { policies, cert }) => {
            routing_check(&policies, cert.as_deref())
        }
        Command::Pki(PkiCommand::Init { dir, cn }) => report(pki_init(&dir, &cn)),
        Command::Pki(PkiCommand::Issue {
            ca_dir,
            tenant,
            out,
            cn,
            days,
            force,
        }) => report(pki_issue(&ca_dir, &tenant, &out, cn, days, force)),
        Command::Keysvc(args) => match args.action {
            None => keysvc_serve(args.flags, started),
            Some(KeysvcAction::Migrate { database, app_role }) => {
                report(runtime().and_then(|rt| rt.block_on(migrate(&database, &app_role))))
            }
            Some(KeysvcAction::RotateRoot(rotate)) => {
                let RotateRootArgs {
                    flags,
                    new_key_file,
                    new_key_id,
                    owner_database,
                } = *rotate;
                rotate_root(flags, new_key_file, &new_key_id, owner_database.as_deref())
            }
        },
        Command::Gateway(flags) => gateway_serve(&flags),
        Command::Dev(args) => dev::run(&args),
        Command::Sidecar(args) => match args.resolve_with_env(runtime::config::process_env()) {
            Ok(config) => {
                let log = config.log.clone();
                with_log_filter("sidecar", &log, || {
                    for warning in &config.warnings {
                        tracing::warn!("{warning}");
                    }
                    sidecar::run(config)
                })
            }
            Err(errors) => {
                eprintln!("openkcm sidecar: {errors}");
                ExitCode::from(2)
            }
        },
        Command::Injector(flags) => match flags.resolve_with_env(runtime::config::process_env()) {
            Ok((args, warnings)) => {
                let log = args.log.clone();
                with_log_filter("injector", &log, || {
                    for warning in &warnings {
                        tracing::warn!("{warning}");
                    }
                    injector::run(args)
                })
            }
            Err(errors) => {
                eprintln!("openkcm injector: {errors}");
                ExitCode::from(2)
            }
        },
        Command::Loadtest(args) => loadtest::run(*args),
        Command::Controller(flags) => {
            match flags.resolve_with_env(runtime::config::process_env()) {
                Ok((args, warnings)) => {
                    let log = args.log.clone();
                    with_log_filter("controller", &log, || {
                        for warning in &warnings {
                            tracing::warn!("{warning}");
                        }
                        controller::run(args)
                    })
                }
                Err(errors) => {
                    eprintln!("openkcm controller: {errors}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Doctor(args) => doctor::run(&args),
    }
}

fn gateway_serve(flags: &gateway::config::GatewayFlags) -> ExitCode {
    let config = match flags.resolve_with_env(runtime::config::process_env()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("openkcm gateway: {errors}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = runtime::logging::init(&config.log) {
        eprintln!("openkcm gateway: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // The routing and certificate watchers, health checks and DNS re-resolution are tokio
    // tasks: they run on this runtime's workers while Pingora's own runtimes serve.
    let background = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("openkcm gateway: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let built = {
        let _entered = background.enter();
        gateway::server::Gateway::build(&config)
    };
    match built {
        Ok(gateway) => {
            tracing::info!(kmip = %config.kmip_addr, upstreams = ?config.upstreams, "gateway starting");
            gateway.run(Box::new(gateway::server::UnixShutdownSignalWatch));
            background.shutdown_background();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("openkcm gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// JSON logs on stderr through `filter`, then `serve`.
fn with_log_filter(
    component: &str,
    filter: &runtime::LogFilter,
    serve: impl FnOnce() -> ExitCode,
) -> ExitCode {
    if let Err(e) = runtime::logging::init(filter) {
        eprintln!("openkcm {component}: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    serve()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("openkcm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn keysvc_serve(flags: ConfigFlags, started: Instant) -> ExitCode {
    let (config, warnings) = match config::load_serve(&ConfigSources::from_process(flags)) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("openkcm keysvc: {errors}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = runtime::logging::init(&config.log) {
        eprintln!("openkcm keysvc: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    for w in warnings {
        tracing::warn!("{w}");
    }
    let served = runtime().and_then(|rt| {
        rt.block_on(async {
            let store = server::open_store(&config.store.database)
                .await
                .with_context(|| format!("database {}", database_name(&config.store.database)))?;
            let keysvc = KeysvcServer::start(&config, store).await?;
            tracing::info!(
                startup_ms = started.elapsed().as_millis() as u64,
                "keysvc ready"
            );
            keysvc.run_until(runtime::terminated()).await;
            anyhow::Ok(())
        })
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "keysvc failed");
            ExitCode::FAILURE
        }
    }
}

fn database_name(db: &config::DatabaseConfig) -> String {
    match db {
        config::DatabaseConfig::Sqlite { url } => url.clone(),
        config::DatabaseConfig::Postgres { url, .. } => url.to_string(),
    }
}

async fn migrate(owner_url: &str, app_role: &str) -> anyhow::Result<()> {
    keysvc::store::postgres::migrate(owner_url, app_role)
        .await
        .context("migration failed")?;
    println!("migrated; runtime role {app_role} granted");
    Ok(())
}

fn rotate_root(
    flags: ConfigFlags,
    new_key_file: Option<PathBuf>,
    new_key_id: &str,
    owner_database: Option<&str>,
) -> ExitCode {
    let new_key = match new_root_key(new_key_file, new_key_id) {
        Ok(key) => key,
        Err(e) => return report(Err(e)),
    };
    let sources = ConfigSources::from_process(flags);
    let (settings, _) = match config::load_rotation(&sources, new_key) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("openkcm keysvc rotate-root: {errors}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = runtime::logging::init(&settings.log) {
        eprintln!("openkcm keysvc rotate-root: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    report(runtime().and_then(|rt| {
        rt.block_on(async {
            let store = server::open_store_for_rotation(&settings.database, owner_database)
                .await
                .with_context(|| format!("database {}", database_name(&settings.database)))?;
            let report = keysvc::rotate::rotate_root(store.as_ref(), &settings.keyring).await?;
            println!(
                "rotated to root key {new_key_id}: {} tenants, {} objects, {} rewrapped, \
                 {} already current, {} without material",
                report.tenants,
                report.objects,
                report.rewrapped,
                report.already_current,
                report.without_material
            );
            Ok(())
        })
    }))
}

/// The new root key from its file or from the environment (never a flag: `ps` shows flags).
fn new_root_key(file: Option<PathBuf>, id: &str) -> anyhow::Result<RootKey> {
    let text = match (file, std::env::var(config::ENV_NEW_ROOT_KEY).ok()) {
        (Some(_), Some(_)) => anyhow::bail!(
            "set either --new-key-file or {}, not both",
            config::ENV_NEW_ROOT_KEY
        ),
        (None, None) => anyhow::bail!(
            "the new root key is required: --new-key-file FILE or {}",
            config::ENV_NEW_ROOT_KEY
        ),
        (Some(path), None) => SecretString::new(
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        (None, Some(value)) => SecretString::new(value),
    };
    RootKey::from_base64(id, text.expose()).context("new root key")
}

/// `openkcm routing check`: exit 0 allowed (without a certificate: valid rules), 3 denied,
/// 2 bad rules or certificate. Warnings about the rules go to stderr and change nothing.
fn routing_check(policies: &[PathBuf], cert: Option<&Path>) -> ExitCode {
    const DENIED: u8 = 3;
    const UNUSABLE_INPUT: u8 = 2;
    let table = match RoutingTable::load(policies) {
        Ok(table) => table,
        Err(e) => {
            eprintln!("openkcm routing check: {e}");
            return ExitCode::from(UNUSABLE_INPUT);
        }
    };
    for warning in table.warnings() {
        eprintln!("warning: {warning}");
    }
    if table.warnings_left_out() > 0 {
        eprintln!(
            "warning: {} more warnings left out",
            table.warnings_left_out()
        );
    }
    let Some(cert) = cert else {
        let count = table.warnings().len() + table.warnings_left_out();
        println!(
            "{} rule(s) from {} file(s): valid, {count} warning(s)",
            table.len(),
            table.files().len()
        );
        return ExitCode::SUCCESS;
    };
    let peer = match std::fs::read(cert)
        .map_err(anyhow::Error::from)
        .and_then(|pem| Ok(PeerIdentity::from_pem(&pem)?))
    {
        Ok(peer) => peer,
        Err(e) => {
            eprintln!("openkcm routing check: {}: {e}", cert.display());
            return ExitCode::from(UNUSABLE_INPUT);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let days = |seconds: i64| (seconds.saturating_add(43_200)) / 86_400;
    let expiry = if peer.not_after < now {
        format!("EXPIRED {} days ago", days(now - peer.not_after))
    } else {
        format!("expires in {} days", days(peer.not_after - now))
    };
    println!("certificate: {}", peer.subject);
    println!("  issuer:    {}", peer.issuer);
    println!("  serial:    {}", peer.serial);
    println!("  not after: {} (unix; {expiry})", peer.not_after);
    println!(
        "  CN {:?}  O {:?}  OU {:?}",
        peer.subject_cn, peer.subject_o, peer.subject_ou
    );
    println!("  SAN DNS {:?}  SAN URI {:?}", peer.san_dns, peer.san_uri);
    let decision = table.decide(&peer);
    match &decision {
        Decision::Allow(route) => match &route.database {
            Some(db) => println!("tenant: {} (database {db})", route.tenant),
            None => println!("tenant: {}", route.tenant),
        },
        Decision::Deny { reason } => println!("DENIED: {} ({reason})", reason.as_label()),
    }
    println!("\n{}", table.explain(&peer).trim_end());
    match decision {
        Decision::Allow(_) => ExitCode::SUCCESS,
        Decision::Deny { .. } => ExitCode::from(DENIED),
    }
}

fn pki_init(dir: &Path, common_name: &str) -> anyhow::Result<()> {
    let (ca, created) = CertificateAuthority::load_or_create(dir, common_name)?;
    let files = format!("{}, {}", pki::CA_CERT_FILE, pki::CA_KEY_FILE);
    if created {
        println!("created CA {} in {} ({files})", ca.subject(), dir.display());
    } else {
        println!(
            "CA {} already in {} ({files}); kept",
            ca.subject(),
            dir.display()
        );
    }
    Ok(())
}

fn pki_issue(
    ca_dir: &Path,
    tenant: &str,
    out: &Path,
    common_name: Option<String>,
    days: i64,
    force: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        is_valid_tenant_id(tenant),
        "--tenant {tenant:?} is not a valid tenant id (1-{} of A-Z a-z 0-9 . _ -)",
        gateway::routing::MAX_TENANT_ID_LEN
    );
    let cert_path = out.join(format!("{tenant}.pem"));
    let key_path = out.join(format!("{tenant}-key.pem"));
    if !force {
        for path in [&cert_path, &key_path] {
            anyhow::ensure!(
                !path.exists(),
                "{} exists; pass --force to replace it",
                path.display()
            );
        }
    }
    let ca = CertificateAuthority::load(ca_dir).with_context(|| {
        format!(
            "no usable CA in {} (create one with `openkcm pki init --dir {0}`)",
            ca_dir.display()
        )
    })?;
    let common_name = common_name.unwrap_or_else(|| tenant.to_owned());
    let spec = CertSpec {
        organizational_units: vec![tenant.to_owned()],
        client: true,
        validity: CertSpec::validity_days(days),
        ..CertSpec::new(common_name.as_str())
    };
    let issued = ca.issue(&spec)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    issued.write(&cert_path, &key_path)?;
    println!(
        "issued {} and {} (CN={common_name}, OU={tenant}, clientAuth, {days} days) signed by {}",
        cert_path.display(),
        key_path.display(),
        ca.subject()
    );
    Ok(())
}
