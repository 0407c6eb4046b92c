//! The injection configuration (`--config`, YAML): parsed completely, every bad value
//! reported at once, then held as a typed [`InjectorConfig`] with no parsing left in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::settings::{
    consistency_problems, parse_port, LogLevel, Quantity, SettingNames, SidecarSettings,
};
pub use crate::tenants::TenantBinding;
use crate::tenants::{check_tenants, ControllerTenants, TenantFile, TenantMap};

/// Default management port of the injected sidecar (`/health`, `/ready`, `/metrics`).
pub const DEFAULT_MANAGEMENT_PORT: u16 = 15696;

/// The configuration file is a few kilobytes even with hundreds of tenants; a file larger
/// than this is a mistake (a wrong path, a binary), refused before the YAML parser sees it.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Longest Kubernetes namespace name (a DNS-1123 label).
pub(crate) const MAX_NAMESPACE_LEN: usize = 63;
/// Longest Kubernetes Secret name (a DNS-1123 subdomain).
pub(crate) const MAX_SECRET_NAME_LEN: usize = 253;

/// What the injector adds to pods; see docs/injector.md for the file format.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectorConfig {
    pub image: String,
    pub image_pull_policy: Option<PullPolicy>,
    /// The gateway's KMIP endpoint, `HOST:PORT`.
    pub gateway: String,
    pub gateway_server_name: Option<String>,
    pub management_port: u16,
    /// How the sidecar is added to a pod without the `native-sidecar` annotation.
    pub sidecar_mode: SidecarMode,
    /// What a pod without configuration annotations gets.
    pub defaults: SidecarSettings,
    /// The configuration file's `tenants:`, with the controller's file's merged in
    /// ([`InjectorConfig::with_controller_tenants`]).
    tenants: TenantMap,
}

/// The container image pull policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        [Self::Always, Self::IfNotPresent, Self::Never]
            .into_iter()
            .find(|p| p.as_str() == text)
            .ok_or_else(|| format!("{text:?} is not Always, IfNotPresent or Never"))
    }
}

/// How the sidecar is added to a pod (`sidecarMode`; docs/injector.md has which
/// Kubernetes versions take which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SidecarMode {
    /// An init container with `restartPolicy: Always` and probes: Kubernetes 1.29+ (1.28
    /// with the `SidecarContainers` feature gate). Older API servers reject the pod.
    #[default]
    Native,
    /// A regular container appended to `spec.containers`: any Kubernetes version.
    Classic,
}

impl SidecarMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Classic => "classic",
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        [Self::Native, Self::Classic]
            .into_iter()
            .find(|m| m.as_str() == text)
            .ok_or_else(|| format!("{text:?} is not native or classic"))
    }
}

/// Why a configuration file is not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: larger than {MAX_CONFIG_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: {}", path.display(), problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl InjectorConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_bounded(path)?;
        Self::parse(&text).map_err(|e| e.at(path))
    }

    /// Parses YAML text; errors carry an empty path (see [`InjectorConfig::load`]).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = serde_norway::from_str(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        file.check().map_err(|problems| ConfigError::Invalid {
            path: PathBuf::new(),
            problems,
        })
    }

    /// The tenant identity of pods in `namespace`, if the namespace is configured.
    pub fn tenant(&self, namespace: &str) -> Option<&TenantBinding> {
        self.tenants.get(namespace)
    }

    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// This configuration with the controller's namespaces added. A namespace this file
    /// binds keeps this file's entry; such namespaces are returned, for a warning.
    pub fn with_controller_tenants(&self, controller: &ControllerTenants) -> (Self, Vec<String>) {
        let mut merged = self.clone();
        let mut shadowed = Vec::new();
        for (namespace, binding) in &controller.tenants {
            if merged.tenants.contains_key(namespace) {
                shadowed.push(namespace.clone());
            } else {
                merged.tenants.insert(namespace.clone(), binding.clone());
            }
        }
        (merged, shadowed)
    }
}

