//! Frame I/O for sessions (shared with the agent): a cancel-safe reader that holds no buffer
//! while idle.

pub(crate) use heex_frame_io::{write, FrameIoError, FrameReader};
