//! File sources: Parquet, CSV and Arrow IPC, on local disk or in S3 (see [`crate::storage`]).
//! A source either names one file per rank (`{rank}` in the path) or lists files and glob
//! patterns whose matches are dealt round-robin to the ranks.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use updraft_config::{FileFormat, SourceFiles};
use updraft_runtime::{Flow, Operator, OperatorError, Output};

use crate::partition::{describe_columns, same_columns};
use crate::storage::{Location, expand, s3_get};

/// The files rank `rank` reads: its own file, or every `world`-th file of the expanded list.
///
/// # Errors
/// Bad URLs or patterns, patterns matching nothing, listing failures.
pub fn assign_files(files: &SourceFiles, rank: u32, world: u32) -> Result<Vec<Location>, OperatorError> {
    match files {
        SourceFiles::PerRank(pattern) => {
            Ok(vec![Location::parse(&pattern.replace("{rank}", &rank.to_string()))?])
        }
        SourceFiles::List(list) => Ok(expand(list)?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 % world == rank)
            .map(|(_, p)| p)
            .collect()),
    }
}

/// A file's bytes: streamed from disk, or an S3 object held in memory.
enum Input {
    File(File),
    Memory(Cursor<Bytes>),
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Input::File(f) => f.read(buf),
            Input::Memory(c) => c.read(buf),
        }
    }
}

impl Seek for Input {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match self {
            Input::File(f) => f.seek(pos),
            Input::Memory(c) => c.seek(pos),
        }
    }
}

enum Reader {
    Parquet(ParquetRecordBatchReader),
    Csv(Box<arrow_csv::Reader<Input>>),
    Ipc(Box<arrow_ipc::reader::FileReader<Input>>),
}

/// Reads the files of one source in one format, one batch per call.
pub struct FileSource {
    name: String,
    format: FileFormat,
    files: SourceFiles,
    rank: u32,
    world: u32,
    /// Expanded on the first call, so that listing errors are the source's errors.
    assigned: Option<Vec<Location>>,
    next_file: usize,
    current: Option<(Location, Reader)>,
    batch_rows: usize,
    schema: Option<SchemaRef>,
    emitted: bool,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> OperatorError {
    move |source| OperatorError::Io { context, source }
}

/// Arrow type for a CSV schema type name (validated by the config already).
pub fn csv_type(name: &str) -> Result<DataType, OperatorError> {
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

/// Opens one file and reads its schema.
///
/// # Errors
/// Missing or unreadable files, named with the source.
fn open(
    source: &str,
    format: &FileFormat,
    at: &Location,
    batch_rows: usize,
) -> Result<(SchemaRef, Reader), OperatorError> {
    let ctx = |what: &str| format!("source `{source}`: cannot {what} {at}");
    let bad = |what: &str, e: &dyn std::fmt::Display| OperatorError::Invalid(format!("{}: {e}", ctx(what)));
    let mut input = match at {
        Location::Local(path) => Input::File(File::open(path).map_err(io(ctx("open")))?),
        Location::S3 { bucket, key } => Input::Memory(Cursor::new(
            s3_get(bucket, key).map_err(|e| OperatorError::Invalid(format!("source `{source}`: {e}")))?,
        )),
    };
    match format {
        FileFormat::Parquet => {
            let reader = match input {
                Input::File(f) => ParquetRecordBatchReaderBuilder::try_new(f)
                    .and_then(|b| b.with_batch_size(batch_rows).build()),
                Input::Memory(c) => ParquetRecordBatchReaderBuilder::try_new(c.into_inner())
                    .and_then(|b| b.with_batch_size(batch_rows).build()),
            }
            .map_err(|e| bad("read Parquet file", &e))?;
            let schema = arrow_array::RecordBatchReader::schema(&reader);
            Ok((schema, Reader::Parquet(reader)))
        }
        FileFormat::Ipc => {
            let reader = arrow_ipc::reader::FileReader::try_new(input, None)
                .map_err(|e| bad("read Arrow IPC file", &e))?;
            Ok((reader.schema(), Reader::Ipc(Box::new(reader))))
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
                    let (schema, _) = format
                        .infer_schema(&mut input, Some(10_000))
                        .map_err(|e| bad("infer the schema of", &e))?;
                    input.seek(SeekFrom::Start(0)).map_err(io(ctx("rewind")))?;
                    Arc::new(schema)
                }
            };
            let reader = arrow_csv::ReaderBuilder::new(Arc::clone(&schema))
                .with_header(*has_header)
                .with_delimiter(*delimiter)
                .with_batch_size(batch_rows)
                .build(input)
                .map_err(|e| bad("read CSV file", &e))?;
            Ok((schema, Reader::Csv(Box::new(reader))))
        }
    }
}

/// The schema of a source's first file, without reading its rows (for checks before a run).
///
/// # Errors
/// As for reading: the file cannot be found, opened or understood.
pub fn peek_schema(
    source: &str,
    format: &FileFormat,
    files: &SourceFiles,
) -> Result<Option<SchemaRef>, OperatorError> {
    match assign_files(files, 0, 1)?.into_iter().next() {
        Some(at) => Ok(Some(nullable(&open(source, format, &at, 1)?.0))),
        None => Ok(None),
    }
}

