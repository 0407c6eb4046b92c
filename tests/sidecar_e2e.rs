//! A workload → `openkcm sidecar` (Unix socket and local TLS) → `openkcm dev` (gateway +
//! keysvc), all real processes on loopback: the MongoDB request sequence, the PyKMIP
//! client, tenant identity, certificate rotation under an open connection, and a gateway
//! outage and return.

mod dev_support;
mod sidecar_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dev_support::{pykmip_python, DevProcess};
use kmip::client::Client;
use kmip::spec::{ResultReason, State, Tag};
use kmip::ProtocolVersion;
use sidecar_support::{install_tenant_cert, SidecarProcess};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

const TIMEOUT: Duration = Duration::from_secs(15);

/// What mongod does with a KMIP server (encryption at rest, KMIP 1.x): create a key,
/// activate it, read its State, Encrypt with only UID + Data, Decrypt with the IV it got
/// back, and Get. Returns the key's UID.
async fn mongodb_sequence<S: AsyncRead + AsyncWrite + Unpin>(kmip: &mut Client<S>) -> String {
    let uid = kmip.create_aes_key(256, None).await.expect("create");
    kmip.activate(&uid).await.expect("activate");
    let attributes = kmip
        .get_attributes(&uid, &[Tag::STATE])
        .await
        .expect("get attributes");
    assert_eq!(attributes.state().expect("State"), Some(State::Active));
    let master_key = b"mongod's database master key, 96 bytes in real life".to_vec();
    let encrypted = kmip
        .encrypt(&uid, &master_key, None, None)
        .await
        .expect("encrypt");
    let ciphertext = encrypted.data.expect("ciphertext");
    let iv = encrypted.iv_counter_nonce.expect("the server's IV");
    let decrypted = kmip
        .decrypt(&uid, &ciphertext.0, None, Some(&iv.0), None)
        .await
        .expect("decrypt");
    assert_eq!(decrypted.0.as_slice(), master_key.as_slice());
    kmip.get(&uid).await.expect("get");
    uid
}

async fn unix_client(sidecar: &SidecarProcess, version: ProtocolVersion) -> Client<UnixStream> {
    let stream = UnixStream::connect(&sidecar.socket)
        .await
        .expect("connect to the sidecar's socket");
    let mut client = Client::with_version(stream, version);
    client.set_timeout(TIMEOUT);
    client
}

