//! "ok" means the exact answer: every rank runs one plan over one agreed list of inputs with one
//! schema per source, float keys compare one way everywhere, and outputs appear whole or not at
//! all. Each test checks a real outcome (rows read back, error texts naming what differs)
//! against values computed here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int16Array, Int32Array, Int64Array, NullArray, RecordBatch, StringArray,
};
use arrow_schema::DataType;
use common::*;

const SECRET: &str = "integrity-test-secret";

// --- separate workers: one plan, one input list ---

fn orders_pipeline(agg: &str) -> String {
    format!(
        r#"
[job]
name = "orders"

[runtime]
mesh_timeout = "5s"
rendezvous_timeout = "15s"

[source.orders]
kind = "parquet"
path = "data/orders-*.parquet"

[operator.totals]
kind = "group_by"
input = "orders"
keys = ["customer_id"]
aggregate = {{ n = "count()", m = "{agg}(amount)" }}

[sink.out]
kind = "parquet"
input = "totals"
path = "out/totals-{{rank}}.parquet"
"#
    )
}

/// Order `i` of file `f`: (order id, customer, amount).
fn order(f: usize, i: usize) -> (i64, i64, f64) {
    let id = (f * 1000 + i) as i64;
    (id, (id * 7919) % 23, ((id * 31) % 1000) as f64 / 4.0)
}

fn write_orders(dir: &Path, files: &[usize]) {
    std::fs::create_dir_all(dir.join("data")).expect("mkdir");
    for &f in files {
        let rows: Vec<(i64, i64, f64)> = (0..250).map(|i| order(f, i)).collect();
        let batch = RecordBatch::try_from_iter(vec![
            (
                "order_id",
                Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())) as ArrayRef,
            ),
            (
                "customer_id",
                Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())) as ArrayRef,
            ),
            (
                "amount",
                Arc::new(Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())) as ArrayRef,
            ),
        ])
        .expect("batch");
        write_parquet(&dir.join(format!("data/orders-{f}.parquet")), &batch);
    }
}

/// One working directory per rank, each with its own copy of the pipeline and of the files
/// listed for it.
fn worker_dirs(root: &Path, files: &[Vec<usize>], pipelines: &[String]) -> Vec<WorkerSpec> {
    files
        .iter()
        .zip(pipelines)
        .enumerate()
        .map(|(rank, (files, pipeline))| {
            let cwd = root.join(format!("host{rank}"));
            write_orders(&cwd, files);
            let file = cwd.join("pipeline.toml");
            std::fs::write(&file, pipeline).expect("pipeline");
            WorkerSpec { cwd, pipeline: file, env: Vec::new() }
        })
        .collect()
}

fn all_fail_naming(runs: &[WorkerRun], needles: &[&str]) {
    for r in runs {
        // Workers given different plans or inputs: bad input (exit 2) where the rank says so.
        let class = r.json.as_ref().and_then(|j| j["error_class"].as_str()).unwrap_or_default().to_string();
        let want = if class == "Config" { 2 } else { 1 };
        assert_eq!(r.code, Some(want), "rank {} should fail: {:?}\n{}", r.rank, r.json, r.stderr);
        let e = r.error();
        for n in needles {
            assert!(e.contains(n), "rank {}'s error lacks `{n}`: {e}", r.rank);
        }
    }
}

fn no_outputs(workers: &[WorkerSpec]) {
    for w in workers {
        let left = list_dir(&w.cwd.join("out"));
        assert!(left.is_empty(), "{} holds {left:?} after a failed job", w.cwd.display());
    }
}

