//! Faults contained and survived: injected panics, errors, lost and damaged links, crashed and
//! stopped workers (`UPDRAFT_FAULT`), a killed launcher, retries, and inputs that used to crash
//! a worker. Every failure must end every process promptly, name its cause, and commit nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const JOIN: &str = r#"
[runtime]
batch_rows = 1000
peer_timeout = "3s"
heartbeat = "250ms"

[source.left]
kind = "generate"
rows = 20000
seed = 1

[source.right]
kind = "generate"
rows = 20000
seed = 2

[operator.joined]
kind = "join"
left = "left"
right = "right"
on = ["key"]

[sink.parts]
kind = "parquet"
input = "joined"
path = "out/part-{rank}.parquet"

[sink.summary]
kind = "summary"
input = "joined"
"#;

fn run_with(
    dir: &std::path::Path,
    pipeline: &str,
    workers: u32,
    fault: Option<&str>,
    extra: &[&str],
) -> std::process::Output {
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, pipeline).expect("pipeline");
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir).args(["run", "--workers", &workers.to_string()]).args(extra).arg(&file);
    if let Some(f) = fault {
        cmd.env("UPDRAFT_FAULT", f);
    }
    cmd.output().expect("run")
}

#[test]
fn a_panicking_operator_on_one_rank_of_four_fails_every_rank_promptly_naming_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = Instant::now();
    let out = run_with(dir.path(), JOIN, 4, Some("rank=2,stage=joined,at=1,fault=panic"), &[]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let ranks: Vec<&str> = err.lines().filter(|l| l.starts_with("  rank ")).collect();
    assert_eq!(ranks.len(), 4, "{err}");
    for line in ranks {
        assert!(
            line.contains("operator `joined` failed on rank 2: panicked: injected panic")
                && line.ends_with("[Operator]"),
            "{line}"
        );
    }
    // Well within the peer deadline (3 s): a panic is a failure, not silence.
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(list_dir(&dir.path().join("out")).is_empty(), "nothing committed");
}

#[test]
fn fault_trials_end_as_expected() {
    // One trial of every kind (errors, panics, delays, cut, damaged and stalled links, exits,
    // short and long stops, a retried exit); `updraft bench faults --trials 120` runs many more.
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(bin())
        .current_dir(dir.path())
        .args(["bench", "faults", "--trials", "10", "--workers", "3", "--out", "results"])
        .output()
        .expect("bench faults");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for kind in [
        "Error",
        "Panic",
        "Delay",
        "DropLink",
        "CorruptFrame",
        "StallLink",
        "Exit",
        "StopShort",
        "StopLong",
        "ExitRetried",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(kind) && l.trim_end().ends_with("1/1")),
            "{kind}:\n{text}"
        );
    }
    let trials: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("results/faults.json")).expect("json"))
            .expect("json");
    assert_eq!(trials.as_array().map(Vec::len), Some(10));
}

#[test]
fn a_job_whose_worker_dies_once_completes_with_one_retry_and_one_copy_of_its_output() {
    let dir = tempfile::tempdir().expect("tmp");
    let clean = run_with(dir.path(), JOIN, 3, None, &["--report", "clean.json"]);
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));
    let want = std::fs::read(dir.path().join("clean.json")).expect("report");
    let want: serde_json::Value = serde_json::from_slice(&want).expect("json");
    std::fs::remove_dir_all(dir.path().join("out")).expect("rm");

    let fault = "rank=1,stage=joined.shuffle-left,at=2,fault=exit,attempt=1";
    let out = run_with(dir.path(), JOIN, 3, Some(fault), &["--retries", "1", "--report", "retried.json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("attempt 1 failed") && err.contains("2 attempts:"), "{err}");
    let got: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("retried.json")).expect("report"))
            .expect("json");
    assert_eq!(sink(&got, "summary"), sink(&want, "summary"), "the same result as a clean run");
    assert_eq!(list_dir(&dir.path().join("out")), vec!["part-0.parquet", "part-1.parquet", "part-2.parquet"]);
    let rows: usize = read_parquet_files(&dir.path().join("out"), "part-")
        .iter()
        .flat_map(|(_, b)| b)
        .map(arrow_array::RecordBatch::num_rows)
        .sum();
    assert_eq!(rows as u64, sink(&want, "summary").0, "every row once");

    // A failure a rerun cannot fix (an operator error on the data) is not retried.
    let out =
        run_with(dir.path(), JOIN, 3, Some("rank=0,stage=joined,at=1,fault=error"), &["--retries", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "the data's fault: {err}");
    assert!(!err.contains("running the job again"), "{err}");
}

