//! File sources: Parquet, CSV and Arrow IPC, on local disk or in S3 (see [`crate::storage`]).
//!
//! A source reads the files the job assigned to its rank (see [`crate::inputs`]) and emits
//! every batch in the schema the job agreed for the source (see [`crate::unify`]): columns in
//! the agreed order and types, null where a file lacks one.
//!
//! CSV files are read as written: a declared schema types columns by header name (by position
//! when `header = false`), columns not declared are inferred (over the whole of a local file by
//! default), and a value that does not parse is reported with its file, line and column.
//!
//! A source emits only the columns the plan uses, and skips the Parquet row groups its filters
//! exclude by their statistics (see [`crate::pushdown`]); a Parquet file is decoded for those
//! columns and row groups only.

use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{ArrowReaderBuilder, ParquetRecordBatchReaderBuilder};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::ChunkReader;
use updraft_config::expr::Expr;
use updraft_config::{CsvOptions, FileFormat, defaults};
use updraft_runtime::{Flow, Operator, OperatorError, Output};

use crate::pushdown::{BoundTest, Scan, bound_test};
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
        FileFormat::Ipc | FileFormat::IpcStream => {
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

/// Whether Parquet statistics of a column of type `t` are ordered as comparisons order its
/// values, so that a row group can be skipped by them: not floats (statistics leave NaN out),
/// unsigned integers, binary, booleans, dictionaries or nested types.
fn prunable(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(..)
            | DataType::Decimal128(..)
            | DataType::Utf8
            | DataType::LargeUtf8
    )
}

/// For each value of `bounds` (row-group minima or maxima of `field`), whether `test` is
/// definitely false with the column holding it; `None` when that cannot be told.
fn false_at(test: &Expr, field: &Field, bounds: &ArrayRef) -> Option<Vec<bool>> {
    let values = arrow_cast::cast(bounds, field.data_type()).ok()?;
    let schema = Schema::new(vec![field.clone().with_nullable(true)]);
    let batch = RecordBatch::try_new(Arc::new(schema), vec![values]).ok()?;
    let result = crate::expr::eval(test, &batch).ok()?;
    let result = result.as_any().downcast_ref::<BooleanArray>()?;
    Some((0..result.len()).map(|i| result.is_valid(i) && !result.value(i)).collect())
}

/// The row groups of a Parquet file that may hold a row passing every test (all of them when
/// the statistics cannot tell), in file order.
fn row_groups_to_read<T>(
    builder: &ArrowReaderBuilder<T>,
    agreed: &Schema,
    tests: &[BoundTest],
) -> Vec<usize> {
    let meta: &ParquetMetaData = builder.metadata();
    let mut skip = vec![false; meta.num_row_groups()];
    for t in tests {
        let Ok(field) = agreed.field_with_name(&t.column) else { continue };
        // The file's own type must be prunable too (a UInt32 file column agreed as Int64 is not).
        let Some((leaf, in_file)) =
            parquet::arrow::parquet_column(builder.parquet_schema(), builder.schema(), &t.column)
        else {
            continue;
        };
        if !prunable(field.data_type()) || !prunable(in_file.data_type()) {
            continue;
        }
        let Ok(stats) = StatisticsConverter::try_new(&t.column, builder.schema(), builder.parquet_schema())
        else {
            continue;
        };
        // Statistics in the deprecated `min`/`max` fields may be in signed byte order (writers
        // before the format's column orders): never skip by them.
        let trusted: Vec<bool> = meta
            .row_groups()
            .iter()
            .map(|rg| rg.column(leaf).statistics().is_some_and(|s| !s.is_min_max_deprecated()))
            .collect();
        let maxes = t.at_max.as_ref().and_then(|e| Some((e, stats.row_group_maxes(meta.row_groups()).ok()?)));
        let mins = t.at_min.as_ref().and_then(|e| Some((e, stats.row_group_mins(meta.row_groups()).ok()?)));
        for (test, bounds) in maxes.into_iter().chain(mins) {
            if let Some(no) = false_at(test, field, &bounds) {
                skip.iter_mut().zip(no).zip(&trusted).for_each(|((s, n), ok)| *s |= n && *ok);
            }
        }
    }
    (0..skip.len()).filter(|i| !skip[*i]).collect()
}

