//! The gateway's TLS setup (TLS 1.3 only, ALPN `heex/1`, client certificates required and
//! verified against the cloud CA) and the device identity read from a verified certificate.

use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{ring, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, Error as TlsError, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::GatewayTls;

/// Why the gateway's TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The CA certificate is not usable as a trust anchor.
    #[error("the CA certificate is not usable as a trust anchor: {0}")]
    Ca(rustls::Error),
    /// The client verifier could not be built.
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(String),
    /// The server certificate or key is unusable.
    #[error("the gateway certificate or key is unusable: {0}")]
    ServerCert(rustls::Error),
}

/// Verifies client certificates against a set of CAs that can be replaced while serving
/// (a CA rotation): each handshake uses the set current when it starts.
pub(crate) struct TrustedCas {
    inner: RwLock<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for TrustedCas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedCas").finish_non_exhaustive()
    }
}

impl TrustedCas {
    fn new(
        cas: &[CertificateDer<'static>],
        provider: Arc<CryptoProvider>,
    ) -> Result<TrustedCas, TlsSetupError> {
        let inner = verifier(cas, &provider)?;
        Ok(TrustedCas {
            inner: RwLock::new(inner),
            provider,
        })
    }

    /// Trusts exactly `cas` from the next handshake on.
    pub(crate) fn replace(&self, cas: &[CertificateDer<'static>]) -> Result<(), TlsSetupError> {
        let new = verifier(cas, &self.provider)?;
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.inner.read().unwrap_or_else(|e| e.into_inner()))
    }
}

fn verifier(
    cas: &[CertificateDer<'static>],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone()).map_err(TlsSetupError::Ca)?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsSetupError::Verifier(e.to_string()))
}

impl ClientCertVerifier for TrustedCas {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: they would have to outlive a replacement. Agents present their one
    /// certificate whatever the hints say.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// Builds the server configuration: TLS 1.3 only, ALPN `heex/1`, client certificates
/// mandatory and verified against the cloud CA alone (the CAs of `cas`, when given, which
/// can be replaced while serving).
pub fn server_config(tls: GatewayTls) -> Result<Arc<ServerConfig>, TlsSetupError> {
    server_config_with(tls).map(|(config, _)| config)
}

/// [`server_config`], and the replaceable set of trusted CAs it verifies clients with.
pub(crate) fn server_config_with(
    tls: GatewayTls,
) -> Result<(Arc<ServerConfig>, Arc<TrustedCas>), TlsSetupError> {
    // TLS 1.3 suites with SHA-256 first: every session starts with a full handshake, whose
    // key schedule hashes with the suite's hash, and SHA-256 has hardware support where
    // SHA-384 often has none. The gateway's order decides.
    let mut provider = ring::default_provider();
    provider.cipher_suites = vec![
        ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    let provider = Arc::new(provider);
    let trusted = Arc::new(TrustedCas::new(&[tls.ca_der], provider.clone())?);
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsSetupError::ServerCert)?
        .with_client_cert_verifier(Arc::new(super::expired::ExpiredTolerant::new(
            trusted.clone(),
        )));
    let mut config = match tls.server_cert {
        Some(cert) => builder.with_cert_resolver(cert),
        None => builder
            .with_single_cert(tls.server_chain, tls.server_key)
            .map_err(TlsSetupError::ServerCert)?,
    };
    config.alpn_protocols = vec![heex_proto::ALPN.to_vec()];
    config.ignore_client_order = true;
    // Agents hold one long session and do not resume; tickets would only cost bytes and
    // CPU per connection.
    config.send_tls13_tickets = 0;
    Ok((Arc::new(config), trusted))
}
