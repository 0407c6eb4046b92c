//! `openkcm dev` driven by this repository's Rust KMIP client (`kmip::client::Client`),
//! KMIP 1.4 and 2.0: the tenant flow, tenant isolation and the unrouted certificate.

mod dev_support;

use std::time::Duration;

use dev_support::DevProcess;
use kmip::client::Client;
use kmip::message::attributes::{Attributes, CryptographicParameters, Name};
use kmip::spec::{ResultReason, RevocationReasonCode, Tag};
use kmip::ProtocolVersion;

type TlsClient = Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

const TIMEOUT: Duration = Duration::from_secs(15);

async fn client(dev: &DevProcess, who: &str, version: ProtocolVersion) -> TlsClient {
    let connector = kmip::client::tls::connector_from_pem_files(
        dev.pki("ca.pem"),
        dev.pki(&format!("{who}.pem")),
        dev.pki(&format!("{who}-key.pem")),
    )
    .expect("client connector");
    let mut client = tokio::time::timeout(
        TIMEOUT,
        Client::connect_tls_with_version(
            &dev.kmip_addr.to_string(),
            "localhost",
            &connector,
            version,
        ),
    )
    .await
    .expect("connect in time")
    .unwrap_or_else(|e| panic!("{who} connects: {e}"));
    client.set_timeout(TIMEOUT);
    client
}

/// KMIP 1.x says Item Not Found, 2.x Object Not Found.
fn not_found(err: &kmip::client::ClientError) -> bool {
    matches!(
        err.result_reason(),
        Some(ResultReason::ItemNotFound | ResultReason::ObjectNotFound)
    )
}

fn by_name(name: &str) -> Attributes {
    Attributes::new().with(Tag::NAME, &Name::text(name))
}

async fn flow(dev: &DevProcess, version: ProtocolVersion) {
    let name = format!("rust-dev-flow-{version}");
    let mut a = client(dev, "tenant-a", version).await;
    let uid = a.create_aes_key(256, Some(&name)).await.expect("create");
    a.get(&uid).await.expect("get");
    a.activate(&uid).await.expect("activate");
    let iv = [9u8; 16];
    let plaintext = b"openkcm dev from Rust".to_vec();
    let encrypted = a
        .encrypt(
            &uid,
            &plaintext,
            Some(CryptographicParameters::aes_cbc_pkcs5()),
            Some(&iv),
        )
        .await
        .expect("encrypt");
    let ciphertext = encrypted.data.expect("ciphertext");
    let decrypted = a
        .decrypt(
            &uid,
            &ciphertext.0,
            Some(CryptographicParameters::aes_cbc_pkcs5()),
            Some(&iv),
            None,
        )
        .await
        .expect("decrypt");
    assert_eq!(decrypted.0.as_slice(), plaintext.as_slice(), "{version}");
    assert_eq!(
        a.locate(by_name(&name), None).await.expect("locate"),
        vec![uid.clone()],
        "{version}"
    );

    let mut b = client(dev, "tenant-b", version).await;
    assert!(
        b.locate(by_name(&name), None)
            .await
            .expect("locate")
            .is_empty(),
        "{version}: tenant-b sees tenant-a's key"
    );
    for (op, err) in [
        ("get", b.get(&uid).await.map(drop).expect_err("get")),
        ("activate", b.activate(&uid).await.expect_err("activate")),
        ("destroy", b.destroy(&uid).await.expect_err("destroy")),
    ] {
        assert!(
            not_found(&err),
            "{version} tenant-b {op}: {err} ({:?})",
            err.result_reason()
        );
    }

    let mut stranger = client(dev, "stranger", version).await;
    for (op, err) in [
        (
            "create",
            stranger
                .create_aes_key(256, None)
                .await
                .map(drop)
                .expect_err("create"),
        ),
        ("get", stranger.get(&uid).await.map(drop).expect_err("get")),
        (
            "locate",
            stranger
                .locate(by_name(&name), None)
                .await
                .map(drop)
                .expect_err("locate"),
        ),
    ] {
        assert_eq!(
            err.result_reason(),
            Some(ResultReason::PermissionDenied),
            "{version} stranger {op}: {err}"
        );
    }

    a.revoke(&uid, RevocationReasonCode::CessationOfOperation, None)
        .await
        .expect("revoke");
    a.destroy(&uid).await.expect("destroy");
    let gone = a.get(&uid).await.map(drop).expect_err("destroyed");
    assert!(
        not_found(&gone) || gone.result_reason() == Some(ResultReason::ObjectDestroyed),
        "{version}: {gone}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_against_openkcm_dev_kmip_1_4_and_2_0() {
    let dir = tempfile::Builder::new()
        .prefix("openkcm-dev-rust-")
        .tempdir()
        .expect("temporary directory");
    let mut dev = DevProcess::start(dir.path());
    for version in [ProtocolVersion::V1_4, ProtocolVersion::V2_0] {
        flow(&dev, version).await;
    }
    let (status, took) = dev.terminate();
    eprintln!("openkcm dev stopped {took:?} after SIGTERM");
    assert!(status.success(), "exit after SIGTERM: {status}");
}
