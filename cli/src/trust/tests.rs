//! The fingerprint-pinning verifier against a test PKI made here with rcgen.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::*;
use base64::Engine as _;

fn ca(name: &str) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert.der().clone(), Issuer::new(params, key))
}

fn leaf(issuer: &Issuer<'static, KeyPair>, names: &[&str]) -> CertificateDer<'static> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "heex-cloud");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.signed_by(&key, issuer).unwrap().der().clone()
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

#[test]
fn accepts_a_chain_presenting_the_pinned_ca() {
    let (ca_der, ca) = ca("Heex CA");
    let leaf = leaf(&ca, &["localhost", "127.0.0.1"]);
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&ca_der));
    for host in ["localhost", "127.0.0.1"] {
        let (result, verdict) = verify(&anchor, &[leaf.clone(), ca_der.clone()], host);
        assert!(result.is_ok(), "{host}: {result:?}");
        assert!(matches!(verdict, Some(Verdict::Verified)));
        assert_eq!(explain_refusal(&anchor, verdict.as_ref()), None);
    }
}

#[test]
fn refuses_when_the_pinned_ca_is_not_presented() {
    let (ca_der, ca) = ca("Heex CA");
    let (other_der, _) = self::ca("Other CA");
    let leaf = leaf(&ca, &["localhost"]);
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&other_der));
    let (result, verdict) = verify(&anchor, &[leaf.clone(), ca_der.clone()], "localhost");
    assert!(result.is_err());
    let Some(Verdict::PinNotPresented { presented }) = &verdict else {
        panic!("{verdict:?}");
    };
    assert_eq!(
        presented,
        &vec![Fingerprint::of_der(&leaf), Fingerprint::of_der(&ca_der)]
    );
    let msg = explain_refusal(&anchor, verdict.as_ref()).unwrap();
    assert!(
        msg.contains(&Fingerprint::of_der(&other_der).to_string()),
        "{msg}"
    );
    assert!(
        msg.contains(&Fingerprint::of_der(&ca_der).to_string()),
        "{msg}"
    );
    assert!(msg.ends_with("refusing to send the API key"), "{msg}");
}

#[test]
fn refuses_a_leaf_not_signed_by_the_pinned_ca_even_when_the_ca_is_presented() {
    // An impostor holding a copy of the real (public) CA certificate but not its key.
    let (ca_der, _ca) = ca("Heex CA");
    let (_, impostor) = self::ca("Heex CA");
    let forged = leaf(&impostor, &["localhost"]);
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&ca_der));
    let (result, verdict) = verify(&anchor, &[forged, ca_der.clone()], "localhost");
    assert!(result.is_err());
    assert!(matches!(verdict, Some(Verdict::Rejected(_))), "{verdict:?}");
    let msg = explain_refusal(&anchor, verdict.as_ref()).unwrap();
    assert!(msg.contains("not signed by the trusted CA"), "{msg}");
}

#[test]
fn refuses_a_certificate_for_another_host() {
    let (ca_der, ca) = ca("Heex CA");
    let leaf = leaf(&ca, &["heex.example.com"]);
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&ca_der));
    let (result, verdict) = verify(&anchor, &[leaf, ca_der], "127.0.0.1");
    assert!(result.is_err());
    let msg = explain_refusal(&anchor, verdict.as_ref()).unwrap();
    assert!(msg.contains("does not verify"), "{msg}");
}

#[test]
fn pinning_the_leaf_itself_is_not_enough() {
    // The pin must designate a CA: pinning the server's own certificate makes it the only root,
    // and WebPKI refuses an end-entity certificate as its own issuer.
    let (ca_der, ca) = ca("Heex CA");
    let leaf = leaf(&ca, &["localhost"]);
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&leaf));
    let (result, _) = verify(&anchor, &[leaf, ca_der], "localhost");
    assert!(result.is_err());
}

#[test]
fn ca_file_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_der, ca) = ca("Heex CA");
    let leaf = leaf(&ca, &["localhost"]);
    let path = dir.path().join("ca.crt");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&ca_der);
    let mut text = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in encoded.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(chunk).unwrap());
        text.push('\n');
    }
    text.push_str("-----END CERTIFICATE-----\n");
    std::fs::write(&path, text).unwrap();
    let anchor = TrustAnchor::from_ca_file(&path).unwrap();
    // The server need not present the CA when the file supplies it.
    let (result, _) = verify(&anchor, std::slice::from_ref(&leaf), "localhost");
    assert!(result.is_ok(), "{result:?}");

    let (_, other) = self::ca("Other CA");
    let (result, verdict) = verify(&anchor, &[self::leaf(&other, &["localhost"])], "localhost");
    assert!(result.is_err());
    let msg = explain_refusal(&anchor, verdict.as_ref()).unwrap();
    assert!(msg.contains("--ca-file"), "{msg}");

    std::fs::write(&path, "not a certificate").unwrap();
    let e = TrustAnchor::from_ca_file(&path).unwrap_err();
    assert_eq!(e.exit_code(), heex_proto::exit::USAGE);
    let e = TrustAnchor::from_ca_file(&dir.path().join("missing.crt")).unwrap_err();
    assert_eq!(e.exit_code(), heex_proto::exit::FILE_ERROR);
}
