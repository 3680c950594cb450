//! Group-by aggregation: count, sum, min, max, mean, var, std, nunique, first, last, median,
//! quantile.
//!
//! ```text
//!  input ─▶ [partial: per-rank states] ─▶ shuffle on the keys ─▶ final: merge states ─▶ output
//!  (without pre-aggregation: input ─▶ shuffle ─▶ complete: aggregate raw rows ─▶ output)
//! ```
//!
//! Pre-aggregation is used when every aggregate can be split into partial states that merge
//! exactly: count and sum (sum and count of values), min and max, mean/var/std (count, mean and
//! sum of squared deviations, merged with Chan's formula). `nunique`, `first`, `last`, `median`
//! and `quantile` need every raw row of a group on one rank, so a pipeline using them shuffles
//! raw rows; `median` and `quantile` are exact: the rank owning a group holds its values (as
//! f64) and interpolates linearly between the two nearest ranks of the sorted values
//! (`quantile_cont` of DuckDB, NumPy's default), NaN above every number.
//!
//! Semantics follow SQL: null keys form their own group; aggregates skip null values; sum, min,
//! max, mean of a group without values are null, `var` and `std` (sample, n - 1) need two values;
//! count counts values (or rows for `count()`). `first` and `last` are the first and last value
//! seen on the owning rank, which after a shuffle depends on arrival order.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal256Type, Float64Type, Int64Type, UInt64Type};
use arrow_array::{Array, ArrayRef, Decimal256Array, Float64Array, Int64Array, RecordBatch, UInt64Array};
use arrow_buffer::i256;
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use hashbrown::HashTable;
use updraft_config::AggFn;
use updraft_runtime::{Flow, Operator, OperatorError, Output};

use crate::chunked::Chunked;
use crate::keys::{key_column, key_type};
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

enum Acc {
    Count(Vec<i64>),
    /// Sum of signed integers, exact in i64 (an overflow is an error).
    SumI {
        s: Vec<i64>,
        n: Vec<i64>,
    },
    /// Sum of unsigned integers, exact in u64 (an overflow is an error).
    SumU {
        s: Vec<u64>,
        n: Vec<i64>,
    },
    /// Sum of decimals, exact: accumulated in 256 bits, output as [`decimal_sum_type`].
    SumDecimal {
        s: Vec<i256>,
        n: Vec<i64>,
        ty: DataType,
    },
    SumF {
        s: Vec<f64>,
        n: Vec<i64>,
    },
    /// Min or max of any orderable type: the best value's row encoding per group.
    Extreme {
        max: bool,
        values: RowValues,
    },
    Moments {
        n: Vec<f64>,
        mean: Vec<f64>,
        m2: Vec<f64>,
    },
    Distinct(Vec<HashSet<Vec<u8>>>),
    /// First or last value of any type, kept as its row encoding.
    Pick {
        last: bool,
        values: RowValues,
    },
    /// Every value of each group, for an exact quantile `q`.
    Quantile {
        q: f64,
        values: Vec<Vec<f64>>,
    },
}

/// One value per group of one Arrow type, held in Arrow's row format (which orders every type
/// by value), decoded back to that type at the end.
struct RowValues {
    ty: DataType,
    conv: RowConverter,
    v: Vec<Option<Box<[u8]>>>,
}

impl RowValues {
    /// Values of columns of type `t` (a dictionary's values: they are compared and kept by value).
    fn new(t: &DataType) -> Result<RowValues, OperatorError> {
        let ty = key_type(t);
        let conv = RowConverter::new(vec![SortField::new(ty.clone())])
            .map_err(|e| invalid(format!("values of type {t} cannot be compared or kept: {e}")))?;
        Ok(RowValues { ty, conv, v: Vec::new() })
    }

