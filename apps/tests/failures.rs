//! Failures end with clear errors and non-zero exits, never a hang: bad configs, missing
//! inputs, a worker killed in the middle of the shuffle.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn validate_reports_every_error_with_its_key_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        r#"
[runtime]
peer_timout = "5s"

[source.left]
kind = "generate"
rows = "many"

[operator.j]
kind = "join"
left = "left"
right = "nowhere"
on = ["key"]
how = "sideways"

[sink.s]
kind = "summary"
input = "j"
"#,
    )
    .expect("write");
    let out = Command::new(bin()).arg("validate").arg(&file).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "runtime.peer_timout",
        "unknown key `peer_timout`",
        "source.left.rows",
        "expected an integer, found a string",
        "operator.j.right",
        "input `nowhere` is not a source or operator",
        "operator.j.how",
        "4 errors",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }

    // `run` refuses the same file before starting any worker.
    let out = Command::new(bin()).args(["run", "--workers", "2"]).arg(&file).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("workers started"));
}

#[test]
fn validate_checks_columns_and_types_against_the_sources() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("b.csv"), "key,v\nx,1.5\n").expect("csv");
    let file = dir.path().join("types.toml");
    std::fs::write(
        &file,
        r#"
[source.a]
kind = "generate"
rows = 10

[source.b]
kind = "csv"
paths = ["b.csv"]

[operator.mixed_keys]
kind = "join"
left = "a"
right = "b"
on = ["key"]
algorithm = "sort_merge"

[operator.no_key]
kind = "join"
left = "a"
right = "a"
on = ["nokey"]

[operator.text_sum]
kind = "group_by"
input = "b"
keys = ["v"]
aggregate = { s = "sum(key)" }

[operator.compare_text]
kind = "filter"
input = "a"
where = "payload > 'x'"

[operator.not_bool]
kind = "filter"
input = "a"
where = "payload + 1"

[operator.sorted]
kind = "sort"
input = "a"
by = ["missing desc"]

[operator.both]
kind = "union"
inputs = ["a", "b"]

[operator.fine]
kind = "project"
input = "a"
columns = { k = "key", twice = "payload * 2" }

[operator.after_fine]
kind = "distinct"
input = "fine"
columns = ["payload"]

[sink.s]
kind = "summary"
input = "mixed_keys"
"#,
    )
    .expect("write");
    let out = Command::new(bin()).current_dir(dir.path()).arg("validate").arg(&file).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let expect = [
        ("operator.mixed_keys", "Int64 on the left but Utf8 on the right"),
        ("operator.no_key", "key column `nokey` is not in the input"),
        ("operator.text_sum", "s = sum(key) needs a numeric column, but `key` is Utf8"),
        ("operator.compare_text", "cannot combine Int64 with Utf8"),
        ("operator.not_bool", "a filter needs true/false values"),
        ("operator.sorted", "sort key column `missing` is not in the input"),
        ("operator.both", "input 2 has columns (key: Utf8, v: Float64)"),
        // A projection's output is what later stages see: `payload` is gone.
        ("operator.after_fine", "key column `payload` is not in the input (columns: k, twice)"),
    ];
    for (path, what) in expect {
        assert!(
            err.lines().any(|l| l.contains(&format!("- {path} (line ")) && l.contains(what)),
            "{path}: {what}\n{err}"
        );
    }
    assert!(!err.contains("operator.fine "), "a correct stage is not reported:\n{err}");
    // `run` refuses the same file before starting any worker.
    let (out, _) = run_cluster(dir.path(), &std::fs::read_to_string(&file).expect("read"), 2);
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("workers started"));
}

#[test]
fn validate_prints_the_plan_of_a_good_pipeline() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/example-join.toml");
    let out = Command::new(bin()).args(["validate", example, "--workers", "4"]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("joined.shuffle-left [partition+shuffle] <- left"), "{text}");
    assert!(
        text.contains("joined [join] <- joined.shuffle-left (all ranks), joined.shuffle-right (all ranks)"),
        "{text}"
    );
}

#[test]
fn explain_lists_stages_and_the_edges_that_cross_ranks() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/example-join.toml");
    let out = Command::new(bin()).args(["explain", example, "--workers", "3"]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("job `example-join` on 3 workers: 7 stages per worker, 6 edges"), "{text}");
    assert!(text.contains("rows cross ranks on 2 edges"), "{text}");
    assert!(text.contains("joined.shuffle-left -> joined"), "{text}");
}

#[test]
fn a_missing_input_file_is_refused_before_anything_starts_naming_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let pipeline = r#"
[source.left]
kind = "parquet"
path = "does-not-exist-{rank}.parquet"

[source.right]
kind = "generate"
rows = 10

[operator.j]
kind = "join"
left = "left"
right = "right"
on = ["key"]

[sink.s]
kind = "summary"
input = "j"
"#;
    let (out, report) = run_cluster(dir.path(), pipeline, 3);
    // The launcher agrees the inputs as the job would, before starting any worker: exit 2.
    assert_eq!(out.status.code(), Some(2));
    assert!(report.is_none());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("source.left") && err.contains("does-not-exist-0.parquet"), "{err}");
    assert!(!err.contains("workers started"), "{err}");
}

