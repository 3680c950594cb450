//! `updraft`: run a pipeline on local workers, run one worker, serve the rendezvous, validate a
//! pipeline, benchmark.
//!
//! The command line is also a library, so that a program can add operators of its own and
//! still be the whole `updraft` command: register them in a [`Registry`] and hand it to
//! [`main_with`]. The local cluster starts workers by running the current executable again,
//! so every worker knows the same operators. `apps/examples/custom_operator.rs` is a complete
//! example; the [`Operator`] trait documents the calls an operator receives.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     let mut registry = updraft::Registry::new();
//!     // registry.register("my_operator", build_my_operator).expect("a new name");
//!     updraft::main_with(registry)
//! }
//! ```

mod bench;
mod bench_channels;
mod bench_faults;
mod bench_mesh;
mod bench_scaling;
mod cluster;
mod fingerprint;
mod inspect;
mod lambda;
mod limits;
mod output;
pub mod placement;
mod plot;
mod progress;
mod secret;
mod telemetry;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use arrow_schema::SchemaRef;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use updraft_operators::registry::{BuildContext, OperatorFactory, Registry, RegistryError};
pub use updraft_runtime::report::TableSummary;
pub use updraft_runtime::{Flow, Operator, OperatorError, Output};
pub use {arrow_array, arrow_schema, toml};

/// The Arrow crates an operator needs, at the versions updraft is built with, so that an
/// embedding crate's Arrow types are updraft's own: `updraft::arrow::array::RecordBatch`,
/// `updraft::arrow::cast::cast`, `updraft::arrow::select::take::take`.
pub mod arrow {
    pub use arrow_array as array;
    pub use arrow_cast as cast;
    pub use arrow_schema as schema;
    pub use arrow_select as select;
}

static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();

/// The operators this program registered (none for the plain `updraft` binary).
pub(crate) fn registry() -> &'static Registry {
    REGISTRY.get_or_init(Registry::new)
}

/// Distributed data frames over hole-punched TCP links.
#[derive(Parser, Debug)]
#[command(name = "updraft", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a pipeline on N local worker processes with an embedded rendezvous.
    Run(cluster::RunArgs),
    /// Run one worker of a job (the same code the local cluster starts N times).
    Worker(worker::WorkerArgs),
    /// Run as an AWS Lambda function (the runtime API comes from AWS_LAMBDA_RUNTIME_API); the
    /// binary does this by itself when it is started as `bootstrap`.
    Lambda,
    /// Serve the rendezvous for any number of jobs.
    Rendezvous {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:7000")]
        listen: SocketAddr,
        /// File holding the shared secret (default: the UPDRAFT_SECRET environment variable).
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Serve the metrics every worker pushes, one `/metrics` for all jobs, here.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// How long a worker's metrics stay on `/metrics` after its last push (e.g. 10m, 30s):
        /// a finished job's series disappear this long after it ended.
        #[arg(long, default_value = "10m", value_parser = parse_duration_arg)]
        metrics_keep: std::time::Duration,
    },
    /// Check a pipeline file and print its plan; every error is reported with its key path.
    Validate {
        /// Pipeline file.
        file: PathBuf,
        /// Workers to plan for.
        #[arg(long, default_value_t = 4)]
        workers: u32,
    },
    /// Print the plan of a pipeline: stages, phases, inputs, and where rows cross ranks.
    Explain {
        /// Pipeline file.
        file: PathBuf,
        /// Workers to plan for.
        #[arg(long, default_value_t = 4)]
        workers: u32,
    },
    /// Print the schema and row count of files (one file, a directory or glob patterns), and
    /// the schema they agree on as one source.
    Schema {
        /// Files, directories or patterns, local or s3://.
        #[arg(required = true)]
        paths: Vec<String>,
        /// parquet, csv, ipc or json (default: from the first path's extension).
        #[arg(long)]
        format: Option<String>,
    },
    /// What N workers x T seconds x M GB would cost on Lambda, and on always-on VMs.
    Cost {
        /// Functions (workers).
        #[arg(long)]
        workers: u32,
        /// Seconds each runs.
        #[arg(long)]
        seconds: f64,
        /// Function memory in GB.
        #[arg(long)]
        memory_gb: f64,
        /// S3 PUT/LIST requests.
        #[arg(long, default_value_t = 0)]
        s3_puts: u64,
        /// S3 GET requests.
        #[arg(long, default_value_t = 0)]
        s3_gets: u64,
        /// Prices (default: the shipped config/pricing.toml).
        #[arg(long)]
        pricing: Option<PathBuf>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
}

/// Runs the `updraft` command line with the operators in `registry` available to pipelines.
pub fn main_with(registry: Registry) -> ExitCode {
    ExitCode::from(run_cli(registry, std::env::args_os().collect()))
}

/// Runs the `updraft` command line on `args` (`args[0]` is the program name) with the operators
/// in `registry`, and returns its exit status (see README "Commands": 0 ok, 1 job failed, 2 bad
/// input, 3 infrastructure). For a host program (the Python extension) that is not the
/// `updraft` binary; it may be called more than once in a process.
pub fn run_cli(registry: Registry, args: Vec<std::ffi::OsString>) -> u8 {
    status_of(main_on(registry, args))
}

