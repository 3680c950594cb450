//! Group-by aggregation: count, sum, min, max, mean, var, std, nunique, first, last, median,
//! quantile.
//!
//! ```text
//!  input ─▶ [partial: per-rank states] ─▶ shuffle on the keys ─▶ final: merge states ─▶ output
//!  (without pre-aggregation: input ─▶ shuffle ─▶ complete: aggregate raw rows ─▶ output)
//! ```
//!
//! Pre-aggregation is used when every aggregate can be split into partial states that merge
//! exactly: count and sum (sum and count of values), min and max, mean (sum and count), var/std
//! (count, mean and sum of squared deviations, merged with Chan's formula). A partial stage that
//! finds nearly every row a group of its own hands on the states it has, then the raw rows
//! (projected to the keys and aggregate inputs); the final stage takes both kinds of batch,
//! told apart by the schema metadata of states. The fixed-width states of a group sit in one
//! row of words (`slab.rs`). `nunique`, `first`, `last`, `median`
//! and `quantile` need every raw row of a group on one rank, so a pipeline using them shuffles
//! raw rows; `median` and `quantile` are exact: the rank owning a group holds its values (as
//! f64) and interpolates linearly between the two nearest ranks of the sorted values
//! (`quantile_cont` of DuckDB, NumPy's default), NaN above every number.
//!
//! Semantics follow SQL: null keys form their own group; aggregates skip null values; sum, min,
//! max, mean of a group without values are null, `var` and `std` (sample, n - 1) need two values;
//! count counts values (or rows for `count()`). `first` and `last` are the first and last value
//! seen on the owning rank, which after a shuffle depends on arrival order.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use arrow_select::take::take_record_batch;
use updraft_config::AggFn;
use updraft_runtime::{Flow, MemoryPool, Operator, OperatorError, Output, Reservation};

use crate::aggregates::{Acc, invalid};
use crate::keys::{key_column, key_type};
use crate::partition::{column_indices, hash_rows, mix64, partition_of};
use crate::slab::{Layout, Slab};
use crate::spill::{SpillFile, SpillWriter};

mod table;
use table::{GroupKeys, GroupTable};

/// Which part of a split aggregation a stage does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Raw rows in, final values out.
    Complete,
    /// Raw rows in, partial states out.
    Partial,
    /// Partial states in, final values out.
    Final,
}

/// One aggregate: function, input column (none for `count()`), output name.
#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    /// Function.
    pub func: AggFn,
    /// Input column.
    pub column: Option<String>,
    /// Output column.
    pub output: String,
    /// The `q` of `quantile` (0.5 for `median`).
    pub quantile: Option<f64>,
}

/// Group-by parameters.
#[derive(Debug, Clone)]
pub struct GroupParams {
    /// Stage name, for messages.
    pub name: String,
    /// Key columns; none for a whole-table aggregate (one row, whatever the input, as SQL's
    /// aggregate without `GROUP BY`: `count()` of an empty table is 0, its `sum` null).
    pub keys: Vec<String>,
    /// Aggregates.
    pub aggs: Vec<Agg>,
    /// Rows per output batch.
    pub batch_rows: usize,
    /// Without keys: whether this rank emits the whole-table row in final or complete mode (the
    /// rank the partial states are gathered on); the others emit an empty batch.
    pub owns_whole_table: bool,
}

/// True when every aggregate can be pre-aggregated.
pub fn decomposable(aggs: &[Agg]) -> bool {
    aggs.iter().all(|a| {
        !matches!(a.func, AggFn::NUnique | AggFn::First | AggFn::Last | AggFn::Median | AggFn::Quantile)
    })
}

struct State {
    /// Where raw rows and partial states have their columns (each known once such a batch
    /// came; a final stage gets both when a partial stage stopped pre-aggregating).
    raw: Option<Columns>,
    states: Option<Columns>,
    groups: Groups,
    accs: Vec<Acc>,
    /// The fixed-width states of `accs`, a row per group.
    slab: Slab,
    key_fields: Vec<Field>,
}

/// The key columns of one kind of input batch, and each aggregate's input column there (raw
/// mode) or its first state column (states).
#[derive(Clone)]
struct Columns {
    keys: Vec<usize>,
    inputs: Vec<Option<usize>>,
}

