//! The test kit's own PostgreSQL cluster: TLS with a client certificate is the only way in
//! over TCP, and it stops, starts, restarts and goes away as the fault-injection tests need.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use testkit::pg_cluster::TlsCluster;

async fn connect(url: &str) -> Result<PgConnection, String> {
    PgConnection::connect(url).await.map_err(|e| e.to_string())
}

/// `current_user` and whether the session is encrypted.
async fn whoami(url: &str) -> Result<(String, bool), String> {
    let mut conn = connect(url).await?;
    let row: (String, bool) = sqlx::query_as(
        "SELECT current_user::text, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(row)
}

#[tokio::test]
async fn only_tls_with_a_client_certificate_gets_in_and_the_data_outlives_stops() {
    let started = Instant::now();
    let cluster = TlsCluster::new();
    let created = started.elapsed();
    let db = cluster.create_database("kit");
    let url = cluster.keysvc_url(&db);

    assert_eq!(whoami(&url).await, Ok((db.role.clone(), true)));
    let plain = cluster.url_with(&db.role, &db.name, "sslmode=disable");
    let refused = whoami(&plain).await.expect_err("no TLS, no entry");
    assert!(refused.contains("no pg_hba.conf entry"), "{refused}");

    cluster.execute(&db.name, "CREATE TABLE kept (v text)");
    cluster.execute(&db.name, "INSERT INTO kept VALUES ('before the crash')");

    let timed = |what: &str, since: Instant| eprintln!("{what}: {:?}", since.elapsed());
    let t = Instant::now();
    cluster.stop_immediate();
    timed("stop -m immediate", t);
    assert!(!cluster.is_running());
    let down = whoami(&url).await.expect_err("stopped");
    assert!(down.contains("refused"), "{down}");
    let t = Instant::now();
    cluster.start();
    timed("start (crash recovery)", t);
    assert_eq!(
        cluster.sql(&db.name, "SELECT v FROM kept"),
        vec!["before the crash".to_owned()]
    );

    let t = Instant::now();
    cluster.stop();
    timed("stop -m fast", t);
    let t = Instant::now();
    cluster.start();
    timed("start", t);
    let t = Instant::now();
    cluster.restart_fast();
    timed("restart -m fast", t);
    let t = Instant::now();
    cluster.reload();
    timed("reload", t);
    assert_eq!(whoami(&url).await, Ok((db.role.clone(), true)));
    eprintln!("cluster created and started in {created:?}");
}

#[tokio::test]
async fn dropping_the_cluster_stops_the_server_and_removes_its_files() {
    let cluster = TlsCluster::new();
    let data = cluster.data_dir().to_path_buf();
    let port = cluster.port();
    drop(cluster);
    assert!(!data.exists(), "{} left behind", data.display());
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "port {port} still answers");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Set in the child process of the test below: where it writes its cluster's data directory
/// and port before it aborts.
const CHILD: &str = "OPENKCM_TEST_PG_CLUSTER_CHILD";

#[test]
fn a_test_process_that_dies_without_dropping_its_cluster_leaves_no_server_behind() {
    if let Ok(report) = std::env::var(CHILD) {
        let cluster = TlsCluster::new();
        let line = format!("{} {}", cluster.data_dir().display(), cluster.port());
        std::fs::write(report, line).expect("report");
        // As a test killed by a timeout would: no unwinding, no Drop.
        std::process::abort();
    }
    let report = tempfile::NamedTempFile::new().expect("report file");
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "a_test_process_that_dies_without_dropping_its_cluster_leaves_no_server_behind",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, report.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run the child");
    assert!(!status.success(), "the child aborts");
    let line = std::fs::read_to_string(report.path()).expect("the child's report");
    let (data, port) = line.split_once(' ').expect("data port");
    let port: u16 = port.parse().expect("port");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(data).exists()
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "{data} or port {port} still there after the child died"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
