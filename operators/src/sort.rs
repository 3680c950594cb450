//! Distributed sort (sample sort). The result is globally ordered across ranks in rank order:
//! rank 0 holds the smallest rows, each rank's output is sorted.
//!
//! ```text
//!  input ─▶ Sampler ─(data: own rank only; key sample: every rank)─▶ RangePartition
//!        ─▶ (every rank computes the same splitters from all samples; rows to their range's rank)
//!        ─▶ LocalSort ─▶ output in order
//! ```
//!
//! Keys compare in Arrow's row format with per-column direction and null placement, so the
//! order is the same everywhere. The sample is systematic (every k-th row, k doubling to keep
//! at most [`SAMPLE_ROWS`] rows per rank), so it is deterministic.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, UInt32Array};
use arrow_row::{OwnedRow, RowConverter, SortField};
use arrow_schema::{Schema, SchemaRef, SortOptions};
use arrow_select::concat::concat_batches;
use arrow_select::take::take_record_batch;
use updraft_runtime::{Flow, Operator, OperatorError, Output, Rank};

use crate::chunked::Chunked;
use crate::keys::{key_column, key_type};
use crate::partition::column_indices;

/// Most sampled key rows a rank sends.
pub const SAMPLE_ROWS: usize = 1024;
const SAMPLE_MARK: &str = "updraft.sort.sample";

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// Column.
    pub column: String,
    /// Largest first.
    pub descending: bool,
    /// Nulls before values.
    pub nulls_first: bool,
}

fn converter(
    schema: &Schema,
    keys: &[SortKey],
    what: &str,
) -> Result<(RowConverter, Vec<usize>), OperatorError> {
    let names: Vec<String> = keys.iter().map(|k| k.column.clone()).collect();
    let idx = column_indices(schema, &names, what)?;
    let fields = idx
        .iter()
        .zip(keys)
        .map(|(&i, k)| {
            SortField::new_with_options(
                key_type(schema.field(i).data_type()),
                SortOptions { descending: k.descending, nulls_first: k.nulls_first },
            )
        })
        .collect();
    Ok((RowConverter::new(fields)?, idx))
}

/// The key columns of `batch`, dictionaries decoded and floats made canonical so that -0.0 and
/// 0.0 sort together and NaN after every number (see [`crate::keys`]).
fn sort_keys(batch: &RecordBatch, idx: &[usize]) -> Result<Vec<ArrayRef>, OperatorError> {
    idx.iter().map(|&i| key_column(batch.column(i))).collect()
}

/// Stage 1: forwards data to its own rank and sends a key sample to every rank.
pub struct Sampler {
    name: String,
    keys: Vec<SortKey>,
    world: u32,
    conv: Option<(RowConverter, Vec<usize>, SchemaRef)>,
    every: u64,
    seen: u64,
    sample: Vec<OwnedRow>,
}

impl Sampler {
    /// A sampler for `keys` over `world` ranks.
    pub fn new(name: &str, keys: Vec<SortKey>, world: u32) -> Sampler {
        Sampler { name: name.to_string(), keys, world, conv: None, every: 1, seen: 0, sample: Vec::new() }
    }
}

impl Operator for Sampler {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        if self.conv.is_none() {
            let (conv, idx) = converter(&batch.schema(), &self.keys, &format!("`{}`: sort key", self.name))?;
            // Samples carry key values (a dictionary-encoded key decoded), as `sort_keys` gives.
            let fields: Vec<_> = idx
                .iter()
                .map(|&i| {
                    let f = batch.schema().field(i).clone();
                    let t = key_type(f.data_type());
                    f.with_data_type(t)
                })
                .collect();
            let meta = HashMap::from([(SAMPLE_MARK.to_string(), "1".to_string())]);
            self.conv = Some((conv, idx, Arc::new(Schema::new(fields).with_metadata(meta))));
        }
        if let Some((conv, idx, _)) = &self.conv {
            let rows = conv.convert_columns(&sort_keys(&batch, idx)?)?;
            for r in rows.iter() {
                if self.seen.is_multiple_of(self.every) {
                    self.sample.push(r.owned());
                }
                self.seen += 1;
                if self.sample.len() >= 2 * SAMPLE_ROWS {
                    // Keep every other sampled row and sample half as often from now on.
                    let mut i = 0;
                    self.sample.retain(|_| {
                        i += 1;
                        i % 2 == 1
                    });
                    self.every *= 2;
                }
            }
        }
        out.emit(batch);
        Ok(())
    }

    fn on_end(&mut self, _: usize, out: &mut Output) -> Result<Flow, OperatorError> {
        let Some((conv, _, schema)) = &self.conv else { return Ok(Flow::Idle) };
        let cols = conv.convert_rows(self.sample.iter().map(|r| r.row()))?;
        let sample = RecordBatch::try_new(Arc::clone(schema), cols)?;
        for rank in 0..self.world {
            out.emit_to(rank, sample.clone());
        }
        Ok(Flow::Idle)
    }
}

/// Stage 2: waits for every rank's sample, then sends each row to the rank of its range.
pub struct RangePartition {
    name: String,
    keys: Vec<SortKey>,
    world: u32,
    data: Vec<RecordBatch>,
    samples: Vec<RecordBatch>,
}

impl RangePartition {
    /// A range partitioner for `keys` over `world` ranks.
    pub fn new(name: &str, keys: Vec<SortKey>, world: u32) -> RangePartition {
        RangePartition { name: name.to_string(), keys, world, data: Vec::new(), samples: Vec::new() }
    }
}

