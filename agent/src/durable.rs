//! Crash-safe file writes for the agent's credentials (`device.key`, `device.crt`, `ca.crt`):
//! a file holds either its whole old or its whole new content, never a torn mix.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `path` through a temp file in the same directory (created with `mode`, written,
/// fsynced, then renamed over `path`), so it holds the whole content or does not change.
/// The directory is not fsynced: see [`sync_dir`] and [`replace`].
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent(path);
    let prefix = match path.file_name() {
        Some(name) => format!(".{}.", name.to_string_lossy()),
        None => ".tmp.".to_owned(),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Fsyncs a directory, so the renames done in it survive a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// [`write_file`], then [`sync_dir`] of its directory: once this returns, the new content
/// survives a power loss.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_file(path, bytes, mode)?;
    sync_dir(parent(path))
}

/// The directory of `path` (`.` for a bare file name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_with_the_given_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, "old").unwrap();
        replace(&path, b"new content", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new content");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        write_file(&path, b"secret", 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ca.crt"]);
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone").join("ca.crt");
        assert!(replace(&path, b"x", 0o644).is_err());
        assert_eq!(parent(Path::new("ca.crt")), Path::new("."));
    }
}
