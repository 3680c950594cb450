//! `filter` and `project` in a distributed pipeline, against the same computation done here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use arrow_schema::DataType;
use common::*;

#[test]
fn filter_then_project_after_a_join_on_3_workers() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rng = TestRng(9);
    let left: Vec<Row> = (0..500).map(|n| vec![V::I(Some(rng.below(100) as i64)), V::I(Some(n))]).collect();
    let right: Vec<Row> = (0..400)
        .map(|_| {
            vec![
                V::I(Some(rng.below(100) as i64)),
                if rng.below(5) == 0 { V::S(None) } else { V::S(Some(format!("t{}", rng.below(4)))) },
            ]
        })
        .collect();
    write_parquet(
        &dir.path().join("l.parquet"),
        &batch(&["key", "lv"], &[DataType::Int64, DataType::Int64], &left),
    );
    write_parquet(
        &dir.path().join("r.parquet"),
        &batch(&["key", "tag"], &[DataType::Int64, DataType::Utf8], &right),
    );
    let pipeline = r#"
[source.l]
kind = "parquet"
paths = ["l.parquet"]

[source.r]
kind = "parquet"
paths = ["r.parquet"]

[operator.j]
kind = "join"
left = "l"
right = "r"
on = ["key"]

[operator.keep]
kind = "filter"
input = "j"
where = "(lv % 3 == 0 or tag == 't1') and tag is not null and key < 90"

[operator.shape]
kind = "project"
input = "keep"
columns = { key = "key", score = "lv * 2 - key", tag = "tag" }

[sink.out]
kind = "parquet"
input = "shape"
path = "out/x-{rank}.parquet"
"#;
    let (out, _) = run_cluster(dir.path(), pipeline, 3);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut want: Vec<Row> = naive_join(&left, &right, &[0], &[0], &[0])
        .into_iter()
        .filter_map(|r| {
            let (V::I(Some(key)), V::I(Some(lv)), tag) = (&r[0], &r[1], &r[2]) else { return None };
            let t = match tag {
                V::S(Some(t)) => t.clone(),
                _ => return None,
            };
            ((lv % 3 == 0 || t == "t1") && *key < 90)
                .then(|| vec![V::I(Some(*key)), V::I(Some(lv * 2 - key)), V::S(Some(t))])
        })
        .collect();
    want.sort();
    assert!(want.len() > 20, "the test data must keep some rows");
    let (names, mut got) = read_parquet_rows(&dir.path().join("out"), "x-");
    got.sort();
    assert_eq!(names, vec!["key", "score", "tag"]);
    assert_eq!(got, want);
}

#[test]
fn bad_expressions_are_reported_with_their_key_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[source.s]\nkind = \"generate\"\nrows = 10\n\n[operator.f]\nkind = \"filter\"\ninput = \"s\"\nwhere = \"key > \"\n\n\
         [operator.p]\nkind = \"project\"\ninput = \"f\"\ncolumns = { a = \"key ** 2\" }\n\n[sink.o]\nkind = \"summary\"\ninput = \"p\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(bin()).arg("validate").arg(&file).output().expect("validate");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("operator.f.where") && err.contains("ends early at position 7"), "{err}");
    assert!(err.contains("operator.p.columns.a") && err.contains("unexpected `*` at position 6"), "{err}");
}
