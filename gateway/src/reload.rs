//! Certificate reload without a restart: the listeners' server certificate, the client CA
//! bundle and the upstream client certificate are re-read every [`POLL_INTERVAL`] when
//! their files' content changed. A new file that does not load (unparsable, key not
//! matching the certificate, empty bundle) keeps the one in force and is logged; it is
//! retried when the files change again. Open connections keep what their handshake used;
//! new handshakes (and new upstream connections: Pingora's pool key includes the
//! client-certificate serial) use the new material.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::utils::tls::CertKey;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_cert::der::Decode;

use crate::metrics::GatewayMetrics;
use crate::tls::{self, TlsError};
use crate::upstream::UpstreamPool;

/// How often the certificate files are compared with what is in force.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The listeners' server certificate, swapped atomically on reload.
#[derive(Debug)]
pub struct ServerCertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ServerCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A client-certificate verifier whose trust anchors can be replaced.
#[derive(Debug)]
pub struct ReloadingClientVerifier {
    inner: ArcSwap<Arc<dyn ClientCertVerifier>>,
    mandatory: bool,
}

impl ReloadingClientVerifier {
    fn new(inner: Arc<dyn ClientCertVerifier>, mandatory: bool) -> Self {
        Self {
            inner: ArcSwap::from_pointee(inner),
            mandatory,
        }
    }
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    // The hints would borrow from the swapped inner verifier; clients send their
    // certificate without them.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.load().supported_verify_schemes()
    }
}

/// The files behind the TLS material.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub upstream_cert: PathBuf,
    pub upstream_key: PathBuf,
}

#[derive(Debug, Default)]
struct Seen {
    server: Vec<u8>,
    client_ca: Vec<u8>,
    upstream: Vec<u8>,
}

/// Everything TLS the gateway reloads, shared by both listeners and the upstream pool.
#[derive(Debug)]
pub struct TlsMaterial {
    pub server: Arc<ServerCertResolver>,
    pub kmip_verifier: Arc<ReloadingClientVerifier>,
    pub https_verifier: Arc<ReloadingClientVerifier>,
    files: TlsFiles,
    seen: Mutex<Seen>,
    metrics: Arc<GatewayMetrics>,
}

impl TlsMaterial {
    /// Loads the server certificate and the client CA bundle; fails before anything listens.
    pub fn load(files: TlsFiles, metrics: Arc<GatewayMetrics>) -> Result<Self, TlsError> {
        let (server, server_expiry) = load_server_cert(&files)?;
        let (mandatory, optional, ca_expiry) = load_verifiers(&files)?;
        metrics.set_certificate_expiry("server", server_expiry);
        metrics.set_certificate_expiry("client_ca", ca_expiry);
        let seen = Seen {
            server: read_all(&[&files.cert, &files.key]),
            client_ca: read_all(&[&files.client_ca]),
            upstream: read_all(&[&files.upstream_cert, &files.upstream_key]),
        };
        Ok(Self {
            server: Arc::new(ServerCertResolver {
                current: ArcSwap::from_pointee(server),
            }),
            kmip_verifier: Arc::new(ReloadingClientVerifier::new(mandatory, true)),
            https_verifier: Arc::new(ReloadingClientVerifier::new(optional, false)),
            files,
            seen: Mutex::new(seen),
            metrics,
        })
    }

