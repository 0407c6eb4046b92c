//! Certificate reload without a restart: the listeners' server certificate, the client CA
//! bundle and the upstream client certificate are compared with their files every
//! [`POLL_INTERVAL`] and re-read when their content changed (`tlsmaterial::Watched`: one
//! read per look, so what is parsed is what was compared). A new file that does not load
//! (unparsable, key not matching the certificate, empty bundle) keeps the one in force, is
//! logged and counted once, and is retried when the files change again. Open connections
//! keep what their handshake used; new handshakes (and new upstream connections: Pingora's
//! pool key includes the client-certificate serial) use the new material.

use std::path::PathBuf;
use std::sync::Arc;

use pingora::utils::tls::CertKey;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use tlsmaterial::material::{
    certified_key, client_verifier, earliest_not_after, leaf_not_after, load_server_cert,
    ClientAuth,
};
use tlsmaterial::{FileBytes, Loaded, TlsMetrics, Watched};

pub use tlsmaterial::watch::POLL_INTERVAL;
pub use tlsmaterial::{ReloadingClientVerifier, ServerCertResolver};

use crate::metrics::GatewayMetrics;

/// The files behind the TLS material.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub upstream_cert: PathBuf,
    pub upstream_key: PathBuf,
}

/// Everything TLS the gateway reloads, shared by both listeners and the upstream pool.
#[derive(Debug)]
pub struct TlsMaterial {
    pub server: Arc<ServerCertResolver>,
    pub kmip_verifier: Arc<ReloadingClientVerifier>,
    pub https_verifier: Arc<ReloadingClientVerifier>,
    provider: Arc<CryptoProvider>,
    server_files: Watched<2>,
    client_ca_file: Watched<1>,
    upstream_files: Watched<2>,
}

/// The client CA bundle as the two listeners verify it.
struct Verifiers {
    kmip: Arc<dyn ClientCertVerifier>,
    https: Arc<dyn ClientCertVerifier>,
}

impl TlsMaterial {
    /// Loads the server certificate, the client CA bundle and the upstream client
    /// certificate; fails before anything listens.
    pub fn load(
        files: TlsFiles,
        metrics: Arc<GatewayMetrics>,
    ) -> Result<Self, tlsmaterial::TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_metrics: TlsMetrics = metrics.tls();
        let server_files = Watched::new(
            "server",
            [files.cert.clone(), files.key.clone()],
            tls_metrics.clone(),
        );
        let client_ca_file =
            Watched::new("client_ca", [files.client_ca.clone()], tls_metrics.clone());
        let upstream_files = Watched::new(
            "upstream_client",
            [files.upstream_cert.clone(), files.upstream_key.clone()],
            tls_metrics,
        );
        let server = server_files.load(|files| load_server_cert(&provider, files))?;
        let verifiers = client_ca_file.load(|files| load_verifiers(&provider, files))?;
        // The pool loaded the same files already; this checks the pair (Pingora would only
        // fail at the next handshake) and exports its expiry.
        upstream_files.load(|files| load_upstream_cert(&provider, files))?;
        Ok(Self {
            server: Arc::new(ServerCertResolver::new(server)),
            kmip_verifier: Arc::new(ReloadingClientVerifier::new(
                verifiers.kmip,
                ClientAuth::Required,
            )),
            https_verifier: Arc::new(ReloadingClientVerifier::new(
                verifiers.https,
                ClientAuth::Optional,
            )),
            provider,
            server_files,
            client_ca_file,
            upstream_files,
        })
    }

    /// Polls the files every [`POLL_INTERVAL`] (a tokio task; abort the handle to stop).
    /// A new upstream client certificate is handed to `set_upstream_cert` (the upstream
    /// pool's `set_client_cert`).
    pub fn start_watching(
        self: &Arc<Self>,
        set_upstream_cert: impl Fn(Arc<CertKey>) + Send + 'static,
    ) -> tokio::task::AbortHandle {
        let material = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(material) = material.upgrade() else {
                    return;
                };
                material.poll_once(&set_upstream_cert);
            }
        })
        .abort_handle()
    }

    /// Compares the files with what is in force and reloads what changed.
    pub fn poll_once(&self, set_upstream_cert: &dyn Fn(Arc<CertKey>)) {
        let provider = &self.provider;
        if let Some(key) = self
            .server_files
            .poll(|files| load_server_cert(provider, files))
        {
            self.server.store(key);
        }
        if let Some(verifiers) = self
            .client_ca_file
            .poll(|files| load_verifiers(provider, files))
        {
            self.kmip_verifier.store(verifiers.kmip);
            self.https_verifier.store(verifiers.https);
        }
        if let Some(cert_key) = self
            .upstream_files
            .poll(|files| load_upstream_cert(provider, files))
        {
            set_upstream_cert(Arc::new(cert_key));
        }
    }
}

fn load_verifiers(
    provider: &Arc<CryptoProvider>,
    [bundle]: &[FileBytes; 1],
) -> Result<Loaded<Verifiers>, tlsmaterial::TlsError> {
    let bundle = bundle.certificates()?;
    let not_after = earliest_not_after(&bundle.content);
    Ok(Loaded {
        value: Verifiers {
            kmip: client_verifier(provider, &bundle, ClientAuth::Required)?,
            https: client_verifier(provider, &bundle, ClientAuth::Optional)?,
        },
        not_after,
    })
}

/// The upstream client certificate and key as Pingora wants them, checked as a pair.
fn load_upstream_cert(
    provider: &CryptoProvider,
    [cert, key]: &[FileBytes; 2],
) -> Result<Loaded<CertKey>, tlsmaterial::TlsError> {
    let cert = cert.certificates()?;
    let key = key.private_key()?;
    // Checked here: Pingora would only fail at the next handshake.
    certified_key(provider, &cert, &key)?;
    let not_after = leaf_not_after(&cert.content);
    let chain = cert.content.iter().map(|c| c.to_vec()).collect();
    Ok(Loaded {
        value: CertKey::new(chain, key.content.secret_der().to_vec()),
        not_after,
    })
}
