//! Evaluating expressions (parsed by `updraft_config::expr`) on record batches with Arrow
//! kernels, and the `filter` and `project` operators built on it.
//!
//! Types: integers of any width compute as int64, floats as float64; an integer meeting a
//! float becomes a float; strings compare with strings. Arithmetic is checked (an int64
//! overflow or an integer division by zero is an error naming the expression). Comparisons with
//! null give null; `and` / `or` follow SQL's three-valued logic; `filter` drops rows whose
//! predicate is null.

use std::sync::Arc;

use arrow_arith::boolean::{and_kleene, is_not_null, is_null, not, or_kleene};
use arrow_arith::numeric::{add, div, mul, neg, rem, sub};
use arrow_array::cast::AsArray;
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, new_null_array,
};
use arrow_ord::cmp::{eq, gt, gt_eq, lt, lt_eq, neq};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use arrow_select::filter::filter_record_batch;
use updraft_config::expr::{BinOp, CastType, Expr, Func, Literal};
use updraft_runtime::{Flow, Operator, OperatorError, Output};

use crate::hash_table::is_string as is_text;

fn err(e: impl std::fmt::Display) -> OperatorError {
    OperatorError::Invalid(e.to_string())
}

fn literal(l: &Literal, n: usize, like: Option<&DataType>) -> ArrayRef {
    match l {
        Literal::Int(i) => Arc::new(Int64Array::from(vec![*i; n])),
        Literal::Float(f) => Arc::new(Float64Array::from(vec![*f; n])),
        Literal::Str(s) => Arc::new(StringArray::from(vec![s.as_str(); n])),
        Literal::Bool(b) => Arc::new(BooleanArray::from(vec![*b; n])),
        Literal::Null => new_null_array(like.unwrap_or(&DataType::Int64), n),
    }
}

fn numeric_kind(t: &DataType) -> Option<bool> {
    if t.is_integer() {
        Some(false)
    } else if t.is_floating() {
        Some(true)
    } else {
        None
    }
}

fn is_temporal(t: &DataType) -> bool {
    matches!(t, DataType::Date32 | DataType::Date64 | DataType::Timestamp(..))
}

fn decimal_scale(t: &DataType) -> Option<i8> {
    match t {
        DataType::Decimal32(_, s)
        | DataType::Decimal64(_, s)
        | DataType::Decimal128(_, s)
        | DataType::Decimal256(_, s) => Some(*s),
        _ => None,
    }
}

/// The Arrow type of a cast's target.
pub fn cast_target(t: CastType) -> DataType {
    match t {
        CastType::Int { bits: 8, signed: true } => DataType::Int8,
        CastType::Int { bits: 16, signed: true } => DataType::Int16,
        CastType::Int { bits: 32, signed: true } => DataType::Int32,
        CastType::Int { signed: true, .. } => DataType::Int64,
        CastType::Int { bits: 8, signed: false } => DataType::UInt8,
        CastType::Int { bits: 16, signed: false } => DataType::UInt16,
        CastType::Int { bits: 32, signed: false } => DataType::UInt32,
        CastType::Int { signed: false, .. } => DataType::UInt64,
        CastType::Float(32) => DataType::Float32,
        CastType::Float(_) => DataType::Float64,
        CastType::Bool => DataType::Boolean,
        CastType::String => DataType::Utf8,
        CastType::Date => DataType::Date32,
        CastType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        CastType::Decimal { precision, scale } if precision > 38 => DataType::Decimal256(precision, scale),
        CastType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
    }
}

/// Casts that fail on a value the target cannot hold instead of making it null.
fn exact() -> arrow_cast::CastOptions<'static> {
    arrow_cast::CastOptions { safe: false, ..Default::default() }
}

/// The type both integer operands are computed in: `Int64` when both fit in it (as before),
/// `UInt64` when both are unsigned and one is `UInt64`, and `Decimal128(20, 0)` (which holds
/// every `Int64` and every `UInt64` exactly) for a `UInt64` against a signed type.
fn integer_target(a: &DataType, b: &DataType) -> DataType {
    let wide = a == &DataType::UInt64 || b == &DataType::UInt64;
    if !wide {
        DataType::Int64
    } else if a.is_unsigned_integer() && b.is_unsigned_integer() {
        DataType::UInt64
    } else {
        DataType::Decimal128(20, 0)
    }
}

