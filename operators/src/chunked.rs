//! A finished result handed out a batch at a time, so an operator that computes everything at
//! the end (group-by, sort) still emits at most `batch_rows` rows per call.

use arrow_array::RecordBatch;
use updraft_runtime::{Flow, Output};

/// A result being emitted in slices (zero-copy).
pub struct Chunked {
    batch: RecordBatch,
    at: usize,
    rows: usize,
}

impl Chunked {
    /// `batch`, to be emitted `rows` rows at a time.
    pub fn new(batch: RecordBatch, rows: usize) -> Chunked {
        Chunked { batch, at: 0, rows: rows.max(1) }
    }

    /// Emits the next slice (an empty result still emits one empty batch, for its schema);
    /// `Flow::More` while rows remain.
    pub fn emit_next(&mut self, out: &mut Output) -> Flow {
        let n = self.rows.min(self.batch.num_rows() - self.at);
        if n > 0 || self.at == 0 {
            out.emit(self.batch.slice(self.at, n));
        }
        self.at += n;
        if self.at >= self.batch.num_rows() { Flow::Idle } else { Flow::More }
    }

    /// Emits the next slice of the result in `slot`, clearing it when done: the body of an
    /// operator's `resume` once its result is computed.
    pub fn resume(slot: &mut Option<Chunked>, out: &mut Output) -> Flow {
        let Some(result) = slot else { return Flow::Idle };
        let flow = result.emit_next(out);
        if flow == Flow::Idle {
            *slot = None;
        }
        flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array};
    use std::sync::Arc;

    #[test]
    fn slices_cover_the_batch_and_empty_results_still_emit_once() {
        let b = RecordBatch::try_from_iter(vec![(
            "x",
            Arc::new(Int64Array::from((0..10).collect::<Vec<i64>>())) as ArrayRef,
        )])
        .expect("b");
        let mut c = Chunked::new(b.clone(), 4);
        let mut out = Output::default();
        let mut flows = vec![c.emit_next(&mut out), c.emit_next(&mut out), c.emit_next(&mut out)];
        flows.dedup();
        assert_eq!(flows, vec![Flow::More, Flow::Idle]);
        assert_eq!(out.drain().map(|(_, b)| b.num_rows()).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut empty = Chunked::new(b.slice(0, 0), 4);
        assert_eq!(empty.emit_next(&mut out), Flow::Idle);
        assert_eq!(out.drain().count(), 1);
    }
}
