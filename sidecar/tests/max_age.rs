//! Gateway connections are replaced after `--upstream-max-age`, between requests: a
//! long-running workload spreads over gateway replicas added since, and none of its
//! requests fails for it.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kmip::client::Client;
use kmip::spec::ResultReason;
use sidecar::RunningSidecar;

async fn connections_for_one_second_of_requests(extra: &[&str]) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = support::tenant_files(dir.path());
    let (gateway, accepted) = support::start_gateway(&pki).await;
    let args = support::sidecar_args(dir.path(), gateway, extra);
    let sidecar = RunningSidecar::start(&args).await.expect("start");
    let stream = tokio::net::UnixStream::connect(support::socket(dir.path()))
        .await
        .expect("connect");
    let mut workload = Client::new(stream);
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        // The stand-in answers Item Not Found: the answer came from the gateway.
        let err = workload.get("k").await.expect_err("stand-in answer");
        assert_eq!(
            err.result_reason(),
            Some(ResultReason::ItemNotFound),
            "{err}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sidecar.shutdown().await;
    accepted.load(Ordering::Relaxed)
}

#[tokio::test]
async fn old_gateway_connections_are_replaced_between_requests() {
    // With one upstream connection, it serves the whole workload under the default
    // maximum age.
    let default = connections_for_one_second_of_requests(&["--upstream-connections", "1"]).await;
    assert_eq!(
        default, 1,
        "connections in 1 s with the default maximum age"
    );
    // Requests are spread over the upstream connections (the Service balances per
    // connection): four are opened, and kept.
    let spread = connections_for_one_second_of_requests(&["--upstream-connections", "4"]).await;
    assert_eq!(
        spread, 4,
        "connections in 1 s with --upstream-connections 4"
    );
    let replaced = connections_for_one_second_of_requests(&[
        "--upstream-connections",
        "1",
        "--upstream-max-age",
        "200ms",
    ])
    .await;
    assert!(
        (4..=12).contains(&replaced),
        "{replaced} connections in 1 s with a 200 ms maximum age"
    );
}
