//! The agent↔gateway frame codec.
//!
//! A frame is a `u32` big-endian payload length followed by that many bytes of JSON:
//! `{"v":1,"msg":{"type":"heartbeat","seq":7}}`. The length is checked against
//! [`MAX_FRAME_LEN`] before any payload is buffered, so a peer cannot make the other side
//! allocate more than that. Readers that want to hold no buffer while idle read the 4-byte
//! header with [`payload_len`], then exactly that many bytes, then call [`decode_payload`].
//!
//! Compatibility: fields added to a message carry `#[serde(default)]` and unknown fields are
//! ignored, so old and new peers read each other's messages. A message *type* a peer does
//! not know is a malformed frame to it, which ends the session with a protocol error: a new
//! type is never silently dropped. (`report_conflict` is such a type: an agent too old to
//! know it reconnects and logs the error instead of losing the report.)

use serde::{Deserialize, Serialize};

use crate::api::Facts;
use crate::DeviceId;

/// Largest payload a frame may carry, in bytes.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;
/// Largest report payload (compact JSON), in bytes. The agent refuses larger reports at
/// intake and the gateway refuses them on the wire.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;
/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;
/// Protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Why the gateway or agent closes a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CloseReason {
    /// The sender is shutting down; reconnect later.
    Shutdown,
    /// The device was revoked; it must be reinstalled with a new key.
    DeviceRevoked,
    /// The gateway has no record of this device.
    DeviceUnknown,
    /// The peer broke the protocol.
    ProtocolError,
    /// A newer session of the same device replaced this one.
    Replaced,
    /// The device certificate expired; renew before anything else.
    CertificateExpired,
    /// The certificate was superseded by a renewal (or is a superseded copy): only the
    /// device's current certificate is admitted, and only it may renew.
    CertificateSuperseded,
    /// A reason this side does not know yet.
    #[serde(other)]
    Other,
}

/// A protocol message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Message {
    /// Agent → gateway, first frame: who I am and what I run on.
    Hello {
        /// Agent version.
        agent_version: String,
        /// System facts.
        facts: Facts,
        /// The sequence number the agent's next new report will get (its outbox position):
        /// the gateway compares it with what it stored to notice a rewound outbox.
        #[serde(default)]
        next_report_seq: u64,
        /// [`bundle_digest`] of the CA certificates the agent trusts (its `ca.crt`), from an
        /// agent that understands [`Message::TrustBundle`]; the gateway sends one when the
        /// cloud's bundle differs. `None` from older agents, which are never sent one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_bundle: Option<String>,
    },
    /// Gateway → agent, answer to Hello: the session is accepted.
    Welcome {
        /// The device the certificate names.
        device_id: DeviceId,
        /// Server time, Unix seconds, so the agent can notice clock skew.
        server_time: i64,
        /// The cloud's highest stored report sequence number of this device plus one (0 when
        /// it holds none, or from an older gateway): new reports must be numbered from here
        /// on, so an agent whose outbox was rewound (a restored backup or snapshot) moves
        /// its numbering up to this.
        #[serde(default)]
        next_report_seq: u64,
    },
    /// Agent → gateway liveness probe.
    Heartbeat {
        /// Increasing per session.
        seq: u64,
    },
    /// Gateway → agent answer to a heartbeat.
    HeartbeatAck {
        /// The heartbeat's `seq`.
        seq: u64,
    },
    /// Agent → gateway: refreshed facts.
    Facts {
        /// System facts.
        facts: Facts,
    },
    /// Agent → gateway: one report.
    Report {
        /// Per-device sequence number; the cloud stores each (device, seq) once.
        seq: u64,
        /// The report's content.
        payload: serde_json::Value,
    },
    /// Gateway → agent: reports up to and including `seq` are stored.
    ReportAck {
        /// Highest stored sequence number.
        seq: u64,
    },
    /// Gateway → agent: report `seq` was not stored because the cloud already holds a
    /// different report under that number (the agent's outbox was rewound). Every report up
    /// to `seq` is settled; the agent queues this one again under a fresh number of at least
    /// `next_seq` before it counts `seq` as done. Sent before the ReportAck that covers it.
    ReportConflict {
        /// The conflicting sequence number.
        seq: u64,
        /// The lowest sequence number free in the cloud.
        next_seq: u64,
    },
    /// Agent → gateway: a CSR for a fresh key pair.
    RenewRequest {
        /// PKCS#10 CSR, PEM.
        csr_pem: String,
    },
    /// Gateway → agent: the renewed certificate.
    RenewResponse {
        /// Certificate, PEM.
        certificate_pem: String,
    },
    /// Gateway → agent: the CAs the cloud trusts now, during and after a CA rotation. Sent
    /// after Welcome when the agent's [`bundle_digest`] differs from the cloud's, and to
    /// every session when the bundle changes; only to agents whose Hello carried a digest.
    /// The agent trusts exactly these CAs for the gateway's and the API's certificate from
    /// then on (its `ca.crt`), and renews its own certificate when it is not from the first.
    TrustBundle {
        /// The CA certificates, PEM, the one that issues device certificates now first.
        ca_pem: String,
        /// An agent whose certificate is not from the first CA renews at a random point
        /// within this many seconds (spreading a fleet's renewals).
        renew_within_secs: u64,
    },
    /// Either side: the session ends.
    Close {
        /// Why.
        reason: CloseReason,
        /// One human-readable line.
        #[serde(default)]
        message: String,
    },
}

