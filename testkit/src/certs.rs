//! A throwaway CA and named identities, written as PEM files to a directory: `ca.pem`, and
//! `NAME.pem` / `NAME-key.pem` for each identity issued.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pki::{CertSpec, CertificateAuthority, IssuedCert};
use rustls::pki_types::CertificateDer;

/// The CA certificate's file name in a [`TestPki`] directory.
pub const CA_FILE: &str = "ca.pem";

/// A server certificate for `common_name` valid for `localhost` and `127.0.0.1`.
pub fn localhost_server(common_name: &str) -> CertSpec {
    CertSpec {
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![IpAddr::from([127, 0, 0, 1])],
        server: true,
        ..CertSpec::new(common_name)
    }
}

/// A client certificate for `common_name` with the organizational units `ous`.
pub fn client(common_name: &str, ous: &[&str]) -> CertSpec {
    CertSpec {
        organizational_units: ous.iter().map(|ou| ou.to_string()).collect(),
        client: true,
        ..CertSpec::new(common_name)
    }
}

/// A tenant's workload certificate: `CN=mongod.<tenant>, OU=<tenant>`, client usage (what
/// the `OU=<tenant>` routing rules route).
pub fn tenant(tenant: &str) -> CertSpec {
    client(&format!("mongod.{tenant}"), &[tenant])
}

/// A CA and the certificates it issued, as files in a directory (a temporary one that lives
/// as long as this value, or the caller's).
#[derive(Debug)]
pub struct TestPki {
    pub ca: CertificateAuthority,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl TestPki {
    /// A new CA named `ca_name` in a new temporary directory, `ca.pem` written.
    pub fn new(ca_name: &str) -> Self {
        let temp = tempfile::Builder::new()
            .prefix("openkcm-test-")
            .tempdir()
            .expect("temporary directory");
        let mut pki = Self::at(temp.path(), ca_name);
        pki._temp = Some(temp);
        pki
    }

    /// A new CA named `ca_name` with its files in `dir` (which must exist).
    pub fn at(dir: &Path, ca_name: &str) -> Self {
        let pki = Self {
            ca: CertificateAuthority::create(ca_name).expect("test CA"),
            dir: dir.to_path_buf(),
            _temp: None,
        };
        pki.write(CA_FILE, pki.ca.cert_pem());
        pki
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A file in the PKI's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// [`TestPki::path`] as text, for flags.
    pub fn text(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Writes `contents` to the file `name`; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// Issues `spec` as the identity `name`: `NAME.pem` and `NAME-key.pem`.
    pub fn issue(&self, name: &str, spec: &CertSpec) -> IssuedCert {
        self.issue_to(spec, &format!("{name}.pem"), &format!("{name}-key.pem"))
    }

    /// Issues `spec` into the files `cert` and `key` of the PKI's directory.
    pub fn issue_to(&self, spec: &CertSpec, cert: &str, key: &str) -> IssuedCert {
        let issued = self.ca.issue(spec).expect("test certificate");
        issued
            .write(&self.path(cert), &self.path(key))
            .expect("write test certificate");
        issued
    }

    /// Issues `spec` under the file names of a cert-manager Secret mounted in a pod:
    /// `tls.crt`, `tls.key`, and the CA as `ca.crt`.
    pub fn issue_mounted(&self, spec: &CertSpec) -> IssuedCert {
        self.write("ca.crt", self.ca.cert_pem());
        self.issue_to(spec, "tls.crt", "tls.key")
    }

    /// The CA certificate, DER, for a rustls root store.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.ca.cert_der().to_vec())
    }

    /// A KMIP client connector presenting `who`'s certificate and trusting the CA, read
    /// back from the files as a user of the library would.
    pub fn connector(&self, who: &str) -> tokio_rustls::TlsConnector {
        kmip::client::tls::connector_from_pem_files(
            self.path(CA_FILE),
            self.path(&format!("{who}.pem")),
            self.path(&format!("{who}-key.pem")),
        )
        .unwrap_or_else(|e| panic!("client connector for {who}: {e}"))
    }

    /// A rustls client trusting the CA, presenting `who`'s certificate (none for `None`).
    pub fn client_config(&self, who: Option<&str>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()).expect("CA certificate");
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        match who {
            Some(who) => {
                let (certs, key) = self.identity(who);
                builder
                    .with_client_auth_cert(certs, key)
                    .expect("client certificate")
            }
            None => builder.with_no_client_auth(),
        }
    }

    /// A rustls server presenting `name`'s certificate; with `mtls`, it requires a client
    /// certificate of the CA.
    pub fn server_config(&self, name: &str, mtls: bool) -> rustls::ServerConfig {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = if mtls {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca_der()).expect("CA certificate");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let (certs, key) = self.identity(name);
        builder
            .with_single_cert(certs, key)
            .expect("server configuration")
    }

    /// [`TestPki::server_config`] as a TLS acceptor.
    pub fn acceptor(&self, name: &str, mtls: bool) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::new(self.server_config(name, mtls)))
    }

    /// `name`'s certificate chain and key, read from its files.
    fn identity(
        &self,
        name: &str,
    ) -> (
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let certs = kmip::client::tls::certs_from_pem(self.path(&format!("{name}.pem")))
            .unwrap_or_else(|e| panic!("{name}.pem: {e}"));
        let key = kmip::client::tls::key_from_pem(self.path(&format!("{name}-key.pem")))
            .unwrap_or_else(|e| panic!("{name}-key.pem: {e}"));
        (certs, key)
    }
}

/// The one crypto provider of the workspace (ring).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
