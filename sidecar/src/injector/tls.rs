//! The webhook's serving certificate (cert-manager's `tls.crt` / `tls.key`), swapped
//! atomically when the files change: new handshakes get the new certificate, open
//! connections keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use x509_cert::der::Decode;

/// Why a certificate or key file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("TLS settings: {0}")]
    Settings(#[from] rustls::Error),
}

/// A loaded certificate chain with its key and the leaf's notAfter.
#[derive(Debug)]
pub struct ServingCertificate {
    pub key: Arc<CertifiedKey>,
    /// The leaf certificate's notAfter, Unix seconds (the expiry gauge).
    pub not_after: i64,
}

impl ServingCertificate {
    /// Reads the PEM chain and key; fails if either does not parse or they do not match.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = certificates(cert)?;
        let private_key = private_key(key)?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&private_key)
            .map_err(|e| file_error(key, e))?;
        let not_after = not_after(&chain[0]).map_err(|e| file_error(cert, e))?;
        let certified = CertifiedKey::new(chain, signer);
        certified
            .keys_match()
            .map_err(|e| file_error(key, format!("does not match the certificate: {e}")))?;
        Ok(Self {
            key: Arc::new(certified),
            not_after,
        })
    }
}

/// Hands every new handshake the certificate in force.
#[derive(Debug)]
pub struct CertificateResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertificateResolver {
    pub fn new(certificate: &ServingCertificate) -> Self {
        Self {
            current: ArcSwap::new(certificate.key.clone()),
        }
    }

    pub fn replace(&self, certificate: &ServingCertificate) {
        self.current.store(certificate.key.clone());
    }
}

impl ResolvesServerCert for CertificateResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2/1.3 with ring, no client certificate (the API server sends none unless
/// configured to), ALPN h2 then http/1.1.
pub fn server_config(resolver: Arc<CertificateResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if chain.is_empty() {
        return Err(file_error(path, "no PEM certificate"));
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_error(path, e))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| file_error(path, e))?
        .ok_or_else(|| file_error(path, "no PEM private key"))
}

fn not_after(der: &CertificateDer<'_>) -> Result<i64, String> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| e.to_string())?;
    let secs = cert
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs();
    i64::try_from(secs).map_err(|e| e.to_string())
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