/// Schema metadata marking a batch of partial states: a final stage also takes the raw rows a
/// partial stage hands on once pre-aggregating does not pay.
const STATES_MARK: &str = "updraft.group_by.states";

/// True when `schema` is that of partial states.
fn is_states(schema: &Schema) -> bool {
    schema.metadata().contains_key(STATES_MARK)
}

/// The groups seen so far: their keys, and a hash table from key to group id (ids in order of
/// first appearance).
enum Groups {
    /// One integer key column of at most 64 bits that fits an `i64` (every integer type but
    /// `UInt64`), by value; the null key is a group of its own.
    Int { ty: DataType, values: Vec<i64>, null: Option<u32>, table: GroupTable },
    /// Any other key set, in Arrow's row format, hashed with XXH3.
    Rows { conv: RowConverter, keys: Rows, table: GroupTable },
}

impl Groups {
    fn new(key_fields: &[Field]) -> Result<Groups, OperatorError> {
        if let [f] = key_fields
            && f.data_type().is_integer()
            && f.data_type() != &DataType::UInt64
        {
            return Ok(Groups::Int {
                ty: f.data_type().clone(),
                values: Vec::new(),
                null: None,
                table: GroupTable::default(),
            });
        }
        let conv =
            RowConverter::new(key_fields.iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
        let keys = conv.empty_rows(1024, 16 * 1024);
        Ok(Groups::Rows { conv, keys, table: GroupTable::default() })
    }

    fn len(&self) -> usize {
        match self {
            Groups::Int { values, .. } => values.len(),
            Groups::Rows { keys, .. } => keys.num_rows(),
        }
    }

    /// Bytes held: keys and table (16 bytes a slot).
    fn bytes(&self) -> u64 {
        match self {
            Groups::Int { values, table, .. } => values.capacity() as u64 * 8 + table.bytes(),
            Groups::Rows { keys, table, .. } => keys.size() as u64 + table.bytes(),
        }
    }

    /// The group id of each row of `key_cols` (key columns as [`key_column`] makes them), new
    /// groups added.
    ///
    /// # Errors
    /// More groups than a `u32` id below the table's free mark can name.
    fn ids(&mut self, key_cols: &[ArrayRef]) -> Result<Vec<u32>, OperatorError> {
        let rows = key_cols.first().map_or(0, |c| c.len());
        if self.len() + rows >= u32::MAX as usize {
            return Err(OperatorError::Invalid(format!(
                "{} groups and a batch of {rows} rows on one worker: more than a group id can name; use more workers",
                self.len()
            )));
        }
        match self {
            Groups::Int { values, null, table, .. } => {
                let col = arrow_cast::cast(&key_cols[0], &DataType::Int64)?;
                let col = col.as_primitive::<Int64Type>();
                let nulls = col.nulls();
                let words: Vec<u64> = col.values().iter().map(|&v| v as u64).collect();
                let mut keys = IntKeys { batch: col.values(), values, null };
                Ok(table.ids(&words, |i| nulls.is_none_or(|n| n.is_valid(i)), &mut keys))
            }
            Groups::Rows { conv, keys, table } => {
                let batch = conv.convert_columns(key_cols)?;
                let words: Vec<u64> = batch.iter().map(|r| xxhash_rust::xxh3::xxh3_64(r.as_ref())).collect();
                Ok(table.ids(&words, |_| true, &mut RowKeys { batch: &batch, keys }))
            }
        }
    }

    /// The key columns of the groups `range` (ids), in group id order.
    fn columns(&self, range: Range<usize>) -> Result<Vec<ArrayRef>, OperatorError> {
        let (start, end) = (range.start, range.end);
        let beyond =
            || OperatorError::Invalid(format!("groups {start}..{end} beyond the {} held", self.len()));
        match self {
            Groups::Int { ty, values, null, .. } => {
                let values = values.get(range.clone()).ok_or_else(beyond)?;
                let nulls = null
                    .filter(|g| range.contains(&(*g as usize)))
                    .map(|g| arrow_buffer::NullBuffer::from_iter(range.clone().map(|i| i != g as usize)));
                let col: ArrayRef = Arc::new(Int64Array::new(values.to_vec().into(), nulls));
                // The values came from a column of type `ty`: the cast back is exact.
                Ok(vec![arrow_cast::cast(&col, ty)?])
            }
            Groups::Rows { conv, keys, .. } => {
                if end > keys.num_rows() {
                    return Err(beyond());
                }
                Ok(conv.convert_rows(range.map(|i| keys.row(i)))?)
            }
        }
    }

    /// Drops the hash table (its groups stay, to be read out): once the input has ended.
    fn release_table(&mut self) {
        match self {
            Groups::Int { table, .. } | Groups::Rows { table, .. } => *table = GroupTable::default(),
        }
    }
}

/// One integer key column, by value (its word is the key itself); the null key is a group of
/// its own, outside the table.
struct IntKeys<'a> {
    batch: &'a [i64],
    values: &'a mut Vec<i64>,
    null: &'a mut Option<u32>,
}

