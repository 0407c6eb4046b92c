//! Shared set-up of the sidecar's in-process tests: a tenant certificate, a stand-in gateway
//! (KMIP over mTLS answering every request with Operation Failed, counting connections),
//! and the sidecar's flags.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clap::Parser;
use kmip::relay::error_response;
use kmip::spec::ResultReason;
use kmip::ttlv::HEADER_LEN;
use pki::{CertSpec, CertificateAuthority};
use sidecar::SidecarArgs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: SidecarArgs,
}

/// A CA, a tenant-a client certificate (`tls.crt`, `tls.key`, `ca.crt`) and a gateway
/// server certificate for `localhost` in `dir`.
pub fn tenant_files(dir: &Path) -> CertificateAuthority {
    let ca = CertificateAuthority::create("test CA").expect("CA");
    std::fs::write(dir.join("ca.crt"), ca.cert_pem()).expect("ca");
    ca.issue(&CertSpec {
        client: true,
        organizational_units: vec!["tenant-a".into()],
        ..CertSpec::new("tenant-a")
    })
    .expect("client certificate")
    .write(&dir.join("tls.crt"), &dir.join("tls.key"))
    .expect("write");
    ca.issue(&CertSpec {
        server: true,
        dns_names: vec!["localhost".into()],
        ..CertSpec::new("gateway")
    })
    .expect("server certificate")
    .write(&dir.join("gw.pem"), &dir.join("gw-key.pem"))
    .expect("write");
    ca
}

/// The sidecar's flags for `gateway`, files in `dir`, listeners on free ports, plus `extra`.
pub fn sidecar_args(dir: &Path, gateway: SocketAddr, extra: &[&str]) -> SidecarArgs {
    let path = |name: &str| dir.join(name).display().to_string();
    let mut argv: Vec<String> = vec![
        "sidecar".into(),
        "--gateway".into(),
        gateway.to_string(),
        "--gateway-server-name".into(),
        "localhost".into(),
        "--gateway-ca".into(),
        path("ca.crt"),
        "--cert".into(),
        path("tls.crt"),
        "--key".into(),
        path("tls.key"),
        "--socket".into(),
        path("kmip.sock"),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--local-dir".into(),
        path("run"),
        "--management".into(),
        "127.0.0.1:0".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    Cli::parse_from(argv).args
}

pub fn socket(dir: &Path) -> PathBuf {
    dir.join("kmip.sock")
}

/// A stand-in gateway: mTLS with `gw.pem` from [`tenant_files`], every framed request
/// answered (Operation Failed, Item Not Found). Returns its address and the number of
/// connections it accepted.
pub async fn start_gateway(
    dir: &Path,
    ca: &CertificateAuthority,
) -> (SocketAddr, Arc<AtomicUsize>) {
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
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                loop {
                    let mut request = vec![0u8; HEADER_LEN];
                    if tls.read_exact(&mut request).await.is_err() {
                        return;
                    }
                    let len = u32::from_be_bytes([request[4], request[5], request[6], request[7]]);
                    request.resize(HEADER_LEN + len as usize, 0);
                    if tls.read_exact(&mut request[HEADER_LEN..]).await.is_err() {
                        return;
                    }
                    let answer = error_response(&request, ResultReason::ItemNotFound, "stand-in");
                    if tls.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}
