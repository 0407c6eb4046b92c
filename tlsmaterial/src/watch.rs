//! Reload on content change, the same way in every component.
//!
//! Each poll reads every file of a set once, digests the bytes read, and — when a digest
//! differs from the material in force — parses those same bytes. A change between the look
//! and the parse cannot be missed or mismatched: there is one read. Files that do not load
//! leave the material in force, are logged and counted once, and are tried again when they
//! change again. A Kubernetes Secret volume swaps all its files at once; a writer that
//! replaces a certificate and its key one after the other may be seen half-way (one failed
//! reload), and the next poll loads the pair.
//!
//! Content is compared, not modification times: a Secret volume swaps a symlink, and the
//! files' own mtimes do not move.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

pub use crate::material::Loaded;
use crate::material::TlsError;
use crate::metrics::{ReloadResult, TlsMetrics};
use crate::pem::{FileBytes, FileDigest};

/// How often components compare their files with the material in force: a renewed Secret
/// is picked up within seconds of the kubelet writing it, for a few small reads.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A set of files loaded together (a certificate and its key; a CA bundle; …), watched for
/// changes. `cert` names the material in logs and in the metrics' `cert` label.
#[derive(Debug)]
pub struct Watched<const N: usize> {
    cert: &'static str,
    paths: [PathBuf; N],
    /// The digests of the files behind the material in force, or of the files that last
    /// failed to load (so a broken file is reported once). `None`: never looked.
    seen: Mutex<Option<[Option<FileDigest>; N]>>,
    metrics: TlsMetrics,
}

impl<const N: usize> Watched<N> {
    pub fn new(cert: &'static str, paths: [PathBuf; N], metrics: TlsMetrics) -> Self {
        metrics.declare(cert);
        Self {
            cert,
            paths,
            seen: Mutex::new(None),
            metrics,
        }
    }

    pub fn paths(&self) -> &[PathBuf; N] {
        &self.paths
    }

    /// Records material that was loaded elsewhere (a configuration reader that reported
    /// every problem together) as the material in force.
    pub fn in_force(&self, digests: [FileDigest; N], not_after: i64) {
        *self.lock() = Some(digests.map(Some));
        self.metrics.set_expiry(self.cert, not_after);
    }

    /// The first load, at start-up: an error is the caller's to report (before anything
    /// listens); it is not a reload and is not counted.
    pub fn load<T>(
        &self,
        load: impl FnOnce(&[FileBytes; N]) -> Result<Loaded<T>, TlsError>,
    ) -> Result<T, TlsError> {
        let files = self.read();
        let digests = files.each_ref().map(FileBytes::digest);
        let mut seen = self.lock();
        *seen = Some(digests);
        let loaded = load(&files)?;
        self.metrics.set_expiry(self.cert, loaded.not_after);
        Ok(loaded.value)
    }

    /// Reads the files; when their content changed since the last look, loads them.
    /// `Some` carries new material to put in force; `None` means unchanged, or changed but
    /// not loadable (logged and counted; the material in force stays).
    pub fn poll<T>(
        &self,
        load: impl FnOnce(&[FileBytes; N]) -> Result<Loaded<T>, TlsError>,
    ) -> Option<T> {
        let files = self.read();
        let digests = files.each_ref().map(FileBytes::digest);
        let mut seen = self.lock();
        if seen.as_ref() == Some(&digests) {
            return None;
        }
        let first = seen.is_none();
        *seen = Some(digests);
        match load(&files) {
            Ok(loaded) => {
                self.metrics.set_expiry(self.cert, loaded.not_after);
                if !first {
                    self.metrics.record_reload(self.cert, ReloadResult::Ok);
                }
                tracing::info!(cert = self.cert, file = %self.paths[0].display(), not_after = loaded.not_after, "TLS material loaded");
                Some(loaded.value)
            }
            Err(error) => {
                self.metrics.record_reload(self.cert, ReloadResult::Failed);
                tracing::warn!(cert = self.cert, %error, "changed TLS files do not load; the material in force stays");
                None
            }
        }
    }

