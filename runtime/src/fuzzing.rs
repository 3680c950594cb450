//! Entry points for the fuzz targets in `fuzz/` (and the corpus replay tests): each takes
//! arbitrary bytes and must return without panicking, hanging or allocating beyond the limits
//! it sets; the few properties that must hold for valid inputs are asserted.

#![allow(clippy::panic, reason = "a fuzz harness reports a broken property by panicking")]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use arrow_buffer::Buffer;
use bytes::Bytes;

use crate::wire::{FrameKind, WireLimits, decode_control, encode_control, read_frame};

/// Polls `f` once: futures reading from a byte slice never wait, so one poll finishes them.
/// `None` if it did not finish.
pub fn ready<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// Replaces libFuzzer's panic hook (which aborts on every panic, even one the code catches)
/// with a silent one, once: panics that updraft contains on purpose (arrow-ipc's, on some
/// malformed input, turned into errors by `actor::contain_panics`) are then not crashes,
/// while a panic that escapes still ends the run with its input saved, as libFuzzer's wrapper
/// aborts on it.
pub fn quiet_contained_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

/// Limits the frame targets read with: 1 MiB bodies.
pub const LIMITS: WireLimits = WireLimits { job: 0x5eed, max_body: 1 << 20 };

/// Frames as read from a link: every frame in `data`, each body decoded as its kind says
/// (control message, or Arrow IPC batches as operators decode them). The job hash expected is
/// the first frame's, so captured traffic of any job gets past that check.
pub fn frame(data: &[u8]) {
    let job =
        data.get(20..28).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(LIMITS.job, u64::from_le_bytes);
    let limits = WireLimits { job, ..LIMITS };
    let mut r = data;
    while let Some(Ok(Some(frame))) = ready(read_frame(&mut r, limits)) {
        match frame.kind {
            FrameKind::Control => {
                let _ = decode_control(frame.body.as_slice());
            }
            FrameKind::Data => {
                let _ = crate::exchange::decode_body(frame.body);
            }
        }
    }
}

/// Control and collective message bodies: a control message that decodes must encode back to
/// one that decodes equal; collective payloads (packed blocks, scatter headers, reduction
/// arrays) are checked as the communicator checks them.
pub fn control(data: &[u8]) {
    let aligned = Buffer::from(data.to_vec());
    if let Ok(msg) = decode_control(aligned.as_slice()) {
        let again = encode_control(&msg).map(|b| Buffer::from(b.to_vec()));
        match again.map(|b| decode_control(b.as_slice())) {
            Ok(Ok(back)) if back == msg => {}
            other => panic!("{msg:?} does not round-trip: {other:?}"),
        }
    }
    let world = u32::from(data.first().copied().unwrap_or(1)).max(1);
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(blocks) = crate::collective::unpack("fuzz", bytes.clone(), world) {
        assert!(blocks.iter().all(|(rank, _)| *rank < world));
    }
    let vr = u32::from(data.get(1).copied().unwrap_or(0)) % world;
    if let Ok((total, chunk)) = crate::collective::scatter_chunk("fuzz", bytes, world, vr) {
        assert!(total / world as usize <= chunk.len() + 1, "a total not bounded by its chunk");
    }
    let _ = crate::collective::decode_array(data);
}
