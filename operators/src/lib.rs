//! updraft's built-in operators and the planner that turns a pipeline spec into the physical
//! plan every worker runs.
//!
//! | module | what |
//! |---|---|
//! | [`generate`] | the distributed-join benchmark table |
//! | [`inputs`] | one file list and one schema per source, agreed by the job before data moves |
//! | [`unify`] | the rules files of one source agree on a schema by; batches converted to it |
//! | [`files`] | Parquet, CSV and Arrow IPC sources reading a rank's share of the files |
//! | [`storage`] | local paths and `s3://` objects, glob and directory expansion |
//! | [`keys`] | key equality and order (floats: -0.0 = 0.0, NaN = NaN) for every operator |
//! | [`partition`] | row hashing and hash partitioning (the kernel of a shuffle) |
//! | [`shuffle`] | hash partition + all-to-all exchange |
//! | [`join`] + [`hash_table`] | local joins (hash and sort-merge; inner, left, right, full) |
//! | [`groupby`] | group-by with partial and final aggregation (states in rows: `slab`) |
//! | `table` | collected batches as one table a column at a time (join sides, local sort) |
//! | [`sort`], [`head`] | sample sort; first rows in rank order |
//! | [`setops`] | union, intersect, subtract, distinct |
//! | [`expr`] | filter and project expressions |
//! | [`spill`], [`merge`] | spill files (Arrow IPC, LZ4) and the k-way merge of sorted runs |
//! | [`sinks`] | Parquet, CSV and IPC files, and a summary (row count, checksums) |
//! | [`outputs`] | part-file names, temporary files and the commit of a job's outputs |
//! | [`check`] | column and type checks before a run (each operator on an empty batch) |
//! | [`checksum`] | the order-independent checksum the summary and the tests agree on |
//! | [`registry`] | operators registered by the embedding program, used by name |
//! | [`planner`] | pipeline spec → physical plan (shuffles inserted before joins) |

pub mod aggregates;
pub mod check;
pub mod checksum;
pub mod expr;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod generate;
pub mod groupby;
pub mod hash_table;
pub mod head;
pub mod inputs;
pub mod join;
pub mod keys;
pub mod merge;
pub mod outputs;
pub mod partition;
pub mod planner;
pub mod pushdown;
pub mod registry;
pub mod setops;
pub mod shuffle;
pub mod sinks;
mod slab;
pub mod sort;
pub mod spill;
pub mod storage;
mod table;
pub mod unify;

pub use planner::{PlanContext, build_plan, build_plan_with};
pub use registry::{BuildContext, OperatorFactory, Registry};
