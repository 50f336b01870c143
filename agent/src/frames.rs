//! Frame I/O on the session's stream (shared with the gateway).

pub use heex_frame_io::{write, FrameIoError, FrameReader};
