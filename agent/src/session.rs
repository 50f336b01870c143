//! One session with the gateway: TCP (with keepalive), TLS 1.3 with the device
//! certificate, Hello → Welcome, then heartbeats and periodic facts until something ends it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use heex_proto::frame::{CloseReason, Message};
use heex_proto::DeviceId;
use rustls::{AlertDescription, CertificateError, ClientConfig};
use rustls_pki_types::ServerName;
use socket2::{SockRef, TcpKeepalive};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::facts;
use crate::frames::{self, FrameIoError, FrameReader};

/// Bound on TCP connect, TLS handshake and the wait for Welcome, each.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on writing one frame: a peer that stops reading is a dead path.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on saying goodbye (Close frame and TLS close_notify) when stopping.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a session needs to know.
#[derive(Clone)]
pub struct SessionParams {
    /// Gateway host name or IP address (also the TLS server name).
    pub host: String,
    /// Gateway port.
    pub port: u16,
    /// This device.
    pub device_id: DeviceId,
    /// TLS client configuration built from the credentials.
    pub tls: Arc<ClientConfig>,
    /// The file the CAs that `tls` trusts come from (`ca.crt`), for error messages.
    pub ca_path: PathBuf,
    /// The digest of the CA bundle `tls` trusts (`Credentials::ca_bundle_digest`), sent in
    /// Hello so that the gateway sends a TrustBundle when the cloud's differs; `None` to
    /// announce none (the gateway then never sends one).
    pub ca_bundle: Option<String>,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Facts period.
    pub facts_interval: Duration,
    /// How long a heartbeat may stay unacknowledged before the path counts as dead.
    pub ack_timeout: Duration,
    /// The report outbox to deliver from, when reporting is on.
    pub reports: Option<crate::delivery::Reports>,
}

/// The default dead-path bound for a heartbeat interval: one more interval, but at least
/// five seconds, so a slow round trip is not mistaken for a dead path.
pub fn ack_timeout_for(heartbeat_interval: Duration) -> Duration {
    heartbeat_interval + heartbeat_interval.max(Duration::from_secs(5))
}

/// Receives the session's progress (the daemon updates its status from it).
pub trait Observer {
    /// The gateway welcomed the session.
    fn connected(&mut self);
    /// The gateway acknowledged heartbeat `seq`.
    fn heartbeat_acked(&mut self, seq: u64);
    /// When the session should ask for a renewed device certificate; `None` for never.
    fn renewal_due(&self) -> Option<Instant> {
        None
    }
    /// The CSR for a RenewRequest (the observer keeps the new key), or `None` to skip this
    /// renewal.
    fn renewal_request(&mut self) -> Option<String> {
        None
    }
    /// The gateway answered a RenewRequest with this certificate, PEM.
    fn renewed(&mut self, _certificate_pem: String) {}
    /// The gateway sent the CA bundle the cloud trusts now (PEM, the CA that issues device
    /// certificates first): trust exactly these CAs from the next connection on, and renew
    /// within `renew_within` when the device certificate is not from the first. The session
    /// goes on.
    fn trust_bundle(&mut self, _ca_pem: String, _renew_within: Duration) {}
}

/// Why a session could not be established or was lost.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The gateway's name did not resolve.
    #[error("cannot resolve gateway {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver error.
        source: std::io::Error,
    },
    /// TCP connect failed.
    #[error("cannot connect to gateway {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with gateway failed: {0}")]
    Tls(std::io::Error),
    /// The gateway's certificate does not verify against the CAs of `ca.crt`.
    #[error(
        "the gateway's certificate is not signed by a CA this device trusts ({}): if the \
         cloud rotated its CA while this machine was offline, reinstall with heex-installer \
         --force and a new API key",
        ca_path.display()
    )]
    UntrustedGateway {
        /// The trusted CAs' file.
        ca_path: PathBuf,
        /// The TLS error.
        source: std::io::Error,
    },
    /// The gateway refused the device certificate with a TLS alert.
    #[error(
        "the gateway refused this device's certificate (TLS alert {}): reinstall with \
         heex-installer --force and a new API key if it persists",
        alert_name(*alert)
    )]
    CertificateRefused {
        /// The alert the gateway sent.
        alert: AlertDescription,
    },
    /// The gateway does not speak `heex/1`.
    #[error("the gateway did not agree on protocol heex/1")]
    Alpn,
    /// A step took too long.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// No heartbeat ack within the bound.
    #[error("no heartbeat ack for {0:?}: connection presumed dead")]
    DeadPath(Duration),
    /// Reading or writing a frame failed.
    #[error("{0}")]
    Frame(#[from] FrameIoError),
    /// The gateway broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A report the cloud answered with a conflict cannot be queued again now; it stays
    /// pending and conflicts again on the next session.
    #[error("cannot queue report {seq} again under a fresh number: {error}")]
    Requeue {
        /// The conflicting sequence number.
        seq: u64,
        /// Why.
        error: String,
    },
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Cancelled: Close(Shutdown) was sent if a session was up.
    Shutdown,
    /// The gateway closed the session with a reason.
    Closed {
        /// The reason.
        reason: CloseReason,
        /// The gateway's message.
        message: String,
    },
    /// Connecting failed or the connection was lost.
    Failed(SessionError),
}