/// `a / b` of integer values held as `Decimal128(20, 0)`, truncated toward zero as integer
/// division is; division by zero is an error.
fn truncating_div(a: &ArrayRef, b: &ArrayRef) -> Result<ArrayRef, OperatorError> {
    use arrow_array::types::Decimal128Type;
    let (x, y) = (a.as_primitive::<Decimal128Type>(), b.as_primitive::<Decimal128Type>());
    let q: arrow_array::Decimal128Array = arrow_arith::arity::try_binary(x, y, |p: i128, q: i128| {
        p.checked_div(q).ok_or(arrow_schema::ArrowError::DivideByZero)
    })?;
    Ok(Arc::new(q.with_precision_and_scale(20, 0)?))
}

/// Casts both sides to one type for an operator. Casts are exact: a value the common type
/// cannot hold is an error, never a silent null.
fn coerce(l: ArrayRef, r: ArrayRef) -> Result<(ArrayRef, ArrayRef), OperatorError> {
    // Values, not encodings: two dictionaries cannot be zipped or compared as they are.
    let (l, r) = (crate::keys::decoded(&l)?, crate::keys::decoded(&r)?);
    let (lt_, rt_) = (l.data_type().clone(), r.data_type().clone());
    let target = match (numeric_kind(&lt_), numeric_kind(&rt_)) {
        (Some(a), Some(b)) => {
            if a || b {
                DataType::Float64
            } else {
                integer_target(&lt_, &rt_)
            }
        }
        // As SQL: a string against a date or timestamp is read as one (`d >= '2024-07-01'`).
        _ if is_temporal(&lt_) && is_text(&rt_) => lt_.clone(),
        _ if is_text(&lt_) && is_temporal(&rt_) => rt_.clone(),
        // Decimals against decimals or integers: in the widest decimal of the larger scale;
        // against floats: as floats.
        _ if decimal_scale(&lt_).is_some() || decimal_scale(&rt_).is_some() => {
            let scale = decimal_scale(&lt_).max(decimal_scale(&rt_)).unwrap_or(0);
            let other_ok = |t: &DataType| t.is_integer() || decimal_scale(t).is_some();
            if numeric_kind(&lt_) == Some(true) || numeric_kind(&rt_) == Some(true) {
                DataType::Float64
            } else if other_ok(&lt_) && other_ok(&rt_) {
                let wide = matches!(lt_, DataType::Decimal256(..)) || matches!(rt_, DataType::Decimal256(..));
                if wide { DataType::Decimal256(76, scale) } else { DataType::Decimal128(38, scale) }
            } else {
                return Err(err(format!("cannot combine {lt_} with {rt_}")));
            }
        }
        _ if matches!(lt_, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            && matches!(rt_, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) =>
        {
            DataType::Utf8
        }
        _ if lt_ == rt_ => return Ok((l, r)),
        _ => return Err(err(format!("cannot combine {lt_} with {rt_}"))),
    };
    let cast = |a: &ArrayRef| -> Result<ArrayRef, OperatorError> {
        if a.data_type() == &target {
            return Ok(Arc::clone(a));
        }
        arrow_cast::cast_with_options(a, &target, &exact())
            .map_err(|e| err(format!("cannot compute {} as {target}: {e}", a.data_type())))
    };
    Ok((cast(&l)?, cast(&r)?))
}

fn boolean(a: &ArrayRef, what: &str) -> Result<BooleanArray, OperatorError> {
    a.as_boolean_opt()
        .cloned()
        .ok_or_else(|| err(format!("{what} needs true/false values, found {}", a.data_type())))
}

/// Evaluates `e` on `batch`: one value per row.
///
/// # Errors
/// Unknown columns, type mismatches, overflow and integer division by zero.
pub fn eval(e: &Expr, batch: &RecordBatch) -> Result<ArrayRef, OperatorError> {
    let n = batch.num_rows();
    Ok(match e {
        Expr::Column(c) => {
            let i = batch.schema().index_of(c).map_err(|_| {
                let have: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
                err(format!("unknown column `{c}` (columns: {})", have.join(", ")))
            })?;
            batch.column(i).clone()
        }
        Expr::Literal(l) => literal(l, n, None),
        Expr::Call(func, args) => call(*func, args, batch)?,
        Expr::InList { expr, items, negated } => {
            let v = eval(expr, batch)?;
            let mut acc: Option<BooleanArray> = None;
            for item in items {
                let (a, b) = coerce(Arc::clone(&v), eval_like(item, batch, v.data_type())?)?;
                let hit = eq(&a, &b)?;
                acc = Some(match acc {
                    None => hit,
                    Some(x) => or_kleene(&x, &hit)?,
                });
            }
            let found = acc.ok_or_else(|| err("an empty `in` list"))?;
            Arc::new(if *negated { not(&found)? } else { found })
        }
        Expr::Between { expr, low, high, negated } => {
            let v = eval(expr, batch)?;
            let (a, lo) = coerce(Arc::clone(&v), eval_like(low, batch, v.data_type())?)?;
            let (b, hi) = coerce(v, eval_like(high, batch, a.data_type())?)?;
            let inside = and_kleene(&gt_eq(&a, &lo)?, &lt_eq(&b, &hi)?)?;
            Arc::new(if *negated { not(&inside)? } else { inside })
        }
        Expr::Like { expr, pattern, negated } => {
            let v = text(&eval(expr, batch)?, "like")?;
            let p = arrow_array::Scalar::new(StringArray::from(vec![pattern.as_str()]));
            Arc::new(if *negated {
                arrow_string::like::nlike(&v, &p)?
            } else {
                arrow_string::like::like(&v, &p)?
            })
        }
        Expr::Case { branches, otherwise } => {
            // Built from the last branch back: each true condition takes its value.
            let mut result = match otherwise {
                Some(e) => eval(e, batch)?,
                None => {
                    let first = branches.first().map(|(_, v)| eval(v, batch)).transpose()?;
                    new_null_array(first.as_ref().map_or(&DataType::Int64, |f| f.data_type()), n)
                }
            };
            for (cond, value) in branches.iter().rev() {
                let c = boolean(&eval(cond, batch)?, "case when")?;
                let taken = BooleanArray::from_iter(c.iter().map(|x| Some(x == Some(true))));
                let (v, r) = coerce(eval_like(value, batch, result.data_type())?, result)?;
                result = arrow_select::zip::zip(&taken, &v, &r)?;
            }
            result
        }
        Expr::Cast { expr, to, lenient } => {
            let v = eval(expr, batch)?;
            let target = cast_target(*to);
            let options = arrow_cast::CastOptions { safe: *lenient, ..Default::default() };
            arrow_cast::cast_with_options(&v, &target, &options).map_err(|e| {
                let how = if *lenient { "try_cast" } else { "cast" };
                err(format!("{how} of {} to {target}: {e}", v.data_type()))
            })?
        }
        Expr::Not(x) => Arc::new(not(&boolean(&eval(x, batch)?, "not")?)?),
        Expr::Neg(x) => {
            let v = eval(x, batch)?;
            let v = match numeric_kind(v.data_type()) {
                Some(true) => arrow_cast::cast(&v, &DataType::Float64)?,
                Some(false) => arrow_cast::cast_with_options(&v, &DataType::Int64, &exact())
                    .map_err(|e| err(format!("cannot negate {}: {e}", v.data_type())))?,
                None => return Err(err(format!("cannot negate {}", v.data_type()))),
            };
            neg(&v)?
        }
        Expr::IsNull { expr, negated } => {
            let v = eval(expr, batch)?;
            Arc::new(if *negated { is_not_null(&v)? } else { is_null(&v)? })
        }
        Expr::Chain(op, items) => {
            // Folded in a loop: a chain of thousands of comparisons costs no stack.
            let what = if *op == BinOp::And { "and" } else { "or" };
            let mut acc: Option<BooleanArray> = None;
            for item in items {
                let v = boolean(&eval(item, batch)?, what)?;
                acc = Some(match acc {
                    None => v,
                    Some(a) if *op == BinOp::And => and_kleene(&a, &v)?,
                    Some(a) => or_kleene(&a, &v)?,
                });
            }
            match acc {
                Some(a) => Arc::new(a),
                None => return Err(err(format!("an empty `{what}`"))),
            }
        }
        Expr::Binary(l, op, r) => {
            // A bare null literal takes the type of the other side.
            let (lv, rv) = match (l.as_ref(), r.as_ref()) {
                (Expr::Literal(Literal::Null), _) => {
                    let rv = eval(r, batch)?;
                    (literal(&Literal::Null, n, Some(rv.data_type())), rv)
                }
                (_, Expr::Literal(Literal::Null)) => {
                    let lv = eval(l, batch)?;
                    let nl = literal(&Literal::Null, n, Some(lv.data_type()));
                    (lv, nl)
                }
                _ => (eval(l, batch)?, eval(r, batch)?),
            };
            match op {
                BinOp::And => Arc::new(and_kleene(&boolean(&lv, "and")?, &boolean(&rv, "and")?)?),
                BinOp::Or => Arc::new(or_kleene(&boolean(&lv, "or")?, &boolean(&rv, "or")?)?),
                _ => {
                    let integers = lv.data_type().is_integer() && rv.data_type().is_integer();
                    let (a, b) = coerce(lv, rv)?;
                    match op {
                        // Integer division truncates toward zero in every integer type, also in
                        // the Decimal128(20, 0) a uint64 and a signed operand are computed in.
                        BinOp::Div if integers && matches!(a.data_type(), DataType::Decimal128(..)) => {
                            truncating_div(&a, &b)?
                        }
                        BinOp::Eq => Arc::new(eq(&a, &b)?),
                        BinOp::Ne => Arc::new(neq(&a, &b)?),
                        BinOp::Lt => Arc::new(lt(&a, &b)?),
                        BinOp::Le => Arc::new(lt_eq(&a, &b)?),
                        BinOp::Gt => Arc::new(gt(&a, &b)?),
                        BinOp::Ge => Arc::new(gt_eq(&a, &b)?),
                        BinOp::Add => add(&a, &b)?,
                        BinOp::Sub => sub(&a, &b)?,
                        BinOp::Mul => mul(&a, &b)?,
                        BinOp::Div => div(&a, &b)?,
                        _ => rem(&a, &b)?,
                    }
                }
            }
        }
    })
}

/// `e` evaluated, a bare `null` taking the type `like`.
fn eval_like(e: &Expr, batch: &RecordBatch, like: &DataType) -> Result<ArrayRef, OperatorError> {
    match e {
        Expr::Literal(Literal::Null) => Ok(new_null_array(like, batch.num_rows())),
        _ => eval(e, batch),
    }
}

/// `a` as UTF-8 strings, or an error naming `what` needs strings.
fn text(a: &ArrayRef, what: &str) -> Result<ArrayRef, OperatorError> {
    if !is_text(a.data_type()) {
        return Err(err(format!("{what} needs strings, found {}", a.data_type())));
    }
    Ok(arrow_cast::cast(a, &DataType::Utf8)?)
}

/// A function call (arguments counted by the parser).
fn call(func: Func, args: &[Expr], batch: &RecordBatch) -> Result<ArrayRef, OperatorError> {
    let name = func.name();
    let arg = |i: usize| -> Result<ArrayRef, OperatorError> {
        let e = args.get(i).ok_or_else(|| err(format!("`{name}` lacks argument {}", i + 1)))?;
        eval(e, batch)
    };
    let strings = |a: &ArrayRef| -> Result<StringArray, OperatorError> {
        Ok(text(a, name)?.as_string::<i32>().clone())
    };
    Ok(match func {
        Func::Coalesce => {
            let mut acc: Option<ArrayRef> = None;
            for e in args.iter().filter(|e| !matches!(e, Expr::Literal(Literal::Null))) {
                let v = eval(e, batch)?;
                acc = Some(match acc {
                    None => v,
                    Some(a) => {
                        let (a, v) = coerce(a, v)?;
                        arrow_select::zip::zip(&is_not_null(&a)?, &a, &v)?
                    }
                });
            }
            acc.unwrap_or_else(|| new_null_array(&DataType::Int64, batch.num_rows()))
        }
        Func::Lower => {
            Arc::new(StringArray::from_iter(strings(&arg(0)?)?.iter().map(|v| v.map(str::to_lowercase))))
        }
        Func::Upper => {
            Arc::new(StringArray::from_iter(strings(&arg(0)?)?.iter().map(|v| v.map(str::to_uppercase))))
        }
        Func::Length => Arc::new(arrow_array::Int64Array::from_iter(
            strings(&arg(0)?)?.iter().map(|v| v.map(|s| s.chars().count() as i64)),
        )),
        Func::StartsWith => {
            let (s, p) = (text(&arg(0)?, name)?, text(&arg(1)?, name)?);
            Arc::new(arrow_string::like::starts_with(&s, &p)?)
        }
        Func::Abs => {
            let v = arg(0)?;
            match numeric_kind(v.data_type()) {
                Some(false) => {
                    let v = arrow_cast::cast_with_options(&v, &DataType::Int64, &exact())?;
                    let a = v.as_primitive::<arrow_array::types::Int64Type>();
                    Arc::new(a.try_unary::<_, arrow_array::types::Int64Type, _>(|x| {
                        x.checked_abs().ok_or_else(|| {
                            arrow_schema::ArrowError::ComputeError(format!("abs({x}) overflows int64"))
                        })
                    })?)
                }
                Some(true) => {
                    let v = arrow_cast::cast(&v, &DataType::Float64)?;
                    Arc::new(
                        v.as_primitive::<arrow_array::types::Float64Type>()
                            .unary::<_, arrow_array::types::Float64Type>(f64::abs),
                    )
                }
                None => return Err(err(format!("abs needs numbers, found {}", v.data_type()))),
            }
        }
        Func::Round => {
            let v = arg(0)?;
            let digits = match args.get(1) {
                None => 0,
                Some(Expr::Literal(Literal::Int(d))) if (-15..=15).contains(d) => *d as i32,
                Some(Expr::Neg(d)) if matches!(d.as_ref(), Expr::Literal(Literal::Int(d)) if (0..=15).contains(d)) => {
                    match d.as_ref() {
                        Expr::Literal(Literal::Int(d)) => -(*d as i32),
                        _ => 0,
                    }
                }
                Some(_) => return Err(err("round's digits must be an integer literal from -15 to 15")),
            };
            match numeric_kind(v.data_type()) {
                Some(false) if digits >= 0 => v,
                Some(_) => {
                    let scale = 10f64.powi(digits);
                    let f = arrow_cast::cast(&v, &DataType::Float64)?;
                    Arc::new(
                        f.as_primitive::<arrow_array::types::Float64Type>()
                            .unary::<_, arrow_array::types::Float64Type>(|x| {
                                // A value too large to scale has no digits there to round.
                                let scaled = x * scale;
                                if scaled.is_finite() { scaled.round() / scale } else { x }
                            }),
                    )
                }
                None => return Err(err(format!("round needs numbers, found {}", v.data_type()))),
            }
        }
        Func::Year | Func::Month | Func::Day => {
            let v = arg(0)?;
            if !is_temporal(v.data_type()) {
                return Err(err(format!("{name} needs a date or timestamp, found {}", v.data_type())));
            }
            let part = match func {
                Func::Year => arrow_arith::temporal::DatePart::Year,
                Func::Month => arrow_arith::temporal::DatePart::Month,
                _ => arrow_arith::temporal::DatePart::Day,
            };
            arrow_arith::temporal::date_part(&v, part)?
        }
    })
}

/// Keeps the rows whose predicate is true.
pub struct Filter {
    name: String,
    predicate: Expr,
}

impl Filter {
    /// A filter stage.
    pub fn new(name: &str, predicate: Expr) -> Filter {
        Filter { name: name.to_string(), predicate }
    }
}

impl Operator for Filter {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        let mask = eval(&self.predicate, &batch).map_err(|e| err(format!("`{}`: {e}", self.name)))?;
        let mask = boolean(&mask, "a filter").map_err(|e| err(format!("`{}`: {e}", self.name)))?;
        out.emit(filter_record_batch(&batch, &mask)?);
        Ok(())
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Flow::Idle)
    }
}

