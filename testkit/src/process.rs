//! `openkcm` child processes: spawned without the developer's `OPENKCM_*` environment, their
//! output collected line by line, waited for by a readiness check (never a fixed sleep),
//! stopped with SIGTERM or killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A command for the binary at `bin` (`env!("CARGO_BIN_EXE_openkcm")`) with `args`, without
/// the environment variables a developer's shell may set that would change it.
pub fn command(bin: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars() {
        if key.starts_with("OPENKCM_")
            || key == "POSTGRES_CONNECTION"
            || key == "TENANT_ISOLATION_ENABLED"
        {
            cmd.env_remove(key);
        }
    }
    cmd.args(args);
    cmd
}

/// Lines a child printed so far, collected by a thread.
type Lines = Arc<Mutex<Vec<String>>>;

/// A running child process; killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Process {
    pub child: Child,
    what: String,
    stdout: Lines,
    stderr: Lines,
}

impl Process {
    /// Spawns `cmd` (stdin closed, stdout and stderr collected; stderr is also echoed to the
    /// test's output). `what` names it in failures.
    pub fn spawn(what: &str, cmd: Command) -> Self {
        Self::spawn_with_stderr(what, cmd, None)
    }

    /// [`Process::spawn`] with stderr going to `stderr` instead (not collected) when given.
    pub fn spawn_with_stderr(what: &str, mut cmd: Command, stderr: Option<Stdio>) -> Self {
        let collect_stderr = stderr.is_none();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.unwrap_or_else(Stdio::piped));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stdout = collect(child.stdout.take(), false);
        let stderr = collect(child.stderr.take().filter(|_| collect_stderr), true);
        Self {
            child,
            what: what.to_owned(),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed on stdout so far, line by line.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout lines").clone()
    }

    /// Everything it printed on stderr so far, line by line (empty when not collected).
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lines").clone()
    }

    /// Polls `ready` until it returns `Some`, within `deadline`. Fails with what the process
    /// printed on stderr when it exits first (see `net::retry_addr_in_use`) or takes too
    /// long; the process is killed then.
    pub fn wait_for<T>(
        &mut self,
        deadline: Duration,
        mut ready: impl FnMut(&mut Self) -> Option<T>,
    ) -> Result<T, String> {
        let start = Instant::now();
        loop {
            if let Some(value) = ready(self) {
                return Ok(value);
            }
            let failure = match self.child.try_wait() {
                Ok(Some(status)) => format!("exited at start ({status})"),
                _ if start.elapsed() > deadline => format!("not ready after {deadline:?}"),
                _ => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            };
            self.kill();
            // The collecting threads may still hold the last lines.
            std::thread::sleep(Duration::from_millis(100));
            return Err(format!(
                "{} {failure}; stderr:\n{}",
                self.what,
                self.stderr().join("\n")
            ));
        }
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded by `within`) for the exit; returns the status and the
    /// time it took. Fails the test (after a SIGKILL) when it does not exit in time.
    pub fn terminate(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {} failed", self.what);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            if started.elapsed() > within {
                self.kill();
                panic!("{} still running {within:?} after SIGTERM", self.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Collects `from`'s lines (echoing them to stderr with `echo`) on a thread of its own.
fn collect(from: Option<impl Read + Send + 'static>, echo: bool) -> Lines {
    let lines = Lines::default();
    if let Some(from) = from {
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                if echo {
                    eprintln!("{line}");
                }
                sink.lock().expect("output lines").push(line);
            }
        });
    }
    lines
}
