//! The generator end to end over real mutual TLS, against a small KMIP server in the test
//! (tokio-rustls, client certificate required) that answers at once: set-up, closed and
//! open loop, `--requests`, errors by Result Reason, idle connections. The full stack is
//! covered by the root crate's tests/loadtest_dev.rs; these run in the crate's own tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kmip::message::payloads::{
    CreateKeyPairResponse, CreateResponse, EncryptResponse, IdResponse, SignResponse,
    SignatureVerifyResponse,
};
use kmip::message::{
    ByteString, RequestMessage, RequestPayload, ResponseBatchItem, ResponseMessage,
    ResponsePayload, UniqueIdentifier,
};
use kmip::spec::{ObjectType, ResultReason, ValidityIndicator};
use kmip::Limits;
use loadtest::config::Config;
use loadtest::report::Report;
use loadtest::LoadtestArgs;
use testkit::certs::{self, TestPki};
use testkit::kmip_client::read_message;
use tokio::io::AsyncWriteExt;

/// Every test is bounded: a hang fails instead of stalling the suite.
const TEST_BUDGET: Duration = Duration::from_secs(30);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadtestArgs,
}

/// The mock's server certificate (`server.pem`) and the generator's client certificate
/// (`client.pem`), of one test CA.
fn pki() -> TestPki {
    let pki = TestPki::new("loadtest test CA");
    pki.issue("server", &certs::localhost_server("server"));
    pki.issue("client", &certs::client("client", &[]));
    pki
}

