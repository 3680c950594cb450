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

/// `frames` sealed as the record target's sessions read them (seeds for its mode 0).
pub fn sealed(frames: &[OutFrame]) -> Vec<u8> {
    let mut wire = Vec::new();
    if let Some((mut a, _)) = sessions() {
        for f in frames {
            let _ = ready(a.sealer.write(&mut wire, LIMITS.job, f, false));
        }
    }
    wire
}

/// Rendezvous frames as workers and the server send them, for a job whose plan fingerprint is
/// `plan`: a challenge, the three registrations of a world-3 job (one stream: the state
/// machine answers with a peer table), a signed peer table, a metrics push and a refusal.
pub fn rendezvous_seeds(plan: &[(String, String)]) -> Vec<Vec<u8>> {
    use crate::auth::RegisterFields;
    use crate::rendezvous::protocol::{PeerEntry, PlanLine, plan_digest, rendezvous_job_hash};
    let key = JobKey::derive(b"fuzz secret", "fuzz");
    let mut lines: Vec<PlanLine> = plan.iter().map(|(p, v)| PlanLine::new(p, v)).collect();
    lines.sort();
    let digest = plan_digest(&lines);
    let frame = |m: &RendezvousMsg| {
        m.to_frame()
            .and_then(|f| updraft_runtime::wire::frame_bytes(rendezvous_job_hash(), &f))
            .unwrap_or_default()
    };
    let mut out = vec![frame(&RendezvousMsg::Challenge { nonce: [9; 16] })];
    let mut job = Vec::new();
    for rank in 0..3 {
        let private = format!("10.0.0.{}:{}", rank + 1, 4000 + rank);
        let wait = Duration::from_secs(30);
        let nonce = [rank as u8; 16];
        let fields = RegisterFields {
            challenge: &[0; 16],
            nonce: &nonce,
            job: "fuzz",
            rank,
            world: 3,
            private: &private,
            plan: &digest,
            wait,
        };
        let msg = RendezvousMsg::Register {
            job: "fuzz".into(),
            rank,
            world: 3,
            private: private.clone(),
            plan: lines.clone(),
            wait_ms: wait.as_millis() as u64,
            nonce,
            mac: key.register_mac(&fields),
        };
        job.extend(frame(&msg));
    }
    out.push(job);
    let binding = ReplyBinding { challenge: &[0; 16], nonce: &[1; 16], job: "fuzz", rank: 0 };
    let peers = (0..3)
        .map(|rank| PeerEntry {
            rank,
            public: format!("198.51.100.{}:{}", rank + 1, 5000 + rank),
            private: format!("10.0.0.{}:{}", rank + 1, 4000 + rank),
        })
        .collect();
    let replies = [
        RendezvousMsg::Peers { peers, run: 7, mac: [0; 32] },
        RendezvousMsg::refused(
            "ranks 1 of job `fuzz` never registered".into(),
            updraft_runtime::FailureClass::Rendezvous,
        ),
    ];
    for reply in replies {
        if let Ok(signed) = reply.signed(&key, binding) {
            out.push(frame(&signed));
        }
    }
    let text = "# TYPE updraft_rows_total counter\nupdraft_rows_total{stage=\"a\"} 42\n".to_string();
    let mac = key.metrics_mac(&[0; 16], "fuzz", 1, &text);
    out.push(frame(&RendezvousMsg::Metrics { job: "fuzz".into(), rank: 1, text, mac }));
    out
}
