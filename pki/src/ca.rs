//! The cloud CA: creates itself and the server certificate at `init`, and signs device
//! certificates built only from the server's own records.

use std::net::IpAddr;
use std::time::Duration;

use heex_proto::{DeviceId, Fingerprint, SpiffeId};
use rand::RngCore;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::cert::Certificate;
use crate::csr::DeviceCsr;

/// How far certificates' notBefore is backdated, for machines whose clocks lag.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Lifetime of the CA certificate.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of the server certificate.
pub const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// Names every server certificate covers.
pub const DEFAULT_SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Why a CA operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Certificate or key generation or signing failed.
    #[error("certificate operation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The CA certificate PEM does not parse.
    #[error("CA certificate is not a PEM certificate")]
    BadCertificate,
    /// The CA key is not the key of the CA certificate.
    #[error("the CA key does not belong to the CA certificate")]
    KeyMismatch,
    /// A host name is neither a DNS name nor an IP address.
    #[error("{0:?} is not a valid DNS name or IP address")]
    BadHostname(String),
}

/// The cloud CA, ready to sign.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A freshly issued certificate with its private key, both PEM.
pub struct IssuedKeyPair {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8). Secret.
    pub key_pem: String,
}

/// A device certificate and what the store records about it.
#[derive(Debug, Clone)]
pub struct DeviceCert {
    /// The certificate, PEM.
    pub pem: String,
    /// Its serial number, lowercase hex.
    pub serial_hex: String,
    /// Its notAfter.
    pub not_after: OffsetDateTime,
    /// SHA-256 (hex) of its public key (SubjectPublicKeyInfo, DER), as the store records it.
    pub key_sha256: String,
}

impl Ca {
    /// Creates a new CA (ECDSA P-256, self-signed, CA:true). Returns it and its key, PEM.
    pub fn generate(now: OffsetDateTime) -> Result<(Ca, String), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let key_pem = key.serialize_pem();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Heex");
        dn.push(DnType::CommonName, "Heex Cloud CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial().0);
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_LIFETIME;
        let cert = params.self_signed(&key)?;
        let ca = Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        };
        Ok((ca, key_pem))
    }

    /// Loads the CA from its certificate and key, PEM; the key must be the certificate's.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, CaError> {
        use rcgen::PublicKeyData;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| CaError::BadCertificate)?;
        let key = KeyPair::from_pem(key_pem)?;
        let cert = Certificate::parse(&cert_der).map_err(|_| CaError::BadCertificate)?;
        if !cert.certifies(&key.subject_public_key_info()) {
            return Err(CaError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(Ca {
            issuer,
            cert_pem: cert_pem.to_owned(),
            cert_der,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA fingerprint clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_der(&self.cert_der)
    }

    /// True when this CA signed the certificate `der`.
    pub fn signed(&self, der: &CertificateDer<'_>) -> bool {
        crate::cert::signed_by(der, &self.cert_der)
    }

    /// Issues the API/gateway server certificate (fresh P-256 key) for localhost, 127.0.0.1,
    /// ::1 and `hostnames`.
    pub fn issue_server_cert(
        &self,
        hostnames: &[String],
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<IssuedKeyPair, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "heex-cloud");
        params.distinguished_name = dn;
        params.subject_alt_names = server_names(hostnames)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial().0);
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + lifetime;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedKeyPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a device certificate for `device` with the CSR's public key. Everything else
    /// comes from the arguments: CN = device id, one URI SAN = `spiffe`, clientAuth, CA:false,
    /// digitalSignature, a random serial, valid from `now` minus [`CLOCK_SKEW`] for
    /// `lifetime`. The CSR's subject and extensions are never copied.
    pub fn sign_device(
        &self,
        csr: &DeviceCsr,
        device: &DeviceId,
        spiffe: &SpiffeId,
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<DeviceCert, CaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(spiffe.to_string())?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (serial, serial_hex) = random_serial();
        params.serial_number = Some(serial);
        // Whole seconds, so the stored expiry equals the certificate's.
        let now = now.replace_nanosecond(0).unwrap_or(now);
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + lifetime;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(csr.public_key(), &self.issuer)?;
        Ok(DeviceCert {
            pem: cert.pem(),
            serial_hex,
            not_after: params.not_after,
            key_sha256: csr.key_sha256(),
        })
    }
}

/// SAN entries for the server certificate: the defaults plus `hostnames`, without duplicates.
fn server_names(hostnames: &[String]) -> Result<Vec<SanType>, CaError> {
    let mut names: Vec<String> = Vec::new();
    for name in DEFAULT_SERVER_NAMES
        .iter()
        .map(|s| (*s).to_owned())
        .chain(hostnames.iter().map(|h| h.trim().to_ascii_lowercase()))
    {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.into_iter().map(|n| san_for(&n)).collect()
}

/// The SAN for a host name or IP address.
pub fn san_for(name: &str) -> Result<SanType, CaError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
        });
    if !valid {
        return Err(CaError::BadHostname(name.to_owned()));
    }
    Ia5String::try_from(name.to_owned())
        .map(SanType::DnsName)
        .map_err(|_| CaError::BadHostname(name.to_owned()))
}

/// True when the server certificate `der` stays valid past `valid_until` and covers every
/// name in `hostnames`.
pub fn server_cert_fits(
    der: &CertificateDer<'_>,
    hostnames: &[String],
    valid_until: OffsetDateTime,
) -> bool {
    let Ok(cert) = Certificate::parse(der) else {
        return false;
    };
    if cert.not_after < valid_until {
        return false;
    }
    hostnames.iter().all(|h| {
        let h = h.trim().to_ascii_lowercase();
        let ip = h.parse::<IpAddr>().ok();
        cert.names
            .iter()
            .any(|n| n == &h || (ip.is_some() && n.parse::<IpAddr>().ok() == ip))
    })
}

/// The notAfter of the certificate `der`.
pub fn not_after(der: &CertificateDer<'_>) -> Option<OffsetDateTime> {
    Certificate::parse(der).ok().map(|c| c.not_after)
}

/// The DNS names and IP addresses a certificate's SAN lists.
pub fn certificate_names(der: &CertificateDer<'_>) -> Vec<String> {
    Certificate::parse(der).map(|c| c.names).unwrap_or_default()
}

/// A random positive 128-bit serial and its hex form.
fn random_serial() -> (SerialNumber, String) {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // Positive and minimally encoded: top bit clear, first byte non-zero.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    (SerialNumber::from_slice(&bytes), hex::encode(bytes))
}

#[cfg(test)]
mod tests;
