//! Frame I/O for sessions: a cancel-safe reader that holds no buffer while idle.

use heex_proto::frame::{self, FrameError, Message, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameIoError {
    /// The peer closed the connection.
    #[error("peer closed the connection")]
    Closed,
    /// A socket or TLS error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a frame.
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// Reads one frame at a time. Progress lives in the reader, so a `select!` may drop
/// [`FrameReader::read`] at any point without losing bytes.
#[derive(Default)]
pub(crate) struct FrameReader {
    header: [u8; HEADER_LEN],
    header_filled: usize,
    // Allocated when a header arrives, released after decoding: idle sessions hold no
    // payload buffer.
    payload: Vec<u8>,
    payload_filled: usize,
}

impl FrameReader {
    /// The next message.
    pub(crate) async fn read<R: AsyncRead + Unpin>(
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
pub(crate) async fn write<W: AsyncWrite + Unpin>(
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
