//! The admission decision, I/O-free: [`mutate`] turns one AdmissionRequest and the current
//! configuration into a response — the JSONPatch that adds the sidecar, or why not.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::admission::{AdmissionRequest, AdmissionResponse};
use crate::config::{InjectorConfig, SidecarMode, TenantBinding};
use crate::settings::{
    consistency_problems, parse_port, quoted, LogLevel, Quantity, SettingNames, SidecarSettings,
};
use crate::shape::{
    kmip_volume, tenant_volume, workload_mount, SidecarPlan, KMIP_MOUNT_PATH, KMIP_VOLUME,
    SIDECAR_CONTAINER, TENANT_VOLUME,
};

/// The prefix of every label and annotation the injector reads or writes.
pub const ANNOTATION_PREFIX: &str = "kmip.platform-mesh.io/";
/// Pod label: `"false"` opts the pod out of injection.
pub const INJECT_LABEL: &str = "kmip.platform-mesh.io/inject";
/// Pod annotation written on injection; its presence makes a re-review a no-op.
pub const STATUS_ANNOTATION: &str = "kmip.platform-mesh.io/status";
const STATUS_INJECTED: &str = "injected";
/// Pod annotation: `"false"` injects a regular container, `"true"` a native sidecar, over
/// the configured `sidecarMode`.
pub const NATIVE_SIDECAR_ANNOTATION: &str = "kmip.platform-mesh.io/native-sidecar";
pub const PORT_ANNOTATION: &str = "kmip.platform-mesh.io/port";
pub const CPU_REQUEST_ANNOTATION: &str = "kmip.platform-mesh.io/cpu-request";
pub const MEMORY_REQUEST_ANNOTATION: &str = "kmip.platform-mesh.io/memory-request";
pub const MEMORY_LIMIT_ANNOTATION: &str = "kmip.platform-mesh.io/memory-limit";
pub const LOG_LEVEL_ANNOTATION: &str = "kmip.platform-mesh.io/log-level";
/// Pod annotation: which of the namespace's `services` the pod is, choosing that service's
/// Secret instead of the namespace's default one.
pub const SERVICE_ANNOTATION: &str = "kmip.platform-mesh.io/service";

const KNOWN_ANNOTATIONS: [&str; 8] = [
    STATUS_ANNOTATION,
    NATIVE_SIDECAR_ANNOTATION,
    PORT_ANNOTATION,
    CPU_REQUEST_ANNOTATION,
    MEMORY_REQUEST_ANNOTATION,
    MEMORY_LIMIT_ANNOTATION,
    LOG_LEVEL_ANNOTATION,
    SERVICE_ANNOTATION,
];

/// HTTP-style code of a denial the pod author must fix (the `status.code` kubectl shows).
const BAD_REQUEST: u16 = 400;

/// What became of one review (the `result` label of `injector_admissions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    Skipped(SkipReason),
    Denied,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    NotPodCreate,
    OptedOut,
    AlreadyInjected,
    NamespaceNotConfigured,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Injected => "injected",
            Self::Skipped(_) => "skipped",
            Self::Denied => "denied",
        }
    }
}

/// The decision on one review: what to answer and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub outcome: Outcome,
    pub response: AdmissionResponse,
}

/// Decides one AdmissionRequest: a Pod CREATE in a configured namespace gets the sidecar;
/// anything else is admitted unchanged (with a warning where the author should know), and a
/// pod whose KMIP annotations are wrong, or that clashes with what injection adds, is denied.
pub fn mutate(request: &AdmissionRequest, config: &InjectorConfig) -> Admission {
    let uid = request.uid.as_str();
    let skip = |reason, response| Admission {
        outcome: Outcome::Skipped(reason),
        response,
    };
    let deny = |problems: Vec<String>| Admission {
        outcome: Outcome::Denied,
        response: AdmissionResponse::deny(uid, BAD_REQUEST, problems.join("; ")),
    };

    if !is_pod_create(request) {
        let warning = format!(
            "openkcm-injector: {} of {} is not mutated (only Pod CREATE); check the webhook rules",
            request.operation, request.resource.resource
        );
        return skip(
            SkipReason::NotPodCreate,
            AdmissionResponse::allow(uid).with_warning(warning),
        );
    }
    let pod = match request.object.as_ref().map(PodView::deserialize) {
        Some(Ok(pod)) => pod,
        Some(Err(e)) => return deny(vec![format!("the Pod could not be read: {e}")]),
        None => return deny(vec!["the review carries no Pod object".into()]),
    };

    if pod.metadata.labels.get(INJECT_LABEL).map(String::as_str) == Some("false") {
        return skip(SkipReason::OptedOut, AdmissionResponse::allow(uid));
    }
    if pod.is_injected() {
        return skip(SkipReason::AlreadyInjected, AdmissionResponse::allow(uid));
    }
    let namespace = request
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or_default();
    let Some(tenant) = config.tenant(namespace) else {
        let warning = format!(
            "openkcm-injector: namespace {namespace:?} has no tenant certificate configured; \
             no KMIP sidecar added"
        );
        return skip(
            SkipReason::NamespaceNotConfigured,
            AdmissionResponse::allow(uid).with_warning(warning),
        );
    };

    let options = match PodOptions::from_annotations(&pod.metadata.annotations, tenant, config) {
        Ok(options) => options,
        Err(problems) => return deny(problems),
    };
    let conflicts = pod.conflicts(&options.settings, config.management_port);
    if !conflicts.is_empty() {
        return deny(conflicts);
    }

    let patch = injection_patch(&pod, &options, config);
    let mut response = match serde_json::to_vec(&patch) {
        Ok(json) => AdmissionResponse::patched(uid, &json),
        // Serializing a Vec of JSON values cannot fail; answer rather than panic anyway.
        Err(e) => return deny(vec![format!("internal error building the patch: {e}")]),
    };
    response.warnings = options.warnings;
    Admission {
        outcome: Outcome::Injected,
        response,
    }
}

