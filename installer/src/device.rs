//! The device's own identity: its private key, generated here and never sent anywhere, the CSR
//! that carries its public half, and the checks applied to the certificate the cloud returns.

use heex_pki::Certificate;
use heex_proto::api::EnrollResponse;
use heex_proto::{DeviceId, SpiffeId};
use time::OffsetDateTime;

use crate::error::InstallError;
use crate::trust::TrustAnchor;

/// The device's private key (ECDSA P-256), generated here. `Debug` never shows it.
pub use heex_pki::DeviceKey;

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

pub use heex_pki::cert::pem_certificates;

/// One certificate as PEM.
pub fn certificate_pem(der: &[u8]) -> String {
    heex_pki::cert::certificates_pem([der])
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
    let cert = Certificate::parse(cert_der).map_err(|e| format!("certificate {e}"))?;
    if !cas.iter().any(|ca| heex_pki::cert::signed_by(cert_der, ca)) {
        return Err(match cas.len() {
            1 => "certificate is not signed by the CA".to_owned(),
            n => format!("certificate is not signed by any of the {n} CA certificates"),
        });
    }
    if !cert.certifies(spki) {
        return Err("certificate is for another key than device.key".to_owned());
    }
    Ok(DeviceCert {
        common_name: cert.common_names.into_iter().next().unwrap_or_default(),
        uris: cert.uris,
        not_after: cert.not_after,
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
        heex_pki::cert::check_ca(der)
            .map_err(|e| unexpected(format!("CA certificate {} {e}", n + 1)))?;
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
