//! File sources: Parquet, CSV and Arrow IPC, on local disk or in S3 (see [`crate::storage`]).
//!
//! A source reads the files the job assigned to its rank (see [`crate::inputs`]) and emits
//! every batch in the schema the job agreed for the source (see [`crate::unify`]): columns in
//! the agreed order and types, null where a file lacks one.
//!
//! CSV files are read as written: a declared schema types columns by header name (by position
//! when `header = false`), columns not declared are inferred (over the whole of a local file by
//! default), and a value that does not parse is reported with its file, line and column.

use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader};
use updraft_config::{CsvOptions, FileFormat, defaults};
use updraft_runtime::{Flow, Operator, OperatorError, Output};

use crate::storage::{Location, s3_get, s3_get_tail};
use crate::unify::conform;

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
    Csv { reader: Box<arrow_csv::Reader<Input>>, columns: Vec<String>, declared: Vec<String> },
    Ipc(Box<arrow_ipc::reader::FileReader<Input>>),
    IpcStream(Box<arrow_ipc::reader::StreamReader<std::io::BufReader<Input>>>),
    Json(Box<arrow_json::Reader<std::io::BufReader<Input>>>),
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> OperatorError {
    move |source| OperatorError::Io { context, source }
}

/// Arrow type for a CSV schema type name (validated by the config already).
///
/// # Errors
/// A name that is not one of [`updraft_config`]'s CSV types.
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

/// The pipeline's name for an Arrow type a CSV column can have, for messages.
fn csv_type_name(t: &DataType) -> String {
    match t {
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::Float64 => "float64".into(),
        DataType::Utf8 => "utf8".into(),
        DataType::Boolean => "bool".into(),
        DataType::Date32 => "date32".into(),
        other => other.to_string(),
    }
}

fn open_input(source: &str, at: &Location) -> Result<Input, OperatorError> {
    Ok(match at {
        Location::Local(path) => {
            Input::File(File::open(path).map_err(io(format!("source `{source}`: cannot open {at}")))?)
        }
        Location::S3 { bucket, key } => Input::Memory(Cursor::new(
            s3_get(bucket, key).map_err(|e| OperatorError::Invalid(format!("source `{source}`: {e}")))?,
        )),
    })
}

/// True when `input` starts with the Arrow IPC file magic (`ARROW1`); an Arrow IPC stream has
/// none. The position is restored.
fn is_ipc_file(input: &mut Input) -> std::io::Result<bool> {
    let mut magic = [0u8; 6];
    let n = input.read(&mut magic)?;
    input.seek(SeekFrom::Start(0))?;
    Ok(n == 6 && &magic == b"ARROW1")
}

/// The regex matching the fields read as null: exactly one of `values`.
fn null_regex(values: &[String]) -> Result<regex::Regex, OperatorError> {
    let pattern = if values.is_empty() {
        // Matches nothing: no field is null.
        ".^".to_string()
    } else {
        format!("^(?:{})$", values.iter().map(|v| regex::escape(v)).collect::<Vec<_>>().join("|"))
    };
    regex::Regex::new(&pattern).map_err(|e| OperatorError::Invalid(format!("null_values: {e}")))
}

fn csv_format(o: &CsvOptions) -> Result<arrow_csv::reader::Format, OperatorError> {
    Ok(arrow_csv::reader::Format::default()
        .with_header(o.has_header)
        .with_delimiter(o.delimiter)
        .with_null_regex(null_regex(&o.null_values)?))
}

/// The column names of a CSV file: its header, or `column_1 ...` (from the first record's
/// width) without one, with declared names put in place by position.
fn csv_columns(input: &mut Input, o: &CsvOptions) -> Result<Vec<String>, csv::Error> {
    let mut r = csv::ReaderBuilder::new().has_headers(false).delimiter(o.delimiter).from_reader(&mut *input);
    let mut first = csv::StringRecord::new();
    r.read_record(&mut first)?;
    Ok(if o.has_header {
        first.iter().map(str::to_string).collect()
    } else {
        (0..first.len())
            .map(|i| o.schema.get(i).map_or_else(|| format!("column_{}", i + 1), |(n, _)| n.clone()))
            .collect()
    })
}

