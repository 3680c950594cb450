//! Key equality: the one definition every operator that compares, hashes or orders keys uses
//! (partitioning, joins, group-by, distinct and set operations, sort).
//!
//! | values | equal when | order |
//! |---|---|---|
//! | floats | -0.0 equals 0.0; every NaN equals every other NaN | NaN after every number (ascending), before every number (descending) |
//! | integers | same value, whatever the width | by value |
//! | null | joins: never matches; group-by, distinct, set operations: one group | placed by `nulls first`/`nulls last` |
//!
//! | dictionary-encoded | by value: a `Dictionary(Int32, Utf8)` key equals the same string in a `Utf8` key | as its values |
//! | integers of different signedness (joins) | same value; a value only one side's type can hold (a `UInt64` ≥ 2^63, a negative `Int64` against unsigned) matches nothing | by value |
//!
//! This is what DuckDB and Polars do. Operators compare keys in Arrow's row format (or hash
//! them), which orders floats by their bits (IEEE 754 total order: -0.0 before 0.0, NaNs by
//! sign and payload); [`key_columns`] rewrites key columns first (dictionaries decoded to their
//! values, -0.0 made 0.0 and every NaN the one positive quiet NaN), so that the row format's
//! equality and order are the ones above; [`key_type`] is the type that gives. Columns of other
//! types pass through untouched (an `Arc` clone). Every type Arrow's row format encodes can be
//! a key: integers, floats, decimals, strings, binaries, booleans, dates, times, timestamps
//! (with or without a time zone), durations, intervals, and lists and structs of these (floats
//! inside a list or struct are compared by their bits: -0.0 and 0.0 differ there). A column of
//! type Null (every value null) is a key whose every row is the null key.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef, PrimitiveArray};
use arrow_schema::DataType;
use updraft_runtime::OperatorError;

/// `v` with -0.0 made 0.0 and every NaN the canonical (positive, quiet) NaN.
#[inline]
pub fn canonical_f64(v: f64) -> f64 {
    if v.is_nan() {
        f64::NAN
    } else if v == 0.0 {
        0.0
    } else {
        v
    }
}

/// As [`canonical_f64`] for `f32`.
#[inline]
pub fn canonical_f32(v: f32) -> f32 {
    if v.is_nan() {
        f32::NAN
    } else if v == 0.0 {
        0.0
    } else {
        v
    }
}

/// The bits of [`canonical_f64`]`(v)`: equal for values that are equal keys.
#[inline]
pub fn canonical_f64_bits(v: f64) -> u64 {
    canonical_f64(v).to_bits()
}

/// True when `t` (or, for a dictionary, its value type) is a float type whose values need
/// [`canonical_column`] before they are compared as keys.
pub fn needs_canonical(t: &DataType) -> bool {
    match t {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => true,
        DataType::Dictionary(_, v) => needs_canonical(v),
        _ => false,
    }
}

/// `col` with its float values made canonical; any other column as it is.
pub fn canonical_column(col: &ArrayRef) -> ArrayRef {
    match col.data_type() {
        DataType::Float64 => {
            let a = col.as_primitive::<Float64Type>();
            let clean = a.values().iter().all(|v| v.to_bits() == canonical_f64(*v).to_bits());
            if clean { Arc::clone(col) } else { Arc::new(a.unary::<_, Float64Type>(canonical_f64)) }
        }
        DataType::Float32 => {
            let a = col.as_primitive::<Float32Type>();
            let clean = a.values().iter().all(|v| v.to_bits() == canonical_f32(*v).to_bits());
            if clean { Arc::clone(col) } else { Arc::new(a.unary::<_, Float32Type>(canonical_f32)) }
        }
        DataType::Float16 => {
            let a = col.as_primitive::<Float16Type>();
            let canon = |v: half::f16| {
                if v.is_nan() {
                    half::f16::NAN
                } else if v == half::f16::ZERO {
                    half::f16::ZERO
                } else {
                    v
                }
            };
            let out: PrimitiveArray<Float16Type> = a.unary(canon);
            Arc::new(out)
        }
        DataType::Dictionary(_, v) if needs_canonical(v) => match col.as_any_dictionary_opt() {
            Some(d) => d.with_values(canonical_column(d.values())),
            None => Arc::clone(col),
        },
        _ => Arc::clone(col),
    }
}

/// The type a key column of type `t` is compared as, and what [`key_column`] returns: a
/// dictionary's value type (keys compare by value), any other type itself.
pub fn key_type(t: &DataType) -> DataType {
    match t {
        DataType::Dictionary(_, v) => key_type(v),
        other => other.clone(),
    }
}

