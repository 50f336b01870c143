//! Certificate renewal over a live session, and the expiry rules for connecting devices.
//!
//! A device renews with a CSR for a fresh key pair; the gateway signs a certificate built from
//! the identity in the device's verified certificate (never from the CSR) and records its
//! serial and expiry. No API key is involved. A certificate that expired less than the
//! renewal grace ago may still connect, but its session is renew-only until it renews.

use std::sync::Arc;
use std::time::Duration;

use heex_proto::frame::CloseReason;
use heex_proto::SpiffeId;
use time::OffsetDateTime;

use super::DeviceDirectory;
use crate::ca::Ca;
use crate::csr::DeviceCsr;
use crate::datadir::authority::{Authorities, Authority};
use crate::store::IssuedCert;

/// Default renewal grace: how long after expiry a device may still renew.
pub const DEFAULT_RENEWAL_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What signs renewed device certificates: the cloud's issuing CA and the certificate
/// lifetime.
#[derive(Clone, Debug)]
pub struct DeviceSigner {
    cas: Authorities,
    lifetime: Duration,
}

impl DeviceSigner {
    /// Signs with `ca`, issuing certificates valid for `lifetime`.
    pub fn new(ca: Arc<Ca>, lifetime: Duration) -> DeviceSigner {
        DeviceSigner::following(Authorities::new(Authority::single(ca)), lifetime)
    }

    /// Signs with the issuing CA of `cas` at the time of each renewal.
    pub fn following(cas: Authorities, lifetime: Duration) -> DeviceSigner {
        DeviceSigner { cas, lifetime }
    }
}

/// Where a connecting certificate stands with respect to its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Within its validity.
    Valid,
    /// Expired, but within the grace: the session may only renew.
    RenewOnly,
    /// Expired longer ago than the grace.
    Beyond(OffsetDateTime),
}

/// Where a certificate valid until `not_after` stands at `now` with `grace`.
pub(crate) fn classify(not_after: OffsetDateTime, now: OffsetDateTime, grace: Duration) -> Expiry {
    if now <= not_after {
        Expiry::Valid
    } else if now - not_after <= grace {
        Expiry::RenewOnly
    } else {
        Expiry::Beyond(not_after)
    }
}

/// The Close message for a certificate past the grace.
pub(crate) fn beyond_grace_message(not_after: OffsetDateTime, grace: Duration) -> String {
    let date = not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!(
        "device certificate expired on {date}, beyond the renewal grace of {}; reinstall with \
         heex-installer --force and a new API key",
        humantime::format_duration(grace)
    )
}

/// A renewed certificate.
pub(crate) struct Renewed {
    /// The certificate, PEM.
    pub pem: String,
    /// Its notAfter.
    pub not_after: OffsetDateTime,
    /// Its serial, lowercase hex.
    pub serial: String,
}

/// The Close message for a renewal from a certificate that is not the current one.
fn superseded_message(serial: &str) -> String {
    format!(
        "renewal refused: certificate {serial} is not the device's current certificate (a \
         renewal superseded it); only the current certificate may renew"
    )
}

/// Signs a renewed certificate for `identity` with the CSR's key and records it, when the
/// session's certificate (serial `from_serial`) is the device's current one: checked
/// before signing and again in the store's write. On refusal, the Close to send.
pub(crate) async fn renew<D: DeviceDirectory>(
    directory: &D,
    signer: Option<&DeviceSigner>,
    identity: &SpiffeId,
    from_serial: &str,
    csr_pem: &str,
) -> Result<Renewed, (CloseReason, String)> {
    let result = Box::pin(renew_once(
        directory,
        signer,
        identity,
        from_serial,
        csr_pem,
    ))
    .await;
    crate::metrics::get().renewal(match &result {
        Ok(_) => "ok",
        Err((CloseReason::DeviceRevoked, _)) => "device_revoked",
        Err((CloseReason::DeviceUnknown, _)) => "device_unknown",
        Err((CloseReason::CertificateSuperseded, _)) => "certificate_superseded",
        Err((CloseReason::Shutdown, _)) => "unavailable",
        Err(_) => "refused",
    });
    result
}

