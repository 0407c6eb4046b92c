//! The pod-local PKI: the workload's TLS listener presents a certificate for `localhost` /
//! `127.0.0.1` / `::1` signed by a CA that exists only in this pod.
//!
//! Files in the shared directory (`--local-dir`, an emptyDir the workload mounts):
//! - `ca.pem` (0644): what the workload trusts (mongod's `kmip.serverCAFile`);
//! - `client.pem` (0644) and `client-key.pem` (0640): a client pair for clients that insist
//!   on presenting one (mongod's `kmip.clientCertificateFile`). The listener accepts it but
//!   does not require a client certificate: only containers of this pod reach 127.0.0.1, and
//!   whatever the workload presents, the gateway sees the pod's tenant certificate;
//! - `.ca/` (0700): the CA's own certificate and key, kept so that a restarted sidecar
//!   presents a certificate the workload still trusts.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use pki::{CertSpec, CertificateAuthority};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::SidecarError;

/// The CA certificate the workload trusts.
pub const CA_FILE: &str = "ca.pem";
/// The workload's local client certificate and key.
pub const CLIENT_CERT_FILE: &str = "client.pem";
pub const CLIENT_KEY_FILE: &str = "client-key.pem";
/// Where the pod-local CA keeps its key (owner-only directory).
const CA_DIR: &str = ".ca";
const CA_NAME: &str = "OpenKCM pod-local CA";
/// The local certificates are re-issued at every start; a year outlives any pod.
const LOCAL_VALIDITY_DAYS: i64 = 365;

/// Creates (or reuses) the pod-local CA in `dir`, writes the workload's files and returns
/// the TLS configuration of the local listener.
pub fn prepare(dir: &Path) -> Result<Arc<rustls::ServerConfig>, SidecarError> {
    let local = |e: pki::PkiError| SidecarError::LocalPki(e.to_string());
    let io =
        |what: &Path, e: std::io::Error| SidecarError::LocalPki(format!("{}: {e}", what.display()));
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let ca_dir = dir.join(CA_DIR);
    fs::create_dir_all(&ca_dir).map_err(|e| io(&ca_dir, e))?;
    fs::set_permissions(&ca_dir, fs::Permissions::from_mode(0o700)).map_err(|e| io(&ca_dir, e))?;
    let (ca, _) = CertificateAuthority::load_or_create(&ca_dir, CA_NAME).map_err(local)?;

    let client = ca
        .issue(&CertSpec {
            client: true,
            validity: CertSpec::validity_days(LOCAL_VALIDITY_DAYS),
            ..CertSpec::new("openkcm-local-client")
        })
        .map_err(local)?;
    let client_key = dir.join(CLIENT_KEY_FILE);
    client
        .write(&dir.join(CLIENT_CERT_FILE), &client_key)
        .map_err(local)?;
    // Readable by the pod's shared group (fsGroup): the workload runs as another user.
    fs::set_permissions(&client_key, fs::Permissions::from_mode(0o640))
        .map_err(|e| io(&client_key, e))?;
    fs::copy(ca_dir.join(pki::CA_CERT_FILE), dir.join(CA_FILE)).map_err(|e| io(dir, e))?;

    let server = ca
        .issue(&CertSpec {
            server: true,
            dns_names: vec!["localhost".into()],
            ip_addresses: vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()],
            validity: CertSpec::validity_days(LOCAL_VALIDITY_DAYS),
            ..CertSpec::new("localhost")
        })
        .map_err(local)?;
    let key = rustls_pemfile::private_key(&mut server.key_pem.expose().as_bytes())
        .ok()
        .flatten()
        .ok_or_else(|| SidecarError::LocalPki("issued key does not parse".into()))?;
    server_config(
        CertificateDer::from(ca.cert_der().to_vec()),
        CertificateDer::from(server.cert_der.clone()),
        key,
    )
}

fn server_config(
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, SidecarError> {
    let tls = |e: &dyn std::fmt::Display| SidecarError::LocalPki(format!("local TLS: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| tls(&e))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls(&e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert, ca], key)
        .map_err(|e| tls(&e))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn a_restarted_sidecar_keeps_the_ca_the_workload_trusts() {
        let dir = tempfile::tempdir().expect("tempdir");
        prepare(dir.path()).expect("first start");
        let ca = fs::read(dir.path().join(CA_FILE)).expect("ca.pem");
        let client = fs::read(dir.path().join(CLIENT_CERT_FILE)).expect("client.pem");
        prepare(dir.path()).expect("restart");
        assert_eq!(fs::read(dir.path().join(CA_FILE)).expect("ca.pem"), ca);
        assert_ne!(
            fs::read(dir.path().join(CLIENT_CERT_FILE)).expect("client.pem"),
            client,
            "the local client pair is re-issued"
        );
        assert_eq!(mode(&dir.path().join(CA_DIR)), 0o700);
        assert_eq!(mode(&dir.path().join(CA_DIR).join(pki::CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.path().join(CLIENT_KEY_FILE)), 0o640);
        assert_eq!(mode(&dir.path().join(CA_FILE)), 0o644);
        assert!(
            !dir.path().join(pki::CA_KEY_FILE).exists(),
            "the CA key never lands in the shared directory"
        );
    }
}
