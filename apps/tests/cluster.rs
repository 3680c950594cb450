//! End-to-end: real local clusters of `updraft worker` processes on 127.0.0.1, checked against
//! a naive join and the checksum specification computed here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use arrow_schema::DataType;
use common::*;

fn i(x: i64) -> V {
    V::I(Some(x))
}

fn s(x: &str) -> V {
    V::S(Some(x.to_string()))
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

/// Writes `rows` as `parts` Parquet files `dir/<name>-<k>.parquet`; returns their names.
fn write_parts(
    dir: &std::path::Path,
    name: &str,
    names: &[&str],
    types: &[DataType],
    rows: &[Row],
    parts: usize,
) -> Vec<String> {
    let chunk = rows.len().div_ceil(parts).max(1);
    (0..parts)
        .map(|k| {
            let part: Vec<Row> = rows.iter().skip(k * chunk).take(chunk).cloned().collect();
            let file = format!("{name}-{k}.parquet");
            write_parquet(&dir.join(&file), &batch(names, types, &part));
            file
        })
        .collect()
}

fn toml_list(files: &[String]) -> String {
    format!("[{}]", files.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", "))
}

fn join_pipeline(left: &[String], right: &[String], on: &str, extra: &str) -> String {
    format!(
        r#"
[job]
name = "test-join"

[runtime]
peer_timeout = "20s"
{extra}

[source.left]
kind = "parquet"
paths = {}

[source.right]
kind = "parquet"
paths = {}

[operator.joined]
kind = "join"
left = "left"
right = "right"
on = {on}

[sink.summary]
kind = "summary"
input = "joined"

[sink.files]
kind = "parquet"
input = "joined"
path = "out/joined-{{rank}}.parquet"
"#,
        toml_list(left),
        toml_list(right)
    )
}

fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "updraft failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_summary(report: &serde_json::Value, expected: &[Row], names: &[&str]) {
    let (rows, row_sum, cols) = sink(report, "summary");
    let (n, want_row, want_cols) = checksum(expected);
    assert_eq!(rows, n, "row count");
    assert_eq!(row_sum, want_row, "row checksum");
    if !expected.is_empty() {
        let got_names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(got_names, names, "output columns");
        assert_eq!(cols.iter().map(|c| c.1).collect::<Vec<_>>(), want_cols, "column checksums");
    }
}

#[test]
fn small_joins_match_a_naive_join_on_2_3_and_4_workers() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rng = TestRng(1);
    let key = |rng: &mut TestRng, range: u64| {
        if rng.below(10) == 0 { V::I(None) } else { i(rng.below(range) as i64) }
    };
    let left: Vec<Row> = (0..60).map(|n| vec![key(&mut rng, 20), i(1000 + n)]).collect();
    let right: Vec<Row> = (0..50).map(|n| vec![key(&mut rng, 25), i(2000 + n)]).collect();
    let types = [DataType::Int64, DataType::Int64];
    // Three files a side: with 4 workers, rank 3 reads nothing.
    let lf = write_parts(dir.path(), "left", &["key", "payload"], &types, &left, 3);
    let rf = write_parts(dir.path(), "right", &["key", "payload"], &types, &right, 3);
    let expected = naive_join(&left, &right, &[0], &[0], &[0]);
    assert!(expected.len() > 50, "the test data must produce matches");
    for workers in [2, 3, 4] {
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let (out, report) = run_cluster(dir.path(), &join_pipeline(&lf, &rf, "[\"key\"]", ""), workers);
        assert_ok(&out);
        let report = report.expect("report");
        assert_eq!(report["world"], workers);
        assert_summary(&report, &expected, &["key", "payload_left", "payload_right"]);
        let (names, rows) = read_parquet_rows(&dir.path().join("out"), "joined-");
        assert_eq!(names, vec!["key", "payload_left", "payload_right"]);
        assert_eq!(sorted(rows), sorted(expected.clone()), "{workers} workers: full rows");
    }
}

