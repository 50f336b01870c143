//! The device's credentials: its private key, its certificate and the cloud CAs it trusts
//! (`ca.crt`, one CA or several during a CA rotation), as written by heex-installer (and
//! updated by the cloud over the session), and the TLS client configuration built from them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use heex_proto::DeviceId;
use rustls::crypto::ring;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::config::Config;

const FIX: &str = "run heex-installer to enroll this machine";

/// Why the credentials cannot be used. Each message names the file and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// A file is missing or unreadable.
    #[error("cannot read {what} {path}: {source}; {FIX}")]
    Unreadable {
        /// Which credential.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{what} {path} is corrupt: {reason}; {FIX}")]
    Corrupt {
        /// Which credential.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate names another device than the configuration.
    #[error("device certificate {path} is for {found}, but the config names {expected}; {FIX}")]
    WrongDevice {
        /// The certificate file.
        path: PathBuf,
        /// Device id in the configuration.
        expected: DeviceId,
        /// CN of the certificate.
        found: String,
    },
}

/// The loaded credentials.
pub struct Credentials {
    /// The CA bundle this device trusts: every certificate of `ca.crt`, in file order.
    pub ca: Vec<CertificateDer<'static>>,
    /// The device certificate's expiry.
    pub not_after: OffsetDateTime,
    /// TLS client configuration: TLS 1.3 only, ALPN `heex/1`, trusting only the CAs of
    /// `ca.crt`, presenting the device certificate (the private key lives only in here).
    pub tls: Arc<ClientConfig>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The [`bundle_digest`] of the trusted CA bundle, as sent in Hello.
    pub fn ca_bundle_digest(&self) -> String {
        bundle_digest(&self.ca)
    }

    /// Loads and checks `device.key`, `device.crt` and `ca.crt` from the state directory.
    pub fn load(config: &Config) -> Result<Credentials, CredentialsError> {
        let key_path = config.key_path();
        let key_pem = read("device key", &key_path)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| corrupt("device key", &key_path, pem_reason(e, "private key")))?;

        let cert_path = config.cert_path();
        let chain = read_certs("device certificate", &cert_path)?;
        let leaf =
            leaf_info(&chain[0]).map_err(|r| corrupt("device certificate", &cert_path, r))?;
        if leaf.common_name != config.device_id.as_str() {
            return Err(CredentialsError::WrongDevice {
                path: cert_path,
                expected: config.device_id.clone(),
                found: leaf.common_name,
            });
        }

        let ca_path = config.ca_path();
        let ca = read_certs("CA certificate", &ca_path)?;
        let mut roots = RootCertStore::empty();
        for cert in &ca {
            roots
                .add(cert.clone())
                .map_err(|e| corrupt("CA certificate", &ca_path, e.to_string()))?;
        }

        let provider = Arc::new(ring::default_provider());
        let mut tls = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| corrupt("device key", &key_path, e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                corrupt(
                    "device key",
                    &key_path,
                    format!("does not match device.crt ({e})"),
                )
            })?;
        tls.alpn_protocols = vec![heex_proto::ALPN.to_vec()];
        // The agent holds one long session; resuming would save little and keep state.
        tls.resumption = rustls::client::Resumption::disabled();

        Ok(Credentials {
            ca,
            not_after: leaf.not_after,
            tls: Arc::new(tls),
        })
    }
}

