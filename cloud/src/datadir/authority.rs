//! The cloud's certificate authorities, and rotating the CA without re-enrolling a device or
//! dropping a session.
//!
//! Normally one CA (`ca.crt`, `ca.key`) signs the server certificate and every device
//! certificate. A rotation takes two commands, each run beside `serve` (which reads the
//! directory's CAs again every few seconds):
//!
//! 1. `heex-cloud ca rotate` writes a new CA as `ca-next.crt` and `ca-next.key`. From then on
//!    device certificates (enrollments and renewals) come from the new CA; the gateway
//!    accepts device certificates from both; every agent is sent both CA certificates over
//!    its session (`TrustBundle`, the new one first), trusts both, and renews onto the new
//!    CA within the spread the gateway gives. The server certificate stays on the old CA,
//!    because an agent that has not received the bundle yet trusts only that one, and
//!    installers keep pinning the old fingerprint.
//! 2. `heex-cloud ca retire` ends it, once every device that is not revoked holds a
//!    certificate from the new CA (or with `--force`): the new CA becomes `ca.crt` and
//!    `ca.key` (the old key is deleted), the server certificate is re-issued from it, the
//!    old CA is no longer trusted, and agents are sent the one-CA bundle. A device that
//!    never renewed (offline for the whole overlap) cannot connect any more: it trusts only
//!    the old CA, and its certificate is from it; it must be enrolled again.
//!
//! Crash safety: `rotate` writes `ca-next.key` before `ca-next.crt` (a key alone is
//! ignored and overwritten by the next `rotate`); `retire` renames `ca-next.key` over
//! `ca.key`, then `ca-next.crt` over `ca.crt`. A certificate without its key
//! (`ca-next.crt` alone) means the second rename is pending: the next `retire` or `serve`
//! start completes it, and a reader in between refuses the torn state (a CA key is always
//! checked against its certificate) and keeps the CAs it had.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use heex_proto::Fingerprint;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ca::{Ca, CaError};
use crate::datadir::{read_text, DataDir, CA_CERT, CA_KEY};
use crate::error::Error;
use crate::store::ops::CaRetirement;
use heex_fs::Options;

/// The new CA's certificate during a rotation (PEM).
pub const CA_NEXT_CERT: &str = "ca-next.crt";
/// The new CA's private key during a rotation (PEM, 0600).
pub const CA_NEXT_KEY: &str = "ca-next.key";
/// How often `serve` reads the directory's CAs again.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The CAs serving uses at one moment.
pub struct Authority {
    server: Arc<Ca>,
    issuing: Arc<Ca>,
    bundle: Vec<CertificateDer<'static>>,
    bundle_pem: String,
    digest: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("server", &self.server.fingerprint())
            .field("issuing", &self.issuing.fingerprint())
            .finish()
    }
}

impl Authority {
    /// One CA signs everything.
    pub fn single(ca: Arc<Ca>) -> Authority {
        Authority::build(Arc::clone(&ca), ca)
    }

    /// During a rotation: `current` signs the server certificate, `next` device
    /// certificates, and both are trusted.
    pub fn rotating(current: Arc<Ca>, next: Arc<Ca>) -> Authority {
        Authority::build(current, next)
    }

    fn build(server: Arc<Ca>, issuing: Arc<Ca>) -> Authority {
        let mut bundle = vec![issuing.cert_der().clone()];
        let mut bundle_pem = pem_line_ended(issuing.cert_pem());
        if server.fingerprint() != issuing.fingerprint() {
            bundle.push(server.cert_der().clone());
            bundle_pem.push_str(&pem_line_ended(server.cert_pem()));
        }
        let digest = heex_proto::frame::bundle_digest(bundle.iter().map(|d| d.as_ref()));
        Authority {
            server,
            issuing,
            bundle,
            bundle_pem,
            digest,
        }
    }

    /// The CA that signs the server certificate: the fingerprint installers pin.
    pub fn server(&self) -> &Arc<Ca> {
        &self.server
    }