    /// Polls the files every [`POLL_INTERVAL`] (a tokio task; abort the handle to stop).
    pub fn start_watching(
        self: &Arc<Self>,
        upstream: Arc<UpstreamPool>,
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
                material.poll_once(&upstream);
            }
        })
        .abort_handle()
    }

    /// Compares the files with what is in force and reloads what changed.
    pub fn poll_once(&self, upstream: &UpstreamPool) {
        let files = &self.files;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());

        let now = read_all(&[&files.cert, &files.key]);
        if now != seen.server {
            seen.server = now;
            match load_server_cert(files) {
                Ok((key, expiry)) => {
                    self.server.current.store(Arc::new(key));
                    self.metrics.set_certificate_expiry("server", expiry);
                    tracing::info!(cert = %files.cert.display(), "server certificate reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "new server certificate not loaded; the previous one stays")
                }
            }
        }

        let now = read_all(&[&files.client_ca]);
        if now != seen.client_ca {
            seen.client_ca = now;
            match load_verifiers(files) {
                Ok((mandatory, optional, expiry)) => {
                    self.kmip_verifier.inner.store(Arc::new(mandatory));
                    self.https_verifier.inner.store(Arc::new(optional));
                    self.metrics.set_certificate_expiry("client_ca", expiry);
                    tracing::info!(ca = %files.client_ca.display(), "client CA bundle reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "new client CA bundle not loaded; the previous one stays")
                }
            }
        }

        let now = read_all(&[&files.upstream_cert, &files.upstream_key]);
        if now != seen.upstream {
            seen.upstream = now;
            match load_upstream_cert(files) {
                Ok((cert_key, expiry)) => {
                    upstream.set_client_cert(Arc::new(cert_key));
                    self.metrics
                        .set_certificate_expiry("upstream_client", expiry);
                    tracing::info!(cert = %files.upstream_cert.display(), "upstream client certificate reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "new upstream client certificate not loaded; the previous one stays")
                }
            }
        }
    }
}

/// The concatenated content of `paths` (unreadable files count as empty).
fn read_all(paths: &[&PathBuf]) -> Vec<u8> {
    let mut out = Vec::new();
    for path in paths {
        out.extend(std::fs::read(path).unwrap_or_default());
        out.push(0);
    }
    out
}

/// notAfter of a DER certificate as Unix seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let secs = cert
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs();
    i64::try_from(secs).ok()
}

fn load_server_cert(files: &TlsFiles) -> Result<(CertifiedKey, i64), TlsError> {
    let certs = tls::certs_from_pem(&files.cert)?;
    let key_der = tls::key_der_from_pem(&files.key)?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(key_der)
        .map_err(|e| tls::file_error(&files.key, e))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| tls::file_error(&files.key, e))?;
    let expiry = not_after(&certs[0]).unwrap_or(0);
    let certified = CertifiedKey::new(certs, signer);
    certified
        .keys_match()
        .map_err(|e| tls::file_error(&files.key, format!("does not match the certificate: {e}")))?;
    Ok((certified, expiry))
}

type Verifiers = (
    Arc<dyn ClientCertVerifier>,
    Arc<dyn ClientCertVerifier>,
    i64,
);

fn load_verifiers(files: &TlsFiles) -> Result<Verifiers, TlsError> {
    let certs = tls::certs_from_pem(&files.client_ca)?;
    let expiry = certs.iter().filter_map(|c| not_after(c)).min().unwrap_or(0);
    let roots = Arc::new(tls::root_store(&files.client_ca)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mandatory = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let optional = WebPkiClientVerifier::builder_with_provider(roots, provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    Ok((mandatory, optional, expiry))
}

/// The upstream client certificate and key as Pingora wants them, with the leaf's notAfter.
pub fn load_upstream_cert(files: &TlsFiles) -> Result<(CertKey, i64), TlsError> {
    let certs = tls::certs_from_pem(&files.upstream_cert)?;
    let key_der = tls::key_der_from_pem(&files.upstream_key)?;
    // Checked here: Pingora would only fail at the next handshake.
    let key = rustls::pki_types::PrivateKeyDer::try_from(key_der.clone())
        .map_err(|e| tls::file_error(&files.upstream_key, e))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| tls::file_error(&files.upstream_key, e))?;
    CertifiedKey::new(certs.clone(), signer)
        .keys_match()
        .map_err(|e| {
            tls::file_error(
                &files.upstream_key,
                format!("does not match the certificate: {e}"),
            )
        })?;
    let expiry = not_after(&certs[0]).unwrap_or(0);
    let chain = certs.into_iter().map(|c| c.to_vec()).collect();
    Ok((CertKey::new(chain, key_der), expiry))
}
