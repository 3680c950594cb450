//! Batches collected by an operator that needs all of them at once (a join table, a local sort)
//! as one table: each column concatenated into one array (a column at a time, its parts dropped
//! as it is made, so the batches are not held twice), rows gathered from it with Arrow's `take`.
//! A column whose strings, binaries or list values exceed 32-bit offsets is concatenated as its
//! 64-bit-offset type, and gathered rows are cast back to the table's type, so no input is too
//! large for its offsets (only an output batch's own strings must fit them). Gathering from one
//! array measured faster than gathering from the batches with `interleave` (a join of 16M rows a
//! table: 1.8 s against 2.4 s).

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{ArrowError, DataType, Field, SchemaRef};
use arrow_select::concat::concat;
use arrow_select::take::take;
use updraft_runtime::OperatorError;

/// Rows held a column at a time.
pub(crate) struct Table {
    schema: SchemaRef,
    columns: Vec<ArrayRef>,
    rows: usize,
}

impl Table {
    /// `batches` under `schema` (their columns must have its types; nullability atable).
    ///
    /// # Errors
    /// A batch whose columns do not fit `schema`, or an Arrow error concatenating them.
    pub(crate) fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Table, OperatorError> {
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let width = schema.fields().len();
        let mut parts: Vec<Vec<ArrayRef>> = vec![Vec::with_capacity(batches.len()); width];
        for b in batches {
            if b.num_columns() != width {
                return Err(OperatorError::Invalid(format!(
                    "a batch of {} columns in a table of {width}",
                    b.num_columns()
                )));
            }
            for (part, c) in parts.iter_mut().zip(b.columns()) {
                part.push(Arc::clone(c));
            }
        }
        let mut columns = Vec::with_capacity(width);
        for (part, f) in parts.iter_mut().zip(schema.fields()) {
            let arrays: Vec<&dyn Array> = part.iter().map(|a| a.as_ref()).collect();
            let col = match arrays.as_slice() {
                [] => arrow_array::new_empty_array(f.data_type()),
                [one] => one.slice(0, one.len()),
                _ => concat_wide(&arrays)?,
            };
            // The parts go as soon as their column is made.
            part.clear();
            columns.push(col);
        }
        Ok(Table { schema, columns, rows })
    }

    /// The schema.
    pub(crate) fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Number of rows.
    pub(crate) fn num_rows(&self) -> usize {
        self.rows
    }

    /// Column `i`, whole (strings beyond 32-bit offsets as their 64-bit-offset type, which
    /// compares alike).
    pub(crate) fn column(&self, i: usize) -> ArrayRef {
        Arc::clone(&self.columns[i])
    }

    /// The columns as held (types widened where needed), as a batch.
    ///
    /// # Errors
    /// None expected: the columns are those of the schema, some widened.
    pub(crate) fn wide_batch(&self) -> Result<RecordBatch, OperatorError> {
        let fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .zip(&self.columns)
            .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
            .collect();
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(self.rows));
        let schema = Arc::new(arrow_schema::Schema::new(fields));
        Ok(RecordBatch::try_new_with_options(schema, self.columns.clone(), &options)?)
    }

    /// The rows `ids` as a batch of the schema.
    ///
    /// # Errors
    /// As [`Table::gather`].
    pub(crate) fn gather_batch(&self, ids: &UInt32Array) -> Result<RecordBatch, OperatorError> {
        let cols = (0..self.columns.len()).map(|i| self.gather(i, ids)).collect::<Result<Vec<_>, _>>()?;
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(ids.len()));
        Ok(RecordBatch::try_new_with_options(Arc::clone(&self.schema), cols, &options)?)
    }

    /// Column `i` of the rows `ids` (a null id: a null), of the schema's type.
    ///
    /// # Errors
    /// An Arrow error gathering them (such as an output batch's strings beyond 2 GiB).
    pub(crate) fn gather(&self, i: usize, ids: &UInt32Array) -> Result<ArrayRef, OperatorError> {
        let col = take(self.columns[i].as_ref(), ids, None)?;
        let ty = self.schema.field(i).data_type();
        Ok(if col.data_type() == ty { col } else { arrow_cast::cast(&col, ty)? })
    }
}

/// Row ids for [`Table::gather`]; `None` (a missing row, as of an outer join) becomes a null.
/// Without one, the ids are one plain buffer (no validity to build).
pub(crate) fn row_ids(ids: Vec<Option<u32>>) -> UInt32Array {
    if ids.iter().all(Option::is_some) {
        UInt32Array::from(ids.into_iter().map(|i| i.unwrap_or_default()).collect::<Vec<u32>>())
    } else {
        UInt32Array::from(ids)
    }
}

