//! ServiceDiscovery endpoint probes: KMIP — TCP, TLS handshake (with the probe's client
//! certificate when configured) and a DiscoverVersions answer; HTTPS — a GET of the health
//! path answered 2xx. Each probe is bounded by [`PROBE_TIMEOUT`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmip::client::Client;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The longest one endpoint's probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    pub message: String,
    pub latency: Duration,
}

/// The TLS set-up of the probes: trust and the client certificate.
#[derive(Clone, Debug, Default)]
pub struct ProbeTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ProbeTls {
    /// A connector from the files as they are now (cert-manager renews them in place).
    fn connector(&self, alpn: &[&[u8]]) -> Result<TlsConnector, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                for cert in kmip::client::tls::certs_from_pem(ca).map_err(|e| e.to_string())? {
                    roots.add(cert).map_err(|e| format!("probe CA: {e}"))?;
                }
            }
            None => return Err("no probe CA configured (--probe-ca)".into()),
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = kmip::client::tls::certs_from_pem(cert).map_err(|e| e.to_string())?;
                let key = kmip::client::tls::key_from_pem(key).map_err(|e| e.to_string())?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("probe certificate: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

/// Probes a KMIP endpoint at `connect` (HOST:PORT) presenting `host` as the TLS name.
pub async fn probe_kmip(tls: &ProbeTls, host: &str, connect: &str) -> Health {
    let started = Instant::now();
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, async {
        let stream = handshake(tls, host, connect, &[]).await?;
        let mut client = Client::new(stream);
        client.set_timeout(PROBE_TIMEOUT);
        match client.discover_versions(&[]).await {
            Ok(versions) => Ok(format!(
                "DiscoverVersions answered: {}",
                versions
                    .iter()
                    .map(|v| format!("{}.{}", v.major, v.minor))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            // A KMIP error answer still proves a KMIP server behind the handshake; the
            // probe's certificate is normally routed to no tenant (Permission Denied).
            Err(kmip::client::ClientError::Operation {
                reason: Some(reason),
                message,
                ..
            }) => Ok(format!(
                "KMIP answered DiscoverVersions: {reason:?} ({message})"
            )),
            Err(e) => Err(format!("DiscoverVersions: {e}")),
        }
    })
    .await;
    finish(started, outcome)
}

/// Probes an HTTPS endpoint: `GET path` answered 2xx.
pub async fn probe_https(tls: &ProbeTls, host: &str, connect: &str, path: &str) -> Health {
    let started = Instant::now();
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, async {
        let stream = handshake(tls, host, connect, &[b"http/1.1"]).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("GET {path}: {e}"))?;
        let driver = tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::USER_AGENT, "openkcm-controller")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| format!("GET {path}: {e}"))?;
        let answer = sender.send_request(request).await;
        driver.abort();
        let code = answer.map_err(|e| format!("GET {path}: {e}"))?.status();
        if code.is_success() {
            Ok(format!("GET {path}: {}", code.as_u16()))
        } else {
            Err(format!("GET {path}: {}", code.as_u16()))
        }
    })
    .await;
    finish(started, outcome)
}

fn finish(
    started: Instant,
    outcome: Result<Result<String, String>, tokio::time::error::Elapsed>,
) -> Health {
    let latency = started.elapsed();
    match outcome {
        Ok(Ok(message)) => Health {
            healthy: true,
            message,
            latency,
        },
        Ok(Err(message)) => Health {
            healthy: false,
            message,
            latency,
        },
        Err(_) => Health {
            healthy: false,
            message: format!("no answer within {PROBE_TIMEOUT:?}"),
            latency,
        },
    }
}

async fn handshake(
    tls: &ProbeTls,
    host: &str,
    connect: &str,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let connector = tls.connector(alpn)?;
    let tcp = TcpStream::connect(connect)
        .await
        .map_err(|e| format!("connect {connect}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {host}: {e}"))
}
