//! The distributed-join benchmark table: `key` int64 uniform in
//! `[0, unique_factor × rows × world)`, `payload` int64, `rows` rows on every rank, made from a
//! seed mixed with the rank (Xoshiro256++, reproducible on every platform).

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use updraft_runtime::{Flow, Operator, OperatorError, Output};

use crate::partition::mix64;

/// Generator parameters.
#[derive(Debug, Clone, Copy)]
pub struct GenerateSpec {
    /// Rows on this rank.
    pub rows: u64,
    /// Key range as a fraction of the total row count.
    pub unique_factor: f64,
    /// Base seed.
    pub seed: u64,
    /// This rank.
    pub rank: u32,
    /// Number of ranks.
    pub world: u32,
    /// Rows per batch.
    pub batch_rows: usize,
}

/// The generator: a source operator.
pub struct Generate {
    left: u64,
    batch_rows: usize,
    key_range: u64,
    rng: Xoshiro256PlusPlus,
    schema: SchemaRef,
}

/// The seed a rank uses.
pub fn rank_seed(seed: u64, rank: u32) -> u64 {
    mix64(seed ^ mix64(u64::from(rank) + 1))
}

/// The key range `[0, n)` for these parameters (at least 1).
pub fn key_range(rows: u64, unique_factor: f64, world: u32) -> u64 {
    ((unique_factor * rows as f64 * f64::from(world)) as u64).max(1)
}

/// Schema of the generated table.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("payload", DataType::Int64, false),
    ]))
}

impl Generate {
    /// A generator for one rank.
    pub fn new(spec: GenerateSpec) -> Generate {
        Generate {
            left: spec.rows,
            batch_rows: spec.batch_rows.max(1),
            key_range: key_range(spec.rows, spec.unique_factor, spec.world),
            rng: Xoshiro256PlusPlus::seed_from_u64(rank_seed(spec.seed, spec.rank)),
            schema: schema(),
        }
    }

    /// The next batch, or `None` when done.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, OperatorError> {
        if self.left == 0 {
            return Ok(None);
        }
        let n = self.left.min(self.batch_rows as u64) as usize;
        self.left -= n as u64;
        let mut keys = Vec::with_capacity(n);
        let mut payload = Vec::with_capacity(n);
        for _ in 0..n {
            keys.push(self.rng.random_range(0..self.key_range) as i64);
            payload.push(self.rng.random::<i64>());
        }
        let cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(keys)), Arc::new(Int64Array::from(payload))];
        Ok(Some(RecordBatch::try_new(Arc::clone(&self.schema), cols)?))
    }
}

impl Operator for Generate {
    fn on_batch(&mut self, _: usize, _: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        Err(OperatorError::Invalid("a source has no inputs".into()))
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Flow::Idle)
    }

    fn resume(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        match self.next_batch()? {
            Some(b) => {
                out.emit(b);
                Ok(if self.left > 0 { Flow::More } else { Flow::Idle })
            }
            None => {
                // Zero rows on this rank: still tell consumers the schema.
                out.emit(RecordBatch::new_empty(Arc::clone(&self.schema)));
                Ok(Flow::Idle)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;

    fn spec(rank: u32) -> GenerateSpec {
        GenerateSpec { rows: 1000, unique_factor: 0.5, seed: 9, rank, world: 4, batch_rows: 300 }
    }

    fn all(g: &mut Generate) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        while let Some(b) = g.next_batch().expect("batch") {
            let k = b.column(0).as_primitive::<Int64Type>();
            let p = b.column(1).as_primitive::<Int64Type>();
            out.extend((0..b.num_rows()).map(|i| (k.value(i), p.value(i))));
        }
        out
    }

    #[test]
    fn rows_keys_and_reproducibility() {
        let a = all(&mut Generate::new(spec(1)));
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(|(k, _)| (0..2000).contains(k)), "keys in [0, 0.5 × 1000 × 4)");
        assert_eq!(a, all(&mut Generate::new(spec(1))), "same seed and rank, same rows");
        assert_ne!(a, all(&mut Generate::new(spec(2))), "ranks differ");
    }

    #[test]
    fn batches_respect_the_size_and_zero_rows_still_carry_the_schema() {
        let mut g = Generate::new(spec(0));
        let mut out = Output::default();
        let mut sizes = Vec::new();
        loop {
            let flow = g.resume(&mut out).expect("resume");
            sizes.extend(out.drain().map(|(_, b)| b.num_rows()));
            if flow == Flow::Idle {
                break;
            }
        }
        assert_eq!(sizes, vec![300, 300, 300, 100]);
        let mut empty = Generate::new(GenerateSpec { rows: 0, ..spec(0) });
        assert_eq!(empty.resume(&mut out).expect("resume"), Flow::Idle);
        let batches: Vec<_> = out.drain().collect();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].1.num_rows(), 0);
        assert_eq!(batches[0].1.schema(), schema());
    }
}
