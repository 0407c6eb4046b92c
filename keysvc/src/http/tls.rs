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

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::ServerConfig;
use tlsmaterial::material::{
    certified_key, client_verifier, earliest_not_after, leaf_not_after, load_server_cert,
    ClientAuth,
};
use tlsmaterial::watch::Loaded;
use tlsmaterial::{
    FileBytes, ReloadingClientVerifier, ServerCertResolver, TlsError, TlsMetrics, Watched,
};
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;

pub use tlsmaterial::watch::POLL_INTERVAL;

/// The API listener's certificate, key and client CA, kept current with their files.
#[derive(Debug)]
pub struct ApiTls {
    provider: Arc<CryptoProvider>,
    server: Arc<ServerCertResolver>,
    verifier: Arc<ReloadingClientVerifier>,
    server_files: Watched<2>,
    client_ca_file: Watched<1>,
}

impl ApiTls {
    /// The material the configuration read; fails (before anything listens) when the key
    /// does not match the certificate or the bundle holds no usable CA.
    pub fn new(files: &TlsFiles, metrics: TlsMetrics) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = certified_key(&provider, &files.cert, &files.key)?;
        let verifier = client_verifier(&provider, &files.client_ca, ClientAuth::Required)?;
        let server_files = Watched::new(
            "server",
            [files.cert.path.clone(), files.key.path.clone()],
            metrics.clone(),
        );
        server_files.in_force(
            [files.cert.digest, files.key.digest],
            leaf_not_after(&server.cert),
        );
        let client_ca_file = Watched::new("client_ca", [files.client_ca.path.clone()], metrics);
        client_ca_file.in_force(
            [files.client_ca.digest],
            earliest_not_after(&files.client_ca.content),
        );
        Ok(Self {
            server: Arc::new(ServerCertResolver::new(server)),
            verifier: Arc::new(ReloadingClientVerifier::new(verifier, ClientAuth::Required)),
            provider,
            server_files,
            client_ca_file,
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
        let provider = &self.provider;
        if let Some(key) = self
            .server_files
            .poll(|files| load_server_cert(provider, files))
        {
            self.server.store(key);
        }
        if let Some(verifier) = self.client_ca_file.poll(|[bundle]: &[FileBytes; 1]| {
            let bundle = bundle.certificates()?;
            Ok(Loaded {
                value: client_verifier(provider, &bundle, ClientAuth::Required)?,
                not_after: earliest_not_after(&bundle.content),
            })
        }) {
            self.verifier.store(verifier);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tlsmaterial::{pem, ReloadResult};

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
        tls.server.current().cert[0].to_vec()
    }

    /// Reloads of any material, (ok, failed).
    fn counts(metrics: &TlsMetrics) -> (u64, u64) {
        let of = |result| metrics.reloads("server", result) + metrics.reloads("client_ca", result);
        (of(ReloadResult::Ok), of(ReloadResult::Failed))
    }

    #[test]
    fn unchanged_files_are_not_reloaded() {
        let dir = Dir::new();
        let metrics = TlsMetrics::default();
        let tls = ApiTls::new(&dir.files(), metrics.clone()).expect("loads");
        assert!(metrics.expiry("server") > 0, "notAfter exported at start");
        tls.poll_once();
        tls.poll_once();
        assert_eq!(counts(&metrics), (0, 0));
    }

    #[test]
    fn a_broken_certificate_keeps_the_one_in_force_and_is_counted_once() {
        let dir = Dir::new();
        let metrics = TlsMetrics::default();
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
        let metrics = TlsMetrics::default();
        let tls = ApiTls::new(&dir.files(), metrics.clone()).expect("loads");
        let verifier = tls.verifier.current();

        dir.write("ca.crt", "");
        tls.poll_once();
        assert_eq!(counts(&metrics), (0, 1));
        assert!(Arc::ptr_eq(&verifier, &tls.verifier.current()));

        dir.write("ca.crt", &self_signed().0);
        tls.poll_once();
        assert_eq!(counts(&metrics), (1, 1));
        assert!(!Arc::ptr_eq(&verifier, &tls.verifier.current()));
    }
}
