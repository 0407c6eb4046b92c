//! The configuration layers other than the TOML file: defaults, environment, flags — each
//! a figment provider whose metadata names a key the way the user wrote it
//! (`environment variable OPENKCM_LISTEN__API`, `flag --listen-api`).

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::{
    key_spec, ConfigFlags, COMMAND_ENV, ENV_POSTGRES_CONNECTION, ENV_PREFIX, ENV_ROOT_KEY,
    ENV_TENANT_ISOLATION, KEYS,
};

/// A figment provider built from a ready dictionary: the defaults, the environment and
/// the flags, each with a metadata interpolater that names keys the way the user wrote them.
pub(super) struct Layer {
    metadata: Metadata,
    data: Dict,
}

impl Layer {
    #[cfg(test)]
    pub(super) fn data(&self) -> &Dict {
        &self.data
    }
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

pub(super) fn defaults_layer() -> Layer {
    let mut data = Dict::new();
    for k in KEYS {
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

/// The environment: `OPENKCM_A__B=v` is `a.b`, plus the seed's and the secret variables.
/// Unknown `OPENKCM_*` names are returned for a warning.
pub(super) fn env_layer(env: &[(String, String)]) -> (Layer, Vec<String>) {
    let mut data = Dict::new();
    let mut unknown = Vec::new();
    // POSTGRES_CONNECTION first so that OPENKCM_DATABASE__URL, more specific, wins.
    let mut ordered: Vec<&(String, String)> = env.iter().collect();
    ordered.sort_by_key(|(k, _)| k != ENV_POSTGRES_CONNECTION);
    for (name, value) in ordered {
        let key = match name.as_str() {
            ENV_POSTGRES_CONNECTION => "database.url".to_owned(),
            ENV_TENANT_ISOLATION => "tenant_isolation_enabled".to_owned(),
            ENV_ROOT_KEY => "root_key.value".to_owned(),
            other => match other.strip_prefix(ENV_PREFIX) {
                Some(rest) => rest.to_ascii_lowercase().replace("__", "."),
                None => continue,
            },
        };
        if key_spec(&key).is_none() {
            if !COMMAND_ENV.contains(&name.as_str()) {
                unknown.push(name.clone());
            }
            continue;
        }
        nest(&mut data, &key, Value::from(value.clone()));
    }
    let layer = Layer {
        metadata: Metadata::named("environment").interpolater(|_, keys: &[&str]| {
            let key = keys.join(".");
            let var = match key.as_str() {
                "tenant_isolation_enabled" => ENV_TENANT_ISOLATION.to_owned(),
                "root_key.value" => ENV_ROOT_KEY.to_owned(),
                // Either may have set it; both spellings are the same setting.
                "database.url" => format!("{ENV_PREFIX}DATABASE__URL or {ENV_POSTGRES_CONNECTION}"),
                _ => format!("{ENV_PREFIX}{}", keys.join("__").to_ascii_uppercase()),
            };
            format!("environment variable {var}")
        }),
        data,
    };
    (layer, unknown)
}

pub(super) fn flags_layer(flags: &ConfigFlags) -> Layer {
    let mut data = Dict::new();
    let mut text = |key: &str, v: &Option<String>| {
        if let Some(v) = v {
            nest(&mut data, key, Value::from(v.clone()));
        }
    };
    text("listen.api", &flags.listen_api);
    text("listen.management", &flags.listen_management);
    text("tls.cert", &flags.tls_cert);
    text("tls.key", &flags.tls_key);
    text("tls.client_ca", &flags.tls_client_ca);
    text("database.url", &flags.database);
    text("database.max_connections", &flags.database_max_connections);
    text("root_key.id", &flags.root_key_id);
    text("root_key.file", &flags.root_key_file);
    text("limits.max_body_size", &flags.max_body_size);
    text("cache.ttl", &flags.cache_ttl);
    text("cache.capacity", &flags.cache_capacity);
    text("log.level", &flags.log_level);
    let mut list = |key: &str, v: &[String]| {
        if !v.is_empty() {
            let items = v.iter().cloned().map(Value::from).collect::<Vec<_>>();
            nest(&mut data, key, Value::from(items));
        }
    };
    list("gateway.allowed_identities", &flags.allow_gateway);
    list("root_key.previous", &flags.previous_root_keys);
    if flags.dev {
        nest(&mut data, "database.dev", Value::from(true));
    }
    Layer {
        metadata: Metadata::named("command line").interpolater(|_, keys: &[&str]| {
            let key = keys.join(".");
            match key_spec(&key).and_then(|k| k.flag) {
                Some(flag) => format!("flag {flag}"),
                None => format!("command line {key}"),
            }
        }),
        data,
    }
}

/// Keys present in a (file) dictionary that no [`KeySpec`] names.
pub(super) fn unknown_keys(dict: &Dict, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in dict {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if key_spec(&path).is_some() {
            continue;
        }
        match v {
            Value::Dict(_, inner)
                if KEYS.iter().any(|s| s.key.starts_with(&format!("{path}."))) =>
            {
                unknown_keys(inner, &path, out)
            }
            _ => out.push(path),
        }
    }
}