#[test]
fn a_worker_killed_mid_shuffle_fails_every_other_worker_naming_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("big.toml");
    // Large enough to still be shuffling when rank 1 is killed right after its links are up.
    std::fs::write(
        &file,
        r#"
[runtime]
peer_timeout = "5s"
heartbeat = "250ms"

[source.left]
kind = "generate"
rows = 6_000_000

[source.right]
kind = "generate"
rows = 6_000_000

[operator.j]
kind = "join"
left = "left"
right = "right"
on = ["key"]

[sink.s]
kind = "summary"
input = "j"
"#,
    )
    .expect("write");
    let mut child = Command::new(bin())
        .args(["run", "--workers", "3"])
        .arg(&file)
        .env("UPDRAFT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pids: Vec<u32> = Vec::new();
    let mut log = Vec::new();
    let mut killed_at = None;
    while killed_at.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("launcher output before the deadline");
        if let Some(list) = line.split("(pids ").nth(1) {
            pids =
                list.split(')').next().unwrap_or("").split(", ").map(|p| p.parse().expect("pid")).collect();
        }
        if line.starts_with("[rank 1]") && line.contains("links up; job running") {
            assert_eq!(pids.len(), 3, "pids are printed before workers run");
            let status = Command::new("kill").args(["-9", &pids[1].to_string()]).status().expect("kill");
            assert!(status.success());
            killed_at = Some(Instant::now());
        }
        log.push(line);
    }
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "launcher did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = killed_at.map(|t| t.elapsed()).unwrap_or_default();
    reader.join().expect("reader");
    log.extend(rx.try_iter());
    let text = log.join("\n");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(took < Duration::from_secs(5 + 5), "failure took {took:?}, beyond the peer deadline:\n{text}");
    for rank in [0, 2] {
        let line = log
            .iter()
            .find(|l| l.starts_with(&format!("  rank {rank}: ")))
            .unwrap_or_else(|| panic!("no error for rank {rank}:\n{text}"));
        assert!(line.contains("rank 1"), "rank {rank}'s error does not name rank 1: {line}");
    }
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "worker {pid} is still running");
    }
}

#[test]
fn every_bundled_example_validates_and_runs() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples");
    let mut files: Vec<_> =
        std::fs::read_dir(dir).expect("examples").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(files.len() >= 4);
    for file in files {
        let work = tempfile::tempdir().expect("tmp");
        let report = work.path().join("r.json");
        let out = Command::new(bin())
            .current_dir(work.path())
            .args(["run", "--quiet", "--workers", "3", "--report"])
            .arg(&report)
            .arg(&file)
            .output()
            .expect("run");
        assert!(out.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
        let sinks = r["sinks"].as_array().expect("sinks");
        assert!(
            sinks.iter().all(|s| s["summary"]["rows"].as_u64() > Some(0)),
            "{}: a sink got no rows: {sinks:?}",
            file.display()
        );
    }
}

/// Runs a bundled example on `workers` local workers; returns its job report.
fn run_example(name: &str, workers: u32) -> serde_json::Value {
    let work = tempfile::tempdir().expect("tmp");
    let report = work.path().join("r.json");
    let file = format!("{}/../config/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(bin())
        .current_dir(work.path())
        .args(["run", "--quiet", "--workers", &workers.to_string(), "--report"])
        .arg(&report)
        .arg(file)
        .output()
        .expect("run");
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json")
}

#[test]
fn set_examples_are_consistent_with_each_other() {
    // With A, B the distinct keys: |A| = |A ∩ B| + |A ∖ B| and |A ∪ B| = |A ∖ B| + |B|.
    let r = run_example("set-ops.toml", 2);
    let rows = |name: &str| {
        r["sinks"]
            .as_array()
            .expect("sinks")
            .iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["summary"]["rows"].as_u64())
            .expect("sink")
    };
    let (both, only_a, either) = (rows("both_rows"), rows("only_a_rows"), rows("either_rows"));
    let (a, b) = (rows("a_rows"), rows("b_rows"));
    assert!(both > 0 && only_a > 0);
    assert_eq!(a, both + only_a, "|A| = |A ∩ B| + |A ∖ B|");
    assert_eq!(either, only_a + b, "|A ∪ B| = |A ∖ B| + |B|");
}

#[test]
fn the_sort_merge_example_agrees_with_the_hash_join() {
    let r = run_example("sort-merge-join.toml", 4);
    let (hash, merge, left) = (sink(&r, "hash_rows"), sink(&r, "merge_rows"), sink(&r, "left_rows"));
    assert!(hash.0 > 0);
    assert_eq!(hash, merge, "same rows, same checksums");
    // The left join keeps every inner row plus the unmatched left rows: strictly more here.
    assert!(left.0 > hash.0 && left.0 < hash.0 + 800_000, "{} vs {}", left.0, hash.0);
}
