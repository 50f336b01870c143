//! Personal API keys: `heex_` + 12-char key id + 32-char secret + 6-char checksum, all base62.
//!
//! The checksum (CRC32 of everything before it) lets any tool reject a mistyped or truncated
//! key offline. The secret is derived from the server secret and the key id, so the server
//! stores no secret material and can re-derive a key for its owner ("copy").

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::base62;

/// Prefix of every API key; secret scanners match on it.
pub const PREFIX: &str = "heex_";
/// Length of the public key id.
pub const ID_LEN: usize = 12;
/// Length of the secret part.
pub const SECRET_LEN: usize = 32;
/// Length of the checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Total length of a formatted key.
pub const KEY_LEN: usize = PREFIX.len() + ID_LEN + SECRET_LEN + CHECKSUM_LEN;

/// Why a string is not a well-formed API key. Never contains the key itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyParseError {
    /// The string does not begin with `heex_`.
    #[error("API key must start with \"heex_\"; copy the whole key")]
    MissingPrefix,
    /// Too short or too long.
    #[error(
        "API key has {0} characters, expected {KEY_LEN}; it was truncated or has extra characters"
    )]
    WrongLength(usize),
    /// A character outside `0-9A-Za-z` after the prefix.
    #[error("API key contains a character that is not a letter or digit; copy the key again")]
    NotBase62,
    /// The checksum does not match: a typo or a truncated copy.
    #[error("API key checksum does not match: the key was mistyped or corrupted; copy it again")]
    BadChecksum,
}

/// The public identifier of an API key (12 base62 characters). Not secret.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    /// A fresh random key id.
    pub fn generate() -> Self {
        KeyId(base62::random(ID_LEN))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyId {
    type Err = KeyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != ID_LEN {
            return Err(KeyParseError::WrongLength(s.len()));
        }
        if !base62::is_base62(s) {
            return Err(KeyParseError::NotBase62);
        }
        Ok(KeyId(s.to_owned()))
    }
}

impl TryFrom<String> for KeyId {
    type Error = KeyParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// A complete API key. Its `Debug` output never shows the secret, and it has no `Display`:
/// call [`ApiKey::expose`] where the key must really be shown or sent.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    id: KeyId,
    secret: String,
}

impl ApiKey {
    /// The key for `id`, its secret derived from the server secret:
    /// base62(HMAC-SHA256(server_secret, id)) truncated to 32 characters.
    pub fn derive(server_secret: &[u8], id: KeyId) -> Self {
        let secret = derive_secret(server_secret, &id);
        ApiKey { id, secret }
    }

    /// The public key id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// True when this key's secret is the one the server secret derives for its id.
    /// The comparison takes the same time wherever the first difference is.
    pub fn is_authentic(&self, server_secret: &[u8]) -> bool {
        let expected = derive_secret(server_secret, &self.id);
        bool::from(expected.as_bytes().ct_eq(self.secret.as_bytes()))
    }

    /// The full key text. Only for showing it to its owner or sending it to the server.
    pub fn expose(&self) -> String {
        let body = format!("{PREFIX}{}{}", self.id, self.secret);
        let sum = checksum(&body);
        body + &sum
    }
}

impl FromStr for ApiKey {
    type Err = KeyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let Some(rest) = s.strip_prefix(PREFIX) else {
            return Err(KeyParseError::MissingPrefix);
        };
        if s.len() != KEY_LEN {
            return Err(KeyParseError::WrongLength(s.chars().count()));
        }
        if !base62::is_base62(rest) {
            return Err(KeyParseError::NotBase62);
        }
        let (body, sum) = s.split_at(KEY_LEN - CHECKSUM_LEN);
        if checksum(body) != sum {
            return Err(KeyParseError::BadChecksum);
        }
        let id = KeyId(rest[..ID_LEN].to_owned());
        let secret = rest[ID_LEN..ID_LEN + SECRET_LEN].to_owned();
        Ok(ApiKey { id, secret })
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn derive_secret(server_secret: &[u8], id: &KeyId) -> String {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(server_secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
    };
    mac.update(id.as_str().as_bytes());
    let digest = mac.finalize().into_bytes();
    let encoded = format!("{:0>43}", base62::encode(&digest));
    encoded[..SECRET_LEN].to_owned()
}

fn checksum(body: &str) -> String {
    let crc = crc32fast::hash(body.as_bytes());
    // 62^6 > 2^32, so six digits always suffice.
    base62::encode_fixed(u64::from(crc), CHECKSUM_LEN).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip_and_authenticity() {
        let key = ApiKey::derive(SECRET, KeyId::generate());
        let text = key.expose();
        assert_eq!(text.len(), KEY_LEN);
        assert!(text.starts_with("heex_"));
        assert!(base62::is_base62(&text[5..]));
        let parsed: ApiKey = text.parse().unwrap();
        assert_eq!(parsed, key);
        assert!(parsed.is_authentic(SECRET));
        assert!(!parsed.is_authentic(b"another server secret........."));
    }

    #[test]
    fn derivation_is_stable() {
        let id: KeyId = "AAAAAAAAAAAA".parse().unwrap();
        assert_eq!(
            ApiKey::derive(SECRET, id.clone()).expose(),
            ApiKey::derive(SECRET, id).expose()
        );
    }

    #[test]
    fn every_single_character_change_is_caught() {
        let text = ApiKey::derive(SECRET, KeyId::generate()).expose();
        for i in PREFIX.len()..text.len() {
            for c in ['0', 'a', 'Z', 'q'] {
                let mut bytes = text.clone().into_bytes();
                if bytes[i] == c as u8 {
                    continue;
                }
                bytes[i] = c as u8;
                let changed = String::from_utf8(bytes).unwrap();
                assert_eq!(
                    changed.parse::<ApiKey>(),
                    Err(KeyParseError::BadChecksum),
                    "position {i}"
                );
            }
        }
    }

    #[test]
    fn malformed_inputs_are_classified() {
        let text = ApiKey::derive(SECRET, KeyId::generate()).expose();
        assert_eq!(
            text[..40].parse::<ApiKey>(),
            Err(KeyParseError::WrongLength(40))
        );
        assert_eq!(
            "hx_abc".parse::<ApiKey>(),
            Err(KeyParseError::MissingPrefix)
        );
        let bad = format!("{}-{}", &text[..20], &text[21..]);
        assert_eq!(bad.parse::<ApiKey>(), Err(KeyParseError::NotBase62));
        assert_eq!("".parse::<ApiKey>(), Err(KeyParseError::MissingPrefix));
        // Multi-byte input must not panic on slicing.
        let weird = format!("heex_{}", "é".repeat(25));
        assert!(weird.parse::<ApiKey>().is_err());
    }

    #[test]
    fn debug_redacts_secret() {
        let key = ApiKey::derive(SECRET, KeyId::generate());
        let shown = format!("{key:?}");
        let text = key.expose();
        assert!(!shown.contains(&text[PREFIX.len() + ID_LEN..]));
        assert!(shown.contains("redacted"));
    }
}
