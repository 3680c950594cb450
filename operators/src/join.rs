//! Local join (inner, left, right or full outer) on one or more key columns, by hash or by
//! sort-merge. Rows with a null in any key column never match; an outer join keeps them as
//! unmatched rows. Because both inputs are hash-partitioned on the keys first, the local outer
//! join on each rank is the global one.
//!
//! ```text
//!  Collecting ──both inputs ended──▶ hash: build a table on the smaller side ──▶ Matching ──▶ Done
//!    (batches of each side kept)     sort-merge: sort row ids of both sides   (≈ one output
//!                                      by key                                 batch per call)
//! ```
//!
//! The hash join builds on the smaller side and probes with the larger one, both split into
//! partitions by key hash so that each partition's table stays in cache (see `Probe`); its
//! output comes partition by partition. The sort-merge join walks both sorted sides together
//! and emits in key order (rows with a null key last); it needs no table and its output is
//! sorted, at the cost of two sorts.
//!
//! Output columns: every left column, then every right column except right keys that share
//! their name with the matching left key (their values are equal; for a right row without a left
//! one the key comes from the right). Unmatched build rows of a preserved side are emitted after
//! probing, from a matched-bitmap. Other names that clash get
//! the configured suffixes. The table and its key handling are in [`crate::hash_table`].
//!
//! When the plan names the build side (`build`), the hash join streams the other side through
//! an index of the whole build side instead of collecting it (`stream.rs`); the sort-merge join
//! and a join without a named build side collect both, as above.
//!
//! The collected sides are held against the worker's memory budget: their batches, the column
//! being concatenated (`table.rs`: a side is made one array per column, a column at a time, with
//! 64-bit offsets where 32-bit ones would overflow), key copies and the matcher's arrays. When
//! the budget refuses, the join becomes a grace hash
//! join (`grace.rs`): both sides go to partitioned spill files and the partitions are joined
//! one after another, each as above.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use arrow_select::zip::zip;
use updraft_config::{JoinAlgorithm, JoinHow};
use updraft_runtime::{Flow, MemoryPool, Operator, OperatorError, Output, Reservation};

use crate::hash_table::{END, JoinKeys, PartitionTable, Partitions, join_keys, partition_bits};
use crate::partition::{column_indices, describe_columns as describe, same_columns};
use crate::table::{Table, row_ids};

/// Join parameters.
#[derive(Debug, Clone)]
pub struct JoinParams {
    /// Stage name, for messages.
    pub name: String,
    /// Left key columns.
    pub left_on: Vec<String>,
    /// Right key columns.
    pub right_on: Vec<String>,
    /// Suffixes for clashing names.
    pub suffixes: (String, String),
    /// Which unmatched rows are kept.
    pub how: JoinHow,
    /// How matches are found.
    pub algorithm: JoinAlgorithm,
    /// Rows per output batch.
    pub batch_rows: usize,
    /// `Some(port)`: a hash join builds its table on that input (0 left, 1 right) and streams
    /// the other through it (`stream.rs`); `None`: both inputs are collected and the table
    /// built on the one with fewer rows.
    pub build: Option<usize>,
}

/// The join operator. Port 0 is the left input, port 1 the right.
pub struct Join {
    p: JoinParams,
    sides: [Vec<RecordBatch>; 2],
    ended: [bool; 2],
    state: Option<Matching>,
    mem: Reservation,
    /// Set once the sides outgrew the memory budget.
    grace: Option<grace::Grace>,
    /// Set once the build side is indexed and the probe side streams through it.
    streamed: Option<stream::Streamed>,
    /// A batch (possibly empty) has been emitted: the consumers know the schema.
    emitted: bool,
}

/// Both sides collected; pairs of row ids come from the matcher and are assembled here.
struct Matching {
    left: Table,
    right: Table,
    assembly: Assembly,
    matcher: Matcher,
    started: bool,
}

/// How output rows are made from pairs of left and right row ids.
struct Assembly {
    schema: SchemaRef,
    right_keep: Vec<usize>,
    /// Output key columns taken from the right row when there is no left row (right and full
    /// joins): (output column, right column).
    coalesce: Vec<(usize, usize)>,
}

enum Matcher {
    Hash(Probe),
    Merge(Merge),
}

