//! `openkcm keysvc` configuration: every source collected, every value parsed, every bad
//! value reported at once, then typed structs with no parsing left in them.
//!
//! ```text
//! defaults ◄─ TOML file (--config) ◄─ environment ◄─ command-line flags   (figment, later wins)
//!                                     POSTGRES_CONNECTION       → database.url
//!                                     TENANT_ISOLATION_ENABLED  → tenant_isolation_enabled
//!                                     OPENKCM_ROOT_KEY          → root_key.value
//!                                     OPENKCM_A__B              → a.b
//!        │
//!        ▼  Loader: one parser per key, errors collected (key, where it came from, why)
//! ServeConfig / StoreSettings + Keyring   (files read and validated here, secrets wrapped)
//! ```
//!
//! Secrets — root keys and the password in a database URL — are held in types whose
//! `Debug` shows no secret, and error messages never echo them.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use crate::cache::CacheConfig;
use crate::engine::Caps;
use crate::envelope::{Keyring, RootKey};

mod loader;

use loader::Loader;
pub use runtime::config::{ConfigError, ConfigErrors, KeySpec, ENV_PREFIX};
use runtime::config::{EnvAlias, Flags, Schema, Sources};
pub use runtime::{parse_duration, LogFilter};
pub use tlsmaterial::{pem, FileDigest, PemError, PemFile};

/// The seed's database URL variable, honoured as `database.url`.
pub const ENV_POSTGRES_CONNECTION: &str = "POSTGRES_CONNECTION";
/// The seed's isolation switch: it may only say true.
pub const ENV_TENANT_ISOLATION: &str = "TENANT_ISOLATION_ENABLED";
/// The root key itself (base64), kept out of files and command lines.
pub const ENV_ROOT_KEY: &str = "OPENKCM_ROOT_KEY";
/// `keysvc migrate`: the owner's database URL, instead of a flag visible in `ps`.
pub const ENV_MIGRATE_DATABASE: &str = "OPENKCM_MIGRATE_DATABASE";
/// `keysvc rotate-root`: the new root key (base64), its file, its id.
pub const ENV_NEW_ROOT_KEY: &str = "OPENKCM_NEW_ROOT_KEY";
pub const ENV_NEW_ROOT_KEY_FILE: &str = "OPENKCM_NEW_ROOT_KEY_FILE";
pub const ENV_NEW_ROOT_KEY_ID: &str = "OPENKCM_NEW_ROOT_KEY_ID";
/// `OPENKCM_*` variables that are command options rather than configuration keys.
const COMMAND_ENV: [&str; 4] = [
    ENV_MIGRATE_DATABASE,
    ENV_NEW_ROOT_KEY,
    ENV_NEW_ROOT_KEY_FILE,
    ENV_NEW_ROOT_KEY_ID,
];

/// Smallest accepted body limit: a KMIP request header alone is about 100 bytes; anything
/// below 1 KiB is a typo, not a policy.
pub const MIN_BODY_SIZE: usize = 1024;
/// Largest accepted body limit: every in-flight request may buffer this much, and no KMIP
/// key operation needs more than a few KiB; 64 MiB leaves room for bulk Encrypt.
pub const MAX_BODY_SIZE: usize = 64 * 1024 * 1024;

const fn spec(
    key: &'static str,
    flag: Option<&'static str>,
    default: Option<&'static str>,
) -> KeySpec {
    KeySpec::new(key, flag, default)
}

