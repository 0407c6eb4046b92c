//! The sidecar in-process in front of a "gateway" that accepts TCP and hangs up at once:
//! every workload request gets a KMIP error, promptly, and the sidecar does not hammer the
//! gateway with a connect per request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kmip::client::Client;
use kmip::spec::ResultReason;
use sidecar::RunningSidecar;

mod support;

#[tokio::test]
async fn a_failing_gateway_gets_few_connects_and_the_workload_gets_kmip_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    support::tenant_files(dir.path());

    let gateway = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gateway_addr: SocketAddr = gateway.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = gateway.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            drop(stream);
        }
    });

    let args = support::sidecar_args(dir.path(), gateway_addr, &["--timeout", "2s"]);
    let sidecar = RunningSidecar::start(&args).await.expect("start");
    let stream = tokio::net::UnixStream::connect(dir.path().join("kmip.sock"))
        .await
        .expect("connect");
    let mut workload = Client::new(stream);
    workload.set_timeout(Duration::from_secs(10));
    const REQUESTS: usize = 50;
    for _ in 0..REQUESTS {
        let err = workload.get("any").await.expect_err("no gateway");
        assert_eq!(
            err.result_reason(),
            Some(ResultReason::GeneralFailure),
            "{err}"
        );
        assert!(err.to_string().contains("unreachable"), "{err}");
    }
    let connects = accepted.load(Ordering::Relaxed);
    assert!(
        connects < REQUESTS / 5,
        "{connects} connects for {REQUESTS} requests: no backoff"
    );
    assert!(sidecar.metrics.requests("unix", false) >= REQUESTS as u64);
    sidecar.shutdown().await;
    assert!(
        !dir.path().join("kmip.sock").exists(),
        "the socket file is removed at shutdown"
    );
}
