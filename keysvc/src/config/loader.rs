//! The parsing pass: every key read once, every problem recorded with where it came from.

use std::ops::{Deref, DerefMut, RangeInclusive};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use figment::value::Dict;
use runtime::config::scalar;
use zeroize::Zeroizing;

use super::{
    parse_duration, ConfigErrors, ConfigSources, DatabaseConfig, DatabaseUrl, SecretString,
    ShutdownTimes, StoreSettings, TlsFiles, ENV_ROOT_KEY, MAX_BODY_SIZE, MIN_BODY_SIZE, SCHEMA,
};
use crate::cache::CacheConfig;
use crate::engine::Caps;
use crate::envelope::{EnvelopeError, Keyring, RootKey};
use tlsmaterial::pem::{self, PemError, PemFile};

/// The parsing pass: the dialect's loader (`runtime::config`) and keysvc's own parsers.
pub(super) struct Loader(runtime::config::Loader);

impl Deref for Loader {
    type Target = runtime::config::Loader;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Loader {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Loader {
    pub(super) fn new(sources: &ConfigSources) -> Result<Self, ConfigErrors> {
        let mut loader = Self(runtime::config::Loader::new(&SCHEMA, &sources.dialect())?);
        loader.tenant_isolation();
        Ok(loader)
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
        let ttl = self.duration("cache.ttl");
        let capacity = self.count("cache.capacity", 1..=usize::MAX);
        let max_bytes = self.count("cache.max_bytes", 1024 * 1024..=usize::MAX);
        Some(CacheConfig {
            capacity: capacity?,
            max_bytes: max_bytes?,
            ttl: ttl?,
        })
    }

    /// The bounds of one request.
    pub(super) fn caps(&mut self) -> Option<Caps> {
        let max_batch_items = self.count("limits.max_batch_items", 1..=65_536);
        let max_object_size = self.count("limits.max_object_size", 1024..=MAX_BODY_SIZE);
        let max_response_size = self.count("limits.max_response_size", 64 * 1024..=MAX_BODY_SIZE);
        Some(Caps {
            max_batch_items: max_batch_items?,
            max_object_size: max_object_size?,
            max_response_size: max_response_size?,
        })
    }

    /// `shutdown.drain` (may be zero) and `shutdown.grace` (at least 1 s), each at most 10 min.
    pub(super) fn shutdown_times(&mut self) -> Option<ShutdownTimes> {
        let bounded = |min: Duration| {
            move |s: &str| match parse_duration(s)? {
                d if d < min => Err(format!("must be at least {}s", min.as_secs())),
                d if d > Duration::from_secs(600) => Err("must be at most 10m".into()),
                d => Ok(d),
            }
        };
        let drain = self.parsed("shutdown.drain", bounded(Duration::ZERO));
        let grace = self.parsed("shutdown.grace", bounded(Duration::from_secs(1)));
        Some(ShutdownTimes {
            drain: drain?,
            grace: grace?,
        })
    }

    /// A whole number within `range`.
    pub(super) fn count(&mut self, key: &str, range: RangeInclusive<usize>) -> Option<usize> {
        self.parsed(key, |s| match s.parse::<usize>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ if *range.end() == usize::MAX => {
                Err(format!("not a whole number of at least {}", range.start()))
            }
            _ => Err(format!(
                "not a whole number from {} to {}",
                range.start(),
                range.end()
            )),
        })
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
                "required: list the gateway certificates' SAN URIs (e.g. \
                 spiffe://cluster.local/ns/openkcm-system/sa/openkcm-gateway) allowed to call \
                 the API; with none, every request is refused",
            );
            return None;
        }
        let not_uris: Vec<&str> = ids
            .iter()
            .filter(|id| !is_uri(id))
            .map(String::as_str)
            .collect();
        if !not_uris.is_empty() {
            self.error(
                key,
                format!(
                    "{} {}: gateways are allowed by SAN URI only (scheme://…); subject CNs \
                     and DNS names are chosen by whoever requests a certificate",
                    not_uris.join(", "),
                    if not_uris.len() == 1 {
                        "is not a URI"
                    } else {
                        "are not URIs"
                    }
                ),
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
                // sslmode and the certificate files, checked with everything else (they are
                // checked again, and re-read for every new connection, by the store).
                crate::store::postgres::check_url(s)?;
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
        for entry in self.list_with("root_key.previous", |d| Some(dict_entry(d))) {
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

/// `scheme://rest`, the scheme a letter followed by letters, digits, `+`, `-` or `.`.
fn is_uri(s: &str) -> bool {
    match s.split_once("://") {
        Some((scheme, rest)) => {
            !rest.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}
