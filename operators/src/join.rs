//! Local inner hash join on one or more key columns. Rows with a null in any key column never
//! match.
//!
//! ```text
//!  Collecting ──both inputs ended──▶ build a table on the smaller side ──▶ Probing ──▶ Done
//!    (batches of each side kept)         (key → chain of row ids)        (≈ one output batch
//!                                                                          per resume call)
//! ```
//!
//! Output columns: every left column, then every right column except right keys that share
//! their name with the matching left key (their values are equal). Other names that clash get
//! the configured suffixes. The table and its key handling are in [`crate::hash_table`].

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{Field, Schema, SchemaRef};
use arrow_select::concat::concat_batches;
use arrow_select::take::take;
use updraft_runtime::{Flow, Operator, OperatorError, Output};

use crate::hash_table::{ChainTable, END, JoinKeys, join_keys};
use crate::partition::column_indices;

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
    /// Rows per output batch.
    pub batch_rows: usize,
}

/// The join operator. Port 0 is the left input, port 1 the right.
pub struct HashJoin {
    p: JoinParams,
    sides: [Vec<RecordBatch>; 2],
    ended: [bool; 2],
    probe: Option<Probe>,
}

struct Probe {
    left: RecordBatch,
    right: RecordBatch,
    right_keep: Vec<usize>,
    schema: SchemaRef,
    build_is_left: bool,
    table: ChainTable,
    probe_keys: JoinKeys,
    /// Next probe row to start.
    cursor: usize,
    /// Next match of probe row `cursor - 1`, or END.
    chain: u32,
    probe_len: usize,
}

impl HashJoin {
    /// A join with these parameters.
    pub fn new(p: JoinParams) -> HashJoin {
        HashJoin { p, sides: [Vec::new(), Vec::new()], ended: [false, false], probe: None }
    }

