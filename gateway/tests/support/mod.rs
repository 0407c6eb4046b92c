//! Harness for the gateway integration tests: a test PKI (testkit), the TenantRouting file
//! `openkcm dev` writes, keysvc in-process on port 0, and the gateway's Pingora server on its
//! own thread.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gateway::config::GatewayFlags;
use gateway::metrics::GatewayMetrics;
use gateway::server::Gateway;
use keysvc::config::{self, ConfigFlags, ConfigSources};
use keysvc::envelope::RootKey;
use keysvc::server::{self, KeysvcServer};
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use testkit::certs::{self, TestPki};
use testkit::net::{free_addr, retry_addr_in_use_async};
use tokio::sync::Notify;

/// How long an asynchronous effect may take before a test fails.
pub const EVENTUALLY: Duration = Duration::from_secs(15);
/// The keysvc server name the gateway checks (its `--upstream-server-name` default).
pub const KEYSVC_NAME: &str = "keysvc";
/// The gateway's identity towards keysvc (on keysvc's allow-list).
pub const GATEWAY_CN: &str = "openkcm-gateway";
/// The gateway's upstream identity: the SAN URI keysvc allow-lists.
pub const GATEWAY_URI: &str = "spiffe://openkcm.test/gateway";

/// The tenants the routing rules know; each has a client certificate `<tenant>.pem`.
pub const TENANTS: [&str; 2] = ["tenant-a", "tenant-b"];

/// The routing rules of `policies/routing.yaml`: `openkcm dev`'s.
pub fn routing_yaml() -> String {
    gateway::routing::tenant_ou_rules(&TENANTS)
}

/// The test PKI (`keysvc`, `gateway`, `gateway-upstream`, the tenants, `stranger`), a root
/// key and the routing rules, as files in a temporary directory.
pub struct Pki(TestPki);

impl Deref for Pki {
    type Target = TestPki;
    fn deref(&self) -> &TestPki {
        &self.0
    }
}

impl Pki {
    pub fn generate() -> Self {
        let pki = Self(TestPki::new("OpenKCM gateway test CA"));
        let mut keysvc = certs::localhost_server(KEYSVC_NAME);
        keysvc.dns_names.push(KEYSVC_NAME.into());
        pki.issue("keysvc", &keysvc);
        let mut upstream = certs::client(GATEWAY_CN, &[]);
        upstream.uris.push(GATEWAY_URI.into());
        pki.issue("gateway-upstream", &upstream);
        pki.issue_gateway_cert("gateway");
        for tenant in TENANTS {
            pki.issue(tenant, &certs::tenant(tenant));
        }
        pki.issue("stranger", &certs::client("stranger", &["nobody"]));
        let root = RootKey::generate("root-a").expect("root key");
        pki.write("root.key", &root.to_base64());
        std::fs::create_dir(pki.path("policies")).expect("policies dir");
        pki.write("policies/routing.yaml", &routing_yaml());
        pki
    }

    /// Issues a new server certificate for the gateway's listeners into `name`.pem /
    /// `name`-key.pem.
    pub fn issue_gateway_cert(&self, name: &str) {
        self.issue(name, &certs::localhost_server("openkcm-gateway-kmip"));
    }

    /// A TLS client that presents no certificate.
    pub fn anonymous_connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(Arc::new(self.client_config(None)))
    }

    pub fn keysvc_flags(&self) -> ConfigFlags {
        ConfigFlags {
            listen_api: Some("127.0.0.1:0".into()),
            listen_management: Some("127.0.0.1:0".into()),
            tls_cert: Some(self.text("keysvc.pem")),
            tls_key: Some(self.text("keysvc-key.pem")),
            tls_client_ca: Some(self.text("ca.pem")),
            allow_gateway: vec![GATEWAY_URI.into()],
            database: Some(format!("sqlite://{}", self.path("keys.db").display())),
            root_key_id: Some("root-a".into()),
            root_key_file: Some(self.text("root.key")),
            ..ConfigFlags::default()
        }
    }

    /// The gateway's flags: KMIP on `kmip_addr`, forwarding to `upstreams`.
    pub fn gateway_flags(&self, kmip_addr: SocketAddr, upstreams: &[SocketAddr]) -> GatewayFlags {
        GatewayFlags {
            kmip_addr: Some(kmip_addr.to_string()),
            https_addr: Some(free_addr().to_string()),
            tls_cert: Some(self.path("gateway.pem")),
            tls_key: Some(self.path("gateway-key.pem")),
            client_ca: Some(self.path("ca.pem")),
            policies: vec![self.path("policies")],
            upstreams: upstreams.iter().map(|a| a.to_string()).collect(),
            upstream_resolve_interval: None,
            upstream_ca: Some(self.path("ca.pem")),
            upstream_cert: Some(self.path("gateway-upstream.pem")),
            upstream_key: Some(self.path("gateway-upstream-key.pem")),
            upstream_server_name: Some(KEYSVC_NAME.into()),
            ..GatewayFlags::default()
        }
    }
}

pub use testkit::kmip_client::TlsClient;

/// `who` connected to the KMIP listener at `addr`; connect and every request bounded by
/// [`EVENTUALLY`].
pub async fn kmip_client(pki: &Pki, addr: &str, who: &str) -> TlsClient {
    testkit::kmip_client::connect(pki, addr, who, kmip::ProtocolVersion::V1_4, EVENTUALLY).await
}

/// keysvc started in this process on port 0.
pub async fn start_keysvc(pki: &Pki) -> KeysvcServer {
    start_keysvc_with(pki.keysvc_flags()).await
}

