//! Crash-safe file writes: temp file in the destination's directory, created with its final
//! mode (a private key is never readable by others, not even briefly), fsync, rename, fsync the
//! directory.
//!
//! Writes are split into [`stage`] and [`commit_all`] so that several files (device key,
//! certificate, CA, config) are all fully on disk under temporary names before the first one
//! replaces its predecessor.

use std::fs::{DirBuilder, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::InstallError;

/// Mode of private files (the device key).
pub const PRIVATE: u32 = 0o600;
/// Mode of public files (certificates, config).
pub const PUBLIC: u32 = 0o644;

/// A file fully written and synced under a temporary name beside its destination. Dropping it
/// without [`commit_all`] removes the temporary file and leaves the destination untouched.
#[derive(Debug)]
pub struct Staged {
    tmp: NamedTempFile,
    dest: PathBuf,
}

impl Staged {
    /// The temporary file's path (for tests and messages).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// Where the file will land.
    pub fn dest(&self) -> &Path {
        &self.dest
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates `dir` (and missing parents) with `mode` if it does not exist. An existing directory
/// keeps its mode: the administrator may have chosen it.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), InstallError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(InstallError::file(
            "cannot use as a directory",
            dir,
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "it exists and is not a directory",
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .map_err(|e| InstallError::file("cannot create directory", dir, e)),
        Err(e) => Err(InstallError::file("cannot access", dir, e)),
    }
}

/// Writes `contents` to a new temporary file beside `dest`, created with `mode`, and syncs it.
pub fn stage(dest: &Path, contents: &[u8], mode: u32) -> Result<Staged, InstallError> {
    let dir = parent_of(dest);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let err = |e| InstallError::file("cannot write", dest, e);
    // The mode is applied by open(2) itself, so the file never exists with a wider mode.
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(err)?;
    // The umask may have narrowed the mode; set it exactly (never wider than requested).
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(err)?;
    inherit_owner(tmp.as_file(), dir).map_err(err)?;
    tmp.write_all(contents).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    Ok(Staged {
        tmp,
        dest: dest.to_owned(),
    })
}

/// Gives a new file the owner and group of the directory it is written into, when they
/// differ. The state directory belongs to the agent's service user once the service has run,
/// and systemd re-owns a StateDirectory= tree only when the directory itself has the wrong
/// owner: a key that root writes there later (`--force`) must still be readable by the agent.
/// Only root can give a file away; for anyone else this is a no-op.
fn inherit_owner(file: &File, dir: &Path) -> io::Result<()> {
    let dir_meta = std::fs::metadata(dir)?;
    let file_meta = file.metadata()?;
    if (dir_meta.uid(), dir_meta.gid()) == (file_meta.uid(), file_meta.gid()) {
        return Ok(());
    }
    match std::os::unix::fs::fchown(file, Some(dir_meta.uid()), Some(dir_meta.gid())) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}

/// Renames every staged file over its destination, in order, then syncs each directory
/// involved so the renames themselves survive a crash.
pub fn commit_all(staged: Vec<Staged>) -> Result<(), InstallError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for s in staged {
        let dir = parent_of(&s.dest).to_owned();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
        let dest = s.dest;
        s.tmp
            .persist(&dest)
            .map_err(|e| InstallError::file("cannot replace", &dest, e.error))?;
    }
    for dir in dirs {
        sync_dir(&dir)?;
    }
    Ok(())
}

/// Writes one file atomically: [`stage`] then [`commit_all`].
pub fn write_atomic(dest: &Path, contents: &[u8], mode: u32) -> Result<(), InstallError> {
    commit_all(vec![stage(dest, contents, mode)?])
}

/// Syncs a directory, making renames and creations inside it durable.
pub fn sync_dir(dir: &Path) -> Result<(), InstallError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| InstallError::file("cannot sync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn private_files_are_0600_from_creation() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("device.key");
        let staged = stage(&dest, b"secret", PRIVATE).unwrap();
        // Before the rename, the temporary file already has its final mode.
        assert_eq!(mode(staged.temp_path()), 0o600);
        assert_eq!(parent_of(staged.temp_path()), dir.path());
        assert!(!dest.exists());
        commit_all(vec![staged]).unwrap();
        assert_eq!(mode(&dest), 0o600);
        assert_eq!(std::fs::read(&dest).unwrap(), b"secret");
    }

    #[test]
    fn public_files_get_their_exact_mode() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("device.crt");
        write_atomic(&dest, b"cert", PUBLIC).unwrap();
        assert_eq!(mode(&dest), 0o644);
    }

    #[test]
    fn replacing_keeps_the_old_file_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("agent.toml");
        write_atomic(&dest, b"old", PUBLIC).unwrap();
        let staged = stage(&dest, b"new", PUBLIC).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        let tmp = staged.temp_path().to_owned();
        drop(staged);
        // An abandoned stage leaves no trace and the old file intact.
        assert!(!tmp.exists());
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        write_atomic(&dest, b"new", PUBLIC).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn ensure_dir_creates_private_directories() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("var/lib/heex");
        ensure_dir(&state, 0o700).unwrap();
        assert_eq!(mode(&state), 0o700);
        ensure_dir(&state, 0o755).unwrap();
        assert_eq!(mode(&state), 0o700, "an existing directory keeps its mode");
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert_eq!(ensure_dir(&file, 0o700).unwrap_err().exit_code(), 73);
    }

    #[test]
    fn files_take_the_directory_owner() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("device.key");
        write_atomic(&dest, b"k", PRIVATE).unwrap();
        let me = std::fs::metadata(&dest).unwrap();
        assert_eq!(me.uid(), std::fs::metadata(dir.path()).unwrap().uid());
        if me.uid() != 0 {
            return; // only root can give files away
        }
        // As root, a file written into a directory owned by another user becomes theirs.
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        write_atomic(&dest, b"k2", PRIVATE).unwrap();
        let m = std::fs::metadata(&dest).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534));
        assert_eq!(mode(&dest), 0o600);
    }

    #[test]
    fn unwritable_directory_is_a_file_error() {
        let err = write_atomic(Path::new("/nonexistent/heex/x"), b"x", PUBLIC).unwrap_err();
        assert_eq!(err.exit_code(), 73);
        assert!(err.to_string().contains("/nonexistent/heex/x"));
    }
}
