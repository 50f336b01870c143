//! One agent session, from the TLS handshake to its end. One lightweight task each.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use heex_pki::{DeviceCertificate, IdentityError};
use heex_proto::frame::{CloseReason, Message};
use heex_proto::{DeviceId, SpiffeId};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::frames::{self, FrameIoError, FrameReader};
use super::limits::SourceSlot;
use super::registry::{Registration, SessionRegistry, TooManyPending};
use super::reports::StoreFailure;
use super::transport::TlsTransport;
use super::{renew, DeviceDirectory, DeviceStatus, GatewayOptions, Seen};

/// What every session shares.
pub(crate) struct Shared<D> {
    pub directory: Arc<D>,
    pub registry: SessionRegistry,
    pub shutdown: CancellationToken,
    /// Bounds the TLS handshakes in progress.
    pub handshakes: Arc<Semaphore>,
    pub options: GatewayOptions,
    pub tls: Arc<rustls::ServerConfig>,
}

/// What the accept loop gave a connection: its place under the connection cap (held for
/// the connection's life) and under its source address's cap (held until admitted).
pub(crate) struct Admission {
    pub connection: OwnedSemaphorePermit,
    pub source: SourceSlot,
}

type Stream = TlsTransport;

/// Runs one connection: first byte, handshake, identity and device checks, Hello, then the
/// frame loop.
pub(crate) async fn run<D: DeviceDirectory>(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared<D>>,
    admission: Admission,
) {
    let Admission { connection, source } = admission;
    let Some(mut stream) = Box::pin(handshake(tcp, peer, &shared)).await else {
        return;
    };
    let mut session = Session {
        shared: &shared,
        peer,
        buf: Vec::new(),
        reader: FrameReader::default(),
        identity: None,
        cert_not_after: None,
        hello_next_report: 0,
        serial: String::new(),
        source: Some(source),
        trust: Trust::NotSent,
    };
    session.serve(&mut stream).await;
    drop(session);
    // close_notify, bounded: the peer may be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    drop(connection);
}

/// Waits for the connection's first byte (holding no handshake slot), then runs the TLS
/// handshake holding one, each bounded in time.
///
/// Every idle session keeps its task's memory for as long as it is connected, and a task
/// is as large as the largest state it may ever be in: rarely taken steps (handshake,
/// admission, Close, renewal, store calls) therefore run in their own short-lived
/// allocations, and the stream lives in one box of its own. `session_task_stays_small`
/// keeps this honest.
async fn handshake<D: DeviceDirectory>(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared<D>,
) -> Option<Box<Stream>> {
    let opts = &shared.options;
    // A silent connection costs its descriptor for this long, and no handshake slot.
    let first_byte = tokio::time::timeout(opts.first_byte_timeout, tcp.readable());
    let first_byte = tokio::select! {
        _ = shared.shutdown.cancelled() => return None,
        r = first_byte => r,
    };
    match first_byte {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection failed before its first byte");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "no TLS bytes in time: closing the connection");
            return None;
        }
    }
    let slot = tokio::time::timeout(
        opts.handshake_timeout,
        shared.handshakes.clone().acquire_owned(),
    );
    let permit = tokio::select! {
        _ = shared.shutdown.cancelled() => return None,
        r = slot => match r {
            Ok(Ok(permit)) => permit,
            _ => {
                tracing::debug!(%peer, "no handshake slot free in time: closing the connection");
                return None;
            }
        },
    };
    let handshake = tokio::time::timeout(
        opts.handshake_timeout,
        Box::pin(TlsTransport::accept(tcp, shared.tls.clone())),
    );
    let result = tokio::select! {
        _ = shared.shutdown.cancelled() => return None,
        r = handshake => r,
    };
    drop(permit);
    match result {
        Ok(Ok(s)) => Some(Box::new(s)),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            crate::metrics::get().handshake_failed(crate::metrics::handshake_error(&e));
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            crate::metrics::get().handshake_failed("timeout");
            None
        }
    }
}

