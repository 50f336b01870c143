use heex_pki::test_kit::TestCa;
use heex_proto::{Fingerprint, WorkspaceId};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, PublicKeyData, SanType};
use x509_parser::prelude::FromDer;

use super::*;

fn ca() -> TestCa {
    TestCa::named("Heex CA")
}

fn response(ca: &TestCa, key: &impl PublicKeyData, cn: Option<&str>) -> EnrollResponse {
    let device_id = DeviceId::generate();
    let spiffe_id = SpiffeId::new("heex.test", WorkspaceId::generate(), device_id.clone()).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, cn.unwrap_or(device_id.as_str()));
    params.subject_alt_names = vec![SanType::URI(spiffe_id.to_string().try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = ca.sign(&params, key);
    EnrollResponse {
        device_id,
        spiffe_id,
        certificate_pem: cert.pem(),
        ca_pem: certificate_pem(&ca.ca_der),
        gateway: "127.0.0.1:8444".to_owned(),
        expires_at: OffsetDateTime::now_utc(),
    }
}

#[test]
fn csr_carries_the_device_public_key() {
    let key = DeviceKey::generate().unwrap();
    let csr = key.csr_pem("robot-1").unwrap();
    assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    let der = pem::parse(&csr).unwrap().into_contents();
    let (_, parsed) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
    parsed.verify_signature().unwrap();
    assert_eq!(
        parsed.certification_request_info.subject_pki.raw,
        key.spki().as_slice()
    );
    // The private key round-trips through its PEM, as the agent will read it.
    let pem = key.private_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(DeviceKey::from_pem(&pem).unwrap().spki(), key.spki());
}

#[test]
fn accepts_a_well_formed_response() {
    let ca = ca();
    let key = DeviceKey::generate().unwrap();
    let resp = response(&ca, &key, None);
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&ca.ca_der));
    let issued = check_response(&resp, &key, &anchor).unwrap();
    assert_eq!(issued.device_id, resp.device_id);
    assert_eq!(
        pem_certificates(issued.ca_pem.as_bytes()).unwrap(),
        vec![ca.ca_der.to_vec()]
    );
    assert!(issued.not_after > OffsetDateTime::now_utc());
}

#[test]
fn refuses_a_ca_other_than_the_trusted_one() {
    let ca = ca();
    let other = self::ca();
    let key = DeviceKey::generate().unwrap();
    let resp = response(&ca, &key, None);
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&other.ca_der));
    let err = check_response(&resp, &key, &anchor).unwrap_err();
    assert_eq!(err.exit_code(), 69);
}

#[test]
fn refuses_a_certificate_for_another_key_or_device() {
    let ca = ca();
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&ca.ca_der));
    let key = DeviceKey::generate().unwrap();
    let other_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();

    let resp = response(&ca, &other_key, None);
    let err = check_response(&resp, &key, &anchor).unwrap_err();
    assert_eq!(err.exit_code(), 70);
    assert!(err.to_string().contains("another key"), "{err}");

    let resp = response(&ca, &key, Some("dev_someoneelse"));
    let err = check_response(&resp, &key, &anchor).unwrap_err();
    assert_eq!(err.exit_code(), 70);

    let mut resp = response(&ca, &key, None);
    resp.gateway = "no-port".to_owned();
    assert_eq!(
        check_response(&resp, &key, &anchor)
            .unwrap_err()
            .exit_code(),
        70
    );
}

#[test]
fn refuses_a_certificate_signed_by_another_ca() {
    let ca = ca();
    let impostor = self::ca();
    let key = DeviceKey::generate().unwrap();
    let mut resp = response(&impostor, &key, None);
    resp.ca_pem = certificate_pem(&ca.ca_der);
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&ca.ca_der));
    let err = check_response(&resp, &key, &anchor).unwrap_err();
    assert!(err.to_string().contains("not signed by the CA"), "{err}");
}

/// Both CAs' PEM, in this order.
fn bundle(cas: &[&TestCa]) -> String {
    cas.iter().map(|ca| certificate_pem(&ca.ca_der)).collect()
}

