//! The local cluster, updraft's embedded default: an in-process rendezvous on 127.0.0.1 and N
//! `updraft worker` processes, watched until they all finish. If one fails, the others get the
//! peer deadline to fail on their own (naming the lost rank), then are killed; a worker that
//! dies before the job started is named to the others at once, through the rendezvous. None
//! outlives the launcher: each stops (within a second, removing its temporary files) when its
//! standard input, held by the launcher, closes, whatever ended the launcher.
//!
//! With `--retries N`, a job that failed for a reason a fresh run may not meet (a lost worker,
//! a timeout, an unreachable service: see `FailureClass::retryable`) runs again with fresh
//! workers under a new job id, up to N more times, with a growing pause; outputs are committed
//! only by a successful attempt, so retries never duplicate or mix them.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use updraft_runtime::FailureClass;
use updraft_runtime::report::JobReport;
use updraft_transports::rendezvous::{RendezvousServer, ServerConfig};

use crate::output;
use crate::worker::WorkerOutput;

/// `updraft run` arguments.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Pipeline file.
    pub pipeline: PathBuf,
    /// Number of local worker processes.
    #[arg(long, default_value_t = 4)]
    pub workers: u32,
    /// Also write the job report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the JSON report on stdout instead of the summary (nothing else on stdout).
    #[arg(long)]
    pub quiet: bool,
    /// After the job, print the first N rows of each file sink, read back from what it wrote.
    #[arg(long, value_name = "N")]
    pub show: Option<usize>,
    /// Serve every worker's metrics, live, as one `/metrics` here (e.g. 127.0.0.1:9464).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// With --metrics-listen: keep serving the final metrics this long after the job ends
    /// (e.g. 15s), so that a scraper sees the end of a short job.
    #[arg(long, default_value = "0s", value_parser = crate::parse_duration_arg)]
    pub metrics_linger: Duration,
    /// Write every worker's final metrics (Prometheus text) to this file at the end.
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    /// Where the workers run: `local` processes, or `lambda` functions.
    #[arg(long, default_value = "local", value_parser = ["local", "lambda"])]
    pub backend: String,
    /// The Lambda function (name or ARN) to invoke once per rank (--backend lambda).
    #[arg(long, required_if_eq("backend", "lambda"))]
    pub function: Option<String>,
    /// Rendezvous the functions can reach, HOST:PORT (--backend lambda).
    #[arg(long, required_if_eq("backend", "lambda"))]
    pub rendezvous: Option<String>,
    /// Function memory for the "as if on Lambda" cost line, in GB.
    #[arg(long, default_value_t = 2.0)]
    pub memory_gb: f64,
    /// Prices for the cost lines (default: the shipped config/pricing.toml).
    #[arg(long)]
    pub pricing: Option<PathBuf>,
    /// Run a job that failed for a retryable reason again, up to this many more times.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// Print the progress line on stderr once a second as plain lines starting with
    /// `progress: ` (for programs that show it themselves; local workers only).
    #[arg(long)]
    pub progress_lines: bool,
}

/// Outcome of a local run.
pub struct LocalRun {
    /// The job report (when every worker succeeded).
    pub job: Option<JobReport>,
    /// Per-rank failures, with their class (`None`: the worker died without saying why).
    pub failures: Vec<(u32, String, Option<FailureClass>)>,
    /// Every worker's last pushed metrics, as one exposition.
    pub metrics: String,
}

impl LocalRun {
    /// Whether running the job again may succeed: every failure is retryable, or a worker that
    /// died without a word (a crash, a kill) and those that lost it.
    pub fn retryable(&self) -> bool {
        !self.failures.is_empty()
            && self.failures.iter().all(|(_, _, c)| c.is_none_or(FailureClass::retryable))
    }

    /// The failure that explains the others: a non-retryable class first, then a worker that
    /// died, then the first rank's.
    pub fn cause(&self) -> String {
        match output::root_failure(&self.failures) {
            Some((rank, e, Some(c))) => format!("rank {rank}: {e} [{}]", c.name()),
            Some((rank, e, None)) => format!("rank {rank}: {e}"),
            None => "no failure".to_string(),
        }
    }
}