/// The digest of a CA bundle ([`heex_proto::frame::bundle_digest`] over the DER of each
/// certificate, in order), compared with the cloud's to know whether the bundle changed.
pub fn bundle_digest(bundle: &[CertificateDer<'_>]) -> String {
    heex_proto::frame::bundle_digest(bundle.iter().map(|c| c.as_ref()))
}

/// Parses a CA bundle sent by the cloud (PEM): at least one certificate, nothing but
/// certificates, each a parsable X.509 CA certificate (basicConstraints CA:true) usable as a
/// trust anchor. The error says what is wrong, in one line.
pub fn parse_ca_bundle(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::SectionKind;
    let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM ({e:?})"))?;
    if sections.is_empty() {
        return Err("no PEM certificate found".to_owned());
    }
    let mut bundle = Vec::with_capacity(sections.len());
    for (n, (kind, der)) in sections.into_iter().enumerate() {
        let n = n + 1;
        if kind != SectionKind::Certificate {
            return Err(format!("PEM block {n} is not a certificate ({kind:?})"));
        }
        heex_pki::cert::check_ca(&der).map_err(|e| format!("certificate {n} {e}"))?;
        let der = CertificateDer::from(der);
        RootCertStore::empty()
            .add(der.clone())
            .map_err(|e| format!("certificate {n} is not usable as a trust anchor ({e})"))?;
        bundle.push(der);
    }
    Ok(bundle)
}

/// A CA bundle as PEM, one `CERTIFICATE` block per certificate, in order: the contents of
/// `ca.crt`.
pub fn bundle_pem(bundle: &[CertificateDer<'_>]) -> String {
    heex_pki::cert::certificates_pem(bundle.iter().map(|cert| cert.as_ref()))
}

/// What the agent needs from its certificate.
#[derive(Debug, Clone)]
pub struct LeafInfo {
    /// Subject CN (the device id).
    pub common_name: String,
    /// Expiry.
    pub not_after: OffsetDateTime,
}

/// Parses the CN and expiry of a certificate.
pub fn leaf_info(der: &CertificateDer<'_>) -> Result<LeafInfo, String> {
    let cert = heex_pki::Certificate::parse(der).map_err(|e| e.to_string())?;
    let common_name = cert
        .common_names
        .into_iter()
        .next()
        .ok_or("the certificate has no common name")?;
    Ok(LeafInfo {
        common_name,
        not_after: cert.not_after,
    })
}

/// Reads the first certificate of a PEM file: used by `heex-agent status`.
pub fn read_leaf(path: &Path) -> Result<LeafInfo, CredentialsError> {
    let chain = read_certs("device certificate", path)?;
    leaf_info(&chain[0]).map_err(|r| corrupt("device certificate", path, r))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, CredentialsError> {
    std::fs::read(path).map_err(|source| CredentialsError::Unreadable {
        what,
        path: path.to_owned(),
        source,
    })
}

/// All certificates in a PEM file; never empty.
fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt(what, path, pem_reason(e, "certificate")))?;
    if certs.is_empty() {
        return Err(corrupt(what, path, "no PEM certificate found".into()));
    }
    Ok(certs)
}

fn pem_reason(e: rustls_pki_types::pem::Error, item: &str) -> String {
    match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!("no PEM {item} found"),
        other => format!("not valid PEM ({other:?})"),
    }
}

