//! Set operations and distinct. Except `union all`, each runs after a shuffle on the compared
//! columns (whole rows, or the `distinct` columns), so equal rows meet on one rank and the local
//! result is the global one. Rows compare in Arrow's row format after [`crate::keys`] made
//! floats canonical (-0.0 = 0.0, NaN = NaN): nulls equal each other, as in SQL's set operations.
//!
//! - `union` (all): every row of every input, as it arrives; `union` distinct: each distinct row
//!   once, streamed.
//! - `distinct` on columns: the first row seen of each distinct combination of those columns.
//! - `intersect`: the distinct rows of the first input that occur in the second.
//! - `subtract`: the distinct rows of the first input that do not occur in the second.

use std::collections::HashSet;

use arrow_array::{ArrayRef, RecordBatch, UInt32Array};
use arrow_row::{RowConverter, SortField};
use arrow_schema::SchemaRef;
use arrow_select::take::take_record_batch;
use std::sync::Arc;

use updraft_runtime::{Flow, MemoryPool, Operator, OperatorError, Output, Reservation};

use crate::keys::{key_column, key_type};
use crate::partition::{column_indices, describe_columns as describe, same_columns};

/// What a [`SetOp`] computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetKind {
    /// All rows of all inputs.
    UnionAll,
    /// Distinct rows of all inputs.
    UnionDistinct,
    /// First row per distinct combination of `columns` (all columns when empty).
    Distinct {
        /// Compared columns.
        columns: Vec<String>,
    },
    /// Distinct rows of input 0 present in input 1.
    Intersect,
    /// Distinct rows of input 0 absent from input 1.
    Subtract,
}

/// A set operation stage.
pub struct SetOp {
    name: String,
    kind: SetKind,
    schema: Option<SchemaRef>,
    conv: Option<(RowConverter, Vec<usize>)>,
    seen: HashSet<Vec<u8>>,
    /// Intersect / subtract: buffered first input, and the rows of the second.
    first: Vec<RecordBatch>,
    second: HashSet<Vec<u8>>,
    ended: usize,
    inputs: usize,
    mem: Reservation,
}

/// Bytes a kept row key costs: its bytes, the vector and the set's slot.
fn key_cost(k: &[u8]) -> u64 {
    k.len() as u64 + 40
}

impl SetOp {
    /// A set operation named `name` over `inputs` inputs.
    pub fn new(name: &str, kind: SetKind, inputs: usize) -> SetOp {
        SetOp {
            name: name.to_string(),
            kind,
            schema: None,
            conv: None,
            seen: HashSet::new(),
            first: Vec::new(),
            second: HashSet::new(),
            ended: 0,
            inputs,
            mem: MemoryPool::unbounded().reserve(name),
        }
    }

    /// The same operation holding its rows against `pool`. Set operations do not spill: more
    /// than the budget is a resources-exhausted error.
    pub fn with_memory(mut self, pool: &Arc<MemoryPool>) -> SetOp {
        self.mem = pool.reserve(&self.name);
        self
    }

    fn hold(&mut self, bytes: u64) -> Result<(), OperatorError> {
        self.mem.try_grow(bytes).map_err(|_| {
            self.mem
                .exhausted_error(
                    bytes,
                    "set operations and distinct keep their rows in memory; raise runtime.memory_limit",
                )
                .into()
        })
    }

    /// Checks that every input has the same columns (names and types) as the first one seen.
    fn check_schema(&mut self, port: usize, schema: &SchemaRef) -> Result<(), OperatorError> {
        match &self.schema {
            None => {
                self.schema = Some(schema.clone());
                Ok(())
            }
            Some(first) => {
                if same_columns(first, schema) {
                    Ok(())
                } else {
                    Err(OperatorError::Invalid(format!(
                        "`{}`: input {} has columns ({}) but another input has ({})",
                        self.name,
                        port + 1,
                        describe(schema),
                        describe(first)
                    )))
                }
            }
        }
    }