fn is_pod_create(request: &AdmissionRequest) -> bool {
    let kind = &request.kind;
    let resource = &request.resource;
    request.operation == "CREATE"
        && kind.group.is_empty()
        && kind.version == "v1"
        && kind.kind == "Pod"
        && resource.resource == "pods"
        && request
            .sub_resource
            .as_deref()
            .unwrap_or_default()
            .is_empty()
}

/// The JSONPatch (RFC 6902) that injects the sidecar. Each array or map the pod lacks is
/// added whole; one it has is appended to (`/-`) or extended key by key, so nothing that
/// is there is replaced.
fn injection_patch(pod: &PodView, options: &PodOptions, config: &InjectorConfig) -> Vec<Value> {
    let add = |path: String, value: Value| json!({ "op": "add", "path": path, "value": value });
    let mut patch = Vec::new();

    if pod.metadata.annotations.is_empty() {
        patch.push(add(
            "/metadata/annotations".into(),
            json!({ STATUS_ANNOTATION: STATUS_INJECTED }),
        ));
    } else {
        patch.push(add(
            format!("/metadata/annotations/{}", pointer_token(STATUS_ANNOTATION)),
            json!(STATUS_INJECTED),
        ));
    }

    let volumes = [tenant_volume(&options.secret), kmip_volume()];
    if pod.spec.volumes.is_empty() {
        patch.push(add("/spec/volumes".into(), json!(volumes)));
    } else {
        patch.extend(volumes.map(|v| add("/spec/volumes/-".into(), v)));
    }

    for (i, container) in pod.spec.containers.iter().enumerate() {
        if container.volume_mounts.is_empty() {
            let path = format!("/spec/containers/{i}/volumeMounts");
            patch.push(add(path, json!([workload_mount()])));
        } else {
            let path = format!("/spec/containers/{i}/volumeMounts/-");
            patch.push(add(path, workload_mount()));
        }
    }

    let sidecar = SidecarPlan {
        config,
        settings: &options.settings,
        native: options.native,
    }
    .container();
    if !options.native {
        patch.push(add("/spec/containers/-".into(), sidecar));
    } else if pod.spec.init_containers.is_empty() {
        patch.push(add("/spec/initContainers".into(), json!([sidecar])));
    } else {
        // After the existing init containers: they run to completion before the sidecar
        // starts (see docs/injector.md), and a mesh proxy among them is up before it.
        patch.push(add("/spec/initContainers/-".into(), sidecar));
    }
    patch
}

/// A JSON Pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`.
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// What the pod's annotations ask of its sidecar, over the configured defaults.
#[derive(Debug)]
struct PodOptions {
    settings: SidecarSettings,
    native: bool,
    /// The tenant certificate Secret: the namespace's, or its service's.
    secret: String,
    /// Unknown `kmip.platform-mesh.io/` annotations: probably typos, worth telling.
    warnings: Vec<String>,
}

