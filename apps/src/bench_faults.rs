//! `updraft bench faults`: fault-injection trials. Each trial runs a job (a join and a
//! group-by of generated tables into Parquet part files and a summary) on local workers with one
//! fault injected at a random rank, stage and moment (`UPDRAFT_FAULT`, see
//! `updraft_runtime::testing::FaultPlan`), and records what happened:
//!
//! - faults a job cannot survive (an error, a panic, a cut or damaged link, a worker that exits
//!   or stops longer than the peer deadline): every process exited, how long after the fault,
//!   whether every rank's error names the faulty rank (or, on it, the cause), and that no output
//!   was committed and no temporary file left;
//! - faults it should survive (a slow operator, a short stop, a worker that dies on the first
//!   attempt of a job run with `--retries 1`): the job's result equals a fault-free run's.
//!
//! A trial whose fault never fired (its stage saw fewer batches) is counted apart.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

/// `updraft bench faults` arguments.
#[derive(Args, Debug, Clone)]
pub struct FaultArgs {
    /// Trials to run.
    #[arg(long, default_value_t = 100)]
    pub trials: u32,
    /// Worker processes per job.
    #[arg(long, default_value_t = 4)]
    pub workers: u32,
    /// Seed of the trials' random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to write `faults.json` (every trial).
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
}

/// The trials' pipeline: short peer deadlines so that failures are quick.
const PIPELINE: &str = r#"[job]
name = "fault-trial"

[runtime]
batch_rows = 1000
peer_timeout = "3s"
heartbeat = "250ms"
mesh_timeout = "5s"
rendezvous_timeout = "10s"
job_timeout = "60s"

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

[operator.totals]
kind = "group_by"
input = "joined"
keys = ["key"]
aggregate = { n = "count()", m = "max(payload_left)" }

[sink.parts]
kind = "parquet"
input = "totals"
path = "out/part-{rank}.parquet"

[sink.summary]
kind = "summary"
input = "totals"
"#;

/// The stages of [`PIPELINE`] a fault may hit.
const STAGES: &[&str] = &[
    "left",
    "right",
    "joined.shuffle-left",
    "joined.shuffle-right",
    "joined",
    "totals.partial",
    "totals.shuffle",
    "totals",
    "parts",
];

/// What a trial injects, and what it should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
enum Kind {
    Error,
    Panic,
    Delay,
    DropLink,
    CorruptFrame,
    StallLink,
    Exit,
    StopShort,
    StopLong,
    ExitRetried,
}

impl Kind {
    const ALL: [Kind; 10] = [
        Kind::Error,
        Kind::Panic,
        Kind::Delay,
        Kind::DropLink,
        Kind::CorruptFrame,
        Kind::StallLink,
        Kind::Exit,
        Kind::StopShort,
        Kind::StopLong,
        Kind::ExitRetried,
    ];

    fn fault(self) -> &'static str {
        match self {
            Kind::Error => "error",
            Kind::Panic => "panic",
            Kind::Delay => "delay:500ms",
            Kind::DropLink => "drop-link",
            Kind::CorruptFrame => "corrupt-frame",
            Kind::StallLink => "stall-link",
            Kind::Exit | Kind::ExitRetried => "exit",
            Kind::StopShort => "stop:1s",
            Kind::StopLong => "stop:6s",
        }
    }

    /// Whether the job must succeed (`Some(true)`), must fail (`Some(false)`), or may do either
    /// with a right result (a damaged frame only fails the job if a data frame follows it).
    fn survives(self) -> Option<bool> {
        match self {
            Kind::Delay | Kind::StopShort | Kind::ExitRetried => Some(true),
            Kind::CorruptFrame => None,
            _ => Some(false),
        }
    }
}