/// The schema of one file, as its footer or header says (CSV: with declared types, the rest
/// inferred), every column nullable. Reads no more than that: a Parquet object in S3 by its
/// footer alone.
///
/// # Errors
/// Files that cannot be found, read or understood; CSV columns declared but absent.
pub fn read_schema(source: &str, format: &FileFormat, at: &Location) -> Result<SchemaRef, OperatorError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        OperatorError::Invalid(format!("source `{source}`: cannot {what} {at}: {e}"))
    };
    let schema: SchemaRef = match format {
        FileFormat::Parquet => match at {
            Location::Local(path) => {
                let f = File::open(path).map_err(io(format!("source `{source}`: cannot open {at}")))?;
                ParquetRecordBatchReaderBuilder::try_new(f)
                    .map_err(|e| bad("read the Parquet footer of", &e))?
                    .schema()
                    .clone()
            }
            Location::S3 { bucket, key } => {
                let err = |e: OperatorError| OperatorError::Invalid(format!("source `{source}`: {e}"));
                let (tail, size) = s3_get_tail(bucket, key, 64 * 1024).map_err(err)?;
                let tail = if tail.len() >= 8 && (tail.len() as u64) < size {
                    let meta = u32::from_le_bytes([
                        tail[tail.len() - 8],
                        tail[tail.len() - 7],
                        tail[tail.len() - 6],
                        tail[tail.len() - 5],
                    ]);
                    if u64::from(meta) + 8 > tail.len() as u64 {
                        s3_get_tail(bucket, key, u64::from(meta) + 8).map_err(err)?.0
                    } else {
                        tail
                    }
                } else {
                    tail
                };
                parquet_tail_schema(&tail).map_err(|e| bad("read the Parquet footer of", &e))?
            }
        },
        FileFormat::Ipc => {
            let mut input = open_input(source, at)?;
            if is_ipc_file(&mut input).map_err(|e| bad("read", &e))? {
                let reader = arrow_ipc::reader::FileReader::try_new(input, None)
                    .map_err(|e| bad("read Arrow IPC file", &e))?;
                reader.schema()
            } else {
                let reader = arrow_ipc::reader::StreamReader::try_new(std::io::BufReader::new(input), None)
                    .map_err(|e| bad("read Arrow IPC stream", &e))?;
                reader.schema()
            }
        }
        FileFormat::Json => {
            // Every line is read to infer the schema: a field first seen late still counts.
            let input = std::io::BufReader::new(open_input(source, at)?);
            let (inferred, _) = arrow_json::reader::infer_json_schema(input, None)
                .map_err(|e| bad("infer the schema of", &e))?;
            Arc::new(inferred)
        }
        FileFormat::Csv(o) => {
            let mut input = open_input(source, at)?;
            let limit = match (o.infer_rows, at) {
                (Some(n), _) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                (None, Location::Local(_)) => None,
                (None, Location::S3 { .. }) => {
                    Some(usize::try_from(defaults::CSV_INFER_ROWS).unwrap_or(usize::MAX))
                }
            };
            let (inferred, _) =
                csv_format(o)?.infer_schema(&mut input, limit).map_err(|e| bad("infer the schema of", &e))?;
            let mut fields: Vec<Field> = inferred.fields().iter().map(|f| f.as_ref().clone()).collect();
            if o.has_header {
                for (name, ty) in &o.schema {
                    let Some(f) = fields.iter_mut().find(|f| f.name() == name) else {
                        let have: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                        return Err(OperatorError::Invalid(format!(
                            "source `{source}`: declared column `{name}` is not in the header of {at} (columns: {})",
                            have.join(", ")
                        )));
                    };
                    *f = Field::new(name, csv_type(ty)?, true);
                }
            } else {
                if o.schema.len() > fields.len() {
                    return Err(OperatorError::Invalid(format!(
                        "source `{source}`: {} columns are declared but {at} has {} (header = false: declared \
                         columns are matched by position)",
                        o.schema.len(),
                        fields.len()
                    )));
                }
                for (f, (name, ty)) in fields.iter_mut().zip(&o.schema) {
                    *f = Field::new(name, csv_type(ty)?, true);
                }
            }
            Arc::new(Schema::new(fields))
        }
    };
    Ok(nullable(&schema))
}

/// The Arrow schema of a Parquet file from its tail (the footer and the 8 bytes after it).
fn parquet_tail_schema(tail: &Bytes) -> Result<SchemaRef, String> {
    let n = tail.len();
    if n < 8 || &tail[n - 4..] != b"PAR1" {
        return Err("not a Parquet file (no PAR1 at its end)".into());
    }
    let meta = u32::from_le_bytes([tail[n - 8], tail[n - 7], tail[n - 6], tail[n - 5]]) as usize;
    let start = n.checked_sub(8 + meta).ok_or("the footer is longer than the file")?;
    let metadata = parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&tail[start..n - 8])
        .map_err(|e| e.to_string())?;
    let arrow = ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new())
        .map_err(|e| e.to_string())?;
    Ok(Arc::clone(arrow.schema()))
}

