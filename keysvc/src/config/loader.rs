//! The parsing pass: every key read once, every problem recorded with where it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::providers::{Data, Format, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Profile, Provider};
use zeroize::Zeroizing;

use super::sources::{defaults_layer, env_layer, flags_layer, unknown_keys};
use super::{
    key_spec, parse_duration, ConfigError, ConfigErrors, ConfigSources, DatabaseConfig,
    DatabaseUrl, LogFilter, SecretString, StoreSettings, TlsFiles, ENV_ROOT_KEY, MAX_BODY_SIZE,
    MIN_BODY_SIZE,
};
use crate::cache::CacheConfig;
use crate::envelope::{EnvelopeError, Keyring, RootKey};
use tlsmaterial::pem::{self, PemError, PemFile};

/// The parsing pass: reads each key once, records every problem.
pub(super) struct Loader {
    figment: Figment,
    errors: Vec<ConfigError>,
    pub(super) warnings: Vec<String>,
}

impl Loader {
    pub(super) fn new(sources: &ConfigSources) -> Result<Self, ConfigErrors> {
        let mut figment = Figment::new().merge(defaults_layer());
        let mut errors = Vec::new();
        if let Some(path) = &sources.flags.config {
            // A file that cannot be read stops here: its values would be missing, not wrong.
            let (file, unknown) = read_file(path).map_err(|e| ConfigErrors(vec![e]))?;
            figment = figment.merge(file);
            errors = unknown;
        }
        let (env, unknown_env) = env_layer(&sources.env);
        let figment = figment.merge(env).merge(flags_layer(&sources.flags));
        let warnings = unknown_env
            .into_iter()
            .map(|name| format!("ignoring environment variable {name}: not a keysvc setting"))
            .collect();
        let mut loader = Self {
            figment,
            errors,
            warnings,
        };
        loader.tenant_isolation();
        Ok(loader)
    }