/// Every key `openkcm keysvc` reads.
pub const KEYS: &[KeySpec] = &[
    spec("listen.api", Some("--listen-api"), Some("127.0.0.1:9443")),
    spec(
        "listen.management",
        Some("--listen-management"),
        Some("127.0.0.1:9090"),
    ),
    spec("tls.cert", Some("--tls-cert"), None),
    spec("tls.key", Some("--tls-key"), None),
    spec("tls.client_ca", Some("--tls-client-ca"), None),
    spec("gateway.allowed_identities", Some("--allow-gateway"), None),
    spec(
        "database.url",
        Some("--database"),
        Some("sqlite://./keys.db"),
    )
    .secret(),
    spec("database.dev", Some("--dev"), Some("false")),
    spec(
        "database.max_connections",
        Some("--database-max-connections"),
        Some("16"),
    ),
    spec("database.acquire_timeout", None, Some("5s")),
    spec("root_key.id", Some("--root-key-id"), None),
    spec("root_key.file", Some("--root-key-file"), None),
    spec("root_key.value", None, None).secret(),
    spec("root_key.previous", Some("--previous-root-key"), None),
    spec(
        "limits.max_body_size",
        Some("--max-body-size"),
        Some("1048576"),
    ),
    spec(
        "limits.max_batch_items",
        Some("--max-batch-items"),
        Some("256"),
    ),
    spec(
        "limits.max_object_size",
        Some("--max-object-size"),
        Some("262144"),
    ),
    spec(
        "limits.max_response_size",
        Some("--max-response-size"),
        Some("1048576"),
    ),
    spec(
        "limits.tenant_concurrency",
        Some("--tenant-concurrency"),
        Some("32"),
    ),
    spec("cache.ttl", Some("--cache-ttl"), Some("30s")),
    spec("cache.capacity", Some("--cache-capacity"), Some("100000")),
    spec(
        "cache.max_bytes",
        Some("--cache-max-bytes"),
        Some("67108864"),
    ),
    spec("shutdown.drain", Some("--drain-period"), Some("5s")),
    spec("shutdown.grace", Some("--grace-period"), Some("25s")),
    spec("log.level", Some("--log-level"), Some("info")),
    spec("tenant_isolation_enabled", None, Some("true")),
];

/// keysvc's keys in the configuration dialect, with the seed's environment names.
static SCHEMA: Schema = Schema {
    component: "keysvc",
    keys: KEYS,
    env_aliases: &[
        EnvAlias {
            var: ENV_POSTGRES_CONNECTION,
            key: "database.url",
            // Either may have set it; both spellings are the same setting.
            shown: "OPENKCM_DATABASE__URL or POSTGRES_CONNECTION",
        },
        EnvAlias {
            var: ENV_TENANT_ISOLATION,
            key: "tenant_isolation_enabled",
            shown: ENV_TENANT_ISOLATION,
        },
        EnvAlias {
            var: ENV_ROOT_KEY,
            key: "root_key.value",
            shown: ENV_ROOT_KEY,
        },
    ],
    command_env: &COMMAND_ENV,
};

/// Command-line flags; each overrides the same key from every other source. Values stay
/// text here so that they are parsed, and reported, with everything else.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigFlags {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Internal API listener (HTTP/2 + mTLS).
    #[arg(long, value_name = "ADDR")]
    pub listen_api: Option<String>,
    /// Management listener (plain HTTP: /health, /ready, /metrics).
    #[arg(long, value_name = "ADDR")]
    pub listen_management: Option<String>,
    /// Server certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// Server private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<String>,
    /// CA bundle that client certificates must chain to (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<String>,
    /// A gateway certificate identity (SAN DNS name, SAN URI or subject CN); repeatable.
    #[arg(long = "allow-gateway", value_name = "IDENTITY")]
    pub allow_gateway: Vec<String>,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// Development mode: connect to PostgreSQL as a superuser and use a derived app role.
    #[arg(long)]
    pub dev: bool,
    /// PostgreSQL connections per process (main database).
    #[arg(long, value_name = "N")]
    pub database_max_connections: Option<String>,
    /// Id of the current root key.
    #[arg(long, value_name = "ID")]
    pub root_key_id: Option<String>,
    /// File holding the current root key (32 bytes, base64).
    #[arg(long, value_name = "FILE")]
    pub root_key_file: Option<String>,
    /// A retired root key that may still unwrap objects; repeatable.
    #[arg(long = "previous-root-key", value_name = "ID=FILE")]
    pub previous_root_keys: Vec<String>,
    /// Largest accepted request body, bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_body_size: Option<String>,
    /// How long a cached key may serve without a re-read (e.g. 30s, 500ms, 2m).
    #[arg(long, value_name = "DURATION")]
    pub cache_ttl: Option<String>,
    /// Most cached keys.
    #[arg(long, value_name = "N")]
    pub cache_capacity: Option<String>,
    /// Most bytes of cached keys.
    #[arg(long, value_name = "BYTES")]
    pub cache_max_bytes: Option<String>,
    /// Most batch items in one request.
    #[arg(long, value_name = "N")]
    pub max_batch_items: Option<String>,
    /// Largest object Register accepts, bytes as encoded.
    #[arg(long, value_name = "BYTES")]
    pub max_object_size: Option<String>,
    /// Largest response built for one request, bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_response_size: Option<String>,
    /// Most requests of one tenant executing at once in this process.
    #[arg(long, value_name = "N")]
    pub tenant_concurrency: Option<String>,
    /// After SIGTERM, how long `/ready` answers 503 while everything is still served, so
    /// that the gateways take this replica out of rotation before it stops (e.g. 5s; 0s
    /// stops at once).
    #[arg(long, value_name = "DURATION")]
    pub drain_period: Option<String>,
    /// After the drain period, how long in-flight requests get to finish (HTTP/2 GOAWAY)
    /// before the process exits anyway.
    #[arg(long, value_name = "DURATION")]
    pub grace_period: Option<String>,
    /// Log filter (tracing directives, e.g. info or keysvc=debug,info).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// Where configuration comes from: flags (with the optional file they name) and the
