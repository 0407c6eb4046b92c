//! The production pair as separate processes: `openkcm keysvc` and `openkcm gateway` (what
//! the Kubernetes manifests run), with the certificates `openkcm dev` created. The gateway
//! starts, serves tenant-a, refuses a stranger, and stops on SIGTERM.

mod dev_support;
mod keysvc_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dev_support::{free_port, DevProcess};
use keysvc_support::{Keysvc, BIN};
use kmip::client::Client;
use kmip::spec::ResultReason;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openkcm_gateway_serves_in_front_of_openkcm_keysvc_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev_dir = dir.path().join("dev");
    // `openkcm dev` writes the PKI, the routing rules and the root key, then goes away.
    DevProcess::start(&dev_dir).terminate();
    let pki = |name: &str| dev_dir.join("pki").join(name).display().to_string();
    let keysvc = Keysvc::spawn(&[
        "keysvc".into(),
        "--listen-api".into(),
        "127.0.0.1:0".into(),
        "--listen-management".into(),
        "127.0.0.1:0".into(),
        "--tls-cert".into(),
        pki("keysvc.pem"),
        "--tls-key".into(),
        pki("keysvc-key.pem"),
        "--tls-client-ca".into(),
        pki("ca.pem"),
        "--allow-gateway".into(),
        "openkcm-gateway".into(),
        "--database".into(),
        format!("sqlite://{}", dev_dir.join("keys.db").display()),
        "--root-key-id".into(),
        "dev-root-1".into(),
        "--root-key-file".into(),
        dev_dir.join("root-key.b64").display().to_string(),
    ]);

    let kmip_addr = free_port();
    let mut gateway = Command::new(BIN)
        .arg("gateway")
        .args(["--kmip-addr", &kmip_addr.to_string()])
        .args(["--https-addr", &free_port().to_string()])
        .args([
            "--tls-cert",
            &pki("gateway.pem"),
            "--tls-key",
            &pki("gateway-key.pem"),
        ])
        .args(["--client-ca", &pki("ca.pem")])
        .arg("--policies")
        .arg(dev_dir.join("policies"))
        .args(["--upstream", &keysvc.api.to_string()])
        .args(["--upstream-ca", &pki("ca.pem")])
        .args(["--upstream-cert", &pki("gateway-upstream.pem")])
        .args(["--upstream-key", &pki("gateway-upstream-key.pem")])
        .args(["--upstream-server-name", "keysvc", "--grace-period", "2"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn openkcm gateway");

    let connector = |who: &str| {
        kmip::client::tls::connector_from_pem_files(
            pki("ca.pem"),
            pki(&format!("{who}.pem")),
            pki(&format!("{who}-key.pem")),
        )
        .expect("connector")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let uid = loop {
        let attempt = async {
            let mut client =
                Client::connect_tls(&kmip_addr.to_string(), "localhost", &connector("tenant-a"))
                    .await
                    .map_err(|e| e.to_string())?;
            client
                .create_aes_key(256, None)
                .await
                .map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(uid) => break uid,
            Err(e) => {
                if let Some(status) = gateway.try_wait().expect("wait") {
                    panic!("openkcm gateway exited: {status}");
                }
                assert!(Instant::now() < deadline, "gateway never served: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut a = Client::connect_tls(&kmip_addr.to_string(), "localhost", &connector("tenant-a"))
        .await
        .expect("tenant-a");
    a.get(&uid).await.expect("tenant-a gets its key");
    let mut stranger =
        Client::connect_tls(&kmip_addr.to_string(), "localhost", &connector("stranger"))
            .await
            .expect("stranger's TLS handshake (routing refuses, not TLS)");
    let err = stranger.get(&uid).await.expect_err("stranger");
    assert_eq!(
        err.result_reason(),
        Some(ResultReason::PermissionDenied),
        "{err}"
    );

    let sent = Command::new("kill")
        .args(["-TERM", &gateway.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = gateway.try_wait().expect("wait") {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(20),
            "openkcm gateway still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "gateway exit: {status}");
}
