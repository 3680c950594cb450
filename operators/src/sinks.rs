//! Sinks: files (Parquet, CSV or Arrow IPC; one per rank; local or S3) and the summary (row
//! count and checksums).

use std::fs::File;
use std::io::{BufWriter, Write};

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use updraft_config::FileFormat;
use updraft_runtime::report::TableSummary;
use updraft_runtime::{Flow, Operator, OperatorError, Output};

use crate::checksum::add_batch;
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
enum Target {
    File(BufWriter<File>),
    Memory(Vec<u8>),
}

impl Write for Target {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Target::File(f) => f.write(buf),
            Target::Memory(v) => v.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Target::File(f) => f.flush(),
            Target::Memory(_) => Ok(()),
        }
    }
}

enum Writer {
    Parquet(ArrowWriter<Target>),
    Csv(arrow_csv::Writer<Target>),
    Ipc(arrow_ipc::writer::FileWriter<Target>),
}

/// Writes its input to one file (Parquet, CSV or Arrow IPC), locally or in S3. The file is
/// created with the first batch, so a rank that receives only an empty, schema-carrying batch
/// still writes a valid empty file.
pub struct FileSink {
    name: String,
    format: FileFormat,
    at: Location,
    writer: Option<Writer>,
    rows: u64,
}

impl FileSink {
    /// A sink named `name` writing `at` in `format`.
    pub fn new(name: &str, format: FileFormat, at: Location) -> FileSink {
        FileSink { name: name.to_string(), format, at, writer: None, rows: 0 }
    }

    fn err(&self, e: impl std::fmt::Display) -> OperatorError {
        OperatorError::Invalid(format!("sink `{}`: writing {}: {e}", self.name, self.at))
    }

    fn open(&self, batch: &RecordBatch) -> Result<Writer, OperatorError> {
        let target = match &self.at {
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
                Target::File(BufWriter::new(file))
            }
            Location::S3 { .. } => Target::Memory(Vec::new()),
        };
        Ok(match self.format {
            FileFormat::Parquet => {
                Writer::Parquet(ArrowWriter::try_new(target, batch.schema(), None).map_err(|e| self.err(e))?)
            }
            FileFormat::Csv { .. } => {
                Writer::Csv(arrow_csv::WriterBuilder::new().with_header(true).build(target))
            }
            FileFormat::Ipc => Writer::Ipc(
                arrow_ipc::writer::FileWriter::try_new(target, &batch.schema()).map_err(|e| self.err(e))?,
            ),
        })
    }
}

impl Operator for FileSink {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        if self.writer.is_none() {
            self.writer = Some(self.open(&batch)?);
        }
        self.rows += batch.num_rows() as u64;
        let result = match &mut self.writer {
            Some(Writer::Parquet(w)) => w.write(&batch).map_err(|e| e.to_string()),
            Some(Writer::Csv(w)) => w.write(&batch).map_err(|e| e.to_string()),
            Some(Writer::Ipc(w)) => w.write(&batch).map_err(|e| e.to_string()),
            None => Ok(()),
        };
        result.map_err(|e| self.err(e))
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        let target = match self.writer.take() {
            Some(Writer::Parquet(w)) => w.into_inner().map_err(|e| self.err(e))?,
            Some(Writer::Csv(w)) => w.into_inner(),
            Some(Writer::Ipc(mut w)) => {
                w.finish().map_err(|e| self.err(e))?;
                w.into_inner().map_err(|e| self.err(e))?
            }
            None => return Ok(Flow::Idle),
        };
        match (target, &self.at) {
            (Target::File(mut f), _) => f.flush().map_err(|e| self.err(e))?,
            (Target::Memory(data), Location::S3 { bucket, key }) => {
                s3_put(bucket, key, data)
                    .map_err(|e| OperatorError::Invalid(format!("sink `{}`: {e}", self.name)))?;
            }
            (Target::Memory(_), Location::Local(_)) => return Err(self.err("buffered a local file")),
        }
        Ok(Flow::Idle)
    }

    fn summary(&self) -> Option<TableSummary> {
        Some(TableSummary { rows: self.rows, ..TableSummary::default() })
    }
}
