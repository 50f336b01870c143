//! A secret carried in an API body (a full API key, an invitation token): sent and received
//! as a plain JSON string, never shown by `Debug` (so a logged or printed body reveals
//! nothing), read only through [`Secret::expose`].

use serde::{Deserialize, Serialize};

/// A secret string. `Debug` prints `<redacted>`; there is no `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that needs it (a header, the terminal it was
    /// asked for on, the clipboard).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret itself, owned.
    pub fn into_exposed(self) -> String {
        self.0
    }
}

/// Hex SHA-256 of a secret: all the cloud keeps of a one-time token or a console session id.
pub fn sha256_hex(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Secret {
        Secret(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_a_plain_string_on_the_wire_and_hidden_from_debug() {
        let s = Secret::new("hx_abc123");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hx_abc123\"");
        let back: Secret = serde_json::from_str("\"hx_abc123\"").unwrap();
        assert_eq!(back.expose(), "hx_abc123");
        assert_eq!(format!("{s:?}"), "<redacted>");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Body {
            key: Secret,
        }
        let shown = format!("{:?}", Body { key: s });
        assert!(!shown.contains("abc123"), "{shown}");
    }
}
