//! Shared harness for the keysvc HTTP tests (and, through `#[path]`, the root package's
//! process tests): a throwaway PKI, an HTTP/2 + mTLS client, KMIP request builders, an
//! in-process server on port 0, and throwaway PostgreSQL databases.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper::header::HeaderMap;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keysvc::config::{self, ConfigFlags, ConfigSources, ServeConfig};
use keysvc::envelope::RootKey;
use keysvc::server::{self, KeysvcServer};
use kmip::contract;
use kmip::message::payloads::{
    CreateRequest, EncryptRequest, GetRequest, IdRequest, RevocationReason, RevokeRequest,
};
use kmip::message::{
    Attributes, ByteString, RequestMessage, RequestPayload, ResponseBatchItem, ResponseMessage,
    UniqueIdentifier,
};
use kmip::spec::{ObjectType, ResultStatus, RevocationReasonCode};
use kmip::ttlv::Limits;
use kmip::ProtocolVersion;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The gateway's SPIFFE id: the identity the test servers allow.
pub const GATEWAY_ID: &str = "spiffe://cluster.local/ns/openkcm-system/sa/openkcm-gateway";
/// Another client of the same CA, not on the allow-list.
pub const INTRUDER_ID: &str = "spiffe://cluster.local/ns/tenant-a/sa/mongod";

