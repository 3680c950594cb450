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
    more: bool,
}

impl Output {
    /// Asks for [`Operator::resume`] after this call, as returning [`Flow::More`] does: for
    /// [`Operator::on_batch`], which returns nothing, when one input batch makes more output
    /// than one call should emit (a join's probe batch whose keys match many rows).
    pub fn more(&mut self) {
        self.more = true;
    }

    /// Whether [`Output::more`] was called since the last time this was asked.
    pub fn take_more(&mut self) -> bool {
        std::mem::take(&mut self.more)
    }

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
///
/// What the runtime promises, and what it expects back:
///
/// - Batches arrive on ports `0..inputs` in the order each producer sent them; batches of
///   different producers (other ranks) interleave. A batch may be empty: producers send one
///   schema-carrying empty batch when they have no rows, so that consumers learn the columns.
/// - [`on_end`](Operator::on_end) is called once per port, after every producer of that port
///   (on every rank) finished it. After the last port ends, the runtime calls
///   [`resume`](Operator::resume) while it returns [`Flow::More`]; the operator is finished when
///   its last call returns [`Flow::Idle`].
/// - Emit through [`Output`]: [`Output::emit`] goes to the consumers on this rank (or, for a
///   shuffle stage, is routed by the runtime), [`Output::emit_to`] to one rank. Keep each call
///   to about `batch_rows` rows and return `More`; the runtime calls again only when every
///   receiver has credit. An operator that ends with no rows should still emit one empty batch
///   with its output schema.
/// - Check columns and types when the first batch (even an empty one) arrives: `updraft
///   validate` runs every operator on one empty batch of its input schema and reports what it
///   refuses at the operator's key path.
/// - Return errors, never panic: an [`OperatorError`] fails the job on every rank with this
///   operator's name.
///
/// A complete operator, registered by name and used from a pipeline, is
/// `apps/examples/custom_operator.rs` (the top `n` rows per key); a minimal one:
///
/// ```
/// use arrow_array::RecordBatch;
/// use updraft_runtime::{Flow, Operator, OperatorError, Output};
///
/// /// Keeps every other batch.
/// #[derive(Default)]
/// struct EveryOther { seen: usize }
///
/// impl Operator for EveryOther {
///     fn on_batch(&mut self, _port: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
///         if self.seen % 2 == 0 || batch.num_rows() == 0 {
///             out.emit(batch);
///         }
///         self.seen += 1;
///         Ok(())
///     }
///
///     fn on_end(&mut self, _port: usize, _out: &mut Output) -> Result<Flow, OperatorError> {
///         Ok(Flow::Idle)
///     }
/// }
///
/// let mut op = EveryOther::default();
/// let mut out = Output::default();
/// let batch = RecordBatch::new_empty(std::sync::Arc::new(arrow_schema::Schema::empty()));
/// op.on_batch(0, batch, &mut out).expect("accepted");
/// assert_eq!(op.on_end(0, &mut out).expect("ended"), Flow::Idle);
/// assert_eq!(out.drain().count(), 1);
/// ```
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