/// The result of one session: how it ended, and how long it was up if it got welcomed.
#[derive(Debug)]
pub struct Outcome {
    /// How it ended.
    pub end: SessionEnd,
    /// Time between Welcome and the end, when a Welcome arrived.
    pub up_for: Option<Duration>,
}

/// Runs one session to its end.
pub async fn run(
    params: &SessionParams,
    observer: &mut dyn Observer,
    cancel: &CancellationToken,
) -> Outcome {
    let stream = tokio::select! {
        _ = cancel.cancelled() => return Outcome { end: SessionEnd::Shutdown, up_for: None },
        r = connect(params) => r,
    };
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                end: SessionEnd::Failed(e),
                up_for: None,
            }
        }
    };
    let mut session = Session {
        params,
        reader: FrameReader::new(),
        buf: Vec::with_capacity(256),
        welcomed_at: None,
    };
    let end = match session.drive(&mut stream, observer, cancel).await {
        Ok(end) => end,
        Err(e) => SessionEnd::Failed(e),
    };
    Outcome {
        end,
        up_for: session.welcomed_at.map(|t| t.elapsed()),
    }
}

async fn connect(params: &SessionParams) -> Result<TlsStream<TcpStream>, SessionError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((params.host.as_str(), params.port))
        .await
        .map_err(|source| SessionError::Resolve {
            host: params.host.clone(),
            source,
        })?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match connect_tcp(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match (tcp, last) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(e),
        (None, None) => {
            return Err(SessionError::Resolve {
                host: params.host.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            })
        }
    };

    let name = ServerName::try_from(params.host.clone())
        .map_err(|e| SessionError::Tls(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let tls = tokio::time::timeout(
        STEP_TIMEOUT,
        TlsConnector::from(params.tls.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| SessionError::Timeout("during the TLS handshake"))?
    .map_err(|e| tls_error(e, &params.ca_path))?;
    if tls.get_ref().1.alpn_protocol() != Some(heex_proto::ALPN) {
        return Err(SessionError::Alpn);
    }
    Ok(tls)
}

/// What a TLS error says about the credentials, when it is something the user must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRefusal {
    /// The gateway's certificate does not verify against the trusted CAs: rustls
    /// `InvalidCertificate(UnknownIssuer | BadSignature)`.
    UntrustedGateway,
    /// The gateway answered the device certificate with this alert (`unknown_ca`,
    /// `bad_certificate` or `certificate_unknown`).
    CertificateRefused(AlertDescription),
}

/// Classifies the rustls error inside an I/O error of a TLS stream (the handshake, or the
/// first read of a TLS 1.3 session, when a refusal of the client certificate arrives).
pub fn tls_refusal(e: &std::io::Error) -> Option<TlsRefusal> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match inner {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => Some(TlsRefusal::UntrustedGateway),
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            // What rustls answers a certificate from a same-named CA it does not trust.
            | AlertDescription::DecryptError),
        ) => Some(TlsRefusal::CertificateRefused(*alert)),
        _ => None,
    }
}

