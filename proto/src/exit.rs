//! Process exit codes shared by every Heex binary (BSD `sysexits.h` values), documented in
//! the README. Scripts can tell a bad key from a network problem without parsing text.

/// Success (also: already enrolled, nothing to do).
pub const OK: i32 = 0;
/// Unexpected failure: a bug or an unexpected server answer.
pub const SOFTWARE: i32 = 70;
/// Usage error: bad flags or a malformed API key (caught offline by its checksum).
pub const USAGE: i32 = 64;
/// The server refused the API key (unknown, revoked, expired) or its scope.
pub const KEY_REFUSED: i32 = 77;
/// The server is unreachable, or its identity does not match the pinned CA.
pub const UNAVAILABLE: i32 = 69;
/// A local file could not be read or written.
pub const FILE_ERROR: i32 = 73;
/// Configuration or credentials missing, unreadable or corrupt.
pub const CONFIG: i32 = 78;
/// A temporary condition: try again later (e.g. the report outbox is full).
pub const TEMPFAIL: i32 = 75;
/// The input data is malformed (e.g. a report that is not JSON or is too large).
pub const DATA_ERROR: i32 = 65;