impl Matcher {
    fn done(&self) -> bool {
        match self {
            Matcher::Hash(p) => p.done(),
            Matcher::Merge(m) => m.done(),
        }
    }

    fn pairs(&mut self, limit: usize) -> (Vec<Option<u32>>, Vec<Option<u32>>) {
        match self {
            Matcher::Hash(p) => p.pairs(limit),
            Matcher::Merge(m) => m.pairs(limit),
        }
    }
}

/// Hash matching, radix-partitioned ([`crate::hash_table`]): both sides are split by the top
/// bits of their key hash; partition by partition, a small table is built over the build rows
/// and the probe rows of the same partition walk its chains. Every table access then hits the
/// cache, where one table over a whole side of millions of rows would miss on nearly every
/// probe. Output follows partitions, not the probe side's row order; a key with millions of
/// matches still leaves in bounded batches.
struct Probe {
    build_is_left: bool,
    build_keys: JoinKeys,
    probe_keys: JoinKeys,
    build: Partitions,
    probe: Partitions,
    table: PartitionTable,
    /// Partition being probed, and its next probe position.
    part: usize,
    at: usize,
    /// The probe position being walked, its next chain entry (END: walked to the end) and
    /// whether it matched.
    walking: Option<(usize, u32, bool)>,
    /// Next probe row with a null key to emit unmatched (when the probe side is kept).
    null_cursor: usize,
    /// Probe rows without a match are emitted (their side is preserved).
    keep_probe: bool,
    /// Build rows never matched are emitted after probing (their side is preserved).
    keep_build: bool,
    matched: Vec<bool>,
    build_cursor: usize,
}

impl Join {
    /// A join with these parameters, without a memory limit.
    pub fn new(p: JoinParams) -> Join {
        let mem = MemoryPool::unbounded().reserve(&p.name);
        Join {
            p,
            sides: [Vec::new(), Vec::new()],
            ended: [false, false],
            state: None,
            mem,
            grace: None,
            streamed: None,
            emitted: false,
        }
    }

    /// The same join holding its sides against `pool`, spilling when it refuses.
    pub fn with_memory(mut self, pool: &Arc<MemoryPool>) -> Join {
        self.mem = pool.reserve(&self.p.name);
        self
    }

    /// Bytes a held batch costs: itself, its share of the column being concatenated (a side
    /// is concatenated a column at a time, each column's parts dropped once it is made: its
    /// largest column), the row-format copy of its keys when there are several (at most twice
    /// their size) and the matcher's 16 bytes a row (hash, partition position, chain link);
    /// 32 on a streamed build side, whose index holds a (hash, row id) entry of 16 bytes and up
    /// to 8 bytes of bucket offsets a row, the rest a margin for the partition being reordered.
    fn cost(&self, port: usize, batch: &RecordBatch) -> u64 {
        let on = if port == 0 { &self.p.left_on } else { &self.p.right_on };
        let bytes = |c: &ArrayRef| crate::spill::data_bytes(&c.to_data());
        let widest = batch.columns().iter().map(bytes).max().unwrap_or(0);
        let schema = batch.schema();
        let keys: u64 = if on.len() > 1 {
            on.iter().filter_map(|k| schema.index_of(k).ok()).map(|i| 2 * bytes(batch.column(i))).sum()
        } else {
            0
        };
        let per_row = if self.streams() && self.p.build == Some(port) { 32 } else { 16 };
        crate::spill::held_bytes(batch) + widest + keys + per_row * batch.num_rows() as u64
    }

    /// True for a hash join whose build side the plan named.
    fn streams(&self) -> bool {
        self.p.build.is_some() && self.p.algorithm == JoinAlgorithm::Hash
    }

    /// Indexes the build side once it has ended and a probe batch (which gives the probe
    /// side's columns) has come, queueing the probe batches held so far. True when streaming.
    fn try_stream(&mut self, out: &mut Output) -> Result<bool, OperatorError> {
        let Some(build) = self.p.build.filter(|_| self.streams()) else { return Ok(false) };
        let probe = 1 - build;
        if self.streamed.is_some() {
            return Ok(true);
        }
        if self.grace.is_some()
            || !self.ended[build]
            || self.sides[build].is_empty()
            || self.sides[probe].is_empty()
        {
            return Ok(false);
        }
        let table = self.side(build)?;
        let first = self.sides[probe][0].schema();
        let mut s = stream::Streamed::new(&self.p, build, table, &first)?;
        for b in std::mem::take(&mut self.sides[probe]) {
            s.push(b)?;
        }
        s.probe_ended = self.ended[probe];
        self.streamed = Some(s);
        out.more();
        Ok(true)
    }

