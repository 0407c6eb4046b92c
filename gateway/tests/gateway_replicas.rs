//! Two keysvc replicas on one throwaway PostgreSQL database behind the gateway: one is shut
//! down in the middle of a stream of Gets and no Get fails.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 with a trusted `postgres` superuser
//! (`OPENKCM_TEST_POSTGRES` overrides the admin URL).

mod support;

use std::time::Duration;

use support::{kmip_client, start_keysvc_on, Pki, RunningGateway, EVENTUALLY};
use testkit::postgres::PgDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_killed_during_a_stream_of_gets_no_get_fails() {
    const GETS: usize = 600;
    const KILL_AT: usize = 200;
    let pki = Pki::generate();
    let db = PgDatabase::create("gateway_test").await;
    keysvc::store::postgres::migrate(&db.owner_url(), &db.role)
        .await
        .unwrap_or_else(|e| panic!("migrate: {e}"));
    let url = db.app_url();
    let first = start_keysvc_on(&pki, &url).await;
    let second = start_keysvc_on(&pki, &url).await;
    let (first_addr, second_addr) = (first.api_addr(), second.api_addr());
    let gateway = RunningGateway::start(&pki, &[first_addr, second_addr]).await;

    let mut client = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    let uid = client.create_aes_key(256, None).await.expect("create");
    client.activate(&uid).await.expect("activate");

    let mut failures = Vec::new();
    let mut killer = None;
    let started = std::time::Instant::now();
    let mut first = Some(first);
    for i in 0..GETS {
        if i == KILL_AT {
            // Shut down concurrently with the next Gets, not between them.
            let replica = first.take().expect("first replica");
            killer = Some(tokio::spawn(replica.shutdown()));
        }
        if let Err(e) = client.get(&uid).await {
            failures.push(format!("Get #{i}: {e}"));
        }
    }
    let elapsed = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} failed Gets: {failures:?}",
        failures.len()
    );
    eprintln!(
        "{GETS} Gets through one connection in {elapsed:?}, one replica killed at #{KILL_AT}"
    );

    // The health check notices the dead replica.
    let deadline = std::time::Instant::now() + EVENTUALLY;
    while gateway
        .upstream
        .health()
        .iter()
        .any(|(a, up)| *a == first_addr && *up)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "replica never marked unhealthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gateway.metrics.encode().contains(&format!(
        "openkcm_upstream_healthy{{upstream=\"{first_addr}\"}} 0"
    )));
    client.get(&uid).await.expect("served by the survivor");

    drop(client);
    drop(gateway);
    if let Some(killer) = killer {
        let _ = tokio::time::timeout(EVENTUALLY, killer).await;
    }
    second.shutdown().await;
    drop(db);
}
