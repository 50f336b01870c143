//! TLS for gateway sessions on rustls's unbuffered connection API.
//!
//! rustls's buffered connection keeps a 4 KiB receive buffer per connection for as long as
//! it lives. A gateway holds tens of thousands of sessions that are idle nearly all the time
//! (one heartbeat every 30 s), so here the session owns its buffers instead: TLS bytes are
//! read only once the socket is readable, decrypted at once, and every buffer is released
//! as soon as it is empty. An idle session holds only the connection's keys and state.
//!
//! [`TlsTransport`] is an `AsyncRead + AsyncWrite` stream, so frames are read and written
//! with the same code as on any other stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 4096;
/// Most TLS bytes buffered before they form a message: rustls accepts handshake messages
/// of up to 64 KiB, and a record is at most 16 KiB plus its overhead.
const MAX_INCOMING: usize = 0x1_0000 + 0x4800;
/// Most plaintext encrypted per write call.
const MAX_WRITE: usize = 0x1_0000;

/// A server-side TLS stream over TCP that holds no buffer while idle.
pub(crate) struct TlsTransport {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// TLS bytes received and not processed yet: at most an incomplete record between reads.
    incoming: Vec<u8>,
    /// Decrypted bytes not read yet, from `plaintext_pos` on.
    plaintext: Vec<u8>,
    plaintext_pos: usize,
    /// TLS bytes not written to the socket yet, from `outgoing_pos` on.
    outgoing: Vec<u8>,
    outgoing_pos: usize,
    /// The peer sent close_notify.
    peer_closed: bool,
    /// We queued our close_notify.
    close_sent: bool,
    /// rustls reported an error: the connection is unusable (rustls must not be run again
    /// over the bytes that failed).
    failed: bool,
}

/// What processing the received bytes came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// More bytes from the peer are needed to go on.
    NeedData,
    /// Handshake done; application data may flow.
    Ready,
}

/// What to do once the connection may send application data.
enum Want<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

impl TlsTransport {
    /// Completes the server handshake on `tcp`. Bound it in time: a silent peer waits here.
    pub(crate) async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut transport = TlsTransport {
            tcp,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plaintext_pos: 0,
            outgoing: Vec::new(),
            outgoing_pos: 0,
            peer_closed: false,
            close_sent: false,
            failed: false,
        };
        loop {
            let status = match transport.process(Want::Nothing) {
                Ok(status) => status,
                Err(e) => {
                    transport.send_alert().await;
                    return Err(e);
                }
            };
            std::future::poll_fn(|cx| transport.poll_flush_outgoing(cx)).await?;
            if status == Status::Ready {
                transport.release();
                return Ok(transport);
            }
            if transport.peer_closed {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = std::future::poll_fn(|cx| transport.poll_fill(cx)).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
        }
    }

