//! The worked custom-operator example (`apps/examples/custom_operator.rs`) as a user runs it:
//! its own binary, a pipeline naming the registered operator, 1 to 4 workers, checked against a
//! naive top-n written here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use arrow_schema::DataType;
use common::*;

/// The example binary, built by `cargo test` next to the test binaries.
fn example_bin() -> PathBuf {
    let updraft = PathBuf::from(bin());
    let path = updraft.parent().expect("target dir").join("examples").join("custom_operator");
    assert!(path.exists(), "{} is missing: build it with `cargo build --release --examples`", path.display());
    path
}

fn pipeline(files: &[String], params: &str) -> String {
    let list = files.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[source.sales]
kind = "parquet"
paths = [{list}]

[operator.top]
kind = "top_n_per_key"
input = "sales"
partition_by = ["key"]

[operator.top.params]
{params}

[sink.out]
kind = "parquet"
input = "top"
path = "out/top-{{rank}}.parquet"
"#
    )
}

/// Per key, the `n` largest values of `v` (rows with a null key or value never qualify).
fn naive_top(rows: &[Row], n: usize, ascending: bool) -> BTreeMap<i64, Vec<i64>> {
    let mut by_key: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in rows {
        if let (V::I(Some(k)), V::I(Some(v))) = (&r[0], &r[1]) {
            by_key.entry(*k).or_default().push(*v);
        }
    }
    for vs in by_key.values_mut() {
        vs.sort();
        if !ascending {
            vs.reverse();
        }
        vs.truncate(n);
        vs.sort();
    }
    by_key
}

fn got_top(rows: &[Row]) -> BTreeMap<i64, Vec<i64>> {
    let mut by_key: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in rows {
        let (V::I(Some(k)), V::I(Some(v))) = (&r[0], &r[1]) else { panic!("unexpected output row {r:?}") };
        by_key.entry(*k).or_default().push(*v);
    }
    for vs in by_key.values_mut() {
        vs.sort();
    }
    by_key
}

fn run(dir: &std::path::Path, text: &str, workers: u32) -> std::process::Output {
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, text).expect("write pipeline");
    let _ = std::fs::remove_dir_all(dir.join("out"));
    Command::new(example_bin())
        .current_dir(dir)
        .args(["run", "--quiet", "--workers", &workers.to_string()])
        .arg(&file)
        .output()
        .expect("run the example")
}

#[test]
fn top_n_per_key_matches_a_naive_top_n_on_1_to_4_workers() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rng = TestRng(99);
    // Skewed keys: key 0 takes about half the rows.
    let rows: Vec<Row> = (0..3000)
        .map(|_| {
            let k = if rng.below(2) == 0 { 0 } else { rng.below(200) as i64 };
            let key = if rng.below(25) == 0 { None } else { Some(k) };
            let v = if rng.below(30) == 0 { None } else { Some(rng.below(100_000) as i64 - 50_000) };
            vec![V::I(key), V::I(v)]
        })
        .collect();
    let types = [DataType::Int64, DataType::Int64];
    let files: Vec<String> = (0..5)
        .map(|p| {
            let part: Vec<Row> = rows.iter().skip(p * 600).take(600).cloned().collect();
            let name = format!("in-{p}.parquet");
            write_parquet(&dir.path().join(&name), &batch(&["key", "v"], &types, &part));
            name
        })
        .collect();
    for (workers, n, ascending) in [(1, 3, false), (2, 1, true), (3, 5, false), (4, 3, true)] {
        let params = format!("key = \"key\"\nby = \"v\"\nn = {n}\nascending = {ascending}");
        let out = run(dir.path(), &pipeline(&files, &params), workers);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (names, got) = read_parquet_rows(&dir.path().join("out"), "top-");
        assert_eq!(names, vec!["key", "v"]);
        assert_eq!(got_top(&got), naive_top(&rows, n, ascending), "{workers} workers, n = {n}");
    }
}

#[test]
fn bad_parameters_and_unknown_kinds_are_reported_at_their_paths() {
    let dir = tempfile::tempdir().expect("tmp");
    write_parquet(
        &dir.path().join("in.parquet"),
        &batch(&["key", "v"], &[DataType::Int64, DataType::Int64], &[vec![V::I(Some(1)), V::I(Some(2))]]),
    );
    let files = vec!["in.parquet".to_string()];
    let validate = |text: &str| {
        let file = dir.path().join("p.toml");
        std::fs::write(&file, text).expect("write");
        let out = Command::new(example_bin())
            .current_dir(dir.path())
            .arg("validate")
            .arg(&file)
            .output()
            .expect("run");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, err) = validate(&pipeline(&files, "key = \"key\"\nby = \"v\""));
    assert_eq!(code, Some(2));
    assert!(err.contains("operator.top.params") && err.contains("missing field `n`"), "{err}");
    let (code, err) = validate(&pipeline(&files, "key = \"key\"\nby = \"v\"\nn = 2\ncolour = 1"));
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown field `colour`"), "{err}");
    // Columns are checked by running the operator on an empty batch.
    let (code, err) = validate(&pipeline(&files, "key = \"key\"\nby = \"price\"\nn = 2"));
    assert_eq!(code, Some(2));
    assert!(err.contains("operator.top") && err.contains("no column `price`"), "{err}");
    // The plain `updraft` binary does not know the operator, and says which kinds it knows.
    let file = dir.path().join("p.toml");
    std::fs::write(&file, pipeline(&files, "key = \"key\"\nby = \"v\"\nn = 2")).expect("write");
    let out = Command::new(bin()).arg("validate").arg(&file).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("operator.top.kind") && err.contains("unknown operator kind `top_n_per_key`"),
        "{err}"
    );
}
