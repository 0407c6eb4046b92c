//! The configuration dialect every OpenKCM component speaks: the same layers, the same key
//! names, every problem reported together.
//!
//! ```text
//! defaults ◄─ TOML file (--config) ◄─ environment ◄─ command-line flags   (figment, later wins)
//!                                     OPENKCM_A__B → a.b (plus a component's aliases)
//!        │
//!        ▼  Loader: one parser per key, errors collected (key, where it came from, why)
//! a component's typed configuration, with no parsing left in it
//! ```
//!
//! A component describes its keys once ([`Schema`]: dotted key, flag, default, whether it
//! is secret); the same table names keys in error messages, rejects unknown keys in the
//! file, and warns about unknown `OPENKCM_*` variables. Keys every component shares are
//! spelled alike: `listen.*`, `tls.cert` / `tls.key` / `tls.client_ca`, `log.level`, and
//! durations as `"30s"`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Data, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use crate::LogFilter;

/// Prefix of the environment variables read as configuration (`OPENKCM_LISTEN__API`).
pub const ENV_PREFIX: &str = "OPENKCM_";

/// One configuration key: its dotted name, its flag and what it holds (also the docs table).
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub key: &'static str,
    pub flag: Option<&'static str>,
    pub default: Option<&'static str>,
    /// A secret's value is never echoed in an error.
    pub secret: bool,
}

impl KeySpec {
    pub const fn new(
        key: &'static str,
        flag: Option<&'static str>,
        default: Option<&'static str>,
    ) -> Self {
        Self {
            key,
            flag,
            default,
            secret: false,
        }
    }

    pub const fn secret(self) -> Self {
        Self {
            secret: true,
            ..self
        }
    }
}

/// An environment variable read as a key besides its `OPENKCM_A__B` form (a name other
/// tools already use). The `OPENKCM_` form wins when both are set.
#[derive(Debug, Clone, Copy)]
pub struct EnvAlias {
    pub var: &'static str,
    pub key: &'static str,
    /// How errors name where the value came from when the key is not set from the
    /// environment (a variable that did set it is named as itself).
    pub shown: &'static str,
}

impl EnvAlias {
    /// `var` for `key`, shown as itself.
    pub const fn new(var: &'static str, key: &'static str) -> Self {
        Self {
            var,
            key,
            shown: var,
        }
    }
}

/// Every key a component reads.
#[derive(Debug)]
pub struct Schema {
    /// `keysvc`, `gateway`, … (in warnings).
    pub component: &'static str,
    pub keys: &'static [KeySpec],
    pub env_aliases: &'static [EnvAlias],
    /// `OPENKCM_*` variables that are command options, not keys (no warning).
    pub command_env: &'static [&'static str],
}

impl Schema {
    pub fn key(&self, key: &str) -> Option<&'static KeySpec> {
        self.keys.iter().find(|k| k.key == key)
    }
}

/// One bad value: which key, where it came from and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub origin: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.origin.is_empty() {
            write!(f, "{}: {}", self.key, self.message)
        } else {
            write!(f, "{} (from {}): {}", self.key, self.origin, self.message)
        }
    }
}

/// Every problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problems):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// Whether any problem concerns `key`.
    pub fn mentions(&self, key: &str) -> bool {
        self.0.iter().any(|e| e.key == key)
    }

    /// For a typed result that is incomplete although no problem was recorded (a bug).
    pub fn internal() -> Self {
        Self(vec![ConfigError {
            key: "configuration".into(),
            origin: String::new(),
            message: "incomplete but no error recorded".into(),
        }])
    }
}

/// The values given on the command line, by key; each overrides every other source.
/// Values stay text so that they are parsed, and reported, with everything else.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    data: Dict,
}

impl Flags {
    pub fn text(mut self, key: &str, value: Option<impl ToString>) -> Self {
        if let Some(v) = value {
            nest(&mut self.data, key, Value::from(v.to_string()));
        }
        self
    }

    pub fn list(mut self, key: &str, values: &[impl ToString]) -> Self {
        if !values.is_empty() {
            let items = values
                .iter()
                .map(|v| Value::from(v.to_string()))
                .collect::<Vec<_>>();
            nest(&mut self.data, key, Value::from(items));
        }
        self
    }

