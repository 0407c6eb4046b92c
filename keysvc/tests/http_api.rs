//! The internal API over real sockets: HTTP/2 with mutual TLS on 127.0.0.1 port 0, a
//! generated PKI, the SQLite store in a temporary directory (PostgreSQL where the test is
//! about the database).

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use keysvc::config::ConfigFlags;
use kmip::contract::{KMIP_PATH, TENANT_HEADER};
use kmip::spec::{ResultReason, ResultStatus};
use support::*;

fn sqlite_url(pki: &Pki) -> String {
    format!("sqlite://{}", pki.path("keys.db").display())
}

async fn sqlite_server(pki: &Pki) -> TestServer {
    TestServer::start(pki, &sqlite_url(pki)).await
}

#[tokio::test]
async fn the_gateway_runs_create_get_encrypt_over_http2() {
    let pki = Pki::generate();
    let server = sqlite_server(&pki).await;
    let mut gw = server.gateway(&pki).await;
    assert_eq!(
        gw.alpn.as_deref(),
        Some(&b"h2"[..]),
        "HTTP/2 negotiated by ALPN"
    );

    let uid = success_uid(&gw.call("tenant-a", create_aes()).await);
    assert_eq!(success_uid(&gw.call("tenant-a", get(&uid)).await), uid);
    success_uid(&gw.call("tenant-a", activate(&uid)).await);

    let reply = gw
        .kmip(
            "tenant-a",
            kmip_request(vec![encrypt(&uid, b"attack at dawn")]),
        )
        .await;
    assert_eq!(
        reply.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/octet-stream"[..])
    );
    assert!(
        reply.headers.contains_key("x-request-id"),
        "a request id is generated when the gateway sends none"
    );
    let item = &reply.kmip().batch_items[0];
    assert_eq!(item.result_status, ResultStatus::Success, "{item:?}");
    match item.payload.as_ref() {
        Some(Ok(kmip::message::ResponsePayload::Encrypt(r))) => {
            let data = r.data.as_ref().expect("ciphertext");
            let data: &[u8] = data.as_ref();
            assert!(!data.is_empty() && data != b"attack at dawn");
        }
        other => panic!("not an Encrypt response: {other:?}"),
    }

    // The gateway's request id is echoed.
    let mut headers = tenant_headers("tenant-a");
    headers.push(("x-request-id", "gw-req-42"));
    let reply = gw
        .request("POST", KMIP_PATH, &headers, kmip_request(vec![get(&uid)]))
        .await
        .expect("reply");
    assert_eq!(
        reply.headers.get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"gw-req-42"[..])
    );
    server.server.shutdown().await;
}

/// `client` (a valid certificate of the API's CA) sends a KMIP request with tenant
/// headers and is refused 403 "not an allowed gateway"; returns the reply's text.
async fn refused_as_not_a_gateway(client: &mut Http2) -> String {
    let reply = client
        .request(
            "POST",
            KMIP_PATH,
            &tenant_headers("tenant-a"),
            kmip_request(vec![create_aes()]),
        )
        .await
        .expect("reply");
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(
        reply.text().contains("not an allowed gateway"),
        "{}",
        reply.text()
    );
    reply.text()
}

#[tokio::test]
async fn a_certificate_with_the_gateways_cn_and_dns_name_but_not_its_uri_gets_403() {
    let pki = Pki::generate();
    let server = sqlite_server(&pki).await;
    let mut impostor = Http2::connect(server.api(), &pki, Who::Impostor)
        .await
        .expect("same CA: TLS succeeds");
    refused_as_not_a_gateway(&mut impostor).await;
    server.server.shutdown().await;
}

