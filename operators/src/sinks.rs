//! Sinks: files (Parquet, CSV or Arrow IPC; one per rank; local or S3) and the summary (row
//! count and checksums). A file sink writes a temporary file; the job publishes it when every
//! rank has finished (see [`crate::outputs`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use updraft_config::{FileFormat, ParquetCompression, SinkKind};
use updraft_runtime::report::TableSummary;
use updraft_runtime::{Flow, Operator, OperatorError, Output};

use crate::checksum::add_batch;
use crate::outputs::{JobOutputs, PartTarget};
use crate::storage::{Location, s3_put};

/// Counts rows and checksums every column.
#[derive(Default)]
pub struct SummarySink {
    summary: TableSummary,
}

impl Operator for SummarySink {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        add_batch(&mut self.summary, &batch)
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Flow::Idle)
    }

    fn summary(&self) -> Option<TableSummary> {
        Some(self.summary.clone())
    }
}

/// Where a sink's bytes go: a local file, or memory uploaded to S3 at the end.
enum ByteSink {
    File(BufWriter<File>),
    Memory(Vec<u8>),
}

impl Write for ByteSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            ByteSink::File(f) => f.write(buf),
            ByteSink::Memory(v) => v.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            ByteSink::File(f) => f.flush(),
            ByteSink::Memory(_) => Ok(()),
        }
    }
}

/// The Parquet codec of a sink's `compression` setting.
///
/// # Errors
/// A level the codec does not accept (the pipeline reader checks ranges first).
pub fn parquet_codec(c: ParquetCompression) -> Result<Compression, OperatorError> {
    let bad = |e: parquet::errors::ParquetError| OperatorError::Invalid(format!("compression level: {e}"));
    Ok(match c {
        ParquetCompression::None => Compression::UNCOMPRESSED,
        ParquetCompression::Snappy => Compression::SNAPPY,
        ParquetCompression::Gzip(l) => Compression::GZIP(GzipLevel::try_new(l).map_err(bad)?),
        ParquetCompression::Brotli(l) => Compression::BROTLI(BrotliLevel::try_new(l).map_err(bad)?),
        ParquetCompression::Lz4Raw => Compression::LZ4_RAW,
        ParquetCompression::Zstd(l) => Compression::ZSTD(ZstdLevel::try_new(l).map_err(bad)?),
    })
}

enum Writer {
    Parquet(ArrowWriter<ByteSink>),
    Csv(arrow_csv::Writer<ByteSink>),
    Ipc(arrow_ipc::writer::FileWriter<ByteSink>),
    IpcStream(arrow_ipc::writer::StreamWriter<ByteSink>),
    Json(arrow_json::LineDelimitedWriter<ByteSink>),
}

/// Writes its input to one part file (Parquet, CSV or Arrow IPC), locally or in S3, under a
/// temporary name that the job's commit turns into the final one. The file is created with the
/// first batch, so a rank that receives only an empty, schema-carrying batch still writes a
/// valid empty file.
pub struct FileSink {
    name: String,
    format: FileFormat,
    compression: ParquetCompression,
    outputs: Arc<JobOutputs>,
    target: Option<PartTarget>,
    writer: Option<Writer>,
    rows: u64,
    held_elsewhere: bool,
}

impl FileSink {
    /// A sink named `name` writing its part of the job's `outputs` in `format` (Parquet pages
    /// compressed with `compression`).
    pub fn new(
        name: &str,
        format: FileFormat,
        compression: ParquetCompression,
        outputs: Arc<JobOutputs>,
    ) -> FileSink {
        FileSink {
            name: name.to_string(),
            format,
            compression,
            outputs,
            target: None,
            writer: None,
            rows: 0,
            held_elsewhere: false,
        }
    }

    /// For a rank whose input holds no rows by plan (a `head` or a whole-table aggregate
    /// delivers its rows on rank 0): writes no part file unless rows do arrive.
    #[must_use]
    pub fn held_elsewhere(mut self) -> FileSink {
        self.held_elsewhere = true;
        self
    }

    fn err(&self, e: impl std::fmt::Display) -> OperatorError {
        let at = self.target.as_ref().map_or_else(String::new, |t| format!(" {}", t.dest));
        OperatorError::Invalid(format!("sink `{}`: writing{at}: {e}", self.name))
    }

    fn open(&mut self, batch: &RecordBatch) -> Result<Writer, OperatorError> {
        let target = self.outputs.target(&self.name)?;
        let sink = match &target.temp {
            Location::Local(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| OperatorError::Io {
                        context: format!("sink `{}`: cannot create {}", self.name, dir.display()),
                        source,
                    })?;
                }
                let file = File::create(path).map_err(|source| OperatorError::Io {
                    context: format!("sink `{}`: cannot create {}", self.name, path.display()),
                    source,
                })?;
                ByteSink::File(BufWriter::new(file))
            }
            Location::S3 { .. } => ByteSink::Memory(Vec::new()),
        };
        self.outputs.opened(&target);
        self.target = Some(target);
        make_writer(&self.format, self.compression, sink, &batch.schema()).map_err(|e| self.err(e))
    }
}

/// `schema` with dictionary-encoded columns as their value types.
fn decoded_schema(schema: &SchemaRef) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(crate::keys::key_type(f.data_type())))
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// `batch` with dictionary-encoded columns decoded (as [`decoded_schema`]).
fn decoded_batch(batch: &RecordBatch) -> Result<RecordBatch, String> {
    let cols = batch
        .columns()
        .iter()
        .map(crate::keys::decoded)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    RecordBatch::try_new(Arc::new(decoded_schema(&batch.schema())), cols).map_err(|e| e.to_string())
}

