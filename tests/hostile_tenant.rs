//! A hostile tenant against the production pieces as processes (two keysvc replicas on
//! one PostgreSQL database behind one gateway): requests built to make a replica allocate
//! gigabytes get KMIP errors, neither replica grows by more than 64 MiB or dies, and
//! another tenant is served throughout.

mod dev_support;
mod keysvc_support;
mod stack_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kmip::message::payloads::{GetRequest, RngRetrieveRequest};
use kmip::message::{
    Attributes, ByteString, ManagedObject, OpaqueObject, RawEnum, RequestMessage, RequestPayload,
};
use kmip::spec::{BatchErrorContinuationOption, ResultReason, ResultStatus};
use kmip::ProtocolVersion;
use stack_support::{peak_rss, Stack};

/// How much a replica may grow while under attack.
const GROWTH_LIMIT: u64 = 64 * 1024 * 1024;

fn opaque(len: usize) -> ManagedObject {
    ManagedObject::OpaqueObject(OpaqueObject {
        opaque_data_type: RawEnum(0x8000_0001),
        opaque_data_value: ByteString::new(vec![0x5a; len]),
    })
}

fn batch(items: Vec<RequestPayload>) -> RequestMessage {
    let mut m = RequestMessage::new(ProtocolVersion::V2_1, items);
    m.header.batch_error_continuation_option = Some(BatchErrorContinuationOption::Continue);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplifying_requests_cost_the_attacker_not_the_replicas_or_other_tenants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = Stack::start(dir.path(), 2).await;
    let mut attacker = stack.client("tenant-a").await.expect("tenant-a");

    // The seen attack registered a 900 KB object: refused now, whatever fits a request.
    let err = attacker
        .register(opaque(900_000), Attributes::new())
        .await
        .expect_err("a 900 KB object");
    assert_eq!(
        err.result_reason(),
        Some(ResultReason::InvalidField),
        "{err}"
    );
    // The largest object that is accepted, for the amplification below.
    let uid = attacker
        .register(opaque(250_000), Attributes::new())
        .await
        .expect("a 250 KB object");
    attacker.get(&uid).await.expect("a single Get of it");

    let before: Vec<u64> = stack.replicas.iter().map(|r| peak_rss(r.pid())).collect();

    // Another tenant works throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut victim = stack.client("tenant-b").await.expect("tenant-b");
    let quiet = {
        let (stop, served) = (stop.clone(), served.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let outcome = async {
                    let uid = victim.create_aes_key(256, None).await?;
                    victim.get(&uid).await
                };
                match outcome.await {
                    Ok(_) => drop(served.fetch_add(1, Ordering::Relaxed)),
                    Err(e) => failures.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failures
        })
    };

    for _ in 0..3 {
        // 256 Gets of the 250 KB object (64 MB of answer, the gateway had allowed 16 MiB):
        // the first few are served, the rest answer Response Too Large, unexecuted.
        let gets = (0..256)
            .map(|_| RequestPayload::Get(GetRequest::of(&uid)))
            .collect();
        let r = attacker.send(&batch(gets)).await.expect("an answer");
        assert_eq!(r.batch_items.len(), 256);
        let too_large = r
            .batch_items
            .iter()
            .filter(|i| i.result_reason == Some(ResultReason::ResponseTooLarge))
            .count();
        let ok = r
            .batch_items
            .iter()
            .filter(|i| i.result_status == ResultStatus::Success)
            .count();
        assert!(
            ok <= 4 && too_large + ok == 256,
            "{ok} served, {too_large} refused"
        );

        // 20,000 items of 32 bytes each (the ID placeholder): a 640 KB request.
        let many = (0..20_000)
            .map(|_| RequestPayload::Get(GetRequest::default()))
            .collect();
        let r = attacker.send(&batch(many)).await.expect("an answer");
        assert_eq!(r.batch_items.len(), 1);
        assert_eq!(
            r.batch_items[0].result_reason,
            Some(ResultReason::InvalidMessage)
        );

        // Many large RNG Retrieves.
        let random = (0..256)
            .map(|_| RequestPayload::RngRetrieve(RngRetrieveRequest { data_length: 4096 }))
            .collect();
        let r = attacker.send(&batch(random)).await.expect("an answer");
        assert!(r
            .batch_items
            .iter()
            .any(|i| i.result_status == ResultStatus::Success));
    }

    stop.store(true, Ordering::Relaxed);
    let failures = quiet.await.expect("the quiet tenant's task");
    assert!(
        failures.is_empty(),
        "tenant-b failed during the attack: {failures:?}"
    );
    assert!(served.load(Ordering::Relaxed) > 0, "tenant-b was served");

    for (replica, before) in stack.replicas.iter().zip(before) {
        let after = peak_rss(replica.pid());
        eprintln!(
            "replica {}: peak RSS {} MiB → {} MiB",
            replica.pid(),
            before >> 20,
            after >> 20
        );
        assert!(
            after.saturating_sub(before) <= GROWTH_LIMIT,
            "replica {} grew from {} MiB to {} MiB",
            replica.pid(),
            before >> 20,
            after >> 20
        );
    }
    // Both replicas are still there and serving.
    let mut after = stack.client("tenant-a").await.expect("tenant-a again");
    for _ in 0..4 {
        after.get(&uid).await.expect("served after the attack");
    }
}

/// The gateway→keysvc hop has a CA of its own: a tenant's certificate — even one carrying
/// the gateway's CN — is refused by keysvc's TLS layer, while the gateway's passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keysvc_refuses_tenant_certificates_on_its_api() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().expect("tempdir");
    let stack = Stack::start(dir.path(), 1).await;
    let files = &stack.files;
    for who in ["tenant-a", "stranger"] {
        let connector = kmip::client::tls::connector_from_pem_files(
            files.pki("internal/ca.pem"),
            files.pki(&format!("{who}.pem")),
            files.pki(&format!("{who}-key.pem")),
        )
        .expect("connector");
        let tcp = tokio::net::TcpStream::connect(stack.replicas[0].api)
            .await
            .expect("TCP");
        let name = rustls::pki_types::ServerName::try_from("keysvc").expect("name");
        let refused = match connector.connect(name, tcp).await {
            Err(e) => e.to_string(),
            // TLS 1.3: the server's verdict arrives as an alert at the first read.
            Ok(mut tls) => {
                let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                let mut buf = [0u8; 64];
                match tls.read(&mut buf).await {
                    Err(e) => e.to_string(),
                    Ok(n) => panic!("{who}: keysvc answered {n} bytes"),
                }
            }
        };
        assert!(
            refused.contains("UnknownCA") || refused.contains("BadCertificate"),
            "{who}: {refused}"
        );
    }
    // Through the gateway (its upstream certificate is the internal CA's), tenant-a works.
    let mut a = stack.client("tenant-a").await.expect("tenant-a");
    a.create_aes_key(256, None).await.expect("served");
}
