//! The order-independent checksum of a table, used by the summary sink and reproduced
//! independently by the tests. Specification:
//!
//! - value hash `v(x)`: integers of any width and the types stored as integers (dates, times,
//!   timestamps of any unit and zone, durations) `mix64(x as i64 as u64)` of the stored
//!   integer; floats (16, 32, 64 bits) `mix64(bits of the value as f64)` after making -0.0 into
//!   0.0 and every NaN the canonical NaN; booleans `mix64(0 or 1)`; strings and binaries of
//!   every kind `mix64(fnv1a64(bytes))`; decimals of any width `mix64(fnv1a64(32
//!   little-endian bytes of the unscaled value as a 256-bit integer))`; a dictionary-encoded
//!   value as its value; null [`NULL_VALUE`]. Intervals and nested types are not covered.
//! - column checksum: wrapping sum of `v` over the column's rows.
//! - row checksum: wrapping sum over rows of `r`, where `r = 0` then, for each column in
//!   order, `r = mix64(r ^ v(value))`.
//!
//! `mix64` is [`crate::partition::mix64`] (SplitMix64's finaliser); fnv1a64 is the 64-bit FNV-1a.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use updraft_runtime::OperatorError;
use updraft_runtime::report::{ColumnChecksum, TableSummary};

use crate::keys::canonical_f64_bits as canonical_f64;
use crate::partition::mix64;

/// Value hash of a null.
pub const NULL_VALUE: u64 = 0x9e37_79b9_7f4a_7c15;

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Value hashes of one column.
///
/// # Errors
/// For column types the checksum does not cover.
pub fn value_hashes(col: &ArrayRef) -> Result<Vec<u64>, OperatorError> {
    macro_rules! ints {
        ($t:ty) => {
            col.as_primitive::<$t>()
                .iter()
                .map(|v| v.map_or(NULL_VALUE, |x| mix64(x as i64 as u64)))
                .collect()
        };
    }
    let bytes = |v: Option<&[u8]>| v.map_or(NULL_VALUE, |b| mix64(fnv1a64(b)));
    Ok(match col.data_type() {
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => ints!(UInt64Type),
        DataType::Date32 => ints!(Date32Type),
        DataType::Date64 => ints!(Date64Type),
        DataType::Time32(TimeUnit::Second) => ints!(Time32SecondType),
        DataType::Time32(TimeUnit::Millisecond) => ints!(Time32MillisecondType),
        DataType::Time64(TimeUnit::Microsecond) => ints!(Time64MicrosecondType),
        DataType::Time64(TimeUnit::Nanosecond) => ints!(Time64NanosecondType),
        DataType::Timestamp(TimeUnit::Second, _) => ints!(TimestampSecondType),
        DataType::Timestamp(TimeUnit::Millisecond, _) => ints!(TimestampMillisecondType),
        DataType::Timestamp(TimeUnit::Microsecond, _) => ints!(TimestampMicrosecondType),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => ints!(TimestampNanosecondType),
        DataType::Duration(TimeUnit::Second) => ints!(DurationSecondType),
        DataType::Duration(TimeUnit::Millisecond) => ints!(DurationMillisecondType),
        DataType::Duration(TimeUnit::Microsecond) => ints!(DurationMicrosecondType),
        DataType::Duration(TimeUnit::Nanosecond) => ints!(DurationNanosecondType),
        DataType::Float16 => col
            .as_primitive::<Float16Type>()
            .iter()
            .map(|v| v.map_or(NULL_VALUE, |x| mix64(canonical_f64(f64::from(x)))))
            .collect(),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => {
            let wide = arrow_cast::cast(col, &DataType::Decimal256((*p).max(1), *s))?;
            wide.as_primitive::<Decimal256Type>()
                .iter()
                .map(|v| v.map_or(NULL_VALUE, |x| mix64(fnv1a64(&x.to_le_bytes()))))
                .collect()
        }
        DataType::Dictionary(_, _) => {
            let Some(dict) = col.as_any_dictionary_opt() else {
                return Err(OperatorError::Invalid(format!(
                    "cannot read column of type {}",
                    col.data_type()
                )));
            };
            let per_value = value_hashes(dict.values())?;
            dict.normalized_keys()
                .into_iter()
                .enumerate()
                .map(|(i, k)| {
                    if col.is_null(i) { NULL_VALUE } else { per_value.get(k).copied().unwrap_or(NULL_VALUE) }
                })
                .collect()
        }
        DataType::FixedSizeBinary(_) => col.as_fixed_size_binary().iter().map(bytes).collect(),
        DataType::BinaryView => col.as_binary_view().iter().map(bytes).collect(),
        DataType::Float64 => col
            .as_primitive::<Float64Type>()
            .iter()
            .map(|v| v.map_or(NULL_VALUE, |x| mix64(canonical_f64(x))))
            .collect(),
        DataType::Float32 => col
            .as_primitive::<Float32Type>()
            .iter()
            .map(|v| v.map_or(NULL_VALUE, |x| mix64(canonical_f64(f64::from(x)))))
            .collect(),
        DataType::Boolean => {
            col.as_boolean().iter().map(|v| v.map_or(NULL_VALUE, |b| mix64(u64::from(b)))).collect()
        }
        DataType::Utf8 => col.as_string::<i32>().iter().map(|v| bytes(v.map(str::as_bytes))).collect(),
        DataType::LargeUtf8 => col.as_string::<i64>().iter().map(|v| bytes(v.map(str::as_bytes))).collect(),
        DataType::Utf8View => col.as_string_view().iter().map(|v| bytes(v.map(str::as_bytes))).collect(),
        DataType::Binary => col.as_binary::<i32>().iter().map(bytes).collect(),
        DataType::LargeBinary => col.as_binary::<i64>().iter().map(bytes).collect(),
        DataType::Null => vec![NULL_VALUE; col.len()],
        other => {
            return Err(OperatorError::Invalid(format!(
                "the checksum does not cover columns of type {other}"
            )));
        }
    })
}

