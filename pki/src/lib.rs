//! Dev and test PKI: a local certificate authority that issues ECDSA P-256 client and
//! server certificates as PEM files.
//!
//! ```text
//!  CertificateAuthority ── ca.pem, ca-key.pem (0600)
//!        │ issue(&CertSpec)
//!        ▼
//!  IssuedCert ── NAME.pem, NAME-key.pem (0600)
//! ```
//!
//! Used by `openkcm pki`, `openkcm dev` and the tests. Production certificates come from
//! cert-manager; nothing here is meant to run a real CA.
//!
//! Profile, chosen for the clients we must serve:
//! - ECDSA P-256 with SHA-256 everywhere: rustls and PyKMIP's server both take it.
//! - Leaf certificates carry no basicConstraints extension at all (not even `CA:FALSE`):
//!   PyKMIP's `cryptography` refuses an explicit `CA:FALSE` in its client certificates.
//! - Extended key usage: clientAuth for clients, serverAuth for servers, both for a
//!   certificate that is used both ways (the gateway's upstream identity).

mod authority;
mod files;
mod spec;

use std::path::PathBuf;

pub use authority::{CertificateAuthority, CA_CERT_FILE, CA_KEY_FILE, CA_VALIDITY_DAYS};
pub use spec::{
    CertSpec, IssuedCert, PrivateKeyPem, DEFAULT_VALIDITY_DAYS, MAX_ORGANIZATIONAL_UNITS,
};

/// Why a certificate could not be created, loaded or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    // Each variant's message carries its cause, so none is also a `source` (anyhow's
    // `{:#}` would print it twice).
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("{} already exists; refusing to overwrite it", .0.display())]
    AlreadyExists(PathBuf),
    #[error("invalid certificate request: {0}")]
    InvalidSpec(String),
    #[error("certificate generation failed: {0}")]
    Generation(rcgen::Error),
}

impl From<rcgen::Error> for PkiError {
    fn from(error: rcgen::Error) -> Self {
        Self::Generation(error)
    }
}

#[cfg(test)]
mod tests;
