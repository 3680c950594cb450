//! The pipeline spec: named sources, operators and sinks forming a DAG, read from TOML.
//!
//! ```toml
//! [job]
//! name = "example"
//!
//! [source.left]
//! kind = "generate"        # or "parquet", "csv"
//! rows = 1000              # per worker
//!
//! [operator.joined]
//! kind = "join"
//! left = "left"
//! right = "right"
//! on = ["key"]
//!
//! [sink.summary]
//! kind = "summary"
//! input = "joined"
//! ```

use std::collections::{BTreeMap, BTreeSet};

use toml::de::DeTable;

use crate::error::{ConfigError, ConfigErrors};
use crate::expr::{Expr, parse_expr};
use crate::reader::{Doc, Table};
use crate::settings::RuntimeSettings;

/// A whole pipeline, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    /// Job name, used in output and metrics.
    pub name: String,
    /// Deadlines and sizes.
    pub runtime: RuntimeSettings,
    /// Sources in file order.
    pub sources: Vec<SourceSpec>,
    /// Operators in file order.
    pub operators: Vec<OperatorSpec>,
    /// Sinks in file order.
    pub sinks: Vec<SinkSpec>,
}

/// A named source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// Name other stages refer to.
    pub name: String,
    /// What it reads.
    pub kind: SourceKind,
}

/// What a source reads.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// The distributed-join benchmark table: `key` int64 uniform in
    /// `[0, unique_factor × rows × world)`, `payload` int64; seeded per rank.
    Generate {
        /// Rows made on each worker.
        rows: u64,
        /// Key range as a fraction of the total row count.
        unique_factor: f64,
        /// Base seed; each rank mixes its rank in.
        seed: u64,
    },
    /// Files on disk.
    Files {
        /// Parquet or CSV.
        format: FileFormat,
        /// Which files each rank reads.
        files: SourceFiles,
    },
}

/// File formats a source can read.
#[derive(Debug, Clone, PartialEq)]
pub enum FileFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma (or other delimiter) separated text.
    Csv {
        /// First line holds column names.
        has_header: bool,
        /// Field delimiter (one byte).
        delimiter: u8,
        /// Declared columns `(name, type)`; inferred from the data when absent.
        schema: Option<Vec<(String, String)>>,
    },
}

/// The files of a source and how ranks share them.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceFiles {
    /// One file per rank: `{rank}` in the path is replaced by the rank. A missing file is an
    /// error.
    PerRank(String),
    /// A list of files split round-robin across ranks (file `i` goes to rank `i % world`); ranks
    /// left without a file read nothing.
    List(Vec<String>),
}

/// A named operator.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorSpec {
    /// Name other stages refer to.
    pub name: String,
    /// What it does.
    pub kind: OperatorKind,
}

/// Operators a pipeline can use.
#[derive(Debug, Clone, PartialEq)]
pub enum OperatorKind {
    /// Distributed join of two inputs; both are hash-partitioned on their keys first.
    Join(JoinSpec),
    /// Group rows by `keys` and aggregate the rest.
    GroupBy {
        /// Input stage.
        input: String,
        /// Key columns.
        keys: Vec<String>,
        /// Aggregates, in output order.
        aggregates: Vec<AggSpec>,
        /// Pre-aggregate on each rank before the shuffle when every aggregate allows it.
        pre_aggregate: bool,
    },
    /// Sort globally: rank 0 holds the first rows, each rank's output is in order.
    Sort {
        /// Input stage.
        input: String,
        /// Sort keys, most significant first.
        by: Vec<SortKeySpec>,
    },
    /// The first `rows` rows in rank order, delivered on rank 0.
    Head {
        /// Input stage.
        input: String,
        /// How many.
        rows: u64,
    },
    /// Redistribute rows: by hash of `keys`, or round-robin by batch without keys.
    Repartition {
        /// Input stage.
        input: String,
        /// Key columns (empty: round-robin).
        keys: Vec<String>,
    },
    /// Keep the rows for which `predicate` is true (null counts as false).
    Filter {
        /// Input stage.
        input: String,
        /// The predicate.
        predicate: Expr,
    },
    /// Compute new columns from expressions, in order.
    Project {
        /// Input stage.
        input: String,
        /// (output name, expression).
        columns: Vec<(String, Expr)>,
    },
    /// A set operation over one or more inputs.
    Set {
        /// Which.
        op: SetOpKind,
        /// Input stages (one for distinct, two for intersect and subtract).
        inputs: Vec<String>,
    },
    /// Hash-partition on `keys` and send each row to the rank that owns its hash.
    Shuffle {
        /// Input stage.
        input: String,
        /// Key columns.
        keys: Vec<String>,
    },
}

