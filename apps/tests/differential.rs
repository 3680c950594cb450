//! Differential test against DuckDB: random tables (keys of many types with nulls, NaN, ±0.0,
//! hot keys, empty tables, small row groups, files split unevenly) and random pipelines (joins
//! of every kind and algorithm, group-by with many aggregates, whole-table aggregates, distinct,
//! set operations, filter and project, sort with head), each run by updraft on 1 to 4 workers
//! and by DuckDB (its Python package, through `differential.py`), results compared as
//! multisets, in order where a sort fixes it. A mismatch prints the seed and the pipeline.
//!
//! `UPDRAFT_DIFF_CASES` (default 250) sets the number of cases and `UPDRAFT_DIFF_SEED` the
//! first seed; CI runs the default, `cargo test --release -p updraft --test differential` with
//! more cases before a release. Without Python's `duckdb` and `pyarrow` the test is skipped,
//! unless `UPDRAFT_REQUIRE_DUCKDB=1` (set by `scripts/test`, which installs them).
//!
//! Where updraft's semantics are its own, the SQL says so: a float key's -0.0 and 0.0 are one
//! key and NaN equals NaN (as in DuckDB); `%` keeps the dividend's sign (as in DuckDB).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, Date32Array, Decimal128Array, DictionaryArray, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use common::*;
use parquet::file::properties::WriterProperties;

/// The type of the key columns `lk` and `rk`.
#[derive(Debug, Clone, Copy)]
enum KeyType {
    Int64,
    Int32,
    Utf8,
    Dictionary,
    Float64,
    Date,
    Timestamp,
    Decimal,
    UInt64,
}

const KEY_TYPES: &[KeyType] = &[
    KeyType::Int64,
    KeyType::Int32,
    KeyType::Utf8,
    KeyType::Dictionary,
    KeyType::Float64,
    KeyType::Date,
    KeyType::Timestamp,
    KeyType::Decimal,
    KeyType::UInt64,
];

/// A key column of `n` rows drawn from `distinct` values (`None`: null), the first value hot.
fn key_column(t: KeyType, n: usize, distinct: u64, rng: &mut TestRng) -> ArrayRef {
    let pick: Vec<Option<u64>> = (0..n)
        .map(|_| match rng.below(20) {
            0 => None,
            1..=4 => Some(0),
            _ => Some(rng.below(distinct.max(1))),
        })
        .collect();
    match t {
        KeyType::Int64 => Arc::new(Int64Array::from_iter(pick.iter().map(|v| v.map(|x| x as i64 - 3)))),
        KeyType::Int32 => Arc::new(Int32Array::from_iter(pick.iter().map(|v| v.map(|x| x as i32 * 7)))),
        KeyType::Utf8 => Arc::new(StringArray::from_iter(pick.iter().map(|v| v.map(|x| format!("k{x}"))))),
        KeyType::Dictionary => {
            let names: Vec<Option<String>> = pick.iter().map(|v| v.map(|x| format!("k{x}"))).collect();
            let d: DictionaryArray<Int32Type> = names.iter().map(Option::as_deref).collect();
            Arc::new(d)
        }
        KeyType::Float64 => Arc::new(Float64Array::from_iter(pick.iter().map(|v| {
            v.map(|x| match x {
                1 => -0.0,
                2 => 0.0,
                3 => f64::NAN,
                4 => -f64::NAN,
                x => x as f64 / 4.0,
            })
        }))),
        KeyType::Date => Arc::new(Date32Array::from_iter(pick.iter().map(|v| v.map(|x| 19_000 + x as i32)))),
        KeyType::Timestamp => Arc::new(TimestampMicrosecondArray::from_iter(
            pick.iter().map(|v| v.map(|x| 1_700_000_000_000_000 + x as i64 * 1_000_001)),
        )),
        KeyType::Decimal => Arc::new(
            Decimal128Array::from_iter(pick.iter().map(|v| v.map(|x| i128::from(x) * 125 - 250)))
                .with_precision_and_scale(18, 2)
                .expect("decimal"),
        ),
        KeyType::UInt64 => Arc::new(UInt64Array::from_iter(
            pick.iter().map(|v| v.map(|x| if x % 2 == 0 { u64::MAX - x } else { x })),
        )),
    }
}

