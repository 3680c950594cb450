//! The transport actor: owns every link of a worker. Operator actors hand it frames for peers;
//! it hands the link readers' frames to the operator actors that consume (data, end) or produce
//! (credit) on that channel, and peer-level messages (abort, done) and link failures to the job.
//!
//! ```text
//!  SendFrame{peer} ─▶ link queue (bounded) ─▶ writer task ─▶ socket
//!                      └ full: frames wait in a backlog (bounded in bytes), drained in order
//!  socket ─▶ reader task ─▶ Inbound ─▶ route by (kind, channel):
//!       data, End ─▶ consumer of the edge    Credit ─▶ producer of the edge
//!       Abort, Done ─▶ job events             Ping ─▶ (keeps the link alive)
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use updraft_config::RuntimeSettings;
use updraft_runtime::collective::{COLLECTIVE_CHANNEL, CollectiveFrame, Inbox, PEER_GONE};
use updraft_runtime::ids::EdgeId;
use updraft_runtime::messages::{
    AttachCollectives, EventSink, InstallRoutes, JobEvent, Routes, SendFrame, ToOperator, Traffic,
    TransportPort,
};
use updraft_runtime::wire::{Control, FrameKind, OutFrame, WireLimits, decode_control};

use crate::link::{
    Inbound, LinkEnded, LinkTiming, Tamper, observed, reader, relay_reader, relay_writer, writer,
};
use crate::punch::Connection;
use crate::relay;
use crate::secure::{Opener, Session};

/// Something that arrived before the job's routes.
enum Early {
    Event(JobEvent),
    Frame(u32, updraft_runtime::wire::InFrame),
}

/// How a worker reaches one peer.
pub enum Endpoint {
    /// A punched, authenticated TCP connection.
    Direct(Connection),
    /// Both directions through a relay.
    Relay {
        /// This worker's direction to the peer.
        sender: relay::Sender,
        /// The peer's direction to this worker.
        receiver: relay::Receiver,
        /// `redis` or `s3`.
        name: &'static str,
        /// The keys of both directions (see [`Session::relay`]).
        session: Session,
    },
}

impl Endpoint {
    /// `direct`, `redis` or `s3`.
    pub fn channel(&self) -> &'static str {
        match self {
            Endpoint::Direct(_) => "direct",
            Endpoint::Relay { name, .. } => name,
        }
    }
}

enum PendingReader {
    Direct(OwnedReadHalf, Opener),
    Relay(relay::Receiver, &'static str, Opener),
}

/// What a queued frame costs besides its body (so that empty frames are not free).
const FRAME_OVERHEAD: u64 = 64;

/// Frames waiting for room in a link's queue, and their bytes.
#[derive(Default)]
struct Backlog {
    frames: VecDeque<OutFrame>,
    bytes: u64,
}

impl Backlog {
    fn push_back(&mut self, frame: OutFrame) {
        self.bytes += frame.body.len() as u64 + FRAME_OVERHEAD;
        self.frames.push_back(frame);
    }

    fn push_front(&mut self, frame: OutFrame) {
        self.bytes += frame.body.len() as u64 + FRAME_OVERHEAD;
        self.frames.push_front(frame);
    }

