//! TLS for the KMIP listener: the mTLS settings (client certificate mandatory, chained to
//! the configured CA, TLS 1.2/1.3) and the capture of the verified peer certificate as a
//! [`PeerIdentity`] at the end of the handshake.

use std::any::Any;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

use crate::identity::PeerIdentity;
pub use crate::reload::{ReloadingClientVerifier, ServerCertResolver, TlsMaterial};

/// Why the TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("{0}")]
    Pingora(String),
    #[error(transparent)]
    Material(#[from] tlsmaterial::TlsError),
}

/// A client certificate as verified in the handshake, kept with the connection so that it
/// can be checked again before every request ([`VerifiedPeer::recheck`]).
#[derive(Debug)]
pub struct VerifiedPeer {
    pub identity: PeerIdentity,
    /// The chain the client presented, leaf first.
    chain: Vec<CertificateDer<'static>>,
    /// The client-CA generation it was verified under.
    generation: AtomicU64,
}

/// Why a connection's certificate no longer admits requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Revoked {
    #[error("the client certificate expired at {not_after} (Unix time)")]
    Expired { not_after: i64 },
    #[error("the client certificate no longer verifies against the client CA bundle: {0}")]
    Untrusted(String),
}

impl Revoked {
    /// The label counted in `gateway_tenant_denied_total{reason}`.
    pub fn as_label(&self) -> &'static str {
        match self {
            Revoked::Expired { .. } => "certificate_expired",
            Revoked::Untrusted(_) => "certificate_untrusted",
        }
    }
}

impl VerifiedPeer {
    /// Before a request: the certificate has not expired, and still verifies against the
    /// client CA bundle if that changed since it was last verified (a signature check only
    /// then; otherwise two atomic loads and a clock read).
    pub fn recheck(&self, verifier: &ReloadingClientVerifier) -> Result<(), Revoked> {
        let now = UnixTime::now();
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        // notAfter is the last second of validity (RFC 5280 §4.1.2.5: inclusive).
        if now_secs > self.identity.not_after {
            return Err(Revoked::Expired {
                not_after: self.identity.not_after,
            });
        }
        let generation = verifier.generation();
        if generation != self.generation.load(Ordering::Acquire) {
            let (end_entity, intermediates) = self
                .chain
                .split_first()
                .ok_or_else(|| Revoked::Untrusted("no certificate".into()))?;
            verifier
                .verify_client_cert(end_entity, intermediates, now)
                .map_err(|e| Revoked::Untrusted(e.to_string()))?;
            self.generation.store(generation, Ordering::Release);
        }
        Ok(())
    }
}

/// Stores the peer's [`VerifiedPeer`] in the connection's `SslDigest` extension, read back
/// with [`verified_peer`] / [`peer_identity`]. A certificate that does not parse leaves the
/// extension empty: the routing decision then denies the connection
/// (`unreadable_certificate`).
///
/// The chain is verified once more, against the client CA bundle in force now: a resumed
/// TLS session (Pingora's rustls listener keeps rustls' session cache, which this gateway
/// cannot turn off) skips the handshake's certificate verification, so without this a
/// client could resume a session made under a CA that has since been removed from the
/// bundle, or with a certificate that has expired since. Such a connection is left without
/// an identity, and is denied like an unreadable certificate.
#[derive(Debug)]
pub struct PeerIdentityCapture {
    verifier: Arc<ReloadingClientVerifier>,
}

#[async_trait]
impl TlsAccept for PeerIdentityCapture {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let chain = tls.peer_cert_chain_der()?;
        let (end_entity, intermediates) = chain.split_first()?;
        let generation = self.verifier.generation();
        if let Err(e) = self
            .verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
        {
            tracing::warn!(error = %e, "client certificate no longer verifies (resumed TLS session?)");
            return None;
        }
        match PeerIdentity::from_der(end_entity) {
            Ok(identity) => Some(Arc::new(VerifiedPeer {
                identity,
                chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
                generation: AtomicU64::new(generation),
            })),
            Err(e) => {
                tracing::warn!(error = %e, "verified client certificate is unreadable");
                None
            }
        }
    }
}

/// The identity captured during the handshake of `digest`'s connection.
pub fn peer_identity(digest: &pingora::protocols::tls::SslDigest) -> Option<&PeerIdentity> {
    verified_peer(digest).map(|p| &p.identity)
}

/// The verified certificate of `digest`'s connection.
pub fn verified_peer(digest: &pingora::protocols::tls::SslDigest) -> Option<&VerifiedPeer> {
    digest.extension.get::<VerifiedPeer>()
}

/// KMIP listener settings: the (reloadable) server certificate, client certificates
/// required and verified against the (reloadable) client CA bundle, the identity captured.
pub fn kmip_listener_settings(material: &TlsMaterial) -> Result<TlsSettings, TlsError> {
    listener_settings(material, material.kmip_verifier.clone())
}

/// HTTPS listener settings: as [`kmip_listener_settings`] but a client certificate is
/// optional (probes and Prometheus have none); `POST /kmip` requires one.
pub fn https_listener_settings(material: &TlsMaterial) -> Result<TlsSettings, TlsError> {
    listener_settings(material, material.https_verifier.clone())
}

fn listener_settings(
    material: &TlsMaterial,
    verifier: Arc<ReloadingClientVerifier>,
) -> Result<TlsSettings, TlsError> {
    let capture = PeerIdentityCapture {
        verifier: verifier.clone(),
    };
    let mut settings = TlsSettings::with_callbacks(Box::new(capture))
        .map_err(|e| TlsError::Pingora(e.to_string()))?;
    settings.set_cert_resolver(material.server.clone());
    settings.set_client_cert_verifier(verifier);
    Ok(settings)
}

/// Every certificate in a PEM file (at least one).
pub fn certs_from_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    Ok(tlsmaterial::pem::certificates(path)
        .map_err(tlsmaterial::TlsError::from)?
        .content)
}

/// The DER of the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn key_der_from_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let key = tlsmaterial::pem::private_key(path).map_err(tlsmaterial::TlsError::from)?;
    Ok(key.content.secret_der().to_vec())
}
