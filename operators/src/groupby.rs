//! Group-by aggregation: count, sum, min, max, mean, var, std, nunique, first, last.
//!
//! ```text
//!  input ─▶ [partial: per-rank states] ─▶ shuffle on the keys ─▶ final: merge states ─▶ output
//!  (without pre-aggregation: input ─▶ shuffle ─▶ complete: aggregate raw rows ─▶ output)
//! ```
//!
//! Pre-aggregation is used when every aggregate can be split into partial states that merge
//! exactly: count and sum (sum and count of values), min and max, mean/var/std (count, mean and
//! sum of squared deviations, merged with Chan's formula). `nunique`, `first` and `last` need
//! every raw row of a group on one rank, so a pipeline using them shuffles raw rows.
//!
//! Semantics follow SQL: null keys form their own group; aggregates skip null values; sum, min,
//! max, mean of a group without values are null, `var` and `std` (sample, n - 1) need two values;
//! count counts values (or rows for `count()`). `first` and `last` are the first and last value
//! seen on the owning rank, which after a shuffle depends on arrival order.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use hashbrown::HashTable;
use updraft_config::AggFn;
use updraft_runtime::{Flow, Operator, OperatorError, Output};

use crate::chunked::Chunked;
use crate::keys::{canonical_column, canonical_f64};
use crate::partition::column_indices;

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
}

/// Group-by parameters.
#[derive(Debug, Clone)]
pub struct GroupParams {
    /// Stage name, for messages.
    pub name: String,
    /// Key columns.
    pub keys: Vec<String>,
    /// Aggregates.
    pub aggs: Vec<Agg>,
    /// Rows per output batch.
    pub batch_rows: usize,
}

/// True when every aggregate can be pre-aggregated.
pub fn decomposable(aggs: &[Agg]) -> bool {
    aggs.iter().all(|a| !matches!(a.func, AggFn::NUnique | AggFn::First | AggFn::Last))
}

#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    I(i64),
    F(f64),
    S(String),
}

enum Acc {
    Count(Vec<i64>),
    SumI { s: Vec<i64>, n: Vec<i64> },
    SumF { s: Vec<f64>, n: Vec<i64> },
    Extreme { max: bool, ty: DataType, v: Vec<Option<Scalar>> },
    Moments { n: Vec<f64>, mean: Vec<f64>, m2: Vec<f64> },
    Distinct(Vec<HashSet<Vec<u8>>>),
    Pick { last: bool, ty: DataType, v: Vec<Option<Scalar>> },
}

fn invalid(msg: String) -> OperatorError {
    OperatorError::Invalid(msg)
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Date32 | DataType::Date64)
}

fn scalars(col: &ArrayRef) -> Result<(DataType, Vec<Option<Scalar>>), OperatorError> {
    let t = col.data_type();
    if is_integer(t) {
        let c = arrow_cast::cast(col, &DataType::Int64)?;
        Ok((DataType::Int64, c.as_primitive::<Int64Type>().iter().map(|v| v.map(Scalar::I)).collect()))
    } else if is_float(t) {
        let c = arrow_cast::cast(col, &DataType::Float64)?;
        Ok((DataType::Float64, c.as_primitive::<Float64Type>().iter().map(|v| v.map(Scalar::F)).collect()))
    } else if matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        let c = arrow_cast::cast(col, &DataType::Utf8)?;
        Ok((
            DataType::Utf8,
            c.as_string::<i32>().iter().map(|v| v.map(|s| Scalar::S(s.to_string()))).collect(),
        ))
    } else {
        Err(invalid(format!("values of type {t} cannot be aggregated this way")))
    }
}

fn floats(col: &ArrayRef) -> Result<Vec<Option<f64>>, OperatorError> {
    if !(is_integer(col.data_type()) || is_float(col.data_type())) {
        return Err(invalid(format!("needs a numeric column, found {}", col.data_type())));
    }
    let c = arrow_cast::cast(col, &DataType::Float64)?;
    Ok(c.as_primitive::<Float64Type>().iter().collect())
}