#[test]
fn outer_joins_match_a_naive_outer_join() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rng = TestRng(21);
    let key =
        |rng: &mut TestRng| if rng.below(8) == 0 { V::S(None) } else { s(&format!("k{}", rng.below(30))) };
    let left: Vec<Row> = (0..120).map(|n| vec![key(&mut rng), i(n)]).collect();
    let right: Vec<Row> = (0..90).map(|n| vec![key(&mut rng), i(1000 + n)]).collect();
    let types = [DataType::Utf8, DataType::Int64];
    let lf = write_parts(dir.path(), "left", &["key", "lv"], &types, &left, 3);
    let rf = write_parts(dir.path(), "right", &["key", "rv"], &types, &right, 2);
    let nulls = (&vec![V::S(None), V::I(None)], &vec![V::S(None), V::I(None)]);
    let cases = [
        ("inner", (false, false)),
        ("left", (true, false)),
        ("right", (false, true)),
        ("full", (true, true)),
    ];
    for algorithm in ["hash", "sort_merge"] {
        for (how, keep) in cases {
            let _ = std::fs::remove_dir_all(dir.path().join("out"));
            let pipeline = join_pipeline(&lf, &rf, "[\"key\"]", "").replace(
                "on = [\"key\"]",
                &format!("on = [\"key\"]\nhow = \"{how}\"\nalgorithm = \"{algorithm}\""),
            );
            let (out, report) = run_cluster(dir.path(), &pipeline, 3);
            assert_ok(&out);
            let expected = naive_outer_join(&left, &right, &[0], &[0], &[0], keep, nulls);
            assert_summary(&report.expect("report"), &expected, &["key", "lv", "rv"]);
            let (_, rows) = read_parquet_rows(&dir.path().join("out"), "joined-");
            assert_eq!(sorted(rows), sorted(expected), "{algorithm} {how} join, full rows");
            if algorithm == "sort_merge" {
                // Each rank's output is in key order, rows with a null key last.
                for rank in 0..3 {
                    let (_, rows) = read_parquet_rows(&dir.path().join("out"), &format!("joined-{rank}"));
                    let keys: Vec<&V> = rows.iter().map(|r| &r[0]).collect();
                    let valid = keys.iter().take_while(|k| **k != &V::S(None)).count();
                    assert!(keys[..valid].windows(2).all(|w| w[0] <= w[1]), "rank {rank}: keys ascend");
                    assert!(keys[valid..].iter().all(|k| **k == V::S(None)), "rank {rank}: nulls last");
                }
            }
        }
    }
}

#[test]
fn string_and_multi_column_keys_with_nulls() {
    let dir = tempfile::tempdir().expect("tmp");
    let names = ["alpha", "beta", "gamma", "delta"];
    let mut rng = TestRng(7);
    let row = |rng: &mut TestRng, v: i64| {
        let name = if rng.below(8) == 0 { V::S(None) } else { s(names[rng.below(4) as usize]) };
        vec![name, i(rng.below(3) as i64), i(v)]
    };
    let left: Vec<Row> = (0..80).map(|n| row(&mut rng, n)).collect();
    let right: Vec<Row> = (0..70).map(|n| row(&mut rng, 100 + n)).collect();
    let types = [DataType::Utf8, DataType::Int64, DataType::Int64];
    let lf = write_parts(dir.path(), "left", &["name", "n", "lv"], &types, &left, 2);
    let rf = write_parts(dir.path(), "right", &["name", "n", "rv"], &types, &right, 2);
    let expected = naive_join(&left, &right, &[0, 1], &[0, 1], &[0, 1]);
    assert!(!expected.is_empty());
    for algorithm in ["hash", "sort_merge"] {
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let pipeline = join_pipeline(&lf, &rf, "[\"name\", \"n\"]", "")
            .replace("kind = \"join\"", &format!("kind = \"join\"\nalgorithm = \"{algorithm}\""));
        let (out, report) = run_cluster(dir.path(), &pipeline, 3);
        assert_ok(&out);
        assert_summary(&report.expect("report"), &expected, &["name", "n", "lv", "rv"]);
        let (_, rows) = read_parquet_rows(&dir.path().join("out"), "joined-");
        assert_eq!(sorted(rows), sorted(expected.clone()), "{algorithm}");
    }

    // Keys of the string column alone: the int `n` columns clash and get suffixes.
    let expected = naive_join(&left, &right, &[0], &[0], &[0]);
    let (out, report) = run_cluster(dir.path(), &join_pipeline(&lf, &rf, "[\"name\"]", ""), 2);
    assert_ok(&out);
    assert_summary(&report.expect("report"), &expected, &["name", "n_left", "lv", "n_right", "rv"]);
}

#[test]
fn all_duplicate_keys_leave_most_partitions_empty() {
    let dir = tempfile::tempdir().expect("tmp");
    let left: Vec<Row> = (0..200).map(|n| vec![i(7), i(n)]).collect();
    let right: Vec<Row> = (0..150).map(|n| vec![i(7), i(1000 + n)]).collect();
    let types = [DataType::Int64, DataType::Int64];
    let lf = write_parts(dir.path(), "left", &["key", "lv"], &types, &left, 4);
    let rf = write_parts(dir.path(), "right", &["key", "rv"], &types, &right, 4);
    let expected = naive_join(&left, &right, &[0], &[0], &[0]);
    assert_eq!(expected.len(), 30_000);
    let (out, report) =
        run_cluster(dir.path(), &join_pipeline(&lf, &rf, "[\"key\"]", "batch_rows = 1000"), 4);
    assert_ok(&out);
    assert_summary(&report.expect("report"), &expected, &["key", "lv", "rv"]);
    // Every rank writes a file, the ranks that own no key an empty one.
    let files = std::fs::read_dir(dir.path().join("out")).expect("out").count();
    assert_eq!(files, 4);
}

