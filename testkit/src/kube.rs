//! A real Kubernetes API server (kube-apiserver v1.20.2 and etcd 3.4, built from Debian's
//! packages by `scripts/kube-apiserver.sh`, which `make test` runs) started on loopback for
//! one test, the way controller-runtime's envtest runs them; `kubectl` (the project's venv)
//! talks to it. Killed with its etcd when dropped.
//!
//! Identities: a cluster admin (client certificate, group `system:masters`) and any number of
//! token users, e.g. a ServiceAccount's name, whose rights are only those RBAC gives.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pki::CertSpec;

use crate::certs::{localhost_server, TestPki};
use crate::net::free_addr;
use crate::process::Process;

/// Where `scripts/kube-apiserver.sh` caches the binaries (same rule as the script).
pub fn binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os("OPENKCM_KUBE_DIR") {
        return PathBuf::from(dir).join("bin");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/openkcm/kube-v1.20.2/bin")
}

/// The repository's root (testkit is one of its crates).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The `kubectl` the tests use: the project's venv (scripts/bootstrap.sh).
pub fn kubectl_binary() -> PathBuf {
    let venv = std::env::var_os("OPENKCM_VENV").map_or_else(|| repo().join(".venv"), PathBuf::from);
    venv.join("bin/kubectl")
}

/// A running API server and its etcd.
#[derive(Debug)]
pub struct ApiServer {
    pki: TestPki,
    url: String,
    /// Token users: (token, user name).
    tokens: Vec<(String, String)>,
    apiserver: Process,
    _etcd: Process,
}