    /// Offers each valid value of `col` to its group; `take(current, offered)` decides.
    /// `canonical` compares floats as keys do (min, max); without it values are kept as they
    /// are (first, last: -0.0 stays -0.0).
    fn offer(
        &mut self,
        gids: &[u32],
        col: &ArrayRef,
        canonical: bool,
        take: impl Fn(&[u8], &[u8]) -> bool,
    ) -> Result<(), OperatorError> {
        let col = if canonical { key_column(col)? } else { crate::keys::decoded(col)? };
        let rows = self.conv.convert_columns(&[Arc::clone(&col)])?;
        let nulls = col.logical_nulls();
        for (i, g) in gids.iter().enumerate() {
            if nulls.as_ref().is_some_and(|b| b.is_null(i)) {
                continue;
            }
            let r = rows.row(i);
            let slot = &mut self.v[*g as usize];
            if slot.as_deref().is_none_or(|cur| take(cur, r.as_ref())) {
                *slot = Some(r.as_ref().into());
            }
        }
        Ok(())
    }

    /// The values as one column of the type given to [`RowValues::new`] (null where a group had
    /// no value).
    fn column(&self) -> Result<ArrayRef, OperatorError> {
        let null = self.conv.convert_columns(&[arrow_array::new_null_array(&self.ty, 1)])?;
        let parser = self.conv.parser();
        let rows = self.v.iter().map(|x| match x {
            Some(bytes) => parser.parse(bytes),
            None => null.row(0),
        });
        let mut cols = self.conv.convert_rows(rows)?;
        cols.pop().ok_or_else(|| invalid("no column decoded".into()))
    }
}

fn invalid(msg: String) -> OperatorError {
    OperatorError::Invalid(msg)
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

fn is_decimal(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
    )
}

/// The type of `sum` over decimals of type `t`: precision raised by 10 (as DuckDB and Spark
/// do), capped at the widest decimal of that width (38 digits for 128 bits, 76 for 256), same
/// scale; narrower decimals sum as Decimal128.
pub fn decimal_sum_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => {
            Some(DataType::Decimal128((p + 10).min(38), *s))
        }
        DataType::Decimal256(p, s) => Some(DataType::Decimal256((p + 10).min(76), *s)),
        _ => None,
    }
}

fn floats(col: &ArrayRef) -> Result<Vec<Option<f64>>, OperatorError> {
    let t = key_type(col.data_type());
    if t == DataType::Null {
        return Ok(vec![None; col.len()]);
    }
    if !(t.is_integer() || is_float(&t) || is_decimal(&t)) {
        return Err(invalid(format!("needs a numeric column, found {t}")));
    }
    let c = arrow_cast::cast(col, &DataType::Float64)?;
    Ok(c.as_primitive::<Float64Type>().iter().collect())
}

/// Integer values of `col` exactly as i64 (an error, never a null, for one that does not fit).
fn exact_i64s(col: &ArrayRef) -> Result<Vec<Option<i64>>, OperatorError> {
    let exact = arrow_cast::CastOptions { safe: false, ..Default::default() };
    let c = arrow_cast::cast_with_options(col, &DataType::Int64, &exact)?;
    Ok(c.as_primitive::<Int64Type>().iter().collect())
}

/// Unsigned integer values of `col` exactly as u64.
fn exact_u64s(col: &ArrayRef) -> Result<Vec<Option<u64>>, OperatorError> {
    let exact = arrow_cast::CastOptions { safe: false, ..Default::default() };
    let c = arrow_cast::cast_with_options(col, &DataType::UInt64, &exact)?;
    Ok(c.as_primitive::<UInt64Type>().iter().collect())
}

/// Decimal values of `col` (any decimal width) as unscaled 256-bit integers.
fn decimals(col: &ArrayRef) -> Result<Vec<Option<i256>>, OperatorError> {
    let (p, s) = match col.data_type() {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => (*p, *s),
        t => return Err(invalid(format!("needs a decimal column, found {t}"))),
    };
    let wide = arrow_cast::cast(col, &DataType::Decimal256(p.max(1), s))?;
    Ok(wide.as_primitive::<Decimal256Type>().iter().collect())
}

