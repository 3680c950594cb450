//! Distributed group-by on real local clusters, against a naive group-by written here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use common::*;

struct Input {
    g: Vec<Option<String>>,
    k: Vec<i64>,
    v: Vec<Option<i64>>,
    f: Vec<f64>,
}

fn input(n: usize, seed: u64) -> Input {
    let mut rng = TestRng(seed);
    let mut inp = Input { g: vec![], k: vec![], v: vec![], f: vec![] };
    for _ in 0..n {
        inp.g.push(if rng.below(10) == 0 { None } else { Some(format!("g{}", rng.below(13))) });
        inp.k.push(rng.below(7) as i64);
        inp.v.push(if rng.below(6) == 0 { None } else { Some(rng.below(1000) as i64 - 300) });
        inp.f.push(rng.below(10_000) as f64 / 7.0);
    }
    inp
}

fn write(dir: &std::path::Path, inp: &Input, parts: usize) -> Vec<String> {
    let n = inp.g.len();
    let chunk = n.div_ceil(parts);
    (0..parts)
        .map(|p| {
            let r = p * chunk..((p + 1) * chunk).min(n);
            let batch = RecordBatch::try_from_iter(vec![
                ("g", Arc::new(StringArray::from(inp.g[r.clone()].to_vec())) as ArrayRef),
                ("k", Arc::new(Int64Array::from(inp.k[r.clone()].to_vec())) as ArrayRef),
                ("v", Arc::new(Int64Array::from(inp.v[r.clone()].to_vec())) as ArrayRef),
                ("f", Arc::new(Float64Array::from(inp.f[r].to_vec())) as ArrayRef),
            ])
            .expect("batch");
            let file = format!("in-{p}.parquet");
            write_parquet(&dir.join(&file), &batch);
            file
        })
        .collect()
}

/// Expected per group: count(), count(v), sum(v), min(v), max(v), mean(f), var(f), std(f), nunique(k).
#[derive(Debug, Clone, PartialEq)]
struct Expect {
    n: i64,
    cnt: i64,
    total: Option<i64>,
    lo: Option<i64>,
    hi: Option<i64>,
    avg: Option<f64>,
    var: Option<f64>,
    sd: Option<f64>,
    distinct: i64,
}

fn naive(inp: &Input) -> BTreeMap<Option<String>, Expect> {
    let mut groups: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
    for (i, g) in inp.g.iter().enumerate() {
        groups.entry(g.clone()).or_default().push(i);
    }
    groups
        .into_iter()
        .map(|(g, rows)| {
            let vs: Vec<i64> = rows.iter().filter_map(|&i| inp.v[i]).collect();
            let fs: Vec<f64> = rows.iter().map(|&i| inp.f[i]).collect();
            let m = fs.iter().sum::<f64>() / fs.len() as f64;
            let var = (fs.len() > 1)
                .then(|| fs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (fs.len() - 1) as f64);
            let mut ks: Vec<i64> = rows.iter().map(|&i| inp.k[i]).collect();
            ks.sort_unstable();
            ks.dedup();
            let e = Expect {
                n: rows.len() as i64,
                cnt: vs.len() as i64,
                total: (!vs.is_empty()).then(|| vs.iter().sum()),
                lo: vs.iter().min().copied(),
                hi: vs.iter().max().copied(),
                avg: Some(m),
                var,
                sd: var.map(f64::sqrt),
                distinct: ks.len() as i64,
            };
            (g, e)
        })
        .collect()
}

fn read_output(dir: &std::path::Path, with_distinct: bool) -> BTreeMap<Option<String>, Expect> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("out dir") {
        let path = entry.expect("entry").path();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            File::open(&path).expect("open"),
        )
        .expect("parquet")
        .build()
        .expect("reader");
        for b in reader {
            let b = b.expect("batch");
            let col = |name: &str| b.column(b.schema().index_of(name).expect("column")).clone();
            let int = |name: &str, i: usize| {
                let c = col(name);
                (!c.is_null(i)).then(|| c.as_primitive::<Int64Type>().value(i))
            };
            let flt = |name: &str, i: usize| {
                let c = col(name);
                (!c.is_null(i)).then(|| c.as_primitive::<Float64Type>().value(i))
            };
            // A whole-table aggregate has no key column: its one row is the group `None`.
            let g = b.schema().index_of("g").ok().map(|i| b.column(i).clone());
            for i in 0..b.num_rows() {
                let key = g
                    .as_ref()
                    .and_then(|g| (!g.is_null(i)).then(|| g.as_string::<i32>().value(i).to_string()));
                let e = Expect {
                    n: int("n", i).expect("n"),
                    cnt: int("cnt", i).expect("cnt"),
                    total: int("total", i),
                    lo: int("lo", i),
                    hi: int("hi", i),
                    avg: flt("avg", i),
                    var: flt("var", i),
                    sd: flt("sd", i),
                    distinct: if with_distinct { int("distinct", i).expect("distinct") } else { 0 },
                };
                assert!(out.insert(key.clone(), e).is_none(), "group {key:?} appears twice");
            }
        }
    }
    out
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