/// Opens one file for reading in the agreed schema `agreed`.
fn open(
    source: &str,
    format: &FileFormat,
    at: &Location,
    batch_rows: usize,
    agreed: &SchemaRef,
) -> Result<Reader, OperatorError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        OperatorError::Invalid(format!("source `{source}`: cannot {what} {at}: {e}"))
    };
    let mut input = open_input(source, at)?;
    match format {
        FileFormat::Parquet => {
            let reader = match input {
                Input::File(f) => ParquetRecordBatchReaderBuilder::try_new(f)
                    .and_then(|b| b.with_batch_size(batch_rows).build()),
                Input::Memory(c) => ParquetRecordBatchReaderBuilder::try_new(c.into_inner())
                    .and_then(|b| b.with_batch_size(batch_rows).build()),
            }
            .map_err(|e| bad("read Parquet file", &e))?;
            Ok(Reader::Parquet(reader))
        }
        FileFormat::Ipc => {
            if is_ipc_file(&mut input).map_err(|e| bad("read", &e))? {
                let reader = arrow_ipc::reader::FileReader::try_new(input, None)
                    .map_err(|e| bad("read Arrow IPC file", &e))?;
                Ok(Reader::Ipc(Box::new(reader)))
            } else {
                let reader = arrow_ipc::reader::StreamReader::try_new(std::io::BufReader::new(input), None)
                    .map_err(|e| bad("read Arrow IPC stream", &e))?;
                Ok(Reader::IpcStream(Box::new(reader)))
            }
        }
        FileFormat::Json => {
            // Fields are read by name as the agreed types; a field a line lacks is null.
            // Numbers where the agreed type is a string (a field that is a number on some lines
            // and a string on others) are read as their text.
            let reader = arrow_json::ReaderBuilder::new(Arc::clone(agreed))
                .with_coerce_primitive(true)
                .with_batch_size(batch_rows)
                .build(std::io::BufReader::new(input))
                .map_err(|e| bad("read JSON lines file", &e))?;
            Ok(Reader::Json(Box::new(reader)))
        }
        FileFormat::Csv(o) => {
            // Read each column as the agreed type of its name.
            let columns = csv_columns(&mut input, o).map_err(|e| bad("read the header of", &e))?;
            input.seek(SeekFrom::Start(0)).map_err(io(format!("source `{source}`: cannot rewind {at}")))?;
            let fields = columns
                .iter()
                .map(|name| {
                    let ty = agreed.field_with_name(name).map(|f| f.data_type().clone()).map_err(|_| {
                        OperatorError::Invalid(format!(
                            "source `{source}`: column `{name}` of {at} is not in the agreed schema"
                        ))
                    })?;
                    Ok(Field::new(name, ty, true))
                })
                .collect::<Result<Vec<_>, OperatorError>>()?;
            let reader = arrow_csv::ReaderBuilder::new(Arc::new(Schema::new(fields)))
                .with_format(csv_format(o)?)
                .with_batch_size(batch_rows)
                .build(input)
                .map_err(|e| bad("read CSV file", &e))?;
            let declared = o.schema.iter().map(|(n, _)| n.clone()).collect();
            Ok(Reader::Csv { reader: Box::new(reader), columns, declared })
        }
    }
}

/// A CSV parse error as a user can act on it: file, line and column, and what to declare.
fn csv_error(source: &str, at: &Location, e: &ArrowError, columns: &[String], declared: &[String]) -> String {
    let text = e.to_string();
    let number = |after: &str| -> Option<usize> {
        let rest = &text[text.find(after)? + after.len()..];
        rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
    };
    let (Some(column), Some(record)) = (number("for column "), number(" at line ")) else {
        return format!("source `{source}`: reading {at}: {text}");
    };
    let value = text
        .split_once("parsing value '")
        .and_then(|(_, rest)| rest.split_once("' as type '"))
        .map(|(v, rest)| (v.to_string(), rest.split('\'').next().unwrap_or("").to_string()));
    let name = columns.get(column).cloned().unwrap_or_else(|| format!("#{}", column + 1));
    let line = physical_line(at, record).unwrap_or(record + 1);
    let (what, suggested) = match &value {
        Some((v, ty)) => {
            let ty = csv_type_name(&ty.parse::<DataType>().unwrap_or(DataType::Utf8));
            let suggested = if v.parse::<f64>().is_ok() { "float64" } else { "utf8" };
            (format!("`{v}` is not {ty}"), suggested)
        }
        None => (text.clone(), "utf8"),
    };
    let why = if declared.contains(&name) {
        "the pipeline declares its type".to_string()
    } else {
        "its type was inferred from the rows before (set infer_rows higher, or declare it)".to_string()
    };
    format!(
        "source `{source}`: {at} line {line}, column `{name}`: {what}; {why}: e.g. schema = {{ {name} = \"{suggested}\" }}"
    )
}

