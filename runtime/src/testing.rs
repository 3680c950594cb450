//! Operators for tests: a memory source, a source or sink held at a gate until released, a
//! collecting sink, and an operator that fails on purpose. Useful for testing custom operators
//! and the runtime itself; none of them is meant for real pipelines.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use arrow_array::RecordBatch;

use crate::error::OperatorError;
use crate::operator::{Flow, Operator, Output};

/// A gate that blocks callers until it is opened.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    /// Opens the gate for good.
    pub fn open(&self) {
        let (lock, cv) = &*self.0;
        if let Ok(mut open) = lock.lock() {
            *open = true;
            cv.notify_all();
        }
    }

    /// Waits until the gate opens, at most `limit`; true if it opened.
    pub fn wait(&self, limit: Duration) -> bool {
        let (lock, cv) = &*self.0;
        let Ok(guard) = lock.lock() else { return false };
        cv.wait_timeout_while(guard, limit, |open| !*open).map(|(g, _)| *g).unwrap_or(false)
    }
}

/// Emits the given batches, one per call, counting them in `emitted`.
pub struct MemorySource {
    batches: VecDeque<RecordBatch>,
    emitted: Arc<AtomicUsize>,
}

impl MemorySource {
    /// A source of `batches`; `emitted` counts what it has handed out.
    pub fn new(batches: Vec<RecordBatch>, emitted: Arc<AtomicUsize>) -> Self {
        MemorySource { batches: batches.into(), emitted }
    }
}

impl Operator for MemorySource {
    fn on_batch(&mut self, _: usize, _: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        Err(OperatorError::Invalid("a source has no inputs".into()))
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Flow::Idle)
    }

    fn resume(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        match self.batches.pop_front() {
            Some(b) => {
                self.emitted.fetch_add(1, Ordering::SeqCst);
                out.emit(b);
                Ok(if self.batches.is_empty() { Flow::Idle } else { Flow::More })
            }
            None => Ok(Flow::Idle),
        }
    }
}

/// Keeps every batch it receives; the first `on_batch` waits at `gate` (if any) first, so the
/// sink holds its credit until the test opens the gate.
pub struct CollectingSink {
    got: Arc<Mutex<Vec<RecordBatch>>>,
    gate: Option<Gate>,
}

impl CollectingSink {
    /// A sink collecting into `got`.
    pub fn new(got: Arc<Mutex<Vec<RecordBatch>>>, gate: Option<Gate>) -> Self {
        CollectingSink { got, gate }
    }
}

impl Operator for CollectingSink {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        if let Some(gate) = self.gate.take()
            && !gate.wait(Duration::from_secs(30))
        {
            return Err(OperatorError::Invalid("gate never opened".into()));
        }
        self.got.lock().map_err(|_| OperatorError::Invalid("poisoned".into()))?.push(batch);
        Ok(())
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Flow::Idle)
    }
}

/// Where [`Failing`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// On the n-th batch (1-based).
    OnBatch(usize),
    /// When its input ends.
    OnEnd,
}

/// Passes batches through until its fault.
pub struct Failing {
    fault: Fault,
    seen: usize,
}

impl Failing {
    /// Fails at `fault`.
    pub fn new(fault: Fault) -> Self {
        Failing { fault, seen: 0 }
    }
}

impl Operator for Failing {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        self.seen += 1;
        if self.fault == Fault::OnBatch(self.seen) {
            return Err(OperatorError::Invalid(format!("injected fault at batch {}", self.seen)));
        }
        out.emit(batch);
        Ok(())
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        if self.fault == Fault::OnEnd {
            return Err(OperatorError::Invalid("injected fault at end".into()));
        }
        Ok(Flow::Idle)
    }
}
