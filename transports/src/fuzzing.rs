//! Entry points for the fuzz targets in `fuzz/` (and the corpus replay tests): arbitrary bytes
//! in, no panic, no hang and no allocation beyond the readers' limits out; properties that
//! must hold are asserted.

#![allow(clippy::panic, reason = "a fuzz harness reports a broken property by panicking")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use updraft_config::Encryption;
use updraft_runtime::fuzzing::{LIMITS, ready};
use updraft_runtime::wire::{FrameKind, OutBody, OutFrame, read_frame};

use crate::JobKey;
use crate::rendezvous::protocol::{RendezvousMsg, ReplyBinding, server_limits};
use crate::rendezvous::state::{Registration, RendezvousState};
use crate::secure::Session;

/// Fixed direction keys for the record target.
const KEYS: ([u8; 32], [u8; 32]) = ([3; 32], [4; 32]);

fn sessions() -> Option<(Session, Session)> {
    let a = Session::new(Encryption::Aes256Gcm, &KEYS.0, &KEYS.1).ok()?;
    let b = Session::new(Encryption::Aes256Gcm, &KEYS.1, &KEYS.0).ok()?;
    Some((a, b))
}

/// The sealed-record layer. The first byte picks: even, `data` is a stream of records read
/// as a link reads them (forgeries must fail, lengths must be bounded); odd, `data` describes
/// frames (kind, channel, seq, body) that are sealed and opened again, and must come back
/// exactly as sent, or be refused on both sides alike.
pub fn record(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some((mut a, mut b)) = sessions() else { return };
    if mode % 2 == 0 {
        let mut r = rest;
        while let Some(Ok(Some(_))) = ready(b.opener.read(&mut r, LIMITS)) {}
        return;
    }
    let mut frames = Vec::new();
    let mut r = rest;
    while r.len() >= 3 {
        let (kind, channel, len) = (r[0], u32::from(r[1]), usize::from(r[2]) * 7);
        r = &r[3..];
        let body = &r[..len.min(r.len())];
        r = &r[body.len()..];
        let kind = if kind % 2 == 0 { FrameKind::Data } else { FrameKind::Control };
        let seq = frames.len() as u64;
        frames.push(OutFrame { kind, channel, seq, body: OutBody::Bytes(Bytes::copy_from_slice(body)) });
    }
    let mut wire = Vec::new();
    for f in &frames {
        if ready(a.sealer.write(&mut wire, LIMITS.job, f, false)).is_none_or(|w| w.is_err()) {
            panic!("sealing into memory failed");
        }
    }
    let mut r = wire.as_slice();
    for f in &frames {
        match ready(b.opener.read(&mut r, LIMITS)) {
            Some(Ok(Some(got))) => {
                let OutBody::Bytes(want) = &f.body else { return };
                assert_eq!((got.kind, got.channel, got.seq), (f.kind, f.channel, f.seq));
                assert_eq!(got.body.as_slice(), &want[..]);
            }
            other => panic!("a sealed frame did not open: {other:?}"),
        }
    }
    assert!(r.is_empty());
}

/// Rendezvous messages: every frame in `data` read as the server reads a first message, then
/// given to the rendezvous state machine (registrations) or checked as a reply (the rest).
pub fn rendezvous(data: &[u8]) {
    let mut state = RendezvousState::new(b"fuzz secret".to_vec(), Duration::from_secs(60));
    let key = JobKey::derive(b"fuzz secret", "fuzz");
    let public: SocketAddr = SocketAddr::from(([198, 51, 100, 1], 4000));
    let limits = updraft_runtime::wire::WireLimits { job: server_limits().job, max_body: 1 << 20 };
    let mut r = data;
    let mut conn = 0;
    let now = Instant::now();
    while let Some(Ok(Some(frame))) = ready(read_frame(&mut r, limits)) {
        conn += 1;
        let Ok(msg) = RendezvousMsg::from_frame(&frame) else { continue };
        match &msg {
            RendezvousMsg::Register { job, rank, world, private, plan, wait_ms, nonce, mac } => {
                let reg = Registration {
                    job,
                    rank: *rank,
                    world: *world,
                    private,
                    plan,
                    wait: Duration::from_millis(*wait_ms),
                    challenge: &[0; 16],
                    nonce,
                    mac,
                };
                let _ = state.register(now, conn, public, reg);
                let _ = state.expire(now + Duration::from_secs(120));
            }
            _ => {
                let binding = ReplyBinding { challenge: &[0; 16], nonce: &[1; 16], job: "fuzz", rank: 0 };
                let _ = msg.verify_reply(&key, binding);
            }
        }
    }
}
