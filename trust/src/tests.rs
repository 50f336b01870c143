//! The anchored verifier against the test CA of `heex-pki` and leaves made here.

use std::path::PathBuf;

use heex_pki::test_kit::TestCa;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};

use super::*;

fn ca(name: &str) -> (CertificateDer<'static>, TestCa) {
    let ca = TestCa::named(name);
    (ca.ca_der.clone(), ca)
}

fn server_leaf(ca: &TestCa, names: &[&str]) -> CertificateDer<'static> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "heex-cloud");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    ca.sign(&params, &key).der().clone()
}

fn verify(
    anchor: &TrustAnchor,
    chain: &[CertificateDer<'static>],
    host: &str,
) -> (Result<ServerCertVerified, rustls::Error>, Option<Verdict>) {
    let log = VerdictLog::default();
    let verifier = AnchoredVerifier::new(anchor.clone(), log.clone());
    let name = ServerName::try_from(host.to_owned()).unwrap();
    let result = verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now());
    (result, log.latest())
}

fn explain(anchor: &TrustAnchor, verdict: Option<&Verdict>) -> Option<String> {
    explain_refusal(anchor, verdict)
}

#[test]
fn accepts_a_chain_presenting_the_pinned_ca() {
    let (ca_der, ca) = ca("Heex CA");
    let leaf = server_leaf(&ca, &["localhost", "127.0.0.1"]);
    let pin = Fingerprint::of_der(&ca_der);
    let anchor = TrustAnchor::Pinned(pin);
    for host in ["localhost", "127.0.0.1"] {
        let (result, verdict) = verify(&anchor, &[leaf.clone(), ca_der.clone()], host);
        assert!(result.is_ok(), "{host}: {result:?}");
        assert!(matches!(verdict, Some(Verdict::Verified { ca: Some(fp) }) if fp == pin));
        assert_eq!(explain(&anchor, verdict.as_ref()), None);
    }
}

#[test]
fn refuses_when_no_presented_certificate_matches_the_pin() {
    let (ca_der, ca) = ca("Heex CA");
    let (other_der, _) = self::ca("Other CA");
    let leaf = server_leaf(&ca, &["localhost"]);
    let pin = Fingerprint::of_der(&other_der);
    let anchor = TrustAnchor::Pinned(pin);
    let (result, verdict) = verify(&anchor, &[leaf.clone(), ca_der.clone()], "localhost");
    assert!(result.is_err());
    let Some(Verdict::PinNotPresented { presented }) = &verdict else {
        panic!("{verdict:?}");
    };
    assert_eq!(
        presented,
        &vec![Fingerprint::of_der(&leaf), Fingerprint::of_der(&ca_der)]
    );
    let msg = explain(&anchor, verdict.as_ref()).unwrap();
    assert!(
        msg.starts_with(&format!(
            "the server's CA does not match --ca-fingerprint {pin} (it presented "
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&Fingerprint::of_der(&ca_der).to_string()),
        "{msg}"
    );
    assert!(msg.ends_with("; refusing to send the API key"), "{msg}");
}

#[test]
fn refuses_a_pinned_ca_that_did_not_sign_the_leaf() {
    // An impostor can copy the real (public) CA certificate into its chain; it cannot make the
    // real CA sign its leaf.
    let (real_der, _real) = ca("Heex CA");
    let (_, impostor) = ca("Heex CA");
    let leaf = server_leaf(&impostor, &["localhost"]);
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&real_der));
    let (result, verdict) = verify(&anchor, &[leaf, real_der], "localhost");
    assert!(result.is_err());
    assert!(matches!(verdict, Some(Verdict::Rejected(_))), "{verdict:?}");
    let msg = explain(&anchor, verdict.as_ref()).unwrap();
    assert!(msg.contains("is not signed by the trusted CA"), "{msg}");
    assert!(msg.ends_with("refusing to send the API key"), "{msg}");
}