/// Answers Create with a new identifier, Activate/Get with Success, Encrypt with 48 bytes,
/// and Decrypt with Cryptographic Failure (so a mix has a known error share); Create Key
/// Pair with two new identifiers, Sign with 64 bytes, Signature Verify with Valid when the
/// signature is those 64 bytes.
struct MockServer {
    addr: String,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_server(files: &TestPki) -> MockServer {
    start_slow_server(files, Duration::ZERO).await
}

/// The mock, answering each request after `delay`.
async fn start_slow_server(files: &TestPki, delay: Duration) -> MockServer {
    let acceptor = files.acceptor("server", true);
    let listener = testkit::net::tokio_listener().await;
    let addr = listener.local_addr().expect("addr").to_string();
    let connections = Arc::new(AtomicU64::new(0));
    let counter = connections.clone();
    let next_uid = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counter, next_uid) =
                (acceptor.clone(), counter.clone(), next_uid.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let mut message = Vec::new();
                while read_message(&mut tls, &mut message).await.is_some() {
                    let request =
                        RequestMessage::from_ttlv(&message, &Limits::default()).expect("request");
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let item = answer(&request, &next_uid);
                    let response = ResponseMessage::new(request.version(), vec![item]).to_ttlv();
                    if tls.write_all(&response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    MockServer {
        addr,
        connections,
        task,
    }
}

fn answer(request: &RequestMessage, next_uid: &AtomicU64) -> ResponseBatchItem {
    let uid = |p: &Option<UniqueIdentifier>| p.clone().unwrap_or(UniqueIdentifier::from("?"));
    let payload = match request.batch_items[0].payload.as_ref().expect("typed") {
        RequestPayload::Create(_) => ResponsePayload::Create(CreateResponse {
            object_type: ObjectType::SymmetricKey,
            unique_identifier: UniqueIdentifier::from(format!(
                "key-{}",
                next_uid.fetch_add(1, Ordering::Relaxed)
            )),
            attributes: None,
        }),
        RequestPayload::Activate(r) => ResponsePayload::Activate(IdResponse {
            unique_identifier: uid(&r.unique_identifier),
        }),
        // A Success is all the generator reads of a Get.
        RequestPayload::Get(r) => ResponsePayload::Activate(IdResponse {
            unique_identifier: uid(&r.unique_identifier),
        }),
        RequestPayload::Encrypt(r) => ResponsePayload::Encrypt(EncryptResponse {
            unique_identifier: uid(&r.unique_identifier),
            data: Some(ByteString::from(vec![1u8; 48])),
            iv_counter_nonce: None,
            correlation_value: None,
            authenticated_encryption_tag: None,
        }),
        RequestPayload::CreateKeyPair(_) => {
            let n = next_uid.fetch_add(1, Ordering::Relaxed);
            ResponsePayload::CreateKeyPair(CreateKeyPairResponse {
                private_key_unique_identifier: UniqueIdentifier::from(format!("priv-{n}")),
                public_key_unique_identifier: UniqueIdentifier::from(format!("pub-{n}")),
                private_key_attributes: None,
                public_key_attributes: None,
            })
        }
        RequestPayload::Sign(r) => ResponsePayload::Sign(SignResponse {
            unique_identifier: uid(&r.unique_identifier),
            signature_data: Some(ByteString::from(vec![5u8; 64])),
            correlation_value: None,
        }),
        RequestPayload::SignatureVerify(r) => {
            ResponsePayload::SignatureVerify(SignatureVerifyResponse {
                unique_identifier: uid(&r.unique_identifier),
                validity_indicator: Some(if r.signature_data.as_deref() == Some(&[5u8; 64][..]) {
                    ValidityIndicator::Valid
                } else {
                    ValidityIndicator::Invalid
                }),
                data: None,
                correlation_value: None,
            })
        }
        RequestPayload::Decrypt(_) => {
            return ResponseBatchItem::failure(
                Some(request.batch_items[0].operation),
                ResultReason::CryptographicFailure,
                "mock",
            )
        }
        other => panic!("unexpected {:?}", other.operation()),
    };
    ResponseBatchItem::success(payload)
}

fn config(files: &TestPki, server: &MockServer, extra: &[&str]) -> Config {
    let p = |name: &str| files.text(name);
    let mut argv = vec![
        "loadtest".to_owned(),
        "--addr".into(),
        server.addr.clone(),
        "--ca".into(),
        p("ca.pem"),
        "--cert".into(),
        p("client.pem"),
        "--key".into(),
        p("client-key.pem"),
        "--quiet".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    Config::from_args(&Cli::try_parse_from(argv).expect("flags").args).expect("valid config")
}

async fn run(config: Config) -> Report {
    tokio::time::timeout(TEST_BUDGET, loadtest::runner::run(config))
        .await
        .expect("run in time")
        .expect("run succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_mix_counts_each_operation_and_failures_by_reason() {
    let files = pki();
    let server = start_server(&files).await;
    let report = run(config(
        &files,
        &server,
        &[
            "--op",
            "mix",
            "--connections",
            "4",
            "--duration",
            "1s",
            "--keys",
            "3",
        ],
    ))
    .await;
    let get = &report.by_op["get"];
    let encrypt = &report.by_op["encrypt"];
    let decrypt = &report.by_op["decrypt"];
    assert!(get.ok > 0 && encrypt.ok > 0, "{report:#?}");
    assert_eq!(decrypt.ok, 0);
    // Every Decrypt failed with the server's reason, and nothing else failed.
    assert_eq!(report.errors_by_reason.len(), 1, "{report:#?}");
    assert_eq!(
        report.errors_by_reason["Cryptographic Failure"],
        decrypt.latency.count
    );
    assert_eq!(report.errors, decrypt.latency.count);
    // 3 Gets per Encrypt and per Decrypt in the pattern (± one pattern per connection).
    assert!(get.ok.abs_diff(3 * encrypt.ok) <= 3 * 4, "{report:#?}");
    assert_eq!(report.ok, get.ok + encrypt.ok);
    assert!(report.p50_ms > 0.0 && report.p50_ms <= report.p99_ms);
    assert_eq!(report.duration_s, 1.0);
    // Set-up used its own connections; the load used exactly 4.
    assert_eq!(report.connected, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_sets_up_key_pairs_and_create_key_pair_needs_none() {
    let files = pki();
    let server = start_server(&files).await;
    let report = run(config(
        &files,
        &server,
        &[
            "--op",
            "sign-p256",
            "--connections",
            "2",
            "--requests",
            "100",
            "--keys",
            "3",
        ],
    ))
    .await;
    assert_eq!(report.ok, 100, "{report:#?}");
    assert_eq!(report.errors, 0, "{report:#?}");
    assert_eq!(report.keys, 3);
    assert_eq!(report.by_op["sign-p256"].ok, 100);
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["op"], "sign-p256");

    let report = run(config(
        &files,
        &server,
        &[
            "--op",
            "create-key-pair-rsa2048",
            "--connections",
            "2",
            "--requests",
            "20",
        ],
    ))
    .await;
    assert_eq!(report.ok, 20, "{report:#?}");
    assert_eq!(report.keys, 0);
    assert_eq!(report.by_op["create-key-pair-rsa2048"].ok, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_exactly_the_schedule() {
    let files = pki();
    let server = start_server(&files).await;
    let report = run(config(
        &files,
        &server,
        &[
            "--op",
            "get",
            "--connections",
            "8",
            "--rate",
            "2000",
            "--duration",
            "1s",
        ],
    ))
    .await;
    // 2,000 requests are due in one second at 2,000/s; the mock keeps up.
    assert_eq!(report.ok, 2000, "{report:#?}");
    assert_eq!(report.errors, 0, "{report:#?}");
    assert_eq!(report.ops_per_sec, 2000.0);
    assert_eq!(report.rate, Some(2000));
    let lag = report.send_lag.expect("open loop has a send lag");
    assert_eq!(lag.count, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limit_and_warmup() {
    let files = pki();
    let server = start_server(&files).await;
    let report = run(config(
        &files,
        &server,
        &[
            "--op",
            "create",
            "--connections",
            "3",
            "--requests",
            "250",
            "--duration",
            "30s",
        ],
    ))
    .await;
    assert_eq!(report.ok, 250, "{report:#?}");
    assert!(report.duration_s < 30.0);

    // A warm-up's requests are not counted: with it the same run reports fewer.
    let warm = run(config(
        &files,
        &server,
        &[
            "--op",
            "create",
            "--requests",
            "250",
            "--warmup",
            "10s",
            "--duration",
            "10s",
        ],
    ))
    .await;
    assert_eq!(warm.ok, 0, "{warm:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_connections_and_sends_nothing() {
    let files = pki();
    let server = start_server(&files).await;
    let report = run(config(
        &files,
        &server,
        &["--op", "idle", "--connections", "50", "--duration", "200ms"],
    ))
    .await;
    assert_eq!(report.connected, 50);
    assert_eq!(report.ok, 0);
    assert_eq!(server.connections.load(Ordering::Relaxed), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_is_an_error_not_a_report() {
    let files = pki();
    let server = start_server(&files).await;
    let mut c = config(&files, &server, &["--duration", "1s"]);
    drop(server);
    // Nothing listens on a port released a moment ago (the mock's task is aborted).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    c.target = loadtest::config::Target::Kmip { addr };
    let result = tokio::time::timeout(TEST_BUDGET, loadtest::runner::run(c))
        .await
        .expect("in time");
    assert!(result.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_abandons_requests_the_server_cannot_take() {
    let files = pki();
    // One connection to a server taking 20 ms per request: at most 50/s against 400/s
    // offered, so requests fall more than 1 s behind and are given up, not queued for ever.
    let server = start_slow_server(&files, Duration::from_millis(20)).await;
    let report = run(config(
        &files,
        &server,
        &[
            "--op",
            "get",
            "--rate",
            "400",
            "--duration",
            "3s",
            "--keys",
            "1",
        ],
    ))
    .await;
    assert!(report.ok > 0, "{report:#?}");
    let late = report
        .errors_by_reason
        .get("not sent: more than 1 s behind schedule")
        .copied()
        .unwrap_or_default();
    assert!(late > 0, "{report:#?}");
    // Whatever was sent waited at most ~1 s for a connection.
    let lag = report.send_lag.expect("open loop");
    assert!(lag.max_ms < 1100.0, "{lag:?}");
    // Every due request is accounted for: answered, or counted as not sent.
    assert_eq!(report.ok + report.errors, 1200, "{report:#?}");
}
