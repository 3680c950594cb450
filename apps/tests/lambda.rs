//! The Lambda backend end to end, locally: `updraft run --backend lambda` invokes functions
//! through a local implementation of the Invoke API (`scripts/lambda_emulator.py`),
//! each function is the `updraft` binary started as `bootstrap` against a local Runtime API,
//! the functions punch links to each other through a rendezvous on loopback and join tables
//! read from, and written to, the local S3-compatible server. Needs `UPDRAFT_TEST_S3_BUCKET`
//! and the AWS environment (CI sets them and `UPDRAFT_REQUIRE_S3=1`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use arrow_schema::DataType;
use common::*;
use updraft_operators::storage::{s3_list, s3_put};

const SECRET: &str = "lambda-test-secret";

fn bucket() -> Option<String> {
    match std::env::var("UPDRAFT_TEST_S3_BUCKET") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            assert!(std::env::var("UPDRAFT_REQUIRE_S3").is_err(), "UPDRAFT_REQUIRE_S3 is set but no bucket");
            eprintln!("skipped: set UPDRAFT_TEST_S3_BUCKET and the AWS environment");
            None
        }
    }
}

/// Starts `cmd`, returns it and the first stdout line that starts with `prefix` (rest of line).
fn start(mut cmd: Command, prefix: &str) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).stdin(Stdio::piped()).spawn().expect("start");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let line = loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with(prefix) => break l[prefix.len()..].trim().to_string(),
            Some(Ok(_)) => continue,
            _ => panic!("{prefix} never printed"),
        }
    };
    (child, line)
}

/// The rendezvous and the Lambda emulator with functions of `timeout` seconds.
fn services(dir: &Path, timeout: u32) -> (Kill, String, String) {
    let bootstrap = dir.join("bootstrap");
    std::os::unix::fs::symlink(bin(), &bootstrap).expect("symlink bootstrap");
    let mut rdv = Command::new(bin());
    rdv.args(["rendezvous", "--listen", "127.0.0.1:0"]).env("UPDRAFT_SECRET", SECRET).stderr(Stdio::null());
    let (rdv, rdv_addr) = start(rdv, "rendezvous listening on ");
    let emulator = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/lambda_emulator.py"));
    let mut emu = Command::new("python3");
    emu.arg(emulator)
        .arg("--handler")
        .arg(&bootstrap)
        .args(["--memory", "1024", "--timeout", &timeout.to_string()])
        .env("UPDRAFT_SECRET", SECRET);
    let (emu, invoke) = start(emu, "invoke=");
    (Kill(vec![rdv, emu]), rdv_addr, format!("http://{invoke}"))
}

fn drive(dir: &Path, pipeline: &str, invoke: &str, rdv: &str) -> std::process::Output {
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, pipeline).expect("pipeline");
    Command::new(bin())
        .current_dir(dir)
        .args(["run", "--backend", "lambda", "--function", "updraft-worker", "--workers", "4"])
        .args(["--rendezvous", rdv, "--report", "results.json"])
        .arg(&file)
        .env("AWS_ENDPOINT_URL_LAMBDA", invoke)
        .output()
        .expect("driver")
}