/// Table `name` (`l` or `r`): key `{p}k`, int `{p}v`, string `{p}s`, float `{p}f`, written as
/// 1 to 3 Parquet files of uneven sizes with small row groups.
fn write_table(dir: &Path, name: &str, t: KeyType, rows: usize, distinct: u64, rng: &mut TestRng) {
    let p = name;
    let k = key_column(t, rows, distinct, rng);
    let v: Vec<Option<i64>> =
        (0..rows).map(|_| if rng.below(8) == 0 { None } else { Some(rng.below(200) as i64 - 100) }).collect();
    let s: Vec<Option<String>> = (0..rows)
        .map(|_| {
            if rng.below(9) == 0 {
                None
            } else {
                Some(["apple", "Apricot", "banana", "b_x", "éclair", ""][rng.below(6) as usize].to_string())
            }
        })
        .collect();
    let f: Vec<Option<f64>> = (0..rows)
        .map(|_| if rng.below(10) == 0 { None } else { Some(rng.below(10_000) as f64 / 64.0 - 50.0) })
        .collect();
    let batch = RecordBatch::try_from_iter(vec![
        (format!("{p}k"), k),
        (format!("{p}v"), Arc::new(Int64Array::from(v)) as ArrayRef),
        (format!("{p}s"), Arc::new(StringArray::from(s)) as ArrayRef),
        (format!("{p}f"), Arc::new(Float64Array::from(f)) as ArrayRef),
    ])
    .expect("table");
    let files = 1 + rng.below(3) as usize;
    let mut start = 0;
    for i in 0..files {
        let len = if i + 1 == files { rows - start } else { rng.below((rows - start) as u64 + 1) as usize };
        let part = batch.slice(start, len);
        start += len;
        let props =
            WriterProperties::builder().set_max_row_group_row_count(Some(1 + rng.below(64) as usize)).build();
        let file = File::create(dir.join(format!("data/{name}-{i}.parquet"))).expect("create");
        let mut w = parquet::arrow::ArrowWriter::try_new(file, part.schema(), Some(props)).expect("writer");
        w.write(&part).expect("write");
        w.close().expect("close");
    }
}

/// One case: the pipeline's operators (after the two sources), the SQL DuckDB runs, how many
/// leading columns are ordered, and whether a limit cuts through ties.
struct Case {
    operators: String,
    sql: String,
    ordered: usize,
    limit_ties: bool,
}

/// A random predicate over table `l`, in updraft's syntax and in SQL.
fn predicate(rng: &mut TestRng) -> (String, String) {
    let one = |rng: &mut TestRng| -> (String, String) {
        let c = rng.below(100) as i64 - 50;
        match rng.below(7) {
            0 => (format!("lv > {c}"), format!("lv > {c}")),
            1 => ("ls like 'a%'".into(), "ls LIKE 'a%'".into()),
            2 => (format!("lv between {c} and {}", c + 40), format!("lv BETWEEN {c} AND {}", c + 40)),
            3 => (format!("lv in ({c}, 1, -2)"), format!("lv IN ({c}, 1, -2)")),
            4 => ("ls is null".into(), "ls IS NULL".into()),
            5 => ("coalesce(lv, 0) % 3 == 1".into(), "coalesce(lv, 0) % 3 = 1".into()),
            _ => (format!("lf * 2 <= {c}"), format!("lf * 2 <= {c}")),
        }
    };
    let (a, sa) = one(rng);
    let (b, sb) = one(rng);
    match rng.below(3) {
        0 => (a, sa),
        1 => (format!("{a} and not ({b})"), format!("{sa} AND NOT ({sb})")),
        _ => (format!("{a} or {b}"), format!("{sa} OR {sb}")),
    }
}

