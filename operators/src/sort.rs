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
use arrow_select::take::take_record_batch;
use updraft_runtime::{Flow, MemoryPool, Operator, OperatorError, Output, Rank, Reservation};

use crate::keys::{key_column, key_type};
use crate::merge::RunMerge;
use crate::partition::column_indices;
use crate::spill::{SpillBuffer, SpillFile, SpillWriter};
use crate::table::Table;

/// Rows per batch of a sorted run on disk. The merge holds one batch (and its keys in row
/// format) of every run: at 8,192 rows of a few columns, a few hundred KiB per run.
const RUN_BATCH_ROWS: usize = 8192;

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
            // Only the sampled rows are encoded. First find them (every `every`-th row counting
            // across batches, `every` doubling whenever the sample is thinned), then keep them.
            let n = batch.num_rows() as u64;
            let mut picked: Vec<u32> = Vec::new();
            let (mut every, mut kept) = (self.every, self.sample.len());
            for i in 0..n {
                if (self.seen + i).is_multiple_of(every) {
                    picked.push(i as u32);
                    kept += 1;
                    if kept >= 2 * SAMPLE_ROWS {
                        every *= 2;
                        kept = kept.div_ceil(2);
                    }
                }
            }
            let keys = sort_keys(&take_record_batch(&batch, &UInt32Array::from(picked))?, idx)?;
            for r in conv.convert_columns(&keys)?.iter() {
                self.sample.push(r.owned());
                if self.sample.len() >= 2 * SAMPLE_ROWS {
                    // Keep every other sampled row and sample half as often from now on.
                    let mut k = 0;
                    self.sample.retain(|_| {
                        k += 1;
                        k % 2 == 1
                    });
                    self.every *= 2;
                }
            }
            self.seen += n;
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

/// Stage 2: waits for every rank's sample, then sends each row to the rank of its range. The
/// rows held meanwhile (this rank's whole input) spill to disk when the memory budget refuses
/// them ([`SpillBuffer`]); they leave one batch per call.
pub struct RangePartition {
    name: String,
    keys: Vec<SortKey>,
    world: u32,
    data: SpillBuffer,
    samples: Vec<RecordBatch>,
    /// Set at the end of the input: the key converter, key columns and splitters (none on one
    /// rank: every row stays).
    ranges: Option<(RowConverter, Vec<usize>, Vec<OwnedRow>)>,
}

impl RangePartition {
    /// A range partitioner for `keys` over `world` ranks, without a memory limit.
    pub fn new(name: &str, keys: Vec<SortKey>, world: u32) -> RangePartition {
        RangePartition::with_memory(name, keys, world, &MemoryPool::unbounded())
    }

    /// A range partitioner holding its input against `pool` (on one rank it holds nothing).
    pub fn with_memory(name: &str, keys: Vec<SortKey>, world: u32, pool: &Arc<MemoryPool>) -> RangePartition {
        let pool = if world > 1 { Arc::clone(pool) } else { MemoryPool::unbounded() };
        RangePartition {
            name: name.to_string(),
            keys,
            world,
            data: SpillBuffer::new(name, pool.reserve(name)),
            samples: Vec::new(),
            ranges: None,
        }
    }
}

impl Operator for RangePartition {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        if batch.schema().metadata().contains_key(SAMPLE_MARK) {
            self.samples.push(batch);
            Ok(())
        } else if self.world == 1 {
            // One range: every row stays, as it comes.
            out.emit_to(0, batch);
            Ok(())
        } else {
            self.data.push(batch)
        }
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        let Some(schema) = self.data.first_schema() else { return Ok(Flow::Idle) };
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
        self.ranges = Some((conv, idx, splitters));
        Ok(Flow::More)
    }

    fn resume(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        let Some((conv, idx, splitters)) = &self.ranges else { return Ok(Flow::Idle) };
        let Some(batch) = self.data.next_batch()? else {
            self.ranges = None;
            return Ok(Flow::Idle);
        };
        if batch.num_rows() == 0 {
            out.emit(batch);
            return Ok(Flow::More);
        }
        let rows = conv.convert_columns(&sort_keys(&batch, idx)?)?;
        let mut parts: Vec<Vec<u32>> = vec![Vec::new(); self.world as usize];
        for (i, r) in rows.iter().enumerate() {
            let p = splitters.partition_point(|s| s.row() < r);
            parts[p].push(i as u32);
        }
        for (rank, rows) in parts.into_iter().enumerate() {
            if !rows.is_empty() {
                out.emit_to(rank as Rank, take_record_batch(&batch, &UInt32Array::from(rows))?);
            }
        }
        Ok(Flow::More)
    }
}

