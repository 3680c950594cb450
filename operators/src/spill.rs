//! Spill files: what an operator cannot keep in memory, written to the worker's spill directory
//! ([`MemoryPool::spill_dir`]) as Arrow IPC streams with LZ4-compressed buffers, read back batch
//! by batch, and removed when dropped (so also when the job fails and its operators go).
//!
//! Every column is written as nullable: batches from different ranks may disagree on
//! nullability, and a stream has one schema.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch};
use arrow_data::ArrayData;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_schema::{Schema, SchemaRef};
use updraft_runtime::{MemoryPool, OperatorError, Reservation};

/// Bytes of Arrow buffers `batch` holds (sliced buffers count their visible length, not the
/// allocation they point into: a batch decoded from a frame shares the frame's allocation).
pub fn held_bytes(batch: &RecordBatch) -> u64 {
    batch.columns().iter().map(|c| data_bytes(&c.to_data())).sum()
}

/// Bytes of Arrow buffers one array holds, counted as [`held_bytes`] does.
pub fn data_bytes(d: &ArrayData) -> u64 {
    let own: usize = d.buffers().iter().map(arrow_buffer::Buffer::len).sum();
    let nulls = d.nulls().map_or(0, |n| n.buffer().len());
    (own + nulls) as u64 + d.child_data().iter().map(data_bytes).sum::<u64>()
}

