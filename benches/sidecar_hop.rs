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

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmip::client::Client;
use kmip::message::payloads::{GetRequest, GetResponse};
use kmip::message::{
    RequestMessage, RequestPayload, ResponseBatchItem, ResponseMessage, ResponsePayload,
    UniqueIdentifier,
};
use kmip::ttlv::HEADER_LEN;
use pki::{CertSpec, CertificateAuthority};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};

const BLOCK: usize = 500;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn get_request() -> Vec<u8> {
    RequestMessage::new(
        kmip::ProtocolVersion::V1_4,
        vec![RequestPayload::Get(GetRequest {
            unique_identifier: Some(UniqueIdentifier::from("bench-key")),
            key_format_type: None,
            key_wrap_type: None,
            key_compression_type: None,
            key_wrapping_specification: None,
        })],
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
            let mut header = [0u8; HEADER_LEN];
            let mut body = Vec::new();
            loop {
                if tls.read_exact(&mut header).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
                body.resize(len, 0);
                if tls.read_exact(&mut body).await.is_err() || tls.write_all(&answer).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

fn server_config(dir: &Path, ca: &CertificateAuthority) -> Arc<rustls::ServerConfig> {
    let issued = ca
        .issue(&CertSpec {
            server: true,
            dns_names: vec!["localhost".into()],
            ..CertSpec::new("bench-gateway")
        })
        .expect("server certificate");
    issued
        .write(&dir.join("gw.pem"), &dir.join("gw-key.pem"))
        .expect("write");
    let certs = kmip::client::tls::certs_from_pem(dir.join("gw.pem")).expect("certs");
    let key = kmip::client::tls::key_from_pem(dir.join("gw-key.pem")).expect("key");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            ca.cert_der().to_vec(),
        ))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .expect("server config"),
    )
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

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
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
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = CertificateAuthority::create("bench CA").expect("CA");
    std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).expect("ca");
    ca.issue(&CertSpec {
        client: true,
        organizational_units: vec!["tenant-a".into()],
        ..CertSpec::new("tenant-a")
    })
    .expect("client certificate")
    .write(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
    .expect("write");

    // The upstream on its own thread and runtime.
    let upstream_addr = free_port();
    let config = server_config(dir.path(), &ca);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let listener = TcpListener::bind(upstream_addr)
                .await
                .expect("bind upstream");
            responder(
                listener,
                tokio_rustls::TlsAcceptor::from(config),
                Arc::new(get_answer()),
            )
            .await;
        });
    });

    let run = dir.path().join("run");
    let tls_addr = free_port();
    let mut sidecar: Child = Command::new(env!("CARGO_BIN_EXE_openkcm"))
        .arg("sidecar")
        .args([
            "--gateway",
            &upstream_addr.to_string(),
            "--gateway-server-name",
            "localhost",
        ])
        .arg("--gateway-ca")
        .arg(dir.path().join("ca.crt"))
        .arg("--cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--key")
        .arg(dir.path().join("tls.key"))
        .arg("--socket")
        .arg(run.join("kmip.sock"))
        .args(["--listen", &tls_addr.to_string()])
        .arg("--local-dir")
        .arg(&run)
        .args([
            "--management",
            &free_port().to_string(),
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn openkcm sidecar");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run.join("kmip.sock").exists() || std::net::TcpStream::connect(tls_addr).is_err() {
        assert!(Instant::now() < deadline, "sidecar did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(3)); // idle: first probe done, nothing else
    let rss_idle = rss_kib(sidecar.id());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let (direct, unix, tls) = rt.block_on(async {
        let connector = kmip::client::tls::connector_from_pem_files(
            dir.path().join("ca.crt"),
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
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
    let rss_after = rss_kib(sidecar.id());
    let _ = sidecar.kill();
    let _ = sidecar.wait();

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
