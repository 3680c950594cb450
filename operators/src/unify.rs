//! One schema per source: the rules that make the files of a source agree on one schema, and
//! the conversion of every batch read to it.
//!
//! The job agrees each file source's schema over all of its files before any data moves (see
//! [`crate::inputs`]); [`unify`] is the rule every rank applies to the same list of per-file
//! schemas, so every rank reaches the same schema, or the same error.
//!
//! | files differ in | agreed |
//! |---|---|
//! | integer widths (int8 … int64; uint8 … uint64) | the wider type; signed with unsigned: a signed type wide enough for both (uint64 with a signed type is an error) |
//! | integer and float | float64 (float32 with float32 stays float32) |
//! | a column all null in some files (CSV: empty, Parquet/IPC: type null) | the other files' type |
//! | utf8 and large_utf8, binary and large_binary | the large type |
//! | dictionary-encoded and plain values | the plain value type |
//! | a column missing from some files | an error, or null where missing with `missing_columns = "null"` |
//! | anything else (int and utf8, date and timestamp, timestamp units, decimals) | an error naming both files, the column and both types |
//!
//! Column order is the first file's, columns only later files have (with `"null"`) follow in
//! order of appearance; every column is nullable, since files may differ in where they hold
//! nulls.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_cast::CastOptions;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use updraft_config::MissingColumns;
use updraft_runtime::OperatorError;

fn int_width(t: &DataType) -> Option<(bool, u8)> {
    Some(match t {
        DataType::Int8 => (true, 8),
        DataType::Int16 => (true, 16),
        DataType::Int32 => (true, 32),
        DataType::Int64 => (true, 64),
        DataType::UInt8 => (false, 8),
        DataType::UInt16 => (false, 16),
        DataType::UInt32 => (false, 32),
        DataType::UInt64 => (false, 64),
        _ => return None,
    })
}

fn int_type(signed: bool, width: u8) -> DataType {
    match (signed, width) {
        (true, 8) => DataType::Int8,
        (true, 16) => DataType::Int16,
        (true, 32) => DataType::Int32,
        (true, _) => DataType::Int64,
        (false, 8) => DataType::UInt8,
        (false, 16) => DataType::UInt16,
        (false, 32) => DataType::UInt32,
        (false, _) => DataType::UInt64,
    }
}

fn float_width(t: &DataType) -> Option<u8> {
    match t {
        DataType::Float16 => Some(16),
        DataType::Float32 => Some(32),
        DataType::Float64 => Some(64),
        _ => None,
    }
}

/// The type two files' columns of one name agree on, or `None` when they cannot (see the
/// module documentation for the rules).
pub fn widen(a: &DataType, b: &DataType) -> Option<DataType> {
    if a == b {
        return Some(a.clone());
    }
    match (a, b) {
        (DataType::Null, t) | (t, DataType::Null) => return Some(t.clone()),
        (DataType::Dictionary(_, v), t) | (t, DataType::Dictionary(_, v)) => {
            let t = match t {
                DataType::Dictionary(_, w) => w.as_ref(),
                other => other,
            };
            return widen(v, t);
        }
        (DataType::Utf8 | DataType::LargeUtf8, DataType::Utf8 | DataType::LargeUtf8) => {
            return Some(DataType::LargeUtf8);
        }
        (DataType::Binary | DataType::LargeBinary, DataType::Binary | DataType::LargeBinary) => {
            return Some(DataType::LargeBinary);
        }
        _ => {}
    }
    if let (Some((sa, wa)), Some((sb, wb))) = (int_width(a), int_width(b)) {
        if sa == sb {
            return Some(int_type(sa, wa.max(wb)));
        }
        let (signed, unsigned) = if sa { (wa, wb) } else { (wb, wa) };
        if unsigned == 64 {
            return None;
        }
        return Some(int_type(true, signed.max(unsigned * 2)));
    }
    match (float_width(a), float_width(b)) {
        (Some(fa), Some(fb)) => Some(if fa.max(fb) == 64 {
            DataType::Float64
        } else if fa.max(fb) == 32 {
            DataType::Float32
        } else {
            DataType::Float16
        }),
        (Some(_), None) if int_width(b).is_some() => Some(DataType::Float64),
        (None, Some(_)) if int_width(a).is_some() => Some(DataType::Float64),
        _ => None,
    }
}

