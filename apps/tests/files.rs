//! File sources and sinks on real clusters: CSV, Arrow IPC and Parquet, glob patterns split
//! across ranks, and `s3://` URLs against the S3-compatible server `.ci/run` starts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use common::*;

fn i(x: Option<i64>) -> V {
    V::I(x)
}

/// `n` rows of (key with nulls, name, v).
fn table(n: usize, seed: u64) -> Vec<Row> {
    let mut rng = TestRng(seed);
    (0..n)
        .map(|k| {
            let key = if rng.below(9) == 0 { None } else { Some(rng.below(40) as i64) };
            let name = if rng.below(7) == 0 { None } else { Some(format!("n{}", rng.below(15))) };
            vec![i(key), V::S(name), i(Some(seed as i64 * 1_000_000 + k as i64))]
        })
        .collect()
}

fn arrow(rows: &[Row]) -> RecordBatch {
    let col = |c: usize| -> Vec<Option<i64>> {
        rows.iter().map(|r| if let V::I(v) = &r[c] { *v } else { None }).collect()
    };
    let names: Vec<Option<String>> =
        rows.iter().map(|r| if let V::S(v) = &r[1] { v.clone() } else { None }).collect();
    RecordBatch::try_from_iter(vec![
        ("key", Arc::new(Int64Array::from(col(0))) as ArrayRef),
        ("name", Arc::new(StringArray::from(names)) as ArrayRef),
        ("v", Arc::new(Int64Array::from(col(2))) as ArrayRef),
    ])
    .expect("batch")
}

fn ipc_bytes(rows: &[Row]) -> Vec<u8> {
    let batch = arrow(rows);
    let mut w = arrow_ipc::writer::FileWriter::try_new(Vec::new(), &batch.schema()).expect("ipc writer");
    w.write(&batch).expect("write");
    w.finish().expect("finish");
    w.into_inner().expect("bytes")
}

fn csv_text(rows: &[Row]) -> String {
    let mut text = String::from("key,name,v\n");
    for r in rows {
        let f = |v: &V| match v {
            V::I(Some(x)) => x.to_string(),
            V::S(Some(s)) => s.clone(),
            _ => String::new(),
        };
        text.push_str(&format!("{},{},{}\n", f(&r[0]), f(&r[1]), f(&r[2])));
    }
    text
}

fn parquet_bytes(rows: &[Row]) -> Vec<u8> {
    let batch = arrow(rows);
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), None).expect("writer");
    w.write(&batch).expect("write");
    w.into_inner().expect("bytes")
}

fn rows_of(batch: &RecordBatch) -> Vec<Row> {
    let cols = batch.columns();
    (0..batch.num_rows()).map(|k| cols.iter().map(|c| value_at(c, k)).collect()).collect()
}

fn value_at(c: &ArrayRef, k: usize) -> V {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    match c.data_type() {
        arrow_schema::DataType::Int64 => {
            V::I(c.is_valid(k).then(|| c.as_primitive::<arrow_array::types::Int64Type>().value(k)))
        }
        _ => V::S(c.is_valid(k).then(|| c.as_string::<i32>().value(k).to_string())),
    }
}

fn read_ipc(data: Vec<u8>) -> Vec<Row> {
    let reader = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(data), None).expect("ipc file");
    reader.flat_map(|b| rows_of(&b.expect("batch"))).collect()
}

/// Rows of a CSV written by the sink (header, comma-separated, empty field = null).
fn read_csv(text: &str) -> Vec<Row> {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("key,name,v"), "header");
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let int = |s: &str| if s.is_empty() { None } else { Some(s.parse::<i64>().expect("int")) };
            vec![i(int(f[0])), V::S((!f[1].is_empty()).then(|| f[1].to_string())), i(int(f[2]))]
        })
        .collect()
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

fn files_pipeline(csv: &str, ipc: &str, parquet: &str, out_ipc: &str, out_csv: &str) -> String {
    format!(
        r#"
[job]
name = "files"

[source.from_csv]
kind = "csv"
path = "{csv}"
schema = {{ key = "int64", name = "utf8", v = "int64" }}

[source.from_ipc]
kind = "ipc"
path = "{ipc}"

[source.from_parquet]
kind = "parquet"
paths = ["{parquet}"]

[operator.all]
kind = "union"
inputs = ["from_csv", "from_ipc", "from_parquet"]

[sink.summary]
kind = "summary"
input = "all"

[sink.as_ipc]
kind = "ipc"
input = "all"
path = "{out_ipc}"

[sink.as_csv]
kind = "csv"
input = "all"
path = "{out_csv}"
"#
    )
}