    pub(super) fn finish(&mut self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(std::mem::take(&mut self.errors)))
        }
    }

    /// Where the effective value of `key` came from, as the user would name it.
    fn origin(&self, key: &str) -> String {
        let Some(meta) = self.figment.find_metadata(key) else {
            return String::new();
        };
        match &meta.source {
            Some(figment::Source::File(path)) => path.display().to_string(),
            _ => {
                let parts: Vec<&str> = key.split('.').collect();
                meta.interpolate(&Profile::Default, &parts)
            }
        }
    }

    fn error(&mut self, key: &str, message: impl Into<String>) {
        let origin = self.origin(key);
        self.errors.push(ConfigError {
            key: key.to_owned(),
            origin,
            message: message.into(),
        });
    }

    /// The value of `key` as text; `None` if absent. Non-scalars are an error.
    fn text(&mut self, key: &str) -> Option<String> {
        let value = self.figment.find_value(key).ok()?;
        match scalar(&value) {
            Some(s) => Some(s),
            None => {
                self.error(
                    key,
                    format!("expected a single value, found {}", value.to_actual()),
                );
                None
            }
        }
    }

    fn required_text(&mut self, key: &str) -> Option<String> {
        let v = self.text(key);
        match v {
            Some(v) if !v.trim().is_empty() => Some(v),
            _ => {
                self.error(key, "required but not set");
                None
            }
        }
    }

    /// A list: an array of scalars, or one comma-separated string (as environment
    /// variables give it).
    fn list(&mut self, key: &str) -> Vec<String> {
        let Ok(value) = self.figment.find_value(key) else {
            return Vec::new();
        };
        match value {
            Value::Array(_, items) => {
                let mut out = Vec::new();
                for item in items {
                    match scalar(&item) {
                        Some(s) => out.push(s),
                        None => match &item {
                            // `{ id = "…", file = "…" }` entries of root_key.previous.
                            Value::Dict(_, d) => out.push(dict_entry(d)),
                            _ => self.error(
                                key,
                                format!("list entries must be text, found {}", item.to_actual()),
                            ),
                        },
                    }
                }
                out
            }
            other => match scalar(&other) {
                Some(s) => s
                    .trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .map(|s| s.trim().trim_matches('"').to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
                None => {
                    self.error(key, format!("expected a list, found {}", other.to_actual()));
                    Vec::new()
                }
            },
        }
    }

    fn parsed<T>(&mut self, key: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let text = self.required_text(key)?;
        match parse(text.trim()) {
            Ok(v) => Some(v),
            Err(why) => {
                let shown = if key_spec(key).is_some_and(|k| k.secret) {
                    String::new()
                } else {
                    format!("{text:?}: ")
                };
                self.error(key, format!("{shown}{why}"));
                None
            }
        }
    }

    pub(super) fn socket_addr(&mut self, key: &str) -> Option<SocketAddr> {
        self.parsed(key, |s| {
            s.parse::<SocketAddr>()
                .map_err(|_| "not an IP address and port (e.g. 127.0.0.1:9443 or [::]:9443)".into())
        })
    }

    fn bool(&mut self, key: &str) -> Option<bool> {
        self.parsed(key, parse_bool)
    }

    fn tenant_isolation(&mut self) {
        let key = "tenant_isolation_enabled";
        if let Some(false) = self.bool(key) {
            self.error(
                key,
                "tenant isolation cannot be disabled: keysvc always runs every request in its \
                 tenant's Row-Level Security scope and under its tenant's key; unset \
                 TENANT_ISOLATION_ENABLED or set it to true",
            );
        }
    }

    pub(super) fn body_size(&mut self, key: &str) -> Option<usize> {
        self.parsed(key, |s| {
            let n: usize = s
                .parse()
                .map_err(|_| "not a whole number of bytes".to_owned())?;
            if (MIN_BODY_SIZE..=MAX_BODY_SIZE).contains(&n) {
                Ok(n)
            } else {
                Err(format!(
                    "must be between {MIN_BODY_SIZE} and {MAX_BODY_SIZE} bytes"
                ))
            }
        })
    }

    pub(super) fn cache(&mut self) -> Option<CacheConfig> {
        let ttl = self.parsed("cache.ttl", |s| match parse_duration(s)? {
            d if d.is_zero() => Err("must be longer than zero".into()),
            d => Ok(d),
        });
        let capacity = self.parsed("cache.capacity", |s| match s.parse::<usize>() {
            Ok(0) | Err(_) => Err("not a whole number above zero".into()),
            Ok(n) => Ok(n),
        });
        Some(CacheConfig {
            capacity: capacity?,
            ttl: ttl?,
        })
    }

    fn path(&mut self, key: &str) -> Option<PathBuf> {
        self.required_text(key).map(|s| PathBuf::from(s.trim()))
    }

    pub(super) fn tls(&mut self) -> Option<TlsFiles> {
        let cert = self.pem("tls.cert", pem::certificates);
        let key = self.pem("tls.key", pem::private_key);
        let client_ca = self.pem("tls.client_ca", pem::certificates);
        Some(TlsFiles {
            cert: cert?,
            key: key?,
            client_ca: client_ca?,
        })
    }

    fn pem<T>(
        &mut self,
        key: &str,
        read: fn(&Path) -> Result<PemFile<T>, PemError>,
    ) -> Option<PemFile<T>> {
        let path = self.path(key)?;
        read(&path).map_err(|e| self.error(key, e.to_string())).ok()
    }

    pub(super) fn gateways(&mut self) -> Option<Vec<String>> {
        let key = "gateway.allowed_identities";
        let ids = self.list(key);
        if ids.is_empty() {
            self.error(
                key,
                "required: list the gateway certificate identities (SAN DNS name, SAN URI or \
                 subject CN) allowed to call the API; with none, every request is refused",
            );
            return None;
        }
        Some(ids)
    }

    fn database(&mut self) -> Option<DatabaseConfig> {
        let dev = self.bool("database.dev");
        let max_connections = self.parsed("database.max_connections", |s| match s.parse::<u32>() {
            Ok(0) | Err(_) => Err("not a whole number above zero".into()),
            Ok(n) => Ok(n),
        });
        let acquire_timeout =
            self.parsed("database.acquire_timeout", |s| match parse_duration(s)? {
                d if d.is_zero() => Err("must be longer than zero".into()),
                d => Ok(d),
            });
        enum Scheme {
            Sqlite(String),
            Postgres(DatabaseUrl),
        }
        let url = self.parsed("database.url", |s| {
            if s.starts_with("sqlite:") {
                Ok(Scheme::Sqlite(s.to_owned()))
            } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
                // The parser's message names the problem, never the URL's text.
                url::Url::parse(s).map_err(|e| format!("not a valid URL: {e}"))?;
                Ok(Scheme::Postgres(DatabaseUrl::new(s.to_owned())))
            } else {
                Err("expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE".into())
            }
        })?;
        Some(match url {
            Scheme::Sqlite(url) => DatabaseConfig::Sqlite { url },
            Scheme::Postgres(url) => DatabaseConfig::Postgres {
                url,
                dev: dev?,
                max_connections: max_connections?,
                acquire_timeout: acquire_timeout?,
            },
        })
    }

    fn keyring(&mut self, new_current: Option<RootKey>) -> Option<Keyring> {
        let id = self.required_text("root_key.id");
        let file = self.text("root_key.file");
        let value = self.text("root_key.value").map(SecretString::new);
        let current = match (file, value) {
            (Some(_), Some(_)) => {
                self.error(
                    "root_key.file",
                    format!("set either root_key.file or {ENV_ROOT_KEY}, not both"),
                );
                None
            }
            (None, None) => {
                self.error(
                    "root_key.file",
                    format!("required: the root key file, or the key itself in {ENV_ROOT_KEY}"),
                );
                None
            }
            (Some(file), None) => id
                .as_deref()
                .and_then(|id| self.root_key_file("root_key.file", id, Path::new(file.trim()))),
            (None, Some(value)) => {
                id.as_deref()
                    .and_then(|id| match RootKey::from_base64(id.trim(), value.expose()) {
                        Ok(k) => Some(k),
                        Err(e @ EnvelopeError::BadRootKeyId) => {
                            self.error("root_key.id", format!("{id:?}: {e}"));
                            None
                        }
                        Err(e) => {
                            self.error("root_key.value", e.to_string());
                            None
                        }
                    })
            }
        };
        let mut previous = Vec::new();
        let mut ok = true;
        for entry in self.list("root_key.previous") {
            let Some((pid, file)) = entry.split_once('=') else {
                self.error("root_key.previous", format!("{entry:?}: expected ID=FILE"));
                ok = false;
                continue;
            };
            match self.root_key_file("root_key.previous", pid.trim(), Path::new(file.trim())) {
                Some(k) => previous.push(k),
                None => ok = false,
            }
        }
        let mut current = current?;
        if previous.iter().any(|k| k.id() == current.id()) {
            self.error(
                "root_key.previous",
                format!("repeats the current root key id {:?}", current.id()),
            );
            return None;
        }
        match new_current {
            // The id is taken but names other material: one of the two files is wrong.
            Some(new) if new.id() == current.id() && *new.to_base64() != *current.to_base64() => {
                self.error(
                    "root_key.id",
                    format!(
                        "the new root key {:?} differs from the configured key with that id",
                        new.id()
                    ),
                );
                return None;
            }
            // Already serving with the new key as current: the configured keyring is the
            // rotation keyring.
            Some(new) if new.id() == current.id() => {}
            Some(new) if previous.iter().any(|k| k.id() == new.id()) => {
                self.error(
                    "root_key.previous",
                    format!(
                        "the new root key id {:?} is a previous (retired) key",
                        new.id()
                    ),
                );
                return None;
            }
            Some(new) => previous.insert(0, std::mem::replace(&mut current, new)),
            None => {}
        }
        ok.then(|| {
            previous
                .into_iter()
                .fold(Keyring::new(current), Keyring::with_previous)
        })
    }

    fn root_key_file(&mut self, key: &str, id: &str, path: &Path) -> Option<RootKey> {
        match std::fs::read_to_string(path).map(Zeroizing::new) {
            Ok(text) => match RootKey::from_base64(id, &text) {
                Ok(k) => Some(k),
                Err(e @ EnvelopeError::BadRootKeyId) if key == "root_key.file" => {
                    self.error("root_key.id", format!("{id:?}: {e}"));
                    None
                }
                Err(e) => {
                    self.error(key, format!("{}: {e}", path.display()));
                    None
                }
            },
            Err(e) => {
                self.error(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    fn log_filter(&mut self) -> Option<LogFilter> {
        self.parsed("log.level", LogFilter::parse)
    }

    pub(super) fn store_settings(
        &mut self,
        new_root_key: Option<RootKey>,
    ) -> Option<StoreSettings> {
        let database = self.database();
        let keyring = self.keyring(new_root_key);
        let log = self.log_filter();
        Some(StoreSettings {
            database: database?,
            keyring: Arc::new(keyring?),
            log: log?,
        })
    }
}

/// `{ id = "a", file = "/k" }` as the `id=file` text form.
fn dict_entry(d: &Dict) -> String {
    let get = |k: &str| d.get(k).and_then(scalar).unwrap_or_default();
    format!("{}={}", get("id"), get("file"))
}

pub(super) fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(_, s) => Some(s.clone()),
        Value::Char(_, c) => Some(c.to_string()),
        Value::Bool(_, b) => Some(b.to_string()),
        Value::Num(_, n) => Some(match (n.to_i128(), n.to_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => f.to_string(),
            (None, None) => return None,
        }),
        Value::Empty(..) | Value::Dict(..) | Value::Array(..) => None,
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// The TOML file as a figment provider, and an error for each key in it that no
/// [`KeySpec`](super::KeySpec) names (a typo would otherwise silently keep the default).
fn read_file(path: &Path) -> Result<(Data<Toml>, Vec<ConfigError>), ConfigError> {
    let fail = |message: String| ConfigError {
        key: "config".into(),
        origin: format!("flag --config {}", path.display()),
        message,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(fail("not a regular file".into())),
        Err(e) => return Err(fail(format!("cannot read: {e}"))),
    }
    let file = Toml::file_exact(path);
    let profiles = file
        .data()
        .map_err(|e| fail(format!("not valid TOML: {e}")))?;
    let mut unknown = Vec::new();
    for dict in profiles.values() {
        unknown_keys(dict, "", &mut unknown);
    }
    let errors = unknown
        .into_iter()
        .map(|key| ConfigError {
            key,
            origin: path.display().to_string(),
            message: "unknown key".into(),
        })
        .collect();
    Ok((file, errors))
}
