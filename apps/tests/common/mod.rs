//! Test helpers: write inputs with Arrow directly, run the real `updraft` binary, read its
//! report and output files, and compute joins and checksums independently of the code under
//! test (plain Rust values, the checksum specification re-implemented here).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::DataType;

/// A value in a test table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum V {
    I(Option<i64>),
    S(Option<String>),
}

pub type Row = Vec<V>;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_updraft")
}

/// Runs `updraft run PIPELINE --workers N --report R --quiet`; returns the process output and
/// the parsed report (when written).
pub fn run_cluster(dir: &Path, pipeline: &str, workers: u32) -> (Output, Option<serde_json::Value>) {
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, pipeline).expect("write pipeline");
    let report = dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let out = Command::new(bin())
        .current_dir(dir)
        .args(["run", "--quiet", "--workers", &workers.to_string(), "--report"])
        .arg(&report)
        .arg(&file)
        .output()
        .expect("run updraft");
    let parsed = std::fs::read(&report).ok().map(|b| serde_json::from_slice(&b).expect("report is JSON"));
    (out, parsed)
}

/// Writes `pipeline` to `dir/file` and runs `updraft validate` on it in `dir`.
pub fn validate_pipeline(dir: &Path, file: &str, pipeline: &str) -> Output {
    std::fs::write(dir.join(file), pipeline).expect("write pipeline");
    Command::new(bin()).current_dir(dir).arg("validate").arg(file).output().expect("run updraft validate")
}

