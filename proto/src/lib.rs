//! Types shared by every part of Heex: the API key format, device identity, the HTTPS API's
//! request and response bodies, and the agent↔gateway frame codec.
//!
//! This crate is pure: no async runtime and no I/O. Everything here can be used by the cloud,
//! the installer, the agent, the CLI and the tests alike, and every parser of untrusted bytes
//! returns an error rather than panicking.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod apikey;
pub mod base62;
pub mod device_files;
pub mod exit;
pub mod fingerprint;
pub mod frame;
pub mod gateway_addr;
pub mod identity;
pub mod log_format;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod secret;
pub mod token;

pub use apikey::{ApiKey, KeyId, KeyParseError};
pub use fingerprint::Fingerprint;
pub use gateway_addr::GatewayAddr;
pub use identity::{DeviceId, MemberId, SpiffeId, WorkspaceId};
pub use log_format::LogFormat;
pub use secret::Secret;
pub use token::{InvitationToken, SignInToken};

/// ALPN protocol identifier spoken on the gateway.
pub const ALPN: &[u8] = b"heex/1";

/// Version of this crate, reported by agents in their Hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod facts;
pub mod text;
