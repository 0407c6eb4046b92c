//! `openkcm`: one binary, one subcommand per component. This file is CLI and wiring only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use keysvc::config::{self, ConfigFlags, ConfigSources, SecretString};
use keysvc::envelope::RootKey;
use keysvc::server::{self, KeysvcServer};

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
                } = *rotate;
                rotate_root(flags, new_key_file, &new_key_id)
            }
        },
    }
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
    if let Err(e) = server::init_logging(&config.log) {
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
            keysvc.run_until(server::termination_signal()).await;
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

fn rotate_root(flags: ConfigFlags, new_key_file: Option<PathBuf>, new_key_id: &str) -> ExitCode {
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
    if let Err(e) = server::init_logging(&settings.log) {
        eprintln!("openkcm keysvc rotate-root: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    report(runtime().and_then(|rt| {
        rt.block_on(async {
            let store = server::open_store(&settings.database)
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
