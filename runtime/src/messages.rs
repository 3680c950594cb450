//! Messages between operator actors, the transport and the job driver, and the port through
//! which the runtime uses a transport it does not name.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::prelude::*;
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;

use crate::credit::CreditGuard;
use crate::ids::{EdgeId, Rank};
use crate::report::{OperatorStats, TableSummary, WorkerReport};
use crate::wire::OutFrame;

/// Everything an operator actor receives.
#[derive(Message)]
#[rtype(result = "()")]
pub enum ToOperator {
    /// Routes are installed: sources may start.
    Start,
    /// Send [`ToOperator::Start`] to `dependent` once input `port` of this stage has ended (at
    /// once if it has).
    StartAfter {
        /// Input port of this stage.
        port: usize,
        /// The stage to start.
        dependent: Recipient<ToOperator>,
    },
    /// A batch from a producer on this worker (zero-copy).
    Local {
        /// Channel.
        edge: EdgeId,
        /// Input port.
        port: usize,
        /// Always this worker's rank.
        from: Rank,
        /// The batch.
        batch: RecordBatch,
        /// Returns the credit when dropped.
        guard: CreditGuard,
    },
    /// A producer on this worker ended a channel.
    LocalEnd {
        /// Channel.
        edge: EdgeId,
        /// Input port.
        port: usize,
        /// This worker's rank.
        from: Rank,
        /// Batches it sent.
        batches: u64,
        /// Rows it sent.
        rows: u64,
    },
    /// A data frame from a peer: Arrow IPC messages.
    RemoteData {
        /// Channel.
        edge: EdgeId,
        /// Sender.
        from: Rank,
        /// Sequence number on the channel.
        seq: u64,
        /// Aligned body.
        body: Buffer,
    },
    /// A peer ended a channel.
    RemoteEnd {
        /// Channel.
        edge: EdgeId,
        /// Sender.
        from: Rank,
        /// Sequence number on the channel.
        seq: u64,
        /// Batches it sent.
        batches: u64,
        /// Rows it sent.
        rows: u64,
    },
    /// Credit returned by the consumer of `edge` on rank `dest`.
    Credit {
        /// Channel.
        edge: EdgeId,
        /// The consumer's rank.
        dest: Rank,
        /// Bytes returned.
        bytes: u64,
    },
}

/// Send a frame to a peer.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SendFrame {
    /// Destination rank.
    pub peer: Rank,
    /// The frame.
    pub frame: OutFrame,
}

/// Where the transport delivers inbound frames, by edge id.
#[derive(Clone)]
pub struct Routes {
    /// Consumer actor of each edge (data and end frames).
    pub consumers: Vec<Recipient<ToOperator>>,
    /// Producer actor of each edge (credit frames).
    pub producers: Vec<Recipient<ToOperator>>,
}

/// Deliver every frame on [`crate::collective::COLLECTIVE_CHANNEL`] to `inbox`, and start
/// reading links if routes have not already. Collective messages are not under credit: a
/// communicator runs one operation at a time, so a well-behaved peer sends ahead only what it
/// runs ahead of this worker; the inbox's byte cap bounds what any peer can make it hold.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachCollectives {
    /// The communicator's inbox (see [`crate::collective::inbox`]).
    pub inbox: crate::collective::Inbox,
}

/// Install routes and start reading links; peer events go to `events`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct InstallRoutes {
    /// Routes by edge.
    pub routes: Routes,
    /// Where peer events go.
    pub events: EventSink,
}

