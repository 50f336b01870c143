use heex_proto::DeviceId;
use rcgen::{KeyPair, PublicKeyData, SanType};

use super::*;
use crate::test_kit::TestCa;

fn der_of(pem: &str) -> Vec<u8> {
    pem_certificates(pem.as_bytes()).unwrap().remove(0)
}

#[test]
fn a_device_certificate_is_read_in_one_parse() {
    let ca = TestCa::new();
    let id = DeviceId::generate();
    let key = KeyPair::generate().unwrap();
    let cert = ca.sign(&TestCa::device_params(id.as_str()), &key);
    let parsed = DeviceCertificate::parse(cert.der()).unwrap();
    assert_eq!(parsed.device, id);
    assert_eq!(parsed.spiffe.device(), &id);
    assert_eq!(parsed.cert.common_name(), Some(id.as_str()));
    assert!(parsed.cert.certifies(&key.subject_public_key_info()));
    assert!(!parsed
        .cert
        .certifies(&KeyPair::generate().unwrap().subject_public_key_info()));
    assert!(!parsed.cert.is_ca);
    assert_eq!(parsed.cert.serial.len() % 2, 0);
    assert!(parsed.cert.not_before < parsed.cert.not_after);
    assert!(signed_by(cert.der(), &ca.ca_der));
    assert!(
        !signed_by(cert.der(), &TestCa::new().ca_der),
        "another CA, same name"
    );
}

#[test]
fn what_is_not_a_device_certificate_says_why() {
    let ca = TestCa::new();
    let id = DeviceId::generate();
    let other = DeviceId::generate();
    let key = KeyPair::generate().unwrap();
    let refusal = |params: rcgen::CertificateParams| {
        DeviceCertificate::parse(ca.sign(&params, &key).der()).unwrap_err()
    };
    // CN and SPIFFE ID for different devices.
    let mut p = TestCa::device_params(id.as_str());
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, other.as_str());
    assert!(matches!(refusal(p), IdentityError::Mismatch { .. }));
    // Two SPIFFE IDs, then none.
    let mut p = TestCa::device_params(id.as_str());
    p.subject_alt_names.push(SanType::URI(
        format!("spiffe://heex.test/ws/ws_AAAAAAAAAAAA/device/{other}")
            .try_into()
            .unwrap(),
    ));
    assert_eq!(refusal(p), IdentityError::Spiffe);
    let mut p = TestCa::device_params(id.as_str());
    p.subject_alt_names.clear();
    assert_eq!(refusal(p), IdentityError::Spiffe);
    // A common name that is not a device id.
    let mut p = TestCa::device_params(id.as_str());
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "robot-7");
    assert_eq!(refusal(p), IdentityError::CommonName);
    // Garbage, and a certificate with bytes after it.
    let err = DeviceCertificate::parse(&[0x30, 0x03, 1, 2, 3]).unwrap_err();
    assert!(
        matches!(err, IdentityError::Unparsable(CertError::Unparsable(_))),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("certificate does not parse: not an X.509 certificate ("),
        "{err}"
    );
    let (pem, _) = ca.device(&id);
    let mut der = der_of(&pem);
    der.push(0);
    assert_eq!(
        DeviceCertificate::parse(&der).unwrap_err(),
        IdentityError::Unparsable(CertError::TrailingData)
    );
}

#[test]
fn a_flipped_byte_anywhere_never_panics_and_never_forges_an_identity() {
    let ca = TestCa::new();
    let (pem, _) = ca.device(&DeviceId::generate());
    let der = der_of(&pem);
    let original = DeviceCertificate::parse(&der).unwrap();
    for i in 0..der.len() {
        for bit in [0x01, 0x80] {
            let mut bad = der.clone();
            bad[i] ^= bit;
            // Bytes outside the signed part (the outer algorithm's tag) may change without
            // breaking the signature; then the certificate must still say the same thing.
            if let Ok(parsed) = DeviceCertificate::parse(&bad) {
                if signed_by(&bad, &ca.ca_der) {
                    assert_eq!(
                        parsed, original,
                        "byte {i}: a damaged certificate reads as signed"
                    );
                }
            }
        }
    }
}

#[test]
fn ca_certificates_and_server_names() {
    let ca = TestCa::new();
    assert!(check_ca(&ca.ca_der).unwrap().is_ca);
    let (pem, _) = ca.device(&DeviceId::generate());
    assert_eq!(
        check_ca(&der_of(&pem)).unwrap_err(),
        "is not a CA certificate"
    );
    let (chain, _) = ca.server(&["gw.example", "127.0.0.1", "::1"]);
    let server = Certificate::parse(&chain[0]).unwrap();
    assert_eq!(server.names, ["gw.example", "127.0.0.1", "::1"]);
    assert!(server.uris.is_empty());
    let text = certificates_pem([chain[0].as_ref(), chain[1].as_ref()]);
    assert_eq!(
        pem_certificates(text.as_bytes()).unwrap(),
        [chain[0].to_vec(), chain[1].to_vec()]
    );
    assert!(!text.contains('\r'));
}
