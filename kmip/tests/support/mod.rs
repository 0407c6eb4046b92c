//! Shared helpers for the client integration tests: a throwaway PKI (ECDSA P-256 CA,
//! server and client certificates, written as PEM files to a temporary directory) and a
//! connect helper that picks the client's protocol version.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

use kmip::client::{tls, Client, ClientError};
use kmip::ProtocolVersion;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The client certificate's Common Name: PyKMIP takes it as the user identity.
pub const CLIENT_CN: &str = "openkcm-test-client";

/// A certificate authority that can issue server and client certificates.
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
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self { cert, key }
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A TLS server certificate valid for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, common_name: &str, names: &[&str]) -> Leaf {
        self.issue(
            common_name,
            names,
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        )
    }

    /// A TLS client certificate (extendedKeyUsage clientAuth, as PyKMIP requires).
    pub fn issue_client(&self, common_name: &str) -> Leaf {
        self.issue(common_name, &[], vec![ExtendedKeyUsagePurpose::ClientAuth])
    }

    /// A certificate with the given extended key usages (none: no such extension).
    pub fn issue(
        &self,
        common_name: &str,
        names: &[&str],
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Leaf {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("leaf key");
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        // No Basic Constraints at all: rcgen's `ExplicitNoCa` encodes `cA FALSE`, a DER
        // default that the `cryptography` package (PyKMIP) refuses to parse.
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
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

/// An issued certificate and its private key.
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

/// A CA, a server certificate for `localhost` and `127.0.0.1`, and a client certificate,
/// all also written as PEM files (`ca.pem`, `server.pem`, `server-key.pem`, `client.pem`,
/// `client-key.pem`) to a temporary directory that lives as long as this value.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub server: Leaf,
    pub client: Leaf,
}

impl Pki {
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kmip-client-test-")
            .tempdir()
            .expect("temporary directory");
        let ca = Ca::new("OpenKCM test CA");
        let server = ca.issue_server("localhost", &["localhost", "127.0.0.1"]);
        let client = ca.issue_client(CLIENT_CN);
        let pki = Self {
            dir,
            ca,
            server,
            client,
        };
        pki.write("ca.pem", &pki.ca.cert_pem());
        pki.write("server.pem", &pki.server.cert_pem);
        pki.write("server-key.pem", &pki.server.key_pem);
        pki.write("client.pem", &pki.client.cert_pem);
        pki.write("client-key.pem", &pki.client.key_pem);
        pki
    }

    /// A file in the PKI's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// The client side, read back from the PEM files as a user of the library would.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tls::connector_from_pem_files(
            self.path("ca.pem"),
            self.path("client.pem"),
            self.path("client-key.pem"),
        )
        .expect("connector from the generated PEM files")
    }
}

pub type TlsClient = Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Connects like [`Client::connect_tls`], but speaking `version` (which `connect_tls` fixes
/// at KMIP 1.4).
pub async fn connect_with_version(
    addr: &str,
    server_name: &str,
    connector: &tokio_rustls::TlsConnector,
    version: ProtocolVersion,
) -> Result<TlsClient, ClientError> {
    Client::connect_tls_with_version(addr, server_name, connector, version).await
}

/// Reads a file for an assertion message, whatever state it is in.
pub fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<{}: {e}>", path.display()),
    }
}