/// environment, passed in rather than read globally so tests can supply their own.
#[derive(Clone, Default)]
pub struct ConfigSources {
    pub flags: ConfigFlags,
    pub env: Vec<(String, String)>,
}

impl fmt::Debug for ConfigSources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The environment may hold secrets (OPENKCM_ROOT_KEY): names only.
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ConfigSources")
            .field("flags", &self.flags)
            .field("env", &names)
            .finish()
    }
}

impl ConfigSources {
    /// The flags and this process's environment (variables that are not UTF-8 are skipped:
    /// none of ours can be).
    pub fn from_process(flags: ConfigFlags) -> Self {
        Self {
            flags,
            env: runtime::config::process_env(),
        }
    }

    pub fn new(flags: ConfigFlags) -> Self {
        Self {
            flags,
            env: Vec::new(),
        }
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The same sources as the dialect's loader reads them.
    fn dialect(&self) -> Sources {
        let f = &self.flags;
        let flags = Flags::default()
            .text("listen.api", f.listen_api.as_ref())
            .text("listen.management", f.listen_management.as_ref())
            .text("tls.cert", f.tls_cert.as_ref())
            .text("tls.key", f.tls_key.as_ref())
            .text("tls.client_ca", f.tls_client_ca.as_ref())
            .text("database.url", f.database.as_ref())
            .text(
                "database.max_connections",
                f.database_max_connections.as_ref(),
            )
            .text("root_key.id", f.root_key_id.as_ref())
            .text("root_key.file", f.root_key_file.as_ref())
            .text("limits.max_body_size", f.max_body_size.as_ref())
            .text("cache.ttl", f.cache_ttl.as_ref())
            .text("cache.capacity", f.cache_capacity.as_ref())
            .text("cache.max_bytes", f.cache_max_bytes.as_ref())
            .text("limits.max_batch_items", f.max_batch_items.as_ref())
            .text("limits.max_object_size", f.max_object_size.as_ref())
            .text("limits.max_response_size", f.max_response_size.as_ref())
            .text("limits.tenant_concurrency", f.tenant_concurrency.as_ref())
            .text("shutdown.drain", f.drain_period.as_ref())
            .text("shutdown.grace", f.grace_period.as_ref())
            .text("log.level", f.log_level.as_ref())
            .list("gateway.allowed_identities", &f.allow_gateway)
            .list("root_key.previous", &f.previous_root_keys)
            .switch("database.dev", f.dev);
        Sources {
            file: f.config.clone(),
            env: self.env.clone(),
            flags,
        }
    }
}

/// A text secret: zeroized on drop, never shown by `Debug`.
#[derive(Clone)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A database URL whose password never appears in `Debug` or `Display`.
#[derive(Clone)]
pub struct DatabaseUrl {
    url: SecretString,
    redacted: String,
}

impl DatabaseUrl {
    pub fn new(url: String) -> Self {
        let redacted = redact_url(&url);
        Self {
            url: SecretString::new(url),
            redacted,
        }
    }

