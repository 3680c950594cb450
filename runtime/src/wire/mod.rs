//! The wire format between workers (and between a worker and the rendezvous).
//!
//! ```text
//!  ┌──────────────┬──────────────────────────────────────────┬────────────────────────┐
//!  │ u32 LE length│ FrameHeader (rkyv, 40 bytes)             │ body (body_len bytes)  │
//!  │ = 40 + body  │ magic version kind channel body_len job  │ Data: Arrow IPC stream │
//!  │              │ seq checksum(crc32c of body) reserved    │ Control: rkyv Control  │
//!  └──────────────┴──────────────────────────────────────────┴────────────────────────┘
//! ```
//!
//! The header and the body are each read into their own aligned buffer, so rkyv can validate
//! the header in place and Arrow can decode the body without copying it. Bytes from the network
//! are never trusted: lengths are bounded, the header is validated, the body checksummed, and
//! control bodies are read with rkyv's validated access only.

mod control;
mod frame;

pub use control::{Control, decode_control, encode_control};
pub use frame::{
    FrameHeader, FrameKind, HEADER_LEN, InFrame, MAGIC, OutBody, OutFrame, VERSION, WireError, WireLimits,
    check_header, encode_header, frame_bytes, read_frame, write_frame,
};