impl FileSource {
    /// A source named `name` reading its share of `files` in `format`.
    pub fn new(
        name: &str,
        format: FileFormat,
        files: SourceFiles,
        rank: u32,
        world: u32,
        batch_rows: usize,
    ) -> FileSource {
        FileSource {
            name: name.to_string(),
            format,
            files,
            rank,
            world,
            assigned: None,
            next_file: 0,
            current: None,
            batch_rows: batch_rows.max(1),
            schema: None,
            emitted: false,
        }
    }

    /// The next batch, or `None` when every file is read.
    ///
    /// # Errors
    /// Missing or unreadable files, and files whose schema differs from the first file's.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, OperatorError> {
        loop {
            if self.current.is_none() {
                if self.assigned.is_none() {
                    let files = assign_files(&self.files, self.rank, self.world)
                        .map_err(|e| OperatorError::Invalid(format!("source `{}`: {e}", self.name)))?;
                    self.assigned = Some(files);
                }
                let Some(at) = self.assigned.as_ref().and_then(|a| a.get(self.next_file)).cloned() else {
                    return Ok(None);
                };
                self.next_file += 1;
                let (schema, reader) = open(&self.name, &self.format, &at, self.batch_rows)?;
                // Files (and ranks) may differ in which columns hold nulls; every source column
                // is nullable, so that they all produce one schema.
                let schema = nullable(&schema);
                match &self.schema {
                    None => self.schema = Some(schema),
                    Some(first) if !same_columns(first, &schema) => {
                        return Err(OperatorError::Invalid(format!(
                            "source `{}`: {at} has columns ({}), but earlier files have ({})",
                            self.name,
                            describe_columns(&schema),
                            describe_columns(first)
                        )));
                    }
                    Some(_) => {}
                }
                self.current = Some((at, reader));
            }
            let Some((at, reader)) = &mut self.current else { continue };
            let next = match reader {
                Reader::Parquet(r) => r.next().map(|r| r.map_err(|e| e.to_string())),
                Reader::Csv(r) => r.next().map(|r| r.map_err(|e| e.to_string())),
                Reader::Ipc(r) => r.next().map(|r| r.map_err(|e| e.to_string())),
            };
            match next {
                Some(Ok(batch)) => {
                    let Some(schema) = &self.schema else { return Ok(Some(batch)) };
                    return Ok(Some(RecordBatch::try_new(Arc::clone(schema), batch.columns().to_vec())?));
                }
                Some(Err(e)) => {
                    return Err(OperatorError::Invalid(format!("source `{}`: reading {at}: {e}", self.name)));
                }
                None => self.current = None,
            }
        }
    }
}

/// `schema` with every field nullable and no schema-level metadata.
fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<Field>>(),
    ))
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
        let list = SourceFiles::List(vec!["a".into(), "b".into(), "s3://bk/c".into()]);
        let local = |p: &str| Location::Local(std::path::PathBuf::from(p));
        let s3c = Location::S3 { bucket: "bk".into(), key: "c".into() };
        assert_eq!(assign_files(&list, 0, 2).expect("assign"), vec![local("a"), s3c]);
        assert_eq!(assign_files(&list, 1, 2).expect("assign"), vec![local("b")]);
        assert!(assign_files(&list, 3, 4).expect("assign").is_empty());
        let per = SourceFiles::PerRank("d/x-{rank}.parquet".into());
        assert_eq!(assign_files(&per, 3, 4).expect("assign"), vec![local("d/x-3.parquet")]);
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
        let files = SourceFiles::List(vec![pq.display().to_string()]);
        let mut s = FileSource::new("t", FileFormat::Parquet, files, 0, 1, 2);
        let mut rows = Vec::new();
        while let Some(b) = s.next_batch().expect("read") {
            rows.extend(b.column(0).as_primitive::<Int64Type>().values().iter().copied());
        }
        assert_eq!(rows, vec![1, 2, 3]);

        let csv = dir.path().join("a.csv");
        File::create(&csv).and_then(|mut f| f.write_all(b"k,name\n1,x\n2,y\n")).expect("csv");
        let fmt = FileFormat::Csv { has_header: true, delimiter: b',', schema: None };
        let mut s = FileSource::new("t", fmt, SourceFiles::List(vec![csv.display().to_string()]), 0, 1, 100);
        let b = s.next_batch().expect("read").expect("a batch");
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.schema().field(0).data_type(), &DataType::Int64);
        assert_eq!(b.schema().field(1).data_type(), &DataType::Utf8);
    }

    #[test]
    fn a_missing_file_is_named() {
        let mut s = FileSource::new(
            "left",
            FileFormat::Parquet,
            SourceFiles::PerRank("/nonexistent/x{rank}.parquet".into()),
            0,
            1,
            10,
        );
        let e = s.next_batch().expect_err("missing").to_string();
        assert!(e.contains("source `left`") && e.contains("/nonexistent/x0.parquet"), "{e}");
    }
}