/// The row ids of `batch` in the order of `keys`, equal rows in input order (a stable sort).
///
/// When the first key is a number, date, time, timestamp or duration, rows are sorted as
/// (order-preserving 64-bit image of that key, row id) pairs ([`crate::keys::ordered_u64`]),
/// comparing machine words; only runs of rows equal on it are then ordered by the other keys
/// in row format. Any other first key sorts every row in row format.
fn sorted_order(batch: &RecordBatch, keys: &[SortKey], what: &str) -> Result<Vec<u32>, OperatorError> {
    let schema = batch.schema();
    let n = batch.num_rows();
    let (_, idx) = converter(&schema, keys, what)?;
    let cols = sort_keys(batch, &idx)?;
    let by_rows = |ks: &[SortKey], cs: &[ArrayRef]| -> Result<arrow_row::Rows, OperatorError> {
        let (conv, _) = converter(&schema, ks, what)?;
        Ok(conv.convert_columns(cs)?)
    };
    let (Some(first), Some(mut image)) = (keys.first(), cols.first().and_then(crate::keys::ordered_u64))
    else {
        let rows = by_rows(keys, &cols)?;
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
        return Ok(order);
    };
    if first.descending {
        image.iter_mut().for_each(|u| *u = !*u);
    }
    let nulls = cols[0].logical_nulls();
    let mut valid: Vec<(u64, u32)> = Vec::with_capacity(n);
    let mut null_rows: Vec<u32> = Vec::new();
    for (i, u) in image.into_iter().enumerate() {
        if nulls.as_ref().is_none_or(|b| b.is_valid(i)) {
            valid.push((u, i as u32));
        } else {
            null_rows.push(i as u32);
        }
    }
    // (image, row id) pairs: rows with equal images stay in input order.
    valid.sort_unstable();
    // Ties on the first key are broken by the next keys: by their images while they have one
    // (and no nulls), then in row format from the first key that does not.
    let mut tie_images: Vec<Vec<u64>> = Vec::new();
    let mut k = 1;
    while k < keys.len() && cols[k].logical_null_count() == 0 {
        let Some(mut image) = crate::keys::ordered_u64(&cols[k]) else { break };
        if keys[k].descending {
            image.iter_mut().for_each(|u| *u = !*u);
        }
        tie_images.push(image);
        k += 1;
    }
    let rest = if k < keys.len() { Some(by_rows(&keys[k..], &cols[k..])?) } else { None };
    let by_rest = |run: &mut [u32]| {
        if keys.len() > 1 {
            run.sort_by(|&a, &b| {
                let (a, b) = (a as usize, b as usize);
                tie_images
                    .iter()
                    .map(|image| image[a].cmp(&image[b]))
                    .find(|o| o.is_ne())
                    .or_else(|| rest.as_ref().map(|rows| rows.row(a).cmp(&rows.row(b))))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
        }
    };
    let mut order: Vec<u32> = Vec::with_capacity(n);
    if first.nulls_first {
        by_rest(&mut null_rows);
        order.extend_from_slice(&null_rows);
    }
    let mut s = 0;
    while s < valid.len() {
        let mut e = s + 1;
        while e < valid.len() && valid[e].0 == valid[s].0 {
            e += 1;
        }
        let start = order.len();
        order.extend(valid[s..e].iter().map(|p| p.1));
        if e - s > 1 {
            by_rest(&mut order[start..]);
        }
        s = e;
    }
    if !first.nulls_first {
        by_rest(&mut null_rows);
        order.extend_from_slice(&null_rows);
    }
    Ok(order)
}

/// Stage 3: sorts this rank's range; an external merge sort when the input outgrows the
/// memory budget.
///
/// ```text
///  batches held (reserving twice their size: sorting concatenates them into one table)
///    ── budget refused ──▶ sort what is held, write it as a sorted run (spill file), free it
///  end: nothing spilled ─▶ sort in memory, emit in slices
///       runs spilled ────▶ the rest as one more run; k-way merge of the runs (crate::merge)
/// ```
pub struct LocalSort {
    name: String,
    keys: Vec<SortKey>,
    batch_rows: usize,
    data: Vec<RecordBatch>,
    result: Option<Sorted>,
    mem: Reservation,
    runs: Vec<SpillFile>,
    merge: Option<RunMerge>,
}

impl LocalSort {
    /// A local sort emitting `batch_rows` rows at a time, without a memory limit.
    pub fn new(name: &str, keys: Vec<SortKey>, batch_rows: usize) -> LocalSort {
        LocalSort {
            name: name.to_string(),
            keys,
            batch_rows: batch_rows.max(1),
            data: Vec::new(),
            result: None,
            mem: MemoryPool::unbounded().reserve(name),
            runs: Vec::new(),
            merge: None,
        }
    }

    /// The same sort holding its input against `pool`, spilling sorted runs when it refuses.
    pub fn with_memory(mut self, pool: &Arc<MemoryPool>) -> LocalSort {
        self.mem = pool.reserve(&self.name);
        self
    }

    /// Everything held, sorted, under `schema` (the held batches are released): one table
    /// ([`Table`]: a column at a time, 64-bit offsets where 32-bit ones would overflow) and the
    /// order of its rows, gathered a batch at a time.
    fn sort_held(&mut self, schema: &SchemaRef) -> Result<Sorted, OperatorError> {
        let table = Table::new(Arc::clone(schema), std::mem::take(&mut self.data))?;
        let what = format!("`{}`: sort key", self.name);
        let order = sorted_order(&table.wide_batch()?, &self.keys, &what)?;
        Ok(Sorted { table, order, at: 0 })
    }

    /// Sorts what is held into a run on disk (batches of `batch_rows`) and releases it.
    fn spill_run(&mut self) -> Result<(), OperatorError> {
        let Some(first) = self.data.first() else { return Ok(()) };
        let schema = crate::spill::nullable(&first.schema());
        let what = format!("{}-run{}", self.name, self.runs.len());
        let mut writer = SpillWriter::create(self.mem.pool(), &what, &schema)?;
        let mut sorted = self.sort_held(&schema)?;
        // Runs are written in small batches: the merge holds one batch of every run at once.
        let step = self.batch_rows.min(RUN_BATCH_ROWS);
        while let Some(b) = sorted.next(step)? {
            writer.write(&b)?;
        }
        drop(sorted);
        self.mem.free();
        self.runs.push(writer.finish()?);
        Ok(())
    }
}

impl Operator for LocalSort {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        // Sorting what is held takes as much again (the table its batches are concatenated
        // into, a column at a time; output is gathered a batch at a time) and 24 bytes a row of
        // keys and row ids.
        let need = 2 * crate::spill::held_bytes(&batch) + 24 * batch.num_rows() as u64;
        if self.mem.try_grow(need).is_err() {
            self.spill_run()?;
            self.mem.try_grow(need).map_err(|_| {
                self.mem.exhausted_error(need, "one batch and its sorted copies do not fit; raise runtime.memory_limit or lower runtime.batch_rows")
            })?;
        }
        self.data.push(batch);
        Ok(())
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        if self.runs.is_empty() {
            if self.data.is_empty() {
                return Ok(Flow::Idle);
            }
            // Ranks may disagree on nullability: a column is nullable if any batch says so.
            let schema = crate::spill::widened(&self.data);
            self.result = Some(self.sort_held(&schema)?);
            return Ok(Flow::More);
        }
        self.spill_run()?;
        let schema = Arc::clone(self.runs[0].schema());
        let (conv, idx) = converter(&schema, &self.keys, &format!("`{}`: sort key", self.name))?;
        let keys = Box::new(move |b: &RecordBatch| sort_keys(b, &idx));
        let mem = self.mem.pool().reserve(&format!("{} (merge)", self.name));
        self.merge = Some(RunMerge::new(std::mem::take(&mut self.runs), conv, keys, self.batch_rows, mem)?);
        Ok(Flow::More)
    }

    fn resume(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        if let Some(m) = &mut self.merge {
            if let Some(b) = m.next_batch()? {
                out.emit(b);
            }
            if m.done() {
                self.merge = None;
                return Ok(Flow::Idle);
            }
            return Ok(Flow::More);
        }
        let Some(sorted) = &mut self.result else { return Ok(Flow::Idle) };
        // An empty result still emits one empty batch, for its schema.
        let first = sorted.at == 0;
        match sorted.next(self.batch_rows)? {
            Some(b) => out.emit(b),
            None if first => out.emit(RecordBatch::new_empty(sorted.table.schema())),
            None => {}
        }
        if sorted.at < sorted.order.len() {
            return Ok(Flow::More);
        }
        self.result = None;
        self.mem.free();
        Ok(Flow::Idle)
    }
}

/// Held rows in sorted order, handed out a batch at a time.
struct Sorted {
    table: Table,
    order: Vec<u32>,
    /// Rows handed out.
    at: usize,
}

impl Sorted {
    /// The next (at most) `rows` rows in order; `None` after the last.
    fn next(&mut self, rows: usize) -> Result<Option<RecordBatch>, OperatorError> {
        let n = rows.max(1).min(self.order.len() - self.at);
        if n == 0 {
            return Ok(None);
        }
        let ids = UInt32Array::from(self.order[self.at..self.at + n].to_vec());
        self.at += n;
        Ok(Some(self.table.gather_batch(&ids)?))
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
            let all = arrow_select::concat::concat_batches(&got[0].schema(), &got).expect("concat");
            assert_eq!(values(&all, 0), want_k);
            assert_eq!(values(&all, 1).into_iter().map(|v| v.unwrap_or(-1)).collect::<Vec<_>>(), want_v);
        }
    }

    /// The word-image sort gives exactly the row-format sort (both stable), for every kind of
    /// first key it handles, with nulls, NaNs, signed zeros, ties and both directions.
    #[test]
    fn word_images_order_rows_as_the_row_format_does() {
        use arrow_array::{Date32Array, Float32Array, Float64Array, StringArray, UInt64Array};
        let n = 400;
        let pick = |i: usize, m: usize| (i * 7919 + i / 3) % m;
        let floats: Vec<Option<f64>> = (0..n)
            .map(|i| match pick(i, 9) {
                0 => None,
                1 => Some(f64::NAN),
                2 => Some(-f64::NAN),
                3 => Some(-0.0),
                4 => Some(0.0),
                5 => Some(f64::NEG_INFINITY),
                k => Some(k as f64 - 7.5),
            })
            .collect();
        let firsts: Vec<(&str, ArrayRef)> = vec![
            (
                "i64",
                Arc::new(Int64Array::from_iter(
                    (0..n).map(|i| (i % 5 != 0).then(|| pick(i, 40) as i64 - 20)),
                )),
            ),
            (
                "u64",
                Arc::new(UInt64Array::from_iter(
                    (0..n).map(|i| (i % 6 != 0).then(|| u64::MAX - pick(i, 30) as u64)),
                )),
            ),
            ("f64", Arc::new(Float64Array::from(floats.clone()))),
            ("f32", Arc::new(Float32Array::from_iter(floats.iter().map(|v| v.map(|v| v as f32))))),
            (
                "date",
                Arc::new(Date32Array::from_iter(
                    (0..n).map(|i| (i % 4 != 0).then(|| pick(i, 50) as i32 - 25)),
                )),
            ),
        ];
        // Second keys: in row format (a string with nulls), by images (numbers without nulls).
        let seconds: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| (i % 7 != 0).then(|| format!("s{}", pick(i, 3)))),
            )),
            Arc::new(Int64Array::from_iter_values((0..n).map(|i| pick(i, 3) as i64 - 1))),
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| [-0.0, 0.0, f64::NAN, 1.5][pick(i, 4)]))),
        ];
        for ((name, first), second) in
            firsts.into_iter().flat_map(|f| seconds.iter().map(move |s| (f.clone(), s)))
        {
            let batch =
                RecordBatch::try_from_iter(vec![("a", first), ("b", Arc::clone(second))]).expect("batch");
            for (descending, nulls_first) in [(false, false), (true, true), (false, true), (true, false)] {
                let keys = vec![
                    SortKey { column: "a".into(), descending, nulls_first },
                    SortKey { column: "b".into(), descending: !descending, nulls_first: !nulls_first },
                ];
                let got = sorted_order(&batch, &keys, "test").expect("sort");
                let (conv, idx) = converter(&batch.schema(), &keys, "test").expect("converter");
                let rows = conv.convert_columns(&sort_keys(&batch, &idx).expect("keys")).expect("rows");
                let mut want: Vec<u32> = (0..n as u32).collect();
                want.sort_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
                assert_eq!(got, want, "{name}, descending {descending}, nulls first {nulls_first}");
            }
        }
    }
}
