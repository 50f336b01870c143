//! The mTLS gateway: holds agents' persistent sessions.
//!
//! TLS 1.3 only, ALPN `heex/1`, client certificates required and verified against the cloud
//! CA. The device id comes from the verified certificate (CN and SPIFFE URI SAN, which must
//! agree) and the device record is checked (exists, not revoked) before any frame is read.
//! Then: Hello → Welcome, Heartbeat → HeartbeatAck, Facts, Close.
//!
//! Revocation reaches a device's connections at every stage: a connection enters the
//! [`SessionRegistry`] as soon as its certificate names a device (before the record is
//! read), and the store refuses reports, last-seen records and renewals of a revoked device
//! in the write itself. Only the certificate serial the cloud issued last is admitted, plus
//! the previous one for [`GatewayOptions::cert_overlap`] after a renewal; only the current
//! one renews (compare-and-set in the store). At most
//! [`GatewayOptions::max_pending_per_device`] connections of a device wait for Hello, at
//! most [`GatewayOptions::max_unadmitted_per_source`] per source address wait to be
//! admitted, silent connections are closed after [`GatewayOptions::first_byte_timeout`]
//! without holding a handshake slot, and [`GatewayOptions::max_connections`] caps them all.
//!
//! Built to hold tens of thousands of idle sessions in one process at a few KiB each: one
//! small task per session (rare steps run in their own short-lived allocations), no buffer
//! while idle (TLS on rustls's unbuffered API, see `transport`; frames read header first,
//! payload allocated on arrival), an idle timeout that drops silent peers, and a bound on
//! concurrent TLS handshakes, the rest waiting in a deep accept backlog.
//! `docs/benchmarks.md` has the figures.

mod directory;
mod expired;
mod frames;
mod limits;
mod registry;
mod renew;
mod reports;
mod session;
mod tls;
mod transport;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use heex_proto::api::Facts;
use heex_proto::DeviceId;
use time::OffsetDateTime;

use crate::store::IssuedCert;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use registry::SessionRegistry;
pub use renew::{DeviceSigner, DEFAULT_RENEWAL_GRACE};
pub use tls::{server_config, TlsSetupError};

pub use crate::store::{DeviceStatus, Seen, StoredReports};

/// A store write refused because the device is revoked (or deleted): the session ends with
/// [`CloseReason::DeviceRevoked`](heex_proto::frame::CloseReason::DeviceRevoked).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("device revoked")]
pub struct DeviceNotLive;

