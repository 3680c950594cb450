//! Operator specs: the operators a pipeline can use and their parameters, read from the
//! `[operator.NAME]` tables of a pipeline file.

use crate::expr::{Expr, parse_expr};
use crate::reader::Table;

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
    /// Group rows by `keys` and aggregate the rest; with `keys = []`, one row over the whole
    /// table (on rank 0).
    GroupBy {
        /// Input stage.
        input: String,
        /// Key columns (empty: a whole-table aggregate).
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
    /// A range of rows in rank order (after a `sort`: in sort order), delivered on rank 0:
    /// `head` (the first `rows`), `slice` (`rows` rows from global row `offset`), `tail` (the
    /// last `rows`).
    Head {
        /// Input stage.
        input: String,
        /// How many.
        rows: u64,
        /// Rows skipped first (`slice`); 0 for `head` and `tail`.
        offset: u64,
        /// Counted from the end (`tail`).
        from_end: bool,
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
    /// An operator registered by the program embedding updraft (see [`OperatorCatalog`]).
    Custom(CustomSpec),
}

/// A registered operator used in a pipeline.
///
/// ```toml
/// [operator.top]
/// kind = "top_n_per_key"      # the name it was registered under
/// input = "sales"             # or inputs = ["a", "b"]
/// partition_by = ["region"]   # optional: rows with equal values meet on one rank first
/// [operator.top.params]       # the operator's own parameters, checked by its factory
/// n = 3
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CustomSpec {
    /// Registered name.
    pub kind: String,
    /// Input stages, in port order.
    pub inputs: Vec<String>,
    /// When not empty, every input is hash-partitioned on these columns before the operator.
    pub partition_by: Vec<String>,
    /// The `params` table as written.
    pub params: toml::Table,
}

/// The operator kinds a program registered besides the built-in ones; the pipeline reader asks
/// it whether a kind exists and whether its parameters are acceptable.
pub trait OperatorCatalog {
    /// True when `kind` was registered.
    fn contains(&self, kind: &str) -> bool;
    /// Checks the `params` table of an operator of kind `kind`.
    ///
    /// # Errors
    /// What is wrong with the parameters, in words.
    fn check_params(&self, kind: &str, params: &toml::Table) -> Result<(), String>;
    /// Every registered kind, for messages.
    fn kinds(&self) -> Vec<String>;
}

/// A catalog with no registered operators.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinOnly;

impl OperatorCatalog for BuiltinOnly {
    fn contains(&self, _: &str) -> bool {
        false
    }

    fn check_params(&self, kind: &str, _: &toml::Table) -> Result<(), String> {
        Err(format!("`{kind}` is not registered"))
    }

    fn kinds(&self) -> Vec<String> {
        Vec::new()
    }
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
    /// Which side a hash join builds its table on.
    pub build: JoinBuild,
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
    /// Exact median: `quantile` at 0.5.
    Median,
    /// Exact quantile `q` (0 to 1) with linear interpolation between the two nearest values
    /// (DuckDB's `quantile_cont`, NumPy's default): `quantile(x, 0.9)`.
    Quantile,
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
    /// The `q` of `quantile(x, q)` (0.5 for `median`); `None` for other functions.
    pub quantile: Option<f64>,
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
    ("median", AggFn::Median),
    ("quantile", AggFn::Quantile),
];

impl AggFn {
    /// The function's name as written in pipelines.
    pub fn name(self) -> &'static str {
        AGG_FNS.iter().find(|(_, f)| *f == self).map_or("?", |(n, _)| n)
    }
}

/// Parses `func(column)` (or `count()`).
fn parse_agg(text: &str) -> Result<(AggFn, Option<String>, Option<f64>), String> {
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
    if func == AggFn::Quantile {
        let Some((column, q)) = column.rsplit_once(',').map(|(c, q)| (c.trim(), q.trim())) else {
            return Err(format!("`{text}` needs a column and a fraction, e.g. `quantile(amount, 0.9)`"));
        };
        let q: f64 = q.parse().map_err(|_| format!("`{q}` in `{text}` is not a number from 0 to 1"))?;
        if !(0.0..=1.0).contains(&q) || column.is_empty() {
            return Err(format!(
                "`{text}` needs a column and a fraction from 0 to 1, e.g. `quantile(amount, 0.9)`"
            ));
        }
        return Ok((func, Some(column.to_string()), Some(q)));
    }
    let quantile = (func == AggFn::Median).then_some(0.5);
    match (func, column.is_empty()) {
        (AggFn::Count, true) => Ok((func, None, None)),
        (_, true) => Err(format!("`{}` needs a column, e.g. `{}(amount)`", name.trim(), name.trim())),
        (_, false) => Ok((func, Some(column.to_string()), quantile)),
    }
}

