//! The daemon: a reconnect state machine around [`session::run`].
//!
//! ```text
//!            ┌──────────── Welcome ────────────┐
//!            │                                 ▼
//!   ──► Connecting ◄── delay ── Backoff ◄── Connected
//!            │                     ▲     (lost / closed)
//!            └── failed/refused ───┘
//! ```
//!
//! One [`CancellationToken`] stops everything: SIGTERM or SIGINT cancels it, the live session
//! sends Close(Shutdown), and the daemon returns within [`SHUTDOWN_GRACE`].

use std::time::Duration;

use heex_proto::frame::CloseReason;
use heex_proto::Fingerprint;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::credentials::Credentials;
use crate::notify::Notifier;
use crate::reconnect::{self, Ending};
use crate::renew::{CredentialFiles, Renewal};
use crate::session::{self, Observer, SessionEnd, SessionParams};
use crate::status::{State, Status, StatusFile};

pub use crate::reconnect::REFUSED_RETRY;

/// Longest time between a stop signal and the daemon's return.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The backoff settings are invalid.
    #[error("invalid config: {0}")]
    Backoff(#[from] crate::backoff::BackoffError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The report outbox cannot be used.
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
}

/// Runs until SIGTERM or SIGINT, then closes the session and returns.
pub async fn run_until_signal(
    config: &Config,
    creds: &Credentials,
    notifier: &Notifier,
) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let cancel = CancellationToken::new();
    let on_signal = {
        let cancel = cancel.clone();
        async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
                _ = int.recv() => tracing::info!("SIGINT received, stopping"),
            }
            cancel.cancel();
            // The daemon answers cancellation within its own bounds; this is the backstop.
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            tracing::warn!("shutdown grace period over, exiting");
        }
    };
    tokio::select! {
        r = run(config, creds, notifier, cancel.clone()) => r,
        () = on_signal => {
            notifier.stopping();
            Ok(())
        }
    }
}

/// Runs the reconnect loop until `cancel` is cancelled.
pub async fn run(
    config: &Config,
    creds: &Credentials,
    notifier: &Notifier,
    cancel: CancellationToken,
) -> Result<(), DaemonError> {
    // A session that carried a few heartbeats proved the path works: start over from short
    // delays after it ends. One dropped right after Welcome keeps the delays growing.
    let stable_after = config.heartbeat_interval * 3;
    let mut backoff = Backoff::try_new(config.backoff_initial, config.backoff_max, stable_after)?;
    let (_intake, reports) = crate::intake::start(
        &config.outbox_dir(),
        config.outbox_max_bytes,
        config.socket_path(),
        config.socket_group.as_deref(),
        cancel.clone(),
    )?;
    let mut params = SessionParams {
        host: config.gateway_host(),
        port: config.gateway_port(),
        device_id: config.device_id.clone(),
        tls: creds.tls.clone(),
        ca_path: config.ca_path(),
        ca_bundle: Some(creds.ca_bundle_digest()),
        heartbeat_interval: config.heartbeat_interval,
        facts_interval: config.facts_interval,
        ack_timeout: session::ack_timeout_for(config.heartbeat_interval),
        reports: Some(reports.clone()),
    };
    let now = OffsetDateTime::now_utc();
    let status = StatusFile::create(
        config.status_path(),
        Status {
            state: State::Connecting,
            since: now,
            connected_since: None,
            sessions: 0,
            gateway: config.gateway.clone(),
            device_id: config.device_id.clone(),
            certificate_expires_at: creds.not_after,
            last_heartbeat_ack: None,
            heartbeats_acked: 0,
            last_error: None,
            pid: std::process::id(),
            updated_at: now,
        },
    );
    let renewal = match Renewal::new(
        CredentialFiles::new(config.key_path(), config.cert_path()),
        creds.ca.clone(),
        config.device_id.clone(),
    ) {
        Ok(r) => Some(r),
        Err(e) => {
            // Credentials::load read the same file moments ago; renewal stays off if not.
            tracing::error!("certificate renewal disabled: {e}");
            None
        }
    };
    let mut tracker = Tracker {
        status,
        notifier,
        gateway: &config.gateway,
        config,
        renewal,
        tls: creds.tls.clone(),
        ca_digest: creds.ca_bundle_digest(),
    };
    notifier.ready(&format!("connecting to {}", config.gateway));
    let watchdog = notifier.watchdog_period().map(|period| {
        let notifier = notifier.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => notifier.watchdog(),
                }
            }
        })
    });
    tracing::info!(
        device = %config.device_id,
        gateway = %config.gateway,
        certificate_expires_at = %creds
            .not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        "heex-agent {} started",
        heex_proto::VERSION
    );

    let mut attempt = 0u32;
    loop {
        attempt += 1;
        tracker.enter(State::Connecting, None);
        tracing::info!(gateway = %config.gateway, attempt, "connecting to gateway");
        // The latest renewed certificate and CA bundle, if any.
        params.tls = tracker.tls.clone();
        params.ca_bundle = Some(tracker.ca_digest.clone());
        let outcome = session::run(&params, &mut tracker, &cancel).await;
        if outcome.up_for.is_some() {
            attempt = 0;
        }
        let (ending, line) = match outcome.end {
            SessionEnd::Shutdown => break,
            SessionEnd::Closed { reason, message } => {
                let expired_here = tracker
                    .renewal
                    .as_ref()
                    .is_none_or(|r| r.current().not_after <= OffsetDateTime::now_utc());
                (
                    Ending::Closed {
                        reason,
                        expired_here,
                    },
                    describe_close(reason, &message),
                )
            }
            SessionEnd::Failed(e) => {
                let line = if outcome.up_for.is_some() {
                    format!("session lost: {e}")
                } else {
                    e.to_string()
                };
                // The credentials need an operator, not just a retry.
                let needs_operator = matches!(
                    e,
                    session::SessionError::UntrustedGateway { .. }
                        | session::SessionError::CertificateRefused { .. }
                );
                (Ending::Failed { needs_operator }, line)
            }
        };
        if let Some(up) = outcome.up_for {
            backoff.session_ended(up);
        }
        let decision = reconnect::after(ending, &mut backoff);
        if decision.error {
            tracing::error!("{line}");
        } else {
            tracing::warn!("{line}");
        }
        let (delay, ceiling) = (decision.delay, decision.ceiling);
        tracker.enter(State::Backoff, Some(line));
        tracker.notifier.status(&format!(
            "reconnecting in {}",
            humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
        ));
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            ceiling_ms = ceiling.as_millis() as u64,
            "reconnecting after backoff"
        );
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }

    reports.flush();
    tracker.enter(State::Stopped, None);
    notifier.stopping();
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("heex-agent stopped");
    Ok(())
}

