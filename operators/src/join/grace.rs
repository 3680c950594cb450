//! The spilled form of the join: a grace hash join (Kitsuregawa, Tanaka and Moto-oka, 1983).
//! When the memory budget refuses more of the collected sides, every row held and every row
//! still to come is split by its key hash into [`PARTITIONS`] pairs of spill files (left and
//! right); equal keys land in the same pair, so each pair is then joined on its own, in memory,
//! one pair at a time. Rows with a null key go to one partition like any other (they never
//! match; an outer join keeps them there).
//!
//! The partition of a row is taken from a remix of the same key hash the shuffle used
//! ([`crate::partition::hash_rows`]): the shuffle gave this rank the rows whose hash fell in its
//! range of the hash space, so the hash itself would put them all in a few partitions.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, UInt32Array};
use arrow_select::take::take_record_batch;
use updraft_runtime::{MemoryPool, OperatorError};

use crate::partition::{column_indices, describe_columns, hash_rows, mix64, partition_of, same_columns};
use crate::spill::{SpillFile, SpillWriter};

/// Partition pairs a spilled join writes. With both inputs three times the memory limit, a pair
/// holds about a tenth of it.
pub(super) const PARTITIONS: u32 = 32;

/// Remixes the shuffle's key hash before picking a partition.
const SALT: u64 = 0x243f_6a88_85a3_08d3;

pub(super) struct Grace {
    name: String,
    pool: Arc<MemoryPool>,
    on: [Vec<String>; 2],
    keys: [Vec<usize>; 2],
    writers: [Vec<SpillWriter>; 2],
    files: Vec<[Option<SpillFile>; 2]>,
    next: usize,
}

impl Grace {
    /// An empty spilled join named `name` whose sides join on `on` (left columns, right columns).
    pub(super) fn new(name: &str, pool: &Arc<MemoryPool>, on: [Vec<String>; 2]) -> Grace {
        Grace {
            name: name.to_string(),
            pool: Arc::clone(pool),
            on,
            keys: [Vec::new(), Vec::new()],
            writers: [Vec::new(), Vec::new()],
            files: Vec::new(),
            next: 0,
        }
    }

    /// Splits `batch` of side `port` (0 left, 1 right) into the partition files.
    ///
    /// # Errors
    /// A key column is missing, the batch's columns differ from the side's first batch, or a
    /// file cannot be written.
    pub(super) fn add(&mut self, port: usize, batch: &RecordBatch) -> Result<(), OperatorError> {
        let side = if port == 0 { "left" } else { "right" };
        if self.writers[port].is_empty() {
            let what = format!("`{}`: {side} key", self.name);
            self.keys[port] = column_indices(&batch.schema(), &self.on[port], &what)?;
            for p in 0..PARTITIONS {
                let file = format!("{}-{side}-{p}", self.name);
                self.writers[port].push(SpillWriter::create(&self.pool, &file, &batch.schema())?);
            }
        }
        let first = self.writers[port].first().map(|w| Arc::clone(w.schema()));
        if let Some(first) = first
            && !same_columns(&first, &batch.schema())
        {
            return Err(OperatorError::Invalid(format!(
                "`{}`: the {side} input has batches with different columns ({} vs {}); do all ranks read the same kind of data?",
                self.name,
                describe_columns(&first),
                describe_columns(&batch.schema())
            )));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let cols: Vec<ArrayRef> = self.keys[port].iter().map(|&k| Arc::clone(batch.column(k))).collect();
        let hashes = hash_rows(&cols, batch.num_rows())?;
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); PARTITIONS as usize];
        for (i, h) in hashes.iter().enumerate() {
            rows[partition_of(mix64(h ^ SALT), PARTITIONS) as usize].push(i as u32);
        }
        for (p, ids) in rows.into_iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            let part = if ids.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &UInt32Array::from(ids))?
            };
            self.writers[port][p].write(&part)?;
        }
        Ok(())
    }

    /// Closes every file: the inputs ended.
    ///
    /// # Errors
    /// A file cannot be written.
    pub(super) fn finish(&mut self) -> Result<(), OperatorError> {
        let mut sides: [Vec<Option<SpillFile>>; 2] = [Vec::new(), Vec::new()];
        for (port, writers) in self.writers.iter_mut().enumerate() {
            for w in std::mem::take(writers) {
                sides[port].push(Some(w.finish()?));
            }
        }
        let [mut left, mut right] = sides;
        self.files = (0..PARTITIONS as usize)
            .map(|p| [left.get_mut(p).and_then(Option::take), right.get_mut(p).and_then(Option::take)])
            .collect();
        Ok(())
    }

    /// The next partition's two sides, read back (a side that never had a batch stays empty);
    /// `None` after the last. Its files are removed once read.
    ///
    /// # Errors
    /// A file cannot be read.
    pub(super) fn next_partition(&mut self) -> Result<Option<[Vec<RecordBatch>; 2]>, OperatorError> {
        let Some(pair) = self.files.get_mut(self.next) else { return Ok(None) };
        self.next += 1;
        let mut sides = [Vec::new(), Vec::new()];
        for (port, file) in pair.iter_mut().enumerate() {
            if let Some(f) = file.take() {
                sides[port] = f.read_all()?;
            }
        }
        Ok(Some(sides))
    }
}
