//! updraft's built-in operators and the planner that turns a pipeline spec into the physical
//! plan every worker runs.
//!
//! | module | what |
//! |---|---|
//! | [`generate`] | the distributed-join benchmark table |
//! | [`files`] | Parquet and CSV file sources, files split across ranks |
//! | [`partition`] | row hashing and hash partitioning (the kernel of a shuffle) |
//! | [`shuffle`] | hash partition + all-to-all exchange |
//! | [`join`] | local inner hash join on one or more key columns |
//! | [`sinks`] | Parquet files, and a summary (row count, checksums) |
//! | [`checksum`] | the order-independent checksum the summary and the tests agree on |
//! | [`planner`] | pipeline spec → physical plan (shuffles inserted before joins) |

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
pub mod setops;
pub mod shuffle;
pub mod sinks;
pub mod sort;

pub use planner::{PlanContext, build_plan};