    /// The CA that signs device certificates.
    pub fn issuing(&self) -> &Arc<Ca> {
        &self.issuing
    }

    /// Every CA a device certificate may come from, the issuing one first.
    pub fn bundle(&self) -> &[CertificateDer<'static>] {
        &self.bundle
    }

    /// [`Authority::bundle`], PEM.
    pub fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// The bundle's digest, as agents report theirs in Hello.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// True during a rotation.
    pub fn is_rotating(&self) -> bool {
        self.bundle.len() > 1
    }
}

fn pem_line_ended(pem: &str) -> String {
    let mut s = pem.trim_end().to_owned();
    s.push('\n');
    s
}

/// The authority serving uses now, shared by the API and the gateway, and a signal when
/// it changes.
#[derive(Clone)]
pub struct Authorities(Arc<watch::Sender<Arc<Authority>>>);

impl std::fmt::Debug for Authorities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Authorities")
            .field(&*self.current())
            .finish()
    }
}

impl Authorities {
    /// Starts with `authority`.
    pub fn new(authority: Authority) -> Authorities {
        Authorities(Arc::new(watch::Sender::new(Arc::new(authority))))
    }

    /// The authority now.
    pub fn current(&self) -> Arc<Authority> {
        Arc::clone(&self.0.borrow())
    }

    /// Changes of the authority, from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Authority>> {
        self.0.subscribe()
    }

    /// Uses `authority` from now on, unless it holds the same CAs; true when it changed.
    pub fn replace(&self, authority: Authority) -> bool {
        self.0.send_if_modified(|current| {
            let same = current.digest == authority.digest
                && current.server.fingerprint() == authority.server.fingerprint();
            if !same {
                *current = Arc::new(authority);
            }
            !same
        })
    }
}

/// Reads the directory's CAs again every `interval` and replaces `authorities` when they
/// changed (a `rotate` or `retire` ran), until `shutdown`. A directory caught in the middle
/// of a change is read again next time.
pub async fn follow(
    dir: DataDir,
    authorities: Authorities,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let read = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || read(&dir)).await
        };
        match read {
            Ok(Ok(authority)) => {
                last_error = None;
                let (server, issuing) = (
                    authority.server.fingerprint(),
                    authority.issuing.fingerprint(),
                );
                let rotating = authority.is_rotating();
                if authorities.replace(authority) {
                    tracing::info!(
                        %server,
                        %issuing,
                        rotating,
                        "the cloud's CAs changed: device certificates now come from {issuing}"
                    );
                }
            }
            Ok(Err(e)) => {
                let e = e.to_string();
                // Seen once during a `retire`; repeated, it is worth a warning.
                if last_error.as_ref() == Some(&e) {
                    tracing::warn!(error = %e, "cannot read the data directory's CAs; keeping the current ones");
                } else {
                    tracing::debug!(error = %e, "cannot read the data directory's CAs now");
                }
                last_error = Some(e);
            }
            Err(e) => tracing::warn!(error = %e, "reading the data directory's CAs failed"),
        }
    }
}

