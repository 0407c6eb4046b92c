//! Certificate rotation without a restart, over real sockets: keysvc's server certificate,
//! key and client CA live in a directory laid out like a Kubernetes Secret volume (a
//! `live` symlink swapped atomically to a new version directory), and are replaced while
//! keysvc serves.

mod support;

use std::path::PathBuf;

use keysvc::config::ConfigFlags;
use rcgen::ExtendedKeyUsagePurpose;
use rustls::pki_types::CertificateDer;
use support::*;
use x509_cert::der::Decode;

const OK_RELOADS: &str = r#"openkcm_tls_reloads_total{cert="server",result="ok"}"#;
const FAILED_RELOADS: &str = r#"openkcm_tls_reloads_total{cert="server",result="failed"}"#;
const CA_OK_RELOADS: &str = r#"openkcm_tls_reloads_total{cert="client_ca",result="ok"}"#;
const EXPIRY: &str = r#"openkcm_certificate_expiry_timestamp_seconds{cert="server"}"#;

/// keysvc's TLS files as the kubelet writes a Secret volume: each version in its own
/// directory, `live` pointing at the current one, replaced by one rename.
struct SecretVolume {
    root: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(pki: &Pki) -> Self {
        let root = pki.path("tls");
        std::fs::create_dir(&root).expect("volume directory");
        let mut volume = Self { root, version: 0 };
        let read = |name: &str| std::fs::read_to_string(pki.path(name)).expect(name);
        volume.publish(&[
            ("server.pem", &read("server.pem")),
            ("server-key.pem", &read("server-key.pem")),
            ("ca.pem", &read("ca.pem")),
        ]);
        volume
    }

    fn live(&self, name: &str) -> String {
        self.root.join("live").join(name).display().to_string()
    }

    /// The flags of `pki.flags`, with the TLS files read through `live`.
    fn flags(&self, pki: &Pki, database: &str) -> ConfigFlags {
        ConfigFlags {
            tls_cert: Some(self.live("server.pem")),
            tls_key: Some(self.live("server-key.pem")),
            tls_client_ca: Some(self.live("ca.pem")),
            ..pki.flags(database)
        }
    }

    /// A new version: the current files with `changes` applied, made live atomically.
    fn publish(&mut self, changes: &[(&str, &str)]) {
        self.version += 1;
        let next = self.root.join(format!("v{}", self.version));
        std::fs::create_dir(&next).expect("version directory");
        if let Ok(current) = std::fs::read_dir(self.root.join("live")) {
            for entry in current {
                let entry = entry.expect("directory entry");
                std::fs::copy(entry.path(), next.join(entry.file_name())).expect("copy");
            }
        }
        for (name, content) in changes {
            std::fs::write(next.join(name), content).expect("write");
        }
        let staged = self.root.join("live.next");
        std::os::unix::fs::symlink(&next, &staged).expect("symlink");
        std::fs::rename(&staged, self.root.join("live")).expect("swap");
    }
}

fn sqlite_url(pki: &Pki) -> String {
    format!("sqlite://{}", pki.path("keys.db").display())
}

fn serial(cert: &CertificateDer<'_>) -> Vec<u8> {
    x509_cert::Certificate::from_der(cert.as_ref())
        .expect("X.509 certificate")
        .tbs_certificate
        .serial_number
        .as_bytes()
        .to_vec()
}

fn presented_serial(conn: &Http2) -> Vec<u8> {
    serial(
        conn.server_certificate
            .as_ref()
            .expect("the server presented a certificate"),
    )
}

/// Whether a client with `config` is kept from being served.
async fn refused(server: &TestServer, config: rustls::ClientConfig) -> bool {
    // With TLS 1.3 the client finishes its side before the server checks its certificate,
    // so the refusal may surface at the first request instead.
    match Http2::connect_with(server.api(), config).await {
        Err(_) => true,
        Ok(mut conn) => conn
            .request("GET", "/health", &[], Vec::new())
            .await
            .is_err(),
    }
}

