//! Client certificates the gateway must refuse at the TLS layer: an expired tenant
//! certificate and one from a CA the gateway does not trust. Neither reaches keysvc, and
//! tenant-a keeps being served on the same gateway meanwhile.

mod support;

use std::time::Duration as StdDuration;

use pki::{CertSpec, CertificateAuthority};
use support::{kmip_client, start_keysvc, Pki, RunningGateway, EVENTUALLY};
use testkit::kmip_client::get_request;
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tenant-a client certificate (OU `tenant-a`, so routing would accept it).
fn tenant_a_spec(cn: &str) -> CertSpec {
    let mut spec = CertSpec::new(cn);
    spec.organizational_units.push("tenant-a".into());
    spec.client = true;
    spec
}

/// Writes `name`.pem / `name`-key.pem issued by `ca` into the test PKI directory.
fn write_cert(pki: &Pki, ca: &CertificateAuthority, name: &str, spec: &CertSpec) {
    ca.issue(spec)
        .expect("certificate")
        .write(
            &pki.path(&format!("{name}.pem")),
            &pki.path(&format!("{name}-key.pem")),
        )
        .expect("write certificate");
}

/// The gateway must refuse `who` with the TLS alert `alert`: either in the handshake (TLS
/// 1.2, or a TLS 1.3 alert seen in time) or, with TLS 1.3, at the first read after a KMIP
/// Get was sent, without a single byte of answer. Bounded by [`EVENTUALLY`].
async fn assert_refused(pki: &Pki, gateway: &RunningGateway, who: &str, uid: &str, alert: &str) {
    let tcp = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("TCP connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let handshake = tokio::time::timeout(EVENTUALLY, pki.connector(who).connect(name, tcp))
        .await
        .unwrap_or_else(|_| panic!("{who}: handshake neither done nor refused in time"));
    let mut tls = match handshake {
        Err(e) => {
            assert!(
                e.to_string().contains(alert),
                "{who}: handshake failed, but: {e}"
            );
            return;
        }
        Ok(tls) => tls,
    };
    // TLS 1.3: the client finishes first; the server's verdict arrives as an alert.
    // A KMIP request (any bytes) must never be answered.
    let request = get_request(uid);
    let _ = tls.write_all(&request).await;
    let _ = tls.flush().await;
    let mut buf = [0u8; 4096];
    match tokio::time::timeout(EVENTUALLY, tls.read(&mut buf)).await {
        Err(_) => panic!("{who}: connection neither refused nor closed in time"),
        Ok(Ok(0)) => panic!("{who}: closed without the {alert} alert"),
        Ok(Err(e)) => assert!(
            e.to_string().contains(alert),
            "{who}: read failed, but: {e}"
        ),
        Ok(Ok(n)) => panic!("{who}: the gateway answered {n} bytes"),
    }
}

async fn tenant_a_gets(pki: &Pki, gateway: &RunningGateway, uid: &str) {
    let mut a = kmip_client(pki, &gateway.addr_text(), "tenant-a").await;
    a.get(uid).await.expect("tenant-a get");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_foreign_client_certificates_are_refused_while_tenant_a_is_served() {
    let pki = Pki::generate();
    let now = OffsetDateTime::now_utc();
    let expired = CertSpec {
        validity: (now - Duration::days(30), now - Duration::days(1)),
        ..tenant_a_spec("mongod.tenant-a.expired")
    };
    write_cert(&pki, &pki.ca, "expired", &expired);
    let foreign_ca = CertificateAuthority::create("Some other CA").expect("foreign CA");
    write_cert(
        &pki,
        &foreign_ca,
        "foreign",
        &tenant_a_spec("mongod.tenant-a.foreign"),
    );

    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start(&pki, &[keysvc.api_addr()]).await;

    // tenant-a keeps one connection open across the refusals.
    let mut a = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    let uid = a
        .create_aes_key(256, Some("bad-certs"))
        .await
        .expect("create");
    a.activate(&uid).await.expect("activate");

    for round in 0..3 {
        assert_refused(&pki, &gateway, "expired", &uid, "CertificateExpired").await;
        assert_refused(&pki, &gateway, "foreign", &uid, "UnknownCA").await;
        a.get(&uid)
            .await
            .unwrap_or_else(|e| panic!("round {round}: tenant-a on its open connection: {e}"));
        tenant_a_gets(&pki, &gateway, &uid).await;
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
}
