//! Collective operations over whatever links a job has (punched TCP or a relay): barrier,
//! broadcast, gather(v), allgather(v), reduce, allreduce, alltoall(v) and inclusive scan, plus
//! point-to-point send and receive.
//!
//! A [`Communicator`] sends through the transport like any operator, on a channel id of its
//! own ([`COLLECTIVE_CHANNEL`]); the transport hands it every frame on that channel. Each
//! operation gets a number, and every message of it a step, both carried in the frame's sequence
//! field, so messages that arrive early (a peer already in a later step or operation) are held
//! until asked for. Sends never wait: they are queued at the transport, so an all-to-all cannot
//! deadlock. Every receive has a deadline.
//!
//! Algorithms, chosen by size (every rank makes the same choice):
//!
//! | operation | small | large |
//! |---|---|---|
//! | barrier | dissemination, ⌈log₂ p⌉ rounds | — |
//! | broadcast | binomial tree | scatter from the root, then ring allgather (root decides; the first message says which) |
//! | gather(v) | binomial tree | binomial tree |
//! | allgather(v) | Bruck (recursive doubling, any p) | ring; the choice follows the largest contribution, found by a dissemination max |
//! | reduce | binomial tree | binomial tree |
//! | allreduce | recursive doubling (non-powers of two folded in) | ring reduce-scatter then ring allgather |
//! | alltoall(v) | every send posted at once | pairwise exchange, one peer per step |
//! | scan | recursive doubling (Hillis–Steele) | same |
//!
//! *Small* is at most [`SMALL_BYTES`]. Reductions work on Arrow arrays (a scalar is an array of
//! one element), element by element; see [`ReduceOp`].

mod reduce;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::Recipient;
use arrow_array::ArrayRef;
use arrow_buffer::Buffer;
use bytes::{Buf, BufMut, Bytes};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use reduce::{ReduceOp, combine, decode_array, encode_array};

use crate::messages::SendFrame;
use crate::wire::{FrameKind, OutBody, OutFrame};

/// The channel id of collective messages (plan edges are numbered from 0).
pub const COLLECTIVE_CHANNEL: u32 = u32::MAX;

/// Messages up to this size use the latency-optimal algorithms.
pub const SMALL_BYTES: usize = 64 * 1024;

/// The sequence number of a notice the transport puts into a communicator's inbox when a link
/// is lost or a peer aborts before the job's operators start (the body is the cause): every
/// receive waiting on that peer then fails at once instead of at its deadline.
pub const PEER_GONE: u64 = u64::MAX;

/// Bits of the sequence field that number the step within an operation.
const STEP_BITS: u32 = 24;

/// A collective message as the transport delivers it.
#[derive(Debug)]
pub struct CollectiveFrame {
    /// Sender.
    pub from: u32,
    /// Operation and step.
    pub seq: u64,
    /// Payload.
    pub body: Buffer,
}

/// Bytes a communicator's inbox may hold by default, delivered but not yet received (held
/// for a later step included): twice the largest frame (see `max_frame`).
pub fn default_inbox_bytes(max_frame: u64) -> u64 {
    max_frame.saturating_mul(2)
}

/// A communicator's inbox, bounded in bytes: peers send collective messages without credit (a
/// peer may run one operation ahead), so what they can make a worker hold is capped here.
pub fn inbox(cap: u64) -> (Inbox, Outlet) {
    let (tx, rx) = mpsc::unbounded_channel();
    let held = Arc::new(AtomicU64::new(0));
    (Inbox { tx, held: Arc::clone(&held), cap }, Outlet { rx, held })
}

/// What a message costs against an inbox's cap: its bytes and a fixed 64 for its keeping, so
/// that a flood of empty messages is bounded too.
fn cost(body: &Buffer) -> u64 {
    body.len() as u64 + 64
}

/// The transport's end of an inbox.
#[derive(Debug, Clone)]
pub struct Inbox {
    tx: mpsc::UnboundedSender<CollectiveFrame>,
    held: Arc<AtomicU64>,
    cap: u64,
}

/// The communicator's end of an inbox.
#[derive(Debug)]
pub struct Outlet {
    rx: mpsc::UnboundedReceiver<CollectiveFrame>,
    held: Arc<AtomicU64>,
}