/// Computes new columns.
pub struct Project {
    name: String,
    columns: Vec<(String, Expr)>,
}

impl Project {
    /// A project stage.
    pub fn new(name: &str, columns: Vec<(String, Expr)>) -> Project {
        Project { name: name.to_string(), columns }
    }
}

impl Operator for Project {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        let mut fields = Vec::with_capacity(self.columns.len());
        let mut cols = Vec::with_capacity(self.columns.len());
        for (name, e) in &self.columns {
            let c = eval(e, &batch).map_err(|x| err(format!("`{}`: column `{name}`: {x}", self.name)))?;
            fields.push(Field::new(name, c.data_type().clone(), true));
            cols.push(c);
        }
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        out.emit(RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), cols, &options)?);
        Ok(())
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Flow::Idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use updraft_config::expr::parse_expr;

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("a", Arc::new(Int64Array::from(vec![Some(1), Some(5), None, Some(-3)])) as ArrayRef),
            ("f", Arc::new(Float64Array::from(vec![0.5, 2.0, 3.0, 4.0])) as ArrayRef),
            ("s", Arc::new(StringArray::from(vec![Some("x"), Some("y"), Some("x"), None])) as ArrayRef),
        ])
        .expect("batch")
    }

    fn bools(text: &str) -> Vec<Option<bool>> {
        eval(&parse_expr(text).expect("parse"), &batch()).expect("eval").as_boolean().iter().collect()
    }

    #[test]
    fn comparisons_logic_and_nulls() {
        assert_eq!(bools("a > 1"), vec![Some(false), Some(true), None, Some(false)]);
        assert_eq!(bools("a > 1 or s == 'x'"), vec![Some(true), Some(true), Some(true), None]);
        assert_eq!(bools("a > 1 and s == 'x'"), vec![Some(false), Some(false), None, Some(false)]);
        assert_eq!(bools("a is null or s is null"), vec![Some(false), Some(false), Some(true), Some(true)]);
        assert_eq!(
            bools("a + f > 2"),
            vec![Some(false), Some(true), None, Some(false)],
            "int + float is float"
        );
        assert_eq!(
            bools("not (a % 2 == 1)"),
            vec![Some(false), Some(false), None, Some(true)],
            "-3 % 2 is -1"
        );
        assert_eq!(bools("a == null"), vec![None, None, None, None]);
    }

    #[test]
    fn unsigned_values_beyond_i64_are_compared_and_computed_exactly() {
        let big: ArrayRef =
            Arc::new(arrow_array::UInt64Array::from(vec![Some(u64::MAX), Some(1 << 63), Some(3), None]));
        let small: ArrayRef =
            Arc::new(arrow_array::Int32Array::from(vec![Some(-1), Some(7), Some(3), Some(0)]));
        let b = RecordBatch::try_from_iter(vec![("big", big), ("small", small)]).expect("batch");
        let eval_on = |t: &str| eval(&parse_expr(t).expect("parse"), &b);
        let bools = |t: &str| -> Vec<Option<bool>> { eval_on(t).expect(t).as_boolean().iter().collect() };
        assert_eq!(bools("big > 5"), vec![Some(true), Some(true), Some(false), None], "no value turned null");
        assert_eq!(bools("big > small"), vec![Some(true), Some(true), Some(false), None]);
        assert_eq!(bools("big == small"), vec![Some(false), Some(false), Some(true), None]);
        let halves = eval_on("big - big").expect("u64 - u64");
        assert_eq!(halves.data_type(), &DataType::UInt64);
        // With a signed operand the sum is exact in Decimal128 (u64::MAX + 1 = 2^64) ...
        let sum = eval_on("big + 1").expect("u64 + i64");
        let sum = sum.as_primitive::<arrow_array::types::Decimal128Type>();
        assert_eq!(sum.value(0), i128::from(u64::MAX) + 1);
        // Integer division truncates in every integer type, the decimal one included.
        let q = eval_on("big / 2").expect("u64 / i64");
        let q = q.as_primitive::<arrow_array::types::Decimal128Type>();
        assert_eq!((q.value(2), q.value(1)), (1, 1 << 62), "3 / 2 = 1, exactly");
        // ... and in UInt64 between unsigned operands, where overflow is an error.
        let e = eval_on("big + big").expect_err("u64::MAX * 2 overflows").to_string();
        assert!(e.to_lowercase().contains("overflow"), "{e}");
        let e = eval_on("-big").expect_err("no i64 holds -u64::MAX").to_string();
        assert!(e.contains("cannot negate UInt64"), "{e}");
    }

    #[test]
    fn casts_typed_literals_and_sql_coercions() {
        let days = arrow_array::Date32Array::from(vec![Some(19_905), Some(19_906), None]); // 2024-07-01, -02
        let text = StringArray::from(vec![Some("42"), Some("x"), None]);
        let price = arrow_array::Decimal128Array::from(vec![Some(10_050), Some(9_999), None])
            .with_precision_and_scale(18, 2)
            .expect("decimal");
        let b = RecordBatch::try_from_iter(vec![
            ("d", Arc::new(days) as ArrayRef),
            ("s", Arc::new(text) as ArrayRef),
            ("price", Arc::new(price) as ArrayRef),
        ])
        .expect("batch");
        let eval_on = |t: &str| eval(&parse_expr(t).expect("parse"), &b);
        let bools = |t: &str| -> Vec<Option<bool>> { eval_on(t).expect(t).as_boolean().iter().collect() };
        assert_eq!(bools("d >= '2024-07-02'"), vec![Some(false), Some(true), None], "string read as a date");
        assert_eq!(bools("d == date '2024-07-01'"), vec![Some(true), Some(false), None]);
        assert_eq!(bools("price > 100"), vec![Some(true), Some(false), None], "decimal against an integer");
        assert_eq!(bools("price > 99.5"), vec![Some(true), Some(true), None], "decimal against a float");
        let ints = eval_on("try_cast(s as int64)").expect("try_cast");
        assert_eq!(
            ints.as_primitive::<arrow_array::types::Int64Type>().iter().collect::<Vec<_>>(),
            vec![Some(42), None, None]
        );
        let e = eval_on("cast(s as int64)").expect_err("`x` is no integer").to_string();
        assert!(e.contains("cast of Utf8 to Int64"), "{e}");
        let e = eval_on("d >= 'July'").expect_err("not a date").to_string();
        assert!(e.contains("as Date32"), "{e}");
        let cents = eval_on("cast(price as decimal(10, 1))").expect("rescale");
        assert_eq!(cents.data_type(), &DataType::Decimal128(10, 1));
        let stamp = eval_on("cast(d as timestamp)").expect("date to timestamp");
        assert_eq!(
            stamp.as_primitive::<arrow_array::types::TimestampMicrosecondType>().value(0),
            19_905 * 86_400_000_000
        );
    }

    #[test]
    fn functions_lists_ranges_patterns_and_cases() {
        let b = RecordBatch::try_from_iter(vec![
            ("a", Arc::new(Int64Array::from(vec![Some(1), Some(5), None, Some(-3)])) as ArrayRef),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("Apple"), None, Some("apricot"), Some("Ébène")]))
                    as ArrayRef,
            ),
            ("f", Arc::new(Float64Array::from(vec![Some(2.345), Some(-2.5), None, Some(0.0)])) as ArrayRef),
            (
                "d",
                Arc::new(arrow_array::Date32Array::from(vec![Some(19_905), None, Some(0), Some(19_936)]))
                    as ArrayRef,
            ),
        ])
        .expect("batch");
        let eval_on = |t: &str| eval(&parse_expr(t).expect(t), &b).expect(t);
        let bools = |t: &str| -> Vec<Option<bool>> { eval_on(t).as_boolean().iter().collect() };
        let ints = |t: &str| -> Vec<Option<i64>> {
            let v = arrow_cast::cast(&eval_on(t), &DataType::Int64).expect("ints");
            v.as_primitive::<arrow_array::types::Int64Type>().iter().collect()
        };
        let strs = |t: &str| -> Vec<Option<String>> {
            eval_on(t).as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()
        };
        let floats = |t: &str| -> Vec<Option<f64>> {
            eval_on(t).as_primitive::<arrow_array::types::Float64Type>().iter().collect()
        };
        assert_eq!(bools("a in (1, -3)"), vec![Some(true), Some(false), None, Some(true)]);
        assert_eq!(bools("a not in (1, null)"), vec![Some(false), None, None, None], "SQL: null when unsure");
        assert_eq!(bools("a between 0 and 5"), vec![Some(true), Some(true), None, Some(false)]);
        assert_eq!(bools("a not between 0 and 4"), vec![Some(false), Some(true), None, Some(true)]);
        assert_eq!(bools("s like 'Ap%'"), vec![Some(true), None, Some(false), Some(false)]);
        assert_eq!(bools("s not like '_pr%'"), vec![Some(true), None, Some(false), Some(true)]);
        assert_eq!(bools("starts_with(s, 'Éb')"), vec![Some(false), None, Some(false), Some(true)]);
        assert_eq!(ints("coalesce(a, 0)"), vec![Some(1), Some(5), Some(0), Some(-3)]);
        assert_eq!(ints("coalesce(null, a, 7)"), vec![Some(1), Some(5), Some(7), Some(-3)]);
        assert_eq!(strs("lower(s)")[3].as_deref(), Some("ébène"));
        assert_eq!(strs("upper(s)")[0].as_deref(), Some("APPLE"));
        assert_eq!(ints("length(s)"), vec![Some(5), None, Some(7), Some(5)], "characters, not bytes");
        assert_eq!(ints("abs(a)"), vec![Some(1), Some(5), None, Some(3)]);
        assert_eq!(floats("round(f, 2)"), vec![Some(2.35), Some(-2.5), None, Some(0.0)]);
        assert_eq!(floats("round(f)"), vec![Some(2.0), Some(-3.0), None, Some(0.0)], "half away from zero");
        assert_eq!(
            floats("round(a * 1000 + 449, -3)"),
            vec![Some(1000.0), Some(5000.0), None, Some(-3000.0)]
        );
        assert_eq!(floats("round(f * 1e306, 2)")[0], Some(2.345 * 1e306), "too large to scale: unchanged");
        assert_eq!(ints("year(d)"), vec![Some(2024), None, Some(1970), Some(2024)]);
        assert_eq!(ints("month(d)"), vec![Some(7), None, Some(1), Some(8)]);
        assert_eq!(ints("day(d)"), vec![Some(1), None, Some(1), Some(1)]);
        assert_eq!(
            strs("case when a > 2 then 'big' when a < 0 then 'negative' else 'small' end"),
            vec![Some("small".into()), Some("big".into()), Some("small".into()), Some("negative".into())],
            "a null condition is not true"
        );
        assert_eq!(ints("case when a > 2 then a end"), vec![None, Some(5), None, None]);
        let e = |t: &str| eval(&parse_expr(t).expect(t), &b).expect_err(t).to_string();
        assert!(e("lower(a)").contains("lower needs strings, found Int64"));
        assert!(e("year(s)").contains("year needs a date or timestamp"));
        assert!(e("abs(s)").contains("abs needs numbers"));
        assert!(e("round(f, a)").contains("integer literal"));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = |t: &str| eval(&parse_expr(t).expect("parse"), &batch()).expect_err(t).to_string();
        assert!(e("b > 1").contains("unknown column `b` (columns: a, f, s)"));
        assert!(e("s + 1").contains("cannot combine Utf8 with Int64"));
        assert!(e("a / 0").to_lowercase().contains("divide by zero"));
        assert!(e("not a").contains("needs true/false"));
    }

    #[test]
    fn filter_and_project() {
        let mut out = Output::default();
        Filter::new("f", parse_expr("a >= 1").expect("p")).on_batch(0, batch(), &mut out).expect("filter");
        let kept: Vec<_> = out.drain().collect();
        assert_eq!(kept[0].1.num_rows(), 2);
        let cols = vec![
            ("twice".to_string(), parse_expr("a * 2").expect("p")),
            ("one".to_string(), parse_expr("1").expect("p")),
        ];
        Project::new("p", cols).on_batch(0, batch(), &mut out).expect("project");
        let b = out.drain().next().expect("batch").1;
        assert_eq!(b.schema().field(0).name(), "twice");
        let twice = b.column(0).as_primitive::<arrow_array::types::Int64Type>();
        assert_eq!(twice.iter().collect::<Vec<_>>(), vec![Some(2), Some(10), None, Some(-6)]);
        assert_eq!(b.column(1).len(), 4);
    }
}