    /// Holds `batch` of side `port`, or sends it to the partition files once spilling.
    fn hold(&mut self, port: usize, batch: RecordBatch) -> Result<(), OperatorError> {
        if let Some(g) = &mut self.grace {
            return g.add(port, &batch);
        }
        if self.mem.try_grow(self.cost(port, &batch)).is_ok() {
            self.sides[port].push(batch);
            return Ok(());
        }
        let on = [self.p.left_on.clone(), self.p.right_on.clone()];
        let mut g = grace::Grace::new(&self.p.name, self.mem.pool(), on);
        for (side, held) in self.sides.iter_mut().enumerate() {
            for b in std::mem::take(held) {
                g.add(side, &b)?;
            }
        }
        self.mem.free();
        g.add(port, &batch)?;
        self.grace = Some(g);
        Ok(())
    }

    /// Joins the next spilled partition that has output; `Idle` after the last.
    fn next_partition(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        loop {
            self.mem.free();
            let Some(g) = &mut self.grace else { return Ok(Flow::Idle) };
            let Some(sides) = g.next_partition()? else {
                self.grace = None;
                return Ok(Flow::Idle);
            };
            let need: u64 = sides
                .iter()
                .enumerate()
                .flat_map(|(port, bs)| bs.iter().map(move |b| (port, b)))
                .map(|(port, b)| self.cost(port, b))
                .sum();
            self.mem.try_grow(need).map_err(|_| {
                self.mem.exhausted_error(
                    need,
                    &format!(
                        "one of its {} spilled partitions does not fit (a key with very many rows?); raise runtime.memory_limit",
                        grace::PARTITIONS
                    ),
                )
            })?;
            self.sides = sides;
            self.state = self.prepare()?;
            match &mut self.state {
                Some(m) if !m.matcher.done() => {
                    // Only the job's first batch needs to be emitted empty (for the schema).
                    m.started = self.emitted;
                    return Ok(Flow::More);
                }
                Some(m) if !self.emitted => {
                    out.emit(RecordBatch::new_empty(Arc::clone(&m.assembly.schema)));
                    self.emitted = true;
                }
                _ => {}
            }
            self.state = None;
        }
    }

