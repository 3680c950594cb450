//! Every built-in operator on the inputs that break operators: empty tables, all-null columns,
//! skewed keys, and tables spanning many small batches; on 1 to 4 workers, each result checked
//! against a naive computation over plain values written here.
//!
//! One pipeline holds every operator, each feeding a summary sink, so one cluster run checks
//! them all for one input case and worker count.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use arrow_schema::DataType;
use common::*;

/// Tables `a` (key, v), `b` (key, w) and `c` (key, v).
struct Case {
    name: &'static str,
    a: Vec<Row>,
    b: Vec<Row>,
    c: Vec<Row>,
    batch_rows: usize,
}

fn table(
    rng: &mut TestRng,
    n: usize,
    key: impl Fn(&mut TestRng) -> Option<i64>,
    null_values: u64,
) -> Vec<Row> {
    (0..n)
        .map(|_| {
            let k = key(rng);
            let v = if rng.below(100) < null_values { None } else { Some(rng.below(40) as i64 - 10) };
            vec![V::I(k), V::I(v)]
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let mut rng = TestRng(2024);
    let skew = |rng: &mut TestRng| {
        if rng.below(100) < 85 {
            Some(7)
        } else if rng.below(10) == 0 {
            None
        } else {
            Some(rng.below(30) as i64)
        }
    };
    let spread = |rng: &mut TestRng| if rng.below(20) == 0 { None } else { Some(rng.below(400) as i64) };
    vec![
        Case { name: "empty", a: vec![], b: vec![], c: vec![], batch_rows: 1024 },
        Case {
            name: "all-null",
            a: table(&mut rng, 60, |_| None, 100),
            b: table(&mut rng, 40, |_| None, 100),
            c: table(&mut rng, 30, |_| None, 100),
            batch_rows: 1024,
        },
        Case {
            name: "skewed",
            a: table(&mut rng, 500, skew, 10),
            b: table(&mut rng, 120, skew, 10),
            c: table(&mut rng, 300, skew, 10),
            batch_rows: 1024,
        },
        Case {
            name: "many-batches",
            a: table(&mut rng, 3000, spread, 5),
            b: table(&mut rng, 2000, spread, 5),
            c: table(&mut rng, 2500, spread, 5),
            batch_rows: 37,
        },
    ]
}

const JOINS: [(&str, (bool, bool)); 4] =
    [("inner", (false, false)), ("left", (true, false)), ("right", (false, true)), ("full", (true, true))];

fn pipeline(files: &BTreeMap<&str, Vec<String>>, batch_rows: usize) -> String {
    let mut p = format!("[runtime]\nbatch_rows = {batch_rows}\n\n");
    for (name, list) in files {
        let list = list.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", ");
        p += &format!("[source.{name}]\nkind = \"parquet\"\npaths = [{list}]\n\n");
    }
    let mut ops: Vec<(String, String)> = Vec::new();
    for algorithm in ["hash", "sort_merge"] {
        for (how, _) in JOINS {
            ops.push((
                format!("{algorithm}_{how}"),
                format!(
                    "kind = \"join\"\nleft = \"a\"\nright = \"b\"\non = [\"key\"]\nhow = \"{how}\"\nalgorithm = \"{algorithm}\""
                ),
            ));
        }
    }
    for (name, body) in [
        (
            "grouped",
            "kind = \"group_by\"\ninput = \"a\"\nkeys = [\"key\"]\n\
             aggregate = { n = \"count()\", c = \"count(v)\", s = \"sum(v)\", lo = \"min(v)\", hi = \"max(v)\" }",
        ),
        (
            "grouped_raw",
            "kind = \"group_by\"\ninput = \"a\"\nkeys = [\"key\"]\npre_aggregate = false\n\
             aggregate = { n = \"count()\", c = \"count(v)\", s = \"sum(v)\", lo = \"min(v)\", hi = \"max(v)\" }",
        ),
        ("sorted", "kind = \"sort\"\ninput = \"a\"\nby = [\"key desc nulls first\", \"v asc nulls last\"]"),
        ("top", "kind = \"head\"\ninput = \"sorted\"\nrows = 5"),
        ("uniq", "kind = \"distinct\"\ninput = \"a\""),
        ("both", "kind = \"union\"\ninputs = [\"a\", \"c\"]"),
        ("either", "kind = \"union\"\ninputs = [\"a\", \"c\"]\ndistinct = true"),
        ("common", "kind = \"intersect\"\ninputs = [\"a\", \"c\"]"),
        ("only_a", "kind = \"subtract\"\ninputs = [\"a\", \"c\"]"),
        ("big", "kind = \"filter\"\ninput = \"a\"\nwhere = \"v > 10\""),
        (
            "derived",
            "kind = \"project\"\ninput = \"a\"\ncolumns = { key = \"key\", twice = \"v * 2\", nokey = \"key is null\" }",
        ),
        ("by_key", "kind = \"repartition\"\ninput = \"a\"\nkeys = [\"key\"]"),
        ("dealt", "kind = \"repartition\"\ninput = \"a\""),
    ] {
        ops.push((name.to_string(), body.to_string()));
    }
    for (name, body) in &ops {
        p += &format!(
            "[operator.{name}]\n{body}\n\n[sink.{name}_out]\nkind = \"summary\"\ninput = \"{name}\"\n\n"
        );
    }
    p +=
        "[sink.sorted_files]\nkind = \"parquet\"\ninput = \"sorted\"\npath = \"out/sorted-{rank}.parquet\"\n";
    p
}

fn int(v: &V) -> Option<i64> {
    match v {
        V::I(x) => *x,
        V::S(_) => None,
    }
}

/// key desc nulls first, then v asc nulls last.
fn sort_order(x: &Row, y: &Row) -> Ordering {
    let key = match (int(&x[0]), int(&y[0])) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    };
    key.then(match (int(&x[1]), int(&y[1])) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => a.cmp(&b),
    })
}

