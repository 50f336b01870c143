//! What can go wrong during installation, and the exit code each failure maps to.

use std::io;
use std::path::{Path, PathBuf};

use heex_proto::{exit, KeyParseError};

/// A failed installation. Its `Display` is the single line shown to the user; it never
/// contains the API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// Bad flags, conflicting key sources, no key available.
    #[error("{0}")]
    Usage(String),
    /// The API key is malformed (caught offline, before any network I/O).
    #[error("{0}")]
    MalformedKey(#[from] KeyParseError),
    /// The server is unreachable or answered in a way that says it is not available.
    #[error("{0}")]
    Unreachable(String),
    /// The server's identity does not match the configured trust (pinned CA / CA file).
    #[error("{0}")]
    Untrusted(String),
    /// The server refused the API key (unknown, revoked, expired, wrong scope).
    #[error("{0}")]
    KeyRefused(String),
    /// A local file or directory could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    File {
        /// What was being done ("cannot write", "cannot create directory").
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A config or state directory others could write into; the message names it and the
    /// fix.
    #[error("{0}")]
    UnsafeDirectory(String),
    /// Something that should not happen: an unexpected server answer or an internal failure.
    #[error("{0}")]
    Unexpected(String),
    /// The service manager failed to install, enable or start the agent service
    /// (`--systemd`). The credentials are written; a re-run only retries the service part.
    #[error("{0}")]
    Service(String),
}

impl InstallError {
    /// The documented process exit code for this failure (`heex_proto::exit`).
    pub fn exit_code(&self) -> i32 {
        match self {
            InstallError::Usage(_) | InstallError::MalformedKey(_) => exit::USAGE,
            InstallError::Unreachable(_) | InstallError::Untrusted(_) => exit::UNAVAILABLE,
            InstallError::KeyRefused(_) => exit::KEY_REFUSED,
            InstallError::File { .. } | InstallError::UnsafeDirectory(_) => exit::FILE_ERROR,
            InstallError::Unexpected(_) | InstallError::Service(_) => exit::SOFTWARE,
        }
    }

    /// A local file error about `path`.
    pub(crate) fn file(action: &'static str, path: &Path, source: io::Error) -> Self {
        InstallError::File {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

impl From<heex_pki::key::KeyError> for InstallError {
    fn from(e: heex_pki::key::KeyError) -> Self {
        InstallError::Unexpected(e.to_string())
    }
}

impl From<heex_fs::Error> for InstallError {
    fn from(e: heex_fs::Error) -> Self {
        let action = match e.action {
            heex_fs::Action::Write => "cannot write",
            heex_fs::Action::Replace => "cannot replace",
            heex_fs::Action::SyncDirectory => "cannot sync directory",
        };
        InstallError::file(action, &e.path, e.source)
    }
}

impl From<heex_trust::TrustError> for InstallError {
    fn from(e: heex_trust::TrustError) -> Self {
        use heex_trust::TrustError;
        match e {
            TrustError::Read { path, source } => InstallError::file("cannot read", &path, source),
            TrustError::NotPem { path, detail } => InstallError::Usage(format!(
                "--ca-file {} is not a PEM certificate file: {detail}",
                path.display()
            )),
            TrustError::NoCertificate { path } => InstallError::Usage(format!(
                "--ca-file {} contains no certificate; pass the cloud's ca.crt",
                path.display()
            )),
            other => InstallError::Unexpected(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(InstallError::Usage("x".into()).exit_code(), 64);
        assert_eq!(
            InstallError::MalformedKey(KeyParseError::BadChecksum).exit_code(),
            64
        );
        assert_eq!(InstallError::Unreachable("x".into()).exit_code(), 69);
        assert_eq!(InstallError::Untrusted("x".into()).exit_code(), 69);
        assert_eq!(InstallError::KeyRefused("x".into()).exit_code(), 77);
        let file = InstallError::file(
            "cannot write",
            Path::new("/x"),
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(file.exit_code(), 73);
        assert!(file.to_string().starts_with("cannot write /x: "));
        assert_eq!(InstallError::Unexpected("x".into()).exit_code(), 70);
        assert_eq!(InstallError::Service("x".into()).exit_code(), 70);
    }

    #[test]
    fn ca_file_errors_keep_their_wording_and_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not a certificate\n").unwrap();
        let e = InstallError::from(heex_trust::TrustAnchor::from_ca_file(&bad).unwrap_err());
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().starts_with("--ca-file "), "{e}");
        assert!(e.to_string().contains("contains no certificate"), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = InstallError::from(heex_trust::TrustAnchor::from_ca_file(&missing).unwrap_err());
        assert_eq!(e.exit_code(), 73);
        let e = InstallError::from(heex_trust::TrustError::Tls("x".into()));
        assert_eq!(e.exit_code(), 70);
        assert_eq!(e.to_string(), "TLS setup failed: x");
    }
}
