//! updraft's built-in operators and the planner that turns a pipeline spec into the physical
//! plan every worker runs.
//!
//! | module | what |
//! |---|---|
//! | [`generate`] | the distributed-join benchmark table |
//! | [`files`] | Parquet, CSV and Arrow IPC sources; files and globs split across ranks |
//! | [`storage`] | local paths and `s3://` objects, glob expansion |
//! | [`partition`] | row hashing and hash partitioning (the kernel of a shuffle) |
//! | [`shuffle`] | hash partition + all-to-all exchange |
//! | [`join`] | local inner hash join on one or more key columns |
//! | [`sinks`] | Parquet, CSV and IPC files, and a summary (row count, checksums) |
//! | [`check`] | column and type checks before a run (each operator on an empty batch) |
//! | [`checksum`] | the order-independent checksum the summary and the tests agree on |
//! | [`registry`] | operators registered by the embedding program, used by name |
//! | [`planner`] | pipeline spec → physical plan (shuffles inserted before joins) |

pub mod check;
pub mod checksum;
pub mod chunked;
pub mod expr;
pub mod files;
pub mod generate;
pub mod groupby;
pub mod hash_table;
pub mod head;
pub mod join;
pub mod partition;
pub mod planner;
pub mod registry;
pub mod setops;
pub mod shuffle;
pub mod sinks;
pub mod sort;
pub mod storage;

pub use planner::{PlanContext, build_plan, build_plan_with};
pub use registry::{BuildContext, OperatorFactory, Registry};
