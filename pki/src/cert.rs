//! Reading X.509 certificates: one parse of a certificate into the facts every part of Heex
//! uses ([`Certificate`]), the device identity a device certificate must carry
//! ([`DeviceCertificate`]), and the checks of a CA certificate and of a signature.

use std::net::IpAddr;

use heex_proto::{DeviceId, SpiffeId};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a certificate cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Not DER X.509.
    #[error("does not parse: not an X.509 certificate ({0})")]
    Unparsable(String),
    /// Bytes after the certificate.
    #[error("has trailing data")]
    TrailingData,
    /// An extension that cannot be read.
    #[error("has invalid {what} ({reason})")]
    Extension {
        /// Which extension.
        what: &'static str,
        /// The parser's words.
        reason: String,
    },
}

/// The facts of one certificate, read in one parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The subject's common names, in order (a device certificate has exactly one).
    pub common_names: Vec<String>,
    /// The URI SANs, in order (a device certificate has exactly one: its SPIFFE ID).
    pub uris: Vec<String>,
    /// The DNS names and IP addresses of the SAN, in order (a server certificate's names).
    pub names: Vec<String>,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// The DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// The serial number, lowercase hex of its DER integer (as the cloud records serials).
    pub serial: String,
    /// basicConstraints CA:true.
    pub is_ca: bool,
}

impl Certificate {
    /// Parses `der` (nothing may follow the certificate).
    pub fn parse(der: &[u8]) -> Result<Certificate, CertError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| CertError::Unparsable(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertError::TrailingData);
        }
        let extension = |what| {
            move |e: x509_parser::error::X509Error| CertError::Extension {
                what,
                reason: e.to_string(),
            }
        };
        let is_ca = cert
            .basic_constraints()
            .map_err(extension("basic constraints"))?
            .is_some_and(|bc| bc.value.ca);
        let (mut uris, mut names) = (Vec::new(), Vec::new());
        if let Some(san) = cert
            .subject_alternative_name()
            .map_err(extension("subject alternative names"))?
        {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => uris.push((*u).to_owned()),
                    GeneralName::DNSName(d) => names.push((*d).to_owned()),
                    GeneralName::IPAddress(bytes) => names.extend(ip_address(bytes)),
                    _ => {}
                }
            }
        }
        let common_names = cert
            .subject()
            .iter_common_name()
            .map(|cn| cn.as_str().map(str::to_owned))
            .collect::<Result<_, _>>()
            .map_err(extension("common name"))?;
        Ok(Certificate {
            common_names,
            uris,
            names,
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            public_key: cert.public_key().raw.to_vec(),
            serial: hex::encode(cert.raw_serial()),
            is_ca,
        })
    }

    /// The one common name, if there is exactly one.
    pub fn common_name(&self) -> Option<&str> {
        match self.common_names.as_slice() {
            [cn] => Some(cn),
            _ => None,
        }
    }

    /// True when this certificate certifies the DER SubjectPublicKeyInfo `spki`.
    pub fn certifies(&self, spki: &[u8]) -> bool {
        self.public_key == spki
    }
}

fn ip_address(bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(ip.to_string())
}

/// Why a certificate is not a device certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The peer sent no certificate.
    #[error("no certificate")]
    NoCertificate,
    /// Not a readable certificate.
    #[error("certificate {0}")]
    Unparsable(#[from] CertError),
    /// The subject needs exactly one CN holding a device id.
    #[error("certificate has no device id as its common name")]
    CommonName,
    /// The SAN needs exactly one URI holding a SPIFFE ID.
    #[error("certificate does not carry exactly one Heex device SPIFFE ID")]
    Spiffe,
    /// CN and SPIFFE ID name different devices.
    #[error("certificate common name {cn} disagrees with its SPIFFE ID {spiffe}")]
    Mismatch {
        /// The CN.
        cn: DeviceId,
        /// The SPIFFE ID.
        spiffe: SpiffeId,
    },
}

/// A device certificate: CN = the device id and a single URI SAN with the device's SPIFFE
/// ID, both naming the same device. What the gateway reads once per handshake, what the
/// installer checks in an enrollment's answer and the agent in a renewal's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCertificate {
    /// The device.
    pub device: DeviceId,
    /// Its SPIFFE ID (workspace and device).
    pub spiffe: SpiffeId,
    /// Everything else the certificate says.
    pub cert: Certificate,
}

impl DeviceCertificate {
    /// Parses `der` and checks it carries one device identity.
    pub fn parse(der: &[u8]) -> Result<DeviceCertificate, IdentityError> {
        Certificate::parse(der)?.into_device()
    }
}

impl Certificate {
    /// This certificate as a device certificate, or why it is not one.
    pub fn into_device(self) -> Result<DeviceCertificate, IdentityError> {
        let device: DeviceId = self
            .common_name()
            .and_then(|cn| cn.parse().ok())
            .ok_or(IdentityError::CommonName)?;
        let spiffe: SpiffeId = match self.uris.as_slice() {
            [uri] => uri.parse().map_err(|_| IdentityError::Spiffe)?,
            _ => return Err(IdentityError::Spiffe),
        };
        if *spiffe.device() != device {
            return Err(IdentityError::Mismatch { cn: device, spiffe });
        }
        Ok(DeviceCertificate {
            device,
            spiffe,
            cert: self,
        })
    }
}

/// Checks that `der` is an X.509 CA certificate (basicConstraints CA:true); the error says
/// what is wrong ("is not a CA certificate").
pub fn check_ca(der: &[u8]) -> Result<Certificate, String> {
    let cert = Certificate::parse(der).map_err(|e| e.to_string())?;
    if cert.is_ca {
        Ok(cert)
    } else {
        Err("is not a CA certificate".to_owned())
    }
}

/// True when the certificate `der` carries a valid signature by the key of the CA
/// certificate `ca_der`. (Only the signature: validity and names are the caller's checks.)
pub fn signed_by(der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, ca))) = (
        X509Certificate::from_der(der),
        X509Certificate::from_der(ca_der),
    ) else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// The DER certificates of a PEM text, in order (other blocks are skipped).
pub fn pem_certificates(text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(text).map_err(|e| e.to_string())?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect())
}

/// Certificates as PEM, one `CERTIFICATE` block each, LF line endings.
pub fn certificates_pem<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> String {
    let blocks: Vec<pem::Pem> = ders
        .into_iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der))
        .collect();
    pem::encode_many_config(
        &blocks,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests;
