use std::sync::Arc;

use heex_proto::{DeviceId, SpiffeId, WorkspaceId};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, PKCS_ECDSA_P256_SHA256, PKCS_ED25519,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::RootCertStore;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

const DAY: Duration = Duration::from_secs(86400);

fn spiffe_for(device: &DeviceId) -> SpiffeId {
    SpiffeId::new("heex.local", WorkspaceId::generate(), device.clone()).unwrap()
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A CSR that asks for everything it must not get.
fn greedy_csr(key: &KeyPair) -> String {
    let mut params =
        CertificateParams::new(vec!["evil.example".to_owned(), "localhost".to_owned()]).unwrap();
    params.subject_alt_names.push(SanType::URI(
        "spiffe://heex.local/ws/ws_AAAAAAAAAAAA/device/dev_AAAAAAAAAAAAAAAAAAAA"
            .try_into()
            .unwrap(),
    ));
    params
        .distinguished_name
        .push(DnType::CommonName, "dev_BBBBBBBBBBBBBBBBBBBB");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn check_device_cert(ca: &Ca, cert: &DeviceCert, device: &DeviceId, spiffe: &SpiffeId) {
    let der = der_of(&cert.pem);
    let (_, x509) = X509Certificate::from_der(&der).unwrap();
    // Issued by the CA and signed with its key.
    let (_, ca_x509) = X509Certificate::from_der(ca.cert_der()).unwrap();
    x509.verify_signature(Some(ca_x509.public_key())).unwrap();
    assert_eq!(x509.issuer(), ca_x509.subject());

    let cns: Vec<_> = x509
        .subject()
        .iter_common_name()
        .map(|cn| cn.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cns, [device.as_str()]);
    assert_eq!(x509.subject().iter().count(), 1, "subject has only the CN");

    let mut sans = Vec::new();
    let mut saw_eku = false;
    let mut saw_bc = false;
    let mut saw_ku = false;
    for ext in x509.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => sans.extend(san.general_names.clone()),
            ParsedExtension::ExtendedKeyUsage(eku) => {
                saw_eku = true;
                assert!(eku.client_auth);
                assert!(!eku.server_auth && !eku.any && eku.other.is_empty());
            }
            ParsedExtension::BasicConstraints(bc) => {
                saw_bc = true;
                assert!(!bc.ca);
            }
            ParsedExtension::KeyUsage(ku) => {
                saw_ku = true;
                assert!(ku.digital_signature());
                assert!(!ku.key_cert_sign());
            }
            _ => {}
        }
    }
    assert!(saw_eku && saw_bc && saw_ku);
    assert_eq!(sans.len(), 1, "exactly one SAN: {sans:?}");
    let spiffe_text = spiffe.to_string();
    assert!(matches!(sans[0], GeneralName::URI(u) if u == spiffe_text));

    let validity = x509.validity();
    let now = OffsetDateTime::now_utc();
    assert!(validity.not_before.to_datetime() <= now - Duration::from_secs(4 * 60));
    assert_eq!(validity.not_after.to_datetime(), cert.not_after);
    assert_eq!(hex::encode(x509.raw_serial()), cert.serial_hex);
}

#[test]
fn device_certificate_is_built_from_server_records_only() {
    let now = OffsetDateTime::now_utc();
    let (ca, _key) = Ca::generate(now).unwrap();
    let device_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = DeviceCsr::from_pem(&greedy_csr(&device_key)).unwrap();
    let device = DeviceId::generate();
    let spiffe = spiffe_for(&device);
    let cert = ca
        .sign_device(&csr, &device, &spiffe, 30 * DAY, now)
        .unwrap();
    check_device_cert(&ca, &cert, &device, &spiffe);
    // The certificate carries the device's key.
    let der = der_of(&cert.pem);
    let (_, x509) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(x509.public_key().raw, device_key.subject_public_key_info());
}

#[test]
fn ed25519_device_key() {
    let now = OffsetDateTime::now_utc();
    let (ca, _key) = Ca::generate(now).unwrap();
    let device_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let csr = DeviceCsr::from_pem(&greedy_csr(&device_key)).unwrap();
    let device = DeviceId::generate();
    let spiffe = spiffe_for(&device);
    let cert = ca.sign_device(&csr, &device, &spiffe, DAY, now).unwrap();
    check_device_cert(&ca, &cert, &device, &spiffe);
}

#[test]
fn serials_are_random() {
    let now = OffsetDateTime::now_utc();
    let (ca, _key) = Ca::generate(now).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = DeviceCsr::from_pem(&greedy_csr(&key)).unwrap();
    let device = DeviceId::generate();
    let spiffe = spiffe_for(&device);
    let a = ca.sign_device(&csr, &device, &spiffe, DAY, now).unwrap();
    let b = ca.sign_device(&csr, &device, &spiffe, DAY, now).unwrap();
    assert_ne!(a.serial_hex, b.serial_hex);
    assert_eq!(a.serial_hex.len(), 32);
}

#[test]
fn ca_is_a_p256_ca_and_reloads_with_the_same_identity() {
    let now = OffsetDateTime::now_utc();
    let (ca, key_pem) = Ca::generate(now).unwrap();
    let (_, x509) = X509Certificate::from_der(ca.cert_der()).unwrap();
    let bc = x509.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert!(x509.key_usage().unwrap().unwrap().value.key_cert_sign());
    x509.verify_signature(None).unwrap();

    let reloaded = Ca::load(ca.cert_pem(), &key_pem).unwrap();
    assert_eq!(reloaded.fingerprint(), ca.fingerprint());
    assert!(ca.fingerprint().to_string().starts_with("sha256:"));

    // A device certificate signed by the reloaded CA verifies for mTLS client auth
    // against the original CA certificate.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = DeviceCsr::from_pem(&greedy_csr(&key)).unwrap();
    let device = DeviceId::generate();
    let cert = reloaded
        .sign_device(&csr, &device, &spiffe_for(&device), DAY, now)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
    verifier
        .verify_client_cert(&der_of(&cert.pem), &[], UnixTime::now())
        .unwrap();
}

#[test]
fn server_certificate_verifies_for_every_name() {
    let now = OffsetDateTime::now_utc();
    let (ca, _key) = Ca::generate(now).unwrap();
    let issued = ca
        .issue_server_cert(
            &["cloud.example".to_owned(), "10.1.2.3".to_owned()],
            now,
            SERVER_CERT_LIFETIME,
        )
        .unwrap();
    KeyPair::from_pem(&issued.key_pem).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
    let leaf = der_of(&issued.cert_pem);
    for name in ["localhost", "127.0.0.1", "::1", "cloud.example", "10.1.2.3"] {
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(name).unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(verifier
        .verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from("other.example").unwrap(),
            &[],
            UnixTime::now()
        )
        .is_err());
}

#[test]
fn hostnames_are_checked() {
    assert!(san_for("cloud.example.com").is_ok());
    assert!(san_for("fe80::1").is_ok());
    for bad in ["", "a b", "-x.example", "x..y", "é.example"] {
        assert!(san_for(bad).is_err(), "{bad:?}");
    }
}
