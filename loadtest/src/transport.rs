//! How requests travel: one connection, one request outstanding at a time (what KMIP over
//! TLS allows most servers), either TTLV over mutual TLS or keysvc's HTTP/2 API.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use kmip::client::tls;
use kmip::contract;
use kmip::framing::{read_message, ReadError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::{Config, Target};

/// Largest response accepted: KMIP's usual 1 MiB message limit.
const MAX_RESPONSE: usize = kmip::ttlv::DEFAULT_MAX_MESSAGE_SIZE;

/// Why an exchange failed below KMIP: the connection is unusable afterwards.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("server closed the connection")]
    Closed,
    #[error("timeout")]
    Timeout,
    #[error("bad frame: {0}")]
    Frame(String),
    #[error("HTTP/2: {0}")]
    Http2(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TransportError {
    /// A short stable label for error tables ("transport: timeout").
    pub fn label(&self) -> &'static str {
        match self {
            TransportError::Connect(_) => "transport: connect failed",
            TransportError::Handshake(_) => "transport: TLS handshake failed",
            TransportError::Io(_) => "transport: I/O error",
            TransportError::Closed => "transport: closed by server",
            TransportError::Timeout => "transport: timeout",
            TransportError::Frame(_) => "transport: malformed frame",
            TransportError::Http2(_) => "transport: HTTP/2 error",
            TransportError::Status(_) => "transport: HTTP error status",
            TransportError::Config(_) => "transport: configuration",
        }
    }
}

/// Everything needed to open connections, shared by all of them.
#[derive(Clone)]
pub struct Dialer {
    target: Target,
    server_name: rustls::pki_types::ServerName<'static>,
    connector: TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("target", &self.target)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Dialer {
    pub fn new(config: &Config) -> Result<Self, TransportError> {
        let err = |e: kmip::client::ClientError| TransportError::Config(e.to_string());
        let ca = tls::certs_from_pem(&config.ca).map_err(err)?;
        let chain = tls::certs_from_pem(&config.cert).map_err(err)?;
        let key = tls::key_from_pem(&config.key).map_err(err)?;
        let mut tls_config = tls::client_config(ca, chain, key).map_err(err)?;
        if matches!(config.target, Target::KeysvcHttp2 { .. }) {
            tls_config.alpn_protocols = vec![b"h2".to_vec()];
        }
        let server_name = rustls::pki_types::ServerName::try_from(config.server_name.clone())
            .map_err(|e| TransportError::Config(format!("--server-name: {e}")))?;
        Ok(Self {
            target: config.target.clone(),
            server_name,
            connector: TlsConnector::from(Arc::new(tls_config)),
            timeout: config.timeout,
        })
    }

    /// A TCP connection with the TLS handshake done (and, for HTTP/2, the preface).
    pub async fn connect(&self) -> Result<Connection, TransportError> {
        let connecting = async {
            let tcp = TcpStream::connect(self.target.addr())
                .await
                .map_err(TransportError::Connect)?;
            tcp.set_nodelay(true).map_err(TransportError::Connect)?;
            let tls = self
                .connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(TransportError::Handshake)?;
            match &self.target {
                Target::Kmip { .. } => Ok(Connection::Kmip(Box::new(KmipConnection {
                    stream: tls,
                    buffer: Vec::with_capacity(1024),
                }))),
                Target::KeysvcHttp2 {
                    authority, tenant, ..
                } => Http2Connection::handshake(tls, authority, tenant)
                    .await
                    .map(|c| Connection::Http2(Box::new(c))),
            }
        };
        tokio::time::timeout(self.timeout, connecting)
            .await
            .map_err(|_| TransportError::Timeout)?
    }
}

/// An open connection.
#[derive(Debug)]
pub enum Connection {
    Kmip(Box<KmipConnection>),
    Http2(Box<Http2Connection>),
}

impl Connection {
    /// Sends one request and waits for its response; returns the response bytes (valid until
    /// the next exchange).
    pub async fn exchange(&mut self, request: &Bytes) -> Result<&[u8], TransportError> {
        match self {
            Connection::Kmip(c) => c.exchange(request).await,
            Connection::Http2(c) => c.exchange(request).await,
        }
    }
}

/// TTLV over TLS: write the message, read it back with [`read_message`].
#[derive(Debug)]
pub struct KmipConnection {
    stream: TlsStream<TcpStream>,
    buffer: Vec<u8>,
}

impl KmipConnection {
    async fn exchange(&mut self, request: &Bytes) -> Result<&[u8], TransportError> {
        self.stream.write_all(request).await?;
        self.stream.flush().await?;
        match read_message(&mut self.stream, MAX_RESPONSE, &mut self.buffer).await {
            Ok(()) => Ok(&self.buffer),
            // The server closed before a whole header arrived.
            Err(ReadError::Closed) => Err(TransportError::Closed),
            Err(ReadError::Io { received, error })
                if received < kmip::ttlv::HEADER_LEN
                    && error.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                Err(TransportError::Closed)
            }
            Err(ReadError::Io { error, .. }) => Err(error.into()),
            Err(e) => Err(TransportError::Frame(e.to_string())),
        }
    }
}

/// keysvc's `POST /v1/kmip` over HTTP/2, one stream at a time on its own connection (the
/// same one-outstanding-request shape as the KMIP connections, for comparable figures).
#[derive(Debug)]
pub struct Http2Connection {
    send: h2::client::SendRequest<Bytes>,
    template: http::Request<()>,
    buffer: Vec<u8>,
    driver: tokio::task::JoinHandle<()>,
}

impl Http2Connection {
    async fn handshake(
        tls: TlsStream<TcpStream>,
        authority: &str,
        tenant: &str,
    ) -> Result<Self, TransportError> {
        let h2err = |e: h2::Error| TransportError::Http2(e.to_string());
        let (send, connection) = h2::client::handshake(tls).await.map_err(h2err)?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let template = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("https://{authority}{}", contract::KMIP_PATH))
            .header(contract::TENANT_HEADER, tenant)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(())
            .map_err(|e| TransportError::Config(e.to_string()))?;
        let send = send.ready().await.map_err(h2err)?;
        Ok(Self {
            send,
            template,
            buffer: Vec::with_capacity(1024),
            driver,
        })
    }

    async fn exchange(&mut self, request: &Bytes) -> Result<&[u8], TransportError> {
        let h2err = |e: h2::Error| TransportError::Http2(e.to_string());
        let mut req = http::Request::new(());
        *req.method_mut() = self.template.method().clone();
        *req.uri_mut() = self.template.uri().clone();
        *req.headers_mut() = self.template.headers().clone();
        self.send = self.send.clone().ready().await.map_err(h2err)?;
        let (response, mut body_tx) = self.send.send_request(req, false).map_err(h2err)?;
        body_tx.send_data(request.clone(), true).map_err(h2err)?;
        let response = response.await.map_err(h2err)?;
        if !response.status().is_success() {
            return Err(TransportError::Status(response.status().as_u16()));
        }
        let mut body = response.into_body();
        self.buffer.clear();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(h2err)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if self.buffer.len() + chunk.len() > MAX_RESPONSE {
                return Err(TransportError::Frame("response too large".into()));
            }
            self.buffer.extend_from_slice(chunk.chunk());
        }
        Ok(&self.buffer)
    }
}

impl Drop for Http2Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
