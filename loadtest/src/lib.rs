//! `openkcm loadtest`: a KMIP load generator that drives any KMIP server over TTLV + mutual
//! TLS (ours, PyKMIP, others), or keysvc's internal HTTP/2 API directly.
//!
//! ```text
//!  config ─► set-up: create + activate K keys (or --uid), two Gets each (warm);
//!            sign-*: K key pairs, one Sign + Signature Verify each, two Signs (warm)
//!         ─► connect N connections ─► load: one task per connection, one request in flight
//!              closed loop: send, wait, send ...          (--rate max)
//!              open loop:   schedule ─► queue ─► tasks    (--rate R; latency from due time)
//!         ─► stats (HDR histograms, errors by Result Reason) ─► report (text, --json)
//! ```
//!
//! Requests are encoded once before the run ([`workload`]); answers are checked by reading
//! the Result Status and Reason headers only, so the generator spends its CPU on TLS, not on
//! KMIP, when it shares the machine with the server it measures.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

pub mod chart;
pub mod config;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod stats;
pub mod transport;
pub mod workload;

/// `openkcm loadtest` flags.
#[derive(Debug, Clone, Args)]
pub struct LoadtestArgs {
    /// The KMIP server (TTLV over mutual TLS). Loopback only unless --allow-remote.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Instead of --addr: keysvc's internal API, `POST /v1/kmip` over HTTP/2 + mTLS, with
    /// the gateway's client certificate (--cert/--key) and the tenant header (--tenant).
    #[arg(long, value_name = "https://HOST:PORT")]
    pub http2_keysvc: Option<String>,
    /// Tenant sent to keysvc with --http2-keysvc.
    #[arg(long, value_name = "TENANT", default_value = "tenant-a")]
    pub tenant: String,
    /// CA certificate(s) that sign the server's certificate (PEM).
    #[arg(long, value_name = "CA.pem")]
    pub ca: PathBuf,
    /// Client certificate chain (PEM).
    #[arg(long, value_name = "CERT.pem")]
    pub cert: PathBuf,
    /// Client private key (PEM).
    #[arg(long, value_name = "KEY.pem")]
    pub key: PathBuf,
    /// Name checked against the server's certificate.
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    pub server_name: String,
    /// get, create, encrypt, decrypt, mix (60% get, 20% encrypt, 20% decrypt), idle
    /// (open the connections and hold them, sending nothing), create-key-pair-rsa2048,
    /// create-key-pair-p256, sign-rsa2048 or sign-p256 (Sign 32 bytes with the set-up's key
    /// pairs).
    #[arg(long, value_name = "OP", default_value = "get")]
    pub op: String,
    /// Connections, each with one request in flight (1-20000).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub connections: u32,
    /// `max` (closed loop) or a total rate per second (open loop: latency is measured from
    /// when each request was due, so queueing is not hidden).
    #[arg(long, value_name = "R/s|max", default_value = "max")]
    pub rate: String,
    /// Measured time (e.g. 10s, 2m; at most 1h).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub duration: String,
    /// Load before measuring, not counted.
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub warmup: String,
    /// Keys the set-up phase creates and activates (1-1000000); key pairs for sign-*.
    #[arg(long, value_name = "K", default_value_t = 16)]
    pub keys: u32,
    /// Use this existing key instead of creating keys (repeatable; it must be Active for
    /// encrypt/decrypt; for sign-*, an Active private key of that kind).
    #[arg(long, value_name = "UID")]
    pub uid: Vec<String>,
    /// KMIP protocol version of the requests.
    #[arg(long, value_name = "VERSION", default_value = "1.2")]
    pub kmip_version: String,
    /// Stop after this many requests (or at the end of --duration, whichever is first).
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Per-request timeout; a timed-out connection is replaced.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub timeout: String,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Allow a non-loopback target.
    #[arg(long)]
    pub allow_remote: bool,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Runtime worker threads [default: one per core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `openkcm loadtest`: set-up, run, report. Exit 0 when the run completed (whatever its
/// error count: the report says), 2 for bad flags, 1 when it could not run.
pub fn run(args: LoadtestArgs) -> ExitCode {
    let config = match config::Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            for line in &e.0 {
                eprintln!("openkcm loadtest: {line}");
            }
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.threads {
        builder.worker_threads(n.clamp(1, 64));
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("openkcm loadtest: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = config.json.clone();
    let report = match runtime.block_on(runner::run(config)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("openkcm loadtest: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.shutdown_background();
    print!("{}", report.text());
    if let Some(path) = json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|mut bytes| {
                bytes.push(b'\n');
                std::fs::write(&path, bytes).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            eprintln!("openkcm loadtest: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