#[test]
fn tables_spanning_many_batches() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rng = TestRng(3);
    let left: Vec<Row> = (0..50_000).map(|n| vec![i(rng.below(30_000) as i64), i(n)]).collect();
    let right: Vec<Row> = (0..40_000).map(|n| vec![i(rng.below(30_000) as i64), i(n)]).collect();
    let types = [DataType::Int64, DataType::Int64];
    let lf = write_parts(dir.path(), "left", &["key", "lv"], &types, &left, 3);
    let rf = write_parts(dir.path(), "right", &["key", "rv"], &types, &right, 3);
    let expected = naive_join(&left, &right, &[0], &[0], &[0]);
    let (out, report) = run_cluster(
        dir.path(),
        &join_pipeline(&lf, &rf, "[\"key\"]", "batch_rows = 1000\nchannel_credit = \"64KiB\""),
        3,
    );
    assert_ok(&out);
    assert_summary(&report.expect("report"), &expected, &["key", "lv", "rv"]);
}

#[test]
fn one_million_row_tables_on_4_workers() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rng = TestRng(11);
    let n = 1_000_000i64;
    let range = 900_000;
    let left: Vec<Row> = (0..n).map(|k| vec![i(rng.below(range) as i64), i(k)]).collect();
    let right: Vec<Row> = (0..n).map(|k| vec![i(rng.below(range) as i64), i(-k)]).collect();
    let types = [DataType::Int64, DataType::Int64];
    let lf = write_parts(dir.path(), "left", &["key", "lv"], &types, &left, 4);
    let rf = write_parts(dir.path(), "right", &["key", "rv"], &types, &right, 4);
    let expected = naive_join(&left, &right, &[0], &[0], &[0]);
    let pipeline = join_pipeline(&lf, &rf, "[\"key\"]", "").replace(
        "[sink.files]\nkind = \"parquet\"\ninput = \"joined\"\npath = \"out/joined-{rank}.parquet\"\n",
        "",
    );
    let (out, report) = run_cluster(dir.path(), &pipeline, 4);
    assert_ok(&out);
    assert_summary(&report.expect("report"), &expected, &["key", "lv", "rv"]);
}

#[test]
fn generated_tables_follow_their_specification() {
    let dir = tempfile::tempdir().expect("tmp");
    let (rows, world, uf) = (20_000u64, 4u32, 0.5f64);
    let left = generated_table(1, rows, world, uf);
    let right = generated_table(2, rows, world, uf);
    let expected = naive_join(&left, &right, &[0], &[0], &[0]);
    let (out, report) =
        run_cluster(dir.path(), &generated_join_pipeline(rows, uf, "batch_rows = 4096"), world);
    assert_ok(&out);
    assert_summary(&report.expect("report"), &expected, &["key", "payload_left", "payload_right"]);
}

#[test]
fn csv_sources_with_a_declared_schema() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("l.csv"), "id,name\n1,ann\n2,bob\n3,\n2,bea\n").expect("csv");
    std::fs::write(dir.path().join("r.csv"), "id,score\n2,10\n3,20\n4,30\n2,40\n").expect("csv");
    let pipeline = r#"
[source.l]
kind = "csv"
paths = ["l.csv"]
schema = { id = "int64", name = "utf8" }

[source.r]
kind = "csv"
paths = ["r.csv"]
schema = { id = "int64", score = "int64" }

[operator.j]
kind = "join"
left = "l"
right = "r"
on = ["id"]

[sink.summary]
kind = "summary"
input = "j"
"#;
    let left = vec![vec![i(1), s("ann")], vec![i(2), s("bob")], vec![i(3), V::S(None)], vec![i(2), s("bea")]];
    let right = vec![vec![i(2), i(10)], vec![i(3), i(20)], vec![i(4), i(30)], vec![i(2), i(40)]];
    let expected = naive_join(&left, &right, &[0], &[0], &[0]);
    assert_eq!(expected.len(), 5);
    let (out, report) = run_cluster(dir.path(), pipeline, 2);
    assert_ok(&out);
    assert_summary(&report.expect("report"), &expected, &["id", "name", "score"]);
}