/// One trial's record.
#[derive(Debug, Serialize)]
struct Trial {
    kind: Kind,
    fault: String,
    fired: bool,
    exit_code: Option<i32>,
    /// From the fault's injection to the launcher's exit, seconds.
    exit_after_s: Option<f64>,
    result_right: bool,
    names_cause: bool,
    processes_left: usize,
    outputs_left: Vec<String>,
    ok: bool,
    detail: String,
}

/// A small deterministic generator (SplitMix64) for the trials' choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (x ^ (x >> 31)) % n.max(1)
    }
}

/// What `updraft run` did.
struct Run {
    code: Option<i32>,
    stderr: Vec<String>,
    fired_at: Option<Instant>,
    ended_at: Instant,
    pids: Vec<u32>,
    report: Option<serde_json::Value>,
}

fn run_job(exe: &Path, dir: &Path, workers: u32, fault: Option<&str>, retries: u32) -> anyhow::Result<Run> {
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, PIPELINE)?;
    let report = dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let mut cmd = Command::new(exe);
    cmd.current_dir(dir)
        .args(["run", "--quiet", "--workers", &workers.to_string(), "--retries", &retries.to_string()])
        .arg("--report")
        .arg(&report)
        .arg(&pipeline)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match fault {
        Some(f) => cmd.env("UPDRAFT_FAULT", f),
        None => cmd.env_remove("UPDRAFT_FAULT"),
    };
    let mut child = cmd.spawn().context("cannot start updraft run")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (mut lines, mut fired_at, mut pids) = (Vec::new(), None, Vec::new());
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if fired_at.is_none() && line.contains("injecting a fault") {
            fired_at = Some(Instant::now());
        }
        if let Some(list) = line.split("(pids ").nth(1) {
            pids = list.split(')').next().unwrap_or("").split(", ").filter_map(|p| p.parse().ok()).collect();
        }
        lines.push(line);
    }
    let status = child.wait()?;
    let ended_at = Instant::now();
    let report = std::fs::read(&report).ok().and_then(|b| serde_json::from_slice(&b).ok());
    Ok(Run { code: status.code(), stderr: lines, fired_at, ended_at, pids, report })
}

/// The summary sink's (rows, row checksum) in a job report.
fn summary(report: &serde_json::Value) -> Option<(u64, u64)> {
    let s = report["sinks"].as_array()?.iter().find(|s| s["name"] == "summary")?;
    Some((s["summary"]["rows"].as_u64()?, s["summary"]["row_checksum"].as_u64()?))
}