/// One sort key: `"column [asc|desc] [nulls first|last]"` (default: ascending, nulls last); a
/// column whose name has spaces is quoted with backticks, as in expressions:
/// `` "`Item Type` desc" ``.
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
    let trimmed = text.trim_start();
    let (column, rest): (String, Vec<&str>) = if let Some(quoted) = trimmed.strip_prefix('`') {
        let Some(end) = quoted.find('`') else {
            return Err(format!("sort key `{text}` opens a backtick it does not close"));
        };
        let name = &quoted[..end];
        if name.is_empty() {
            return Err(format!("sort key `{text}` quotes an empty column name"));
        }
        (name.to_string(), quoted[end + 1..].split_whitespace().collect())
    } else {
        let words: Vec<&str> = text.split_whitespace().collect();
        let Some((column, rest)) = words.split_first() else { return Err("empty sort key".into()) };
        (column.to_string(), rest.to_vec())
    };
    let mut key = SortKeySpec { column, descending: false, nulls_first: false };
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

/// The build side of a hash join: the side held in a table, while the other (the probe side)
/// streams through it batch by batch and is never held whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinBuild {
    /// The side with fewer input bytes by the plan's estimate (the files of the sources it
    /// reads, or the rows of generated ones); when a side has no estimate, both sides are
    /// collected and the table is built on the one with fewer rows.
    Auto,
    /// The left side.
    Left,
    /// The right side.
    Right,
}

/// Join algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinAlgorithm {
    /// Build a hash table on one side, probe with the other.
    Hash,
    /// Sort both sides on the keys and merge them; the output comes out in key order.
    SortMerge,
}

const BUILTIN_KINDS: &str = "join, group_by, sort, head, tail, slice, filter, project, union, intersect, subtract, distinct, repartition, shuffle";

fn expected_kinds(catalog: &dyn OperatorCatalog) -> String {
    let custom = catalog.kinds();
    if custom.is_empty() {
        BUILTIN_KINDS.to_string()
    } else {
        format!("{BUILTIN_KINDS}, or a registered one: {}", custom.join(", "))
    }
}