/// Set operations need inputs of one schema (cast first, README "Types"): the expression giving
/// the key of `column` when the two sides' key types differ.
fn common_key(column: &str, left: KeyType, right: KeyType) -> String {
    match (left, right) {
        (KeyType::Utf8 | KeyType::Dictionary, KeyType::Utf8 | KeyType::Dictionary)
            if !same_type(left, right) =>
        {
            format!("cast({column} as string)")
        }
        _ if !same_type(left, right) => format!("cast({column} as decimal(20, 0))"),
        _ => column.to_string(),
    }
}

fn same_type(a: KeyType, b: KeyType) -> bool {
    std::mem::discriminant(&a) == std::mem::discriminant(&b)
}

fn random_case(rng: &mut TestRng, left: KeyType, right: KeyType) -> Case {
    match rng.below(10) {
        7 => Case {
            operators: "[operator.result]\nkind = \"group_by\"\ninput = \"l\"\nkeys = [\"lk\", \"ls\"]\naggregate = { n = \"count()\", s = \"sum(lv)\", q = \"quantile(lf, 0.25)\", f = \"max(lf)\" }\n".into(),
            sql: "SELECT lk, ls, count(*), sum(lv), quantile_cont(lf, 0.25), max(lf) FROM l GROUP BY lk, ls".into(),
            ordered: 0,
            limit_ties: false,
        },
        8 => Case {
            operators: "[operator.result]\nkind = \"sort\"\ninput = \"l\"\nby = [\"lk desc nulls last\", \"lv\"]\n".into(),
            sql: "SELECT * FROM l ORDER BY lk DESC NULLS LAST, lv ASC NULLS LAST".into(),
            ordered: 2,
            limit_ties: false,
        },
        9 => {
            // Both sides' key named `k`: one output column, the right key for unmatched right rows.
            let how = ["inner", "left", "right", "full"][rng.below(4) as usize];
            Case {
                operators: format!(
                    "[operator.a]\nkind = \"project\"\ninput = \"l\"\ncolumns = {{ k = \"lk\", v = \"lv\" }}\n\n[operator.b]\nkind = \"project\"\ninput = \"r\"\ncolumns = {{ k = \"rk\", w = \"rs\" }}\n\n[operator.result]\nkind = \"join\"\nleft = \"a\"\nright = \"b\"\non = [\"k\"]\nhow = \"{how}\"\n"
                ),
                sql: format!(
                    "SELECT {}, a.v, b.w FROM (SELECT lk AS k, lv AS v FROM l) a {} JOIN (SELECT rk AS k, rs AS w FROM r) b ON a.k = b.k",
                    if how == "right" || how == "full" { "coalesce(a.k, b.k)" } else { "a.k" },
                    how.to_uppercase()
                ),
                ordered: 0,
                limit_ties: false,
            }
        }
        0 => {
            let (how, sql_how) = [("inner", "INNER"), ("left", "LEFT"), ("right", "RIGHT"), ("full", "FULL")]
                [rng.below(4) as usize];
            let algorithm = ["hash", "sort_merge"][rng.below(2) as usize];
            Case {
                operators: format!(
                    "[operator.result]\nkind = \"join\"\nleft = \"l\"\nright = \"r\"\nleft_on = [\"lk\"]\nright_on = [\"rk\"]\nhow = \"{how}\"\nalgorithm = \"{algorithm}\"\n"
                ),
                sql: format!("SELECT * FROM l {sql_how} JOIN r ON l.lk = r.rk"),
                ordered: 0,
                limit_ties: false,
            }
        }
        1 => Case {
            operators: "[operator.result]\nkind = \"group_by\"\ninput = \"l\"\nkeys = [\"lk\"]\naggregate = { n = \"count()\", c = \"count(lv)\", s = \"sum(lv)\", lo = \"min(lv)\", hi = \"max(lv)\", smin = \"min(ls)\", smax = \"max(ls)\", m = \"mean(lf)\", md = \"median(lf)\", u = \"nunique(lv)\" }\n".into(),
            sql: "SELECT lk, count(*), count(lv), sum(lv), min(lv), max(lv), min(ls), max(ls), avg(lf), median(lf), count(DISTINCT lv) FROM l GROUP BY lk".into(),
            ordered: 0,
            limit_ties: false,
        },
        2 => Case {
            operators: "[operator.result]\nkind = \"group_by\"\ninput = \"l\"\nkeys = []\naggregate = { n = \"count()\", s = \"sum(lv)\", lo = \"min(lk)\", hi = \"max(ls)\", m = \"mean(lf)\" }\n".into(),
            sql: "SELECT count(*), sum(lv), min(lk), max(ls), avg(lf) FROM l".into(),
            ordered: 0,
            limit_ties: false,
        },
        3 => Case {
            operators: "[operator.keys]\nkind = \"project\"\ninput = \"l\"\ncolumns = { k = \"lk\" }\n\n[operator.result]\nkind = \"distinct\"\ninput = \"keys\"\n".into(),
            sql: "SELECT DISTINCT lk FROM l".into(),
            ordered: 0,
            limit_ties: false,
        },
        4 => {
            let (kind, extra, sql_op) = [
                ("intersect", "", "INTERSECT"),
                ("subtract", "", "EXCEPT"),
                ("union", "", "UNION ALL"),
                ("union", "distinct = true\n", "UNION"),
            ][rng.below(4) as usize];
            Case {
                operators: format!(
                    "[operator.a]\nkind = \"project\"\ninput = \"l\"\ncolumns = {{ k = \"{}\" }}\n\n[operator.b]\nkind = \"project\"\ninput = \"r\"\ncolumns = {{ k = \"{}\" }}\n\n[operator.result]\nkind = \"{kind}\"\ninputs = [\"a\", \"b\"]\n{extra}",
                    common_key("lk", left, right),
                    common_key("rk", left, right),
                ),
                sql: format!("SELECT lk FROM l {sql_op} SELECT rk FROM r"),
                ordered: 0,
                limit_ties: false,
            }
        }
        5 => {
            let (p, sp) = predicate(rng);
            Case {
                operators: format!(
                    "[operator.kept]\nkind = \"filter\"\ninput = \"l\"\nwhere = \"{p}\"\n\n[operator.result]\nkind = \"project\"\ninput = \"kept\"\ncolumns = {{ k = \"lk\", x = \"lv * 2 + 1\", y = \"upper(ls)\", z = \"case when lv > 0 then 'p' when lv < 0 then 'n' end\", w = \"abs(lv)\" }}\n"
                ),
                sql: format!(
                    "SELECT lk, lv * 2 + 1, upper(ls), CASE WHEN lv > 0 THEN 'p' WHEN lv < 0 THEN 'n' END, abs(lv) FROM l WHERE {sp}"
                ),
                ordered: 0,
                limit_ties: false,
            }
        }
        _ => {
            let desc = rng.below(2) == 0;
            let nulls_first = rng.below(2) == 0;
            let n = 1 + rng.below(30);
            let offset = if rng.below(2) == 0 { 0 } else { rng.below(200) };
            let dir = if desc { "desc" } else { "asc" };
            let nulls = if nulls_first { "first" } else { "last" };
            Case {
                operators: format!(
                    "[operator.sorted]\nkind = \"sort\"\ninput = \"l\"\nby = [\"lk {dir} nulls {nulls}\"]\n\n[operator.result]\n{}\ninput = \"sorted\"\nrows = {n}\n",
                    if offset == 0 { "kind = \"head\"".to_string() } else { format!("kind = \"slice\"\noffset = {offset}") }
                ),
                sql: format!(
                    "SELECT * FROM l ORDER BY lk {} NULLS {} LIMIT {n} OFFSET {offset}",
                    dir.to_uppercase(),
                    nulls.to_uppercase()
                ),
                ordered: 1,
                limit_ties: true,
            }
        }
    }
}