    fn pop_front(&mut self) -> Option<OutFrame> {
        let frame = self.frames.pop_front()?;
        self.bytes -= frame.body.len() as u64 + FRAME_OVERHEAD;
        Some(frame)
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn clear(&mut self) {
        *self = Backlog::default();
    }
}

struct Link {
    tx: Option<mpsc::Sender<OutFrame>>,
    backlog: Backlog,
    draining: bool,
    read_half: Option<PendingReader>,
    writer: Option<JoinHandle<()>>,
    reader: Option<JoinHandle<()>>,
    /// No more frames can go out on it.
    closed: bool,
    /// Its loss has been reported to the job (at most once).
    reported: bool,
    /// Fault injection: flip a bit of the next data frame (direct links).
    tamper: Tamper,
}

/// Owns the links of one worker.
pub struct TransportActor {
    me: u32,
    job_hash: u64,
    limits: WireLimits,
    timing: LinkTiming,
    queue: usize,
    links: BTreeMap<u32, Link>,
    pending_links: Vec<(u32, Endpoint)>,
    routes: Option<Routes>,
    collectives: Option<Inbox>,
    events: Option<EventSink>,
    /// What arrived before the routes (and the event queue): link events, and operator frames
    /// of a peer that started its operators while this worker was still agreeing the job's
    /// inputs; replayed in arrival order when the routes come (a peer's abort, then the end of
    /// its link).
    early: VecDeque<Early>,
    /// Their bytes, and the most they may hold.
    early_bytes: u64,
    early_cap: u64,
    /// Most bytes a link's backlog may hold: data is bounded by credit, but control and
    /// collective frames are not, and a peer that reads nothing must not grow it forever.
    backlog_cap: u64,
    /// Peers that sent their last message (`Committed`): their links may end.
    done: BTreeSet<u32>,
    traffic: Arc<Traffic>,
    runtime: tokio::runtime::Handle,
}

impl TransportActor {
    /// A transport for `links` (one endpoint per peer). Must be created inside a tokio
    /// runtime: link tasks are spawned on it.
    pub fn new(
        me: u32,
        job_hash: u64,
        settings: &RuntimeSettings,
        links: Vec<(u32, Endpoint)>,
    ) -> TransportActor {
        TransportActor {
            me,
            job_hash,
            limits: WireLimits {
                job: job_hash,
                max_body: settings.max_frame.min(u64::from(u32::MAX)) as u32,
            },
            timing: LinkTiming {
                heartbeat: settings.heartbeat,
                peer_timeout: settings.peer_timeout,
                first_silence: settings.peer_timeout + settings.mesh_timeout,
            },
            queue: settings.link_queue_frames.max(1),
            links: BTreeMap::new(),
            pending_links: links,
            routes: None,
            collectives: None,
            events: None,
            early: VecDeque::new(),
            early_bytes: 0,
            early_cap: settings.max_frame.max(settings.channel_credit),
            backlog_cap: settings.max_frame.saturating_mul(4).max(settings.channel_credit.saturating_mul(64)),
            done: BTreeSet::new(),
            traffic: Arc::new(Traffic::default()),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Starts the actor and returns the port the runtime uses, plus its address.
    pub fn start_port(self) -> (TransportPort, Addr<TransportActor>) {
        let traffic = Arc::clone(&self.traffic);
        let addr = self.start();
        let port = TransportPort {
            send: addr.clone().recipient(),
            install: addr.clone().recipient(),
            attach: addr.clone().recipient(),
            traffic,
        };
        (port, addr)
    }

    fn event(&mut self, event: JobEvent) {
        match &self.events {
            Some(events) => events.send(event),
            None => {
                // A communicator working before the job's operators exist learns of lost and
                // aborting peers at once.
                let notice = match &event {
                    JobEvent::PeerLost { peer, error } => Some((*peer, format!("lost rank {peer}: {error}"))),
                    JobEvent::PeerAborted { peer, reason, .. } => {
                        Some((*peer, format!("rank {peer} aborted the job: {reason}")))
                    }
                    _ => None,
                };
                if let (Some(inbox), Some((peer, why))) = (&self.collectives, notice) {
                    let body = arrow_buffer::Buffer::from(why.into_bytes());
                    let _ = inbox.deliver(CollectiveFrame { from: peer, seq: PEER_GONE, body });
                }
                self.early.push_back(Early::Event(event));
            }
        }
    }

    fn route(&mut self, peer: u32, frame: updraft_runtime::wire::InFrame) {
        if frame.channel == COLLECTIVE_CHANNEL && frame.kind == FrameKind::Data {
            let delivered = match &self.collectives {
                // The notice number is the transport's own: a peer may not send it.
                Some(_) if frame.seq == PEER_GONE => {
                    Err(format!("rank {peer} sent a collective message with the reserved number {PEER_GONE}"))
                }
                Some(inbox) => {
                    inbox.deliver(CollectiveFrame { from: peer, seq: frame.seq, body: frame.body })
                }
                None => Err(format!("rank {peer} sent a collective message, but no communicator is here")),
            };
            if let Err(detail) = delivered {
                self.fail_link(peer, detail);
            }
            return;
        }
        let Some(routes) = self.routes.clone() else {
            // Only a communicator is attached (readers started for it): operator traffic waits
            // for the routes, within a bound; never a silent drop.
            if frame.kind == FrameKind::Control {
                match decode_control(frame.body.as_slice()) {
                    Ok(Control::Ping) => return,
                    // A peer that fails before this worker's operators start: the communicator
                    // hears it at once, and the job in order with the rest.
                    Ok(Control::Abort { reason, class }) => {
                        return self.event(JobEvent::PeerAborted { peer, reason, class });
                    }
                    _ => {}
                }
            }
            self.early_bytes += frame.body.len() as u64 + FRAME_OVERHEAD;
            if self.early_bytes > self.early_cap {
                let detail = format!(
                    "rank {peer} sent more than {} bytes of operator frames before this worker's operators \
                     started",
                    self.early_cap
                );
                return self.fail_link(peer, detail);
            }
            self.early.push_back(Early::Frame(peer, frame));
            return;
        };
        let edge = EdgeId(frame.channel);
        let idx = frame.channel as usize;
        match frame.kind {
            FrameKind::Data => match routes.consumers.get(idx) {
                Some(c) => {
                    c.do_send(ToOperator::RemoteData { edge, from: peer, seq: frame.seq, body: frame.body })
                }
                None => self.event(JobEvent::Protocol {
                    edge,
                    peer,
                    detail: "data for an unknown channel".into(),
                }),
            },
            FrameKind::Control => match decode_control(frame.body.as_slice()) {
                Ok(Control::End { batches, rows }) => match routes.consumers.get(idx) {
                    Some(c) => {
                        c.do_send(ToOperator::RemoteEnd { edge, from: peer, seq: frame.seq, batches, rows })
                    }
                    None => self.event(JobEvent::Protocol {
                        edge,
                        peer,
                        detail: "end for an unknown channel".into(),
                    }),
                },
                Ok(Control::Credit { bytes }) => match routes.producers.get(idx) {
                    Some(p) => p.do_send(ToOperator::Credit { edge, dest: peer, bytes }),
                    None => self.event(JobEvent::Protocol {
                        edge,
                        peer,
                        detail: "credit for an unknown channel".into(),
                    }),
                },
                Ok(Control::Ping) => {}
                Ok(Control::Abort { reason, class }) => {
                    self.event(JobEvent::PeerAborted { peer, reason, class })
                }
                Ok(Control::Done { report }) => {
                    self.event(JobEvent::PeerDone { peer, report: Box::new(report) });
                }
                Ok(Control::Committed { error }) => {
                    // The peer's last message: its link may end cleanly from now on.
                    self.done.insert(peer);
                    self.event(JobEvent::PeerCommitted { peer, error });
                }
                Ok(other) => self.event(JobEvent::Protocol {
                    edge,
                    peer,
                    detail: format!("unexpected {other:?} on an established link"),
                }),
                Err(e) => self.event(JobEvent::Protocol { edge, peer, detail: e.to_string() }),
            },
        }
    }

    fn send(&mut self, peer: u32, frame: OutFrame, ctx: &mut Context<Self>) {
        let Some(link) = self.links.get_mut(&peer) else {
            if peer != self.me {
                tracing::warn!(peer, "frame for a rank without a link dropped");
            }
            return;
        };
        if link.closed {
            return; // the peer is gone; the job already knows
        }
        let Some(tx) = &link.tx else { return };
        let queued = if !link.backlog.is_empty() {
            link.backlog.push_back(frame);
            link.backlog.bytes
        } else {
            match tx.try_send(frame) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(frame)) => {
                    link.backlog.push_back(frame);
                    let queued = link.backlog.bytes;
                    self.drain(peer, ctx);
                    queued
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    link.closed = true;
                    return;
                }
            }
        };
        if queued > self.backlog_cap {
            let detail = format!(
                "more than {} bytes queued for rank {peer}, which has read nothing for a while",
                self.backlog_cap
            );
            self.fail_link(peer, detail);
        }
    }

