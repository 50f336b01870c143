//! What can go wrong, as one line for the user and an exit code from [`heex_proto::exit`].

use std::path::Path;

use heex_proto::api::ErrorCode;
use heex_proto::exit;

/// Everything a `heex` command can fail with. The message is the one line the user sees; it
/// never contains an API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Bad flags or arguments, a malformed key given on the command line or in the environment.
    #[error("{0}")]
    Usage(String),
    /// Credentials missing, unreadable or corrupt.
    #[error("{0}")]
    Config(String),
    /// A local file could not be read or written.
    #[error("{0}")]
    File(String),
    /// The server could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The server's certificate does not match the trusted CA.
    #[error("{0}")]
    Untrusted(String),
    /// The server answered with an error body; `message` is the server's own line.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Machine-readable code from the body.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// A bug or an answer this client cannot understand.
    #[error("{0}")]
    Unexpected(String),
}

impl CliError {
    /// The process exit code for this error.
    ///
    /// Server answers: 401/403 mean the key (or its scope/role) was refused (77); other 4xx
    /// mean the request itself was refused, e.g. an unknown id (64); 502–504 mean the server is
    /// unavailable (69); anything else is unexpected (70).
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Config(_) => exit::CONFIG,
            CliError::File(_) => exit::FILE_ERROR,
            CliError::Unreachable(_) | CliError::Untrusted(_) => exit::UNAVAILABLE,
            CliError::Api { status, .. } => match status {
                401 | 403 => exit::KEY_REFUSED,
                400..=499 => exit::USAGE,
                502..=504 => exit::UNAVAILABLE,
                _ => exit::SOFTWARE,
            },
            CliError::Unexpected(_) => exit::SOFTWARE,
        }
    }

    /// A file error naming what was done to which file.
    pub fn file(what: &str, path: &Path, err: std::io::Error) -> Self {
        CliError::File(format!("cannot {what} {}: {err}", path.display()))
    }

    /// True when the server refused the request as not found (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, CliError::Api { status: 404, .. })
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl From<heex_trust::TrustError> for CliError {
    fn from(e: heex_trust::TrustError) -> Self {
        use heex_trust::TrustError;
        match e {
            TrustError::Read { path, source } => CliError::file("read CA file", &path, source),
            TrustError::NotPem { path, detail } => CliError::Usage(format!(
                "CA file {} is not a PEM certificate file: {detail}",
                path.display()
            )),
            TrustError::NoCertificate { path } => CliError::Usage(format!(
                "CA file {} contains no certificate; use the cloud's ca.crt",
                path.display()
            )),
            other => CliError::Unexpected(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> CliError {
        CliError::Api {
            status,
            code: ErrorCode::Other,
            message: "m".into(),
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(api(401).exit_code(), 77);
        assert_eq!(api(403).exit_code(), 77);
        assert_eq!(api(404).exit_code(), 64);
        assert_eq!(api(400).exit_code(), 64);
        assert_eq!(api(503).exit_code(), 69);
        assert_eq!(api(500).exit_code(), 70);
        assert_eq!(CliError::Untrusted("x".into()).exit_code(), 69);
        assert_eq!(CliError::Config("x".into()).exit_code(), 78);
        assert_eq!(CliError::File("x".into()).exit_code(), 73);
        assert_eq!(CliError::Usage("x".into()).exit_code(), 64);
        assert_eq!(api(401).to_string(), "m");
    }

    #[test]
    fn ca_file_errors_keep_their_wording_and_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not a certificate\n").unwrap();
        let e = CliError::from(heex_trust::TrustAnchor::from_ca_file(&bad).unwrap_err());
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().starts_with("CA file "), "{e}");
        assert!(e.to_string().contains("contains no certificate"), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = CliError::from(heex_trust::TrustAnchor::from_ca_file(&missing).unwrap_err());
        assert_eq!(e.exit_code(), 73);
        let e = CliError::from(heex_trust::TrustError::Tls("x".into()));
        assert_eq!(e.exit_code(), 70);
        assert_eq!(e.to_string(), "TLS setup failed: x");
    }
}
