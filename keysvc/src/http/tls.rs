//! The API listener's TLS material, reloaded without a restart: the server certificate and
//! key, and the CA bundle gateway certificates must chain to, are compared with their files
//! every [`POLL_INTERVAL`] and re-read when the content changed.
//!
//! ```text
//! tls.cert + tls.key ─┐ poll 2 s: digest changed? ─► parse, check ─ok─► ArcSwap ─► next handshake
//! tls.client_ca ──────┘                                  └─failed─► material in force stays;
//!                                                                  logged and counted once
//! ```
//!
//! A new file that does not load (unparsable, key not matching the certificate, empty
//! bundle) keeps the material in force and is retried when the files change again. Open
//! connections keep what their handshake used. A Kubernetes Secret volume swaps all its
//! files at once; a writer that replaces the certificate and the key one after the other
//! may be seen half-way (one failed reload), and the next poll loads the pair.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio_util::sync::CancellationToken;
use x509_cert::der::Decode;

use crate::config::{pem, FileDigest, PemError, PemFile, TlsFiles};
use crate::metrics::{CertificateMetrics, TlsReload};

/// How often the files are compared with the material in force: a renewed Secret is
/// picked up within seconds of the kubelet writing it, for three small reads.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Why TLS material did not load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] PemError),
    #[error("{path}: unusable private key, or not the certificate's: {source}")]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{path}: client CA bundle: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("TLS settings: {0}")]
    Settings(#[from] rustls::Error),
}

/// The server certificate in force, swapped atomically on reload.
#[derive(Debug)]
struct ServerCertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ServerCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Verifies gateway certificates against the client CA bundle in force (mandatory: no
/// certificate, no connection).
#[derive(Debug)]
struct ReloadingClientVerifier {
    inner: ArcSwap<Arc<dyn ClientCertVerifier>>,
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    // The hints would borrow from the swappable inner verifier; the gateway sends its one
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

/// The file contents the material in force came from (or that last failed to load, so a
/// broken file is reported once, not every poll).
#[derive(Debug)]
struct Seen {
    server: [Option<FileDigest>; 2],
    client_ca: Option<FileDigest>,
}

/// The API listener's certificate, key and client CA, kept current with their files.
#[derive(Debug)]
pub struct ApiTls {
    provider: Arc<CryptoProvider>,
    server: Arc<ServerCertResolver>,
    verifier: Arc<ReloadingClientVerifier>,
    cert_path: PathBuf,
    key_path: PathBuf,
    client_ca_path: PathBuf,
    seen: Mutex<Seen>,
    metrics: CertificateMetrics,
}

impl ApiTls {
    /// The material the configuration read; fails (before anything listens) when the key
    /// does not match the certificate or the bundle holds no usable CA.
    pub fn new(files: &TlsFiles, metrics: CertificateMetrics) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = certified_key(&provider, &files.cert, &files.key)?;
        let verifier = client_verifier(&provider, &files.client_ca)?;
        metrics.set_expiry(not_after(&server));
        Ok(Self {
            server: Arc::new(ServerCertResolver {
                current: ArcSwap::from_pointee(server),
            }),
            verifier: Arc::new(ReloadingClientVerifier {
                inner: ArcSwap::from_pointee(verifier),
            }),
            provider,
            cert_path: files.cert.path.clone(),
            key_path: files.key.path.clone(),
            client_ca_path: files.client_ca.path.clone(),
            seen: Mutex::new(Seen {
                server: [Some(files.cert.digest), Some(files.key.digest)],
                client_ca: Some(files.client_ca.digest),
            }),
            metrics,
        })
    }

    /// TLS 1.2/1.3 (ring), client certificate required and verified against the bundle in
    /// force, the server certificate in force, ALPN h2 preferred (http/1.1 for curl).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(self.verifier.clone())
            .with_cert_resolver(self.server.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // No session resumption: a resumed session skips client-certificate verification,
        // so a CA dropped from the bundle (or an expired gateway certificate) would still be
        // admitted until the cache forgot it. Gateways hold long-lived HTTP/2 connections;
        // a full handshake per connection costs nothing that matters.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    /// Compares the files with the material in force every [`POLL_INTERVAL`] until
    /// `shutdown` fires.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; the files were just read
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.poll_once(),
            }
        }
    }

    /// Reloads whatever changed since the last look.
    pub fn poll_once(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);

        let now = [
            FileDigest::of_file(&self.cert_path),
            FileDigest::of_file(&self.key_path),
        ];
        if now != seen.server {
            seen.server = now;
            match self.load_server_cert() {
                Ok((key, digests)) => {
                    let expiry = not_after(&key);
                    self.server.current.store(Arc::new(key));
                    self.metrics.set_expiry(expiry);
                    self.metrics.record_reload(TlsReload::Ok);
                    // What was parsed, which a writer may have changed since `now`.
                    seen.server = digests;
                    tracing::info!(cert = %self.cert_path.display(), not_after = expiry, "server certificate reloaded");
                }
                Err(e) => {
                    self.metrics.record_reload(TlsReload::Failed);
                    tracing::warn!(error = %e, "new server certificate not loaded; the previous one stays");
                }
            }
        }

        let now = FileDigest::of_file(&self.client_ca_path);
        if now != seen.client_ca {
            seen.client_ca = now;
            match self.load_client_verifier() {
                Ok((verifier, digest)) => {
                    self.verifier.inner.store(Arc::new(verifier));
                    self.metrics.record_reload(TlsReload::Ok);
                    seen.client_ca = Some(digest);
                    tracing::info!(ca = %self.client_ca_path.display(), "client CA bundle reloaded");
                }
                Err(e) => {
                    self.metrics.record_reload(TlsReload::Failed);
                    tracing::warn!(error = %e, "new client CA bundle not loaded; the previous one stays");
                }
            }
        }
    }

    fn load_server_cert(&self) -> Result<(CertifiedKey, [Option<FileDigest>; 2]), TlsError> {
        let cert = pem::certificates(&self.cert_path)?;
        let key = pem::private_key(&self.key_path)?;
        let certified = certified_key(&self.provider, &cert, &key)?;
        Ok((certified, [Some(cert.digest), Some(key.digest)]))
    }

    fn load_client_verifier(&self) -> Result<(Arc<dyn ClientCertVerifier>, FileDigest), TlsError> {
        let bundle = pem::certificates(&self.client_ca_path)?;
        Ok((client_verifier(&self.provider, &bundle)?, bundle.digest))
    }
}