    /// Ends the link to `peer` at once (both tasks stop, the socket closes under the peer) and
    /// tells the job it is lost, with `error`: for a protocol violation, a bound a peer hit,
    /// or an injected fault.
    fn fail_link(&mut self, peer: u32, error: String) {
        let Some(link) = self.links.get_mut(&peer) else { return };
        for task in [link.writer.take(), link.reader.take()].into_iter().flatten() {
            task.abort();
        }
        link.read_half = None;
        link.tx = None;
        link.closed = true;
        link.backlog.clear();
        if !std::mem::replace(&mut link.reported, true) {
            self.event(JobEvent::PeerLost { peer, error });
        }
    }

    /// Moves backlog frames into the link queue, in order, as room appears.
    fn drain(&mut self, peer: u32, ctx: &mut Context<Self>) {
        let Some(link) = self.links.get_mut(&peer) else { return };
        if link.draining {
            return;
        }
        let Some(tx) = link.tx.clone() else { return };
        link.draining = true;
        ctx.spawn(async move { tx.reserve_owned().await }.into_actor(self).map(move |permit, act, ctx| {
            let Some(link) = act.links.get_mut(&peer) else { return };
            link.draining = false;
            let Ok(permit) = permit else {
                link.backlog.clear();
                return;
            };
            if let Some(frame) = link.backlog.pop_front() {
                permit.send(frame);
            }
            let Some(tx) = &link.tx else { return };
            while let Some(frame) = link.backlog.pop_front() {
                match tx.try_send(frame) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(frame)) => {
                        link.backlog.push_front(frame);
                        act.drain(peer, ctx);
                        return;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        link.backlog.clear();
                        return;
                    }
                }
            }
        }));
    }
}