/// The CA in files `cert` and `key` of the directory; a damaged file is named.
fn load_ca(dir: &DataDir, cert: &str, key: &str) -> Result<Ca, Error> {
    let (cert_path, key_path) = (dir.path(cert), dir.path(key));
    let loaded = Ca::load(&read_text(&cert_path)?, &read_text(&key_path)?);
    let (path, reason) = match loaded {
        Ok(ca) => return Ok(ca),
        Err(e @ CaError::BadCertificate) => (cert_path, e.to_string()),
        Err(CaError::KeyMismatch) => (
            key_path,
            format!(
                "this key does not belong to the CA certificate {}",
                cert_path.display()
            ),
        ),
        Err(e) => (key_path, format!("not a usable CA key: {e}")),
    };
    if cert != CA_NEXT_CERT {
        return Err(Error::corrupt(path, reason));
    }
    Err(Error::Mismatch(format!(
        "{}: {reason}; the new CA of the rotation in progress is unusable: restore {} and {} from a backup, or, if `heex-cloud serve` never read them (no device holds a certificate from that CA), remove both and run `heex-cloud ca rotate` again",
        path.display(),
        CA_NEXT_CERT,
        CA_NEXT_KEY,
    )))
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// The directory's CAs: `ca.crt`/`ca.key`, and `ca-next.crt`/`ca-next.key` during a
/// rotation. Fails on a directory in the middle of `retire` (see the module docs).
pub fn read(dir: &DataDir) -> Result<Authority, Error> {
    let (next_cert, next_key) = (dir.path(CA_NEXT_CERT), dir.path(CA_NEXT_KEY));
    // Before ca.crt is read: in the middle of a `retire`, ca.key is already the new CA's.
    if exists(&next_cert) && !exists(&next_key) {
        return Err(Error::Mismatch(format!(
            "{} has no key beside it: a `heex-cloud ca retire` was interrupted; run it again",
            next_cert.display()
        )));
    }
    let current = Arc::new(load_ca(dir, CA_CERT, CA_KEY)?);
    if exists(&next_cert) {
        let next = Arc::new(load_ca(dir, CA_NEXT_CERT, CA_NEXT_KEY)?);
        Ok(Authority::rotating(current, next))
    } else {
        // A key alone: an interrupted `rotate`, ignored.
        Ok(Authority::single(current))
    }
}

/// The fingerprint of `ca-next.crt`, during a rotation.
pub fn next_fingerprint(dir: &DataDir) -> Option<Fingerprint> {
    let pem = fs::read_to_string(dir.path(CA_NEXT_CERT)).ok()?;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    Some(Fingerprint::of_der(&der))
}

/// Completes a `retire` interrupted between its two renames; true when it did.
pub fn complete_interrupted_retire(dir: &DataDir) -> Result<bool, Error> {
    let (next_cert, next_key) = (dir.path(CA_NEXT_CERT), dir.path(CA_NEXT_KEY));
    if !exists(&next_cert) || exists(&next_key) {
        return Ok(false);
    }
    let ca_cert = dir.path(CA_CERT);
    fs::rename(&next_cert, &ca_cert).map_err(|e| Error::file(&ca_cert, e))?;
    heex_fs::sync_dir(dir.root())?;
    tracing::warn!("completed an interrupted CA retirement: the new CA is now ca.crt");
    Ok(true)
}

/// What `heex-cloud ca rotate` did.
#[derive(Debug)]
pub struct Rotated {
    /// The CA that keeps signing the server certificate until `retire`.
    pub current: Fingerprint,
    /// The new CA, which signs device certificates from now on.
    pub next: Fingerprint,
}

/// `heex-cloud ca rotate`: writes a new CA as `ca-next.*`. Refused while a rotation is in
/// progress.
pub fn rotate(dir: &DataDir, now: OffsetDateTime) -> Result<Rotated, Error> {
    dir.settings()?;
    complete_interrupted_retire(dir)?;
    let current = load_ca(dir, CA_CERT, CA_KEY)?;
    if exists(&dir.path(CA_NEXT_CERT)) {
        let next = next_fingerprint(dir).map_or_else(|| "?".to_owned(), |f| f.to_string());
        return Err(Error::Usage(format!(
            "a CA rotation is already in progress (new CA {next}); finish it with `heex-cloud ca retire --data-dir {}` first",
            dir.root().display()
        )));
    }
    let (next, key_pem) = Ca::generate(now).map_err(|e| Error::Internal(e.to_string()))?;
    heex_fs::write(
        &dir.path(CA_NEXT_KEY),
        key_pem.as_bytes(),
        Options::private(),
    )?;
    heex_fs::write(
        &dir.path(CA_NEXT_CERT),
        next.cert_pem().as_bytes(),
        Options::public(),
    )?;
    Ok(Rotated {
        current: current.fingerprint(),
        next: next.fingerprint(),
    })
}

/// Where a rotation stands, for `heex-cloud ca status` and `retire`.
#[derive(Debug)]
pub struct RotationStatus {
    /// The CA that signs the server certificate (installers pin it).
    pub server: Fingerprint,
    /// Its notAfter.
    pub server_not_after: Option<OffsetDateTime>,
    /// The CA that signs device certificates.
    pub issuing: Fingerprint,
    /// Its notAfter.
    pub issuing_not_after: Option<OffsetDateTime>,
    /// True during a rotation.
    pub rotating: bool,
    /// Devices not revoked whose certificate is not from the issuing CA.
    pub devices_on_other_ca: u64,
}

impl RotationStatus {
    /// Prints the status for the operator.
    pub fn print(&self, dir: &DataDir, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let date = |t: Option<OffsetDateTime>| {
            t.and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "?".to_owned())
        };
        if self.rotating {
            writeln!(out, "CA rotation in progress")?;
            writeln!(
                out,
                "Current CA:     {} (signs the server certificate; installers pin it; expires {})",
                self.server,
                date(self.server_not_after)
            )?;
            writeln!(
                out,
                "New CA:         {} (signs device certificates; expires {})",
                self.issuing,
                date(self.issuing_not_after)
            )?;
            writeln!(
                out,
                "Devices still on the current CA: {} (they renew onto the new CA once connected)",
                self.devices_on_other_ca
            )?;
            if self.devices_on_other_ca == 0 {
                writeln!(
                    out,
                    "Next: heex-cloud ca retire --data-dir {}",
                    dir.root().display()
                )?;
            }
        } else {
            writeln!(
                out,
                "CA:             {} (expires {})",
                self.server,
                date(self.server_not_after)
            )?;
            writeln!(out, "No CA rotation in progress.")?;
            writeln!(
                out,
                "Devices with a certificate from another CA: {}",
                self.devices_on_other_ca
            )?;
        }
        out.flush()
    }
}