/// The number an [`ExitCode`] stands for.
fn status_of(code: ExitCode) -> u8 {
    (0..=u8::MAX).find(|k| code == ExitCode::from(*k)).unwrap_or(1)
}

fn main_on(registry: Registry, args: Vec<std::ffi::OsString>) -> ExitCode {
    // Set once per process; a second call keeps the first registry.
    let _ = REGISTRY.set(registry);
    let filter = tracing_subscriber::EnvFilter::try_from_env("UPDRAFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // A second call in one process keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
    // Deployed to Lambda as `bootstrap`, the binary is the function's runtime.
    let exe = args.first().map(PathBuf::from);
    if exe.as_deref().and_then(std::path::Path::file_name).is_some_and(|n| n == "bootstrap") {
        return finish(lambda::handler_main());
    }
    let cli = match parse_cli(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if !matches!(cli.command, Command::Worker(_) | Command::Lambda | Command::Rendezvous { .. }) {
        quiet_on_closed_stdout();
    }
    let result = match cli.command {
        Command::Run(args) => cluster::run(args),
        Command::Worker(args) => worker::main(args),
        Command::Lambda => lambda::handler_main(),
        Command::Rendezvous { listen, secret_file, metrics_listen, metrics_keep } => {
            serve_rendezvous(listen, secret_file, metrics_listen, metrics_keep)
        }
        Command::Validate { file, workers } => validate(&file, workers),
        Command::Explain { file, workers } => explain(&file, workers),
        Command::Schema { paths, format } => inspect::schema(&paths, format.as_deref()),
        Command::Bench { which } => bench::run(which),
        Command::Cost { workers, seconds, memory_gb, s3_puts, s3_gets, pricing } => {
            cost(workers, seconds, memory_gb, s3_puts, s3_gets, pricing.as_deref())
        }
    };
    finish(result)
}

/// Parses the command line; `updraft worker` takes its rank, world size and job id from a
/// scheduler's environment where the flags do not give them (see [`placement`]).
fn parse_cli(args: Vec<std::ffi::OsString>) -> Result<Cli, ExitCode> {
    let mut command = Cli::command();
    let given =
        |flag: &str| args.iter().any(|a| a == flag || a.to_string_lossy().starts_with(&format!("{flag}=")));
    let all_given = given("--rank") && given("--world") && given("--job");
    let help = given("--help") || given("-h");
    if args.get(1).is_some_and(|a| a == "worker") && !all_given && !help {
        match placement::from_env(|name| std::env::var(name).ok()) {
            Ok(Some(p)) => {
                tracing::info!(from = p.from, rank = ?p.rank, world = ?p.world, job = ?p.job, "placement from the environment");
                command = command.mut_subcommand("worker", |mut c| {
                    for (arg, value) in [
                        ("rank", p.rank.map(|r| r.to_string())),
                        ("world", p.world.map(|w| w.to_string())),
                        ("job", p.job.clone()),
                    ] {
                        if let Some(v) = value {
                            c = c.mut_arg(arg, |a| a.default_value(v).required(false));
                        }
                    }
                    c
                });
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("updraft worker: {e}");
                return Err(ExitCode::from(2));
            }
        }
    }
    let matches = command.try_get_matches_from(args).map_err(|e| {
        // Help and version are not errors (status 0); a usage error is bad input (2).
        let _ = e.print();
        ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
    })?;
    Cli::from_arg_matches(&matches).map_err(|e| {
        let _ = e.print();
        ExitCode::from(2)
    })
}

/// Lets a closed stdout end the process quietly, as it ends Unix tools (`updraft run ... | head`
/// exits with status 141, not a panic). Workers keep the default Rust behaviour (SIGPIPE
/// ignored, write errors handled) so that a dead launcher's pipe never kills them before they
/// remove their temporary files.
fn quiet_on_closed_stdout() {
    // SAFETY: restoring the default disposition of SIGPIPE, before any thread is started;
    // `signal` has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The exit status of a command: its own, or for an error 2 when an argument or input is
/// wrong ([`output::BadInput`]) and 3 when updraft could not do its work (a process, port, file
/// or service failed). A failed job exits 1, 2 or 3 by its cause ([`output::failure_exit`]).
fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("updraft: error: {e:#}");
            if e.downcast_ref::<output::BadInput>().is_some() { ExitCode::from(2) } else { ExitCode::from(3) }
        }
    }
}

