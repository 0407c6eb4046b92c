//! The KMIP client over real mutual TLS, against a small tokio-rustls server in the test
//! that requires client certificates and answers with hand-built responses.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use kmip::client::{tls, Client, ClientError};
use kmip::framing::KmipCodec;
use kmip::message::payloads::{DiscoverVersionsResponse, QueryResponse, RngRetrieveResponse};
use kmip::message::{
    ByteString, RequestMessage, RequestPayload, ResponseBatchItem, ResponseMessage,
    ResponsePayload, UniqueIdentifier,
};
use kmip::spec::{ObjectType, Operation, QueryFunction, ResultReason, ResultStatus};
use kmip::{Limits, ProtocolVersion};
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use support::{Ca, Leaf, Pki};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

/// Every test is bounded: a hang fails the test instead of stalling the suite.
const TEST_BUDGET: Duration = Duration::from_secs(20);

/// What the test server does with a request once it has read it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Behaviour {
    /// Answers (see [`answer`]).
    Answer,
    /// Keeps reading and never answers.
    Silent,
    /// Drops the connection without a TLS close_notify.
    DropAfterRead,
    /// Sends close_notify and closes the connection.
    ShutdownAfterRead,
    /// Answers the first request only after [`SLOW_FIRST_ANSWER`], the others at once.
    SlowFirstAnswer,
}

const SLOW_FIRST_ANSWER: Duration = Duration::from_millis(600);

/// A tokio-rustls KMIP server on 127.0.0.1:0 that requires a client certificate.
struct TestServer {
    addr: SocketAddr,
    /// The end-entity certificate of each client that completed the handshake.
    peer_certs: Arc<Mutex<Vec<CertificateDer<'static>>>>,
    /// Server-side handshake failures.
    handshake_errors: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start(cert: &Leaf, client_ca: &Ca, behaviour: Behaviour) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(client_ca.cert_der()).expect("client CA");
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .expect("client certificate verifier");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.cert_der.clone()], cert.key())
            .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let peer_certs = Arc::new(Mutex::new(Vec::new()));
        let handshake_errors = Arc::new(Mutex::new(Vec::new()));
        let (certs, errors) = (peer_certs.clone(), handshake_errors.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, certs, errors) = (acceptor.clone(), certs.clone(), errors.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            errors.lock().unwrap().push(e.to_string());
                            return;
                        }
                    };
                    if let Some(chain) = tls.get_ref().1.peer_certificates() {
                        certs.lock().unwrap().push(chain[0].clone().into_owned());
                    }
                    serve(tls, behaviour).await;
                });
            }
        });
        Self {
            addr,
            peer_certs,
            handshake_errors,
            task,
        }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }
}

async fn serve(tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>, behaviour: Behaviour) {
    let mut framed = Framed::new(tls, KmipCodec::default());
    let mut answered = 0;
    while let Some(frame) = framed.next().await {
        let Ok(frame) = frame else { return };
        let response = match RequestMessage::from_ttlv(&frame, &Limits::default()) {
            Ok(request) => answer(&request),
            Err(e) => ResponseMessage::new(
                ProtocolVersion::V1_0,
                vec![ResponseBatchItem::failure(
                    None,
                    e.result_reason(),
                    e.to_string(),
                )],
            ),
        };
        match behaviour {
            Behaviour::Answer => {
                if framed.send(response.to_ttlv()).await.is_err() {
                    return;
                }
            }
            Behaviour::SlowFirstAnswer => {
                if answered == 0 {
                    tokio::time::sleep(SLOW_FIRST_ANSWER).await;
                }
                if framed.send(response.to_ttlv()).await.is_err() {
                    return;
                }
            }
            Behaviour::Silent => {}
            Behaviour::DropAfterRead => return,
            Behaviour::ShutdownAfterRead => {
                let mut tls = framed.into_inner();
                let _ = tls.shutdown().await;
                return;
            }
        }
        answered += 1;
    }
}

/// The operations the test server answers in Query.
const OPERATIONS: [Operation; 4] = [
    Operation::DiscoverVersions,
    Operation::Query,
    Operation::Get,
    Operation::RngRetrieve,
];

