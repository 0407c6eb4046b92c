//! Writing PEM files: private keys readable by their owner only, every file replaced
//! atomically so a process that reloads certificates never reads half a file.

use std::fs::{self, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::PkiError;

/// Mode of private key files: owner read/write only.
pub(crate) const PRIVATE_MODE: u32 = 0o600;
/// Mode of certificate files: public material.
pub(crate) const PUBLIC_MODE: u32 = 0o644;

/// Distinguishes temporary files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `contents` to `path` with `mode`, through a temporary file in the same directory
/// and a rename. The temporary file is created with `mode` already, so a key is never
/// readable by others, not even for an instant.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let name = path.file_name().ok_or_else(|| PkiError::BadFile {
        path: path.to_path_buf(),
        reason: "not a file name".into(),
    })?;
    let temp = path.with_file_name(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        // The umask may have narrowed `mode`; a certificate must stay world-readable.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temp);
        return Err(PkiError::Io { path: temp, error });
    }
    fs::rename(&temp, path).map_err(|error| {
        let _ = fs::remove_file(&temp);
        PkiError::Io {
            path: path.to_path_buf(),
            error,
        }
    })
}

/// Reads a text file, naming it in the error.
pub(crate) fn read_text(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|error| PkiError::Io {
        path: PathBuf::from(path),
        error,
    })
}
