//! The updraft worker runtime.
//!
//! It owns what every worker runs regardless of where its links go: the wire frame, the
//! [`Operator`] trait, the actor that hosts an operator, the exchange that routes its output with
//! byte-credit flow control, and the job driver that runs a [`plan::PhysicalPlan`] to completion.
//! It never names a concrete transport: it talks to one through [`messages::TransportPort`]
//! (actix recipients), which `updraft-transports` implements.
//!
//! ```text
//!  operator actor ──Output──▶ OutEdge ─┬─ same rank: Arc RecordBatch ─────────────▶ operator actor
//!                                      └─ other rank: Arrow IPC ─▶ transport ─▶ link ─▶ peer
//!  consumer ──(batch processed: CreditGuard dropped)──▶ credit back to the producer
//! ```

pub mod actor;
pub mod collective;
pub mod commit;
pub mod credit;
pub mod error;
pub mod exchange;
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub mod job;
pub mod memory;
pub mod messages;
pub mod metrics;
pub mod operator;
pub mod plan;
pub mod report;
pub mod testing;
pub mod wire;

pub use error::{FailureClass, JobError, OperatorError};
pub use ids::{EdgeId, Rank};
pub use memory::{MemoryPool, Reservation, ResourcesExhausted};
pub use operator::{Flow, Operator, Output, Target};
pub use report::{JobReport, TableSummary, WorkerReport};
