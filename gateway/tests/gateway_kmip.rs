//! The KMIP gateway end to end: real sockets, real certificates, keysvc in-process.

mod support;

use kmip::client::Client;
use kmip::spec::ResultReason;
use support::{kmip_client, start_keysvc, Pki, RunningGateway, EVENTUALLY};
use testkit::kmip_client::aes_cbc_pkcs5;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads until EOF or error; returns the bytes read. Bounded by [`EVENTUALLY`].
async fn read_until_closed(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {EVENTUALLY:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

async fn raw_tls(
    pki: &Pki,
    gateway: &RunningGateway,
    who: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("TCP connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(EVENTUALLY, pki.connector(who).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("TLS handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_served_through_the_gateway_and_isolated() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start(&pki, &[keysvc.api_addr()]).await;

    let mut a = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    let uid = a
        .create_aes_key(256, Some("tenant-a-key"))
        .await
        .expect("create");
    a.activate(&uid).await.expect("activate");
    a.get(&uid).await.expect("get");
    let iv = [7u8; 16];
    let plaintext = b"the quick brown fox".to_vec();
    let encrypted = a
        .encrypt(&uid, &plaintext, Some(aes_cbc_pkcs5()), Some(&iv))
        .await
        .expect("encrypt");
    let ciphertext = encrypted.data.expect("ciphertext");
    assert_ne!(ciphertext.0.as_slice(), plaintext.as_slice());
    let decrypted = a
        .decrypt(&uid, &ciphertext.0, Some(aes_cbc_pkcs5()), Some(&iv), None)
        .await
        .expect("decrypt");
    assert_eq!(decrypted.0.as_slice(), plaintext.as_slice());

    let mut b = kmip_client(&pki, &gateway.addr_text(), "tenant-b").await;
    let err = b
        .get(&uid)
        .await
        .expect_err("tenant-b must not see tenant-a's key");
    assert_eq!(
        err.result_reason(),
        Some(ResultReason::ItemNotFound),
        "{err}"
    );
    // And tenant-a still sees it on its long-lived connection.
    a.get(&uid).await.expect("get again");
    drop(gateway);
    keysvc.shutdown().await;
}

/// Requests and answers of 400 KiB cross the gateway intact, six at once on its one
/// upstream connection (together more than keysvc's HTTP/2 connection window, 1 MiB): the
/// gateway hands each request body to its stream whole, and h2 sends it as keysvc opens the
/// window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_answers_larger_than_the_http2_window_cross_intact() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start(&pki, &[keysvc.api_addr()]).await;
    let mut setup = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    let uid = setup.create_aes_key(256, None).await.expect("create");
    setup.activate(&uid).await.expect("activate");

    let clients = (0..6u8).map(|i| {
        let (pki, addr, uid) = (&pki, gateway.addr_text(), uid.clone());
        async move {
            let mut client = kmip_client(pki, &addr, "tenant-a").await;
            // Different in every client, under the 1 MiB message limit.
            let plaintext: Vec<u8> = (0..400 * 1024).map(|n| (n % 251) as u8 ^ i).collect();
            let iv = [i; 16];
            let ciphertext = client
                .encrypt(&uid, &plaintext, Some(aes_cbc_pkcs5()), Some(&iv))
                .await
                .expect("encrypt 400 KiB")
                .data
                .expect("ciphertext");
            assert!(ciphertext.0.len() > plaintext.len());
            let decrypted = client
                .decrypt(&uid, &ciphertext.0, Some(aes_cbc_pkcs5()), Some(&iv), None)
                .await
                .expect("decrypt 400 KiB");
            assert!(
                decrypted.0.as_slice() == plaintext.as_slice(),
                "client {i}: round trip changed the data"
            );
        }
    });
    futures::future::join_all(clients).await;
    drop(gateway);
    keysvc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_certificate_is_denied_on_every_request() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start(&pki, &[keysvc.api_addr()]).await;

    let mut stranger = kmip_client(&pki, &gateway.addr_text(), "stranger").await;
    for _ in 0..2 {
        let err = stranger
            .create_aes_key(128, None)
            .await
            .expect_err("stranger must be denied");
        assert_eq!(
            err.result_reason(),
            Some(ResultReason::PermissionDenied),
            "{err}"
        );
    }
    let err = stranger.get("anything").await.expect_err("denied");
    assert_eq!(
        err.result_reason(),
        Some(ResultReason::PermissionDenied),
        "{err}"
    );
    assert_eq!(gateway.metrics.denials("no_matching_rule"), 1);
    assert!(gateway
        .metrics
        .encode()
        .contains("openkcm_tenant_denials_total{reason=\"no_matching_rule\"} 1"));
    drop(gateway);
    keysvc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_is_refused() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start(&pki, &[keysvc.api_addr()]).await;

    let tcp = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("TCP connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let connected = tokio::time::timeout(EVENTUALLY, pki.anonymous_connector().connect(name, tcp))
        .await
        .expect("handshake in time");
    // With TLS 1.3 the client may finish its side before the server rejects it; then
    // the first request must fail instead.
    if let Ok(tls) = connected {
        let mut client = Client::new(tls);
        client.set_timeout(EVENTUALLY);
        client
            .discover_versions(&[])
            .await
            .expect_err("a client without a certificate must not be served");
    }
    drop(gateway);
    keysvc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_garbage_messages_close_only_their_connection() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start(&pki, &[keysvc.api_addr()]).await;
    let mut b = kmip_client(&pki, &gateway.addr_text(), "tenant-b").await;

    // A Request Message header announcing 2 GiB: refused before any body is read.
    let mut huge = raw_tls(&pki, &gateway, "tenant-a").await;
    huge.write_all(&[0x42, 0x00, 0x78, 0x01, 0x80, 0x00, 0x00, 0x00])
        .await
        .expect("write header");
    huge.flush().await.expect("flush");
    assert!(read_until_closed(&mut huge).await.is_empty());

    // Not TTLV at all.
    let mut garbage = raw_tls(&pki, &gateway, "tenant-a").await;
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write garbage");
    garbage.flush().await.expect("flush");
    assert!(read_until_closed(&mut garbage).await.is_empty());

    // A well-framed structure that is not a KMIP request: a KMIP error, connection kept.
    let mut odd = Client::new(raw_tls(&pki, &gateway, "tenant-a").await);
    odd.set_timeout(EVENTUALLY);
    let answer = odd
        .send_raw(vec![0x42, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00])
        .await
        .expect("a KMIP answer");
    let response = kmip::message::ResponseMessage::from_ttlv(&answer, &kmip::Limits::default())
        .expect("TTLV response");
    assert!(response.batch_items[0].result_reason.is_some());

    // Other tenants keep being served.
    b.discover_versions(&[])
        .await
        .expect("tenant-b still served");
    let mut a = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    a.create_aes_key(128, None)
        .await
        .expect("tenant-a still served");
    drop(gateway);
    keysvc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_replica_is_skipped_before_sending() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    // Nothing listens on the first upstream: every request must still succeed.
    let dead = testkit::net::free_addr();
    let gateway = RunningGateway::start(&pki, &[dead, keysvc.api_addr()]).await;
    let mut a = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    for _ in 0..4 {
        a.create_aes_key(128, None)
            .await
            .expect("served by the live replica");
    }
    drop(gateway);
    keysvc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_replica_is_a_kmip_general_failure() {
    let pki = Pki::generate();
    let gateway = RunningGateway::start(&pki, &[testkit::net::free_addr()]).await;
    let mut a = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    let err = a
        .create_aes_key(128, None)
        .await
        .expect_err("nothing can serve the request");
    assert_eq!(
        err.result_reason(),
        Some(ResultReason::GeneralFailure),
        "{err}"
    );
    // The connection survives: the next request gets the same answer.
    let err = a.get("k").await.expect_err("still nothing");
    assert_eq!(
        err.result_reason(),
        Some(ResultReason::GeneralFailure),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_reached_a_replica_is_never_sent_to_another() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let broken = support::start_failing_replica(&pki).await;
    // Round robin starts at the broken replica and alternates per request.
    let gateway = RunningGateway::start(&pki, &[broken, keysvc.api_addr()]).await;
    let mut a = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;

    // 1st request, broken replica first: Create is not retried.
    let err = a
        .create_aes_key(128, None)
        .await
        .expect_err("Create must not be replayed");
    assert_eq!(
        err.result_reason(),
        Some(ResultReason::GeneralFailure),
        "{err}"
    );
    assert!(err.to_string().contains("may or may not"), "{err}");
    // 2nd request starts at keysvc.
    let uid = a.create_aes_key(128, None).await.expect("create");
    // 3rd request, broken replica first again: a read-only Get is not replayed either (a
    // request that crashed one replica must not be handed to the next).
    let err = a.get(&uid).await.expect_err("Get must not be replayed");
    assert!(err.to_string().contains("may or may not"), "{err}");
    // 4th starts at keysvc.
    a.get(&uid).await.expect("served by the live replica");
    drop(gateway);
    keysvc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_retried_on_another_replica_for_any_operation() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let refusing =
        support::start_misbehaving_replica(&pki, support::Misbehaviour::RefusesStreams).await;
    let gateway = RunningGateway::start(&pki, &[refusing, keysvc.api_addr()]).await;
    let mut a = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    // Whichever replica each request starts at, a stream refused before processing is
    // provably not applied, so even Create goes on to the live replica.
    for _ in 0..4 {
        let uid = a
            .create_aes_key(128, None)
            .await
            .expect("a refused Create is retried");
        a.get(&uid).await.expect("and so is a Get");
    }
    drop(gateway);
    keysvc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start_with(&pki, &[keysvc.api_addr()], |f| {
        f.idle_timeout = Some("1s".into())
    })
    .await;
    let mut a = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    a.discover_versions(&[]).await.expect("served");
    // No request for longer than the idle timeout: the gateway closes the connection.
    let mut idle = raw_tls(&pki, &gateway, "tenant-a").await;
    assert!(read_until_closed(&mut idle).await.is_empty());
    drop(gateway);
    keysvc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_requests_beyond_its_upstream_slots_wait_in_the_gateway() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start_with(&pki, &[keysvc.api_addr()], |f| {
        f.tenant_requests = Some("1".into())
    })
    .await;
    // Eight tenant-a connections creating keys at once: one request in flight to keysvc
    // at a time, the others queued in the gateway — and all served.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut a = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                a.create_aes_key(128, None).await.expect("served");
            }
        }));
    }
    let mut b = kmip_client(&pki, &gateway.addr_text(), "tenant-b").await;
    b.create_aes_key(128, None).await.expect("tenant-b served");
    for task in tasks {
        task.await.expect("tenant-a task");
    }
    assert!(gateway.metrics.throttled().count("tenant-a", "requests") > 0);
    assert_eq!(gateway.metrics.throttled().count("tenant-b", "requests"), 0);
    drop(gateway);
    keysvc.shutdown().await;
}