/// The session error for a failed TLS handshake.
fn tls_error(e: std::io::Error, ca_path: &Path) -> SessionError {
    match tls_refusal(&e) {
        Some(TlsRefusal::UntrustedGateway) => SessionError::UntrustedGateway {
            ca_path: ca_path.to_owned(),
            source: e,
        },
        Some(TlsRefusal::CertificateRefused(alert)) => SessionError::CertificateRefused { alert },
        None => SessionError::Tls(e),
    }
}

/// The session error for a failed frame read or write before Welcome: a refusal of the
/// device certificate may only show then.
fn early_error(e: FrameIoError, ca_path: &Path) -> SessionError {
    match e {
        FrameIoError::Io(io) if tls_refusal(&io).is_some() => tls_error(io, ca_path),
        other => SessionError::Frame(other),
    }
}

/// The RFC 8446 name of a TLS alert, for messages.
fn alert_name(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::UnknownCA => "unknown_ca".to_owned(),
        AlertDescription::BadCertificate => "bad_certificate".to_owned(),
        AlertDescription::CertificateUnknown => "certificate_unknown".to_owned(),
        AlertDescription::CertificateExpired => "certificate_expired".to_owned(),
        AlertDescription::CertificateRevoked => "certificate_revoked".to_owned(),
        AlertDescription::DecryptError => "decrypt_error".to_owned(),
        other => format!("{other:?}"),
    }
}

async fn connect_tcp(addr: SocketAddr) -> Result<TcpStream, SessionError> {
    let err = |source| SessionError::Connect { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    // Keepalive lets the kernel notice a vanished peer even between heartbeats, and keeps
    // NAT and firewall state alive on long idle sessions.
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    SockRef::from(&socket)
        .set_tcp_keepalive(&keepalive)
        .map_err(err)?;
    socket.set_nodelay(true).map_err(err)?;
    tokio::time::timeout(STEP_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| SessionError::Timeout("while connecting to the gateway"))?
        .map_err(err)
}

struct Session<'a> {
    params: &'a SessionParams,
    reader: FrameReader,
    buf: Vec<u8>,
    welcomed_at: Option<Instant>,
}

