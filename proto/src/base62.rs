//! Base62 helpers (`0-9A-Za-z`), the alphabet of every identifier and key Heex prints.

use rand::Rng;

/// The base62 alphabet, in ascending digit order.
pub const ALPHABET: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Encodes bytes as a big-endian base62 number (no padding).
pub fn encode(bytes: &[u8]) -> String {
    base_x::encode(ALPHABET, bytes)
}

/// Encodes `value` as exactly `width` base62 digits, left-padded with `0`.
///
/// Returns `None` when the value needs more than `width` digits.
pub fn encode_fixed(value: u64, width: usize) -> Option<String> {
    let digits = encode(&value.to_be_bytes());
    // base_x drops leading zero bytes as "0" digits; normalise by trimming and re-padding.
    let digits = digits.trim_start_matches('0');
    if digits.len() > width {
        return None;
    }
    Some(format!("{}{}", "0".repeat(width - digits.len()), digits))
}

/// True when every character of `s` is in the base62 alphabet.
pub fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `len` uniformly random base62 characters from the operating system's CSPRNG.
pub fn random(len: usize) -> String {
    let mut rng = rand::rngs::OsRng;
    let alphabet = ALPHABET.as_bytes();
    (0..len)
        .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_pads_and_bounds() {
        assert_eq!(encode_fixed(0, 6).as_deref(), Some("000000"));
        assert_eq!(encode_fixed(61, 6).as_deref(), Some("00000z"));
        assert_eq!(encode_fixed(62, 6).as_deref(), Some("000010"));
        assert_eq!(
            encode_fixed(u64::from(u32::MAX), 6).map(|s| s.len()),
            Some(6)
        );
        assert_eq!(encode_fixed(62u64.pow(6), 6), None);
    }

    #[test]
    fn random_is_base62_of_requested_length() {
        let s = random(40);
        assert_eq!(s.len(), 40);
        assert!(is_base62(&s));
        assert_ne!(s, random(40));
    }
}