/// `col` with a dictionary decoded to its values (of type [`key_type`]); any other column as it
/// is, values untouched.
///
/// # Errors
/// A dictionary whose values cannot be decoded (an Arrow cast error).
pub fn decoded(col: &ArrayRef) -> Result<ArrayRef, OperatorError> {
    match col.data_type() {
        DataType::Dictionary(_, _) => Ok(arrow_cast::cast(col, &key_type(col.data_type()))?),
        _ => Ok(Arc::clone(col)),
    }
}

/// `col` ready to be compared, hashed or ordered as a key: a dictionary decoded to its values,
/// float values made canonical; of type [`key_type`]`(col.data_type())`.
///
/// # Errors
/// A dictionary whose values cannot be decoded (an Arrow cast error).
pub fn key_column(col: &ArrayRef) -> Result<ArrayRef, OperatorError> {
    Ok(canonical_column(&decoded(col)?))
}

/// [`key_column`] of each column.
///
/// # Errors
/// As [`key_column`].
pub fn key_columns(cols: &[ArrayRef]) -> Result<Vec<ArrayRef>, OperatorError> {
    cols.iter().map(key_column).collect()
}

/// Order-preserving 64-bit images of the values of a key column (as [`key_column`] returns
/// it): unsigned `u64`s whose order is the column's key order (integers by value; floats with
/// -0.0 = 0.0 and NaN above every number; dates, times, timestamps and durations by their
/// count), for sorts that compare machine words instead of encoded rows. `None` for any other
/// type. A null slot's image is meaningless: check validity apart.
pub fn ordered_u64(col: &ArrayRef) -> Option<Vec<u64>> {
    use arrow_array::types::*;
    use arrow_buffer::ArrowNativeType;
    use arrow_schema::TimeUnit::{Microsecond, Millisecond, Nanosecond, Second};
    fn signed<T: arrow_array::ArrowPrimitiveType>(col: &ArrayRef) -> Vec<u64> {
        let flip = |v: i64| (v as u64) ^ (1 << 63);
        col.as_primitive::<T>().values().iter().map(|v| flip(v.to_i64().unwrap_or_default())).collect()
    }
    fn unsigned<T: arrow_array::ArrowPrimitiveType>(col: &ArrayRef) -> Vec<u64> {
        col.as_primitive::<T>().values().iter().map(|v| v.to_i64().map_or(u64::MAX, |v| v as u64)).collect()
    }
    fn float(v: f64) -> u64 {
        let bits = canonical_f64(v).to_bits();
        if bits >> 63 == 1 { !bits } else { bits | (1 << 63) }
    }
    Some(match col.data_type() {
        DataType::Int8 => signed::<Int8Type>(col),
        DataType::Int16 => signed::<Int16Type>(col),
        DataType::Int32 => signed::<Int32Type>(col),
        DataType::Int64 => signed::<Int64Type>(col),
        DataType::Date32 => signed::<Date32Type>(col),
        DataType::Date64 => signed::<Date64Type>(col),
        DataType::Time32(Second) => signed::<Time32SecondType>(col),
        DataType::Time32(Millisecond) => signed::<Time32MillisecondType>(col),
        DataType::Time64(Microsecond) => signed::<Time64MicrosecondType>(col),
        DataType::Time64(Nanosecond) => signed::<Time64NanosecondType>(col),
        DataType::Timestamp(Second, _) => signed::<TimestampSecondType>(col),
        DataType::Timestamp(Millisecond, _) => signed::<TimestampMillisecondType>(col),
        DataType::Timestamp(Microsecond, _) => signed::<TimestampMicrosecondType>(col),
        DataType::Timestamp(Nanosecond, _) => signed::<TimestampNanosecondType>(col),
        DataType::Duration(Second) => signed::<DurationSecondType>(col),
        DataType::Duration(Millisecond) => signed::<DurationMillisecondType>(col),
        DataType::Duration(Microsecond) => signed::<DurationMicrosecondType>(col),
        DataType::Duration(Nanosecond) => signed::<DurationNanosecondType>(col),
        DataType::UInt8 => unsigned::<UInt8Type>(col),
        DataType::UInt16 => unsigned::<UInt16Type>(col),
        DataType::UInt32 => unsigned::<UInt32Type>(col),
        DataType::UInt64 => col.as_primitive::<UInt64Type>().values().to_vec(),
        DataType::Float64 => col.as_primitive::<Float64Type>().values().iter().map(|v| float(*v)).collect(),
        DataType::Float32 => {
            col.as_primitive::<Float32Type>().values().iter().map(|v| float(f64::from(*v))).collect()
        }
        DataType::Float16 => {
            col.as_primitive::<Float16Type>().values().iter().map(|v| float(v.to_f64())).collect()
        }
        _ => return None,
    })
}

