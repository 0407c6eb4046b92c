//! `openkcm sidecar` as a child process in front of `openkcm dev`, as a pod would run it.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::net::free_addr as free_port;
use testkit::process::{command, Process};

/// Longest start-up accepted (the target is well under a second).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `openkcm sidecar` (testkit's [`Process`]); killed on drop.
pub struct SidecarProcess {
    pub process: Process,
    pub tls_addr: SocketAddr,
    pub management_addr: SocketAddr,
    pub socket: PathBuf,
    pub local_dir: PathBuf,
}

impl SidecarProcess {
    /// Starts the sidecar for `gateway` with the tenant certificate files in `tenant_dir`
    /// (`tls.crt`, `tls.key`, `ca.crt`, as cert-manager mounts them) and its socket and
    /// pod-local CA in `run_dir`; waits until `/health` answers.
    pub fn start(gateway: SocketAddr, tenant_dir: &Path, run_dir: &Path, extra: &[&str]) -> Self {
        let tls_addr = free_port();
        let management_addr = free_port();
        let socket = run_dir.join("kmip.sock");
        let mut cmd = command(env!("CARGO_BIN_EXE_openkcm"), &["sidecar"]);
        cmd.args(["--gateway", &gateway.to_string()])
            .args(["--gateway-server-name", "localhost"])
            .arg("--gateway-ca")
            .arg(tenant_dir.join("ca.crt"))
            .arg("--cert")
            .arg(tenant_dir.join("tls.crt"))
            .arg("--key")
            .arg(tenant_dir.join("tls.key"))
            .arg("--socket")
            .arg(&socket)
            .args(["--listen", &tls_addr.to_string()])
            .arg("--local-dir")
            .arg(run_dir)
            .args(["--management", &management_addr.to_string()])
            .args(extra);
        let mut process =
            Process::spawn_with_stderr("openkcm sidecar", cmd, Some(Stdio::inherit()));
        let serving =
            |_: &mut Process| (http_get(management_addr, "/health").0 == 200).then_some(());
        if let Err(e) = process.wait_for(START_TIMEOUT, serving) {
            panic!("{e}");
        }
        Self {
            process,
            tls_addr,
            management_addr,
            socket,
            local_dir: run_dir.to_path_buf(),
        }
    }

    /// Status code and body of a GET on the management listener (0 when it does not answer).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.management_addr, path)
    }

    /// Waits (bounded) until `/ready` says `want`.
    pub fn wait_ready(&self, want: bool, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.http_get("/ready");
            if (status == 200) == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/ready still {status} {body:?} after {within:?} (wanted ready={want})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn local(&self, name: &str) -> PathBuf {
        self.local_dir.join(name)
    }
}

/// Status code and body of a GET on `addr` (0 when it does not answer).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    testkit::net::http_get(addr, path).unwrap_or((0, String::new()))
}

/// Copies a tenant's certificate from the dev PKI into `dir` under cert-manager's names, by
/// writing new files and renaming them into place (as the kubelet swaps a Secret volume).
pub fn install_tenant_cert(pki: &Path, tenant: &str, dir: &Path) {
    std::fs::create_dir_all(dir).expect("tenant dir");
    for (from, to) in [
        (format!("{tenant}.pem"), "tls.crt"),
        (format!("{tenant}-key.pem"), "tls.key"),
        ("ca.pem".to_owned(), "ca.crt"),
    ] {
        let temp = dir.join(format!(".{to}.new"));
        std::fs::copy(pki.join(from), &temp).expect("copy certificate file");
        std::fs::rename(&temp, dir.join(to)).expect("rename certificate file");
    }
}