#[tokio::test]
async fn an_intruder_certificate_gets_403_even_with_tenant_headers() {
    let pki = Pki::generate();
    let server = sqlite_server(&pki).await;
    let mut intruder = Http2::connect(server.api(), &pki, Who::Intruder)
        .await
        .expect("the intruder's certificate is valid: TLS succeeds");
    let text = refused_as_not_a_gateway(&mut intruder).await;
    assert!(text.contains(INTRUDER_ID), "{text}");

    let metrics = intruder
        .request("GET", "/metrics", &[], Vec::new())
        .await
        .expect("reply");
    assert_eq!(
        metrics.status, 403,
        "tenant names in metrics are for the gateway only"
    );
    let health = intruder
        .request("GET", "/health", &[], Vec::new())
        .await
        .expect("reply");
    assert_eq!(health.status, 200);
    server.server.shutdown().await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_in_the_handshake() {
    let pki = Pki::generate();
    let server = sqlite_server(&pki).await;
    // With TLS 1.3 the client finishes its side before the server checks its (missing)
    // certificate, so the refusal may surface at the first request instead.
    let refused = match Http2::connect(server.api(), &pki, Who::NoCertificate).await {
        Err(_) => true,
        Ok(mut conn) => conn
            .request("GET", "/health", &[], Vec::new())
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a connection without a client certificate must not be served"
    );
    server.server.shutdown().await;
}

#[tokio::test]
async fn a_gateway_request_without_tenant_header_is_400() {
    let pki = Pki::generate();
    let server = sqlite_server(&pki).await;
    let mut gw = server.gateway(&pki).await;
    let reply = gw
        .request(
            "POST",
            KMIP_PATH,
            &[("content-type", "application/octet-stream")],
            kmip_request(vec![create_aes()]),
        )
        .await
        .expect("reply");
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains(TENANT_HEADER), "{}", reply.text());

    let reply = gw
        .request(
            "POST",
            KMIP_PATH,
            &[(TENANT_HEADER, "tenant a; drop")],
            kmip_request(vec![create_aes()]),
        )
        .await
        .expect("reply");
    assert_eq!(reply.status, 400, "{}", reply.text());
    server.server.shutdown().await;
}

#[tokio::test]
async fn another_tenants_object_looks_exactly_like_a_missing_one() {
    let pki = Pki::generate();
    let server = sqlite_server(&pki).await;
    let mut gw = server.gateway(&pki).await;
    let uid = success_uid(&gw.call("tenant-a", create_aes()).await);
    let random = "9b1f3c52-2d5e-4f0a-8a7e-0c4b6f2d1e3a";

    let theirs = gw.call("tenant-b", get(&uid)).await;
    let missing = gw.call("tenant-b", get(random)).await;
    for item in [&theirs, &missing] {
        assert_eq!(
            item.result_status,
            ResultStatus::OperationFailed,
            "{item:?}"
        );
        assert_eq!(
            item.result_reason,
            // A 2.1 request: Object Not Found (1.x clients get Item Not Found).
            Some(ResultReason::ObjectNotFound),
            "{item:?}"
        );
    }
    // Same message apart from the identifier the client itself sent.
    assert_eq!(
        theirs
            .result_message
            .as_deref()
            .map(|m| m.replace(&uid, "UID")),
        missing
            .result_message
            .as_deref()
            .map(|m| m.replace(random, "UID")),
    );
    // And tenant A still has it.
    assert_eq!(success_uid(&gw.call("tenant-a", get(&uid)).await), uid);
    server.server.shutdown().await;
}