impl Outlet {
    /// The next message delivered, released from the inbox's count; `None` once the transport
    /// is gone. (A [`Communicator`] receives through its operations instead.)
    pub async fn recv(&mut self) -> Option<CollectiveFrame> {
        let frame = self.rx.recv().await?;
        if frame.seq != PEER_GONE {
            self.held.fetch_sub(cost(&frame.body), Ordering::AcqRel);
        }
        Some(frame)
    }
}

impl Inbox {
    /// Delivers `frame`. Notices ([`PEER_GONE`]) always pass.
    ///
    /// # Errors
    /// A message naming the sender when the inbox would go over its cap (the frame is not
    /// delivered: the caller must fail the job), or when the communicator is gone.
    pub fn deliver(&self, frame: CollectiveFrame) -> std::result::Result<(), String> {
        let bytes = cost(&frame.body);
        if frame.seq != PEER_GONE {
            let before = self.held.fetch_add(bytes, Ordering::AcqRel);
            if before.saturating_add(bytes) > self.cap {
                self.held.fetch_sub(bytes, Ordering::AcqRel);
                return Err(format!(
                    "rank {} sent collective messages ahead of this worker beyond its {}-byte inbox",
                    frame.from, self.cap
                ));
            }
        }
        let from = frame.from;
        self.tx.send(frame).map_err(|_| format!("a collective message from rank {from}, but no communicator"))
    }
}

/// Why a collective failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    /// A peer sent nothing in time.
    #[error("{op} (operation {number}): nothing from rank {from} within {after:?}")]
    Timeout {
        /// Operation.
        op: &'static str,
        /// Its number on this communicator.
        number: u64,
        /// The peer waited for.
        from: u32,
        /// The deadline.
        after: Duration,
    },
    /// Bad arguments or a malformed message.
    #[error("{op}: {detail}")]
    Invalid {
        /// Operation.
        op: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A peer's link was lost, or the peer aborted.
    #[error("{op}: {error}")]
    PeerGone {
        /// Operation.
        op: &'static str,
        /// The peer.
        peer: u32,
        /// What happened.
        error: String,
    },
    /// The transport went away.
    #[error("{op}: the transport is gone")]
    Closed {
        /// Operation.
        op: &'static str,
    },
}

type Result<T> = std::result::Result<T, CollectiveError>;

/// The collective endpoint of one worker.
pub struct Communicator {
    me: u32,
    world: u32,
    send: Recipient<SendFrame>,
    inbox: Outlet,
    /// Messages that arrived before they were asked for, by (seq, sender), oldest first.
    /// They count against the inbox's cap until received.
    held: HashMap<(u64, u32), VecDeque<Buffer>>,
    /// Peers whose link was lost or who aborted, with the cause: a receive from one of them
    /// fails once nothing it sent before is left to take.
    gone: HashMap<u32, String>,
    next_op: u64,
    timeout: Duration,
}

fn invalid(op: &'static str, detail: impl Into<String>) -> CollectiveError {
    CollectiveError::Invalid { op, detail: detail.into() }
}

fn bytes_of(b: Buffer) -> Bytes {
    Bytes::from_owner(b)
}

impl Communicator {
    /// A communicator for rank `me` of `world`, sending through `send` and receiving what the
    /// transport puts into `inbox` (see [`inbox`] and `AttachCollectives`); every receive waits
    /// at most `timeout`.
    pub fn new(
        me: u32,
        world: u32,
        send: Recipient<SendFrame>,
        inbox: Outlet,
        timeout: Duration,
    ) -> Communicator {
        Communicator {
            me,
            world,
            send,
            inbox,
            held: HashMap::new(),
            gone: HashMap::new(),
            next_op: 1,
            timeout,
        }
    }

    /// This worker's rank.
    pub fn rank(&self) -> u32 {
        self.me
    }

    /// Number of workers.
    pub fn world(&self) -> u32 {
        self.world
    }

    fn begin(&mut self) -> u64 {
        let op = self.next_op;
        self.next_op += 1;
        op
    }

    fn tag(op: u64, step: u32) -> u64 {
        (op << STEP_BITS) | u64::from(step)
    }