#[test]
fn separate_workers_agree_on_one_plan_and_one_input_list_or_fail_naming_the_difference() {
    let root = tempfile::tempdir().expect("tmp");
    let (_rdv, rdv) = local_rendezvous(SECRET);
    let max = orders_pipeline("max");
    let all = vec![0, 1, 2, 3];
    let limit = Duration::from_secs(60);

    // Every host sees every file: the exact answer.
    let w = worker_dirs(&root.path().join("ok"), &vec![all.clone(); 4], &vec![max.clone(); 4]);
    let runs = run_workers(&rdv, "ok", SECRET, &w, limit);
    for r in &runs {
        assert_eq!(r.code, Some(0), "rank {}: {:?}\n{}", r.rank, r.json, r.stderr);
    }
    let mut want: BTreeMap<i64, (i64, f64)> = BTreeMap::new();
    for f in 0..4 {
        for i in 0..250 {
            let (_, c, a) = order(f, i);
            let e = want.entry(c).or_insert((0, f64::MIN));
            e.0 += 1;
            e.1 = e.1.max(a);
        }
    }
    let mut got: BTreeMap<i64, (i64, f64)> = BTreeMap::new();
    for spec in &w {
        for (_, batches) in read_parquet_files(&spec.cwd.join("out"), "totals-") {
            for b in batches {
                let (c, n, m) = (
                    b.column(0).as_primitive::<Int64Type>(),
                    b.column(1).as_primitive::<Int64Type>(),
                    b.column(2).as_primitive::<Float64Type>(),
                );
                for i in 0..b.num_rows() {
                    assert!(got.insert(c.value(i), (n.value(i), m.value(i))).is_none(), "a group twice");
                }
            }
        }
    }
    assert_eq!(got, want);

    // One host lacks two of the files rank 0 listed.
    let mut files = vec![all.clone(); 4];
    files[2] = vec![0, 1];
    let w = worker_dirs(&root.path().join("missing"), &files, &vec![max.clone(); 4]);
    let runs = run_workers(&rdv, "missing", SECRET, &w, limit);
    all_fail_naming(&runs, &["data/orders-2.parquet", "does not exist on rank 2"]);
    no_outputs(&w);

    // Rank 0's host lacks a file the others have: the list is not what the job would read.
    let mut files = vec![all.clone(); 4];
    files[0] = vec![0, 1, 2];
    let w = worker_dirs(&root.path().join("short-list"), &files, &vec![max.clone(); 4]);
    let runs = run_workers(&rdv, "short-list", SECRET, &w, limit);
    all_fail_naming(&runs, &["data/orders-3.parquet", "rank 0 does not see it"]);
    no_outputs(&w);

    // One worker has an older pipeline file.
    let mut pipelines = vec![max.clone(); 4];
    pipelines[2] = orders_pipeline("min");
    let w = worker_dirs(&root.path().join("other-plan"), &vec![all.clone(); 4], &pipelines);
    let runs = run_workers(&rdv, "other-plan", SECRET, &w, limit);
    all_fail_naming(&runs, &["rank 2", "differ first at `operator.totals.aggregate.m`"]);
    assert!(runs[2].error().contains("operator.totals.aggregate.m = \"min(amount)\""), "{}", runs[2].error());
    no_outputs(&w);

    // One worker is another build of updraft.
    let mut w = worker_dirs(&root.path().join("other-build"), &vec![all; 4], &vec![max; 4]);
    w[3].env.push(("UPDRAFT_BUILD_ID_OVERRIDE".into(), "not-this-build".into()));
    let runs = run_workers(&rdv, "other-build", SECRET, &w, limit);
    all_fail_naming(&runs, &["rank 3", "differ first at `updraft.build`"]);
    no_outputs(&w);
}

// --- one schema per source ---

fn write_batch(path: &Path, cols: Vec<(&str, ArrayRef)>) {
    let cols = cols.into_iter().map(|(n, c)| (n, c, true));
    write_parquet(path, &RecordBatch::try_from_iter_with_nullable(cols).expect("batch"));
}

fn drift_pipeline(path: &str, kind: &str, missing: &str) -> String {
    format!(
        r#"
[source.data]
kind = "{kind}"
path = "{path}"
{missing}

[sink.out]
kind = "parquet"
input = "data"
path = "out/part-{{rank}}.parquet"
"#
    )
}

/// One row of the drift tests: (k, v, note).
type DriftRow = (i64, Option<f64>, Option<String>);