impl Acc {
    /// A fresh accumulator for raw input of type `ty` (None: `count()`).
    fn for_input(func: AggFn, ty: Option<&DataType>, q: Option<f64>) -> Result<Acc, OperatorError> {
        let column_type = || ty.ok_or_else(|| invalid(format!("{} needs a column", func.name())));
        Ok(match func {
            AggFn::Count => Acc::Count(Vec::new()),
            AggFn::Sum => match ty.map(key_type).as_ref() {
                Some(t) if t.is_signed_integer() => Acc::SumI { s: Vec::new(), n: Vec::new() },
                Some(t) if t.is_unsigned_integer() => Acc::SumU { s: Vec::new(), n: Vec::new() },
                Some(t) if is_decimal(t) => {
                    let ty = decimal_sum_type(t).ok_or_else(|| invalid(format!("cannot sum {t}")))?;
                    Acc::SumDecimal { s: Vec::new(), n: Vec::new(), ty }
                }
                _ => Acc::SumF { s: Vec::new(), n: Vec::new() },
            },
            AggFn::Min | AggFn::Max => {
                Acc::Extreme { max: func == AggFn::Max, values: RowValues::new(column_type()?)? }
            }
            AggFn::Mean | AggFn::Var | AggFn::Std => {
                Acc::Moments { n: Vec::new(), mean: Vec::new(), m2: Vec::new() }
            }
            AggFn::NUnique => Acc::Distinct(Vec::new()),
            AggFn::First | AggFn::Last => {
                Acc::Pick { last: func == AggFn::Last, values: RowValues::new(column_type()?)? }
            }
            AggFn::Median | AggFn::Quantile => Acc::Quantile { q: q.unwrap_or(0.5), values: Vec::new() },
        })
    }

    fn grow(&mut self, groups: usize) {
        match self {
            Acc::Count(n) => n.resize(groups, 0),
            Acc::SumI { s, n } => {
                s.resize(groups, 0);
                n.resize(groups, 0);
            }
            Acc::SumU { s, n } => {
                s.resize(groups, 0);
                n.resize(groups, 0);
            }
            Acc::SumDecimal { s, n, .. } => {
                s.resize(groups, i256::ZERO);
                n.resize(groups, 0);
            }
            Acc::SumF { s, n } => {
                s.resize(groups, 0.0);
                n.resize(groups, 0);
            }
            Acc::Extreme { values, .. } | Acc::Pick { values, .. } => values.v.resize(groups, None),
            Acc::Moments { n, mean, m2 } => {
                n.resize(groups, 0.0);
                mean.resize(groups, 0.0);
                m2.resize(groups, 0.0);
            }
            Acc::Distinct(sets) => sets.resize_with(groups, HashSet::new),
            Acc::Quantile { values, .. } => values.resize_with(groups, Vec::new),
        }
    }

