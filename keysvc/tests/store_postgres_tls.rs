//! keysvc's PostgreSQL store over TLS with client certificates, against a cluster of the
//! test's own (testkit::pg_cluster: `hostssl … cert`, no plain `host` line): it serves with
//! `sslmode=verify-full` and the role's certificate, and every connection that lacks TLS, a
//! client certificate, or a server it can verify is refused with a message that says why.
//!
//! Certificate rotation without restart is proven with the real process in
//! `tests/keysvc_postgres_tls.rs`.

mod support;

use keysvc::store::postgres::{self, PostgresOptions, PostgresStore};
use support::*;
use testkit::certs::{TestPki, CA_FILE};
use testkit::pg_cluster::{ClusterDatabase, TlsCluster};

/// Small pools: several clusters and stores run at once on a small machine.
fn small() -> PostgresOptions {
    PostgresOptions {
        max_connections: 2,
        ..PostgresOptions::default()
    }
}

/// A cluster with one migrated database.
async fn migrated_cluster() -> (TlsCluster, ClusterDatabase) {
    let cluster = TlsCluster::new();
    let db = cluster.create_database("kstls");
    postgres::migrate(&cluster.owner_url(&db), &db.role)
        .await
        .unwrap_or_else(|e| panic!("migrate: {e}"));
    (cluster, db)
}

/// Why the store refused to open on `url`.
async fn refusal(url: &str) -> String {
    match PostgresStore::connect(url, small()).await {
        Ok(_) => panic!("the store opened on {url}"),
        Err(e) => {
            eprintln!("refused: {e}");
            e.to_string()
        }
    }
}

