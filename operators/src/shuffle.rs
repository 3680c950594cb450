//! Shuffle: hash-partition every input batch on its key columns and send partition `p` to rank
//! `p`. Together with the exchange edge behind it, this is the all-to-all step of a
//! distributed join.

use arrow_array::RecordBatch;
use updraft_runtime::{Flow, Operator, OperatorError, Output};

use crate::partition::{column_indices, hash_partition};

/// The shuffle operator.
pub struct Shuffle {
    name: String,
    keys: Vec<String>,
    key_idx: Option<Vec<usize>>,
    world: u32,
    /// Every row to this rank instead (a gather).
    to: Option<u32>,
}

impl Shuffle {
    /// Shuffles on `keys` across `world` ranks; no keys means every column (whole rows).
    pub fn new(name: &str, keys: Vec<String>, world: u32) -> Shuffle {
        Shuffle { name: name.to_string(), keys, key_idx: None, world, to: None }
    }

    /// A gather: every row goes to `rank` (whole-table aggregates collect their partial states
    /// on rank 0).
    pub fn to_rank(name: &str, rank: u32, world: u32) -> Shuffle {
        Shuffle {
            name: name.to_string(),
            keys: Vec::new(),
            key_idx: None,
            world,
            to: Some(rank.min(world.saturating_sub(1))),
        }
    }
}

impl Operator for Shuffle {
    fn on_batch(&mut self, _port: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        if let Some(rank) = self.to {
            if batch.num_rows() == 0 {
                out.emit(batch);
            } else {
                out.emit_to(rank, batch);
            }
            return Ok(());
        }
        let idx = match &self.key_idx {
            Some(i) => i.clone(),
            None => {
                let i = if self.keys.is_empty() {
                    (0..batch.num_columns()).collect()
                } else {
                    column_indices(&batch.schema(), &self.keys, &format!("`{}`: key", self.name))?
                };
                self.key_idx = Some(i.clone());
                i
            }
        };
        if batch.num_rows() == 0 {
            // Carries the schema to this rank's consumer; the exchange forwards it to the rest.
            out.emit(batch);
            return Ok(());
        }
        for (rank, part) in hash_partition(&batch, &idx, self.world)?.into_iter().enumerate() {
            if let Some(part) = part {
                out.emit_to(rank as u32, part);
            }
        }
        Ok(())
    }

    fn on_end(&mut self, _port: usize, _out: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Flow::Idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array};
    use std::sync::Arc;
    use updraft_runtime::Target;

    #[test]
    fn every_row_goes_to_exactly_one_rank() {
        let mut s = Shuffle::new("s", vec!["k".into()], 3);
        let b = RecordBatch::try_from_iter(vec![(
            "k",
            Arc::new(Int64Array::from((0..100).collect::<Vec<i64>>())) as ArrayRef,
        )])
        .expect("batch");
        let mut out = Output::default();
        s.on_batch(0, b, &mut out).expect("shuffle");
        let parts: Vec<_> = out.drain().collect();
        assert_eq!(parts.iter().map(|(_, b)| b.num_rows()).sum::<usize>(), 100);
        assert!(parts.iter().all(|(t, _)| matches!(t, Target::Rank(r) if *r < 3)));
    }

    #[test]
    fn a_missing_key_column_is_named() {
        let mut s = Shuffle::new("left.shuffle", vec!["nope".into()], 2);
        let b = RecordBatch::try_from_iter(vec![("k", Arc::new(Int64Array::from(vec![1])) as ArrayRef)])
            .expect("batch");
        let e = s.on_batch(0, b, &mut Output::default()).expect_err("missing").to_string();
        assert!(e.contains("`nope`") && e.contains("columns: k"), "{e}");
    }
}
