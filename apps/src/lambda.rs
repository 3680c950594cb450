//! Workers as AWS Lambda functions: the handler every function runs (the same `updraft`
//! binary, started as `bootstrap` or as `updraft lambda`), and the driver behind
//! `updraft run --backend lambda` that invokes one function per rank and gathers the results.
//!
//! ```text
//!  driver ── Invoke(rank 0..N, JobEvent) ──▶ N functions ── register ──▶ rendezvous (a small host)
//!     ▲                                         │ punch links to each other, run the pipeline
//!     └──────── JobResult (report, timings) ◀───┘ (data from and to S3)
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use updraft_runtime::FailureClass;
use updraft_runtime::report::{JobReport, WorkerReport};

use crate::output;
use crate::worker::{WorkerArgs, WorkerOutput};

/// The event one function receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobEvent {
    /// Job id (the same for every rank of the job).
    pub job: String,
    /// This function's rank.
    pub rank: u32,
    /// Number of functions.
    pub world: u32,
    /// The rendezvous, `HOST:PORT`.
    pub rendezvous: String,
    /// The pipeline, as TOML text.
    pub pipeline: String,
    /// The environment variable of the function that holds the shared secret.
    #[serde(default = "default_secret_env")]
    pub secret_env: String,
    /// Time kept back from the invocation's deadline for reporting, in seconds.
    #[serde(default = "default_margin")]
    pub margin_s: f64,
    /// Which attempt of a retried job this is (1-based).
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

fn default_secret_env() -> String {
    crate::secret::ENV.to_string()
}

fn default_margin() -> f64 {
    2.0
}

/// What one function returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    /// Rank.
    pub rank: u32,
    /// This function's report: rows, checksums, phase times, bytes, channels.
    pub report: Option<WorkerReport>,
    /// The whole job's report (rank 0).
    pub job: Option<JobReport>,
    /// Bytes sent, by channel (`direct`, `redis`, `s3`).
    pub bytes_sent_by_channel: BTreeMap<String, u64>,
    /// Peak resident memory of the function's process, bytes.
    pub peak_memory_bytes: u64,
    /// Configured function memory, MB.
    pub memory_mb: u64,
    /// Time in the handler, ms: what Lambda bills, rounded up to the ms.
    pub billed_ms_estimate: u64,
    /// S3 PUT/LIST-class requests made by this invocation (files and relay).
    pub s3_puts: u64,
    /// S3 GET-class requests made by this invocation.
    pub s3_gets: u64,
}

/// Peak resident set size of this process (Linux `VmHWM`), bytes.
fn peak_memory() -> u64 {
    updraft_runtime::memory::peak_rss().unwrap_or(0)
}

/// A failed invocation: its class (the error type AWS tooling shows, `UpdraftError.<class>`)
/// and the worker's message.
#[derive(Debug)]
pub struct FunctionError {
    /// What kind of failure.
    pub class: FailureClass,
    /// What happened, naming the rank.
    pub message: String,
}

impl From<FunctionError> for lambda_runtime::Diagnostic {
    fn from(e: FunctionError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: format!("UpdraftError.{}", e.class.name()),
            error_message: e.message,
        }
    }
}