/// `(application_name, ssl, client_dn, issuer_dn)` of every session of `role`.
fn sessions(cluster: &TlsCluster, role: &str) -> Vec<String> {
    cluster.sql(
        "postgres",
        &format!(
            "SELECT concat_ws(' ', a.application_name, s.ssl, s.client_dn, s.issuer_dn) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.usename = '{role}' ORDER BY 1"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keysvc_serves_over_verify_full_with_its_client_certificate() {
    let (cluster, db) = migrated_cluster().await;
    let url = cluster.keysvc_url(&db);
    assert!(url.contains("sslmode=verify-full"), "{url}");
    let pki = Pki::generate();
    let server = TestServer::start(&pki, &url).await;
    let mut gateway = server.gateway(&pki).await;

    let uid = success_uid(&gateway.call("tenant-a", create_aes()).await);
    assert_eq!(success_uid(&gateway.call("tenant-a", get(&uid)).await), uid);

    // Every session keysvc holds (pool and change listener) is TLS, authenticated by the
    // role's certificate.
    let held = sessions(&cluster, &db.role);
    assert!(
        held.iter().any(|s| s.starts_with("openkcm-listener ")),
        "{held:?}"
    );
    for session in &held {
        assert!(
            session.ends_with(&format!(" t /CN={} /CN=postgres test CA 1", db.role)),
            "{held:?}"
        );
    }
    drop(server);
}

#[tokio::test]
async fn the_cluster_refuses_connections_without_tls_or_a_trusted_client_certificate() {
    let (cluster, db) = migrated_cluster().await;
    let ca = cluster.ca_file().display().to_string();

    let no_certificate = refusal(&cluster.url_with(
        &db.role,
        &db.name,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    assert!(
        no_certificate.contains("connection requires a valid client certificate"),
        "{no_certificate}"
    );

    let plain = refusal(&cluster.url_with(&db.role, &db.name, "sslmode=disable")).await;
    assert!(
        plain.contains("no pg_hba.conf entry") && plain.contains("no encryption"),
        "{plain}"
    );

    // A certificate with the right CN from a CA the server does not trust.
    let stranger = TestPki::new("a CA the cluster does not trust");
    stranger.issue("app", &testkit::certs::client(&db.role, &[]));
    let foreign = refusal(&cluster.url_with(
        &db.role,
        &db.name,
        &format!(
            "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
            stranger.text("app.pem"),
            stranger.text("app-key.pem")
        ),
    ))
    .await;
    assert!(foreign.to_lowercase().contains("unknown"), "{foreign}");

    // The role's certificate, but logging in as another role (CN ≠ role).
    let other = cluster.create_database("kstls_other");
    let mut files = cluster.client(&db.role);
    files.root_cert = cluster.ca_file();
    let impersonation = refusal(&cluster.url(&other.role, &db.name, &files)).await;
    assert!(
        impersonation.contains("certificate authentication failed"),
        "{impersonation}"
    );
}

#[tokio::test]
async fn verify_full_refuses_a_server_it_cannot_verify() {
    let (cluster, db) = migrated_cluster().await;
    let files = cluster.client(&db.role);

    // sslrootcert names another CA than the server's.
    let elsewhere = TestPki::new("another CA");
    let mut other_root = files.clone();
    other_root.root_cert = elsewhere.path(CA_FILE);
    let untrusted = refusal(&cluster.url(&db.role, &db.name, &other_root)).await;
    assert!(
        untrusted.contains("invalid peer certificate") && untrusted.contains("UnknownIssuer"),
        "{untrusted}"
    );

    // The machine's shared server offers TLS with a certificate of its own CA: refused too.
    let shared = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        testkit::postgres::admin_url(),
        cluster.ca_file().display()
    );
    let shared_refusal = refusal(&shared).await;
    assert!(
        shared_refusal.contains("invalid peer certificate"),
        "{shared_refusal}"
    );

    // A certificate of the trusted CA, for another name than the one connected to.
    cluster.serve_certificate_for(&["db.elsewhere.test"]);
    let wrong_name = refusal(&cluster.url(&db.role, &db.name, &files)).await;
    assert!(
        wrong_name.contains("invalid peer certificate") && wrong_name.contains("not valid for"),
        "{wrong_name}"
    );
    // sslmode=require does not check the name (nor the CA): it connects. verify-full is
    // what production uses (docs/operations.md).
    let unverified = cluster.url_with(
        &db.role,
        &db.name,
        &format!(
            "sslmode=require&sslcert={}&sslkey={}",
            files.cert.display(),
            files.key.display()
        ),
    );
    PostgresStore::connect(&unverified, small())
        .await
        .unwrap_or_else(|e| panic!("require ignores the name: {e}"));
}

#[tokio::test]
async fn a_server_that_does_not_offer_tls_is_refused_when_sslmode_requires_it() {
    let (cluster, db) = migrated_cluster().await;
    let url = cluster.keysvc_url(&db);
    cluster.set("ssl", "off");
    cluster.reload();

    for url in [
        url.clone(),
        cluster.url_with(&db.role, &db.name, "sslmode=require"),
    ] {
        let refused = refusal(&url).await;
        assert!(refused.contains("server does not support TLS"), "{refused}");
    }
}

#[tokio::test]
async fn tls_parameters_keysvc_cannot_honour_as_libpq_does_are_refused_before_connecting() {
    let cluster = TlsCluster::new();
    let db = cluster.create_database("kstls");
    let files = cluster.client(&db.role);
    for (query, says) in [
        (
            format!(
                "sslmode=verify-ca&sslrootcert={}",
                files.root_cert.display()
            ),
            "sslmode=verify-ca is not supported",
        ),
        (
            format!("sslmode=require&sslrootcert={}", files.root_cert.display()),
            "verifies nothing in require mode",
        ),
        (
            format!("sslmode=verify-full&sslcert={}", files.cert.display()),
            "sslcert without sslkey",
        ),
        (
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.crt".into(),
            "sslrootcert: cannot read /nonexistent/ca.crt",
        ),
    ] {
        let url = cluster.url_with(&db.role, &db.name, &query);
        let refused = refusal(&url).await;
        assert!(refused.contains(says), "{query}: {refused}");
        // migrate (the owner's URL) goes through the same check.
        let migrate = postgres::migrate(&url, &db.role).await.unwrap_err();
        assert!(migrate.to_string().contains(says), "{query}: {migrate}");
    }
    // Not one of them reached the server (log_connections = on logs every TCP connection).
    let log = cluster.log();
    assert!(
        !log.contains("connection received: host=127.0.0.1"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_known_down_requests_fail_fast_and_recover_when_it_returns() {
    use keysvc::health::{DatabaseHealth, ObservedStore};
    use keysvc::store::{Store, StoreError};
    use keysvc::tenant::{TenantContext, TenantId};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let (cluster, db) = migrated_cluster().await;
    // A pool that would wait 60 s for a connection: what a request waited during an
    // outage before it was answered.
    let options = PostgresOptions {
        acquire_timeout: Duration::from_secs(60),
        ..small()
    };
    let inner = PostgresStore::connect(&cluster.keysvc_url(&db), options)
        .await
        .expect("store");
    let health = DatabaseHealth::new();
    let store = ObservedStore::new(Arc::new(inner), health.clone());
    let ctx = TenantContext::new(TenantId::parse("tenant-a").expect("tenant"));
    store.begin(&ctx).await.expect("a transaction while up");

    tokio::task::block_in_place(|| cluster.stop());
    health.probe(&store).await;
    assert!(!health.is_up(), "the probe saw the database go");
    let asked = Instant::now();
    match store.begin(&ctx).await {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("unreachable"), "{why}"),
        Err(e) => panic!("not Unavailable: {e}"),
        Ok(_) => panic!("a transaction without a database"),
    }
    // Answered long before the pool's 60 s acquire timeout.
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "answered after {:?}",
        asked.elapsed()
    );

    tokio::task::block_in_place(|| cluster.start());
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.begin(&ctx).await.is_err() {
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        health.is_up(),
        "a served request marks the database up again"
    );
}