/// The writer of a file sink in `format` over `sink`.
fn make_writer(
    format: &FileFormat,
    compression: ParquetCompression,
    sink: ByteSink,
    schema: &SchemaRef,
) -> Result<Writer, String> {
    Ok(match format {
        FileFormat::Parquet => {
            let codec = parquet_codec(compression).map_err(|e| e.to_string())?;
            let props = WriterProperties::builder().set_compression(codec).build();
            Writer::Parquet(
                ArrowWriter::try_new(sink, Arc::clone(schema), Some(props)).map_err(|e| e.to_string())?,
            )
        }
        FileFormat::Csv(_) => Writer::Csv(arrow_csv::WriterBuilder::new().with_header(true).build(sink)),
        FileFormat::Ipc => Writer::Ipc(
            arrow_ipc::writer::FileWriter::try_new(sink, &decoded_schema(schema))
                .map_err(|e| e.to_string())?,
        ),
        FileFormat::IpcStream => Writer::IpcStream(
            arrow_ipc::writer::StreamWriter::try_new(sink, schema).map_err(|e| e.to_string())?,
        ),
        FileFormat::Json => Writer::Json(arrow_json::LineDelimitedWriter::new(sink)),
    })
}

impl Writer {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        match self {
            Writer::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
            Writer::Csv(w) => w.write(batch).map_err(|e| e.to_string()),
            // The IPC file format allows one dictionary per column for the whole file, and
            // batches from shuffles carry many: dictionaries are written decoded.
            Writer::Ipc(w) => decoded_batch(batch).and_then(|b| w.write(&b).map_err(|e| e.to_string())),
            // The stream format replaces a dictionary when it changes.
            Writer::IpcStream(w) => w.write(batch).map_err(|e| e.to_string()),
            Writer::Json(w) => w.write(batch).map_err(|e| e.to_string()),
        }
    }
}

/// Checks, before a run, that a sink of `kind` can write every column of `schema`: one all-null
/// row is written to memory by the sink's own writer (or added to a summary's checksums), so
/// that a type the format cannot hold is reported by `validate` with the error a run would give.
///
/// # Errors
/// The writer's or the checksum's refusal, naming the sink.
pub fn check_writable(name: &str, kind: &SinkKind, schema: &SchemaRef) -> Result<(), OperatorError> {
    let fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let cols = schema.fields().iter().map(|f| arrow_array::new_null_array(f.data_type(), 1)).collect();
    let row = RecordBatch::try_new(Arc::clone(&schema), cols)?;
    let refuse = |e: String| OperatorError::Invalid(format!("sink `{name}`: {e}"));
    match kind {
        SinkKind::Summary => add_batch(&mut TableSummary::default(), &row).map_err(|e| refuse(e.to_string())),
        SinkKind::File { format, compression, .. } => {
            let mut w =
                make_writer(format, *compression, ByteSink::Memory(Vec::new()), &schema).map_err(|e| {
                    refuse(format!("cannot write {} files with these columns: {e}", format.name()))
                })?;
            w.write(&row)
                .map_err(|e| refuse(format!("cannot write {} files with these columns: {e}", format.name())))
        }
    }
}

impl Operator for FileSink {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        if self.held_elsewhere && self.writer.is_none() && batch.num_rows() == 0 {
            return Ok(());
        }
        if self.writer.is_none() {
            self.writer = Some(self.open(&batch)?);
        }
        self.rows += batch.num_rows() as u64;
        let result = match &mut self.writer {
            Some(w) => w.write(&batch),
            None => Ok(()),
        };
        result.map_err(|e| self.err(e))
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        let sink = match self.writer.take() {
            Some(Writer::Parquet(w)) => w.into_inner().map_err(|e| self.err(e))?,
            Some(Writer::Csv(w)) => w.into_inner(),
            Some(Writer::Ipc(mut w)) => {
                w.finish().map_err(|e| self.err(e))?;
                w.into_inner().map_err(|e| self.err(e))?
            }
            Some(Writer::IpcStream(mut w)) => {
                w.finish().map_err(|e| self.err(e))?;
                w.into_inner().map_err(|e| self.err(e))?
            }
            Some(Writer::Json(mut w)) => {
                w.finish().map_err(|e| self.err(e))?;
                w.into_inner()
            }
            None => return Ok(Flow::Idle),
        };
        let Some(target) = self.target.clone() else { return Err(self.err("no file was opened")) };
        match (sink, &target.temp) {
            (ByteSink::File(f), _) => {
                // On disk before the commit renames it: a committed file is a whole file.
                let file = f.into_inner().map_err(|e| self.err(e.error().to_string()))?;
                file.sync_all().map_err(|e| self.err(e))?;
            }
            (ByteSink::Memory(data), Location::S3 { bucket, key }) => {
                s3_put(bucket, key, data)
                    .map_err(|e| OperatorError::Invalid(format!("sink `{}`: {e}", self.name)))?;
            }
            (ByteSink::Memory(_), Location::Local(_)) => return Err(self.err("buffered a local file")),
        }
        self.outputs.closed(&target);
        Ok(Flow::Idle)
    }

    fn summary(&self) -> Option<TableSummary> {
        Some(TableSummary { rows: self.rows, ..TableSummary::default() })
    }
}