/// `arrays` concatenated; when their strings, binaries or list values overflow 32-bit offsets,
/// concatenated as the 64-bit-offset type instead.
///
/// # Errors
/// An Arrow error other than that overflow, or a type without a 64-bit-offset variant.
pub(crate) fn concat_wide(arrays: &[&dyn Array]) -> Result<ArrayRef, OperatorError> {
    match concat(arrays) {
        Err(ArrowError::OffsetOverflowError(_)) => {
            let Some(first) = arrays.first() else { return Ok(concat(arrays)?) };
            let wide = wide_type(first.data_type());
            let cast =
                arrays.iter().map(|a| arrow_cast::cast(*a, &wide)).collect::<Result<Vec<ArrayRef>, _>>()?;
            let refs: Vec<&dyn Array> = cast.iter().map(|a| a.as_ref()).collect();
            Ok(concat(&refs)?)
        }
        other => Ok(other?),
    }
}

/// `t` with every 32-bit-offset string, binary and list type (also nested) made 64-bit.
pub(crate) fn wide_type(t: &DataType) -> DataType {
    let field = |f: &Field| Arc::new(f.clone().with_data_type(wide_type(f.data_type())));
    match t {
        DataType::Utf8 => DataType::LargeUtf8,
        DataType::Binary => DataType::LargeBinary,
        DataType::List(f) | DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(|f| field(f)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::Schema;

    fn batch(schema: &SchemaRef, v: Vec<i64>, s: Vec<Option<&str>>) -> RecordBatch {
        RecordBatch::try_new(
            Arc::clone(schema),
            vec![Arc::new(Int64Array::from(v)) as ArrayRef, Arc::new(StringArray::from(s))],
        )
        .expect("batch")
    }

    #[test]
    fn rows_are_gathered_across_batches_with_nulls_for_missing_rows() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batches = vec![
            batch(&schema, vec![0, 1], vec![Some("a"), None]),
            batch(&schema, vec![], vec![]),
            batch(&schema, vec![2, 3, 4], vec![Some("c"), Some("d"), Some("e")]),
        ];
        let table = Table::new(Arc::clone(&schema), batches).expect("table");
        assert_eq!(table.num_rows(), 5);
        assert_eq!(table.column(0).as_primitive::<Int64Type>().values().to_vec(), vec![0, 1, 2, 3, 4]);
        let ids = row_ids(vec![Some(4), None, Some(0), Some(2), Some(1)]);
        let v = table.gather(0, &ids).expect("v");
        let v: Vec<Option<i64>> = v.as_primitive::<Int64Type>().iter().collect();
        assert_eq!(v, vec![Some(4), None, Some(0), Some(2), Some(1)]);
        let s = table.gather(1, &ids).expect("s");
        let s: Vec<Option<&str>> = s.as_string::<i32>().iter().collect();
        assert_eq!(s, vec![Some("e"), None, Some("a"), Some("c"), None]);
    }

    #[test]
    fn a_widened_column_is_gathered_back_to_the_table_type() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let mut table = Table::new(
            Arc::clone(&schema),
            vec![
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(StringArray::from(vec!["x", "yz"]))])
                    .expect("batch"),
            ],
        )
        .expect("table");
        // As a column beyond 2 GiB of strings is held.
        table.columns[0] = arrow_cast::cast(&table.columns[0], &DataType::LargeUtf8).expect("wide");
        let got = table.gather(0, &row_ids(vec![Some(1), None])).expect("gather");
        assert_eq!(got.data_type(), &DataType::Utf8);
        assert_eq!(got.as_string::<i32>().iter().collect::<Vec<_>>(), vec![Some("yz"), None]);
    }

    #[test]
    fn wide_types_reach_into_lists_and_structs() {
        let item = Arc::new(Field::new("item", DataType::Utf8, true));
        let t = DataType::Struct(vec![Field::new("l", DataType::List(item), true)].into());
        let wide = wide_type(&t);
        let DataType::Struct(fields) = &wide else { panic!("{wide}") };
        let DataType::LargeList(item) = fields[0].data_type() else { panic!("{wide}") };
        assert_eq!(item.data_type(), &DataType::LargeUtf8);
        let a = StringArray::from(vec!["x", "y"]);
        let got = concat_wide(&[&a, &a]).expect("concat");
        assert_eq!(got.len(), 4, "no overflow: the plain concatenation");
        assert_eq!(got.data_type(), &DataType::Utf8);
    }
}
