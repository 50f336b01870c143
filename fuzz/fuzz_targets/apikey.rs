//! The API key parser, on arbitrary text (a header, a file, an environment variable).
//!
//! Properties: parsing never panics; a key that parses prints back as the text it was parsed
//! from (less surrounding whitespace) and parses again to the same key
//! (parse(display(k)) == k); a key derived from any id prints as a key that parses back to it.
#![no_main]

use heex_proto::apikey::{ApiKey, KeyId, KEY_LEN, PREFIX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = text.parse::<ApiKey>() {
        let shown = key.expose();
        assert_eq!(shown, text.trim(), "a parsed key prints differently");
        assert_eq!(shown.len(), KEY_LEN);
        assert_eq!(shown.parse::<ApiKey>().as_ref(), Ok(&key));
    }
    if let Ok(id) = text.parse::<KeyId>() {
        assert_eq!(id.to_string(), text);
        let key = ApiKey::derive(data, id.clone());
        let shown = key.expose();
        assert!(shown.starts_with(PREFIX));
        let back: ApiKey = shown.parse().expect("a derived key parses");
        assert_eq!(back.id(), &id);
        assert!(back.is_authentic(data));
    }
});