#[tokio::test]
async fn a_renewed_server_certificate_serves_new_handshakes_while_open_connections_go_on() {
    let pki = Pki::generate();
    let mut volume = SecretVolume::new(&pki);
    let server = TestServer::start_with(&pki, volume.flags(&pki, &sqlite_url(&pki))).await;
    let mut open = server.gateway(&pki).await;
    assert_eq!(presented_serial(&open), serial(&pki.server.cert_der));
    success_uid(&open.call("tenant-a", create_aes()).await);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    let not_after = now.as_secs() + 60 * 86_400;
    let renewed = pki.ca.issue_until(
        "keysvc",
        &["localhost", "127.0.0.1"],
        &[],
        ExtendedKeyUsagePurpose::ServerAuth,
        Some(not_after),
    );
    assert_ne!(serial(&renewed.cert_der), serial(&pki.server.cert_der));
    volume.publish(&[
        ("server.pem", &renewed.cert_pem),
        ("server-key.pem", &renewed.key_pem),
    ]);

    let mut fresh = eventually(
        EVENTUALLY,
        "a new handshake sees the renewed certificate",
        || async {
            let conn = server.gateway(&pki).await;
            (presented_serial(&conn) == serial(&renewed.cert_der)).then_some(conn)
        },
    )
    .await;
    success_uid(&fresh.call("tenant-a", create_aes()).await);
    // The connection from before keeps its handshake and goes on serving.
    assert_eq!(presented_serial(&open), serial(&pki.server.cert_der));
    success_uid(&open.call("tenant-a", create_aes()).await);

    let management = server.management();
    assert_eq!(metric(management, EXPIRY).await, Some(not_after as f64));
    assert_eq!(metric(management, OK_RELOADS).await, Some(1.0));
    assert_eq!(metric(management, FAILED_RELOADS).await, Some(0.0));
    server.server.shutdown().await;
}

#[tokio::test]
async fn a_broken_certificate_file_keeps_the_certificate_in_force() {
    let pki = Pki::generate();
    let mut volume = SecretVolume::new(&pki);
    let server = TestServer::start_with(&pki, volume.flags(&pki, &sqlite_url(&pki))).await;
    let management = server.management();
    let expiry = metric(management, EXPIRY).await.expect("expiry exported");
    assert!(expiry > 0.0);

    volume.publish(&[(
        "server.pem",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )]);
    eventually(EVENTUALLY, "the failed reload is counted", || async {
        (metric(management, FAILED_RELOADS).await? == 1.0).then_some(())
    })
    .await;

    let mut gw = server.gateway(&pki).await;
    assert_eq!(
        presented_serial(&gw),
        serial(&pki.server.cert_der),
        "the certificate in force stays"
    );
    success_uid(&gw.call("tenant-a", create_aes()).await);
    assert_eq!(metric(management, OK_RELOADS).await, Some(0.0));
    assert_eq!(metric(management, EXPIRY).await, Some(expiry));
    server.server.shutdown().await;
}

#[tokio::test]
async fn a_replaced_client_ca_admits_the_new_gateway_certificate_and_refuses_the_old() {
    let pki = Pki::generate();
    let mut volume = SecretVolume::new(&pki);
    let server = TestServer::start_with(&pki, volume.flags(&pki, &sqlite_url(&pki))).await;
    let new_ca = Ca::new("OpenKCM internal test CA, next generation");
    let new_gateway = new_ca.issue(
        "openkcm-gateway",
        &["gateway.openkcm-system.svc"],
        &[GATEWAY_ID],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    assert!(
        refused(&server, pki.client_config_as(Some(&new_gateway))).await,
        "a CA not in the bundle yet"
    );
    // Clones share the client's session cache: a later connection would try to resume.
    let old_gateway = pki.client_config_as(Some(&pki.gateway));
    let mut open = Http2::connect_with(server.api(), old_gateway.clone())
        .await
        .expect("the old gateway connects");
    success_uid(&open.call("tenant-a", create_aes()).await);

    volume.publish(&[("ca.pem", &new_ca.cert_pem())]);
    let mut admitted = eventually(EVENTUALLY, "the new CA's gateway is admitted", || async {
        let mut conn = Http2::connect_with(server.api(), pki.client_config_as(Some(&new_gateway)))
            .await
            .ok()?;
        let health = conn.request("GET", "/health", &[], Vec::new()).await.ok()?;
        (health.status == 200).then_some(conn)
    })
    .await;
    // Still a gateway by the allow-list (same SPIFFE id), so it may speak for tenants.
    success_uid(&admitted.call("tenant-a", create_aes()).await);
    assert!(
        refused(&server, old_gateway).await,
        "the old CA's certificate is refused in new handshakes, resumption included"
    );
    // The connection verified under the old bundle keeps its handshake.
    success_uid(&open.call("tenant-a", create_aes()).await);
    assert_eq!(metric(server.management(), CA_OK_RELOADS).await, Some(1.0));
    server.server.shutdown().await;
}