/// The store operations the gateway uses. Implemented by the cloud's `Store`.
pub trait DeviceDirectory: Send + Sync + 'static {
    /// The device's record, or `None` when no such device exists.
    fn device_status(
        &self,
        id: &DeviceId,
    ) -> impl Future<Output = anyhow::Result<Option<DeviceStatus>>> + Send;

    /// Records that the device was heard from at `at`, with fresh facts and its agent's
    /// version when it sent them, by the session named `connection` (unique across the
    /// processes sharing the store). At Hello (`claim`) the session takes the device's
    /// connection mark; later it only refreshes its own. Nothing is recorded when the
    /// device is revoked or gone, or (without `claim`) another session holds the mark.
    fn record_seen(
        &self,
        id: &DeviceId,
        facts: Option<&Facts>,
        agent_version: Option<&str>,
        at: OffsetDateTime,
        connection: &str,
        claim: bool,
    ) -> impl Future<Output = anyhow::Result<Seen>> + Send;

    /// Clears the device's connection mark if it is still `connection`'s (a newer session
    /// may have replaced it).
    fn record_disconnected(
        &self,
        id: &DeviceId,
        connection: &str,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Records the device's certificate `cert` renewed from the one with serial
    /// `from_serial` (lowercase hex). False when the device does not exist, is revoked, or
    /// `from_serial` is no longer its current serial — unless the renewal that superseded
    /// it is repeated for the same key (its answer never reached the agent's disk): decided
    /// in the write, and then nothing changes.
    fn record_renewal(
        &self,
        id: &DeviceId,
        from_serial: &str,
        cert: IssuedCert,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;

    /// Stores the device's reports (sequence number, compact JSON), each (device, seq) at
    /// most once: one already stored with the same content is a redelivery and left alone,
    /// one stored with different content is a conflict (nothing changes). Resolves once the
    /// batch is durable. Fails with [`DeviceNotLive`] (nothing stored) when the device is revoked
    /// or gone, decided in the write.
    fn store_reports(
        &self,
        id: &DeviceId,
        reports: Arc<[(u64, String)]>,
    ) -> impl Future<Output = anyhow::Result<StoredReports>> + Send;

    /// The highest report sequence number stored for the device (0 when none).
    fn highest_report_seq(&self, id: &DeviceId)
        -> impl Future<Output = anyhow::Result<u64>> + Send;
}

/// TLS material for the gateway: the cloud CA (to verify clients) and the server identity.
pub struct GatewayTls {
    /// Cloud CA certificate, DER.
    pub ca_der: rustls_pki_types::CertificateDer<'static>,
    /// Server certificate chain (leaf first), DER.
    pub server_chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Server private key.
    pub server_key: rustls_pki_types::PrivateKeyDer<'static>,
    /// When set, the certificate presented instead of `server_chain` and `server_key`
    /// (replaceable while serving).
    pub server_cert: Option<Arc<crate::server_cert::ServerCert>>,
}

/// Timeouts and limits of the gateway. The defaults suit agents with the default
/// 30-second heartbeat (and any heartbeat up to a minute).
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// How long a new connection may stay silent before its first byte. No handshake slot
    /// is held meanwhile, so silent connections cannot keep others from being served.
    pub first_byte_timeout: Duration,
    /// Bound on one TLS handshake, once its first byte arrived: well under the agent's own
    /// 10-second TLS timeout, so a slot held by a stalled peer frees up while the agents
    /// waiting for it still wait.
    pub handshake_timeout: Duration,
    /// How long a new session may take to send Hello.
    pub hello_timeout: Duration,
    /// A session silent for this long is dropped as dead.
    pub idle_timeout: Duration,
    /// Bound on writing one frame to a session.
    pub write_timeout: Duration,
    /// Most TLS handshakes in progress at once; further connections wait for a slot (within
    /// the handshake timeout).
    pub max_handshakes: usize,
    /// Most connections open at once; the gateway closes further ones right after accepting
    /// them (with a rate-limited warning). Keep it below the process's descriptor limit,
    /// less what the API needs, so neither listener can starve the other.
    pub max_connections: usize,
    /// Most connections from one source address not admitted yet (before Welcome); further
    /// ones are closed at once.
    pub max_unadmitted_per_source: usize,
    /// Most connections of one device waiting for Hello; further ones are refused with a
    /// Close. An agent uses one.
    pub max_pending_per_device: usize,
    /// How long after a renewal the certificate it superseded is still admitted. The agent
    /// replaces its certificate files only after it received RenewResponse, so a reconnect
    /// in between (the session lost just then, a restart) presents the previous one; after
    /// the overlap only the current certificate is admitted, and only it may renew.
    pub cert_overlap: Duration,
    /// Heartbeats refresh the device's last-seen time at most this often.
    pub seen_interval: Duration,
    /// How long shutdown waits for sessions to send their Close.
    pub shutdown_grace: Duration,
    /// How long after its expiry a device certificate may still connect to renew.
    pub renewal_grace: Duration,
    /// Signs renewed device certificates; without one, renewal requests are refused.
    pub signer: Option<DeviceSigner>,
    /// The cloud's CAs, followed while serving (a CA rotation): device certificates are
    /// verified against the current bundle, and agents that understand it are sent the
    /// bundle when theirs differs. Without it, only [`GatewayTls::ca_der`] is trusted.
    pub trust: Option<crate::datadir::authority::Authorities>,
    /// An agent told of a new CA whose certificate is not from it renews at a random point
    /// within this spread.
    pub ca_renew_spread: Duration,
}

/// Default [`GatewayOptions::ca_renew_spread`]: a fleet's renewals onto a new CA spread
/// over an hour.
pub const DEFAULT_CA_RENEW_SPREAD: Duration = Duration::from_secs(3600);

