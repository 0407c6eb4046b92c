//! The webhook's serving certificate (cert-manager's `tls.crt` / `tls.key`), swapped
//! atomically when the files change (`tlsmaterial`): new handshakes get the new
//! certificate, open connections keep theirs.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::ServerConfig;
use tlsmaterial::material::load_server_cert;
use tlsmaterial::{ServerCertResolver, TlsMetrics, Watched};

pub use tlsmaterial::TlsError;

/// The serving certificate in force and its files.
#[derive(Debug)]
pub struct ServingCertificate {
    provider: Arc<CryptoProvider>,
    files: Watched<2>,
    resolver: Arc<ServerCertResolver>,
}

impl ServingCertificate {
    /// Reads the PEM chain and key; fails if either does not parse or they do not match.
    pub fn load(cert: PathBuf, key: PathBuf, metrics: TlsMetrics) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = Watched::new("server", [cert, key], metrics);
        let key = files.load(|files| load_server_cert(&provider, files))?;
        Ok(Self {
            provider,
            files,
            resolver: Arc::new(ServerCertResolver::new(key)),
        })
    }

    /// Puts changed files in force (a file that does not load keeps the certificate in
    /// force, logged and counted once per change).
    pub fn reload_if_changed(&self) {
        if let Some(key) = self
            .files
            .poll(|files| load_server_cert(&self.provider, files))
        {
            self.resolver.store(key);
        }
    }

    /// TLS 1.2/1.3 with ring, no client certificate (the API server sends none unless
    /// configured to), ALPN h2 then http/1.1.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
