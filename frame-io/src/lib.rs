//! Reading and writing [`heex_proto::frame`] frames on an async stream: one implementation
//! for the agent and the gateway. `heex-proto` stays free of tokio; this crate is its async
//! edge.
#![forbid(unsafe_code)]

use heex_proto::frame::{self, FrameError, Message, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameIoError {
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// A socket or TLS error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not a frame.
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// Reads frames one at a time. Cancel-safe: progress is kept in the reader, not in the
/// future, so [`FrameReader::read`] can sit in a `select!` beside timers.
#[derive(Debug, Default)]
pub struct FrameReader {
    header: [u8; HEADER_LEN],
    header_filled: usize,
    // Allocated only once a header announced a payload; dropped after decoding, so an
    // idle session holds no buffer.
    payload: Vec<u8>,
    payload_filled: usize,
}

impl FrameReader {
    /// A reader with nothing buffered.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// The next complete message.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> Result<Message, FrameIoError> {
        while self.header_filled < HEADER_LEN {
            let n = rd
                .read(&mut self.header[self.header_filled..])
                .await
                .map_err(eof_is_closed)?;
            if n == 0 {
                return Err(FrameIoError::Closed);
            }
            self.header_filled += n;
            if self.header_filled == HEADER_LEN {
                // Checked against the maximum before anything is allocated.
                let len = frame::payload_len(self.header)?;
                self.payload = vec![0; len];
                self.payload_filled = 0;
            }
        }
        while self.payload_filled < self.payload.len() {
            let n = rd
                .read(&mut self.payload[self.payload_filled..])
                .await
                .map_err(eof_is_closed)?;
            if n == 0 {
                return Err(FrameIoError::Closed);
            }
            self.payload_filled += n;
        }
        let payload = std::mem::take(&mut self.payload);
        self.header_filled = 0;
        self.payload_filled = 0;
        Ok(frame::decode_payload(&payload)?)
    }
}

/// A TCP close without TLS close_notify is how most peers hang up (or die): report it as
/// a closed connection, not as an I/O failure.
fn eof_is_closed(e: std::io::Error) -> FrameIoError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        FrameIoError::Closed
    } else {
        FrameIoError::Io(e)
    }
}

/// Encodes `msg` into `buf` (cleared first; kept for reuse) and writes it.
pub async fn write<W: AsyncWrite + Unpin>(
    wr: &mut W,
    msg: &Message,
    buf: &mut Vec<u8>,
) -> Result<(), FrameIoError> {
    buf.clear();
    frame::encode(msg, buf)?;
    wr.write_all(buf).await?;
    wr.flush().await?;
    // Outgoing frames are small; do not let one large frame pin memory for the session.
    if buf.capacity() > 1024 {
        *buf = Vec::new();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn survives_cancellation_mid_frame() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let bytes = frame::to_frame(&Message::Heartbeat { seq: 42 }).unwrap();
        let mut reader = FrameReader::new();
        // Deliver the frame in pieces, cancelling the read between them.
        for chunk in bytes.chunks(3) {
            a.write_all(chunk).await.unwrap();
            let r = tokio::time::timeout(Duration::from_millis(20), reader.read(&mut b)).await;
            if let Ok(msg) = r {
                assert_eq!(msg.unwrap(), Message::Heartbeat { seq: 42 });
                return;
            }
        }
        panic!("frame never completed");
    }

    #[tokio::test]
    async fn oversized_and_closed() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = FrameReader::new().read(&mut b).await.unwrap_err();
        assert!(matches!(
            err,
            FrameIoError::Frame(FrameError::TooLarge { .. })
        ));
        drop(a);
        let err = FrameReader::new().read(&mut b).await.unwrap_err();
        assert!(matches!(err, FrameIoError::Closed));
    }
}
