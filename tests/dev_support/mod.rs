//! Harness for the `openkcm dev` tests: the real binary in its own process, on loopback.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use testkit::process::{command, Process};

pub use testkit::net::free_addr as free_port;

/// Longest start-up accepted (the target is well under a second).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest SIGTERM-to-exit accepted.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The PyKMIP 0.11 venv python: `PYKMIP_PYTHON` (set by `make test`) or `<repo>/.venv`.
pub fn pykmip_python() -> PathBuf {
    std::env::var_os("PYKMIP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// Runs one of the tests/pykmip scripts against `dev` (its KMIP host and port, its PKI
/// directory, the KMIP version, then `extra`), killed after `limit`; answers the JSON it
/// printed. Each script prints one object of steps `{ "ok": bool, "value" | "reason" }`.
pub fn run_pykmip_script(
    dev: &DevProcess,
    name: &str,
    version: &str,
    extra: &[&str],
    limit: Duration,
) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/pykmip")
        .join(name);
    let python = pykmip_python();
    let mut child = std::process::Command::new(&python)
        .arg(&script)
        .arg(dev.kmip_addr.ip().to_string())
        .arg(dev.kmip_addr.port().to_string())
        .arg(dev.dir.join("pki"))
        .arg(version)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} {version} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} {version} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{name} {version} printed no JSON ({e}): {stdout}"))
}

/// The value of the step at JSON pointer `path` of a PyKMIP script's result, which must have
/// succeeded.
pub fn pykmip_ok<'a>(result: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    let step = result
        .pointer(path)
        .unwrap_or_else(|| panic!("{path} missing: {result}"));
    assert_eq!(step["ok"], true, "{path} failed: {step}");
    &step["value"]
}

/// The step at `path` failed, with one of the PyKMIP ResultReason names `reasons`.
pub fn pykmip_failed_with(result: &serde_json::Value, path: &str, reasons: &[&str]) {
    let step = result
        .pointer(path)
        .unwrap_or_else(|| panic!("{path} missing: {result}"));
    assert_eq!(step["ok"], false, "{path} must fail: {step}");
    assert!(
        reasons.iter().any(|r| step["reason"] == *r),
        "{path}: {step}, expected one of {reasons:?}"
    );
}

/// `openkcm dev` running as a child process (testkit's [`Process`]); killed on drop if
/// still running.
pub struct DevProcess {
    pub process: Process,
    pub kmip_addr: SocketAddr,
    /// The gateway's HTTPS listener (KMIP over HTTP/2 for the sidecar).
    pub https_addr: SocketAddr,
    pub dir: PathBuf,
    /// Everything it printed on stdout up to "ready", and what followed at once.
    pub banner: String,
    pub startup: Duration,
}

impl DevProcess {
    /// Starts `openkcm dev --dir DIR --kmip-addr <free port> --https-addr <free port>` and waits (bounded) until it
    /// prints that it is ready.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, (free_port(), free_port()), Stdio::inherit())
    }

    /// [`DevProcess::start`] on given (KMIP, HTTPS) addresses (a restart on the same
    /// ports), with its stderr (JSON logs, audit events included) going to `stderr`.
    pub fn start_with(dir: &Path, addrs: (SocketAddr, SocketAddr), stderr: Stdio) -> Self {
        Self::start_with_args(dir, addrs, stderr, &[])
    }

    /// [`DevProcess::start_with`] with more arguments (e.g. `--database URL`).
    pub fn start_with_args(
        dir: &Path,
        (kmip_addr, https_addr): (SocketAddr, SocketAddr),
        stderr: Stdio,
        args: &[&str],
    ) -> Self {
        let started = Instant::now();
        let mut cmd = command(env!("CARGO_BIN_EXE_openkcm"), &["dev", "--dir"]);
        cmd.arg(dir)
            .args(["--kmip-addr", &kmip_addr.to_string()])
            .args(["--https-addr", &https_addr.to_string()])
            .args(args);
        let mut process = Process::spawn_with_stderr("openkcm dev", cmd, Some(stderr));
        let ready = |p: &mut Process| {
            p.stdout()
                .iter()
                .any(|line| line.starts_with("openkcm dev ready"))
                .then_some(())
        };
        if let Err(e) = process.wait_for(START_TIMEOUT, ready) {
            panic!("{e}; printed:\n{}", process.stdout().join("\n"));
        }
        let startup = started.elapsed();
        // The rest of the banner follows the ready line at once.
        std::thread::sleep(Duration::from_millis(200));
        let banner = process
            .stdout()
            .iter()
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(
            std::net::TcpStream::connect(kmip_addr).is_ok(),
            "ready, yet {kmip_addr} does not accept"
        );
        Self {
            process,
            kmip_addr,
            https_addr,
            dir: dir.to_path_buf(),
            banner,
            startup,
        }
    }

    pub fn pki(&self, name: &str) -> PathBuf {
        self.dir.join("pki").join(name)
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns the status and the time taken.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        self.process.terminate(STOP_TIMEOUT)
    }
}