/// A direct client of the gateway with a dev PKI certificate (tenant-a, tenant-b, ...).
async fn gateway_client(
    dev: &DevProcess,
    who: &str,
) -> Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connector = kmip::client::tls::connector_from_pem_files(
        dev.pki("ca.pem"),
        dev.pki(&format!("{who}.pem")),
        dev.pki(&format!("{who}-key.pem")),
    )
    .expect("connector");
    Client::connect_tls(&dev.kmip_addr.to_string(), "localhost", &connector)
        .await
        .expect("connect to the gateway")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_use_the_sidecar_over_the_socket_and_local_tls_as_the_pods_tenant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = DevProcess::start(&dir.path().join("dev"));
    let tenant_dir = dir.path().join("tenant");
    install_tenant_cert(&dev.dir.join("pki"), "tenant-a", &tenant_dir);
    let sidecar = SidecarProcess::start(dev.https_addr, &tenant_dir, &dir.path().join("run"), &[]);
    sidecar.wait_ready(true, TIMEOUT);
    for (file, mode) in [
        ("kmip.sock", 0o660),
        ("client-key.pem", 0o640),
        ("ca.pem", 0o644),
    ] {
        let meta = std::fs::metadata(sidecar.local(file)).expect(file);
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            mode,
            "{file}"
        );
    }

    // Plain TTLV on the Unix socket, KMIP 1.4.
    let mut over_socket = unix_client(&sidecar, ProtocolVersion::V1_4).await;
    let from_socket = mongodb_sequence(&mut over_socket).await;

    // TLS on localhost, trusting the pod-local CA and presenting the pod-local client pair
    // (mongod's kmip.serverCAFile / kmip.clientCertificateFile), KMIP 2.0.
    let local_connector = kmip::client::tls::connector_from_pem_files(
        sidecar.local("ca.pem"),
        sidecar.local("client.pem"),
        sidecar.local("client-key.pem"),
    )
    .expect("local connector");
    let mut over_tls = Client::connect_tls_with_version(
        &sidecar.tls_addr.to_string(),
        "localhost",
        &local_connector,
        ProtocolVersion::V2_0,
    )
    .await
    .expect("local TLS");
    let from_tls = mongodb_sequence(&mut over_tls).await;
    // Both connections are the same tenant: each sees the other's key.
    over_tls
        .get(&from_socket)
        .await
        .expect("socket's key over TLS");
    over_socket
        .get(&from_tls)
        .await
        .expect("TLS's key over the socket");

    // Whatever the workload presents (here: nothing), the gateway sees the pod's tenant
    // certificate: tenant-a owns the keys, tenant-b cannot find them.
    let mut a = gateway_client(&dev, "tenant-a").await;
    a.get(&from_socket).await.expect("tenant-a owns it");
    let mut b = gateway_client(&dev, "tenant-b").await;
    let err = b
        .get(&from_socket)
        .await
        .expect_err("tenant-b must not see it");
    assert!(
        matches!(
            err.result_reason(),
            Some(ResultReason::ItemNotFound | ResultReason::ObjectNotFound)
        ),
        "{err}"
    );

    // Garbage on the socket: a KMIP error, then the connection closes; the sidecar serves on.
    let mut raw = UnixStream::connect(&sidecar.socket).await.expect("connect");
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, raw.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .expect("read");
    let response = kmip::message::ResponseMessage::from_ttlv(&answer, &kmip::Limits::default())
        .expect("a KMIP answer to garbage");
    assert_eq!(
        response.batch_items[0].result_reason,
        Some(ResultReason::InvalidMessage)
    );
    over_socket.get(&from_tls).await.expect("still serving");

    // The real PyKMIP client on the local TLS port, configured from the shared volume.
    let flow = pykmip_flow(&sidecar, "1.4");
    assert_eq!(flow["key_len"], 32, "{flow}");
    assert_eq!(flow["decrypted"], "through the sidecar", "{flow}");
    assert_eq!(
        flow["located"],
        serde_json::json!([flow["uid"].clone()]),
        "{flow}"
    );
    assert_eq!(flow["destroyed"], true, "{flow}");

    let (status, metrics) = sidecar.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("openkcm_sidecar_requests_total{listener=\"unix\",result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("openkcm_sidecar_requests_total{listener=\"tls\",result=\"ok\"}"),
        "{metrics}"
    );
    let expiry = metric_value(
        &metrics,
        "openkcm_certificate_expiry_timestamp_seconds{cert=\"tenant\"}",
    );
    assert!(expiry > 1.7e9, "certificate expiry gauge: {expiry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_and_gateway_outage_keep_the_workload_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev_dir = dir.path().join("dev");
    let log_path = dir.path().join("dev.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut dev = DevProcess::start_with(
        &dev_dir,
        (dev_support::free_port(), dev_support::free_port()),
        Stdio::from(log),
    );
    let tenant_dir = dir.path().join("tenant");
    install_tenant_cert(&dev.dir.join("pki"), "tenant-a", &tenant_dir);
    let sidecar = SidecarProcess::start(
        dev.https_addr,
        &tenant_dir,
        &dir.path().join("run"),
        &["--timeout", "2s"],
    );
    sidecar.wait_ready(true, TIMEOUT);
    let mut workload = unix_client(&sidecar, ProtocolVersion::V1_4).await;
    let first = workload.create_aes_key(256, None).await.expect("create");
    let old_serial = serial_of(&dev, &tenant_dir.join("tls.crt"));
    assert!(audit_clients(&log_path)
        .iter()
        .any(|c| c.ends_with(&format!("serial={old_serial}"))));

    // cert-manager renews the tenant certificate: new files in the mounted Secret.
    let renewed = dir.path().join("renewed");
    let issued = Command::new(env!("CARGO_BIN_EXE_openkcm"))
        .args([
            "pki", "issue", "--tenant", "tenant-a", "--force", "--ca-dir",
        ])
        .arg(dev.dir.join("pki"))
        .arg("--out")
        .arg(&renewed)
        .output()
        .expect("openkcm pki issue");
    assert!(issued.status.success(), "{issued:?}");
    std::fs::copy(dev.pki("ca.pem"), renewed.join("ca.pem")).expect("ca");
    install_tenant_cert(&renewed, "tenant-a", &tenant_dir);
    let new_serial = serial_of(&dev, &tenant_dir.join("tls.crt"));
    assert_ne!(old_serial, new_serial);

    // The open workload connection goes on; within a few reload intervals the gateway sees
    // the new certificate.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        workload
            .get(&first)
            .await
            .expect("requests succeed during rotation");
        workload
            .create_aes_key(128, None)
            .await
            .expect("create during rotation");
        if audit_clients(&log_path)
            .iter()
            .any(|c| c.ends_with(&format!("serial={new_serial}")))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never saw serial {new_serial}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The gateway stops: the workload gets KMIP errors, promptly, and the sidecar is not
    // ready.
    let addrs = (dev.kmip_addr, dev.https_addr);
    dev.terminate();
    let started = Instant::now();
    let err = workload.get(&first).await.expect_err("no gateway");
    assert_eq!(
        err.result_reason(),
        Some(ResultReason::GeneralFailure),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the error took {:?}",
        started.elapsed()
    );
    sidecar.wait_ready(false, TIMEOUT);

    // The gateway comes back on the same address: the same workload connection works again
    // and the key is still there.
    let _dev = DevProcess::start_with(&dev_dir, addrs, Stdio::null());
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match workload.get(&first).await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.result_reason(), Some(ResultReason::GeneralFailure), "{e}");
                assert!(Instant::now() < deadline, "still failing: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    sidecar.wait_ready(true, TIMEOUT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_certificate_the_sidecar_is_not_ready_and_answers_kmip_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = DevProcess::start(&dir.path().join("dev"));
    let tenant_dir = dir.path().join("tenant");
    let sidecar = SidecarProcess::start(dev.https_addr, &tenant_dir, &dir.path().join("run"), &[]);
    let (status, body) = sidecar.http_get("/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no tenant certificate"), "{body}");
    let mut workload = unix_client(&sidecar, ProtocolVersion::V1_4).await;
    let err = workload
        .create_aes_key(256, None)
        .await
        .expect_err("no identity, no key");
    assert_eq!(
        err.result_reason(),
        Some(ResultReason::GeneralFailure),
        "{err}"
    );
    assert!(err.to_string().contains("no tenant certificate"), "{err}");

    // The Secret arrives (cert-manager issued it): ready, and the same connection works.
    install_tenant_cert(&dev.dir.join("pki"), "tenant-a", &tenant_dir);
    sidecar.wait_ready(true, TIMEOUT);
    workload.create_aes_key(256, None).await.expect("create");
}

