//! Runs real `openkcm keysvc` processes for the root package's tests, on top of the keysvc
//! test harness (PKI, HTTP/2 + mTLS client, KMIP builders, throwaway PostgreSQL).
#![allow(dead_code)] // each test binary uses its own subset

#[path = "../../keysvc/tests/support/mod.rs"]
pub mod harness;

use std::net::SocketAddr;
use std::process::{ExitStatus, Output};
use std::time::{Duration, Instant};

use testkit::process::{command, Process};

/// How long a process may take to bind its listeners (a debug build on a busy 2-core CI
/// machine; a release build takes milliseconds).
pub const START_DEADLINE: Duration = Duration::from_secs(30);

pub const BIN: &str = env!("CARGO_BIN_EXE_openkcm");

/// `openkcm ARGS` run to completion, without the developer's `OPENKCM_*` environment.
pub fn run(args: &[String]) -> Output {
    let mut cmd = command(BIN, &[]);
    cmd.args(args).output().expect("run openkcm")
}

/// `openkcm keysvc migrate` of the database at `owner_url` for the runtime role `role`;
/// panics with its stderr if it fails.
pub fn migrate(owner_url: &str, role: &str) {
    let migrated = run(&[
        "keysvc".into(),
        "migrate".into(),
        "--database".into(),
        owner_url.into(),
        "--app-role".into(),
        role.into(),
    ]);
    assert!(
        migrated.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&migrated.stderr)
    );
}

/// A running `openkcm keysvc` (testkit's [`Process`]); killed when dropped.
pub struct Keysvc {
    process: Process,
    pub api: SocketAddr,
    pub management: SocketAddr,
    /// When the process was spawned.
    pub spawned: Instant,
}

impl Keysvc {
    /// Spawns `openkcm ARGS` and waits for its "keysvc listening" log line.
    pub fn spawn(args: &[String]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    /// [`Keysvc::spawn`] with environment variables (e.g. `POSTGRES_CONNECTION`).
    pub fn spawn_with_env(args: &[String], env: &[(&str, &str)]) -> Self {
        let mut cmd = command(BIN, &[]);
        cmd.args(args).envs(env.iter().copied());
        Self::spawn_command(cmd)
    }

    /// [`Keysvc::spawn`] of a prepared command (e.g. `ip netns exec NS openkcm keysvc …`).
    pub fn spawn_command(cmd: std::process::Command) -> Self {
        let spawned = Instant::now();
        let mut process = Process::spawn("openkcm keysvc", cmd);
        let listening = |p: &mut Process| {
            p.stderr().iter().find_map(|line| {
                let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
                if v["message"] != "keysvc listening" {
                    return None;
                }
                let addr = |k: &str| v[k].as_str().and_then(|s| s.parse::<SocketAddr>().ok());
                Some((addr("api")?, addr("management")?))
            })
        };
        let (api, management) = process
            .wait_for(START_DEADLINE, listening)
            .unwrap_or_else(|e| panic!("keysvc did not report its listeners: {e}"));
        Self {
            process,
            api,
            management,
            spawned,
        }
    }

    /// Every stderr line so far (JSON logs).
    pub fn logs(&self) -> Vec<String> {
        self.process.stderr()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        self.process.kill();
    }

    /// SIGTERM, then waits (bounded) for the process to exit by itself.
    pub fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        self.process.terminate(deadline).0
    }
}