/// Something the job driver must know about.
#[derive(Debug)]
pub enum JobEvent {
    /// A stage finished.
    OperatorDone {
        /// Stage index.
        stage: usize,
        /// Its counters.
        stats: OperatorStats,
        /// Sink summary, if it is a sink.
        summary: Option<TableSummary>,
    },
    /// A stage failed.
    OperatorFailed {
        /// Stage index.
        stage: usize,
        /// Why.
        error: String,
        /// What kind of failure.
        class: crate::error::FailureClass,
    },
    /// A data channel broke the protocol.
    Protocol {
        /// Channel.
        edge: EdgeId,
        /// Sender.
        peer: Rank,
        /// What.
        detail: String,
    },
    /// A link failed or went silent.
    PeerLost {
        /// The peer.
        peer: Rank,
        /// What happened.
        error: String,
    },
    /// A peer aborted.
    PeerAborted {
        /// The peer.
        peer: Rank,
        /// Its reason.
        reason: String,
        /// The class of its failure.
        class: crate::error::FailureClass,
    },
    /// A peer finished.
    PeerDone {
        /// The peer.
        peer: Rank,
        /// Its report.
        report: Box<WorkerReport>,
    },
    /// A peer published its outputs, or failed to.
    PeerCommitted {
        /// The peer.
        peer: Rank,
        /// Why it failed, if it did.
        error: Option<String>,
    },
}

/// The sending side of the job's event queue. The queue is bounded by construction: every
/// stage sends one terminal event and every peer at most four (done, committed, lost or
/// aborted), and the capacity is sized from that (see [`EventSink::capacity`]).
#[derive(Clone, Debug)]
pub struct EventSink(tokio::sync::mpsc::Sender<JobEvent>);

impl EventSink {
    /// Capacity that can hold every event a job of this shape produces, with room to spare.
    pub fn capacity(stages: usize, world: u32) -> usize {
        stages * 2 + world as usize * 5 + 64
    }

    /// A new queue.
    pub fn channel(capacity: usize) -> (EventSink, tokio::sync::mpsc::Receiver<JobEvent>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        (EventSink(tx), rx)
    }

    /// Sends without blocking. A full queue means the bound above was wrong: logged loudly, and
    /// the driver still fails the job by its deadline. After the job ended, events are dropped.
    pub fn send(&self, event: JobEvent) {
        match self.0.try_send(event) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Closed(event)) => {
                tracing::debug!(?event, "event after the job ended");
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(event)) => {
                tracing::error!(?event, "job event queue full; the job will fail at its deadline");
            }
        }
    }
}

/// Bytes moved over links, counted by the transport, read by the job driver.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes written.
    pub bytes_sent: AtomicU64,
    /// Bytes read.
    pub bytes_received: AtomicU64,
    /// Bytes written, by channel: [`Traffic::CHANNELS`] in order.
    pub sent_by_channel: [AtomicU64; 3],
    /// Data frames written (batches of operators; not control frames or heartbeats).
    pub data_frames_sent: AtomicU64,
}

impl Traffic {
    /// Channel names, in the order of [`Traffic::sent_by_channel`].
    pub const CHANNELS: [&'static str; 3] = ["direct", "redis", "s3"];

    /// Counts `n` bytes written to a link of `channel` (one of [`Traffic::CHANNELS`]).
    pub fn sent(&self, channel: &str, n: u64) {
        self.bytes_sent.fetch_add(n, Ordering::Relaxed);
        if let Some(i) = Self::CHANNELS.iter().position(|c| *c == channel) {
            self.sent_by_channel[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts one data frame written.
    pub fn data_frame(&self) {
        self.data_frames_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// (channel, bytes written) for the channels used.
    pub fn sent_by_channel(&self) -> Vec<(String, u64)> {
        Self::CHANNELS
            .iter()
            .zip(&self.sent_by_channel)
            .map(|(c, n)| (c.to_string(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Current (sent, received).
    pub fn snapshot(&self) -> (u64, u64) {
        (self.bytes_sent.load(Ordering::Relaxed), self.bytes_received.load(Ordering::Relaxed))
    }
}

/// How the runtime uses a transport: send frames, install routes, read counters.
#[derive(Clone)]
pub struct TransportPort {
    /// Frames to peers.
    pub send: Recipient<SendFrame>,
    /// Route installation.
    pub install: Recipient<InstallRoutes>,
    /// Where collective messages go.
    pub attach: Recipient<AttachCollectives>,
    /// Traffic counters.
    pub traffic: Arc<Traffic>,
}