fn better(a: &Scalar, b: &Scalar, max: bool) -> bool {
    let ord = match (a, b) {
        (Scalar::I(x), Scalar::I(y)) => x.cmp(y),
        // The key order of `crate::keys`: -0.0 = 0.0, every NaN above every number.
        (Scalar::F(x), Scalar::F(y)) => canonical_f64(*x).total_cmp(&canonical_f64(*y)),
        (Scalar::S(x), Scalar::S(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    };
    if max { ord.is_gt() } else { ord.is_lt() }
}

fn scalar_array(ty: &DataType, v: &[Option<Scalar>]) -> ArrayRef {
    match ty {
        DataType::Int64 => Arc::new(Int64Array::from(
            v.iter()
                .map(|s| match s {
                    Some(Scalar::I(x)) => Some(*x),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
        DataType::Float64 => Arc::new(Float64Array::from(
            v.iter()
                .map(|s| match s {
                    Some(Scalar::F(x)) => Some(*x),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
        _ => Arc::new(StringArray::from(
            v.iter()
                .map(|s| match s {
                    Some(Scalar::S(x)) => Some(x.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
    }
}

impl Acc {
    /// A fresh accumulator for raw input of type `ty` (None: `count()`).
    fn for_input(func: AggFn, ty: Option<&DataType>) -> Acc {
        match func {
            AggFn::Count => Acc::Count(Vec::new()),
            AggFn::Sum if ty.is_some_and(is_integer) => Acc::SumI { s: Vec::new(), n: Vec::new() },
            AggFn::Sum => Acc::SumF { s: Vec::new(), n: Vec::new() },
            AggFn::Min | AggFn::Max => {
                Acc::Extreme { max: func == AggFn::Max, ty: DataType::Null, v: Vec::new() }
            }
            AggFn::Mean | AggFn::Var | AggFn::Std => {
                Acc::Moments { n: Vec::new(), mean: Vec::new(), m2: Vec::new() }
            }
            AggFn::NUnique => Acc::Distinct(Vec::new()),
            AggFn::First | AggFn::Last => {
                Acc::Pick { last: func == AggFn::Last, ty: DataType::Null, v: Vec::new() }
            }
        }
    }

    fn grow(&mut self, groups: usize) {
        match self {
            Acc::Count(n) => n.resize(groups, 0),
            Acc::SumI { s, n } => {
                s.resize(groups, 0);
                n.resize(groups, 0);
            }
            Acc::SumF { s, n } => {
                s.resize(groups, 0.0);
                n.resize(groups, 0);
            }
            Acc::Extreme { v, .. } | Acc::Pick { v, .. } => v.resize(groups, None),
            Acc::Moments { n, mean, m2 } => {
                n.resize(groups, 0.0);
                mean.resize(groups, 0.0);
                m2.resize(groups, 0.0);
            }
            Acc::Distinct(sets) => sets.resize_with(groups, HashSet::new),
        }
    }

    /// Adds raw values (`col` None: count rows).
    fn update(&mut self, gids: &[u32], col: Option<&ArrayRef>) -> Result<(), OperatorError> {
        match self {
            Acc::Count(n) => {
                for (i, g) in gids.iter().enumerate() {
                    if col.is_none_or(|c| c.is_valid(i)) {
                        n[*g as usize] += 1;
                    }
                }
            }
            Acc::SumI { s, n } => {
                let Some(c) = col else { return Err(invalid("sum needs a column".into())) };
                let c = arrow_cast::cast(c, &DataType::Int64)?;
                for (v, g) in c.as_primitive::<Int64Type>().iter().zip(gids) {
                    if let Some(v) = v {
                        let g = *g as usize;
                        s[g] = s[g]
                            .checked_add(v)
                            .ok_or_else(|| invalid("integer sum overflows int64".into()))?;
                        n[g] += 1;
                    }
                }
            }
            Acc::SumF { s, n } => {
                let Some(c) = col else { return Err(invalid("sum needs a column".into())) };
                for (v, g) in floats(c)?.into_iter().zip(gids) {
                    if let Some(v) = v {
                        s[*g as usize] += v;
                        n[*g as usize] += 1;
                    }
                }
            }
            Acc::Extreme { max, ty, v } => {
                let Some(c) = col else { return Err(invalid("min and max need a column".into())) };
                let (t, vals) = scalars(c)?;
                if *ty == DataType::Null || !vals.is_empty() {
                    *ty = t;
                }
                for (x, g) in vals.into_iter().zip(gids) {
                    let Some(x) = x else { continue };
                    let slot = &mut v[*g as usize];
                    if slot.as_ref().is_none_or(|cur| better(&x, cur, *max)) {
                        *slot = Some(x);
                    }
                }
            }
            Acc::Pick { last, ty, v } => {
                let Some(c) = col else { return Err(invalid("first and last need a column".into())) };
                let (t, vals) = scalars(c)?;
                if *ty == DataType::Null || !vals.is_empty() {
                    *ty = t;
                }
                for (x, g) in vals.into_iter().zip(gids) {
                    let Some(x) = x else { continue };
                    let slot = &mut v[*g as usize];
                    if *last || slot.is_none() {
                        *slot = Some(x);
                    }
                }
            }
            Acc::Moments { n, mean, m2 } => {
                let Some(c) = col else { return Err(invalid("needs a column".into())) };
                for (x, g) in floats(c)?.into_iter().zip(gids) {
                    let Some(x) = x else { continue };
                    let g = *g as usize;
                    n[g] += 1.0;
                    let d = x - mean[g];
                    mean[g] += d / n[g];
                    m2[g] += d * (x - mean[g]);
                }
            }
            Acc::Distinct(sets) => {
                let Some(c) = col else { return Err(invalid("nunique needs a column".into())) };
                let conv = RowConverter::new(vec![SortField::new(c.data_type().clone())])?;
                let rows = conv.convert_columns(&[canonical_column(c)])?;
                for (i, g) in gids.iter().enumerate() {
                    if c.is_valid(i) {
                        sets[*g as usize].insert(rows.row(i).as_ref().to_vec());
                    }
                }
            }
        }
        Ok(())
    }
}

impl Acc {
    /// A fresh accumulator for partial states whose first column has type `ty`.
    fn for_states(func: AggFn, ty: &DataType) -> Acc {
        match func {
            AggFn::Sum if ty == &DataType::Int64 => Acc::SumI { s: Vec::new(), n: Vec::new() },
            other => Acc::for_input(other, Some(ty)),
        }
    }

    /// Number of partial-state columns.
    fn state_width(func: AggFn) -> usize {
        match func {
            AggFn::Sum => 2,
            AggFn::Mean | AggFn::Var | AggFn::Std => 3,
            _ => 1,
        }
    }

    /// Merges partial states (`cols`, as made by [`Acc::states`]).
    fn merge(&mut self, gids: &[u32], cols: &[ArrayRef]) -> Result<(), OperatorError> {
        let ints = |c: &ArrayRef| -> Result<Vec<Option<i64>>, OperatorError> {
            Ok(arrow_cast::cast(c, &DataType::Int64)?.as_primitive::<Int64Type>().iter().collect())
        };
        match self {
            Acc::Count(n) => {
                for (v, g) in ints(&cols[0])?.into_iter().zip(gids) {
                    n[*g as usize] += v.unwrap_or(0);
                }
            }
            Acc::SumI { s, n } => {
                for ((v, k), g) in ints(&cols[0])?.into_iter().zip(ints(&cols[1])?).zip(gids) {
                    let g = *g as usize;
                    s[g] = s[g]
                        .checked_add(v.unwrap_or(0))
                        .ok_or_else(|| invalid("integer sum overflows int64".into()))?;
                    n[g] += k.unwrap_or(0);
                }
            }
            Acc::SumF { s, n } => {
                for ((v, k), g) in floats(&cols[0])?.into_iter().zip(ints(&cols[1])?).zip(gids) {
                    s[*g as usize] += v.unwrap_or(0.0);
                    n[*g as usize] += k.unwrap_or(0);
                }
            }
            Acc::Extreme { .. } => self.update(gids, Some(&cols[0]))?,
            Acc::Moments { n, mean, m2 } => {
                let (nb, mb, qb) = (floats(&cols[0])?, floats(&cols[1])?, floats(&cols[2])?);
                for (i, g) in gids.iter().enumerate() {
                    let g = *g as usize;
                    let (nb, mb, qb) = (nb[i].unwrap_or(0.0), mb[i].unwrap_or(0.0), qb[i].unwrap_or(0.0));
                    if nb == 0.0 {
                        continue;
                    }
                    let na = n[g];
                    let total = na + nb;
                    let delta = mb - mean[g];
                    mean[g] += delta * nb / total;
                    m2[g] += qb + delta * delta * na * nb / total;
                    n[g] = total;
                }
            }
            Acc::Distinct(_) | Acc::Pick { .. } => {
                return Err(invalid("nunique, first and last cannot be merged from partial states".into()));
            }
        }
        Ok(())
    }

    /// Partial-state columns, named after `name`.
    fn states(&self, name: &str) -> Vec<(Field, ArrayRef)> {
        let f = |suffix: &str, t: DataType| Field::new(format!("{name}{suffix}"), t, true);
        match self {
            Acc::Count(n) => {
                vec![(f("", DataType::Int64), Arc::new(Int64Array::from(n.clone())) as ArrayRef)]
            }
            Acc::SumI { s, n } => vec![
                (f(".sum", DataType::Int64), Arc::new(Int64Array::from(s.clone()))),
                (f(".n", DataType::Int64), Arc::new(Int64Array::from(n.clone()))),
            ],
            Acc::SumF { s, n } => vec![
                (f(".sum", DataType::Float64), Arc::new(Float64Array::from(s.clone()))),
                (f(".n", DataType::Int64), Arc::new(Int64Array::from(n.clone()))),
            ],
            Acc::Extreme { ty, v, .. } | Acc::Pick { ty, v, .. } => {
                let ty = if ty == &DataType::Null { DataType::Int64 } else { ty.clone() };
                vec![(f("", ty.clone()), scalar_array(&ty, v))]
            }
            Acc::Moments { n, mean, m2 } => vec![
                (f(".n", DataType::Float64), Arc::new(Float64Array::from(n.clone()))),
                (f(".mean", DataType::Float64), Arc::new(Float64Array::from(mean.clone()))),
                (f(".m2", DataType::Float64), Arc::new(Float64Array::from(m2.clone()))),
            ],
            Acc::Distinct(sets) => {
                vec![(
                    f("", DataType::Int64),
                    Arc::new(Int64Array::from(sets.iter().map(|s| s.len() as i64).collect::<Vec<_>>())),
                )]
            }
        }
    }

    /// The final value column.
    fn finish(&self, func: AggFn, name: &str) -> (Field, ArrayRef) {
        let field = |t: DataType| Field::new(name, t, true);
        match self {
            Acc::Count(n) => (field(DataType::Int64), Arc::new(Int64Array::from(n.clone()))),
            Acc::SumI { s, n } => (
                field(DataType::Int64),
                Arc::new(Int64Array::from(
                    s.iter().zip(n).map(|(s, n)| (*n > 0).then_some(*s)).collect::<Vec<_>>(),
                )),
            ),
            Acc::SumF { s, n } => (
                field(DataType::Float64),
                Arc::new(Float64Array::from(
                    s.iter().zip(n).map(|(s, n)| (*n > 0).then_some(*s)).collect::<Vec<_>>(),
                )),
            ),
            Acc::Extreme { ty, v, .. } | Acc::Pick { ty, v, .. } => {
                let ty = if ty == &DataType::Null { DataType::Int64 } else { ty.clone() };
                (field(ty.clone()), scalar_array(&ty, v))
            }
            Acc::Moments { n, mean, m2 } => {
                let values: Vec<Option<f64>> = (0..n.len())
                    .map(|g| match func {
                        AggFn::Mean => (n[g] > 0.0).then_some(mean[g]),
                        AggFn::Var => (n[g] > 1.0).then(|| m2[g] / (n[g] - 1.0)),
                        _ => (n[g] > 1.0).then(|| (m2[g] / (n[g] - 1.0)).sqrt()),
                    })
                    .collect();
                (field(DataType::Float64), Arc::new(Float64Array::from(values)))
            }
            Acc::Distinct(sets) => (
                field(DataType::Int64),
                Arc::new(Int64Array::from(sets.iter().map(|s| s.len() as i64).collect::<Vec<_>>())),
            ),
        }
    }
}

struct State {
    key_idx: Vec<usize>,
    /// Input column of each aggregate (raw mode) or its first state column (final mode).
    inputs: Vec<Option<usize>>,
    conv: RowConverter,
    keys: Rows,
    table: HashTable<(u64, u32)>,
    accs: Vec<Acc>,
    key_fields: Vec<Field>,
}

/// The group-by operator.
pub struct GroupBy {
    p: GroupParams,
    mode: Mode,
    st: Option<State>,
    result: Option<Chunked>,
}

impl GroupBy {
    /// A group-by stage in `mode`.
    pub fn new(p: GroupParams, mode: Mode) -> GroupBy {
        GroupBy { p, mode, st: None, result: None }
    }

    fn init(&self, schema: &Schema) -> Result<State, OperatorError> {
        let name = &self.p.name;
        let key_idx = column_indices(schema, &self.p.keys, &format!("`{name}`: key"))?;
        let key_fields: Vec<Field> =
            key_idx.iter().map(|&i| schema.field(i).clone().with_nullable(true)).collect();
        let conv =
            RowConverter::new(key_fields.iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
        let mut inputs = Vec::new();
        let mut accs = Vec::new();
        for a in &self.p.aggs {
            if self.mode == Mode::Final {
                let state = if Acc::state_width(a.func) == 1 || a.func == AggFn::Count {
                    a.output.clone()
                } else if a.func == AggFn::Sum {
                    format!("{}.sum", a.output)
                } else {
                    format!("{}.n", a.output)
                };
                let i = column_indices(
                    schema,
                    std::slice::from_ref(&state),
                    &format!("`{name}`: partial state"),
                )?[0];
                inputs.push(Some(i));
                accs.push(Acc::for_states(a.func, schema.field(i).data_type()));
            } else {
                let i = match &a.column {
                    Some(c) => Some(
                        column_indices(schema, std::slice::from_ref(c), &format!("`{name}`: aggregate"))?[0],
                    ),
                    None => None,
                };
                let ty = i.map(|i| schema.field(i).data_type());
                if let (Some(ty), AggFn::Sum | AggFn::Mean | AggFn::Var | AggFn::Std) = (ty, a.func)
                    && !(ty.is_numeric() || ty == &DataType::Null)
                {
                    return Err(invalid(format!(
                        "`{name}`: {} = {}({}) needs a numeric column, but `{}` is {ty}",
                        a.output,
                        a.func.name(),
                        a.column.as_deref().unwrap_or(""),
                        a.column.as_deref().unwrap_or("")
                    )));
                }
                accs.push(Acc::for_input(a.func, ty));
                inputs.push(i);
            }
        }
        let keys = conv.empty_rows(1024, 16 * 1024);
        Ok(State { key_idx, inputs, conv, keys, table: HashTable::new(), accs, key_fields })
    }

    fn finish(&mut self) -> Result<Option<RecordBatch>, OperatorError> {
        let Some(st) = self.st.take() else { return Ok(None) };
        let key_cols = st.conv.convert_rows(st.keys.iter())?;
        let mut fields: Vec<Field> = st.key_fields.clone();
        let mut cols: Vec<ArrayRef> = key_cols;
        for (a, acc) in self.p.aggs.iter().zip(&st.accs) {
            if self.mode == Mode::Partial {
                for (f, c) in acc.states(&a.output) {
                    fields.push(f);
                    cols.push(c);
                }
            } else {
                let (f, c) = acc.finish(a.func, &a.output);
                fields.push(f);
                cols.push(c);
            }
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        Ok(Some(RecordBatch::try_new(schema, cols)?))
    }
}

impl Operator for GroupBy {
    fn on_batch(&mut self, _port: usize, batch: RecordBatch, _out: &mut Output) -> Result<(), OperatorError> {
        if self.st.is_none() {
            self.st = Some(self.init(&batch.schema())?);
        }
        let Some(st) = self.st.as_mut() else { return Ok(()) };
        let key_cols: Vec<ArrayRef> = st.key_idx.iter().map(|&i| canonical_column(batch.column(i))).collect();
        let rows = st.conv.convert_columns(&key_cols)?;
        let mut gids = Vec::with_capacity(rows.num_rows());
        for r in rows.iter() {
            let h = xxhash_rust::xxh3::xxh3_64(r.as_ref());
            let keys = &st.keys;
            let gid = match st.table.find(h, |(hh, g)| *hh == h && keys.row(*g as usize) == r) {
                Some((_, g)) => *g,
                None => {
                    let g = st.keys.num_rows() as u32;
                    st.keys.push(r);
                    st.table.insert_unique(h, (h, g), |(hh, _)| *hh);
                    g
                }
            };
            gids.push(gid);
        }
        let groups = st.keys.num_rows();
        let name = &self.p.name;
        for ((acc, input), a) in st.accs.iter_mut().zip(&st.inputs).zip(&self.p.aggs) {
            acc.grow(groups);
            let context = |e: OperatorError| {
                invalid(format!("`{name}`: {}({}): {e}", a.func.name(), a.column.as_deref().unwrap_or("")))
            };
            match self.mode {
                Mode::Final => {
                    let first = input.unwrap_or(0);
                    let width = Acc::state_width(a.func);
                    let cols: Vec<ArrayRef> =
                        (first..first + width).map(|i| batch.column(i).clone()).collect();
                    acc.merge(&gids, &cols).map_err(context)?;
                }
                _ => acc.update(&gids, input.map(|i| batch.column(i))).map_err(context)?,
            }
        }
        Ok(())
    }

    fn on_end(&mut self, _port: usize, _out: &mut Output) -> Result<Flow, OperatorError> {
        self.result = self.finish()?.map(|b| Chunked::new(b, self.p.batch_rows));
        Ok(if self.result.is_some() { Flow::More } else { Flow::Idle })
    }

    fn resume(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Chunked::resume(&mut self.result, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(func: AggFn, column: Option<&str>, output: &str) -> Agg {
        Agg { func, column: column.map(str::to_string), output: output.to_string() }
    }

    fn params(aggs: Vec<Agg>) -> GroupParams {
        GroupParams { name: "g".into(), keys: vec!["k".into()], aggs, batch_rows: 2 }
    }

    fn input(k: Vec<Option<i64>>, v: Vec<Option<i64>>) -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("k", Arc::new(Int64Array::from(k)) as ArrayRef),
            ("v", Arc::new(Int64Array::from(v)) as ArrayRef),
        ])
        .expect("batch")
    }

    /// Runs one operator over `batches` and returns its output concatenated.
    fn run(op: &mut GroupBy, batches: Vec<RecordBatch>) -> RecordBatch {
        let mut out = Output::default();
        for b in batches {
            op.on_batch(0, b, &mut out).expect("batch");
        }
        let mut flow = op.on_end(0, &mut out).expect("end");
        while flow == Flow::More {
            flow = op.resume(&mut out).expect("resume");
        }
        let got: Vec<RecordBatch> = out.drain().map(|(_, b)| b).collect();
        assert!(got.iter().all(|b| b.num_rows() <= 2), "output in batches of batch_rows");
        arrow_select::concat::concat_batches(&got[0].schema(), &got).expect("concat")
    }

    /// (key, column values as f64 or None) sorted by key (null key first).
    fn by_key(b: &RecordBatch) -> Vec<(Option<i64>, Vec<Option<f64>>)> {
        let k = b.column(0).as_primitive::<Int64Type>();
        let mut rows: Vec<_> = (0..b.num_rows())
            .map(|i| {
                let vals = (1..b.num_columns())
                    .map(|c| {
                        let col = arrow_cast::cast(b.column(c), &DataType::Float64).expect("cast");
                        let col = col.as_primitive::<Float64Type>();
                        col.is_valid(i).then(|| col.value(i))
                    })
                    .collect();
                (k.is_valid(i).then(|| k.value(i)), vals)
            })
            .collect();
        rows.sort_by_key(|r| r.0);
        rows
    }

    #[test]
    fn every_function_on_groups_with_nulls() {
        let aggs = vec![
            agg(AggFn::Count, None, "n"),
            agg(AggFn::Count, Some("v"), "c"),
            agg(AggFn::Sum, Some("v"), "s"),
            agg(AggFn::Min, Some("v"), "lo"),
            agg(AggFn::Max, Some("v"), "hi"),
            agg(AggFn::Mean, Some("v"), "mean"),
            agg(AggFn::Var, Some("v"), "var"),
            agg(AggFn::Std, Some("v"), "std"),
            agg(AggFn::NUnique, Some("v"), "u"),
            agg(AggFn::First, Some("v"), "first"),
            agg(AggFn::Last, Some("v"), "last"),
        ];
        let a = input(vec![Some(1), Some(1), None, Some(2)], vec![Some(4), None, Some(7), None]);
        let b = input(vec![Some(1), Some(1), None], vec![Some(8), Some(4), Some(7)]);
        let out = by_key(&run(&mut GroupBy::new(params(aggs), Mode::Complete), vec![a, b]));
        // Key 1: values 4, null, 8, 4. Sample variance of 4, 8, 4 is 16/3.
        let var = 16.0 / 3.0;
        let f = |x: f64| Some(x);
        assert_eq!(
            out,
            vec![
                (
                    None,
                    vec![
                        f(2.0),
                        f(2.0),
                        f(14.0),
                        f(7.0),
                        f(7.0),
                        f(7.0),
                        f(0.0),
                        f(0.0),
                        f(1.0),
                        f(7.0),
                        f(7.0)
                    ]
                ),
                (
                    Some(1),
                    vec![
                        f(4.0),
                        f(3.0),
                        f(16.0),
                        f(4.0),
                        f(8.0),
                        f(16.0 / 3.0),
                        f(var),
                        f(var.sqrt()),
                        f(2.0),
                        f(4.0),
                        f(4.0)
                    ]
                ),
                // Only a null value: counts are 1 and 0, everything else null (variance of
                // fewer than two values too), nunique 0.
                (Some(2), vec![f(1.0), f(0.0), None, None, None, None, None, None, f(0.0), None, None]),
            ]
        );
    }

    #[test]
    fn partial_then_final_equals_complete() {
        let aggs = || {
            vec![
                agg(AggFn::Count, None, "n"),
                agg(AggFn::Sum, Some("v"), "s"),
                agg(AggFn::Min, Some("v"), "lo"),
                agg(AggFn::Mean, Some("v"), "m"),
                agg(AggFn::Std, Some("v"), "sd"),
            ]
        };
        let parts: Vec<RecordBatch> = (0..3)
            .map(|p| {
                let k: Vec<Option<i64>> =
                    (0..50).map(|i| if i % 11 == 0 { None } else { Some((i * p) % 7) }).collect();
                let v: Vec<Option<i64>> =
                    (0..50).map(|i| if i % 13 == 0 { None } else { Some(i * 3 - p) }).collect();
                input(k, v)
            })
            .collect();
        let complete = by_key(&run(&mut GroupBy::new(params(aggs()), Mode::Complete), parts.clone()));
        // Each part pre-aggregated on its own "rank", the partial states merged.
        let partials: Vec<RecordBatch> = parts
            .into_iter()
            .map(|p| run(&mut GroupBy::new(params(aggs()), Mode::Partial), vec![p]))
            .collect();
        let merged = by_key(&run(&mut GroupBy::new(params(aggs()), Mode::Final), partials));
        assert_eq!(complete.len(), merged.len());
        for (c, m) in complete.iter().zip(&merged) {
            assert_eq!(c.0, m.0);
            for (x, y) in c.1.iter().zip(&m.1) {
                match (x, y) {
                    (Some(x), Some(y)) => assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "{x} vs {y}"),
                    _ => assert_eq!(x, y),
                }
            }
        }
    }

    #[test]
    fn an_empty_input_gives_an_empty_result_with_the_output_columns() {
        let out = run(
            &mut GroupBy::new(params(vec![agg(AggFn::Sum, Some("v"), "s")]), Mode::Complete),
            vec![input(vec![], vec![])],
        );
        assert_eq!(out.num_rows(), 0);
        let schema = out.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, vec!["k", "s"]);
    }
}
