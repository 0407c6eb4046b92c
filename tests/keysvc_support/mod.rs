//! Runs real `openkcm keysvc` processes for the root package's tests, on top of the keysvc
//! test harness (PKI, HTTP/2 + mTLS client, KMIP builders, throwaway PostgreSQL).
#![allow(dead_code)] // each test binary uses its own subset

#[path = "../../keysvc/tests/support/mod.rs"]
pub mod harness;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a process may take to bind its listeners (a debug build on a busy 2-core CI
/// machine; a release build takes milliseconds).
pub const START_DEADLINE: Duration = Duration::from_secs(30);

pub const BIN: &str = env!("CARGO_BIN_EXE_openkcm");

/// Environment variables a developer's shell may set that would change the process under
/// test: removed from its environment.
fn inherited_config_vars() -> Vec<String> {
    std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| {
            k.starts_with("OPENKCM_")
                || k == "POSTGRES_CONNECTION"
                || k == "TENANT_ISOLATION_ENABLED"
        })
        .collect()
}

/// `openkcm ARGS` run to completion.
pub fn run(args: &[String]) -> Output {
    let mut cmd = Command::new(BIN);
    for k in inherited_config_vars() {
        cmd.env_remove(k);
    }
    cmd.args(args).output().expect("run openkcm")
}

/// A running `openkcm keysvc`; killed when dropped.
pub struct Keysvc {
    child: Child,
    pub api: SocketAddr,
    pub management: SocketAddr,
    /// Every stderr line so far (JSON logs).
    logs: Arc<Mutex<Vec<String>>>,
    /// When the process was spawned.
    pub spawned: Instant,
}

impl Keysvc {
    /// Spawns `openkcm ARGS` and waits for its "keysvc listening" log line.
    pub fn spawn(args: &[String]) -> Self {
        let spawned = Instant::now();
        let mut cmd = Command::new(BIN);
        for k in inherited_config_vars() {
            cmd.env_remove(k);
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openkcm keysvc");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (listening_tx, listening_rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["message"] == "keysvc listening" {
                        let addr =
                            |k: &str| v[k].as_str().and_then(|s| s.parse::<SocketAddr>().ok());
                        let _ = listening_tx.send((addr("api"), addr("management")));
                    }
                }
                sink.lock().expect("log lines").push(line);
            }
        });
        let (api, management) = match listening_rx.recv_timeout(START_DEADLINE) {
            Ok((Some(api), Some(management))) => (api, management),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "keysvc did not report its listeners ({other:?}); stderr:\n{}",
                    logs.lock().map(|l| l.join("\n")).unwrap_or_default()
                );
            }
        };
        Self {
            child,
            api,
            management,
            logs,
            spawned,
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lines").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded) for the process to exit by itself.
    pub fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM failed");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "keysvc still running {deadline:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Keysvc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