fn describe_close(reason: CloseReason, message: &str) -> String {
    let what = match reason {
        CloseReason::DeviceRevoked => {
            "this device was revoked: reinstall it with heex-installer --force and a new API key"
        }
        CloseReason::DeviceUnknown => {
            "the gateway does not know this device; re-enroll with heex-installer"
        }
        CloseReason::CertificateExpired => {
            "certificate expired beyond the renewal grace: reinstall with heex-installer --force and a new API key"
        }
        CloseReason::Replaced => {
            "another agent with this device's identity connected; only one may run per device"
        }
        CloseReason::Shutdown => "the gateway is shutting down",
        CloseReason::ProtocolError => "the gateway reported a protocol error",
        _ => "the gateway closed the session",
    };
    if message.is_empty() {
        what.to_owned()
    } else {
        format!("{what} ({message})")
    }
}

/// Turns session progress into status-file updates and systemd status lines, and keeps the
/// certificate renewal state across sessions.
struct Tracker<'a> {
    status: StatusFile,
    notifier: &'a Notifier,
    gateway: &'a str,
    config: &'a Config,
    renewal: Option<Renewal>,
    /// TLS configuration with the newest certificate and CA bundle, for the next connection.
    tls: std::sync::Arc<rustls::ClientConfig>,
    /// Digest of the CA bundle `tls` trusts, sent in the next Hello.
    ca_digest: String,
}

impl Tracker<'_> {
    fn enter(&mut self, state: State, error: Option<String>) {
        let now = OffsetDateTime::now_utc();
        self.status.update(|s| {
            if s.state != state {
                s.since = now;
            }
            s.state = state;
            if state != State::Connected {
                s.connected_since = None;
            }
            if error.is_some() {
                s.last_error = error;
            }
        });
        if state == State::Connecting {
            self.notifier
                .status(&format!("connecting to {}", self.gateway));
        }
    }
}

impl Tracker<'_> {
    /// Installs a CA bundle sent by the cloud (see [`Observer::trust_bundle`]): `ca.crt`
    /// written durably, the credentials reloaded for the next connection, and an early
    /// renewal scheduled when the device certificate is not from the bundle's first CA. The
    /// error is one line; on error `ca.crt` and the credentials in use stay as they were.
    fn install_bundle(
        &mut self,
        ca_pem: &str,
        renew_within: Duration,
    ) -> Result<BundleChange, String> {
        let bundle = crate::credentials::parse_ca_bundle(ca_pem)?;
        let digest = crate::credentials::bundle_digest(&bundle);
        if digest == self.ca_digest {
            return Ok(BundleChange::Same);
        }
        let path = self.config.ca_path();
        let previous = std::fs::read(&path).ok();
        let pem = crate::credentials::bundle_pem(&bundle);
        heex_fs::write(&path, pem.as_bytes(), heex_fs::Options::public())
            .map_err(|e| e.to_string())?;
        let creds = match Credentials::load(self.config) {
            Ok(creds) => creds,
            Err(e) => {
                // Never leave a ca.crt behind that the next start cannot load.
                if let Some(old) = previous {
                    if let Err(e) = heex_fs::write(&path, &old, heex_fs::Options::public()) {
                        tracing::error!("cannot restore {}: {e}", path.display());
                    }
                }
                return Err(format!("the new credentials cannot be loaded: {e}"));
            }
        };
        self.ca_digest = creds.ca_bundle_digest();
        self.tls = creds.tls;
        let renewal = match (self.renewal.as_mut(), creds.ca.first()) {
            (Some(renewal), Some(issuing)) => {
                renewal.set_bundle(creds.ca.clone());
                if renewal.issued_by(issuing) {
                    BundleRenewal::NotNeeded
                } else {
                    let now = OffsetDateTime::now_utc();
                    renewal.bring_forward(crate::renew::random_point_within(now, renew_within));
                    BundleRenewal::Scheduled(renewal.due())
                }
            }
            _ => BundleRenewal::Disabled,
        };
        Ok(BundleChange::Installed {
            fingerprints: creds.ca.iter().map(|c| Fingerprint::of_der(c)).collect(),
            renewal,
        })
    }
}

