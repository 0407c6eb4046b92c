//! KMIP over mutual TLS from the tests: a bounded connect, the requests several suites
//! send, and the framing a stand-in server reads.

use std::time::Duration;

use kmip::client::Client;
use kmip::message::payloads::GetRequest;
use kmip::message::{CryptographicParameters, RequestMessage, RequestPayload};
use kmip::ttlv::HEADER_LEN;
use kmip::ProtocolVersion;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::certs::TestPki;

/// A KMIP client over TCP + mutual TLS.
pub type TlsClient = Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// `who` (an identity of `pki`) connected to the KMIP listener at `addr` (server name
/// `localhost`), speaking `version`; the connect and every request bounded by `timeout`.
pub async fn connect(
    pki: &TestPki,
    addr: &str,
    who: &str,
    version: ProtocolVersion,
    timeout: Duration,
) -> TlsClient {
    let connector = pki.connector(who);
    let mut client = tokio::time::timeout(
        timeout,
        Client::connect_tls_with_version(addr, "localhost", &connector, version),
    )
    .await
    .expect("connect in time")
    .unwrap_or_else(|e| panic!("{who} connects: {e}"));
    client.set_timeout(timeout);
    client
}

/// AES-CBC with PKCS#5 padding.
pub fn aes_cbc_pkcs5() -> CryptographicParameters {
    CryptographicParameters::aes_cbc_pkcs5()
}

/// A KMIP 1.4 Get of `uid`, as TTLV.
pub fn get_request(uid: &str) -> Vec<u8> {
    get_request_in(ProtocolVersion::V1_4, uid)
}

/// A Get of `uid` in `version`, as TTLV.
pub fn get_request_in(version: ProtocolVersion, uid: &str) -> Vec<u8> {
    RequestMessage::new(version, vec![RequestPayload::Get(GetRequest::of(uid))]).to_ttlv()
}

/// Reads one TTLV message (header and value) into `message`, replacing its contents; `None`
/// at EOF or on a read error. For stand-in servers: the length is trusted.
pub async fn read_message<R: AsyncRead + Unpin>(
    stream: &mut R,
    message: &mut Vec<u8>,
) -> Option<()> {
    message.resize(HEADER_LEN, 0);
    stream.read_exact(message).await.ok()?;
    let len = u32::from_be_bytes([message[4], message[5], message[6], message[7]]);
    message.resize(HEADER_LEN + len as usize, 0);
    stream.read_exact(&mut message[HEADER_LEN..]).await.ok()?;
    Some(())
}