/// Every part file's schema (as `name: type` lines) and all rows.
fn read_parts(dir: &Path) -> (Vec<String>, Vec<DriftRow>) {
    let mut schemas = Vec::new();
    let mut rows = Vec::new();
    for (name, batches) in read_parquet_files(&dir.join("out"), "part-") {
        let schema = parquet_schema(&dir.join("out").join(&name));
        schemas.push(
            schema
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", "),
        );
        for b in batches {
            let k = b.column(0).as_primitive::<Int64Type>();
            let v = b.column(1).as_primitive::<Float64Type>();
            let note = b.schema().index_of("note").ok().map(|i| b.column(i).as_string::<i32>().clone());
            for i in 0..b.num_rows() {
                let n = note.as_ref().and_then(|n| n.is_valid(i).then(|| n.value(i).to_string()));
                rows.push((k.value(i), v.is_valid(i).then(|| v.value(i)), n));
            }
        }
    }
    rows.sort_by_key(|r| r.0);
    (schemas, rows)
}

#[test]
fn files_that_differ_in_schema_agree_by_the_documented_rules_on_1_to_4_workers() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().join("pq");
    std::fs::create_dir_all(&d).expect("mkdir");
    // int32 + int64 keys widen; int64 + float64 values give float64; an all-null column takes
    // the other files' type; `note` is only in p-2.
    write_batch(
        &d.join("p-0.parquet"),
        vec![
            ("k", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
            ("v", Arc::new(Int64Array::from(vec![10, 20])) as ArrayRef),
        ],
    );
    write_batch(
        &d.join("p-1.parquet"),
        vec![
            ("k", Arc::new(Int64Array::from(vec![3])) as ArrayRef),
            ("v", Arc::new(Float64Array::from(vec![0.5])) as ArrayRef),
        ],
    );
    write_batch(
        &d.join("p-2.parquet"),
        vec![
            ("v", Arc::new(Int64Array::from(vec![40, 50])) as ArrayRef),
            ("k", Arc::new(Int64Array::from(vec![4, 5])) as ArrayRef),
            ("note", Arc::new(StringArray::from(vec![Some("four"), None])) as ArrayRef),
        ],
    );
    write_batch(
        &d.join("p-3.parquet"),
        vec![
            ("k", Arc::new(Int16Array::from(vec![6])) as ArrayRef),
            ("v", Arc::new(NullArray::new(1)) as ArrayRef),
        ],
    );
    let want = vec![
        (1, Some(10.0), None),
        (2, Some(20.0), None),
        (3, Some(0.5), None),
        (4, Some(40.0), Some("four".to_string())),
        (5, Some(50.0), None),
        (6, None, None),
    ];

    // By default a column missing from some files is an error naming both files.
    let (out, _) = run_cluster(dir.path(), &drift_pipeline("pq", "parquet", ""), 3);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("column `note` is in pq/p-2.parquet but not in pq/p-0.parquet"), "{err}");
    assert!(err.contains("missing_columns = \"null\""), "{err}");

    for workers in 1..=4 {
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let (out, _) =
            run_cluster(dir.path(), &drift_pipeline("pq", "parquet", "missing_columns = \"null\""), workers);
        assert!(out.status.success(), "{workers} workers: {}", String::from_utf8_lossy(&out.stderr));
        let (schemas, rows) = read_parts(dir.path());
        assert_eq!(schemas.len(), workers as usize, "a part file per rank");
        for s in &schemas {
            assert_eq!(
                s, "k: Int64, v: Float64, note: Utf8",
                "{workers} workers: every part has the agreed schema"
            );
        }
        assert_eq!(rows, want, "{workers} workers");
    }

    // Conflicting types name both files, the column and both types.
    write_batch(
        &d.join("p-4.parquet"),
        vec![
            ("k", Arc::new(StringArray::from(vec!["seven"])) as ArrayRef),
            ("v", Arc::new(Float64Array::from(vec![7.0])) as ArrayRef),
        ],
    );
    let (out, _) = run_cluster(dir.path(), &drift_pipeline("pq", "parquet", "missing_columns = \"null\""), 2);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("column `k` is Int64 in pq/p-1.parquet but Utf8 in pq/p-4.parquet"), "{err}");

    // CSV: `v` inferred as integers in one file, fractions in another, empty in a third.
    let c = dir.path().join("csv");
    std::fs::create_dir_all(&c).expect("mkdir");
    std::fs::write(c.join("c-0.csv"), "k,v\n1,10\n2,20\n").expect("csv");
    std::fs::write(c.join("c-1.csv"), "k,v\n3,0.5\n").expect("csv");
    std::fs::write(c.join("c-2.csv"), "k,v\n4,\n5,\n6,\n").expect("csv");
    for workers in 1..=4 {
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let (out, _) = run_cluster(dir.path(), &drift_pipeline("csv", "csv", ""), workers);
        assert!(out.status.success(), "{workers} workers: {}", String::from_utf8_lossy(&out.stderr));
        let (schemas, rows) = read_parts(dir.path());
        assert!(schemas.iter().all(|s| s == "k: Int64, v: Float64"), "{schemas:?}");
        let vs: Vec<(i64, Option<f64>)> = rows.iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(
            vs,
            vec![(1, Some(10.0)), (2, Some(20.0)), (3, Some(0.5)), (4, None), (5, None), (6, None)]
        );
    }
}