    /// Row-format keys of the compared columns.
    fn keys(&mut self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>, OperatorError> {
        if self.conv.is_none() {
            let schema = batch.schema();
            let idx = match &self.kind {
                SetKind::Distinct { columns } if !columns.is_empty() => {
                    column_indices(&schema, columns, &format!("`{}`: distinct", self.name))?
                }
                _ => (0..schema.fields().len()).collect(),
            };
            let fields = idx.iter().map(|&i| SortField::new(key_type(schema.field(i).data_type()))).collect();
            self.conv = Some((RowConverter::new(fields)?, idx));
        }
        let Some((conv, idx)) = &self.conv else { return Ok(Vec::new()) };
        let cols: Vec<ArrayRef> =
            idx.iter().map(|&i| key_column(batch.column(i))).collect::<Result<_, _>>()?;
        let rows = conv.convert_columns(&cols)?;
        Ok(rows.iter().map(|r| r.as_ref().to_vec()).collect())
    }

    /// Rows of `batch` whose keys pass `keep` (which may record them).
    fn filter(
        batch: &RecordBatch,
        keys: Vec<Vec<u8>>,
        mut keep: impl FnMut(Vec<u8>) -> bool,
    ) -> Result<RecordBatch, OperatorError> {
        let idx: Vec<u32> =
            keys.into_iter().enumerate().filter_map(|(i, k)| keep(k).then_some(i as u32)).collect();
        if idx.len() == batch.num_rows() {
            return Ok(batch.clone());
        }
        Ok(take_record_batch(batch, &UInt32Array::from(idx))?)
    }
}

impl Operator for SetOp {
    fn on_batch(&mut self, port: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        self.check_schema(port, &batch.schema())?;
        match self.kind.clone() {
            SetKind::UnionAll => out.emit(batch),
            SetKind::UnionDistinct | SetKind::Distinct { .. } => {
                let keys = self.keys(&batch)?;
                let seen = &mut self.seen;
                let mut added = 0;
                let kept = Self::filter(&batch, keys, |k| {
                    let cost = key_cost(&k);
                    let new = seen.insert(k);
                    if new {
                        added += cost;
                    }
                    new
                })?;
                self.hold(added)?;
                out.emit(kept);
            }
            SetKind::Intersect | SetKind::Subtract => {
                if port == 0 {
                    self.hold(2 * crate::spill::held_bytes(&batch))?;
                    self.first.push(batch);
                } else {
                    let keys = self.keys(&batch)?;
                    self.hold(keys.iter().map(|k| key_cost(k)).sum())?;
                    self.second.extend(keys);
                }
            }
        }
        Ok(())
    }

    fn on_end(&mut self, _port: usize, out: &mut Output) -> Result<Flow, OperatorError> {
        self.ended += 1;
        if self.ended < self.inputs || !matches!(self.kind, SetKind::Intersect | SetKind::Subtract) {
            return Ok(Flow::Idle);
        }
        // Batch by batch, in arrival order (never one concatenation: no offset limit on the
        // input's strings); the first batch goes out even when empty, for the schema.
        let want = self.kind == SetKind::Intersect;
        for (i, b) in std::mem::take(&mut self.first).into_iter().enumerate() {
            let keys = self.keys(&b)?;
            let (second, seen) = (&self.second, &mut self.seen);
            let kept = Self::filter(&b, keys, |k| second.contains(&k) == want && seen.insert(k))?;
            if i == 0 || kept.num_rows() > 0 {
                out.emit(kept);
            }
        }
        Ok(Flow::Idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Array, Int64Array};
    use std::sync::Arc;

    fn b(v: &[Option<i64>]) -> RecordBatch {
        RecordBatch::try_from_iter(vec![("x", Arc::new(Int64Array::from(v.to_vec())) as ArrayRef)])
            .expect("batch")
    }

    fn run(kind: SetKind, a: &[Option<i64>], c: &[Option<i64>]) -> Vec<Option<i64>> {
        let mut op = SetOp::new("s", kind, 2);
        let mut out = Output::default();
        op.on_batch(0, b(a), &mut out).expect("a");
        op.on_batch(1, b(c), &mut out).expect("b");
        op.on_end(0, &mut out).expect("end");
        op.on_end(1, &mut out).expect("end");
        let mut v: Vec<Option<i64>> = out
            .drain()
            .flat_map(|(_, b)| {
                let c = b.column(0).as_primitive::<Int64Type>().clone();
                (0..c.len()).map(move |i| (!c.is_null(i)).then(|| c.value(i)))
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn set_operations_follow_sql() {
        let a = [Some(1), Some(1), Some(2), None, None, Some(3)];
        let c = [Some(2), Some(2), None, Some(4)];
        assert_eq!(run(SetKind::UnionAll, &a, &c).len(), 10);
        assert_eq!(run(SetKind::UnionDistinct, &a, &c), vec![None, Some(1), Some(2), Some(3), Some(4)]);
        assert_eq!(run(SetKind::Intersect, &a, &c), vec![None, Some(2)]);
        assert_eq!(run(SetKind::Subtract, &a, &c), vec![Some(1), Some(3)]);
    }

    #[test]
    fn inputs_with_other_columns_are_refused() {
        let mut op = SetOp::new("u", SetKind::UnionAll, 2);
        let mut out = Output::default();
        op.on_batch(0, b(&[Some(1)]), &mut out).expect("a");
        let other = RecordBatch::try_from_iter(vec![("y", Arc::new(Int64Array::from(vec![1])) as ArrayRef)])
            .expect("b");
        let e = op.on_batch(1, other, &mut out).expect_err("refused").to_string();
        assert!(e.contains("input 2 has columns (y: Int64)"), "{e}");
    }
}
