//! Crash-safe file writes: a temporary file in the same directory, fsync, rename over the
//! target, fsync the directory. A reader sees the old file or the new one, never a mix.

use std::fs::{self, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::Error;

/// Prefix of the temporary files; leftovers of a crash start with it.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Writes `contents` to `path` atomically with permissions `mode`: a temporary file in the
/// same directory, fsync, rename over `path`, fsync the directory.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| Error::file(dir, e))?;
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(|e| Error::file(tmp.path(), e))?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::file(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::file(path, e.error))?;
    sync_dir(dir)
}

/// Fsyncs directory `dir`, so the names created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::file(dir, e))
}