    /// A switch: only its presence is a value (absent leaves the key to other sources).
    pub fn switch(mut self, key: &str, on: bool) -> Self {
        if on {
            nest(&mut self.data, key, Value::from(true));
        }
        self
    }
}

/// Where configuration comes from: the file a flag named, the environment (passed in rather
/// than read globally, so tests supply their own) and the flags.
#[derive(Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub flags: Flags,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The environment may hold secrets: names only.
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Sources")
            .field("file", &self.file)
            .field("env", &names)
            .finish_non_exhaustive()
    }
}

/// This process's environment (variables that are not UTF-8 are skipped: none of ours can
/// be).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The parsing pass: reads each key once, records every problem.
pub struct Loader {
    schema: &'static Schema,
    figment: Figment,
    errors: Vec<ConfigError>,
    /// Unknown `OPENKCM_*` variables (other components sharing the prefix may use them).
    pub warnings: Vec<String>,
}

impl fmt::Debug for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loader")
            .field("component", &self.schema.component)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl Loader {
    pub fn new(schema: &'static Schema, sources: &Sources) -> Result<Self, ConfigErrors> {
        let mut figment = Figment::new().merge(defaults_layer(schema));
        let mut errors = Vec::new();
        if let Some(path) = &sources.file {
            // A file that cannot be read stops here: its values would be missing, not wrong.
            let (file, unknown) = read_file(schema, path).map_err(|e| ConfigErrors(vec![e]))?;
            figment = figment.merge(file);
            errors = unknown;
        }
        let (env, unknown_env) = env_layer(schema, &sources.env);
        let figment = figment
            .merge(env)
            .merge(flags_layer(schema, &sources.flags));
        let warnings = unknown_env
            .into_iter()
            .map(|name| {
                format!(
                    "ignoring environment variable {name}: not a setting of openkcm {}",
                    schema.component
                )
            })
            .collect();
        Ok(Self {
            schema,
            figment,
            errors,
            warnings,
        })
    }

    /// Every problem recorded, or none.
    pub fn finish(&mut self) -> Result<(), ConfigErrors> {
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

    /// Records a problem with `key` (where its value came from is added).
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let origin = self.origin(key);
        self.errors.push(ConfigError {
            key: key.to_owned(),
            origin,
            message: message.into(),
        });
    }

    /// The value of `key` as text; `None` if absent. Non-scalars are an error.
    pub fn text(&mut self, key: &str) -> Option<String> {
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

    pub fn required_text(&mut self, key: &str) -> Option<String> {
        let v = self.text(key);
        match v {
            Some(v) if !v.trim().is_empty() => Some(v),
            _ => {
                let message = match self.schema.key(key).and_then(|k| k.flag) {
                    Some(flag) => format!("required but not set (flag {flag})"),
                    None => "required but not set".to_owned(),
                };
                self.error(key, message);
                None
            }
        }
    }

    /// A list: an array of scalars, or one comma-separated string (as environment
    /// variables give it).
    pub fn list(&mut self, key: &str) -> Vec<String> {
        self.list_with(key, |_| None)
    }

    /// [`Loader::list`] whose entries may also be tables, written as text by `table`
    /// (`None`: a table is an error there).
    pub fn list_with(&mut self, key: &str, table: impl Fn(&Dict) -> Option<String>) -> Vec<String> {
        let Ok(value) = self.figment.find_value(key) else {
            return Vec::new();
        };
        match value {
            Value::Array(_, items) => {
                let mut out = Vec::new();
                for item in items {
                    let text = match &item {
                        Value::Dict(_, d) => table(d),
                        other => scalar(other),
                    };
                    match text {
                        Some(s) => out.push(s),
                        None => self.error(
                            key,
                            format!("list entries must be text, found {}", item.to_actual()),
                        ),
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

    /// The required value of `key`, parsed; a parse error is recorded (a secret's value is
    /// not echoed).
    pub fn parsed<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.required_text(key)?;
        match parse(text.trim()) {
            Ok(v) => Some(v),
            Err(why) => {
                let shown = if self.schema.key(key).is_some_and(|k| k.secret) {
                    String::new()
                } else {
                    format!("{text:?}: ")
                };
                self.error(key, format!("{shown}{why}"));
                None
            }
        }
    }

    pub fn socket_addr(&mut self, key: &str) -> Option<SocketAddr> {
        self.parsed(key, |s| {
            s.parse::<SocketAddr>()
                .map_err(|_| "not an IP address and port (e.g. 127.0.0.1:9443 or [::]:9443)".into())
        })
    }

    pub fn bool(&mut self, key: &str) -> Option<bool> {
        self.parsed(key, parse_bool)
    }

    pub fn path(&mut self, key: &str) -> Option<PathBuf> {
        self.required_text(key).map(|s| PathBuf::from(s.trim()))
    }

    /// A duration (`"30s"`, `"500ms"`, `"2m"`, or whole seconds), longer than zero.
    pub fn duration(&mut self, key: &str) -> Option<Duration> {
        self.parsed(key, |s| match crate::parse_duration(s)? {
            d if d.is_zero() => Err("must be longer than zero".into()),
            d => Ok(d),
        })
    }

    /// `log.level`: tracing directives.
    pub fn log_filter(&mut self) -> Option<LogFilter> {
        self.parsed("log.level", LogFilter::parse)
    }
}

/// A scalar value as text (`None` for tables, arrays and empty values).
pub fn scalar(value: &Value) -> Option<String> {
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

/// A figment provider built from a ready dictionary: the defaults, the environment and
/// the flags, each with a metadata interpolater that names keys the way the user wrote them
/// (`environment variable OPENKCM_LISTEN__API`, `flag --listen-api`).
struct Layer {
    metadata: Metadata,
    data: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.data.clone()))
    }
}

/// Inserts `value` at a dotted path, creating tables on the way.
fn nest(dict: &mut Dict, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            dict.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = dict
                .entry(head.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                nest(inner, rest, value);
            }
        }
    }
}

fn defaults_layer(schema: &'static Schema) -> Layer {
    let mut data = Dict::new();
    for k in schema.keys {
        if let Some(d) = k.default {
            nest(&mut data, k.key, Value::from(d.to_owned()));
        }
    }
    Layer {
        metadata: Metadata::named("defaults")
            .interpolater(|_, keys: &[&str]| format!("default {}", keys.join("."))),
        data,
    }
}

/// The environment: `OPENKCM_A__B=v` is `a.b`, plus the schema's aliases. Unknown
/// `OPENKCM_*` names are returned for a warning.
fn env_layer(schema: &'static Schema, env: &[(String, String)]) -> (Layer, Vec<String>) {
    let mut data = Dict::new();
    let mut unknown = Vec::new();
    // Which variable set each key (the last one wins, as in `data`).
    let mut set_by: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let alias = |name: &str| schema.env_aliases.iter().find(|a| a.var == name);
    // Aliases first, so that the OPENKCM_ form of the same key, more specific, wins.
    let mut ordered: Vec<&(String, String)> = env.iter().collect();
    ordered.sort_by_key(|(k, _)| alias(k).is_none());
    for (name, value) in ordered {
        let key = match (alias(name), name.strip_prefix(ENV_PREFIX)) {
            (Some(alias), _) => alias.key.to_owned(),
            (None, Some(rest)) => rest.to_ascii_lowercase().replace("__", "."),
            (None, None) => continue,
        };
        if schema.key(&key).is_none() {
            if !schema.command_env.contains(&name.as_str()) {
                unknown.push(name.clone());
            }
            continue;
        }
        nest(&mut data, &key, Value::from(value.clone()));
        set_by.insert(key, name.clone());
    }
    let layer = Layer {
        metadata: Metadata::named("environment").interpolater(move |_, keys: &[&str]| {
            let key = keys.join(".");
            let var = match (
                set_by.get(&key),
                schema.env_aliases.iter().find(|a| a.key == key),
            ) {
                (Some(var), _) => var.clone(),
                (None, Some(alias)) => alias.shown.to_owned(),
                (None, None) => format!("{ENV_PREFIX}{}", keys.join("__").to_ascii_uppercase()),
            };
            format!("environment variable {var}")
        }),
        data,
    };
    (layer, unknown)
}

fn flags_layer(schema: &'static Schema, flags: &Flags) -> Layer {
    Layer {
        metadata: Metadata::named("command line").interpolater(move |_, keys: &[&str]| {
            let key = keys.join(".");
            match schema.key(&key).and_then(|k| k.flag) {
                Some(flag) => format!("flag {flag}"),
                None => format!("command line {key}"),
            }
        }),
        data: flags.data.clone(),
    }
}

/// Keys present in a (file) dictionary that the schema does not name.
fn unknown_keys(schema: &Schema, dict: &Dict, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in dict {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if schema.key(&path).is_some() {
            continue;
        }
        match v {
            Value::Dict(_, inner)
                if schema
                    .keys
                    .iter()
                    .any(|s| s.key.starts_with(&format!("{path}."))) =>
            {
                unknown_keys(schema, inner, &path, out)
            }
            _ => out.push(path),
        }
    }
}

/// The TOML file as a figment provider, and an error for each key in it that the schema
/// does not name (a typo would otherwise silently keep the default).
fn read_file(schema: &Schema, path: &Path) -> Result<(Data<Toml>, Vec<ConfigError>), ConfigError> {
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
        unknown_keys(schema, dict, "", &mut unknown);
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

#[cfg(test)]
mod tests {
    use super::*;

    static SCHEMA: Schema = Schema {
        component: "test",
        keys: &[
            KeySpec::new("listen.api", Some("--listen-api"), Some("127.0.0.1:1")),
            KeySpec::new("database.url", Some("--database"), None).secret(),
            KeySpec::new("cache.ttl", None, Some("30s")),
        ],
        env_aliases: &[EnvAlias {
            var: "POSTGRES_CONNECTION",
            key: "database.url",
            shown: "OPENKCM_DATABASE__URL or POSTGRES_CONNECTION",
        }],
        command_env: &["OPENKCM_COMMAND"],
    };

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    // Moved from keysvc's configuration tests (env_names_map_to_nested_keys).
    #[test]
    fn env_names_map_to_nested_keys_and_unknown_ones_warn() {
        let sources = Sources {
            env: env(&[
                ("OPENKCM_LISTEN__API", "1.2.3.4:5"),
                ("OPENKCM_GATEWAY_HOST", "x"),
                ("OPENKCM_COMMAND", "y"),
                ("PATH", "/bin"),
            ]),
            ..Sources::default()
        };
        let mut loader = Loader::new(&SCHEMA, &sources).expect("loads");
        assert_eq!(
            loader.socket_addr("listen.api"),
            Some("1.2.3.4:5".parse().expect("addr"))
        );
        assert_eq!(
            loader.warnings,
            ["ignoring environment variable OPENKCM_GATEWAY_HOST: not a setting of openkcm test"]
        );
    }

    #[test]
    fn later_layers_win_and_errors_name_their_origin_without_secrets() {
        let sources = Sources {
            env: env(&[
                ("POSTGRES_CONNECTION", "from-alias"),
                ("OPENKCM_DATABASE__URL", "postgres://secret"),
                ("OPENKCM_LISTEN__API", "not an address"),
            ]),
            flags: Flags::default().text("cache.ttl", Some("0s")),
            ..Sources::default()
        };
        let mut loader = Loader::new(&SCHEMA, &sources).expect("loads");
        assert_eq!(
            loader.text("database.url").as_deref(),
            Some("postgres://secret")
        );
        let _ = loader.parsed("database.url", |_| Err::<(), _>("bad".to_owned()));
        let _ = loader.socket_addr("listen.api");
        let _ = loader.duration("cache.ttl");
        let errors = loader.finish().expect_err("three problems").to_string();
        assert!(!errors.contains("secret"), "{errors}");
        // The variable that set the value is named, not its alias.
        assert!(
            errors.contains("database.url (from environment variable OPENKCM_DATABASE__URL)"),
            "{errors}"
        );
        assert!(
            errors.contains("listen.api (from environment variable OPENKCM_LISTEN__API)"),
            "{errors}"
        );
        assert!(
            errors.contains("cache.ttl (from command line cache.ttl)"),
            "{errors}"
        );
    }
}
