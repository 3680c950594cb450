//! What a file source has to read: the columns the plan uses (projection) and the filters no
//! row of it can bypass (row-group pruning), found from the pipeline spec alone so that every
//! rank plans the same reads.
//!
//! **Columns.** The columns a stage needs from its input follow from what its consumers need
//! from it, walked back from the sinks (the technique is the column pruning of query
//! optimizers; see DataFusion's `optimize_projections`). A sink, a summary, a set operation
//! comparing whole rows and a registered operator need every column; a filter needs what its
//! consumers need plus its predicate's columns; a projection and a group-by need only the
//! columns their expressions, keys and aggregates read; sort, head, repartition and shuffle
//! pass columns through and add their keys. A join needs its keys, and every name its consumers
//! need, on both sides and also with a join suffix removed, so that a name clashing in the full
//! inputs clashes, and is renamed, in the projected ones alike.
//!
//! **Row groups.** When a source's only consumer is a filter (and so on down a chain of sole
//! filters), every row that reaches anything else passes each of those predicates. Conjuncts
//! of the form `column op constant` (`<`, `<=`, `>`, `>=`, `=`, `between`) are checked against
//! each Parquet row group's minimum and maximum; a row group for which one is false at the
//! bound that decides it holds no row that passes and is not read (see
//! [`crate::files`]). Only types whose Parquet statistics order is the order of comparison are
//! pruned: signed integers, dates, timestamps, decimals and strings (bytewise); floats are not
//! (statistics leave NaN out, and NaN is the largest value here), nor are unsigned integers.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow_schema::SchemaRef;

use updraft_config::expr::{BinOp, Expr};
use updraft_config::{OperatorKind, PipelineSpec, SetOpKind};

/// The columns one stage needs from its input: `None` for every column.
pub type Needed = Option<BTreeSet<String>>;

/// What a file source reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan {
    /// The columns the plan uses (`None`: every column).
    pub columns: Needed,
    /// Predicates every row leaving the source through the plan must satisfy (conjuncts of its
    /// sole-consumer filters); usable to skip data that cannot satisfy them.
    pub filters: Vec<Expr>,
}

impl Scan {
    /// `schema` narrowed to the columns of the scan, in its order (`schema` itself when the
    /// scan needs every column).
    pub fn project(&self, schema: &SchemaRef) -> SchemaRef {
        let Some(columns) = &self.columns else { return Arc::clone(schema) };
        let keep: Vec<usize> =
            (0..schema.fields().len()).filter(|i| columns.contains(schema.field(*i).name())).collect();
        schema.project(&keep).map_or_else(|_| Arc::clone(schema), Arc::new)
    }
}

/// Who consumes a stage, and through which of its inputs.
enum Consumer<'a> {
    Operator(&'a updraft_config::OperatorSpec, usize),
    Sink,
}

/// The scan of every source of `spec`, by source name.
pub fn scans(spec: &PipelineSpec) -> HashMap<String, Scan> {
    let mut consumers: HashMap<&str, Vec<Consumer>> = HashMap::new();
    for o in &spec.operators {
        for (i, input) in o.kind.inputs().into_iter().enumerate() {
            consumers.entry(input).or_default().push(Consumer::Operator(o, i));
        }
    }
    for s in &spec.sinks {
        consumers.entry(s.input.as_str()).or_default().push(Consumer::Sink);
    }
    let mut memo: HashMap<String, Needed> = HashMap::new();
    spec.sources
        .iter()
        .map(|s| {
            let columns = needed(&s.name, &consumers, &mut memo, 0);
            (s.name.clone(), Scan { columns, filters: sole_filters(&s.name, &consumers) })
        })
        .collect()
}

/// Deeper than any valid plan; a cycle (refused by validation) ends here with "every column".
const MAX_DEPTH: usize = 10_000;

/// The columns consumers of `stage` need from it.
fn needed(
    stage: &str,
    consumers: &HashMap<&str, Vec<Consumer>>,
    memo: &mut HashMap<String, Needed>,
    depth: usize,
) -> Needed {
    if let Some(n) = memo.get(stage) {
        return n.clone();
    }
    if depth > MAX_DEPTH {
        return None;
    }
    let mut all: BTreeSet<String> = BTreeSet::new();
    for c in consumers.get(stage).map(Vec::as_slice).unwrap_or_default() {
        let Consumer::Operator(o, input) = c else { return remember(memo, stage, None) };
        let out = needed(&o.name, consumers, memo, depth + 1);
        match from_input(&o.kind, *input, out) {
            Some(cols) => all.extend(cols),
            None => return remember(memo, stage, None),
        }
    }
    remember(memo, stage, Some(all))
}