impl GroupKeys for IntKeys<'_> {
    fn hash(word: u64) -> u64 {
        mix(word)
    }
    fn same(&self, _: usize, _: u32) -> bool {
        true
    }
    fn add(&mut self, i: Option<usize>) -> u32 {
        if i.is_none()
            && let Some(g) = *self.null
        {
            return g;
        }
        self.values.push(i.map_or(0, |i| self.batch[i]));
        let g = (self.values.len() - 1) as u32;
        if i.is_none() {
            *self.null = Some(g);
        }
        g
    }
}

/// Any key set in Arrow's row format (its word is the row's XXH3 hash, null keys included).
struct RowKeys<'a> {
    batch: &'a Rows,
    keys: &'a mut Rows,
}

impl GroupKeys for RowKeys<'_> {
    fn hash(word: u64) -> u64 {
        word
    }
    fn same(&self, i: usize, gid: u32) -> bool {
        self.keys.row(gid as usize) == self.batch.row(i)
    }
    fn add(&mut self, i: Option<usize>) -> u32 {
        // Every row is looked up (a null key is part of a row's bytes): `i` is always some.
        // Were it not, the id past every group makes the aggregates fail the batch, naming it.
        let Some(i) = i else { return u32::MAX };
        self.keys.push(self.batch.row(i));
        (self.keys.num_rows() - 1) as u32
    }
}