/// The text of the file at `path`, refused unread when larger than [`MAX_CONFIG_BYTES`].
pub(crate) fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    let read = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    std::fs::read_to_string(path).map_err(read)
}

impl ConfigError {
    pub(crate) fn at(self, path: &Path) -> Self {
        let path = path.to_path_buf();
        match self {
            Self::Syntax { message, .. } => Self::Syntax { path, message },
            Self::Invalid { problems, .. } => Self::Invalid { path, problems },
            other => other,
        }
    }
}

/// The file as written. Unknown keys are refused: a misspelt `memoryLimt` silently
/// ignored would leave every pod on the default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigFile {
    image: String,
    image_pull_policy: Option<String>,
    gateway: String,
    gateway_server_name: Option<String>,
    management_port: Option<Scalar>,
    sidecar_mode: Option<String>,
    #[serde(default)]
    defaults: DefaultsFile,
    #[serde(default)]
    tenants: BTreeMap<String, TenantFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DefaultsFile {
    port: Option<Scalar>,
    cpu_request: Option<Scalar>,
    memory_request: Option<Scalar>,
    memory_limit: Option<Scalar>,
    log_level: Option<Scalar>,
}

/// A YAML scalar read as its text: `cpuRequest: 1` and `cpuRequest: "1"` mean the same,
/// as they do in a Kubernetes manifest.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Integer(n) => n.to_string(),
            Self::Float(x) => x.to_string(),
        }
    }
}

impl ConfigFile {
    fn check(self) -> Result<InjectorConfig, Vec<String>> {
        let mut problems = Vec::new();
        let p = &mut problems;

        checked(p, "image", Some(&self.image), image_reference);
        let image_pull_policy = checked(
            p,
            "imagePullPolicy",
            self.image_pull_policy.as_deref(),
            PullPolicy::parse,
        );
        checked(p, "gateway", Some(&self.gateway), gateway_address);
        checked(
            p,
            "gatewayServerName",
            self.gateway_server_name.as_deref(),
            |name| dns_subdomain(name, MAX_SECRET_NAME_LEN),
        );
        let management_port = checked(
            p,
            "managementPort",
            text(&self.management_port).as_deref(),
            parse_port,
        )
        .unwrap_or(DEFAULT_MANAGEMENT_PORT);
        let sidecar_mode = checked(
            p,
            "sidecarMode",
            self.sidecar_mode.as_deref(),
            SidecarMode::parse,
        )
        .unwrap_or_default();

        let mut defaults = SidecarSettings::default();
        let d = &self.defaults;
        if let Some(port) = checked(p, "defaults.port", text(&d.port).as_deref(), parse_port) {
            defaults.port = port;
        }
        let quantity = Quantity::parse;
        if let Some(q) = checked(
            p,
            "defaults.cpuRequest",
            text(&d.cpu_request).as_deref(),
            quantity,
        ) {
            defaults.cpu_request = q;
        }
        let memory_request = text(&d.memory_request);
        if let Some(q) = checked(
            p,
            "defaults.memoryRequest",
            memory_request.as_deref(),
            quantity,
        ) {
            defaults.memory_request = q;
        }
        let memory_limit = text(&d.memory_limit);
        if let Some(q) = checked(p, "defaults.memoryLimit", memory_limit.as_deref(), quantity) {
            defaults.memory_limit = q;
        }
        let log_level = text(&d.log_level);
        if let Some(level) = checked(
            p,
            "defaults.logLevel",
            log_level.as_deref(),
            LogLevel::parse,
        ) {
            defaults.log_level = level;
        }

        let tenants = check_tenants(p, "tenants", self.tenants);

        let names = SettingNames {
            port: "defaults.port",
            memory_request: "defaults.memoryRequest",
            memory_limit: "defaults.memoryLimit",
        };
        for (key, problem) in consistency_problems(&defaults, management_port, &names) {
            problems.push(format!("{key}: {problem}"));
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(InjectorConfig {
            image: self.image,
            image_pull_policy,
            gateway: self.gateway,
            gateway_server_name: self.gateway_server_name,
            management_port,
            sidecar_mode,
            defaults,
            tenants,
        })
    }
}

fn text(value: &Option<Scalar>) -> Option<String> {
    value.as_ref().map(Scalar::text)
}

/// Parses an optional value; a bad one is added to `problems` as `key: why`.
pub(crate) fn checked<T>(
    problems: &mut Vec<String>,
    key: &str,
    value: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    match parse(value?) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            problems.push(format!("{key}: {e}"));
            None
        }
    }
}

