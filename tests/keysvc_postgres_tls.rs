//! The `openkcm` binary on a PostgreSQL cluster that accepts only TLS with client
//! certificates (testkit::pg_cluster): `keysvc migrate` over TLS, `openkcm keysvc` with its
//! URL in `POSTGRES_CONNECTION` picking up a renewed client certificate without a restart,
//! and `openkcm dev --database 'postgres://…?sslmode=verify-full&…'`.

mod dev_support;
mod keysvc_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use dev_support::{free_port, DevProcess};
use keysvc_support::harness::*;
use keysvc_support::{migrate, Keysvc};
use sqlx::Connection;
use testkit::pg_cluster::TlsCluster;

/// How long a renewed certificate may take to reach the change listener (its reconnect
/// backoff starts at 100 ms).
const LISTENER_DEADLINE: Duration = Duration::from_secs(10);

/// `application_name issuer_dn` of every TLS session of `role` (`-` for no TLS).
fn sessions(cluster: &TlsCluster, role: &str) -> Vec<String> {
    cluster.sql(
        "postgres",
        &format!(
            "SELECT concat_ws(' ', a.application_name, \
                    CASE WHEN s.ssl THEN s.client_dn || ' by ' || s.issuer_dn ELSE '-' END) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.usename = '{role}' ORDER BY 1"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keysvc_uses_a_renewed_client_certificate_without_restarting() {
    let cluster = TlsCluster::new();
    let db = cluster.create_database("kstls");
    // The owner's URL over TLS too: the superuser's certificate (CN=postgres).
    let owner = cluster.url("postgres", &db.name, &cluster.client("postgres"));
    migrate(&owner, &db.role);

    // keysvc's files at fixed paths, as a mounted cert-manager Secret.
    let mounted = tempfile::tempdir().expect("temporary directory");
    let files = cluster.client(&db.role).install(mounted.path());
    let url = cluster.url(&db.role, &db.name, &files);
    let pki = Pki::generate();
    let mut args = pki.args("unused");
    let at = args
        .iter()
        .position(|a| a == "--database")
        .expect("--database");
    args.drain(at..at + 2);
    let mut keysvc = Keysvc::spawn_with_env(&args, &[("POSTGRES_CONNECTION", &url)]);
    let mut gateway = Http2::connect(keysvc.api, &pki, Who::Gateway)
        .await
        .expect("gateway → keysvc");
    let before = success_uid(&gateway.call("tenant-a", create_aes()).await);
    let ca1 = format!("/CN={} by /CN=postgres test CA 1", db.role);
    let held = sessions(&cluster, &db.role);
    assert!(
        !held.is_empty() && held.iter().all(|s| s.ends_with(&ca1)),
        "{held:?}"
    );

    // The database's CA changes: the server's certificate comes from CA 2, and it trusts
    // only client certificates of CA 2. The files keysvc was started with no longer work.
    cluster.rotate_ca();
    let stale = sqlx::PgConnection::connect(&url)
        .await
        .expect_err("the old files are refused");
    assert!(stale.to_string().contains("UnknownIssuer"), "{stale}");

    // cert-manager renews the Secret; the kubelet swaps the files; the server ends the
    // sessions authenticated by the old certificate.
    cluster.client(&db.role).install(mounted.path());
    let renewed = Instant::now();
    let ended = cluster.terminate_sessions(&db.role);
    assert!(ended > 0, "keysvc held no sessions to end");

    // The very next requests succeed, on connections made with the renewed files.
    assert_eq!(
        success_uid(&gateway.call("tenant-a", get(&before)).await),
        before
    );
    let after = success_uid(&gateway.call("tenant-a", create_aes()).await);
    success_uid(&gateway.call("tenant-a", get(&after)).await);
    eprintln!(
        "{ended} sessions ended; served again {:?} after the renewal",
        renewed.elapsed()
    );
    let ca2 = format!("/CN={} by /CN=postgres test CA 2", db.role);
    loop {
        let held = sessions(&cluster, &db.role);
        let listener_back = held.iter().any(|s| s.starts_with("openkcm-listener "));
        if listener_back && held.iter().all(|s| s.ends_with(&ca2)) {
            break;
        }
        assert!(
            renewed.elapsed() < LISTENER_DEADLINE,
            "keysvc's sessions after the renewal: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One process throughout.
    let started = keysvc
        .logs()
        .iter()
        .filter(|line| line.contains("\"keysvc listening\""))
        .count();
    assert_eq!(started, 1);
    let status = keysvc.terminate(Duration::from_secs(30));
    assert!(status.success(), "graceful exit on SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openkcm_dev_runs_on_a_database_reached_over_verify_full() {
    let cluster = TlsCluster::new();
    let db = cluster.create_database("devtls");
    // dev connects as the URL's superuser, then as the role it derives (openkcm_app), both
    // with the URL's one certificate (CN=postgres): the server maps that CN to the role.
    cluster.allow_certificate_as("postgres", keysvc::store::postgres::DEV_APP_ROLE);
    let url = cluster.url("postgres", &db.name, &cluster.client("postgres"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut dev = DevProcess::start_with_args(
        dir.path(),
        (free_port(), free_port()),
        Stdio::inherit(),
        &["--database", &url],
    );
    assert!(
        dev.banner.contains("sslmode=verify-full"),
        "the banner shows the TLS parameters:\n{}",
        dev.banner
    );

    let connector = kmip::client::tls::connector_from_pem_files(
        dev.pki("ca.pem"),
        dev.pki("tenant-a.pem"),
        dev.pki("tenant-a-key.pem"),
    )
    .expect("client connector");
    let mut client =
        kmip::client::Client::connect_tls(&dev.kmip_addr.to_string(), "localhost", &connector)
            .await
            .expect("tenant-a connects");
    let uid = client
        .create_aes_key(256, Some("over-tls"))
        .await
        .expect("create");
    client.get(&uid).await.expect("get");

    let held = sessions(&cluster, keysvc::store::postgres::DEV_APP_ROLE);
    assert!(
        !held.is_empty()
            && held
                .iter()
                .all(|s| s.ends_with("/CN=postgres by /CN=postgres test CA 1")),
        "{held:?}"
    );
    let (status, _) = dev.terminate();
    assert!(status.success(), "{status:?}");
}
