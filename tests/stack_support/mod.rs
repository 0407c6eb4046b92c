//! The production pieces as separate processes, on the certificates `openkcm dev` writes:
//! `openkcm keysvc` replicas on one throwaway PostgreSQL database (schema and grants by
//! `openkcm keysvc migrate`) and an `openkcm gateway` in front of them.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kmip::client::Client;
use testkit::postgres::PgDatabase;
use testkit::process::{command, Process};

use crate::dev_support::{free_port, DevProcess};
use crate::keysvc_support::{migrate, Keysvc, BIN};

/// A KMIP client over TLS with the dev PKI's certificate `who` (tenant-a, tenant-b,
/// stranger).
pub type TlsClient = Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Where `openkcm dev` wrote its PKI, routing rules and root key.
pub struct DevFiles {
    pub dir: PathBuf,
}

impl DevFiles {
    /// Runs `openkcm dev` in `dir` just long enough to write its files.
    pub fn write(dir: &Path) -> Self {
        DevProcess::start(dir).terminate();
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn pki(&self, name: &str) -> String {
        self.dir.join("pki").join(name).display().to_string()
    }

    /// `openkcm keysvc` arguments for a replica on `database`, on ephemeral ports.
    pub fn keysvc_args(&self, database: &str) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "keysvc".into(),
            "--listen-api".into(),
            "127.0.0.1:0".into(),
            "--listen-management".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            self.pki("keysvc.pem"),
            "--tls-key".into(),
            self.pki("keysvc-key.pem"),
            "--tls-client-ca".into(),
            self.pki("internal/ca.pem"),
            "--allow-gateway".into(),
            "spiffe://openkcm.dev/gateway".into(),
            "--database".into(),
            database.into(),
            "--root-key-id".into(),
            "dev-root-1".into(),
            "--root-key-file".into(),
        ];
        args.push(self.dir.join("root-key.b64").display().to_string());
        args
    }

    /// The `openkcm gateway` command in front of `upstreams`, KMIP on `kmip_addr`.
    pub fn gateway_command(&self, kmip_addr: SocketAddr, upstreams: &[SocketAddr]) -> Command {
        self.gateway_command_at(kmip_addr, free_port(), upstreams)
    }

    /// [`DevFiles::gateway_command`] with the HTTPS listener on `https_addr`.
    pub fn gateway_command_at(
        &self,
        kmip_addr: SocketAddr,
        https_addr: SocketAddr,
        upstreams: &[SocketAddr],
    ) -> Command {
        let mut cmd = command(BIN, &["gateway"]);
        cmd.args(["--kmip-addr", &kmip_addr.to_string()])
            .args(["--https-addr", &https_addr.to_string()])
            .args([
                "--tls-cert",
                &self.pki("gateway.pem"),
                "--tls-key",
                &self.pki("gateway-key.pem"),
            ])
            .args(["--client-ca", &self.pki("ca.pem")])
            .arg("--policies")
            .arg(self.dir.join("policies"))
            .args(["--upstream-ca", &self.pki("internal/ca.pem")])
            .args(["--upstream-cert", &self.pki("gateway-upstream.pem")])
            .args(["--upstream-key", &self.pki("gateway-upstream-key.pem")])
            .args(["--upstream-server-name", "keysvc", "--grace-period", "2"]);
        for upstream in upstreams {
            cmd.args(["--upstream", &upstream.to_string()]);
        }
        cmd
    }

    /// A KMIP client of `who` connected to `addr`.
    pub async fn client(&self, addr: SocketAddr, who: &str) -> Result<TlsClient, String> {
        let connector = kmip::client::tls::connector_from_pem_files(
            self.pki("ca.pem"),
            self.pki(&format!("{who}.pem")),
            self.pki(&format!("{who}-key.pem")),
        )
        .map_err(|e| e.to_string())?;
        Client::connect_tls(&addr.to_string(), "localhost", &connector)
            .await
            .map_err(|e| e.to_string())
    }
}

/// keysvc replicas on one PostgreSQL database behind one gateway.
pub struct Stack {
    pub files: DevFiles,
    pub replicas: Vec<Keysvc>,
    pub gateway: Process,
    pub kmip_addr: SocketAddr,
    pub db: PgDatabase,
}

impl Stack {
    /// Writes the dev files into `dir`, migrates a fresh database, starts `replicas` keysvc
    /// processes and a gateway, and waits until tenant-a is served through it.
    pub async fn start(dir: &Path, replicas: usize) -> Self {
        let files = DevFiles::write(&dir.join("dev"));
        let db = PgDatabase::create("stack").await;
        migrate(&db.owner_url(), &db.role);
        let replicas: Vec<Keysvc> = (0..replicas)
            .map(|_| Keysvc::spawn(&files.keysvc_args(&db.app_url())))
            .collect();
        let upstreams: Vec<SocketAddr> = replicas.iter().map(|r| r.api).collect();
        let kmip_addr = free_port();
        let gateway = Process::spawn(
            "openkcm gateway",
            files.gateway_command(kmip_addr, &upstreams),
        );
        let stack = Self {
            files,
            replicas,
            gateway,
            kmip_addr,
            db,
        };
        stack.wait_until_served().await;
        stack
    }

    async fn wait_until_served(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = async {
                let mut client = self.client("tenant-a").await?;
                client.query(&[]).await.map_err(|e| e.to_string())
            };
            match attempt.await {
                Ok(_) => return,
                Err(e) => {
                    assert!(Instant::now() < deadline, "the gateway never served: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    pub async fn client(&self, who: &str) -> Result<TlsClient, String> {
        self.files.client(self.kmip_addr, who).await
    }
}

/// Peak resident memory of a process so far (VmHWM), bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .expect("VmHWM in /proc/PID/status")
}
