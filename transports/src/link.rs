//! A link: the two tokio tasks that own one connected socket. The writer drains a bounded
//! queue of frames, sealing each as a record (see [`crate::secure`]), and sends a heartbeat when
//! idle; the reader opens and validates records and hands the frames to the transport actor.
//! Both end with a message naming the peer and what happened.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::Recipient;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use updraft_runtime::messages::Traffic;
use updraft_runtime::metrics as names;
use updraft_runtime::wire::{Control, InFrame, OutFrame, WireLimits};

use crate::secure::{Opener, Sealer};

/// A frame read from a peer.
#[derive(actix::Message, Debug)]
#[rtype(result = "()")]
pub struct Inbound {
    /// The peer.
    pub peer: u32,
    /// The frame.
    pub frame: InFrame,
}

/// A link task ended.
#[derive(actix::Message, Debug)]
#[rtype(result = "()")]
pub struct LinkEnded {
    /// The peer.
    pub peer: u32,
    /// `None`: the peer closed the stream cleanly between frames. `Some`: what went wrong.
    pub error: Option<String>,
}

/// Link timing.
#[derive(Debug, Clone, Copy)]
pub struct LinkTiming {
    /// Heartbeat interval when idle.
    pub heartbeat: Duration,
    /// Silence (or a stuck write) after which the peer is lost.
    pub peer_timeout: Duration,
    /// Silence allowed before the first frame: a peer may still be punching other pairs, and
    /// sends no heartbeat until its own links are all up.
    pub first_silence: Duration,
}

const IO_BUFFER: usize = 256 * 1024;

/// Runs `task` (a link task of `peer`); if it panics, the link is reported ended with the panic,
/// so the job fails at once naming the peer instead of waiting for a deadline.
pub async fn observed(peer: u32, ended: Recipient<LinkEnded>, task: impl std::future::Future<Output = ()>) {
    use futures_util::FutureExt;
    if let Err(p) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
        let msg = updraft_runtime::actor::panic_message(p.as_ref());
        ended.do_send(LinkEnded { peer, error: Some(format!("the link task panicked: {msg}")) });
    }
}

/// Fault injection on a link's writer (see `runtime::testing::Fault`).
#[derive(Debug, Default)]
pub struct LinkFaults {
    /// Flip one bit of the next data frame on the wire (after the checksum or the seal).
    pub corrupt: AtomicBool,
    /// Stop sending anything (frames and heartbeats), keeping the connection open.
    pub stall: AtomicBool,
}

/// A link's fault switches, shared by the transport and the writer.
pub type Tamper = Arc<LinkFaults>;

/// Runs the writer until the queue closes (then flushes and half-closes) or a write fails.
#[allow(clippy::too_many_arguments)]
pub async fn writer(
    peer: u32,
    half: OwnedWriteHalf,
    mut rx: mpsc::Receiver<OutFrame>,
    job: u64,
    timing: LinkTiming,
    traffic: Arc<Traffic>,
    ended: Recipient<LinkEnded>,
    tamper: Tamper,
    mut sealer: Sealer,
) {
    let mut w = BufWriter::with_capacity(IO_BUFFER, half);
    let sent = metrics::counter!(names::LINK_BYTES_SENT, "peer" => peer.to_string(), "link" => "direct");
    let frames = metrics::counter!(names::LINK_FRAMES_SENT, "peer" => peer.to_string(), "link" => "direct");
    let error = loop {
        let frame = match tokio::time::timeout(timing.heartbeat, rx.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break None,
            Err(_) => match OutFrame::control(0, 0, &Control::Ping) {
                Ok(ping) => ping,
                Err(e) => break Some(e.to_string()),
            },
        };
        if tamper.stall.load(Ordering::Relaxed) {
            // Stalled: nothing more goes out; the peer's silence deadline ends the link.
            std::future::pending::<()>().await;
        }
        let tampered = frame.kind == updraft_runtime::wire::FrameKind::Data
            && tamper.corrupt.swap(false, Ordering::Relaxed);
        let step = async {
            let n = sealer.write(&mut w, job, &frame, tampered).await?;
            if rx.is_empty() {
                w.flush().await?;
            }
            Ok::<u64, updraft_runtime::wire::WireError>(n)
        };
        match tokio::time::timeout(timing.peer_timeout, step).await {
            Ok(Ok(n)) => {
                if frame.kind == updraft_runtime::wire::FrameKind::Data {
                    traffic.data_frame();
                }
                traffic.sent("direct", n);
                sent.increment(n);
                frames.increment(1);
            }
            Ok(Err(e)) => break Some(format!("write failed: {e}")),
            Err(_) => break Some(format!("peer accepted no data for {:?}", timing.peer_timeout)),
        }
    };
    if error.is_none() {
        let close = async {
            w.flush().await?;
            w.shutdown().await
        };
        if let Ok(Err(e)) = tokio::time::timeout(timing.peer_timeout, close).await {
            tracing::debug!(peer, %e, "closing a link failed");
        }
    }
    if let Some(e) = &error {
        ended.do_send(LinkEnded { peer, error: Some(e.clone()) });
    }
}

