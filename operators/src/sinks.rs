//! Sinks: Parquet files (one per rank) and the summary (row count and checksums).

use std::fs::File;
use std::path::PathBuf;

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use updraft_runtime::report::TableSummary;
use updraft_runtime::{Flow, Operator, OperatorError, Output};

use crate::checksum::add_batch;

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

/// Writes its input to one Parquet file. The file is created with the first batch (so a rank
/// that receives only an empty, schema-carrying batch still writes a valid empty file).
pub struct ParquetSink {
    name: String,
    path: PathBuf,
    writer: Option<ArrowWriter<File>>,
    rows: u64,
}

impl ParquetSink {
    /// A sink named `name` writing `path`.
    pub fn new(name: &str, path: PathBuf) -> ParquetSink {
        ParquetSink { name: name.to_string(), path, writer: None, rows: 0 }
    }

    fn err(&self, e: impl std::fmt::Display) -> OperatorError {
        OperatorError::Invalid(format!("sink `{}`: writing {}: {e}", self.name, self.path.display()))
    }
}

impl Operator for ParquetSink {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        if self.writer.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| OperatorError::Io {
                    context: format!("sink `{}`: cannot create {}", self.name, dir.display()),
                    source,
                })?;
            }
            let file = File::create(&self.path).map_err(|source| OperatorError::Io {
                context: format!("sink `{}`: cannot create {}", self.name, self.path.display()),
                source,
            })?;
            self.writer = Some(ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| self.err(e))?);
        }
        self.rows += batch.num_rows() as u64;
        let result = match &mut self.writer {
            Some(w) => w.write(&batch),
            None => Ok(()),
        };
        result.map_err(|e| self.err(e))
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        if let Some(w) = self.writer.take() {
            w.close().map_err(|e| self.err(e))?;
        }
        Ok(Flow::Idle)
    }

    fn summary(&self) -> Option<TableSummary> {
        Some(TableSummary { rows: self.rows, ..TableSummary::default() })
    }
}
