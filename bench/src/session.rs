//! One simulated device's connection: TCP from a chosen source address, a full TLS 1.3
//! handshake with the device certificate, then the application protocol — the Heex gateway's
//! frames (Hello → Welcome, Heartbeat → HeartbeatAck) or, against a peer, HTTP/1.1 keep-alive
//! (`GET /hb` → 200).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use heex_proto::frame::{self, FrameError, Message};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::cli::Peer;

/// Bound on each connection step (TCP connect, TLS handshake, first answer).
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on writing one request.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// The heartbeat request sent to an HTTP peer.
pub(crate) const HTTP_HEARTBEAT: &[u8] = b"GET /hb HTTP/1.1\r\nHost: heex-peer\r\n\r\n";

/// Something the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Heex: HeartbeatAck with this sequence number.
    Ack(u64),
    /// HTTP: a complete response with this status.
    Status(u16),
    /// Heex: Welcome for this device.
    Welcome(String),
    /// Heex: the gateway closed the session with this reason.
    Closed(String),
    /// Heex: a frame the load generator does not use (its type).
    Other(&'static str),
}

/// An established session.
pub(crate) struct Conn {
    stream: TlsStream<TcpStream>,
    peer: Peer,
    /// Bytes received and not yet parsed.
    buf: Vec<u8>,
    out: Vec<u8>,
}

/// Connects from `source`, handshakes and completes the first exchange (Hello → Welcome, or
/// one `GET /hb` → 200). Errors are short, low-cardinality reasons ("tcp: connection
/// refused", "tls: …", "timeout: tls").
pub(crate) async fn connect(
    source: IpAddr,
    gateway: SocketAddr,
    tls: Arc<ClientConfig>,
    peer: Peer,
    device_id: &str,
) -> Result<Conn, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {}", e.kind()))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind: {}", e.kind()))?;
    socket
        .set_nodelay(true)
        .map_err(|e| format!("socket: {}", e.kind()))?;
    let tcp = tokio::time::timeout(STEP_TIMEOUT, socket.connect(gateway))
        .await
        .map_err(|_| "timeout: tcp".to_owned())?
        .map_err(|e| format!("tcp: {}", e.kind()))?;
    let name = ServerName::IpAddress(gateway.ip().into());
    let stream = tokio::time::timeout(STEP_TIMEOUT, TlsConnector::from(tls).connect(name, tcp))
        .await
        .map_err(|_| "timeout: tls".to_owned())?
        .map_err(|e| format!("tls: {}", tls_reason(&e)))?;
    let mut conn = Conn {
        stream,
        peer,
        buf: Vec::new(),
        out: Vec::with_capacity(64),
    };
    match peer {
        Peer::Heex => {
            if conn.stream.get_ref().1.alpn_protocol() != Some(heex_proto::ALPN) {
                return Err("alpn: gateway did not agree on heex/1".to_owned());
            }
            let hello = Message::Hello {
                agent_version: format!("loadgen-{}", heex_proto::VERSION),
                facts: heex_proto::api::Facts::default(),
                next_report_seq: 0,
                ca_bundle: None,
            };
            conn.send(&hello).await?;
            match conn.first_reply().await? {
                Reply::Welcome(id) if id == device_id => {}
                Reply::Welcome(id) => return Err(format!("protocol: welcomed {id}")),
                Reply::Closed(reason) => return Err(format!("closed: {reason}")),
                other => return Err(format!("protocol: expected welcome, got {other:?}")),
            }
        }
        Peer::Http => {
            conn.heartbeat(0).await?;
            match conn.first_reply().await? {
                Reply::Status(200) => {}
                Reply::Status(s) => return Err(format!("http: status {s}")),
                other => return Err(format!("protocol: {other:?}")),
            }
        }
    }
    Ok(conn)
}

/// The short reason of a TLS failure (the rustls error when there is one).
fn tls_reason(e: &std::io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.kind().to_string(),
    }
}

impl Conn {
    async fn first_reply(&mut self) -> Result<Reply, String> {
        tokio::time::timeout(STEP_TIMEOUT, self.next_reply())
            .await
            .map_err(|_| "timeout: first answer".to_owned())?
    }

    async fn send(&mut self, msg: &Message) -> Result<(), String> {
        self.out.clear();
        frame::encode(msg, &mut self.out).map_err(|e| format!("encode: {e}"))?;
        self.write_out().await
    }

    async fn write_out(&mut self) -> Result<(), String> {
        tokio::time::timeout(WRITE_TIMEOUT, async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| "timeout: write".to_owned())?
        .map_err(|e| format!("write: {}", e.kind()))
    }