impl Session<'_> {
    async fn send(
        &mut self,
        stream: &mut TlsStream<TcpStream>,
        msg: &Message,
    ) -> Result<(), SessionError> {
        tokio::time::timeout(WRITE_TIMEOUT, frames::write(stream, msg, &mut self.buf))
            .await
            .map_err(|_| SessionError::Timeout("while sending to the gateway"))??;
        Ok(())
    }

    async fn drive(
        &mut self,
        stream: &mut TlsStream<TcpStream>,
        observer: &mut dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<SessionEnd, SessionError> {
        let hello = Message::Hello {
            agent_version: heex_proto::VERSION.to_owned(),
            facts: facts::gather(),
            next_report_seq: self.params.reports.as_ref().map_or(0, |r| r.next_seq()),
            ca_bundle: self.params.ca_bundle.clone(),
        };
        let ca_path = &self.params.ca_path;
        tokio::time::timeout(WRITE_TIMEOUT, frames::write(stream, &hello, &mut self.buf))
            .await
            .map_err(|_| SessionError::Timeout("while sending to the gateway"))?
            .map_err(|e| early_error(e, ca_path))?;

        let first = tokio::select! {
            _ = cancel.cancelled() => {
                self.goodbye(stream).await;
                return Ok(SessionEnd::Shutdown);
            }
            r = tokio::time::timeout(STEP_TIMEOUT, self.reader.read(stream)) => {
                r.map_err(|_| SessionError::Timeout("while waiting for Welcome"))?
                    .map_err(|e| early_error(e, ca_path))?
            }
        };
        match first {
            Message::Welcome {
                device_id,
                next_report_seq,
                ..
            } if device_id == self.params.device_id => {
                if let Some(r) = &self.params.reports {
                    // Failing to raise it is not fatal: conflicts still renumber reports.
                    if let Err(e) = r.resume_at(next_report_seq) {
                        tracing::warn!(error = %e, "cannot move the outbox numbering up");
                    }
                }
            }
            Message::Welcome { device_id, .. } => {
                return Err(SessionError::Protocol(format!(
                    "the gateway welcomed {device_id}, not this device"
                )))
            }
            Message::Close { reason, message } => {
                return Ok(SessionEnd::Closed { reason, message })
            }
            other => {
                return Err(SessionError::Protocol(format!(
                    "expected Welcome, got {}",
                    other.kind()
                )))
            }
        }
        self.welcomed_at = Some(Instant::now());
        observer.connected();

        let p = self.params;
        let now = Instant::now();
        let mut heartbeat = interval_at(now + p.heartbeat_interval, p.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut facts_tick = interval_at(now + p.facts_interval, p.facts_interval);
        facts_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seq = 0u64;
        // Oldest heartbeat not yet acknowledged, and when it was sent.
        let mut unacked: Option<(u64, Instant)> = None;
        // Highest report sent on this session: a new session resends what was not acked.
        let mut sent = p.reports.as_ref().map_or(0, |r| r.acked());

        loop {
            let renew_at = observer.renewal_due();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.goodbye(stream).await;
                    return Ok(SessionEnd::Shutdown);
                }
                msg = self.reader.read(stream) => match msg? {
                    Message::RenewResponse { certificate_pem } => {
                        observer.renewed(certificate_pem);
                    }
                    Message::TrustBundle { ca_pem, renew_within_secs } => {
                        observer.trust_bundle(ca_pem, Duration::from_secs(renew_within_secs));
                    }
                    Message::HeartbeatAck { seq: acked } => {
                        if unacked.is_some_and(|(s, _)| acked >= s) {
                            unacked = None;
                        }
                        observer.heartbeat_acked(acked);
                    }
                    Message::Close { reason, message } => {
                        return Ok(SessionEnd::Closed { reason, message });
                    }
                    Message::ReportConflict { seq: conflict, next_seq } => {
                        if let Some(r) = &p.reports {
                            if conflict > sent {
                                return Err(SessionError::Protocol(format!(
                                    "conflict reported for report {conflict}, never sent"
                                )));
                            }
                            r.requeue(conflict, next_seq).map_err(|e| SessionError::Requeue {
                                seq: conflict,
                                error: e.to_string(),
                            })?;
                        }
                    }
                    Message::ReportAck { seq: acked } => {
                        if let Some(r) = &p.reports {
                            // Never trust an ack beyond what was sent.
                            r.acknowledge(acked.min(sent));
                            if acked >= sent {
                                r.flush();
                            }
                        }
                    }
                    other => tracing::debug!(kind = other.kind(), "ignoring unexpected frame"),
                },
                _ = ack_deadline(unacked, p.ack_timeout) => {
                    return Err(SessionError::DeadPath(p.ack_timeout));
                }
                _ = heartbeat.tick() => {
                    seq += 1;
                    self.send(stream, &Message::Heartbeat { seq }).await?;
                    unacked.get_or_insert((seq, Instant::now()));
                }
                _ = facts_tick.tick() => {
                    self.send(stream, &Message::Facts { facts: facts::gather() }).await?;
                }
                // Before anything else the session sends: a session with an expired
                // certificate may only renew until it has.
                _ = sleep_until_some(renew_at) => {
                    if let Some(csr_pem) = observer.renewal_request() {
                        self.send(stream, &Message::RenewRequest { csr_pem }).await?;
                    }
                }
                records = crate::delivery::next_batch(p.reports.as_ref(), sent) => {
                    for record in records {
                        let payload = serde_json::from_slice(&record.payload).unwrap_or_else(|e| {
                            // Checked at intake and by checksum since; cannot happen.
                            tracing::error!(seq = record.seq, error = %e, "unreadable report");
                            serde_json::Value::Null
                        });
                        self.send(stream, &Message::Report { seq: record.seq, payload }).await?;
                        sent = record.seq;
                    }
                }
            }
        }
    }

    /// Tells the gateway we are leaving, best effort and bounded.
    async fn goodbye(&mut self, stream: &mut TlsStream<TcpStream>) {
        let close = Message::Close {
            reason: CloseReason::Shutdown,
            message: "agent stopping".into(),
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if frames::write(stream, &close, &mut self.buf).await.is_ok() {
                let _ = stream.shutdown().await;
            }
        })
        .await;
    }
}

/// Resolves at `at`; never without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the oldest unacknowledged heartbeat has waited `bound`; never without one.
async fn ack_deadline(unacked: Option<(u64, Instant)>, bound: Duration) {
    match unacked {
        Some((_, sent)) => tokio::time::sleep_until(sent + bound).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