#[test]
fn an_unknown_issuer_and_a_bad_signature_read_the_same() {
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(b"ca"));
    for error in [
        CertificateError::UnknownIssuer,
        CertificateError::BadSignature,
    ] {
        let verdict = Verdict::Rejected(rustls::Error::InvalidCertificate(error));
        let msg = explain(&anchor, Some(&verdict)).unwrap();
        assert!(msg.contains("is not signed by the trusted CA"), "{msg}");
    }
    let expired = Verdict::Rejected(rustls::Error::InvalidCertificate(CertificateError::Expired));
    assert!(explain(&anchor, Some(&expired))
        .unwrap()
        .contains("does not verify"));
    assert_eq!(explain(&anchor, None), None);
}

#[test]
fn checks_the_host_name_too() {
    let (ca_der, ca) = ca("Heex CA");
    let leaf = server_leaf(&ca, &["heex.example"]);
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&ca_der));
    let (result, verdict) = verify(&anchor, &[leaf, ca_der], "other.example");
    assert!(matches!(
        result,
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        ))
    ));
    assert!(matches!(verdict, Some(Verdict::Rejected(_))));
    let msg = explain(&anchor, verdict.as_ref()).unwrap();
    assert!(msg.contains("does not verify"), "{msg}");
}

#[test]
fn a_pinned_leaf_vouches_only_for_itself() {
    // Pinning the server's own self-signed certificate is an exact pin: it verifies, because
    // the server still has to prove it holds that certificate's key in the handshake.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let self_signed = params.self_signed(&key).unwrap().der().clone();
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&self_signed));
    let (result, _) = verify(&anchor, &[self_signed], "localhost");
    assert!(result.is_ok(), "{result:?}");

    // A CA-issued leaf that is pinned cannot anchor a different leaf presented with it.
    let (ca_der, ca) = ca("Heex CA");
    let pinned_leaf = server_leaf(&ca, &["localhost"]);
    let other_leaf = server_leaf(&ca, &["localhost"]);
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&pinned_leaf));
    let (result, verdict) = verify(
        &anchor,
        &[other_leaf, pinned_leaf.clone(), ca_der.clone()],
        "localhost",
    );
    assert!(result.is_err());
    assert!(matches!(verdict, Some(Verdict::Rejected(_))), "{verdict:?}");

    // Nor can it vouch for itself: WebPKI refuses an end-entity certificate as its own issuer.
    let (result, _) = verify(&anchor, &[pinned_leaf, ca_der], "localhost");
    assert!(result.is_err());
}

#[test]
fn ca_file_is_the_only_root() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_der, ca) = ca("Heex CA");
    let (other_der, _) = self::ca("Other CA");
    let leaf = server_leaf(&ca, &["localhost"]);

    let file = dir.path().join("ca.crt");
    std::fs::write(
        &file,
        pem::encode(&pem::Pem::new("CERTIFICATE", ca_der.to_vec())),
    )
    .unwrap();
    let good = TrustAnchor::from_ca_file(&file).unwrap();
    assert!(good.is_anchor(&ca_der) && !good.is_anchor(&other_der));
    // The server need not present the CA when the file supplies it.
    let (result, verdict) = verify(&good, std::slice::from_ref(&leaf), "localhost");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        matches!(verdict, Some(Verdict::Verified { ca: Some(fp) }) if fp == Fingerprint::of_der(&ca_der))
    );

    let wrong = TrustAnchor::CaFile {
        path: PathBuf::from("other.crt"),
        certs: vec![other_der],
    };
    let (result, verdict) = verify(&wrong, &[leaf, ca_der], "localhost");
    assert!(result.is_err());
    let msg = explain(&wrong, verdict.as_ref()).unwrap();
    assert!(
        msg.contains("is not signed by the trusted CA") && msg.contains("--ca-file other.crt"),
        "{msg}"
    );
}

#[test]
fn ca_file_must_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    assert!(matches!(
        TrustAnchor::from_ca_file(&empty),
        Err(TrustError::NoCertificate { path }) if path == empty
    ));
    let missing = dir.path().join("missing.pem");
    assert!(matches!(
        TrustAnchor::from_ca_file(&missing),
        Err(TrustError::Read { path, .. }) if path == missing
    ));
    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert!(matches!(
        TrustAnchor::from_ca_file(&broken),
        Err(TrustError::NotPem { path, .. }) if path == broken
    ));
}