    /// Adds raw values (`col` None: count rows).
    fn update(&mut self, gids: &[u32], col: Option<&ArrayRef>) -> Result<(), OperatorError> {
        if let Acc::Count(n) = self {
            // Logical nulls: a dictionary's null values and a Null-typed column count as null.
            let nulls = col.map(|c| c.logical_nulls());
            for (i, g) in gids.iter().enumerate() {
                if nulls.as_ref().is_none_or(|n| n.as_ref().is_none_or(|b| b.is_valid(i))) {
                    n[*g as usize] += 1;
                }
            }
            return Ok(());
        }
        let Some(c) = col else { return Err(invalid("needs a column".into())) };
        // Dictionary-encoded values aggregate as their values.
        let c = &crate::keys::decoded(c)?;
        match self {
            Acc::Count(_) => {}
            Acc::SumI { s, n } => {
                for (v, g) in exact_i64s(c)?.into_iter().zip(gids) {
                    if let Some(v) = v {
                        let g = *g as usize;
                        s[g] = s[g]
                            .checked_add(v)
                            .ok_or_else(|| invalid("integer sum overflows int64".into()))?;
                        n[g] += 1;
                    }
                }
            }
            Acc::SumU { s, n } => {
                for (v, g) in exact_u64s(c)?.into_iter().zip(gids) {
                    if let Some(v) = v {
                        let g = *g as usize;
                        s[g] = s[g]
                            .checked_add(v)
                            .ok_or_else(|| invalid("integer sum overflows uint64".into()))?;
                        n[g] += 1;
                    }
                }
            }
            Acc::SumDecimal { s, n, .. } => {
                for (v, g) in decimals(c)?.into_iter().zip(gids) {
                    if let Some(v) = v {
                        let g = *g as usize;
                        s[g] = s[g]
                            .checked_add(v)
                            .ok_or_else(|| invalid("decimal sum overflows 256 bits".into()))?;
                        n[g] += 1;
                    }
                }
            }
            Acc::SumF { s, n } => {
                for (v, g) in floats(c)?.into_iter().zip(gids) {
                    if let Some(v) = v {
                        s[*g as usize] += v;
                        n[*g as usize] += 1;
                    }
                }
            }
            // Row order is the key order of `crate::keys` (-0.0 = 0.0, NaN above every number).
            Acc::Extreme { max: true, values } => values.offer(gids, c, true, |cur, new| new > cur)?,
            Acc::Extreme { max: false, values } => values.offer(gids, c, true, |cur, new| new < cur)?,
            Acc::Pick { last, values } => {
                let last = *last;
                values.offer(gids, c, false, move |_, _| last)?;
            }
            Acc::Quantile { values, .. } => {
                for (x, g) in floats(c)?.into_iter().zip(gids) {
                    if let Some(x) = x {
                        values[*g as usize].push(x);
                    }
                }
            }
            Acc::Moments { n, mean, m2 } => {
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
                let conv = RowConverter::new(vec![SortField::new(key_type(c.data_type()))])?;
                let values = key_column(c)?;
                let rows = conv.convert_columns(&[Arc::clone(&values)])?;
                let nulls = values.logical_nulls();
                for (i, g) in gids.iter().enumerate() {
                    if nulls.as_ref().is_none_or(|b| b.is_valid(i)) {
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
    fn for_states(func: AggFn, ty: &DataType) -> Result<Acc, OperatorError> {
        match (func, ty) {
            (AggFn::Sum, DataType::Decimal128(..) | DataType::Decimal256(..)) => {
                Ok(Acc::SumDecimal { s: Vec::new(), n: Vec::new(), ty: ty.clone() })
            }
            (other, _) => Acc::for_input(other, Some(ty), None),
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
        let counts = |c: &ArrayRef| exact_i64s(c);
        match self {
            Acc::Count(n) => {
                for (v, g) in counts(&cols[0])?.into_iter().zip(gids) {
                    n[*g as usize] += v.unwrap_or(0);
                }
            }
            Acc::SumI { s, n } => {
                for ((v, k), g) in exact_i64s(&cols[0])?.into_iter().zip(counts(&cols[1])?).zip(gids) {
                    let g = *g as usize;
                    s[g] = s[g]
                        .checked_add(v.unwrap_or(0))
                        .ok_or_else(|| invalid("integer sum overflows int64".into()))?;
                    n[g] += k.unwrap_or(0);
                }
            }
            Acc::SumU { s, n } => {
                for ((v, k), g) in exact_u64s(&cols[0])?.into_iter().zip(counts(&cols[1])?).zip(gids) {
                    let g = *g as usize;
                    s[g] = s[g]
                        .checked_add(v.unwrap_or(0))
                        .ok_or_else(|| invalid("integer sum overflows uint64".into()))?;
                    n[g] += k.unwrap_or(0);
                }
            }
            Acc::SumDecimal { s, n, .. } => {
                for ((v, k), g) in decimals(&cols[0])?.into_iter().zip(counts(&cols[1])?).zip(gids) {
                    let g = *g as usize;
                    s[g] = s[g]
                        .checked_add(v.unwrap_or(i256::ZERO))
                        .ok_or_else(|| invalid("decimal sum overflows 256 bits".into()))?;
                    n[g] += k.unwrap_or(0);
                }
            }
            Acc::SumF { s, n } => {
                for ((v, k), g) in floats(&cols[0])?.into_iter().zip(counts(&cols[1])?).zip(gids) {
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
            Acc::Distinct(_) | Acc::Pick { .. } | Acc::Quantile { .. } => {
                return Err(invalid(
                    "nunique, first, last, median and quantile cannot be merged from partial states".into(),
                ));
            }
        }
        Ok(())
    }

    /// The sum column: null for a group without values.
    fn sum_column(&self) -> Result<ArrayRef, OperatorError> {
        let seen = |n: &[i64], i: usize| n.get(i).is_some_and(|k| *k > 0);
        Ok(match self {
            Acc::SumI { s, n } => {
                Arc::new(Int64Array::from_iter(s.iter().enumerate().map(|(i, v)| seen(n, i).then_some(*v))))
            }
            Acc::SumU { s, n } => {
                Arc::new(UInt64Array::from_iter(s.iter().enumerate().map(|(i, v)| seen(n, i).then_some(*v))))
            }
            Acc::SumF { s, n } => {
                Arc::new(Float64Array::from_iter(s.iter().enumerate().map(|(i, v)| seen(n, i).then_some(*v))))
            }
            Acc::SumDecimal { s, n, ty } => {
                let wide =
                    Decimal256Array::from_iter(s.iter().enumerate().map(|(i, v)| seen(n, i).then_some(*v)));
                let (p, sc) = match ty {
                    DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => (*p, *s),
                    t => return Err(invalid(format!("not a decimal sum type: {t}"))),
                };
                let wide: ArrayRef = Arc::new(wide.with_precision_and_scale(76, sc)?);
                // Exact or an error: a sum beyond the output precision is reported, not nulled.
                let exact = arrow_cast::CastOptions { safe: false, ..Default::default() };
                arrow_cast::cast_with_options(&wide, ty, &exact)
                    .map_err(|e| invalid(format!("decimal sum does not fit {p} digits: {e}")))?
            }
            _ => return Err(invalid("not a sum".into())),
        })
    }

    /// Partial-state columns, named after `name`.
    fn states(&self, name: &str) -> Result<Vec<(Field, ArrayRef)>, OperatorError> {
        let f = |suffix: &str, t: &DataType| Field::new(format!("{name}{suffix}"), t.clone(), true);
        Ok(match self {
            Acc::Count(n) => {
                vec![(f("", &DataType::Int64), Arc::new(Int64Array::from(n.clone())) as ArrayRef)]
            }
            Acc::SumI { n, .. } | Acc::SumU { n, .. } | Acc::SumF { n, .. } | Acc::SumDecimal { n, .. } => {
                let sum = self.sum_column()?;
                vec![
                    (f(".sum", sum.data_type()), sum),
                    (f(".n", &DataType::Int64), Arc::new(Int64Array::from(n.clone()))),
                ]
            }
            Acc::Extreme { values, .. } | Acc::Pick { values, .. } => {
                vec![(f("", &values.ty), values.column()?)]
            }
            Acc::Moments { n, mean, m2 } => vec![
                (f(".n", &DataType::Float64), Arc::new(Float64Array::from(n.clone()))),
                (f(".mean", &DataType::Float64), Arc::new(Float64Array::from(mean.clone()))),
                (f(".m2", &DataType::Float64), Arc::new(Float64Array::from(m2.clone()))),
            ],
            Acc::Distinct(sets) => {
                vec![(
                    f("", &DataType::Int64),
                    Arc::new(Int64Array::from(sets.iter().map(|s| s.len() as i64).collect::<Vec<_>>())),
                )]
            }
            Acc::Quantile { .. } => return Err(invalid("quantiles have no partial states".into())),
        })
    }

    /// The final value column.
    fn finish(&self, func: AggFn, name: &str) -> Result<(Field, ArrayRef), OperatorError> {
        let field = |t: &DataType| Field::new(name, t.clone(), true);
        let col: ArrayRef = match self {
            Acc::Count(n) => Arc::new(Int64Array::from(n.clone())),
            Acc::SumI { .. } | Acc::SumU { .. } | Acc::SumF { .. } | Acc::SumDecimal { .. } => {
                self.sum_column()?
            }
            Acc::Extreme { values, .. } | Acc::Pick { values, .. } => values.column()?,
            Acc::Quantile { q, values } => {
                Arc::new(Float64Array::from_iter(values.iter().map(|v| quantile(v, *q))))
            }
            Acc::Moments { n, mean, m2 } => {
                let values: Vec<Option<f64>> = (0..n.len())
                    .map(|g| match func {
                        AggFn::Mean => (n[g] > 0.0).then_some(mean[g]),
                        AggFn::Var => (n[g] > 1.0).then(|| m2[g] / (n[g] - 1.0)),
                        _ => (n[g] > 1.0).then(|| (m2[g] / (n[g] - 1.0)).sqrt()),
                    })
                    .collect();
                Arc::new(Float64Array::from(values))
            }
            Acc::Distinct(sets) => {
                Arc::new(Int64Array::from(sets.iter().map(|s| s.len() as i64).collect::<Vec<_>>()))
            }
        };
        Ok((field(col.data_type()), col))
    }
}

/// The exact quantile `q` of `values` with linear interpolation between the two nearest ranks
/// (Hyndman and Fan's definition 7; DuckDB's `quantile_cont`, NumPy's default); NaN sorts above
/// every number. `None` without values.
fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable_by(|a, b| crate::keys::canonical_f64(*a).total_cmp(&crate::keys::canonical_f64(*b)));
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let (a, b) = (v[lo.min(v.len() - 1)], v[hi.min(v.len() - 1)]);
    Some(if lo == hi { a } else { a + (b - a) * (pos - lo as f64) })
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
        // Keys compare, and come out, as their values (a dictionary-encoded key is decoded).
        let key_fields: Vec<Field> = key_idx
            .iter()
            .map(|&i| {
                let f = schema.field(i);
                f.clone().with_data_type(key_type(f.data_type())).with_nullable(true)
            })
            .collect();
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
                accs.push(Acc::for_states(a.func, schema.field(i).data_type())?);
            } else {
                let i = match &a.column {
                    Some(c) => Some(
                        column_indices(schema, std::slice::from_ref(c), &format!("`{name}`: aggregate"))?[0],
                    ),
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
                accs.push(Acc::for_input(a.func, ty, a.quantile).map_err(|e| {
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
        let keys = conv.empty_rows(1024, 16 * 1024);
        Ok(State { key_idx, inputs, conv, keys, table: HashTable::new(), accs, key_fields })
    }

    fn finish(&mut self) -> Result<Option<RecordBatch>, OperatorError> {
        let Some(mut st) = self.st.take() else { return Ok(None) };
        let whole = st.key_idx.is_empty();
        // A whole-table aggregate has its one group even when no row came.
        let rows = if !whole {
            st.keys.num_rows()
        } else if self.mode == Mode::Partial || self.p.owns_whole_table {
            1
        } else {
            0
        };
        if whole {
            st.accs.iter_mut().for_each(|acc| acc.grow(1));
        }
        let key_cols = if whole { Vec::new() } else { st.conv.convert_rows(st.keys.iter())? };
        let mut fields: Vec<Field> = st.key_fields.clone();
        let mut cols: Vec<ArrayRef> = key_cols;
        for (a, acc) in self.p.aggs.iter().zip(&st.accs) {
            if self.mode == Mode::Partial {
                for (f, c) in acc.states(&a.output)? {
                    fields.push(f);
                    cols.push(c.slice(0, rows));
                }
            } else {
                let (f, c) = acc.finish(a.func, &a.output)?;
                fields.push(f);
                cols.push(c.slice(0, rows));
            }
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(Some(RecordBatch::try_new_with_options(schema, cols, &options)?))
    }
}

/// Adds `batch`, whose row `i` belongs to group `gids[i]`, to every aggregate (raw values, or
/// partial states in final mode); `groups` is the number of groups so far.
fn update_groups(
    st: &mut State,
    p: &GroupParams,
    mode: Mode,
    batch: &RecordBatch,
    gids: &[u32],
    groups: usize,
) -> Result<(), OperatorError> {
    let name = &p.name;
    for ((acc, input), a) in st.accs.iter_mut().zip(&st.inputs).zip(&p.aggs) {
        acc.grow(groups);
        let context = |e: OperatorError| {
            invalid(format!("`{name}`: {}({}): {e}", a.func.name(), a.column.as_deref().unwrap_or("")))
        };
        match mode {
            Mode::Final => {
                let first = input.unwrap_or(0);
                let width = Acc::state_width(a.func);
                let cols: Vec<ArrayRef> = (first..first + width).map(|i| batch.column(i).clone()).collect();
                acc.merge(gids, &cols).map_err(context)?;
            }
            _ => acc.update(gids, input.map(|i| batch.column(i))).map_err(context)?,
        }
    }
    Ok(())
}

impl Operator for GroupBy {
    fn on_batch(&mut self, _port: usize, batch: RecordBatch, _out: &mut Output) -> Result<(), OperatorError> {
        if self.st.is_none() {
            self.st = Some(self.init(&batch.schema())?);
        }
        let Some(st) = self.st.as_mut() else { return Ok(()) };
        if st.key_idx.is_empty() {
            // A whole-table aggregate: every row in group 0.
            let gids = vec![0u32; batch.num_rows()];
            return update_groups(st, &self.p, self.mode, &batch, &gids, 1);
        }
        let key_cols: Vec<ArrayRef> =
            st.key_idx.iter().map(|&i| key_column(batch.column(i))).collect::<Result<_, _>>()?;
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
        update_groups(st, &self.p, self.mode, &batch, &gids, groups)
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
        let quantile = (func == AggFn::Median).then_some(0.5);
        Agg { func, column: column.map(str::to_string), output: output.to_string(), quantile }
    }

    fn params(aggs: Vec<Agg>) -> GroupParams {
        GroupParams { name: "g".into(), keys: vec!["k".into()], aggs, batch_rows: 2, owns_whole_table: true }
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
    fn dictionary_and_null_typed_values_count_their_nulls_and_first_keeps_negative_zero() {
        let values: ArrayRef = Arc::new(arrow_array::StringArray::from(vec![Some("a"), None]));
        let dict: ArrayRef = Arc::new(
            arrow_array::DictionaryArray::try_new(arrow_array::Int32Array::from(vec![0, 1, 1]), values)
                .expect("dict"),
        );
        let ints: ArrayRef = Arc::new(
            arrow_array::DictionaryArray::try_new(
                arrow_array::Int32Array::from(vec![0, 1, 0]),
                Arc::new(Int64Array::from(vec![5, 7])) as ArrayRef,
            )
            .expect("dict"),
        );
        let b = RecordBatch::try_from_iter(vec![
            ("k", Arc::new(Int64Array::from(vec![1, 1, 1])) as ArrayRef),
            ("d", dict),
            ("z", Arc::new(arrow_array::NullArray::new(3)) as ArrayRef),
            ("f", Arc::new(Float64Array::from(vec![-0.0, 1.0, 2.0])) as ArrayRef),
            ("i", ints),
        ])
        .expect("batch");
        let aggs = vec![
            agg(AggFn::Count, Some("d"), "cd"),
            agg(AggFn::NUnique, Some("d"), "ud"),
            agg(AggFn::Count, Some("z"), "cz"),
            agg(AggFn::NUnique, Some("z"), "uz"),
            agg(AggFn::Sum, Some("z"), "sz"),
            agg(AggFn::First, Some("f"), "ff"),
            agg(AggFn::Sum, Some("i"), "si"),
        ];
        let out = run(&mut GroupBy::new(params(aggs), Mode::Complete), vec![b]);
        let int = |c: usize| out.column(c).as_primitive::<Int64Type>().value(0);
        assert_eq!((int(1), int(2), int(3), int(4)), (1, 1, 0, 0), "null values are not counted");
        assert!(out.column(5).is_null(0), "the sum of no values is null");
        let first = out.column(6).as_primitive::<Float64Type>().value(0);
        assert!(first == 0.0 && first.is_sign_negative(), "first keeps -0.0");
        assert_eq!(int(7), 17, "a dictionary of integers sums its values, exactly");
    }

    #[test]
    fn quantiles_interpolate_between_the_nearest_ranks() {
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), Some(2.5));
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.9), Some(3.0 + 0.7));
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.0), Some(1.0));
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 1.0), Some(4.0));
        assert_eq!(quantile(&[7.0], 0.3), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert!(quantile(&[1.0, f64::NAN], 1.0).is_some_and(f64::is_nan), "NaN is the largest");
        assert_eq!(quantile(&[-0.0, 5.0, f64::NAN], 0.5), Some(5.0));
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