#[test]
fn a_join_on_four_functions_through_the_local_lambda_apis() {
    let Some(bucket) = bucket() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let (_services, rdv, invoke) = services(dir.path(), 120);
    let prefix = format!("lambda-test-{}", std::process::id());
    let mut rng = TestRng(77);
    let table = |rng: &mut TestRng, n: usize, base: i64| -> Vec<Row> {
        (0..n)
            .map(|i| {
                let key = if rng.below(12) == 0 { V::I(None) } else { V::I(Some(rng.below(300) as i64)) };
                vec![key, V::I(Some(base + i as i64))]
            })
            .collect()
    };
    let (left, right) = (table(&mut rng, 2000, 0), table(&mut rng, 1500, 100_000));
    let types = [DataType::Int64, DataType::Int64];
    for (name, rows, col) in [("left", &left, "lv"), ("right", &right, "rv")] {
        for part in 0..3 {
            let chunk: Vec<Row> = rows.iter().skip(part * 700).take(700).cloned().collect();
            let mut buf = Vec::new();
            let b = batch(&["key", col], &types, &chunk);
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, b.schema(), None).expect("writer");
            w.write(&b).expect("write");
            w.close().expect("close");
            s3_put(&bucket, &format!("{prefix}/{name}/part-{part}.parquet"), buf).expect("upload");
        }
    }
    let pipeline = format!(
        r#"
[job]
name = "lambda-join"

[source.left]
kind = "parquet"
path = "s3://{bucket}/{prefix}/left/*.parquet"

[source.right]
kind = "parquet"
path = "s3://{bucket}/{prefix}/right/*.parquet"

[operator.joined]
kind = "join"
left = "left"
right = "right"
on = ["key"]

[sink.summary]
kind = "summary"
input = "joined"

[sink.files]
kind = "parquet"
input = "joined"
path = "s3://{bucket}/{prefix}/out/joined-{{rank}}.parquet"
"#
    );
    let out = drive(dir.path(), &pipeline, &invoke, &rdv);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("job `lambda-join` on 4 workers: ok"), "{stdout}");
    assert!(stdout.contains("cost as if on Lambda: $") && stdout.contains("always-on VMs"), "{stdout}");
    assert!(stdout.contains("functions: 4 invoked") && stdout.contains("at 1024 MB"), "{stdout}");
    // Rank 0 lists both globs once (2 listings); every input object's footer is read by the rank
    // that reads it (a HEAD and a ranged GET) and then the object (6 x 3 GET); 4 outputs are
    // written under temporary names and copied to their final ones (8), and the stale-part
    // check lists the output prefix once.
    assert!(stdout.contains("for 11 PUT/LIST and 18 GET"), "{stdout}");
    eprintln!("{stdout}");

    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("results.json")).expect("results"))
            .expect("json");
    let results = results.as_array().expect("one result per function");
    assert_eq!(results.len(), 4);
    let job =
        results.iter().find_map(|r| r.get("job").filter(|j| !j.is_null())).expect("rank 0's job report");
    let expected = naive_join(&left, &right, &[0], &[0], &[0]);
    let (n, sum, _) = checksum(&expected);
    assert_eq!((sink(job, "summary").0, sink(job, "summary").1), (n, sum), "rows and checksum");
    for r in results {
        assert!(r["billed_ms_estimate"].as_u64() > Some(0));
        assert_eq!(r["memory_mb"], 1024);
        assert!(r["bytes_sent_by_channel"]["direct"].as_u64() > Some(0), "{r}");
    }
    let written = s3_list(&bucket, &format!("{prefix}/out/")).expect("list");
    assert_eq!(written.len(), 4, "one output object per function: {written:?}");
}

#[test]
fn a_failing_function_fails_the_job_with_its_error_and_short_invocations_fail_early() {
    let Some(bucket) = bucket() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let (_services, rdv, invoke) = services(dir.path(), 120);
    // A missing input is found by the driver before it invokes anything.
    let pipeline = format!(
        "[source.a]\nkind = \"parquet\"\npath = \"s3://{bucket}/no-such-prefix/a-{{rank}}.parquet\"\n\
         [sink.s]\nkind = \"summary\"\ninput = \"a\"\n"
    );
    let out = drive(dir.path(), &pipeline, &invoke, &rdv);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("source.a") && err.contains("no-such-prefix/a-0.parquet"), "{err}");
    // Local paths are refused before anything is invoked, each at its key path.
    std::fs::write(dir.path().join("here.csv"), "k\n1\n").expect("csv");
    let pipeline = "[source.a]\nkind = \"csv\"\npath = \"here.csv\"\n\
         [sink.s]\nkind = \"parquet\"\ninput = \"a\"\npath = \"out/p-{rank}.parquet\"\n";
    let out = drive(dir.path(), pipeline, &invoke, &rdv);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for (at, path) in [("source.a", "here.csv"), ("sink.s.path", "out/p-{rank}.parquet")] {
        assert!(err.contains(at) && err.contains(&format!("`{path}` is a local path")), "{err}");
    }
    assert!(!err.contains("failed on"), "nothing was invoked: {err}");
    // A function that fails at run time (an int64 sum overflows) fails the job with its error.
    let pipeline = "[source.a]\nkind = \"generate\"\nrows = 100\n\
         [operator.big]\nkind = \"project\"\ninput = \"a\"\ncolumns = { one = \"1\", big = \"9223372036854775807 - key % 2\" }\n\
         [operator.total]\nkind = \"group_by\"\ninput = \"big\"\nkeys = [\"one\"]\naggregate = { s = \"sum(big)\" }\n\
         [sink.s]\nkind = \"summary\"\ninput = \"total\"\n";
    let out = drive(dir.path(), pipeline, &invoke, &rdv);
    assert_eq!(out.status.code(), Some(2), "the data's fault");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed on") && err.contains("overflow"), "{err}");

    // Functions of 4 seconds cannot fit a 10 s mesh deadline: they refuse at once, saying so.
    let short = tempfile::tempdir().expect("tmp");
    let (_services, rdv, invoke) = services(short.path(), 4);
    let pipeline =
        "[source.a]\nkind = \"generate\"\nrows = 10\n[sink.s]\nkind = \"summary\"\ninput = \"a\"\n";
    let t = std::time::Instant::now();
    let out = drive(short.path(), pipeline, &invoke, &rdv);
    assert_eq!(out.status.code(), Some(3), "a time limit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("of the invocation left") && err.contains("raise the function timeout"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(4), "refused early: {:?}", t.elapsed());
}