#[test]
fn csv_schemas_map_by_header_name_partial_schemas_infer_the_rest_and_absent_columns_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("orders.csv"),
        "order_id,customer_id,amount\n100,7,1.5\n101,8,2.5\n102,7,NA\n",
    )
    .expect("csv");
    let pipeline = |schema: &str| {
        format!(
            r#"
[source.orders]
kind = "csv"
path = "orders.csv"
schema = {{ {schema} }}
null_values = ["", "NA"]

[sink.out]
kind = "parquet"
input = "orders"
path = "out/part-{{rank}}.parquet"
"#
        )
    };
    let (out, _) = run_cluster(dir.path(), &pipeline("customer_id = \"int64\", order_id = \"int64\""), 2);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut rows = Vec::new();
    for (_, batches) in read_parquet_files(&dir.path().join("out"), "part-") {
        for b in batches {
            assert_eq!(b.schema().field(0).name(), "order_id");
            let (o, c, a) = (
                b.column(0).as_primitive::<Int64Type>(),
                b.column(1).as_primitive::<Int64Type>(),
                b.column(2).as_primitive::<Float64Type>(),
            );
            for i in 0..b.num_rows() {
                rows.push((o.value(i), c.value(i), a.is_valid(i).then(|| a.value(i))));
            }
        }
    }
    rows.sort_by_key(|r| r.0);
    assert_eq!(rows, vec![(100, 7, Some(1.5)), (101, 8, Some(2.5)), (102, 7, None)]);

    // A partial schema types one column and infers the others.
    let _ = std::fs::remove_dir_all(dir.path().join("out"));
    let (out, _) = run_cluster(dir.path(), &pipeline("customer_id = \"utf8\""), 1);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parts = read_parquet_files(&dir.path().join("out"), "part-");
    let schema = parts[0].1[0].schema();
    assert_eq!(schema.field(0).data_type(), &DataType::Int64);
    assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
    assert_eq!(schema.field(2).data_type(), &DataType::Float64);

    // A declared column the header lacks is named before anything runs.
    let (out, _) = run_cluster(dir.path(), &pipeline("customer = \"int64\""), 2);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("declared column `customer` is not in the header of orders.csv"), "{err}");
}

// --- one float equality ---

