use base64::Engine as _;
use serde_json::json;

use super::*;
use crate::admission::parse_review;

const CONFIG: &str = "\
image: ghcr.io/openkcm/openkcm:0.1.0
gateway: gw.openkcm-system.svc:5696
tenants:
  tenant-a: { secret: tenant-a-cert }
";

fn config() -> InjectorConfig {
    InjectorConfig::parse(CONFIG).unwrap()
}

/// The test configuration with `sidecarMode: classic`.
fn classic_config() -> InjectorConfig {
    InjectorConfig::parse(&format!("{CONFIG}sidecarMode: classic\n")).unwrap()
}

const PROBES: [&str; 3] = ["startupProbe", "readinessProbe", "livenessProbe"];

/// A pod with an init container of its own (no probes: a regular init container).
fn pod_with_init_container() -> Value {
    let mut with_init = plain_pod();
    with_init["spec"]["initContainers"] = json!([{ "name": "migrate", "image": "m:1" }]);
    with_init
}

fn request(operation: &str, namespace: &str, pod: Value) -> AdmissionRequest {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "operation": operation,
            "namespace": namespace,
            "object": pod,
        }
    });
    parse_review(review.to_string().as_bytes()).unwrap()
}

fn pod(containers: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "app", "namespace": "tenant-a" },
        "spec": { "containers": containers },
    })
}

fn plain_pod() -> Value {
    pod(json!([{ "name": "app", "image": "app:1" }]))
}