/// The chain with its signing key; refuses a key that is not the leaf's.
fn certified_key(
    provider: &CryptoProvider,
    cert: &PemFile<Vec<CertificateDer<'static>>>,
    key: &PemFile<Arc<PrivateKeyDer<'static>>>,
) -> Result<CertifiedKey, TlsError> {
    CertifiedKey::from_der(cert.content.clone(), key.content.clone_key(), provider).map_err(
        |source| TlsError::Key {
            path: key.path.clone(),
            source,
        },
    )
}

/// A verifier requiring a client certificate that chains to one of the bundle's CAs.
fn client_verifier(
    provider: &Arc<CryptoProvider>,
    bundle: &PemFile<Vec<CertificateDer<'static>>>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let fail = |reason: String| TlsError::ClientCa {
        path: bundle.path.clone(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in &bundle.content {
        roots.add(cert.clone()).map_err(|e| fail(e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| fail(e.to_string()))
}

/// notAfter of the leaf as Unix seconds; 0 if it does not parse (rustls accepted it, so
/// it does, but a metric is no reason to refuse a certificate).
fn not_after(key: &CertifiedKey) -> i64 {
    key.cert
        .first()
        .and_then(|leaf| x509_cert::Certificate::from_der(leaf.as_ref()).ok())
        .map(|cert| {
            cert.tbs_certificate
                .validity
                .not_after
                .to_unix_duration()
                .as_secs()
        })
        .and_then(|secs| i64::try_from(secs).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Self {
            let dir = Self(tempfile::tempdir().expect("temporary directory"));
            let (cert, key) = self_signed();
            dir.write("tls.crt", &cert);
            dir.write("tls.key", &key);
            dir.write("ca.crt", &self_signed().0);
            dir
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.path().join(name)
        }

        fn write(&self, name: &str, content: &str) {
            std::fs::write(self.path(name), content).expect("write");
        }

        fn files(&self) -> TlsFiles {
            TlsFiles {
                cert: pem::certificates(&self.path("tls.crt")).expect("cert"),
                key: pem::private_key(&self.path("tls.key")).expect("key"),
                client_ca: pem::certificates(&self.path("ca.crt")).expect("CA"),
            }
        }
    }

    /// (certificate PEM, key PEM)
    fn self_signed() -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("self-signed certificate");
        (made.cert.pem(), made.key_pair.serialize_pem())
    }

    fn in_force(tls: &ApiTls) -> Vec<u8> {
        tls.server.current.load().cert[0].to_vec()
    }

    fn counts(metrics: &CertificateMetrics) -> (u64, u64) {
        (
            metrics.reloads(TlsReload::Ok),
            metrics.reloads(TlsReload::Failed),
        )
    }

    #[test]
    fn unchanged_files_are_not_reloaded() {
        let dir = Dir::new();
        let metrics = CertificateMetrics::default();
        let tls = ApiTls::new(&dir.files(), metrics.clone()).expect("loads");
        assert!(metrics.expiry() > 0, "notAfter exported at start");
        tls.poll_once();
        tls.poll_once();
        assert_eq!(counts(&metrics), (0, 0));
    }

    #[test]
    fn a_broken_certificate_keeps_the_one_in_force_and_is_counted_once() {
        let dir = Dir::new();
        let metrics = CertificateMetrics::default();
        let tls = ApiTls::new(&dir.files(), metrics.clone()).expect("loads");
        let original = in_force(&tls);

        dir.write("tls.crt", "-----BEGIN CERTIFICATE-----\nbroken\n");
        tls.poll_once();
        tls.poll_once();
        assert_eq!(
            counts(&metrics),
            (0, 1),
            "one failure per change, not per poll"
        );
        assert_eq!(in_force(&tls), original);

        // A certificate whose key is not the one on disk: refused as well.
        dir.write("tls.crt", &self_signed().0);
        tls.poll_once();
        assert_eq!(counts(&metrics), (0, 2));
        assert_eq!(in_force(&tls), original);

        // Then the matching key arrives: the pair loads.
        let (cert, key) = self_signed();
        dir.write("tls.crt", &cert);
        dir.write("tls.key", &key);
        tls.poll_once();
        assert_eq!(counts(&metrics), (1, 2));
        assert_ne!(in_force(&tls), original);
    }

    #[test]
    fn a_client_ca_bundle_without_certificates_keeps_the_one_in_force() {
        let dir = Dir::new();
        let metrics = CertificateMetrics::default();
        let tls = ApiTls::new(&dir.files(), metrics.clone()).expect("loads");
        let verifier = tls.verifier.inner.load_full();

        dir.write("ca.crt", "");
        tls.poll_once();
        assert_eq!(counts(&metrics), (0, 1));
        assert!(Arc::ptr_eq(&verifier, &tls.verifier.inner.load_full()));

        dir.write("ca.crt", &self_signed().0);
        tls.poll_once();
        assert_eq!(counts(&metrics), (1, 1));
        assert!(!Arc::ptr_eq(&verifier, &tls.verifier.inner.load_full()));
    }
}