#[test]
fn during_a_rotation_the_device_certificate_may_come_from_the_new_ca() {
    // The anchor the user pinned is the old CA (the API's server certificate chains to it);
    // the new CA signed the device certificate. Either order of the two is accepted.
    let old = ca();
    let new = self::ca();
    let key = DeviceKey::generate().unwrap();
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&old.ca_der));
    for order in [[&new, &old], [&old, &new]] {
        let mut resp = response(&new, &key, None);
        resp.ca_pem = bundle(&order);
        let issued = check_response(&resp, &key, &anchor).unwrap();
        // ca.crt holds both, in the order returned.
        assert_eq!(
            pem_certificates(issued.ca_pem.as_bytes()).unwrap(),
            vec![order[0].ca_der.to_vec(), order[1].ca_der.to_vec()]
        );
    }
    // And from the anchor itself, with the new CA returned as well.
    let mut resp = response(&old, &key, None);
    resp.ca_pem = bundle(&[&new, &old]);
    let issued = check_response(&resp, &key, &anchor).unwrap();
    assert_eq!(
        pem_certificates(issued.ca_pem.as_bytes()).unwrap(),
        vec![new.ca_der.to_vec(), old.ca_der.to_vec()]
    );
}

#[test]
fn a_device_certificate_from_a_ca_not_returned_is_refused() {
    let old = ca();
    let new = self::ca();
    let stranger = self::ca();
    let key = DeviceKey::generate().unwrap();
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&old.ca_der));
    let mut resp = response(&stranger, &key, None);
    resp.ca_pem = bundle(&[&new, &old]);
    let err = check_response(&resp, &key, &anchor).unwrap_err();
    assert_eq!(err.exit_code(), 70);
    assert!(
        err.to_string().contains("not signed by any of the 2 CA"),
        "{err}"
    );
}

#[test]
fn a_rotation_answer_without_the_anchor_is_refused() {
    let pinned = ca();
    let new = self::ca();
    let other = self::ca();
    let key = DeviceKey::generate().unwrap();
    let mut resp = response(&new, &key, None);
    resp.ca_pem = bundle(&[&new, &other]);
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&pinned.ca_der));
    let err = check_response(&resp, &key, &anchor).unwrap_err();
    assert_eq!(err.exit_code(), 69);
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn every_returned_ca_certificate_must_be_a_ca() {
    let ca = ca();
    let key = DeviceKey::generate().unwrap();
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&ca.ca_der));
    // A leaf certificate (the device's own) among the CA certificates.
    let mut resp = response(&ca, &key, None);
    resp.ca_pem = format!("{}{}", certificate_pem(&ca.ca_der), resp.certificate_pem);
    let err = check_response(&resp, &key, &anchor).unwrap_err();
    assert_eq!(err.exit_code(), 70);
    assert!(
        err.to_string()
            .contains("unusable credentials: CA certificate 2 is not a CA certificate"),
        "{err}"
    );
    // A block that is not X.509 at all.
    let junk = pem::encode(&pem::Pem::new("CERTIFICATE", b"junk".to_vec()));
    let mut resp = response(&ca, &key, None);
    resp.ca_pem = format!("{junk}{}", certificate_pem(&ca.ca_der));
    let err = check_response(&resp, &key, &anchor).unwrap_err();
    assert_eq!(err.exit_code(), 70);
    assert!(
        err.to_string().contains("CA certificate 1 does not parse"),
        "{err}"
    );
}

#[test]
fn gateway_addresses() {
    assert!(check_gateway("127.0.0.1:8444").is_ok());
    assert!(check_gateway("[::1]:8444").is_ok());
    assert!(check_gateway("gw.example:443").is_ok());
    // Each address the agent would refuse, an unbracketed IPv6 address included.
    for bad in ["", ":1", "h:", "h:0", "h:99999", "h 1:2", "::1:8444"] {
        assert!(check_gateway(bad).is_err(), "{bad}");
    }
}
