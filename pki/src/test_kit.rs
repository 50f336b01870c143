//! One test CA for every test that needs certificates (feature `test-kit`): device
//! certificates shaped like the cloud's (CN = device id, one SPIFFE URI SAN, clientAuth) and
//! server certificates, with the parameters a test wants to break.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use heex_proto::DeviceId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA that signs whatever a test asks for. Panics on failure: it is for tests.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl TestCa {
    /// A CA named "Test CA" (every such CA has the same name, as a rotated one may).
    pub fn new() -> TestCa {
        TestCa::named("Test CA")
    }

    /// A CA with the common name `cn`.
    pub fn named(cn: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Signs `params` for `key` (a key pair, or the public key of a CSR).
    pub fn sign(
        &self,
        params: &CertificateParams,
        key: &impl rcgen::PublicKeyData,
    ) -> rcgen::Certificate {
        params.signed_by(key, &self.issuer).unwrap()
    }

    /// Server chain (leaf, CA) and key for `names` (host names or IP addresses).
    pub fn server(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let cert = self.sign(&CertificateParams::new(names).unwrap(), &key);
        (
            vec![cert.der().clone(), self.ca_der.clone()],
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
    }

    /// The parameters of a device certificate for `id` (a device id, or anything a test
    /// wants in its place) in the test workspace: change them (validity, names) and pass
    /// them to [`TestCa::sign`].
    pub fn device_params(id: &str) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, id);
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://heex.test/ws/ws_AAAAAAAAAAAA/device/{id}")
                .try_into()
                .unwrap(),
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
    }

    /// A device certificate and key for `id`, PEM.
    pub fn device(&self, id: &DeviceId) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = self.sign(&TestCa::device_params(id.as_str()), &key);
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `device.key`, `device.crt` and `ca.crt` for `id` into `dir`.
    pub fn write_device(&self, dir: &Path, id: &DeviceId) {
        let (crt, key) = self.device(id);
        std::fs::write(dir.join("device.crt"), crt).unwrap();
        std::fs::write(dir.join("device.key"), key).unwrap();
        std::fs::write(dir.join("ca.crt"), &self.ca_pem).unwrap();
    }
}