/// Runs the reader until the stream ends or fails; every frame goes to `inbound`.
#[allow(clippy::too_many_arguments)]
pub async fn reader(
    peer: u32,
    half: OwnedReadHalf,
    limits: WireLimits,
    timing: LinkTiming,
    traffic: Arc<Traffic>,
    inbound: Recipient<Inbound>,
    ended: Recipient<LinkEnded>,
    mut opener: Opener,
) {
    let mut r = BufReader::with_capacity(IO_BUFFER, half);
    let received =
        metrics::counter!(names::LINK_BYTES_RECEIVED, "peer" => peer.to_string(), "link" => "direct");
    let frames =
        metrics::counter!(names::LINK_FRAMES_RECEIVED, "peer" => peer.to_string(), "link" => "direct");
    // Silence is measured until the first byte of a frame; the rest of the frame then gets a
    // deadline of its own, long enough for the largest frame on a slow link.
    let frame_deadline = timing.peer_timeout * 4;
    let mut silence = timing.first_silence;
    let error = loop {
        match tokio::time::timeout(silence, r.fill_buf()).await {
            Err(_) => break Some(format!("no data or heartbeat for {silence:?}")),
            Ok(Err(e)) => break Some(e.to_string()),
            Ok(Ok([])) => break None,
            Ok(Ok(_)) => {}
        }
        silence = timing.peer_timeout;
        match tokio::time::timeout(frame_deadline, opener.read(&mut r, limits)).await {
            Err(_) => break Some(format!("a frame took more than {frame_deadline:?} to arrive")),
            Ok(Ok(None)) => break None,
            Ok(Err(e)) => break Some(e.to_string()),
            Ok(Ok(Some(frame))) => {
                let n = opener.wire_len(frame.body.len());
                traffic.bytes_received.fetch_add(n, Ordering::Relaxed);
                received.increment(n);
                frames.increment(1);
                inbound.do_send(Inbound { peer, frame });
            }
        }
    };
    ended.do_send(LinkEnded { peer, error });
}

/// Largest message a relay writer builds from queued frames (a single larger frame still goes
/// alone).
const RELAY_MESSAGE: usize = 8 * 1024 * 1024;

/// The writer of a relay link: like [`writer`], but frames go out as relay messages, several
/// queued frames per message; an empty message ends the stream.
#[allow(clippy::too_many_arguments)]
pub async fn relay_writer(
    peer: u32,
    mut sender: crate::relay::Sender,
    mut rx: mpsc::Receiver<OutFrame>,
    job: u64,
    timing: LinkTiming,
    traffic: Arc<Traffic>,
    ended: Recipient<LinkEnded>,
    label: &'static str,
    mut sealer: Sealer,
) {
    let sent = metrics::counter!(names::LINK_BYTES_SENT, "peer" => peer.to_string(), "link" => label);
    let frames = metrics::counter!(names::LINK_FRAMES_SENT, "peer" => peer.to_string(), "link" => label);
    let error = loop {
        let first = match tokio::time::timeout(timing.heartbeat, rx.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break None,
            Err(_) => match OutFrame::control(0, 0, &Control::Ping) {
                Ok(ping) => ping,
                Err(e) => break Some(e.to_string()),
            },
        };
        let mut payload = Vec::new();
        let mut count = 0u64;
        let mut next = Some(first);
        let mut failed = None;
        while let Some(frame) = next.take() {
            if let Err(e) = sealer.write(&mut payload, job, &frame, false).await {
                failed = Some(e.to_string());
                break;
            }
            if frame.kind == updraft_runtime::wire::FrameKind::Data {
                traffic.data_frame();
            }
            count += 1;
            if payload.len() < RELAY_MESSAGE {
                next = rx.try_recv().ok();
            }
        }
        if let Some(e) = failed {
            break Some(e);
        }
        let n = payload.len() as u64;
        if let Err(e) = sender.push(payload, tokio::time::Instant::now() + timing.peer_timeout).await {
            break Some(e);
        }
        traffic.sent(label, n);
        sent.increment(n);
        frames.increment(count);
    };
    if error.is_none()
        && let Err(e) = sender.push(Vec::new(), tokio::time::Instant::now() + timing.peer_timeout).await
    {
        tracing::debug!(peer, %e, "ending a relay link failed");
    }
    if let Some(e) = &error {
        ended.do_send(LinkEnded { peer, error: Some(format!("{label} relay: {e}")) });
    }
}

/// The reader of a relay link: like [`reader`], over relay messages.
#[allow(clippy::too_many_arguments)]
pub async fn relay_reader(
    peer: u32,
    mut receiver: crate::relay::Receiver,
    limits: WireLimits,
    timing: LinkTiming,
    traffic: Arc<Traffic>,
    inbound: Recipient<Inbound>,
    ended: Recipient<LinkEnded>,
    label: &'static str,
    mut opener: Opener,
) {
    let received = metrics::counter!(names::LINK_BYTES_RECEIVED, "peer" => peer.to_string(), "link" => label);
    let frames = metrics::counter!(names::LINK_FRAMES_RECEIVED, "peer" => peer.to_string(), "link" => label);
    let mut silence = timing.first_silence;
    let error = 'outer: loop {
        let max_len =
            RELAY_MESSAGE + limits.max_body as usize + 4 * (4 + updraft_runtime::wire::HEADER_LEN + 16);
        let payload = match receiver.pop(tokio::time::Instant::now() + silence, max_len).await {
            Err(e) => break Some(format!("{label} relay: {e}")),
            Ok(None) => {
                break Some(format!("no data or heartbeat through the {label} relay for {silence:?}"));
            }
            Ok(Some(p)) if p.is_empty() => break None,
            Ok(Some(p)) => p,
        };
        silence = timing.peer_timeout;
        traffic.bytes_received.fetch_add(payload.len() as u64, Ordering::Relaxed);
        received.increment(payload.len() as u64);
        let mut r: &[u8] = &payload;
        loop {
            match opener.read(&mut r, limits).await {
                Ok(Some(frame)) => {
                    frames.increment(1);
                    inbound.do_send(Inbound { peer, frame });
                }
                Ok(None) => break,
                Err(e) => break 'outer Some(format!("{label} relay: {e}")),
            }
        }
    };
    ended.do_send(LinkEnded { peer, error });
}