/// The sink named `name` in a job report: (rows, row checksum, column checksums).
pub fn sink(report: &serde_json::Value, name: &str) -> (u64, u64, Vec<(String, u64)>) {
    let s =
        report["sinks"].as_array().expect("sinks").iter().find(|s| s["name"] == name).expect("sink present");
    let sum = &s["summary"];
    let cols = sum["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| (c["name"].as_str().expect("name").to_string(), c["checksum"].as_u64().expect("checksum")))
        .collect();
    (sum["rows"].as_u64().expect("rows"), sum["row_checksum"].as_u64().expect("row checksum"), cols)
}

pub fn int_col(v: &[Option<i64>]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}

pub fn str_col(v: &[Option<String>]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

/// A batch from rows, with column names and types taken from the first row's values.
pub fn batch(names: &[&str], types: &[DataType], rows: &[Row]) -> RecordBatch {
    let cols: Vec<(&str, ArrayRef)> = names
        .iter()
        .enumerate()
        .map(|(c, n)| {
            let arr: ArrayRef = match types[c] {
                DataType::Int64 => int_col(
                    &rows
                        .iter()
                        .map(|r| match &r[c] {
                            V::I(x) => *x,
                            V::S(_) => None,
                        })
                        .collect::<Vec<_>>(),
                ),
                DataType::Utf8 => str_col(
                    &rows
                        .iter()
                        .map(|r| match &r[c] {
                            V::S(x) => x.clone(),
                            V::I(_) => None,
                        })
                        .collect::<Vec<_>>(),
                ),
                ref t => panic!("unsupported test type {t}"),
            };
            (*n, arr)
        })
        .collect();
    RecordBatch::try_from_iter(cols).expect("batch")
}

pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    let mut w =
        parquet::arrow::ArrowWriter::try_new(File::create(path).expect("create"), batch.schema(), None)
            .expect("writer");
    w.write(batch).expect("write");
    w.close().expect("close");
}

/// Every row of every Parquet file matching `dir/prefix*`.
pub fn read_parquet_rows(dir: &Path, prefix: &str) -> (Vec<String>, Vec<Row>) {
    let mut names = Vec::new();
    let mut rows = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("output dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .collect();
    files.sort();
    for f in files {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            File::open(&f).expect("open"),
        )
        .expect("parquet")
        .build()
        .expect("reader");
        for b in reader {
            let b = b.expect("batch");
            names = b.schema().fields().iter().map(|f| f.name().clone()).collect();
            for i in 0..b.num_rows() {
                rows.push(b.columns().iter().map(|c| value(c, i)).collect());
            }
        }
    }
    (names, rows)
}

fn value(c: &ArrayRef, i: usize) -> V {
    match c.data_type() {
        DataType::Int64 => V::I(c.is_valid(i).then(|| c.as_primitive::<Int64Type>().value(i))),
        DataType::Int32 => V::I(c.is_valid(i).then(|| i64::from(c.as_primitive::<Int32Type>().value(i)))),
        DataType::Utf8 => V::S(c.is_valid(i).then(|| c.as_string::<i32>().value(i).to_string())),
        t => panic!("unsupported output type {t}"),
    }
}

/// Naive inner join: every pair of rows whose key columns are all non-null and equal. Output:
/// left row, then the right row without the key columns at `drop_right`.
pub fn naive_join(left: &[Row], right: &[Row], lk: &[usize], rk: &[usize], drop_right: &[usize]) -> Vec<Row> {
    let key = |r: &Row, k: &[usize]| -> Option<Vec<V>> {
        let vals: Vec<V> = k.iter().map(|&i| r[i].clone()).collect();
        let null = vals.iter().any(|v| matches!(v, V::I(None) | V::S(None)));
        (!null).then_some(vals)
    };
    let mut index: HashMap<Vec<V>, Vec<&Row>> = HashMap::new();
    for r in right {
        if let Some(k) = key(r, rk) {
            index.entry(k).or_default().push(r);
        }
    }
    let mut out = Vec::new();
    for l in left {
        let Some(k) = key(l, lk) else { continue };
        for r in index.get(&k).into_iter().flatten() {
            let mut row = l.clone();
            row.extend(r.iter().enumerate().filter(|(i, _)| !drop_right.contains(i)).map(|(_, v)| v.clone()));
            out.push(row);
        }
    }
    out
}

/// Naive outer join. `keep` = (left rows without a match, right rows without a match). Missing
/// values are nulls shaped like `left_nulls` / `right_nulls`; the output key columns (the left
/// ones at `lk`) take the right row's key when there is no left row.
pub fn naive_outer_join(
    left: &[Row],
    right: &[Row],
    lk: &[usize],
    rk: &[usize],
    drop_right: &[usize],
    keep: (bool, bool),
    (left_nulls, right_nulls): (&Row, &Row),
) -> Vec<Row> {
    let null = |r: &Row, k: &[usize]| k.iter().any(|&i| matches!(r[i], V::I(None) | V::S(None)));
    let right_part = |r: &Row| -> Vec<V> {
        r.iter().enumerate().filter(|(i, _)| !drop_right.contains(i)).map(|(_, v)| v.clone()).collect()
    };
    let mut out = Vec::new();
    let mut used = vec![false; right.len()];
    for l in left {
        let mut any = false;
        for (j, r) in right.iter().enumerate() {
            if !null(l, lk) && !null(r, rk) && lk.iter().zip(rk).all(|(a, b)| l[*a] == r[*b]) {
                let mut row = l.clone();
                row.extend(right_part(r));
                out.push(row);
                used[j] = true;
                any = true;
            }
        }
        if !any && keep.0 {
            let mut row = l.clone();
            row.extend(right_part(right_nulls));
            out.push(row);
        }
    }
    if keep.1 {
        for (j, r) in right.iter().enumerate().filter(|(j, _)| !used[*j]) {
            let _ = j;
            let mut row = left_nulls.clone();
            for (a, b) in lk.iter().zip(rk) {
                if drop_right.contains(b) {
                    row[*a] = r[*b].clone();
                }
            }
            row.extend(right_part(r));
            out.push(row);
        }
    }
    out
}

// --- the checksum specification, written out again ---

pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

const NULL: u64 = 0x9e37_79b9_7f4a_7c15;

fn vhash(v: &V) -> u64 {
    match v {
        V::I(Some(x)) => mix64(*x as u64),
        V::S(Some(s)) => mix64(fnv1a(s.as_bytes())),
        V::I(None) | V::S(None) => NULL,
    }
}

/// (rows, row checksum, column checksums) of a table.
pub fn checksum(rows: &[Row]) -> (u64, u64, Vec<u64>) {
    let width = rows.first().map_or(0, Vec::len);
    let mut cols = vec![0u64; width];
    let mut total = 0u64;
    for r in rows {
        let mut h = 0u64;
        for (c, v) in r.iter().enumerate() {
            let x = vhash(v);
            cols[c] = cols[c].wrapping_add(x);
            h = mix64(h ^ x);
        }
        total = total.wrapping_add(h);
    }
    (rows.len() as u64, total, cols)
}

/// A small deterministic generator for test data (SplitMix64), independent of the code under test.
pub struct TestRng(pub u64);

impl TestRng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The generated benchmark table of all ranks, computed here from its specification:
/// Xoshiro256++ seeded with `mix64(seed ^ mix64(rank + 1))`, then per row a key uniform in
/// `[0, unique_factor × rows × world)` and a random int64 payload.
pub fn generated_table(seed: u64, rows: u64, world: u32, unique_factor: f64) -> Vec<Row> {
    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{RngExt, SeedableRng};
    let range = ((unique_factor * rows as f64 * f64::from(world)) as u64).max(1);
    let mut out = Vec::new();
    for rank in 0..world {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix64(seed ^ mix64(u64::from(rank) + 1)));
        for _ in 0..rows {
            let key = rng.random_range(0..range) as i64;
            out.push(vec![V::I(Some(key)), V::I(Some(rng.random::<i64>()))]);
        }
    }
    out
}