#[test]
fn csv_ipc_and_parquet_globs_split_across_ranks_and_every_file_sink() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).expect("mkdir");
    let mut all = Vec::new();
    // Five CSV files for three workers: ranks get two, two and one.
    for p in 0..5 {
        let rows = table(30 + p * 7, 10 + p as u64);
        std::fs::write(input.join(format!("part-{p}.csv")), csv_text(&rows)).expect("csv");
        all.extend(rows);
    }
    for p in 0..2 {
        let rows = table(50, 20 + p);
        std::fs::write(input.join(format!("part-{p}.arrow")), ipc_bytes(&rows)).expect("ipc");
        all.extend(rows);
    }
    let rows = table(80, 30);
    std::fs::write(input.join("sub-0.parquet"), parquet_bytes(&rows)).expect("parquet");
    all.extend(rows);
    // Not matched by any pattern.
    std::fs::write(input.join("ignored.txt"), "key,name,v\n1,x,1\n").expect("txt");

    let pipeline = files_pipeline(
        "in/*.csv",
        "in/part-?.arrow",
        "in/sub-[0-9].parquet",
        "out/all-{rank}.arrow",
        "out/all-{rank}.csv",
    );
    let (out, report) = run_cluster(dir.path(), &pipeline, 3);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (n, row_sum, _) = sink(&report.expect("report"), "summary");
    let (want_n, want_sum, _) = checksum(&all);
    assert_eq!((n, row_sum), (want_n, want_sum), "every input row once");

    let mut from_ipc = Vec::new();
    let mut from_csv = Vec::new();
    for rank in 0..3 {
        from_ipc.extend(read_ipc(
            std::fs::read(dir.path().join(format!("out/all-{rank}.arrow"))).expect("ipc out"),
        ));
        from_csv.extend(read_csv(
            &std::fs::read_to_string(dir.path().join(format!("out/all-{rank}.csv"))).expect("csv out"),
        ));
    }
    assert_eq!(sorted(from_ipc), sorted(all.clone()), "IPC sink");
    assert_eq!(sorted(from_csv), sorted(all), "CSV sink");
}

fn json_text(rows: &[Row]) -> String {
    let f = |v: &V| match v {
        V::I(Some(x)) => x.to_string(),
        V::S(Some(s)) => format!("\"{s}\""),
        _ => "null".to_string(),
    };
    rows.iter()
        .map(|r| format!("{{\"key\":{},\"name\":{},\"v\":{}}}\n", f(&r[0]), f(&r[1]), f(&r[2])))
        .collect()
}

/// Parquet in row groups of 50 rows.
fn parquet_row_groups(rows: &[Row]) -> Vec<u8> {
    let batch = arrow(rows);
    let props =
        parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(50)).build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).expect("writer");
    w.write(&batch).expect("write");
    w.into_inner().expect("bytes")
}

/// Sources read only the columns the plan uses (none, for a bare count) and Parquet row groups
/// the filter allows; answers equal a computation over every row.
#[test]
fn every_format_reads_only_what_the_plan_uses_with_the_same_answer() {
    type Writer = fn(&[Row]) -> Vec<u8>;
    let formats: [(&str, &str, Writer); 4] = [
        ("parquet", "parquet", parquet_row_groups),
        ("csv", "csv", |r| csv_text(r).into_bytes()),
        ("ipc", "arrow", ipc_bytes),
        ("json", "jsonl", |r| json_text(r).into_bytes()),
    ];
    for (kind, ext, write) in formats {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("in")).expect("mkdir");
        let mut all = Vec::new();
        for p in 1..=5u64 {
            let rows = table(300, p);
            std::fs::write(dir.path().join(format!("in/t-{p}.{ext}")), write(&rows)).expect("write input");
            all.extend(rows);
        }
        // Files 1 and 2 and half of file 3 fall below `v >= 3000150`.
        let pipeline = format!(
            r#"
[source.t]
kind = "{kind}"
path = "in/t-*.{ext}"

[source.c]
kind = "{kind}"
path = "in/t-*.{ext}"

[operator.f]
kind = "filter"
input = "t"
where = "v >= 3000150 and key between 5 and 30"

[operator.g]
kind = "group_by"
input = "f"
keys = ["name"]
aggregate = {{ n = "count()", s = "sum(key)" }}

[operator.rows]
kind = "group_by"
input = "c"
keys = []
aggregate = {{ n = "count()" }}

[sink.groups]
kind = "parquet"
input = "g"
path = "out/g-{{rank}}.parquet"

[sink.count]
kind = "parquet"
input = "rows"
path = "out/n-{{rank}}.parquet"
"#
        );
        let mut want: std::collections::BTreeMap<Option<String>, (i64, i64)> = Default::default();
        for r in &all {
            let (V::I(Some(key)), V::S(name), V::I(Some(v))) = (&r[0], &r[1], &r[2]) else { continue };
            if *v >= 3_000_150 && (5..=30).contains(key) {
                let e = want.entry(name.clone()).or_default();
                e.0 += 1;
                e.1 += key;
            }
        }
        let want: Vec<Row> =
            want.into_iter().map(|(n, (c, s))| vec![V::S(n), i(Some(c)), i(Some(s))]).collect();
        for workers in [1, 3] {
            let validate = validate_pipeline(dir.path(), "check.toml", &pipeline);
            assert!(validate.status.success(), "{kind}: {}", String::from_utf8_lossy(&validate.stderr));
            let (out, _) = run_cluster(dir.path(), &pipeline, workers);
            assert!(out.status.success(), "{kind} on {workers}: {}", String::from_utf8_lossy(&out.stderr));
            let (names, got) = read_parquet_rows(&dir.path().join("out"), "g-");
            assert_eq!(names, ["name", "n", "s"], "{kind}");
            assert_eq!(sorted(got), want, "{kind} on {workers} workers");
            let (_, n) = read_parquet_rows(&dir.path().join("out"), "n-");
            assert_eq!(n, vec![vec![i(Some(all.len() as i64))]], "{kind}: a count reading no column");
        }
    }
}

