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

/// Bytes a payload buffer grows by at most per read: the buffer follows the bytes that
/// arrived, never the length a header announced.
const GROW_STEP: usize = 16 * 1024;

/// Reads frames one at a time. Cancel-safe: progress is kept in the reader, not in the
/// future, so [`FrameReader::read`] can sit in a `select!` beside timers.
#[derive(Debug, Default)]
pub struct FrameReader {
    header: [u8; HEADER_LEN],
    header_filled: usize,
    // Grown as payload bytes arrive (a header alone allocates nothing, whatever length it
    // announces); dropped after decoding, so an idle session holds no buffer.
    payload: Vec<u8>,
    payload_len: usize,
}

impl FrameReader {
    /// A reader with nothing buffered.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Bytes this reader holds allocated now.
    pub fn buffered_capacity(&self) -> usize {
        self.payload.capacity()
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
                // Checked against the maximum; nothing is allocated until bytes arrive.
                self.payload_len = frame::payload_len(self.header)?;
                self.payload = Vec::new();
            }
        }
        while self.payload.len() < self.payload_len {
            let start = self.payload.len();
            let step = (self.payload_len - start).min(GROW_STEP);
            if self.payload.capacity() < start + step {
                // Doubling (so large frames are not copied over and over), but never past
                // the announced length.
                let target = (self.payload.capacity() * 2)
                    .max(start + step)
                    .min(self.payload_len);
                self.payload.reserve_exact(target - start);
            }
            // Read into initialised room; truncated back to what arrived, also when this
            // future is cancelled mid-read (the guard below runs on drop).
            self.payload.resize(start + step, 0);
            let mut room = Truncate {
                buf: &mut self.payload,
                keep: start,
            };
            let n = rd
                .read(&mut room.buf[start..])
                .await
                .map_err(eof_is_closed)?;
            if n == 0 {
                return Err(FrameIoError::Closed);
            }
            room.keep = start + n;
        }
        let payload = std::mem::take(&mut self.payload);
        self.header_filled = 0;
        self.payload_len = 0;
        Ok(frame::decode_payload(&payload)?)
    }
}

/// Truncates `buf` to `keep` bytes when dropped.
struct Truncate<'a> {
    buf: &'a mut Vec<u8>,
    keep: usize,
}

impl Drop for Truncate<'_> {
    fn drop(&mut self) {
        self.buf.truncate(self.keep);
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

    /// A header announcing the largest frame costs nothing until the bytes come; then the
    /// buffer follows what arrived.
    #[tokio::test]
    async fn announced_length_is_not_allocated_before_the_bytes_arrive() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new();
        let len = frame::MAX_FRAME_LEN as u32;
        a.write_all(&len.to_be_bytes()).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(50), reader.read(&mut b)).await;
        assert!(r.is_err(), "no frame yet");
        assert!(
            reader.buffered_capacity() <= GROW_STEP,
            "{} bytes held for a bare header",
            reader.buffered_capacity()
        );
        a.write_all(&[b'{'; 100]).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(50), reader.read(&mut b)).await;
        assert!(r.is_err(), "no frame yet");
        // Room for the next step at most, far from the 1 MiB announced.
        assert!(reader.buffered_capacity() <= 2 * GROW_STEP + 100);
        assert_eq!(
            reader.payload.len(),
            100,
            "cancelled reads keep only what arrived"
        );
    }

    /// A large frame delivered in pieces, with reads cancelled between them, decodes.
    #[tokio::test]
    async fn large_frames_survive_cancellation_while_growing() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let msg = Message::Report {
            seq: 7,
            payload: serde_json::json!({ "blob": "x".repeat(200_000) }),
        };
        let bytes = frame::to_frame(&msg).unwrap();
        let writer = tokio::spawn(async move {
            for chunk in bytes.chunks(1000) {
                a.write_all(chunk).await.unwrap();
            }
            a
        });
        let mut reader = FrameReader::new();
        let got = loop {
            match tokio::time::timeout(Duration::from_millis(1), reader.read(&mut b)).await {
                Ok(r) => break r.unwrap(),
                Err(_) => continue,
            }
        };
        assert_eq!(got, msg);
        assert_eq!(reader.buffered_capacity(), 0);
        drop(writer.await.unwrap());
    }
}
