//! Device certificate renewal: when to renew, the fresh key and CSR, checking the renewed
//! certificate, and swapping the files so that a crash at any point leaves a usable pair.
//!
//! The agent renews at a random point between 70% and 90% of its certificate's lifetime,
//! over its mTLS session (RenewRequest → RenewResponse); no API key is involved. Each renewal
//! uses a fresh ECDSA P-256 key, written to `device.key.pending` (0600, fsynced) before its
//! CSR is sent: an agent killed after the cloud recorded the renewal and before the answer
//! reached its disk asks again, from the certificate it still has, for that same key, and
//! the cloud answers such a repeat (and nothing else from a superseded certificate). The
//! swap:
//!
//! 1. write `device.key.new` (0600) and `device.crt.new`, each fsynced, then fsync the
//!    directory — `device.key`/`device.crt` are untouched;
//! 2. rename `device.crt.new` over `device.crt`;
//! 3. rename `device.key.new` over `device.key`, and fsync the directory.
//!
//! [`reconcile`] runs before the credentials are loaded and finishes or discards an
//! interrupted swap: after step 1 the old pair matches (the `.new` files are dropped); after
//! step 2 `device.key.new` matches `device.crt` (step 3 is completed). The new pair is only
//! written after it has been checked against the trusted CA bundle (`ca.crt`), the new key
//! and this device's identity, so the old pair is never given up for a bad one.
//!
//! During a CA rotation the cloud sends a new bundle (see [`Renewal::set_bundle`]); a device
//! whose certificate is not from the bundle's first CA renews early
//! ([`Renewal::bring_forward`], [`random_point_within`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use heex_fs::Options;
use heex_pki::{Certificate, DeviceKey};
use heex_proto::DeviceId;
use rand::Rng;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

/// Earliest point of the lifetime at which the agent renews.
pub const RENEW_FROM: f64 = 0.70;
/// Latest point of the lifetime at which the agent renews.
pub const RENEW_TO: f64 = 0.90;
/// Shortest wait before retrying a failed or unanswered renewal.
pub const MIN_RETRY: Duration = Duration::from_secs(1);
/// Longest wait before retrying a failed or unanswered renewal.
pub const MAX_RETRY: Duration = Duration::from_secs(5 * 60);

/// Why a renewal step failed. The old key and certificate stay in use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    /// The key or CSR could not be made.
    #[error("cannot make the renewal key or CSR: {0}")]
    Key(#[from] heex_pki::key::KeyError),
    /// The gateway's certificate is not acceptable.
    #[error("renewed certificate refused: {0}")]
    Certificate(String),
    /// A RenewResponse arrived without a request in flight.
    #[error("unexpected renewal response: no renewal was requested")]
    NotRequested,
    /// Writing the new files failed.
    #[error(transparent)]
    Io(#[from] heex_fs::Error),
}

/// The point of a certificate's lifetime at `fraction` (0.0 = notBefore, 1.0 = notAfter).
pub fn renewal_time(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    fraction: f64,
) -> OffsetDateTime {
    let lifetime = (not_after - not_before).max(time::Duration::ZERO);
    not_before + lifetime * fraction.clamp(0.0, 1.0)
}

/// A random point between [`RENEW_FROM`] and [`RENEW_TO`] of the lifetime.
pub fn random_renewal_time(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> OffsetDateTime {
    let fraction = rand::thread_rng().gen_range(RENEW_FROM..=RENEW_TO);
    renewal_time(not_before, not_after, fraction)
}

/// Where a certificate's renewal window is measured from: when the agent received it
/// (clamped into its validity), else its notBefore. notBefore is backdated for clock skew,
/// which would make short-lived certificates look older than they are.
pub fn lifetime_start(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    received: Option<OffsetDateTime>,
) -> OffsetDateTime {
    match received {
        Some(r) if not_before <= not_after => r.clamp(not_before, not_after),
        _ => not_before,
    }
}

/// How long from `now` until `at` (zero when it has passed).
pub fn delay_until(at: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(at - now).unwrap_or(Duration::ZERO)
}

/// A random point between `now` and `now + within` (both included), to spread a fleet's
/// early renewals. Never panics: a window beyond the representable time saturates.
pub fn random_point_within(now: OffsetDateTime, within: Duration) -> OffsetDateTime {
    let secs = rand::thread_rng().gen_range(0..=within.as_secs());
    let offset = time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX));
    now.checked_add(offset)
        .unwrap_or_else(|| time::PrimitiveDateTime::MAX.assume_utc())
}

