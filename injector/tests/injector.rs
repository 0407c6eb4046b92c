//! `openkcm injector` end to end: the real server on port 0 with a certificate from the
//! test PKI, AdmissionReview fixtures written as the API server sends them, answers read
//! over HTTPS, and the returned JSONPatch applied to the pod it was computed for.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use injector::{Injector, InjectorArgs, InjectorError, MAX_REVIEW_BYTES};
use pki::{CertSpec, CertificateAuthority};
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use x509_cert::der::Decode;

const SERVER_NAME: &str = "openkcm-injector.openkcm-system.svc";
const STATUS_ANNOTATION: &str = "kmip.platform-mesh.io/status";
const SIDECAR: &str = "openkcm-sidecar";

const CONFIG: &str = "\
image: ghcr.io/openkcm/openkcm:0.1.0
imagePullPolicy: IfNotPresent
gateway: openkcm-gateway.openkcm-system.svc.cluster.local:5696
gatewayServerName: openkcm-gateway.openkcm-system.svc
tenants:
  tenant-a: { secret: openkcm-tenant-cert }
";

/// Longest wait for an asynchronous effect (a file reload is polled every 2 s).
const EVENTUALLY: Duration = Duration::from_secs(15);

// --- harness -------------------------------------------------------------------------

/// A running injector with its files in a temporary directory.
struct TestInjector {
    dir: tempfile::TempDir,
    ca: CertificateAuthority,
    webhook: SocketAddr,
    management: SocketAddr,
    tls: TlsConnector,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl TestInjector {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::create("injector test CA").unwrap();
        let args = args(dir.path());
        issue_serving_cert(&ca, &args);
        std::fs::write(&args.config, CONFIG).unwrap();
        let injector = Injector::bind(&args).await.unwrap();
        let webhook = injector.webhook_addr();
        let management = injector.management_addr();
        let stop = CancellationToken::new();
        let task = tokio::spawn(injector.run_until(stop.clone().cancelled_owned()));
        Self {
            tls: connector(&ca),
            dir,
            ca,
            webhook,
            management,
            stop,
            task,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `POST /mutate` over HTTPS.
    async fn post(&self, body: Vec<u8>) -> HttpResponse {
        let (stream, _) = self.connect().await;
        exchange(stream, "POST", "/mutate", body).await
    }

    /// Sends a review and returns the AdmissionReview answer (HTTP 200 expected).
    async fn review(&self, review: &Value) -> Value {
        let answer = self.post(review.to_string().into_bytes()).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.header("content-type"), Some("application/json"));
        let answer: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
        answer["response"].clone()
    }

    /// A TLS connection to the webhook and the serial of the certificate it presented.
    async fn connect(&self) -> (tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>) {
        let tcp = TcpStream::connect(self.webhook).await.unwrap();
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let stream = self.tls.connect(name, tcp).await.unwrap();
        let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        let cert = x509_cert::Certificate::from_der(&leaf).unwrap();
        let serial = cert.tbs_certificate.serial_number.as_bytes().to_vec();
        (stream, serial)
    }

    async fn get_management(&self, path: &str) -> HttpResponse {
        let stream = TcpStream::connect(self.management).await.unwrap();
        exchange(stream, "GET", path, Vec::new()).await
    }

    /// The value of one sample on `/metrics` (0 when absent).
    async fn metric(&self, sample: &str) -> f64 {
        let metrics = self.get_management("/metrics").await.text();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(EVENTUALLY, self.task)
            .await
            .expect("the injector stops within the grace period")
            .unwrap();
    }
}

fn args(dir: &Path) -> InjectorArgs {
    InjectorArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        config: dir.join("config.yaml"),
        // Not written at start: no tenants file yet, as before the controller's first write.
        tenants: Some(dir.join("tenants.yaml")),
        management: "127.0.0.1:0".parse().unwrap(),
        log: runtime::LogFilter::parse("info").unwrap(),
        drain: DRAIN,
    }
}

/// The tests' drain period (the default is 5 s).
const DRAIN: std::time::Duration = std::time::Duration::from_millis(1500);

/// Issues a serving certificate for the webhook Service name into `--cert` / `--key`.
fn issue_serving_cert(ca: &CertificateAuthority, args: &InjectorArgs) -> Vec<u8> {
    let spec = CertSpec {
        dns_names: vec![SERVER_NAME.into()],
        server: true,
        ..CertSpec::new(SERVER_NAME)
    };
    let issued = ca.issue(&spec).unwrap();
    issued.write(&args.cert, &args.key).unwrap();
    let cert = x509_cert::Certificate::from_der(&issued.cert_der).unwrap();
    cert.tbs_certificate.serial_number.as_bytes().to_vec()
}

