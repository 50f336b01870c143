//! One agent session, from the TLS handshake to its end. One lightweight task each.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use heex_proto::frame::{CloseReason, Message};
use heex_proto::{DeviceId, SpiffeId};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::frames::{self, FrameIoError, FrameReader};
use super::registry::SessionRegistry;
use super::transport::TlsTransport;
use super::{renew, tls, DeviceDirectory, GatewayOptions};

/// What every session shares.
pub(crate) struct Shared<D> {
    pub directory: Arc<D>,
    pub registry: SessionRegistry,
    pub shutdown: CancellationToken,
    pub options: GatewayOptions,
    pub tls: Arc<rustls::ServerConfig>,
}

type Stream = TlsTransport;

/// Runs one connection: handshake (holding `permit`, which bounds concurrent handshakes),
/// identity and device checks, then the frame loop.
pub(crate) async fn run<D: DeviceDirectory>(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared<D>>,
    permit: OwnedSemaphorePermit,
) {
    let Some(mut stream) = handshake(tcp, peer, &shared, permit).await else {
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
    };
    session.serve(&mut stream).await;
    // close_notify, bounded: the peer may be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// The TLS handshake, bounded in time; releases the handshake slot when done.
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
    permit: OwnedSemaphorePermit,
) -> Option<Box<Stream>> {
    let handshake = tokio::time::timeout(
        shared.options.handshake_timeout,
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
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
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

    /// Admission: ALPN, identity, device record, certificate expiry, then Hello, whose facts
    /// are recorded. The device and the time it was admitted, or `None` when the session was
    /// refused (Close already sent).
    async fn admit(&mut self, stream: &mut Stream) -> Option<(DeviceId, OffsetDateTime)> {
        let peer = self.peer;
        if stream.alpn_protocol() != Some(heex_proto::ALPN) {
            tracing::info!(%peer, "refused: client did not negotiate ALPN heex/1");
            return None;
        }
        let identity = stream
            .peer_certificates()
            .and_then(|certs| certs.first())
            .ok_or(tls::IdentityError::Unparsable)
            .and_then(tls::peer_identity);
        let identity = match identity {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "refused: certificate does not name a device");
                let _ = self
                    .close(stream, CloseReason::DeviceUnknown, &e.to_string())
                    .await;
                return None;
            }
        };
        let device = identity.device().clone();
        if let Some((reason, message)) = self.check_device(&identity).await {
            tracing::info!(%peer, %device, ?reason, "refused: {message}");
            let _ = self.close(stream, reason, message).await;
            return None;
        }
        if let Some(message) = self.check_expiry(stream) {
            tracing::info!(%peer, %device, "refused: {message}");
            let _ = self
                .close(stream, CloseReason::CertificateExpired, &message)
                .await;
            return None;
        }
        self.identity = Some(identity);

        // The device is known and not revoked: now, and only now, read its frames.
        let first = tokio::select! {
            _ = self.shared.shutdown.cancelled() => {
                let _ = self.close(stream, CloseReason::Shutdown, "gateway shutting down").await;
                return None;
            }
            r = tokio::time::timeout(self.shared.options.hello_timeout, self.reader.read(stream)) => r,
        };
        let facts = match first {
            Ok(Ok(Message::Hello {
                facts,
                agent_version,
                next_report_seq,
            })) => {
                tracing::debug!(%device, %agent_version, "hello");
                self.hello_next_report = next_report_seq;
                facts
            }
            Ok(Ok(other)) => {
                let msg = format!("expected hello, got {}", kind(&other));
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
        if let Err(e) = facts.check() {
            let msg = format!("hello refused: {e}");
            tracing::info!(%peer, %device, "refused: {msg}");
            let _ = self.close(stream, CloseReason::ProtocolError, &msg).await;
            return None;
        }
        // Recorded before the session counts as connected, so whoever sees it connected
        // sees its facts too.
        let now = OffsetDateTime::now_utc();
        self.record_seen(&device, Some(&facts), now).await;
        Some((device, now))
    }

    async fn serve(&mut self, stream: &mut Stream) {
        let peer = self.peer;
        let Some((device, admitted)) = Box::pin(self.admit(stream)).await else {
            return;
        };
        let mut registration = self.shared.registry.register(&device);
        let session = registration.session;
        let mut last_recorded = Instant::now();
        // Scoped so that the Welcome takes no room in the idle session.
        let welcomed = {
            let next_report_seq = Box::pin(super::reports::resume_point(
                &*self.shared.directory,
                &device,
                self.hello_next_report,
            ))
            .await;
            let welcome = Message::Welcome {
                device_id: device.clone(),
                server_time: admitted.unix_timestamp(),
                next_report_seq,
            };
            tracing::info!(session, %device, %peer, "session accepted");
            self.send(stream, &welcome).await
        };
        let end = match welcomed {
            Err(e) => End::Lost(e.to_string()),
            Ok(()) => {
                self.frame_loop(stream, &device, &mut registration.close, &mut last_recorded)
                    .await
            }
        };
        self.shared.registry.deregister(&device, session);
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
    fn check_expiry(&mut self, stream: &Stream) -> Option<String> {
        let leaf = stream.peer_certificates()?.first()?;
        let Some(not_after) = renew::not_after(leaf) else {
            // The verifier parsed this certificate already.
            return Some("certificate does not parse".to_owned());
        };
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
                    kind(other)
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

    /// The device record's verdict: `None` to accept, or the Close to send.
    async fn check_device(&self, identity: &SpiffeId) -> Option<(CloseReason, &'static str)> {
        // Boxed, as every rarely taken await in the session: see `run`.
        let status = Box::pin(self.shared.directory.device_status(identity.device())).await;
        match status {
            Ok(None) => Some((CloseReason::DeviceUnknown, "no such device")),
            Ok(Some(s)) if s.revoked_at.is_some() => {
                Some((CloseReason::DeviceRevoked, "device revoked"))
            }
            Ok(Some(s)) if s.workspace_id != *identity.workspace() => Some((
                CloseReason::DeviceUnknown,
                "certificate names another workspace",
            )),
            Ok(Some(_)) => None,
            Err(e) => {
                tracing::error!(device = %identity.device(), error = %e, "device lookup failed");
                // Tell the agent to come back later, as after a restart.
                Some((CloseReason::Shutdown, "gateway temporarily unavailable"))
            }
        }
    }

    async fn record_seen(
        &self,
        device: &DeviceId,
        facts: Option<&heex_proto::api::Facts>,
        at: OffsetDateTime,
    ) {
        let recorded = Box::pin(self.shared.directory.record_seen(device, facts, at)).await;
        if let Err(e) = recorded {
            tracing::warn!(%device, error = %e, "cannot record that the device was seen");
        }
    }

    async fn frame_loop(
        &mut self,
        stream: &mut Stream,
        device: &DeviceId,
        close: &mut tokio::sync::oneshot::Receiver<CloseReason>,
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
                reason = &mut *close => {
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
                            for answer in super::reports::answers(&stored) {
                                let sent = Box::pin(self.send(stream, &answer)).await;
                                if let Err(e) = sent {
                                    return End::Lost(e.to_string());
                                }
                            }
                        }
                        // Come back later, as after a restart; unacked reports are resent.
                        Err(_) => {
                            return self.close(stream, CloseReason::Shutdown, "cannot store reports now").await;
                        }
                    }
                    continue;
                }
                r = self.reader.read(stream) => r,
            };
            last_frame = Instant::now();
            let step = Box::pin(self.handle(stream, device, msg, &mut reports, last_recorded));
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
        device: &DeviceId,
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
                    self.record_seen(device, None, OffsetDateTime::now_utc())
                        .await;
                }
            }
            Message::Facts { facts } => {
                if let Err(e) = facts.check() {
                    let msg = format!("facts refused: {e}");
                    tracing::info!(%device, "{msg}");
                    return Some(self.close(stream, CloseReason::ProtocolError, &msg).await);
                }
                *last_recorded = Instant::now();
                self.record_seen(device, Some(&facts), OffsetDateTime::now_utc())
                    .await;
            }
            Message::RenewRequest { csr_pem } => {
                let renewed = match &self.identity {
                    Some(identity) => {
                        Box::pin(renew::renew(
                            &*shared.directory,
                            opts.signer.as_ref(),
                            identity,
                            &csr_pem,
                        ))
                        .await
                    }
                    None => Err((CloseReason::ProtocolError, "no identity".to_owned())),
                };
                match renewed {
                    Ok(renewed) => {
                        self.cert_not_after = Some(renewed.not_after);
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
                let msg = format!("unexpected {} frame", kind(&other));
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
        _ => "closed by the gateway",
    }
}

/// A message's type name, for logs (never its content).
fn kind(msg: &Message) -> &'static str {
    match msg {
        Message::Hello { .. } => "hello",
        Message::Welcome { .. } => "welcome",
        Message::Heartbeat { .. } => "heartbeat",
        Message::HeartbeatAck { .. } => "heartbeat_ack",
        Message::Facts { .. } => "facts",
        Message::Report { .. } => "report",
        Message::ReportAck { .. } => "report_ack",
        Message::ReportConflict { .. } => "report_conflict",
        Message::RenewRequest { .. } => "renew_request",
        Message::RenewResponse { .. } => "renew_response",
        Message::Close { .. } => "close",
        _ => "unknown",
    }
}