struct Session<'a, D> {
    shared: &'a Shared<D>,
    peer: SocketAddr,
    buf: Vec<u8>,
    reader: FrameReader,
    /// The verified identity, once known (renewal certifies it again).
    identity: Option<SpiffeId>,
    /// Expiry of the session's newest certificate: the peer's, or the one it renewed to.
    /// Once past it (within the renewal grace) the session may only renew.
    cert_not_after: Option<OffsetDateTime>,
    /// Hello's `next_report_seq`: the number the agent's next new report gets.
    hello_next_report: u64,
    /// Serial (lowercase hex) of the session's newest certificate: only the device's
    /// current certificate may renew.
    serial: String,
    /// The connection's place under its source address's cap, released once admitted.
    source: Option<SourceSlot>,
    /// The cloud CA bundle the agent holds, as far as this session knows.
    trust: Trust,
}

/// The CA bundle an agent holds, for sending it the cloud's when they differ.
enum Trust {
    /// The agent does not take bundles (an older agent), or the gateway has none to send.
    NotSent,
    /// The agent's bundle is not the cloud's, or not known to be.
    Unknown,
    /// The agent holds this one.
    Holds(Arc<crate::datadir::authority::Authority>),
}

/// How the frame loop ended, for the log line.
enum End {
    /// We sent Close with this reason.
    Sent(CloseReason),
    /// The agent sent Close.
    Received(CloseReason),
    /// The connection failed or went silent.
    Lost(String),
}