fn float_pipeline() -> String {
    r#"
[source.l]
kind = "parquet"
path = "fl/l-*.parquet"

[source.r]
kind = "parquet"
path = "fl/r-*.parquet"

[operator.jh]
kind = "join"
left = "l"
right = "r"
on = ["k"]

[operator.jm]
kind = "join"
left = "l"
right = "r"
on = ["k"]
algorithm = "sort_merge"

[operator.groups]
kind = "group_by"
input = "l"
keys = ["k"]
aggregate = { n = "count()" }

[operator.dist]
kind = "distinct"
input = "l"
columns = ["k"]

[operator.lk]
kind = "project"
input = "l"
columns = { k = "k" }

[operator.rk]
kind = "project"
input = "r"
columns = { k = "k" }

[operator.both]
kind = "intersect"
inputs = ["lk", "rk"]

[operator.only_left]
kind = "subtract"
inputs = ["lk", "rk"]

[operator.ordered]
kind = "sort"
input = "l"
by = ["k"]

[sink.jh_out]
kind = "parquet"
input = "jh"
path = "out/jh-{rank}.parquet"

[sink.jm_out]
kind = "parquet"
input = "jm"
path = "out/jm-{rank}.parquet"

[sink.groups_out]
kind = "parquet"
input = "groups"
path = "out/groups-{rank}.parquet"

[sink.dist_out]
kind = "parquet"
input = "dist"
path = "out/dist-{rank}.parquet"

[sink.both_out]
kind = "parquet"
input = "both"
path = "out/both-{rank}.parquet"

[sink.only_left_out]
kind = "parquet"
input = "only_left"
path = "out/only_left-{rank}.parquet"

[sink.ordered_out]
kind = "parquet"
input = "ordered"
path = "out/ordered-{rank}.parquet"
"#
    .to_string()
}

/// A float key as the tests compare it: -0.0 and 0.0 one value, every NaN one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Num(i64),
    NaN,
    Null,
}

fn key(v: Option<f64>) -> Key {
    match v {
        None => Key::Null,
        Some(x) if x.is_nan() => Key::NaN,
        // The test values are multiples of 0.5; -0.0 * 2 rounds to 0.
        Some(x) => Key::Num((x * 2.0) as i64),
    }
}

fn column_keys(dir: &Path, prefix: &str, col: &str) -> Vec<Key> {
    let mut out = Vec::new();
    for (_, batches) in read_parquet_files(&dir.join("out"), prefix) {
        for b in batches {
            let c = b.column(b.schema().index_of(col).expect("column")).as_primitive::<Float64Type>().clone();
            out.extend((0..b.num_rows()).map(|i| key(c.is_valid(i).then(|| c.value(i)))));
        }
    }
    out
}