    fn read(&self) -> [FileBytes; N] {
        self.paths.each_ref().map(|path| FileBytes::read(path))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<[Option<FileDigest>; N]>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Change detection alone, by the same digests, for files that are not TLS material (a
/// configuration file the caller re-reads and checks itself).
#[derive(Debug)]
pub struct Changes<const N: usize> {
    paths: [PathBuf; N],
    seen: [Option<FileDigest>; N],
}

impl<const N: usize> Changes<N> {
    /// Takes the files' digests now. Take them before loading the files: a change after
    /// this look is then seen by the next [`Changes::changed`], never lost.
    pub fn new(paths: [PathBuf; N]) -> Self {
        let seen = digests(&paths);
        Self { paths, seen }
    }

    /// Whether the content differs from the last look (and remembers the new content, so
    /// a file that does not load is retried only when it changes again).
    pub fn changed(&mut self) -> bool {
        let now = digests(&self.paths);
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }
}

fn digests<const N: usize>(paths: &[PathBuf; N]) -> [Option<FileDigest>; N] {
    paths.each_ref().map(|path| FileBytes::read(path).digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(files: &[FileBytes; 1]) -> Result<Loaded<usize>, TlsError> {
        let certs = files[0].certificates()?;
        Ok(Loaded {
            value: certs.content.len(),
            not_after: 7,
        })
    }

    fn cert_pem() -> String {
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("certificate")
            .cert
            .pem()
    }

    #[test]
    fn a_change_is_loaded_once_and_a_broken_file_counted_once() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, cert_pem()).expect("write");
        let metrics = TlsMetrics::default();
        let watched = Watched::new("client_ca", [path.clone()], metrics.clone());
        assert_eq!(watched.load(load_text).expect("loads"), 1);
        assert_eq!(metrics.expiry("client_ca"), 7);
        assert_eq!(watched.poll(load_text), None, "unchanged");

        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nbroken\n").expect("write");
        assert_eq!(watched.poll(load_text), None);
        assert_eq!(watched.poll(load_text), None);
        assert_eq!(metrics.reloads("client_ca", ReloadResult::Failed), 1);

        std::fs::write(&path, format!("{}{}", cert_pem(), cert_pem())).expect("write");
        assert_eq!(watched.poll(load_text), Some(2));
        assert_eq!(watched.poll(load_text), None);
        assert_eq!(metrics.reloads("client_ca", ReloadResult::Ok), 1);

        std::fs::remove_file(&path).expect("remove");
        assert_eq!(watched.poll(load_text), None);
        assert_eq!(metrics.reloads("client_ca", ReloadResult::Failed), 2);
    }

    #[test]
    fn changes_are_reported_once() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a");
        std::fs::write(&path, "one").expect("write");
        let mut changes = Changes::new([path.clone()]);
        assert!(!changes.changed());
        std::fs::write(&path, "two").expect("write");
        assert!(changes.changed());
        assert!(!changes.changed());
        std::fs::remove_file(&path).expect("remove");
        assert!(changes.changed());
        assert!(!changes.changed());
    }

    #[test]
    fn the_first_look_of_a_poller_is_not_a_reload() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ca.crt");
        let metrics = TlsMetrics::default();
        let watched = Watched::new("tenant", [path.clone()], metrics.clone());
        // Not there yet (a Secret not mounted yet): one failure, then quiet.
        assert_eq!(watched.poll(load_text), None);
        assert_eq!(watched.poll(load_text), None);
        assert_eq!(metrics.reloads("tenant", ReloadResult::Failed), 1);
        std::fs::write(&path, cert_pem()).expect("write");
        assert_eq!(watched.poll(load_text), Some(1));
        assert_eq!(metrics.reloads("tenant", ReloadResult::Ok), 1);
    }
}