fn remember(memo: &mut HashMap<String, Needed>, stage: &str, n: Needed) -> Needed {
    memo.insert(stage.to_string(), n.clone());
    n
}

/// The columns `kind` needs from its input number `input` when its consumers need `out`.
fn from_input(kind: &OperatorKind, input: usize, out: Needed) -> Needed {
    let plus = |out: Needed, more: &[String]| {
        out.map(|mut s| {
            s.extend(more.iter().cloned());
            s
        })
    };
    match kind {
        OperatorKind::Filter { predicate, .. } => plus(out, &predicate.columns()),
        OperatorKind::Project { columns, .. } => {
            Some(columns.iter().flat_map(|(_, e)| e.columns()).collect())
        }
        OperatorKind::GroupBy { keys, aggregates, .. } => {
            Some(keys.iter().cloned().chain(aggregates.iter().filter_map(|a| a.column.clone())).collect())
        }
        OperatorKind::Sort { by, .. } => plus(out, &by.iter().map(|k| k.column.clone()).collect::<Vec<_>>()),
        OperatorKind::Head { .. } => out,
        OperatorKind::Repartition { keys, .. } | OperatorKind::Shuffle { keys, .. } => plus(out, keys),
        OperatorKind::Set { op: SetOpKind::Distinct { columns }, .. } if !columns.is_empty() => {
            plus(out, columns)
        }
        OperatorKind::Set { .. } | OperatorKind::Custom(_) => None,
        OperatorKind::Join(j) => {
            let keys = if input == 0 { &j.left_on } else { &j.right_on };
            let out = out?;
            let mut names: BTreeSet<String> = keys.iter().cloned().collect();
            for n in out {
                for suffix in [&j.suffixes.0, &j.suffixes.1] {
                    if let Some(base) = n.strip_suffix(suffix.as_str()).filter(|_| !suffix.is_empty()) {
                        names.insert(base.to_string());
                    }
                }
                names.insert(n);
            }
            Some(names)
        }
    }
}

/// The conjuncts of the chain of filters that are, one after the other, the only consumer of
/// `source`.
fn sole_filters(source: &str, consumers: &HashMap<&str, Vec<Consumer>>) -> Vec<Expr> {
    let mut out = Vec::new();
    let mut stage = source;
    for _ in 0..MAX_DEPTH {
        let [Consumer::Operator(o, _)] = consumers.get(stage).map(Vec::as_slice).unwrap_or_default() else {
            break;
        };
        let OperatorKind::Filter { predicate, .. } = &o.kind else { break };
        conjuncts(predicate, &mut out);
        stage = &o.name;
    }
    out
}

fn conjuncts(e: &Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::Chain(BinOp::And, items) => items.iter().for_each(|i| conjuncts(i, out)),
        Expr::Binary(l, BinOp::And, r) => {
            conjuncts(l, out);
            conjuncts(r, out);
        }
        other => out.push(other.clone()),
    }
}

/// A test of one column's row-group bounds that, when definitely false, proves no row of the
/// group satisfies a conjunct.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundTest {
    /// The column.
    pub column: String,
    /// Evaluated with the column holding each group's maximum (for `>`, `>=`, `=`, `between`).
    pub at_max: Option<Expr>,
    /// Evaluated with the column holding each group's minimum (for `<`, `<=`, `=`, `between`).
    pub at_min: Option<Expr>,
}

/// The bound test of `conjunct`, if it has the form `column op constant` (either way round) or
/// `column between constant and constant`.
pub fn bound_test(conjunct: &Expr) -> Option<BoundTest> {
    let constant = |e: &Expr| e.columns().is_empty();
    let cmp = |c: &str, op: BinOp, k: &Expr| {
        Expr::Binary(Box::new(Expr::Column(c.to_string())), op, Box::new(k.clone()))
    };
    match conjunct {
        Expr::Binary(l, op, r) => {
            let (column, op, k) = match (l.as_ref(), r.as_ref()) {
                (Expr::Column(c), k) if constant(k) => (c, *op, k),
                (k, Expr::Column(c)) if constant(k) => (c, flip(*op)?, k),
                _ => return None,
            };
            let (at_max, at_min) = match op {
                BinOp::Gt | BinOp::Ge => (Some(cmp(column, op, k)), None),
                BinOp::Lt | BinOp::Le => (None, Some(cmp(column, op, k))),
                BinOp::Eq => (Some(cmp(column, BinOp::Ge, k)), Some(cmp(column, BinOp::Le, k))),
                _ => return None,
            };
            Some(BoundTest { column: column.clone(), at_max, at_min })
        }
        Expr::Between { expr, low, high, negated: false } if constant(low) && constant(high) => {
            let Expr::Column(column) = expr.as_ref() else { return None };
            Some(BoundTest {
                column: column.clone(),
                at_max: Some(cmp(column, BinOp::Ge, low)),
                at_min: Some(cmp(column, BinOp::Le, high)),
            })
        }
        _ => None,
    }
}