#[test]
fn float_keys_compare_one_way_in_every_operator_on_1_to_4_workers() {
    let dir = tempfile::tempdir().expect("tmp");
    let fl = dir.path().join("fl");
    std::fs::create_dir_all(&fl).expect("mkdir");
    let lk = vec![Some(0.0), Some(-0.0), Some(1.5), Some(f64::NAN), None, Some(2.0)];
    let rk = vec![Some(-0.0), Some(1.5), Some(-f64::NAN), Some(3.0)];
    // The left table over two files, so ranks see different parts.
    write_batch(
        &fl.join("l-0.parquet"),
        vec![
            ("k", Arc::new(Float64Array::from(lk[..3].to_vec())) as ArrayRef),
            ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        ],
    );
    write_batch(
        &fl.join("l-1.parquet"),
        vec![
            ("k", Arc::new(Float64Array::from(lk[3..].to_vec())) as ArrayRef),
            ("id", Arc::new(Int64Array::from(vec![4, 5, 6])) as ArrayRef),
        ],
    );
    write_batch(
        &fl.join("r-0.parquet"),
        vec![
            ("k", Arc::new(Float64Array::from(rk.clone())) as ArrayRef),
            ("rid", Arc::new(Int64Array::from(vec![11, 12, 13, 14])) as ArrayRef),
        ],
    );
    // Independent answers.
    let mut want_pairs = Vec::new();
    for (i, l) in lk.iter().enumerate() {
        for (j, r) in rk.iter().enumerate() {
            if l.is_some() && r.is_some() && key(*l) == key(*r) {
                want_pairs.push((i as i64 + 1, j as i64 + 11));
            }
        }
    }
    assert_eq!(want_pairs.len(), 4);
    let mut groups: BTreeMap<Key, i64> = BTreeMap::new();
    for l in &lk {
        *groups.entry(key(*l)).or_default() += 1;
    }
    assert_eq!(groups.len(), 5);
    let rkeys: Vec<Key> = rk.iter().map(|r| key(*r)).collect();
    let mut both: Vec<Key> = groups.keys().copied().filter(|k| rkeys.contains(k)).collect();
    both.sort();
    let mut only_left: Vec<Key> = groups.keys().copied().filter(|k| !rkeys.contains(k)).collect();
    only_left.sort();
    let mut ordered: Vec<Key> = lk.iter().map(|l| key(*l)).collect();
    ordered.sort_by_key(|k| match k {
        Key::Num(n) => (0, *n),
        Key::NaN => (1, 0),
        Key::Null => (2, 0),
    });

    for workers in 1..=4 {
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let (out, _) = run_cluster(dir.path(), &float_pipeline(), workers);
        assert!(out.status.success(), "{workers} workers: {}", String::from_utf8_lossy(&out.stderr));
        for join in ["jh-", "jm-"] {
            let mut pairs = Vec::new();
            for (_, batches) in read_parquet_files(&dir.path().join("out"), join) {
                for b in batches {
                    let s = b.schema();
                    let id = b.column(s.index_of("id").expect("id")).as_primitive::<Int64Type>().clone();
                    let rid = b.column(s.index_of("rid").expect("rid")).as_primitive::<Int64Type>().clone();
                    pairs.extend((0..b.num_rows()).map(|i| (id.value(i), rid.value(i))));
                }
            }
            pairs.sort();
            assert_eq!(pairs, want_pairs, "{join} on {workers} workers");
        }
        let mut got_groups: BTreeMap<Key, i64> = BTreeMap::new();
        for (_, batches) in read_parquet_files(&dir.path().join("out"), "groups-") {
            for b in batches {
                let k = b.column(0).as_primitive::<Float64Type>();
                let n = b.column(1).as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    let prev = got_groups.insert(key(k.is_valid(i).then(|| k.value(i))), n.value(i));
                    assert!(prev.is_none(), "a key in two groups on {workers} workers");
                }
            }
        }
        assert_eq!(got_groups, groups, "group-by on {workers} workers");
        let mut dist = column_keys(dir.path(), "dist-", "k");
        dist.sort();
        assert_eq!(dist, groups.keys().copied().collect::<Vec<_>>(), "distinct on {workers} workers");
        let mut got = column_keys(dir.path(), "both-", "k");
        got.sort();
        assert_eq!(got, both, "intersect on {workers} workers");
        let mut got = column_keys(dir.path(), "only_left-", "k");
        got.sort();
        assert_eq!(got, only_left, "subtract on {workers} workers");
        // Part files in rank order hold the global order.
        assert_eq!(column_keys(dir.path(), "ordered-", "k"), ordered, "sort on {workers} workers");
    }
}

// --- outputs whole or not at all ---

fn copy_pipeline(sink_path: &str, mode: &str, extra: &str) -> String {
    format!(
        r#"
[source.g]
kind = "generate"
rows = 2000

[sink.copy]
kind = "parquet"
input = "g"
path = "{sink_path}"
{mode}
{extra}
"#
    )
}

fn rows_in(dir: &Path, prefix: &str) -> usize {
    read_parquet_files(dir, prefix).iter().flat_map(|(_, b)| b).map(RecordBatch::num_rows).sum()
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    list_dir(dir).into_iter().map(|n| (n.clone(), std::fs::read(dir.join(&n)).expect("read"))).collect()
}

#[test]
fn outputs_replace_the_previous_set_and_a_failed_job_leaves_them_as_they_were() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out");
    // 11 workers: part numbers are padded to two digits, so they sort in rank order.
    let (run, _) = run_cluster(dir.path(), &copy_pipeline("out/part-{rank}.parquet", "", ""), 11);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let names: Vec<String> = (0..11).map(|r| format!("part-{r:02}.parquet")).collect();
    assert_eq!(list_dir(&out), names);
    assert_eq!(rows_in(&out, "part-"), 11 * 2000);
    // Again on fewer workers: exactly the new part files remain.
    let (run, _) = run_cluster(dir.path(), &copy_pipeline("out/part-{rank}.parquet", "", ""), 2);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(list_dir(&out), vec!["part-0.parquet", "part-1.parquet"]);
    assert_eq!(rows_in(&out, "part-"), 2 * 2000);

    // A job that fails at its last stage (an int64 sum overflows while the copy is written)
    // leaves the output as it was, without temporary files.
    let before = snapshot(&out);
    let overflow = r#"