fn naive_group(rows: &[Row]) -> Vec<Row> {
    let mut groups: BTreeMap<V, Vec<Option<i64>>> = BTreeMap::new();
    for r in rows {
        groups.entry(r[0].clone()).or_default().push(int(&r[1]));
    }
    groups
        .into_iter()
        .map(|(k, vs)| {
            let present: Vec<i64> = vs.iter().flatten().copied().collect();
            vec![
                k,
                V::I(Some(vs.len() as i64)),
                V::I(Some(present.len() as i64)),
                V::I((!present.is_empty()).then(|| present.iter().sum())),
                V::I(present.iter().min().copied()),
                V::I(present.iter().max().copied()),
            ]
        })
        .collect()
}

/// Expected rows of every summary sink.
fn expected(case: &Case) -> BTreeMap<String, Vec<Row>> {
    let (a, b, c) = (&case.a, &case.b, &case.c);
    let mut want: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let nulls = (&vec![V::I(None), V::I(None)], &vec![V::I(None), V::I(None)]);
    for algorithm in ["hash", "sort_merge"] {
        for (how, keep) in JOINS {
            want.insert(format!("{algorithm}_{how}"), naive_outer_join(a, b, &[0], &[0], &[0], keep, nulls));
        }
    }
    want.insert("grouped".into(), naive_group(a));
    want.insert("grouped_raw".into(), naive_group(a));
    let mut sorted = a.clone();
    sorted.sort_by(sort_order);
    want.insert("top".into(), sorted.iter().take(5).cloned().collect());
    want.insert("sorted".into(), sorted);
    let aset: BTreeSet<Row> = a.iter().cloned().collect();
    let cset: BTreeSet<Row> = c.iter().cloned().collect();
    want.insert("uniq".into(), aset.iter().cloned().collect());
    want.insert("both".into(), a.iter().chain(c).cloned().collect());
    want.insert("either".into(), aset.union(&cset).cloned().collect());
    want.insert("common".into(), aset.intersection(&cset).cloned().collect());
    want.insert("only_a".into(), aset.difference(&cset).cloned().collect());
    want.insert("big".into(), a.iter().filter(|r| int(&r[1]).is_some_and(|v| v > 10)).cloned().collect());
    want.insert(
        "derived".into(),
        a.iter()
            .map(|r| {
                vec![
                    r[0].clone(),
                    V::I(int(&r[1]).map(|v| v * 2)),
                    V::I(Some(i64::from(int(&r[0]).is_none()))),
                ]
            })
            .collect(),
    );
    want.insert("by_key".into(), a.clone());
    want.insert("dealt".into(), a.clone());
    want
}

fn write_table(
    dir: &std::path::Path,
    name: &str,
    cols: [&str; 2],
    rows: &[Row],
    parts: usize,
) -> Vec<String> {
    let types = [DataType::Int64, DataType::Int64];
    let chunk = rows.len().div_ceil(parts).max(1);
    (0..parts)
        .map(|k| {
            let part: Vec<Row> = rows.iter().skip(k * chunk).take(chunk).cloned().collect();
            let file = format!("{name}-{k}.parquet");
            write_parquet(&dir.join(&file), &batch(&cols, &types, &part));
            file
        })
        .collect()
}

#[test]
fn every_operator_on_empty_all_null_skewed_and_many_batch_inputs_on_1_to_4_workers() {
    for case in cases() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut files = BTreeMap::new();
        files.insert("a", write_table(dir.path(), "a", ["key", "v"], &case.a, 3));
        files.insert("b", write_table(dir.path(), "b", ["key", "w"], &case.b, 2));
        files.insert("c", write_table(dir.path(), "c", ["key", "v"], &case.c, 1));
        let text = pipeline(&files, case.batch_rows);
        let want = expected(&case);
        for workers in 1..=4u32 {
            let _ = std::fs::remove_dir_all(dir.path().join("out"));
            let (out, report) = run_cluster(dir.path(), &text, workers);
            let what = format!("{} input, {workers} workers", case.name);
            assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
            let report = report.expect("report");
            for (op, rows) in &want {
                let (n, row_sum, _) = sink(&report, &format!("{op}_out"));
                let (want_n, want_sum, _) = checksum(rows);
                assert_eq!(n, want_n, "{what}: `{op}` row count");
                assert_eq!(row_sum, want_sum, "{what}: `{op}` rows differ from the naive result");
            }
            // The sort's files, read in rank order, are the naive order exactly.
            let mut in_order = Vec::new();
            for rank in 0..workers {
                let (_, rows) = read_parquet_rows(&dir.path().join("out"), &format!("sorted-{rank}."));
                in_order.extend(rows);
            }
            assert_eq!(in_order, want["sorted"], "{what}: global order across ranks");
        }
    }
}