    /// The URL with its password, for the driver only.
    pub fn expose(&self) -> &str {
        self.url.expose()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// Query parameters shown as they are: none is a secret (the TLS ones name files, whose
/// paths are not secret either). Any other parameter's value is hidden: it may be a password
/// (`password=…`) or one the driver does not know.
const SHOWN_PARAMETERS: [&str; 13] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "application_name",
    "host",
    "port",
    "dbname",
];

/// `scheme://user:***@host/db?sslmode=verify-full&password=***`: the password, the value of
/// any query parameter not known to be harmless, inline PEM text, and anything unparsable
/// hidden.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // set_password only fails for URLs that cannot have credentials.
                let _ = parsed.set_password(Some("***"));
            }
            // Each pair as written (paths keep their slashes), or its name and ***.
            let query = parsed.query().map(|query| {
                query
                    .split('&')
                    .map(|pair| {
                        let decoded = url::form_urlencoded::parse(pair.as_bytes()).next();
                        match decoded {
                            Some((name, value))
                                if SHOWN_PARAMETERS.contains(&name.as_ref())
                                    && !value.contains("-----BEGIN") =>
                            {
                                pair.to_owned()
                            }
                            _ => format!("{}=***", pair.split('=').next().unwrap_or_default()),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("&")
            });
            parsed.set_query(query.as_deref());
            parsed.to_string()
        }
        Err(_) => "<unparsable database URL>".to_owned(),
    }
}

/// Which store to open.
#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    /// `sqlite://PATH` (or `sqlite:PATH`): the embedded store, one file.
    Sqlite { url: String },
    /// `postgres://…`: connect as the runtime role (`dev: false`, which must not be able to
    /// bypass Row-Level Security) or, in development, as a superuser (`dev: true`).
    Postgres {
        url: DatabaseUrl,
        dev: bool,
        max_connections: u32,
        acquire_timeout: Duration,
    },
}

/// Certificates and keys for the mTLS listener, read and parsed; the files are re-read
/// when their content changes (`http::ApiTls`).
#[derive(Clone)]
pub struct TlsFiles {
    /// The server certificate chain, leaf first.
    pub cert: PemFile<Vec<CertificateDer<'static>>>,
    pub key: PemFile<Arc<PrivateKeyDer<'static>>>,
    /// The CA bundle client (gateway) certificates must chain to.
    pub client_ca: PemFile<Vec<CertificateDer<'static>>>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &self.cert.path)
            .field("certificates", &self.cert.content.len())
            .field("key", &self.key.path)
            .field("client_ca", &self.client_ca.path)
            .field("client_roots", &self.client_ca.content.len())
            .finish()
    }
}

/// Everything `openkcm keysvc` (the server) needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub api_addr: SocketAddr,
    pub management_addr: SocketAddr,
    pub tls: TlsFiles,
    /// The gateway certificate identities allowed to call the API (SAN DNS name, SAN URI
    /// or subject CN; never empty): the server matches peers against them
    /// (`http::GatewayAllowList`).
    pub gateways: Vec<String>,
    pub store: StoreSettings,
    pub max_body_size: usize,
    pub cache: CacheConfig,
    /// The bounds of one request.
    pub caps: Caps,
    /// Most requests of one tenant executing at once (`limits.tenant_concurrency`).
    pub tenant_concurrency: usize,
    /// How a graceful stop goes (`shutdown.*`).
    pub shutdown: ShutdownTimes,
    pub log: LogFilter,
}

/// A graceful stop (SIGTERM): `/ready` answers 503 for `drain` while everything is still
/// served; then the listeners stop accepting and send GOAWAY, and in-flight requests get at
/// most `grace` before the process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownTimes {
    pub drain: Duration,
    pub grace: Duration,
}

impl Default for ShutdownTimes {
    fn default() -> Self {
        Self {
            drain: Duration::from_secs(5),
            grace: Duration::from_secs(25),
        }
    }
}

/// What the commands that touch the database need: where it is and the root keys.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub database: DatabaseConfig,
    pub keyring: Arc<Keyring>,
    pub log: LogFilter,
}