#[tokio::test]
async fn a_body_that_is_not_ttlv_is_400_and_a_broken_ttlv_gets_a_kmip_error() {
    let pki = Pki::generate();
    let server = sqlite_server(&pki).await;
    let mut gw = server.gateway(&pki).await;
    let reply = gw
        .request(
            "POST",
            KMIP_PATH,
            &tenant_headers("tenant-a"),
            b"{\"operation\": \"Create\"}".to_vec(),
        )
        .await
        .expect("reply");
    assert_eq!(reply.status, 400);
    assert!(
        reply.text().contains("not a KMIP TTLV message"),
        "{}",
        reply.text()
    );

    let empty = gw
        .request("POST", KMIP_PATH, &tenant_headers("tenant-a"), Vec::new())
        .await
        .expect("reply");
    assert_eq!(empty.status, 400);

    // A Structure header over garbage: decodable as far as HTTP cares, so KMIP answers.
    let mut broken = vec![0x42, 0x00, 0x78, 0x01, 0, 0, 0, 16];
    broken.extend_from_slice(&[0xff; 16]);
    let reply = gw.kmip("tenant-a", broken).await;
    let response = reply.kmip();
    assert_eq!(
        response.batch_items[0].result_reason,
        Some(ResultReason::InvalidMessage),
        "{response:?}"
    );
    server.server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_body_is_413_whether_announced_or_streamed() {
    let pki = Pki::generate();
    let server = sqlite_server(&pki).await;
    let limit = server.config.max_body_size;
    assert_eq!(limit, kmip::ttlv::DEFAULT_MAX_MESSAGE_SIZE);
    let mut gw = server.gateway(&pki).await;

    let mut big = vec![0x42, 0x00, 0x78, 0x01];
    big.extend_from_slice(&(limit as u32).to_be_bytes());
    big.resize(limit + 8, 0);
    let reply = gw
        .request("POST", KMIP_PATH, &tenant_headers("tenant-a"), big.clone())
        .await
        .expect("reply");
    assert_eq!(reply.status, 413);
    assert!(
        reply.text().contains("larger than 1048576 bytes"),
        "{}",
        reply.text()
    );

    // No Content-Length: the limit applies while reading.
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = big
        .chunks(64 * 1024)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let streamed = StreamBody::new(futures::stream::iter(chunks)).boxed();
    let reply = gw
        .request_body("POST", KMIP_PATH, &tenant_headers("tenant-a"), streamed)
        .await
        .expect("reply");
    assert_eq!(reply.status, 413, "{}", reply.text());

    // The connection is still good for the next request.
    success_uid(&gw.call("tenant-a", create_aes()).await);
    server.server.shutdown().await;
}

#[tokio::test]
async fn the_management_port_serves_probes_and_metrics_without_a_certificate() {
    let pki = Pki::generate();
    let server = sqlite_server(&pki).await;
    let mut gw = server.gateway(&pki).await;
    let uid = success_uid(&gw.call("tenant-a", create_aes()).await);
    success_uid(&gw.call("tenant-a", activate(&uid)).await);
    for _ in 0..3 {
        let item = gw.call("tenant-a", encrypt(&uid, b"data")).await;
        assert_eq!(item.result_status, ResultStatus::Success);
    }
    let _ = gw.call("tenant-b", get(&uid)).await;

    let (status, body) = http1_get(server.management(), "/health")
        .await
        .expect("health");
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _) = http1_get(server.management(), "/ready")
        .await
        .expect("ready");
    assert_eq!(status, 200);
    let (status, metrics) = http1_get(server.management(), "/metrics")
        .await
        .expect("metrics");
    assert_eq!(status, 200);
    for expected in [
        r#"kmip_requests_total{tenant="tenant-a",operation="Create",result="success"} 1"#,
        r#"kmip_requests_total{tenant="tenant-a",operation="Encrypt",result="success"} 3"#,
        r#"kmip_requests_total{tenant="tenant-b",operation="Get",result="ObjectNotFound"} 1"#,
        "kmip_request_duration_seconds_count 6",
        r#"openkcm_http_requests_total{code="200"}"#,
        "openkcm_keysvc_cache_hits_total",
        "openkcm_keysvc_cache_misses_total",
        "openkcm_keysvc_cache_entries",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from\n{metrics}"
        );
    }
    // The same on the mTLS port, for the gateway.
    let reply = gw
        .request("GET", "/metrics", &[], Vec::new())
        .await
        .expect("metrics");
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains(r#"tenant="tenant-a""#));
    let (status, _) = http1_get(server.management(), KMIP_PATH)
        .await
        .expect("kmip");
    assert_eq!(status, 404, "the management port has no KMIP endpoint");
    server.server.shutdown().await;
}

#[tokio::test]
async fn ready_turns_503_when_the_postgres_database_is_gone() {
    let pki = Pki::generate();
    let db = PgDatabase::create(true).await;
    let server = TestServer::start(&pki, &db.app_url()).await;
    let mut gw = server.gateway(&pki).await;
    success_uid(&gw.call("tenant-a", create_aes()).await);
    let (status, _) = http1_get(server.management(), "/ready")
        .await
        .expect("ready");
    assert_eq!(status, 200);
    let (_, metrics) = http1_get(server.management(), "/metrics")
        .await
        .expect("metrics");
    let pool_line = |state: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "openkcm_keysvc_db_pool_connections{{state=\"{state}\"}}"
                ))
            })
            .map(str::to_owned)
    };
    assert!(
        pool_line("in_use").is_some() && pool_line("idle").is_some(),
        "{metrics}"
    );
    let value = |state: &str| -> i64 {
        pool_line(state)
            .and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
            .expect("a number")
    };
    // Whether the connection is back in the pool yet is a race; that the pool holds it is not.
    assert!(
        value("in_use") + value("idle") >= 1,
        "the pool holds the connection the Create used: {metrics}"
    );

    db.vanish().await;
    eventually(EVENTUALLY, "/ready answers 503", || async {
        let (status, body) = http1_get(server.management(), "/ready").await.ok()?;
        (status == 503).then_some(body)
    })
    .await;
    let (status, _) = http1_get(server.management(), "/health")
        .await
        .expect("health");
    assert_eq!(status, 200, "liveness does not depend on the database");
    let item = gw.call("tenant-a", create_aes()).await;
    assert_eq!(
        item.result_reason,
        Some(ResultReason::GeneralFailure),
        "{item:?}"
    );
    server.server.shutdown().await;
    db.drop().await;
}

