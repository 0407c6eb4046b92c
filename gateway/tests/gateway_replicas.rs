//! Two keysvc replicas on one throwaway PostgreSQL database behind the gateway: one is shut
//! down in the middle of a stream of Gets and no Get fails.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 with a trusted `postgres` superuser
//! (`OPENKCM_TEST_POSTGRES` overrides the admin URL).

mod support;

use std::time::Duration;

use keysvc::config::{self, ConfigSources};
use keysvc::server::{self, KeysvcServer};
use sqlx::Connection;
use support::{kmip_client, Pki, RunningGateway, EVENTUALLY};

fn admin_url() -> String {
    std::env::var("OPENKCM_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database and runtime role, migrated; dropped by [`PgDatabase::drop`].
struct PgDatabase {
    name: String,
    role: String,
}

impl PgDatabase {
    async fn create() -> Self {
        let suffix = format!(
            "{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let db = Self {
            name: format!("gateway_test_{suffix}"),
            role: format!("gateway_app_{suffix}"),
        };
        let mut admin = sqlx::PgConnection::connect(&admin_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {}: {e}", admin_url()));
        for statement in [
            format!("CREATE ROLE {} LOGIN", db.role),
            format!("CREATE DATABASE {}", db.name),
        ] {
            sqlx::query(&statement)
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        keysvc::store::postgres::migrate(&db.url_for("postgres"), &db.role)
            .await
            .unwrap_or_else(|e| panic!("migrate: {e}"));
        db
    }

    fn url_for(&self, user: &str) -> String {
        let admin = admin_url();
        let host = admin
            .split_once('@')
            .map(|(_, r)| r)
            .and_then(|r| r.split('/').next())
            .unwrap_or("127.0.0.1:5432")
            .to_owned();
        format!("postgres://{user}@{host}/{}", self.name)
    }

    async fn drop(self) {
        let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url()).await else {
            return;
        };
        for statement in [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            format!("DROP ROLE IF EXISTS {}", self.role),
        ] {
            let _ = sqlx::query(&statement).execute(&mut admin).await;
        }
    }
}

async fn start_replica(pki: &Pki, database: &str) -> KeysvcServer {
    let mut flags = pki.keysvc_flags();
    flags.database = Some(database.to_owned());
    let (config, _) = config::load_serve(&ConfigSources::new(flags))
        .unwrap_or_else(|e| panic!("keysvc config: {e}"));
    let store = server::open_store(&config.store.database)
        .await
        .unwrap_or_else(|e| panic!("open store: {e}"));
    KeysvcServer::start(&config, store)
        .await
        .unwrap_or_else(|e| panic!("keysvc start: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_killed_during_a_stream_of_gets_no_get_fails() {
    const GETS: usize = 600;
    const KILL_AT: usize = 200;
    let pki = Pki::generate();
    let db = PgDatabase::create().await;
    let url = db.url_for(&db.role);
    let first = start_replica(&pki, &url).await;
    let second = start_replica(&pki, &url).await;
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
    db.drop().await;
}