/// Adds a batch to a running summary (column names are taken from the first batch).
///
/// # Errors
/// For column types the checksum does not cover.
pub fn add_batch(summary: &mut TableSummary, batch: &RecordBatch) -> Result<(), OperatorError> {
    if summary.columns.is_empty() {
        summary.columns = batch
            .schema()
            .fields()
            .iter()
            .map(|f| ColumnChecksum { name: f.name().clone(), checksum: 0 })
            .collect();
    }
    let mut rows = vec![0u64; batch.num_rows()];
    for (c, col) in batch.columns().iter().enumerate() {
        let hashes = value_hashes(col)?;
        let mut sum = 0u64;
        for (r, h) in rows.iter_mut().zip(&hashes) {
            sum = sum.wrapping_add(*h);
            *r = mix64(*r ^ *h);
        }
        if let Some(cs) = summary.columns.get_mut(c) {
            cs.checksum = cs.checksum.wrapping_add(sum);
        }
    }
    summary.rows += batch.num_rows() as u64;
    summary.row_checksum = rows.iter().fold(summary.row_checksum, |acc, r| acc.wrapping_add(*r));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn batch(k: Vec<i64>, s: Vec<Option<&str>>) -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("k", Arc::new(Int64Array::from(k)) as ArrayRef),
            ("s", Arc::new(StringArray::from(s)) as ArrayRef),
        ])
        .expect("batch")
    }

    #[test]
    fn order_and_batching_do_not_matter_but_pairing_does() {
        let mut a = TableSummary::default();
        add_batch(&mut a, &batch(vec![1, 2, 3], vec![Some("x"), None, Some("z")])).expect("sum");
        let mut b = TableSummary::default();
        add_batch(&mut b, &batch(vec![3], vec![Some("z")])).expect("sum");
        add_batch(&mut b, &batch(vec![2, 1], vec![None, Some("x")])).expect("sum");
        assert_eq!(a, b);
        let mut c = TableSummary::default();
        add_batch(&mut c, &batch(vec![1, 2, 3], vec![Some("z"), None, Some("x")])).expect("sum");
        assert_eq!(a.columns, c.columns, "same values per column");
        assert_ne!(a.row_checksum, c.row_checksum, "but rows paired differently");
    }

    #[test]
    fn encodings_and_widths_of_one_value_hash_alike() {
        use arrow_array::{Decimal128Array, Decimal256Array, DictionaryArray, TimestampMicrosecondArray};
        let plain: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None, Some("b"), Some("a")]));
        let dict: DictionaryArray<Int32Type> =
            vec![Some("a"), None, Some("b"), Some("a")].into_iter().collect();
        assert_eq!(
            value_hashes(&plain).expect("plain"),
            value_hashes(&(Arc::new(dict) as ArrayRef)).expect("dict")
        );
        let ts: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![5, -7]).with_timezone("UTC"));
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![5, -7]));
        assert_eq!(value_hashes(&ts).expect("ts"), value_hashes(&ints).expect("ints"));
        let d128: ArrayRef =
            Arc::new(Decimal128Array::from(vec![12345, -1]).with_precision_and_scale(18, 2).expect("p"));
        let d256: ArrayRef = Arc::new(
            Decimal256Array::from(vec![arrow_buffer::i256::from(12345), arrow_buffer::i256::from(-1)])
                .with_precision_and_scale(40, 2)
                .expect("p"),
        );
        let h = value_hashes(&d128).expect("d128");
        assert_eq!(h, value_hashes(&d256).expect("d256"));
        assert_eq!(h[0], mix64(fnv1a64(&arrow_buffer::i256::from(12345).to_le_bytes())));
    }

    #[test]
    fn matches_the_written_specification() {
        let mut s = TableSummary::default();
        add_batch(&mut s, &batch(vec![7], vec![Some("ab")])).expect("sum");
        let vk = mix64(7);
        let vs = mix64(fnv1a64(b"ab"));
        assert_eq!(s.columns[0].checksum, vk);
        assert_eq!(s.columns[1].checksum, vs);
        assert_eq!(s.row_checksum, mix64(mix64(vk) ^ vs));
    }
}
