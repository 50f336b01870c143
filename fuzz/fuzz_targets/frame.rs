//! The agent↔gateway frame decoder, on arbitrary bytes from a peer.
//!
//! Properties: decoding never panics; a decoded frame uses no more bytes than it was given
//! and its header announces exactly its payload; every decoded message encodes again and
//! decodes to the same message (decode(encode(m)) == m).
#![no_main]

use heex_proto::frame::{self, FrameError, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As a stream: one frame at the start of the buffer.
    match frame::decode(data) {
        Ok((msg, used)) => {
            assert!(used >= HEADER_LEN && used <= data.len());
            let announced = frame::payload_len([data[0], data[1], data[2], data[3]]);
            assert_eq!(announced, Ok(used - HEADER_LEN));
            round_trip(&msg);
        }
        Err(FrameError::Incomplete) => {
            // Only a prefix of a frame: the header is missing or announces more bytes.
            if let Some(h) = data.get(..HEADER_LEN) {
                let len = frame::payload_len([h[0], h[1], h[2], h[3]]);
                assert!(matches!(len, Ok(n) if HEADER_LEN + n > data.len()));
            }
        }
        Err(_) => {}
    }
    // As a payload read after its header.
    if let Ok(msg) = frame::decode_payload(data) {
        round_trip(&msg);
    }
});

fn round_trip(msg: &frame::Message) {
    // Encoding adds the fields a message left to their defaults, so a message decoded from
    // nearly MAX_FRAME_LEN bytes may not fit a frame again; any other failure is a finding.
    let bytes = match frame::to_frame(msg) {
        Ok(bytes) => bytes,
        Err(FrameError::TooLarge { .. }) => return,
        Err(e) => panic!("a decoded message does not encode: {e}"),
    };
    let (again, used) = frame::decode(&bytes).expect("an encoded message decodes");
    assert_eq!(used, bytes.len());
    assert_eq!(&again, msg, "decode(encode(m)) != m");
}
