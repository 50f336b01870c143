//! CSR intake (`POST /v1/enroll`, renewal): a hostile PEM or DER certificate request.
//!
//! Properties: parsing and verifying never panics, as PEM text or as DER; a CSR that is
//! accepted as DER is accepted the same way when wrapped in PEM, with the same public key.
#![no_main]

use libfuzzer_sys::fuzz_target;

use heex_pki::csr::DeviceCsr;

fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = DeviceCsr::from_der(data) {
        let key = csr.public_key_der();
        assert!(!key.is_empty());
        let pem = pem_wrap(data);
        let again = DeviceCsr::from_pem(&pem).expect("an accepted DER CSR is accepted as PEM");
        assert_eq!(again.public_key_der(), key);
        assert_eq!(again.key_type(), csr.key_type());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = DeviceCsr::from_pem(text);
    }
});

fn pem_wrap(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE REQUEST-----\n");
    out
}