/// [`start_keysvc`] on the key store `database`.
pub async fn start_keysvc_on(pki: &Pki, database: &str) -> KeysvcServer {
    let mut flags = pki.keysvc_flags();
    flags.database = Some(database.to_owned());
    start_keysvc_with(flags).await
}

async fn start_keysvc_with(flags: ConfigFlags) -> KeysvcServer {
    let (config, _) = config::load_serve(&ConfigSources::new(flags))
        .unwrap_or_else(|e| panic!("keysvc config: {e}"));
    let store = server::open_store(&config.store.database)
        .await
        .unwrap_or_else(|e| panic!("open store: {e}"));
    KeysvcServer::start(&config, store)
        .await
        .unwrap_or_else(|e| panic!("keysvc start: {e}"))
}

/// Tells a running Pingora server to stop.
#[derive(Clone, Default)]
pub struct StopSignal(Arc<Notify>);

#[async_trait]
impl ShutdownSignalWatch for StopSignal {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}

/// The gateway running on its own thread; stopped on drop.
pub struct RunningGateway {
    pub addr: SocketAddr,
    /// The management + KMIP-over-HTTPS listener.
    pub https_addr: SocketAddr,
    pub upstream: Arc<gateway::upstream::UpstreamPool>,
    pub metrics: Arc<GatewayMetrics>,
    stop: StopSignal,
    thread: Option<JoinHandle<()>>,
}

impl RunningGateway {
    /// Starts the gateway and waits (bounded) until its KMIP port accepts connections.
    pub async fn start(pki: &Pki, upstreams: &[SocketAddr]) -> Self {
        Self::start_with(pki, upstreams, |_| {}).await
    }

    /// [`RunningGateway::start`] with some flags changed by `adjust`. Pingora binds its
    /// listeners itself: a start whose ports were taken meanwhile is retried on others.
    pub async fn start_with(
        pki: &Pki,
        upstreams: &[SocketAddr],
        adjust: impl Fn(&mut GatewayFlags),
    ) -> Self {
        retry_addr_in_use_async("the gateway", || Self::try_start(pki, upstreams, &adjust)).await
    }

    /// One start on free ports; the error of a server that stopped before it listened.
    async fn try_start(
        pki: &Pki,
        upstreams: &[SocketAddr],
        adjust: &impl Fn(&mut GatewayFlags),
    ) -> Result<Self, String> {
        let addr = free_addr();
        let mut flags = pki.gateway_flags(addr, upstreams);
        adjust(&mut flags);
        let config = flags
            .resolve()
            .unwrap_or_else(|e| panic!("gateway flags: {e}"));
        let gateway = Gateway::build(&config).unwrap_or_else(|e| panic!("gateway: {e}"));
        let metrics = gateway.metrics();
        let upstream = gateway.upstream();
        let https_addr = config.https_addr;
        let stop = StopSignal::default();
        let signal = stop.clone();
        let thread = std::thread::spawn(move || gateway.run(Box::new(signal)));
        let deadline = Instant::now() + EVENTUALLY;
        while tokio::net::TcpStream::connect(addr).await.is_err()
            || tokio::net::TcpStream::connect(https_addr).await.is_err()
        {
            if thread.is_finished() {
                return Err(match thread.join() {
                    Err(panic) => panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "the gateway panicked".into()),
                    Ok(()) => "the gateway stopped at start".into(),
                });
            }
            assert!(
                Instant::now() < deadline,
                "gateway never listened on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            addr,
            https_addr,
            upstream,
            metrics,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr_text(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        // notify_one stores a permit if the server is not waiting yet.
        self.stop.0.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How a fake keysvc replica misbehaves on `/v1/kmip` (its `/ready` answers 200, so the
/// gateway keeps it in rotation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Takes the request and answers HTTP 500: the request reached it.
    Fails,
    /// Resets the stream with REFUSED_STREAM before processing (RFC 9113 §8.7): the
    /// request provably never reached it.
    RefusesStreams,
}

/// A replica that passes health checks but misbehaves on every KMIP request.
pub async fn start_failing_replica(pki: &Pki) -> SocketAddr {
    start_misbehaving_replica(pki, Misbehaviour::Fails).await
}

/// A replica that passes health checks and misbehaves on KMIP requests as `how` says.
pub async fn start_misbehaving_replica(pki: &Pki, how: Misbehaviour) -> SocketAddr {
    let mut config = pki.server_config("keysvc", false);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = testkit::net::tokio_listener().await;
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut connection) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    if request.uri().path() != "/ready" && how == Misbehaviour::RefusesStreams {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let status = if request.uri().path() == "/ready" {
                        200
                    } else {
                        500
                    };
                    let response = http::Response::builder()
                        .status(status)
                        .body(())
                        .expect("response");
                    if let Ok(mut body) = respond.send_response(response, false) {
                        let _ = body.send_data(bytes::Bytes::from_static(b"broken replica"), true);
                    }
                }
            });
        }
    });
    addr
}

/// One HTTP/1.1 request over TLS (`connector` decides whether a client certificate is
/// sent); returns the status and the body. `Connection: close`, read to EOF, bounded.
pub async fn https_request(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
             content-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).await.expect("write head");
        tls.write_all(body).await.expect("write body");
        tls.flush().await.expect("flush");
        let mut raw = Vec::new();
        // A close_notify-less EOF is fine here: the framing is content-length.
        let _ = tls.read_to_end(&mut raw).await;
        raw
    };
    let raw = tokio::time::timeout(EVENTUALLY, exchange)
        .await
        .expect("HTTPS exchange in time");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    (status, raw[split + 4..].to_vec())
}

/// Waits until `check` holds, failing after [`EVENTUALLY`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + EVENTUALLY;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
