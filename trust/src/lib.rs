//! How a Heex client (the installer, the `heex` CLI) decides to trust the cloud before it sends
//! an API key.
//!
//! Two anchors, never "insecure":
//! - a pinned CA fingerprint (`--ca-fingerprint sha256:…`, like kubeadm's discovery hash): among
//!   the certificates the server presents, one must have that SHA-256 fingerprint, and the server
//!   chain is then verified (signatures, validity, host name) by WebPKI with that certificate as
//!   the only root;
//! - a CA file (`--ca-file`): its certificates are the only roots.
//!
//! The verifier records why it refused, so the user gets one precise line instead of a TLS
//! error buried in an HTTP client error chain. Fallible set-up returns a structured
//! [`TrustError`] that each caller words and maps to its own exit code.

#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use heex_proto::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// Why a trust anchor or a TLS client configuration could not be set up.
///
/// The `Display` texts are neutral; callers that name flags word their own messages from the
/// fields.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The CA file could not be read.
    #[error("cannot read CA file {}: {source}", path.display())]
    Read {
        /// The CA file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The CA file is not valid PEM.
    #[error("CA file {} is not a PEM certificate file: {detail}", path.display())]
    NotPem {
        /// The CA file.
        path: PathBuf,
        /// What the PEM parser said.
        detail: String,
    },
    /// The CA file holds no certificate.
    #[error("CA file {} contains no certificate", path.display())]
    NoCertificate {
        /// The CA file.
        path: PathBuf,
    },
    /// The rustls client configuration could not be built.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// What a client trusts the server's identity to.
#[derive(Clone, PartialEq, Eq)]
pub enum TrustAnchor {
    /// A CA identified by the SHA-256 fingerprint of its DER certificate.
    Pinned(Fingerprint),
    /// The CA certificates of a PEM file.
    CaFile {
        /// The file, for messages and for the credentials file.
        path: PathBuf,
        /// Its certificates.
        certs: Vec<CertificateDer<'static>>,
    },
}

impl fmt::Debug for TrustAnchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustAnchor::Pinned(fp) => write!(f, "Pinned({fp})"),
            TrustAnchor::CaFile { path, certs } => {
                write!(
                    f,
                    "CaFile({}, {} certificates)",
                    path.display(),
                    certs.len()
                )
            }
        }
    }
}

impl TrustAnchor {
    /// Loads the CA certificates of a PEM file.
    pub fn from_ca_file(path: &Path) -> Result<Self, TrustError> {
        let pem = std::fs::read(path).map_err(|source| TrustError::Read {
            path: path.to_owned(),
            source,
        })?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TrustError::NotPem {
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TrustError::NoCertificate {
                path: path.to_owned(),
            });
        }
        Ok(TrustAnchor::CaFile {
            path: path.to_owned(),
            certs,
        })
    }

    /// True when `der` is the CA certificate this anchor designates.
    pub fn is_anchor(&self, der: &[u8]) -> bool {
        match self {
            TrustAnchor::Pinned(fp) => Fingerprint::of_der(der) == *fp,
            TrustAnchor::CaFile { certs, .. } => certs.iter().any(|c| c.as_ref() == der),
        }
    }

    /// How the user names this anchor on the command line, for messages.
    pub fn describe(&self) -> String {
        match self {
            TrustAnchor::Pinned(fp) => format!("--ca-fingerprint {fp}"),
            TrustAnchor::CaFile { path, .. } => format!("--ca-file {}", path.display()),
        }
    }
}

/// The outcome of the latest server certificate check.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The chain verified; `ca` is the anchor it verified against, when known.
    Verified {
        /// Fingerprint of the CA certificate that anchored the chain.
        ca: Option<Fingerprint>,
    },
    /// No presented certificate has the pinned fingerprint.
    PinNotPresented {
        /// Fingerprints of what the server did present.
        presented: Vec<Fingerprint>,
    },
    /// The chain does not verify against the anchor (wrong issuer, expired, wrong host…).
    Rejected(rustls::Error),
}

/// Shared record of the latest verdict, read after a failed request to explain it.
#[derive(Debug, Clone, Default)]
pub struct VerdictLog(Arc<Mutex<Option<Verdict>>>);

impl VerdictLog {
    fn lock(&self) -> MutexGuard<'_, Option<Verdict>> {
        // A poisoned lock only means another handshake panicked; the value is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, v: Verdict) {
        *self.lock() = Some(v);
    }

    /// The latest verdict, if a certificate was checked at all.
    pub fn latest(&self) -> Option<Verdict> {
        self.lock().clone()
    }
}