    fn side_name(port: usize) -> &'static str {
        if port == 0 { "left" } else { "right" }
    }

    /// All batches of one side as one table (`crate::table`: concatenated a column at a time).
    /// Batches from different ranks must have the same column names and types; nullability is
    /// widened and metadata dropped.
    fn side(&mut self, port: usize) -> Result<Table, OperatorError> {
        let batches = &self.sides[port];
        let first = batches[0].schema();
        let mut nullable: Vec<bool> = first.fields().iter().map(|f| f.is_nullable()).collect();
        for b in &batches[1..] {
            let schema = b.schema();
            if !same_columns(&schema, &first) {
                return Err(OperatorError::Invalid(format!(
                    "`{}`: the {} input has batches with different columns ({} vs {}); do all ranks read the same kind of data?",
                    self.p.name,
                    Self::side_name(port),
                    describe(&first),
                    describe(&schema)
                )));
            }
            for (n, f) in nullable.iter_mut().zip(schema.fields()) {
                *n |= f.is_nullable();
            }
        }
        let fields: Vec<Field> = first
            .fields()
            .iter()
            .zip(nullable)
            .map(|(f, n)| Field::new(f.name(), f.data_type().clone(), n))
            .collect();
        Table::new(Arc::new(Schema::new(fields)), std::mem::take(&mut self.sides[port]))
    }

    fn prepare(&mut self) -> Result<Option<Matching>, OperatorError> {
        if self.sides[0].is_empty() || self.sides[1].is_empty() {
            // A side never saw a schema on any rank (every producer sends at least one,
            // possibly empty, batch when it has one). Nothing can match; a preserved side
            // with rows cannot be padded without knowing the other side's columns.
            let (keep_left, keep_right) = self.p.how.preserves();
            let rows = |port: usize| self.sides[port].iter().map(RecordBatch::num_rows).sum::<usize>();
            if (keep_left && rows(0) > 0) || (keep_right && rows(1) > 0) {
                let missing = if self.sides[0].is_empty() { "left" } else { "right" };
                return Err(OperatorError::Invalid(format!(
                    "`{}`: the {missing} input has no schema on any rank (no data at all?), so an outer join cannot pad its rows",
                    self.p.name
                )));
            }
            return Ok(None);
        }
        let left = self.side(0)?;
        let right = self.side(1)?;
        self.sides = [Vec::new(), Vec::new()];
        let lk = column_indices(&left.schema(), &self.p.left_on, &format!("`{}`: left key", self.p.name))?;
        let rk = column_indices(&right.schema(), &self.p.right_on, &format!("`{}`: right key", self.p.name))?;
        let (schema, right_keep, coalesce) = output_schema(
            &left.schema(),
            &right.schema(),
            &lk,
            &rk,
            &self.p.suffixes,
            self.p.how.preserves(),
        );
        let lcols: Vec<ArrayRef> = lk.iter().map(|&i| left.column(i)).collect();
        let rcols: Vec<ArrayRef> = rk.iter().map(|&i| right.column(i)).collect();
        let (left_keys, right_keys) =
            join_keys(&lcols, &rcols, &self.p.name, (&self.p.left_on, &self.p.right_on))?;
        let (keep_left, keep_right) = self.p.how.preserves();
        let matcher = match self.p.algorithm {
            JoinAlgorithm::Hash => {
                let build_is_left = left.num_rows() < right.num_rows();
                let (build_keys, probe_keys) =
                    if build_is_left { (left_keys, right_keys) } else { (right_keys, left_keys) };
                let (keep_build, keep_probe) =
                    if build_is_left { (keep_left, keep_right) } else { (keep_right, keep_left) };
                Matcher::Hash(Probe::new((build_keys, probe_keys), build_is_left, (keep_build, keep_probe))?)
            }
            JoinAlgorithm::SortMerge => {
                Matcher::Merge(Merge::new(left_keys, right_keys, keep_left, keep_right))
            }
        };
        Ok(Some(Matching {
            left,
            right,
            assembly: Assembly { schema, right_keep, coalesce },
            matcher,
            started: false,
        }))
    }
}

/// The type of a key column both sides share by name, when there is one that holds both.
fn shared_key_type(left: &DataType, right: &DataType) -> Option<DataType> {
    // Decoded: two dictionaries cannot be merged row by row without overflowing their keys.
    crate::unify::widen(left, right).map(|t| crate::keys::key_type(&t)).or_else(|| {
        let (l, r) = (crate::keys::key_type(left), crate::keys::key_type(right));
        (l.is_integer() && r.is_integer()).then_some(DataType::Decimal128(20, 0))
    })
}

/// Output schema, the right columns kept, and the key columns shared by name that hold the
/// right side's key for unmatched right rows (left column, right column).
///
/// A key whose two columns have one name is one output column. When the right side is
/// preserved, that column takes a type both sides' values fit ([`crate::unify::widen`]:
/// integers widen, dictionaries decode; a `UInt64` against a signed integer is
/// `Decimal128(20, 0)`, which holds both exactly); when there is none the right key is kept as
/// its own column instead, so no value is lost.
fn output_schema(
    left: &Schema,
    right: &Schema,
    lk: &[usize],
    rk: &[usize],
    suffixes: &(String, String),
    (keep_left, keep_right): (bool, bool),
) -> (SchemaRef, Vec<usize>, Vec<(usize, usize)>) {
    let mut dropped: HashSet<usize> = HashSet::new();
    let mut shared: Vec<(usize, DataType)> = Vec::new();
    let mut coalesce = Vec::new();
    for (l, r) in lk.iter().zip(rk) {
        if left.field(*l).name() != right.field(*r).name() {
            continue;
        }
        if !keep_right {
            dropped.insert(*r);
        } else if let Some(t) = shared_key_type(left.field(*l).data_type(), right.field(*r).data_type()) {
            dropped.insert(*r);
            shared.push((*l, t));
            coalesce.push((*l, *r));
        }
    }
    let right_keep: Vec<usize> = (0..right.fields().len()).filter(|i| !dropped.contains(i)).collect();
    let left_names: HashSet<&str> = left.fields().iter().map(|f| f.name().as_str()).collect();
    let right_names: HashSet<&str> = right_keep.iter().map(|i| right.field(*i).name().as_str()).collect();
    let mut fields: Vec<Field> = left
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = if right_names.contains(f.name().as_str()) {
                format!("{}{}", f.name(), suffixes.0)
            } else {
                f.name().clone()
            };
            let ty = shared
                .iter()
                .find(|(l, _)| *l == i)
                .map_or_else(|| f.data_type().clone(), |(_, t)| t.clone());
            // A preserved right side leaves left columns empty for unmatched right rows.
            f.as_ref().clone().with_name(name).with_data_type(ty).with_nullable(f.is_nullable() || keep_right)
        })
        .collect();
    for i in &right_keep {
        let f = right.field(*i);
        let name = if left_names.contains(f.name().as_str()) {
            format!("{}{}", f.name(), suffixes.1)
        } else {
            f.name().clone()
        };
        // A preserved left side leaves right columns empty for unmatched left rows.
        fields.push(f.clone().with_name(name).with_nullable(f.is_nullable() || keep_left));
    }
    (Arc::new(Schema::new(fields)), right_keep, coalesce)
}

