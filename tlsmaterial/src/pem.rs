//! PEM files as read: where each came from, what it parsed to, and a digest of the very
//! bytes it was parsed from, so that a reload can tell new content from the content in
//! force without keeping the (private key) bytes around.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// SHA-256 of a file's content.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FileDigest([u8; 32]);

impl FileDigest {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

impl fmt::Debug for FileDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to tell two versions apart in a log line.
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// One PEM file, read and parsed.
#[derive(Clone)]
pub struct PemFile<T> {
    pub path: PathBuf,
    /// Of the bytes `content` was parsed from.
    pub digest: FileDigest,
    pub content: T,
}

impl<T> fmt::Debug for PemFile<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The content may be a private key: where and which version only.
        f.debug_struct("PemFile")
            .field("path", &self.path)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// Why a PEM file did not load (names the file, never echoes its content).
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// A certificate chain or CA bundle: at least one CERTIFICATE block.
pub fn certificates(path: &Path) -> Result<PemFile<Vec<CertificateDer<'static>>>, PemError> {
    read(path, parse_certificates)
}

/// A private key (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PemFile<Arc<PrivateKeyDer<'static>>>, PemError> {
    read(path, parse_private_key)
}

/// One file's bytes as read, kept only until they are parsed (zeroized on drop: the file
/// may be a private key).
pub struct FileBytes {
    pub path: PathBuf,
    /// `Err` when the file could not be read; the parse then reports why.
    bytes: Result<Zeroizing<Vec<u8>>, std::io::ErrorKind>,
}

impl fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBytes")
            .field("path", &self.path)
            .field("digest", &self.digest())
            .finish_non_exhaustive()
    }
}

impl FileBytes {
    /// Reads the file now (an unreadable file is remembered as such, not an error yet).
    pub fn read(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            bytes: std::fs::read(path)
                .map(Zeroizing::new)
                .map_err(|e| e.kind()),
        }
    }

    /// The digest of the bytes read; `None` when the file could not be read.
    pub fn digest(&self) -> Option<FileDigest> {
        self.bytes.as_deref().ok().map(|b| FileDigest::of(b))
    }

    /// The bytes as a certificate chain or CA bundle (see [`certificates`]).
    pub fn certificates(&self) -> Result<PemFile<Vec<CertificateDer<'static>>>, PemError> {
        self.parse(parse_certificates)
    }

    /// The bytes as a private key (see [`private_key`]).
    pub fn private_key(&self) -> Result<PemFile<Arc<PrivateKeyDer<'static>>>, PemError> {
        self.parse(parse_private_key)
    }

    fn parse<T>(
        &self,
        parse: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<PemFile<T>, PemError> {
        let bytes = self.bytes.as_ref().map_err(|kind| PemError::Read {
            path: self.path.clone(),
            source: std::io::Error::from(*kind),
        })?;
        parsed(&self.path, bytes, parse)
    }
}

fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE in the file".into());
    }
    Ok(certs)
}

fn parse_private_key(pem: &[u8]) -> Result<Arc<PrivateKeyDer<'static>>, String> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| format!("not PEM: {e}"))?
        .map(Arc::new)
        .ok_or_else(|| "no PRIVATE KEY in the file".to_owned())
}

fn read<T>(
    path: &Path,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<PemFile<T>, PemError> {
    let bytes = std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| PemError::Read {
            path: path.to_owned(),
            source,
        })?;
    parsed(path, &bytes, parse)
}

fn parsed<T>(
    path: &Path,
    bytes: &[u8],
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<PemFile<T>, PemError> {
    let content = parse(bytes).map_err(|reason| PemError::Parse {
        path: path.to_owned(),
        reason,
    })?;
    Ok(PemFile {
        path: path.to_owned(),
        digest: FileDigest::of(bytes),
        content,
    })
}