impl Actor for TransportActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let ended: Recipient<LinkEnded> = ctx.address().recipient();
        // Relay heartbeats cost a request each: a few per peer deadline are enough.
        let relay_timing =
            LinkTiming { heartbeat: self.timing.heartbeat.max(self.timing.peer_timeout / 4), ..self.timing };
        for (peer, endpoint) in std::mem::take(&mut self.pending_links) {
            let (tx, rx) = mpsc::channel(self.queue);
            let traffic = Arc::clone(&self.traffic);
            let tamper = Tamper::default();
            let (read_half, handle) = match endpoint {
                Endpoint::Direct(Connection { stream, session }) => {
                    let (read_half, write_half) = stream.into_split();
                    let task = writer(
                        peer,
                        write_half,
                        rx,
                        self.job_hash,
                        self.timing,
                        traffic,
                        ended.clone(),
                        Arc::clone(&tamper),
                        session.sealer,
                    );
                    (
                        PendingReader::Direct(read_half, session.opener),
                        self.runtime.spawn(observed(peer, ended.clone(), task)),
                    )
                }
                Endpoint::Relay { sender, receiver, name, session } => {
                    let task = relay_writer(
                        peer,
                        sender,
                        rx,
                        self.job_hash,
                        relay_timing,
                        traffic,
                        ended.clone(),
                        name,
                        session.sealer,
                    );
                    (
                        PendingReader::Relay(receiver, name, session.opener),
                        self.runtime.spawn(observed(peer, ended.clone(), task)),
                    )
                }
            };
            self.links.insert(
                peer,
                Link {
                    tx: Some(tx),
                    backlog: Backlog::default(),
                    draining: false,
                    read_half: Some(read_half),
                    writer: Some(handle),
                    reader: None,
                    closed: false,
                    reported: false,
                    tamper,
                },
            );
        }
    }
}

impl Handler<SendFrame> for TransportActor {
    type Result = ();

    fn handle(&mut self, msg: SendFrame, ctx: &mut Self::Context) {
        self.send(msg.peer, msg.frame, ctx);
    }
}

impl Handler<InstallRoutes> for TransportActor {
    type Result = ();

    fn handle(&mut self, msg: InstallRoutes, ctx: &mut Self::Context) {
        self.routes = Some(msg.routes);
        self.events = Some(msg.events);
        for item in std::mem::take(&mut self.early) {
            match item {
                Early::Event(event) => self.event(event),
                Early::Frame(peer, frame) => self.route(peer, frame),
            }
        }
        self.early_bytes = 0;
        self.start_readers(ctx);
    }
}

impl Handler<AttachCollectives> for TransportActor {
    type Result = ();

    fn handle(&mut self, msg: AttachCollectives, ctx: &mut Self::Context) {
        self.collectives = Some(msg.inbox);
        self.start_readers(ctx);
    }
}

impl TransportActor {
    /// Spawns the reader of every link that has none yet.
    fn start_readers(&mut self, ctx: &mut Context<Self>) {
        let inbound: Recipient<Inbound> = ctx.address().recipient();
        let ended: Recipient<LinkEnded> = ctx.address().recipient();
        for (peer, link) in &mut self.links {
            let traffic = Arc::clone(&self.traffic);
            match link.read_half.take() {
                Some(PendingReader::Direct(half, opener)) => {
                    let task = reader(
                        *peer,
                        half,
                        self.limits,
                        self.timing,
                        traffic,
                        inbound.clone(),
                        ended.clone(),
                        opener,
                    );
                    link.reader = Some(self.runtime.spawn(observed(*peer, ended.clone(), task)));
                }
                Some(PendingReader::Relay(receiver, name, opener)) => {
                    let task = relay_reader(
                        *peer,
                        receiver,
                        self.limits,
                        self.timing,
                        traffic,
                        inbound.clone(),
                        ended.clone(),
                        name,
                        opener,
                    );
                    link.reader = Some(self.runtime.spawn(observed(*peer, ended.clone(), task)));
                }
                None => {}
            }
        }
    }
}

