//! A resumed TLS session skips certificate verification in rustls, and Pingora's listener
//! keeps rustls' session cache. The gateway verifies the chain again after every handshake:
//! once the client CA bundle no longer trusts a certificate, a client that resumes a session
//! made before is denied like any untrusted client, although its TLS handshake completes.

mod support;

use std::time::Duration;

use kmip::client::Client;
use kmip::spec::ResultReason;
use pki::CertificateAuthority;
use support::{start_keysvc, Pki, RunningGateway, EVENTUALLY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_does_not_outlive_the_removal_of_its_ca() {
    let pki = Pki::generate();
    // The gateway's client CA bundle in its own file, so that replacing it leaves the
    // keysvc side alone.
    std::fs::copy(pki.path("ca.pem"), pki.path("client-ca.pem")).expect("copy");
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start_with(&pki, &[keysvc.api_addr()], |flags| {
        flags.client_ca = Some(pki.path("client-ca.pem"));
    })
    .await;
    // One connector = one client session cache: the second connection resumes.
    let tenant_a = pki.connector("tenant-a");
    let mut first = Client::connect_tls(&gateway.addr_text(), "localhost", &tenant_a)
        .await
        .expect("connect");
    first
        .discover_versions(&[])
        .await
        .expect("tenant-a is served");
    drop(first);

    // The administrator replaces the bundle: tenant-a's CA is no longer trusted.
    let other = CertificateAuthority::create("another CA").expect("CA");
    std::fs::write(pki.path("client-ca.pem.new"), other.cert_pem()).expect("write");
    std::fs::rename(pki.path("client-ca.pem.new"), pki.path("client-ca.pem")).expect("rename");

    // A fresh handshake is refused once the reload happened; a resumed one must be too.
    let deadline = std::time::Instant::now() + EVENTUALLY;
    loop {
        let fresh = Client::connect_tls(
            &gateway.addr_text(),
            "localhost",
            &pki.connector("tenant-a"),
        )
        .await;
        let refused = match fresh {
            Err(_) => true,
            Ok(mut client) => client.discover_versions(&[]).await.is_err(),
        };
        if refused {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new bundle never took effect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut resumed = Client::connect_tls(&gateway.addr_text(), "localhost", &tenant_a)
        .await
        .expect("the resumed handshake itself completes");
    let err = resumed
        .discover_versions(&[])
        .await
        .expect_err("a resumed session under a removed CA must not be served");
    assert_eq!(
        err.result_reason(),
        Some(ResultReason::PermissionDenied),
        "{err}"
    );
    assert!(gateway.metrics.denials("unreadable_certificate") >= 1);
}
