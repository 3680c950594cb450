//! K-way merge of sorted runs read back from spill files: the second phase of the external
//! merge sort (Knuth, TAOCP vol. 3, 5.4). Each run is read a batch at a time; the rows compare in
//! Arrow's row format, the order [`crate::sort`] sorted them in; equal rows come from the
//! earlier run first, so a stable sort stays stable. The smallest current row is found by a
//! scan over the runs: runs are few (the input over half the memory budget), and a scan of a
//! handful of rows costs less than keeping a heap.

use arrow_array::{ArrayRef, RecordBatch};
use arrow_row::{RowConverter, Rows};
use arrow_select::interleave::interleave_record_batch;
use updraft_runtime::{OperatorError, Reservation};

use crate::spill::{SpillFile, SpillReader, held_bytes};

/// The key columns of a batch, as the runs were sorted by.
pub type KeyColumns = Box<dyn Fn(&RecordBatch) -> Result<Vec<ArrayRef>, OperatorError> + Send>;

/// One run being read: its current batch, that batch's key rows and the next row.
struct Cursor {
    reader: SpillReader,
    batch: Option<RecordBatch>,
    rows: Option<Rows>,
    at: usize,
    held: u64,
    _file: SpillFile,
}

/// Sorted runs merged into sorted batches of at most `batch_rows` rows.
pub struct RunMerge {
    conv: RowConverter,
    keys: KeyColumns,
    cursors: Vec<Cursor>,
    batch_rows: usize,
    mem: Reservation,
}

impl RunMerge {
    /// Merges `runs` (each sorted by the rows `conv` makes of `keys(batch)`), counting one
    /// batch per run in `mem` (held whatever the limit: a merge cannot go on without it).
    ///
    /// # Errors
    /// A run cannot be read.
    pub fn new(
        runs: Vec<SpillFile>,
        conv: RowConverter,
        keys: KeyColumns,
        batch_rows: usize,
        mem: Reservation,
    ) -> Result<RunMerge, OperatorError> {
        let mut cursors = Vec::with_capacity(runs.len());
        for file in runs {
            let reader = file.reader()?;
            cursors.push(Cursor { reader, batch: None, rows: None, at: 0, held: 0, _file: file });
        }
        let mut m = RunMerge { conv, keys, cursors, batch_rows: batch_rows.max(1), mem };
        for i in 0..m.cursors.len() {
            m.advance(i)?;
        }
        Ok(m)
    }

    /// Loads run `i`'s next non-empty batch (or marks it finished).
    fn advance(&mut self, i: usize) -> Result<(), OperatorError> {
        let c = &mut self.cursors[i];
        self.mem.shrink(c.held);
        c.batch = None;
        c.rows = None;
        c.at = 0;
        c.held = 0;
        while let Some(b) = c.reader.next_batch()? {
            if b.num_rows() == 0 {
                continue;
            }
            c.rows = Some(self.conv.convert_columns(&(self.keys)(&b)?)?);
            c.held = held_bytes(&b) + c.rows.as_ref().map_or(0, |r| r.size() as u64);
            self.mem.grow(c.held);
            c.batch = Some(b);
            break;
        }
        Ok(())
    }

    /// True when every run is read to its end.
    pub fn done(&self) -> bool {
        self.cursors.iter().all(|c| c.batch.is_none())
    }

    /// The next sorted batch: up to `batch_rows` rows, fewer when a run's batch ends first;
    /// `None` when every run is finished.
    ///
    /// # Errors
    /// A run cannot be read, or Arrow fails to assemble the batch.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, OperatorError> {
        if self.done() {
            return Ok(None);
        }
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(self.batch_rows);
        let mut ended = None;
        while picks.len() < self.batch_rows {
            let mut best: Option<usize> = None;
            for (i, c) in self.cursors.iter().enumerate() {
                let Some(rows) = &c.rows else { continue };
                let better = match best {
                    None => true,
                    Some(b) => {
                        let (bc, r) = (&self.cursors[b], rows.row(c.at));
                        bc.rows.as_ref().is_some_and(|br| r < br.row(bc.at))
                    }
                };
                if better {
                    best = Some(i);
                }
            }
            let Some(i) = best else { break };
            let c = &mut self.cursors[i];
            picks.push((i, c.at));
            c.at += 1;
            if c.batch.as_ref().is_none_or(|b| c.at >= b.num_rows()) {
                ended = Some(i);
                break;
            }
        }
        // Sources are the runs' current batches; a run without one is never picked. `slot[run]`
        // is the run's position among the sources.
        let mut sources: Vec<&RecordBatch> = Vec::with_capacity(self.cursors.len());
        let mut slot = vec![0usize; self.cursors.len()];
        for (run, c) in self.cursors.iter().enumerate() {
            if let Some(b) = &c.batch {
                slot[run] = sources.len();
                sources.push(b);
            }
        }
        let indices: Vec<(usize, usize)> = picks.iter().map(|(run, row)| (slot[*run], *row)).collect();
        let out = interleave_record_batch(&sources, &indices)?;
        if let Some(i) = ended {
            self.advance(i)?;
        }
        Ok(Some(out))
    }
}