/// `schema` with every field nullable, its metadata kept (the schema of every spill file).
pub fn nullable(schema: &Schema) -> SchemaRef {
    let fields: Vec<arrow_schema::Field> =
        schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The schema of `batches` (which have the same columns) with a field nullable when it is in
/// any of them (an empty slice: the empty schema).
pub fn widened(batches: &[RecordBatch]) -> SchemaRef {
    let Some(first) = batches.first() else { return Arc::new(Schema::empty()) };
    let schema = first.schema();
    let fields: Vec<arrow_schema::Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let any = batches.iter().any(|b| b.schema().fields().get(i).is_some_and(|g| g.is_nullable()));
            f.as_ref().clone().with_nullable(any)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> OperatorError {
    move |source| OperatorError::Io { context, source }
}

/// Batches kept in arrival order under a memory budget: held in memory while the reservation
/// grows, written to one spill file (with everything held before them) when it is refused.
/// Read back in arrival order by [`SpillBuffer::next_batch`].
pub struct SpillBuffer {
    what: String,
    mem: Reservation,
    held: std::collections::VecDeque<RecordBatch>,
    writer: Option<SpillWriter>,
    reader: Option<(SpillReader, SpillFile)>,
}

impl SpillBuffer {
    /// An empty buffer reserving from `mem`; spill files are named after `what`.
    pub fn new(what: &str, mem: Reservation) -> SpillBuffer {
        SpillBuffer {
            what: what.to_string(),
            mem,
            held: std::collections::VecDeque::new(),
            writer: None,
            reader: None,
        }
    }

    /// Keeps `batch`.
    ///
    /// # Errors
    /// A spill file cannot be written.
    pub fn push(&mut self, batch: RecordBatch) -> Result<(), OperatorError> {
        if self.mem.try_grow(held_bytes(&batch)).is_ok() {
            self.held.push_back(batch);
            return Ok(());
        }
        if self.writer.is_none() {
            self.writer = Some(SpillWriter::create(self.mem.pool(), &self.what, &batch.schema())?);
        }
        if let Some(w) = &mut self.writer {
            for b in self.held.drain(..) {
                w.write(&b)?;
            }
            w.write(&batch)?;
        }
        self.mem.free();
        Ok(())
    }

    /// The first batch kept, if any (spilled batches come back with nullable columns).
    pub fn first_schema(&self) -> Option<SchemaRef> {
        self.writer
            .as_ref()
            .map(|w| Arc::clone(&w.file.schema))
            .or_else(|| self.held.front().map(RecordBatch::schema))
    }

    /// The next batch in arrival order (after the last [`SpillBuffer::push`]), `None` at the end.
    ///
    /// # Errors
    /// The spill file cannot be finished or read.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, OperatorError> {
        if let Some(w) = self.writer.take() {
            let file = w.finish()?;
            self.reader = Some((file.reader()?, file));
        }
        if let Some((r, _)) = &mut self.reader {
            if let Some(b) = r.next_batch()? {
                return Ok(Some(b));
            }
            self.reader = None;
        }
        let b = self.held.pop_front();
        if let Some(b) = &b {
            self.mem.shrink(held_bytes(b));
        }
        Ok(b)
    }
}

/// A spill file being written.
pub struct SpillWriter {
    file: SpillFile,
    writer: StreamWriter<BufWriter<File>>,
}

impl SpillWriter {
    /// A new file in the worker's spill directory for batches of `schema` (made nullable), named
    /// after `what` (the operator and part).
    ///
    /// # Errors
    /// The directory or the file cannot be made.
    pub fn create(pool: &Arc<MemoryPool>, what: &str, schema: &Schema) -> Result<SpillWriter, OperatorError> {
        let dir = pool.spill_dir().map_err(|source| OperatorError::Io {
            context: format!("`{what}`: cannot make the spill directory"),
            source,
        })?;
        let safe: String = what.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let mut n = 0u32;
        let (path, handle) = loop {
            let path = dir.join(format!("{safe}-{n}.arrows"));
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => {
                    return Err(io(format!("`{what}`: cannot create spill file {}", path.display()))(e));
                }
            }
        };
        let schema = nullable(schema);
        let file = SpillFile { path, schema: Arc::clone(&schema), rows: 0, bytes: 0, pool: Arc::clone(pool) };
        let options =
            IpcWriteOptions::default().try_with_compression(Some(arrow_ipc::CompressionType::LZ4_FRAME))?;
        let writer = StreamWriter::try_new_with_options(BufWriter::new(handle), &schema, options)?;
        Ok(SpillWriter { file, writer })
    }

    /// Appends `batch` (its columns must match the file's schema, nullability aside).
    ///
    /// # Errors
    /// Write failures (a full disk), named with the file.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), OperatorError> {
        let batch = RecordBatch::try_new(Arc::clone(&self.file.schema), batch.columns().to_vec())?;
        self.writer.write(&batch).map_err(|e| OperatorError::Io {
            context: format!("cannot write spill file {}", self.file.path.display()),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.file.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// The file's schema (every field nullable).
    pub fn schema(&self) -> &SchemaRef {
        &self.file.schema
    }

    /// Closes the file, ready to be read.
    ///
    /// # Errors
    /// Write failures, named with the file.
    pub fn finish(mut self) -> Result<SpillFile, OperatorError> {
        let context = format!("cannot write spill file {}", self.file.path.display());
        self.writer.finish().map_err(|e| OperatorError::Io {
            context: context.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut inner = self.writer.into_inner().map_err(|e| OperatorError::Io {
            context: context.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        std::io::Write::flush(&mut inner).map_err(io(context.clone()))?;
        let bytes = inner.get_ref().metadata().map_err(io(context))?.len();
        self.file.bytes = bytes;
        self.file.pool.count_spill(bytes);
        Ok(self.file)
    }
}

/// A finished spill file; removed when dropped.
pub struct SpillFile {
    path: PathBuf,
    schema: SchemaRef,
    rows: u64,
    bytes: u64,
    pool: Arc<MemoryPool>,
}

impl SpillFile {
    /// Rows in the file.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The file's schema (every field nullable).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Reads the batches back in the order they were written.
    ///
    /// # Errors
    /// The file cannot be opened or its start is damaged.
    pub fn reader(&self) -> Result<SpillReader, OperatorError> {
        let f =
            File::open(&self.path).map_err(io(format!("cannot read spill file {}", self.path.display())))?;
        let reader = StreamReader::try_new(BufReader::new(f), None)?;
        Ok(SpillReader { reader, path: self.path.clone() })
    }

    /// Every batch of the file (an empty file gives one empty batch, for the schema).
    ///
    /// # Errors
    /// As for [`SpillFile::reader`] and [`SpillReader::next_batch`].
    pub fn read_all(&self) -> Result<Vec<RecordBatch>, OperatorError> {
        let mut reader = self.reader()?;
        let mut out = Vec::new();
        while let Some(b) = reader.next_batch()? {
            out.push(b);
        }
        if out.is_empty() {
            out.push(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        Ok(out)
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot remove a spill file");
        }
    }
}

/// Batches read back from a [`SpillFile`].
pub struct SpillReader {
    reader: StreamReader<BufReader<File>>,
    path: PathBuf,
}

impl SpillReader {
    /// The next batch, `None` at the end.
    ///
    /// # Errors
    /// A damaged file, named.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, OperatorError> {
        match self.reader.next() {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(e)) => Err(OperatorError::Io {
                context: format!("cannot read spill file {}", self.path.display()),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::types::Int32Type;
    use arrow_array::{ArrayRef, DictionaryArray, Int64Array, StringArray};

    #[test]
    fn batches_come_back_as_written_and_the_file_goes_when_dropped() {
        let base = tempfile::tempdir().expect("dir");
        let pool = MemoryPool::new(1 << 20, base.path().to_path_buf());
        let dict = |v: Vec<&str>| Arc::new(v.into_iter().collect::<DictionaryArray<Int32Type>>()) as ArrayRef;
        let a = RecordBatch::try_from_iter(vec![
            ("k", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            ("d", dict(vec!["x", "y", "x"])),
        ])
        .expect("a");
        // A second batch with another dictionary and a null: a stream takes both.
        let b = RecordBatch::try_from_iter(vec![
            ("k", Arc::new(Int64Array::from(vec![Some(4), None])) as ArrayRef),
            ("d", dict(vec!["z", "w"])),
        ])
        .expect("b");
        let mut w = SpillWriter::create(&pool, "sort run", &a.schema()).expect("create");
        w.write(&a).expect("a");
        w.write(&b.slice(1, 1)).expect("b");
        let file = w.finish().expect("finish");
        assert_eq!(file.rows(), 4);
        let back = file.read_all().expect("read");
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].columns(), a.columns());
        assert_eq!(back[1].column(0).as_ref(), b.slice(1, 1).column(0).as_ref());
        assert!(pool.spilled().0 > 0 && pool.spilled().1 == 1);
        let path = file.path.clone();
        assert!(path.exists());
        drop(file);
        assert!(!path.exists());
        let s = StringArray::from(vec!["abc"; 10]);
        let one = RecordBatch::try_from_iter(vec![("s", Arc::new(s) as ArrayRef)]).expect("s");
        assert!(held_bytes(&one.slice(0, 1)) >= 30 + 4 * 2, "the slice's buffers");
    }
}