fn duckdb_available() -> bool {
    Command::new("python3").args(["-c", "import duckdb, pyarrow"]).output().is_ok_and(|o| o.status.success())
}

#[test]
fn updraft_agrees_with_duckdb_on_random_tables_and_pipelines() {
    if !duckdb_available() {
        assert!(
            std::env::var("UPDRAFT_REQUIRE_DUCKDB").is_err(),
            "UPDRAFT_REQUIRE_DUCKDB is set but Python cannot import duckdb and pyarrow (pip install duckdb pyarrow)"
        );
        eprintln!("skipped: Python's duckdb and pyarrow are not installed (pip install duckdb pyarrow)");
        return;
    }
    let cases: u64 = std::env::var("UPDRAFT_DIFF_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(250);
    let first: u64 = std::env::var("UPDRAFT_DIFF_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let root = tempfile::tempdir().expect("tmp");
    let mut manifest = Vec::new();
    let mut pipelines = Vec::new();
    let mut failures = String::new();
    for seed in first..first + cases {
        let mut rng = TestRng(mix64(seed));
        let dir = root.path().join(format!("case-{seed}"));
        std::fs::create_dir_all(dir.join("data")).expect("mkdir");
        let key = KEY_TYPES[rng.below(KEY_TYPES.len() as u64) as usize];
        // The right key may be another integer type, or plain strings against a dictionary.
        let right_key = match (key, rng.below(3)) {
            (KeyType::Int64 | KeyType::Int32 | KeyType::UInt64, 0) => KeyType::UInt64,
            (KeyType::Int64 | KeyType::Int32 | KeyType::UInt64, 1) => KeyType::Int32,
            (KeyType::Dictionary, 0) => KeyType::Utf8,
            (KeyType::Utf8, 0) => KeyType::Dictionary,
            _ => key,
        };
        let rows = |rng: &mut TestRng| if rng.below(12) == 0 { 0 } else { 1 + rng.below(400) as usize };
        let distinct = 1 + rng.below(60);
        let (lrows, rrows) = (rows(&mut rng), rows(&mut rng));
        write_table(&dir, "l", key, lrows, distinct, &mut rng);
        write_table(&dir, "r", right_key, rrows, distinct, &mut rng);
        let case = random_case(&mut rng, key, right_key);
        let workers = 1 + rng.below(4) as u32;
        let batch_rows = 1 + rng.below(300);
        let pipeline = format!(
            "[runtime]\nbatch_rows = {batch_rows}\n\n[source.l]\nkind = \"parquet\"\npath = \"data/l-*.parquet\"\n\n[source.r]\nkind = \"parquet\"\npath = \"data/r-*.parquet\"\n\n{}\n[sink.out]\nkind = \"parquet\"\ninput = \"result\"\npath = \"out/part-{{rank}}.parquet\"\n",
            case.operators
        );
        let what = format!(
            "seed {seed}: {key:?} / {right_key:?} keys, {lrows} x {rrows} rows, {workers} workers\n{pipeline}\n-- {}",
            case.sql
        );
        let (out, _) = run_cluster(&dir, &pipeline, workers);
        if !out.status.success() {
            let _ = writeln!(failures, "{what}\nupdraft failed: {}", String::from_utf8_lossy(&out.stderr));
            continue;
        }
        manifest.push(serde_json::json!({
            "id": seed, "dir": dir, "sql": case.sql, "ordered": case.ordered, "limit_ties": case.limit_ties,
        }));
        pipelines.push((seed, what));
    }
    let manifest_path = root.path().join("cases.json");
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).expect("json")).expect("manifest");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential.py");
    let out = Command::new("python3").arg(&script).arg(&manifest_path).output().expect("python3");
    assert!(out.status.success(), "differential.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut checked = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let r: serde_json::Value = serde_json::from_str(line).expect("result line");
        checked += 1;
        if r["ok"] != true {
            let seed = r["id"].as_u64().expect("id");
            let what = pipelines.iter().find(|(s, _)| *s == seed).map_or("", |(_, w)| w.as_str());
            let _ = writeln!(failures, "{what}\nmismatch: {}\n", r["detail"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(checked, manifest.len(), "every case compared");
    assert!(
        failures.is_empty(),
        "updraft and DuckDB disagree (rerun one with UPDRAFT_DIFF_SEED=<seed> UPDRAFT_DIFF_CASES=1):\n{failures}"
    );
    eprintln!("{checked} cases from seed {first} agree with DuckDB");
}