/// How long an asynchronous effect may take before a test fails (bounded retry loops).
pub const EVENTUALLY: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------- PKI

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(common_name: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self { cert, key }
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate. No Basic Constraints at all (rcgen's `ExplicitNoCa` encodes a
    /// DER default some parsers refuse).
    pub fn issue(
        &self,
        common_name: &str,
        dns: &[&str],
        uris: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Leaf {
        self.issue_until(common_name, dns, uris, usage, None)
    }

    /// [`Ca::issue`], valid until `not_after` Unix seconds (rcgen's default, year 4096, when
    /// `None`).
    pub fn issue_until(
        &self,
        common_name: &str,
        dns: &[&str],
        uris: &[&str],
        usage: ExtendedKeyUsagePurpose,
        not_after: Option<u64>,
    ) -> Leaf {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("leaf key");
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        for uri in uris {
            params.subject_alt_names.push(SanType::URI(
                rcgen::Ia5String::try_from(uri.to_string()).expect("IA5 URI"),
            ));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        if let Some(secs) = not_after {
            params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(secs);
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("CA-signed certificate");
        Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}

pub struct Leaf {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_pem: String,
    key_der: Vec<u8>,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// Which certificate a test client presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Gateway,
    Intruder,
    /// A certificate from the same CA with the gateway's CN and DNS name, not its URI.
    Impostor,
    NoCertificate,
}

/// CA, keysvc server certificate (localhost, 127.0.0.1), gateway and intruder client
/// certificates, and a root key — all as files in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub server: Leaf,
    pub gateway: Leaf,
    pub intruder: Leaf,
    pub impostor: Leaf,
}

impl Pki {
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keysvc-test-")
            .tempdir()
            .expect("temporary directory");
        let ca = Ca::new("OpenKCM internal test CA");
        let server = ca.issue(
            "keysvc",
            &["localhost", "127.0.0.1"],
            &[],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let gateway = ca.issue(
            "openkcm-gateway",
            &["gateway.openkcm-system.svc"],
            &[GATEWAY_ID],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let intruder = ca.issue(
            "mongod",
            &["mongod.tenant-a.svc"],
            &[INTRUDER_ID],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let impostor = ca.issue(
            "openkcm-gateway",
            &["gateway.openkcm-system.svc"],
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let pki = Self {
            dir,
            ca,
            server,
            gateway,
            intruder,
            impostor,
        };
        pki.write("ca.pem", &pki.ca.cert.pem());
        pki.write("server.pem", &pki.server.cert_pem);
        pki.write("server-key.pem", &pki.server.key_pem);
        pki.write_root_key("root.key", "root-a");
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// A fresh random root key written as base64 to `name`.
    pub fn write_root_key(&self, name: &str, id: &str) -> PathBuf {
        let key = RootKey::generate(id).expect("root key");
        self.write(name, &key.to_base64())
    }

    /// The flags an in-process or spawned keysvc is started with: port 0 everywhere,
    /// this PKI, the gateway allowed, root key `root-a`.
    pub fn flags(&self, database: &str) -> ConfigFlags {
        ConfigFlags {
            listen_api: Some("127.0.0.1:0".into()),
            listen_management: Some("127.0.0.1:0".into()),
            tls_cert: Some(self.path_text("server.pem")),
            tls_key: Some(self.path_text("server-key.pem")),
            tls_client_ca: Some(self.path_text("ca.pem")),
            allow_gateway: vec![GATEWAY_ID.into()],
            database: Some(database.into()),
            root_key_id: Some("root-a".into()),
            root_key_file: Some(self.path_text("root.key")),
            ..ConfigFlags::default()
        }
    }

    /// The same flags as command-line arguments, for a spawned process.
    pub fn args(&self, database: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "keysvc",
            "--listen-api",
            "127.0.0.1:0",
            "--listen-management",
            "127.0.0.1:0",
            "--allow-gateway",
            GATEWAY_ID,
            "--database",
            database,
            "--root-key-id",
            "root-a",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (flag, file) in [
            ("--tls-cert", "server.pem"),
            ("--tls-key", "server-key.pem"),
            ("--tls-client-ca", "ca.pem"),
            ("--root-key-file", "root.key"),
        ] {
            args.push(flag.into());
            args.push(self.path_text(file));
        }
        args
    }

    pub fn path_text(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn client_config(&self, who: Who) -> rustls::ClientConfig {
        match who {
            Who::Gateway => self.client_config_as(Some(&self.gateway)),
            Who::Intruder => self.client_config_as(Some(&self.intruder)),
            Who::Impostor => self.client_config_as(Some(&self.impostor)),
            Who::NoCertificate => self.client_config_as(None),
        }
    }

    /// A client trusting this PKI's CA for the server, presenting `leaf` (any CA's).
    pub fn client_config_as(&self, leaf: Option<&Leaf>) -> rustls::ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.cert_der()).expect("CA certificate");
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let mut config = match leaf {
            Some(leaf) => builder
                .with_client_auth_cert(vec![leaf.cert_der.clone()], leaf.key())
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        config
    }
}

// ------------------------------------------------------------------ HTTP/2 + mTLS client

/// One HTTP/2 connection to the API listener.
pub struct Http2 {
    sender: SendRequest<Body>,
    /// The ALPN protocol the server chose.
    pub alpn: Option<Vec<u8>>,
    /// The leaf certificate the server presented.
    pub server_certificate: Option<CertificateDer<'static>>,
}

/// A request body: whole (with Content-Length) or streamed.
pub type Body = BoxBody<Bytes, std::convert::Infallible>;

/// An HTTP answer, body read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn kmip(&self) -> ResponseMessage {
        assert_eq!(self.status, 200, "KMIP answer expected, got {self:?}");
        ResponseMessage::from_ttlv(&self.body, &Limits::default()).expect("TTLV response")
    }
}

impl Http2 {
    /// Connects with `who`'s certificate; errors if the TLS handshake or the HTTP/2
    /// preface fails.
    pub async fn connect(addr: SocketAddr, pki: &Pki, who: Who) -> Result<Self, String> {
        Self::connect_with(addr, pki.client_config(who)).await
    }

    /// Connects with a client configuration of the caller's (see [`Pki::client_config_as`]).
    pub async fn connect_with(
        addr: SocketAddr,
        config: rustls::ClientConfig,
    ) -> Result<Self, String> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("localhost").expect("server name");
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let server_certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.clone().into_owned());
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            alpn,
            server_certificate,
        })
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        self.request_body(method, path, headers, Full::new(Bytes::from(body)).boxed())
            .await
    }

    pub async fn request_body(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Reply, String> {
        self.start(method, path, headers, body).await?.await
    }

    /// Sends the request's headers now (streams are opened in call order on the
    /// connection) and returns the future of its reply.
    pub async fn start(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<impl std::future::Future<Output = Result<Reply, String>> + Send + 'static, String>
    {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(body).expect("request");
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let response = self.sender.send_request(request);
        Ok(async move {
            let response = response.await.map_err(|e| format!("request: {e}"))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok(Reply {
                status,
                headers,
                body,
            })
        })
    }

    /// `POST /v1/kmip` as the gateway would send it for `tenant`.
    pub async fn kmip(&mut self, tenant: &str, request: Vec<u8>) -> Reply {
        self.request(
            "POST",
            contract::KMIP_PATH,
            &tenant_headers(tenant),
            request,
        )
        .await
        .expect("POST /v1/kmip")
    }

    /// One operation for `tenant`; its single batch item.
    pub async fn call(&mut self, tenant: &str, payload: RequestPayload) -> ResponseBatchItem {
        let mut response = self.kmip(tenant, kmip_request(vec![payload])).await.kmip();
        assert_eq!(response.batch_items.len(), 1, "{response:?}");
        response.batch_items.remove(0)
    }
}

pub fn tenant_headers(tenant: &str) -> Vec<(&str, &str)> {
    vec![
        (contract::TENANT_HEADER, tenant),
        (contract::CLIENT_HEADER, "CN=mongod,OU=tenant"),
        ("content-type", "application/octet-stream"),
    ]
}

/// `GET path` over plain HTTP/1.1 (the management listener): status and body.
pub async fn http1_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of one series (name and labels exactly as exposed, e.g.
/// `openkcm_tls_reloads_total{cert="server",result="ok"}`) on `addr`'s plain `/metrics`.
pub async fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let (_, page) = http1_get(addr, "/metrics").await.ok()?;
    page.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

// ------------------------------------------------------------------------ KMIP messages

pub fn kmip_request(payloads: Vec<RequestPayload>) -> Vec<u8> {
    RequestMessage::new(ProtocolVersion::V2_1, payloads).to_ttlv()
}

pub fn create_aes() -> RequestPayload {
    RequestPayload::Create(CreateRequest {
        object_type: ObjectType::SymmetricKey,
        attributes: Some(Attributes::aes_key(256)),
        protection_storage_masks: None,
    })
}

pub fn get(uid: &str) -> RequestPayload {
    RequestPayload::Get(GetRequest::of(uid))
}

pub fn activate(uid: &str) -> RequestPayload {
    RequestPayload::Activate(IdRequest {
        unique_identifier: Some(UniqueIdentifier::from(uid)),
    })
}

pub fn revoke(uid: &str) -> RequestPayload {
    RequestPayload::Revoke(RevokeRequest {
        unique_identifier: Some(UniqueIdentifier::from(uid)),
        revocation_reason: RevocationReason {
            code: RevocationReasonCode::CessationOfOperation,
            message: Some("test".into()),
        },
        compromise_occurrence_date: None,
    })
}

pub fn encrypt(uid: &str, data: &[u8]) -> RequestPayload {
    RequestPayload::Encrypt(EncryptRequest {
        unique_identifier: Some(UniqueIdentifier::from(uid)),
        cryptographic_parameters: None,
        data: Some(ByteString::from(data)),
        iv_counter_nonce: None,
        correlation_value: None,
        init_indicator: None,
        final_indicator: None,
        authenticated_encryption_additional_data: None,
    })
}

/// Asserts success and returns the item's Unique Identifier (Create, Get, Activate, …).
pub fn success_uid(item: &ResponseBatchItem) -> String {
    assert_eq!(item.result_status, ResultStatus::Success, "{item:?}");
    use kmip::message::ResponsePayload as P;
    let uid = match item.payload.as_ref() {
        Some(Ok(P::Create(r))) => &r.unique_identifier,
        Some(Ok(P::Get(r))) => &r.unique_identifier,
        Some(Ok(P::Encrypt(r))) => &r.unique_identifier,
        Some(Ok(P::Activate(r) | P::Revoke(r))) => &r.unique_identifier,
        other => panic!("unexpected payload {other:?}"),
    };
    uid.as_text().expect("text uid").to_owned()
}

// --------------------------------------------------------------------- in-process server

/// A keysvc started in this process on port 0.
pub struct TestServer {
    pub server: KeysvcServer,
    pub config: ServeConfig,
}

impl TestServer {
    pub async fn start(pki: &Pki, database: &str) -> Self {
        Self::start_with(pki, pki.flags(database)).await
    }

    pub async fn start_with(pki: &Pki, flags: ConfigFlags) -> Self {
        let _ = pki;
        let (config, _) =
            config::load_serve(&ConfigSources::new(flags)).unwrap_or_else(|e| panic!("{e}"));
        let store = server::open_store(&config.store.database)
            .await
            .unwrap_or_else(|e| panic!("open store: {e}"));
        let server = KeysvcServer::start(&config, store)
            .await
            .unwrap_or_else(|e| panic!("start: {e}"));
        Self { server, config }
    }

    pub fn api(&self) -> SocketAddr {
        self.server.api_addr()
    }

    pub fn management(&self) -> SocketAddr {
        self.server.management_addr()
    }

    pub async fn gateway(&self, pki: &Pki) -> Http2 {
        Http2::connect(self.api(), pki, Who::Gateway)
            .await
            .unwrap_or_else(|e| panic!("gateway connection: {e}"))
    }
}

/// Retries `check` until it returns `Some`, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------------ PostgreSQL

/// A throwaway database and runtime role (testkit's), migrated with
/// `keysvc::store::postgres::migrate` (or not, for tests that migrate through the binary).
pub struct PgDatabase(testkit::postgres::PgDatabase);

impl std::ops::Deref for PgDatabase {
    type Target = testkit::postgres::PgDatabase;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl PgDatabase {
    pub async fn create(migrate: bool) -> Self {
        let db = Self(testkit::postgres::PgDatabase::create("keysvc_http").await);
        if migrate {
            db.migrate().await;
        }
        db
    }

    async fn migrate(&self) {
        keysvc::store::postgres::migrate(&self.owner_url(), &self.role)
            .await
            .unwrap_or_else(|e| panic!("migrate: {e}"));
    }

    /// Drops the database (terminating its connections) and the role, now.
    pub async fn drop(self) {}

    /// Brings a vanished database back, empty and migrated (as after a restore).
    pub async fn recreate(&self) {
        self.recreate_empty().await;
        self.migrate().await;
    }
}
