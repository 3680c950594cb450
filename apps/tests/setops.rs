//! Set operations on real local clusters, against naive set operations written here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use arrow_schema::DataType;
use common::*;

fn rows(seed: u64, n: usize) -> Vec<Row> {
    let mut rng = TestRng(seed);
    (0..n)
        .map(|_| {
            let a = if rng.below(9) == 0 { V::I(None) } else { V::I(Some(rng.below(25) as i64)) };
            let b = if rng.below(9) == 0 { V::S(None) } else { V::S(Some(format!("s{}", rng.below(3)))) };
            vec![a, b]
        })
        .collect()
}

fn pipeline(l: &[String], r: &[String], op: &str) -> String {
    let list = |f: &[String]| f.iter().map(|x| format!("\"{x}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "[source.l]\nkind = \"parquet\"\npaths = [{}]\n\n[source.r]\nkind = \"parquet\"\npaths = [{}]\n\n{op}\n\n\
         [sink.out]\nkind = \"parquet\"\ninput = \"op\"\npath = \"out/p-{{rank}}.parquet\"\n",
        list(l),
        list(r)
    )
}

#[test]
fn set_operations_match_naive_ones_on_1_to_4_workers() {
    let dir = tempfile::tempdir().expect("tmp");
    let (left, right) = (rows(3, 400), rows(4, 300));
    let types = [DataType::Int64, DataType::Utf8];
    let lf = {
        let chunk = left.len().div_ceil(3);
        (0..3)
            .map(|k| {
                let f = format!("l-{k}.parquet");
                write_parquet(
                    &dir.path().join(&f),
                    &batch(&["a", "b"], &types, &left[k * chunk..((k + 1) * chunk).min(left.len())]),
                );
                f
            })
            .collect::<Vec<_>>()
    };
    let rf = vec!["r.parquet".to_string()];
    write_parquet(&dir.path().join("r.parquet"), &batch(&["a", "b"], &types, &right));

    let lset: BTreeSet<Row> = left.iter().cloned().collect();
    let rset: BTreeSet<Row> = right.iter().cloned().collect();
    let mut all: Vec<Row> = left.iter().chain(&right).cloned().collect();
    all.sort();
    let cases: Vec<(&str, Vec<Row>)> = vec![
        ("[operator.op]\nkind = \"union\"\ninputs = [\"l\", \"r\"]", all.clone()),
        (
            "[operator.op]\nkind = \"union\"\ninputs = [\"l\", \"r\"]\ndistinct = true",
            lset.union(&rset).cloned().collect(),
        ),
        (
            "[operator.op]\nkind = \"intersect\"\ninputs = [\"l\", \"r\"]",
            lset.intersection(&rset).cloned().collect(),
        ),
        (
            "[operator.op]\nkind = \"subtract\"\ninputs = [\"l\", \"r\"]",
            lset.difference(&rset).cloned().collect(),
        ),
        ("[operator.op]\nkind = \"distinct\"\ninput = \"l\"", lset.iter().cloned().collect()),
    ];
    for workers in 1..=4 {
        for (op, want) in &cases {
            let _ = std::fs::remove_dir_all(dir.path().join("out"));
            let (out, _) = run_cluster(dir.path(), &pipeline(&lf, &rf, op), workers);
            assert!(out.status.success(), "{op}: {}", String::from_utf8_lossy(&out.stderr));
            let (_, mut got) = read_parquet_rows(&dir.path().join("out"), "p-");
            got.sort();
            assert_eq!(&got, want, "{workers} workers: {op}");
        }
        // distinct on one column: one row per distinct value of `a`, each an input row.
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let op = "[operator.op]\nkind = \"distinct\"\ninput = \"l\"\ncolumns = [\"a\"]";
        let (out, _) = run_cluster(dir.path(), &pipeline(&lf, &rf, op), workers);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (_, got) = read_parquet_rows(&dir.path().join("out"), "p-");
        let mut by_a: BTreeMap<V, usize> = BTreeMap::new();
        for r in &got {
            assert!(lset.contains(r), "{r:?} is not an input row");
            *by_a.entry(r[0].clone()).or_default() += 1;
        }
        let want_a: BTreeSet<V> = left.iter().map(|r| r[0].clone()).collect();
        assert_eq!(by_a.keys().cloned().collect::<BTreeSet<V>>(), want_a);
        assert!(by_a.values().all(|n| *n == 1), "one row per value of a");
    }
}
