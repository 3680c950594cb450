//! The command line as a user meets it: schemas and rows shown, `--quiet` as JSON, exit codes,
//! `cost` limits, and workers placed by a scheduler's environment (Slurm, Open MPI, PMI,
//! Kubernetes Indexed Jobs) instead of flags.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use common::*;

fn updraft(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin()).current_dir(dir).args(args).output().expect("run updraft")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string())
}

/// `data/a.parquet` (k int32, name), `data/b.parquet` (k int64, name, v): 3 and 4 rows.
fn two_files(dir: &Path) {
    std::fs::create_dir_all(dir.join("data")).expect("mkdir");
    let a = RecordBatch::try_from_iter(vec![
        ("k", Arc::new(Int32Array::from(vec![1, 2, 3])) as ArrayRef),
        ("name", Arc::new(StringArray::from(vec!["x", "y", "z"])) as ArrayRef),
    ])
    .expect("a");
    let b = RecordBatch::try_from_iter(vec![
        ("k", Arc::new(Int64Array::from(vec![4, 5, 6, 7])) as ArrayRef),
        ("name", Arc::new(StringArray::from(vec![Some("x"), None, Some("y"), Some("x")])) as ArrayRef),
        ("v", Arc::new(Int64Array::from(vec![10, 20, 30, 40])) as ArrayRef),
    ])
    .expect("b");
    write_parquet(&dir.join("data/a.parquet"), &a);
    write_parquet(&dir.join("data/b.parquet"), &b);
}

