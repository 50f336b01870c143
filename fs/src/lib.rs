//! Crash-safe file writes, the one implementation the cloud, the installer, the agent and the
//! CLI use.
//!
//! - [`write`]: one file replaced atomically. The content goes to a temporary file in the
//!   destination's directory, created with its final mode (a private key is never readable by
//!   others, not even briefly), written, fsynced, renamed over the destination; then the
//!   directory is fsynced. A reader sees the whole old file or the whole new one.
//! - [`Swap`]: several files replaced together (the installer's key, certificate, CA and
//!   configuration; a renewal's key and certificate). Every file is first written and fsynced
//!   under its staging name, the directories are fsynced, and only then are the files renamed
//!   over their destinations, in the order they were staged, and the directories fsynced
//!   again. A failure before the first rename changes nothing and leaves no staging file; a
//!   crash between renames leaves [named](Swap::stage_at) staging files in place, so the
//!   owner of the files can finish or undo the swap when it starts again.
//!
//! Every error names the path the caller asked for (not a temporary name) and what was being
//! done, so the caller can say which file and why in one line.

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

#[cfg(test)]
mod tests;

/// Mode of private files (keys, secrets, credentials).
pub const PRIVATE: u32 = 0o600;
/// Mode of public files (certificates, configuration, status).
pub const PUBLIC: u32 = 0o644;

/// What was being done when a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Creating, writing or fsyncing the new content.
    Write,
    /// Renaming the new content over the destination.
    Replace,
    /// Fsyncing the directory that holds the destination.
    SyncDirectory,
}

impl Action {
    /// The verb for a message: "write", "replace" or "sync directory".
    pub fn verb(self) -> &'static str {
        match self {
            Action::Write => "write",
            Action::Replace => "replace",
            Action::SyncDirectory => "sync directory",
        }
    }
}

/// A failed write: `cannot write /var/lib/heex/device.key: No space left on device (os error 28)`.
#[derive(Debug, thiserror::Error)]
#[error("cannot {} {}: {source}", action.verb(), path.display())]
pub struct Error {
    /// What was being done.
    pub action: Action,
    /// The destination (or, for [`Action::SyncDirectory`], the directory).
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        io::Error::new(e.source.kind(), e.to_string())
    }
}

/// How a file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    mode: u32,
    durable: bool,
    owner_of_directory: bool,
}

impl Options {
    /// Written with permissions `mode` (exactly: the umask never narrows nor widens it),
    /// fsynced.
    pub const fn mode(mode: u32) -> Self {
        Options {
            mode,
            durable: true,
            owner_of_directory: false,
        }
    }

    /// [`PRIVATE`] (0600).
    pub const fn private() -> Self {
        Self::mode(PRIVATE)
    }

    /// [`PUBLIC`] (0644).
    pub const fn public() -> Self {
        Self::mode(PUBLIC)
    }

    /// Neither the file nor its directory is fsynced: the replacement is still atomic, but a
    /// power loss may bring back the old content or lose the file. For files rewritten often
    /// whose loss is harmless (a status file), sparing flash storage.
    pub const fn not_durable(mut self) -> Self {
        self.durable = false;
        self
    }

    /// The new file gets the owner and group of its directory when they differ (only root can
    /// give a file away; for anyone else this does nothing). A file root writes into a service
    /// user's directory stays readable by that user.
    pub const fn owner_of_directory(mut self) -> Self {
        self.owner_of_directory = true;
        self
    }
}

/// Replaces `path` with `contents` atomically and durably (see the crate docs).
pub fn write(path: &Path, contents: &[u8], options: Options) -> Result<(), Error> {
    write_with(path, options, |w| w.write_all(contents))
}

/// [`write`], the content produced by `fill` (a serializer writing straight into the file).
pub fn write_with(
    path: &Path,
    options: Options,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), Error> {
    let mut swap = Swap::new();
    swap.stage_with(path, options, fill)?;
    swap.commit()
}

/// Fsyncs directory `dir`, so the names created or renamed in it survive a power loss.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    fail_point(Action::SyncDirectory, dir)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error {
            action: Action::SyncDirectory,
            path: dir.to_owned(),
            source,
        })
}

/// The directory of `path` (`.` for a bare file name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// True for the name of a temporary file [`write`] or [`Swap::stage`] creates: what a crash
/// can leave behind (`.device.key.a1B2c3.tmp`). Named staging files are the caller's to know.
pub fn is_temporary(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.ends_with(TEMP_SUFFIX)
}

const TEMP_SUFFIX: &str = ".tmp";

/// Several files replaced together; see the crate docs for the order and the guarantees.
/// Dropping a swap that was not committed removes its staging files.
#[derive(Debug, Default)]
pub struct Swap {
    files: Vec<Staged>,
}

#[derive(Debug)]
struct Staged {
    dest: PathBuf,
    file: StagedFile,
    durable: bool,
}

#[derive(Debug)]
enum StagedFile {
    /// A temporary name, removed when dropped.
    Temporary(NamedTempFile),
    /// A name the caller chose (`device.crt.new`).
    Named(NamedStaging),
}

/// Removed when dropped before the swap's renames began, kept after (the caller's recovery
/// needs it).
#[derive(Debug)]
struct NamedStaging {
    path: PathBuf,
    keep: bool,
}

impl Drop for NamedStaging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Swap {
    /// An empty swap.
    pub fn new() -> Self {
        Swap::default()
    }

