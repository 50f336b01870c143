//! A client-certificate verifier that lets expired device certificates complete the
//! handshake, so the session can either renew them (within the grace) or be told clearly
//! why it is refused.
//!
//! Everything else is checked exactly as by rustls' WebPKI verifier: an expired certificate
//! is verified again as of one second before its notAfter, so its chain, signatures, key
//! usage and notBefore must all hold. No frame from an expired session is served until the
//! session applies the grace rules (see [`super::renew`]).

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

/// Wraps a verifier; see the module docs.
#[derive(Debug)]
pub(crate) struct ExpiredTolerant {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ExpiredTolerant {
    pub(crate) fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        ExpiredTolerant { inner }
    }
}

/// The certificate's notAfter, Unix seconds.
fn not_after(der: &CertificateDer<'_>) -> Option<u64> {
    let cert = heex_pki::Certificate::parse(der).ok()?;
    u64::try_from(cert.not_after.unix_timestamp()).ok()
}

impl ClientCertVerifier for ExpiredTolerant {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => {
                let Some(not_after) = not_after(end_entity) else {
                    return Err(Error::InvalidCertificate(CertificateError::BadEncoding));
                };
                let at =
                    UnixTime::since_unix_epoch(Duration::from_secs(not_after.saturating_sub(1)));
                self.inner.verify_client_cert(end_entity, intermediates, at)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use heex_pki::test_kit::TestCa;
    use rcgen::KeyPair;
    use rustls::server::WebPkiClientVerifier;
    use rustls::RootCertStore;
    use time::OffsetDateTime;

    use super::*;

    struct Ca {
        der: CertificateDer<'static>,
        kit: TestCa,
    }

    fn ca() -> Ca {
        let kit = TestCa::named("CA");
        Ca {
            der: kit.ca_der.clone(),
            kit,
        }
    }

    fn leaf(ca: &Ca, from: OffsetDateTime, to: OffsetDateTime) -> CertificateDer<'static> {
        let mut params = TestCa::device_params("device");
        params.subject_alt_names.clear();
        params.not_before = from;
        params.not_after = to;
        ca.kit
            .sign(&params, &KeyPair::generate().unwrap())
            .der()
            .clone()
    }

    fn verifier(ca: &Ca) -> ExpiredTolerant {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        ExpiredTolerant::new(inner)
    }

    #[test]
    fn expired_certificates_of_the_ca_pass_everything_else_does_not() {
        let ours = ca();
        let theirs = ca();
        let v = verifier(&ours);
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let at = UnixTime::now();
        // Valid, and expired long ago: both verified (the session applies the grace).
        assert!(v
            .verify_client_cert(&leaf(&ours, now - day, now + day), &[], at)
            .is_ok());
        let expired = leaf(&ours, now - day * 400, now - day * 300);
        assert!(v.verify_client_cert(&expired, &[], at).is_ok());
        // Another CA's certificate, expired or not: refused.
        for cert in [
            leaf(&theirs, now - day, now + day),
            leaf(&theirs, now - day * 2, now - day),
        ] {
            assert!(v.verify_client_cert(&cert, &[], at).is_err());
        }
        // Not yet valid is not expired: refused.
        let future = leaf(&ours, now + day, now + day * 2);
        assert!(v.verify_client_cert(&future, &[], at).is_err());
    }
}
