//! Sidecar added latency and memory: a KMIP Get sent straight to an upstream over mTLS,
//! against the same Get sent through a real `openkcm sidecar` process (its Unix socket and
//! its local TLS port) to that upstream.
//!
//! The upstream is a minimal KMIP-over-mTLS responder in this process (a fixed Get answer
//! with a 256-bit key), so the difference between the paths is the sidecar's hop alone, not
//! the gateway's or keysvc's variance. Plain `main` (harness = false):
//!
//! ```sh
//! cargo bench --bench sidecar_hop
//! HOP_N=50000 HOP_WARMUP=5000 cargo bench --bench sidecar_hop
//! ```
//!
//! Requests alternate between the paths in blocks of [`BLOCK`] so that all see the same
//! machine load. Percentiles come from the sorted samples. The sidecar's RSS is read from
//! /proc when it is idle after start-up and again after the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kmip::client::Client;
use kmip::message::payloads::{GetRequest, GetResponse};
use kmip::message::{
    RequestMessage, RequestPayload, ResponseBatchItem, ResponseMessage, ResponsePayload,
    UniqueIdentifier,
};
use testkit::certs::{self, TestPki};
use testkit::kmip_client::read_message;
use testkit::net::{free_addr, retry_addr_in_use};
use testkit::process::{command, Process};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};

const BLOCK: usize = 500;
const BIN: &str = env!("CARGO_BIN_EXE_openkcm");

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn get_request() -> Vec<u8> {
    RequestMessage::new(
        kmip::ProtocolVersion::V1_4,
        vec![RequestPayload::Get(GetRequest::of("bench-key"))],
    )
    .to_ttlv()
}

/// A Get answer as keysvc gives it: a Symmetric Key object with 32 bytes of material.
fn get_answer() -> Vec<u8> {
    use kmip::message::objects::{KeyBlock, ManagedObject, SymmetricKey};
    let object = ManagedObject::SymmetricKey(SymmetricKey {
        key_block: KeyBlock::raw(
            vec![7u8; 32],
            Some(kmip::spec::CryptographicAlgorithm::Aes),
            Some(256),
        ),
    });
    ResponseMessage::new(
        kmip::ProtocolVersion::V1_4,
        vec![ResponseBatchItem::success(ResponsePayload::Get(
            GetResponse {
                object_type: kmip::spec::ObjectType::SymmetricKey,
                unique_identifier: UniqueIdentifier::from("bench-key"),
                object: Some(object),
            },
        ))],
    )
    .to_ttlv()
}

/// Answers every framed request on every connection with `answer`.
async fn responder(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    answer: Arc<Vec<u8>>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let answer = answer.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut request = Vec::new();
            while read_message(&mut tls, &mut request).await.is_some() {
                if tls.write_all(&answer).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn timed<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<S>,
    request: &[u8],
    out: &mut Vec<Duration>,
) {
    let started = Instant::now();
    client.send_raw(request.to_vec()).await.expect("answer");
    out.push(started.elapsed());
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    let n = env_usize("HOP_N", 20_000);
    let warmup = env_usize("HOP_WARMUP", 2_000);
    let pki = TestPki::new("bench CA");
    let dir = pki.dir();
    pki.issue_mounted(&certs::client("tenant-a", &["tenant-a"]));
    pki.issue("gw", &certs::localhost_server("bench-gateway"));

    // The upstream on its own thread and runtime.
    let upstream = testkit::net::listener();
    upstream
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let upstream_addr = upstream.local_addr().expect("upstream address");
    let acceptor = pki.acceptor("gw", true);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let listener = TcpListener::from_std(upstream).expect("upstream listener");
            responder(listener, acceptor, Arc::new(get_answer())).await;
        });
    });

    let run = dir.join("run");
    let upstream = upstream_addr.to_string();
    let (mut sidecar, tls_addr) = retry_addr_in_use("openkcm sidecar", || {
        let tls_addr = free_addr();
        let (listen, management) = (tls_addr.to_string(), free_addr().to_string());
        let path = |name: &str| dir.join(name).display().to_string();
        let (ca, cert, key) = (path("ca.crt"), path("tls.crt"), path("tls.key"));
        let (socket, local) = (path("run/kmip.sock"), path("run"));
        #[rustfmt::skip]
        let args = [
            "sidecar", "--gateway", &upstream, "--gateway-server-name", "localhost",
            "--gateway-ca", &ca, "--cert", &cert, "--key", &key, "--socket", &socket,
            "--listen", &listen, "--local-dir", &local, "--management", &management,
            "--log-level", "warn",
        ];
        let mut sidecar = Process::spawn("openkcm sidecar", command(BIN, &args));
        sidecar.wait_for(Duration::from_secs(30), |_| {
            (run.join("kmip.sock").exists() && std::net::TcpStream::connect(tls_addr).is_ok())
                .then_some(())
        })?;
        Ok((sidecar, tls_addr))
    });
    std::thread::sleep(Duration::from_secs(3)); // idle: first probe done, nothing else
    let rss_idle = rss_kib(sidecar.pid());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let (direct, unix, tls) = rt.block_on(async {
        let connector = kmip::client::tls::connector_from_pem_files(
            dir.join("ca.crt"),
            dir.join("tls.crt"),
            dir.join("tls.key"),
        )
        .expect("connector");
        let mut direct = Client::connect_tls(&upstream_addr.to_string(), "localhost", &connector)
            .await
            .expect("direct");
        let mut unix = Client::new(
            UnixStream::connect(run.join("kmip.sock"))
                .await
                .expect("socket"),
        );
        let local = kmip::client::tls::connector_from_pem_files(
            run.join("ca.pem"),
            run.join("client.pem"),
            run.join("client-key.pem"),
        )
        .expect("local connector");
        let mut tls = Client::connect_tls(&tls_addr.to_string(), "localhost", &local)
            .await
            .expect("local TLS");
        let request = get_request();
        let (mut d, mut u, mut t) = (Vec::new(), Vec::new(), Vec::new());
        let mut scratch = Vec::new();
        for _ in 0..warmup {
            timed(&mut direct, &request, &mut scratch).await;
            timed(&mut unix, &request, &mut scratch).await;
            timed(&mut tls, &request, &mut scratch).await;
        }
        while d.len() < n {
            for _ in 0..BLOCK {
                timed(&mut direct, &request, &mut d).await;
            }
            for _ in 0..BLOCK {
                timed(&mut unix, &request, &mut u).await;
            }
            for _ in 0..BLOCK {
                timed(&mut tls, &request, &mut t).await;
            }
        }
        (d, u, t)
    });
    let rss_after = rss_kib(sidecar.pid());
    sidecar.kill();

    let stats = |mut v: Vec<Duration>| {
        v.sort();
        (
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            percentile(&v, 0.999),
        )
    };
    let d = stats(direct);
    println!("sidecar hop, {n} sequential Gets per path (blocks of {BLOCK}), ms:");
    println!(
        "  {:<28} p50 {:.3}  p99 {:.3}  p99.9 {:.3}",
        "direct mTLS to upstream", d.0, d.1, d.2
    );
    for (name, samples) in [
        ("via sidecar Unix socket", unix),
        ("via sidecar local TLS", tls),
    ] {
        let s = stats(samples);
        println!(
            "  {name:<28} p50 {:.3}  p99 {:.3}  p99.9 {:.3}   added: p50 +{:.3}  p99 +{:.3}",
            s.0,
            s.1,
            s.2,
            s.0 - d.0,
            s.1 - d.1
        );
    }
    println!("sidecar RSS: idle {rss_idle} KiB, after the run {rss_after} KiB");
}