/// `heex-cloud ca status`.
pub async fn status(dir: &DataDir) -> Result<RotationStatus, Error> {
    let authority = read(dir)?;
    let (store, _) = dir.open_checked().await?;
    let issuing = authority.issuing().fingerprint();
    let counted = store.devices_not_on_ca(&issuing.to_string()).await;
    store.close().await;
    Ok(RotationStatus {
        server: authority.server().fingerprint(),
        server_not_after: crate::ca::not_after(authority.server().cert_der()),
        issuing,
        issuing_not_after: crate::ca::not_after(authority.issuing().cert_der()),
        rotating: authority.is_rotating(),
        devices_on_other_ca: counted?,
    })
}

/// What `heex-cloud ca retire` did.
#[derive(Debug)]
pub struct Retired {
    /// The CA no longer trusted.
    pub old: Fingerprint,
    /// The CA that signs everything from now on (installers pin it).
    pub new: Fingerprint,
    /// Devices not revoked still on the old CA (only with `--force`): they must be enrolled
    /// again.
    pub stranded: u64,
}

/// `heex-cloud ca retire`: ends a rotation. Refused while a device that is not revoked
/// holds a certificate from the old CA, unless `force`.
pub async fn retire(dir: &DataDir, force: bool) -> Result<Retired, Error> {
    dir.settings()?;
    if complete_interrupted_retire(dir)? {
        let ca = load_ca(dir, CA_CERT, CA_KEY)?;
        return Ok(Retired {
            old: ca.fingerprint(),
            new: ca.fingerprint(),
            stranded: 0,
        });
    }
    let authority = read(dir)?;
    if !authority.is_rotating() {
        return Err(Error::Usage(format!(
            "no CA rotation is in progress in {}; start one with `heex-cloud ca rotate`",
            dir.root().display()
        )));
    }
    let (old, new) = (
        authority.server().fingerprint(),
        authority.issuing().fingerprint(),
    );
    let (store, _) = dir.open_checked().await?;
    let result = store
        .retire_ca(
            &old.to_string(),
            &new.to_string(),
            force,
            OffsetDateTime::now_utc(),
        )
        .await;
    store.close().await;
    let stranded = match result? {
        CaRetirement::Retired { stranded } => stranded,
        CaRetirement::Refused { remaining } => {
            return Err(Error::Usage(format!(
                "{remaining} device(s) that are not revoked still hold a certificate from the current CA {old}: they move to the new CA when they connect (see `heex-cloud ca status`); retiring now cuts them off until they are enrolled again; wait, or pass --force"
            )))
        }
        CaRetirement::NotOurs => {
            return Err(Error::Mismatch(format!(
                "the store {} records neither {old} nor {new} as its CA; it belongs to another data directory",
                dir.store_display()
            )))
        }
    };
    let (next_key, next_cert) = (dir.path(CA_NEXT_KEY), dir.path(CA_NEXT_CERT));
    let (ca_key, ca_cert) = (dir.path(CA_KEY), dir.path(CA_CERT));
    fs::rename(&next_key, &ca_key).map_err(|e| Error::file(&ca_key, e))?;
    heex_fs::sync_dir(dir.root())?;
    fs::rename(&next_cert, &ca_cert).map_err(|e| Error::file(&ca_cert, e))?;
    heex_fs::sync_dir(dir.root())?;
    Ok(Retired { old, new, stranded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_puts_the_issuing_ca_first_and_has_one_ca_outside_a_rotation() {
        let now = OffsetDateTime::now_utc();
        let (old, _) = Ca::generate(now).unwrap();
        let (new, _) = Ca::generate(now).unwrap();
        let (old, new) = (Arc::new(old), Arc::new(new));
        let single = Authority::single(Arc::clone(&old));
        assert!(!single.is_rotating());
        assert_eq!(single.bundle(), [old.cert_der().clone()]);
        let rotating = Authority::rotating(Arc::clone(&old), Arc::clone(&new));
        assert!(rotating.is_rotating());
        assert_eq!(
            rotating.bundle(),
            [new.cert_der().clone(), old.cert_der().clone()]
        );
        assert_eq!(rotating.server().fingerprint(), old.fingerprint());
        assert_eq!(rotating.issuing().fingerprint(), new.fingerprint());
        assert_ne!(single.digest(), rotating.digest());
        use rustls_pki_types::pem::PemObject;
        let parsed: Vec<_> = CertificateDer::pem_slice_iter(rotating.bundle_pem().as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(parsed, rotating.bundle());

        let authorities = Authorities::new(Authority::single(Arc::clone(&old)));
        let changes = authorities.subscribe();
        assert!(!authorities.replace(Authority::single(Arc::clone(&old))));
        assert!(!changes.has_changed().unwrap());
        assert!(authorities.replace(Authority::rotating(old, new)));
        assert!(changes.has_changed().unwrap());
        assert!(authorities.current().is_rotating());
    }

    async fn initialized() -> (tempfile::TempDir, DataDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("data"));
        dir.init(&crate::cli::InitOptions {
            workspace: "default".to_owned(),
            owner: "owner@localhost".to_owned(),
            hostnames: vec!["cloud.example".to_owned()],
            trust_domain: "heex.local".to_owned(),
        })
        .await
        .unwrap();
        (tmp, dir)
    }

    fn text(dir: &DataDir, name: &str) -> String {
        fs::read_to_string(dir.path(name)).unwrap()
    }

    /// A `retire` killed between its two renames (ca.key is the new CA's, ca.crt still the
    /// old one) is named as such, not as a damaged key, and the next start or `ca` command
    /// completes it: one CA, the new one, whose key matches, and a store that accepts it.
    #[tokio::test]
    async fn a_retire_killed_between_its_renames_is_completed_by_the_next_start() {
        let (_tmp, dir) = initialized().await;
        let rotated = rotate(&dir, OffsetDateTime::now_utc()).unwrap();
        let (new_cert, new_key) = (text(&dir, CA_NEXT_CERT), text(&dir, CA_NEXT_KEY));
        // What `retire` does before the kill: the store moves, then the first rename.
        let (store, _) = dir.open_checked().await.unwrap();
        let retired = store
            .retire_ca(
                &rotated.current.to_string(),
                &rotated.next.to_string(),
                false,
                OffsetDateTime::now_utc(),
            )
            .await
            .unwrap();
        assert_eq!(retired, CaRetirement::Retired { stranded: 0 });
        store.close().await;
        fs::rename(dir.path(CA_NEXT_KEY), dir.path(CA_KEY)).unwrap();

        let err = read(&dir).unwrap_err().to_string();
        assert!(err.contains("was interrupted; run it again"), "{err}");
        let loaded = dir.load(&[]).await.unwrap();
        loaded.store.close().await;
        assert!(!loaded.authority.is_rotating());
        assert_eq!(loaded.authority.server().fingerprint(), rotated.next);
        assert_eq!(text(&dir, CA_CERT), new_cert);
        assert_eq!(text(&dir, CA_KEY), new_key);
        assert!(!dir.path(CA_NEXT_CERT).exists() && !dir.path(CA_NEXT_KEY).exists());
        // The server certificate was re-issued from the new CA.
        assert!(loaded.authority.server().signed(&loaded.server_chain[0]));
        // And `retire` run again by the operator says the rotation is over.
        let again = retire(&dir, false).await.unwrap_err().to_string();
        assert!(again.contains("no CA rotation is in progress"), "{again}");
    }

    /// A flipped byte in the new CA's files: every command names the file and the way out,
    /// nothing moves, and a running cloud keeps the CAs it has until the files are good.
    #[tokio::test]
    async fn a_damaged_new_ca_is_named_and_a_running_cloud_keeps_its_cas() {
        let (_tmp, dir) = initialized().await;
        let before = read(&dir).unwrap();
        rotate(&dir, OffsetDateTime::now_utc()).unwrap();
        let good_key = text(&dir, CA_NEXT_KEY);
        let good_cert = text(&dir, CA_NEXT_CERT);
        // One character in the middle of the base64 body.
        let flip = |pem: &str| {
            let mut bytes = pem.as_bytes().to_vec();
            let i = bytes.len() / 2;
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(bytes).unwrap()
        };
        for (name, damaged) in [
            (CA_NEXT_KEY, flip(&good_key)),
            (CA_NEXT_CERT, flip(&good_cert)),
        ] {
            fs::write(dir.path(name), &damaged).unwrap();
            let err = read(&dir).unwrap_err();
            assert_eq!(err.exit_code(), 78, "{err}");
            let err = err.to_string();
            assert!(
                err.contains("ca-next.") && err.contains("heex-cloud ca rotate"),
                "{name}: {err}"
            );
            let status = status(&dir).await.unwrap_err().to_string();
            assert!(status.contains("ca-next."), "{status}");
            let retired = retire(&dir, true).await.unwrap_err().to_string();
            assert!(retired.contains("ca-next."), "{retired}");
            assert_eq!(text(&dir, name), damaged, "{name} was touched");
            assert_eq!(
                read_text(&dir.path(CA_CERT)).unwrap(),
                before.server().cert_pem()
            );

            let authorities = Authorities::new(Authority::single(Arc::clone(before.server())));
            let shutdown = CancellationToken::new();
            let following = tokio::spawn(follow(
                dir.clone(),
                authorities.clone(),
                Duration::from_millis(10),
                shutdown.clone(),
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!authorities.current().is_rotating(), "{name}");
            // Repaired: picked up at the next read.
            let mut changes = authorities.subscribe();
            fs::write(
                dir.path(name),
                if name == CA_NEXT_KEY {
                    &good_key
                } else {
                    &good_cert
                },
            )
            .unwrap();
            tokio::time::timeout(Duration::from_secs(10), changes.changed())
                .await
                .unwrap()
                .unwrap();
            assert!(authorities.current().is_rotating());
            shutdown.cancel();
            following.await.unwrap();
        }
    }
}