/// Reads `[operator.NAME]`. `params` is the operator's `params` table as plain TOML, for
/// registered operators.
pub(crate) fn read_operator(
    name: String,
    t: &Table<'_, '_>,
    catalog: &dyn OperatorCatalog,
    params: Option<&toml::Table>,
) -> Option<OperatorSpec> {
    let kind = t.req_str("kind", &format!("one of: {}", expected_kinds(catalog)))?;
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
                Some("sort_merge") => JoinAlgorithm::SortMerge,
                Some(other) => {
                    t.error(
                        "algorithm",
                        format!("unknown join algorithm `{other}`; expected one of: hash, sort_merge"),
                    );
                    JoinAlgorithm::Hash
                }
            };
            let build = match t.opt_str("build").as_deref() {
                None | Some("auto") => JoinBuild::Auto,
                Some("left") => JoinBuild::Left,
                Some("right") => JoinBuild::Right,
                Some(other) => {
                    t.error(
                        "build",
                        format!("unknown build side `{other}`; expected one of: auto, left, right"),
                    );
                    JoinBuild::Auto
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
            t.finish(&[
                "kind",
                "left",
                "right",
                "on",
                "left_on",
                "right_on",
                "how",
                "algorithm",
                "build",
                "suffixes",
            ]);
            OperatorKind::Join(JoinSpec {
                left: left?,
                right: right?,
                left_on,
                right_on,
                how,
                algorithm,
                build,
                suffixes,
            })
        }
        "group_by" => {
            let input = t.req_str("input", "the input stage");
            let keys = t.opt_str_list("keys");
            if keys.is_none() {
                t.error(
                    "keys",
                    "a group_by needs `keys`: the key columns, or [] for one row over the whole table",
                );
            }
            let mut aggregates = Vec::new();
            match t.opt_table("aggregate") {
                Some(a) => {
                    for output in a.keys_in_order() {
                        if let Some(text) = a.opt_str(&output) {
                            match parse_agg(&text) {
                                Ok((func, column, quantile)) => {
                                    aggregates.push(AggSpec { func, column, output, quantile });
                                }
                                Err(msg) => a.error(&output, msg),
                            }
                        }
                    }
                    // Output columns sit beside the keys, and partial states are named
                    // OUTPUT.sum, OUTPUT.n, OUTPUT.mean, OUTPUT.m2: no name may be taken twice.
                    let outputs: Vec<&str> = aggregates.iter().map(|g| g.output.as_str()).collect();
                    for g in &aggregates {
                        if keys.as_ref().is_some_and(|k| k.contains(&g.output)) {
                            a.error(
                                &g.output,
                                format!("output `{}` is also a key column; name it differently", g.output),
                            );
                        }
                        for suffix in [".sum", ".n", ".mean", ".m2"] {
                            let state = format!("{}{suffix}", g.output);
                            if outputs.contains(&state.as_str()) {
                                a.error(&state, format!("output `{state}` clashes with a partial state of `{}`; name it differently", g.output));
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
        "head" | "tail" => {
            let input = t.req_str("input", "the input stage");
            let rows = t.req_u64("rows", "how many rows");
            t.finish(&["kind", "input", "rows"]);
            OperatorKind::Head { input: input?, rows: rows?, offset: 0, from_end: kind == "tail" }
        }
        "slice" => {
            let input = t.req_str("input", "the input stage");
            let offset = t.req_u64("offset", "the first row's position (0-based) in rank order");
            let rows = t.req_u64("rows", "how many rows");
            t.finish(&["kind", "input", "offset", "rows"]);
            OperatorKind::Head { input: input?, rows: rows?, offset: offset?, from_end: false }
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
        custom if catalog.contains(custom) => {
            let input = t.opt_str("input");
            let inputs = t.opt_str_list("inputs");
            let inputs = match (input, inputs) {
                (Some(i), None) => vec![i],
                (None, Some(list)) if !list.is_empty() => list,
                (Some(_), Some(_)) => {
                    t.error("inputs", "give either `input` or `inputs`, not both");
                    return None;
                }
                _ => {
                    t.error("kind", "a registered operator needs `input` (one stage) or `inputs` (a list)");
                    return None;
                }
            };
            let partition_by = t.opt_str_list("partition_by").unwrap_or_default();
            let has_params = t.opt_table("params").is_some();
            let params = if has_params { params.cloned().unwrap_or_default() } else { toml::Table::new() };
            if let Err(msg) = catalog.check_params(custom, &params) {
                let key = if has_params { "params" } else { "kind" };
                t.error(key, format!("parameters of `{custom}`: {msg}"));
            }
            t.finish(&["kind", "input", "inputs", "partition_by", "params"]);
            OperatorKind::Custom(CustomSpec { kind: custom.to_string(), inputs, partition_by, params })
        }
        other => {
            t.error(
                "kind",
                format!("unknown operator kind `{other}`; expected one of: {}", expected_kinds(catalog)),
            );
            return None;
        }
    };
    Some(OperatorSpec { name, kind })
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
            OperatorKind::Custom(c) => c.inputs.iter().map(String::as_str).collect(),
        }
    }

    /// The key naming each input, for error paths.
    pub(crate) fn input_keys(&self) -> Vec<String> {
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
            OperatorKind::Custom(c) if c.inputs.len() == 1 => vec!["input".into()],
            OperatorKind::Custom(c) => (0..c.inputs.len()).map(|i| format!("inputs[{i}]")).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_by_outputs_may_not_take_key_or_state_names() {
        let spec = |agg: &str| {
            format!(
                "[source.s]\nkind = \"generate\"\nrows = 1\n\n[operator.g]\nkind = \"group_by\"\ninput = \"s\"\nkeys = [\"key\"]\naggregate = {{ {agg} }}\n\n[sink.o]\nkind = \"summary\"\ninput = \"g\"\n"
            )
        };
        let e = crate::parse_pipeline(&spec("key = \"count()\""), "p.toml")
            .expect_err("output named as a key")
            .to_string();
        assert!(e.contains("output `key` is also a key column"), "{e}");
        let e = crate::parse_pipeline(&spec("t = \"sum(payload)\", \"t.n\" = \"count()\""), "p.toml")
            .expect_err("output named as a state")
            .to_string();
        assert!(e.contains("output `t.n` clashes with a partial state of `t`"), "{e}");
        assert!(crate::parse_pipeline(&spec("t = \"sum(payload)\", n = \"count()\""), "p.toml").is_ok());
    }

    #[test]
    fn median_and_quantile_carry_their_fraction() {
        assert_eq!(parse_agg("median(v)"), Ok((AggFn::Median, Some("v".into()), Some(0.5))));
        assert_eq!(parse_agg("quantile(v, 0.9)"), Ok((AggFn::Quantile, Some("v".into()), Some(0.9))));
        assert_eq!(parse_agg("sum(v)"), Ok((AggFn::Sum, Some("v".into()), None)));
        assert!(parse_agg("quantile(v)").expect_err("no q").contains("needs a column and a fraction"));
        assert!(parse_agg("quantile(v, 1.5)").expect_err("q > 1").contains("from 0 to 1"));
        assert!(parse_agg("quantile(v, x)").expect_err("not a number").contains("is not a number"));
    }

    #[test]
    fn sort_keys_take_directions_and_backtick_quoted_names() {
        let k = parse_sort_key("amount desc nulls first").expect("key");
        assert_eq!((k.column.as_str(), k.descending, k.nulls_first), ("amount", true, true));
        let k = parse_sort_key("`Item Type` desc").expect("key");
        assert_eq!((k.column.as_str(), k.descending, k.nulls_first), ("Item Type", true, false));
        let k = parse_sort_key("`Country`").expect("key");
        assert_eq!((k.column.as_str(), k.descending), ("Country", false));
        assert!(parse_sort_key("`Item Type desc").expect_err("unclosed").contains("does not close"));
        assert!(parse_sort_key("``").expect_err("empty").contains("empty column name"));
        assert!(parse_sort_key("Item Type").expect_err("unquoted space").contains("unexpected `type`"));
    }
}