async fn renew_once<D: DeviceDirectory>(
    directory: &D,
    signer: Option<&DeviceSigner>,
    identity: &SpiffeId,
    from_serial: &str,
    csr_pem: &str,
) -> Result<Renewed, (CloseReason, String)> {
    let device = identity.device();
    let unavailable = |e: anyhow::Error| {
        tracing::error!(%device, error = %e, "renewal failed");
        (
            CloseReason::Shutdown,
            "gateway temporarily unavailable".to_owned(),
        )
    };
    let superseded = || {
        Err((
            CloseReason::CertificateSuperseded,
            superseded_message(from_serial),
        ))
    };
    // The renewal that superseded the session's certificate, repeated for the same key (the
    // agent kept it, and the answer was lost to a crash): `Some(key)`.
    let repeat_for = match directory.device_status(device).await.map_err(unavailable)? {
        None => {
            return Err((CloseReason::DeviceUnknown, "no such device".to_owned()));
        }
        Some(s) if s.revoked_at.is_some() => {
            return Err((CloseReason::DeviceRevoked, "device revoked".to_owned()));
        }
        Some(s) if s.workspace_id != *identity.workspace() => {
            return Err((
                CloseReason::DeviceUnknown,
                "certificate names another workspace".to_owned(),
            ));
        }
        Some(s) if s.cert_serial == from_serial => None,
        Some(s) => match (s.previous_cert, s.cert_key) {
            (Some((previous, _)), Some(key)) if previous == from_serial => Some(key),
            _ => return superseded(),
        },
    };
    let csr = DeviceCsr::from_pem(csr_pem);
    if let Some(key) = repeat_for {
        // Anything but a request for that very key is what it would be from any other
        // superseded certificate.
        if csr.as_ref().map_or(true, |c| c.key_sha256() != key) {
            return superseded();
        }
        tracing::info!(%device, from = %from_serial, "renewal repeated from the superseded certificate for the same key");
    }
    let Some(signer) = signer else {
        return Err((
            CloseReason::ProtocolError,
            "this gateway does not renew certificates".to_owned(),
        ));
    };
    let csr = csr.map_err(|e| (CloseReason::ProtocolError, format!("renewal refused: {e}")))?;
    let authority = signer.cas.current();
    let ca = authority.issuing();
    let cert = ca
        .sign_device(
            &csr,
            device,
            identity,
            signer.lifetime,
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| unavailable(e.into()))?;
    let recorded = directory
        .record_renewal(
            device,
            from_serial,
            IssuedCert {
                serial_hex: cert.serial_hex.clone(),
                not_after: cert.not_after,
                ca: ca.fingerprint().to_string(),
                key: cert.key_sha256.clone(),
            },
        )
        .await
        .map_err(unavailable)?;
    if !recorded {
        // Revoked, or another renewal from the same certificate won: say which.
        let status = directory.device_status(device).await.map_err(unavailable)?;
        return Err(match status {
            Some(s) if s.revoked_at.is_none() => (
                CloseReason::CertificateSuperseded,
                superseded_message(from_serial),
            ),
            _ => (CloseReason::DeviceRevoked, "device revoked".to_owned()),
        });
    }
    tracing::info!(%device, from = %from_serial, serial = %cert.serial_hex, "device certificate renewed");
    Ok(Renewed {
        pem: cert.pem,
        not_after: cert.not_after,
        serial: cert.serial_hex,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_classes() {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let grace = Duration::from_secs(60);
        assert_eq!(classify(t, t, grace), Expiry::Valid);
        assert_eq!(
            classify(t, t - time::Duration::seconds(5), grace),
            Expiry::Valid
        );
        assert_eq!(
            classify(t, t + time::Duration::seconds(1), grace),
            Expiry::RenewOnly
        );
        assert_eq!(
            classify(t, t + time::Duration::seconds(60), grace),
            Expiry::RenewOnly
        );
        assert_eq!(
            classify(t, t + time::Duration::seconds(61), grace),
            Expiry::Beyond(t)
        );
        assert_eq!(
            classify(t, t + time::Duration::seconds(1), Duration::ZERO),
            Expiry::Beyond(t)
        );
        assert!(beyond_grace_message(t, grace).contains("heex-installer --force"));
    }
}