/// A Parquet reader of the columns of `output` and the row groups `tests` allow, with the
/// number of row groups (read, skipped).
fn parquet_reader<T: ChunkReader + 'static>(
    builder: ParquetRecordBatchReaderBuilder<T>,
    output: &Schema,
    tests: &[BoundTest],
    batch_rows: usize,
) -> parquet::errors::Result<(ParquetRecordBatchReader, (u64, u64))> {
    let roots: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| output.field_with_name(f.name()).is_ok())
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let groups = row_groups_to_read(&builder, output, tests);
    let total = builder.metadata().num_row_groups();
    let counts = (groups.len() as u64, (total - groups.len()) as u64);
    let reader = builder.with_projection(mask).with_row_groups(groups).with_batch_size(batch_rows).build()?;
    Ok((reader, counts))
}

/// Opens one file for reading the columns of `output` (the job's schema `agreed` for the
/// source, projected to the columns the plan uses); `tests` are the row-group bound tests of
/// its filters. Returns the reader and the Parquet row groups (read, skipped).
fn open(
    source: &str,
    format: &FileFormat,
    at: &Location,
    batch_rows: usize,
    (agreed, output): (&SchemaRef, &SchemaRef),
    tests: &[BoundTest],
) -> Result<(Reader, (u64, u64)), OperatorError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        OperatorError::Invalid(format!("source `{source}`: cannot {what} {at}: {e}"))
    };
    let mut input = open_input(source, at)?;
    match format {
        FileFormat::Parquet => {
            let (reader, counts) = match input {
                Input::File(f) => ParquetRecordBatchReaderBuilder::try_new(f)
                    .and_then(|b| parquet_reader(b, output, tests, batch_rows)),
                Input::Memory(c) => ParquetRecordBatchReaderBuilder::try_new(c.into_inner())
                    .and_then(|b| parquet_reader(b, output, tests, batch_rows)),
            }
            .map_err(|e| bad("read Parquet file", &e))?;
            Ok((Reader::Parquet(reader), counts))
        }
        FileFormat::Ipc | FileFormat::IpcStream => {
            if is_ipc_file(&mut input).map_err(|e| bad("read", &e))? {
                let reader = arrow_ipc::reader::FileReader::try_new(input, None)
                    .map_err(|e| bad("read Arrow IPC file", &e))?;
                Ok((Reader::Ipc(Box::new(reader)), (0, 0)))
            } else {
                let reader = arrow_ipc::reader::StreamReader::try_new(std::io::BufReader::new(input), None)
                    .map_err(|e| bad("read Arrow IPC stream", &e))?;
                Ok((Reader::IpcStream(Box::new(reader)), (0, 0)))
            }
        }
        FileFormat::Json => {
            // Fields are read by name as the agreed types; a field a line lacks is null.
            // Numbers where the agreed type is a string (a field that is a number on some lines
            // and a string on others) are read as their text.
            // Fields `output` lacks are skipped.
            let reader = arrow_json::ReaderBuilder::new(Arc::clone(output))
                .with_coerce_primitive(true)
                .with_batch_size(batch_rows)
                .build(std::io::BufReader::new(input))
                .map_err(|e| bad("read JSON lines file", &e))?;
            Ok((Reader::Json(Box::new(reader)), (0, 0)))
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
            // Only the columns of `output` are parsed.
            let projection = columns.iter().enumerate().filter(|(_, c)| output.field_with_name(c).is_ok());
            let reader = arrow_csv::ReaderBuilder::new(Arc::new(Schema::new(fields)))
                .with_projection(projection.map(|(i, _)| i).collect())
                .with_format(csv_format(o)?)
                .with_batch_size(batch_rows)
                .build(input)
                .map_err(|e| bad("read CSV file", &e))?;
            let declared = o.schema.iter().map(|(n, _)| n.clone()).collect();
            Ok((Reader::Csv { reader: Box::new(reader), columns, declared }, (0, 0)))
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
    output: SchemaRef,
    tests: Vec<BoundTest>,
    row_groups: (u64, u64),
    next_file: usize,
    current: Option<(Location, Reader)>,
    batch_rows: usize,
    emitted: bool,
}

impl FileSource {
    /// A source named `name` reading `files` in `format`, emitting batches of `schema` (the
    /// schema its files agreed on): every column and row (see [`FileSource::with_scan`]).
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
            output: Arc::clone(&schema),
            schema,
            tests: Vec::new(),
            row_groups: (0, 0),
            next_file: 0,
            current: None,
            batch_rows: batch_rows.max(1),
            emitted: false,
        }
    }

    /// Emits only the columns of `scan` that the agreed schema has, in its order (every column
    /// when `scan.columns` is `None`), and skips Parquet row groups its filters exclude.
    #[must_use]
    pub fn with_scan(mut self, scan: &Scan) -> FileSource {
        self.output = scan.project(&self.schema);
        self.tests = scan.filters.iter().filter_map(bound_test).collect();
        self
    }

    /// The schema of the batches it emits.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.output)
    }

    /// Parquet row groups read and skipped so far.
    pub fn row_groups(&self) -> (u64, u64) {
        self.row_groups
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
                let schemas = (&self.schema, &self.output);
                let (reader, (read, skipped)) =
                    open(&self.name, &self.format, &at, self.batch_rows, schemas, &self.tests)?;
                tracing::info!(source = %self.name, file = %at, row_groups_skipped = skipped, "reading");
                self.row_groups.0 += read;
                self.row_groups.1 += skipped;
                let label = self.name.clone();
                metrics::counter!(updraft_runtime::metrics::ROW_GROUPS_READ, "source" => label.clone())
                    .increment(read);
                metrics::counter!(updraft_runtime::metrics::ROW_GROUPS_SKIPPED, "source" => label)
                    .increment(skipped);
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
                    return Ok(Some(conform(&batch, &self.output, &file)?));
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
                    out.emit(RecordBatch::new_empty(Arc::clone(&self.output)));
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

    /// 400 rows in four row groups of 100: `k` = row number, `s` = `a`..`d` by group, `f` =
    /// row number as a float (group 0 holds a NaN), `d` = day `k` since 1970.
    fn four_row_groups(dir: &std::path::Path) -> Location {
        use arrow_array::{Date32Array, Float64Array, StringArray};
        let k: Vec<i64> = (0..400).collect();
        let s: Vec<String> =
            k.iter().map(|i| ["a", "b", "c", "d"][(*i / 100) as usize].to_string()).collect();
        let f: Vec<f64> = k.iter().map(|i| if *i == 7 { f64::NAN } else { *i as f64 }).collect();
        let d: Vec<i32> = k.iter().map(|i| *i as i32).collect();
        let batch = RecordBatch::try_from_iter(vec![
            ("k", Arc::new(Int64Array::from(k)) as ArrayRef),
            ("s", Arc::new(StringArray::from(s)) as ArrayRef),
            ("f", Arc::new(Float64Array::from(f)) as ArrayRef),
            ("d", Arc::new(Date32Array::from(d)) as ArrayRef),
        ])
        .expect("batch");
        let pq = dir.join("groups.parquet");
        write_row_groups(&pq, &batch, 100);
        Location::Local(pq)
    }

    /// Writes `batch` to `path` in row groups of `rows` rows.
    fn write_row_groups(path: &std::path::Path, batch: &RecordBatch, rows: usize) {
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(rows))
            .build();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            File::create(path).expect("create"),
            batch.schema(),
            Some(props),
        )
        .expect("writer");
        w.write(batch).expect("write");
        w.close().expect("close");
    }

    /// Reads the file through a scan of `columns` (`None`: all) under `filters`; returns the
    /// output column names, the `k` values (when read), the row count and the row groups
    /// (read, skipped).
    fn scan(
        at: &Location,
        columns: Option<&[&str]>,
        filters: &[&str],
    ) -> (Vec<String>, Vec<i64>, usize, (u64, u64)) {
        let schema = read_schema("t", &FileFormat::Parquet, at).expect("schema");
        let scan = Scan {
            columns: columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
            filters: filters.iter().map(|f| updraft_config::expr::parse_expr(f).expect("expr")).collect(),
        };
        let mut s = FileSource::new("t", FileFormat::Parquet, vec![at.clone()], schema, 64).with_scan(&scan);
        let batches = read_all(&mut s).expect("read");
        let names = s.schema().fields().iter().map(|f| f.name().clone()).collect();
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let k = batches
            .iter()
            .filter_map(|b| b.column_by_name("k").map(|c| c.as_primitive::<Int64Type>().values().to_vec()))
            .flatten()
            .collect();
        (names, k, rows, s.row_groups())
    }

    #[test]
    fn parquet_reads_only_used_columns_and_row_groups_the_filters_allow() {
        let dir = tempfile::tempdir().expect("tmp");
        let at = four_row_groups(dir.path());
        let (names, k, rows, groups) = scan(&at, Some(&["k", "d"]), &[]);
        assert_eq!((names, rows, groups), (vec!["k".to_string(), "d".to_string()], 400, (4, 0)));
        assert_eq!(k, (0..400).collect::<Vec<i64>>());
        // No column at all (a count): rows still counted.
        let (names, _, rows, _) = scan(&at, Some(&[]), &[]);
        assert_eq!((names.len(), rows), (0, 400));
        // Whole row groups are skipped; the rest are read whole (the filter itself runs later).
        let (_, k, _, groups) = scan(&at, None, &["k >= 250"]);
        assert_eq!((k.first().copied(), k.len(), groups), (Some(200), 200, (2, 2)));
        let (_, k, _, groups) = scan(&at, None, &["150 == k"]);
        assert_eq!((k.first().copied(), k.len(), groups), (Some(100), 100, (1, 3)));
        let (_, k, _, groups) = scan(&at, None, &["s < 'b'", "k between -5 and 1000"]);
        assert_eq!((k.len(), groups), (100, (1, 3)));
        let (_, _, _, groups) = scan(&at, None, &["d between date '1970-01-01' and '1970-01-02'"]);
        assert_eq!(groups, (1, 3), "a date between a typed and a coerced string literal");
        let (_, _, _, groups) = scan(&at, None, &["k > 1000"]);
        assert_eq!(groups, (0, 4));
        // Floats are never pruned (NaN in group 0 is greater than 1000 here); neither are
        // tests that are not `column op constant`.
        for f in ["f > 1000", "k + 0 > 1000", "k != 3", "k > 1000 or k < 0", "s like 'z%'"] {
            let (_, _, _, groups) = scan(&at, None, &[f]);
            assert_eq!(groups, (4, 0), "{f}");
        }
    }

    #[test]
    fn a_column_unsigned_in_the_file_is_not_pruned_even_when_agreed_signed() {
        use arrow_array::UInt32Array;
        let dir = tempfile::tempdir().expect("tmp");
        let u: Vec<u32> = (0..200).map(|i| if i < 100 { i } else { u32::MAX - i }).collect();
        let batch = RecordBatch::try_from_iter(vec![("u", Arc::new(UInt32Array::from(u)) as ArrayRef)])
            .expect("batch");
        let pq = dir.path().join("u.parquet");
        write_row_groups(&pq, &batch, 100);
        // Agreed as int64 (as with an int32 file beside it).
        let agreed = Arc::new(Schema::new(vec![Field::new("u", DataType::Int64, true)]));
        let scan = Scan {
            columns: None,
            filters: vec![updraft_config::expr::parse_expr("u > 1000").expect("expr")],
        };
        let mut s =
            FileSource::new("t", FileFormat::Parquet, vec![Location::Local(pq)], agreed, 64).with_scan(&scan);
        let rows: usize = read_all(&mut s).expect("read").iter().map(RecordBatch::num_rows).sum();
        assert_eq!((rows, s.row_groups()), (200, (2, 0)));
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
