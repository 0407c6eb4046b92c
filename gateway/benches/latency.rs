//! Gateway added latency: KMIP Get of one cached key through the gateway (TTLV over mTLS →
//! Pingora → HTTP/2 mTLS → keysvc) against the same Get sent straight to keysvc's
//! `POST /v1/kmip` over HTTP/2 mTLS with the gateway's own client certificate and headers.
//!
//! keysvc runs in this process on SQLite, the gateway on its own thread (the integration
//! tests' harness). Plain `main` (harness = false):
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-gw cargo bench -p gateway --bench latency
//! LATENCY_N=20000 LATENCY_WARMUP=2000 LATENCY_CONCURRENCY=4 cargo bench -p gateway --bench latency
//! ```
//!
//! Requests alternate between the two paths in blocks of [`BLOCK`] so that both see the
//! same machine load. Percentiles come from the sorted samples (no histogram rounding).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kmip::contract;
use support::{start_keysvc, Pki, RunningGateway, GATEWAY_URI};
use testkit::kmip_client::get_request;

use testkit::kmip_client::TlsClient as KmipClient;

/// Requests per path between switches of path.
const BLOCK: usize = 500;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A KMIP client through the gateway (tenant-a's certificate).
async fn gateway_client(pki: &Pki, gateway: &RunningGateway) -> KmipClient {
    let addr = gateway.addr_text();
    let version = kmip::ProtocolVersion::V1_4;
    testkit::kmip_client::connect(pki, &addr, "tenant-a", version, Duration::from_secs(10)).await
}

/// An HTTP/2 mTLS connection straight to keysvc, as the gateway (its client certificate).
async fn direct_client(pki: &Pki, addr: std::net::SocketAddr) -> SendRequest<Full<Bytes>> {
    let mut config = pki.client_config(Some("gateway-upstream"));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls::pki_types::ServerName::try_from(support::KEYSVC_NAME).expect("name");
    let tls = connector.connect(name, tcp).await.expect("TLS to keysvc");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

async fn direct_get(sender: &mut SendRequest<Full<Bytes>>, body: &Bytes) -> usize {
    let request = hyper::Request::builder()
        .method("POST")
        .uri(format!(
            "https://{}{}",
            support::KEYSVC_NAME,
            contract::KMIP_PATH
        ))
        .header("content-type", "application/octet-stream")
        .header("content-length", body.len())
        .header(contract::TENANT_HEADER, "tenant-a")
        .header(contract::CLIENT_HEADER, "CN=mongod.tenant-a,OU=tenant-a")
        .header(
            contract::REQUEST_ID_HEADER,
            uuid::Uuid::new_v4().to_string(),
        )
        .body(Full::new(body.clone()))
        .expect("request");
    sender.ready().await.expect("HTTP/2 ready");
    let response = sender.send_request(request).await.expect("keysvc answers");
    assert_eq!(response.status(), 200, "direct Get failed");
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    bytes.len()
}

/// Nanoseconds per request, `block` requests at a time.
async fn run_gateway(client: &mut KmipClient, request: &[u8], n: usize, out: &mut Vec<u64>) {
    for _ in 0..n {
        let start = Instant::now();
        let answer = client
            .send_raw(request.to_vec())
            .await
            .expect("gateway Get");
        out.push(start.elapsed().as_nanos() as u64);
        assert!(answer.len() > 100, "short answer");
    }
}

async fn run_direct(
    sender: &mut SendRequest<Full<Bytes>>,
    request: &Bytes,
    n: usize,
    out: &mut Vec<u64>,
) {
    for _ in 0..n {
        let start = Instant::now();
        let len = direct_get(sender, request).await;
        out.push(start.elapsed().as_nanos() as u64);
        assert!(len > 100, "short answer");
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

const PERCENTILES: [(&str, f64); 4] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
];

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn report(label: &str, gateway: &mut [u64], direct: &mut [u64]) {
    gateway.sort_unstable();
    direct.sort_unstable();
    println!("\n{label}: {} samples each way (ms)", gateway.len());
    println!("{:<10}{:>10}{:>10}{:>12}", "", "gateway", "direct", "added");
    for (name, p) in PERCENTILES {
        let (g, d) = (percentile(gateway, p), percentile(direct, p));
        println!(
            "{name:<10}{:>10.3}{:>10.3}{:>12.3}",
            ms(g),
            ms(d),
            ms(g) - ms(d)
        );
    }
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64 / 1e6;
    println!(
        "{:<10}{:>10.3}{:>10.3}{:>12.3}",
        "mean",
        mean(gateway),
        mean(direct),
        mean(gateway) - mean(direct)
    );
    let added_p50 = ms(percentile(gateway, 0.5)) - ms(percentile(direct, 0.5));
    let added_p99 = ms(percentile(gateway, 0.99)) - ms(percentile(direct, 0.99));
    println!(
        "added latency: p50 {added_p50:.3} ms (target < 0.2: {}), p99 {added_p99:.3} ms (target < 1: {})",
        if added_p50 < 0.2 { "met" } else { "MISSED" },
        if added_p99 < 1.0 { "met" } else { "MISSED" },
    );
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let n = env_usize("LATENCY_N", 20_000);
    let warmup = env_usize("LATENCY_WARMUP", 2_000);
    let concurrency = env_usize("LATENCY_CONCURRENCY", 4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let pki = Pki::generate();
        let keysvc = start_keysvc(&pki).await;
        let gateway = RunningGateway::start(&pki, &[keysvc.api_addr()]).await;
        let mut client = gateway_client(&pki, &gateway).await;
        let uid = client
            .create_aes_key(256, Some("latency"))
            .await
            .expect("create");
        client.activate(&uid).await.expect("activate");
        let request = get_request(&uid);
        let body = Bytes::from(request.clone());
        let mut direct = direct_client(&pki, keysvc.api_addr()).await;
        println!(
            "gateway added latency: KMIP Get of one cached AES-256 key, gateway identity {GATEWAY_URI}, \
             N={n} per path after {warmup} warm-up requests per path, load average before: {}",
            load_average()
        );

        let mut sink = Vec::with_capacity(warmup);
        run_gateway(&mut client, &request, warmup, &mut sink).await;
        run_direct(&mut direct, &body, warmup, &mut sink).await;

        // Sequential, one connection each, alternating blocks.
        let (mut g, mut d) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let started = Instant::now();
        while g.len() < n {
            let block = BLOCK.min(n - g.len());
            run_gateway(&mut client, &request, block, &mut g).await;
            run_direct(&mut direct, &body, block, &mut d).await;
        }
        let elapsed = started.elapsed();
        report("sequential, 1 connection per path", &mut g, &mut d);
        println!(
            "run time {:.1} s, load average after: {}",
            elapsed.as_secs_f64(),
            load_average()
        );

        if concurrency > 1 {
            // `concurrency` connections per path, each sequential; paths alternate by block.
            let mut clients = Vec::new();
            let mut directs = Vec::new();
            for _ in 0..concurrency {
                let mut c = gateway_client(&pki, &gateway).await;
                let mut s = direct_client(&pki, keysvc.api_addr()).await;
                let mut sink = Vec::new();
                run_gateway(&mut c, &request, warmup / concurrency, &mut sink).await;
                run_direct(&mut s, &body, warmup / concurrency, &mut sink).await;
                clients.push(c);
                directs.push(s);
            }
            let per_task = n / concurrency;
            let (mut g, mut d) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let started = Instant::now();
            let mut done = 0;
            while done < per_task {
                let block = BLOCK.min(per_task - done);
                let tasks: Vec<_> = clients
                    .drain(..)
                    .map(|mut c| {
                        let request = request.clone();
                        tokio::spawn(async move {
                            let mut out = Vec::with_capacity(block);
                            run_gateway(&mut c, &request, block, &mut out).await;
                            (c, out)
                        })
                    })
                    .collect();
                for task in tasks {
                    let (c, out) = task.await.expect("task");
                    clients.push(c);
                    g.extend(out);
                }
                let tasks: Vec<_> = directs
                    .drain(..)
                    .map(|mut s| {
                        let body = body.clone();
                        tokio::spawn(async move {
                            let mut out = Vec::with_capacity(block);
                            run_direct(&mut s, &body, block, &mut out).await;
                            (s, out)
                        })
                    })
                    .collect();
                for task in tasks {
                    let (s, out) = task.await.expect("task");
                    directs.push(s);
                    d.extend(out);
                }
                done += block;
            }
            let elapsed = started.elapsed();
            report(
                &format!("{concurrency} concurrent connections per path"),
                &mut g,
                &mut d,
            );
            println!(
                "run time {:.1} s, load average after: {}",
                elapsed.as_secs_f64(),
                load_average()
            );
        }
        drop(client);
        drop(gateway);
        keysvc.shutdown().await;
    });
}