/// MurmurHash3's 64-bit finaliser (Appleby, 2008): every input bit moves every output bit, so
/// the table's slot bits vary with every key bit. It is not the shuffle's hash
/// ([`crate::partition::mix64`]): the keys a rank receives share bits of that hash, and the
/// slots must not.
fn mix(word: u64) -> u64 {
    let mut k = word;
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The group-by operator.
///
/// Its table is held against the worker's memory budget. When the budget refuses, a partial
/// stage hands on the states it holds and starts afresh (the final stage merges them); a
/// complete or final stage writes its groups' partial states to [`SPILL_PARTITIONS`] spill
/// files by key hash and starts afresh, and at the end merges each file on its own (a final
/// stage per file, which spills again one level down if a file is still too large). Aggregates
/// without partial states (nunique, first, last, median, quantile) cannot spill: their table
/// failing the budget is a resources-exhausted error.
pub struct GroupBy {
    p: GroupParams,
    mode: Mode,
    st: Option<State>,
    result: Option<Drain>,
    /// Rows received so far (partial mode), until the probe below.
    rows_in: usize,
    /// Partial mode found too little to pre-aggregate: rows go on as they are, projected to
    /// these columns (keys and aggregate inputs), and the final stage aggregates them.
    passthrough: Option<Vec<usize>>,
    mem: Reservation,
    /// Rows aggregated into the table since it was last emptied.
    rows_held: u64,
    /// Spill depth: 0 for the stage, one more for each merge of a spilled partition.
    level: u32,
    spill: Option<Vec<SpillWriter>>,
    /// The spilled partitions left to merge, and the merge under way.
    parts: std::collections::VecDeque<SpillFile>,
    merging: Option<Box<GroupBy>>,
}

/// A finished table being read out, `batch_rows` groups at a time.
struct Drain {
    st: State,
    /// Groups to emit.
    rows: usize,
    /// Groups emitted.
    at: usize,
}

/// Partitions a spilling group-by splits its states into.
pub const SPILL_PARTITIONS: u32 = 32;
/// Deepest spill: a partition still too large after this many splits is an error.
const MAX_SPILL_LEVEL: u32 = 4;

/// Rows a partial aggregation sees before it checks whether pre-aggregating pays off, and the
/// ratio of groups to rows above which it stops (each later row then leaves as it is, without a
/// hash lookup; the final stage aggregates it as a complete stage would). The values of
/// DataFusion's `skip_partial_aggregation_probe_rows_threshold` and `..._ratio_threshold`.
const PROBE_ROWS: usize = 100_000;
const SKIP_RATIO: f64 = 0.8;

impl GroupBy {
    /// A group-by stage in `mode`.
    pub fn new(p: GroupParams, mode: Mode) -> GroupBy {
        let mem = MemoryPool::unbounded().reserve(&p.name);
        GroupBy {
            p,
            mode,
            st: None,
            result: None,
            rows_in: 0,
            passthrough: None,
            mem,
            rows_held: 0,
            level: 0,
            spill: None,
            parts: std::collections::VecDeque::new(),
            merging: None,
        }
    }

    /// The same stage holding its table against `pool`, spilling when it refuses.
    pub fn with_memory(mut self, pool: &Arc<MemoryPool>) -> GroupBy {
        self.mem = pool.reserve(&self.p.name);
        self
    }

    /// Grows the reservation to what the table holds; when refused, hands the table on
    /// (partial) or spills it (complete, final).
    fn account(&mut self, out: &mut Output) -> Result<(), OperatorError> {
        let Some(st) = &self.st else { return Ok(()) };
        if self.p.keys.is_empty() {
            return Ok(());
        }
        // Twice the table: room for its vectors' next doubling and for the copies a spill makes
        // (the states as a batch, then split by partition).
        let held = st.groups.bytes()
            + st.slab.bytes()
            + st.accs.iter().map(|a| a.bytes(self.rows_held)).sum::<u64>();
        let bytes = 2 * held;
        if self.mem.try_resize(bytes).is_ok() {
            return Ok(());
        }
        if self.mode == Mode::Partial {
            self.emit_table(out)?;
        } else if !decomposable(&self.p.aggs) || self.level >= MAX_SPILL_LEVEL {
            let why = if self.level >= MAX_SPILL_LEVEL {
                format!("its groups still do not fit after {MAX_SPILL_LEVEL} spill levels")
            } else {
                "nunique, first, last, median and quantile keep every group's values and cannot spill"
                    .to_string()
            };
            let e = self.mem.exhausted_error(
                bytes.saturating_sub(self.mem.size()),
                &format!("{why}; raise runtime.memory_limit"),
            );
            return Err(e.into());
        } else {
            self.spill_table()?;
        }
        self.rows_held = 0;
        self.mem.free();
        Ok(())
    }

    /// Writes the table's groups as partial states to the partition files, and empties it.
    fn spill_table(&mut self) -> Result<(), OperatorError> {
        let Some(st) = self.st.take() else { return Ok(()) };
        let rows = st.groups.len();
        let states = self.batch_of(&st, st.groups.columns(0..rows)?, 0..rows, true)?;
        drop(st);
        if self.spill.is_none() {
            let mut writers = Vec::with_capacity(SPILL_PARTITIONS as usize);
            for p in 0..SPILL_PARTITIONS {
                let what = format!("{}-l{}-{p}", self.p.name, self.level);
                writers.push(SpillWriter::create(self.mem.pool(), &what, &states.schema())?);
            }
            self.spill = Some(writers);
        }
        let Some(writers) = &mut self.spill else { return Ok(()) };
        let keys: Vec<ArrayRef> = (0..self.p.keys.len()).map(|i| Arc::clone(states.column(i))).collect();
        let salt = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(u64::from(self.level) + 1);
        let mut ids: Vec<Vec<u32>> = vec![Vec::new(); SPILL_PARTITIONS as usize];
        for (i, h) in hash_rows(&keys, rows)?.into_iter().enumerate() {
            ids[partition_of(mix64(h ^ salt), SPILL_PARTITIONS) as usize].push(i as u32);
        }
        for (p, rows) in ids.into_iter().enumerate() {
            if !rows.is_empty() {
                writers[p].write(&take_record_batch(&states, &UInt32Array::from(rows))?)?;
            }
        }
        Ok(())
    }

    /// Starts merging the next spilled partition; `Idle` when none is left.
    fn next_partition(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        while let Some(file) = self.parts.pop_front() {
            let mut inner = GroupBy::new(self.p.clone(), Mode::Final);
            inner.mem = self.mem.pool().reserve(&self.p.name);
            inner.level = self.level + 1;
            let mut reader = file.reader()?;
            while let Some(b) = reader.next_batch()? {
                inner.on_batch(0, b, out)?;
            }
            drop(file);
            if inner.on_end(0, out)? == Flow::More {
                self.merging = Some(Box::new(inner));
                return Ok(Flow::More);
            }
        }
        Ok(Flow::Idle)
    }

    /// A table for batches of `schema` (partial states when `states`).
    fn init(&self, schema: &Schema, states: bool) -> Result<State, OperatorError> {
        let (cols, accs, layout, key_fields) = columns_of(&self.p, schema, states)?;
        let groups = Groups::new(&key_fields)?;
        let slab = Slab::new(&layout);
        let (raw, states) = if states { (None, Some(cols)) } else { (Some(cols), None) };
        Ok(State { raw, states, groups, accs, slab, key_fields })
    }

    /// The table, to be read out: its groups' final values (partial states in partial mode).
    fn take_table(&mut self) -> Option<Drain> {
        let mut st = self.st.take()?;
        let whole = self.p.keys.is_empty();
        // A whole-table aggregate has its one group even when no row came.
        let rows = if !whole {
            st.groups.len()
        } else if self.mode == Mode::Partial || self.p.owns_whole_table {
            1
        } else {
            0
        };
        if whole {
            st.accs.iter_mut().for_each(|acc| acc.grow(1));
            st.slab.grow(1);
        }
        st.groups.release_table();
        Some(Drain { st, rows, at: 0 })
    }

    /// Emits the next `batch_rows` groups of `d` (an empty table still emits one empty batch,
    /// for its schema); `Flow::More` while groups remain.
    fn emit_next(&self, d: &mut Drain, out: &mut Output) -> Result<Flow, OperatorError> {
        let n = self.p.batch_rows.max(1).min(d.rows - d.at);
        if n > 0 || d.at == 0 {
            let range = d.at..d.at + n;
            let keys =
                if self.p.keys.is_empty() { Vec::new() } else { d.st.groups.columns(range.clone())? };
            out.emit(self.batch_of(&d.st, keys, range, self.mode == Mode::Partial)?);
        }
        d.at += n;
        Ok(if d.at < d.rows { Flow::More } else { Flow::Idle })
    }

    /// Emits the whole table now and empties it (partial mode: the final stage merges it).
    fn emit_table(&mut self, out: &mut Output) -> Result<(), OperatorError> {
        if let Some(mut d) = self.take_table() {
            while self.emit_next(&mut d, out)? == Flow::More {}
        }
        Ok(())
    }

    /// The output batch of the groups `range`: their `key_cols`, then each aggregate's partial
    /// states (partial mode) or final value.
    fn batch_of(
        &self,
        st: &State,
        key_cols: Vec<ArrayRef>,
        range: Range<usize>,
        states: bool,
    ) -> Result<RecordBatch, OperatorError> {
        let rows = range.len();
        let mut fields: Vec<Field> = st.key_fields.clone();
        let mut cols: Vec<ArrayRef> = key_cols;
        for (a, acc) in self.p.aggs.iter().zip(&st.accs) {
            if states {
                for (f, c) in acc.states(&st.slab, &a.output, range.clone())? {
                    fields.push(f);
                    cols.push(c);
                }
            } else {
                let (f, c) = acc.finish(&st.slab, a.func, &a.output, range.clone())?;
                fields.push(f);
                cols.push(c);
            }
        }
        let metadata = if states {
            std::collections::HashMap::from([(STATES_MARK.to_string(), "1".to_string())])
        } else {
            Default::default()
        };
        let schema: SchemaRef = Arc::new(Schema::new_with_metadata(fields, metadata));
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(schema, cols, &options)?)
    }
}

