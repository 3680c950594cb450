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
mod lambda;
mod limits;
mod output;
mod plot;
mod secret;
mod telemetry;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use updraft_operators::registry::{BuildContext, OperatorFactory, Registry, RegistryError};
pub use updraft_runtime::report::TableSummary;
pub use updraft_runtime::{Flow, Operator, OperatorError, Output};
pub use {arrow_array, arrow_schema, toml};

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
    // Set once per process; a second call keeps the first registry.
    let _ = REGISTRY.set(registry);
    let filter = tracing_subscriber::EnvFilter::try_from_env("UPDRAFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    // Deployed to Lambda as `bootstrap`, the binary is the function's runtime.
    let exe = std::env::args_os().next().map(PathBuf::from);
    if exe.as_deref().and_then(std::path::Path::file_name).is_some_and(|n| n == "bootstrap") {
        return finish(lambda::handler_main());
    }
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Worker(_) | Command::Lambda | Command::Rendezvous { .. }) {
        quiet_on_closed_stdout();
    }
    let result = match cli.command {
        Command::Run(args) => cluster::run(args),
        Command::Worker(args) => worker::main(args),
        Command::Lambda => lambda::handler_main(),
        Command::Rendezvous { listen, secret_file, metrics_listen } => {
            serve_rendezvous(listen, secret_file, metrics_listen)
        }
        Command::Validate { file, workers } => validate(&file, workers),
        Command::Explain { file, workers } => explain(&file, workers),
        Command::Bench { which } => bench::run(which),
        Command::Cost { workers, seconds, memory_gb, s3_puts, s3_gets, pricing } => {
            cost(workers, seconds, memory_gb, s3_puts, s3_gets, pricing.as_deref())
        }
    };
    finish(result)
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

fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("updraft: error: {e:#}");
            ExitCode::from(1)
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
    if workers == 0 || !(seconds >= 0.0 && seconds.is_finite()) || !(memory_gb > 0.0 && memory_gb <= 10.24) {
        anyhow::bail!("--workers must be at least 1, --seconds at least 0, --memory-gb in (0, 10.24]");
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
    Ok(ExitCode::SUCCESS)
}

fn serve_rendezvous(
    listen: SocketAddr,
    secret_file: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let secret = secret::load(secret_file.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let server = updraft_transports::rendezvous::RendezvousServer::bind(
            listen,
            updraft_transports::rendezvous::ServerConfig::new(secret),
        )
        .await?;
        println!("rendezvous listening on {}", server.local_addr());
        if let Some(addr) = metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            let bound = listener.local_addr()?;
            let store = server.metrics_store();
            tokio::spawn(telemetry::serve(listener, move || {
                store.lock().map(|s| s.render()).unwrap_or_default()
            }));
            println!("job metrics at http://{bound}/metrics");
        }
        server.wait().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn explain(file: &std::path::Path, workers: u32) -> anyhow::Result<ExitCode> {
    let (spec, inputs) = match output::load_checked_pipeline(file, workers) {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let world = workers.max(1);
    let plan = output::plan_for(&spec, world, &inputs)?;
    let edges = plan.edges()?;
    println!(
        "job `{}` on {world} workers: {} stages per worker, {} edges",
        spec.name,
        plan.stages.len(),
        edges.len()
    );
    for (i, line) in plan.describe().into_iter().enumerate() {
        println!("  {i:>2}  {line}");
    }
    let exchanges: Vec<String> = edges
        .iter()
        .filter(|e| e.exchange)
        .map(|e| format!("{} -> {}", plan.stages[e.from].name, plan.stages[e.to].name))
        .collect();
    println!("rows cross ranks on {} edges (all-to-all):", exchanges.len());
    for x in exchanges {
        println!("  {x}");
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(file: &std::path::Path, workers: u32) -> anyhow::Result<ExitCode> {
    let (spec, inputs) = match output::load_checked_pipeline(file, workers) {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let plan = output::plan_for(&spec, workers.max(1), &inputs)?;
    println!("{}: ok", file.display());
    println!("plan for {} workers (stage [phase] <- inputs):", workers.max(1));
    for line in plan.describe() {
        println!("  {line}");
    }
    Ok(ExitCode::SUCCESS)
}