/// What [`Tracker::install_bundle`] did.
#[derive(Debug)]
enum BundleChange {
    /// The bundle is the one already trusted: nothing was written.
    Same,
    /// `ca.crt` now holds the bundle and the credentials were reloaded.
    Installed {
        /// The bundle's CAs, in order.
        fingerprints: Vec<Fingerprint>,
        /// What it means for the device certificate.
        renewal: BundleRenewal,
    },
}

/// What a new CA bundle means for the device certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BundleRenewal {
    /// It is from the bundle's first CA.
    NotNeeded,
    /// It is not: the next renewal is due by then.
    Scheduled(OffsetDateTime),
    /// Renewal is off (the certificate could not be read at start).
    Disabled,
}

impl Observer for Tracker<'_> {
    fn connected(&mut self) {
        let now = OffsetDateTime::now_utc();
        self.status.update(|s| {
            s.state = State::Connected;
            s.since = now;
            s.connected_since = Some(now);
            s.sessions += 1;
            s.heartbeats_acked = 0;
        });
        let session = self.status.status.sessions;
        tracing::info!(gateway = %self.gateway, session, "connected");
        self.notifier.status(&format!(
            "connected to {} (session {session})",
            self.gateway
        ));
    }

    fn heartbeat_acked(&mut self, seq: u64) {
        let now = OffsetDateTime::now_utc();
        self.status.update(|s| {
            s.last_heartbeat_ack = Some(now);
            s.heartbeats_acked += 1;
        });
        tracing::debug!(seq, "heartbeat acknowledged");
    }

    fn renewal_due(&self) -> Option<tokio::time::Instant> {
        let due = self.renewal.as_ref()?.due();
        let delay = crate::renew::delay_until(due, OffsetDateTime::now_utc());
        Some(tokio::time::Instant::now() + delay)
    }

    fn renewal_request(&mut self) -> Option<String> {
        let renewal = self.renewal.as_mut()?;
        match renewal.request(OffsetDateTime::now_utc()) {
            Ok(csr) => {
                tracing::info!("requesting a renewed device certificate");
                Some(csr)
            }
            Err(e) => {
                tracing::error!("{e}");
                None
            }
        }
    }

    fn trust_bundle(&mut self, ca_pem: String, renew_within: Duration) {
        match self.install_bundle(&ca_pem, renew_within) {
            Ok(BundleChange::Same) => {
                tracing::debug!("the cloud's CA bundle is the one this device trusts")
            }
            Ok(BundleChange::Installed {
                fingerprints,
                renewal,
            }) => {
                let cas = fingerprints
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                let renewal_scheduled = matches!(renewal, BundleRenewal::Scheduled(_));
                let renewal = match renewal {
                    BundleRenewal::Scheduled(at) => format!(
                        "the device certificate is not from the first CA, renewing by {}",
                        at.format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default()
                    ),
                    BundleRenewal::NotNeeded => {
                        "the device certificate is from the first CA".to_owned()
                    }
                    BundleRenewal::Disabled => "certificate renewal is disabled".to_owned(),
                };
                tracing::info!(
                    cas = %cas,
                    renewal_scheduled,
                    renewal = %renewal,
                    "trusting a new CA bundle from the cloud"
                );
            }
            Err(e) => tracing::error!(
                "ignoring the CA bundle the gateway sent, keeping {}: {e}",
                self.config.ca_path().display()
            ),
        }
    }

    fn renewed(&mut self, certificate_pem: String) {
        let Some(renewal) = self.renewal.as_mut() else {
            return;
        };
        let not_after = match renewal.complete(&certificate_pem, OffsetDateTime::now_utc()) {
            Ok(identity) => identity.not_after,
            Err(e) => {
                tracing::error!("certificate renewal failed, keeping the current certificate: {e}");
                return;
            }
        };
        match Credentials::load(self.config) {
            Ok(creds) => self.tls = creds.tls,
            Err(e) => {
                tracing::error!("renewed credentials cannot be loaded: {e}");
                return;
            }
        }
        self.status.update(|s| s.certificate_expires_at = not_after);
        tracing::info!(
            certificate_expires_at = %not_after
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "device certificate renewed"
        );
    }
}

#[cfg(test)]
mod tests;