/// The 1-based line where CSV record `record` (0-based, the header being record 0) starts,
/// counting line breaks inside quoted fields; `None` if the file cannot be read again.
fn physical_line(at: &Location, record: usize) -> Option<usize> {
    let input: Box<dyn Read> = match at {
        Location::Local(p) => Box::new(BufReader::new(File::open(p).ok()?)),
        Location::S3 { .. } => return None,
    };
    let mut r = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
    r.records().nth(record)?.ok()?.position().map(|p| p.line() as usize)
}

/// Reads the files assigned to one rank of a source, one batch per call, every batch in the
/// source's agreed schema.
pub struct FileSource {
    name: String,
    format: FileFormat,
    files: Vec<Location>,
    schema: SchemaRef,
    next_file: usize,
    current: Option<(Location, Reader)>,
    batch_rows: usize,
    emitted: bool,
}

impl FileSource {
    /// A source named `name` reading `files` in `format`, emitting batches of `schema` (the
    /// schema its files agreed on).
    pub fn new(
        name: &str,
        format: FileFormat,
        files: Vec<Location>,
        schema: SchemaRef,
        batch_rows: usize,
    ) -> FileSource {
        FileSource {
            name: name.to_string(),
            format,
            files,
            schema,
            next_file: 0,
            current: None,
            batch_rows: batch_rows.max(1),
            emitted: false,
        }
    }

    /// The next batch, or `None` when every file is read.
    ///
    /// # Errors
    /// Missing or unreadable files, and values that do not fit the agreed schema.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, OperatorError> {
        loop {
            if self.current.is_none() {
                let Some(at) = self.files.get(self.next_file).cloned() else { return Ok(None) };
                self.next_file += 1;
                let reader = open(&self.name, &self.format, &at, self.batch_rows, &self.schema)?;
                tracing::debug!(source = %self.name, file = %at, "reading");
                self.current = Some((at, reader));
            }
            let Some((at, reader)) = &mut self.current else { continue };
            let next = match reader {
                Reader::Parquet(r) => r.next().map(|r| r.map_err(|e| e.to_string())),
                Reader::Ipc(r) => r.next().map(|r| r.map_err(|e| e.to_string())),
                Reader::IpcStream(r) => r.next().map(|r| r.map_err(|e| e.to_string())),
                Reader::Json(r) => r.next().map(|r| r.map_err(|e| e.to_string())),
                Reader::Csv { reader, columns, declared } => {
                    reader.next().map(|r| r.map_err(|e| csv_error(&self.name, at, &e, columns, declared)))
                }
            };
            match next {
                Some(Ok(batch)) => {
                    let file = format!("source `{}`: {at}", self.name);
                    return Ok(Some(conform(&batch, &self.schema, &file)?));
                }
                Some(Err(e)) if e.starts_with("source `") => return Err(OperatorError::Invalid(e)),
                Some(Err(e)) => {
                    return Err(OperatorError::Invalid(format!("source `{}`: reading {at}: {e}", self.name)));
                }
                None => self.current = None,
            }
        }
    }
}

