//! Aggregate accumulators of the group-by (see [`crate::groupby`]): one per aggregate, holding
//! a value (or partial state) per group, updated from raw values or merged from partial
//! states, and turned into output columns.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal256Type, Float64Type, Int64Type, UInt64Type};
use arrow_array::{Array, ArrayRef, Decimal256Array, Float64Array, Int64Array, UInt64Array};
use arrow_buffer::i256;
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field};
use updraft_config::AggFn;
use updraft_runtime::OperatorError;

use crate::keys::{key_column, key_type};
use crate::slab::{Flag, Layout, Slab, flag_set, set_flag};

pub(crate) enum Acc {
    /// Values (or rows) counted, at word `off` of the group's [`Slab`] row.
    Count {
        off: usize,
    },
    /// Sum of signed integers, exact in i64 (an overflow is an error): the sum at word `off`,
    /// the values counted at `off + 1`.
    SumI {
        off: usize,
    },
    /// Sum of unsigned integers, exact in u64 (an overflow is an error), laid out as `SumI`.
    SumU {
        off: usize,
    },
    /// Sum of decimals, exact: accumulated in 256 bits, output as [`decimal_sum_type`].
    SumDecimal {
        s: Vec<i256>,
        n: Vec<i64>,
        ty: DataType,
    },
    /// Sum of floats (f64 bits at `off`), values counted at `off + 1`.
    SumF {
        off: usize,
    },
    /// Mean: the values' sum as f64 at `off`, their count at `off + 1`; the mean is their
    /// quotient, as DuckDB's and Polars' `mean` of floats. Partial states: the sum and count.
    Mean {
        off: usize,
    },
    /// Min or max of a number, date, time, timestamp or duration: the best value's
    /// order-preserving 64-bit image per group ([`crate::keys::ordered_u64`]) at `off`, and
    /// whether the group has one (flag `set`).
    ExtremeWord {
        max: bool,
        ty: DataType,
        off: usize,
        set: Flag,
    },
    /// Min or max of any other orderable type: the best value's row encoding per group.
    Extreme {
        max: bool,
        values: RowValues,
    },
    /// Count, mean and sum of squared deviations (Welford, 1962) of `var` and `std`, as f64 at
    /// `off`, `off + 1`, `off + 2`.
    Moments {
        off: usize,
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
pub(crate) struct RowValues {
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

    /// The values of the groups `r` as one column of the type given to [`RowValues::new`] (null
    /// where a group had no value).
    fn column(&self, r: Range<usize>) -> Result<ArrayRef, OperatorError> {
        let null = self.conv.convert_columns(&[arrow_array::new_null_array(&self.ty, 1)])?;
        let parser = self.conv.parser();
        let rows = part(&self.v, r)?.iter().map(|x| match x {
            Some(bytes) => parser.parse(bytes),
            None => null.row(0),
        });
        let mut cols = self.conv.convert_rows(rows)?;
        cols.pop().ok_or_else(|| invalid("no column decoded".into()))
    }
}

pub(crate) fn invalid(msg: String) -> OperatorError {
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

/// `col` as a primitive array of type `T` (`to`): as it is when it has that type, else cast
/// (`exact`: an error, never a null, for a value that does not fit).
fn as_type(col: &ArrayRef, to: &DataType, exact: bool) -> Result<ArrayRef, OperatorError> {
    if col.data_type() == to {
        return Ok(Arc::clone(col));
    }
    let options = arrow_cast::CastOptions { safe: !exact, ..Default::default() };
    Ok(arrow_cast::cast_with_options(col, to, &options)?)
}

/// Calls `f(i, v)` for each valid value `v` of `a`, row `i`, straight from its buffers (no
/// per-batch vector of options).
fn each<T: arrow_array::ArrowPrimitiveType>(
    a: &arrow_array::PrimitiveArray<T>,
    mut f: impl FnMut(usize, T::Native) -> Result<(), OperatorError>,
) -> Result<(), OperatorError> {
    match a.nulls() {
        None => a.values().iter().enumerate().try_for_each(|(i, v)| f(i, *v)),
        Some(n) => n.valid_indices().try_for_each(|i| f(i, a.value(i))),
    }
}

/// The numeric values of `col` as f64 for [`each`]: `None` for a Null-typed column (no values).
///
/// # Errors
/// A column that is not numeric.
fn f64_column(col: &ArrayRef) -> Result<Option<ArrayRef>, OperatorError> {
    let t = key_type(col.data_type());
    if t == DataType::Null {
        return Ok(None);
    }
    if !(t.is_integer() || is_float(&t) || is_decimal(&t)) {
        return Err(invalid(format!("needs a numeric column, found {t}")));
    }
    Ok(Some(as_type(col, &DataType::Float64, false)?))
}

/// A 64-bit number as the word of a [`Slab`] row, and back.
trait Word: Copy + 'static {
    fn from_word(w: u64) -> Self;
    fn word(self) -> u64;
}

impl Word for i64 {
    fn from_word(w: u64) -> i64 {
        w as i64
    }
    fn word(self) -> u64 {
        self as u64
    }
}

impl Word for u64 {
    fn from_word(w: u64) -> u64 {
        w
    }
    fn word(self) -> u64 {
        self
    }
}

impl Word for f64 {
    fn from_word(w: u64) -> f64 {
        f64::from_bits(w)
    }
    fn word(self) -> u64 {
        self.to_bits()
    }
}

/// The row of group `g`.
///
/// # Errors
/// A group the slab was not grown to (a defect: groups are added before they are updated).
#[inline]
fn row(slab: &mut Slab, g: u32) -> Result<&mut [u64], OperatorError> {
    slab.row(g as usize).ok_or_else(|| invalid(format!("group {g} beyond the table")))
}

/// Adds `k` to the count at word `off` of `row`.
///
/// # Errors
/// A count beyond i64 (partial states come from other workers: checked, not trusted).
#[inline]
fn add_count(row: &mut [u64], off: usize, k: i64) -> Result<(), OperatorError> {
    let n = i64::from_word(row[off]).checked_add(k).ok_or_else(|| invalid("count overflows int64".into()))?;
    row[off] = n.word();
    Ok(())
}

/// Adds each valid value of `col` (as `T`, exactly) to its group's sum at word `off`, counting
/// it at `off + 1` when `count` (raw values; partial sums carry their counts in a column of
/// their own); `type_name` names `T` in the overflow error.
///
/// # Errors
/// A value that does not fit `T`, or a sum that overflows it.
fn add_exact<T: arrow_array::ArrowPrimitiveType>(
    slab: &mut Slab,
    off: usize,
    count: bool,
    gids: &[u32],
    col: &ArrayRef,
    type_name: &str,
) -> Result<(), OperatorError>
where
    T::Native: Word,
{
    use arrow_array::ArrowNativeTypeOp;
    let c = as_type(col, &T::DATA_TYPE, true)?;
    each(c.as_primitive::<T>(), |i, v| {
        let row = row(slab, gids[i])?;
        let s = T::Native::from_word(row[off])
            .add_checked(v)
            .map_err(|_| invalid(format!("integer sum overflows {type_name}")))?;
        row[off] = s.word();
        if count {
            add_count(row, off + 1, 1)?;
        }
        Ok(())
    })
}

/// Adds each valid value of `col` (any number, as f64) to its group's sum at word `off`,
/// counting it at `off + 1` when `count`.
///
/// # Errors
/// A column that is not numeric.
fn add_f64(
    slab: &mut Slab,
    off: usize,
    count: bool,
    gids: &[u32],
    col: &ArrayRef,
) -> Result<(), OperatorError> {
    let Some(c) = f64_column(col)? else { return Ok(()) };
    each(c.as_primitive::<Float64Type>(), |i, v| {
        let row = row(slab, gids[i])?;
        row[off] = (f64::from_word(row[off]) + v).word();
        if count {
            add_count(row, off + 1, 1)?;
        }
        Ok(())
    })
}

/// Adds the counts in `col` (partial states: a count per row) to the groups `gids`, at word
/// `off`.
///
/// # Errors
/// A negative count (states come from other workers: checked, not trusted), or a total beyond
/// int64.
fn add_counts(slab: &mut Slab, off: usize, gids: &[u32], col: &ArrayRef) -> Result<(), OperatorError> {
    let c = as_type(col, &DataType::Int64, true)?;
    each(c.as_primitive::<Int64Type>(), |i, k| {
        if k < 0 {
            return Err(invalid(format!("a partial state holds a negative count ({k})")));
        }
        add_count(row(slab, gids[i])?, off, k)
    })
}

/// Word `off` of the groups `range` of `slab` as `T`.
fn words<T: Word>(slab: &Slab, off: usize, range: Range<usize>) -> impl Iterator<Item = T> + '_ {
    slab.column(off, range).map(T::from_word)
}

/// The groups `range` of a per-group vector.
///
/// # Errors
/// A range beyond the groups (a defect: every vector is grown with the groups).
fn part<T>(v: &[T], range: Range<usize>) -> Result<&[T], OperatorError> {
    let (start, end) = (range.start, range.end);
    v.get(range).ok_or_else(|| invalid(format!("groups {start}..{end} beyond the {} held", v.len())))
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
    /// A fresh accumulator for raw input of type `ty` (None: `count()`), its fixed-width states
    /// laid out in `layout`.
    pub(crate) fn for_input(
        func: AggFn,
        ty: Option<&DataType>,
        q: Option<f64>,
        layout: &mut Layout,
    ) -> Result<Acc, OperatorError> {
        let column_type = || ty.ok_or_else(|| invalid(format!("{} needs a column", func.name())));
        Ok(match func {
            AggFn::Count => Acc::Count { off: layout.words(1) },
            AggFn::Sum => match ty.map(key_type).as_ref() {
                Some(t) if t.is_signed_integer() => Acc::SumI { off: layout.words(2) },
                Some(t) if t.is_unsigned_integer() => Acc::SumU { off: layout.words(2) },
                Some(t) if is_decimal(t) => {
                    let ty = decimal_sum_type(t).ok_or_else(|| invalid(format!("cannot sum {t}")))?;
                    Acc::SumDecimal { s: Vec::new(), n: Vec::new(), ty }
                }
                _ => Acc::SumF { off: layout.words(2) },
            },
            AggFn::Min | AggFn::Max => {
                let ty = key_type(column_type()?);
                let max = func == AggFn::Max;
                if crate::keys::ordered_u64(&arrow_array::new_empty_array(&ty)).is_some() {
                    Acc::ExtremeWord { max, ty, off: layout.words(1), set: layout.flag() }
                } else {
                    Acc::Extreme { max, values: RowValues::new(&ty)? }
                }
            }
            AggFn::Mean => Acc::Mean { off: layout.words(2) },
            AggFn::Var | AggFn::Std => Acc::Moments { off: layout.words(3) },
            AggFn::NUnique => Acc::Distinct(Vec::new()),
            AggFn::First | AggFn::Last => {
                Acc::Pick { last: func == AggFn::Last, values: RowValues::new(column_type()?)? }
            }
            AggFn::Median | AggFn::Quantile => Acc::Quantile { q: q.unwrap_or(0.5), values: Vec::new() },
        })
    }

    /// Bytes this accumulator holds outside the [`Slab`], for the memory budget: exact for the
    /// per-group vectors (by capacity); values kept per row (distinct sets, quantile values,
    /// row-encoded min, max, first, last) are estimated at 24 bytes for each of the `rows`
    /// aggregated, which bounds them without walking every group.
    pub(crate) fn bytes(&self, rows: u64) -> u64 {
        let cap = |len: usize, width: usize| (len * width) as u64;
        match self {
            Acc::SumDecimal { s, n, .. } => cap(s.capacity(), 32) + cap(n.capacity(), 8),
            Acc::Extreme { values, .. } | Acc::Pick { values, .. } => {
                cap(values.v.capacity(), 16) + (24 * rows).min(cap(values.v.len(), 64))
            }
            Acc::Distinct(sets) => cap(sets.capacity(), 48) + 24 * rows,
            Acc::Quantile { values, .. } => cap(values.capacity(), 24) + 24 * rows,
            _ => 0,
        }
    }

    /// Makes room for `groups` groups outside the [`Slab`] (which the caller grows).
    pub(crate) fn grow(&mut self, groups: usize) {
        match self {
            Acc::SumDecimal { s, n, .. } => {
                s.resize(groups, i256::ZERO);
                n.resize(groups, 0);
            }
            Acc::Extreme { values, .. } | Acc::Pick { values, .. } => values.v.resize(groups, None),
            Acc::Distinct(sets) => sets.resize_with(groups, HashSet::new),
            Acc::Quantile { values, .. } => values.resize_with(groups, Vec::new),
            _ => {}
        }
    }

    /// Adds raw values (`col` None: count rows) all to group 0, as a whole-table aggregate does:
    /// folded into one running value in row order (the same additions, overflow checks and
    /// float rounding as [`Acc::update`], without a group lookup per row); false (nothing done)
    /// for an aggregate without such a path, which then goes through [`Acc::update`].
    ///
    /// # Errors
    /// As [`Acc::update`].
    pub(crate) fn update_whole(
        &mut self,
        slab: &mut Slab,
        rows: usize,
        col: Option<&ArrayRef>,
    ) -> Result<bool, OperatorError> {
        use arrow_array::ArrowNativeTypeOp;
        let overflow = |t: &str| invalid(format!("integer sum overflows {t}"));
        let valid = |a: &dyn Array| (a.len() - a.null_count()) as i64;
        /// `start` plus each valid value of `a` in turn, checked.
        fn fold<T: arrow_array::ArrowPrimitiveType>(
            a: &arrow_array::PrimitiveArray<T>,
            start: T::Native,
            add: impl Fn(T::Native, T::Native) -> Option<T::Native>,
        ) -> Option<T::Native> {
            match a.nulls() {
                None => a.values().iter().try_fold(start, |s, v| add(s, *v)),
                Some(n) => n.valid_indices().try_fold(start, |s, i| add(s, a.value(i))),
            }
        }
        slab.grow(1);
        let row = row(slab, 0)?;
        match (&*self, col) {
            (Acc::Count { off }, None) => add_count(row, *off, rows as i64)?,
            // Logical nulls: a dictionary's null values and a Null-typed column count as null.
            (Acc::Count { off }, Some(c)) => add_count(row, *off, (c.len() - c.logical_null_count()) as i64)?,
            (Acc::SumI { off }, Some(c)) => {
                let c = as_type(&crate::keys::decoded(c)?, &DataType::Int64, true)?;
                let a = c.as_primitive::<Int64Type>();
                let s = fold(a, i64::from_word(row[*off]), |s, v| s.add_checked(v).ok());
                row[*off] = s.ok_or_else(|| overflow("int64"))?.word();
                add_count(row, off + 1, valid(a))?;
            }
            (Acc::SumU { off }, Some(c)) => {
                let c = as_type(&crate::keys::decoded(c)?, &DataType::UInt64, true)?;
                let a = c.as_primitive::<UInt64Type>();
                row[*off] =
                    fold(a, row[*off], |s, v| s.add_checked(v).ok()).ok_or_else(|| overflow("uint64"))?;
                add_count(row, off + 1, valid(a))?;
            }
            (Acc::SumF { off } | Acc::Mean { off }, Some(c)) => {
                if let Some(c) = f64_column(&crate::keys::decoded(c)?)? {
                    let a = c.as_primitive::<Float64Type>();
                    let s = fold(a, f64::from_word(row[*off]), |s, v| Some(s + v)).unwrap_or(f64::NAN);
                    row[*off] = s.word();
                    add_count(row, off + 1, valid(a))?;
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Adds raw values (`col` None: count rows).
    pub(crate) fn update(
        &mut self,
        slab: &mut Slab,
        gids: &[u32],
        col: Option<&ArrayRef>,
    ) -> Result<(), OperatorError> {
        if let Acc::Count { off } = self {
            // Logical nulls: a dictionary's null values and a Null-typed column count as null.
            let nulls = col.map(|c| c.logical_nulls());
            for (i, g) in gids.iter().enumerate() {
                if nulls.as_ref().is_none_or(|n| n.as_ref().is_none_or(|b| b.is_valid(i))) {
                    add_count(row(slab, *g)?, *off, 1)?;
                }
            }
            return Ok(());
        }
        let Some(c) = col else { return Err(invalid("needs a column".into())) };
        // Dictionary-encoded values aggregate as their values.
        let c = &crate::keys::decoded(c)?;
        match self {
            Acc::Count { .. } => {}
            Acc::SumI { off } => add_exact::<Int64Type>(slab, *off, true, gids, c, "int64")?,
            Acc::SumU { off } => add_exact::<UInt64Type>(slab, *off, true, gids, c, "uint64")?,
            Acc::SumF { off } | Acc::Mean { off } => add_f64(slab, *off, true, gids, c)?,
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
            Acc::ExtremeWord { max, off, set, .. } => {
                let values = key_column(c)?;
                let images = crate::keys::ordered_u64(&values).ok_or_else(|| {
                    invalid(format!("cannot compare values of type {}", values.data_type()))
                })?;
                let nulls = values.logical_nulls();
                let (max, off, set) = (*max, *off, *set);
                for (i, (u, g)) in images.into_iter().zip(gids).enumerate() {
                    if nulls.as_ref().is_some_and(|b| b.is_null(i)) {
                        continue;
                    }
                    let row = row(slab, *g)?;
                    if !flag_set(row, set) || if max { u > row[off] } else { u < row[off] } {
                        row[off] = u;
                        set_flag(row, set);
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
            Acc::Moments { off } => {
                let off = *off;
                if let Some(c) = f64_column(c)? {
                    each(c.as_primitive::<Float64Type>(), |i, x| {
                        let row = row(slab, gids[i])?;
                        let (mut n, mut mean, mut m2) = (
                            f64::from_word(row[off]),
                            f64::from_word(row[off + 1]),
                            f64::from_word(row[off + 2]),
                        );
                        n += 1.0;
                        let d = x - mean;
                        mean += d / n;
                        m2 += d * (x - mean);
                        row[off..off + 3].copy_from_slice(&[n.word(), mean.word(), m2.word()]);
                        Ok(())
                    })?;
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
    pub(crate) fn for_states(func: AggFn, ty: &DataType, layout: &mut Layout) -> Result<Acc, OperatorError> {
        match (func, ty) {
            (AggFn::Sum, DataType::Decimal128(..) | DataType::Decimal256(..)) => {
                Ok(Acc::SumDecimal { s: Vec::new(), n: Vec::new(), ty: ty.clone() })
            }
            (other, _) => Acc::for_input(other, Some(ty), None, layout),
        }
    }

    /// Number of partial-state columns.
    pub(crate) fn state_width(func: AggFn) -> usize {
        match func {
            AggFn::Sum | AggFn::Mean => 2,
            AggFn::Var | AggFn::Std => 3,
            _ => 1,
        }
    }

    /// The suffix of the first partial-state column's name after the output's.
    pub(crate) fn first_state(func: AggFn) -> &'static str {
        match func {
            AggFn::Sum | AggFn::Mean => ".sum",
            AggFn::Var | AggFn::Std => ".n",
            _ => "",
        }
    }

    /// Merges partial states (`cols`, as made by [`Acc::states`]).
    pub(crate) fn merge(
        &mut self,
        slab: &mut Slab,
        gids: &[u32],
        cols: &[ArrayRef],
    ) -> Result<(), OperatorError> {
        match self {
            Acc::Count { off } => add_counts(slab, *off, gids, &cols[0])?,
            Acc::SumI { off } => {
                add_exact::<Int64Type>(slab, *off, false, gids, &cols[0], "int64")?;
                add_counts(slab, *off + 1, gids, &cols[1])?;
            }
            Acc::SumU { off } => {
                add_exact::<UInt64Type>(slab, *off, false, gids, &cols[0], "uint64")?;
                add_counts(slab, *off + 1, gids, &cols[1])?;
            }
            Acc::SumF { off } | Acc::Mean { off } => {
                add_f64(slab, *off, false, gids, &cols[0])?;
                add_counts(slab, *off + 1, gids, &cols[1])?;
            }
            Acc::SumDecimal { s, n, .. } => {
                for (v, g) in decimals(&cols[0])?.into_iter().zip(gids) {
                    let g = *g as usize;
                    s[g] = s[g]
                        .checked_add(v.unwrap_or(i256::ZERO))
                        .ok_or_else(|| invalid("decimal sum overflows 256 bits".into()))?;
                }
                let c = as_type(&cols[1], &DataType::Int64, true)?;
                each(c.as_primitive::<Int64Type>(), |i, k| {
                    let g = gids[i] as usize;
                    if k < 0 {
                        return Err(invalid(format!("a partial state holds a negative count ({k})")));
                    }
                    n[g] = n[g].checked_add(k).ok_or_else(|| invalid("count overflows int64".into()))?;
                    Ok(())
                })?;
            }
            Acc::Extreme { .. } | Acc::ExtremeWord { .. } => self.update(slab, gids, Some(&cols[0]))?,
            Acc::Moments { off } => {
                let off = *off;
                let state = |c: &ArrayRef| as_type(c, &DataType::Float64, false);
                let (nb, mb, qb) = (state(&cols[0])?, state(&cols[1])?, state(&cols[2])?);
                let (nb, mb, qb) = (
                    nb.as_primitive::<Float64Type>(),
                    mb.as_primitive::<Float64Type>(),
                    qb.as_primitive::<Float64Type>(),
                );
                let at =
                    |a: &arrow_array::Float64Array, i: usize| if a.is_valid(i) { a.value(i) } else { 0.0 };
                for (i, g) in gids.iter().enumerate() {
                    let (nb, mb, qb) = (at(nb, i), at(mb, i), at(qb, i));
                    if !(nb >= 0.0 && nb.is_finite()) {
                        return Err(invalid(format!("a partial state holds a count of {nb}")));
                    }
                    if nb == 0.0 {
                        continue;
                    }
                    // Chan, Golub and LeVeque (1979): two groups' moments combined.
                    let row = row(slab, *g)?;
                    let (na, mean, m2) = (
                        f64::from_word(row[off]),
                        f64::from_word(row[off + 1]),
                        f64::from_word(row[off + 2]),
                    );
                    let total = na + nb;
                    let delta = mb - mean;
                    let mean = mean + delta * nb / total;
                    let m2 = m2 + qb + delta * delta * na * nb / total;
                    row[off..off + 3].copy_from_slice(&[total.word(), mean.word(), m2.word()]);
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
    fn sum_column(&self, slab: &Slab, r: Range<usize>) -> Result<ArrayRef, OperatorError> {
        fn sums<T: Word>(slab: &Slab, off: usize, r: Range<usize>) -> impl Iterator<Item = Option<T>> + '_ {
            words::<T>(slab, off, r.clone())
                .zip(words::<i64>(slab, off + 1, r.clone()))
                .map(|(s, n)| (n > 0).then_some(s))
        }
        Ok(match self {
            Acc::SumI { off } => Arc::new(Int64Array::from_iter(sums::<i64>(slab, *off, r))),
            Acc::SumU { off } => Arc::new(UInt64Array::from_iter(sums::<u64>(slab, *off, r))),
            Acc::SumF { off } => Arc::new(Float64Array::from_iter(sums::<f64>(slab, *off, r))),
            Acc::SumDecimal { s, n, ty } => {
                let (s, n) = (part(s, r.clone())?, part(n, r)?);
                let wide = Decimal256Array::from_iter(s.iter().zip(n).map(|(v, k)| (*k > 0).then_some(*v)));
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

    /// The min/max column of [`Acc::ExtremeWord`]: null for a group without values.
    fn word_column(&self, slab: &Slab, r: Range<usize>) -> Result<ArrayRef, OperatorError> {
        let Acc::ExtremeWord { ty, off, set, .. } = self else {
            return Err(invalid("not a min or max".into()));
        };
        let v: Vec<u64> = slab.column(*off, r.clone()).collect();
        let nulls = arrow_buffer::NullBuffer::from_iter(slab.flags(*set, r));
        crate::keys::from_ordered_u64(ty, &v, Some(nulls))
            .ok_or_else(|| invalid(format!("cannot keep values of type {ty}")))
    }

    /// Partial-state columns of the groups `r`, named after `name`.
    pub(crate) fn states(
        &self,
        slab: &Slab,
        name: &str,
        r: Range<usize>,
    ) -> Result<Vec<(Field, ArrayRef)>, OperatorError> {
        let f = |suffix: &str, t: &DataType| Field::new(format!("{name}{suffix}"), t.clone(), true);
        let ints = |off: usize| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(words::<i64>(slab, off, r.clone())))
        };
        let floats = |off: usize| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(words::<f64>(slab, off, r.clone())))
        };
        Ok(match self {
            Acc::Count { off } => vec![(f("", &DataType::Int64), ints(*off))],
            Acc::SumI { off } | Acc::SumU { off } | Acc::SumF { off } => {
                let sum = self.sum_column(slab, r.clone())?;
                vec![(f(".sum", sum.data_type()), sum), (f(".n", &DataType::Int64), ints(*off + 1))]
            }
            Acc::SumDecimal { n, .. } => {
                let sum = self.sum_column(slab, r.clone())?;
                vec![
                    (f(".sum", sum.data_type()), sum),
                    (f(".n", &DataType::Int64), Arc::new(Int64Array::from(part(n, r)?.to_vec()))),
                ]
            }
            Acc::Mean { off } => vec![
                (f(".sum", &DataType::Float64), floats(*off)),
                (f(".n", &DataType::Int64), ints(*off + 1)),
            ],
            Acc::Extreme { values, .. } | Acc::Pick { values, .. } => {
                vec![(f("", &values.ty), values.column(r)?)]
            }
            Acc::ExtremeWord { ty, .. } => vec![(f("", ty), self.word_column(slab, r)?)],
            Acc::Moments { off } => vec![
                (f(".n", &DataType::Float64), floats(*off)),
                (f(".mean", &DataType::Float64), floats(*off + 1)),
                (f(".m2", &DataType::Float64), floats(*off + 2)),
            ],
            Acc::Distinct(sets) => {
                vec![(
                    f("", &DataType::Int64),
                    Arc::new(Int64Array::from_iter_values(part(sets, r)?.iter().map(|s| s.len() as i64))),
                )]
            }
            Acc::Quantile { .. } => return Err(invalid("quantiles have no partial states".into())),
        })
    }

    /// The final value column of the groups `r`.
    pub(crate) fn finish(
        &self,
        slab: &Slab,
        func: AggFn,
        name: &str,
        r: Range<usize>,
    ) -> Result<(Field, ArrayRef), OperatorError> {
        let field = |t: &DataType| Field::new(name, t.clone(), true);
        let col: ArrayRef = match self {
            Acc::Count { off } => Arc::new(Int64Array::from_iter_values(words::<i64>(slab, *off, r.clone()))),
            Acc::SumI { .. } | Acc::SumU { .. } | Acc::SumF { .. } | Acc::SumDecimal { .. } => {
                self.sum_column(slab, r)?
            }
            Acc::Mean { off } => Arc::new(Float64Array::from_iter(
                words::<f64>(slab, *off, r.clone())
                    .zip(words::<i64>(slab, *off + 1, r.clone()))
                    .map(|(s, n)| (n > 0).then(|| s / n as f64)),
            )),
            Acc::Extreme { values, .. } | Acc::Pick { values, .. } => values.column(r)?,
            Acc::ExtremeWord { .. } => self.word_column(slab, r)?,
            Acc::Quantile { q, values } => {
                Arc::new(Float64Array::from_iter(part(values, r)?.iter().map(|v| quantile(v, *q))))
            }
            Acc::Moments { off } => {
                let std = func == AggFn::Std;
                Arc::new(Float64Array::from_iter(
                    words::<f64>(slab, *off, r.clone()).zip(words::<f64>(slab, *off + 2, r.clone())).map(
                        |(n, m2)| {
                            let var = (n > 1.0).then(|| m2 / (n - 1.0));
                            if std { var.map(f64::sqrt) } else { var }
                        },
                    ),
                ))
            }
            Acc::Distinct(sets) => {
                Arc::new(Int64Array::from_iter_values(part(sets, r)?.iter().map(|s| s.len() as i64)))
            }
        };
        Ok((field(col.data_type()), col))
    }
}

/// The exact quantile `q` of `values` with linear interpolation between the two nearest ranks
/// (Hyndman and Fan's definition 7; DuckDB's `quantile_cont`, NumPy's default); NaN sorts above
/// every number. `None` without values.
pub(crate) fn quantile(values: &[f64], q: f64) -> Option<f64> {
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
