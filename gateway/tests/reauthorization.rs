//! Admission is re-checked on open connections, before every request: a certificate that
//! expires while its connection is busy, a routing rule removed, a CA removed from the
//! client CA bundle — each refuses the next request with a KMIP error (then the connection
//! closes), counted; and a connection is closed once it reaches its maximum age.

mod support;

use std::time::{Duration as StdDuration, Instant};

use kmip::spec::ResultReason;
use pki::{CertSpec, CertificateAuthority};
use support::{kmip_client, start_keysvc, Pki, RunningGateway, TlsClient, EVENTUALLY};
use time::{Duration, OffsetDateTime};

fn tenant_a_spec(cn: &str) -> CertSpec {
    let mut spec = testkit::certs::tenant("tenant-a");
    spec.common_name = cn.into();
    spec
}

/// Gets `uid` on `client`'s open connection until a request is refused (bounded by
/// [`EVENTUALLY`]); the refusal must be Permission Denied.
async fn first_refusal(client: &mut TlsClient, uid: &str) -> kmip::client::ClientError {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        match client.get(uid).await {
            Ok(_) => {
                assert!(Instant::now() < deadline, "never refused");
                tokio::time::sleep(StdDuration::from_millis(50)).await;
            }
            Err(e) => {
                assert_eq!(
                    e.result_reason(),
                    Some(ResultReason::PermissionDenied),
                    "{e}"
                );
                return e;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_expires_during_a_busy_connection_stops_working() {
    let pki = Pki::generate();
    let now = OffsetDateTime::now_utc();
    // Valid for the next 4 s (whole seconds: X.509 times have no fractions).
    let expires = now + Duration::seconds(4);
    pki.issue(
        "short-lived",
        &CertSpec {
            validity: (now - Duration::days(1), expires),
            ..tenant_a_spec("mongod.tenant-a.short-lived")
        },
    );
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start(&pki, &[keysvc.api_addr()]).await;
    let mut a = kmip_client(&pki, &gateway.addr_text(), "short-lived").await;
    let uid = a
        .create_aes_key(256, None)
        .await
        .expect("served while valid");

    // Busy: a request every 100 ms until one is refused.
    let deadline = Instant::now() + StdDuration::from_secs(15);
    let err = loop {
        match a.get(&uid).await {
            Ok(_) => {
                assert!(
                    OffsetDateTime::now_utc() < expires + Duration::seconds(1),
                    "served after the certificate expired"
                );
                assert!(Instant::now() < deadline, "never refused");
                tokio::time::sleep(StdDuration::from_millis(100)).await;
            }
            Err(e) => break e,
        }
    };
    assert_eq!(
        err.result_reason(),
        Some(ResultReason::PermissionDenied),
        "{err}"
    );
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(gateway.metrics.denials("certificate_expired") >= 1);
    // The connection is closed after the refusal.
    assert!(a.get(&uid).await.is_err());
    // Other tenants are unaffected.
    let mut b = kmip_client(&pki, &gateway.addr_text(), "tenant-b").await;
    b.create_aes_key(256, None).await.expect("tenant-b");
    drop(gateway);
    keysvc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_tenants_rule_denies_its_open_connections() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start(&pki, &[keysvc.api_addr()]).await;
    let mut a = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    let mut b = kmip_client(&pki, &gateway.addr_text(), "tenant-b").await;
    let uid = a.create_aes_key(256, None).await.expect("create");

    // Only tenant-b's rule stays.
    pki.write(
        "policies/routing.yaml",
        &gateway::routing::tenant_ou_rules(&["tenant-b"]),
    );
    let err = first_refusal(&mut a, &uid).await;
    assert!(err.to_string().contains("not routed"), "{err}");
    b.create_aes_key(256, None)
        .await
        .expect("tenant-b on its open connection");
    drop(gateway);
    keysvc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_ca_from_the_bundle_refuses_its_open_connections() {
    let pki = Pki::generate();
    // A second CA, trusted at first, issues a tenant-a certificate.
    let second = CertificateAuthority::create("Second tenant CA").expect("CA");
    second
        .issue(&tenant_a_spec("mongod.tenant-a.second-ca"))
        .expect("certificate")
        .write(&pki.path("second.pem"), &pki.path("second-key.pem"))
        .expect("write");
    let first = pki.ca.cert_pem().to_owned();
    pki.write("client-ca.pem", &format!("{first}{}", second.cert_pem()));
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start_with(&pki, &[keysvc.api_addr()], |f| {
        f.client_ca = Some(pki.path("client-ca.pem"))
    })
    .await;
    // The client must trust the gateway's server certificate: pki's CA (ca.pem).
    let mut from_second = kmip_client(&pki, &gateway.addr_text(), "second").await;
    let mut a = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    let uid = from_second.create_aes_key(256, None).await.expect("served");

    pki.write("client-ca.pem", &first);
    let err = first_refusal(&mut from_second, &uid).await;
    assert!(err.to_string().contains("no longer verifies"), "{err}");
    assert!(gateway.metrics.denials("certificate_untrusted") >= 1);
    a.get(&uid)
        .await
        .expect("tenant-a from the remaining CA is still served");
    drop(gateway);
    keysvc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_is_closed_at_its_maximum_age_between_messages() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start_with(&pki, &[keysvc.api_addr()], |f| {
        f.max_connection_age = Some("2s".into())
    })
    .await;
    let mut a = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    let uid = a.create_aes_key(256, None).await.expect("create");
    let opened = Instant::now();
    // Every request is answered in full until the connection is closed.
    let closed_after = loop {
        match a.get(&uid).await {
            Ok(got) => assert_eq!(got.unique_identifier.as_text(), Some(uid.as_str())),
            Err(_) => break opened.elapsed(),
        }
        assert!(
            opened.elapsed() < StdDuration::from_secs(15),
            "never closed"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    };
    assert!(
        closed_after >= StdDuration::from_secs(1),
        "{closed_after:?}"
    );
    // A new connection is served.
    let mut again = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    again.get(&uid).await.expect("a fresh connection");
    drop(gateway);
    keysvc.shutdown().await;
}