[operator.big]
kind = "project"
input = "g"
columns = { one = "1", big = "9223372036854775807 - key % 2" }

[operator.total]
kind = "group_by"
input = "big"
keys = ["one"]
aggregate = { s = "sum(big)" }

[sink.total_out]
kind = "summary"
input = "total"
"#;
    let (run, _) = run_cluster(dir.path(), &copy_pipeline("out/part-{rank}.parquet", "", overflow), 3);
    assert_eq!(run.status.code(), Some(2), "the data's fault: {}", String::from_utf8_lossy(&run.stderr));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("overflow"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(snapshot(&out), before, "a failed job changed the output");

    // error_if_exists refuses before anything runs; append adds files named by the run.
    let (run, _) = run_cluster(
        dir.path(),
        &copy_pipeline("out/part-{rank}.parquet", "mode = \"error_if_exists\"", ""),
        2,
    );
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("sink.copy") && err.contains("part-0.parquet exists"), "{err}");
    for _ in 0..2 {
        let (run, _) =
            run_cluster(dir.path(), &copy_pipeline("out/part-{rank}.parquet", "mode = \"append\"", ""), 2);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    }
    let names = list_dir(&out);
    assert_eq!(names.len(), 2 + 4, "{names:?}");
    assert_eq!(rows_in(&out, "part-"), 6 * 2000);
    // Overwrite replaces appended parts too.
    let (run, _) = run_cluster(dir.path(), &copy_pipeline("out/part-{rank}.parquet", "", ""), 1);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(list_dir(&out), vec!["part-0.parquet"]);
}

#[test]
fn a_job_killed_midway_leaves_no_new_output_and_no_temporaries() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out");
    let (run, _) = run_cluster(dir.path(), &copy_pipeline("out/part-{rank}.parquet", "", ""), 3);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let before = snapshot(&out);
    // A larger job writing the same path (early) and a join (late); a worker is killed while
    // the join runs, after the copies were staged.
    let pipeline = copy_pipeline("out/part-{rank}.parquet", "", "").replace("rows = 2000", "rows = 2000000")
        + r#"
[source.h]
kind = "generate"
rows = 2000000
seed = 5

[operator.joined]
kind = "join"
left = "g"
right = "h"
on = ["key"]

[sink.joined_out]
kind = "parquet"
input = "joined"
path = "out/joined-{rank}.parquet"
"#;
    let file = dir.path().join("big.toml");
    std::fs::write(&file, pipeline).expect("pipeline");
    let mut child = Command::new(bin())
        .current_dir(dir.path())
        .args(["run", "--quiet", "--workers", "3"])
        .arg(&file)
        .env("UPDRAFT_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let stderr = child.stderr.take().expect("stderr");
    let mut guard = Kill(vec![child]);
    use std::io::BufRead;
    let mut pids = Vec::new();
    let mut killed = false;
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.expect("line");
        if let Some(list) = line.split("(pids ").nth(1) {
            pids = list
                .split(')')
                .next()
                .unwrap_or("")
                .split(", ")
                .map(|p| p.parse::<u32>().expect("pid"))
                .collect();
        }
        if !killed && line.starts_with("[rank 1]") && line.contains("links up") {
            // Kill once a sink writes its temporary file, so the test shows it removed.
            let until = std::time::Instant::now() + Duration::from_secs(5);
            while !list_dir(&out).iter().any(|n| n.ends_with(".tmp")) {
                assert!(std::time::Instant::now() < until, "no temporary file appeared");
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(
                Command::new("kill").args(["-9", &pids[1].to_string()]).status().expect("kill").success()
            );
            killed = true;
        }
    }
    let status = guard.0[0].wait().expect("wait");
    assert!(killed, "the job ended before a worker could be killed");
    assert_eq!(status.code(), Some(1));
    assert_eq!(snapshot(&out), before, "a killed job changed the output or left temporaries");
}