/// Where batches of `schema` (partial states when `states`, else raw rows) have the keys and
/// each aggregate's input, with the accumulators, slab layout and key fields they imply (the
/// same for both kinds: a state column has the type its accumulator outputs).
///
/// # Errors
/// A key or input column missing, or of a type its aggregate cannot take.
fn columns_of(
    p: &GroupParams,
    schema: &Schema,
    states: bool,
) -> Result<(Columns, Vec<Acc>, Layout, Vec<Field>), OperatorError> {
    let name = &p.name;
    let key_idx = column_indices(schema, &p.keys, &format!("`{name}`: key"))?;
    // Keys compare, and come out, as their values (a dictionary-encoded key is decoded).
    let key_fields: Vec<Field> = key_idx
        .iter()
        .map(|&i| {
            let f = schema.field(i);
            f.clone().with_data_type(key_type(f.data_type())).with_nullable(true)
        })
        .collect();
    let mut inputs = Vec::new();
    let mut accs = Vec::new();
    let mut layout = Layout::default();
    for a in &p.aggs {
        if states {
            let state = format!("{}{}", a.output, Acc::first_state(a.func));
            let i =
                column_indices(schema, std::slice::from_ref(&state), &format!("`{name}`: partial state"))?[0];
            inputs.push(Some(i));
            accs.push(Acc::for_states(a.func, schema.field(i).data_type(), &mut layout)?);
        } else {
            let i = match &a.column {
                Some(c) => {
                    Some(column_indices(schema, std::slice::from_ref(c), &format!("`{name}`: aggregate"))?[0])
                }
                None => None,
            };
            let ty = i.map(|i| schema.field(i).data_type());
            if let (
                Some(ty),
                AggFn::Sum | AggFn::Mean | AggFn::Var | AggFn::Std | AggFn::Median | AggFn::Quantile,
            ) = (ty, a.func)
                && !(key_type(ty).is_numeric() || key_type(ty) == DataType::Null)
            {
                return Err(invalid(format!(
                    "`{name}`: {} = {}({}) needs a numeric column, but `{}` is {ty}",
                    a.output,
                    a.func.name(),
                    a.column.as_deref().unwrap_or(""),
                    a.column.as_deref().unwrap_or("")
                )));
            }
            accs.push(Acc::for_input(a.func, ty, a.quantile, &mut layout).map_err(|e| {
                invalid(format!(
                    "`{name}`: {} = {}({}): {e}",
                    a.output,
                    a.func.name(),
                    a.column.as_deref().unwrap_or("")
                ))
            })?);
            inputs.push(i);
        }
    }
    Ok((Columns { keys: key_idx, inputs }, accs, layout, key_fields))
}

