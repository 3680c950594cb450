//! Row hashing and hash partitioning. The hash is fixed (no per-process seed), so every worker
//! sends a key to the same rank, and both sides of a join agree.
//!
//! Integers of every width and signedness hash by their value (so an int32 5, an int64 5 and a
//! uint64 5 land together), floats by their bits (with -0.0 and NaN made canonical: see
//! [`crate::keys`]), strings and binaries of every offset width by XXH3 of their bytes, a
//! dictionary-encoded column as its values (hashed once per dictionary entry), and every other
//! type Arrow's row format encodes (decimals, times, timestamps, durations, intervals, nested
//! types) by XXH3 of its row encoding. A null hashes to a constant. Several key columns are
//! combined in order.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Schema};
use arrow_select::take::take_record_batch;
use updraft_runtime::OperatorError;

use arrow_row::{RowConverter, SortField};

use crate::keys::{canonical_column, canonical_f64_bits};

/// Hash of a null key value.
pub const NULL_HASH: u64 = 0x5851_f42d_4c95_7f2d;

/// SplitMix64's finaliser: a fast, well-mixing bijection on 64 bits.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[inline]
fn combine(acc: u64, h: u64) -> u64 {
    mix64(acc.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ h)
}

macro_rules! hash_ints {
    ($arr:expr, $t:ty, $out:expr, $first:expr) => {{
        let a = $arr.as_primitive::<$t>();
        for (i, h) in $out.iter_mut().enumerate() {
            let v = if a.is_null(i) { NULL_HASH } else { mix64(a.value(i) as i64 as u64) };
            *h = if $first { v } else { combine(*h, v) };
        }
    }};
}

fn hash_column(col: &ArrayRef, out: &mut [u64], first: bool) -> Result<(), OperatorError> {
    match col.data_type() {
        DataType::Int8 => hash_ints!(col, Int8Type, out, first),
        DataType::Int16 => hash_ints!(col, Int16Type, out, first),
        DataType::Int32 => hash_ints!(col, Int32Type, out, first),
        DataType::Int64 => hash_ints!(col, Int64Type, out, first),
        DataType::UInt8 => hash_ints!(col, UInt8Type, out, first),
        DataType::UInt16 => hash_ints!(col, UInt16Type, out, first),
        DataType::UInt32 => hash_ints!(col, UInt32Type, out, first),
        DataType::UInt64 => hash_ints!(col, UInt64Type, out, first),
        DataType::Date32 => hash_ints!(col, Date32Type, out, first),
        DataType::Date64 => hash_ints!(col, Date64Type, out, first),
        DataType::Float64 | DataType::Float32 => {
            let values: Vec<Option<f64>> = match col.data_type() {
                DataType::Float64 => col.as_primitive::<Float64Type>().iter().collect(),
                _ => col.as_primitive::<Float32Type>().iter().map(|v| v.map(f64::from)).collect(),
            };
            for (h, v) in out.iter_mut().zip(values) {
                let x = v.map_or(NULL_HASH, |v| mix64(canonical_f64_bits(v)));
                *h = if first { x } else { combine(*h, x) };
            }
        }
        DataType::Boolean => {
            let a = col.as_boolean();
            for (i, h) in out.iter_mut().enumerate() {
                let x = if a.is_null(i) { NULL_HASH } else { mix64(u64::from(a.value(i))) };
                *h = if first { x } else { combine(*h, x) };
            }
        }
        DataType::Utf8 => hash_bytes(col.as_string::<i32>().iter().map(|v| v.map(str::as_bytes)), out, first),
        DataType::LargeUtf8 => {
            hash_bytes(col.as_string::<i64>().iter().map(|v| v.map(str::as_bytes)), out, first)
        }
        DataType::Utf8View => {
            hash_bytes(col.as_string_view().iter().map(|v| v.map(str::as_bytes)), out, first)
        }
        DataType::Binary => hash_bytes(col.as_binary::<i32>().iter(), out, first),
        DataType::LargeBinary => hash_bytes(col.as_binary::<i64>().iter(), out, first),
        DataType::BinaryView => hash_bytes(col.as_binary_view().iter(), out, first),
        DataType::Dictionary(_, _) => {
            let Some(dict) = col.as_any_dictionary_opt() else {
                return Err(OperatorError::Invalid(format!(
                    "cannot read key column of type {}",
                    col.data_type()
                )));
            };
            let mut per_value = vec![0u64; dict.values().len()];
            hash_column(dict.values(), &mut per_value, true)?;
            for ((i, h), k) in out.iter_mut().enumerate().zip(dict.normalized_keys()) {
                let x =
                    if col.is_null(i) { NULL_HASH } else { per_value.get(k).copied().unwrap_or(NULL_HASH) };
                *h = if first { x } else { combine(*h, x) };
            }
        }
        // Every value null: every row is the null key.
        DataType::Null => {
            for h in out.iter_mut() {
                *h = if first { NULL_HASH } else { combine(*h, NULL_HASH) };
            }
        }
        other => {
            // Every other type by its row encoding: equal keys of one type encode alike.
            let conv = RowConverter::new(vec![SortField::new(other.clone())]).map_err(|e| {
                OperatorError::Invalid(format!("cannot hash key columns of type {other}: {e}"))
            })?;
            let rows = conv.convert_columns(&[canonical_column(col)])?;
            for (i, h) in out.iter_mut().enumerate() {
                let x =
                    if col.is_null(i) { NULL_HASH } else { xxhash_rust::xxh3::xxh3_64(rows.row(i).as_ref()) };
                *h = if first { x } else { combine(*h, x) };
            }
        }
    }
    Ok(())
}