    /// Stages `contents` for `dest` under a temporary name beside it.
    pub fn stage(&mut self, dest: &Path, contents: &[u8], options: Options) -> Result<(), Error> {
        self.stage_with(dest, options, |w| w.write_all(contents))
    }

    /// [`Swap::stage`], the content produced by `fill`.
    pub fn stage_with(
        &mut self,
        dest: &Path,
        options: Options,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), Error> {
        let tmp = temporary_beside(dest, options, fill)?;
        self.files.push(Staged {
            dest: dest.to_owned(),
            file: StagedFile::Temporary(tmp),
            durable: options.durable,
        });
        Ok(())
    }

    /// Stages `contents` for `dest` at `staging`, a name the caller knows, so that after a
    /// crash between the renames it can find the file and finish (or undo) the swap.
    /// `staging` is replaced if it exists, and must be in the same file system as `dest`.
    pub fn stage_at(
        &mut self,
        dest: &Path,
        staging: &Path,
        contents: &[u8],
        options: Options,
    ) -> Result<(), Error> {
        // Written itself through a temporary file, so `staging` is whole or absent; the
        // commit fsyncs its directory before the first rename.
        let tmp = temporary_beside(staging, options, |w| w.write_all(contents))?;
        fail_point(Action::Replace, staging)?;
        tmp.persist(staging).map_err(|e| Error {
            action: Action::Replace,
            path: staging.to_owned(),
            source: e.error,
        })?;
        self.files.push(Staged {
            dest: dest.to_owned(),
            file: StagedFile::Named(NamedStaging {
                path: staging.to_owned(),
                keep: false,
            }),
            durable: options.durable,
        });
        Ok(())
    }

    /// The staging paths, in order (for tests and messages).
    pub fn staging_paths(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .map(|s| match &s.file {
                StagedFile::Temporary(t) => t.path().to_owned(),
                StagedFile::Named(named) => named.path.clone(),
            })
            .collect()
    }

    /// Fsyncs the directories, renames every staged file over its destination in order, and
    /// fsyncs the directories again.
    pub fn commit(mut self) -> Result<(), Error> {
        for dir in self.directories() {
            sync_dir(&dir)?;
        }
        self.commit_renames()
    }

    fn commit_renames(&mut self) -> Result<(), Error> {
        let dirs = self.directories();
        for staged in &mut self.files {
            if let StagedFile::Named(named) = &mut staged.file {
                named.keep = true;
            }
        }
        for staged in std::mem::take(&mut self.files) {
            let replace_failed = |source| Error {
                action: Action::Replace,
                path: staged.dest.clone(),
                source,
            };
            fail_point(Action::Replace, &staged.dest)?;
            match staged.file {
                StagedFile::Temporary(tmp) => {
                    tmp.persist(&staged.dest)
                        .map_err(|e| replace_failed(e.error))?;
                }
                StagedFile::Named(named) => {
                    std::fs::rename(&named.path, &staged.dest).map_err(replace_failed)?;
                }
            }
        }
        for dir in &dirs {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// The distinct directories of the durable destinations, in order.
    fn directories(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for staged in &self.files {
            if !staged.durable {
                continue;
            }
            let staging = match &staged.file {
                StagedFile::Named(named) => Some(parent(&named.path).to_owned()),
                StagedFile::Temporary(_) => None,
            };
            for dir in [Some(parent(&staged.dest).to_owned()), staging]
                .into_iter()
                .flatten()
            {
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
        dirs
    }
}

/// A temporary file beside `dest` holding what `fill` wrote, with `options` applied.
fn temporary_beside(
    dest: &Path,
    options: Options,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<NamedTempFile, Error> {
    let failed = |source| Error {
        action: Action::Write,
        path: dest.to_owned(),
        source: without_temporary_path(source),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The mode is applied by open(2) itself, so the file never exists with a wider mode.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(TEMP_SUFFIX)
        .permissions(Permissions::from_mode(options.mode))
        .tempfile_in(parent(dest))
        .map_err(failed)?;
    fill_file(tmp.as_file_mut(), dest, options, fill).map_err(failed)?;
    Ok(tmp)
}

/// The operating system's error without the temporary file's name that `tempfile` appends
/// (`… at path "/dir/.x.AbC.tmp"`, its only form: the wrapped error is not reachable): the
/// message names the destination, and a random name would only confuse.
fn without_temporary_path(e: io::Error) -> io::Error {
    let text = e.to_string();
    match text.rfind(" at path \"") {
        Some(end) if e.raw_os_error().is_none() => io::Error::new(e.kind(), &text[..end]),
        _ => e,
    }
}

fn fill_file(
    file: &mut File,
    dest: &Path,
    options: Options,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    // The umask may have narrowed the mode; set it exactly (never wider than requested).
    file.set_permissions(Permissions::from_mode(options.mode))?;
    if options.owner_of_directory {
        inherit_owner(file, parent(dest))?;
    }
    fail_point(Action::Write, dest).map_err(|e| e.source)?;
    {
        let mut w = io::BufWriter::new(&mut *file);
        fill(&mut w)?;
        w.flush()?;
    }
    if options.durable {
        file.sync_all()?;
    }
    Ok(())
}

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

#[cfg(not(test))]
fn fail_point(_: Action, _: &Path) -> Result<(), Error> {
    Ok(())
}

#[cfg(test)]
use tests::fail_point;