impl Handler<Inbound> for TransportActor {
    type Result = ();

    fn handle(&mut self, msg: Inbound, _ctx: &mut Self::Context) {
        self.route(msg.peer, msg.frame);
    }
}

impl Handler<LinkEnded> for TransportActor {
    type Result = ();

    fn handle(&mut self, msg: LinkEnded, _ctx: &mut Self::Context) {
        let peer_done = self.done.contains(&msg.peer);
        let Some(link) = self.links.get_mut(&msg.peer) else { return };
        link.closed = true;
        link.backlog.clear();
        // After the peer's Committed its links end as part of a clean finish.
        if link.reported || peer_done {
            return;
        }
        link.reported = true;
        let error = msg.error.unwrap_or_else(|| "connection closed by the peer".to_string());
        tracing::debug!(peer = msg.peer, %error, "link ended");
        self.event(JobEvent::PeerLost { peer: msg.peer, error });
    }
}

/// Fault injection (see `updraft_runtime::testing::Fault`): cut the link to `peer` (both
/// directions, at once), or flip a bit of the next data frame sent to it.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), String>")]
pub enum InjectLinkFault {
    /// Abort the link's tasks: the socket closes under both peers.
    Drop {
        /// The peer.
        peer: u32,
    },
    /// Damage the next data frame on the wire.
    Corrupt {
        /// The peer.
        peer: u32,
    },
    /// Stop sending to the peer (the connection stays open): the peer's silence deadline
    /// ends the link.
    Stall {
        /// The peer.
        peer: u32,
    },
}

impl Handler<InjectLinkFault> for TransportActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: InjectLinkFault, _ctx: &mut Self::Context) -> Self::Result {
        let peer = match msg {
            InjectLinkFault::Drop { peer }
            | InjectLinkFault::Corrupt { peer }
            | InjectLinkFault::Stall { peer } => peer,
        };
        let Some(link) = self.links.get_mut(&peer) else { return Err(format!("no link to rank {peer}")) };
        match msg {
            InjectLinkFault::Drop { .. } => self.fail_link(peer, "the link was cut (injected fault)".into()),
            InjectLinkFault::Corrupt { .. } => {
                link.tamper.corrupt.store(true, std::sync::atomic::Ordering::Relaxed)
            }
            InjectLinkFault::Stall { .. } => {
                link.tamper.stall.store(true, std::sync::atomic::Ordering::Relaxed)
            }
        }
        Ok(())
    }
}

/// Flush every link and close it: queued frames are written, each socket is half-closed, and
/// the readers go on until the peer closes its side too (so neither side resets a connection
/// with unread data). Answers with the link tasks to await, with a deadline.
#[derive(Message)]
#[rtype(result = "Vec<JoinHandle<()>>")]
pub struct Shutdown;

impl Handler<Shutdown> for TransportActor {
    type Result = MessageResult<Shutdown>;

    fn handle(&mut self, _: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        let mut writers = Vec::new();
        for link in self.links.values_mut() {
            let backlog = std::mem::take(&mut link.backlog).frames;
            if let Some(tx) = link.tx.take()
                && !backlog.is_empty()
            {
                self.runtime.spawn(async move {
                    for frame in backlog {
                        if tx.send(frame).await.is_err() {
                            break;
                        }
                    }
                });
            }
            writers.extend(link.writer.take());
            writers.extend(link.reader.take());
        }
        MessageResult(writers)
    }
}

impl Drop for TransportActor {
    fn drop(&mut self) {
        for link in self.links.values_mut() {
            if let Some(r) = link.reader.take() {
                r.abort();
            }
        }
    }
}

/// Waits for the link tasks returned by [`Shutdown`], at most `limit`; those still running
/// then are aborted.
pub async fn await_links(tasks: Vec<JoinHandle<()>>, limit: Duration) {
    let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let all = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(limit, all).await.is_err() {
        for a in aborts {
            a.abort();
        }
    }
}