impl Operator for RangePartition {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        if batch.schema().metadata().contains_key(SAMPLE_MARK) {
            self.samples.push(batch);
        } else {
            self.data.push(batch);
        }
        Ok(())
    }

    fn on_end(&mut self, _: usize, out: &mut Output) -> Result<Flow, OperatorError> {
        let Some(first) = self.data.first() else { return Ok(Flow::Idle) };
        let schema = first.schema();
        let what = format!("`{}`: sort key", self.name);
        let (conv, idx) = converter(&schema, &self.keys, &what)?;
        // Every rank sorts the same samples and so picks the same splitters.
        let mut sample: Vec<OwnedRow> = Vec::new();
        for s in &self.samples {
            let all: Vec<usize> = (0..s.num_columns()).collect();
            sample.extend(conv.convert_columns(&sort_keys(s, &all)?)?.iter().map(|r| r.owned()));
        }
        sample.sort();
        let w = self.world as usize;
        let splitters: Vec<OwnedRow> = if sample.is_empty() {
            Vec::new()
        } else {
            (1..w).map(|i| sample[i * sample.len() / w].clone()).collect()
        };
        for batch in std::mem::take(&mut self.data) {
            if batch.num_rows() == 0 {
                out.emit(batch);
                continue;
            }
            let rows = conv.convert_columns(&sort_keys(&batch, &idx)?)?;
            let mut parts: Vec<Vec<u32>> = vec![Vec::new(); w];
            for (i, r) in rows.iter().enumerate() {
                let p = splitters.partition_point(|s| s.row() < r);
                parts[p].push(i as u32);
            }
            for (rank, rows) in parts.into_iter().enumerate() {
                if !rows.is_empty() {
                    out.emit_to(rank as Rank, take_record_batch(&batch, &UInt32Array::from(rows))?);
                }
            }
        }
        Ok(Flow::Idle)
    }
}

/// Stage 3: sorts this rank's range.
pub struct LocalSort {
    name: String,
    keys: Vec<SortKey>,
    batch_rows: usize,
    data: Vec<RecordBatch>,
    result: Option<Chunked>,
}

impl LocalSort {
    /// A local sort emitting `batch_rows` rows at a time.
    pub fn new(name: &str, keys: Vec<SortKey>, batch_rows: usize) -> LocalSort {
        LocalSort {
            name: name.to_string(),
            keys,
            batch_rows: batch_rows.max(1),
            data: Vec::new(),
            result: None,
        }
    }
}

impl Operator for LocalSort {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        self.data.push(batch);
        Ok(())
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        let Some(first) = self.data.first() else { return Ok(Flow::Idle) };
        let schema = first.schema();
        let all = concat_batches(&schema, &self.data)?;
        self.data.clear();
        let (conv, idx) = converter(&schema, &self.keys, &format!("`{}`: sort key", self.name))?;
        let rows = conv.convert_columns(&sort_keys(&all, &idx)?)?;
        let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
        order.sort_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
        self.result =
            Some(Chunked::new(take_record_batch(&all, &UInt32Array::from(order))?, self.batch_rows));
        Ok(Flow::More)
    }

    fn resume(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Chunked::resume(&mut self.result, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;

    fn values(b: &RecordBatch, c: usize) -> Vec<Option<i64>> {
        let a = b.column(c).as_primitive::<Int64Type>();
        (0..b.num_rows()).map(|i| arrow_array::Array::is_valid(a, i).then(|| a.value(i))).collect()
    }

    #[test]
    fn local_sort_orders_by_each_key_with_its_null_placement() {
        let batch = |k: Vec<Option<i64>>, v: Vec<i64>| {
            RecordBatch::try_from_iter(vec![
                ("k", Arc::new(Int64Array::from(k)) as ArrayRef),
                ("v", Arc::new(Int64Array::from(v)) as ArrayRef),
            ])
            .expect("batch")
        };
        let inputs = vec![
            batch(vec![Some(2), None, Some(1)], vec![1, 2, 3]),
            batch(vec![Some(2), Some(3), None], vec![4, 5, 6]),
        ];
        let key = |column: &str, descending, nulls_first| SortKey {
            column: column.into(),
            descending,
            nulls_first,
        };
        for (keys, want_k, want_v) in [
            (
                vec![key("k", false, false), key("v", false, false)],
                vec![Some(1), Some(2), Some(2), Some(3), None, None],
                vec![3, 1, 4, 5, 2, 6],
            ),
            (
                vec![key("k", true, true), key("v", true, false)],
                vec![None, None, Some(3), Some(2), Some(2), Some(1)],
                vec![6, 2, 5, 4, 1, 3],
            ),
        ] {
            let mut op = LocalSort::new("s", keys, 4);
            let mut out = Output::default();
            for b in &inputs {
                op.on_batch(0, b.clone(), &mut out).expect("batch");
            }
            let mut flow = op.on_end(0, &mut out).expect("end");
            while flow == Flow::More {
                flow = op.resume(&mut out).expect("resume");
            }
            let got: Vec<RecordBatch> = out.drain().map(|(_, b)| b).collect();
            assert!(got.iter().all(|b| b.num_rows() <= 4));
            let all = concat_batches(&got[0].schema(), &got).expect("concat");
            assert_eq!(values(&all, 0), want_k);
            assert_eq!(values(&all, 1).into_iter().map(|v| v.unwrap_or(-1)).collect::<Vec<_>>(), want_v);
        }
    }
}
