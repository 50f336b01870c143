//! Device and workspace identifiers, and the device's SPIFFE ID (`spiffe://<trust-domain>/ws/<workspace-id>/device/<device-id>`).

use std::fmt;
use std::str::FromStr;

use crate::base62;

/// Why an identifier does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Wrong prefix, length or characters.
    #[error("{kind} must look like {example}")]
    Malformed {
        /// What was being parsed.
        kind: &'static str,
        /// A sample of the expected shape.
        example: &'static str,
    },
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $len:literal, $kind:literal, $example:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// A fresh random identifier.
            pub fn generate() -> Self {
                $name(format!("{}{}", $prefix, base62::random($len)))
            }
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.strip_prefix($prefix) {
                    Some(rest) if rest.len() == $len && base62::is_base62(rest) => Ok($name(s.to_owned())),
                    _ => Err(IdError::Malformed { kind: $kind, example: $example }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A device's stable opaque id, also the CN of its certificate.
    DeviceId, "dev_", 20, "device id", "dev_ followed by 20 letters or digits"
);
prefixed_id!(
    /// A workspace's id.
    WorkspaceId, "ws_", 12, "workspace id", "ws_ followed by 12 letters or digits"
);
prefixed_id!(
    /// A team member's id.
    MemberId, "mem_", 12, "member id", "mem_ followed by 12 letters or digits"
);

/// The SPIFFE ID carried as the single URI SAN of a device certificate.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    workspace: WorkspaceId,
    device: DeviceId,
}

/// Why a SPIFFE ID is not a valid Heex device identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeError {
    /// Not of the form `spiffe://<trust-domain>/ws/<workspace-id>/device/<device-id>`.
    #[error("not a Heex device SPIFFE ID (expected spiffe://<trust-domain>/ws/<workspace-id>/device/<device-id>)")]
    Malformed,
    /// The trust domain has characters SPIFFE does not allow.
    #[error("trust domain may contain only lowercase letters, digits, '.', '-' and '_'")]
    BadTrustDomain,
}

/// Checks a trust domain name against the SPIFFE character set.
pub fn validate_trust_domain(td: &str) -> Result<(), SpiffeError> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SpiffeError::BadTrustDomain)
    }
}

impl SpiffeId {
    /// The SPIFFE ID of `device` in `workspace` under `trust_domain`.
    pub fn new(
        trust_domain: &str,
        workspace: WorkspaceId,
        device: DeviceId,
    ) -> Result<Self, SpiffeError> {
        validate_trust_domain(trust_domain)?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            workspace,
            device,
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
    /// The workspace the device belongs to.
    pub fn workspace(&self) -> &WorkspaceId {
        &self.workspace
    }
    /// The device.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeError::Malformed)?;
        let mut parts = rest.split('/');
        let (Some(td), Some("ws"), Some(ws), Some("device"), Some(dev), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SpiffeError::Malformed);
        };
        validate_trust_domain(td)?;
        let workspace = ws.parse().map_err(|_| SpiffeError::Malformed)?;
        let device = dev.parse().map_err(|_| SpiffeError::Malformed)?;
        Ok(SpiffeId {
            trust_domain: td.to_owned(),
            workspace,
            device,
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ws/{}/device/{}",
            self.trust_domain, self.workspace, self.device
        )
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_round_trip() {
        let id =
            SpiffeId::new("heex.local", WorkspaceId::generate(), DeviceId::generate()).unwrap();
        let text = id.to_string();
        assert!(text.starts_with("spiffe://heex.local/ws/ws_"));
        assert_eq!(text.parse::<SpiffeId>().unwrap(), id);
    }

    #[test]
    fn spiffe_rejects_other_shapes() {
        for bad in [
            "spiffe://heex.local/ws/ws_AAAAAAAAAAAA/device",
            "spiffe://Heex/ws/ws_AAAAAAAAAAAA/device/dev_AAAAAAAAAAAAAAAAAAAA",
            "https://heex.local/ws/ws_AAAAAAAAAAAA/device/dev_AAAAAAAAAAAAAAAAAAAA",
            "spiffe://heex.local/ws/ws_AAAAAAAAAAAA/device/dev_AAAAAAAAAAAAAAAAAAAA/x",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn device_ids_parse_strictly() {
        let id = DeviceId::generate();
        assert_eq!(id.as_str().parse::<DeviceId>().unwrap(), id);
        assert!("dev_short".parse::<DeviceId>().is_err());
        assert!("ws_AAAAAAAAAAAA".parse::<DeviceId>().is_err());
    }
}