/// A rustls server certificate verifier anchored on a [`TrustAnchor`].
#[derive(Debug)]
pub struct AnchoredVerifier {
    anchor: TrustAnchor,
    provider: Arc<CryptoProvider>,
    log: VerdictLog,
}

impl AnchoredVerifier {
    /// A verifier for `anchor` using the ring provider, recording verdicts in `log`.
    pub fn new(anchor: TrustAnchor, log: VerdictLog) -> Self {
        AnchoredVerifier {
            anchor,
            provider: Arc::new(ring::default_provider()),
            log,
        }
    }

    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }

    /// The roots to verify against, and the fingerprint of the anchoring CA if known; or the
    /// verdict refusing the chain outright.
    fn roots(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(RootCertStore, Option<Fingerprint>), Verdict> {
        let presented = || std::iter::once(end_entity).chain(intermediates);
        let mut roots = RootCertStore::empty();
        match &self.anchor {
            TrustAnchor::Pinned(pin) => {
                let Some(ca) = presented().find(|c| Fingerprint::of_der(c) == *pin) else {
                    return Err(Verdict::PinNotPresented {
                        presented: presented().map(|c| Fingerprint::of_der(c)).collect(),
                    });
                };
                roots
                    .add(ca.clone().into_owned())
                    .map_err(Verdict::Rejected)?;
                Ok((roots, Some(*pin)))
            }
            TrustAnchor::CaFile { certs, .. } => {
                let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
                if added == 0 {
                    return Err(Verdict::Rejected(rustls::Error::InvalidCertificate(
                        CertificateError::UnknownIssuer,
                    )));
                }
                let ca = presented()
                    .find(|c| self.anchor.is_anchor(c))
                    .map(|c| Fingerprint::of_der(c))
                    .or_else(|| match certs.as_slice() {
                        [only] => Some(Fingerprint::of_der(only)),
                        _ => None,
                    });
                Ok((roots, ca))
            }
        }
    }

    /// Verifies the presented chain; the anchoring CA's fingerprint if known, or the verdict.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<Option<Fingerprint>, Verdict> {
        let (roots, ca) = self.roots(end_entity, intermediates)?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| Verdict::Rejected(rustls::Error::General(e.to_string())))?;
        webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(Verdict::Rejected)?;
        Ok(ca)
    }
}

impl ServerCertVerifier for AnchoredVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.check(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(ca) => {
                self.log.record(Verdict::Verified { ca });
                Ok(ServerCertVerified::assertion())
            }
            Err(verdict) => {
                let err = match &verdict {
                    Verdict::Rejected(e) => e.clone(),
                    _ => rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                };
                self.log.record(verdict);
                Err(err)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}

/// The rustls client configuration trusting only `anchor` (ring provider, TLS 1.2/1.3).
pub fn client_config(anchor: TrustAnchor, log: VerdictLog) -> Result<ClientConfig, TrustError> {
    let provider = Arc::new(ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustError::Tls(e.to_string()))?
        // Not a weakening: the custom verifier does full WebPKI verification, only with the
        // trust anchor chosen by fingerprint or file.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnchoredVerifier::new(anchor, log)))
        .with_no_client_auth();
    Ok(config)
}

/// The one line explaining why the server's identity was refused, or `None` if the last
/// check did not refuse it.
pub fn explain_refusal(anchor: &TrustAnchor, verdict: Option<&Verdict>) -> Option<String> {
    const REFUSING: &str = "refusing to send the API key";
    match verdict? {
        Verdict::Verified { .. } => None,
        Verdict::PinNotPresented { presented } => {
            let shown: Vec<String> = presented.iter().map(ToString::to_string).collect();
            Some(format!(
                "the server's CA does not match {} (it presented {}); {REFUSING}",
                anchor.describe(),
                shown.join(", ")
            ))
        }
        Verdict::Rejected(e) => {
            let why = match e {
                // A chain from another CA and a forged signature read the same to a user.
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature,
                ) => "is not signed by the trusted CA".to_owned(),
                other => format!("does not verify: {other}"),
            };
            Some(format!(
                "the server's certificate {why} (trusting {}); {REFUSING}",
                anchor.describe()
            ))
        }
    }
}

pub mod client;

#[cfg(test)]
mod tests;
