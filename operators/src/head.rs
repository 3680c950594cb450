//! `head`: the first N rows of a stage, in rank order (rank 0's rows first, each rank's in the
//! order it produced them), delivered on rank 0. After a `sort` this is the top N.
//!
//! ```text
//!  every rank: LocalHead keeps its first N rows, tags them with its rank ─▶ rank 0
//!  rank 0: GatherHead orders the ranks' rows by rank and keeps the first N overall
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use arrow_select::concat::concat_batches;
use updraft_runtime::{Flow, Operator, OperatorError, Output, Rank};

const RANK_MARK: &str = "updraft.head.rank";

/// Keeps the first `limit` rows on each rank and sends them, tagged with the rank, to rank 0.
pub struct LocalHead {
    limit: usize,
    rank: Rank,
    kept: usize,
}

impl LocalHead {
    /// First `limit` rows of `rank`.
    pub fn new(limit: usize, rank: Rank) -> LocalHead {
        LocalHead { limit, rank, kept: 0 }
    }
}

impl Operator for LocalHead {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        let take = (self.limit - self.kept).min(batch.num_rows());
        if take == 0 && self.kept > 0 {
            return Ok(());
        }
        self.kept += take;
        let meta = HashMap::from([(RANK_MARK.to_string(), self.rank.to_string())]);
        let schema = Arc::new(Schema::new(batch.schema().fields().clone()).with_metadata(meta));
        let tagged = RecordBatch::try_new(schema, batch.slice(0, take).columns().to_vec())?;
        out.emit_to(0, tagged);
        Ok(())
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Flow::Idle)
    }
}

/// On rank 0: the first `limit` rows in rank order. Elsewhere: nothing (an empty batch that
/// carries the schema).
pub struct GatherHead {
    limit: usize,
    by_rank: BTreeMap<u64, Vec<RecordBatch>>,
}

impl GatherHead {
    /// First `limit` rows overall.
    pub fn new(limit: usize) -> GatherHead {
        GatherHead { limit, by_rank: BTreeMap::new() }
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
        let plain: Vec<RecordBatch> = batches
            .iter()
            .map(|b| RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec()))
            .collect::<Result<_, _>>()?;
        let all = concat_batches(&schema, &plain)?;
        out.emit(all.slice(0, self.limit.min(all.num_rows())));
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