/// A pipeline joining two generated tables (seeds 1 and 2) into a summary sink named `summary`.
pub fn generated_join_pipeline(rows: u64, unique_factor: f64, runtime: &str) -> String {
    format!(
        r#"
[runtime]
{runtime}

[source.left]
kind = "generate"
rows = {rows}
unique_factor = {unique_factor}
seed = 1

[source.right]
kind = "generate"
rows = {rows}
unique_factor = {unique_factor}
seed = 2

[operator.joined]
kind = "join"
left = "left"
right = "right"
on = ["key"]

[sink.summary]
kind = "summary"
input = "joined"
"#
    )
}

/// `[runtime]` lines pointing at the relays the tests may use: a Redis server
/// (`UPDRAFT_TEST_REDIS`, a redis:// URL) and an S3 bucket (`UPDRAFT_TEST_S3_BUCKET`, with the
/// AWS environment). `None` for a relay that is not configured; CI configures both and sets
/// `UPDRAFT_REQUIRE_RELAYS=1`, which turns a missing one into a failure.
pub fn relay_settings(which: &str) -> Option<String> {
    let var = match which {
        "redis" => "UPDRAFT_TEST_REDIS",
        _ => "UPDRAFT_TEST_S3_BUCKET",
    };
    match std::env::var(var).ok().filter(|v| !v.is_empty()) {
        Some(v) if which == "redis" => Some(format!("redis = \"{v}\"")),
        Some(bucket) => Some(format!("s3_relay = \"s3://{bucket}/relay-tests/\"")),
        None => {
            assert!(
                std::env::var("UPDRAFT_REQUIRE_RELAYS").is_err(),
                "UPDRAFT_REQUIRE_RELAYS is set but {var} is not"
            );
            eprintln!("skipped: set {var} to test the {which} relay");
            None
        }
    }
}