#[test]
fn a_pattern_matching_nothing_fails_naming_it() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("in")).expect("mkdir");
    std::fs::write(dir.path().join("in/a.arrow"), ipc_bytes(&table(5, 1))).expect("ipc");
    std::fs::write(dir.path().join("in/a.parquet"), parquet_bytes(&table(5, 2))).expect("parquet");
    let pipeline = files_pipeline("in/*.csv", "in/*.arrow", "in/*.parquet", "o-{rank}.arrow", "o-{rank}.csv");
    let (out, _) = run_cluster(dir.path(), &pipeline, 2);
    // Refused before any worker starts, at the source's key path, naming the pattern.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("source.from_csv") && err.contains("`in/*.csv`"), "{err}");
    assert!(err.contains("matches no file"), "{err}");
}

/// The S3 bucket the tests may use, when an S3-compatible server is configured.
fn s3_bucket() -> Option<String> {
    match std::env::var("UPDRAFT_TEST_S3_BUCKET") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            assert!(
                std::env::var("UPDRAFT_REQUIRE_S3").is_err(),
                "UPDRAFT_REQUIRE_S3 is set but UPDRAFT_TEST_S3_BUCKET is not"
            );
            eprintln!("skipped: set UPDRAFT_TEST_S3_BUCKET and AWS_ENDPOINT_URL to an S3-compatible server");
            None
        }
    }
}

#[test]
fn s3_sources_globs_and_sinks() {
    use updraft_operators::storage::{s3_get, s3_put};
    let Some(bucket) = s3_bucket() else { return };
    let job = format!("files-test-{}", std::process::id());
    let mut all = Vec::new();
    for p in 0..3 {
        let rows = table(40 + p * 5, 40 + p as u64);
        s3_put(&bucket, &format!("{job}/in/part-{p}.parquet"), parquet_bytes(&rows)).expect("put parquet");
        all.extend(rows);
    }
    let rows = table(33, 50);
    s3_put(&bucket, &format!("{job}/in/one.csv"), csv_text(&rows).into_bytes()).expect("put csv");
    all.extend(rows);
    let rows = table(21, 51);
    s3_put(&bucket, &format!("{job}/in/x/one.arrow"), ipc_bytes(&rows)).expect("put ipc");
    all.extend(rows);

    let dir = tempfile::tempdir().expect("tmp");
    let base = format!("s3://{bucket}/{job}");
    let pipeline = files_pipeline(
        &format!("{base}/in/*.csv"),
        &format!("{base}/in/x/*.arrow"),
        &format!("{base}/in/part-*.parquet"),
        &format!("{base}/out/all-{{rank}}.arrow"),
        "out/all-{rank}.csv",
    );
    let (out, report) = run_cluster(dir.path(), &pipeline, 3);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (n, row_sum, _) = sink(&report.expect("report"), "summary");
    let (want_n, want_sum, _) = checksum(&all);
    assert_eq!((n, row_sum), (want_n, want_sum), "every input row once");
    let mut back = Vec::new();
    for rank in 0..3 {
        let data = s3_get(&bucket, &format!("{job}/out/all-{rank}.arrow")).expect("get output");
        back.extend(read_ipc(data.to_vec()));
    }
    assert_eq!(sorted(back), sorted(all.clone()), "IPC objects written by the sink");
    let outputs = |prefix: &str| updraft_operators::storage::s3_list(&bucket, prefix).expect("list");
    let names: Vec<String> = (0..3).map(|r| format!("{job}/out/all-{r}.arrow")).collect();
    assert_eq!(outputs(&format!("{job}/out/")), names, "the part objects, no temporary ones");
    // Again on two workers: the stale third part is deleted at the commit.
    let (out, _) = run_cluster(dir.path(), &pipeline, 2);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(outputs(&format!("{job}/out/")), names[..2].to_vec());

    // A missing object is named.
    let pipeline = files_pipeline(
        &format!("{base}/in/*.csv"),
        &format!("{base}/nothing-{{rank}}.arrow"),
        &format!("{base}/in/part-*.parquet"),
        "o-{rank}.arrow",
        "o-{rank}.csv",
    );
    let (out, _) = run_cluster(dir.path(), &pipeline, 2);
    // Found when the job agrees its inputs, before any worker starts.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("source.from_ipc") && err.contains(&format!("{base}/nothing-0.arrow")), "{err}");
    assert!(err.contains("NoSuchKey") || err.contains("NotFound"), "{err}");
}
