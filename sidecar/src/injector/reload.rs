//! Change detection for the files the injector reloads (serving certificate, config).
//!
//! Content is compared, not modification times: cert-manager's Secret volumes swap a
//! symlink (the files' own mtimes do not move), and a ConfigMap edit does the same.

use std::path::PathBuf;

/// The content of a set of files as last seen.
#[derive(Debug)]
pub(crate) struct FileWatch<const N: usize> {
    paths: [PathBuf; N],
    seen: Vec<u8>,
}

impl<const N: usize> FileWatch<N> {
    /// Takes the files' content now. Take it before loading them: a change after this
    /// snapshot is then seen by the next [`FileWatch::changed`], never lost.
    pub fn new(paths: [PathBuf; N]) -> Self {
        let seen = read_all(&paths);
        Self { paths, seen }
    }

    /// Whether the content differs from the last look (and remembers the new content, so
    /// a file that does not load is retried only when it changes again).
    pub fn changed(&mut self) -> bool {
        let now = read_all(&self.paths);
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }
}

/// The files' contents, each followed by a separator; an unreadable file reads as empty
/// (the loader then reports why).
fn read_all(paths: &[PathBuf]) -> Vec<u8> {
    let mut out = Vec::new();
    for path in paths {
        out.extend(std::fs::read(path).unwrap_or_default());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, "one").unwrap();
        let mut watch = FileWatch::new([path.clone()]);
        assert!(!watch.changed());
        std::fs::write(&path, "two").unwrap();
        assert!(watch.changed());
        assert!(!watch.changed());
        std::fs::remove_file(&path).unwrap();
        assert!(watch.changed());
    }
}
