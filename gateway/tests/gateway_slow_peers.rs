//! Slow and idle peers: a client trickling one byte per second and 2,000 idle TLS
//! connections do not stop other tenants from being served. The gateway runs in this test
//! process, so the RSS growth measured here (VmRSS of /proc/self/status) is the gateway's
//! plus the test's client side of the connections.

mod support;

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use support::{eventually, kmip_client, start_keysvc, Pki, RunningGateway, EVENTUALLY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn raw_tls(
    pki: &Pki,
    gateway: &RunningGateway,
    who: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("TCP connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(EVENTUALLY, pki.connector(who).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("TLS handshake")
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_one_byte_per_second_does_not_block_other_tenants() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    // A 3 s idle timeout bounds how long a trickled message header may take.
    let gateway = RunningGateway::start_with(&pki, &[keysvc.api_addr()], |f| {
        f.idle_timeout = Some("3s".into())
    })
    .await;
    let mut b = kmip_client(&pki, &gateway.addr_text(), "tenant-b").await;
    let uid = b.create_aes_key(128, None).await.expect("create");

    let mut slow = raw_tls(&pki, &gateway, "tenant-a").await;
    let trickle = tokio::spawn(async move {
        let started = Instant::now();
        // The start of a KMIP header, one byte per second, never completed.
        for byte in [0x42u8, 0x00, 0x78, 0x01, 0x00, 0x00, 0x00] {
            if slow.write_all(&[byte]).await.is_err() || slow.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut buf = [0u8; 64];
        let closed = matches!(
            tokio::time::timeout(EVENTUALLY, slow.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        );
        (closed, started.elapsed())
    });

    // Meanwhile tenant-b is served promptly.
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(4);
    let mut served = 0;
    while Instant::now() < until {
        let started = Instant::now();
        b.get(&uid).await.expect("tenant-b get");
        slowest = slowest.max(started.elapsed());
        served += 1;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest Get took {slowest:?}"
    );
    let (closed, after) = trickle.await.expect("trickle task");
    assert!(closed, "the trickling connection was not closed");
    assert!(
        after < Duration::from_secs(12),
        "closed only after {after:?}"
    );
    eprintln!("tenant-b: {served} Gets, slowest {slowest:?}; trickler closed after {after:?}");
    drop(b);
    drop(gateway);
    keysvc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_do_not_stop_other_tenants() {
    const IDLE: usize = 2000;
    const CONCURRENCY: usize = 32;
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start(&pki, &[keysvc.api_addr()]).await;
    let mut b = kmip_client(&pki, &gateway.addr_text(), "tenant-b").await;
    let uid = b.create_aes_key(128, None).await.expect("create");
    b.get(&uid).await.expect("warm-up get");

    let rss_before = vm_rss_kib();
    let started = Instant::now();
    let idle: Vec<_> = stream::iter(0..IDLE)
        .map(|_| raw_tls(&pki, &gateway, "tenant-a"))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let opened_in = started.elapsed();
    // The server side finishes its handshakes and accounting asynchronously.
    let deadline = Instant::now() + EVENTUALLY;
    while gateway.metrics.active_connections() < (IDLE + 1) as i64 {
        assert!(
            Instant::now() < deadline,
            "only {} connections active",
            gateway.metrics.active_connections()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_after = vm_rss_kib();

    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let t = Instant::now();
        b.get(&uid)
            .await
            .expect("tenant-b get with 2,000 idle connections open");
        slowest = slowest.max(t.elapsed());
    }
    let mut fresh = kmip_client(&pki, &gateway.addr_text(), "tenant-b").await;
    fresh.get(&uid).await.expect("a new connection is served");
    assert!(
        slowest < Duration::from_secs(1),
        "slowest Get took {slowest:?}"
    );
    let per_connection = rss_after.saturating_sub(rss_before) as f64 / IDLE as f64;
    eprintln!(
        "{IDLE} idle TLS connections opened in {opened_in:?}; VmRSS {rss_before} KiB -> {rss_after} KiB \
         ({per_connection:.1} KiB per connection, client and gateway sides together); slowest Get {slowest:?}"
    );
    drop(idle);
    drop((b, fresh));
    drop(gateway);
    keysvc.shutdown().await;
}

/// Each KMIP connection is served by a task of its own (spawned from Pingora's handshake
/// task): it is counted while open, uncounted when its client leaves, and a stop closes the
/// ones still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_counted_until_closed_and_a_stop_closes_the_rest() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start_with(&pki, &[keysvc.api_addr()], |f| {
        f.grace_period = Some("2s".into())
    })
    .await;
    let metrics = gateway.metrics.clone();
    let active_becomes = |n: i64| {
        let metrics = metrics.clone();
        async move {
            eventually(&format!("{n} active connections"), || async {
                metrics.active_connections() == n
            })
            .await
        }
    };

    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(raw_tls(&pki, &gateway, "tenant-a").await);
    }
    active_becomes(20).await;
    idle.truncate(5);
    active_becomes(5).await;

    // New connections are still served.
    let mut a = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    a.create_aes_key(128, None).await.expect("create");
    active_becomes(6).await;

    let stopping = Instant::now();
    let stop = tokio::task::spawn_blocking(move || drop(gateway));
    for mut conn in idle {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(EVENTUALLY, conn.read(&mut buf))
            .await
            .expect("an open connection is closed by the stop");
        assert!(matches!(read, Ok(0) | Err(_)), "read {read:?}");
    }
    stop.await.expect("gateway stopped");
    // The last connection tasks count themselves out as they end, which can be just after
    // the stop returns (seen under a loaded `make test`).
    active_becomes(0).await;
    eprintln!("stopped with connections open in {:?}", stopping.elapsed());
    drop(a);
    keysvc.shutdown().await;
}
