//! What the gateway reads and learns from the store about a device: its status before a
//! session's frames are accepted, the outcome of recording a sign of life, and of storing
//! reports. (The gateway's `DeviceDirectory` is implemented over the store in the gateway.)

use heex_proto::WorkspaceId;
use time::OffsetDateTime;

/// What the gateway needs to know about a device before accepting its frames.
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    /// The workspace the device belongs to.
    pub workspace_id: WorkspaceId,
    /// Set when the device was revoked.
    pub revoked_at: Option<OffsetDateTime>,
    /// Serial (lowercase hex) of the certificate the cloud issued last.
    pub cert_serial: String,
    /// The certificate that one superseded at renewal, and when.
    pub previous_cert: Option<(String, OffsetDateTime)>,
    /// SHA-256 (hex) of the current certificate's public key (`None`: issued before it was
    /// recorded).
    pub cert_key: Option<String>,
}

/// What recording a session's sign of life found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Recorded: the session holds the device's connection mark.
    Recorded,
    /// The device is revoked or gone: the session ends with "device revoked".
    NotLive,
    /// A newer session of the device (on this or another process) holds the mark: this one
    /// ends with "replaced".
    Superseded,
}

/// What storing a batch of reports did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredReports {
    /// The highest sequence number of the batch: every report up to it is settled.
    pub highest: u64,
    /// Sequence numbers already stored with a different content, in batch order.
    pub conflicts: Vec<u64>,
    /// The device's highest stored sequence number plus one, after the batch.
    pub next_seq: u64,
}
