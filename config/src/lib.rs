//! Pipeline and runtime specs for updraft: pure data plus validation.
//!
//! A pipeline file is TOML. [`parse_pipeline`] reads it into a [`PipelineSpec`] and reports
//! *every* problem it finds at once, each with the dotted path of the offending key and its
//! line and column ([`ConfigErrors`]). Unknown keys are errors, so a typo never silently falls
//! back to a default.
//!
//! ```text
//!   text ──DeTable::parse──▶ spanned TOML tree ──Reader──▶ PipelineSpec ──validate──▶ ok / errors
//! ```
//!
//! Defaults, with their units and the assumption behind each, live in [`defaults`].

pub mod defaults;
mod error;
pub mod expr;
#[doc(hidden)]
pub mod fuzzing;
mod operator_spec;
mod pipeline;
pub mod pricing;
mod reader;
mod settings;
mod units;

pub use error::{ConfigError, ConfigErrors};
pub use operator_spec::{
    AggFn, AggSpec, BuiltinOnly, CustomSpec, JoinAlgorithm, JoinBuild, JoinHow, JoinSpec, OperatorCatalog,
    OperatorKind, OperatorSpec, SetOpKind, SortKeySpec,
};
pub use pipeline::{
    CsvOptions, FileFormat, MissingColumns, ParquetCompression, PipelineSpec, SinkKind, SinkSpec,
    SourceFiles, SourceKind, SourceSpec, WriteMode, canonical_lines, errors_at, is_glob, parse_pipeline,
    parse_pipeline_with,
};
pub use settings::{ChannelPolicy, Encryption, RuntimeSettings};
pub use units::{parse_bytes, parse_duration};