fn check(
    got: &BTreeMap<Option<String>, Expect>,
    want: &BTreeMap<Option<String>, Expect>,
    with_distinct: bool,
    what: &str,
) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{what}: groups");
    for (g, w) in want {
        let x = &got[g];
        assert_eq!(
            (x.n, x.cnt, x.total, x.lo, x.hi),
            (w.n, w.cnt, w.total, w.lo, w.hi),
            "{what}: group {g:?}"
        );
        assert!(
            close(x.avg, w.avg) && close(x.var, w.var) && close(x.sd, w.sd),
            "{what}: group {g:?}: {x:?} vs {w:?}"
        );
        if with_distinct {
            assert_eq!(x.distinct, w.distinct, "{what}: nunique of group {g:?}");
        }
    }
}

fn pipeline(files: &[String], extra_agg: &str, pre: &str) -> String {
    let list = files.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[runtime]
batch_rows = 500

[source.data]
kind = "parquet"
paths = [{list}]

[operator.by_g]
kind = "group_by"
input = "data"
keys = ["g"]
{pre}
aggregate = {{ n = "count()", cnt = "count(v)", total = "sum(v)", lo = "min(v)", hi = "max(v)", avg = "mean(f)", var = "var(f)", sd = "std(f)"{extra_agg} }}

[sink.out]
kind = "parquet"
input = "by_g"
path = "out/g-{{rank}}.parquet"
"#
    )
}

