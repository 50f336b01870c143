//! Errors: [`Error`] ends the process with a documented exit code; [`ApiError`] is one HTTP
//! error response with an [`ErrorBody`].

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use heex_proto::api::{ErrorBody, ErrorCode};
use heex_proto::exit;

use crate::store::access::Refusal;
use crate::store::StoreError;

/// Why `heex-cloud` stopped. Each variant maps to one exit code; the message is one line
/// saying what went wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A flag value is not acceptable.
    #[error("{0}")]
    Usage(String),
    /// `init` on a directory that is already initialized.
    #[error("{} is already initialized; use another --data-dir or run `heex-cloud serve --data-dir {}`", .0.display(), .0.display())]
    AlreadyInitialized(PathBuf),
    /// `serve --no-init` on a directory that is not initialized.
    #[error("{} is not an initialized Heex data directory (serve --no-init never creates one); run `heex-cloud init --data-dir {}` first, or point --data-dir at the existing one", .0.display(), .0.display())]
    NotInitialized(PathBuf),
    /// The directory holds files that are not Heex's.
    #[error("{} is not empty and is not a Heex data directory; choose an empty or new directory", .0.display())]
    NotEmpty(PathBuf),
    /// A file could not be read or written.
    #[error("{}: {source}; check the path and its permissions", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file of the data directory is missing or unusable.
    #[error("{}: {reason}; restore it from a backup or initialize a new data directory", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A listening socket could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; pick another address or stop the process using it"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The data directory and the store do not belong together (another deployment's
    /// secrets, or the wrong kind of store).
    #[error("{0}")]
    Mismatch(String),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Anything else: a bug or an unexpected condition.
    #[error("{0}")]
    Internal(String),
}

impl From<heex_fs::Error> for Error {
    /// A failed write names its file, as [`Error::file`].
    fn from(e: heex_fs::Error) -> Self {
        Error::file(e.path, e.source)
    }
}

impl Error {
    /// The process exit code for this error (see `heex_proto::exit`).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::AlreadyInitialized(_) | Error::NotEmpty(_) | Error::File { .. } => {
                exit::FILE_ERROR
            }
            Error::Corrupt { .. } | Error::NotInitialized(_) | Error::Mismatch(_) => exit::CONFIG,
            Error::Bind { .. } => exit::UNAVAILABLE,
            Error::Store(StoreError::Schema(_)) => exit::CONFIG,
            Error::Store(StoreError::Unavailable(_)) => exit::UNAVAILABLE,
            Error::Store(_) => exit::FILE_ERROR,
            Error::Internal(_) => exit::SOFTWARE,
        }
    }

    /// A file error at `path`.
    pub fn file(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::File {
            path: path.into(),
            source,
        }
    }

    /// A corrupt file at `path`.
    pub fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// One API error response: a status code and an [`ErrorBody`].
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, error: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error,
                message: message.into(),
            },
        }
    }

    /// 401 `unauthorized`: deliberately says nothing about why.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "missing or invalid API key",
        )
    }

    /// 401 `key_revoked`.
    pub fn key_revoked(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::KeyRevoked, message)
    }

    /// 401 `key_expired`.
    pub fn key_expired(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::KeyExpired, message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    /// 400 `bad_csr`.
    pub fn bad_csr(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadCsr, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!(
                "request body is larger than {} bytes",
                heex_proto::api::MAX_BODY_BYTES
            ),
        )
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "this path does not take this HTTP method; the OpenAPI document at \
             /v1/openapi.json lists each path's methods",
        )
    }

    /// 408 `request_timeout`: the request, its body included, was not done within `limit`.
    pub fn request_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            format!(
                "the request took longer than {}s (body included); send it again without \
                 pausing",
                limit.as_secs()
            ),
        )
    }

    /// 500 `internal`. The cause is logged, never sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal server error; the server log has details",
        )
    }

    /// 503 `unavailable`: the server's disk is full, so it cannot store anything now. The
    /// cause is logged; the client is told what is wrong and that retrying later works.
    pub fn disk_full(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "cannot write: the disk holding the data directory is full");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the server cannot store changes now: the disk holding its data directory is full; \
             retry once its operator has freed space",
        )
    }

    /// 503 `unavailable` with `message` (what is not available, and that retrying later
    /// works).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            message,
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body.
    pub fn body(&self) -> &ErrorBody {
        &self.body
    }
}

/// The message of a refused list cursor.
pub const BAD_CURSOR: &str =
    "after is not a cursor this list returned (made for another list or order?); \
     start again without after";

/// The statuses `From<StoreError>` can answer with, and why: the OpenAPI document declares
/// them on every operation that reads or writes the store.
pub const STORE_FAILURES: &[(StatusCode, &str)] = &[
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "Server-side failure; the server log has details",
    ),
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "The disk holding the store is full, or the database cannot be reached; retry after \
         the Retry-After delay",
    ),
];

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DiskFull(_) => ApiError::disk_full(e),
            StoreError::Unavailable(cause) => {
                tracing::error!(%cause, "the database cannot be reached");
                ApiError::unavailable(
                    "the server cannot reach its database now; retry after the Retry-After delay",
                )
            }
            StoreError::Contended(times) => {
                tracing::warn!(times, "a change kept meeting concurrent ones; answered 503");
                ApiError::unavailable(
                    "the server is busy with concurrent changes to the same records; retry \
                     after the Retry-After delay",
                )
            }
            StoreError::Refused(refusal) => refusal.into(),
            StoreError::BadPosition => ApiError::bad_request(BAD_CURSOR),
            StoreError::CaRetired(ca) => {
                tracing::error!(%ca, "signed with a retired CA: this process has not reread its CA files yet");
                ApiError::unavailable(
                    "the server is moving to a new CA; retry after the Retry-After delay",
                )
            }
            e => ApiError::internal(e),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unauthorized => ApiError::unauthorized(),
            Refusal::Revoked(message) => ApiError::key_revoked(message),
            Refusal::Expired(message) => ApiError::key_expired(message),
            Refusal::Forbidden(message) => ApiError::forbidden(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"heex\""),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("30"));
        }
        response
    }
}