impl Probe {
    fn new(
        (build_keys, probe_keys): (JoinKeys, JoinKeys),
        build_is_left: bool,
        (keep_build, keep_probe): (bool, bool),
    ) -> Result<Probe, OperatorError> {
        let bits = partition_bits(build_keys.len());
        let build = Partitions::new(&build_keys, bits)?;
        let probe = Partitions::new(&probe_keys, bits)?;
        let matched = if keep_build { vec![false; build_keys.len()] } else { Vec::new() };
        let at = probe.range(0).start;
        Ok(Probe {
            build_is_left,
            build_keys,
            probe_keys,
            build,
            probe,
            table: PartitionTable::default(),
            part: 0,
            at,
            walking: None,
            null_cursor: 0,
            keep_probe,
            keep_build,
            matched,
            build_cursor: 0,
        })
    }

    /// True when every probe row, and every preserved unmatched build row, has been emitted.
    fn done(&self) -> bool {
        self.part >= self.probe.count()
            && self.walking.is_none()
            && (!self.keep_probe || self.null_cursor >= self.probe.nulls.len())
            && (!self.keep_build || self.build_cursor >= self.matched.len())
    }

    /// Collects up to `limit` (left row, right row) pairs; `None` stands for the missing row of
    /// an outer join.
    fn pairs(&mut self, limit: usize) -> (Vec<Option<u32>>, Vec<Option<u32>>) {
        let mut probe_idx = Vec::with_capacity(limit);
        let mut build_idx = Vec::with_capacity(limit);
        while probe_idx.len() < limit {
            if let Some((at, entry, any)) = self.walking {
                if entry == END {
                    if self.keep_probe && !any {
                        probe_idx.push(Some(self.probe.row(at)));
                        build_idx.push(None);
                    }
                    self.walking = None;
                    continue;
                }
                let (equal, row, next) = self.table.step(
                    entry,
                    (&self.build, &self.build_keys),
                    (&self.probe, &self.probe_keys),
                    at,
                );
                if equal {
                    probe_idx.push(Some(self.probe.row(at)));
                    build_idx.push(Some(row));
                    if self.keep_build {
                        self.matched[row as usize] = true;
                    }
                }
                self.walking = Some((at, next, any || equal));
            } else if self.part < self.probe.count() {
                let range = self.probe.range(self.part);
                if self.at < range.end {
                    self.table.build(&self.build, self.part);
                    self.walking = Some((self.at, self.table.head(&self.probe, self.at), false));
                    self.at += 1;
                } else {
                    self.part += 1;
                    if self.part < self.probe.count() {
                        self.at = self.probe.range(self.part).start;
                    }
                }
            } else if self.keep_probe && self.null_cursor < self.probe.nulls.len() {
                probe_idx.push(Some(self.probe.nulls[self.null_cursor]));
                build_idx.push(None);
                self.null_cursor += 1;
            } else if self.keep_build && self.build_cursor < self.matched.len() {
                if !self.matched[self.build_cursor] {
                    probe_idx.push(None);
                    build_idx.push(Some(self.build_cursor as u32));
                }
                self.build_cursor += 1;
            } else {
                break;
            }
        }
        if self.build_is_left { (build_idx, probe_idx) } else { (probe_idx, build_idx) }
    }
}