/// Adds `batch`, whose row `i` belongs to group `gids[i]`, to every aggregate (partial states
/// when `cols` are those of states, else raw values); `groups` is the number of groups so far.
fn update_groups(
    st: &mut State,
    p: &GroupParams,
    (states, cols): (bool, &Columns),
    batch: &RecordBatch,
    gids: &[u32],
    groups: usize,
) -> Result<(), OperatorError> {
    let name = &p.name;
    let context = |a: &Agg, e: OperatorError| {
        invalid(format!("`{name}`: {}({}): {e}", a.func.name(), a.column.as_deref().unwrap_or("")))
    };
    st.slab.grow(groups);
    st.accs.iter_mut().for_each(|acc| acc.grow(groups));
    // A whole-table aggregate of raw rows: sums and counts by Arrow's kernels, in one go.
    let mut done = vec![false; st.accs.len()];
    if p.keys.is_empty() && !states {
        for (((acc, input), a), done) in st.accs.iter_mut().zip(&cols.inputs).zip(&p.aggs).zip(&mut done) {
            let col = input.map(|i| batch.column(i));
            *done = acc.update_whole(&mut st.slab, batch.num_rows(), col).map_err(|e| context(a, e))?;
        }
    }
    for start in (0..gids.len()).step_by(CHUNK_ROWS) {
        let len = CHUNK_ROWS.min(gids.len() - start);
        let chunk = &gids[start..start + len];
        // The chunk's rows are fetched together, their misses overlapping, before the first
        // aggregate reads them one by one.
        chunk.iter().for_each(|&g| st.slab.prefetch(g as usize));
        for (((acc, input), a), _) in
            st.accs.iter_mut().zip(&cols.inputs).zip(&p.aggs).zip(&done).filter(|(_, done)| !**done)
        {
            let context = |e: OperatorError| context(a, e);
            if states {
                let first = input.unwrap_or(0);
                let width = Acc::state_width(a.func);
                let cols: Vec<ArrayRef> =
                    (first..first + width).map(|i| batch.column(i).slice(start, len)).collect();
                acc.merge(&mut st.slab, chunk, &cols).map_err(context)?;
            } else {
                let col = input.map(|i| batch.column(i).slice(start, len));
                acc.update(&mut st.slab, chunk, col.as_ref()).map_err(context)?;
            }
        }
    }
    Ok(())
}