/// Files left in the trial's output directory.
fn outputs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("out"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether every failed rank's error names the faulty rank, or (on the faulty rank) the cause.
fn names_cause(lines: &[String], rank: u32, stage: &str) -> bool {
    let ranks: Vec<&String> = lines.iter().filter(|l| l.starts_with("  rank ")).collect();
    !ranks.is_empty()
        && ranks.iter().all(|l| {
            let own = l.starts_with(&format!("  rank {rank}: "));
            if own {
                ["injected", "panicked", stage, "exited", "link was cut", "lost rank", "aborted"]
                    .iter()
                    .any(|w| l.contains(w))
            } else {
                l.contains(&format!("rank {rank}"))
            }
        })
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
}

/// Runs `updraft bench faults`.
pub fn run(args: FaultArgs) -> anyhow::Result<ExitCode> {
    if args.workers < 2 {
        bail!("--workers must be at least 2: link faults need a peer");
    }
    let exe = std::env::current_exe().context("cannot find the updraft executable")?;
    let base = tempfile::tempdir()?;
    let baseline = run_job(&exe, base.path(), args.workers, None, 0)?;
    let Some(reference) = baseline.report.as_ref().and_then(summary) else {
        bail!("the fault-free run failed: {}", baseline.stderr.join("\n"));
    };
    println!(
        "bench faults: {} trials on {} workers (fault-free result: {} rows, checksum {:016x})",
        args.trials, args.workers, reference.0, reference.1
    );
    let mut rng = Rng(args.seed);
    let mut trials = Vec::new();
    let bar = indicatif::ProgressBar::new(u64::from(args.trials));
    for i in 0..args.trials {
        let kind = Kind::ALL[(i as usize) % Kind::ALL.len()];
        let rank = rng.below(u64::from(args.workers)) as u32;
        let stage = STAGES[rng.below(STAGES.len() as u64) as usize];
        let at = match rng.below(4) {
            3 => "end".to_string(),
            n => (n + 1).to_string(),
        };
        let mut fault = format!("rank={rank},stage={stage},at={at},fault={}", kind.fault());
        let retries = if kind == Kind::ExitRetried {
            fault.push_str(",attempt=1");
            1
        } else {
            0
        };
        let dir = tempfile::tempdir()?;
        let run = run_job(&exe, dir.path(), args.workers, Some(&fault), retries)?;
        let left = outputs(dir.path());
        let result = run.report.as_ref().and_then(summary);
        let parts = left.iter().filter(|n| n.starts_with("part-") && n.ends_with(".parquet")).count();
        let succeeded = run.code == Some(0);
        let result_right = succeeded && result == Some(reference) && parts == args.workers as usize;
        let processes_left = run.pids.iter().filter(|p| alive(**p)).count();
        let named = succeeded || names_cause(&run.stderr, rank, stage);
        let clean_failure = !succeeded && left.is_empty();
        let fired = run.fired_at.is_some();
        let ok = processes_left == 0
            && match (fired, kind.survives()) {
                (false, _) => result_right,
                (true, Some(true)) => result_right,
                (true, Some(false)) => clean_failure && named,
                (true, None) => result_right || (clean_failure && named),
            };
        let detail = if ok {
            String::new()
        } else {
            run.stderr
                .iter()
                .filter(|l| l.starts_with("  rank ") || l.contains("attempt"))
                .cloned()
                .collect::<Vec<_>>()
                .join(" | ")
        };
        trials.push(Trial {
            kind,
            fault,
            fired,
            exit_code: run.code,
            exit_after_s: run.fired_at.map(|t| run.ended_at.duration_since(t).as_secs_f64()),
            result_right,
            names_cause: named,
            processes_left,
            outputs_left: if succeeded { Vec::new() } else { left },
            ok,
            detail,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    print_table(&trials);
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join("faults.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&trials)?)?;
    println!("every trial: {}", path.display());
    let bad: Vec<&Trial> = trials.iter().filter(|t| !t.ok).collect();
    for t in &bad {
        println!("  NOT AS EXPECTED: {} (exit {:?}): {}", t.fault, t.exit_code, t.detail);
    }
    Ok(if bad.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_table(trials: &[Trial]) {
    let mut by_kind: BTreeMap<Kind, Vec<&Trial>> = BTreeMap::new();
    for t in trials {
        by_kind.entry(t.kind).or_default().push(t);
    }
    println!(
        "{:>14} {:>7} {:>6} {:>9} {:>10} {:>11} {:>9} {:>11}",
        "fault", "trials", "fired", "failed", "survived", "worst exit", "left", "as expected"
    );
    for (kind, ts) in by_kind {
        let fired = ts.iter().filter(|t| t.fired).count();
        let failed = ts.iter().filter(|t| t.exit_code != Some(0)).count();
        let survived = ts.iter().filter(|t| t.result_right).count();
        let worst = ts.iter().filter_map(|t| t.exit_after_s).fold(0.0f64, f64::max);
        let left = ts.iter().map(|t| t.processes_left + t.outputs_left.len()).sum::<usize>();
        let ok = ts.iter().filter(|t| t.ok).count();
        println!(
            "{:>14} {:>7} {:>6} {:>9} {:>10} {:>10.2}s {:>9} {:>7}/{}",
            format!("{kind:?}"),
            ts.len(),
            fired,
            failed,
            survived,
            worst,
            left,
            ok,
            ts.len()
        );
    }
}
