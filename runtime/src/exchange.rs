//! The output side of an operator actor: one [`OutEdge`] per consumer stage. It routes each
//! emitted batch to its destination rank, zero-copy on the same worker and as Arrow IPC through
//! the transport otherwise, and holds batches back while the destination has no credit.
//!
//! ```text
//!  push(target, batch) ──▶ queue[dest] ──credit ≥ cost (or nothing in flight)──▶ send
//!                            ▲                                                     │
//!                            └────────────── on_credit(dest, bytes) ◀── consumer ──┘
//!  finish(): an empty batch (carrying the schema) to every destination that got none, then End.
//! ```
//!
//! Remote batches travel as self-contained Arrow IPC streams (schema, dictionaries, batches,
//! end-of-stream marker), one per frame: frames can be decoded one by one, a zero-length body
//! is never left half-read, and dictionaries need no state across frames. Small batches to one
//! destination (a 65,536-row batch hash-partitioned 64 ways makes ~1,000-row pieces) are
//! staged and sealed into one frame of up to [`COALESCE_BYTES`], each batch encoded from its
//! own buffers (no concatenation), so the schema and the per-frame costs (header, checksum,
//! seal, credit) are paid once per frame rather than once per piece. Staged batches are sealed
//! when they reach that size, when a batch of another schema comes, and when the producer
//! finishes; control batches are sealed at once.

use std::collections::VecDeque;

use actix::Recipient;
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::writer::StreamEncoder;
use arrow_schema::SchemaRef;

use crate::credit::CreditGuard;
use crate::ids::{EdgeId, Rank};
use crate::messages::{SendFrame, ToOperator};
use crate::operator::Target;
use crate::wire::{Control, FrameKind, OutBody, OutFrame};

enum Pending {
    Local { batch: RecordBatch, cost: u64 },
    Remote { buffers: Vec<Buffer>, cost: u64, rows: u64, batches: u64 },
    End,
}

/// Bytes of small batches to one remote destination gathered into one frame.
pub const COALESCE_BYTES: u64 = 1 << 20;

#[derive(Default)]
struct Dest {
    credit: i64,
    in_flight: u64,
    queue: VecDeque<Pending>,
    seq: u64,
    batches: u64,
    rows: u64,
    ended: bool,
    /// Batches waiting to be sealed into one frame, and their bytes.
    staged: Vec<RecordBatch>,
    staged_bytes: u64,
}

/// Bytes a batch occupies, counting only the part of each buffer it uses (a slice of a large
/// batch is charged for its rows, not for the whole buffer it shares).
pub fn batch_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or_else(|_| c.get_array_memory_size()) as u64)
        .sum()
}

/// Decodes a data frame's body (one Arrow IPC stream from a peer) into its batches, zero-copy
/// where the body is aligned. Bytes from the network: a malformed stream is an error, and a
/// decoder that panics on one is contained and reported as an error too.
///
/// # Errors
/// Undecodable or incomplete Arrow IPC, or a decoder panic, as text.
pub fn decode_body(body: arrow_buffer::Buffer) -> Result<Vec<RecordBatch>, String> {
    crate::actor::contain_panics("Arrow IPC", || {
        let mut decoder = arrow_ipc::reader::StreamDecoder::new().with_require_alignment(true);
        let mut buf = body;
        let mut batches = Vec::new();
        while !buf.is_empty() {
            match decoder.decode(&mut buf) {
                Ok(Some(b)) => batches.push(b),
                Ok(None) => {}
                Err(e) => return Err(format!("undecodable Arrow IPC: {e}")),
            }
        }
        decoder.finish().map_err(|e| format!("incomplete Arrow IPC stream: {e}"))?;
        Ok(batches)
    })
}

/// Batches of one schema as one complete Arrow IPC stream (the schema once).
fn encode(batches: &[RecordBatch]) -> Result<Vec<Buffer>, arrow_schema::ArrowError> {
    let Some(first) = batches.first() else { return Ok(Vec::new()) };
    let mut encoder = StreamEncoder::try_new(&first.schema())?;
    let mut buffers = Vec::new();
    for b in batches {
        buffers.extend(encoder.encode(b)?);
    }
    buffers.extend(encoder.finish()?);
    Ok(buffers)
}

/// True for the batches operators exchange as messages (their schema marked by
/// [`crate::actor::CONTROL_BATCH_PREFIX`]): sent at once, never held back for coalescing.
fn is_control(batch: &RecordBatch) -> bool {
    crate::actor::is_control(&batch.schema())
}