/// Default [`GatewayOptions::max_connections`]: the 19,000 sessions `docs/benchmarks.md`
/// holds, leaving the rest of a 20,000-descriptor limit to the API.
pub const DEFAULT_MAX_CONNECTIONS: usize = 19_000;

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            first_byte_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(4),
            hello_timeout: Duration::from_secs(10),
            // Three times the longest heartbeat interval an agent accepts (60 s).
            idle_timeout: Duration::from_secs(180),
            write_timeout: Duration::from_secs(10),
            max_handshakes: 256,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_unadmitted_per_source: 32,
            max_pending_per_device: 4,
            cert_overlap: Duration::from_secs(10 * 60),
            seen_interval: Duration::from_secs(180),
            shutdown_grace: Duration::from_secs(5),
            renewal_grace: DEFAULT_RENEWAL_GRACE,
            signer: None,
            trust: None,
            ca_renew_spread: DEFAULT_CA_RENEW_SPREAD,
        }
    }
}

/// Trusts the CAs of each new authority for client certificates, until `shutdown`.
async fn follow_trust(
    mut changes: tokio::sync::watch::Receiver<Arc<crate::datadir::authority::Authority>>,
    trusted: Arc<tls::TrustedCas>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        let authority = Arc::clone(&changes.borrow_and_update());
        match trusted.replace(authority.bundle()) {
            Ok(()) => tracing::info!(
                cas = authority.bundle().len(),
                "the gateway accepts device certificates from the new CA bundle"
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot trust the new CA bundle; keeping the current one")
            }
        }
    }
}

/// Serves agent sessions on `listener` until `shutdown` is cancelled, then sends Close to
/// every session and returns.
pub async fn serve<D: DeviceDirectory>(
    listener: TcpListener,
    tls: GatewayTls,
    directory: Arc<D>,
    registry: SessionRegistry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_with(
        listener,
        tls,
        directory,
        registry,
        shutdown,
        GatewayOptions::default(),
    )
    .await
}

/// [`serve`] with explicit timeouts and limits.
pub async fn serve_with<D: DeviceDirectory>(
    listener: TcpListener,
    tls: GatewayTls,
    directory: Arc<D>,
    registry: SessionRegistry,
    shutdown: CancellationToken,
    options: GatewayOptions,
) -> anyhow::Result<()> {
    let (config, trusted) = tls::server_config_with(tls)?;
    if let Some(trust) = &options.trust {
        trusted.replace(trust.current().bundle())?;
        tokio::spawn(follow_trust(trust.subscribe(), trusted, shutdown.clone()));
    }
    let connections = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let sources = limits::Sources::new(options.max_unadmitted_per_source.max(1));
    let grace = options.shutdown_grace;
    let shared = Arc::new(session::Shared {
        directory,
        registry,
        shutdown: shutdown.clone(),
        handshakes: Arc::new(Semaphore::new(options.max_handshakes.max(1))),
        options,
        tls: config,
    });
    let tracker = TaskTracker::new();
    let over_cap = limits::RateLimitedWarn::new();
    let over_source = limits::RateLimitedWarn::new();

    loop {
        // Accepted at once, whatever the load: a connection costs a descriptor and a small
        // task until its first byte (bounded in time, no handshake slot held), and the caps
        // below bound how many there are.
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Typically EMFILE/ENFILE: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(connection) = connections.clone().try_acquire_owned() else {
            over_cap.warn(|refused| {
                tracing::warn!(
                    refused,
                    max = shared.options.max_connections,
                    "gateway connection limit reached: closing new connections"
                )
            });
            drop(tcp);
            continue;
        };
        let Some(source) = sources.enter(peer.ip()) else {
            over_source.warn(|refused| {
                tracing::warn!(
                    refused,
                    source = %peer.ip(),
                    max = shared.options.max_unadmitted_per_source,
                    "too many connections from one address waiting to be admitted: closing new ones"
                )
            });
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let admission = session::Admission { connection, source };
        tracker.spawn(session::run(tcp, peer, shared.clone(), admission));
    }

    drop(listener);
    tracker.close();
    tracing::info!(
        sessions = shared.registry.connected_count(),
        "gateway shutting down"
    );
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            remaining = tracker.len(),
            "sessions still closing after the grace period"
        );
    }
    Ok(())
}