/// Runs tests/pykmip/sidecar_flow.py against the sidecar's TLS port.
fn pykmip_flow(sidecar: &SidecarProcess, version: &str) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pykmip/sidecar_flow.py");
    let output = Command::new(pykmip_python())
        .arg(script)
        .arg(sidecar.tls_addr.ip().to_string())
        .arg(sidecar.tls_addr.port().to_string())
        .arg(&sidecar.local_dir)
        .arg(version)
        .output()
        .expect("run sidecar_flow.py (make bootstrap creates .venv)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sidecar_flow.py failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("no JSON ({e}): {stdout}"))
}

/// The serial the gateway reads from a certificate (`openkcm routing check` prints it).
fn serial_of(dev: &DevProcess, cert: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_openkcm"))
        .args(["routing", "check", "--policies"])
        .arg(dev.dir.join("policies"))
        .arg("--cert")
        .arg(cert)
        .output()
        .expect("openkcm routing check");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("serial:")
                .map(|s| s.trim().to_owned())
        })
        .expect("routing check prints the serial")
}

/// The `client` field of every audit event keysvc logged (the identity the gateway passed).
fn audit_clients(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["target"] == "audit")
        .filter_map(|event| event["client"].as_str().map(str::to_owned))
        .collect()
}

fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}