    fn side_name(port: usize) -> &'static str {
        if port == 0 { "left" } else { "right" }
    }

    /// All batches of one side as one batch. Batches from different ranks must have the same
    /// column names and types; nullability is widened and metadata dropped.
    fn concat(&self, port: usize) -> Result<RecordBatch, OperatorError> {
        let batches = &self.sides[port];
        let first = batches[0].schema();
        let mut nullable: Vec<bool> = first.fields().iter().map(|f| f.is_nullable()).collect();
        for b in &batches[1..] {
            let schema = b.schema();
            let same = schema.fields().len() == first.fields().len()
                && schema
                    .fields()
                    .iter()
                    .zip(first.fields())
                    .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
            if !same {
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
        let schema = Arc::new(Schema::new(fields));
        let batches = batches
            .iter()
            .map(|b| RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(concat_batches(&schema, &batches)?)
    }

    fn prepare(&mut self) -> Result<Option<Probe>, OperatorError> {
        if self.sides[0].is_empty() || self.sides[1].is_empty() {
            return Ok(None); // a side never saw a schema: nothing can match
        }
        let left = self.concat(0)?;
        let right = self.concat(1)?;
        self.sides = [Vec::new(), Vec::new()];
        let lk = column_indices(&left.schema(), &self.p.left_on, &format!("`{}`: left key", self.p.name))?;
        let rk = column_indices(&right.schema(), &self.p.right_on, &format!("`{}`: right key", self.p.name))?;
        let (schema, right_keep) = output_schema(&left.schema(), &right.schema(), &lk, &rk, &self.p.suffixes);
        let build_is_left = left.num_rows() < right.num_rows();
        let (build, probe, bk, pk) =
            if build_is_left { (&left, &right, &lk, &rk) } else { (&right, &left, &rk, &lk) };
        let bcols: Vec<ArrayRef> = bk.iter().map(|&i| build.column(i).clone()).collect();
        let pcols: Vec<ArrayRef> = pk.iter().map(|&i| probe.column(i).clone()).collect();
        // Keys are checked in left/right order so that messages say "left" and "right".
        let (build_keys, probe_keys) = if build_is_left {
            join_keys(&bcols, &pcols, &self.p.name)?
        } else {
            let (l, r) = join_keys(&pcols, &bcols, &self.p.name)?;
            (r, l)
        };
        let table = ChainTable::build(build_keys)?;
        let probe_len = probe.num_rows();
        Ok(Some(Probe {
            left,
            right,
            right_keep,
            schema,
            build_is_left,
            table,
            probe_keys,
            cursor: 0,
            chain: END,
            probe_len,
        }))
    }
}

fn describe(schema: &Schema) -> String {
    schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
}

/// Output schema and the right columns kept.
fn output_schema(
    left: &Schema,
    right: &Schema,
    lk: &[usize],
    rk: &[usize],
    suffixes: &(String, String),
) -> (SchemaRef, Vec<usize>) {
    let dropped: HashSet<usize> = lk
        .iter()
        .zip(rk)
        .filter(|(l, r)| left.field(**l).name() == right.field(**r).name())
        .map(|(_, r)| *r)
        .collect();
    let right_keep: Vec<usize> = (0..right.fields().len()).filter(|i| !dropped.contains(i)).collect();
    let left_names: HashSet<&str> = left.fields().iter().map(|f| f.name().as_str()).collect();
    let right_names: HashSet<&str> = right_keep.iter().map(|i| right.field(*i).name().as_str()).collect();
    let mut fields: Vec<Field> = left
        .fields()
        .iter()
        .map(|f| {
            let name = if right_names.contains(f.name().as_str()) {
                format!("{}{}", f.name(), suffixes.0)
            } else {
                f.name().clone()
            };
            f.as_ref().clone().with_name(name)
        })
        .collect();
    for i in &right_keep {
        let f = right.field(*i);
        let name = if left_names.contains(f.name().as_str()) {
            format!("{}{}", f.name(), suffixes.1)
        } else {
            f.name().clone()
        };
        fields.push(f.clone().with_name(name));
    }
    (Arc::new(Schema::new(fields)), right_keep)
}

impl Probe {
    /// True when every probe row has been matched.
    fn done(&self) -> bool {
        self.cursor >= self.probe_len && self.chain == END
    }

    /// Collects up to `limit` matching (left row, right row) pairs.
    fn pairs(&mut self, limit: usize) -> (Vec<u32>, Vec<u32>) {
        let mut probe_idx = Vec::with_capacity(limit);
        let mut build_idx = Vec::with_capacity(limit);
        while probe_idx.len() < limit {
            if self.chain == END {
                if self.cursor >= self.probe_len {
                    break;
                }
                self.chain = self.table.first(&self.probe_keys, self.cursor);
                self.cursor += 1;
                continue;
            }
            let j = self.cursor - 1;
            probe_idx.push(j as u32);
            build_idx.push(self.chain);
            self.chain = self.table.next_match(self.chain, &self.probe_keys, j);
        }
        if self.build_is_left { (build_idx, probe_idx) } else { (probe_idx, build_idx) }
    }

    fn batch(&self, left_idx: Vec<u32>, right_idx: Vec<u32>) -> Result<RecordBatch, OperatorError> {
        let li = UInt32Array::from(left_idx);
        let ri = UInt32Array::from(right_idx);
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for c in self.left.columns() {
            cols.push(take(c.as_ref(), &li, None)?);
        }
        for &i in &self.right_keep {
            cols.push(take(self.right.column(i).as_ref(), &ri, None)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), cols)?)
    }
}

impl Operator for HashJoin {
    fn on_batch(&mut self, port: usize, batch: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        match self.sides.get_mut(port) {
            Some(side) => {
                side.push(batch);
                Ok(())
            }
            None => Err(OperatorError::Invalid(format!(
                "`{}`: a join has two inputs, got port {port}",
                self.p.name
            ))),
        }
    }

    fn on_end(&mut self, port: usize, out: &mut Output) -> Result<Flow, OperatorError> {
        if let Some(e) = self.ended.get_mut(port) {
            *e = true;
        }
        if !(self.ended[0] && self.ended[1]) {
            return Ok(Flow::Idle);
        }
        self.probe = self.prepare()?;
        match &self.probe {
            Some(p) if p.probe_len > 0 => Ok(Flow::More),
            Some(p) => {
                out.emit(RecordBatch::new_empty(Arc::clone(&p.schema)));
                Ok(Flow::Idle)
            }
            None => Ok(Flow::Idle),
        }
    }

    fn resume(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        let Some(p) = &mut self.probe else { return Ok(Flow::Idle) };
        let first = p.cursor == 0;
        let (l, r) = p.pairs(self.p.batch_rows.max(1));
        let done = p.done();
        // At most `batch_rows` rows per call; an empty batch only when nothing matched at all,
        // so that consumers still learn the schema.
        if !l.is_empty() || (first && done) {
            out.emit(p.batch(l, r)?);
        }
        if done {
            self.probe = None;
            Ok(Flow::Idle)
        } else {
            Ok(Flow::More)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Int32Array, Int64Array, StringArray};

    fn params(on: &[&str], batch_rows: usize) -> JoinParams {
        JoinParams {
            name: "j".into(),
            left_on: on.iter().map(|s| s.to_string()).collect(),
            right_on: on.iter().map(|s| s.to_string()).collect(),
            suffixes: ("_left".into(), "_right".into()),
            batch_rows,
        }
    }

    fn run(j: &mut HashJoin, left: Vec<RecordBatch>, right: Vec<RecordBatch>) -> Vec<RecordBatch> {
        let mut out = Output::default();
        for b in left {
            j.on_batch(0, b, &mut out).expect("left");
        }
        for b in right {
            j.on_batch(1, b, &mut out).expect("right");
        }
        j.on_end(0, &mut out).expect("end left");
        let mut flow = j.on_end(1, &mut out).expect("end right");
        while flow == Flow::More {
            flow = j.resume(&mut out).expect("resume");
        }
        out.drain().map(|(_, b)| b).collect()
    }

    fn pairs(batches: &[RecordBatch]) -> Vec<(i64, i64, i64)> {
        let mut v: Vec<(i64, i64, i64)> = batches
            .iter()
            .flat_map(|b| {
                let k = b.column(0).as_primitive::<Int64Type>().clone();
                let l = b.column(1).as_primitive::<Int64Type>().clone();
                let r = b.column(2).as_primitive::<Int64Type>().clone();
                (0..b.num_rows()).map(move |i| (k.value(i), l.value(i), r.value(i)))
            })
            .collect();
        v.sort();
        v
    }

    fn kv(k: Vec<Option<i64>>, v: Vec<i64>) -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("key", Arc::new(Int64Array::from(k)) as ArrayRef),
            ("payload", Arc::new(Int64Array::from(v)) as ArrayRef),
        ])
        .expect("batch")
    }

    #[test]
    fn duplicates_nulls_and_chunked_output() {
        let left = kv(vec![Some(1), Some(1), None, Some(2), Some(3)], vec![10, 11, 12, 13, 14]);
        let right = kv(vec![Some(1), None, Some(1), Some(3), Some(4)], vec![20, 21, 22, 23, 24]);
        let out = run(&mut HashJoin::new(params(&["key"], 2)), vec![left], vec![right]);
        assert!(out.iter().all(|b| b.num_rows() <= 2));
        let names: Vec<String> = out[0].schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, vec!["key", "payload_left", "payload_right"]);
        assert_eq!(pairs(&out), vec![(1, 10, 20), (1, 10, 22), (1, 11, 20), (1, 11, 22), (3, 14, 23)]);
    }

    #[test]
    fn a_hot_key_is_emitted_in_bounded_batches() {
        let left = kv(vec![Some(5); 300], (0..300).collect());
        let right = kv(vec![Some(5); 200], (0..200).collect());
        let out = run(&mut HashJoin::new(params(&["key"], 7)), vec![left], vec![right]);
        assert!(out.iter().all(|b| b.num_rows() <= 7), "no batch above batch_rows");
        assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 60_000);
    }

    #[test]
    fn string_and_multi_column_keys() {
        let b = |k: Vec<Option<&str>>, n: Vec<i32>, v: Vec<i64>| {
            RecordBatch::try_from_iter(vec![
                ("s", Arc::new(StringArray::from(k)) as ArrayRef),
                ("n", Arc::new(Int32Array::from(n)) as ArrayRef),
                ("v", Arc::new(Int64Array::from(v)) as ArrayRef),
            ])
            .expect("batch")
        };
        let left = b(vec![Some("a"), Some("a"), Some("b"), None], vec![1, 2, 1, 1], vec![1, 2, 3, 4]);
        let right = b(vec![Some("a"), Some("b"), Some("b"), None], vec![2, 1, 1, 1], vec![5, 6, 7, 8]);
        let out = run(&mut HashJoin::new(params(&["s", "n"], 100)), vec![left], vec![right]);
        let rows: usize = out.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 3, "(a,2) once, (b,1) twice; the null key matches nothing");
        assert_eq!(out[0].schema().fields().len(), 4, "s, n, v_left, v_right");
    }

    #[test]
    fn an_empty_side_gives_an_empty_batch_with_the_schema() {
        let left = kv(vec![Some(1)], vec![1]);
        let right = kv(vec![], vec![]);
        let out = run(&mut HashJoin::new(params(&["key"], 10)), vec![left], vec![right]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].num_rows(), 0);
        assert_eq!(out[0].schema().fields().len(), 3);
    }

    #[test]
    fn mismatched_key_types_are_reported() {
        let left =
            RecordBatch::try_from_iter(vec![("k", Arc::new(StringArray::from(vec!["1"])) as ArrayRef)])
                .expect("batch");
        let right = RecordBatch::try_from_iter(vec![("k", Arc::new(Int64Array::from(vec![1])) as ArrayRef)])
            .expect("batch");
        let mut j = HashJoin::new(params(&["k"], 10));
        let mut out = Output::default();
        j.on_batch(0, left, &mut out).expect("left");
        j.on_batch(1, right, &mut out).expect("right");
        j.on_end(0, &mut out).expect("end");
        let e = j.on_end(1, &mut out).expect_err("types differ").to_string();
        assert!(e.contains("Utf8 on the left but Int64 on the right"), "{e}");
    }
}