#[test]
fn killing_the_launcher_stops_every_worker_within_a_second_and_commits_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let big = JOIN.replace("rows = 20000", "rows = 4000000");
    let file = dir.path().join("big.toml");
    std::fs::write(&file, big).expect("pipeline");
    let mut launcher = Command::new(bin())
        .current_dir(dir.path())
        .args(["run", "--workers", "3"])
        .arg(&file)
        .env("UPDRAFT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let stderr = launcher.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut pids: Vec<u32> = Vec::new();
    let mut running = 0;
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(list) = line.split("(pids ").nth(1) {
            pids =
                list.split(')').next().unwrap_or("").split(", ").map(|p| p.parse().expect("pid")).collect();
        }
        if line.contains("links up") {
            running += 1;
            if running == 3 {
                break;
            }
        }
    }
    assert_eq!(pids.len(), 3);
    std::thread::sleep(Duration::from_millis(300));
    launcher.kill().expect("SIGKILL the launcher");
    let killed = Instant::now();
    let _ = launcher.wait();
    let alive = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
    };
    while pids.iter().any(alive) {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "workers still running 1 s after the launcher died"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = list_dir(&dir.path().join("out"));
    assert!(left.is_empty(), "a job whose launcher died left {left:?}");
}

#[test]
fn inputs_that_used_to_crash_a_worker_are_refused_with_their_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let validate = |pipeline: &str| {
        let file = dir.path().join("p.toml");
        std::fs::write(&file, pipeline).expect("pipeline");
        Command::new(bin()).current_dir(dir.path()).arg("validate").arg(&file).output().expect("validate")
    };
    let with_filter = |cond: &str, runtime: &str| {
        format!(
            "[runtime]\n{runtime}\n[source.g]\nkind = \"generate\"\nrows = 100\n[operator.f]\nkind = \"filter\"\ninput = \"g\"\nwhere = {cond:?}\n[sink.s]\nkind = \"summary\"\ninput = \"f\"\n"
        )
    };
    let out = validate(&with_filter("key >= 0", "batch_rows = 9223372036854775807"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("runtime.batch_rows"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = validate(&with_filter(&format!("{}key{}", "(".repeat(7000), ")".repeat(7000)), ""));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("operator.f.where") && err.contains("nests more than 64 levels"), "{err}");
    // 4000 or-ed comparisons validate and run, and keep exactly the rows they name.
    let many = (0..4000).map(|i| format!("key == {}", i * 2)).collect::<Vec<_>>().join(" or ");
    let pipeline = format!(
        "[source.g]\nkind = \"generate\"\nrows = 5000\nunique_factor = 2.0\n[operator.f]\nkind = \"filter\"\ninput = \"g\"\nwhere = {many:?}\n[sink.s]\nkind = \"summary\"\ninput = \"f\"\n"
    );
    let (out, report) = run_cluster(dir.path(), &pipeline, 2);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want: u64 = generated_table(0, 5000, 2, 2.0)
        .iter()
        .filter(|r| matches!(r[0], V::I(Some(k)) if k < 8000 && k % 2 == 0))
        .count() as u64;
    assert_eq!(sink(&report.expect("report"), "s").0, want);
    // A plan of more stages than a worker may run, and one too large for the file limit.
    let chain = |n: usize| {
        let mut s = String::from("[source.g]\nkind = \"generate\"\nrows = 10\n");
        for i in 0..n {
            let input = if i == 0 { "g".to_string() } else { format!("f{}", i - 1) };
            s.push_str(&format!(
                "[operator.f{i}]\nkind = \"filter\"\ninput = \"{input}\"\nwhere = \"key >= 0\"\n"
            ));
        }
        s.push_str(&format!("[sink.s]\nkind = \"summary\"\ninput = \"f{}\"\n", n - 1));
        s
    };
    let out = validate(&chain(1001));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at most 1000 are allowed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.path().join("chain.toml");
    std::fs::write(&file, chain(100)).expect("pipeline");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n 256 && exec {} validate {}", bin(), file.display()))
        .output()
        .expect("sh");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("file descriptors") && err.contains("may open 256"), "{err}");
}