fn hash_bytes<'a>(values: impl Iterator<Item = Option<&'a [u8]>>, out: &mut [u64], first: bool) {
    for (h, v) in out.iter_mut().zip(values) {
        let x = v.map_or(NULL_HASH, xxhash_rust::xxh3::xxh3_64);
        *h = if first { x } else { combine(*h, x) };
    }
}

/// One hash per row over the key columns, in order.
///
/// # Errors
/// If a key column has a type that cannot be hashed.
pub fn hash_rows(keys: &[ArrayRef], rows: usize) -> Result<Vec<u64>, OperatorError> {
    let mut out = vec![0u64; rows];
    for (i, col) in keys.iter().enumerate() {
        hash_column(col, &mut out, i == 0)?;
    }
    Ok(out)
}

/// The partition of a hash among `n` (multiply-shift: uniform, no modulo bias).
#[inline]
pub fn partition_of(hash: u64, n: u32) -> u32 {
    ((u128::from(hash) * u128::from(n)) >> 64) as u32
}

/// Splits `batch` into `n` batches by the hash of its `keys` columns; entry `p` holds the
/// rows of partition `p` in their original order (`None` when it has none).
///
/// # Errors
/// Key types that cannot be hashed (with more than one partition: one takes every row as it is).
pub fn hash_partition(
    batch: &RecordBatch,
    keys: &[usize],
    n: u32,
) -> Result<Vec<Option<RecordBatch>>, OperatorError> {
    let rows = batch.num_rows();
    if n <= 1 {
        // One partition: every row, unhashed (none: no partition).
        return Ok((0..n).map(|_| (rows > 0).then(|| batch.clone())).collect());
    }
    let cols: Vec<ArrayRef> = keys.iter().map(|&k| batch.column(k).clone()).collect();
    let hashes = hash_rows(&cols, rows)?;
    let parts: Vec<u32> = hashes.iter().map(|h| partition_of(*h, n)).collect();
    let mut counts = vec![0usize; n as usize];
    for p in &parts {
        counts[*p as usize] += 1;
    }
    let mut starts = Vec::with_capacity(n as usize);
    let mut acc = 0;
    for c in &counts {
        starts.push(acc);
        acc += c;
    }
    let mut fill = starts.clone();
    let mut order = vec![0u32; rows];
    for (row, p) in parts.iter().enumerate() {
        order[fill[*p as usize]] = row as u32;
        fill[*p as usize] += 1;
    }
    let order = UInt32Array::from(order);
    let mut out = Vec::with_capacity(n as usize);
    for p in 0..n as usize {
        if counts[p] == 0 {
            out.push(None);
        } else if counts[p] == rows {
            out.push(Some(batch.clone()));
        } else {
            let idx = order.slice(starts[p], counts[p]);
            out.push(Some(take_record_batch(batch, &idx)?));
        }
    }
    Ok(out)
}

/// Index of each named column in `batch`, or an error naming the missing one and what exists.
/// True when both schemas have the same column names and types, in order (nullability and
/// metadata aside).
pub fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// `name: type, ...` for messages.
pub fn describe_columns(schema: &Schema) -> String {
    schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
}