    fn post(&self, op: &'static str, to: u32, seq: u64, data: Bytes) -> Result<()> {
        if to == self.me || to >= self.world {
            return Err(invalid(op, format!("rank {} cannot send to rank {to}", self.me)));
        }
        let frame =
            OutFrame { kind: FrameKind::Data, channel: COLLECTIVE_CHANNEL, seq, body: OutBody::Bytes(data) };
        if !self.send.connected() {
            return Err(CollectiveError::Closed { op });
        }
        // Never waits: the transport queues what its links cannot take yet.
        self.send.do_send(SendFrame { peer: to, frame });
        Ok(())
    }

    /// The message of step `seq` (from `from`, or anyone), released from the inbox's count.
    async fn take(&mut self, op: &'static str, seq: u64, from: Option<u32>) -> Result<(u32, Buffer)> {
        let (sender, body) = self.take_held_or_wait(op, seq, from).await?;
        self.inbox.held.fetch_sub(cost(&body), Ordering::AcqRel);
        Ok((sender, body))
    }

    async fn take_held_or_wait(
        &mut self,
        op: &'static str,
        seq: u64,
        from: Option<u32>,
    ) -> Result<(u32, Buffer)> {
        let key = match from {
            Some(f) => Some((seq, f)).filter(|k| self.held.contains_key(k)),
            None => self.held.keys().find(|(s, _)| *s == seq).copied(),
        };
        let found = key.and_then(|k| {
            let queue = self.held.get_mut(&k)?;
            let b = queue.pop_front();
            if queue.is_empty() {
                self.held.remove(&k);
            }
            b.map(|b| (k.1, b))
        });
        if let Some(found) = found {
            return Ok(found);
        }
        let gone = |c: &Communicator, peer: u32| {
            c.gone.get(&peer).map(|error| CollectiveError::PeerGone { op, peer, error: error.clone() })
        };
        if let Some(e) = from.and_then(|f| gone(self, f)) {
            return Err(e);
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.inbox.rx.recv()).await {
                Err(_) => {
                    return Err(CollectiveError::Timeout {
                        op,
                        number: seq >> STEP_BITS,
                        from: from.unwrap_or(u32::MAX),
                        after: self.timeout,
                    });
                }
                Ok(None) => return Err(CollectiveError::Closed { op }),
                Ok(Some(f)) if f.seq == PEER_GONE => {
                    // Whatever the peer sent before it went is taken first (frames arrive in
                    // order); only a receive from it that is still waiting fails.
                    let error = String::from_utf8_lossy(f.body.as_slice()).to_string();
                    self.gone.entry(f.from).or_insert(error);
                    if let Some(e) = from.filter(|x| *x == f.from).and_then(|x| gone(self, x)) {
                        return Err(e);
                    }
                }
                Ok(Some(f)) if f.seq == seq && from.is_none_or(|x| x == f.from) => {
                    return Ok((f.from, f.body));
                }
                Ok(Some(f)) => self.held.entry((f.seq, f.from)).or_default().push_back(f.body),
            }
        }
    }

    async fn recv_from(&mut self, op: &'static str, seq: u64, from: u32) -> Result<Buffer> {
        Ok(self.take(op, seq, Some(from)).await?.1)
    }

    /// Sends `data` to rank `to` with a user tag (below 2²⁴). Messages with the same tag
    /// arrive in the order sent. Never waits.
    ///
    /// # Errors
    /// A bad rank or tag, or a closed transport.
    pub fn send(&self, to: u32, tag: u32, data: Bytes) -> Result<()> {
        self.post("send", to, user_tag("send", tag)?, data)
    }

    /// Receives the oldest message rank `from` sent with `tag` not received yet.
    ///
    /// # Errors
    /// A bad tag, or nothing arrived within the deadline.
    pub async fn recv(&mut self, from: u32, tag: u32) -> Result<Bytes> {
        let seq = user_tag("recv", tag)?;
        Ok(bytes_of(self.recv_from("recv", seq, from).await?))
    }

    /// Returns when every rank has entered the barrier.
    ///
    /// # Errors
    /// A peer missed the deadline.
    pub async fn barrier(&mut self) -> Result<()> {
        let op = self.begin();
        let (p, r) = (self.world, self.me);
        let (mut k, mut step) = (1u32, 0u32);
        while k < p {
            self.post("barrier", (r + k) % p, Self::tag(op, step), Bytes::new())?;
            self.recv_from("barrier", Self::tag(op, step), (r + p - k) % p).await?;
            k <<= 1;
            step += 1;
        }
        Ok(())
    }

    /// Rank `root`'s `data` on every rank (`data` is read on the root only).
    ///
    /// # Errors
    /// No data on the root, or a peer missed the deadline.
    pub async fn broadcast(&mut self, root: u32, data: Option<Bytes>) -> Result<Bytes> {
        const OP: &str = "broadcast";
        let op = self.begin();
        let (p, r) = (self.world, self.me);
        if root >= p {
            return Err(invalid(OP, format!("root {root} is not a rank of {p}")));
        }
        let vr = (r + p - root) % p;
        let real = |v: u32| (v + root) % p;
        let (payload, large) = if vr == 0 {
            let data = data.ok_or_else(|| invalid(OP, "the root has no data"))?;
            let large = data.len() > SMALL_BYTES && p > 2;
            if large {
                // Scatter: rank v gets chunk v, with the total length to find the others.
                let total = data.len();
                for v in 1..p {
                    let (a, b) = chunk_range(total, p, v);
                    let mut m = Vec::with_capacity(9 + b - a);
                    m.put_u8(1);
                    m.put_u64_le(total as u64);
                    m.extend_from_slice(&data[a..b]);
                    self.post(OP, real(v), Self::tag(op, 0), Bytes::from(m))?;
                }
            }
            (data, large)
        } else {
            let (_, first) = self.take(OP, Self::tag(op, 0), None).await?;
            let mut first = bytes_of(first);
            if first.is_empty() {
                return Err(invalid(OP, "empty message"));
            }
            let mode = first.get_u8();
            if mode == 1 {
                let (total, first) = scatter_chunk(OP, first, p, vr)?;
                return self.ring_gather_chunks(OP, op, vr, root, total, first).await;
            }
            (first, false)
        };
        if large {
            let (a, b) = chunk_range(payload.len(), p, 0);
            return self.ring_gather_chunks(OP, op, 0, root, payload.len(), payload.slice(a..b)).await;
        }
        // Binomial tree: forward to the children below the lowest set bit of the virtual rank.
        let mut mask = 1u32;
        while mask < p && vr & mask == 0 {
            mask <<= 1;
        }
        mask >>= 1;
        let mut framed = Vec::with_capacity(1 + payload.len());
        framed.put_u8(0);
        framed.extend_from_slice(&payload);
        let framed = Bytes::from(framed);
        while mask > 0 {
            if vr + mask < p {
                self.post(OP, real(vr + mask), Self::tag(op, 0), framed.clone())?;
            }
            mask >>= 1;
        }
        Ok(payload)
    }

    /// The ring allgather of a scattered buffer: chunk `v` starts on virtual rank `v`.
    async fn ring_gather_chunks(
        &mut self,
        name: &'static str,
        op: u64,
        vr: u32,
        root: u32,
        total: usize,
        mine: Bytes,
    ) -> Result<Bytes> {
        let p = self.world;
        let real = |v: u32| (v + root) % p;
        let mut chunks: Vec<Option<Bytes>> = vec![None; p as usize];
        chunks[vr as usize] = Some(mine);
        for s in 0..p - 1 {
            let send_idx = (vr + p - s) % p;
            let recv_idx = (vr + p - s - 1) % p;
            let out = chunks[send_idx as usize].clone().unwrap_or_default();
            self.post(name, real((vr + 1) % p), Self::tag(op, 1 + s), out)?;
            let got = self.recv_from(name, Self::tag(op, 1 + s), real((vr + p - 1) % p)).await?;
            let (a, b) = chunk_range(total, p, recv_idx);
            if got.len() != b - a {
                return Err(invalid(
                    name,
                    format!("chunk {recv_idx} has {} bytes, expected {}", got.len(), b - a),
                ));
            }
            chunks[recv_idx as usize] = Some(bytes_of(got));
        }
        let mut all = Vec::with_capacity(total);
        for c in chunks {
            all.extend_from_slice(&c.unwrap_or_default());
        }
        Ok(Bytes::from(all))
    }

    /// Every rank's `data` on `root`, by rank (`None` elsewhere). Contributions may differ in
    /// size, and may be empty.
    ///
    /// # Errors
    /// A peer missed the deadline.
    pub async fn gather(&mut self, root: u32, data: Bytes) -> Result<Option<Vec<Bytes>>> {
        const OP: &str = "gather";
        let op = self.begin();
        let (p, r) = (self.world, self.me);
        if root >= p {
            return Err(invalid(OP, format!("root {root} is not a rank of {p}")));
        }
        let vr = (r + p - root) % p;
        let mut have: Vec<(u32, Bytes)> = vec![(r, data)];
        let (mut mask, mut step) = (1u32, 0u32);
        while mask < p {
            if vr & mask != 0 {
                let parent = (vr - mask + root) % p;
                self.post(OP, parent, Self::tag(op, step), pack(&have))?;
                return Ok(None);
            }
            if vr + mask < p {
                let got = self.recv_from(OP, Self::tag(op, step), (vr + mask + root) % p).await?;
                have.extend(unpack(OP, bytes_of(got), p)?);
            }
            mask <<= 1;
            step += 1;
        }
        have.sort_by_key(|(rank, _)| *rank);
        if have.len() != p as usize || have.iter().enumerate().any(|(i, (rank, _))| *rank as usize != i) {
            return Err(invalid(OP, "the gathered blocks do not name every rank exactly once"));
        }
        Ok(Some(have.into_iter().map(|(_, b)| b).collect()))
    }

    /// Every rank's `data` on every rank, by rank. Contributions may differ in size.
    ///
    /// # Errors
    /// A peer missed the deadline.
    pub async fn allgather(&mut self, data: Bytes) -> Result<Vec<Bytes>> {
        const OP: &str = "allgather";
        let largest = self.dissemination_max(OP, data.len() as u64).await?;
        let op = self.begin();
        let (p, r) = (self.world, self.me);
        let mut blocks: Vec<Option<Bytes>> = vec![None; p as usize];
        blocks[r as usize] = Some(data);
        if largest as usize * p as usize <= SMALL_BYTES {
            // Bruck: after step k this rank holds blocks r .. r + 2^(k+1) - 1 (mod p).
            let (mut have, mut step) = (1u32, 0u32);
            while have < p {
                let count = have.min(p - have);
                let out: Vec<(u32, Bytes)> = (0..count)
                    .map(|i| {
                        let idx = (r + i) % p;
                        (idx, blocks[idx as usize].clone().unwrap_or_default())
                    })
                    .collect();
                self.post(OP, (r + p - have) % p, Self::tag(op, step), pack(&out))?;
                let got = self.recv_from(OP, Self::tag(op, step), (r + have) % p).await?;
                for (idx, b) in unpack(OP, bytes_of(got), p)? {
                    blocks[idx as usize] = Some(b);
                }
                have += count;
                step += 1;
            }
        } else {
            // Ring: in step s, pass on the block received in step s - 1.
            for s in 0..p - 1 {
                let send_idx = (r + p - s) % p;
                let recv_idx = (r + p - s - 1) % p;
                let out = blocks[send_idx as usize].clone().unwrap_or_default();
                self.post(OP, (r + 1) % p, Self::tag(op, s), out)?;
                let got = self.recv_from(OP, Self::tag(op, s), (r + p - 1) % p).await?;
                blocks[recv_idx as usize] = Some(bytes_of(got));
            }
        }
        blocks
            .into_iter()
            .enumerate()
            .map(|(i, b)| b.ok_or_else(|| invalid(OP, format!("no block from rank {i}"))))
            .collect()
    }

    /// The largest of every rank's `value` (dissemination: ⌈log₂ p⌉ rounds; max is idempotent,
    /// so overlapping contributions do no harm).
    async fn dissemination_max(&mut self, name: &'static str, value: u64) -> Result<u64> {
        let op = self.begin();
        let (p, r) = (self.world, self.me);
        let (mut k, mut step, mut max) = (1u32, 0u32, value);
        while k < p {
            self.post(name, (r + k) % p, Self::tag(op, step), Bytes::copy_from_slice(&max.to_le_bytes()))?;
            let got = self.recv_from(name, Self::tag(op, step), (r + p - k) % p).await?;
            let bytes: [u8; 8] = got.as_slice().try_into().map_err(|_| invalid(name, "bad size message"))?;
            max = max.max(u64::from_le_bytes(bytes));
            k <<= 1;
            step += 1;
        }
        Ok(max)
    }

    /// Sends `parts[i]` to rank `i` and returns what every rank sent to this one, by rank
    /// (`parts[me]` stays here). Parts may differ in size, and may be empty.
    ///
    /// # Errors
    /// Not one part per rank, or a peer missed the deadline.
    pub async fn alltoall(&mut self, mut parts: Vec<Bytes>) -> Result<Vec<Bytes>> {
        const OP: &str = "alltoall";
        let op = self.begin();
        let (p, r) = (self.world, self.me);
        if parts.len() != p as usize {
            return Err(invalid(OP, format!("{} parts for {p} ranks", parts.len())));
        }
        let mut out: Vec<Bytes> = vec![Bytes::new(); p as usize];
        out[r as usize] = std::mem::take(&mut parts[r as usize]);
        let small = parts.iter().all(|b| b.len() <= SMALL_BYTES);
        if small {
            for s in 1..p {
                let to = (r + s) % p;
                self.post(OP, to, Self::tag(op, s), std::mem::take(&mut parts[to as usize]))?;
            }
        }
        for s in 1..p {
            let (to, from) = ((r + s) % p, (r + p - s) % p);
            if !small {
                self.post(OP, to, Self::tag(op, s), std::mem::take(&mut parts[to as usize]))?;
            }
            out[from as usize] = bytes_of(self.recv_from(OP, Self::tag(op, s), from).await?);
        }
        Ok(out)
    }

    /// The element-wise reduction of every rank's `data` on `root` (`None` elsewhere).
    ///
    /// # Errors
    /// Arrays that differ in length or type, unsupported types, or a peer missed the deadline.
    pub async fn reduce(&mut self, root: u32, op: ReduceOp, data: ArrayRef) -> Result<Option<ArrayRef>> {
        const OP: &str = "reduce";
        let n = self.begin();
        let (p, r) = (self.world, self.me);
        if root >= p {
            return Err(invalid(OP, format!("root {root} is not a rank of {p}")));
        }
        let vr = (r + p - root) % p;
        let mut acc = reduce::prepare(op, &data).map_err(|e| invalid(OP, e))?;
        let (mut mask, mut step) = (1u32, 0u32);
        while mask < p {
            if vr & mask != 0 {
                let bytes = encode_array(&acc).map_err(|e| invalid(OP, e))?;
                self.post(OP, (vr - mask + root) % p, Self::tag(n, step), bytes)?;
                return Ok(None);
            }
            if vr + mask < p {
                let got = self.recv_from(OP, Self::tag(n, step), (vr + mask + root) % p).await?;
                let other = decode_array(&got).map_err(|e| invalid(OP, e))?;
                acc = combine(op, &acc, &other).map_err(|e| invalid(OP, e))?;
            }
            mask <<= 1;
            step += 1;
        }
        Ok(Some(acc))
    }

    /// The element-wise reduction of every rank's `data`, on every rank. Every rank must give
    /// an array of the same length and type (the algorithm is chosen from its size).
    ///
    /// # Errors
    /// Arrays that differ in length or type, unsupported types, or a peer missed the deadline.
    pub async fn allreduce(&mut self, op: ReduceOp, data: ArrayRef) -> Result<ArrayRef> {
        const OP: &str = "allreduce";
        // Numbered before anything can fail, so that every rank numbers operations alike.
        let n = self.begin();
        let acc = reduce::prepare(op, &data).map_err(|e| invalid(OP, e))?;
        // Every rank has the same length and type, so every rank picks the same algorithm.
        let bytes = acc.len() * acc.data_type().primitive_width().unwrap_or(8);
        if self.world == 1 {
            return Ok(acc);
        }
        if bytes <= SMALL_BYTES || acc.len() < self.world as usize {
            self.allreduce_doubling(n, op, acc).await
        } else {
            self.allreduce_ring(n, op, acc).await
        }
    }

    async fn allreduce_doubling(&mut self, n: u64, op: ReduceOp, mut acc: ArrayRef) -> Result<ArrayRef> {
        const OP: &str = "allreduce";
        let (p, r) = (self.world, self.me);
        let pof2 = 1u32 << (31 - p.leading_zeros());
        let rem = p - pof2;
        // Fold the ranks beyond the largest power of two into their even neighbours.
        let newrank: Option<u32> = if r < 2 * rem {
            if r % 2 == 0 {
                let bytes = encode_array(&acc).map_err(|e| invalid(OP, e))?;
                self.post(OP, r + 1, Self::tag(n, 0), bytes)?;
                None
            } else {
                let got = self.recv_from(OP, Self::tag(n, 0), r - 1).await?;
                let other = decode_array(&got).map_err(|e| invalid(OP, e))?;
                acc = combine(op, &other, &acc).map_err(|e| invalid(OP, e))?;
                Some(r / 2)
            }
        } else {
            Some(r - rem)
        };
        if let Some(nr) = newrank {
            let (mut mask, mut step) = (1u32, 1u32);
            while mask < pof2 {
                let partner_new = nr ^ mask;
                let partner = if partner_new < rem { partner_new * 2 + 1 } else { partner_new + rem };
                let bytes = encode_array(&acc).map_err(|e| invalid(OP, e))?;
                self.post(OP, partner, Self::tag(n, step), bytes)?;
                let got = self.recv_from(OP, Self::tag(n, step), partner).await?;
                let other = decode_array(&got).map_err(|e| invalid(OP, e))?;
                // Lower rank's contribution first, so every rank combines in the same order.
                acc = if partner < r { combine(op, &other, &acc) } else { combine(op, &acc, &other) }
                    .map_err(|e| invalid(OP, e))?;
                mask <<= 1;
                step += 1;
            }
        }
        let last = Self::tag(n, 63);
        if r < 2 * rem {
            if r % 2 == 1 {
                let bytes = encode_array(&acc).map_err(|e| invalid(OP, e))?;
                self.post(OP, r - 1, last, bytes)?;
            } else {
                let got = self.recv_from(OP, last, r + 1).await?;
                acc = decode_array(&got).map_err(|e| invalid(OP, e))?;
            }
        }
        Ok(acc)
    }

    async fn allreduce_ring(&mut self, n: u64, op: ReduceOp, acc: ArrayRef) -> Result<ArrayRef> {
        const OP: &str = "allreduce";
        let (p, r) = (self.world, self.me);
        let len = acc.len();
        let mut chunks: Vec<ArrayRef> = (0..p)
            .map(|i| {
                let (a, b) = chunk_range(len, p, i);
                acc.slice(a, b - a)
            })
            .collect();
        let (right, left) = ((r + 1) % p, (r + p - 1) % p);
        // Reduce-scatter: after p - 1 steps chunk (r + 1) % p is complete here.
        for s in 0..p - 1 {
            let send_idx = ((r + p - s) % p) as usize;
            let recv_idx = ((r + 2 * p - s - 1) % p) as usize;
            let bytes = encode_array(&chunks[send_idx]).map_err(|e| invalid(OP, e))?;
            self.post(OP, right, Self::tag(n, s), bytes)?;
            let got = self.recv_from(OP, Self::tag(n, s), left).await?;
            let other = decode_array(&got).map_err(|e| invalid(OP, e))?;
            chunks[recv_idx] = combine(op, &other, &chunks[recv_idx]).map_err(|e| invalid(OP, e))?;
        }
        // Allgather of the complete chunks.
        for s in 0..p - 1 {
            let send_idx = ((r + 1 + p - s) % p) as usize;
            let recv_idx = ((r + p - s) % p) as usize;
            let bytes = encode_array(&chunks[send_idx]).map_err(|e| invalid(OP, e))?;
            self.post(OP, right, Self::tag(n, p + s), bytes)?;
            let got = self.recv_from(OP, Self::tag(n, p + s), left).await?;
            chunks[recv_idx] = decode_array(&got).map_err(|e| invalid(OP, e))?;
        }
        let refs: Vec<&dyn arrow_array::Array> = chunks.iter().map(|c| c.as_ref()).collect();
        arrow_select::concat::concat(&refs).map_err(|e| invalid(OP, e.to_string()))
    }

    /// Inclusive prefix reduction in rank order: rank `i` gets the reduction of ranks `0..=i`.
    ///
    /// # Errors
    /// Arrays that differ in length or type, unsupported types, or a peer missed the deadline.
    pub async fn scan(&mut self, op: ReduceOp, data: ArrayRef) -> Result<ArrayRef> {
        const OP: &str = "scan";
        let n = self.begin();
        let (p, r) = (self.world, self.me);
        let mut acc = reduce::prepare(op, &data).map_err(|e| invalid(OP, e))?;
        let (mut k, mut step) = (1u32, 0u32);
        while k < p {
            if r + k < p {
                let bytes = encode_array(&acc).map_err(|e| invalid(OP, e))?;
                self.post(OP, r + k, Self::tag(n, step), bytes)?;
            }
            if r >= k {
                let got = self.recv_from(OP, Self::tag(n, step), r - k).await?;
                let other = decode_array(&got).map_err(|e| invalid(OP, e))?;
                acc = combine(op, &other, &acc).map_err(|e| invalid(OP, e))?;
            }
            k <<= 1;
            step += 1;
        }
        Ok(acc)
    }
}

