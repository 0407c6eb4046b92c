//! An async KMIP client over any byte stream, with typed helpers for the operations key
//! consumers use, and a rustls mTLS connector.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kmip::client::ClientError> {
//! use kmip::client::{tls, Client};
//! let connector = tls::connector_from_pem_files("ca.pem", "tenant.pem", "tenant-key.pem")?;
//! let mut client = Client::connect_tls("127.0.0.1:5696", "localhost", &connector).await?;
//! let uid = client.create_aes_key(256, None).await?;
//! client.activate(&uid).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use crate::framing::{FrameError, KmipCodec};
use crate::message::attributes::{AttributeName, Attributes, CryptographicParameters, Name};
use crate::message::payloads::*;
use crate::message::{
    ByteString, ManagedObject, MessageError, RequestMessage, RequestPayload, ResponseMessage,
    ResponsePayload, UniqueIdentifier,
};
use crate::spec::{
    ObjectType, QueryFunction, ResultReason, ResultStatus, RevocationReasonCode, Tag,
};
use crate::ttlv::Limits;
use crate::ProtocolVersion;

/// How long a request may wait for its response before the client gives up. KMIP servers
/// answer in milliseconds; 30 s covers a server that is slow under load without hanging
/// a caller forever on one that vanished.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("framing: {0}")]
    Frame(#[from] FrameError),
    #[error("malformed response: {0}")]
    Message(#[from] MessageError),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("the server closed the connection")]
    Closed,
    /// An earlier request on this connection timed out, failed mid-exchange or was
    /// cancelled: its answer may still arrive, so the connection cannot be trusted to pair
    /// answers with requests any more. Reconnect.
    #[error("connection unusable after an earlier request failed mid-exchange; reconnect")]
    Poisoned,
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The server answered with a failure.
    #[error("{reason:?}: {message}")]
    Operation {
        status: ResultStatus,
        reason: Option<ResultReason>,
        message: String,
    },
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// The Result Reason of a failed operation, if that is what this is.
    pub fn result_reason(&self) -> Option<ResultReason> {
        match self {
            Self::Operation { reason, .. } => *reason,
            _ => None,
        }
    }
}

/// A KMIP client over one connection. Requests are sent one at a time, in order.
#[derive(Debug)]
pub struct Client<S> {
    framed: Framed<S, KmipCodec>,
    version: ProtocolVersion,
    limits: Limits,
    timeout: Duration,
    /// Set while a request is in flight, cleared when its answer has been read: still set at
    /// the start of a request means the previous one never completed.
    in_flight: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client speaking KMIP 1.4 (the version most servers and clients share).
    pub fn new(stream: S) -> Self {
        Self::with_version(stream, ProtocolVersion::V1_4)
    }

    pub fn with_version(stream: S, version: ProtocolVersion) -> Self {
        let limits = Limits::default();
        Self {
            framed: Framed::new(stream, KmipCodec::new(limits.max_message_size)),
            version,
            limits,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            in_flight: false,
        }
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Speaks `version` from the next request on.
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }

    /// Sends raw TTLV and returns the raw response bytes.
    ///
    /// If this fails part-way (timeout, I/O error, or the future is dropped), the connection
    /// is poisoned: a late answer could otherwise be taken for the next request's.
    pub async fn send_raw(&mut self, request: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        if self.in_flight {
            return Err(ClientError::Poisoned);
        }
        self.in_flight = true;
        let framed = &mut self.framed;
        let exchange = async {
            framed.send(request).await.map_err(frame_error)?;
            match framed.next().await {
                Some(frame) => Ok(frame.map_err(frame_error)?.to_vec()),
                None => Err(ClientError::Closed),
            }
        };
        let answer = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))??;
        self.in_flight = false;
        Ok(answer)
    }

    /// Sends a request message and returns the response message, whatever its results.
    pub async fn send(&mut self, request: &RequestMessage) -> Result<ResponseMessage, ClientError> {
        let bytes = self.send_raw(request.to_ttlv()).await?;
        Ok(ResponseMessage::from_ttlv(&bytes, &self.limits)?)
    }

    /// Runs one operation; a failed result becomes [`ClientError::Operation`].
    pub async fn call(&mut self, payload: RequestPayload) -> Result<ResponsePayload, ClientError> {
        let expected = payload.operation();
        let response = self
            .send(&RequestMessage::new(self.version, vec![payload]))
            .await?;
        let Some(item) = response.batch_items.into_iter().next() else {
            return Err(ClientError::Unexpected(
                "response without batch items".into(),
            ));
        };
        if item.result_status != ResultStatus::Success {
            return Err(ClientError::Operation {
                status: item.result_status,
                reason: item.result_reason,
                message: item.result_message.unwrap_or_default(),
            });
        }
        match item.payload {
            Some(Ok(p)) if p.operation() == expected => Ok(p),
            Some(Ok(p)) => Err(ClientError::Unexpected(format!(
                "asked for {expected:?}, got {:?}",
                p.operation()
            ))),
            Some(Err(untyped)) => Err(untyped.error.into()),
            None => Err(ClientError::Unexpected(format!(
                "{expected:?} response has no payload"
            ))),
        }
    }

    fn uid(id: &str) -> Option<UniqueIdentifier> {
        Some(UniqueIdentifier::from(id))
    }

    /// Creates a symmetric key from the given attributes; returns its Unique Identifier.
    pub async fn create(
        &mut self,
        object_type: ObjectType,
        attributes: Attributes,
    ) -> Result<String, ClientError> {
        let p = self
            .call(RequestPayload::Create(CreateRequest {
                object_type,
                attributes: Some(attributes),
                protection_storage_masks: None,
            }))
            .await?;
        match p {
            ResponsePayload::Create(r) => text_uid(r.unique_identifier),
            other => Err(unexpected(other)),
        }
    }

    /// Creates an AES key of `bits` usable for Encrypt and Decrypt, optionally named.
    pub async fn create_aes_key(
        &mut self,
        bits: i32,
        name: Option<&str>,
    ) -> Result<String, ClientError> {
        let mut attrs = Attributes::aes_key(bits);
        if let Some(name) = name {
            attrs = attrs.with(Tag::NAME, &Name::text(name));
        }
        self.create(ObjectType::SymmetricKey, attrs).await
    }

    /// Registers an object the client supplies; returns its Unique Identifier.
    pub async fn register(
        &mut self,
        object: ManagedObject,
        attributes: Attributes,
    ) -> Result<String, ClientError> {
        let object_type = object
            .object_type()
            .ok_or_else(|| ClientError::Unexpected("unknown object type".into()))?;
        let p = self
            .call(RequestPayload::Register(RegisterRequest {
                object_type,
                attributes: Some(attributes),
                object: Some(object),
                protection_storage_masks: None,
            }))
            .await?;
        match p {
            ResponsePayload::Register(r) => text_uid(r.unique_identifier),
            other => Err(unexpected(other)),
        }
    }

    pub async fn get(&mut self, uid: &str) -> Result<GetResponse, ClientError> {
        let p = self
            .call(RequestPayload::Get(GetRequest {
                unique_identifier: Self::uid(uid),
                key_format_type: None,
                key_wrap_type: None,
                key_compression_type: None,
                key_wrapping_specification: None,
            }))
            .await?;
        match p {
            ResponsePayload::Get(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Reads the named attributes (all of them when `names` is empty).
    pub async fn get_attributes(
        &mut self,
        uid: &str,
        names: &[Tag],
    ) -> Result<Attributes, ClientError> {
        let p = self
            .call(RequestPayload::GetAttributes(GetAttributesRequest {
                unique_identifier: Self::uid(uid),
                attribute_names: names.iter().map(|t| AttributeName::Standard(*t)).collect(),
            }))
            .await?;
        match p {
            ResponsePayload::GetAttributes(r) => Ok(r.attributes.unwrap_or_default()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn get_attribute_list(
        &mut self,
        uid: &str,
    ) -> Result<Vec<AttributeName>, ClientError> {
        let p = self
            .call(RequestPayload::GetAttributeList(GetAttributeListRequest {
                unique_identifier: Self::uid(uid),
            }))
            .await?;
        match p {
            ResponsePayload::GetAttributeList(r) => Ok(r.attribute_names),
            other => Err(unexpected(other)),
        }
    }

    pub async fn activate(&mut self, uid: &str) -> Result<(), ClientError> {
        self.call(RequestPayload::Activate(IdRequest {
            unique_identifier: Self::uid(uid),
        }))
        .await
        .map(drop)
    }

    pub async fn revoke(
        &mut self,
        uid: &str,
        code: RevocationReasonCode,
        message: Option<&str>,
    ) -> Result<(), ClientError> {
        self.call(RequestPayload::Revoke(RevokeRequest {
            unique_identifier: Self::uid(uid),
            revocation_reason: RevocationReason {
                code,
                message: message.map(str::to_owned),
            },
            compromise_occurrence_date: None,
        }))
        .await
        .map(drop)
    }

    pub async fn destroy(&mut self, uid: &str) -> Result<(), ClientError> {
        self.call(RequestPayload::Destroy(IdRequest {
            unique_identifier: Self::uid(uid),
        }))
        .await
        .map(drop)
    }

    /// Finds objects matching all `filters`; at most `max_items` when given.
    pub async fn locate(
        &mut self,
        filters: Attributes,
        max_items: Option<i32>,
    ) -> Result<Vec<String>, ClientError> {
        let p = self
            .call(RequestPayload::Locate(LocateRequest {
                maximum_items: max_items,
                offset_items: None,
                storage_status_mask: None,
                object_group_member: None,
                attributes: Some(filters),
            }))
            .await?;
        match p {
            ResponsePayload::Locate(r) => r.unique_identifiers.into_iter().map(text_uid).collect(),
            other => Err(unexpected(other)),
        }
    }

    /// Encrypts `data`. With no parameters the server picks (its key's, or AES-CBC with a
    /// fresh IV it returns), as MongoDB expects.
    pub async fn encrypt(
        &mut self,
        uid: &str,
        data: &[u8],
        parameters: Option<CryptographicParameters>,
        iv: Option<&[u8]>,
    ) -> Result<EncryptResponse, ClientError> {
        let p = self
            .call(RequestPayload::Encrypt(EncryptRequest {
                unique_identifier: Self::uid(uid),
                cryptographic_parameters: parameters,
                data: Some(ByteString::from(data)),
                iv_counter_nonce: iv.map(ByteString::from),
                correlation_value: None,
                init_indicator: None,
                final_indicator: None,
                authenticated_encryption_additional_data: None,
            }))
            .await?;
        match p {
            ResponsePayload::Encrypt(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    pub async fn decrypt(
        &mut self,
        uid: &str,
        data: &[u8],
        parameters: Option<CryptographicParameters>,
        iv: Option<&[u8]>,
        tag: Option<&[u8]>,
    ) -> Result<ByteString, ClientError> {
        let p = self
            .call(RequestPayload::Decrypt(DecryptRequest {
                unique_identifier: Self::uid(uid),
                cryptographic_parameters: parameters,
                data: Some(ByteString::from(data)),
                iv_counter_nonce: iv.map(ByteString::from),
                authenticated_encryption_tag: tag.map(ByteString::from),
                ..DecryptRequest::default()
            }))
            .await?;
        match p {
            ResponsePayload::Decrypt(r) => r
                .data
                .ok_or_else(|| ClientError::Unexpected("Decrypt response without Data".into())),
            other => Err(unexpected(other)),
        }
    }

    pub async fn mac(
        &mut self,
        uid: &str,
        data: &[u8],
        parameters: Option<CryptographicParameters>,
    ) -> Result<ByteString, ClientError> {
        let p = self
            .call(RequestPayload::Mac(MacRequest {
                unique_identifier: Self::uid(uid),
                cryptographic_parameters: parameters,
                data: Some(ByteString::from(data)),
                correlation_value: None,
                init_indicator: None,
                final_indicator: None,
            }))
            .await?;
        match p {
            ResponsePayload::Mac(r) => r
                .mac_data
                .ok_or_else(|| ClientError::Unexpected("MAC response without MAC Data".into())),
            other => Err(unexpected(other)),
        }
    }

    /// The versions the server supports (of `versions`, or all when empty), preferred first.
    pub async fn discover_versions(
        &mut self,
        versions: &[ProtocolVersion],
    ) -> Result<Vec<ProtocolVersion>, ClientError> {
        let p = self
            .call(RequestPayload::DiscoverVersions(DiscoverVersionsRequest {
                protocol_versions: versions.to_vec(),
            }))
            .await?;
        match p {
            ResponsePayload::DiscoverVersions(r) => Ok(r.protocol_versions),
            other => Err(unexpected(other)),
        }
    }

    pub async fn query(
        &mut self,
        functions: &[QueryFunction],
    ) -> Result<QueryResponse, ClientError> {
        let p = self
            .call(RequestPayload::Query(QueryRequest {
                query_functions: functions.to_vec(),
            }))
            .await?;
        match p {
            ResponsePayload::Query(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    pub async fn rng_retrieve(&mut self, length: i32) -> Result<ByteString, ClientError> {
        let p = self
            .call(RequestPayload::RngRetrieve(RngRetrieveRequest {
                data_length: length,
            }))
            .await?;
        match p {
            ResponsePayload::RngRetrieve(r) => Ok(r.data),
            other => Err(unexpected(other)),
        }
    }
}

/// I/O failures are reported as [`ClientError::Io`] whichever layer saw them.
fn frame_error(e: FrameError) -> ClientError {
    match e {
        FrameError::Io(io) => ClientError::Io(io),
        other => ClientError::Frame(other),
    }
}

fn text_uid(uid: UniqueIdentifier) -> Result<String, ClientError> {
    match uid {
        UniqueIdentifier::Text(s) => Ok(s),
        other => Err(ClientError::Unexpected(format!(
            "non-text Unique Identifier {other:?}"
        ))),
    }
}

fn unexpected(p: ResponsePayload) -> ClientError {
    ClientError::Unexpected(format!("unexpected {:?} payload", p.operation()))
}

impl Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    /// Connects over TCP + mutual TLS. `server_name` is checked against the server's
    /// certificate (a DNS name or an IP address).
    pub async fn connect_tls(
        addr: &str,
        server_name: &str,
        connector: &tokio_rustls::TlsConnector,
    ) -> Result<Self, ClientError> {
        Self::connect_tls_with_version(addr, server_name, connector, ProtocolVersion::V1_4).await
    }

    /// [`Client::connect_tls`] speaking `version`.
    pub async fn connect_tls_with_version(
        addr: &str,
        server_name: &str,
        connector: &tokio_rustls::TlsConnector,
        version: ProtocolVersion,
    ) -> Result<Self, ClientError> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| ClientError::Tls(format!("server name {server_name:?}: {e}")))?;
        let tls = connector.connect(name, tcp).await?;
        Ok(Self::with_version(tls, version))
    }
}

/// The rustls side: a client configuration that presents a certificate and trusts one CA.
pub mod tls {
    use std::path::Path;
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use super::ClientError;

    /// A TLS 1.2/1.3 connector (ring provider) presenting `cert_chain` with `key` and
    /// trusting only the CAs in `ca`.
    pub fn connector(
        ca: Vec<CertificateDer<'static>>,
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<tokio_rustls::TlsConnector, ClientError> {
        let config = client_config(ca, cert_chain, key)?;
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    /// The client configuration [`connector`] uses, for callers that add to it (ALPN).
    pub fn client_config(
        ca: Vec<CertificateDer<'static>>,
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<rustls::ClientConfig, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in ca {
            roots
                .add(cert)
                .map_err(|e| ClientError::Tls(format!("CA certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(cert_chain, key)
            .map_err(|e| ClientError::Tls(format!("client certificate: {e}")))?;
        Ok(config)
    }

    /// Reads every certificate in a PEM file.
    pub fn certs_from_pem(
        path: impl AsRef<Path>,
    ) -> Result<Vec<CertificateDer<'static>>, ClientError> {
        let path = path.as_ref();
        let pem = std::fs::read(path)?;
        let certs = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ClientError::Tls(format!(
                "{}: no certificate",
                path.display()
            )));
        }
        Ok(certs)
    }

    /// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
    pub fn key_from_pem(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, ClientError> {
        let path = path.as_ref();
        let pem = std::fs::read(path)?;
        rustls_pemfile::private_key(&mut pem.as_slice())
            .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?
            .ok_or_else(|| ClientError::Tls(format!("{}: no private key", path.display())))
    }

    /// A connector from PEM files: the CA bundle, the client certificate chain, its key.
    pub fn connector_from_pem_files(
        ca: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<tokio_rustls::TlsConnector, ClientError> {
        connector(
            certs_from_pem(ca)?,
            certs_from_pem(cert)?,
            key_from_pem(key)?,
        )
    }
}