fn connector(ca: &CertificateAuthority) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            ca.cert_der().to_vec(),
        ))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Retries `check` until it holds or [`EVENTUALLY`] has passed.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`). The body is written
/// while the answer is read, so a server that answers early (413) does not deadlock us.
/// (The workspace builds hyper without its client half.)
async fn exchange<S>(stream: S, method: &str, path: &str, body: Vec<u8>) -> HttpResponse
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let writing = tokio::spawn(async move {
        // The server may close after answering early; the answer tells what happened.
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(&body).await;
        let _ = writer.flush().await;
        writer
    });
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let response = loop {
        if let Some(response) = parse_response(&raw) {
            break response;
        }
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break parse_response(&raw).expect("a complete HTTP response"),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    };
    writing.abort();
    response
}

/// A complete response in `raw` (status line, headers, `Content-Length` body), if there.
fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().ok())?
        .unwrap_or(0);
    let body = raw.get(end + 4..end + 4 + length)?.to_vec();
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(name);
    std::fs::read(path).unwrap()
}

/// The response's JSONPatch applied to the review's pod.
fn patched_pod(review: &Value, response: &Value) -> Value {
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod");
    pod
}

/// The same review with `pod` as its object: what the API server sends on reinvocation.
fn with_object(review: &Value, pod: &Value) -> Value {
    let mut again = review.clone();
    again["request"]["object"] = pod.clone();
    again["request"]["uid"] = json!("reinvocation-0001");
    again
}

fn array<'a>(value: &'a Value, pointer: &str) -> &'a Vec<Value> {
    static EMPTY: Vec<Value> = Vec::new();
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or(&EMPTY)
}

fn names(items: &[Value]) -> Vec<&str> {
    items.iter().map(|i| i["name"].as_str().unwrap()).collect()
}

/// Everything the injection promises about a patched pod.
fn assert_injected(original: &Value, pod: &Value, native: bool, port: u16, log_level: &str) {
    let spec = &pod["spec"];
    let containers = array(pod, "/spec/containers");
    let init = array(pod, "/spec/initContainers");
    let sidecars: Vec<&Value> = containers
        .iter()
        .chain(init)
        .filter(|c| c["name"] == SIDECAR)
        .collect();
    assert_eq!(sidecars.len(), 1, "exactly one sidecar");
    let sidecar = sidecars[0];
    if native {
        assert_eq!(
            init.last(),
            Some(sidecar),
            "native sidecar after the init containers"
        );
        assert_eq!(sidecar["restartPolicy"], "Always");
    } else {
        assert_eq!(
            containers.last(),
            Some(sidecar),
            "regular sidecar container"
        );
        assert!(sidecar.get("restartPolicy").is_none());
    }

    assert_eq!(sidecar["image"], "ghcr.io/openkcm/openkcm:0.1.0");
    assert_eq!(sidecar["imagePullPolicy"], "IfNotPresent");
    let listen = format!("127.0.0.1:{port}");
    let expected_args = [
        "sidecar",
        "--gateway",
        "openkcm-gateway.openkcm-system.svc.cluster.local:5696",
        "--gateway-server-name",
        "openkcm-gateway.openkcm-system.svc",
        "--gateway-ca",
        "/etc/openkcm/tenant/ca.crt",
        "--cert",
        "/etc/openkcm/tenant/tls.crt",
        "--key",
        "/etc/openkcm/tenant/tls.key",
        "--socket",
        "/run/openkcm/kmip.sock",
        "--listen",
        &listen,
        "--local-dir",
        "/run/openkcm",
        "--management",
        "0.0.0.0:15696",
        "--log-level",
        log_level,
    ];
    assert_eq!(sidecar["args"], json!(expected_args));
    for (probe, path) in [
        ("startupProbe", "/ready"),
        ("readinessProbe", "/ready"),
        ("livenessProbe", "/health"),
    ] {
        assert_eq!(sidecar[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(sidecar[probe]["httpGet"]["port"], 15696, "{probe}");
    }
    assert_eq!(
        sidecar["securityContext"],
        json!({
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": { "drop": ["ALL"] },
            "readOnlyRootFilesystem": true,
            "seccompProfile": { "type": "RuntimeDefault" },
        })
    );
    assert_eq!(
        sidecar["resources"],
        json!({ "requests": { "cpu": "10m", "memory": "16Mi" }, "limits": { "memory": "64Mi" } })
    );
    assert_eq!(
        sidecar["volumeMounts"],
        json!([
            { "name": "openkcm-tenant-cert", "mountPath": "/etc/openkcm/tenant", "readOnly": true },
            { "name": "openkcm-kmip", "mountPath": "/run/openkcm" },
        ])
    );

    // Volumes: the originals first and unchanged, ours once each.
    let volumes = array(pod, "/spec/volumes");
    let before = array(original, "/spec/volumes");
    assert_eq!(&volumes[..before.len()], &before[..]);
    let mut volume_names = names(volumes);
    volume_names.sort_unstable();
    volume_names.dedup();
    assert_eq!(volume_names.len(), volumes.len(), "volume names unique");
    let ours = &volumes[before.len()..];
    assert_eq!(
        ours,
        [
            json!({ "name": "openkcm-tenant-cert", "secret": { "secretName": "openkcm-tenant-cert" } }),
            json!({ "name": "openkcm-kmip", "emptyDir": { "medium": "Memory", "sizeLimit": "1Mi" } }),
        ]
    );

    // Workload containers: unchanged but for one read-only mount of the socket directory.
    let workload_mount =
        json!({ "name": "openkcm-kmip", "mountPath": "/run/openkcm", "readOnly": true });
    let originals = array(original, "/spec/containers");
    for (before, after) in originals.iter().zip(containers) {
        let mut after = after.clone();
        let mounts = after["volumeMounts"].as_array_mut().unwrap();
        assert_eq!(
            mounts.pop(),
            Some(workload_mount.clone()),
            "{}",
            before["name"]
        );
        assert!(!mounts.contains(&workload_mount));
        if mounts.is_empty() && before.get("volumeMounts").is_none() {
            after.as_object_mut().unwrap().remove("volumeMounts");
        }
        assert_eq!(&after, before);
    }
    let workload_count = originals.len();
    assert_eq!(containers.len(), workload_count + usize::from(!native));
    // Existing init containers untouched (they run before the sidecar; no mount for them).
    let original_init = array(original, "/spec/initContainers");
    assert_eq!(&init[..original_init.len()], &original_init[..]);

    // Metadata: the originals kept, the status added.
    let annotations = pod["metadata"]["annotations"].as_object().unwrap();
    assert_eq!(annotations[STATUS_ANNOTATION], "injected");
    if let Some(before) = original["metadata"]["annotations"].as_object() {
        for (key, value) in before {
            assert_eq!(&annotations[key], value, "annotation {key}");
        }
        assert_eq!(annotations.len(), before.len() + 1);
    }
    assert_eq!(pod["metadata"]["labels"], original["metadata"]["labels"]);
    for key in spec.as_object().unwrap().keys() {
        if !["containers", "initContainers", "volumes"].contains(&key.as_str()) {
            assert_eq!(spec[key], original["spec"][key], "spec.{key}");
        }
    }
}

// --- tests ---------------------------------------------------------------------------

#[tokio::test]
async fn a_plain_pod_gets_a_native_sidecar_once() {
    let injector = TestInjector::start().await;
    let review = fixture("pod-plain.json");
    let response = injector.review(&review).await;
    assert!(response.get("warnings").is_none(), "{response}");
    let pod = patched_pod(&review, &response);
    assert_injected(&review["request"]["object"], &pod, true, 5696, "info");

    // Reinvocation: the patched pod comes back and is left as it is.
    let again = injector.review(&with_object(&review, &pod)).await;
    assert_eq!(again["allowed"], true);
    assert!(again.get("patch").is_none(), "{again}");
    assert!(again.get("patchType").is_none());

    assert_eq!(
        injector
            .metric("injector_admissions_total{result=\"injected\"}")
            .await,
        1.0
    );
    assert_eq!(
        injector
            .metric("injector_admissions_total{result=\"skipped\"}")
            .await,
        1.0
    );
    injector.stop().await;
}

#[tokio::test]
async fn a_pod_with_init_containers_volumes_and_annotations_is_appended_to() {
    let injector = TestInjector::start().await;
    let review = fixture("pod-existing.json");
    let response = injector.review(&review).await;
    let pod = patched_pod(&review, &response);
    // The fixture asks for port 5697 and debug logs by annotation.
    assert_injected(&review["request"]["object"], &pod, true, 5697, "debug");
    assert_eq!(
        names(array(&pod, "/spec/initContainers")),
        ["migrate", SIDECAR],
        "existing init containers first"
    );
    assert_eq!(
        names(array(&pod, "/spec/containers")),
        ["api", "log-shipper"]
    );

    let again = injector.review(&with_object(&review, &pod)).await;
    assert!(again.get("patch").is_none(), "{again}");
    injector.stop().await;
}

#[tokio::test]
async fn the_regular_container_variant() {
    let injector = TestInjector::start().await;
    let review = fixture("pod-regular-container.json");
    let response = injector.review(&review).await;
    let pod = patched_pod(&review, &response);
    assert_injected(&review["request"]["object"], &pod, false, 5696, "info");
    assert!(pod["spec"].get("initContainers").is_none());
    assert_eq!(names(array(&pod, "/spec/containers")), ["legacy", SIDECAR]);

    let again = injector.review(&with_object(&review, &pod)).await;
    assert!(again.get("patch").is_none(), "{again}");
    injector.stop().await;
}

#[tokio::test]
async fn pods_that_must_not_change_are_admitted_as_they_are() {
    let injector = TestInjector::start().await;
    // (fixture, a warning expected)
    let cases = [
        ("pod-opted-out.json", false),
        ("pod-already-injected.json", false),
        ("pod-unconfigured-namespace.json", true),
        ("pod-update.json", true),
        ("pod-delete.json", true),
    ];
    for (name, warns) in cases {
        let response = injector.review(&fixture(name)).await;
        assert_eq!(response["allowed"], true, "{name}");
        assert!(response.get("patch").is_none(), "{name}: {response}");
        assert!(response.get("patchType").is_none(), "{name}");
        assert_eq!(
            response.get("warnings").is_some(),
            warns,
            "{name}: {response}"
        );
    }
    let unconfigured = injector
        .review(&fixture("pod-unconfigured-namespace.json"))
        .await;
    let warning = unconfigured["warnings"][0].as_str().unwrap();
    assert!(warning.contains("tenant-z"), "{warning}");
    assert_eq!(
        injector
            .metric("injector_admissions_total{result=\"skipped\"}")
            .await,
        6.0
    );
    injector.stop().await;
}

#[tokio::test]
async fn an_invalid_annotation_is_a_clear_denial() {
    let injector = TestInjector::start().await;
    let response = injector.review(&fixture("pod-invalid-port.json")).await;
    assert_eq!(response["allowed"], false);
    assert!(response.get("patch").is_none());
    assert_eq!(response["status"]["code"], 400);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("kmip.platform-mesh.io/port"), "{message}");
    assert!(message.contains("99999"), "{message}");
    assert_eq!(
        injector
            .metric("injector_admissions_total{result=\"denied\"}")
            .await,
        1.0
    );
    injector.stop().await;
}

#[tokio::test]
async fn unreadable_and_oversized_bodies_are_http_errors() {
    let injector = TestInjector::start().await;

    let garbage = injector.post(fixture_bytes("garbage.bin")).await;
    assert_eq!(garbage.status, 400);
    assert!(
        garbage.text().contains("not an AdmissionReview"),
        "{}",
        garbage.text()
    );

    let mut v1beta1 = fixture("pod-plain.json");
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let old = injector.post(v1beta1.to_string().into_bytes()).await;
    assert_eq!(old.status, 400);
    assert!(old.text().contains("v1beta1"), "{}", old.text());

    let huge = injector.post(vec![b' '; MAX_REVIEW_BYTES + 1]).await;
    assert_eq!(huge.status, 413);

    assert_eq!(
        injector
            .metric("injector_admissions_total{result=\"error\"}")
            .await,
        3.0
    );

    // The listener is still fine.
    let response = injector.review(&fixture("pod-plain.json")).await;
    assert_eq!(response["allowed"], true);
    injector.stop().await;
}

#[tokio::test]
async fn after_the_stop_signal_ready_is_503_while_reviews_are_still_answered() {
    let injector = TestInjector::start().await;
    let stopped = std::time::Instant::now();
    injector.stop.cancel();
    let ready = injector.get_management("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    let review = fixture("pod-plain.json");
    let response = injector.review(&review).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        stopped.elapsed() < DRAIN,
        "the checks took longer than the drain"
    );
    tokio::time::timeout(EVENTUALLY, injector.task)
        .await
        .expect("the injector stops after the drain")
        .unwrap();
    assert!(stopped.elapsed() >= DRAIN);
}

#[tokio::test]
async fn management_endpoints() {
    let injector = TestInjector::start().await;
    let health = injector.get_management("/health").await;
    assert_eq!(health.status, 200);
    let ready = injector.get_management("/ready").await;
    assert_eq!(ready.status, 200);
    let metrics = injector.get_management("/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(
        text.contains("# TYPE injector_admissions counter"),
        "{text}"
    );
    let expiry = injector
        .metric("openkcm_certificate_expiry_timestamp_seconds{cert=\"server\"}")
        .await;
    let in_a_year = (time::OffsetDateTime::now_utc() + time::Duration::days(365)).unix_timestamp();
    assert!((expiry - in_a_year as f64).abs() < 86_400.0, "{expiry}");
    injector.stop().await;
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_handshakes() {
    let injector = TestInjector::start().await;
    let (_, first) = injector.connect().await;
    let args = args(injector.dir.path());

    // A broken certificate file is not loaded: the one in force stays.
    std::fs::write(&args.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let running = &injector;
    eventually("the broken certificate is refused", || async move {
        running
            .metric("openkcm_tls_reloads_total{cert=\"server\",result=\"failed\"}")
            .await
            >= 1.0
    })
    .await;
    assert_eq!(injector.connect().await.1, first);

    let second = issue_serving_cert(&injector.ca, &args);
    assert_ne!(second, first);
    let second = &second;
    eventually("the new certificate is served", || async move {
        &running.connect().await.1 == second
    })
    .await;
    let response = injector.review(&fixture("pod-plain.json")).await;
    assert_eq!(response["allowed"], true);
    injector.stop().await;
}

#[tokio::test]
async fn a_changed_configuration_is_used_and_a_broken_one_ignored() {
    let injector = TestInjector::start().await;
    let review = fixture("pod-unconfigured-namespace.json");
    assert!(injector.review(&review).await.get("patch").is_none());

    let config = injector.path("config.yaml");
    std::fs::write(
        &config,
        format!("{CONFIG}  tenant-z: {{ secret: tenant-z-cert }}\n"),
    )
    .unwrap();
    let (running, review) = (&injector, &review);
    eventually("tenant-z is configured", || async move {
        running.review(review).await.get("patch").is_some()
    })
    .await;
    let pod = patched_pod(review, &injector.review(review).await);
    assert_eq!(
        pod["spec"]["volumes"][0]["secret"]["secretName"],
        "tenant-z-cert"
    );

    std::fs::write(&config, "image: x\nunknownKey: 1\n").unwrap();
    eventually("the broken configuration is refused", || async move {
        running
            .metric("injector_reloads_total{file=\"config\",result=\"failure\"}")
            .await
            >= 1.0
    })
    .await;
    assert!(injector.review(review).await.get("patch").is_some());
    injector.stop().await;
}

#[tokio::test]
async fn a_new_tenants_file_injects_a_new_namespace_without_restart() {
    // Started without a tenants file: tenant-z is not configured.
    let injector = TestInjector::start().await;
    let review = fixture("pod-unconfigured-namespace.json");
    assert!(injector.review(&review).await.get("patch").is_none());

    let tenants = injector.path("tenants.yaml");
    std::fs::write(
        &tenants,
        "# written by openkcm controller from TenantCertificate resources; do not edit\n\
         tenants:\n  \
           tenant-z: { secret: tenant-z-default, tenant: z, services: { db: tenant-z-db } }\n  \
           tenant-a: { secret: from-the-controller, tenant: a }\n",
    )
    .unwrap();
    let (running, review) = (&injector, &review);
    eventually("tenant-z comes from the tenants file", || async move {
        running.review(review).await.get("patch").is_some()
    })
    .await;
    let secret = |pod: &Value| pod["spec"]["volumes"][0]["secret"]["secretName"].clone();
    let pod = patched_pod(review, &injector.review(review).await);
    assert_eq!(secret(&pod), "tenant-z-default");

    // The service annotation picks the service's Secret; an unknown service is denied.
    let mut db = review.clone();
    db["request"]["object"]["metadata"]["annotations"] =
        json!({ "kmip.platform-mesh.io/service": "db" });
    let pod = patched_pod(&db, &injector.review(&db).await);
    assert_eq!(secret(&pod), "tenant-z-db");
    db["request"]["object"]["metadata"]["annotations"] =
        json!({ "kmip.platform-mesh.io/service": "queue" });
    let denied = injector.review(&db).await;
    assert_eq!(denied["allowed"], false);
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(message.contains("known: db"), "{message}");

    // A namespace in both files keeps the configuration file's entry.
    let plain = fixture("pod-plain.json");
    let pod = patched_pod(&plain, &injector.review(&plain).await);
    assert_eq!(secret(&pod), "openkcm-tenant-cert");

    // A broken tenants file keeps the last good tenants.
    std::fs::write(&tenants, "tenants:\n  tenant-z: { secret: \"a/b\" }\n").unwrap();
    eventually("the broken tenants file is refused", || async move {
        running
            .metric("injector_reloads_total{file=\"tenants\",result=\"failure\"}")
            .await
            >= 1.0
    })
    .await;
    let pod = patched_pod(review, &injector.review(review).await);
    assert_eq!(secret(&pod), "tenant-z-default");

    // Removed (the ConfigMap deleted): no tenants from it.
    std::fs::remove_file(&tenants).unwrap();
    eventually("tenant-z is gone with the file", || async move {
        running.review(review).await.get("patch").is_none()
    })
    .await;
    assert!(
        injector
            .metric("injector_reloads_total{file=\"tenants\",result=\"success\"}")
            .await
            >= 2.0
    );
    injector.stop().await;
}

#[tokio::test]
async fn an_invalid_configuration_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let args = args(dir.path());
    let ca = CertificateAuthority::create("injector test CA").unwrap();
    issue_serving_cert(&ca, &args);
    std::fs::write(
        &args.config,
        "image: ghcr.io/openkcm/openkcm:0.1.0\ngateway: gw:5696\ndefaults: { port: 0 }\nextra: 1\n",
    )
    .unwrap();
    let error = Injector::bind(&args).await.unwrap_err();
    assert!(matches!(error, InjectorError::Config(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("config.yaml"), "{message}");
    assert!(message.contains("extra"), "{message}");

    std::fs::write(
        &args.config,
        "image: ghcr.io/openkcm/openkcm:0.1.0\ngateway: gw:5696\ndefaults: { port: 0 }\n",
    )
    .unwrap();
    let message = Injector::bind(&args).await.unwrap_err().to_string();
    assert!(message.contains("defaults.port"), "{message}");

    // A tenants file that does not load stops the start too, naming the file and entry.
    std::fs::write(&args.config, CONFIG).unwrap();
    let tenants = args.tenants.clone().unwrap();
    std::fs::write(&tenants, "tenants:\n  Bad_NS: { secret: s }\n").unwrap();
    let error = Injector::bind(&args).await.unwrap_err();
    assert!(matches!(error, InjectorError::Config(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("tenants.yaml"), "{message}");
    assert!(message.contains("tenants.Bad_NS"), "{message}");
    std::fs::remove_file(&tenants).unwrap();

    // A missing certificate is refused too, naming the file.
    std::fs::remove_file(&args.cert).unwrap();
    let error = Injector::bind(&args).await.unwrap_err();
    assert!(matches!(error, InjectorError::Tls(_)), "{error:?}");
    assert!(error.to_string().contains("tls.crt"), "{error}");
}

#[tokio::test]
async fn the_documented_pod_shape_is_what_is_injected() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/injector.md");
    let docs = std::fs::read_to_string(docs).unwrap();
    let section = docs.split("## The injected pod").nth(1).unwrap();
    let yaml = section.split("```yaml\n").nth(1).unwrap();
    let yaml = yaml.split("```").next().unwrap();
    let documented: Value = serde_norway::from_str(yaml).unwrap();

    let injector = TestInjector::start().await;
    let review = fixture("pod-plain.json");
    let pod = patched_pod(&review, &injector.review(&review).await);
    assert_eq!(
        pod["spec"]["initContainers"],
        documented["spec"]["initContainers"]
    );
    assert_eq!(pod["spec"]["volumes"], documented["spec"]["volumes"]);
    assert_eq!(
        pod["metadata"]["annotations"],
        documented["metadata"]["annotations"]
    );
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"],
        documented["spec"]["containers"][0]["volumeMounts"]
    );
    injector.stop().await;
}
