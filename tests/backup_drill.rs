//! The restore drill of docs/backup-and-dr.md, on a real PostgreSQL (127.0.0.1:5432):
//! keys created and data encrypted through keysvc's KMIP API (the requests the gateway
//! forwards), `pg_dump` of the database, the database dropped, recreated and restored with
//! `pg_restore`, and then:
//!
//! * with the same root key, every key decrypts what it encrypted before the loss, and the
//!   restored Row-Level Security still keeps tenants apart;
//! * with another root key (same id: a root key that was not escrowed and got regenerated),
//!   keysvc refuses to start, naming the key id (the root-key check recorded in the
//!   database) — the database backup alone is useless, which is why the root key is
//!   escrowed separately.

mod keysvc_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use keysvc_support::harness::*;
use keysvc_support::{migrate, Keysvc};
use kmip::message::payloads::{DecryptRequest, EncryptResponse};
use kmip::message::{ByteString, RequestPayload, ResponsePayload, UniqueIdentifier};
use kmip::spec::{ResultReason, ResultStatus};

/// What one tenant's key encrypted before the backup.
struct Sealed {
    tenant: &'static str,
    uid: String,
    plaintext: Vec<u8>,
    ciphertext: Vec<u8>,
    iv: Option<Vec<u8>>,
}

fn decrypt(sealed: &Sealed) -> RequestPayload {
    RequestPayload::Decrypt(DecryptRequest {
        unique_identifier: Some(UniqueIdentifier::from(sealed.uid.as_str())),
        cryptographic_parameters: None,
        data: Some(ByteString::from(sealed.ciphertext.as_slice())),
        iv_counter_nonce: sealed.iv.as_deref().map(ByteString::from),
        correlation_value: None,
        init_indicator: None,
        final_indicator: None,
        authenticated_encryption_additional_data: None,
        authenticated_encryption_tag: None,
    })
}

fn decrypted(item: &kmip::message::ResponseBatchItem) -> Option<Vec<u8>> {
    match item.payload.as_ref() {
        Some(Ok(ResponsePayload::Decrypt(r))) if item.result_status == ResultStatus::Success => {
            r.data.as_ref().map(|d| d.to_vec())
        }
        _ => None,
    }
}

/// `pg_dump` / `pg_restore` / `psql`-style tool run to success.
fn tool(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} (PostgreSQL client tools installed?): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn admin(statement: &str) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&testkit::postgres::admin_url())
        .await
        .expect("admin connection");
    sqlx::query(statement)
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

fn start(pki: &Pki, db: &PgDatabase, root_key_file: &str) -> Keysvc {
    let mut args = pki.args(&db.app_url());
    let at = args
        .iter()
        .position(|a| a == "--root-key-file")
        .expect("--root-key-file");
    args[at + 1] = pki.path_text(root_key_file);
    Keysvc::spawn(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_database_decrypts_with_the_escrowed_root_key_and_not_with_another() {
    let pki = Pki::generate();
    // A root key with the same id but other bytes: what a team that lost the escrow has.
    pki.write_root_key("other-root.key", "root-a");
    let db = PgDatabase::create(false).await;
    migrate(&db.owner_url(), &db.role);

    // 1. Keys and ciphertexts through the KMIP API, two tenants.
    let mut keysvc = start(&pki, &db, "root.key");
    let mut gateway = Http2::connect(keysvc.api, &pki, Who::Gateway)
        .await
        .expect("gateway connection");
    let mut sealed = Vec::new();
    for tenant in ["tenant-a", "tenant-b"] {
        let uid = success_uid(&gateway.call(tenant, create_aes()).await);
        success_uid(&gateway.call(tenant, activate(&uid)).await);
        let plaintext = format!("{tenant}'s secret, sealed before the backup").into_bytes();
        let item = gateway.call(tenant, encrypt(&uid, &plaintext)).await;
        assert_eq!(item.result_status, ResultStatus::Success, "{item:?}");
        let Some(Ok(ResponsePayload::Encrypt(EncryptResponse {
            data: Some(data),
            iv_counter_nonce,
            ..
        }))) = item.payload
        else {
            panic!("encrypt answer without data: {item:?}");
        };
        assert_ne!(&data[..], plaintext.as_slice());
        sealed.push(Sealed {
            tenant,
            uid,
            plaintext,
            ciphertext: data.to_vec(),
            iv: iv_counter_nonce.map(|iv| iv.to_vec()),
        });
    }
    let status = keysvc.terminate(Duration::from_secs(30));
    assert!(status.success(), "keysvc stops cleanly: {status:?}");

    // 2. Back up, lose the database, restore it (docs/backup-and-dr.md "Restore drill").
    let work = tempfile::tempdir().expect("temporary directory");
    let dump = work.path().join("openkcm.dump");
    let dump_text = dump.display().to_string();
    tool(
        "pg_dump",
        &[
            "--format=custom",
            "--file",
            &dump_text,
            "--dbname",
            &db.owner_url(),
        ],
    );
    assert!(Path::new(&dump).metadata().expect("dump file").len() > 0);
    admin(&format!("DROP DATABASE {} WITH (FORCE)", db.name)).await;
    admin(&format!("CREATE DATABASE {}", db.name)).await;
    tool(
        "pg_restore",
        &["--exit-on-error", "--dbname", &db.owner_url(), &dump_text],
    );

    // 3. The escrowed root key: everything decrypts, tenants still apart.
    let mut keysvc = start(&pki, &db, "root.key");
    let mut gateway = Http2::connect(keysvc.api, &pki, Who::Gateway)
        .await
        .expect("gateway connection");
    for s in &sealed {
        let item = gateway.call(s.tenant, decrypt(s)).await;
        assert_eq!(
            decrypted(&item).as_deref(),
            Some(s.plaintext.as_slice()),
            "{} after restore: {item:?}",
            s.tenant
        );
    }
    let crossed = gateway.call("tenant-b", decrypt(&sealed[0])).await;
    // The harness speaks KMIP 2.1: Object Not Found (1.x says Item Not Found).
    assert!(
        matches!(
            crossed.result_reason,
            Some(ResultReason::ObjectNotFound | ResultReason::ItemNotFound)
        ),
        "tenant-b reached tenant-a's key after the restore: {crossed:?}"
    );
    let status = keysvc.terminate(Duration::from_secs(30));
    assert!(status.success(), "keysvc stops cleanly: {status:?}");

    // 4. Another root key under the same id: keysvc refuses to start (the root-key check
    //    recorded at the first start), naming the id, instead of serving "unreadable".
    let mut args = pki.args(&db.app_url());
    let at = args
        .iter()
        .position(|a| a == "--root-key-file")
        .expect("--root-key-file");
    args[at + 1] = pki.path_text("other-root.key");
    let mut wrong = testkit::process::command(keysvc_support::BIN, &[])
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn keysvc");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = wrong.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = wrong.kill();
            panic!("keysvc started with another root key under the escrowed key's id");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut wrong.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("root key root-a does not match"),
        "the refusal names the key id: {stderr}"
    );
    db.drop().await;
}