/// Sort-merge matching: row ids of both sides sorted by key, walked together.
struct Merge {
    left: JoinKeys,
    right: JoinKeys,
    /// Rows with valid keys, in key order.
    order: [Vec<u32>; 2],
    /// Rows with a null key (never matched).
    nulls: [Vec<u32>; 2],
    keep: [bool; 2],
    /// Next position in `order` of each side.
    at: [usize; 2],
    /// A run of equal keys being crossed: ends of the run in `order`, and the cursor over it.
    run: Option<Run>,
    /// Next position in `nulls` of each preserved side, emitted after the merge.
    null_at: [usize; 2],
}

struct Run {
    end: [usize; 2],
    i: usize,
    j: usize,
}

impl Merge {
    fn new(left: JoinKeys, right: JoinKeys, keep_left: bool, keep_right: bool) -> Merge {
        let (lo, ln) = left.sorted();
        let (ro, rn) = right.sorted();
        Merge {
            left,
            right,
            order: [lo, ro],
            nulls: [ln, rn],
            keep: [keep_left, keep_right],
            at: [0, 0],
            run: None,
            null_at: [0, 0],
        }
    }

    fn done(&self) -> bool {
        self.run.is_none()
            && self.at[0] >= self.order[0].len()
            && self.at[1] >= self.order[1].len()
            && (0..2).all(|s| !self.keep[s] || self.null_at[s] >= self.nulls[s].len())
    }

    /// End of the run of keys equal to `order[side][start]`.
    fn run_end(&self, side: usize, start: usize) -> usize {
        let keys = if side == 0 { &self.left } else { &self.right };
        let order = &self.order[side];
        let first = order[start] as usize;
        let mut end = start + 1;
        while end < order.len() && keys.compare(first, keys, order[end] as usize).is_eq() {
            end += 1;
        }
        end
    }

    fn pairs(&mut self, limit: usize) -> (Vec<Option<u32>>, Vec<Option<u32>>) {
        let mut l = Vec::with_capacity(limit);
        let mut r = Vec::with_capacity(limit);
        while l.len() < limit {
            if let Some(run) = &mut self.run {
                l.push(Some(self.order[0][run.i]));
                r.push(Some(self.order[1][run.j]));
                run.j += 1;
                if run.j == run.end[1] {
                    run.j = self.at[1];
                    run.i += 1;
                    if run.i == run.end[0] {
                        self.at = run.end;
                        self.run = None;
                    }
                }
                continue;
            }
            let (i, j) = (self.at[0], self.at[1]);
            let (li, rj) = (self.order[0].get(i).copied(), self.order[1].get(j).copied());
            match (li, rj) {
                (Some(a), Some(b)) => match self.left.compare(a as usize, &self.right, b as usize) {
                    std::cmp::Ordering::Less => {
                        if self.keep[0] {
                            l.push(Some(a));
                            r.push(None);
                        }
                        self.at[0] += 1;
                    }
                    std::cmp::Ordering::Greater => {
                        if self.keep[1] {
                            l.push(None);
                            r.push(Some(b));
                        }
                        self.at[1] += 1;
                    }
                    std::cmp::Ordering::Equal => {
                        self.run = Some(Run { end: [self.run_end(0, i), self.run_end(1, j)], i, j });
                    }
                },
                (Some(a), None) => {
                    if self.keep[0] {
                        l.push(Some(a));
                        r.push(None);
                        self.at[0] += 1;
                    } else {
                        self.at[0] = self.order[0].len();
                    }
                }
                (None, Some(b)) => {
                    if self.keep[1] {
                        l.push(None);
                        r.push(Some(b));
                        self.at[1] += 1;
                    } else {
                        self.at[1] = self.order[1].len();
                    }
                }
                (None, None) => {
                    if self.keep[0] && self.null_at[0] < self.nulls[0].len() {
                        l.push(Some(self.nulls[0][self.null_at[0]]));
                        r.push(None);
                        self.null_at[0] += 1;
                    } else if self.keep[1] && self.null_at[1] < self.nulls[1].len() {
                        l.push(None);
                        r.push(Some(self.nulls[1][self.null_at[1]]));
                        self.null_at[1] += 1;
                    } else {
                        break;
                    }
                }
            }
        }
        (l, r)
    }
}