/// Rows added to their groups together, one aggregate after another: the slab rows of their
/// groups (128 KiB at eight words a row) stay in the core's cache from one aggregate to the next.
const CHUNK_ROWS: usize = 2048;

impl Operator for GroupBy {
    fn on_batch(&mut self, _port: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        if let Some(columns) = &self.passthrough {
            out.emit(batch.project(columns)?);
            return Ok(());
        }
        // Only a final stage takes partial states (a raw input's metadata proves nothing else).
        let states = self.mode == Mode::Final && is_states(&batch.schema());
        if self.st.is_none() {
            self.st = Some(self.init(&batch.schema(), states)?);
        }
        let Some(st) = self.st.as_mut() else { return Ok(()) };
        let slot = if states { &mut st.states } else { &mut st.raw };
        let cols = match slot {
            Some(cols) => cols.clone(),
            None => slot.insert(columns_of(&self.p, &batch.schema(), states)?.0).clone(),
        };
        if self.p.keys.is_empty() {
            // A whole-table aggregate: every row in group 0.
            let gids = vec![0u32; batch.num_rows()];
            return update_groups(st, &self.p, (states, &cols), &batch, &gids, 1);
        }
        let key_cols: Vec<ArrayRef> =
            cols.keys.iter().map(|&i| key_column(batch.column(i))).collect::<Result<_, _>>()?;
        let gids = st.groups.ids(&key_cols)?;
        let groups = st.groups.len();
        update_groups(st, &self.p, (states, &cols), &batch, &gids, groups)?;
        self.rows_held += batch.num_rows() as u64;
        self.account(out)?;
        if self.mode == Mode::Partial && self.rows_in < PROBE_ROWS {
            self.rows_in += batch.num_rows();
            if self.rows_in >= PROBE_ROWS && groups as f64 > SKIP_RATIO * self.rows_in as f64 {
                // Nearly every row is a group of its own: hand on what is held, then the rows
                // themselves (only the columns the final stage aggregates), without hashing.
                let mut columns: Vec<usize> =
                    cols.keys.iter().copied().chain(cols.inputs.iter().flatten().copied()).collect();
                columns.sort_unstable();
                columns.dedup();
                self.passthrough = Some(columns);
                self.emit_table(out)?;
            }
        }
        Ok(())
    }

    fn on_end(&mut self, _port: usize, out: &mut Output) -> Result<Flow, OperatorError> {
        if self.spill.is_some() {
            self.spill_table()?;
            self.mem.free();
            for w in self.spill.take().into_iter().flatten() {
                self.parts.push_back(w.finish()?);
            }
            return self.next_partition(out);
        }
        self.result = self.take_table();
        Ok(if self.result.is_some() { Flow::More } else { Flow::Idle })
    }

    fn resume(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        if let Some(inner) = &mut self.merging {
            if inner.resume(out)? == Flow::More {
                return Ok(Flow::More);
            }
            self.merging = None;
            return self.next_partition(out);
        }
        let Some(mut d) = self.result.take() else { return Ok(Flow::Idle) };
        let flow = self.emit_next(&mut d, out)?;
        if flow == Flow::More {
            self.result = Some(d);
        } else {
            self.mem.free();
        }
        Ok(flow)
    }
}

#[cfg(test)]
mod tests;