/// The values whose [`ordered_u64`] images are `images`, as a column of type `ty` with
/// validity `nulls` (the inverse of [`ordered_u64`]; a float comes back canonical). `None` for a
/// type [`ordered_u64`] does not handle.
pub fn from_ordered_u64(
    ty: &DataType,
    images: &[u64],
    nulls: Option<arrow_buffer::NullBuffer>,
) -> Option<ArrayRef> {
    use arrow_array::types::*;
    use arrow_buffer::ArrowNativeType;
    use arrow_schema::TimeUnit::{Microsecond, Millisecond, Nanosecond, Second};
    fn build<T: arrow_array::ArrowPrimitiveType>(
        ty: &DataType,
        images: &[u64],
        nulls: Option<arrow_buffer::NullBuffer>,
        value: impl Fn(u64) -> T::Native,
    ) -> ArrayRef {
        let values: Vec<T::Native> = images.iter().map(|u| value(*u)).collect();
        Arc::new(PrimitiveArray::<T>::new(values.into(), nulls).with_data_type(ty.clone()))
    }
    fn signed<T: arrow_array::ArrowPrimitiveType>(u: u64) -> T::Native {
        // `as` keeps the low bits: the two's complement value of the narrower type.
        T::Native::usize_as(((u ^ (1 << 63)) as i64) as usize)
    }
    fn unsigned<T: arrow_array::ArrowPrimitiveType>(u: u64) -> T::Native {
        T::Native::usize_as(u as usize)
    }
    fn float(u: u64) -> f64 {
        f64::from_bits(if u >> 63 == 1 { u & !(1 << 63) } else { !u })
    }
    Some(match ty {
        DataType::Int8 => build::<Int8Type>(ty, images, nulls, signed::<Int8Type>),
        DataType::Int16 => build::<Int16Type>(ty, images, nulls, signed::<Int16Type>),
        DataType::Int32 => build::<Int32Type>(ty, images, nulls, signed::<Int32Type>),
        DataType::Int64 => build::<Int64Type>(ty, images, nulls, signed::<Int64Type>),
        DataType::Date32 => build::<Date32Type>(ty, images, nulls, signed::<Date32Type>),
        DataType::Date64 => build::<Date64Type>(ty, images, nulls, signed::<Date64Type>),
        DataType::Time32(Second) => build::<Time32SecondType>(ty, images, nulls, signed::<Time32SecondType>),
        DataType::Time32(Millisecond) => {
            build::<Time32MillisecondType>(ty, images, nulls, signed::<Time32MillisecondType>)
        }
        DataType::Time64(Microsecond) => {
            build::<Time64MicrosecondType>(ty, images, nulls, signed::<Time64MicrosecondType>)
        }
        DataType::Time64(Nanosecond) => {
            build::<Time64NanosecondType>(ty, images, nulls, signed::<Time64NanosecondType>)
        }
        DataType::Timestamp(Second, _) => {
            build::<TimestampSecondType>(ty, images, nulls, signed::<TimestampSecondType>)
        }
        DataType::Timestamp(Millisecond, _) => {
            build::<TimestampMillisecondType>(ty, images, nulls, signed::<TimestampMillisecondType>)
        }
        DataType::Timestamp(Microsecond, _) => {
            build::<TimestampMicrosecondType>(ty, images, nulls, signed::<TimestampMicrosecondType>)
        }
        DataType::Timestamp(Nanosecond, _) => {
            build::<TimestampNanosecondType>(ty, images, nulls, signed::<TimestampNanosecondType>)
        }
        DataType::Duration(Second) => {
            build::<DurationSecondType>(ty, images, nulls, signed::<DurationSecondType>)
        }
        DataType::Duration(Millisecond) => {
            build::<DurationMillisecondType>(ty, images, nulls, signed::<DurationMillisecondType>)
        }
        DataType::Duration(Microsecond) => {
            build::<DurationMicrosecondType>(ty, images, nulls, signed::<DurationMicrosecondType>)
        }
        DataType::Duration(Nanosecond) => {
            build::<DurationNanosecondType>(ty, images, nulls, signed::<DurationNanosecondType>)
        }
        DataType::UInt8 => build::<UInt8Type>(ty, images, nulls, unsigned::<UInt8Type>),
        DataType::UInt16 => build::<UInt16Type>(ty, images, nulls, unsigned::<UInt16Type>),
        DataType::UInt32 => build::<UInt32Type>(ty, images, nulls, unsigned::<UInt32Type>),
        DataType::UInt64 => build::<UInt64Type>(ty, images, nulls, |u| u),
        DataType::Float64 => build::<Float64Type>(ty, images, nulls, float),
        DataType::Float32 => build::<Float32Type>(ty, images, nulls, |u| float(u) as f32),
        DataType::Float16 => build::<Float16Type>(ty, images, nulls, |u| half::f16::from_f64(float(u))),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Float64Array;
    use arrow_row::{RowConverter, SortField};

    #[test]
    fn zeros_and_nans_compare_equal_in_row_format_and_nan_sorts_last() {
        let col: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(0.0),
            Some(-0.0),
            Some(f64::NAN),
            Some(-f64::NAN),
            Some(f64::INFINITY),
            None,
            Some(-1.5),
        ]));
        let conv = RowConverter::new(vec![SortField::new(DataType::Float64)]).expect("converter");
        let rows = conv.convert_columns(&key_columns(&[col]).expect("keys")).expect("rows");
        assert_eq!(rows.row(0), rows.row(1), "0.0 and -0.0");
        assert_eq!(rows.row(2), rows.row(3), "NaN and -NaN");
        assert!(rows.row(4) < rows.row(2), "NaN after infinity");
        assert!(rows.row(6) < rows.row(0));
    }

    #[test]
    fn other_columns_are_passed_through() {
        let col: ArrayRef = Arc::new(arrow_array::Int64Array::from(vec![1, 2]));
        assert!(Arc::ptr_eq(&canonical_column(&col), &col));
        let clean: ArrayRef = Arc::new(Float64Array::from(vec![1.0, f64::NAN]));
        assert!(Arc::ptr_eq(&canonical_column(&clean), &clean));
    }

    #[test]
    fn dictionary_values_are_made_canonical() {
        let values: ArrayRef = Arc::new(Float64Array::from(vec![-0.0, 2.0]));
        let keys = arrow_array::Int32Array::from(vec![0, 1, 0]);
        let dict: ArrayRef =
            Arc::new(arrow_array::DictionaryArray::try_new(keys, values).expect("dictionary"));
        let out = canonical_column(&dict);
        let d = out.as_any_dictionary();
        assert_eq!(d.values().as_primitive::<Float64Type>().value(0).to_bits(), 0.0f64.to_bits());
    }

    #[test]
    fn word_images_keep_order_and_decode_back() {
        use arrow_array::{Date32Array, Float32Array, Int8Array, TimestampMicrosecondArray, UInt64Array};
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int8Array::from(vec![Some(-128), None, Some(0), Some(127), Some(-1)])),
            Arc::new(UInt64Array::from(vec![Some(u64::MAX), Some(0), None, Some(1 << 63), Some(7)])),
            Arc::new(Float32Array::from(vec![
                Some(-0.0),
                Some(f32::NAN),
                Some(f32::NEG_INFINITY),
                None,
                Some(1e-3),
            ])),
            Arc::new(Float64Array::from(vec![Some(f64::MAX), Some(-f64::NAN), Some(0.0), Some(-2.5), None])),
            Arc::new(Date32Array::from(vec![Some(-719_162), Some(0), None, Some(2_932_896), Some(19_000)])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    Some(i64::MIN),
                    None,
                    Some(0),
                    Some(i64::MAX),
                    Some(-5),
                ])
                .with_timezone("Europe/Paris"),
            ),
        ];
        for col in cols {
            let col = key_column(&col).expect("key column");
            let images = ordered_u64(&col).expect("an image type");
            let conv = RowConverter::new(vec![SortField::new(col.data_type().clone())]).expect("converter");
            let rows = conv.convert_columns(&[Arc::clone(&col)]).expect("rows");
            for i in 0..col.len() {
                for j in 0..col.len() {
                    if col.is_valid(i) && col.is_valid(j) {
                        assert_eq!(
                            images[i].cmp(&images[j]),
                            rows.row(i).cmp(&rows.row(j)),
                            "{col:?} rows {i}, {j}"
                        );
                    }
                }
            }
            let back = from_ordered_u64(col.data_type(), &images, col.logical_nulls()).expect("decodes");
            assert_eq!(back.data_type(), col.data_type());
            let again = conv.convert_columns(&[back]).expect("rows");
            assert!((0..col.len()).all(|i| again.row(i) == rows.row(i)), "{col:?} decodes to itself");
        }
    }
}
