//! Jobs whose inputs are three times `runtime.memory_limit`: a join and a sort complete with
//! the exact answer (computed here from the generators' specification), the worker's peak
//! resident set stays within the limit plus the stated overhead, and the spill directory is
//! empty afterwards, also when the job fails after spilling.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use common::{mix64, run_cluster, sink};

/// What the peak resident set of a worker may exceed its memory limit by (ARCHITECTURE.md,
/// "Memory"): the process itself, batches in flight, allocator slack.
const OVERHEAD: u64 = 160 << 20;

/// The limit: 64 MiB in release; 16 MiB in the debug run of the suite (the same test, a
/// quarter of the data, at debug speed).
fn limit() -> u64 {
    if cfg!(debug_assertions) { 16 << 20 } else { 64 << 20 }
}

/// Rows of a generated table (two int64 columns, 16 bytes a row) of three times the limit.
fn rows() -> u64 {
    3 * limit() / 16
}

/// The generated table of one rank, from its specification (see `common::generated_table`),
/// as (key, payload) pairs.
fn generated(seed: u64, rows: u64, unique_factor: f64) -> Vec<(i64, i64)> {
    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{RngExt, SeedableRng};
    let range = ((unique_factor * rows as f64) as u64).max(1);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix64(seed ^ mix64(1)));
    (0..rows).map(|_| (rng.random_range(0..range) as i64, rng.random::<i64>())).collect()
}

fn row_hash(values: &[i64]) -> u64 {
    values.iter().fold(0u64, |h, v| mix64(h ^ mix64(*v as u64)))
}

fn worker(report: &serde_json::Value) -> &serde_json::Value {
    &report["workers"][0]
}

fn spill_dir_is_empty(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true)
}

fn runtime(spill: &std::path::Path) -> String {
    format!("memory_limit = {}\nspill_dir = \"{}\"", limit(), spill.display())
}

fn check_bounded(report: &serde_json::Value) {
    let w = worker(report);
    let (rss, held, spilled) = (
        w["peak_rss_bytes"].as_u64().expect("rss"),
        w["memory_peak_bytes"].as_u64().expect("peak"),
        w["spilled_bytes"].as_u64().expect("spilled"),
    );
    assert!(spilled > limit(), "spilled {spilled} bytes");
    assert!(held <= limit() + (4 << 20), "operators held {held} bytes against a limit of {}", limit());
    if rss > 0 {
        assert!(rss <= limit() + OVERHEAD, "peak RSS {} MiB, limit {} MiB", rss >> 20, limit() >> 20);
    }
}

#[test]
fn a_join_of_inputs_three_times_the_limit_spills_and_is_exact() {
    let dir = tempfile::tempdir().expect("tmp");
    let spill = dir.path().join("spill");
    let n = rows();
    let pipeline = common::generated_join_pipeline(n, 0.9, &runtime(&spill));
    let (out, report) = run_cluster(dir.path(), &pipeline, 1);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = report.expect("report");
    // The join of the two tables, by sorting both on the key and walking them together.
    let mut left = generated(1, n, 0.9);
    let mut right = generated(2, n, 0.9);
    left.sort_unstable();
    right.sort_unstable();
    let (mut rows, mut sum, mut j) = (0u64, 0u64, 0usize);
    for (k, lp) in &left {
        while j < right.len() && right[j].0 < *k {
            j += 1;
        }
        let mut m = j;
        while m < right.len() && right[m].0 == *k {
            rows += 1;
            sum = sum.wrapping_add(row_hash(&[*k, *lp, right[m].1]));
            m += 1;
        }
    }
    let (got_rows, got_sum, _) = sink(&report, "summary");
    assert_eq!((got_rows, got_sum), (rows, sum));
    check_bounded(&report);
    assert!(spill_dir_is_empty(&spill), "spill files left in {}", spill.display());
}

#[test]
fn a_sort_of_three_times_the_limit_spills_and_is_in_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let spill = dir.path().join("spill");
    let n = rows();
    let pipeline = format!(
        r#"
[runtime]
{}

[source.t]
kind = "generate"
rows = {n}
unique_factor = 0.5
seed = 3

[operator.sorted]
kind = "sort"
input = "t"
by = ["key desc", "payload"]

[sink.out]
kind = "ipc"
input = "sorted"
path = "out/sorted-{{rank}}.arrow"
"#,
        runtime(&spill)
    );
    let (out, report) = run_cluster(dir.path(), &pipeline, 1);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = std::fs::File::open(dir.path().join("out/sorted-0.arrow")).expect("output");
    let mut got: Vec<(i64, i64)> = Vec::with_capacity(n as usize);
    for b in arrow_ipc::reader::FileReader::try_new(file, None).expect("ipc") {
        let b = b.expect("batch");
        let (k, p) = (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_primitive::<Int64Type>());
        got.extend(k.values().iter().zip(p.values()).map(|(k, p)| (*k, *p)));
    }
    let mut want = generated(3, n, 0.5);
    want.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert!(got == want, "{} rows out of order or wrong ({} expected)", got.len(), want.len());
    check_bounded(&report.expect("report"));
    assert!(spill_dir_is_empty(&spill));
}

#[test]
fn a_job_that_fails_after_spilling_leaves_no_spill_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let spill = dir.path().join("spill");
    // The sort spills its runs; the median after it keeps every value and cannot spill.
    let pipeline = format!(
        r#"
[runtime]
{}

[source.t]
kind = "generate"
rows = {}
unique_factor = 0.5
seed = 4

[operator.sorted]
kind = "sort"
input = "t"
by = ["key"]

[operator.med]
kind = "group_by"
input = "sorted"
keys = ["key"]
aggregate = {{ m = "median(payload)" }}

[sink.summary]
kind = "summary"
input = "med"
"#,
        runtime(&spill),
        rows()
    );
    let (out, _) = run_cluster(dir.path(), &pipeline, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("operator `med`") && stderr.contains("[ResourcesExhausted]"), "{stderr}");
    assert!(spill.is_dir(), "the sort spilled before the job failed");
    assert!(spill_dir_is_empty(&spill), "spill files left in {}", spill.display());
}
