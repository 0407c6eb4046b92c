//! Loading a server certificate and a client CA bundle, and the swappable pieces a rustls
//! `ServerConfig` (or Pingora's `TlsSettings`) is built with once: the listener keeps them,
//! a reload stores new material into them, the next handshake uses it. Open connections
//! keep what their handshake used.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use x509_cert::der::Decode;

use crate::pem::{FileBytes, PemError, PemFile};

/// What a load made of the files, with the notAfter exported for it.
#[derive(Debug)]
pub struct Loaded<T> {
    pub value: T,
    /// Unix seconds: the leaf's notAfter (for a CA bundle, the earliest).
    pub not_after: i64,
}

/// Why TLS material did not load. Names the file, never echoes its content.
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

/// The chain with its signing key; refuses a key that is not the leaf's.
pub fn certified_key(
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

/// Whether a listener requires a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate, no connection.
    Required,
    /// A certificate, when presented, must verify; none is accepted too (probes, scrapers).
    Optional,
}

/// A verifier of client certificates chaining to one of the bundle's CAs.
pub fn client_verifier(
    provider: &Arc<CryptoProvider>,
    bundle: &PemFile<Vec<CertificateDer<'static>>>,
    auth: ClientAuth,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let fail = |reason: String| TlsError::ClientCa {
        path: bundle.path.clone(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in &bundle.content {
        roots.add(cert.clone()).map_err(|e| fail(e.to_string()))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = match auth {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    builder.build().map_err(|e| fail(e.to_string()))
}

/// A server certificate chain and its key as a [`crate::Watched`] pair reads them: parsed,
/// checked to belong together, with the leaf's notAfter.
pub fn load_server_cert(
    provider: &CryptoProvider,
    [cert, key]: &[FileBytes; 2],
) -> Result<Loaded<CertifiedKey>, TlsError> {
    let cert = cert.certificates()?;
    let value = certified_key(provider, &cert, &key.private_key()?)?;
    Ok(Loaded {
        value,
        not_after: leaf_not_after(&cert.content),
    })
}

/// notAfter of a chain's leaf as Unix seconds; 0 if it does not parse (rustls accepted it,
/// so it does, but a metric is no reason to refuse a certificate).
pub fn leaf_not_after(chain: &[CertificateDer<'_>]) -> i64 {
    chain.first().and_then(|leaf| not_after(leaf)).unwrap_or(0)
}

/// The earliest notAfter of a CA bundle (0 if none parses).
pub fn earliest_not_after(bundle: &[CertificateDer<'_>]) -> i64 {
    bundle
        .iter()
        .filter_map(|c| not_after(c))
        .min()
        .unwrap_or(0)
}

/// notAfter of a DER certificate as Unix seconds; `None` if it does not parse.
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

/// The server certificate in force, swapped atomically on reload.
#[derive(Debug)]
pub struct ServerCertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ServerCertResolver {
    pub fn new(key: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(key),
        }
    }

    /// From the next handshake on, `key` is presented.
    pub fn store(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// The certificate presented now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
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
    auth: ClientAuth,
    /// Bumped after each [`ReloadingClientVerifier::store`]: a connection verified under an
    /// older generation verifies its peer again before its next request.
    generation: AtomicU64,
}

impl ReloadingClientVerifier {
    /// `inner` must have been built for `auth` (see [`client_verifier`]).
    pub fn new(inner: Arc<dyn ClientCertVerifier>, auth: ClientAuth) -> Self {
        Self {
            inner: ArcSwap::from_pointee(inner),
            auth,
            generation: AtomicU64::new(0),
        }
    }

    /// From the next handshake on, certificates are verified by `inner`.
    pub fn store(&self, inner: Arc<dyn ClientCertVerifier>) {
        self.inner.store(Arc::new(inner));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// How many times the verifier was replaced. Read it before verifying: a peer verified
    /// after reading generation `g` is good for `g`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The verifier in force now.
    pub fn current(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.inner.load())
    }
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.auth == ClientAuth::Required
    }

    // The hints would borrow from the swappable inner verifier; clients send their
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