/// `GET /emulator/functions` of the emulator at `invoke` (`http://HOST:PORT`): the function
/// processes, as (pid, invocations served).
fn functions(invoke: &str) -> Vec<(u32, u64)> {
    use std::io::{Read, Write};
    let addr = invoke.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("emulator");
    write!(s, "GET /emulator/functions HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("answer");
    let body = text.split("\r\n\r\n").nth(1).expect("body");
    let list: serde_json::Value = serde_json::from_str(body).expect("json");
    list.as_array()
        .expect("list")
        .iter()
        .map(|f| (f["pid"].as_u64().expect("pid") as u32, f["invocations"].as_u64().expect("count")))
        .collect()
}

/// (threads, open files, resident KiB) of a process.
type Usage = (u64, u64, u64);

/// The [`Usage`] of process `pid`.
fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("field")
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fds").count() as u64;
    (field("Threads:"), fds, field("VmRSS:"))
}

#[test]
fn twenty_jobs_in_a_row_on_four_warm_functions() {
    let Some(_bucket) = bucket() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let (_services, rdv, invoke) = services(dir.path(), 60);
    let (rows, uf) = (1500u64, 0.9);
    let good = generated_join_pipeline(rows, uf, "");
    let expected =
        naive_join(&generated_table(1, rows, 4, uf), &generated_table(2, rows, 4, uf), &[0], &[0], &[0]);
    let (want_rows, want_sum, _) = checksum(&expected);
    // Fails on every function: an int64 sum overflows.
    let bad = "[source.a]\nkind = \"generate\"\nrows = 100\n\
               [operator.big]\nkind = \"project\"\ninput = \"a\"\ncolumns = { one = \"1\", big = \"9223372036854775807 - key % 2\" }\n\
               [operator.total]\nkind = \"group_by\"\ninput = \"big\"\nkeys = [\"one\"]\naggregate = { s = \"sum(big)\" }\n\
               [sink.s]\nkind = \"summary\"\ninput = \"total\"\n";
    let mut first: Option<Vec<(u32, Usage)>> = None;
    for job in 0..20 {
        let failing = job % 4 == 3;
        let out = drive(dir.path(), if failing { bad } else { &good }, &invoke, &rdv);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if failing {
            assert_eq!(out.status.code(), Some(2), "job {job}: {stdout}\n{stderr}");
            assert!(
                stderr.contains("UpdraftError.Data") && stderr.contains("overflow"),
                "job {job}: {stderr}"
            );
        } else {
            assert!(out.status.success(), "job {job}: {stdout}\n{stderr}");
            let results: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.path().join("results.json")).expect("results"))
                    .expect("json");
            let report = results
                .as_array()
                .expect("results")
                .iter()
                .find_map(|r| r.get("job").filter(|j| !j.is_null()))
                .expect("rank 0's report");
            let (n, sum, _) = sink(report, "summary");
            assert_eq!((n, sum), (want_rows, want_sum), "job {job}");
        }
        let procs = functions(&invoke);
        assert_eq!(procs.len(), 4, "job {job}: four warm processes serve every job: {procs:?}");
        assert!(
            procs.iter().all(|(_, n)| *n == job + 1),
            "job {job}: each process served every job: {procs:?}"
        );
        let now: Vec<(u32, Usage)> = procs.iter().map(|(pid, _)| (*pid, usage(*pid))).collect();
        match &first {
            None => first = Some(now),
            Some(first) => {
                for ((pid, (t0, f0, r0)), (pid1, (t, f, r))) in first.iter().zip(&now) {
                    assert_eq!(pid, pid1, "the same processes");
                    // Idle runtime threads come and go; nothing may pile up job after job.
                    assert!(t <= &(t0 + 4), "job {job}: pid {pid} has {t} threads, {t0} after the first job");
                    assert!(
                        f <= &(f0 + 4),
                        "job {job}: pid {pid} has {f} open files, {f0} after the first job"
                    );
                    assert!(
                        r <= &(r0 + 64 * 1024),
                        "job {job}: pid {pid} resident {r} KiB, {r0} after the first job"
                    );
                }
            }
        }
    }
}

/// The documented rehearsal, `scripts/lambda-local`, runs a pipeline through the same Invoke and
/// Runtime API path as the tests above and prints the job summary.
#[test]
fn the_lambda_rehearsal_script_runs_a_pipeline_locally() {
    let dir = tempfile::tempdir().expect("tmp");
    let pipeline = "[job]\nname = \"rehearsal\"\n\n[source.a]\nkind = \"generate\"\nrows = 1000\n\n[sink.s]\nkind = \"summary\"\ninput = \"a\"\n";
    std::fs::write(dir.path().join("p.toml"), pipeline).expect("write");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/lambda-local");
    let out = Command::new(script)
        .current_dir(dir.path())
        .args(["p.toml", "--workers", "3"])
        .env("UPDRAFT", bin())
        .output()
        .expect("lambda-local");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("job `rehearsal` on 3 workers: ok"), "{stdout}");
    assert!(stdout.contains("functions: 3 invoked"), "{stdout}");
    assert!(stdout.contains("sink s") && stdout.contains("rows         3000"), "{stdout}");
}