/// Join parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinSpec {
    /// Left input stage.
    pub left: String,
    /// Right input stage.
    pub right: String,
    /// Key columns of the left input.
    pub left_on: Vec<String>,
    /// Key columns of the right input (same length as `left_on`).
    pub right_on: Vec<String>,
    /// Which rows are kept.
    pub how: JoinHow,
    /// How matches are found.
    pub algorithm: JoinAlgorithm,
    /// Suffixes appended to clashing non-key column names (left, right).
    pub suffixes: (String, String),
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFn {
    /// Values (or rows, without a column).
    Count,
    /// Sum of values.
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Arithmetic mean.
    Mean,
    /// Sample variance.
    Var,
    /// Sample standard deviation.
    Std,
    /// Distinct values.
    NUnique,
    /// First value seen.
    First,
    /// Last value seen.
    Last,
}

/// One aggregate of a group-by: `output = "func(column)"`.
#[derive(Debug, Clone, PartialEq)]
pub struct AggSpec {
    /// Function.
    pub func: AggFn,
    /// Input column; `None` for `count()`.
    pub column: Option<String>,
    /// Output column name.
    pub output: String,
}

const AGG_FNS: &[(&str, AggFn)] = &[
    ("count", AggFn::Count),
    ("sum", AggFn::Sum),
    ("min", AggFn::Min),
    ("max", AggFn::Max),
    ("mean", AggFn::Mean),
    ("var", AggFn::Var),
    ("std", AggFn::Std),
    ("nunique", AggFn::NUnique),
    ("first", AggFn::First),
    ("last", AggFn::Last),
];

impl AggFn {
    /// The function's name as written in pipelines.
    pub fn name(self) -> &'static str {
        AGG_FNS.iter().find(|(_, f)| *f == self).map_or("?", |(n, _)| n)
    }
}

/// Parses `func(column)` (or `count()`).
fn parse_agg(text: &str) -> Result<(AggFn, Option<String>), String> {
    let names: Vec<&str> = AGG_FNS.iter().map(|(n, _)| *n).collect();
    let (name, rest) = text
        .trim()
        .split_once('(')
        .ok_or_else(|| format!("`{text}` is not `function(column)`; functions: {}", names.join(", ")))?;
    let column =
        rest.strip_suffix(')').ok_or_else(|| format!("`{text}` lacks its closing parenthesis"))?.trim();
    let func = AGG_FNS.iter().find(|(n, _)| *n == name.trim()).map(|(_, f)| *f).ok_or_else(|| {
        format!("unknown aggregate function `{}`; expected one of: {}", name.trim(), names.join(", "))
    })?;
    match (func, column.is_empty()) {
        (AggFn::Count, true) => Ok((func, None)),
        (_, true) => Err(format!("`{}` needs a column, e.g. `{}(amount)`", name.trim(), name.trim())),
        (_, false) => Ok((func, Some(column.to_string()))),
    }
}

/// One sort key: `"column [asc|desc] [nulls first|last]"` (default: ascending, nulls last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKeySpec {
    /// Column.
    pub column: String,
    /// Largest first.
    pub descending: bool,
    /// Nulls before values.
    pub nulls_first: bool,
}

fn parse_sort_key(text: &str) -> Result<SortKeySpec, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some((column, rest)) = words.split_first() else { return Err("empty sort key".into()) };
    let mut key = SortKeySpec { column: column.to_string(), descending: false, nulls_first: false };
    let mut i = 0;
    while i < rest.len() {
        match (rest[i].to_ascii_lowercase().as_str(), rest.get(i + 1).map(|w| w.to_ascii_lowercase())) {
            ("asc", _) => key.descending = false,
            ("desc", _) => key.descending = true,
            ("nulls", Some(w)) if w == "first" || w == "last" => {
                key.nulls_first = w == "first";
                i += 1;
            }
            (w, _) => {
                return Err(format!(
                    "unexpected `{w}` in sort key `{text}`; write e.g. \"amount desc nulls first\""
                ));
            }
        }
        i += 1;
    }
    Ok(key)
}

