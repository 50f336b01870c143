//! The device's own identity: its private key, generated here and never sent anywhere, the CSR
//! that carries its public half, and the checks applied to the certificate the cloud returns.

use std::fmt;

use heex_proto::api::EnrollResponse;
use heex_proto::{DeviceId, SpiffeId};
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::InstallError;
use crate::trust::TrustAnchor;

/// The device's private key (ECDSA P-256). `Debug` never shows it.
pub struct DeviceKey(KeyPair);

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(<redacted>)")
    }
}

impl DeviceKey {
    /// A fresh ECDSA P-256 key from the system's secure random source.
    pub fn generate() -> Result<Self, InstallError> {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map(DeviceKey)
            .map_err(|e| InstallError::Unexpected(format!("cannot generate the device key: {e}")))
    }

    /// Loads a PKCS#8 PEM key.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        KeyPair::from_pem(pem)
            .map(DeviceKey)
            .map_err(|e| e.to_string())
    }

    /// A PKCS#10 CSR for this key, PEM. The subject is informative only: the cloud builds the
    /// certificate from its own records.
    pub fn csr_pem(&self, name: &str) -> Result<String, InstallError> {
        let err = |e: rcgen::Error| InstallError::Unexpected(format!("cannot make the CSR: {e}"));
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

/// What the installer checks and reports about a device certificate.
#[derive(Debug, Clone)]
pub struct DeviceCert {
    /// Subject CN (the device id).
    pub common_name: String,
    /// URI SANs.
    pub uris: Vec<String>,
    /// Expiry.
    pub not_after: OffsetDateTime,
}

/// The DER certificates in a PEM text, in order.
pub fn pem_certificates(text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(text).map_err(|e| e.to_string())?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect())
}

/// One certificate as PEM.
pub fn certificate_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Checks that `der` parses as an X.509 CA certificate (basicConstraints CA:true); the error
/// says what is wrong.
pub fn check_ca_cert(der: &[u8]) -> Result<(), String> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("does not parse: {e}"))?;
    if !rest.is_empty() {
        return Err("has trailing data".to_owned());
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => Ok(()),
        Ok(_) => Err("is not a CA certificate".to_owned()),
        Err(e) => Err(format!("has invalid basic constraints: {e}")),
    }
}

/// Checks that `cert_der` is signed by `ca_der` and certifies the public key `spki`; returns
/// its subject, URIs and expiry. The error says what is wrong.
pub fn check_device_cert(
    cert_der: &[u8],
    ca_der: &[u8],
    spki: &[u8],
) -> Result<DeviceCert, String> {
    check_device_cert_by_any(cert_der, &[ca_der], spki)
}

/// [`check_device_cert`] against a CA bundle (`ca.crt` during a CA rotation holds several):
/// `cert_der` must be signed by one of `cas`.
pub fn check_device_cert_by_any(
    cert_der: &[u8],
    cas: &[&[u8]],
    spki: &[u8],
) -> Result<DeviceCert, String> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    let mut signed = false;
    for ca_der in cas {
        let (_, ca) = X509Certificate::from_der(ca_der)
            .map_err(|e| format!("CA certificate does not parse: {e}"))?;
        if cert.verify_signature(Some(ca.public_key())).is_ok() {
            signed = true;
            break;
        }
    }
    if !signed {
        return Err(match cas.len() {
            1 => "certificate is not signed by the CA".to_owned(),
            n => format!("certificate is not signed by any of the {n} CA certificates"),
        });
    }
    if cert.public_key().raw != spki {
        return Err("certificate is for another key than device.key".to_owned());
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let uris = cert
        .subject_alternative_name()
        .map_err(|e| format!("certificate has invalid subject alternative names: {e}"))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(DeviceCert {
        common_name,
        uris,
        not_after: cert.validity().not_after.to_datetime(),
    })
}

/// Credentials issued by the cloud, checked and ready to write.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The device id.
    pub device_id: DeviceId,
    /// The device's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// `device.crt` contents.
    pub certificate_pem: String,
    /// `ca.crt` contents: every CA certificate the cloud returned, in its order. Usually
    /// just the anchor the installer trusted; during a CA rotation also the cloud's other
    /// CA (the new one, which may be the one that signed the device certificate). The
    /// answer is only accepted when the anchor is among them, so the anchor vouched for
    /// the others (they came over the connection it verified).
    pub ca_pem: String,
    /// `host:port` of the gateway.
    pub gateway: String,
    /// Certificate expiry.
    pub not_after: OffsetDateTime,
}

/// Checks the enrollment response against the key we generated and the CA we trusted: the
/// anchor must be among the returned CA certificates, each of them a CA certificate, and
/// the device certificate signed by one of them.
pub fn check_response(
    resp: &EnrollResponse,
    key: &DeviceKey,
    anchor: &TrustAnchor,
) -> Result<Issued, InstallError> {
    let unexpected = |what: String| {
        InstallError::Unexpected(format!("the server returned unusable credentials: {what}"))
    };
    let cas = pem_certificates(resp.ca_pem.as_bytes())
        .map_err(|e| unexpected(format!("CA certificate: {e}")))?;
    if !cas.iter().any(|der| anchor.is_anchor(der)) {
        return Err(InstallError::Untrusted(format!(
            "the CA certificate the server returned does not match {}; refusing to store it",
            anchor.describe()
        )));
    }
    for (n, der) in cas.iter().enumerate() {
        check_ca_cert(der).map_err(|e| unexpected(format!("CA certificate {} {e}", n + 1)))?;
    }
    let cert_der = pem_certificates(resp.certificate_pem.as_bytes())
        .map_err(|e| unexpected(format!("device certificate: {e}")))?
        .into_iter()
        .next()
        .ok_or_else(|| unexpected("no device certificate".to_owned()))?;
    let ca_refs: Vec<&[u8]> = cas.iter().map(Vec::as_slice).collect();
    let cert = check_device_cert_by_any(&cert_der, &ca_refs, &key.spki()).map_err(unexpected)?;
    if cert.common_name != resp.device_id.as_str() {
        return Err(unexpected(format!(
            "certificate is for {:?}, not {}",
            cert.common_name, resp.device_id
        )));
    }
    let spiffe = resp.spiffe_id.to_string();
    if cert.uris != [spiffe.clone()] {
        return Err(unexpected(format!("certificate does not name {spiffe}")));
    }
    if resp.spiffe_id.device() != &resp.device_id {
        return Err(unexpected(format!("{spiffe} is not {}", resp.device_id)));
    }
    check_gateway(&resp.gateway).map_err(unexpected)?;
    Ok(Issued {
        device_id: resp.device_id.clone(),
        spiffe_id: resp.spiffe_id.clone(),
        certificate_pem: certificate_pem(&cert_der),
        ca_pem: cas.iter().map(|der| certificate_pem(der)).collect(),
        gateway: resp.gateway.clone(),
        not_after: cert.not_after,
    })
}

/// The gateway address of an enrollment answer, parsed as the agent will parse it.
fn check_gateway(gateway: &str) -> Result<(), String> {
    gateway
        .parse::<heex_proto::GatewayAddr>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