impl ApiServer {
    /// Starts etcd and the API server; returns once `/readyz` answers. `token_users` are the
    /// users with a bearer token (their token is their name's kubeconfig: [`Self::kubeconfig_for`]).
    pub fn start(token_users: &[&str]) -> Self {
        let bin = binaries();
        for name in ["kube-apiserver", "etcd"] {
            assert!(
                bin.join(name).is_file(),
                "{} missing: run `bash scripts/kube-apiserver.sh` (make test does)",
                bin.join(name).display()
            );
        }
        let pki = TestPki::new("kube-test-ca");
        pki.issue("apiserver", &localhost_server("kube-apiserver"));
        pki.issue(
            "admin",
            &CertSpec {
                organization: Some("system:masters".into()),
                client: true,
                ..CertSpec::new("kube-admin")
            },
        );
        // Service-account tokens are signed with this key (an ECDSA P-256 PKCS#8 key).
        pki.issue(
            "service-accounts",
            &CertSpec {
                client: true,
                ..CertSpec::new("service-accounts")
            },
        );
        let mut tokens = Vec::new();
        let mut token_file = String::new();
        for (i, user) in token_users.iter().enumerate() {
            let token = format!("test-token-{i}-{}", std::process::id());
            let _ = writeln!(token_file, "{token},{user},uid-{i}");
            tokens.push((token, (*user).to_owned()));
        }
        let tokens_path = pki.write("tokens.csv", &token_file);

        let etcd_client = free_addr();
        let etcd_peer = free_addr();
        let data = pki.dir().join("etcd");
        let mut etcd_cmd = Command::new(bin.join("etcd"));
        etcd_cmd
            .arg("--name=test")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls=http://{etcd_client}"))
            .arg(format!("--advertise-client-urls=http://{etcd_client}"))
            .arg(format!("--listen-peer-urls=http://{etcd_peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://{etcd_peer}"))
            .arg(format!("--initial-cluster=test=http://{etcd_peer}"))
            .arg("--unsafe-no-fsync")
            .arg("--log-level=error");
        let etcd = Process::spawn_with_stderr("etcd", etcd_cmd, Some(Stdio::null()));

        let secure = free_addr();
        let p = |name: &str| pki.path(name).display().to_string();
        let mut cmd = Command::new(bin.join("kube-apiserver"));
        cmd.arg(format!("--etcd-servers=http://{etcd_client}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", secure.port()))
            .arg("--insecure-port=0")
            .arg(format!("--tls-cert-file={}", p("apiserver.pem")))
            .arg(format!("--tls-private-key-file={}", p("apiserver-key.pem")))
            .arg(format!("--client-ca-file={}", p("ca.pem")))
            .arg(format!("--token-auth-file={}", tokens_path.display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!(
                "--service-account-key-file={}",
                p("service-accounts.pem")
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                p("service-accounts-key.pem")
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg(format!(
                "--cert-dir={}",
                pki.dir().join("apiserver-certs").display()
            ))
            .arg("--v=0");
        let apiserver = Process::spawn("kube-apiserver", cmd);
        let mut server = Self {
            url: format!("https://{secure}"),
            pki,
            tokens,
            apiserver,
            _etcd: etcd,
        };
        std::fs::write(server.kubeconfig(), server.kubeconfig_text(None)).expect("kubeconfig");
        for (_, user) in server.tokens.clone() {
            std::fs::write(
                server.kubeconfig_for(&user),
                server.kubeconfig_text(Some(&user)),
            )
            .expect("kubeconfig");
        }
        let kubeconfig = server.kubeconfig();
        server
            .apiserver
            .wait_for(Duration::from_secs(60), |_| {
                let out = kubectl_with(&kubeconfig, &["get", "--raw", "/readyz"], None);
                out.status.success().then_some(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        server
    }

    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA of the API server's certificate and of its client certificates.
    pub fn ca_pem(&self) -> String {
        self.pki.ca.cert_pem().to_owned()
    }

    /// The cluster admin's kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.pki.path("admin.kubeconfig")
    }

    /// The kubeconfig of token user `user` (one of `start`'s `token_users`).
    pub fn kubeconfig_for(&self, user: &str) -> PathBuf {
        let safe: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.pki.path(&format!("{safe}.kubeconfig"))
    }

    fn kubeconfig_text(&self, user: Option<&str>) -> String {
        let credentials = match user {
            None => format!(
                "client-certificate: {}\n    client-key: {}",
                self.pki.path("admin.pem").display(),
                self.pki.path("admin-key.pem").display()
            ),
            Some(user) => {
                let token = self
                    .tokens
                    .iter()
                    .find(|(_, u)| u == user)
                    .map(|(t, _)| t.clone())
                    .expect("a token user");
                format!("token: {token}")
            }
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    \
             certificate-authority: {}\nusers:\n- name: user\n  user:\n    {credentials}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: user\n\
             current-context: test\n",
            self.url,
            self.pki.path("ca.pem").display()
        )
    }

    /// `kubectl ARGS` as the cluster admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        kubectl_with(&self.kubeconfig(), args, None)
    }

    /// `kubectl ARGS` as the admin with `stdin` fed to it (`apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        kubectl_with(&self.kubeconfig(), args, Some(stdin))
    }

    /// `kubectl ARGS` that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until every CRD is Established (its kinds can be written).
    pub fn wait_for_crds(&self) {
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=30s",
        ]);
    }

    /// Applies YAML (as admin); must succeed.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "kubectl apply: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl get … -o json`, parsed; `None` when it does not exist.
    pub fn get_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&all);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("NotFound") || err.contains("not found"),
                "kubectl {all:?}: {err}"
            );
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("kubectl JSON"))
    }

    /// Polls `check` until it returns `Some` or `within` passes (then panics with `what`).
    pub fn eventually<T>(
        &self,
        within: Duration,
        what: &str,
        mut check: impl FnMut() -> Option<T>,
    ) -> (T, Duration) {
        let started = Instant::now();
        loop {
            if let Some(value) = check() {
                return (value, started.elapsed());
            }
            assert!(started.elapsed() < within, "not within {within:?}: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `kubectl ARGS` with `kubeconfig` (and `stdin`).
pub fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut cmd = Command::new(kubectl_binary());
    cmd.env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "run {}: {e} (make bootstrap installs it)",
            kubectl_binary().display()
        )
    });
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write kubectl stdin");
    }
    child.wait_with_output().expect("kubectl output")
}