/// The variables the Lambda runtime needs (without them `lambda_runtime` panics).
const RUNTIME_VARIABLES: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// Runs the Lambda runtime loop: one job event per invocation. The process serves invocations
/// one after another while Lambda keeps it warm; each invocation's job is torn down before the
/// next (its own actix system, links, files; a fresh metrics recorder).
///
/// # Errors
/// Outside Lambda (a variable the runtime needs is unset), or the runtime API cannot be reached.
pub fn handler_main() -> anyhow::Result<ExitCode> {
    if let Some(missing) = RUNTIME_VARIABLES.iter().find(|v| std::env::var(v).is_err()) {
        bail!(
            "{missing} is not set: `updraft lambda` runs inside AWS Lambda (or a local emulator of its Runtime API)"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(lambda_runtime::run(lambda_runtime::service_fn(handle)))
        .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

async fn handle(event: lambda_runtime::LambdaEvent<JobEvent>) -> Result<JobResult, FunctionError> {
    let started = Instant::now();
    let (puts0, gets0) = updraft_transports::s3env::requests();
    let deadline_ms = event.context.deadline;
    let e = event.payload;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis()) as u64;
    let remaining = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    let rank = e.rank;
    let fail_as =
        |class: FailureClass, msg: String| FunctionError { class, message: format!("rank {rank}: {msg}") };
    let fail = |msg: String| fail_as(FailureClass::Config, msg);
    let margin = Duration::try_from_secs_f64(e.margin_s.max(0.0))
        .map_err(|_| fail(format!("margin_s = {} is not a number of seconds", e.margin_s)))?;
    let registry = crate::registry();
    let mut spec = updraft_config::parse_pipeline_with(&e.pipeline, "event.pipeline", registry)
        .map_err(|err| fail(err.to_string()))?;
    // Every deadline fits in what is left of the invocation.
    let budget = remaining.saturating_sub(margin);
    let needed = spec.runtime.rendezvous_timeout.min(Duration::from_secs(5)) + spec.runtime.mesh_timeout;
    if budget < needed {
        return Err(fail_as(
            FailureClass::Timeout,
            format!(
                "only {remaining:?} of the invocation left; the job needs more than {needed:?} to start (raise the function timeout)"
            ),
        ));
    }
    let r = &mut spec.runtime;
    r.job_timeout = r.job_timeout.min(budget);
    r.rendezvous_timeout = r.rendezvous_timeout.min(budget);
    r.mesh_timeout = r.mesh_timeout.min(budget);
    let secret = std::env::var(&e.secret_env).map(String::into_bytes).unwrap_or_default();
    if secret.is_empty() {
        return Err(fail(format!("the function has no secret in ${}", e.secret_env)));
    }
    let unresolved =
        |err: String| fail_as(FailureClass::Rendezvous, format!("rendezvous `{}`: {err}", e.rendezvous));
    let rendezvous: SocketAddr = tokio::net::lookup_host(&e.rendezvous)
        .await
        .map_err(|err| unresolved(err.to_string()))?
        .next()
        .ok_or_else(|| unresolved("no address".to_string()))?;
    let args = WorkerArgs {
        rendezvous,
        job: e.job.clone(),
        rank,
        world: e.world,
        pipeline: "event.pipeline".into(),
        bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        secret_file: None,
        json: true,
        watch_stdin: false,
        metrics_listen: None,
        attempt: e.attempt,
    };
    // The worker runs its own actix system, on a thread of its own; everything it starts ends
    // with it, so the next invocation of this (warm) process starts clean.
    let stop = crate::worker::Stop::default();
    let out: WorkerOutput =
        tokio::task::spawn_blocking(move || crate::worker::run(&args, spec, &secret, &stop, false))
            .await
            .map_err(|err| fail_as(FailureClass::Operator, format!("the worker thread failed: {err}")))?;
    if let Some(err) = out.error {
        return Err(fail_as(out.error_class.unwrap_or(FailureClass::Operator), err));
    }
    let memory_mb =
        std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").ok().and_then(|m| m.parse().ok()).unwrap_or(0);
    let by_channel: BTreeMap<String, u64> = out
        .report
        .as_ref()
        .map(|r| r.bytes_sent_by_channel.iter().map(|c| (c.channel.clone(), c.bytes)).collect())
        .unwrap_or_default();
    Ok(JobResult {
        rank,
        report: out.report,
        job: out.job,
        bytes_sent_by_channel: by_channel,
        peak_memory_bytes: peak_memory(),
        memory_mb,
        billed_ms_estimate: started.elapsed().as_millis() as u64 + 1,
        s3_puts: updraft_transports::s3env::requests().0 - puts0,
        s3_gets: updraft_transports::s3env::requests().1 - gets0,
    })
}

/// `updraft run --backend lambda` settings.
#[derive(Debug, Clone)]
pub struct LambdaRun {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Function name or ARN.
    pub function: String,
    /// Functions to invoke.
    pub workers: u32,
    /// Rendezvous address the functions can reach.
    pub rendezvous: String,
    /// Write the job report here.
    pub report: Option<PathBuf>,
    /// Print the job report as JSON on stdout instead of the summary.
    pub quiet: bool,
    /// Prices for the cost lines.
    pub pricing: Option<PathBuf>,
    /// Run a job that failed for a retryable reason again, up to this many more times.
    pub retries: u32,
}

/// What one invocation gave: the function's result, or its error with the class the function
/// reported (`None`: the platform's error, a crash or a timeout, or an invoke that failed).
type Outcome = Result<JobResult, (String, Option<FailureClass>)>;

/// Invokes one function per rank for attempt `attempt` of job `job`, and waits for all.
async fn invoke_all(
    client: &aws_sdk_lambda::Client,
    run: &LambdaRun,
    text: &str,
    job: &str,
    attempt: u32,
    limit: Duration,
) -> Vec<(u32, Outcome)> {
    let mut tasks = Vec::new();
    for rank in 0..run.workers {
        let event = JobEvent {
            job: job.to_string(),
            rank,
            world: run.workers,
            rendezvous: run.rendezvous.clone(),
            pipeline: text.to_string(),
            secret_env: default_secret_env(),
            margin_s: default_margin(),
            attempt,
        };
        let (client, function) = (client.clone(), run.function.clone());
        tasks.push(tokio::spawn(async move {
            let payload =
                serde_json::to_vec(&event).map_err(|e| (e.to_string(), Some(FailureClass::Config)))?;
            let call = client
                .invoke()
                .function_name(function)
                .payload(aws_sdk_lambda::primitives::Blob::new(payload))
                .send();
            let out = tokio::time::timeout(limit, call)
                .await
                .map_err(|_| (format!("no answer within {limit:?}"), Some(FailureClass::Timeout)))?
                .map_err(invoke_error)?;
            let body = out.payload().map(|b| b.as_ref().to_vec()).unwrap_or_default();
            if let Some(kind) = out.function_error() {
                let v = serde_json::from_slice::<serde_json::Value>(&body).ok();
                let msg = v
                    .as_ref()
                    .and_then(|v| v["errorMessage"].as_str().map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                let error_type = v.as_ref().and_then(|v| v["errorType"].as_str().map(str::to_string));
                let class = error_type
                    .as_deref()
                    .and_then(|t| t.strip_prefix("UpdraftError."))
                    .and_then(FailureClass::from_name);
                let kind = error_type.unwrap_or_else(|| kind.to_string());
                return Err((format!("{kind}: {msg}"), class));
            }
            serde_json::from_slice::<JobResult>(&body)
                .map_err(|e| (format!("unreadable result: {e}"), Some(FailureClass::Operator)))
        }));
    }
    let mut outcomes = Vec::new();
    for (rank, t) in tasks.into_iter().enumerate() {
        let outcome = t.await.map_err(|e| (e.to_string(), None)).and_then(|r| r);
        outcomes.push((rank as u32, outcome));
    }
    outcomes
}

fn lambda_client() -> anyhow::Result<aws_sdk_lambda::Client> {
    let aws = updraft_transports::s3env::AwsEnv::read("LAMBDA").map_err(anyhow::Error::msg)?;
    let mut config = aws_sdk_lambda::Config::builder()
        .behavior_version_latest()
        .region(aws.region)
        .credentials_provider(aws.credentials);
    if let Some(endpoint) = aws.endpoint {
        config = config.endpoint_url(endpoint);
    }
    Ok(aws_sdk_lambda::Client::from_conf(config.build()))
}

/// An Invoke call that failed, as the service or the network said it, with what to check, and
/// its class: a function that does not exist is the input's fault, anything else the
/// infrastructure's.
fn invoke_error(
    e: aws_sdk_lambda::error::SdkError<aws_sdk_lambda::operation::invoke::InvokeError>,
) -> (String, Option<FailureClass>) {
    let missing = e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception());
    let hint = if e.as_service_error().is_some() {
        "check the function name, its region and the caller's permissions"
    } else {
        "check the endpoint (AWS_ENDPOINT_URL or the region's), the network and the credentials"
    };
    let class = if missing { FailureClass::Config } else { FailureClass::Unavailable };
    (format!("invoke failed: {}; {hint}", error_chain(&e)), Some(class))
}

/// An error and its sources, each message once, joined by `: `.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// Every source and sink path of `spec` that is not in S3, at its key path: Lambda functions
/// cannot read or write the driver's disk.
fn local_paths(spec: &updraft_config::PipelineSpec) -> Vec<(String, String)> {
    let why = |p: &str| format!("`{p}` is a local path; Lambda functions read and write only s3:// paths");
    let mut out = Vec::new();
    for s in &spec.sources {
        let updraft_config::SourceKind::Files { files, .. } = &s.kind else { continue };
        match files {
            updraft_config::SourceFiles::PerRank(p) if !p.starts_with("s3://") => {
                out.push((format!("source.{}.path", s.name), why(p)));
            }
            updraft_config::SourceFiles::List(list) => {
                for p in list.iter().filter(|p| !p.starts_with("s3://")) {
                    out.push((format!("source.{}", s.name), why(p)));
                }
            }
            updraft_config::SourceFiles::PerRank(_) => {}
        }
    }
    for s in &spec.sinks {
        if let updraft_config::SinkKind::File { path, .. } = &s.kind
            && !path.starts_with("s3://")
        {
            out.push((format!("sink.{}.path", s.name), why(path)));
        }
    }
    out
}

/// Invokes one function per rank, waits for all, prints the job summary and cost.
///
/// # Errors
/// The pipeline or the client cannot be set up; failed ranks make the exit code 1.
pub fn drive(run: LambdaRun) -> anyhow::Result<ExitCode> {
    // Functions see only S3: refuse local paths before anything is invoked.
    if let Ok(spec) = output::load_pipeline(&run.pipeline) {
        let local = local_paths(&spec);
        if !local.is_empty() {
            let text = std::fs::read_to_string(&run.pipeline).unwrap_or_default();
            eprintln!("{}", updraft_config::errors_at(&text, &run.pipeline.display().to_string(), &local));
            return Ok(ExitCode::from(2));
        }
    }
    let spec = match output::load_checked_pipeline(&run.pipeline, run.workers) {
        Ok(checked) => checked.spec,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    if run.workers == 0 {
        return Err(output::BadInput("--workers must be at least 1".into()).into());
    }
    let text = std::fs::read_to_string(&run.pipeline)
        .with_context(|| format!("cannot read {}", run.pipeline.display()))?;
    let client = lambda_client()?;
    // The invocation deadline: the job's, plus start-up; Lambda itself stops at 15 minutes.
    let limit = spec.runtime.job_timeout + spec.runtime.rendezvous_timeout + Duration::from_secs(60);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let started = Instant::now();
    let mut attempts: Vec<String> = Vec::new();
    let (job, outcomes) = loop {
        let attempt = attempts.len() as u32 + 1;
        let job = format!("lambda-{}", crate::secret::fresh().get(..16).unwrap_or("job"));
        let outcomes = rt.block_on(invoke_all(&client, &run, &text, &job, attempt, limit));
        let failures: Vec<(u32, &(String, Option<FailureClass>))> =
            outcomes.iter().filter_map(|(r, o)| o.as_ref().err().map(|e| (*r, e))).collect();
        let retryable =
            !failures.is_empty() && failures.iter().all(|(_, (_, c))| c.is_none_or(FailureClass::retryable));
        if failures.is_empty() || !retryable || attempt > run.retries {
            break (job, outcomes);
        }
        let cause = failures
            .iter()
            .find(|(_, (_, c))| c.is_none())
            .or(failures.first())
            .map(|(r, (e, _))| format!("rank {r}: {e}"))
            .unwrap_or_default();
        let pause = crate::cluster::retry_pause(attempt);
        eprintln!("updraft: attempt {attempt} (job `{job}`) failed ({cause}); invoking again in {pause:?}");
        attempts.push(cause);
        rt.block_on(tokio::time::sleep(pause));
    };
    let wall = started.elapsed();
    if !attempts.is_empty() {
        eprintln!("updraft: {} attempts:", attempts.len() + 1);
        for (i, why) in attempts.iter().enumerate() {
            eprintln!("  attempt {}: failed: {why}", i + 1);
        }
    }
    let failures: Vec<(u32, String, Option<FailureClass>)> =
        outcomes.iter().filter_map(|(r, o)| o.as_ref().err().map(|(e, c)| (*r, e.clone(), *c))).collect();
    if !failures.is_empty() {
        eprintln!("updraft: job `{job}` failed on {} of {} functions:", failures.len(), run.workers);
        for (rank, e, _) in &failures {
            eprintln!("  rank {rank}: {e}");
        }
        return Ok(output::failure_exit(output::root_failure(&failures).and_then(|f| f.2)));
    }
    let results: Vec<JobResult> = outcomes.into_iter().filter_map(|(_, o)| o.ok()).collect();
    let Some(job_report) = results.iter().find_map(|r| r.job.clone()) else {
        bail!("rank 0 returned no job report");
    };
    if let Some(path) = &run.report {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if run.quiet {
        println!("{}", serde_json::to_string_pretty(&job_report)?);
        return Ok(ExitCode::SUCCESS);
    }
    output::print_job(&job_report);
    let billed_s: f64 = results.iter().map(|r| r.billed_ms_estimate as f64 / 1000.0).fold(0.0, f64::max);
    let memory_gb = results.iter().map(|r| r.memory_mb).max().unwrap_or(0) as f64 / 1024.0;
    let peak = results.iter().map(|r| r.peak_memory_bytes).max().unwrap_or(0);
    println!(
        "  functions: {} invoked, slowest billed {:.3} s at {} MB, peak memory {} (driver wall {:.3} s)",
        results.len(),
        billed_s,
        (memory_gb * 1024.0) as u64,
        output::bytes(peak),
        wall.as_secs_f64()
    );
    let mut by_channel: BTreeMap<String, u64> = BTreeMap::new();
    for r in &results {
        for (c, b) in &r.bytes_sent_by_channel {
            *by_channel.entry(c.clone()).or_default() += b;
        }
    }
    let channels: Vec<String> =
        by_channel.iter().map(|(c, b)| format!("{c} {}", output::bytes(*b))).collect();
    println!(
        "  sent by channel: {}",
        if channels.is_empty() { "-".to_string() } else { channels.join(", ") }
    );
    let pricing = output::load_pricing(run.pricing.as_deref())?;
    // Billed time of each function, not the job's wall time: price the slowest for all.
    let mut priced = job_report.clone();
    priced.wall_us = (billed_s * 1e6) as u64;
    let puts = results.iter().map(|r| r.s3_puts).sum();
    let gets = results.iter().map(|r| r.s3_gets).sum();
    output::print_cost(&priced, memory_gb.max(0.125), puts, gets, &pricing);
    Ok(ExitCode::SUCCESS)
}
