//! Test PKI generated on the fly: a CA, a gateway certificate for 127.0.0.1 and device
//! certificates shaped like the cloud's (CN = device id, SPIFFE URI SAN, clientAuth).

use std::path::Path;

use heex_proto::DeviceId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub(crate) struct TestPki {
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestPki {
    /// A CA named "Test CA" (every such CA has the same name, like a rotated one may).
    pub(crate) fn new() -> TestPki {
        TestPki::named("Test CA")
    }

    /// A CA with the common name `cn`.
    pub(crate) fn named(cn: &str) -> TestPki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        TestPki {
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Server chain and key for 127.0.0.1.
    pub(crate) fn server(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone(), self.ca_der.clone()],
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
    }

    /// A device certificate and key in PEM.
    pub(crate) fn device(&self, id: &DeviceId) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, id.as_str());
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://heex.test/ws/ws_AAAAAAAAAAAA/device/{id}")
                .try_into()
                .unwrap(),
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `device.key`, `device.crt` and `ca.crt` for `id` into `dir`.
    pub(crate) fn write_device(&self, dir: &Path, id: &DeviceId) {
        let (crt, key) = self.device(id);
        std::fs::write(dir.join("device.crt"), crt).unwrap();
        std::fs::write(dir.join("device.key"), key).unwrap();
        std::fs::write(dir.join("ca.crt"), &self.ca_pem).unwrap();
    }
}