/// Non-empty and without whitespace or control characters: the value lands verbatim in
/// every injected pod, where the kubelet would only fail at pull time.
fn image_reference(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("empty".into());
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{image:?} contains whitespace"));
    }
    Ok(())
}

/// `HOST:PORT` (`[v6]:PORT` for an IPv6 address), as `openkcm sidecar --gateway` takes it.
fn gateway_address(address: &str) -> Result<(), String> {
    let invalid = || format!("{address:?} is not HOST:PORT");
    let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    parse_port(port).map(|_| ()).map_err(|_| invalid())
}

/// A DNS-1123 label: lower-case alphanumerics and `-`, starting and ending alphanumeric.
pub(crate) fn dns_label(name: &str, max_len: usize) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !name.is_empty()
        && name.len() <= max_len
        && name.chars().all(|c| alnum(c) || c == '-')
        && name.starts_with(alnum)
        && name.ends_with(alnum);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS-1123 label (a-z, 0-9, '-', at most {max_len} characters)"
        ))
    }
}

/// A DNS-1123 subdomain: dot-separated DNS-1123 labels.
pub(crate) fn dns_subdomain(name: &str, max_len: usize) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= max_len
        && name.split('.').all(|label| dns_label(label, 63).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS-1123 name (a-z, 0-9, '-', '.', at most {max_len} characters)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
image: ghcr.io/openkcm/openkcm:0.1.0
imagePullPolicy: IfNotPresent
gateway: openkcm-gateway.openkcm-system.svc.cluster.local:5696
gatewayServerName: openkcm-gateway.openkcm-system.svc
managementPort: 15696
sidecarMode: native
defaults:
  port: 5696
  cpuRequest: 10m
  memoryRequest: 16Mi
  memoryLimit: 64Mi
  logLevel: info
tenants:
  tenant-a: { secret: openkcm-tenant-cert }
"#;

    #[test]
    fn the_documented_example_parses() {
        let config = InjectorConfig::parse(EXAMPLE).unwrap();
        assert_eq!(config.image, "ghcr.io/openkcm/openkcm:0.1.0");
        assert_eq!(config.image_pull_policy, Some(PullPolicy::IfNotPresent));
        assert_eq!(config.management_port, 15696);
        assert_eq!(config.sidecar_mode, SidecarMode::Native);
        assert_eq!(config.defaults, SidecarSettings::default());
        assert_eq!(
            config.tenant("tenant-a").map(|t| t.secret.as_str()),
            Some("openkcm-tenant-cert")
        );
        assert!(config.tenant("tenant-b").is_none());
    }

    #[test]
    fn the_minimal_file_takes_the_defaults() {
        let config = InjectorConfig::parse("image: img\ngateway: gw:5696\n").unwrap();
        assert_eq!(config.management_port, DEFAULT_MANAGEMENT_PORT);
        assert_eq!(config.defaults, SidecarSettings::default());
        assert_eq!(config.image_pull_policy, None);
        assert_eq!(config.sidecar_mode, SidecarMode::Native);
        assert_eq!(config.tenant_count(), 0);
    }

    #[test]
    fn the_sidecar_mode_is_native_or_classic() {
        let config = InjectorConfig::parse("image: i\ngateway: g:1\nsidecarMode: classic\n");
        assert_eq!(config.unwrap().sidecar_mode, SidecarMode::Classic);
        let e =
            InjectorConfig::parse("image: i\ngateway: g:1\nsidecarMode: Classic\n").unwrap_err();
        assert!(e.to_string().contains("sidecarMode"), "{e}");
    }

    #[test]
    fn numbers_may_be_written_as_yaml_numbers() {
        let config = InjectorConfig::parse(
            "image: i\ngateway: g:1\ndefaults: { cpuRequest: 1, port: \"7000\" }\n",
        )
        .unwrap();
        assert_eq!(config.defaults.cpu_request.as_str(), "1");
        assert_eq!(config.defaults.port, 7000);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = InjectorConfig::parse("image: i\ngateway: g:1\nmemoryLimt: 1Gi\n").unwrap_err();
        assert!(e.to_string().contains("memoryLimt"), "{e}");
        let e =
            InjectorConfig::parse("image: i\ngateway: g:1\ndefaults: { cpu: 1 }\n").unwrap_err();
        assert!(e.to_string().contains("cpu"), "{e}");
        let e =
            InjectorConfig::parse("image: i\ngateway: g:1\ntenants: { a: { secret: s, ns: b } }\n")
                .unwrap_err();
        assert!(e.to_string().contains("ns"), "{e}");
    }

    #[test]
    fn every_bad_value_is_reported() {
        let text = r#"
image: "bad image"
imagePullPolicy: Sometimes
gateway: no-port
managementPort: 70000
sidecarMode: old
defaults: { port: 0, cpuRequest: lots, memoryRequest: 1Gi, memoryLimit: 64Mi, logLevel: loud }
tenants:
  Tenant_A: { secret: "a/b" }
"#;
        let ConfigError::Invalid { problems, .. } = InjectorConfig::parse(text).unwrap_err() else {
            panic!("expected Invalid");
        };
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "image",
                "imagePullPolicy",
                "gateway",
                "managementPort",
                "sidecarMode",
                "defaults.port",
                "defaults.cpuRequest",
                "defaults.logLevel",
                "tenants.Tenant_A",
                "tenants.Tenant_A.secret",
                "defaults.memoryRequest",
            ],
            "{problems:#?}"
        );
    }

    #[test]
    fn tenants_take_services_and_a_tenant_id_in_the_config_file_too() {
        let config = InjectorConfig::parse(
            "image: i\ngateway: g:1\ntenants:\n  ns: { secret: s, tenant: t, services: { db: db-cert } }\n",
        )
        .unwrap();
        let binding = config.tenant("ns").unwrap();
        assert_eq!(binding.tenant.as_deref(), Some("t"));
        assert_eq!(binding.secret_for(Some("db")), Ok("db-cert"));
    }

    #[test]
    fn the_controller_tenants_are_merged_and_the_file_wins() {
        let config = InjectorConfig::parse(EXAMPLE).unwrap();
        let controller = ControllerTenants::parse(
            "tenants:\n  tenant-a: { secret: from-controller }\n  tenant-c: { secret: c-cert, tenant: c }\n",
        )
        .unwrap();
        let (merged, shadowed) = config.with_controller_tenants(&controller);
        assert_eq!(shadowed, ["tenant-a"]);
        assert_eq!(merged.tenant_count(), 2);
        assert_eq!(
            merged.tenant("tenant-a").unwrap().secret,
            "openkcm-tenant-cert"
        );
        assert_eq!(merged.tenant("tenant-c").unwrap().secret, "c-cert");
        // The file's configuration is unchanged: a later controller file merges afresh.
        assert_eq!(config.tenant_count(), 1);
        let (again, shadowed) = config.with_controller_tenants(&ControllerTenants::default());
        assert!(shadowed.is_empty());
        assert!(again.tenant("tenant-c").is_none());
        assert_eq!(again, config);
    }

    #[test]
    fn missing_required_keys_are_named() {
        let e = InjectorConfig::parse("gateway: g:1\n").unwrap_err();
        assert!(e.to_string().contains("image"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "image: i\n").unwrap();
        let e = InjectorConfig::load(&path).unwrap_err();
        assert!(
            e.to_string().starts_with(&path.display().to_string()),
            "{e}"
        );
    }
}