///
/// # Errors
/// A column that is not in the schema.
pub fn column_indices(
    schema: &arrow_schema::Schema,
    names: &[String],
    what: &str,
) -> Result<Vec<usize>, OperatorError> {
    names
        .iter()
        .map(|n| {
            schema.index_of(n).map_err(|_| {
                let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                OperatorError::Invalid(format!(
                    "{what} column `{n}` is not in the input (columns: {})",
                    have.join(", ")
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int32Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn ints_of_any_width_hash_alike_and_nulls_are_constant() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), None, Some(-1)]));
        let b: ArrayRef = Arc::new(Int32Array::from(vec![Some(5), None, Some(-1)]));
        assert_eq!(hash_rows(std::slice::from_ref(&a), 3).expect("hash"), hash_rows(&[b], 3).expect("hash"));
        assert_eq!(hash_rows(&[a], 3).expect("hash")[1], NULL_HASH);
    }

    #[test]
    fn partitions_cover_every_row_once_and_keep_equal_keys_together() {
        let keys: Vec<i64> = (0..1000).map(|i| i % 37).collect();
        let names: Vec<String> = (0..1000).map(|i| format!("n{}", i % 11)).collect();
        let batch = RecordBatch::try_from_iter(vec![
            ("k", Arc::new(Int64Array::from(keys)) as ArrayRef),
            ("s", Arc::new(StringArray::from(names)) as ArrayRef),
        ])
        .expect("batch");
        let parts = hash_partition(&batch, &[0, 1], 4).expect("partition");
        let total: usize = parts.iter().flatten().map(|b| b.num_rows()).sum();
        assert_eq!(total, 1000);
        let mut owner = std::collections::HashMap::new();
        for (p, b) in parts.iter().enumerate() {
            let Some(b) = b else { continue };
            let k = b.column(0).as_primitive::<Int64Type>();
            let s = b.column(1).as_string::<i32>();
            for i in 0..b.num_rows() {
                let prev = owner.insert((k.value(i), s.value(i).to_string()), p);
                assert!(prev.is_none_or(|q| q == p), "a key went to two partitions");
            }
        }
        assert!(parts.iter().filter(|p| p.is_some()).count() >= 3, "hash spreads keys");
    }

    #[test]
    fn float_zero_and_nan_are_canonical() {
        let a: ArrayRef = Arc::new(arrow_array::Float64Array::from(vec![0.0, -0.0, f64::NAN, -f64::NAN]));
        let h = hash_rows(&[a], 4).expect("hash");
        assert_eq!(h[0], h[1]);
        assert_eq!(h[2], h[3]);
    }

    #[test]
    fn dictionaries_hash_as_their_values_and_every_row_encodable_type_hashes() {
        let plain: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None, Some("y"), Some("x")]));
        let dict: arrow_array::DictionaryArray<Int32Type> =
            vec![Some("x"), None, Some("y"), Some("x")].into_iter().collect();
        assert_eq!(
            hash_rows(&[plain], 4).expect("plain"),
            hash_rows(&[Arc::new(dict) as ArrayRef], 4).expect("dict")
        );
        let ts: ArrayRef = Arc::new(
            arrow_array::TimestampMicrosecondArray::from(vec![Some(1), Some(2), Some(1), None])
                .with_timezone("UTC"),
        );
        let h = hash_rows(&[ts], 4).expect("timestamps hash");
        assert_eq!(h[0], h[2]);
        assert_ne!(h[0], h[1]);
        assert_eq!(h[3], NULL_HASH);
        let dec: ArrayRef = Arc::new(
            arrow_array::Decimal128Array::from(vec![100, 100, 7])
                .with_precision_and_scale(18, 2)
                .expect("decimal"),
        );
        let h = hash_rows(&[dec], 3).expect("decimals hash");
        assert_eq!(h[0], h[1]);
        let big: ArrayRef = Arc::new(arrow_array::UInt64Array::from(vec![5, u64::MAX]));
        let signed: ArrayRef = Arc::new(Int64Array::from(vec![5, -1]));
        assert_eq!(hash_rows(&[big], 2).expect("u64")[0], hash_rows(&[signed], 2).expect("i64")[0]);
    }

    #[test]
    fn a_null_typed_key_is_the_null_key_on_every_row() {
        let a: ArrayRef = Arc::new(arrow_array::NullArray::new(2));
        assert_eq!(hash_rows(&[a], 2).expect("Null keys hash"), vec![NULL_HASH; 2]);
    }
}
