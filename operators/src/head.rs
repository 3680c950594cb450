//! `head`, `slice` and `tail`: a range of a stage's rows in rank order (rank 0's rows first,
//! each rank's in the order it produced them), delivered on rank 0. After a `sort` this is the
//! top N, rows N to N + M of the sorted table, or the bottom N.
//!
//! ```text
//!  every rank: LocalHead keeps the rows the range can need (its first offset + rows, or its
//!              last rows), tags them with its rank ─▶ rank 0
//!  rank 0: GatherHead orders the ranks' rows by rank and cuts the range out of the whole
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use updraft_runtime::{Flow, Operator, OperatorError, Output, Rank};

const RANK_MARK: &str = "updraft.head.rank";

/// Which rows, by position in rank order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRange {
    /// Rows skipped first (counted from the start).
    pub offset: usize,
    /// Rows kept.
    pub rows: usize,
    /// The last `rows` rows instead (`offset` unused).
    pub from_end: bool,
}

impl RowRange {
    /// The first `rows` rows.
    pub fn head(rows: usize) -> RowRange {
        RowRange { offset: 0, rows, from_end: false }
    }

    /// The rows of a table of `total` rows that the range selects: (start, length).
    fn within(&self, total: usize) -> (usize, usize) {
        if self.from_end {
            let len = self.rows.min(total);
            (total - len, len)
        } else {
            let start = self.offset.min(total);
            (start, self.rows.min(total - start))
        }
    }
}

fn tagged(batch: &RecordBatch, rank: Rank) -> Result<RecordBatch, OperatorError> {
    let meta = HashMap::from([(RANK_MARK.to_string(), rank.to_string())]);
    let schema = Arc::new(Schema::new(batch.schema().fields().clone()).with_metadata(meta));
    Ok(RecordBatch::try_new(schema, batch.columns().to_vec())?)
}

/// On each rank, the rows the range can need: its first `offset + rows` (sent as they come) or
/// its last `rows` (held to the end); sent, tagged with the rank, to rank 0.
pub struct LocalHead {
    range: RowRange,
    rank: Rank,
    kept: usize,
    /// `tail`: the last rows so far, whole batches, oldest first.
    last: VecDeque<RecordBatch>,
}

impl LocalHead {
    /// The rows of `rank` that `range` can need.
    pub fn new(range: RowRange, rank: Rank) -> LocalHead {
        LocalHead { range, rank, kept: 0, last: VecDeque::new() }
    }
}

impl Operator for LocalHead {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        if self.range.from_end {
            self.kept += batch.num_rows();
            self.last.push_back(batch);
            // Drop whole batches that the last `rows` rows no longer reach.
            while let Some(front) = self.last.front() {
                if self.kept - front.num_rows() < self.range.rows || self.last.len() == 1 {
                    break;
                }
                self.kept -= front.num_rows();
                self.last.pop_front();
            }
            return Ok(());
        }
        let limit = self.range.offset.saturating_add(self.range.rows);
        let take = limit.saturating_sub(self.kept).min(batch.num_rows());
        if take == 0 && self.kept > 0 {
            return Ok(());
        }
        self.kept += take;
        out.emit_to(0, tagged(&batch.slice(0, take), self.rank)?);
        Ok(())
    }

    fn on_end(&mut self, _: usize, out: &mut Output) -> Result<Flow, OperatorError> {
        for batch in std::mem::take(&mut self.last) {
            out.emit_to(0, tagged(&batch, self.rank)?);
        }
        Ok(Flow::Idle)
    }
}

/// On rank 0: the range of the rows in rank order. Elsewhere: nothing (an empty batch that
/// carries the schema).
pub struct GatherHead {
    range: RowRange,
    by_rank: BTreeMap<u64, Vec<RecordBatch>>,
}

impl GatherHead {
    /// The rows `range` selects overall.
    pub fn new(range: RowRange) -> GatherHead {
        GatherHead { range, by_rank: BTreeMap::new() }
    }
}

impl Operator for GatherHead {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        // Batches without a tag are the schema-carrying empty ones: rank order does not matter.
        let rank = batch.schema().metadata().get(RANK_MARK).and_then(|r| r.parse().ok()).unwrap_or(u64::MAX);
        self.by_rank.entry(rank).or_default().push(batch);
        Ok(())
    }

    fn on_end(&mut self, _: usize, out: &mut Output) -> Result<Flow, OperatorError> {
        let batches: Vec<RecordBatch> = std::mem::take(&mut self.by_rank).into_values().flatten().collect();
        let Some(first) = batches.first() else { return Ok(Flow::Idle) };
        let schema = Arc::new(Schema::new(first.schema().fields().clone()));
        let total = batches.iter().map(RecordBatch::num_rows).sum();
        let (start, len) = self.range.within(total);
        // The rows [start, start + len) as slices of the batches that hold them (never one
        // concatenation: no offset limit on the input's strings); one batch at least, for the
        // schema.
        let (mut at, mut emitted) = (0, false);
        for b in &batches {
            let (lo, hi) = (start.max(at), (start + len).min(at + b.num_rows()));
            if lo < hi {
                let plain = RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec())?;
                out.emit(plain.slice(lo - at, hi - lo));
                emitted = true;
            }
            at += b.num_rows();
        }
        if !emitted {
            out.emit(RecordBatch::new_empty(schema));
        }
        Ok(Flow::Idle)
    }
}

/// Spreads batches over the ranks in turn (no key: for balance, not for co-location).
pub struct RoundRobin {
    next: Rank,
    world: u32,
}

impl RoundRobin {
    /// Starting at this rank.
    pub fn new(rank: Rank, world: u32) -> RoundRobin {
        RoundRobin { next: rank, world: world.max(1) }
    }
}

impl Operator for RoundRobin {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        if batch.num_rows() == 0 {
            out.emit(batch);
            return Ok(());
        }
        out.emit_to(self.next % self.world, batch);
        self.next = (self.next + 1) % self.world;
        Ok(())
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Flow::Idle)
    }
}