fn corrupt(what: &'static str, path: &Path, reason: String) -> CredentialsError {
    CredentialsError::Corrupt {
        what,
        path: path.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heex_pki::test_kit::TestCa;

    fn config_in(dir: &Path, device: &DeviceId) -> Config {
        let text = format!(
            "server = \"https://127.0.0.1:1\"\ngateway = \"127.0.0.1:2\"\n\
             device_id = \"{device}\"\nstate_dir = \"{}\"\n",
            dir.display()
        );
        Config::parse(&text, Path::new("agent.toml")).unwrap()
    }

    #[test]
    fn loads_good_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestCa::new();
        let device = DeviceId::generate();
        pki.write_device(dir.path(), &device);
        let creds = Credentials::load(&config_in(dir.path(), &device)).unwrap();
        assert!(creds.not_after > OffsetDateTime::now_utc());
        assert!(!format!("{creds:?}").contains("PRIVATE"));
    }

    #[test]
    fn each_problem_names_the_file_and_the_fix() {
        let pki = TestCa::new();
        let device = DeviceId::generate();
        type Break = fn(&Path);
        let cases: [(&str, Break); 5] = [
            ("device.key", |d| {
                std::fs::remove_file(d.join("device.key")).unwrap()
            }),
            ("device.key", |d| {
                std::fs::write(d.join("device.key"), "garbage").unwrap()
            }),
            ("device.crt", |d| {
                std::fs::write(d.join("device.crt"), "").unwrap()
            }),
            ("ca.crt", |d| {
                std::fs::remove_file(d.join("ca.crt")).unwrap()
            }),
            ("ca.crt", |d| {
                std::fs::write(
                    d.join("ca.crt"),
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                )
                .unwrap()
            }),
        ];
        for (file, breakit) in cases {
            let dir = tempfile::tempdir().unwrap();
            pki.write_device(dir.path(), &device);
            breakit(dir.path());
            let err = Credentials::load(&config_in(dir.path(), &device)).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(file), "{file}: {msg}");
            assert!(msg.contains("heex-installer"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn every_certificate_of_ca_crt_is_trusted_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestCa::new();
        let next = TestCa::new();
        let device = DeviceId::generate();
        pki.write_device(dir.path(), &device);
        let one = Credentials::load(&config_in(dir.path(), &device)).unwrap();
        assert_eq!(one.ca, vec![pki.ca_der.clone()]);
        assert_eq!(
            one.ca_bundle_digest(),
            heex_proto::frame::bundle_digest([pki.ca_der.as_ref()])
        );
        std::fs::write(
            dir.path().join("ca.crt"),
            format!("{}{}", next.ca_pem, pki.ca_pem),
        )
        .unwrap();
        let two = Credentials::load(&config_in(dir.path(), &device)).unwrap();
        assert_eq!(two.ca, vec![next.ca_der.clone(), pki.ca_der.clone()]);
        assert_eq!(
            two.ca_bundle_digest(),
            heex_proto::frame::bundle_digest([next.ca_der.as_ref(), pki.ca_der.as_ref()])
        );
        assert_ne!(two.ca_bundle_digest(), one.ca_bundle_digest());
    }

    #[test]
    fn ca_bundles_from_the_cloud_are_checked() {
        let a = TestCa::new();
        let b = TestCa::new();
        let bundle = parse_ca_bundle(&format!("{}{}", a.ca_pem, b.ca_pem)).unwrap();
        assert_eq!(bundle, vec![a.ca_der.clone(), b.ca_der.clone()]);
        // What is written to ca.crt reads back as the same bundle.
        let pem = bundle_pem(&bundle);
        assert_eq!(parse_ca_bundle(&pem).unwrap(), bundle);
        assert_eq!(
            CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap(),
            bundle
        );
        let (leaf, key) = a.device(&DeviceId::generate());
        let cases = [
            ("", "no PEM certificate"),
            ("garbage", "no PEM certificate"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "not an X.509 certificate",
            ),
            (
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "not valid PEM",
            ),
            (leaf.as_str(), "not a CA certificate"),
            (&format!("{}{key}", a.ca_pem), "not a certificate"),
        ];
        for (pem, expected) in cases {
            let err = parse_ca_bundle(pem).unwrap_err();
            assert!(err.contains(expected), "{expected}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn key_of_another_device_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestCa::new();
        let device = DeviceId::generate();
        pki.write_device(dir.path(), &device);
        let other = tempfile::tempdir().unwrap();
        pki.write_device(other.path(), &device);
        std::fs::copy(
            other.path().join("device.key"),
            dir.path().join("device.key"),
        )
        .unwrap();
        let err = Credentials::load(&config_in(dir.path(), &device)).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn certificate_of_another_device_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestCa::new();
        pki.write_device(dir.path(), &DeviceId::generate());
        let err = Credentials::load(&config_in(dir.path(), &DeviceId::generate())).unwrap_err();
        assert!(matches!(err, CredentialsError::WrongDevice { .. }), "{err}");
    }
}