    /// The peer's certificate chain, leaf first (verified during the handshake).
    pub(crate) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// The negotiated ALPN protocol.
    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Bytes held in this transport's buffers (capacity): zero for an idle session.
    #[cfg(test)]
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.incoming.capacity() + self.plaintext.capacity() + self.outgoing.capacity()
    }

    /// Runs the connection over the received bytes until it needs more of them: decrypted
    /// data goes to `plaintext`, TLS bytes to send go to `outgoing` (flushed by the caller
    /// before it waits for the peer), and `want` is done once application data may flow.
    /// After an error, the alert rustls queued is in `outgoing` and every later call fails.
    fn process(&mut self, want: Want<'_>) -> io::Result<Status> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the TLS connection failed earlier",
            ));
        }
        let result = self.process_records(want);
        if result.is_err() {
            self.failed = true;
            self.incoming = Vec::new();
            self.queue_alert();
        }
        result
    }

    /// Moves the alert rustls queued on failure to `outgoing`.
    fn queue_alert(&mut self) {
        loop {
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    if append(&mut self.outgoing, |out| encoded(data.encode(out))).is_err() {
                        return;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }

    fn process_records(&mut self, mut want: Want<'_>) -> io::Result<Status> {
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let stop = match state.map_err(tls_error)? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    append(&mut self.outgoing, |out| encoded(data.encode(out)))?;
                    None
                }
                // Queued in `outgoing`, which the caller flushes before waiting for the
                // peer: nothing is ever awaited with TLS bytes left unsent.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Status::NeedData),
                ConnectionState::WriteTraffic(mut traffic) => {
                    match std::mem::replace(&mut want, Want::Nothing) {
                        Want::Nothing => Some(Status::Ready),
                        Want::Encrypt(data) => {
                            append(&mut self.outgoing, |out| {
                                encrypted(traffic.encrypt(data, out))
                            })?;
                            None
                        }
                        Want::CloseNotify => {
                            append(&mut self.outgoing, |out| {
                                encrypted(traffic.queue_close_notify(out))
                            })?;
                            None
                        }
                    }
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    None
                }
                ConnectionState::Closed => {
                    self.peer_closed = true;
                    // Both close_notify sent: nothing more may be written, and data asked to
                    // be sent must not be reported as sent.
                    if !matches!(want, Want::Nothing) {
                        return Err(io::ErrorKind::BrokenPipe.into());
                    }
                    Some(Status::Ready)
                }
                // Early data is not enabled, and no other state is expected.
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected TLS connection state",
                    ))
                }
            };
            if discard > 0 {
                self.incoming.drain(..discard);
            }
            if let Some(status) = stop {
                // A TLS 1.3 server may send before the client's Finished; the session
                // starts only once the client is authenticated.
                if status == Status::Ready && self.conn.is_handshaking() {
                    return Ok(Status::NeedData);
                }
                return Ok(status);
            }
        }
    }

    /// Best effort: the alert rustls queued for the failure just seen, so that the peer
    /// learns why (an unknown CA, no certificate, …).
    async fn send_alert(&mut self) {
        let flush = std::future::poll_fn(|cx| self.poll_flush_outgoing(cx));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await;
    }

    /// Releases the buffers that are empty.
    fn release(&mut self) {
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        if self.plaintext_pos >= self.plaintext.len() {
            self.plaintext = Vec::new();
            self.plaintext_pos = 0;
        }
        if self.outgoing_pos >= self.outgoing.len() {
            self.outgoing = Vec::new();
            self.outgoing_pos = 0;
        }
    }

    /// Reads what the socket has into `incoming`; `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS message too large",
            )));
        }
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            self.incoming.reserve(READ_SIZE);
            match self.tcp.try_read_buf(&mut self.incoming) {
                Ok(n) => return Poll::Ready(Ok(n)),
                // Readiness was cleared: poll again to wait for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.incoming.is_empty() {
                        self.incoming = Vec::new();
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes `outgoing` to the socket.
    fn poll_flush_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing_pos < self.outgoing.len() {
            let n = ready!(
                Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.outgoing_pos..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing_pos += n;
        }
        self.outgoing = Vec::new();
        self.outgoing_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for TlsTransport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plaintext_pos < this.plaintext.len() {
                let available = &this.plaintext[this.plaintext_pos..];
                let n = available.len().min(buf.remaining());
                buf.put_slice(&available[..n]);
                this.plaintext_pos += n;
                this.release();
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            this.process(Want::Nothing)?;
            // Whatever the connection wants to send (e.g. a key update) goes out without
            // holding up the read.
            if let Poll::Ready(Err(e)) = this.poll_flush_outgoing(cx) {
                return Poll::Ready(Err(e));
            }
            if this.plaintext_pos < this.plaintext.len() || this.peer_closed {
                continue;
            }
            this.release();
            if ready!(this.poll_fill(cx))? == 0 {
                // Gone without close_notify: how most peers hang up, or die.
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

impl AsyncWrite for TlsTransport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_flush_outgoing(cx))?;
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(MAX_WRITE);
        this.process(Want::Encrypt(&buf[..n]))?;
        if let Poll::Ready(Err(e)) = this.poll_flush_outgoing(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_outgoing(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent && !this.failed {
            this.close_sent = true;
            this.process(Want::CloseNotify)?;
        }
        ready!(this.poll_flush_outgoing(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// Appends what `fill` writes to `out`: `fill` answers `Ok(Err(size))` when it needs `size`
/// bytes of room.
fn append(
    out: &mut Vec<u8>,
    mut fill: impl FnMut(&mut [u8]) -> io::Result<Result<usize, usize>>,
) -> io::Result<()> {
    let start = out.len();
    let needed = match fill(&mut [])? {
        Ok(_) => return Ok(()),
        Err(needed) => needed,
    };
    out.resize(start + needed, 0);
    match fill(&mut out[start..])? {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            Err(io::Error::other(
                "TLS output did not fit the size rustls asked for",
            ))
        }
    }
}

/// An encoding result for [`append`].
fn encoded(r: Result<usize, EncodeError>) -> io::Result<Result<usize, usize>> {
    match r {
        Ok(n) => Ok(Ok(n)),
        Err(EncodeError::InsufficientSize(e)) => Ok(Err(e.required_size)),
        Err(e) => Err(io::Error::other(e)),
    }
}

/// An encryption result for [`append`].
fn encrypted(r: Result<usize, EncryptError>) -> io::Result<Result<usize, usize>> {
    match r {
        Ok(n) => Ok(Ok(n)),
        Err(EncryptError::InsufficientSize(e)) => Ok(Err(e.required_size)),
        Err(e) => Err(io::Error::other(e)),
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