/// Hand-built answers: DiscoverVersions echoes the versions asked for (all when none),
/// Query lists [`OPERATIONS`], Get of `missing` fails with Item Not Found, RNG Retrieve
/// returns `length` bytes of value `length % 256`, everything else is not supported.
fn answer(request: &RequestMessage) -> ResponseMessage {
    let items = request
        .batch_items
        .iter()
        .map(|item| match &item.payload {
            Ok(RequestPayload::DiscoverVersions(r)) => {
                let protocol_versions = if r.protocol_versions.is_empty() {
                    ProtocolVersion::SUPPORTED.to_vec()
                } else {
                    r.protocol_versions.clone()
                };
                ResponseBatchItem::success(ResponsePayload::DiscoverVersions(
                    DiscoverVersionsResponse { protocol_versions },
                ))
            }
            Ok(RequestPayload::Query(_)) => {
                ResponseBatchItem::success(ResponsePayload::Query(QueryResponse {
                    operations: OPERATIONS.to_vec(),
                    object_types: vec![ObjectType::SymmetricKey],
                    vendor_identification: Some("OpenKCM test server".into()),
                    ..QueryResponse::default()
                }))
            }
            Ok(RequestPayload::Get(r))
                if r.unique_identifier == Some(UniqueIdentifier::from("missing")) =>
            {
                ResponseBatchItem::failure(
                    Some(item.operation),
                    ResultReason::ItemNotFound,
                    "no object with identifier \"missing\"",
                )
            }
            Ok(RequestPayload::RngRetrieve(r)) => {
                let len = r.data_length.max(0) as usize;
                ResponseBatchItem::success(ResponsePayload::RngRetrieve(RngRetrieveResponse {
                    data: ByteString::new(vec![(len % 256) as u8; len]),
                }))
            }
            _ => ResponseBatchItem::failure(
                Some(item.operation),
                ResultReason::OperationNotSupported,
                "not implemented by the test server",
            ),
        })
        .collect();
    ResponseMessage::new(request.version(), items)
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_BUDGET, f)
        .await
        .expect("test exceeded its time budget")
}