/// Where an edge's producer, consumer and transport are.
pub struct EdgeWiring {
    /// Channel id.
    pub id: EdgeId,
    /// True if every rank's consumer receives from this producer.
    pub exchange: bool,
    /// Consumer input port.
    pub port: usize,
    /// Consumer actor on this worker.
    pub local: Recipient<ToOperator>,
    /// The transport.
    pub transport: Recipient<SendFrame>,
}

/// One output edge of an operator on one worker.
pub struct OutEdge {
    wiring: EdgeWiring,
    me: Rank,
    world: u32,
    window: u64,
    max_frame: u64,
    dests: Vec<Dest>,
    schema: Option<SchemaRef>,
}

impl OutEdge {
    /// A new edge with `window` bytes of credit per destination.
    pub fn new(wiring: EdgeWiring, me: Rank, world: u32, window: u64, max_frame: u64) -> OutEdge {
        let dests = (0..world).map(|_| Dest { credit: window as i64, ..Dest::default() }).collect();
        OutEdge { wiring, me, world, window, max_frame, dests, schema: None }
    }

    /// Channel id.
    pub fn id(&self) -> EdgeId {
        self.wiring.id
    }

    fn dest_ranks(&self) -> Vec<Rank> {
        if self.wiring.exchange { (0..self.world).collect() } else { vec![self.me] }
    }

    /// Routes a batch. `producer` is the producing actor, where local credit returns.
    ///
    /// # Errors
    /// A target that this edge cannot reach, or a batch that cannot be encoded.
    pub fn push(
        &mut self,
        target: Target,
        batch: &RecordBatch,
        producer: &Recipient<ToOperator>,
    ) -> Result<(), String> {
        let dest = match target {
            Target::Local => self.me,
            Target::Rank(r) if r >= self.world => {
                return Err(format!("emitted to rank {r}, but the job has {} workers", self.world));
            }
            Target::Rank(r) if !self.wiring.exchange && r != self.me => {
                return Err(format!(
                    "emitted to rank {r} on {}, which only reaches its own rank",
                    self.wiring.id
                ));
            }
            Target::Rank(r) => r,
        };
        if self.schema.is_none() {
            self.schema = Some(batch.schema());
        }
        self.enqueue(dest, batch)?;
        self.flush(dest, producer);
        Ok(())
    }

    fn enqueue(&mut self, dest: Rank, batch: &RecordBatch) -> Result<(), String> {
        if dest == self.me {
            let cost = batch_bytes(batch);
            self.dests[dest as usize].queue.push_back(Pending::Local { batch: batch.clone(), cost });
            return Ok(());
        }
        // Keep frames well below the receiver's limit: split big batches.
        let size = batch_bytes(batch);
        if size > self.max_frame / 4 && batch.num_rows() > 1 {
            let half = batch.num_rows() / 2;
            self.enqueue(dest, &batch.slice(0, half))?;
            return self.enqueue(dest, &batch.slice(half, batch.num_rows() - half));
        }
        let d = &mut self.dests[dest as usize];
        if d.staged.first().is_some_and(|s| s.schema() != batch.schema()) {
            self.seal(dest)?;
        }
        let d = &mut self.dests[dest as usize];
        d.staged.push(batch.clone());
        d.staged_bytes += size;
        if d.staged_bytes >= COALESCE_BYTES.min(self.max_frame / 4) || is_control(batch) {
            self.seal(dest)?;
        }
        Ok(())
    }

    /// Encodes the batches staged for `dest` into one frame and queues it.
    fn seal(&mut self, dest: Rank) -> Result<(), String> {
        let d = &mut self.dests[dest as usize];
        if d.staged.is_empty() {
            return Ok(());
        }
        let staged = std::mem::take(&mut d.staged);
        d.staged_bytes = 0;
        let buffers = encode(&staged).map_err(|e| format!("cannot encode for rank {dest}: {e}"))?;
        let cost: u64 = buffers.iter().map(|b| b.len() as u64).sum();
        let rows: u64 = staged.iter().map(|b| b.num_rows() as u64).sum();
        if cost > self.max_frame {
            return Err(format!(
                "{} batches of {rows} rows encode to {cost} bytes, more than max_frame ({} bytes); lower batch_rows",
                staged.len(),
                self.max_frame
            ));
        }
        d.queue.push_back(Pending::Remote { buffers, cost, rows, batches: staged.len() as u64 });
        Ok(())
    }

