//! The device's own key: generated on the machine (installer, renewal), never sent anywhere,
//! and the CSR that carries its public half.

use std::fmt;

use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData};

/// Why a key or CSR cannot be made or read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// A device's private key (ECDSA P-256). `Debug` never shows it.
pub struct DeviceKey(KeyPair);

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(<redacted>)")
    }
}

impl DeviceKey {
    /// A fresh ECDSA P-256 key from the system's secure random source.
    pub fn generate() -> Result<Self, KeyError> {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map(DeviceKey)
            .map_err(|e| KeyError(format!("cannot generate a device key: {e}")))
    }

    /// Reads a PKCS#8 PEM key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        KeyPair::from_pem(pem)
            .map(DeviceKey)
            .map_err(|e| KeyError(e.to_string()))
    }

    /// A PKCS#10 CSR for this key, PEM, with the subject CN `name`. The subject is
    /// informative only: the cloud builds the certificate from its own records.
    pub fn csr_pem(&self, name: &str) -> Result<String, KeyError> {
        let err = |e: rcgen::Error| KeyError(format!("cannot make the CSR: {e}"));
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .serialize_request(&self.0)
            .map_err(err)?
            .pem()
            .map_err(err)
    }

    /// The private key as PKCS#8 PEM, for `device.key`.
    pub fn private_pem(&self) -> String {
        self.0.serialize_pem()
    }

    /// The DER SubjectPublicKeyInfo, to match against a certificate.
    pub fn spki(&self) -> Vec<u8> {
        self.0.subject_public_key_info()
    }
}

/// The public half, for whoever certifies it (rcgen signs a certificate for it).
impl PublicKeyData for DeviceKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.algorithm()
    }
}