fn user_tag(op: &'static str, tag: u32) -> Result<u64> {
    if tag >= 1 << STEP_BITS {
        return Err(invalid(op, format!("tag {tag} is not below 2^{STEP_BITS}")));
    }
    Ok(u64::from(tag))
}

/// Byte (or element) range of chunk `i` of `total` split into `parts` (`i < parts`), computed
/// without overflow for any `total`.
fn chunk_range(total: usize, parts: u32, i: u32) -> (usize, usize) {
    let at = |k: u32| (total as u128 * u128::from(k) / u128::from(parts.max(1))) as usize;
    (at(i), at(i + 1))
}

/// A scatter message after its mode byte, `[total u64][chunk]`, for virtual rank `vr` of `p`:
/// the total and the chunk. The total comes from the wire, so it must agree with the chunk
/// that came with it before anything is sized by it.
///
/// # Errors
/// A short header, or a chunk whose length does not fit the total.
pub fn scatter_chunk(op: &'static str, mut message: Bytes, p: u32, vr: u32) -> Result<(usize, Bytes)> {
    if message.len() < 8 {
        return Err(invalid(op, "short scatter header"));
    }
    let total = usize::try_from(message.get_u64_le()).unwrap_or(usize::MAX);
    let (a, b) = chunk_range(total, p, vr);
    if b - a != message.len() {
        return Err(invalid(
            op,
            format!("a scatter chunk of {} bytes does not fit a total of {total}", message.len()),
        ));
    }
    Ok((total, message))
}