#[test]
fn schema_prints_each_file_and_the_schema_they_agree_on() {
    let dir = tempfile::tempdir().expect("tmp");
    two_files(dir.path());
    let out = updraft(dir.path(), &["schema", "data/"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("data/a.parquet: 3 rows, 2 columns"), "{stdout}");
    assert!(stdout.contains("data/b.parquet: 4 rows, 3 columns"), "{stdout}");
    assert!(stdout.contains("2 parquet files, 7 rows; as one source:"), "{stdout}");
    let columns: Vec<&str> = stdout.lines().skip_while(|l| !l.contains("as one source")).skip(1).collect();
    assert_eq!(columns, ["  k     int64", "  name  utf8", "  v     int64"], "{stdout}");
    // Files that cannot be one source, and files that are not there: bad input.
    std::fs::write(dir.path().join("data/c.csv"), "k,name\nabc,x\n").expect("csv");
    std::fs::write(dir.path().join("data/d.csv"), "k,name\n1.5,x\n").expect("csv");
    let out = updraft(dir.path(), &["schema", "data/*.csv"]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(text(&out).1.contains("cannot be one source"), "{:?}", text(&out));
    let out = updraft(dir.path(), &["schema", "data/nothing.parquet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("data/nothing.parquet"), "{:?}", text(&out));
}

const GROUPS: &str = r#"
[source.t]
kind = "parquet"
path = "data/*.parquet"
missing_columns = "null"

[operator.g]
kind = "group_by"
input = "t"
keys = ["name"]
aggregate = { n = "count()", total = "sum(v)", biggest = "max(k)" }

[operator.s]
kind = "sort"
input = "g"
by = ["name"]

[sink.out]
kind = "parquet"
input = "s"
path = "out/g-{rank}.parquet"
"#;

#[test]
fn validate_and_explain_show_every_stage_schema_and_each_rank_files() {
    let dir = tempfile::tempdir().expect("tmp");
    two_files(dir.path());
    let out = validate_pipeline(dir.path(), "g.toml", GROUPS);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let after = |stage: &str| -> Vec<String> {
        stdout
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(&format!("{stage} [")))
            .skip(1)
            .take_while(|l| l.starts_with("      "))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    // The source reads only what the group-by uses.
    assert_eq!(after("t"), ["k int64", "name utf8", "v int64"], "{stdout}");
    assert_eq!(after("g"), ["name utf8", "n int64", "total int64", "biggest int64"], "{stdout}");
    assert_eq!(after("out"), after("s"), "a sink shows what it writes");

    let out = updraft(dir.path(), &["explain", "g.toml", "--workers", "3"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("source `t` reads 2 files:"), "{stdout}");
    assert!(stdout.contains("rank 0: data/a.parquet\n"), "{stdout}");
    assert!(stdout.contains("rank 1: data/b.parquet\n"), "{stdout}");
    assert!(stdout.contains("rank 2: (none)\n"), "{stdout}");
}

#[test]
fn run_shows_rows_and_quiet_prints_exactly_the_json_report() {
    let dir = tempfile::tempdir().expect("tmp");
    two_files(dir.path());
    std::fs::write(dir.path().join("g.toml"), GROUPS).expect("write");
    let out = updraft(dir.path(), &["run", "g.toml", "--workers", "2", "--show", "2"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let table: Vec<&str> = stdout.lines().skip_while(|l| !l.starts_with("sink `out`")).collect();
    assert!(table.len() >= 6, "{stdout}");
    let cells = |l: &str| l.split('|').map(|c| c.trim().to_string()).collect::<Vec<_>>();
    assert_eq!(cells(table[1]), ["name", "n", "total", "biggest"]);
    assert_eq!(cells(table[2]), ["utf8", "int64", "int64", "int64"]);
    // Sorted by name, nulls last: x (rows k = 1, 4, 7), y (2, 6).
    assert_eq!(cells(table[4]), ["x", "3", "50", "7"]);
    assert_eq!(cells(table[5]), ["y", "2", "30", "6"]);
    assert_eq!(table[6], "(2 of 4 rows)");

    let out = updraft(dir.path(), &["run", "g.toml", "--workers", "2", "--quiet"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is one JSON document");
    assert_eq!(report["world"], 2);
    assert_eq!(report["sinks"][0]["name"], "out");
    assert_eq!(report["sinks"][0]["summary"]["rows"], 4);
}

#[test]
fn exit_codes_say_whose_problem_it_is() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    // 0: help is not an error, even with a scheduler's environment that is.
    assert_eq!(updraft(dir.path(), &["--help"]).status.code(), Some(0));
    let help =
        Command::new(bin()).args(["worker", "--help"]).env("SLURM_PROCID", "x").output().expect("help");
    assert_eq!(help.status.code(), Some(0), "{:?}", text(&help));
    // 2: a usage error, a missing secret.
    assert_eq!(updraft(dir.path(), &["run"]).status.code(), Some(2));
    let no_secret = Command::new(bin())
        .current_dir(dir.path())
        .args(["rendezvous", "--listen", "127.0.0.1:0"])
        .env_remove("UPDRAFT_SECRET")
        .output()
        .expect("rendezvous");
    assert_eq!(no_secret.status.code(), Some(2), "{:?}", text(&no_secret));
    // 2: the pipeline is wrong.
    std::fs::write(dir.path().join("bad.toml"), "[source.t]\nkind = \"nope\"\n").expect("write");
    assert_eq!(updraft(dir.path(), &["run", "bad.toml"]).status.code(), Some(2));
    // 2: the data is wrong (a value the declared type cannot hold), found while running.
    std::fs::write(dir.path().join("data/t.csv"), "k\n1\n2\nnot a number\n").expect("csv");
    let data = "[source.t]\nkind = \"csv\"\npath = \"data/t.csv\"\nschema = { k = \"int64\" }\ninfer_rows = 1\n\n[sink.s]\nkind = \"summary\"\ninput = \"t\"\n";
    std::fs::write(dir.path().join("data.toml"), data).expect("write");
    let out = updraft(dir.path(), &["run", "data.toml", "--workers", "2"]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    // 1: an operator failed.
    let ok = "[source.t]\nkind = \"generate\"\nrows = 100\n\n[sink.s]\nkind = \"summary\"\ninput = \"t\"\n";
    std::fs::write(dir.path().join("ok.toml"), ok).expect("write");
    let out = Command::new(bin())
        .current_dir(dir.path())
        .args(["run", "ok.toml", "--workers", "2"])
        .env("UPDRAFT_FAULT", "rank=1,stage=t,at=end,fault=panic")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    // 3: the infrastructure: a rendezvous nobody serves.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let timeout = format!("[runtime]\nrendezvous_timeout = \"1s\"\n\n{ok}");
    std::fs::write(dir.path().join("alone.toml"), timeout).expect("write");
    let rdv = format!("127.0.0.1:{port}");
    let out = Command::new(bin())
        .current_dir(dir.path())
        .args(["worker", "--rendezvous", &rdv, "--job", "j", "--rank", "0", "--world", "1"])
        .args(["--pipeline", "alone.toml"])
        .env("UPDRAFT_SECRET", "s3cret-s3cret-s3cret")
        .output()
        .expect("worker");
    assert_eq!(out.status.code(), Some(3), "{:?}", text(&out));
}

#[test]
fn cost_refuses_what_lambda_cannot_run_and_counts_the_rendezvous_host() {
    let dir = tempfile::tempdir().expect("tmp");
    for (args, want) in [
        (["--seconds", "1000", "--memory-gb", "2"], "--seconds must be 0 to 900"),
        (["--seconds", "10", "--memory-gb", "0.1"], "--memory-gb must be 0.125 to 10.24"),
        (["--seconds", "10", "--memory-gb", "11"], "--memory-gb must be 0.125 to 10.24"),
    ] {
        let out = updraft(dir.path(), &[&["cost", "--workers", "4"], &args[..]].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out).1.contains(want), "{args:?}: {:?}", text(&out));
    }
    let out = updraft(dir.path(), &["cost", "--workers", "4", "--seconds", "900", "--memory-gb", "0.125"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    // 4 x 900 s x 0.125 GB = 450 GB-s; the t4g.nano rendezvous: 0.0042 $/h x 730 h.
    assert!(stdout.contains("450.000 GB-s"), "{stdout}");
    assert!(
        stdout.contains("the rendezvous host (t4g.nano") && stdout.contains("$3.066000 per month"),
        "{stdout}"
    );
}

/// Starts `world` workers of `ok.toml`-like `pipeline` with no placement flags, each with the
/// environment `env(rank)` (plus `extra` flags), against a fresh rendezvous; returns each
/// worker's output.
fn placed_workers(
    dir: &Path,
    pipeline: &str,
    world: u32,
    env: impl Fn(u32) -> Vec<(String, String)>,
    extra: &[&str],
) -> Vec<Output> {
    let secret = "placement-secret-0123456789";
    let (_rdv, addr) = local_rendezvous(secret);
    std::fs::write(dir.join("p.toml"), pipeline).expect("write");
    let children: Vec<_> = (0..world)
        .map(|r| {
            Command::new(bin())
                .current_dir(dir)
                .args(["worker", "--bind", "127.0.0.1", "--rendezvous", &addr, "--pipeline", "p.toml"])
                .args(extra)
                .env("UPDRAFT_SECRET", secret)
                .envs(env(r))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("worker")
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().expect("wait")).collect()
}

#[test]
fn workers_take_rank_world_and_job_from_their_scheduler() {
    let dir = tempfile::tempdir().expect("tmp");
    let pipeline = "[runtime]\nrendezvous_timeout = \"20s\"\n\n[source.t]\nkind = \"generate\"\nrows = 500\n\n[sink.out]\nkind = \"csv\"\ninput = \"t\"\npath = \"out/part-{rank}.csv\"\n";
    let vars = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    };
    type Env<'a> = Box<dyn Fn(u32) -> Vec<(String, String)> + 'a>;
    let schedulers: Vec<(&str, Env, Vec<&str>)> = vec![
        (
            "slurm",
            Box::new(|r| {
                vars(&[
                    ("SLURM_PROCID", r.to_string()),
                    ("SLURM_NTASKS", "3".into()),
                    ("SLURM_JOB_ID", "4242".into()),
                    ("SLURM_STEP_ID", "0".into()),
                ])
            }),
            vec![],
        ),
        (
            "open mpi",
            Box::new(|r| {
                vars(&[
                    ("OMPI_COMM_WORLD_RANK", r.to_string()),
                    ("OMPI_COMM_WORLD_SIZE", "3".into()),
                    ("PMIX_NAMESPACE", "prterun-host-1@1".into()),
                ])
            }),
            vec![],
        ),
        (
            "pmi",
            Box::new(|r| vars(&[("PMI_RANK", r.to_string()), ("PMI_SIZE", "3".into())])),
            vec!["--job", "hydra-1"],
        ),
        (
            "kubernetes",
            Box::new(|r| {
                vars(&[
                    ("JOB_COMPLETION_INDEX", r.to_string()),
                    ("UPDRAFT_WORLD", "3".into()),
                    ("UPDRAFT_JOB", "indexed".into()),
                ])
            }),
            vec![],
        ),
    ];
    for (name, env, extra) in schedulers {
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let outs = placed_workers(dir.path(), pipeline, 3, env, &extra);
        for (r, o) in outs.iter().enumerate() {
            assert!(o.status.success(), "{name}, rank {r}: {:?}", text(o));
        }
        // Three ranks, each its own part, every generated row once (500 per rank).
        assert_eq!(csv_rows(dir.path(), 3), 1500, "{name}");
    }
    // A Kubernetes index without the world size is refused, naming what to set.
    let outs = placed_workers(
        dir.path(),
        pipeline,
        1,
        |_| vars(&[("JOB_COMPLETION_INDEX", "0".into())]),
        &["--job", "x"],
    );
    assert_eq!(outs[0].status.code(), Some(2));
    assert!(text(&outs[0]).1.contains("UPDRAFT_WORLD"), "{:?}", text(&outs[0]));
}

/// 300 generated rows per rank, one CSV part file per rank.
const PARTS: &str = "[source.t]\nkind = \"generate\"\nrows = 300\n\n[sink.out]\nkind = \"csv\"\ninput = \"t\"\npath = \"out/part-{rank}.csv\"\n";

/// Rows in the CSV part files `out/part-0.csv` .. of `ranks` ranks (headers not counted).
fn csv_rows(dir: &Path, ranks: u32) -> usize {
    (0..ranks)
        .map(|r| {
            let part = std::fs::read_to_string(dir.join(format!("out/part-{r}.csv"))).expect("part");
            part.lines().count() - 1
        })
        .sum()
}

fn repo_file(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The shipped Slurm batch script, run as `sbatch` would run it, with an `srun` that starts the
/// tasks on this host with the environment Slurm gives them (no Slurm daemons here).
#[test]
fn the_slurm_batch_script_runs_a_job_with_ranks_from_srun() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = dir.path().join("bin");
    std::fs::create_dir_all(&fake).expect("mkdir");
    // srun: one task per SLURM_NTASKS, each with SLURM_PROCID; fails if any task fails.
    let srun = "#!/bin/bash\nwhile [[ \"$1\" == --* ]]; do shift; done\npids=()\nfor ((i = 0; i < SLURM_NTASKS; i++)); do\n  SLURM_PROCID=$i SLURM_STEP_ID=0 \"$@\" > \"task-$i.log\" 2>&1 &\n  pids+=($!)\ndone\nstatus=0\nfor p in \"${pids[@]}\"; do wait \"$p\" || status=1; done\nexit $status\n";
    std::fs::write(fake.join("srun"), srun).expect("srun");
    std::process::Command::new("chmod").arg("+x").arg(fake.join("srun")).status().expect("chmod");
    let pipeline = PARTS;
    std::fs::write(dir.path().join("p.toml"), pipeline).expect("write");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .current_dir(dir.path())
        .arg(repo_file("config/cluster/updraft.sbatch"))
        .arg("p.toml")
        .env("PATH", path)
        .env("UPDRAFT", bin())
        .env("UPDRAFT_PORT", port.to_string())
        .env("UPDRAFT_RENDEZVOUS_HOST", "127.0.0.1")
        .env("UPDRAFT_WORKER_FLAGS", "--bind 127.0.0.1")
        .env("SLURM_NTASKS", "3")
        .env("SLURM_JOB_ID", "31337")
        .env_remove("UPDRAFT_SECRET")
        .output()
        .expect("bash");
    let logs: Vec<String> = (0..3)
        .map(|i| std::fs::read_to_string(dir.path().join(format!("task-{i}.log"))).unwrap_or_default())
        .collect();
    assert!(out.status.success(), "{:?}\n{logs:#?}", text(&out));
    // The three tasks met as one job (the Slurm job and step id) with ranks from SLURM_PROCID.
    assert!(logs[0].contains("on 3 workers: ok"), "rank 0 reports the job: {}", logs[0]);
    assert_eq!(csv_rows(dir.path(), 3), 900, "every rank's rows once");
}

/// The shipped Kubernetes manifest: valid against the Kubernetes schemas (offline), its
/// pipeline valid, and its numbers consistent (world size = completions = parallelism, workers
/// pointed at the rendezvous Service, one Secret for both).
#[test]
fn the_kubernetes_manifest_is_valid_and_consistent() {
    let manifest = repo_file("config/cluster/updraft-k8s.yaml");
    let check = Command::new("kubernetes-validate").arg("--strict").arg("--quiet").arg(&manifest).output();
    match check {
        Ok(out) => assert!(out.status.success(), "kubernetes-validate: {:?}", text(&out)),
        Err(e) => {
            assert!(
                std::env::var("UPDRAFT_REQUIRE_K8S_VALIDATE").is_err(),
                "UPDRAFT_REQUIRE_K8S_VALIDATE is set but kubernetes-validate cannot run: {e}"
            );
            eprintln!(
                "skipped the schema check: kubernetes-validate is not installed (pip install kubernetes-validate)"
            );
        }
    }
    let yaml = std::fs::read_to_string(&manifest).expect("manifest");
    let value = |key: &str| -> Vec<String> {
        yaml.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().trim_matches('"').to_string())
            .collect()
    };
    assert_eq!(value("completions:"), ["4"]);
    assert_eq!(value("parallelism:"), ["4"]);
    assert_eq!(value("completionMode:"), ["Indexed"]);
    let world =
        yaml.split("- name: UPDRAFT_WORLD").nth(1).and_then(|r| r.lines().nth(1)).expect("UPDRAFT_WORLD");
    assert_eq!(world.trim(), "value: \"4\"");
    assert!(yaml.contains("- updraft-rendezvous:7000"), "workers reach the Service by name");
    assert!(value("name:").iter().any(|n| n == "updraft-rendezvous"));
    assert_eq!(yaml.matches("secretKeyRef:").count(), 2);
    // The pipeline in the ConfigMap is a valid pipeline.
    let pipeline: String = yaml
        .split("pipeline.toml: |\n")
        .nth(1)
        .expect("pipeline in the ConfigMap")
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let dir = tempfile::tempdir().expect("tmp");
    let out = validate_pipeline(dir.path(), "k8s.toml", &pipeline);
    assert!(out.status.success(), "{:?}\n{pipeline}", text(&out));
}

/// A worker waiting for ranks that never come says so every few seconds, then fails naming
/// them.
#[test]
fn a_waiting_worker_says_what_it_waits_for() {
    let dir = tempfile::tempdir().expect("tmp");
    let secret = "waiting-secret-0123456789";
    let (_rdv, addr) = local_rendezvous(secret);
    let pipeline = "[runtime]\nrendezvous_timeout = \"7s\"\n\n[source.t]\nkind = \"generate\"\nrows = 10\n\n[sink.s]\nkind = \"summary\"\ninput = \"t\"\n";
    std::fs::write(dir.path().join("p.toml"), pipeline).expect("write");
    let out = Command::new(bin())
        .current_dir(dir.path())
        .args(["worker", "--bind", "127.0.0.1", "--rendezvous", &addr, "--pipeline", "p.toml"])
        .args(["--job", "lonely", "--rank", "0", "--world", "2"])
        .env("UPDRAFT_SECRET", secret)
        .output()
        .expect("worker");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("connected to the rendezvous")
            && stderr.contains("waiting for the other ranks of job `lonely`"),
        "{stderr}"
    );
    assert!(stderr.contains("rank 1 of job `lonely` never registered"), "{stderr}");
}

/// On a terminal `run` draws a progress line (rows by phase, bytes, ranks still working); with
/// its output in a pipe or file it draws nothing.
#[test]
fn progress_is_drawn_on_a_terminal_only() {
    let dir = tempfile::tempdir().expect("tmp");
    // Long enough (a few seconds) for the line, redrawn about once a second, to show rows.
    let pipeline = generated_join_pipeline(8_000_000, 0.9, "");
    std::fs::write(dir.path().join("p.toml"), pipeline).expect("write");
    let command = format!("{} run p.toml --workers 2", bin());
    // `script` gives the command a terminal; its transcript is what the terminal showed.
    let tty = Command::new("script").current_dir(dir.path()).args(["-qec", &command, "/dev/null"]).output();
    let Ok(tty) = tty else {
        panic!("`script` (util-linux) is needed to run a command on a terminal");
    };
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    assert!(
        shown.contains("rows: read") && shown.contains("over links") && shown.contains("working: rank"),
        "{shown}"
    );
    let piped = updraft(dir.path(), &["run", "p.toml", "--workers", "2"]);
    let (stdout, stderr) = text(&piped);
    assert!(piped.status.success(), "{stderr}");
    assert!(!stdout.contains("over links |") && !stderr.contains("over links |"), "{stdout}\n{stderr}");
}

/// The shipped batch script under a real Slurm cluster: `scripts/test` starts a one-node
/// cluster of this machine (slurmctld, slurmd, munged) and sets `SLURM_CONF`.
#[test]
fn the_slurm_batch_script_runs_under_slurm() {
    let slurm =
        std::env::var("SLURM_CONF").is_ok() && Command::new("sbatch").arg("--version").output().is_ok();
    if !slurm {
        assert!(
            std::env::var("UPDRAFT_REQUIRE_SLURM").is_err(),
            "UPDRAFT_REQUIRE_SLURM is set but there is no Slurm cluster (SLURM_CONF and sbatch)"
        );
        eprintln!("skipped: no Slurm cluster (scripts/test starts one)");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let pipeline = PARTS;
    std::fs::write(dir.path().join("p.toml"), pipeline).expect("write");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    // --overcommit: three tasks on this machine whatever its core count.
    let mut job = Command::new("sbatch")
        .current_dir(dir.path())
        .args(["--wait", "--ntasks=3", "--overcommit", "--output=job.out"])
        .arg(repo_file("config/cluster/updraft.sbatch"))
        .arg("p.toml")
        .env("UPDRAFT", bin())
        .env("UPDRAFT_PORT", port.to_string())
        .env("UPDRAFT_RENDEZVOUS_HOST", "127.0.0.1")
        .env("UPDRAFT_RENDEZVOUS_LISTEN", "127.0.0.1")
        .env("UPDRAFT_WORKER_FLAGS", "--bind 127.0.0.1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sbatch");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(s) = job.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = job.kill();
            panic!("the Slurm job did not end within 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(dir.path().join("job.out")).unwrap_or_default();
    assert!(status.success(), "sbatch: {status}\n{log}");
    assert!(log.contains("job `updraft-job` on 3 workers: ok"), "{log}");
    assert_eq!(csv_rows(dir.path(), 3), 900, "every rank's rows once");
}
