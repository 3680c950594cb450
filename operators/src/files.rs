//! File sources: Parquet and CSV. A source either names one file per rank (`{rank}` in the
//! path) or lists files that are dealt round-robin to the ranks.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use updraft_config::{FileFormat, SourceFiles};
use updraft_runtime::{Flow, Operator, OperatorError, Output};

/// The files rank `rank` reads.
pub fn assign_files(files: &SourceFiles, rank: u32, world: u32) -> Vec<PathBuf> {
    match files {
        SourceFiles::PerRank(pattern) => vec![PathBuf::from(pattern.replace("{rank}", &rank.to_string()))],
        SourceFiles::List(list) => list
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 % world == rank)
            .map(|(_, p)| PathBuf::from(p))
            .collect(),
    }
}

enum Reader {
    Parquet(ParquetRecordBatchReader),
    Csv(Box<arrow_csv::Reader<File>>),
}

/// Reads a list of files of one format, one batch per call.
pub struct FileSource {
    name: String,
    format: FileFormat,
    files: Vec<PathBuf>,
    next_file: usize,
    current: Option<(PathBuf, Reader)>,
    batch_rows: usize,
    schema: Option<SchemaRef>,
    emitted: bool,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> OperatorError {
    move |source| OperatorError::Io { context, source }
}

/// Arrow type for a CSV schema type name (validated by the config already).
fn csv_type(name: &str) -> Result<DataType, OperatorError> {
    Ok(match name {
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "float64" => DataType::Float64,
        "utf8" => DataType::Utf8,
        "bool" => DataType::Boolean,
        "date32" => DataType::Date32,
        other => return Err(OperatorError::Invalid(format!("unknown CSV column type `{other}`"))),
    })
}

impl FileSource {
    /// A source named `name` reading `files` in `format`.
    pub fn new(name: &str, format: FileFormat, files: Vec<PathBuf>, batch_rows: usize) -> FileSource {
        FileSource {
            name: name.to_string(),
            format,
            files,
            next_file: 0,
            current: None,
            batch_rows: batch_rows.max(1),
            schema: None,
            emitted: false,
        }
    }

    fn open(&self, path: &PathBuf) -> Result<(SchemaRef, Reader), OperatorError> {
        let ctx = |what: &str| format!("source `{}`: cannot {what} {}", self.name, path.display());
        let mut file = File::open(path).map_err(io(ctx("open")))?;
        match &self.format {
            FileFormat::Parquet => {
                let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| OperatorError::Invalid(format!("{}: {e}", ctx("read Parquet file"))))?;
                let schema = Arc::clone(builder.schema());
                let reader = builder
                    .with_batch_size(self.batch_rows)
                    .build()
                    .map_err(|e| OperatorError::Invalid(format!("{}: {e}", ctx("read Parquet file"))))?;
                Ok((schema, Reader::Parquet(reader)))
            }
            FileFormat::Csv { has_header, delimiter, schema } => {
                let schema: SchemaRef = match schema {
                    Some(cols) => {
                        let fields = cols
                            .iter()
                            .map(|(n, t)| Ok(Field::new(n, csv_type(t)?, true)))
                            .collect::<Result<Vec<_>, OperatorError>>()?;
                        Arc::new(Schema::new(fields))
                    }
                    None => {
                        let format = arrow_csv::reader::Format::default()
                            .with_header(*has_header)
                            .with_delimiter(*delimiter);
                        let (schema, _) = format.infer_schema(&mut file, Some(10_000)).map_err(|e| {
                            OperatorError::Invalid(format!("{}: {e}", ctx("infer the schema of")))
                        })?;
                        file.seek(SeekFrom::Start(0)).map_err(io(ctx("rewind")))?;
                        Arc::new(schema)
                    }
                };
                let reader = arrow_csv::ReaderBuilder::new(Arc::clone(&schema))
                    .with_header(*has_header)
                    .with_delimiter(*delimiter)
                    .with_batch_size(self.batch_rows)
                    .build(file)
                    .map_err(|e| OperatorError::Invalid(format!("{}: {e}", ctx("read CSV file"))))?;
                Ok((schema, Reader::Csv(Box::new(reader))))
            }
        }
    }