impl Message {
    /// The message's type name as on the wire (`"heartbeat_ack"`), for logs and errors: never
    /// its content.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Welcome { .. } => "welcome",
            Message::Heartbeat { .. } => "heartbeat",
            Message::HeartbeatAck { .. } => "heartbeat_ack",
            Message::Facts { .. } => "facts",
            Message::Report { .. } => "report",
            Message::ReportAck { .. } => "report_ack",
            Message::ReportConflict { .. } => "report_conflict",
            Message::RenewRequest { .. } => "renew_request",
            Message::RenewResponse { .. } => "renew_response",
            Message::TrustBundle { .. } => "trust_bundle",
            Message::Close { .. } => "close",
        }
    }
}

/// The digest of a CA bundle, compared by the gateway and the agent: lowercase hex SHA-256
/// over each certificate's DER, in order, each preceded by its length (u32 big-endian).
pub fn bundle_digest<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for der in ders {
        hash.update((der.len() as u32).to_be_bytes());
        hash.update(der);
    }
    hex::encode(hash.finalize())
}

#[derive(Serialize, Deserialize)]
struct Envelope<M> {
    v: u16,
    msg: M,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// More bytes are needed (not an error of the peer).
    #[error("incomplete frame")]
    Incomplete,
    /// The declared length exceeds [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Declared payload length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The payload is not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The payload is of a protocol version this side does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
}

/// Appends `msg` as one frame to `out`.
pub fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    serde_json::to_writer(
        &mut *out,
        &Envelope {
            v: PROTOCOL_VERSION,
            msg,
        },
    )
    .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = out.len() - start - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    // len <= MAX_FRAME_LEN < u32::MAX, so the cast is lossless.
    out[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// `msg` as one frame.
pub fn to_frame(msg: &Message) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode(msg, &mut out)?;
    Ok(out)
}

/// The payload length announced by a header, checked against the maximum.
pub fn payload_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len)
}

/// Decodes one payload (the bytes after the header).
pub fn decode_payload(payload: &[u8]) -> Result<Message, FrameError> {
    #[derive(Deserialize)]
    struct Version {
        v: u16,
    }
    let version: Version =
        serde_json::from_slice(payload).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if version.v != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(version.v));
    }
    let env: Envelope<Message> =
        serde_json::from_slice(payload).map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(env.msg)
}