/// How long to wait before retrying an unanswered or failed renewal: a twentieth of the
/// lifetime, within [`MIN_RETRY`]..=[`MAX_RETRY`].
pub fn retry_delay(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Duration {
    let lifetime = Duration::try_from(not_after - not_before).unwrap_or(Duration::ZERO);
    (lifetime / 20).clamp(MIN_RETRY, MAX_RETRY)
}

/// A fresh key pair and its CSR, waiting for the gateway's certificate.
pub struct Pending {
    key: DeviceKey,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl Pending {
    /// Generates a fresh P-256 key and a CSR for it, PEM. The CSR's subject is informative
    /// only; the cloud certifies the identity of the current certificate.
    pub fn generate(device: &DeviceId) -> Result<(Pending, String), RenewError> {
        Pending::for_key(DeviceKey::generate()?, device)
    }

    /// The key of an earlier request that may have been answered (see the module docs),
    /// when `files` keeps one that is not the current certificate's key.
    fn kept(files: &CredentialFiles, current: &CertificateDer<'_>) -> Option<DeviceKey> {
        let pem = std::fs::read_to_string(files.key_pending()).ok()?;
        let key = DeviceKey::from_pem(&pem).ok()?;
        let current = Certificate::parse(current).ok()?;
        (!current.certifies(&key.spki())).then_some(key)
    }

    /// A CSR for `key`, PEM.
    fn for_key(key: DeviceKey, device: &DeviceId) -> Result<(Pending, String), RenewError> {
        let csr = key.csr_pem(device.as_str())?;
        Ok((Pending { key }, csr))
    }
}

/// The identity in a PEM certificate file's first certificate.
pub fn read_identity(path: &Path) -> Result<Certificate, String> {
    let der = read_first_certificate(path)?;
    Certificate::parse(&der).map_err(|e| e.to_string())
}

fn read_first_certificate(path: &Path) -> Result<CertificateDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    CertificateDer::from_pem_slice(&pem)
        .map_err(|e| format!("{} holds no PEM certificate ({e:?})", path.display()))
}

/// True when `cert` is signed by the key of `ca` (both DER; false when either does not
/// parse).
pub fn signed_by(cert: &CertificateDer<'_>, ca: &CertificateDer<'_>) -> bool {
    heex_pki::cert::signed_by(cert, ca)
}

/// Checks a renewed certificate before anything is written: it parses, is signed by one of
/// the CAs of `bundle` (the CAs this device trusts, `ca.crt`), certifies `key`, names the
/// same device (CN and SPIFFE ID) as `current`, and has not expired at `now`. (Its notBefore
/// is not compared with the local clock, which may lag.) Returns the certificate's identity.
pub fn check_renewed(
    certificate_pem: &str,
    bundle: &[CertificateDer<'_>],
    key: &DeviceKey,
    current: &Certificate,
    now: OffsetDateTime,
) -> Result<Certificate, RenewError> {
    let bad = RenewError::Certificate;
    let der = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
        .map_err(|e| bad(format!("not a PEM certificate ({e:?})")))?;
    let identity = Certificate::parse(&der).map_err(|e| bad(e.to_string()))?;
    if !bundle.iter().any(|ca| signed_by(&der, ca)) {
        return Err(bad(
            "not signed by a CA this device trusts (ca.crt)".to_owned()
        ));
    }
    if !identity.certifies(&key.spki()) {
        return Err(bad("it does not certify the new key".to_owned()));
    }
    if identity.common_names != current.common_names || identity.uris != current.uris {
        return Err(bad(format!(
            "it names {:?} {:?}, not this device ({:?} {:?})",
            identity.common_names, identity.uris, current.common_names, current.uris
        )));
    }
    if identity.not_after <= now {
        return Err(bad("it has already expired".to_owned()));
    }
    Ok(identity)
}

/// The files of a device's credentials.
#[derive(Debug, Clone)]
pub struct CredentialFiles {
    /// `device.key`.
    pub key: PathBuf,
    /// `device.crt`.
    pub cert: PathBuf,
}

impl CredentialFiles {
    /// The files at these paths.
    pub fn new(key: PathBuf, cert: PathBuf) -> Self {
        CredentialFiles { key, cert }
    }

    /// `device.key.new`.
    pub fn key_new(&self) -> PathBuf {
        with_suffix(&self.key, ".new")
    }

    /// `device.crt.new`.
    pub fn cert_new(&self) -> PathBuf {
        with_suffix(&self.cert, ".new")
    }

    /// `device.key.pending`: the key of the renewal request in flight.
    pub fn key_pending(&self) -> PathBuf {
        with_suffix(&self.key, ".pending")
    }

    fn dir(&self) -> &Path {
        heex_fs::parent(&self.key)
    }

    /// Installs a checked key and certificate (see the module docs for the order): both
    /// `.new` files durable, then the certificate renamed, then the key.
    pub fn install(&self, key_pem: &str, cert_pem: &str) -> Result<(), RenewError> {
        let mut swap = heex_fs::Swap::new();
        swap.stage_at(
            &self.cert,
            &self.cert_new(),
            cert_pem.as_bytes(),
            Options::public(),
        )?;
        swap.stage_at(
            &self.key,
            &self.key_new(),
            key_pem.as_bytes(),
            Options::private(),
        )?;
        Ok(swap.commit()?)
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), RenewError> {
        std::fs::rename(from, to).map_err(|source| {
            RenewError::Io(heex_fs::Error {
                action: heex_fs::Action::Replace,
                path: to.to_owned(),
                source,
            })
        })
    }

    fn sync_dir(&self) -> Result<(), RenewError> {
        Ok(heex_fs::sync_dir(self.dir())?)
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// True when `key` (PEM private key) and `cert` (PEM certificate) both parse and the
/// certificate certifies the key. Missing or unreadable files do not match.
pub fn pair_matches(key: &Path, cert: &Path) -> bool {
    let (Ok(key_pem), Ok(cert_pem)) = (std::fs::read_to_string(key), std::fs::read(cert)) else {
        return false;
    };
    let Ok(key) = DeviceKey::from_pem(&key_pem) else {
        return false;
    };
    let Ok(der) = CertificateDer::from_pem_slice(&cert_pem) else {
        return false;
    };
    Certificate::parse(&der).is_ok_and(|c| c.certifies(&key.spki()))
}

/// What [`reconcile`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// `device.key` and `device.crt` match; nothing was pending.
    Clean,
    /// An interrupted swap left files behind; the matching old pair stays and the leftovers
    /// were removed.
    KeptOld,
    /// An interrupted swap was completed; the new pair is in place.
    CompletedNew,
    /// No matching pair was found; the files were left as they are.
    NoMatch,
}

/// Finishes or discards a renewal interrupted by a crash, so that `device.key` and
/// `device.crt` match again. Runs before the credentials are loaded.
pub fn reconcile(files: &CredentialFiles) -> Reconciled {
    let (key_new, cert_new) = (files.key_new(), files.cert_new());
    let leftovers = key_new.exists() || cert_new.exists();
    let remove = |p: &Path| {
        let _ = std::fs::remove_file(p);
    };
    let outcome = if pair_matches(&files.key, &files.cert) {
        remove(&key_new);
        remove(&cert_new);
        if leftovers {
            Reconciled::KeptOld
        } else {
            Reconciled::Clean
        }
    } else if pair_matches(&key_new, &files.cert) {
        // Crashed between the two renames: the certificate is already the new one.
        let done = files.rename(&key_new, &files.key).is_ok();
        remove(&cert_new);
        if done {
            Reconciled::CompletedNew
        } else {
            Reconciled::NoMatch
        }
    } else if pair_matches(&key_new, &cert_new) {
        let done = files.rename(&cert_new, &files.cert).is_ok()
            && files.rename(&key_new, &files.key).is_ok();
        if done {
            Reconciled::CompletedNew
        } else {
            Reconciled::NoMatch
        }
    } else {
        Reconciled::NoMatch
    };
    if outcome != Reconciled::Clean {
        let _ = files.sync_dir();
    }
    match outcome {
        Reconciled::KeptOld => {
            tracing::warn!("an interrupted certificate renewal was discarded; keeping the previous certificate")
        }
        Reconciled::CompletedNew => {
            tracing::warn!("an interrupted certificate renewal was completed")
        }
        _ => {}
    }
    outcome
}

/// Finishes a renewal: checks the certificate against `pending`'s key and the current
/// identity, then installs both files. Returns the new certificate's identity.
pub fn complete(
    files: &CredentialFiles,
    bundle: &[CertificateDer<'_>],
    pending: Pending,
    current: &Certificate,
    certificate_pem: &str,
    now: OffsetDateTime,
) -> Result<Certificate, RenewError> {
    let identity = check_renewed(certificate_pem, bundle, &pending.key, current, now)?;
    files.install(&pending.key.private_pem(), certificate_pem)?;
    Ok(identity)
}

/// The renewal state the daemon keeps across sessions: the current certificate's identity,
/// the CAs a renewed certificate may come from, when to renew next, and the key of a request
/// in flight.
#[derive(Debug)]
pub struct Renewal {
    files: CredentialFiles,
    /// The CA bundle this device trusts (`ca.crt`), in file order.
    bundle: Vec<CertificateDer<'static>>,
    device: DeviceId,
    current: Certificate,
    current_der: CertificateDer<'static>,
    /// Start of the current certificate's renewal window (see [`lifetime_start`]).
    start: OffsetDateTime,
    due: OffsetDateTime,
    pending: Option<Pending>,
}

impl Renewal {
    /// Starts with the certificate in `files`, renewing at a random point of its lifetime;
    /// a renewed certificate must come from a CA of `bundle`.
    pub fn new(
        files: CredentialFiles,
        bundle: Vec<CertificateDer<'static>>,
        device: DeviceId,
    ) -> Result<Renewal, String> {
        let current_der = read_first_certificate(&files.cert)?;
        let current = Certificate::parse(&current_der).map_err(|e| e.to_string())?;
        // The file was written when the certificate arrived (by the installer or a renewal).
        let received = std::fs::metadata(&files.cert)
            .and_then(|m| m.modified())
            .ok()
            .map(OffsetDateTime::from);
        let start = lifetime_start(current.not_before, current.not_after, received);
        let mut due = random_renewal_time(start, current.not_after);
        if Pending::kept(&files, &current_der).is_some() {
            // A request may have been answered and the answer lost: the cloud admits the
            // certificate it superseded only for a while, so ask again at once.
            tracing::warn!("a certificate renewal was interrupted; requesting it again");
            due = OffsetDateTime::now_utc();
        }
        Ok(Renewal {
            files,
            bundle,
            device,
            current,
            current_der,
            start,
            due,
            pending: None,
        })
    }

    /// When the next renewal request is due (may be in the past).
    pub fn due(&self) -> OffsetDateTime {
        self.due
    }

    /// The current certificate.
    pub fn current(&self) -> &Certificate {
        &self.current
    }

    /// True when the current certificate is signed by `ca`.
    pub fn issued_by(&self, ca: &CertificateDer<'_>) -> bool {
        signed_by(&self.current_der, ca)
    }

    /// The CAs a renewed certificate may come from.
    pub fn bundle(&self) -> &[CertificateDer<'static>] {
        &self.bundle
    }

    /// Replaces the CAs a renewed certificate may come from (a new `ca.crt`).
    pub fn set_bundle(&mut self, bundle: Vec<CertificateDer<'static>>) {
        self.bundle = bundle;
    }

    /// Moves the next renewal to `at` if that is earlier than the one scheduled, never later.
    /// Returns true when it moved.
    pub fn bring_forward(&mut self, at: OffsetDateTime) -> bool {
        if at < self.due {
            self.due = at;
            true
        } else {
            false
        }
    }

    /// Makes the key and CSR of a RenewRequest: the key of an earlier request whose answer
    /// may have been lost (kept in `device.key.pending`), or a fresh one, written there
    /// durably before the CSR is returned. The next attempt is scheduled a [`retry_delay`]
    /// later, in case no answer comes.
    pub fn request(&mut self, now: OffsetDateTime) -> Result<String, RenewError> {
        self.due = now + retry_delay(self.start, self.current.not_after);
        let (pending, csr) = match Pending::kept(&self.files, &self.current_der) {
            Some(key) => Pending::for_key(key, &self.device)?,
            None => {
                let (pending, csr) = Pending::generate(&self.device)?;
                heex_fs::write(
                    &self.files.key_pending(),
                    pending.key.private_pem().as_bytes(),
                    Options::private(),
                )?;
                (pending, csr)
            }
        };
        self.pending = Some(pending);
        Ok(csr)
    }

    /// Handles a RenewResponse: checks and installs the certificate, then schedules the next
    /// renewal in its lifetime. On error the current files stay and a retry is scheduled.
    pub fn complete(
        &mut self,
        certificate_pem: &str,
        now: OffsetDateTime,
    ) -> Result<&Certificate, RenewError> {
        let pending = self.pending.take().ok_or(RenewError::NotRequested)?;
        let renewed = complete(
            &self.files,
            &self.bundle,
            pending,
            &self.current,
            certificate_pem,
            now,
        )?;
        // Installed: the kept key is the current one now (left behind, it is recognised as
        // such and replaced at the next request).
        let _ = std::fs::remove_file(self.files.key_pending());
        if let Ok(der) = CertificateDer::from_pem_slice(certificate_pem.as_bytes()) {
            // Parsed by the check above; this cannot fail.
            self.current_der = der.into_owned();
        }
        self.start = lifetime_start(renewed.not_before, renewed.not_after, Some(now));
        self.due = random_renewal_time(self.start, renewed.not_after);
        self.current = renewed;
        Ok(&self.current)
    }
}

#[cfg(test)]
mod tests;
