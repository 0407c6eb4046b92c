//! The tenant map: which Secret the sidecar of a pod in a namespace gets. Entries come from
//! the configuration file's `tenants:` and from the controller's file (`--tenants`), both in
//! the same format: `NAMESPACE: { secret: NAME, tenant: ID, services: { SERVICE: NAME } }`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::config::{
    checked, dns_label, dns_subdomain, read_bounded, ConfigError, MAX_NAMESPACE_LEN,
    MAX_SECRET_NAME_LEN,
};

/// Longest service name: a DNS-1123 label, as a Kubernetes Service name is.
const MAX_SERVICE_NAME_LEN: usize = 63;
/// Longest informational tenant id accepted (a Kubernetes object name at most).
const MAX_TENANT_ID_LEN: usize = 253;

/// Which tenant identity the pods of one namespace carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantBinding {
    /// The cert-manager Secret (in the pod's namespace) a pod gets when it names no service.
    pub secret: String,
    /// The tenant the namespace belongs to (informational: the Secret is the identity).
    pub tenant: Option<String>,
    /// Service name → Secret, chosen by a pod with the `kmip.platform-mesh.io/service`
    /// annotation. Empty when the namespace has one identity only.
    pub services: BTreeMap<String, String>,
}

impl TenantBinding {
    /// The Secret for a pod that names `service` (annotation), or the namespace's default.
    /// An unknown service is an error naming the known ones.
    pub fn secret_for(&self, service: Option<&str>) -> Result<&str, String> {
        let Some(service) = service else {
            return Ok(&self.secret);
        };
        if let Some(secret) = self.services.get(service) {
            return Ok(secret);
        }
        let service = crate::settings::quoted(service);
        if self.services.is_empty() {
            Err(format!(
                "{service} is not a service of this namespace, which has none configured"
            ))
        } else {
            let known: Vec<&str> = self.services.keys().map(String::as_str).collect();
            Err(format!(
                "{service} is not a service of this namespace (known: {})",
                known.join(", ")
            ))
        }
    }
}

/// Namespace → binding.
pub(crate) type TenantMap = BTreeMap<String, TenantBinding>;

/// One entry as written. Unknown keys are refused, as everywhere in the injector's files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantFile {
    secret: String,
    tenant: Option<String>,
    #[serde(default)]
    services: Option<BTreeMap<String, String>>,
}

/// Checks every entry (each bad value added to `problems` as `KEY: why`, keys under
/// `prefix`, e.g. `tenants`) and returns the good ones.
pub(crate) fn check_tenants(
    problems: &mut Vec<String>,
    prefix: &str,
    entries: BTreeMap<String, TenantFile>,
) -> TenantMap {
    let mut map = TenantMap::new();
    for (namespace, entry) in entries {
        let before = problems.len();
        let p = &mut *problems;
        let key = format!("{prefix}.{namespace}");
        checked(p, &key, Some(&namespace), |ns| {
            dns_label(ns, MAX_NAMESPACE_LEN).map_err(|e| format!("namespace {e}"))
        });
        checked(p, &format!("{key}.secret"), Some(&entry.secret), |name| {
            dns_subdomain(name, MAX_SECRET_NAME_LEN)
        });
        checked(
            p,
            &format!("{key}.tenant"),
            entry.tenant.as_deref(),
            tenant_id,
        );
        let services = entry.services.unwrap_or_default();
        for (service, secret) in &services {
            let key = format!("{key}.services.{service}");
            checked(p, &key, Some(service), |name| {
                dns_label(name, MAX_SERVICE_NAME_LEN).map_err(|e| format!("service name {e}"))
            });
            checked(p, &key, Some(secret), |name| {
                dns_subdomain(name, MAX_SECRET_NAME_LEN)
            });
        }
        if problems.len() == before {
            let binding = TenantBinding {
                secret: entry.secret,
                tenant: entry.tenant,
                services,
            };
            map.insert(namespace, binding);
        }
    }
    map
}

/// Informational, but it lands in logs: one non-empty token of printable characters.
fn tenant_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_TENANT_ID_LEN
        && !id.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a tenant id (no whitespace, at most {MAX_TENANT_ID_LEN} characters)",
            crate::settings::quoted(id)
        ))
    }
}

/// The tenants file a controller writes (`--tenants`, docs/injector.md): a `tenants:` map
/// in the configuration file's entry format, and nothing else.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControllerTenants {
    pub(crate) tenants: TenantMap,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsFile {
    #[serde(default)]
    tenants: Option<BTreeMap<String, TenantFile>>,
}

