//! Device certificate signing requests: parsing, key type check and signature verification.
//!
//! Only the CSR's public key is used: its subject and requested extensions are ignored,
//! because the certificate is built from the server's own records (see [`crate::ca`]).

use rcgen::{PublicKeyData, SubjectPublicKeyInfo};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
use x509_parser::prelude::FromDer;

/// Key types a device may use, as named in error messages.
pub const SUPPORTED_KEY_TYPES: &str = "ECDSA P-256 or Ed25519";

/// Why a CSR is refused. Each message is one line for the installer's user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Not a PEM `CERTIFICATE REQUEST` block.
    #[error("csr_pem is not a PEM \"CERTIFICATE REQUEST\" block")]
    NotPem,
    /// The DER inside does not parse as PKCS#10.
    #[error("CSR does not parse as PKCS#10: {0}")]
    Malformed(String),
    /// The key is of a type the CA does not sign.
    #[error("CSR public key is {0}; the supported key types are {SUPPORTED_KEY_TYPES}")]
    UnsupportedKey(String),
    /// The CSR is not signed by the key it carries.
    #[error("CSR signature does not verify with the CSR's own public key; generate the CSR again")]
    BadSignature,
}

/// The type of a device key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

/// A CSR whose signature verified: the device's public key, ready to be certified.
#[derive(Debug, Clone)]
pub struct DeviceCsr {
    public_key: SubjectPublicKeyInfo,
    key_type: KeyType,
    key_sha256: String,
}

impl DeviceCsr {
    /// Parses a PEM CSR, checks the key type, and verifies the CSR's self-signature.
    pub fn from_pem(pem: &str) -> Result<Self, CsrError> {
        let (rest, block) =
            x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| CsrError::NotPem)?;
        if !matches!(
            block.label.as_str(),
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
        ) {
            return Err(CsrError::NotPem);
        }
        if !String::from_utf8_lossy(rest).trim().is_empty() {
            return Err(CsrError::Malformed(
                "unexpected data after the PEM block".to_owned(),
            ));
        }
        Self::from_der(&block.contents)
    }

    /// Parses a DER CSR, checks the key type, and verifies the CSR's self-signature.
    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        let (rest, csr) = X509CertificationRequest::from_der(der)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::Malformed(
                "trailing bytes after the CSR".to_owned(),
            ));
        }
        let spki = &csr.certification_request_info.subject_pki;
        let key_type = if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            match curve {
                Some(c) if c == OID_EC_P256 => KeyType::EcdsaP256,
                Some(c) => return Err(CsrError::UnsupportedKey(format!("an EC key on curve {c}"))),
                None => {
                    return Err(CsrError::UnsupportedKey(
                        "an EC key without a named curve".into(),
                    ))
                }
            }
        } else if spki.algorithm.algorithm == OID_SIG_ED25519 {
            KeyType::Ed25519
        } else {
            return Err(CsrError::UnsupportedKey(describe_algorithm(
                &spki.algorithm.algorithm.to_id_string(),
            )));
        };
        csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
        let public_key = SubjectPublicKeyInfo::from_der(spki.raw)
            .map_err(|e| CsrError::Malformed(format!("public key cannot be used: {e}")))?;
        Ok(DeviceCsr {
            public_key,
            key_type,
            key_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(spki.raw)),
        })
    }

    /// SHA-256 (hex) of the device's public key (SubjectPublicKeyInfo, DER).
    pub fn key_sha256(&self) -> String {
        self.key_sha256.clone()
    }

    /// The device's key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The device's public key.
    pub fn public_key(&self) -> &SubjectPublicKeyInfo {
        &self.public_key
    }

    /// The public key as DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.public_key.subject_public_key_info()
    }
}

fn describe_algorithm(oid: &str) -> String {
    match oid {
        "1.2.840.113549.1.1.1" => "an RSA key".to_owned(),
        "1.3.101.113" => "an Ed448 key".to_owned(),
        "1.2.840.10040.4.1" => "a DSA key".to_owned(),
        other => format!("a key of algorithm {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
    };

    fn csr_for(key: &KeyPair) -> String {
        CertificateParams::new(vec!["device.example".to_owned()])
            .unwrap()
            .serialize_request(key)
            .unwrap()
            .pem()
            .unwrap()
    }

    #[test]
    fn accepts_p256_and_ed25519() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = DeviceCsr::from_pem(&csr_for(&key)).unwrap();
        assert_eq!(csr.key_type(), KeyType::EcdsaP256);
        assert_eq!(csr.public_key_der(), key.subject_public_key_info());

        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let csr = DeviceCsr::from_pem(&csr_for(&key)).unwrap();
        assert_eq!(csr.key_type(), KeyType::Ed25519);
    }

    #[test]
    fn refuses_other_curves_naming_the_supported_types() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let err = DeviceCsr::from_pem(&csr_for(&key)).unwrap_err();
        assert!(matches!(err, CsrError::UnsupportedKey(_)), "{err:?}");
        assert!(err.to_string().contains(SUPPORTED_KEY_TYPES));
    }

    #[test]
    fn refuses_a_tampered_signature() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let params = CertificateParams::new(vec!["device.example".to_owned()]).unwrap();
        let mut der = params.serialize_request(&key).unwrap().der().to_vec();
        // Change one byte of the signed part (inside the SAN "device.example").
        let pos = der.windows(6).position(|w| w == b"device").unwrap();
        der[pos] = b'x';
        assert_eq!(
            DeviceCsr::from_der(&der).unwrap_err(),
            CsrError::BadSignature
        );
    }

    #[test]
    fn refuses_a_csr_signed_by_another_key() {
        // Swap the public key: the CSR carries key B but is signed by key A.
        let a = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let b = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let params = CertificateParams::new(vec!["d".to_owned()]).unwrap();
        let mut der = params.serialize_request(&a).unwrap().der().to_vec();
        let (pa, pb) = (a.public_key_raw().to_vec(), b.public_key_raw().to_vec());
        let pos = der
            .windows(pa.len())
            .position(|w| w == pa.as_slice())
            .unwrap();
        der[pos..pos + pb.len()].copy_from_slice(&pb);
        assert_eq!(
            DeviceCsr::from_der(&der).unwrap_err(),
            CsrError::BadSignature
        );
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(DeviceCsr::from_pem("hello").unwrap_err(), CsrError::NotPem);
        let cert = rcgen::generate_simple_self_signed(vec!["a".to_owned()]).unwrap();
        assert_eq!(
            DeviceCsr::from_pem(&cert.cert.pem()).unwrap_err(),
            CsrError::NotPem
        );
        let bogus =
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
        assert!(matches!(
            DeviceCsr::from_pem(bogus).unwrap_err(),
            CsrError::Malformed(_)
        ));
    }
}