#[test]
fn a_closed_stdout_ends_updraft_quietly() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("p.toml");
    std::fs::write(&file, JOIN).expect("pipeline");
    let out = Command::new("sh")
        .current_dir(dir.path())
        .arg("-c")
        .arg(format!("{} run --workers 2 {} | head -1", bin(), file.display()))
        .output()
        .expect("sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn ranks_that_never_register_are_named_to_the_others_before_they_give_up() {
    let root = tempfile::tempdir().expect("tmp");
    let (_rdv, rdv) = local_rendezvous("never-registers-secret");
    let pipeline = root.path().join("p.toml");
    std::fs::write(
        &pipeline,
        "[runtime]\nrendezvous_timeout = \"3s\"\n[source.g]\nkind = \"generate\"\nrows = 10\n[sink.s]\nkind = \"summary\"\ninput = \"g\"\n",
    )
    .expect("pipeline");
    // Ranks 0..3 of a world of 4: rank 3 never comes.
    let t = Instant::now();
    let worker = move |rank: u32| {
        Command::new(bin())
            .args(["worker", "--json", "--bind", "127.0.0.1", "--rendezvous", &rdv, "--job", "short"])
            .args(["--rank", &rank.to_string(), "--world", "4", "--pipeline"])
            .arg(&pipeline)
            .env("UPDRAFT_SECRET", "never-registers-secret")
            .output()
            .expect("worker")
    };
    let handles: Vec<_> = (0..3)
        .map(|r| {
            let worker = worker.clone();
            std::thread::spawn(move || worker(r))
        })
        .collect();
    for h in handles {
        let out = h.join().expect("worker thread");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("rank 3 of job `short` never registered"), "{text}");
    }
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[test]
fn every_rank_names_the_root_cause_even_when_it_fails_before_the_others_start() {
    // The first rank to overflow may end before the others have agreed their inputs: they must
    // still hear its abort (before its link closes), not only that its link closed.
    let dir = tempfile::tempdir().expect("tmp");
    let pipeline = "[source.a]\nkind = \"generate\"\nrows = 100\n\
        [operator.big]\nkind = \"project\"\ninput = \"a\"\ncolumns = { one = \"1\", big = \"9223372036854775807 - key % 2\" }\n\
        [operator.total]\nkind = \"group_by\"\ninput = \"big\"\nkeys = [\"one\"]\naggregate = { s = \"sum(big)\" }\n\
        [sink.s]\nkind = \"summary\"\ninput = \"total\"\n";
    for _ in 0..8 {
        let out = run_with(dir.path(), pipeline, 4, None, &[]);
        assert_eq!(out.status.code(), Some(2), "an overflow is the data's fault");
        let err = String::from_utf8_lossy(&out.stderr);
        for line in err.lines().filter(|l| l.starts_with("  rank ")) {
            assert!(line.contains("integer sum overflows int64") && line.ends_with("[Data]"), "{line}");
        }
    }
}