/// Blocks as `[rank u32][len u64][bytes]...`.
fn pack(blocks: &[(u32, Bytes)]) -> Bytes {
    let mut out = Vec::with_capacity(blocks.iter().map(|(_, b)| 12 + b.len()).sum());
    for (rank, b) in blocks {
        out.put_u32_le(*rank);
        out.put_u64_le(b.len() as u64);
        out.extend_from_slice(b);
    }
    Bytes::from(out)
}

/// Blocks packed by `pack` (`[rank u32][len u64][bytes]...`), each naming a rank below
/// `world`.
///
/// # Errors
/// A truncated header or block, or a rank outside the world.
pub fn unpack(op: &'static str, mut data: Bytes, world: u32) -> Result<Vec<(u32, Bytes)>> {
    let mut out = Vec::new();
    while data.has_remaining() {
        if data.remaining() < 12 {
            return Err(invalid(op, "truncated block header"));
        }
        let rank = data.get_u32_le();
        if rank >= world {
            return Err(invalid(op, format!("a block of rank {rank} in a world of {world}")));
        }
        let len = data.get_u64_le();
        if (data.remaining() as u64) < len {
            return Err(invalid(op, "truncated block"));
        }
        out.push((rank, data.split_to(len as usize)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_whole_range() {
        for (total, parts) in [(10, 3), (0, 4), (7, 7), (5, 8), (usize::MAX, 3)] {
            let ranges: Vec<_> = (0..parts).map(|i| chunk_range(total, parts, i)).collect();
            assert_eq!(ranges[0].0, 0);
            assert_eq!(ranges[parts as usize - 1].1, total);
            assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0));
        }
    }

    #[test]
    fn blocks_round_trip() {
        let blocks = vec![(3, Bytes::from_static(b"abc")), (0, Bytes::new()), (7, Bytes::from_static(b"z"))];
        assert_eq!(unpack("t", pack(&blocks), 8).expect("unpack"), blocks);
        assert!(unpack("t", Bytes::from_static(b"\x01\x00"), 8).is_err());
        assert!(unpack("t", pack(&blocks), 7).expect_err("rank 7 of 7").to_string().contains("rank 7"));
        let mut huge = pack(&blocks[..1]).to_vec();
        huge[4..12].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(unpack("t", Bytes::from(huge), 8).is_err(), "a length beyond the message");
    }
}