#[test]
fn a_whole_table_aggregate_is_one_row_on_1_to_4_workers_even_over_no_rows() {
    let dir = tempfile::tempdir().expect("tmp");
    let inp = input(5_000, 9);
    let files = write(dir.path(), &inp, 3);
    // The naive group-by over the same rows with one group for all of them.
    let all = Input { g: vec![None; inp.g.len()], k: inp.k.clone(), v: inp.v.clone(), f: inp.f.clone() };
    let want = naive(&all);
    let nothing: BTreeMap<Option<String>, Expect> = BTreeMap::from([(
        None,
        Expect { n: 0, cnt: 0, total: None, lo: None, hi: None, avg: None, var: None, sd: None, distinct: 0 },
    )]);
    for (extra, pre, distinct, what) in [
        ("", "", false, "pre-aggregated"),
        (", distinct = \"nunique(k)\"", "", true, "with nunique (raw rows gathered)"),
    ] {
        let whole = pipeline(&files, extra, pre).replace(r#"keys = ["g"]"#, "keys = []");
        let empty = whole.replace(r#"input = "data""#, r#"input = "none""#).replace(
            "[operator.by_g]",
            "[operator.none]\nkind = \"filter\"\ninput = \"data\"\nwhere = \"v > 1000000\"\n\n[operator.by_g]",
        );
        for workers in 1..=4 {
            for (text, want, input) in [(&whole, &want, "every row"), (&empty, &nothing, "no row")] {
                let _ = std::fs::remove_dir_all(dir.path().join("out"));
                let (out, _) = run_cluster(dir.path(), text, workers);
                let what = format!("{what}, {input}, {workers} workers");
                assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
                check(&read_output(&dir.path().join("out"), distinct), want, distinct, &what);
            }
        }
    }
}

/// The exact quantile `q` of `v` by linear interpolation between the nearest ranks (written
/// here from its definition, independently of the operator).
fn naive_quantile(mut v: Vec<f64>, q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * q;
    let below = v[h.floor() as usize];
    let above = v[h.ceil() as usize];
    Some(below + (h - h.floor()) * (above - below))
}

#[test]
fn median_and_quantiles_are_exact_on_1_to_3_workers() {
    let dir = tempfile::tempdir().expect("tmp");
    let inp = input(6_000, 11);
    let files = write(dir.path(), &inp, 3);
    let mut groups: BTreeMap<Option<String>, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for i in 0..inp.g.len() {
        let e = groups.entry(inp.g[i].clone()).or_default();
        if let Some(v) = inp.v[i] {
            e.0.push(v as f64);
        }
        e.1.push(inp.f[i]);
    }
    type Quantiles = (Option<f64>, Option<f64>, Option<f64>);
    let want: BTreeMap<Option<String>, Quantiles> = groups
        .into_iter()
        .map(|(g, (v, f))| {
            (g, (naive_quantile(v, 0.5), naive_quantile(f.clone(), 0.9), naive_quantile(f, 0.0)))
        })
        .collect();
    let list = files.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", ");
    let pipeline = format!(
        r#"
[source.data]
kind = "parquet"
paths = [{list}]

[operator.by_g]
kind = "group_by"
input = "data"
keys = ["g"]
aggregate = {{ med = "median(v)", p90 = "quantile(f, 0.9)", p0 = "quantile(f, 0)" }}

[sink.out]
kind = "parquet"
input = "by_g"
path = "out/g-{{rank}}.parquet"
"#
    );
    for workers in 1..=3 {
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let (out, _) = run_cluster(dir.path(), &pipeline, workers);
        assert!(out.status.success(), "{workers} workers: {}", String::from_utf8_lossy(&out.stderr));
        let mut got = BTreeMap::new();
        for (_, batches) in read_parquet_files(&dir.path().join("out"), "g-") {
            for b in batches {
                let g = b.column(0).as_string::<i32>();
                let f = |c: usize, i: usize| {
                    let a = b.column(c).as_primitive::<Float64Type>();
                    a.is_valid(i).then(|| a.value(i))
                };
                for i in 0..b.num_rows() {
                    let key = g.is_valid(i).then(|| g.value(i).to_string());
                    got.insert(key, (f(1, i), f(2, i), f(3, i)));
                }
            }
        }
        assert_eq!(got.len(), want.len(), "{workers} workers: groups");
        for (g, w) in &want {
            let x = got[g];
            assert!(
                close(x.0, w.0) && close(x.1, w.1) && close(x.2, w.2),
                "{workers} workers, group {g:?}: {x:?} vs {w:?}"
            );
        }
    }
}

#[test]
fn group_by_matches_a_naive_group_by_on_1_to_4_workers() {
    let dir = tempfile::tempdir().expect("tmp");
    let inp = input(20_000, 5);
    let files = write(dir.path(), &inp, 3);
    let want = naive(&inp);
    for (extra, pre, distinct, what) in [
        ("", "", false, "pre-aggregated"),
        ("", "pre_aggregate = false", false, "raw rows shuffled"),
        (", distinct = \"nunique(k)\"", "", true, "with nunique"),
    ] {
        for workers in 1..=4 {
            let _ = std::fs::remove_dir_all(dir.path().join("out"));
            let (out, _) = run_cluster(dir.path(), &pipeline(&files, extra, pre), workers);
            assert!(
                out.status.success(),
                "{what}, {workers} workers: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            check(
                &read_output(&dir.path().join("out"), distinct),
                &want,
                distinct,
                &format!("{what}, {workers} workers"),
            );
        }
    }
}

#[test]
fn group_by_explains_its_plan_and_refuses_bad_aggregates() {
    let dir = tempfile::tempdir().expect("tmp");
    let files = write(dir.path(), &input(50, 1), 1);
    let out = validate_pipeline(dir.path(), "good.toml", &pipeline(&files, "", ""));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("by_g.partial [aggregate] <- data"), "{text}");
    assert!(text.contains("by_g.shuffle [partition+shuffle] <- by_g.partial"), "{text}");
    assert!(text.contains("by_g [aggregate] <- by_g.shuffle (all ranks)"), "{text}");
    let out =
        validate_pipeline(dir.path(), "bad.toml", &pipeline(&files, ", m = \"mode(v)\", s = \"sum()\"", ""));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("operator.by_g.aggregate.m") && err.contains("unknown aggregate function `mode`"),
        "{err}"
    );
    assert!(err.contains("operator.by_g.aggregate.s") && err.contains("`sum` needs a column"), "{err}");
}