fn cost(
    workers: u32,
    seconds: f64,
    memory_gb: f64,
    puts: u64,
    gets: u64,
    pricing: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    // Lambda's limits: a function runs at most 900 s, with 128 MB to 10,240 MB of memory.
    let problems: Vec<&str> = [
        (workers == 0, "--workers must be at least 1"),
        (
            !(0.0..=900.0).contains(&seconds),
            "--seconds must be 0 to 900 (a Lambda function runs at most 15 minutes)",
        ),
        (
            !(0.125..=10.24).contains(&memory_gb),
            "--memory-gb must be 0.125 to 10.24 (Lambda's 128 MB to 10,240 MB)",
        ),
    ]
    .into_iter()
    .filter_map(|(bad, msg)| bad.then_some(msg))
    .collect();
    if !problems.is_empty() {
        return Err(output::BadInput(problems.join("; ")).into());
    }
    let p = output::load_pricing(pricing)?;
    let e = p.estimate(workers, seconds, memory_gb, puts, gets);
    println!("{workers} functions x {seconds} s x {memory_gb} GB ({} prices of {}):", p.region, p.as_of);
    println!(
        "  compute      {:>14}  ({:.3} GB-s x ${}/GB-s)",
        output::usd(e.lambda_compute),
        e.gb_seconds,
        p.lambda.gb_second
    );
    println!("  invocations  {:>14}  ({workers} x ${})", output::usd(e.lambda_requests), p.lambda.request);
    println!("  S3 requests  {:>14}  ({puts} PUT, {gets} GET)", output::usd(e.s3_requests));
    println!("  Lambda total {:>14}", output::usd(e.lambda_total));
    println!(
        "  {workers} always-on VMs ({}) for the same {seconds} s: {}",
        p.vm.name,
        output::usd(e.vm_total)
    );
    let month = p.rendezvous.hourly * updraft_config::pricing::HOURS_PER_MONTH;
    println!(
        "  the rendezvous host ({}), always on: {} per month ({} per hour), not in the totals above",
        p.rendezvous.name,
        output::usd(month),
        output::usd(p.rendezvous.hourly)
    );
    Ok(ExitCode::SUCCESS)
}

/// A duration argument as pipelines write them (`30s`, `10m`, `1h`).
pub(crate) fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    updraft_config::parse_duration(text)
}

fn serve_rendezvous(
    listen: SocketAddr,
    secret_file: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
    metrics_keep: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    let secret = secret::load(secret_file.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let mut config = updraft_transports::rendezvous::ServerConfig::new(secret);
        config.metrics_keep = metrics_keep;
        let server = updraft_transports::rendezvous::RendezvousServer::bind(listen, config).await?;
        println!("rendezvous listening on {}", server.local_addr());
        if let Some(addr) = metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            let bound = listener.local_addr()?;
            tokio::spawn(telemetry::serve(listener, server.metrics_exposition()));
            println!("job metrics at http://{bound}/metrics");
        }
        server.wait().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Prints each stage of `plan` (numbered when `numbered`) with the schema it emits.
fn print_stages(
    plan: &updraft_runtime::plan::PhysicalPlan,
    schemas: &[(String, Option<SchemaRef>)],
    numbered: bool,
) {
    for (i, line) in plan.describe().into_iter().enumerate() {
        if numbered {
            println!("  {i:>2}  {line}");
        } else {
            println!("  {line}");
        }
        let indent = if numbered { "        " } else { "      " };
        match schemas.get(i) {
            Some((name, Some(schema))) if Some(name) == plan.stages.get(i).map(|s| &s.name) => {
                if schema.fields().is_empty() {
                    println!("{indent}(no columns)");
                }
                for l in output::schema_lines(schema, indent) {
                    println!("{l}");
                }
            }
            _ => println!("{indent}(schema not known before the run)"),
        }
    }
}

fn explain(file: &std::path::Path, workers: u32) -> anyhow::Result<ExitCode> {
    let checked = match output::load_checked_pipeline(file, workers) {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let (spec, inputs) = (&checked.spec, &checked.inputs);
    let world = workers.max(1);
    let plan = output::plan_for(spec, world, inputs)?;
    let edges = plan.edges()?;
    println!(
        "job `{}` on {world} workers: {} stages per worker, {} edges",
        spec.name,
        plan.stages.len(),
        edges.len()
    );
    print_stages(&plan, &checked.schemas, true);
    let exchanges: Vec<String> = edges
        .iter()
        .filter(|e| e.exchange)
        .map(|e| format!("{} -> {}", plan.stages[e.from].name, plan.stages[e.to].name))
        .collect();
    println!("rows cross ranks on {} edges (all-to-all):", exchanges.len());
    for x in exchanges {
        println!("  {x}");
    }
    for s in &spec.sources {
        let Some(source) = inputs.sources.get(&s.name) else { continue };
        println!("source `{}` reads {} files:", s.name, source.files.len());
        for rank in 0..world {
            let share: Vec<String> = source.share(rank, world).iter().map(ToString::to_string).collect();
            let shown = if share.is_empty() { "(none)".to_string() } else { share.join(", ") };
            println!("  rank {rank}: {shown}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(file: &std::path::Path, workers: u32) -> anyhow::Result<ExitCode> {
    let checked = match output::load_checked_pipeline(file, workers) {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let plan = output::plan_for(&checked.spec, workers.max(1), &checked.inputs)?;
    println!("{}: ok", file.display());
    println!("plan for {} workers (stage [phase] <- inputs, then the columns it emits):", workers.max(1));
    print_stages(&plan, &checked.schemas, false);
    Ok(ExitCode::SUCCESS)
}