    /// Sends heartbeat `seq` (a `GET /hb` for an HTTP peer).
    pub(crate) async fn heartbeat(&mut self, seq: u64) -> Result<(), String> {
        match self.peer {
            Peer::Heex => self.send(&Message::Heartbeat { seq }).await,
            Peer::Http => {
                self.out.clear();
                self.out.extend_from_slice(HTTP_HEARTBEAT);
                self.write_out().await
            }
        }
    }

    /// The next thing the server says. Cancel-safe: bytes already read stay buffered.
    pub(crate) async fn next_reply(&mut self) -> Result<Reply, String> {
        let mut chunk = [0u8; 2048];
        loop {
            let parsed = match self.peer {
                Peer::Heex => parse_frame(&self.buf)?,
                Peer::Http => parse_http(&self.buf)?,
            };
            if let Some((reply, used)) = parsed {
                self.buf.drain(..used);
                if self.buf.is_empty() {
                    // Hold no buffer while idle.
                    self.buf = Vec::new();
                }
                return Ok(reply);
            }
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {}", e.kind()))?;
            if n == 0 {
                return Err("eof".to_owned());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Says goodbye (Close for the gateway, close_notify for both), bounded.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if self.peer == Peer::Heex {
                let close = Message::Close {
                    reason: frame::CloseReason::Shutdown,
                    message: "load generator done".into(),
                };
                let _ = self.send(&close).await;
            }
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

/// One gateway frame from the front of `buf`, or `None` if more bytes are needed.
pub(crate) fn parse_frame(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let (msg, used) = match frame::decode(buf) {
        Ok(x) => x,
        Err(FrameError::Incomplete) => return Ok(None),
        Err(e) => return Err(format!("protocol: {e}")),
    };
    let reply = match msg {
        Message::HeartbeatAck { seq } => Reply::Ack(seq),
        Message::Welcome { device_id, .. } => Reply::Welcome(device_id.to_string()),
        Message::Close { reason, .. } => Reply::Closed(
            serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "other".to_owned()),
        ),
        Message::ReportAck { .. } => Reply::Other("report_ack"),
        Message::RenewResponse { .. } => Reply::Other("renew_response"),
        Message::TrustBundle { .. } => Reply::Other("trust_bundle"),
        _ => Reply::Other("unexpected"),
    };
    Ok(Some((reply, used)))
}

/// One HTTP/1.1 response (status line, headers, `Content-Length` body) from the front of
/// `buf`, or `None` if more bytes are needed.
pub(crate) fn parse_http(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err("http: response head too large".to_owned());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "http: head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next(), parts.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err("http: not an HTTP/1.x response".to_owned());
    }
    let status: u16 = code
        .and_then(|c| c.parse().ok())
        .ok_or("http: bad status line")?;
    let mut length = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err("http: bad header line".to_owned());
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .trim()
                .parse()
                .map_err(|_| "http: bad content-length")?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("http: chunked responses are not expected".to_owned());
        }
    }
    let total = head_end + 4 + length;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((Reply::Status(status), total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_responses_parse_across_chunks() {
        let resp = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";
        for cut in 0..resp.len() {
            assert_eq!(parse_http(&resp[..cut]).unwrap(), None, "cut {cut}");
        }
        assert_eq!(
            parse_http(resp).unwrap(),
            Some((Reply::Status(200), resp.len()))
        );
        // Two pipelined responses: the first is taken alone.
        let mut two = resp.to_vec();
        two.extend_from_slice(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(
            parse_http(&two).unwrap(),
            Some((Reply::Status(200), resp.len()))
        );
        assert_eq!(
            parse_http(&two[resp.len()..]).unwrap(),
            Some((Reply::Status(404), two.len() - resp.len()))
        );
    }

    #[test]
    fn bad_http_is_an_error_not_a_panic() {
        assert!(parse_http(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_http(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_http(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").is_err());
        assert!(parse_http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_http(&vec![b'x'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn gateway_frames_parse_across_chunks() {
        let mut buf = frame::to_frame(&Message::HeartbeatAck { seq: 7 }).unwrap();
        let first = buf.len();
        frame::encode(
            &Message::Close {
                reason: frame::CloseReason::Shutdown,
                message: "bye".into(),
            },
            &mut buf,
        )
        .unwrap();
        for cut in 0..first {
            assert_eq!(parse_frame(&buf[..cut]).unwrap(), None);
        }
        assert_eq!(parse_frame(&buf).unwrap(), Some((Reply::Ack(7), first)));
        assert_eq!(
            parse_frame(&buf[first..]).unwrap(),
            Some((Reply::Closed("shutdown".into()), buf.len() - first))
        );
        let mut bad = 5u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"nope!");
        assert!(parse_frame(&bad).is_err());
    }
}