#[tokio::test]
async fn discover_versions_and_query_round_trip_over_mutual_tls() {
    bounded(async {
        let pki = Pki::generate();
        let server = TestServer::start(&pki.server, &pki.ca, Behaviour::Answer).await;
        let connector = pki.connector();

        let mut client = Client::connect_tls(&server.addr(), "localhost", &connector)
            .await
            .expect("mTLS connection by DNS name");
        assert_eq!(client.version(), ProtocolVersion::V1_4);
        let asked = [ProtocolVersion::V1_4, ProtocolVersion::V1_2];
        assert_eq!(client.discover_versions(&asked).await.unwrap(), asked);
        assert_eq!(
            client.discover_versions(&[]).await.unwrap(),
            ProtocolVersion::SUPPORTED
        );
        let query = client
            .query(&[QueryFunction::QueryOperations, QueryFunction::QueryObjects])
            .await
            .unwrap();
        assert_eq!(query.operations, OPERATIONS);
        assert_eq!(query.object_types, [ObjectType::SymmetricKey]);
        assert_eq!(
            query.vendor_identification.as_deref(),
            Some("OpenKCM test server")
        );

        // The certificate also names 127.0.0.1: connecting by IP address works too.
        let mut by_ip = Client::connect_tls(&server.addr(), "127.0.0.1", &connector)
            .await
            .expect("mTLS connection by IP address");
        assert_eq!(
            by_ip
                .discover_versions(&[ProtocolVersion::V1_2])
                .await
                .unwrap(),
            [ProtocolVersion::V1_2]
        );

        // The server saw our client certificate on both connections.
        let seen = server.peer_certs.lock().unwrap().clone();
        assert_eq!(
            seen,
            [pki.client.cert_der.clone(), pki.client.cert_der.clone()]
        );
        assert!(server.handshake_errors.lock().unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_failed_operation_is_an_operation_error_with_its_reason_and_message() {
    bounded(async {
        let pki = Pki::generate();
        let server = TestServer::start(&pki.server, &pki.ca, Behaviour::Answer).await;
        let mut client = Client::connect_tls(&server.addr(), "localhost", &pki.connector())
            .await
            .unwrap();

        let err = client
            .get("missing")
            .await
            .expect_err("Get of a missing object");
        assert_eq!(
            err.result_reason(),
            Some(ResultReason::ItemNotFound),
            "{err:?}"
        );
        match &err {
            ClientError::Operation {
                status, message, ..
            } => {
                assert_eq!(*status, ResultStatus::OperationFailed);
                assert_eq!(message, "no object with identifier \"missing\"");
            }
            other => panic!("expected an Operation error, got {other:?}"),
        }
        assert!(
            err.to_string().contains("no object with identifier"),
            "{err}"
        );

        // An operation the server does not support is reported the same way...
        let err = client
            .activate("k1")
            .await
            .expect_err("Activate is not supported");
        assert_eq!(
            err.result_reason(),
            Some(ResultReason::OperationNotSupported)
        );

        // ... and neither failure broke the connection.
        assert_eq!(
            client
                .discover_versions(&[ProtocolVersion::V1_4])
                .await
                .unwrap(),
            [ProtocolVersion::V1_4]
        );
    })
    .await;
}

fn assert_handshake_error(result: Result<impl std::fmt::Debug, ClientError>, expected: &str) {
    match result {
        Err(ClientError::Io(e)) => {
            let text = e.to_string();
            assert!(
                text.contains(expected),
                "handshake error {text:?} should mention {expected:?}"
            );
        }
        other => panic!("expected a TLS handshake (I/O) error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_client_refuses_a_server_certificate_for_another_name() {
    bounded(async {
        let pki = Pki::generate();
        let server = TestServer::start(&pki.server, &pki.ca, Behaviour::Answer).await;
        let result = Client::connect_tls(&server.addr(), "kms.example.com", &pki.connector()).await;
        assert_handshake_error(result, "certificate not valid for name");

        let result = Client::connect_tls(&server.addr(), "127.0.0.2", &pki.connector()).await;
        assert_handshake_error(result, "certificate not valid for name");

        let result = Client::connect_tls(&server.addr(), "not a name", &pki.connector()).await;
        assert!(
            matches!(result, Err(ClientError::Tls(ref m)) if m.contains("not a name")),
            "an invalid server name is a configuration error: {result:?}"
        );
        assert!(server.peer_certs.lock().unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn the_client_refuses_a_server_from_another_ca() {
    bounded(async {
        let pki = Pki::generate();
        let other_ca = Ca::new("Some other CA");
        let impostor = other_ca.issue_server("localhost", &["localhost", "127.0.0.1"]);
        let server = TestServer::start(&impostor, &pki.ca, Behaviour::Answer).await;
        let result = Client::connect_tls(&server.addr(), "localhost", &pki.connector()).await;
        assert_handshake_error(result, "UnknownIssuer");
        assert!(server.peer_certs.lock().unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn the_server_refuses_a_client_from_another_ca() {
    bounded(async {
        let pki = Pki::generate();
        let server = TestServer::start(&pki.server, &pki.ca, Behaviour::Answer).await;
        let other_ca = Ca::new("Some other CA");
        let stranger = other_ca.issue_client("stranger");
        let connector = tls::connector(
            vec![pki.ca.cert_der()],
            vec![stranger.cert_der.clone()],
            stranger.key(),
        )
        .unwrap();
        // With TLS 1.3 the client finishes its side of the handshake before the server
        // checks the client certificate, so the refusal may only arrive with the first
        // request; either way it is an error, and not a timeout.
        let outcome = async {
            let mut client = Client::connect_tls(&server.addr(), "localhost", &connector).await?;
            client.set_timeout(Duration::from_secs(5));
            client.discover_versions(&[]).await
        }
        .await;
        match outcome {
            Err(ClientError::Io(_) | ClientError::Frame(_) | ClientError::Closed) => {}
            other => panic!("expected the connection to be refused, got {other:?}"),
        }
        assert!(server.peer_certs.lock().unwrap().is_empty());
        // The server task records its side of the failure right after sending the alert.
        let mut errors = Vec::new();
        for _ in 0..100 {
            errors = server.handshake_errors.lock().unwrap().clone();
            if !errors.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("UnknownIssuer"), "{errors:?}");
    })
    .await;
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout() {
    bounded(async {
        let pki = Pki::generate();
        let server = TestServer::start(&pki.server, &pki.ca, Behaviour::Silent).await;
        let mut client = Client::connect_tls(&server.addr(), "localhost", &pki.connector())
            .await
            .unwrap();
        let timeout = Duration::from_millis(300);
        client.set_timeout(timeout);
        let started = Instant::now();
        let err = client.discover_versions(&[]).await.expect_err("no answer");
        let waited = started.elapsed();
        assert!(
            matches!(err, ClientError::Timeout(d) if d == timeout),
            "expected Timeout({timeout:?}), got {err:?}"
        );
        assert!(err.to_string().contains("300ms"), "{err}");
        assert!(
            waited >= timeout && waited < Duration::from_secs(3),
            "gave up after {waited:?}"
        );
    })
    .await;
}

/// After a timeout the answer to the timed-out request may still arrive. The client must not
/// hand it to the next caller as the answer to a different request: it refuses to go on with
/// the connection (`ClientError::Poisoned`).
#[tokio::test]
async fn a_late_answer_after_a_timeout_is_not_taken_for_the_next_one() {
    bounded(async {
        let pki = Pki::generate();
        let server = TestServer::start(&pki.server, &pki.ca, Behaviour::SlowFirstAnswer).await;
        let mut client = Client::connect_tls(&server.addr(), "localhost", &pki.connector())
            .await
            .unwrap();
        client.set_timeout(Duration::from_millis(300));
        let err = client
            .rng_retrieve(16)
            .await
            .expect_err("the first answer is late");
        assert!(matches!(err, ClientError::Timeout(_)), "{err:?}");

        // Let the late answer (16 bytes of 0x10) arrive, then ask for something else.
        tokio::time::sleep(SLOW_FIRST_ANSWER).await;
        client.set_timeout(Duration::from_secs(5));
        match client.rng_retrieve(32).await {
            Ok(data) => panic!(
                "a poisoned connection answered RNG Retrieve(32) with {} bytes",
                data.len()
            ),
            Err(e) => assert!(matches!(e, ClientError::Poisoned), "{e:?}"),
        }
    })
    .await;
}

async fn request_to_a_closing_server(behaviour: Behaviour) -> ClientError {
    let pki = Pki::generate();
    let server = TestServer::start(&pki.server, &pki.ca, behaviour).await;
    let mut client = Client::connect_tls(&server.addr(), "localhost", &pki.connector())
        .await
        .unwrap();
    // A hang would show as a Timeout, which the callers reject.
    client.set_timeout(Duration::from_secs(5));
    client
        .query(&[QueryFunction::QueryOperations])
        .await
        .expect_err("the server hung up")
}

#[tokio::test]
async fn a_server_that_hangs_up_after_reading_is_an_error_not_a_hang() {
    bounded(async {
        // close_notify, then FIN: a clean end of stream.
        let err = request_to_a_closing_server(Behaviour::ShutdownAfterRead).await;
        assert!(matches!(err, ClientError::Closed), "{err:?}");
        assert_eq!(err.to_string(), "the server closed the connection");

        // FIN without close_notify: a truncated TLS stream.
        let err = request_to_a_closing_server(Behaviour::DropAfterRead).await;
        match &err {
            ClientError::Io(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{err:?}")
            }
            other => panic!("expected an unexpected-EOF I/O error, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn two_hundred_sequential_requests_on_one_connection_answer_in_order() {
    bounded(async {
        let pki = Pki::generate();
        let server = TestServer::start(&pki.server, &pki.ca, Behaviour::Answer).await;
        let mut client = Client::connect_tls(&server.addr(), "localhost", &pki.connector())
            .await
            .unwrap();
        for i in 1..=200i32 {
            if i % 2 == 0 {
                let data = client.rng_retrieve(i).await.unwrap();
                assert_eq!(data.len(), i as usize, "request {i}");
                assert!(data.iter().all(|&b| b == (i % 256) as u8), "request {i}");
            } else {
                // A made-up version per request: only its own answer echoes it.
                let v = ProtocolVersion::new(1, i);
                assert_eq!(
                    client.discover_versions(&[v]).await.unwrap(),
                    [v],
                    "request {i}"
                );
            }
        }
        assert_eq!(server.peer_certs.lock().unwrap().len(), 1, "one connection");
    })
    .await;
}

/// `connector_from_pem_files` without the connector (which has no `Debug`).
fn load(
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(), ClientError> {
    tls::connector_from_pem_files(ca, cert, key).map(drop)
}

#[test]
fn connector_from_pem_files_reports_bad_files_as_errors() {
    let pki = Pki::generate();
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client-key.pem"),
    );
    assert!(load(&ca, &cert, &key).is_ok());

    let missing = pki.path("no-such-file.pem");
    for (ca, cert, key) in [
        (&missing, &cert, &key),
        (&ca, &missing, &key),
        (&ca, &cert, &missing),
    ] {
        match load(ca, cert, key) {
            Err(ClientError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
            other => panic!("missing file: expected NotFound, got {other:?}"),
        }
    }

    // A key file without a key (here: a certificate).
    match load(&ca, &cert, &cert) {
        Err(ClientError::Tls(m)) => {
            assert!(
                m.contains("no private key") && m.contains("client.pem"),
                "{m}"
            )
        }
        other => panic!("expected a Tls error, got {other:?}"),
    }
    // Certificate files without certificates (here: a key; then an empty file).
    let empty = pki.write("empty.pem", "");
    for not_a_cert in [&key, &empty] {
        match load(not_a_cert, &cert, &key) {
            Err(ClientError::Tls(m)) => assert!(m.contains("no certificate"), "{m}"),
            other => panic!("expected a Tls error, got {other:?}"),
        }
        match load(&ca, not_a_cert, &key) {
            Err(ClientError::Tls(m)) => assert!(m.contains("no certificate"), "{m}"),
            other => panic!("expected a Tls error, got {other:?}"),
        }
    }
    // A PEM file whose base64 is broken.
    let broken = pki.write(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
    );
    assert!(matches!(
        load(&broken, &cert, &key),
        Err(ClientError::Tls(_))
    ));
    // A key that does not belong to the certificate.
    let stranger = pki.ca.issue_client("stranger");
    let other_key = pki.write("other-key.pem", &stranger.key_pem);
    match load(&ca, &cert, &other_key) {
        Err(ClientError::Tls(m)) => assert!(m.contains("KeyMismatch"), "{m}"),
        other => panic!("a key of another certificate must be refused, got {other:?}"),
    }
}
