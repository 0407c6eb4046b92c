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
use sidecar::{SidecarArgs, SidecarConfig};
use testkit::certs::{self, TestPki};
use testkit::kmip_client::read_message;
use tokio::io::AsyncWriteExt;

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

/// A stand-in gateway: mTLS with `gw.pem` from [`tenant_files`], every framed request
/// answered (Operation Failed, Item Not Found). Returns its address and the number of
/// connections it accepted.
pub async fn start_gateway(pki: &TestPki) -> (SocketAddr, Arc<AtomicUsize>) {
    let acceptor = pki.acceptor("gw", true);
    let listener = testkit::net::tokio_listener().await;
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
                let mut request = Vec::new();
                while read_message(&mut tls, &mut request).await.is_some() {
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
