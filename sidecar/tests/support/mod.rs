//! Shared set-up of the sidecar's in-process tests: a tenant certificate, a stand-in gateway
//! (KMIP over mTLS answering every request with Operation Failed, counting connections),
//! and the sidecar's flags.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use kmip::relay::error_response;
use kmip::spec::ResultReason;
use sidecar::{SidecarArgs, SidecarConfig};
use testkit::certs::{self, TestPki};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: SidecarArgs,
}

/// A CA, a tenant-a client certificate (`tls.crt`, `tls.key`, `ca.crt`) and a gateway
/// server certificate for `localhost` (`gw.pem`) in `dir`.
pub fn tenant_files(dir: &Path) -> TestPki {
    let pki = TestPki::at(dir, "test CA");
    pki.issue_mounted(&certs::client("tenant-a", &["tenant-a"]));
    pki.issue("gw", &certs::localhost_server("gateway"));
    pki
}

/// The sidecar's flags for `gateway`, files in `dir`, listeners on free ports, plus `extra`.
pub fn sidecar_args(dir: &Path, gateway: SocketAddr, extra: &[&str]) -> SidecarConfig {
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
    Cli::parse_from(argv)
        .args
        .resolve()
        .expect("the test's flags are valid")
}

pub fn socket(dir: &Path) -> PathBuf {
    dir.join("kmip.sock")
}

/// A stand-in gateway: mTLS with `gw.pem` from [`tenant_files`], HTTP/2 only (ALPN h2),
/// every `POST /kmip` answered (Operation Failed, Item Not Found). Returns its address and
/// the number of connections it accepted.
pub async fn start_gateway(pki: &TestPki) -> (SocketAddr, Arc<AtomicUsize>) {
    let mut config = pki.server_config("gw", true);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = testkit::net::tokio_listener().await;
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut connection) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    tokio::spawn(async move {
                        let mut body = request.into_body();
                        let mut message = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            message.extend_from_slice(&chunk);
                        }
                        let answer =
                            error_response(&message, ResultReason::ItemNotFound, "stand-in");
                        let response = http::Response::builder()
                            .status(200)
                            .body(())
                            .expect("response");
                        if let Ok(mut stream) = respond.send_response(response, false) {
                            let _ = stream.send_data(Bytes::from(answer), true);
                        }
                    });
                }
            });
        }
    });
    (addr, accepted)
}