#[tokio::test]
async fn database_up_follows_the_postgres_database() {
    let pki = Pki::generate();
    let db = PgDatabase::create(true).await;
    let server = TestServer::start(&pki, &db.app_url()).await;
    let management = server.management();
    let up = || metric(management, "openkcm_keysvc_database_up");
    assert_eq!(up().await, Some(1.0));

    // Nothing asks the database meanwhile: the periodic probe notices on its own.
    let probe_deadline =
        keysvc::health::PROBE_INTERVAL + keysvc::health::PROBE_TIMEOUT + EVENTUALLY;
    db.vanish().await;
    eventually(probe_deadline, "database_up drops to 0", || async {
        (up().await? == 0.0).then_some(())
    })
    .await;
    db.recreate().await;
    eventually(probe_deadline, "database_up back to 1", || async {
        (up().await? == 1.0).then_some(())
    })
    .await;
    server.server.shutdown().await;
    db.drop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns() {
    let pki = Pki::generate();
    let server = sqlite_server(&pki).await;
    let api = server.api();
    let management = server.management();
    let mut gw = server.gateway(&pki).await;
    success_uid(&gw.call("tenant-a", create_aes()).await);
    // An idle HTTP/2 connection is told to go away, so shutdown does not wait for it.
    tokio::time::timeout(std::time::Duration::from_secs(10), server.server.shutdown())
        .await
        .expect("graceful shutdown with an idle connection completes");
    assert!(tokio::net::TcpStream::connect(api).await.is_err());
    assert!(tokio::net::TcpStream::connect(management).await.is_err());
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let pki = Pki::generate();
    let server = sqlite_server(&pki).await;
    let mut gw = server.gateway(&pki).await;
    let request = kmip_request(vec![create_aes()]);
    let (head, tail) = request.split_at(16);
    let (head, tail) = (Bytes::copy_from_slice(head), Bytes::copy_from_slice(tail));

    // A Create whose body arrives in two parts, the second only after shutdown began.
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, Infallible>>();
    tx.unbounded_send(Ok(Frame::data(head)))
        .expect("first part");
    let in_flight = gw
        .start(
            "POST",
            KMIP_PATH,
            &tenant_headers("tenant-a"),
            StreamBody::new(rx).boxed(),
        )
        .await
        .expect("request started");
    let in_flight = tokio::spawn(in_flight);
    // Streams are handled in order: once a later stream on the same connection is
    // answered, the server has accepted the in-flight one.
    let probe = gw
        .request("GET", "/health", &[], Vec::new())
        .await
        .expect("probe");
    assert_eq!(probe.status, 200);

    let api = server.api();
    let shutdown = tokio::spawn(server.server.shutdown());
    eventually(EVENTUALLY, "the listener is closed", || async {
        tokio::net::TcpStream::connect(api)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    tx.unbounded_send(Ok(Frame::data(tail)))
        .expect("second part");
    drop(tx);
    let reply = in_flight
        .await
        .expect("in-flight task")
        .expect("the in-flight request is answered");
    success_uid(&reply.kmip().batch_items[0]);
    tokio::time::timeout(std::time::Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown completes once the request is answered")
        .expect("shutdown task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_concurrency_limit_queues_behind_its_own_requests() {
    let pki = Pki::generate();
    let server = TestServer::start_with(
        &pki,
        ConfigFlags {
            tenant_concurrency: Some("1".into()),
            ..pki.flags(&sqlite_url(&pki))
        },
    )
    .await;
    // Eight connections of tenant-a, each creating keys at once: one executes at a time,
    // the others wait for its slot — and are all served.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut gw = server.gateway(&pki).await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                success_uid(&gw.call("tenant-a", create_aes()).await);
            }
        }));
    }
    // tenant-b has slots of its own.
    let mut b = server.gateway(&pki).await;
    success_uid(&b.call("tenant-b", create_aes()).await);
    for task in tasks {
        task.await.expect("every tenant-a request served");
    }
    let (_, metrics) = http1_get(server.management(), "/metrics")
        .await
        .expect("metrics");
    let queued = metrics
        .lines()
        .find(|l| {
            l.starts_with("openkcm_tenant_throttled_total")
                && l.contains("tenant=\"tenant-a\"")
                && l.contains("reason=\"concurrency\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(queued > 0, "no tenant-a request waited:\n{metrics}");
    assert!(!metrics.contains("tenant=\"tenant-b\",reason=\"concurrency\""));
    server.server.shutdown().await;
}
