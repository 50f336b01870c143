//! The directories the installer writes into (created with their mode, refused when someone
//! else could replace a file in them) and how it writes files there: through [`heex_fs`],
//! atomically and durably, owned like their directory ([`options`]).

use std::fs::{DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::InstallError;

/// Mode of private files (the device key).
pub const PRIVATE: u32 = 0o600;
/// Mode of public files (certificates, config).
pub const PUBLIC: u32 = 0o644;

/// Who may own a directory the installer writes into, or write to it through its group:
/// root, the user running the installer, and the agent's service user once it exists (it
/// owns the state directory after `--systemd`). Anyone else could replace the device key or
/// the configuration under the installer's feet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl Owners {
    /// Root, this process's effective user and group, and `service` (uid, gid) if given.
    pub fn trusted(service: Option<(u32, u32)>) -> Self {
        let mut uids = vec![0, rustix::process::geteuid().as_raw()];
        let mut gids = vec![0, rustix::process::getegid().as_raw()];
        if let Some((uid, gid)) = service {
            uids.push(uid);
            gids.push(gid);
        }
        Owners { uids, gids }
    }
}

/// Refuses an existing directory that someone other than [`Owners`] could write into: one
/// writable by every user, writable by a group other than theirs, or owned by another user.
/// `mode` is what it should be, for the fix in the message. A missing directory is fine (it
/// will be created with `mode`).
pub fn check_dir(dir: &Path, mode: u32, owners: &Owners) -> Result<(), InstallError> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return Ok(()), // ensure_dir says it is not a directory
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(InstallError::file("cannot access", dir, e)),
    };
    let d = dir.display();
    let why = if meta.mode() & 0o002 != 0 {
        format!("every user can write to it; fix it with `chmod {mode:04o} {d}`")
    } else if meta.mode() & 0o020 != 0 && !owners.gids.contains(&meta.gid()) {
        format!(
            "group {} can write to it; fix it with `chmod {mode:04o} {d}`",
            meta.gid()
        )
    } else if !owners.uids.contains(&meta.uid()) {
        format!(
            "it belongs to user {}, neither root nor you; fix it with `chown root {d}` (or \
             `chown $(id -un) {d}`) or choose another directory",
            meta.uid()
        )
    } else {
        return Ok(());
    };
    Err(InstallError::UnsafeDirectory(format!(
        "refusing to write into {d}: {why}"
    )))
}

/// Creates `dir` (and missing parents) with exactly `mode` if it does not exist. An existing
/// directory keeps its mode (the administrator may have chosen it), but one that others
/// could write into is refused ([`check_dir`]).
pub fn ensure_dir(dir: &Path, mode: u32, owners: &Owners) -> Result<(), InstallError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => check_dir(dir, mode, owners),
        Ok(_) => Err(InstallError::file(
            "cannot use as a directory",
            dir,
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "it exists and is not a directory",
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .map_err(|e| InstallError::file("cannot create directory", dir, e))?;
            // The umask may have narrowed the mode (a 0700 /etc/heex would lock the agent's
            // user out of its configuration): set it exactly.
            std::fs::set_permissions(dir, Permissions::from_mode(mode))
                .map_err(|e| InstallError::file("cannot set the mode of", dir, e))
        }
        Err(e) => Err(InstallError::file("cannot access", dir, e)),
    }
}

/// How the installer writes a file with permissions `mode`: atomically, durably, owned like
/// its directory. The state directory belongs to the agent's service user once the service has
/// run, and systemd re-owns a StateDirectory= tree only when the directory itself has the
/// wrong owner: a key that root writes there later (`--force`) must still be readable by the
/// agent.
pub fn options(mode: u32) -> heex_fs::Options {
    heex_fs::Options::mode(mode).owner_of_directory()
}

/// Writes one file atomically ([`heex_fs::write`] with [`options`]).
pub fn write_atomic(dest: &Path, contents: &[u8], mode: u32) -> Result<(), InstallError> {
    Ok(heex_fs::write(dest, contents, options(mode))?)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn ensure_dir_creates_private_directories() {
        let owners = Owners::trusted(None);
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("var/lib/heex");
        ensure_dir(&state, 0o700, &owners).unwrap();
        assert_eq!(mode(&state), 0o700);
        ensure_dir(&state, 0o755, &owners).unwrap();
        assert_eq!(mode(&state), 0o700, "an existing directory keeps its mode");
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert_eq!(
            ensure_dir(&file, 0o700, &owners).unwrap_err().exit_code(),
            73
        );
    }

    #[test]
    fn directories_others_can_write_are_refused() {
        let owners = Owners::trusted(None);
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("state");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, Permissions::from_mode(0o777)).unwrap();
        let e = ensure_dir(&shared, 0o700, &owners).unwrap_err();
        assert_eq!(e.exit_code(), 73);
        let text = e.to_string();
        assert!(
            text.contains(&format!("chmod 0700 {}", shared.display())),
            "{text}"
        );
        std::fs::set_permissions(&shared, Permissions::from_mode(0o1777)).unwrap();
        assert!(
            check_dir(&shared, 0o700, &owners).is_err(),
            "sticky is not enough"
        );
        // Group-writable is fine for our own group, not for another one.
        std::fs::set_permissions(&shared, Permissions::from_mode(0o770)).unwrap();
        check_dir(&shared, 0o700, &owners).unwrap();
        let strangers = Owners {
            uids: owners.uids.clone(),
            gids: vec![],
        };
        assert!(check_dir(&shared, 0o700, &strangers).is_err());
        let others = Owners {
            uids: vec![],
            gids: owners.gids.clone(),
        };
        std::fs::set_permissions(&shared, Permissions::from_mode(0o755)).unwrap();
        let e = check_dir(&shared, 0o755, &others).unwrap_err();
        assert!(e.to_string().contains("chown"), "{e}");
    }

    #[test]
    fn created_directories_get_their_exact_mode_whatever_the_umask() {
        let owners = Owners::trusted(None);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("etc/heex");
        ensure_dir(&config, 0o755, &owners).unwrap();
        assert_eq!(mode(&config), 0o755);
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