/// Set operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOpKind {
    /// Every row of every input.
    UnionAll,
    /// Each distinct row of the inputs once.
    UnionDistinct,
    /// Distinct rows of the first input that occur in the second.
    Intersect,
    /// Distinct rows of the first input that do not occur in the second.
    Subtract,
    /// The first row of each distinct combination of `columns` (every column when empty).
    Distinct {
        /// Compared columns.
        columns: Vec<String>,
    },
}

/// Join types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinHow {
    /// Rows whose keys match on both sides.
    Inner,
    /// Inner rows, plus left rows without a match (right columns null).
    Left,
    /// Inner rows, plus right rows without a match (left columns null).
    Right,
    /// Inner rows, plus unmatched rows of both sides.
    Full,
}

impl JoinHow {
    /// Whether unmatched (left, right) rows are kept.
    pub fn preserves(self) -> (bool, bool) {
        match self {
            JoinHow::Inner => (false, false),
            JoinHow::Left => (true, false),
            JoinHow::Right => (false, true),
            JoinHow::Full => (true, true),
        }
    }
}

/// Join algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinAlgorithm {
    /// Build a hash table on one side, probe with the other.
    Hash,
}

/// A named sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    /// Name, used in the report.
    pub name: String,
    /// The stage it consumes.
    pub input: String,
    /// Where the rows go.
    pub kind: SinkKind,
}

/// Sinks.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// One Parquet file per rank: `{rank}` in `path` is replaced by the rank.
    Parquet {
        /// Output path pattern.
        path: String,
    },
    /// Row count and order-independent checksums, combined across ranks in the job report.
    Summary,
}

/// Column types a CSV schema may declare.
pub const CSV_TYPES: &[&str] = &["int32", "int64", "float64", "utf8", "bool", "date32"];

/// Parses and validates a pipeline. `source_name` is used in messages (usually the file path).
///
/// # Errors
/// Every problem found, each with its key path and position.
pub fn parse_pipeline(text: &str, source_name: &str) -> Result<PipelineSpec, ConfigErrors> {
    let fail = |errors: Vec<ConfigError>| ConfigErrors { source_name: source_name.to_string(), errors };
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let doc = Doc::new(text);
            doc.error("", e.span().unwrap_or(0..0), format!("not valid TOML: {}", e.message()));
            return Err(fail(doc.take_errors()));
        }
    };
    let doc = Doc::new(text);
    let top = Table::new(&doc, String::new(), root.span(), root.get_ref());
    let spec = read_pipeline(&top);
    top.finish(&["job", "runtime", "source", "operator", "sink"]);
    if doc.has_errors() {
        return Err(fail(doc.take_errors()));
    }
    Ok(spec)
}