/// Runs `updraft run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.workers == 0 {
        return Err(output::BadInput("--workers must be at least 1".into()).into());
    }
    if args.backend == "lambda" {
        return crate::lambda::drive(crate::lambda::LambdaRun {
            pipeline: args.pipeline.clone(),
            function: args.function.clone().unwrap_or_default(),
            workers: args.workers,
            rendezvous: args.rendezvous.clone().unwrap_or_default(),
            report: args.report.clone(),
            quiet: args.quiet,
            pricing: args.pricing.clone(),
            retries: args.retries,
        });
    }
    let (spec, plan) = match output::load_checked_pipeline(&args.pipeline, args.workers) {
        Ok(checked) => {
            let plan = output::plan_for(&checked.spec, args.workers, &checked.inputs).ok();
            (checked.spec, plan)
        }
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    // On a terminal only: the line is redrawn in place.
    let tty = std::io::stderr().is_terminal() && std::io::stdout().is_terminal();
    let progress = if args.progress_lines {
        crate::progress::Progress::lines(plan.as_ref())
    } else {
        crate::progress::Progress::new(tty && !args.quiet, plan.as_ref())
    };
    let deadline = spec.runtime.job_timeout + spec.runtime.rendezvous_timeout + Duration::from_secs(10);
    let grace = spec.runtime.peer_timeout + Duration::from_secs(5);
    let mut attempts: Vec<String> = Vec::new();
    let result = loop {
        let attempt = attempts.len() as u32 + 1;
        let opts = LocalOptions {
            deadline,
            grace,
            metrics_listen: args.metrics_listen,
            metrics_linger: args.metrics_linger,
            attempt,
        };
        let result = run_local(&args.pipeline, args.workers, &opts, &progress)?;
        if result.failures.is_empty() || !result.retryable() || attempt > args.retries {
            break result;
        }
        let pause = retry_pause(attempt);
        eprintln!(
            "updraft: attempt {attempt} failed ({}); running the job again in {pause:?}",
            result.cause()
        );
        attempts.push(result.cause());
        std::thread::sleep(pause);
    };
    if !attempts.is_empty() {
        let outcome = if result.failures.is_empty() { "ok".to_string() } else { result.cause() };
        eprintln!("updraft: {} attempts:", attempts.len() + 1);
        for (i, why) in attempts.iter().enumerate() {
            eprintln!("  attempt {}: failed: {why}", i + 1);
        }
        eprintln!("  attempt {}: {outcome}", attempts.len() + 1);
    }
    if let Some(path) = &args.metrics_file {
        std::fs::write(path, &result.metrics).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let (Some(path), Some(job)) = (&args.report, &result.job) {
        std::fs::write(path, serde_json::to_vec_pretty(job)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    match (&result.job, result.failures.is_empty()) {
        (Some(job), true) => {
            if args.quiet {
                println!("{}", serde_json::to_string_pretty(job)?);
            } else {
                output::print_job(job);
                let pricing = output::load_pricing(args.pricing.as_deref())?;
                output::print_cost(job, args.memory_gb, 0, 0, &pricing);
                if let Some(n) = args.show {
                    // The job succeeded and is committed: a failure to show it is only a note.
                    let rows = |name: &str| job.sinks.iter().find(|s| s.name == name).map(|s| s.summary.rows);
                    if let Err(e) = crate::inspect::show_sinks(&spec, n, rows) {
                        eprintln!("updraft: cannot show the rows written: {e:#}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("updraft: job failed on {} of {} workers:", result.failures.len(), args.workers);
            for (rank, e, class) in &result.failures {
                let class = class.map_or(String::new(), |c| format!(" [{}]", c.name()));
                eprintln!("  rank {rank}: {e}{class}");
            }
            Ok(output::failure_exit(output::root_failure(&result.failures).and_then(|f| f.2)))
        }
    }
}

enum Line {
    Out(u32, String),
    Err(u32, String),
}

/// The pause before attempt `attempt + 1`: 0.5 s, doubling, at most 10 s.
pub fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.saturating_sub(1).min(5)))
        .min(Duration::from_secs(10))
}

/// The program (and the arguments before `worker ...`) that starts a worker: this executable,
/// or what `UPDRAFT_WORKER_COMMAND` gives as a JSON array of strings (a host program such as
/// the Python package, whose executable is not the `updraft` command line, sets it).
fn worker_command() -> anyhow::Result<(PathBuf, Vec<String>)> {
    match std::env::var("UPDRAFT_WORKER_COMMAND") {
        Ok(json) => {
            let parts: Vec<String> = serde_json::from_str(&json).map_err(|e| {
                crate::output::BadInput(format!("UPDRAFT_WORKER_COMMAND is not a JSON list of strings: {e}"))
            })?;
            let (first, rest) = parts
                .split_first()
                .ok_or_else(|| crate::output::BadInput("UPDRAFT_WORKER_COMMAND is an empty list".into()))?;
            Ok((PathBuf::from(first), rest.to_vec()))
        }
        Err(_) => Ok((std::env::current_exe().context("cannot find the updraft executable")?, Vec::new())),
    }
}

/// How [`run_local`] runs and watches its workers.
#[derive(Debug, Clone, Copy)]
pub struct LocalOptions {
    /// Kill every worker still running after this long.
    pub deadline: Duration,
    /// Kill workers still running this long after another one failed.
    pub grace: Duration,
    /// Serve every worker's live metrics here.
    pub metrics_listen: Option<SocketAddr>,
    /// Keep serving the final metrics this long after the job ended.
    pub metrics_linger: Duration,
    /// Which attempt (1-based) this is; told to the workers.
    pub attempt: u32,
}

/// Starts the rendezvous and `workers` worker processes for `pipeline`, and waits for them.
/// `attempt` (1-based) is told to the workers (`UPDRAFT_ATTEMPT`).
///
/// # Errors
/// If the rendezvous or a process cannot be started (the ones already started are killed).
pub fn run_local(
    pipeline: &Path,
    workers: u32,
    opts: &LocalOptions,
    progress: &crate::progress::Progress,
) -> anyhow::Result<LocalRun> {
    let LocalOptions { deadline, grace, metrics_listen, metrics_linger, attempt } = *opts;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let secret = crate::secret::fresh();
    let server = rt.block_on(RendezvousServer::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ServerConfig::new(secret.clone().into_bytes()),
    ))?;
    let rendezvous = server.local_addr();
    if let Some(addr) = metrics_listen {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("cannot listen on {addr}"))?;
        rt.spawn(crate::telemetry::serve(listener, server.metrics_exposition()));
        eprintln!("updraft: live metrics of every worker at http://{addr}/metrics");
    }
    let job = format!(
        "local-{}-{}-{attempt}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
    );
    let (exe, prefix) = worker_command()?;
    let (tx, rx) = crossbeam_channel::bounded::<Line>(1024);
    // Killed if the launcher fails before it watches them: no worker outlives a failed start.
    let mut children = Children(Vec::new());
    let mut readers = Vec::new();
    for rank in 0..workers {
        let mut child = Command::new(&exe)
            .args(&prefix)
            .args(["worker", "--json", "--watch-stdin", "--bind", "127.0.0.1"])
            .arg("--rendezvous")
            .arg(rendezvous.to_string())
            .arg("--job")
            .arg(&job)
            .arg("--rank")
            .arg(rank.to_string())
            .arg("--world")
            .arg(workers.to_string())
            .arg("--pipeline")
            .arg(pipeline)
            .env(crate::secret::ENV, &secret)
            .env(crate::worker::WORKERS_ON_HOST, workers.to_string())
            .arg("--attempt")
            .arg(attempt.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start worker {rank}"))?;
        tracing::info!(rank, pid = child.id(), "worker started");
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || forward(out, |l| Line::Out(rank, l), &tx)));
        }
        if let Some(err) = child.stderr.take() {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || forward(err, |l| Line::Err(rank, l), &tx)));
        }
        children.0.push(child);
    }
    drop(tx);
    let children = &mut children.0;
    eprintln!(
        "updraft: {workers} workers started (pids {}), rendezvous {rendezvous}",
        children.iter().map(|c| c.id().to_string()).collect::<Vec<_>>().join(", ")
    );

    let mut outputs: Vec<Option<WorkerOutput>> = (0..workers).map(|_| None).collect();
    let mut status: Vec<Option<std::process::ExitStatus>> = vec![None; workers as usize];
    let start = Instant::now();
    let mut first_failure: Option<Instant> = None;
    let mut killed: Vec<(u32, String, FailureClass)> = Vec::new();
    let mut shown = Instant::now();
    loop {
        drain(&rx, Duration::from_millis(20), &mut outputs);
        if shown.elapsed() >= Duration::from_millis(250) {
            shown = Instant::now();
            let running: Vec<u32> = (0..workers).filter(|r| status[*r as usize].is_none()).collect();
            progress.update(&server.metrics().0, &running, workers);
        }
        for (rank, child) in children.iter_mut().enumerate() {
            if status[rank].is_none()
                && let Some(s) = child.try_wait()?
            {
                status[rank] = Some(s);
                if !s.success() && first_failure.is_none() {
                    first_failure = Some(Instant::now());
                    // Workers still waiting at the rendezvous learn at once which rank is gone.
                    let class = match s.code() {
                        Some(2) => FailureClass::Config,
                        Some(3) => FailureClass::Unavailable,
                        _ => FailureClass::Link,
                    };
                    let reason = format!("rank {rank} exited ({s})");
                    rt.block_on(server.fail_job(&job, &reason, class));
                }
            }
        }
        if status.iter().all(Option::is_some) {
            break;
        }
        let overdue = start.elapsed() > deadline;
        let grace_over = first_failure.is_some_and(|t| t.elapsed() > grace);
        if overdue || grace_over {
            for (rank, child) in children.iter_mut().enumerate() {
                if status[rank].is_none() {
                    let _ = child.kill();
                    status[rank] = child.wait().ok();
                    let why = if overdue {
                        format!("killed: no result within {deadline:?}")
                    } else {
                        format!("killed: still running {grace:?} after another worker failed")
                    };
                    let class = if overdue { FailureClass::Timeout } else { FailureClass::Link };
                    killed.push((rank as u32, why, class));
                }
            }
            break;
        }
    }
    // The children are gone; keep draining while their last output is read (readers block on a
    // full channel otherwise), within a deadline.
    let until = Instant::now() + Duration::from_secs(10);
    while readers.iter().any(|r| !r.is_finished()) && Instant::now() < until {
        drain(&rx, Duration::from_millis(20), &mut outputs);
    }
    drain(&rx, Duration::ZERO, &mut outputs);
    progress.finish();
    if let (Some(addr), false) = (metrics_listen, metrics_linger.is_zero()) {
        eprintln!("updraft: serving the final metrics at http://{addr}/metrics for {metrics_linger:?}");
        std::thread::sleep(metrics_linger);
    }
    let (metrics, _) = server.metrics();
    rt.block_on(server.shutdown());

    let mut failures = Vec::new();
    for rank in 0..workers as usize {
        if let Some((_, why, class)) = killed.iter().find(|(r, _, _)| *r as usize == rank) {
            failures.push((rank as u32, why.clone(), Some(*class)));
            continue;
        }
        match (&outputs[rank], status[rank]) {
            (Some(o), _) if o.error.is_some() => {
                failures.push((rank as u32, o.error.clone().unwrap_or_default(), o.error_class))
            }
            (Some(_), Some(s)) if s.success() => {}
            // Died without a word: a crash or a kill.
            (_, Some(s)) => failures.push((rank as u32, format!("exited with {s}"), None)),
            (_, None) => failures.push((rank as u32, "no exit status".into(), None)),
        }
    }
    let job = outputs.first().and_then(|o| o.as_ref()).and_then(|o| o.job.clone());
    Ok(LocalRun { job: if failures.is_empty() { job } else { None }, failures, metrics })
}

/// Worker processes, killed (and reaped) if dropped before they were watched to the end.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn forward<R: std::io::Read>(r: R, wrap: impl Fn(String) -> Line, tx: &crossbeam_channel::Sender<Line>) {
    for line in BufReader::new(r).lines() {
        let Ok(line) = line else { break };
        if tx.send(wrap(line)).is_err() {
            break;
        }
    }
}

fn drain(rx: &Receiver<Line>, wait: Duration, outputs: &mut [Option<WorkerOutput>]) {
    let mut first = true;
    loop {
        let line = if first && !wait.is_zero() {
            first = false;
            match rx.recv_timeout(wait) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.try_recv() {
                Ok(l) => l,
                Err(_) => return,
            }
        };
        match line {
            Line::Out(rank, text) => match serde_json::from_str::<WorkerOutput>(&text) {
                Ok(o) => outputs[rank as usize] = Some(o),
                Err(_) => println!("[rank {rank}] {text}"),
            },
            Line::Err(rank, text) => {
                let _ = writeln!(std::io::stderr(), "[rank {rank}] {text}");
            }
        }
    }
}
