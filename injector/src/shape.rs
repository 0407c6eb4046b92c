//! The injected pod shape: the sidecar container, its two volumes and the workload mount.
//! docs/injector.md shows the result as YAML; keep the two in step.

use serde_json::{json, Value};

use crate::config::InjectorConfig;
use crate::settings::SidecarSettings;
use sidecar::{DEFAULT_LOCAL_DIR, DEFAULT_SOCKET, DEFAULT_TENANT_DIR};

/// The injected container's name; its presence also marks a pod as injected.
pub const SIDECAR_CONTAINER: &str = "openkcm-sidecar";
/// The tenant certificate Secret volume (mounted only in the sidecar).
pub const TENANT_VOLUME: &str = "openkcm-tenant-cert";
/// The emptyDir shared with the workload: the KMIP socket and the pod-local CA.
pub const KMIP_VOLUME: &str = "openkcm-kmip";
/// Where the shared emptyDir is mounted, in the sidecar and in every workload container.
pub const KMIP_MOUNT_PATH: &str = DEFAULT_LOCAL_DIR;

/// The distroless `nonroot` user and group: the image needs no other.
const SIDECAR_UID: i64 = 65532;

/// The emptyDir holds a socket and three small PEM files; in memory (tmpfs) so the
/// pod-local client key never reaches the node's disk, and capped so a bug cannot use the
/// pod's memory for files.
const KMIP_VOLUME_SIZE_LIMIT: &str = "1Mi";

/// Startup probe: every second, for at most a minute. The sidecar reads two files and binds
/// two sockets; a native sidecar holds the workload's start until this passes, so poll
/// often, and a minute without success means a broken Secret, not a slow start.
const STARTUP_PERIOD_SECONDS: u32 = 1;
const STARTUP_FAILURE_THRESHOLD: u32 = 60;
/// Readiness: the usual Kubernetes cadence.
const READINESS_PERIOD_SECONDS: u32 = 5;
/// Liveness: a hung sidecar is restarted after 30 s.
const LIVENESS_PERIOD_SECONDS: u32 = 10;
const LIVENESS_FAILURE_THRESHOLD: u32 = 3;
/// The probe endpoints answer from memory; two seconds covers a busy node.
const PROBE_TIMEOUT_SECONDS: u32 = 2;

/// What one pod's sidecar is built from.
#[derive(Debug)]
pub(crate) struct SidecarPlan<'a> {
    pub config: &'a InjectorConfig,
    pub settings: &'a SidecarSettings,
    /// An initContainer with `restartPolicy: Always` (Kubernetes ≥ 1.29), or a regular
    /// container (`sidecarMode: classic`): then nothing here may be a field an API server
    /// older than 1.28 rejects, which is why `restartPolicy` is set only when native.
    pub native: bool,
}

impl SidecarPlan<'_> {
    /// The `openkcm sidecar` container.
    pub fn container(&self) -> Value {
        let config = self.config;
        let settings = self.settings;
        let tenant_file = |name: &str| format!("{DEFAULT_TENANT_DIR}/{name}");
        let mut args = vec![
            "sidecar".to_owned(),
            "--gateway".into(),
            config.gateway.clone(),
        ];
        if let Some(name) = &config.gateway_server_name {
            args.extend(["--gateway-server-name".into(), name.clone()]);
        }
        args.extend([
            "--gateway-ca".into(),
            tenant_file("ca.crt"),
            "--cert".into(),
            tenant_file("tls.crt"),
            "--key".into(),
            tenant_file("tls.key"),
            "--socket".into(),
            DEFAULT_SOCKET.into(),
            "--listen".into(),
            format!("127.0.0.1:{}", settings.port),
            "--local-dir".into(),
            KMIP_MOUNT_PATH.into(),
            "--management".into(),
            format!("0.0.0.0:{}", config.management_port),
            "--log-level".into(),
            settings.log_level.as_str().into(),
        ]);

        let probe = |path: &str, period: u32, failures: u32| {
            json!({
                "httpGet": { "path": path, "port": config.management_port, "scheme": "HTTP" },
                "periodSeconds": period,
                "failureThreshold": failures,
                "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            })
        };
        let mut container = json!({
            "name": SIDECAR_CONTAINER,
            "image": config.image,
            "args": args,
            "volumeMounts": [
                { "name": TENANT_VOLUME, "mountPath": DEFAULT_TENANT_DIR, "readOnly": true },
                { "name": KMIP_VOLUME, "mountPath": KMIP_MOUNT_PATH },
            ],
            "startupProbe": probe("/ready", STARTUP_PERIOD_SECONDS, STARTUP_FAILURE_THRESHOLD),
            "readinessProbe": probe("/ready", READINESS_PERIOD_SECONDS, 3),
            "livenessProbe": probe("/health", LIVENESS_PERIOD_SECONDS, LIVENESS_FAILURE_THRESHOLD),
            // No CPU limit: throttling a proxy on the workload's request path costs latency,
            // and the request already reserves what it needs.
            "resources": {
                "requests": {
                    "cpu": settings.cpu_request.as_str(),
                    "memory": settings.memory_request.as_str(),
                },
                "limits": { "memory": settings.memory_limit.as_str() },
            },
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": SIDECAR_UID,
                "runAsGroup": SIDECAR_UID,
                "allowPrivilegeEscalation": false,
                "privileged": false,
                "capabilities": { "drop": ["ALL"] },
                "readOnlyRootFilesystem": true,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "terminationMessagePolicy": "FallbackToLogsOnError",
        });
        if let Some(policy) = config.image_pull_policy {
            container["imagePullPolicy"] = policy.as_str().into();
        }
        if self.native {
            container["restartPolicy"] = "Always".into();
        }
        container
    }
}

/// The tenant certificate Secret of the pod's namespace, as configured for it.
pub(crate) fn tenant_volume(secret: &str) -> Value {
    json!({ "name": TENANT_VOLUME, "secret": { "secretName": secret } })
}

/// The emptyDir shared by the sidecar and the workload.
pub(crate) fn kmip_volume() -> Value {
    json!({
        "name": KMIP_VOLUME,
        "emptyDir": { "medium": "Memory", "sizeLimit": KMIP_VOLUME_SIZE_LIMIT },
    })
}

/// The workload containers' view of the shared emptyDir: read-only (connecting to a Unix
/// socket needs no write access to the file system).
pub(crate) fn workload_mount() -> Value {
    json!({ "name": KMIP_VOLUME, "mountPath": KMIP_MOUNT_PATH, "readOnly": true })
}