/// `schema` with every field nullable and no schema-level metadata.
pub fn nullable(schema: &Schema) -> SchemaRef {
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
                if !self.emitted {
                    out.emit(RecordBatch::new_empty(Arc::clone(&self.schema)));
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
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_array::{Array, ArrayRef, Int64Array};
    use std::io::Write;

    fn csv_options() -> CsvOptions {
        CsvOptions::default()
    }

    fn read_all(s: &mut FileSource) -> Result<Vec<RecordBatch>, OperatorError> {
        let mut out = Vec::new();
        while let Some(b) = s.next_batch()? {
            out.push(b);
        }
        Ok(out)
    }

    #[test]
    fn parquet_round_trip() {
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
        let at = Location::Local(pq);
        let schema = read_schema("t", &FileFormat::Parquet, &at).expect("schema");
        let mut s = FileSource::new("t", FileFormat::Parquet, vec![at], schema, 2);
        let rows: Vec<i64> = read_all(&mut s)
            .expect("read")
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(rows, vec![1, 2, 3]);
        let tail = Bytes::from(std::fs::read(dir.path().join("a.parquet")).expect("bytes"));
        assert_eq!(parquet_tail_schema(&tail).expect("footer").field(0).name(), "k");
    }

    #[test]
    fn csv_declared_types_map_by_header_name_and_the_rest_is_inferred() {
        let dir = tempfile::tempdir().expect("tmp");
        let csv = dir.path().join("a.csv");
        File::create(&csv)
            .and_then(|mut f| f.write_all(b"order_id,customer_id,v\n10,1,x\n11,2,y\n"))
            .expect("csv");
        let mut o = csv_options();
        o.schema = vec![("customer_id".into(), "int32".into())];
        let fmt = FileFormat::Csv(o);
        let at = Location::Local(csv);
        let schema = read_schema("t", &fmt, &at).expect("schema");
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
        assert_eq!(schema.field(1).data_type(), &DataType::Int32);
        assert_eq!(schema.field(2).data_type(), &DataType::Utf8);
        let mut s = FileSource::new("t", fmt, vec![at.clone()], schema, 100);
        let b = read_all(&mut s).expect("read").remove(0);
        assert_eq!(b.column(0).as_primitive::<Int64Type>().values(), &[10, 11]);

        let mut o = csv_options();
        o.schema = vec![("customer".into(), "int64".into())];
        let e = read_schema("t", &FileFormat::Csv(o), &at).expect_err("absent").to_string();
        assert!(e.contains("declared column `customer` is not in the header"), "{e}");
    }

    #[test]
    fn late_type_changes_are_inferred_from_the_whole_file_or_reported_at_their_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let csv = dir.path().join("late.csv");
        let mut text = String::from("k,v\n");
        for i in 0..10_000 {
            text.push_str(&format!("{i},{i}\n"));
        }
        text.push_str("10000,1.5\n");
        std::fs::write(&csv, text).expect("write");
        let at = Location::Local(csv);
        let fmt = FileFormat::Csv(csv_options());
        let schema = read_schema("t", &fmt, &at).expect("schema");
        assert_eq!(schema.field(1).data_type(), &DataType::Float64);
        let mut s = FileSource::new("t", fmt, vec![at.clone()], schema, 4096);
        let total: f64 = read_all(&mut s)
            .expect("read")
            .iter()
            .flat_map(|b| b.column(1).as_primitive::<Float64Type>().values().to_vec())
            .sum();
        assert_eq!(total, (0..10_000).sum::<i64>() as f64 + 1.5);

        let mut o = csv_options();
        o.infer_rows = Some(100);
        let fmt = FileFormat::Csv(o);
        let schema = read_schema("t", &fmt, &at).expect("schema");
        assert_eq!(schema.field(1).data_type(), &DataType::Int64);
        let mut s = FileSource::new("t", fmt, vec![at], schema, 4096);
        let e = read_all(&mut s).expect_err("1.5 is not an integer").to_string();
        assert!(e.contains("late.csv line 10002, column `v`: `1.5` is not int64"), "{e}");
        assert!(e.contains("schema = { v = \"float64\" }"), "{e}");
    }

    #[test]
    fn null_values_are_configurable_and_nan_is_a_float_by_default() {
        let dir = tempfile::tempdir().expect("tmp");
        let csv = dir.path().join("n.csv");
        std::fs::write(&csv, "v\n1.5\nNA\nNaN\n\n").expect("write");
        let at = Location::Local(csv);
        let read = |o: CsvOptions| {
            let fmt = FileFormat::Csv(o);
            let schema = read_schema("t", &fmt, &at)?;
            let mut s = FileSource::new("t", fmt, vec![at.clone()], schema, 100);
            read_all(&mut s)
        };
        // `NA` is text unless declared null: the column is inferred as utf8.
        let b = read(csv_options()).expect("read").remove(0);
        assert_eq!(b.column(0).data_type(), &DataType::Utf8);
        let mut o = csv_options();
        o.null_values = vec!["".into(), "NA".into()];
        let b = read(o).expect("read").remove(0);
        let v = b.column(0).as_primitive::<Float64Type>();
        assert_eq!(v.len(), 3, "the empty last line is no record");
        assert!(v.is_valid(0) && v.is_null(1) && v.value(2).is_nan());
        let mut o = csv_options();
        o.null_values = vec!["".into(), "NA".into(), "NaN".into()];
        let b = read(o).expect("read").remove(0);
        assert_eq!(b.column(0).null_count(), 2);
    }

    #[test]
    fn a_missing_file_is_named() {
        let at = Location::Local("/nonexistent/x0.parquet".into());
        let e = read_schema("left", &FileFormat::Parquet, &at).expect_err("missing").to_string();
        assert!(e.contains("source `left`") && e.contains("/nonexistent/x0.parquet"), "{e}");
    }
}