/// The decoded JSONPatch of a response.
fn patch_of(admission: &Admission) -> Vec<Value> {
    let encoded = admission.response.patch.as_ref().expect("a patch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn paths(patch: &[Value]) -> Vec<&str> {
    patch
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect()
}

fn apply(pod: &Value, patch: &[Value]) -> Value {
    let mut pod = pod.clone();
    let patch: json_patch::Patch = serde_json::from_value(json!(patch)).unwrap();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

#[test]
fn a_plain_pod_gets_whole_arrays_and_maps() {
    let admission = mutate(&request("CREATE", "tenant-a", plain_pod()), &config());
    assert_eq!(admission.outcome, Outcome::Injected);
    assert_eq!(
        admission.response.uid,
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(admission.response.patch_type, Some("JSONPatch"));
    let patch = patch_of(&admission);
    assert_eq!(
        paths(&patch),
        [
            "/metadata/annotations",
            "/spec/volumes",
            "/spec/containers/0/volumeMounts",
            "/spec/initContainers",
        ]
    );
    assert!(patch.iter().all(|op| op["op"] == "add"));
    let patched = apply(&plain_pod(), &patch);
    assert_eq!(
        patched["metadata"]["annotations"][STATUS_ANNOTATION],
        "injected"
    );
    assert_eq!(
        patched["spec"]["volumes"][0]["secret"]["secretName"],
        "tenant-a-cert"
    );
    let sidecar = &patched["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], SIDECAR_CONTAINER);
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert!(sidecar.get("imagePullPolicy").is_none());
}

#[test]
fn existing_arrays_are_appended_to_and_keys_escaped() {
    let mut existing = pod(json!([
        { "name": "app", "image": "app:1", "volumeMounts": [{ "name": "data", "mountPath": "/data" }] },
        { "name": "log", "image": "log:1" },
    ]));
    existing["metadata"]["annotations"] = json!({ "team": "payments" });
    existing["spec"]["volumes"] = json!([{ "name": "data", "emptyDir": {} }]);
    existing["spec"]["initContainers"] = json!([{ "name": "migrate", "image": "m:1" }]);
    let admission = mutate(&request("CREATE", "tenant-a", existing.clone()), &config());
    let patch = patch_of(&admission);
    assert_eq!(
        paths(&patch),
        [
            "/metadata/annotations/kmip.platform-mesh.io~1status",
            "/spec/volumes/-",
            "/spec/volumes/-",
            "/spec/containers/0/volumeMounts/-",
            "/spec/containers/1/volumeMounts",
            "/spec/initContainers/-",
        ]
    );
    let patched = apply(&existing, &patch);
    assert_eq!(patched["metadata"]["annotations"]["team"], "payments");
    assert_eq!(patched["spec"]["initContainers"][0]["name"], "migrate");
    assert_eq!(
        patched["spec"]["initContainers"][1]["name"],
        SIDECAR_CONTAINER
    );
    assert_eq!(patched["spec"]["volumes"][0]["name"], "data");
}

#[test]
fn null_fields_read_as_absent() {
    let mut nulls = plain_pod();
    nulls["metadata"]["annotations"] = Value::Null;
    nulls["spec"]["volumes"] = Value::Null;
    nulls["spec"]["initContainers"] = Value::Null;
    nulls["spec"]["containers"][0]["volumeMounts"] = Value::Null;
    let patch = patch_of(&mutate(
        &request("CREATE", "tenant-a", nulls.clone()),
        &config(),
    ));
    let patched = apply(&nulls, &patch);
    assert_eq!(
        patched["spec"]["initContainers"].as_array().unwrap().len(),
        1
    );
    assert_eq!(patched["spec"]["volumes"].as_array().unwrap().len(), 2);
}

#[test]
fn a_regular_container_when_native_sidecars_are_declined() {
    let mut regular = plain_pod();
    regular["metadata"]["annotations"] = json!({ NATIVE_SIDECAR_ANNOTATION: "false" });
    let patch = patch_of(&mutate(
        &request("CREATE", "tenant-a", regular.clone()),
        &config(),
    ));
    assert_eq!(paths(&patch).last(), Some(&"/spec/containers/-"));
    let patched = apply(&regular, &patch);
    let sidecar = &patched["spec"]["containers"][1];
    assert_eq!(sidecar["name"], SIDECAR_CONTAINER);
    assert!(sidecar.get("restartPolicy").is_none());
    assert!(patched["spec"].get("initContainers").is_none());
}

#[test]
fn classic_mode_adds_nothing_to_init_containers() {
    for original in [plain_pod(), pod_with_init_container()] {
        let admission = mutate(
            &request("CREATE", "tenant-a", original.clone()),
            &classic_config(),
        );
        assert_eq!(admission.outcome, Outcome::Injected);
        let patch = patch_of(&admission);
        assert!(
            paths(&patch)
                .iter()
                .all(|path| !path.starts_with("/spec/initContainers")),
            "{patch:#?}"
        );
        // No probe, and no restartPolicy, anywhere a pre-1.28 API server would refuse it.
        let text = serde_json::to_string(&patch).unwrap();
        assert_eq!(text.matches("restartPolicy").count(), 0, "{text}");
        assert_eq!(paths(&patch).last(), Some(&"/spec/containers/-"));

        let patched = apply(&original, &patch);
        assert_eq!(
            patched["spec"].get("initContainers"),
            original["spec"].get("initContainers")
        );
        for init in patched["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for probe in PROBES {
                assert!(init.get(probe).is_none(), "{probe} in {init}");
            }
        }
        let containers = patched["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        let sidecar = &containers[1];
        assert_eq!(sidecar["name"], SIDECAR_CONTAINER);
        for probe in PROBES {
            assert!(
                sidecar.get(probe).is_some(),
                "{probe} kept on the container"
            );
        }
    }
}

#[test]
fn native_mode_puts_the_probed_sidecar_in_init_containers() {
    for original in [plain_pod(), pod_with_init_container()] {
        let patch = patch_of(&mutate(
            &request("CREATE", "tenant-a", original.clone()),
            &config(),
        ));
        let last = *paths(&patch).last().unwrap();
        assert!(last.starts_with("/spec/initContainers"), "{last}");
        assert!(paths(&patch).iter().all(|p| *p != "/spec/containers/-"));
        let patched = apply(&original, &patch);
        let sidecar = patched["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(sidecar["name"], SIDECAR_CONTAINER);
        assert_eq!(sidecar["restartPolicy"], "Always");
        for probe in PROBES {
            assert!(sidecar.get(probe).is_some(), "{probe}");
        }
    }
}

#[test]
fn the_annotation_overrides_the_configured_mode_both_ways() {
    let mut native = plain_pod();
    native["metadata"]["annotations"] = json!({ NATIVE_SIDECAR_ANNOTATION: "true" });
    let patch = patch_of(&mutate(
        &request("CREATE", "tenant-a", native.clone()),
        &classic_config(),
    ));
    assert_eq!(paths(&patch).last(), Some(&"/spec/initContainers"));
    let patched = apply(&native, &patch);
    assert_eq!(
        patched["spec"]["initContainers"][0]["restartPolicy"],
        "Always"
    );
    assert_eq!(patched["spec"]["containers"].as_array().unwrap().len(), 1);

    let mut classic = plain_pod();
    classic["metadata"]["annotations"] = json!({ NATIVE_SIDECAR_ANNOTATION: "false" });
    let patch = patch_of(&mutate(&request("CREATE", "tenant-a", classic), &config()));
    assert_eq!(paths(&patch).last(), Some(&"/spec/containers/-"));
    assert!(paths(&patch)
        .iter()
        .all(|p| !p.starts_with("/spec/initContainers")));
}

#[test]
fn annotations_override_the_defaults() {
    let mut tuned = plain_pod();
    tuned["metadata"]["annotations"] = json!({
        PORT_ANNOTATION: "7000",
        CPU_REQUEST_ANNOTATION: "50m",
        MEMORY_REQUEST_ANNOTATION: "32Mi",
        MEMORY_LIMIT_ANNOTATION: "128Mi",
        LOG_LEVEL_ANNOTATION: "debug",
    });
    let patch = patch_of(&mutate(
        &request("CREATE", "tenant-a", tuned.clone()),
        &config(),
    ));
    let sidecar = &apply(&tuned, &patch)["spec"]["initContainers"][0];
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.windows(2).any(|w| w == ["--listen", "127.0.0.1:7000"]));
    assert!(args.windows(2).any(|w| w == ["--log-level", "debug"]));
    assert_eq!(
        sidecar["resources"],
        json!({ "requests": { "cpu": "50m", "memory": "32Mi" }, "limits": { "memory": "128Mi" } })
    );
}

#[test]
fn every_invalid_annotation_is_named_in_one_denial() {
    let mut wrong = plain_pod();
    wrong["metadata"]["annotations"] = json!({
        PORT_ANNOTATION: "70000",
        CPU_REQUEST_ANNOTATION: "a lot",
        MEMORY_LIMIT_ANNOTATION: "8Mi",
        LOG_LEVEL_ANNOTATION: "verbose",
        NATIVE_SIDECAR_ANNOTATION: "yes",
    });
    let admission = mutate(&request("CREATE", "tenant-a", wrong), &config());
    assert_eq!(admission.outcome, Outcome::Denied);
    assert!(!admission.response.allowed);
    assert!(admission.response.patch.is_none());
    let status = admission.response.status.unwrap();
    assert_eq!(status.code, 400);
    for name in [
        PORT_ANNOTATION,
        CPU_REQUEST_ANNOTATION,
        MEMORY_REQUEST_ANNOTATION, // the default 16Mi request is above the 8Mi limit
        LOG_LEVEL_ANNOTATION,
        NATIVE_SIDECAR_ANNOTATION,
    ] {
        assert!(
            status.message.contains(name),
            "{name} in {}",
            status.message
        );
    }
}

#[test]
fn the_port_must_not_be_the_management_port() {
    let mut clash = plain_pod();
    clash["metadata"]["annotations"] = json!({ PORT_ANNOTATION: "15696" });
    let admission = mutate(&request("CREATE", "tenant-a", clash), &config());
    let message = admission.response.status.unwrap().message;
    assert!(message.contains(PORT_ANNOTATION), "{message}");
}

#[test]
fn opted_out_injected_and_foreign_pods_pass_unchanged() {
    let config = config();
    let mut opted_out = plain_pod();
    opted_out["metadata"]["labels"] = json!({ INJECT_LABEL: "false" });
    let mut annotated = plain_pod();
    annotated["metadata"]["annotations"] = json!({ STATUS_ANNOTATION: "injected" });
    let by_hand = pod(json!([{ "name": "app" }, { "name": SIDECAR_CONTAINER }]));
    let cases = [
        (opted_out, "tenant-a", SkipReason::OptedOut, false),
        (annotated, "tenant-a", SkipReason::AlreadyInjected, false),
        (by_hand, "tenant-a", SkipReason::AlreadyInjected, false),
        (
            plain_pod(),
            "tenant-b",
            SkipReason::NamespaceNotConfigured,
            true,
        ),
    ];
    for (pod, namespace, reason, warns) in cases {
        let admission = mutate(&request("CREATE", namespace, pod), &config);
        assert_eq!(admission.outcome, Outcome::Skipped(reason));
        assert!(admission.response.allowed);
        assert!(admission.response.patch.is_none());
        assert_eq!(!admission.response.warnings.is_empty(), warns, "{reason:?}");
    }
}

#[test]
fn other_operations_are_allowed_with_a_warning() {
    let admission = mutate(&request("UPDATE", "tenant-a", plain_pod()), &config());
    assert_eq!(
        admission.outcome,
        Outcome::Skipped(SkipReason::NotPodCreate)
    );
    assert!(admission.response.allowed);
    assert!(admission.response.warnings[0].contains("UPDATE"));
}

#[test]
fn a_reviewed_pod_reviewed_again_is_left_alone() {
    let first = mutate(&request("CREATE", "tenant-a", plain_pod()), &config());
    let patched = apply(&plain_pod(), &patch_of(&first));
    let second = mutate(&request("CREATE", "tenant-a", patched), &config());
    assert_eq!(
        second.outcome,
        Outcome::Skipped(SkipReason::AlreadyInjected)
    );
    assert!(second.response.patch.is_none());
}

#[test]
fn clashes_with_what_injection_adds_are_denied() {
    let mut clash = pod(json!([{
        "name": "app",
        "ports": [{ "containerPort": 5696 }, { "containerPort": 15696 }],
        "volumeMounts": [{ "name": "run", "mountPath": "/run/openkcm/" }],
    }]));
    clash["spec"]["volumes"] = json!([{ "name": KMIP_VOLUME, "emptyDir": {} }]);
    clash["spec"]["hostNetwork"] = json!(true);
    let admission = mutate(&request("CREATE", "tenant-a", clash), &config());
    assert_eq!(admission.outcome, Outcome::Denied);
    let message = admission.response.status.unwrap().message;
    for expected in [
        KMIP_VOLUME,
        "/run/openkcm",
        "port 5696",
        "port 15696",
        "hostNetwork",
    ] {
        assert!(message.contains(expected), "{expected} in {message}");
    }
}

#[test]
fn an_unreadable_pod_is_denied_not_panicked_on() {
    let weird = json!({ "metadata": { "labels": ["not", "a", "map"] }, "spec": {} });
    let admission = mutate(&request("CREATE", "tenant-a", weird), &config());
    assert_eq!(admission.outcome, Outcome::Denied);
    let no_containers = json!({ "metadata": {}, "spec": {} });
    let admission = mutate(&request("CREATE", "tenant-a", no_containers), &config());
    assert!(admission
        .response
        .status
        .unwrap()
        .message
        .contains("no containers"));
}

#[test]
fn unknown_kmip_annotations_warn() {
    let mut typo = plain_pod();
    typo["metadata"]["annotations"] = json!({ "kmip.platform-mesh.io/memory-limt": "1Gi" });
    let admission = mutate(&request("CREATE", "tenant-a", typo), &config());
    assert_eq!(admission.outcome, Outcome::Injected);
    assert!(admission.response.warnings[0].contains("memory-limt"));
}

/// The test configuration with services in tenant-a.
fn services_config() -> InjectorConfig {
    let text = CONFIG.replace(
        "tenant-a: { secret: tenant-a-cert }",
        "tenant-a: { secret: tenant-a-cert, services: { db: db-cert, cache: cache-cert } }",
    );
    InjectorConfig::parse(&text).unwrap()
}

fn tenant_secret(original: &Value, admission: &Admission) -> Value {
    let patched = apply(original, &patch_of(admission));
    patched["spec"]["volumes"][0]["secret"]["secretName"].clone()
}

#[test]
fn the_service_annotation_picks_the_service_secret() {
    let config = services_config();
    let mut db = plain_pod();
    db["metadata"]["annotations"] = json!({ SERVICE_ANNOTATION: "db" });
    let admission = mutate(&request("CREATE", "tenant-a", db.clone()), &config);
    assert_eq!(admission.outcome, Outcome::Injected);
    assert!(admission.response.warnings.is_empty(), "a known annotation");
    assert_eq!(tenant_secret(&db, &admission), "db-cert");

    let admission = mutate(&request("CREATE", "tenant-a", plain_pod()), &config);
    assert_eq!(tenant_secret(&plain_pod(), &admission), "tenant-a-cert");
}

#[test]
fn an_unknown_service_is_denied_naming_the_known_ones() {
    let mut unknown = plain_pod();
    unknown["metadata"]["annotations"] = json!({ SERVICE_ANNOTATION: "queue" });
    let admission = mutate(
        &request("CREATE", "tenant-a", unknown.clone()),
        &services_config(),
    );
    assert_eq!(admission.outcome, Outcome::Denied);
    let message = admission.response.status.unwrap().message;
    for expected in [SERVICE_ANNOTATION, "\"queue\"", "cache, db"] {
        assert!(message.contains(expected), "{expected} in {message}");
    }
    // A namespace without services: any service name is denied.
    let admission = mutate(&request("CREATE", "tenant-a", unknown), &config());
    assert_eq!(admission.outcome, Outcome::Denied);
    let message = admission.response.status.unwrap().message;
    assert!(message.contains("none configured"), "{message}");
}

#[test]
fn pointer_tokens_are_escaped() {
    assert_eq!(pointer_token("a/b~c"), "a~1b~0c");
}