/// Decodes the first frame in `buf`, returning it and the number of bytes it used.
/// [`FrameError::Incomplete`] means `buf` holds only part of a frame so far.
pub fn decode(buf: &[u8]) -> Result<(Message, usize), FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Err(FrameError::Incomplete);
    };
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(header);
    let len = payload_len(h)?;
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Err(FrameError::Incomplete);
    };
    Ok((decode_payload(payload)?, HEADER_LEN + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_the_wire_type_of_every_message() {
        let mut kinds: Vec<&str> = Vec::new();
        let facts = Message::Facts {
            facts: crate::api::Facts::default(),
        };
        for msg in samples().into_iter().chain([facts]) {
            let wire = serde_json::to_value(&msg).unwrap();
            assert_eq!(wire["type"], msg.kind(), "{msg:?}");
            if !kinds.contains(&msg.kind()) {
                kinds.push(msg.kind());
            }
        }
        assert_eq!(
            kinds.len(),
            12,
            "samples cover every message type: {kinds:?}"
        );
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello {
                agent_version: "0.1.0".into(),
                facts: Facts {
                    hostname: Some("robot-1".into()),
                    cpus: Some(4),
                    ..Facts::default()
                },
                next_report_seq: 3,
                ca_bundle: Some("ab12".into()),
            },
            Message::Welcome {
                device_id: DeviceId::generate(),
                server_time: 1_700_000_000,
                next_report_seq: 12,
            },
            Message::ReportConflict {
                seq: 4,
                next_seq: 12,
            },
            Message::Heartbeat { seq: 1 },
            Message::HeartbeatAck { seq: 1 },
            Message::Report {
                seq: 9,
                payload: serde_json::json!({"battery": 0.5}),
            },
            Message::ReportAck { seq: 9 },
            Message::RenewRequest {
                csr_pem: "csr".into(),
            },
            Message::RenewResponse {
                certificate_pem: "crt".into(),
            },
            Message::TrustBundle {
                ca_pem: "ca".into(),
                renew_within_secs: 60,
            },
            Message::Close {
                reason: CloseReason::DeviceRevoked,
                message: "device revoked".into(),
            },
        ]
    }

    #[test]
    fn round_trip_every_message() {
        let samples = samples();
        let mut buf = Vec::new();
        for m in &samples {
            encode(m, &mut buf).unwrap();
        }
        let mut at = 0;
        for m in samples {
            let (got, used) = decode(&buf[at..]).unwrap();
            assert_eq!(got, m);
            at += used;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn partial_input_is_incomplete() {
        let frame = to_frame(&Message::Heartbeat { seq: 5 }).unwrap();
        for cut in 0..frame.len() {
            assert_eq!(
                decode(&frame[..cut]),
                Err(FrameError::Incomplete),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut buf = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(b"{}");
        assert!(matches!(decode(&buf), Err(FrameError::TooLarge { .. })));
        assert!(payload_len(u32::MAX.to_be_bytes()).is_err());
    }

    #[test]
    fn garbage_and_versions_are_errors() {
        assert!(matches!(
            decode_payload(b"\xff\x00garbage"),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode_payload(br#"{"v":1,"msg":{"type":"launch_missiles"}}"#),
            Err(FrameError::Malformed(_))
        ));
        assert_eq!(
            decode_payload(br#"{"v":2,"msg":{"type":"heartbeat","seq":1}}"#),
            Err(FrameError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn old_and_new_peers_read_each_other() {
        // A Welcome from an older gateway (no next_report_seq) reads as 0.
        let device = DeviceId::generate();
        let old = format!(
            r#"{{"v":1,"msg":{{"type":"welcome","device_id":"{device}","server_time":5}}}}"#
        );
        assert_eq!(
            decode_payload(old.as_bytes()).unwrap(),
            Message::Welcome {
                device_id: device.clone(),
                server_time: 5,
                next_report_seq: 0
            }
        );
        // An older agent reads a new Welcome: the extra field is ignored (checked here by
        // decoding into the old shape).
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        #[allow(dead_code)]
        enum OldMessage {
            Welcome {
                device_id: DeviceId,
                server_time: i64,
            },
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct OldEnvelope {
            v: u16,
            msg: OldMessage,
        }
        let new = to_frame(&Message::Welcome {
            device_id: device,
            server_time: 5,
            next_report_seq: 9,
        })
        .unwrap();
        assert!(serde_json::from_slice::<OldEnvelope>(&new[HEADER_LEN..]).is_ok());
        // ...but a message type it does not know is an error, never silently skipped.
        let conflict = to_frame(&Message::ReportConflict {
            seq: 1,
            next_seq: 2,
        })
        .unwrap();
        assert!(serde_json::from_slice::<OldEnvelope>(&conflict[HEADER_LEN..]).is_err());
    }

    #[test]
    fn unknown_close_reason_is_tolerated() {
        let m = decode_payload(br#"{"v":1,"msg":{"type":"close","reason":"moon_phase"}}"#).unwrap();
        assert_eq!(
            m,
            Message::Close {
                reason: CloseReason::Other,
                message: String::new()
            }
        );
    }

    /// Found by fuzzing (see docs/fuzzing.md): numbers in a report payload must survive
    /// decode(encode(m)) exactly, also long integers that only fit a float.
    #[test]
    fn report_numbers_round_trip_exactly() {
        let payload = format!(
            r#"{{"v":1,"msg":{{"type":"report","seq":1,"payload":{}1}}}}"#,
            "4".repeat(70)
        );
        let m = decode_payload(payload.as_bytes()).unwrap();
        let (again, _) = decode(&to_frame(&m).unwrap()).unwrap();
        assert_eq!(again, m);
    }
}
