//! `--upstream HOST:PORT`: the gateway resolves the name (here `localhost`, which may
//! also resolve to `::1`, where keysvc does not listen) and serves through every address
//! that answers.

mod support;

use std::net::SocketAddr;

use support::{eventually, kmip_client, start_keysvc, Pki, RunningGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_upstream_is_resolved_and_served() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let port = keysvc.api_addr().port();
    let gateway = RunningGateway::start_with(&pki, &[], |flags| {
        flags.upstreams = vec![format!("localhost:{port}")];
        flags.upstream_resolve_interval = Some("1s".into());
    })
    .await;

    // Replicas appear once the name has resolved; the gateway is ready once one answers.
    let keysvc_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let upstream = gateway.upstream.clone();
    eventually("localhost resolved to 127.0.0.1", || {
        let upstream = upstream.clone();
        async move { upstream.health().iter().any(|(a, _)| *a == keysvc_addr) }
    })
    .await;
    let upstream = gateway.upstream.clone();
    eventually("gateway ready", || {
        let upstream = upstream.clone();
        async move { upstream.ready() }
    })
    .await;
    for (addr, _) in gateway.upstream.health() {
        assert!(addr.ip().is_loopback(), "{addr} is not a localhost address");
        assert_eq!(addr.port(), port);
    }

    let mut client = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    let uid = client
        .create_aes_key(256, Some("dns-key"))
        .await
        .expect("create through a resolved replica");
    // Enough requests to go round every resolved address (a `::1` replica fails to
    // connect and the request moves on): none may fail.
    for i in 0..6 {
        client
            .get(&uid)
            .await
            .unwrap_or_else(|e| panic!("get #{i}: {e}"));
    }

    // A later resolution keeps the same replica (and its health state).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(gateway
        .upstream
        .health()
        .iter()
        .any(|(a, up)| *a == keysvc_addr && *up));
    client.get(&uid).await.expect("get after re-resolution");

    drop(client);
    drop(gateway);
    keysvc.shutdown().await;
}

/// What `localhost` resolving to `::1` as well looks like, forced: a replica on `[::1]`
/// where nothing listens next to the resolved one. Every request still succeeds and the
/// health check marks `[::1]` down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_address_next_to_a_resolved_one_costs_no_request() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let port = keysvc.api_addr().port();
    let v6: SocketAddr = format!("[::1]:{port}").parse().expect("address");
    let gateway = RunningGateway::start_with(&pki, &[], |flags| {
        flags.upstreams = vec![v6.to_string(), format!("localhost:{port}")];
    })
    .await;
    let upstream = gateway.upstream.clone();
    eventually("gateway ready", || {
        let upstream = upstream.clone();
        async move { upstream.ready() }
    })
    .await;

    let mut client = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    let uid = client
        .create_aes_key(256, Some("dns-key-2"))
        .await
        .expect("create");
    for i in 0..6 {
        client
            .get(&uid)
            .await
            .unwrap_or_else(|e| panic!("get #{i}: {e}"));
    }
    let upstream = gateway.upstream.clone();
    eventually("[::1] marked unhealthy", || {
        let upstream = upstream.clone();
        async move { upstream.health().iter().any(|(a, up)| *a == v6 && !*up) }
    })
    .await;

    drop(client);
    drop(gateway);
    keysvc.shutdown().await;
}
