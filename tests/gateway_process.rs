//! The production pair as separate processes: `openkcm keysvc` and `openkcm gateway` (what
//! the Kubernetes manifests run), with the certificates `openkcm dev` created. The gateway
//! starts, serves tenant-a, refuses a stranger, and stops on SIGTERM.

mod dev_support;
mod keysvc_support;
mod stack_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dev_support::free_port;
use keysvc_support::Keysvc;
use kmip::client::Client;
use kmip::spec::ResultReason;
use stack_support::DevFiles;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openkcm_gateway_serves_in_front_of_openkcm_keysvc_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `openkcm dev` writes the PKI, the routing rules and the root key, then goes away.
    let files = DevFiles::write(&dir.path().join("dev"));
    let pki = |name: &str| files.pki(name);
    let keysvc = Keysvc::spawn(
        &files.keysvc_args(&format!("sqlite://{}", files.dir.join("keys.db").display())),
    );

    let kmip_addr = free_port();
    let mut gateway = files
        .gateway_command(kmip_addr, &[keysvc.api])
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