impl PodOptions {
    /// Every bad annotation is reported, each as `annotation NAME: why`.
    fn from_annotations(
        annotations: &BTreeMap<String, String>,
        tenant: &TenantBinding,
        config: &InjectorConfig,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut settings = config.defaults.clone();
        let read = |name: &str| -> Option<&String> { annotations.get(name) };
        let mut invalid = |name: &str, e: String| problems.push(format!("annotation {name}: {e}"));

        let configured = config.sidecar_mode == SidecarMode::Native;
        let native = match read(NATIVE_SIDECAR_ANNOTATION).map(String::as_str) {
            None => configured,
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                invalid(
                    NATIVE_SIDECAR_ANNOTATION,
                    format!("{} is not \"true\" or \"false\"", quoted(other)),
                );
                configured
            }
        };
        let service = read(SERVICE_ANNOTATION).map(String::as_str);
        let secret = match tenant.secret_for(service) {
            Ok(secret) => secret.to_owned(),
            Err(e) => {
                invalid(SERVICE_ANNOTATION, e);
                String::new()
            }
        };
        if let Some(text) = read(PORT_ANNOTATION) {
            match parse_port(text) {
                Ok(port) => settings.port = port,
                Err(e) => invalid(PORT_ANNOTATION, e),
            }
        }
        let quantities: [(&str, &mut Quantity); 3] = [
            (CPU_REQUEST_ANNOTATION, &mut settings.cpu_request),
            (MEMORY_REQUEST_ANNOTATION, &mut settings.memory_request),
            (MEMORY_LIMIT_ANNOTATION, &mut settings.memory_limit),
        ];
        for (name, slot) in quantities {
            if let Some(text) = read(name) {
                match Quantity::parse(text) {
                    Ok(q) => *slot = q,
                    Err(e) => invalid(name, e),
                }
            }
        }
        if let Some(text) = read(LOG_LEVEL_ANNOTATION) {
            match LogLevel::parse(text) {
                Ok(level) => settings.log_level = level,
                Err(e) => invalid(LOG_LEVEL_ANNOTATION, e),
            }
        }
        let names = SettingNames {
            port: PORT_ANNOTATION,
            memory_request: MEMORY_REQUEST_ANNOTATION,
            memory_limit: MEMORY_LIMIT_ANNOTATION,
        };
        for (name, problem) in consistency_problems(&settings, config.management_port, &names) {
            invalid(name, problem);
        }
        if !problems.is_empty() {
            return Err(problems);
        }

        let warnings = annotations
            .keys()
            .filter(|k| {
                k.starts_with(ANNOTATION_PREFIX) && !KNOWN_ANNOTATIONS.contains(&k.as_str())
            })
            .map(|k| format!("openkcm-injector: unknown annotation {k} ignored"))
            .collect();
        Ok(Self {
            settings,
            native,
            secret,
            warnings,
        })
    }
}

/// The parts of a Pod the decision reads; everything else passes through untouched.
/// Absent and `null` fields read as empty: either way the patch adds them whole.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodView {
    metadata: MetadataView,
    spec: SpecView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MetadataView {
    namespace: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_as_default")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SpecView {
    #[serde(deserialize_with = "null_as_default")]
    containers: Vec<ContainerView>,
    #[serde(deserialize_with = "null_as_default")]
    init_containers: Vec<ContainerView>,
    #[serde(deserialize_with = "null_as_default")]
    volumes: Vec<NamedView>,
    host_network: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ContainerView {
    name: String,
    #[serde(deserialize_with = "null_as_default")]
    volume_mounts: Vec<MountView>,
    #[serde(deserialize_with = "null_as_default")]
    ports: Vec<PortView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MountView {
    name: String,
    mount_path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PortView {
    container_port: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NamedView {
    name: String,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl PodView {
    /// Injected before: marked, or carrying the sidecar (added by hand or by an older
    /// injector that did not annotate).
    fn is_injected(&self) -> bool {
        self.metadata.annotations.contains_key(STATUS_ANNOTATION)
            || self
                .spec
                .containers
                .iter()
                .chain(&self.spec.init_containers)
                .any(|c| c.name == SIDECAR_CONTAINER)
    }

    /// What in the pod would collide with the injection: Kubernetes would reject the
    /// patched pod (or its sidecar would never start) with a message naming our additions,
    /// so the author gets one naming theirs instead.
    fn conflicts(&self, settings: &SidecarSettings, management_port: u16) -> Vec<String> {
        let mut conflicts = Vec::new();
        let opt_out = format!("(or opt out with label {INJECT_LABEL}: \"false\")");
        for volume in &self.spec.volumes {
            if volume.name == TENANT_VOLUME || volume.name == KMIP_VOLUME {
                conflicts.push(format!(
                    "volume {} is reserved for the KMIP sidecar; rename it {opt_out}",
                    volume.name
                ));
            }
        }
        for container in &self.spec.containers {
            for mount in &container.volume_mounts {
                if mount.mount_path.trim_end_matches('/') == KMIP_MOUNT_PATH {
                    conflicts.push(format!(
                        "container {} mounts {} at {KMIP_MOUNT_PATH}, where the KMIP sidecar's \
                         socket is mounted; move it {opt_out}",
                        container.name, mount.name
                    ));
                }
            }
            for port in &container.ports {
                let Some(port) = port.container_port else {
                    continue;
                };
                if port == i64::from(settings.port) {
                    conflicts.push(format!(
                        "container {} declares port {port}, the KMIP sidecar's port; set \
                         annotation {PORT_ANNOTATION} to another port",
                        container.name
                    ));
                } else if port == i64::from(management_port) {
                    conflicts.push(format!(
                        "container {} declares port {port}, the KMIP sidecar's management port \
                         {opt_out}",
                        container.name
                    ));
                }
            }
        }
        if self.spec.containers.is_empty() {
            conflicts.push("the Pod has no containers".into());
        }
        if self.spec.host_network == Some(true) {
            conflicts.push(format!(
                "hostNetwork pods share the node's ports, where the KMIP sidecars of two pods \
                 would collide {opt_out}"
            ));
        }
        conflicts
    }
}

#[cfg(test)]
mod tests;