/// Child processes killed (and reaped) when dropped, so a failing test leaves none behind.
pub struct Kill(pub Vec<std::process::Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A standalone `updraft rendezvous` on 127.0.0.1 (killed when dropped), and its address.
pub fn local_rendezvous(secret: &str) -> (Kill, String) {
    use std::io::BufRead;
    let mut child = Command::new(bin())
        .args(["rendezvous", "--listen", "127.0.0.1:0"])
        .env("UPDRAFT_SECRET", secret)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("rendezvous");
    let first = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines().next();
    let line = first.and_then(Result::ok).unwrap_or_default();
    let addr =
        line.strip_prefix("rendezvous listening on ").expect("the rendezvous prints its address").trim();
    (Kill(vec![child]), addr.to_string())
}

/// One `updraft worker` started by hand: where it runs, its pipeline file, and extra environment.
pub struct WorkerSpec {
    pub cwd: PathBuf,
    pub pipeline: PathBuf,
    pub env: Vec<(String, String)>,
}

/// What one worker did.
#[derive(Debug)]
pub struct WorkerRun {
    pub rank: u32,
    pub code: Option<i32>,
    pub json: Option<serde_json::Value>,
    pub stderr: String,
}

impl WorkerRun {
    /// The worker's error, or an empty string.
    pub fn error(&self) -> String {
        self.json.as_ref().and_then(|j| j["error"].as_str()).unwrap_or_default().to_string()
    }
}

/// Runs ranks `0..workers.len()` of job `job` as separate `updraft worker` processes (as on
/// separate hosts) against the rendezvous at `rdv`, and waits for all of them within `limit`.
pub fn run_workers(
    rdv: &str,
    job: &str,
    secret: &str,
    workers: &[WorkerSpec],
    limit: std::time::Duration,
) -> Vec<WorkerRun> {
    let logs = tempfile::tempdir().expect("tmp");
    let world = workers.len();
    let mut children = Vec::new();
    for (rank, w) in workers.iter().enumerate() {
        let out = File::create(logs.path().join(format!("{rank}.out"))).expect("log");
        let err = File::create(logs.path().join(format!("{rank}.err"))).expect("log");
        let child = Command::new(bin())
            .current_dir(&w.cwd)
            .args(["worker", "--json", "--bind", "127.0.0.1", "--rendezvous", rdv, "--job", job])
            .args(["--rank", &rank.to_string(), "--world", &world.to_string(), "--pipeline"])
            .arg(&w.pipeline)
            .env("UPDRAFT_SECRET", secret)
            .envs(w.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("worker");
        children.push(child);
    }
    let deadline = std::time::Instant::now() + limit;
    let mut guard = Kill(children);
    let mut codes = Vec::new();
    for (rank, child) in guard.0.iter_mut().enumerate() {
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "worker {rank} still running after {limit:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        codes.push(status.code());
    }
    (0..world)
        .map(|rank| {
            let stdout = std::fs::read_to_string(logs.path().join(format!("{rank}.out"))).unwrap_or_default();
            let stderr = std::fs::read_to_string(logs.path().join(format!("{rank}.err"))).unwrap_or_default();
            let json = stdout.lines().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
            WorkerRun { rank: rank as u32, code: codes[rank], json, stderr }
        })
        .collect()
}

/// Every batch of every Parquet file in `dir` whose name starts with `prefix`, by file name.
pub fn read_parquet_files(dir: &Path, prefix: &str) -> Vec<(String, Vec<RecordBatch>)> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.map(|e| e.expect("entry").path()).collect()).unwrap_or_default();
    files.retain(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)));
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                File::open(&f).expect("open"),
            )
            .expect("parquet")
            .build()
            .expect("reader");
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            (name, reader.map(|b| b.expect("batch")).collect())
        })
        .collect()
}

/// The names of the entries of `dir`, sorted (empty when it does not exist).
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.expect("entry").file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The Arrow schema of a Parquet file (also of one without rows).
pub fn parquet_schema(path: &Path) -> arrow_schema::SchemaRef {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(File::open(path).expect("open"))
        .expect("parquet")
        .schema()
        .clone()
}
