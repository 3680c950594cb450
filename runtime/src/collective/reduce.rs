//! Element-wise reductions of Arrow arrays, and their encoding in collective messages.
//!
//! Nulls are skipped: an element is null in the result only where it is null on every rank
//! (`count` is never null: it counts the ranks with a value there).

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch};
use arrow_schema::{Field, Schema};
use bytes::Bytes;

/// How contributions combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum (integer overflow is an error).
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Number of ranks with a non-null value (Int64).
    Count,
}

impl ReduceOp {
    /// `sum`, `min`, `max` or `count`.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Min => "min",
            ReduceOp::Max => "max",
            ReduceOp::Count => "count",
        }
    }
}

/// This rank's contribution, ready to combine: `count` turns values into 0/1 counts.
///
/// # Errors
/// Types that cannot be reduced.
pub(crate) fn prepare(op: ReduceOp, data: &ArrayRef) -> Result<ArrayRef, String> {
    if op == ReduceOp::Count {
        let counts: Int64Array = (0..data.len()).map(|i| Some(i64::from(data.is_valid(i)))).collect();
        return Ok(Arc::new(counts));
    }
    if !data.data_type().is_numeric() {
        return Err(format!("cannot {} values of type {}", op.name(), data.data_type()));
    }
    Ok(Arc::clone(data))
}

/// `a ⊕ b`, element by element.
///
/// # Errors
/// Different lengths or types, or an integer sum overflowing.
pub fn combine(op: ReduceOp, a: &ArrayRef, b: &ArrayRef) -> Result<ArrayRef, String> {
    if a.len() != b.len() || a.data_type() != b.data_type() {
        return Err(format!(
            "contributions differ: {} values of {} and {} values of {}",
            a.len(),
            a.data_type(),
            b.len(),
            b.data_type()
        ));
    }
    let e = |e: arrow_schema::ArrowError| e.to_string();
    let both = match op {
        ReduceOp::Sum | ReduceOp::Count => arrow_arith::numeric::add(a, b).map_err(e)?,
        ReduceOp::Min | ReduceOp::Max => {
            let a_wins = if op == ReduceOp::Min {
                arrow_ord::cmp::lt_eq(a, b).map_err(e)?
            } else {
                arrow_ord::cmp::gt_eq(a, b).map_err(e)?
            };
            arrow_select::zip::zip(&a_wins, a, b).map_err(e)?
        }
    };
    // Where one side is null, the other side's value stands.
    let a_null: BooleanArray = (0..a.len()).map(|i| Some(a.is_null(i))).collect();
    let b_null: BooleanArray = (0..b.len()).map(|i| Some(b.is_null(i))).collect();
    let out = arrow_select::zip::zip(&a_null, b, &both).map_err(e)?;
    arrow_select::zip::zip(&b_null, a, &out).map_err(e)
}

/// An array as a collective message (an Arrow IPC stream of one column).
///
/// # Errors
/// Types IPC cannot write.
pub fn encode_array(a: &ArrayRef) -> Result<Bytes, String> {
    let schema = Arc::new(Schema::new(vec![Field::new("v", a.data_type().clone(), true)]));
    let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::clone(a)]).map_err(|e| e.to_string())?;
    let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).map_err(|e| e.to_string())?;
    w.write(&batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    Ok(Bytes::from(w.into_inner().map_err(|e| e.to_string())?))
}

/// The array in a collective message (bytes from a peer: malformed ones are errors, whatever
/// the decoder does with them).
///
/// # Errors
/// Undecodable Arrow IPC, or anything but one batch of one column.
pub fn decode_array(bytes: &[u8]) -> Result<ArrayRef, String> {
    crate::actor::contain_panics("an array message", || {
        let mut r =
            arrow_ipc::reader::StreamReader::try_new(Cursor::new(bytes), None).map_err(|e| e.to_string())?;
        let batch = r.next().ok_or("empty array message")?.map_err(|e| e.to_string())?;
        if batch.num_columns() != 1 {
            return Err(format!("an array message has {} columns", batch.num_columns()));
        }
        Ok(Arc::clone(batch.column(0)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Float64Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};

    fn ints(v: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(v.to_vec()))
    }

    fn values(a: &ArrayRef) -> Vec<Option<i64>> {
        let a = a.as_primitive::<Int64Type>();
        (0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect()
    }

    #[test]
    fn nulls_are_skipped_and_counts_count_values() {
        let a = ints(&[Some(1), None, Some(5), None]);
        let b = ints(&[Some(3), Some(4), None, None]);
        assert_eq!(
            values(&combine(ReduceOp::Sum, &a, &b).expect("sum")),
            vec![Some(4), Some(4), Some(5), None]
        );
        assert_eq!(
            values(&combine(ReduceOp::Min, &a, &b).expect("min")),
            vec![Some(1), Some(4), Some(5), None]
        );
        assert_eq!(
            values(&combine(ReduceOp::Max, &a, &b).expect("max")),
            vec![Some(3), Some(4), Some(5), None]
        );
        let (ca, cb) = (prepare(ReduceOp::Count, &a).expect("a"), prepare(ReduceOp::Count, &b).expect("b"));
        assert_eq!(
            values(&combine(ReduceOp::Count, &ca, &cb).expect("count")),
            vec![Some(2), Some(1), Some(1), Some(0)]
        );
    }

    #[test]
    fn mismatches_and_overflow_are_errors() {
        let a = ints(&[Some(1)]);
        assert!(combine(ReduceOp::Sum, &a, &ints(&[Some(1), Some(2)])).is_err());
        let f: ArrayRef = Arc::new(Float64Array::from(vec![1.0]));
        assert!(combine(ReduceOp::Sum, &a, &f).is_err());
        assert!(combine(ReduceOp::Sum, &ints(&[Some(i64::MAX)]), &a).is_err(), "overflow");
        let text: ArrayRef = Arc::new(arrow_array::StringArray::from(vec!["x"]));
        assert!(prepare(ReduceOp::Sum, &text).is_err());
        assert!(prepare(ReduceOp::Count, &text).is_ok());
    }

    #[test]
    fn arrays_round_trip_through_messages() {
        let f: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.5), None, Some(-0.0)]));
        let back = decode_array(&encode_array(&f).expect("encode")).expect("decode");
        assert_eq!(back.as_primitive::<Float64Type>(), f.as_primitive::<Float64Type>());
    }
}