/// The schema the files of source `source` agree on. `files` holds each file's name (for
/// messages) and schema, in the job's file order; every rank passes the same list and gets
/// the same answer.
///
/// # Errors
/// The first conflict in file order, naming both files, the column and both types; or a
/// column missing from a file when `missing` is [`MissingColumns::Error`].
pub fn unify(
    source: &str,
    files: &[(String, SchemaRef)],
    missing: MissingColumns,
) -> Result<SchemaRef, OperatorError> {
    let bad = |m: String| OperatorError::Invalid(format!("source `{source}`: {m}"));
    // (name, agreed type, file whose type it is)
    let mut agreed: Vec<(String, DataType, usize)> = Vec::new();
    for (i, (file, schema)) in files.iter().enumerate() {
        for (j, f) in schema.fields().iter().enumerate() {
            if schema.fields()[..j].iter().any(|g| g.name() == f.name()) {
                return Err(bad(format!("{file} has two columns named `{}`", f.name())));
            }
            match agreed.iter_mut().find(|(n, _, _)| n == f.name()) {
                Some((name, ty, origin)) => match widen(ty, f.data_type()) {
                    Some(t) => {
                        // Messages name a file that has the agreed type.
                        if t != *ty && t == *f.data_type() {
                            *origin = i;
                        }
                        *ty = t;
                    }
                    None => {
                        return Err(bad(format!(
                            "column `{name}` is {ty} in {} but {} in {file}; the files of a source must agree \
                             (integer widths widen, integers with floats give float64, an all-null column takes \
                             the other files' type): convert the files, or declare the column's type",
                            files[*origin].0,
                            f.data_type()
                        )));
                    }
                },
                None => {
                    if i > 0 && missing == MissingColumns::Error {
                        return Err(bad(format!(
                            "column `{}` is in {file} but not in {}; set missing_columns = \"null\" to read it \
                             as null where it is absent",
                            f.name(),
                            files[0].0
                        )));
                    }
                    agreed.push((f.name().clone(), f.data_type().clone(), i));
                }
            }
        }
        if missing == MissingColumns::Error
            && let Some((name, _, origin)) =
                agreed.iter().find(|(n, _, _)| schema.fields().iter().all(|f| f.name() != n))
        {
            return Err(bad(format!(
                "column `{name}` is in {} but not in {file}; set missing_columns = \"null\" to read it as \
                 null where it is absent",
                files[*origin].0
            )));
        }
    }
    Ok(Arc::new(Schema::new(agreed.into_iter().map(|(n, t, _)| Field::new(n, t, true)).collect::<Vec<_>>())))
}