impl<D: DeviceDirectory> Session<'_, D> {
    async fn send(&mut self, stream: &mut Stream, msg: &Message) -> Result<(), FrameIoError> {
        match tokio::time::timeout(
            self.shared.options.write_timeout,
            frames::write(stream, msg, &mut self.buf),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(FrameIoError::Io(std::io::ErrorKind::TimedOut.into())),
        }
    }

    /// Sends Welcome (with where the agent's report numbering resumes), then the cloud's CA
    /// bundle if the agent needs it.
    async fn welcome(
        &mut self,
        stream: &mut Stream,
        device: &DeviceId,
        admitted: OffsetDateTime,
        session: u64,
    ) -> Result<(), FrameIoError> {
        let next_report_seq = Box::pin(super::reports::resume_point(
            &*self.shared.directory,
            device,
            self.hello_next_report,
        ))
        .await;
        let welcome = Message::Welcome {
            device_id: device.clone(),
            server_time: admitted.unix_timestamp(),
            next_report_seq,
        };
        let peer = self.peer;
        tracing::info!(session, %device, %peer, "session accepted");
        self.send(stream, &welcome).await?;
        self.sync_trust(stream, device).await
    }

    /// Sends the cloud's current CA bundle when the agent takes bundles and does not hold
    /// it: after Welcome, and then with the answer to the agent's next frame (a heartbeat
    /// interval at most after the cloud's CAs changed).
    async fn sync_trust(
        &mut self,
        stream: &mut Stream,
        device: &DeviceId,
    ) -> Result<(), FrameIoError> {
        let Some(cas) = &self.shared.options.trust else {
            return Ok(());
        };
        let authority = cas.current();
        match &self.trust {
            Trust::NotSent => return Ok(()),
            Trust::Holds(held) if Arc::ptr_eq(held, &authority) => return Ok(()),
            Trust::Holds(held) if held.digest() == authority.digest() => {
                self.trust = Trust::Holds(authority);
                return Ok(());
            }
            _ => {}
        }
        tracing::info!(%device, cas = authority.bundle().len(), "sending the cloud's CA bundle");
        let msg = Message::TrustBundle {
            ca_pem: authority.bundle_pem().to_owned(),
            renew_within_secs: self.shared.options.ca_renew_spread.as_secs(),
        };
        self.send(stream, &msg).await?;
        self.trust = Trust::Holds(authority);
        Ok(())
    }

    /// Tells the agent about stored reports: conflicts, then the cumulative ack.
    async fn send_answers(
        &mut self,
        stream: &mut Stream,
        stored: super::StoredReports,
    ) -> Result<(), FrameIoError> {
        for answer in super::reports::answers(&stored) {
            self.send(stream, &answer).await?;
        }
        Ok(())
    }

    /// Sends Close (best effort) and reports it.
    fn close<'s>(
        &'s mut self,
        stream: &'s mut Stream,
        reason: CloseReason,
        message: &'s str,
    ) -> Pin<Box<dyn Future<Output = End> + Send + 's>> {
        Box::pin(async move {
            let msg = Message::Close {
                reason,
                message: message.to_owned(),
            };
            let _ = self.send(stream, &msg).await;
            End::Sent(reason)
        })
    }

    /// Admission: ALPN, identity, a place in the registry (from then on a revocation
    /// reaches the connection), device record and certificate serial, certificate expiry,
    /// then Hello, whose facts are recorded, and the place becomes the live session. The
    /// device, the time it was admitted and the registration, or `None` when the session
    /// was refused (Close already sent).
    async fn admit(
        &mut self,
        stream: &mut Stream,
    ) -> Option<(DeviceId, OffsetDateTime, Registration)> {
        let peer = self.peer;
        let metrics = crate::metrics::get();
        if stream.alpn_protocol() != Some(heex_proto::ALPN) {
            tracing::info!(%peer, "refused: client did not negotiate ALPN heex/1");
            metrics.handshake_failed("alpn");
            return None;
        }
        // The leaf is read once: identity, serial and expiry.
        let leaf = stream
            .peer_certificates()
            .and_then(|certs| certs.first())
            .ok_or(IdentityError::NoCertificate)
            .and_then(|leaf| DeviceCertificate::parse(leaf));
        let (identity, serial, not_after) = match leaf {
            Ok(leaf) => (leaf.spiffe, leaf.cert.serial, leaf.cert.not_after),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "refused: certificate does not name a device");
                metrics.handshake_failed("bad_identity");
                let _ = self
                    .close(stream, CloseReason::DeviceUnknown, &e.to_string())
                    .await;
                return None;
            }
        };
        let device = identity.device().clone();
        // Registered before the device record is read: a revocation either is in the
        // record read below or closes this registration afterwards.
        let max_pending = self.shared.options.max_pending_per_device.max(1);
        let mut registration = match self.shared.registry.enter(&device, &serial, max_pending) {
            Ok(r) => r,
            Err(TooManyPending(n)) => {
                let msg = format!(
                    "device {device} already has {n} connections waiting to send hello, the most allowed"
                );
                tracing::info!(%peer, %device, "refused: {msg}");
                metrics.handshake_failed("too_many_pending");
                let _ = self.close(stream, CloseReason::ProtocolError, &msg).await;
                return None;
            }
        };
        if let Some((reason, message)) = self.check_device(&identity, &serial).await {
            tracing::info!(%peer, %device, ?reason, "refused: {message}");
            metrics.handshake_failed(match reason {
                CloseReason::DeviceRevoked => "revoked",
                CloseReason::DeviceUnknown => "unknown_device",
                CloseReason::CertificateSuperseded => "certificate_superseded",
                _ => "unavailable",
            });
            let _ = self.close(stream, reason, &message).await;
            return None;
        }
        if let Some(message) = self.check_expiry(not_after) {
            tracing::info!(%peer, %device, "refused: {message}");
            metrics.handshake_failed("expired");
            let _ = self
                .close(stream, CloseReason::CertificateExpired, &message)
                .await;
            return None;
        }
        self.identity = Some(identity);
        self.serial = serial;

        // The device is known and not revoked: now, and only now, read its frames.
        let first = tokio::select! {
            _ = self.shared.shutdown.cancelled() => {
                let _ = self.close(stream, CloseReason::Shutdown, "gateway shutting down").await;
                return None;
            }
            reason = &mut registration.close => {
                let reason = reason.unwrap_or(CloseReason::Shutdown);
                tracing::info!(%peer, %device, ?reason, "closed before hello");
                let _ = self.close(stream, reason, close_message(reason)).await;
                return None;
            }
            r = tokio::time::timeout(self.shared.options.hello_timeout, self.reader.read(stream)) => r,
        };
        let (facts, agent_version) = match first {
            Ok(Ok(Message::Hello {
                facts,
                agent_version,
                next_report_seq,
                ca_bundle,
            })) => {
                tracing::debug!(%device, agent_version = %agent_version.escape_debug(), "hello");
                self.hello_next_report = next_report_seq;
                if let (Some(digest), Some(trust)) = (ca_bundle, &self.shared.options.trust) {
                    let current = trust.current();
                    self.trust = if current.digest() == digest {
                        Trust::Holds(current)
                    } else {
                        Trust::Unknown
                    };
                }
                (facts, agent_version)
            }
            Ok(Ok(other)) => {
                let msg = format!("expected hello, got {}", other.kind());
                tracing::info!(%peer, %device, "refused: {msg}");
                let _ = self.close(stream, CloseReason::ProtocolError, &msg).await;
                return None;
            }
            Ok(Err(e)) => {
                tracing::info!(%peer, %device, error = %e, "session failed before hello");
                if let FrameIoError::Frame(e) = e {
                    let _ = self
                        .close(stream, CloseReason::ProtocolError, &e.to_string())
                        .await;
                }
                return None;
            }
            Err(_) => {
                tracing::info!(%peer, %device, "no hello in time");
                return None;
            }
        };
        if let Err(e) = facts
            .check()
            .and_then(|()| heex_proto::facts::check_agent_version(&agent_version))
        {
            let msg = format!("hello refused: {e}");
            tracing::info!(%peer, %device, "refused: {msg}");
            let _ = self.close(stream, CloseReason::ProtocolError, &msg).await;
            return None;
        }
        // Recorded before the session counts as connected, so whoever sees it connected
        // sees its facts too. The write refuses a device revoked since the check above.
        let now = OffsetDateTime::now_utc();
        let seen = self
            .record_seen(
                &device,
                Some(&facts),
                Some(&agent_version),
                now,
                &registration.connection,
                true,
            )
            .await;
        let live = seen == Seen::Recorded;
        // Welcomed only if no revocation closed the registration meanwhile.
        if !live || !self.shared.registry.promote(&registration) {
            if live {
                self.record_disconnected(&device, &registration.connection)
                    .await;
            }
            let reason = registration
                .close
                .try_recv()
                .unwrap_or(CloseReason::DeviceRevoked);
            tracing::info!(%peer, %device, ?reason, "refused at hello");
            crate::metrics::get().handshake_failed(if reason == CloseReason::Replaced {
                "replaced"
            } else {
                "revoked"
            });
            let _ = self.close(stream, reason, close_message(reason)).await;
            return None;
        }
        // Admitted: no longer counts against its source address.
        self.source = None;
        Some((device, now, registration))
    }

    async fn serve(&mut self, stream: &mut Stream) {
        let Some((device, admitted, mut registration)) = Box::pin(self.admit(stream)).await else {
            return;
        };
        let session = registration.session;
        let mut last_recorded = Instant::now();
        // Boxed so that the Welcome takes no room in the idle session.
        let welcomed = Box::pin(self.welcome(stream, &device, admitted, session)).await;
        let end = match welcomed {
            Err(e) => End::Lost(e.to_string()),
            Ok(()) => {
                // Counted live until it drops, however the session ends.
                let _live = crate::metrics::get().session_opened();
                self.frame_loop(stream, &device, &mut registration, &mut last_recorded)
                    .await
            }
        };
        crate::metrics::get().session_closed(match &end {
            End::Sent(reason) => crate::metrics::close_reason(*reason),
            End::Received(_) => "closed_by_agent",
            End::Lost(_) => "connection_lost",
        });

        let connection = std::mem::take(&mut registration.connection);
        drop(registration);
        // After leaving the registry, so the API never sees the mark gone while this
        // process still counts the session live.
        self.record_disconnected(&device, &connection).await;
        match end {
            End::Sent(reason) => {
                tracing::info!(session, %device, ?reason, "session closed by gateway")
            }
            End::Received(reason) => {
                tracing::info!(session, %device, ?reason, "session closed by agent")
            }
            End::Lost(why) => tracing::info!(session, %device, "session lost: {why}"),
        }
    }

    /// Applies the renewal grace to the peer's certificate: `None` to go on (renew-only when
    /// expired within the grace), or the message of the Close to send.
    fn check_expiry(&mut self, not_after: OffsetDateTime) -> Option<String> {
        self.cert_not_after = Some(not_after);
        match self.expiry_now() {
            renew::Expiry::Beyond(not_after) => Some(renew::beyond_grace_message(
                not_after,
                self.shared.options.renewal_grace,
            )),
            renew::Expiry::Valid | renew::Expiry::RenewOnly => None,
        }
    }

    /// Where the session's newest certificate stands now.
    fn expiry_now(&self) -> renew::Expiry {
        match self.cert_not_after {
            Some(not_after) => renew::classify(
                not_after,
                OffsetDateTime::now_utc(),
                self.shared.options.renewal_grace,
            ),
            None => renew::Expiry::Valid,
        }
    }

    /// Refuses frames an expired session may not send: past the grace, anything; within it,
    /// anything but renewal, heartbeats and Close. `Some` when the session ended.
    async fn expiry_gate(&mut self, stream: &mut Stream, msg: &Message) -> Option<End> {
        let message = match self.expiry_now() {
            renew::Expiry::Valid => return None,
            renew::Expiry::RenewOnly => match msg {
                Message::Heartbeat { .. }
                | Message::RenewRequest { .. }
                | Message::Close { .. } => return None,
                other => format!(
                    "certificate expired: renew before sending {} frames",
                    other.kind()
                ),
            },
            renew::Expiry::Beyond(not_after) => {
                renew::beyond_grace_message(not_after, self.shared.options.renewal_grace)
            }
        };
        Some(
            self.close(stream, CloseReason::CertificateExpired, &message)
                .await,
        )
    }

    /// The device record's verdict on a connection presenting the certificate with
    /// `serial`: `None` to accept, or the Close to send.
    async fn check_device(
        &self,
        identity: &SpiffeId,
        serial: &str,
    ) -> Option<(CloseReason, String)> {
        // Boxed, as every rarely taken await in the session: see `run`.
        let status = Box::pin(self.shared.directory.device_status(identity.device())).await;
        match status {
            Ok(None) => Some((CloseReason::DeviceUnknown, "no such device".to_owned())),
            Ok(Some(s)) if s.revoked_at.is_some() => {
                Some((CloseReason::DeviceRevoked, "device revoked".to_owned()))
            }
            Ok(Some(s)) if s.workspace_id != *identity.workspace() => Some((
                CloseReason::DeviceUnknown,
                "certificate names another workspace".to_owned(),
            )),
            Ok(Some(s)) => self.check_serial(&s, serial),
            Err(e) => {
                tracing::error!(device = %identity.device(), error = %e, "device lookup failed");
                // Tell the agent to come back later, as after a restart.
                Some((
                    CloseReason::Shutdown,
                    "gateway temporarily unavailable".to_owned(),
                ))
            }
        }
    }

    /// Admits the device's current certificate, and the one it superseded for the overlap
    /// after the renewal; nothing older.
    fn check_serial(&self, status: &DeviceStatus, serial: &str) -> Option<(CloseReason, String)> {
        if status.cert_serial == serial {
            return None;
        }
        let overlap = self.shared.options.cert_overlap;
        if let Some((previous, superseded_at)) = &status.previous_cert {
            if previous == serial && OffsetDateTime::now_utc() - *superseded_at <= overlap {
                tracing::info!(peer = %self.peer, %serial, "admitted on the certificate superseded by the last renewal");
                return None;
            }
        }
        Some((
            CloseReason::CertificateSuperseded,
            format!(
                "certificate {serial} was superseded by a renewal; only the device's current \
                 certificate is admitted (the previous one for {} after a renewal)",
                humantime::format_duration(overlap)
            ),
        ))
    }

    /// Records that the device was heard from (taking its connection mark with `claim`);
    /// a store failure only logs and counts as recorded: the session goes on.
    async fn record_seen(
        &self,
        device: &DeviceId,
        facts: Option<&heex_proto::api::Facts>,
        agent_version: Option<&str>,
        at: OffsetDateTime,
        connection: &str,
        claim: bool,
    ) -> Seen {
        let recorded = Box::pin(self.shared.directory.record_seen(
            device,
            facts,
            agent_version,
            at,
            connection,
            claim,
        ))
        .await;
        match recorded {
            Ok(seen) => seen,
            Err(e) => {
                tracing::warn!(%device, error = %e, "cannot record that the device was seen");
                Seen::Recorded
            }
        }
    }

    /// Ends the session when a record found the device revoked or another session holding
    /// its mark.
    async fn end_unless_recorded(
        &mut self,
        stream: &mut Stream,
        device: &DeviceId,
        seen: Seen,
    ) -> Option<End> {
        let reason = match seen {
            Seen::Recorded => return None,
            Seen::NotLive => CloseReason::DeviceRevoked,
            Seen::Superseded => {
                tracing::info!(%device, "session replaced by a newer one elsewhere");
                CloseReason::Replaced
            }
        };
        Some(self.close(stream, reason, close_message(reason)).await)
    }

    /// Clears the device's connection mark if it is still this session's (a store failure
    /// only logs: the next gateway start clears the marks).
    async fn record_disconnected(&self, device: &DeviceId, connection: &str) {
        let cleared = Box::pin(
            self.shared
                .directory
                .record_disconnected(device, connection),
        )
        .await;
        if let Err(e) = cleared {
            tracing::warn!(%device, error = %e, "cannot record that the device disconnected");
        }
    }

    async fn frame_loop(
        &mut self,
        stream: &mut Stream,
        device: &DeviceId,
        registration: &mut Registration,
        last_recorded: &mut Instant,
    ) -> End {
        let shared = self.shared;
        let opts = &shared.options;
        let shutdown = &shared.shutdown;
        let mut last_frame = Instant::now();
        let mut reports: Option<super::reports::ReportSink> = None;
        loop {
            let msg = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    return self.close(stream, CloseReason::Shutdown, "gateway shutting down").await;
                }
                reason = &mut registration.close => {
                    // A dropped sender only happens when the registry itself goes away.
                    let reason = reason.unwrap_or(CloseReason::Shutdown);
                    return self.close(stream, reason, close_message(reason)).await;
                }
                _ = tokio::time::sleep_until(last_frame + opts.idle_timeout) => {
                    return End::Lost(format!("silent for {:?}", opts.idle_timeout));
                }
                ack = super::reports::next_ack(&mut reports) => {
                    match ack {
                        Ok(stored) => {
                            // Boxed: the answers take no room in the idle session.
                            let sent = Box::pin(self.send_answers(stream, stored)).await;
                            if let Err(e) = sent {
                                return End::Lost(e.to_string());
                            }
                        }
                        // Revoked since admission: the store refused the reports.
                        Err(StoreFailure::DeviceRevoked) => {
                            return self.close(stream, CloseReason::DeviceRevoked, "device revoked").await;
                        }
                        // Come back later, as after a restart; unacked reports are resent.
                        Err(StoreFailure::Failed) => {
                            return self.close(stream, CloseReason::Shutdown, "cannot store reports now").await;
                        }
                    }
                    continue;
                }
                r = self.reader.read(stream) => r,
            };
            last_frame = Instant::now();
            let who = (
                device,
                registration.session,
                registration.connection.as_str(),
            );
            let step = Box::pin(self.handle(stream, who, msg, &mut reports, last_recorded));
            if let Some(end) = step.await {
                return end;
            }
        }
    }

    /// One frame read by the loop (or the failure to read one): `Some` when the session
    /// ended. Runs in its own allocation, so the idle session holds none of its state.
    async fn handle(
        &mut self,
        stream: &mut Stream,
        (device, session, connection): (&DeviceId, u64, &str),
        msg: Result<Message, FrameIoError>,
        reports: &mut Option<super::reports::ReportSink>,
        last_recorded: &mut Instant,
    ) -> Option<End> {
        let shared = self.shared;
        let opts = &shared.options;
        let msg = match msg {
            Ok(m) => m,
            Err(FrameIoError::Frame(e)) => {
                let end = self
                    .close(stream, CloseReason::ProtocolError, &e.to_string())
                    .await;
                return Some(end);
            }
            Err(e) => return Some(End::Lost(e.to_string())),
        };
        if let Err(e) = self.sync_trust(stream, device).await {
            return Some(End::Lost(e.to_string()));
        }
        if let Some(end) = self.expiry_gate(stream, &msg).await {
            return Some(end);
        }
        match msg {
            Message::Heartbeat { seq } => {
                if let Err(e) = self.send(stream, &Message::HeartbeatAck { seq }).await {
                    return Some(End::Lost(e.to_string()));
                }
                if last_recorded.elapsed() >= opts.seen_interval {
                    *last_recorded = Instant::now();
                    let now = OffsetDateTime::now_utc();
                    let seen = self
                        .record_seen(device, None, None, now, connection, false)
                        .await;
                    if let Some(end) = self.end_unless_recorded(stream, device, seen).await {
                        return Some(end);
                    }
                }
            }
            Message::Facts { facts } => {
                if let Err(e) = facts.check() {
                    let msg = format!("facts refused: {e}");
                    tracing::info!(%device, "{msg}");
                    return Some(self.close(stream, CloseReason::ProtocolError, &msg).await);
                }
                *last_recorded = Instant::now();
                let now = OffsetDateTime::now_utc();
                let seen = self
                    .record_seen(device, Some(&facts), None, now, connection, false)
                    .await;
                if let Some(end) = self.end_unless_recorded(stream, device, seen).await {
                    return Some(end);
                }
            }
            Message::RenewRequest { csr_pem } => {
                let renewed = match &self.identity {
                    Some(identity) => {
                        Box::pin(renew::renew(
                            &*shared.directory,
                            opts.signer.as_ref(),
                            identity,
                            &self.serial,
                            &csr_pem,
                        ))
                        .await
                    }
                    None => Err((CloseReason::ProtocolError, "no identity".to_owned())),
                };
                match renewed {
                    Ok(renewed) => {
                        self.cert_not_after = Some(renewed.not_after);
                        shared.registry.set_serial(device, session, &renewed.serial);
                        self.serial = renewed.serial;
                        let reply = Message::RenewResponse {
                            certificate_pem: renewed.pem,
                        };
                        if let Err(e) = self.send(stream, &reply).await {
                            return Some(End::Lost(e.to_string()));
                        }
                    }
                    Err((reason, message)) => {
                        tracing::info!(%device, ?reason, "renewal refused: {message}");
                        return Some(self.close(stream, reason, &message).await);
                    }
                }
            }
            Message::Close { reason, message } => {
                tracing::debug!(%device, ?reason, %message, "agent closed the session");
                return Some(End::Received(reason));
            }
            Message::Report { seq, payload } => {
                let sink = reports.get_or_insert_with(|| {
                    super::reports::ReportSink::spawn(shared.directory.clone(), device.clone())
                });
                if let Err(msg) = sink.push(seq, payload) {
                    tracing::info!(%device, "refused report: {msg}");
                    return Some(self.close(stream, CloseReason::ProtocolError, &msg).await);
                }
            }
            other => {
                let msg = format!("unexpected {} frame", other.kind());
                return Some(self.close(stream, CloseReason::ProtocolError, &msg).await);
            }
        }
        None
    }
}

fn close_message(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::DeviceRevoked => "device revoked",
        CloseReason::Replaced => "a newer session of this device replaced this one",
        CloseReason::Shutdown => "gateway shutting down",
        CloseReason::CertificateSuperseded => "certificate superseded by a renewal",
        _ => "closed by the gateway",
    }
}