/// `k op c` as `c op' k`.
fn flip(op: BinOp) -> Option<BinOp> {
    Some(match op {
        BinOp::Lt => BinOp::Gt,
        BinOp::Le => BinOp::Ge,
        BinOp::Gt => BinOp::Lt,
        BinOp::Ge => BinOp::Le,
        BinOp::Eq => BinOp::Eq,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_config::parse_pipeline;

    fn scans_of(toml: &str) -> HashMap<String, Scan> {
        scans(&parse_pipeline(toml, "test").expect("pipeline"))
    }

    fn set(names: &[&str]) -> Needed {
        Some(names.iter().map(|s| s.to_string()).collect())
    }

    const SOURCES: &str = r#"
[source.a]
kind = "parquet"
path = "/x/a*.parquet"
[source.b]
kind = "parquet"
path = "/x/b*.parquet"
"#;

    #[test]
    fn a_group_by_after_a_filter_reads_its_keys_aggregates_and_predicate() {
        let s = scans_of(&format!(
            r#"{SOURCES}
[operator.f]
kind = "filter"
input = "a"
where = "d >= date '2024-01-01' and 3 < k and region == 'EU'"
[operator.g]
kind = "group_by"
input = "f"
keys = ["k"]
aggregate = {{ s = "sum(v)", n = "count()" }}
[sink.out]
kind = "summary"
input = "g"
[sink.bout]
kind = "summary"
input = "b"
"#
        ));
        assert_eq!(s["a"].columns, set(&["d", "k", "region", "v"]));
        assert_eq!(s["a"].filters.len(), 3);
        assert_eq!(s["b"], Scan::default().with_all());
        let tests: Vec<BoundTest> = s["a"].filters.iter().filter_map(bound_test).collect();
        assert_eq!(tests.len(), 3);
        assert_eq!(tests[1].column, "k");
        assert!(tests[1].at_max.is_some() && tests[1].at_min.is_none(), "3 < k is k > 3");
        assert!(tests[2].at_max.is_some() && tests[2].at_min.is_some(), "= tests both bounds");
    }

    impl Scan {
        fn with_all(mut self) -> Scan {
            self.columns = None;
            self
        }
    }

    #[test]
    fn a_join_keeps_clashing_names_on_both_sides_and_its_keys() {
        let s = scans_of(&format!(
            r#"{SOURCES}
[operator.j]
kind = "join"
left = "a"
right = "b"
on = "k"
[operator.p]
kind = "project"
input = "j"
columns = {{ x = "v_right + w" }}
[sink.out]
kind = "summary"
input = "p"
"#
        ));
        let both = set(&["k", "v", "v_right", "w"]);
        assert_eq!(s["a"].columns, both);
        assert_eq!(s["b"].columns, both);
        assert!(s["a"].filters.is_empty(), "a join is not a filter");
    }

    #[test]
    fn a_second_consumer_or_a_set_operation_keeps_every_row_and_column() {
        let s = scans_of(&format!(
            r#"{SOURCES}
[operator.f]
kind = "filter"
input = "a"
where = "k > 3"
[operator.c]
kind = "union"
inputs = ["b", "f"]
[sink.out]
kind = "summary"
input = "f"
[sink.raw]
kind = "summary"
input = "a"
[sink.u]
kind = "summary"
input = "c"
"#
        ));
        assert_eq!(s["a"], Scan::default().with_all(), "the raw sink sees every row");
        assert_eq!(s["b"].columns, None);
    }

    #[test]
    fn only_constant_comparisons_bound_a_column() {
        let e = |t: &str| updraft_config::expr::parse_expr(t).expect("expr");
        assert!(bound_test(&e("k > j")).is_none());
        assert!(bound_test(&e("k != 3")).is_none());
        assert!(bound_test(&e("k + 1 > 3")).is_none());
        assert!(bound_test(&e("k not between 1 and 2")).is_none());
        let b = bound_test(&e("k between 1 and cast('7' as int64)")).expect("between");
        assert_eq!(b.column, "k");
        assert!(b.at_min.is_some() && b.at_max.is_some());
    }
}