fn read_pipeline(top: &Table<'_, '_>) -> PipelineSpec {
    let mut name = "updraft-job".to_string();
    if let Some(job) = top.opt_table("job") {
        if let Some(n) = job.opt_str("name") {
            name = n;
        }
        job.finish(&["name"]);
    }
    let runtime = match top.opt_table("runtime") {
        Some(t) => {
            let s = RuntimeSettings::read(&t);
            t.finish(RuntimeSettings::keys());
            s
        }
        None => RuntimeSettings::default(),
    };
    // Every declared stage, whether or not its own keys are valid, so that one bad key does not
    // also make every stage that reads it look broken.
    let mut declared: Vec<(&'static str, String)> = Vec::new();
    let mut sources = Vec::new();
    if let Some(t) = top.opt_table("source") {
        for (n, t) in t.named_tables() {
            declared.push(("source", n.clone()));
            sources.extend(read_source(n, &t));
        }
    }
    let mut operators = Vec::new();
    if let Some(t) = top.opt_table("operator") {
        for (n, t) in t.named_tables() {
            declared.push(("operator", n.clone()));
            operators.extend(read_operator(n, &t));
        }
    }
    let mut sinks = Vec::new();
    if let Some(t) = top.opt_table("sink") {
        for (n, t) in t.named_tables() {
            declared.push(("sink", n.clone()));
            sinks.extend(read_sink(n, &t));
        }
    }
    let spec = PipelineSpec { name, runtime, sources, operators, sinks };
    check_graph(top, &spec, &declared);
    spec
}

fn read_source(name: String, t: &Table<'_, '_>) -> Option<SourceSpec> {
    let kind = t.req_str("kind", "one of: generate, parquet, csv")?;
    let kind = match kind.as_str() {
        "generate" => {
            let rows = t.req_u64("rows", "rows per worker");
            let unique_factor = t.opt_f64("unique_factor").unwrap_or(0.9);
            if !(unique_factor > 0.0 && unique_factor.is_finite()) {
                t.error("unique_factor", "must be a positive number");
            }
            let seed = t.opt_u64("seed").unwrap_or(0);
            t.finish(&["kind", "rows", "unique_factor", "seed"]);
            SourceKind::Generate { rows: rows?, unique_factor, seed }
        }
        "parquet" => {
            let files = read_files(t);
            t.finish(&["kind", "path", "paths"]);
            SourceKind::Files { format: FileFormat::Parquet, files: files? }
        }
        "csv" => {
            let files = read_files(t);
            let has_header = t.opt_bool("header").unwrap_or(true);
            let delimiter = match t.opt_str("delimiter") {
                Some(d) if d.len() == 1 => d.as_bytes()[0],
                Some(_) => {
                    t.error("delimiter", "must be a single one-byte character");
                    b','
                }
                None => b',',
            };
            let schema = t.opt_table("schema").map(|s| read_csv_schema(&s));
            t.finish(&["kind", "path", "paths", "header", "delimiter", "schema"]);
            SourceKind::Files { format: FileFormat::Csv { has_header, delimiter, schema }, files: files? }
        }
        other => {
            t.error(
                "kind",
                format!("unknown source kind `{other}`; expected one of: generate, parquet, csv"),
            );
            return None;
        }
    };
    Some(SourceSpec { name, kind })
}

fn read_files(t: &Table<'_, '_>) -> Option<SourceFiles> {
    let path = t.opt_str("path");
    let paths = t.opt_str_list("paths");
    match (path, paths) {
        (Some(p), None) => {
            if p.is_empty() {
                t.error("path", "must not be empty");
            }
            Some(SourceFiles::PerRank(p))
        }
        (None, Some(list)) => {
            if list.is_empty() {
                t.error("paths", "must list at least one file");
            }
            Some(SourceFiles::List(list))
        }
        (Some(_), Some(_)) => {
            t.error(
                "paths",
                "give either `path` (one file per rank, with {rank}) or `paths` (a list), not both",
            );
            None
        }
        (None, None) => {
            t.error(
                "kind",
                "a file source needs `path` (one file per rank, with {rank}) or `paths` (a list)",
            );
            None
        }
    }
}

fn read_csv_schema(s: &Table<'_, '_>) -> Vec<(String, String)> {
    let mut cols = Vec::new();
    for key in s.keys_in_order() {
        if let Some(ty) = s.opt_str(&key) {
            if !CSV_TYPES.contains(&ty.as_str()) {
                s.error(
                    &key,
                    format!("unknown column type `{ty}`; expected one of: {}", CSV_TYPES.join(", ")),
                );
            }
            cols.push((key, ty));
        }
    }
    s.finish(&[]);
    cols
}

fn read_operator(name: String, t: &Table<'_, '_>) -> Option<OperatorSpec> {
    let kind = t.req_str(
        "kind",
        "one of: join, group_by, sort, head, filter, project, union, intersect, subtract, distinct, repartition, shuffle",
    )?;
    let kind = match kind.as_str() {
        "join" => {
            let left = t.req_str("left", "the left input stage");
            let right = t.req_str("right", "the right input stage");
            let on = t.opt_str_list("on");
            let left_on = t.opt_str_list("left_on");
            let right_on = t.opt_str_list("right_on");
            let (left_on, right_on) = match (on, left_on, right_on) {
                (Some(on), None, None) => (on.clone(), on),
                (None, Some(l), Some(r)) => {
                    if l.len() != r.len() {
                        t.error("right_on", format!("has {} keys but `left_on` has {}", r.len(), l.len()));
                    }
                    (l, r)
                }
                (Some(_), _, _) => {
                    t.error("on", "give either `on` or both `left_on` and `right_on`, not both");
                    (vec![], vec![])
                }
                _ => {
                    t.error("kind", "a join needs `on` (key columns) or both `left_on` and `right_on`");
                    (vec![], vec![])
                }
            };
            if left_on.is_empty() && !t.doc().has_errors() {
                t.error("on", "must list at least one key column");
            }
            let how = match t.opt_str("how").as_deref() {
                None | Some("inner") => JoinHow::Inner,
                Some("left") => JoinHow::Left,
                Some("right") => JoinHow::Right,
                Some("full" | "outer") => JoinHow::Full,
                Some(other) => {
                    t.error(
                        "how",
                        format!("unknown join type `{other}`; expected one of: inner, left, right, full"),
                    );
                    JoinHow::Inner
                }
            };
            let algorithm = match t.opt_str("algorithm").as_deref() {
                None | Some("hash") => JoinAlgorithm::Hash,
                Some(other) => {
                    t.error(
                        "algorithm",
                        format!("unsupported join algorithm `{other}`; this version supports: hash"),
                    );
                    JoinAlgorithm::Hash
                }
            };
            let suffixes = match t.opt_str_list("suffixes") {
                None => ("_left".to_string(), "_right".to_string()),
                Some(s) if s.len() == 2 && s[0] != s[1] => (s[0].clone(), s[1].clone()),
                Some(_) => {
                    t.error("suffixes", "must be two different strings, e.g. [\"_left\", \"_right\"]");
                    (String::new(), String::new())
                }
            };
            t.finish(&["kind", "left", "right", "on", "left_on", "right_on", "how", "algorithm", "suffixes"]);
            OperatorKind::Join(JoinSpec {
                left: left?,
                right: right?,
                left_on,
                right_on,
                how,
                algorithm,
                suffixes,
            })
        }
        "group_by" => {
            let input = t.req_str("input", "the input stage");
            let keys = t.opt_str_list("keys");
            if keys.as_ref().is_none_or(|k| k.is_empty()) {
                t.error("keys", "a group_by needs at least one key column in `keys`");
            }
            let mut aggregates = Vec::new();
            match t.opt_table("aggregate") {
                Some(a) => {
                    for output in a.keys_in_order() {
                        if let Some(text) = a.opt_str(&output) {
                            match parse_agg(&text) {
                                Ok((func, column)) => aggregates.push(AggSpec { func, column, output }),
                                Err(msg) => a.error(&output, msg),
                            }
                        }
                    }
                    a.finish(&[]);
                    if aggregates.is_empty() && !t.doc().has_errors() {
                        t.error(
                            "aggregate",
                            "list at least one aggregate, e.g. aggregate = { total = \"sum(amount)\" }",
                        );
                    }
                }
                None => t.error("kind", "a group_by needs `aggregate`, e.g. aggregate = { n = \"count()\" }"),
            }
            let pre_aggregate = t.opt_bool("pre_aggregate").unwrap_or(true);
            t.finish(&["kind", "input", "keys", "aggregate", "pre_aggregate"]);
            OperatorKind::GroupBy { input: input?, keys: keys.unwrap_or_default(), aggregates, pre_aggregate }
        }
        "union" | "intersect" | "subtract" => {
            let inputs = t.opt_str_list("inputs").unwrap_or_default();
            let two = kind != "union";
            if (two && inputs.len() != 2) || (!two && inputs.len() < 2) {
                let need = if two { "exactly two stages" } else { "two or more stages" };
                t.error("inputs", format!("`{kind}` needs `inputs` listing {need}"));
            }
            let distinct = if kind == "union" { t.opt_bool("distinct").unwrap_or(false) } else { true };
            t.finish(if kind == "union" { &["kind", "inputs", "distinct"] } else { &["kind", "inputs"] });
            let op = match kind.as_str() {
                "union" if distinct => SetOpKind::UnionDistinct,
                "union" => SetOpKind::UnionAll,
                "intersect" => SetOpKind::Intersect,
                _ => SetOpKind::Subtract,
            };
            OperatorKind::Set { op, inputs }
        }
        "sort" => {
            let input = t.req_str("input", "the input stage");
            let mut by = Vec::new();
            match t.get("by").map(|v| v.path) {
                Some(path) => {
                    for (i, text) in t.opt_str_list("by").unwrap_or_default().into_iter().enumerate() {
                        match parse_sort_key(&text) {
                            Ok(k) => by.push(k),
                            Err(msg) => {
                                t.doc().error(&format!("{path}[{i}]"), t.span_of("by").unwrap_or(0..0), msg)
                            }
                        }
                    }
                }
                None => t.error("kind", "a sort needs `by`, e.g. by = [\"key\", \"amount desc\"]"),
            }
            t.finish(&["kind", "input", "by"]);
            OperatorKind::Sort { input: input?, by }
        }
        "head" => {
            let input = t.req_str("input", "the input stage");
            let rows = t.req_u64("rows", "how many rows");
            t.finish(&["kind", "input", "rows"]);
            OperatorKind::Head { input: input?, rows: rows? }
        }
        "repartition" => {
            let input = t.req_str("input", "the input stage");
            let keys = t.opt_str_list("keys").unwrap_or_default();
            t.finish(&["kind", "input", "keys"]);
            OperatorKind::Repartition { input: input?, keys }
        }
        "filter" => {
            let input = t.req_str("input", "the input stage");
            let predicate =
                t.req_str("where", "a condition, e.g. \"amount > 0 and region == 'eu'\"").and_then(|w| {
                    parse_expr(&w).map_err(|e| t.error("where", format!("bad expression: {e}"))).ok()
                });
            t.finish(&["kind", "input", "where"]);
            OperatorKind::Filter { input: input?, predicate: predicate? }
        }
        "project" => {
            let input = t.req_str("input", "the input stage");
            let mut columns = Vec::new();
            match t.opt_table("columns") {
                Some(c) => {
                    for name in c.keys_in_order() {
                        if let Some(text) = c.opt_str(&name) {
                            match parse_expr(&text) {
                                Ok(e) => columns.push((name, e)),
                                Err(e) => c.error(&name, format!("bad expression: {e}")),
                            }
                        }
                    }
                    c.finish(&[]);
                }
                None => t.error(
                    "kind",
                    "a project needs `columns`, e.g. columns = { key = \"key\", double = \"amount * 2\" }",
                ),
            }
            t.finish(&["kind", "input", "columns"]);
            OperatorKind::Project { input: input?, columns }
        }
        "distinct" => {
            let input = t.req_str("input", "the input stage");
            let columns = t.opt_str_list("columns").unwrap_or_default();
            t.finish(&["kind", "input", "columns"]);
            OperatorKind::Set { op: SetOpKind::Distinct { columns }, inputs: vec![input?] }
        }
        "shuffle" => {
            let input = t.req_str("input", "the input stage");
            let keys = t.opt_str_list("keys");
            if keys.as_ref().is_none_or(|k| k.is_empty()) {
                t.error("keys", "a shuffle needs at least one key column in `keys`");
            }
            t.finish(&["kind", "input", "keys"]);
            OperatorKind::Shuffle { input: input?, keys: keys.unwrap_or_default() }
        }
        other => {
            t.error(
                "kind",
                format!(
                    "unknown operator kind `{other}`; expected one of: join, group_by, sort, head, filter, project, union, intersect, subtract, distinct, repartition, shuffle"
                ),
            );
            return None;
        }
    };
    Some(OperatorSpec { name, kind })
}

fn read_sink(name: String, t: &Table<'_, '_>) -> Option<SinkSpec> {
    let kind = t.req_str("kind", "one of: parquet, summary")?;
    let input = t.req_str("input", "the stage it consumes");
    let kind = match kind.as_str() {
        "parquet" => {
            let path = t.req_str("path", "output path; {rank} is replaced by the rank");
            t.finish(&["kind", "input", "path"]);
            SinkKind::Parquet { path: path? }
        }
        "summary" => {
            t.finish(&["kind", "input"]);
            SinkKind::Summary
        }
        other => {
            t.error("kind", format!("unknown sink kind `{other}`; expected one of: parquet, summary"));
            return None;
        }
    };
    Some(SinkSpec { name, input: input?, kind })
}

impl OperatorKind {
    /// The stages this operator reads, in input-port order.
    pub fn inputs(&self) -> Vec<&str> {
        match self {
            OperatorKind::Join(j) => vec![j.left.as_str(), j.right.as_str()],
            OperatorKind::Shuffle { input, .. }
            | OperatorKind::GroupBy { input, .. }
            | OperatorKind::Filter { input, .. }
            | OperatorKind::Sort { input, .. }
            | OperatorKind::Head { input, .. }
            | OperatorKind::Repartition { input, .. }
            | OperatorKind::Project { input, .. } => vec![input.as_str()],
            OperatorKind::Set { inputs, .. } => inputs.iter().map(String::as_str).collect(),
        }
    }

    /// The key naming each input, for error paths.
    fn input_keys(&self) -> Vec<String> {
        match self {
            OperatorKind::Join(_) => vec!["left".into(), "right".into()],
            OperatorKind::Shuffle { .. }
            | OperatorKind::GroupBy { .. }
            | OperatorKind::Filter { .. }
            | OperatorKind::Sort { .. }
            | OperatorKind::Head { .. }
            | OperatorKind::Repartition { .. }
            | OperatorKind::Project { .. } => vec!["input".into()],
            OperatorKind::Set { op: SetOpKind::Distinct { .. }, .. } => vec!["input".into()],
            OperatorKind::Set { inputs, .. } => (0..inputs.len()).map(|i| format!("inputs[{i}]")).collect(),
        }
    }
}

/// Names unique, inputs known, no cycles, something to read and somewhere to write.
fn check_graph(top: &Table<'_, '_>, spec: &PipelineSpec, declared: &[(&'static str, String)]) {
    let doc = top.doc();
    let mut kinds: BTreeMap<&str, &str> = BTreeMap::new();
    for (kind, name) in declared {
        // The first declaration keeps the name; later ones are the error.
        if let Some(prev) = kinds.get(name.as_str()) {
            let path = format!("{kind}.{name}");
            let article = if prev.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
            doc.error(
                &path,
                find_line(top, &path),
                format!("name `{name}` is already used by {article} {prev}; stage names must be unique"),
            );
        } else {
            kinds.insert(name.as_str(), kind);
        }
    }
    let producer = |name: &str| matches!(kinds.get(name), Some(&"source") | Some(&"operator"));
    let position = |path: &str| find_line(top, path);
    for o in &spec.operators {
        for (input, key) in o.kind.inputs().into_iter().zip(o.kind.input_keys()) {
            if !producer(input) {
                let path = format!("operator.{}.{key}", o.name);
                let what = if kinds.get(input) == Some(&"sink") {
                    "is a sink, which has no output"
                } else {
                    "is not a source or operator"
                };
                let at = path.split('[').next().unwrap_or(&path).to_string();
                doc.error(&path, position(&at), format!("input `{input}` {what}"));
            }
        }
    }
    for s in &spec.sinks {
        if !producer(&s.input) {
            let path = format!("sink.{}.input", s.name);
            doc.error(&path, position(&path), format!("input `{}` is not a source or operator", s.input));
        }
    }
    if let Some(cycle) = find_cycle(&spec.operators) {
        let path = format!("operator.{}", cycle[0]);
        doc.error(&path, position(&path), format!("operators form a cycle: {}", cycle.join(" -> ")));
    }
    if !declared.iter().any(|(k, _)| *k == "source") {
        doc.error("source", 0..0, "the pipeline has no source; add e.g. [source.left] kind = \"generate\"");
    }
    if !declared.iter().any(|(k, _)| *k == "sink") {
        doc.error("sink", 0..0, "the pipeline has no sink; add e.g. [sink.summary] kind = \"summary\"");
    }
}

/// Byte position of a dotted path's value, for errors found after reading.
fn find_line(top: &Table<'_, '_>, path: &str) -> std::ops::Range<usize> {
    top.span_of(path).unwrap_or(0..0)
}

fn find_cycle(ops: &[OperatorSpec]) -> Option<Vec<String>> {
    let by_name: BTreeMap<&str, &OperatorSpec> = ops.iter().map(|o| (o.name.as_str(), o)).collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    fn visit<'a>(
        name: &'a str,
        by_name: &BTreeMap<&'a str, &'a OperatorSpec>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(name) {
            Some(Mark::Done) => return None,
            Some(Mark::Active) => {
                let start = stack.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            None => {}
        }
        let op = by_name.get(name)?;
        marks.insert(name, Mark::Active);
        stack.push(name);
        for input in op.kind.inputs() {
            if by_name.contains_key(input)
                && let Some(c) = visit(input, by_name, marks, stack)
            {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(name, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    let names: BTreeSet<&str> = by_name.keys().copied().collect();
    for name in names {
        let mut stack = Vec::new();
        if let Some(c) = visit(name, &by_name, &mut marks, &mut stack) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[job]
name = "t"

[runtime]
channel_credit = "4MiB"
mesh_timeout = "5s"

[source.left]
kind = "generate"
rows = 1000

[source.right]
kind = "parquet"
paths = ["a.parquet", "b.parquet"]

[operator.joined]
kind = "join"
left = "left"
right = "right"
on = ["key"]

[sink.out]
kind = "summary"
input = "joined"
"#;

    #[test]
    fn a_good_pipeline_parses() {
        let p = parse_pipeline(GOOD, "good.toml").expect("valid");
        assert_eq!(p.name, "t");
        assert_eq!(p.runtime.channel_credit, 4 << 20);
        assert_eq!(p.runtime.mesh_timeout, std::time::Duration::from_secs(5));
        assert_eq!(p.sources.len(), 2);
        assert_eq!(p.sources[0].name, "left");
        assert!(
            matches!(p.sources[1].kind, SourceKind::Files { files: SourceFiles::List(ref l), .. } if l.len() == 2)
        );
        let OperatorKind::Join(j) = &p.operators[0].kind else { panic!("join expected") };
        assert_eq!(j.left_on, vec!["key"]);
        assert_eq!(j.right_on, vec!["key"]);
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let bad = r#"
[runtime]
mesh_timout = "5s"
peer_timeout = "soon"

[source.left]
kind = "generate"
rows = -3

[operator.joined]
kind = "join"
left = "left"
right = "nowhere"
on = ["key", 7]

[sink.out]
kind = "summary"
input = "joined"
extra = true
"#;
        let e = parse_pipeline(bad, "bad.toml").expect_err("invalid");
        let paths = e.paths();
        assert!(paths.contains(&"runtime.mesh_timout"), "{e}");
        assert!(paths.contains(&"runtime.peer_timeout"), "{e}");
        assert!(paths.contains(&"source.left.rows"), "{e}");
        assert!(paths.contains(&"operator.joined.on[1]"), "{e}");
        assert!(paths.contains(&"sink.out.extra"), "{e}");
        let text = e.to_string();
        assert!(text.contains("unknown key `mesh_timout`"), "{text}");
        assert!(text.contains("line 3"), "{text}");
    }

    #[test]
    fn graph_errors_name_the_stage() {
        let bad = r#"
[source.a]
kind = "generate"
rows = 1

[operator.x]
kind = "shuffle"
input = "y"
keys = ["key"]

[operator.y]
kind = "shuffle"
input = "x"
keys = ["key"]

[sink.s]
kind = "summary"
input = "missing"
"#;
        let e = parse_pipeline(bad, "cycle.toml").expect_err("invalid");
        let text = e.to_string();
        assert!(text.contains("cycle: x -> y -> x"), "{text}");
        assert!(e.paths().contains(&"sink.s.input"), "{text}");
    }

    #[test]
    fn a_name_used_twice_is_one_error_not_a_cascade() {
        let text = "[source.a]\nkind = \"generate\"\nrows = 1\n[operator.x]\nkind = \"shuffle\"\ninput = \"a\"\nkeys = [\"key\"]\n\
                    [sink.x]\nkind = \"summary\"\ninput = \"x\"\n";
        let e = parse_pipeline(text, "dup.toml").expect_err("invalid");
        assert_eq!(e.paths(), vec!["sink.x"], "{e}");
        assert!(e.to_string().contains("already used by an operator"), "{e}");
    }

    #[test]
    fn missing_sections_and_bad_toml() {
        let e = parse_pipeline("", "empty.toml").expect_err("invalid");
        assert!(e.paths().contains(&"source") && e.paths().contains(&"sink"), "{e}");
        let e = parse_pipeline("[source.a\nkind=1", "broken.toml").expect_err("invalid");
        assert!(e.to_string().contains("not valid TOML"), "{e}");
    }
}