/// Loads the server's configuration. On success, also returns warnings (unknown
/// `OPENKCM_*` variables, which other components sharing the prefix may use).
pub fn load_serve(sources: &ConfigSources) -> Result<(ServeConfig, Vec<String>), ConfigErrors> {
    let mut loader = Loader::new(sources)?;
    let api_addr = loader.socket_addr("listen.api");
    let management_addr = loader.socket_addr("listen.management");
    let tls = loader.tls();
    let gateways = loader.gateways();
    let store = loader.store_settings(None);
    let max_body_size = loader.body_size("limits.max_body_size");
    let cache = loader.cache();
    let caps = loader.caps();
    let tenant_concurrency = loader.count("limits.tenant_concurrency", 1..=100_000);
    let shutdown = loader.shutdown_times();
    loader.finish()?;
    match (
        api_addr,
        management_addr,
        tls,
        gateways,
        store,
        max_body_size,
        (cache, caps, tenant_concurrency, shutdown),
    ) {
        (
            Some(api_addr),
            Some(management_addr),
            Some(tls),
            Some(gateways),
            Some(store),
            Some(max_body_size),
            (Some(cache), Some(caps), Some(tenant_concurrency), Some(shutdown)),
        ) => {
            let log = store.log.clone();
            Ok((
                ServeConfig {
                    api_addr,
                    management_addr,
                    tls,
                    gateways,
                    store,
                    max_body_size,
                    cache,
                    caps,
                    tenant_concurrency,
                    shutdown,
                    log,
                },
                std::mem::take(&mut loader.warnings),
            ))
        }
        // Every None above pushed an error, so finish() returned them.
        _ => Err(ConfigErrors::internal()),
    }
}

/// Loads what commands working on the database alone need.
pub fn load_store_settings(
    sources: &ConfigSources,
) -> Result<(StoreSettings, Vec<String>), ConfigErrors> {
    load_store(sources, None)
}

/// Loads the settings for `rotate-root`: the keyring has `new_root_key` as its current key
/// and every configured root key (current and previous) as previous keys, so objects wrapped
/// under any of them unwrap and are rewrapped under the new one.
pub fn load_rotation(
    sources: &ConfigSources,
    new_root_key: RootKey,
) -> Result<(StoreSettings, Vec<String>), ConfigErrors> {
    load_store(sources, Some(new_root_key))
}

fn load_store(
    sources: &ConfigSources,
    new_root_key: Option<RootKey>,
) -> Result<(StoreSettings, Vec<String>), ConfigErrors> {
    let mut loader = Loader::new(sources)?;
    let store = loader.store_settings(new_root_key);
    loader.finish()?;
    store
        .map(|s| (s, std::mem::take(&mut loader.warnings)))
        .ok_or_else(ConfigErrors::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults_match_the_library_defaults() {
        let mut loader = Loader::new(&ConfigSources::default()).expect("defaults load");
        let cache = loader.cache().expect("default cache settings");
        assert_eq!(cache.capacity, CacheConfig::default().capacity);
        assert_eq!(cache.ttl, CacheConfig::default().ttl);
        assert_eq!(cache.max_bytes, CacheConfig::default().max_bytes);
        assert_eq!(loader.caps(), Some(Caps::default()));
        assert_eq!(
            loader.body_size("limits.max_body_size"),
            Some(kmip::ttlv::DEFAULT_MAX_MESSAGE_SIZE)
        );
        loader.finish().expect("no errors in the defaults");
    }

    #[test]
    fn database_urls_hide_their_password() {
        let url = DatabaseUrl::new("postgres://app:s3cret@db:5432/keys?password=other".into());
        for shown in [format!("{url:?}"), url.to_string()] {
            assert!(
                !shown.contains("s3cret") && !shown.contains("other"),
                "{shown}"
            );
            assert!(shown.contains("app") && shown.contains("db"), "{shown}");
        }
    }

    #[test]
    fn database_urls_show_their_tls_parameters_but_no_other_value() {
        let url = DatabaseUrl::new(
            "postgres://app@db:5432/keys?sslmode=verify-full&sslrootcert=/tls/ca.crt\
             &sslcert=/tls/tls.crt&sslkey=/tls/tls.key&password=other&unknown=value"
                .into(),
        );
        let shown = url.to_string();
        assert_eq!(
            shown,
            "postgres://app@db:5432/keys?sslmode=verify-full&sslrootcert=/tls/ca.crt\
             &sslcert=/tls/tls.crt&sslkey=/tls/tls.key&password=***&unknown=***"
        );
        let inline = redact_url("postgres://app@db/keys?sslkey=-----BEGIN%20PRIVATE%20KEY-----");
        assert!(inline.ends_with("sslkey=***"), "{inline}");
    }
}