impl Assembly {
    /// The output rows pairing `left_idx` rows of `left` with `right_idx` rows of `right`
    /// (`None`: the missing row of an outer join).
    fn batch(
        &self,
        (left, right): (&Table, &Table),
        left_idx: Vec<Option<u32>>,
        right_idx: Vec<Option<u32>>,
    ) -> Result<RecordBatch, OperatorError> {
        let has_left = (!self.coalesce.is_empty())
            .then(|| BooleanArray::from(left_idx.iter().map(Option::is_some).collect::<Vec<bool>>()));
        let (li, ri) = (row_ids(left_idx), row_ids(right_idx));
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for c in 0..left.schema().fields().len() {
            cols.push(left.gather(c, &li)?);
        }
        for &(out, r) in &self.coalesce {
            let ty = self.schema.field(out).data_type();
            // `ty` holds both sides' values (`output_schema`): a failing cast is a bug to report,
            // never a value silently turned null.
            let exact = arrow_cast::CastOptions { safe: false, ..Default::default() };
            let from_left = arrow_cast::cast_with_options(&cols[out], ty, &exact)?;
            let from_right = arrow_cast::cast_with_options(&right.gather(r, &ri)?, ty, &exact)?;
            if let Some(has_left) = &has_left {
                cols[out] = zip(has_left, &from_left, &from_right)?;
            }
        }
        for &i in &self.right_keep {
            cols.push(right.gather(i, &ri)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), cols)?)
    }
}

impl Operator for Join {
    fn on_batch(&mut self, port: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        if port > 1 {
            return Err(OperatorError::Invalid(format!(
                "`{}`: a join has two inputs, got port {port}",
                self.p.name
            )));
        }
        if let Some(s) = &mut self.streamed {
            if port != s.probe_port() {
                return Err(OperatorError::Invalid(format!(
                    "`{}`: a batch of the build side after it ended",
                    self.p.name
                )));
            }
            s.push(batch)?;
            out.more();
            return Ok(());
        }
        self.hold(port, batch)?;
        self.try_stream(out)?;
        Ok(())
    }

    fn on_end(&mut self, port: usize, out: &mut Output) -> Result<Flow, OperatorError> {
        if let Some(e) = self.ended.get_mut(port) {
            *e = true;
        }
        if let Some(s) = &mut self.streamed {
            s.probe_ended |= port == s.probe_port();
            return Ok(Flow::More);
        }
        if self.try_stream(out)? {
            return Ok(Flow::More);
        }
        if !(self.ended[0] && self.ended[1]) {
            return Ok(Flow::Idle);
        }
        if let Some(g) = &mut self.grace {
            g.finish()?;
            return self.next_partition(out);
        }
        self.state = self.prepare()?;
        match &self.state {
            Some(p) if !p.matcher.done() => Ok(Flow::More),
            Some(p) => {
                out.emit(RecordBatch::new_empty(Arc::clone(&p.assembly.schema)));
                self.mem.free();
                Ok(Flow::Idle)
            }
            None => Ok(Flow::Idle),
        }
    }

    fn resume(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        if let Some(s) = &mut self.streamed {
            if let Some(batch) = s.next(self.p.batch_rows.max(1))? {
                out.emit(batch);
                self.emitted = true;
                return Ok(Flow::More);
            }
            if s.done() {
                if !self.emitted {
                    out.emit(RecordBatch::new_empty(s.schema()));
                    self.emitted = true;
                }
                self.streamed = None;
                self.mem.free();
            }
            return Ok(Flow::Idle);
        }
        let Some(p) = &mut self.state else { return Ok(Flow::Idle) };
        let first = !p.started;
        p.started = true;
        let (l, r) = p.matcher.pairs(self.p.batch_rows.max(1));
        let done = p.matcher.done();
        // At most `batch_rows` rows per call; an empty batch only when nothing matched at all,
        // so that consumers still learn the schema.
        if !l.is_empty() || (first && done) {
            out.emit(p.assembly.batch((&p.left, &p.right), l, r)?);
            self.emitted = true;
        }
        if !done {
            return Ok(Flow::More);
        }
        self.state = None;
        self.mem.free();
        self.next_partition(out)
    }
}

mod grace;
mod stream;
#[cfg(test)]
mod tests;