    /// The next batch, or `None` when every file is read.
    ///
    /// # Errors
    /// Missing or unreadable files, and files whose schema differs from the first file's.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, OperatorError> {
        loop {
            if self.current.is_none() {
                let Some(path) = self.files.get(self.next_file).cloned() else { return Ok(None) };
                self.next_file += 1;
                let (schema, reader) = self.open(&path)?;
                match &self.schema {
                    None => self.schema = Some(schema),
                    Some(first) if first.fields() != schema.fields() => {
                        return Err(OperatorError::Invalid(format!(
                            "source `{}`: {} has columns {:?}, but earlier files have {:?}",
                            self.name,
                            path.display(),
                            field_list(&schema),
                            field_list(first)
                        )));
                    }
                    Some(_) => {}
                }
                self.current = Some((path, reader));
            }
            let Some((path, reader)) = &mut self.current else { continue };
            let next = match reader {
                Reader::Parquet(r) => r.next(),
                Reader::Csv(r) => r.next(),
            };
            match next {
                Some(Ok(batch)) => return Ok(Some(batch)),
                Some(Err(e)) => {
                    return Err(OperatorError::Invalid(format!(
                        "source `{}`: reading {}: {e}",
                        self.name,
                        path.display()
                    )));
                }
                None => self.current = None,
            }
        }
    }
}

fn field_list(schema: &Schema) -> Vec<String> {
    schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect()
}

impl Operator for FileSource {
    fn on_batch(&mut self, _: usize, _: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        Err(OperatorError::Invalid("a source has no inputs".into()))
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Flow::Idle)
    }

    fn resume(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        match self.next_batch()? {
            Some(b) => {
                self.emitted = true;
                out.emit(b);
                Ok(Flow::More)
            }
            None => {
                if !self.emitted
                    && let Some(schema) = &self.schema
                {
                    out.emit(RecordBatch::new_empty(Arc::clone(schema)));
                }
                Ok(Flow::Idle)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{ArrayRef, Int64Array};
    use std::io::Write;

    #[test]
    fn files_are_dealt_round_robin_or_per_rank() {
        let list = SourceFiles::List(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(assign_files(&list, 0, 2), vec![PathBuf::from("a"), PathBuf::from("c")]);
        assert_eq!(assign_files(&list, 1, 2), vec![PathBuf::from("b")]);
        assert!(assign_files(&list, 3, 4).is_empty());
        let per = SourceFiles::PerRank("d/x-{rank}.parquet".into());
        assert_eq!(assign_files(&per, 3, 4), vec![PathBuf::from("d/x-3.parquet")]);
    }

    #[test]
    fn parquet_and_csv_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let batch =
            RecordBatch::try_from_iter(vec![("k", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef)])
                .expect("batch");
        let pq = dir.path().join("a.parquet");
        let mut w =
            parquet::arrow::ArrowWriter::try_new(File::create(&pq).expect("create"), batch.schema(), None)
                .expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
        let mut s = FileSource::new("t", FileFormat::Parquet, vec![pq], 2);
        let mut rows = Vec::new();
        while let Some(b) = s.next_batch().expect("read") {
            rows.extend(b.column(0).as_primitive::<Int64Type>().values().iter().copied());
        }
        assert_eq!(rows, vec![1, 2, 3]);

        let csv = dir.path().join("a.csv");
        File::create(&csv).and_then(|mut f| f.write_all(b"k,name\n1,x\n2,y\n")).expect("csv");
        let fmt = FileFormat::Csv { has_header: true, delimiter: b',', schema: None };
        let mut s = FileSource::new("t", fmt, vec![csv], 100);
        let b = s.next_batch().expect("read").expect("a batch");
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.schema().field(0).data_type(), &DataType::Int64);
        assert_eq!(b.schema().field(1).data_type(), &DataType::Utf8);
    }

    #[test]
    fn a_missing_file_is_named() {
        let mut s =
            FileSource::new("left", FileFormat::Parquet, vec![PathBuf::from("/nonexistent/x.parquet")], 10);
        let e = s.next_batch().expect_err("missing").to_string();
        assert!(e.contains("source `left`") && e.contains("/nonexistent/x.parquet"), "{e}");
    }
}
