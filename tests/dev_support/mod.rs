//! Harness for the `openkcm dev` tests: the real binary in its own process, on loopback.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

/// `openkcm dev` running as a child process; killed on drop if still running.
pub struct DevProcess {
    pub child: Child,
    pub kmip_addr: SocketAddr,
    pub dir: PathBuf,
    /// Everything it printed on stdout up to "ready".
    pub banner: String,
    pub startup: Duration,
    stdout: mpsc::Receiver<String>,
}

impl DevProcess {
    /// Starts `openkcm dev --dir DIR --kmip-addr <free port> --https-addr <free port>` and waits (bounded) until it
    /// prints that it is ready.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, free_port(), Stdio::inherit())
    }

    /// [`DevProcess::start`] on a given KMIP address (a restart on the same port), with
    /// its stderr (JSON logs, audit events included) going to `stderr`.
    pub fn start_with(dir: &Path, kmip_addr: SocketAddr, stderr: Stdio) -> Self {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_openkcm"))
            .args(["dev", "--dir"])
            .arg(dir)
            .args(["--kmip-addr", &kmip_addr.to_string()])
            .args(["--https-addr", &free_port().to_string()])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn openkcm dev");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Self {
            child,
            kmip_addr,
            dir: dir.to_path_buf(),
            banner: String::new(),
            startup: Duration::ZERO,
            stdout: rx,
        };
        let deadline = started + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match process.stdout.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.starts_with("openkcm dev ready");
                    process.banner.push_str(&line);
                    process.banner.push('\n');
                    if ready {
                        break;
                    }
                }
                Err(e) => {
                    let status = process.child.try_wait().ok().flatten();
                    panic!(
                        "openkcm dev not ready after {START_TIMEOUT:?} ({e}; exit {status:?}); \
                         printed:\n{}",
                        process.banner
                    );
                }
            }
        }
        process.startup = started.elapsed();
        // The rest of the banner follows the ready line at once.
        while let Ok(line) = process.stdout.recv_timeout(Duration::from_millis(200)) {
            process.banner.push_str(&line);
            process.banner.push('\n');
        }
        assert!(
            std::net::TcpStream::connect(kmip_addr).is_ok(),
            "ready, yet {kmip_addr} does not accept"
        );
        process
    }

    pub fn pki(&self, name: &str) -> PathBuf {
        self.dir.join("pki").join(name)
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns the status and the time taken.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            if started.elapsed() > STOP_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("openkcm dev still running {STOP_TIMEOUT:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
