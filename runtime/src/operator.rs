//! The [`Operator`] trait: a small synchronous state machine, free of actix, that the runtime
//! drives from an actor.
//!
//! ```text
//!            on_batch(port, batch)*                      resume()* while More
//!  Running ───────────────────────▶ Running ──on_end(last port)──▶ Draining ──Idle──▶ Finished
//!     │  on_end(port) for ports that end early: Running                  ▲
//!     └─ no inputs (a source): resume() until it returns Idle ───────────┘
//! ```
//!
//! An operator may emit any number of batches per call through [`Output`], but an operator that
//! can produce a lot at once (a join's probe, a source) should emit about one batch per call and
//! return [`Flow::More`]: the runtime calls [`Operator::resume`] again only when the receivers
//! have credit, which is what keeps memory bounded.

use arrow_array::RecordBatch;

use crate::error::OperatorError;
use crate::ids::Rank;
use crate::report::TableSummary;

/// Whether an operator has more output to produce without further input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Nothing more until more input arrives (or, after the last input ended: finished).
    Idle,
    /// Call [`Operator::resume`] again.
    More,
}

/// Where an emitted batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// To the consumers on this worker.
    Local,
    /// To the consumers on rank `r` (only valid on exchange edges).
    Rank(Rank),
}

/// Batches emitted during one operator call.
#[derive(Debug, Default)]
pub struct Output {
    batches: Vec<(Target, RecordBatch)>,
}

impl Output {
    /// Emits a batch to this worker's consumers.
    pub fn emit(&mut self, batch: RecordBatch) {
        self.batches.push((Target::Local, batch));
    }

    /// Emits a batch to the consumers on `rank`.
    pub fn emit_to(&mut self, rank: Rank, batch: RecordBatch) {
        self.batches.push((Target::Rank(rank), batch));
    }

    /// Takes the emitted batches.
    pub fn drain(&mut self) -> std::vec::Drain<'_, (Target, RecordBatch)> {
        self.batches.drain(..)
    }

    /// True when nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// A dataflow operator. Implementations are synchronous and know nothing of actors or links,
/// so they can be unit-tested by calling these methods directly.
pub trait Operator: Send + 'static {
    /// A batch arrived on input `port`.
    ///
    /// # Errors
    /// Any failure; it fails the job with the operator's name.
    fn on_batch(&mut self, port: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError>;

    /// Input `port` ended: every sender finished it.
    ///
    /// # Errors
    /// Any failure; it fails the job with the operator's name.
    fn on_end(&mut self, port: usize, out: &mut Output) -> Result<Flow, OperatorError>;

    /// Produce more output after returning [`Flow::More`]. Operators without inputs (sources)
    /// are driven by this alone, from the start.
    ///
    /// # Errors
    /// Any failure; it fails the job with the operator's name.
    fn resume(&mut self, _out: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Flow::Idle)
    }

    /// What a sink saw, for the job report. Asked once, after the operator finished.
    fn summary(&self) -> Option<TableSummary> {
        None
    }
}