impl ControllerTenants {
    /// Reads and checks the file at `path`; `Ok(None)` when there is no file (the
    /// controller has not written one yet, or its optional ConfigMap does not exist).
    pub fn load(path: &Path) -> Result<Option<Self>, ConfigError> {
        match read_bounded(path) {
            Ok(text) => Self::parse(&text).map(Some).map_err(|e| e.at(path)),
            Err(ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Parses YAML text; errors carry an empty path (see [`ControllerTenants::load`]). An
    /// empty document (or one with only comments) holds no tenants.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let syntax = |message: String| ConfigError::Syntax {
            path: Default::default(),
            message,
        };
        let entries = if is_empty_document(text) {
            BTreeMap::new()
        } else {
            let file: TenantsFile =
                serde_norway::from_str(text).map_err(|e| syntax(e.to_string()))?;
            file.tenants.unwrap_or_default()
        };
        let mut problems = Vec::new();
        let tenants = check_tenants(&mut problems, "tenants", entries);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: Default::default(),
                problems,
            });
        }
        Ok(Self { tenants })
    }

    /// How many namespaces the file binds.
    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

fn is_empty_document(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exactly what the controller writes (docs/injector.md).
    const CONTROLLER_FILE: &str = "\
# written by openkcm controller from TenantCertificate resources; do not edit
tenants:
  tenant-a-ns: { secret: openkcm-kmip-mongodb-cluster-tenant-a, tenant: tenant-a, services: { mongodb-cluster-tenant-a: openkcm-kmip-mongodb-cluster-tenant-a, redis-cluster-tenant-a: openkcm-kmip-redis-cluster-tenant-a } }
";

    #[test]
    fn the_controller_format_parses() {
        let file = ControllerTenants::parse(CONTROLLER_FILE).unwrap();
        assert_eq!(file.len(), 1);
        let binding = &file.tenants["tenant-a-ns"];
        assert_eq!(binding.secret, "openkcm-kmip-mongodb-cluster-tenant-a");
        assert_eq!(binding.tenant.as_deref(), Some("tenant-a"));
        assert_eq!(
            binding.services["redis-cluster-tenant-a"],
            "openkcm-kmip-redis-cluster-tenant-a"
        );
        assert_eq!(binding.services.len(), 2);
    }

    #[test]
    fn empty_files_hold_no_tenants() {
        for text in [
            "",
            "# nothing yet\n",
            "tenants:\n",
            "tenants: {}\n",
            "---\n",
        ] {
            let file = ControllerTenants::parse(text).unwrap();
            assert!(file.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn every_bad_entry_is_reported() {
        let text = "\
tenants:
  Bad_NS: { secret: ok }
  good-ns: { secret: \"a/b\", tenant: \"two words\" }
  svc-ns: { secret: ok, services: { Bad_Svc: ok, fine: \"no/slash\" } }
  long-ns: { secret: ok }
";
        let long = format!("{text}  {}: {{ secret: ok }}\n", "n".repeat(64));
        let ConfigError::Invalid { problems, .. } = ControllerTenants::parse(&long).unwrap_err()
        else {
            panic!("expected Invalid");
        };
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "tenants.Bad_NS",
                "tenants.good-ns.secret",
                "tenants.good-ns.tenant",
                &format!("tenants.{}", "n".repeat(64)),
                "tenants.svc-ns.services.Bad_Svc",
                "tenants.svc-ns.services.fine",
            ],
            "{problems:#?}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_yaml_are_refused() {
        let e =
            ControllerTenants::parse("tenants: { a: { secret: s, secrets: t } }\n").unwrap_err();
        assert!(e.to_string().contains("secrets"), "{e}");
        let e = ControllerTenants::parse("tenant: {}\n").unwrap_err();
        assert!(e.to_string().contains("tenant"), "{e}");
        assert!(matches!(
            ControllerTenants::parse("tenants: [a, b\n"),
            Err(ConfigError::Syntax { .. })
        ));
    }

    #[test]
    fn a_missing_file_is_no_tenants_and_a_bad_one_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.yaml");
        assert_eq!(ControllerTenants::load(&path).unwrap(), None);
        std::fs::write(&path, "tenants: { x: {} }\n").unwrap();
        let e = ControllerTenants::load(&path).unwrap_err();
        assert!(
            e.to_string().starts_with(&path.display().to_string()),
            "{e}"
        );
        std::fs::write(&path, CONTROLLER_FILE).unwrap();
        assert_eq!(ControllerTenants::load(&path).unwrap().unwrap().len(), 1);
    }

    #[test]
    fn a_service_picks_its_secret_and_an_unknown_one_names_the_known() {
        let file = ControllerTenants::parse(CONTROLLER_FILE).unwrap();
        let binding = &file.tenants["tenant-a-ns"];
        assert_eq!(
            binding.secret_for(None),
            Ok("openkcm-kmip-mongodb-cluster-tenant-a")
        );
        assert_eq!(
            binding.secret_for(Some("redis-cluster-tenant-a")),
            Ok("openkcm-kmip-redis-cluster-tenant-a")
        );
        let e = binding.secret_for(Some("postgres")).unwrap_err();
        assert!(e.contains("\"postgres\""), "{e}");
        assert!(
            e.contains("mongodb-cluster-tenant-a, redis-cluster-tenant-a"),
            "{e}"
        );
        let plain = TenantBinding {
            secret: "s".into(),
            tenant: None,
            services: BTreeMap::new(),
        };
        assert!(plain.secret_for(Some("x")).unwrap_err().contains("none"));
    }
}
