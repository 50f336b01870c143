//! The API's and the gateway's server certificate, re-issued while serving before it
//! expires: new handshakes get the new certificate at once, sessions already established
//! keep theirs (TLS does not look at it again), and agents and clients, which trust the
//! cloud CA rather than one certificate, never notice.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::datadir::authority::Authorities;
use crate::datadir::{server_cert_renew_before, DataDir};

/// The certificate both listeners present, replaceable while they run.
pub struct ServerCert {
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert").finish_non_exhaustive()
    }
}

impl ServerCert {
    /// Presents `chain` (leaf first) with `key`.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<ServerCert>, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = CertifiedKey::from_der(chain, key, &provider)?;
        Ok(Arc::new(ServerCert {
            current: RwLock::new(Arc::new(certified)),
            provider,
        }))
    }

    /// Presents `chain` with `key` from the next handshake on.
    pub fn replace(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), rustls::Error> {
        let certified = CertifiedKey::from_der(chain, key, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        Ok(())
    }

    /// The notAfter of the certificate presented now.
    pub fn not_after(&self) -> Option<OffsetDateTime> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        current
            .end_entity_cert()
            .ok()
            .and_then(crate::ca::not_after)
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Re-issues the server certificate [`server_cert_renew_before`] its expiry (the names it
/// has and `hostnames`, for `lifetime`), and at once when the CA that signs it changes (a
/// CA rotation retired), writes it to the data directory and presents it, until
/// `shutdown`. A failure is logged and tried again a minute later.
pub async fn keep_fresh(
    dir: DataDir,
    cas: Authorities,
    hostnames: Vec<String>,
    lifetime: Duration,
    cert: Arc<ServerCert>,
    shutdown: CancellationToken,
) {
    let before = server_cert_renew_before(lifetime);
    let mut changes = cas.subscribe();
    let mut signer = changes.borrow_and_update().server().fingerprint();
    loop {
        let now = OffsetDateTime::now_utc();
        let due = cert.not_after().map_or(now, |t| t - before).max(now);
        let wait = Duration::try_from(due - now).unwrap_or(Duration::ZERO);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    // The CAs no longer change: expiry alone decides from now on.
                    changes = cas.subscribe();
                }
                let now_signer = changes.borrow_and_update().server().fingerprint();
                if now_signer == signer {
                    continue;
                }
                signer = now_signer;
                tracing::info!(ca = %signer, "the server certificate's CA changed; re-issuing it");
            }
        }
        let ca = Arc::clone(cas.current().server());
        let issued = {
            let (dir, ca, hostnames) = (dir.clone(), Arc::clone(&ca), hostnames.clone());
            tokio::task::spawn_blocking(move || dir.reissue_server_cert(&ca, &hostnames, lifetime))
                .await
        };
        let result = match issued {
            Ok(Ok((chain, key))) => cert.replace(chain, key).map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => tracing::info!(
                not_after = ?cert.not_after(),
                "re-issued the server certificate; new connections get it"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-issue the server certificate yet; retrying in a minute");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::Ca;
    use rustls_pki_types::pem::PemObject;

    fn issued(
        ca: &Ca,
        lifetime: Duration,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let pair = ca
            .issue_server_cert(&[], OffsetDateTime::now_utc(), lifetime)
            .unwrap();
        let leaf = CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap();
        (vec![leaf, ca.cert_der().clone()], key)
    }

    #[test]
    fn a_replaced_certificate_is_presented_from_then_on() {
        let (ca, _) = Ca::generate(OffsetDateTime::now_utc()).unwrap();
        let (chain, key) = issued(&ca, Duration::from_secs(60));
        let cert = ServerCert::new(chain, key).unwrap();
        let short = cert.not_after().unwrap();
        let (chain, key) = issued(&ca, Duration::from_secs(3600));
        cert.replace(chain, key).unwrap();
        let long = cert.not_after().unwrap();
        assert!(
            long - short > time::Duration::minutes(50),
            "{short} → {long}"
        );
        // A key that does not match is refused and the current certificate stays.
        let (mut chain, _) = issued(&ca, Duration::from_secs(7200));
        let (_, other_key) = issued(&ca, Duration::from_secs(7200));
        chain.truncate(1);
        assert!(cert.replace(chain, other_key).is_err());
        assert_eq!(cert.not_after(), Some(long));
    }

    #[test]
    fn renewal_comes_a_third_of_the_lifetime_early_at_most_30_days() {
        assert_eq!(
            server_cert_renew_before(Duration::from_secs(6)),
            time::Duration::seconds(2)
        );
        assert_eq!(
            server_cert_renew_before(Duration::from_secs(730 * 24 * 3600)),
            time::Duration::days(30)
        );
    }
}