    fn flush(&mut self, dest: Rank, producer: &Recipient<ToOperator>) {
        let me = self.me;
        let d = &mut self.dests[dest as usize];
        while let Some(front) = d.queue.front() {
            let cost = match front {
                Pending::Local { cost, .. } | Pending::Remote { cost, .. } => *cost,
                Pending::End => 0,
            };
            // A batch larger than the whole window still goes when nothing else is in flight.
            if cost > 0 && d.credit < cost as i64 && d.in_flight > 0 {
                return;
            }
            let Some(item) = d.queue.pop_front() else { return };
            match item {
                Pending::Local { batch, cost } => {
                    d.credit -= cost as i64;
                    d.in_flight += cost;
                    d.batches += 1;
                    d.rows += batch.num_rows() as u64;
                    let guard = CreditGuard::local(producer.clone(), self.wiring.id, me, cost);
                    self.wiring.local.do_send(ToOperator::Local {
                        edge: self.wiring.id,
                        port: self.wiring.port,
                        from: me,
                        batch,
                        guard,
                    });
                }
                Pending::Remote { buffers, cost, rows, batches } => {
                    d.credit -= cost as i64;
                    d.in_flight += cost;
                    d.batches += batches;
                    d.rows += rows;
                    let frame = OutFrame {
                        kind: FrameKind::Data,
                        channel: self.wiring.id.0,
                        seq: d.seq,
                        body: OutBody::Buffers(buffers),
                    };
                    d.seq += 1;
                    self.wiring.transport.do_send(SendFrame { peer: dest, frame });
                }
                Pending::End => {
                    d.ended = true;
                    if dest == me {
                        self.wiring.local.do_send(ToOperator::LocalEnd {
                            edge: self.wiring.id,
                            port: self.wiring.port,
                            from: me,
                            batches: d.batches,
                            rows: d.rows,
                        });
                    } else {
                        match OutFrame::control(
                            self.wiring.id.0,
                            d.seq,
                            &Control::End { batches: d.batches, rows: d.rows },
                        ) {
                            Ok(frame) => self.wiring.transport.do_send(SendFrame { peer: dest, frame }),
                            Err(e) => tracing::error!(%e, "cannot encode an end frame"),
                        }
                        d.seq += 1;
                    }
                }
            }
        }
    }

    /// Credit came back from the consumer on `dest`.
    ///
    /// # Errors
    /// More credit than is in flight to `dest`, or a rank this edge does not send to: the
    /// peer is not following the protocol (nothing is changed).
    pub fn on_credit(
        &mut self,
        dest: Rank,
        bytes: u64,
        producer: &Recipient<ToOperator>,
    ) -> Result<(), String> {
        let Some(d) = self.dests.get_mut(dest as usize) else {
            return Err(format!("credit from rank {dest}, which this edge does not send to"));
        };
        if bytes > d.in_flight {
            return Err(format!(
                "rank {dest} returned {bytes} bytes of credit with {} in flight",
                d.in_flight
            ));
        }
        // bytes <= in_flight <= what the window let out, so these stay in range.
        d.credit = d.credit.saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX)).min(self.window as i64);
        d.in_flight -= bytes;
        self.flush(dest, producer);
        Ok(())
    }

    /// The producer is done: make sure every destination learns the schema, then end the
    /// channel.
    ///
    /// # Errors
    /// If the empty schema-carrying batch cannot be encoded.
    pub fn finish(&mut self, producer: &Recipient<ToOperator>) -> Result<(), String> {
        for dest in self.dest_ranks() {
            let d = &self.dests[dest as usize];
            let sent_any =
                d.batches > 0 || !d.staged.is_empty() || d.queue.iter().any(|p| !matches!(p, Pending::End));
            if !sent_any && let Some(schema) = self.schema.clone() {
                self.enqueue(dest, &RecordBatch::new_empty(schema))?;
            }
            self.seal(dest)?;
            self.dests[dest as usize].queue.push_back(Pending::End);
            self.flush(dest, producer);
        }
        Ok(())
    }

    /// Bytes sent and not yet returned as credit, over all destinations.
    pub fn in_flight(&self) -> u64 {
        self.dests.iter().map(|d| d.in_flight).sum()
    }

    /// True while some destination is waiting for credit.
    pub fn blocked(&self) -> bool {
        self.dests.iter().any(|d| !d.queue.is_empty())
    }

    /// True once every destination got its End.
    pub fn ended(&self) -> bool {
        self.dest_ranks().iter().all(|r| self.dests[*r as usize].ended)
    }
}