/// `batch`, read from `file`, as a batch of the agreed `target` schema: columns found by name
/// and put in order, converted to the agreed type, and null where the file lacks them.
///
/// # Errors
/// A value that does not fit the agreed type (only with rules that can fail; named).
pub fn conform(batch: &RecordBatch, target: &SchemaRef, file: &str) -> Result<RecordBatch, OperatorError> {
    let schema = batch.schema();
    let rows = batch.num_rows();
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
    let same = schema.fields().len() == target.fields().len()
        && schema
            .fields()
            .iter()
            .zip(target.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
    if same {
        return Ok(RecordBatch::try_new_with_options(
            Arc::clone(target),
            batch.columns().to_vec(),
            &options,
        )?);
    }
    let strict = CastOptions { safe: false, ..CastOptions::default() };
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for f in target.fields() {
        let col = match schema.index_of(f.name()) {
            Ok(i) => {
                let col = batch.column(i);
                if col.data_type() == f.data_type() {
                    Arc::clone(col)
                } else {
                    arrow_cast::cast_with_options(col, f.data_type(), &strict).map_err(|e| {
                        OperatorError::Invalid(format!(
                            "{file}: column `{}` ({}) cannot be read as the agreed {}: {e}",
                            f.name(),
                            col.data_type(),
                            f.data_type()
                        ))
                    })?
                }
            }
            Err(_) => new_null_array(f.data_type(), rows),
        };
        cols.push(col);
    }
    Ok(RecordBatch::try_new_with_options(Arc::clone(target), cols, &options)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_array::{Int32Array, Int64Array};

    fn schema(cols: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(cols.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>()))
    }

    #[test]
    fn widening_rules() {
        use DataType::*;
        assert_eq!(widen(&Int32, &Int64), Some(Int64));
        assert_eq!(widen(&UInt8, &UInt32), Some(UInt32));
        assert_eq!(widen(&Int8, &UInt8), Some(Int16));
        assert_eq!(widen(&UInt32, &Int16), Some(Int64));
        assert_eq!(widen(&UInt64, &Int64), None);
        assert_eq!(widen(&Int64, &Float64), Some(Float64));
        assert_eq!(widen(&Float32, &Int8), Some(Float64));
        assert_eq!(widen(&Float32, &Float32), Some(Float32));
        assert_eq!(widen(&Null, &Utf8), Some(Utf8));
        assert_eq!(widen(&Utf8, &LargeUtf8), Some(LargeUtf8));
        assert_eq!(widen(&Dictionary(Box::new(Int32), Box::new(Utf8)), &Utf8), Some(Utf8));
        assert_eq!(widen(&Int64, &Utf8), None);
        assert_eq!(widen(&Date32, &Date64), None);
    }

    #[test]
    fn files_agree_or_the_first_conflict_names_both_files() {
        let a = schema(&[("k", DataType::Int32), ("v", DataType::Null)]);
        let b = schema(&[("k", DataType::Int64), ("v", DataType::Float64)]);
        let s =
            unify("s", &[("a".into(), a.clone()), ("b".into(), b)], MissingColumns::Error).expect("agree");
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert_eq!(s.field(1).data_type(), &DataType::Float64);

        let c = schema(&[("k", DataType::Utf8), ("v", DataType::Float64)]);
        let e = unify("s", &[("a".into(), a.clone()), ("c".into(), c)], MissingColumns::Error)
            .expect_err("conflict")
            .to_string();
        assert!(e.contains("column `k` is Int32 in a but Utf8 in c"), "{e}");

        let d = schema(&[("k", DataType::Int32), ("v", DataType::Null), ("extra", DataType::Utf8)]);
        let e = unify("s", &[("a".into(), a.clone()), ("d".into(), d.clone())], MissingColumns::Error)
            .expect_err("missing")
            .to_string();
        assert!(e.contains("column `extra` is in d but not in a"), "{e}");
        let e = unify("s", &[("d".into(), d.clone()), ("a".into(), a.clone())], MissingColumns::Error)
            .expect_err("missing")
            .to_string();
        assert!(e.contains("column `extra` is in d but not in a"), "{e}");
        let s = unify("s", &[("a".into(), a), ("d".into(), d)], MissingColumns::Null).expect("null-filled");
        assert_eq!(s.fields().len(), 3);
    }

    #[test]
    fn batches_are_reordered_cast_and_null_filled() {
        let target = schema(&[("k", DataType::Int64), ("v", DataType::Float64), ("x", DataType::Utf8)]);
        let batch = RecordBatch::try_from_iter(vec![
            ("v", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            ("k", Arc::new(Int32Array::from(vec![7, 8])) as ArrayRef),
        ])
        .expect("batch");
        let out = conform(&batch, &target, "f").expect("conform");
        assert_eq!(out.schema(), target);
        assert_eq!(out.column(0).as_primitive::<Int64Type>().values(), &[7, 8]);
        assert_eq!(out.column(1).as_primitive::<Float64Type>().values(), &[1.0, 2.0]);
        assert_eq!(out.column(2).null_count(), 2);
    }
}
