//! Loading pipelines and printing job summaries.

use std::path::Path;
use std::process::ExitCode;

use arrow_schema::{DataType, Schema, SchemaRef, TimeUnit};
use updraft_config::{ConfigError, ConfigErrors, PipelineSpec, errors_at, parse_pipeline_with};
use updraft_operators::inputs::JobInputs;
use updraft_runtime::FailureClass;
use updraft_runtime::report::JobReport;

/// Reads and validates a pipeline file.
///
/// # Errors
/// Every problem in the file, or one saying it cannot be read.
pub fn load_pipeline(path: &Path) -> Result<PipelineSpec, ConfigErrors> {
    load(path).map(|(spec, _)| spec)
}

/// A wrong argument or input given to a command: exits with status 2 (see [`failure_exit`]).
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Exit status of a failed job whose explaining failure (see [`root_failure`]) has class
/// `class`: 2 when the input is wrong (`Config`, `Data`: fix the pipeline or the data;
/// `ResourcesExhausted`: raise `runtime.memory_limit`), 3 when
/// the infrastructure failed (`Link`, `Rendezvous`, `Timeout`, `Unavailable`, `Commit`: running
/// again may succeed), 1 otherwise (an operator failed, the job was cancelled, a worker died
/// without a word).
pub fn failure_exit(class: Option<FailureClass>) -> ExitCode {
    match class {
        Some(FailureClass::Config | FailureClass::Data | FailureClass::ResourcesExhausted) => {
            ExitCode::from(2)
        }
        Some(
            FailureClass::Link
            | FailureClass::Rendezvous
            | FailureClass::Timeout
            | FailureClass::Unavailable
            | FailureClass::Commit,
        ) => ExitCode::from(3),
        Some(FailureClass::Operator | FailureClass::Cancelled) | None => ExitCode::from(1),
    }
}

/// Of each rank's failure (rank, message, class), the one that explains the others: a class a
/// rerun cannot fix first, then a worker that died without a word, then the first.
pub fn root_failure(
    failures: &[(u32, String, Option<FailureClass>)],
) -> Option<&(u32, String, Option<FailureClass>)> {
    failures
        .iter()
        .find(|(_, _, c)| c.is_some_and(|c| !c.retryable()))
        .or_else(|| failures.iter().find(|(_, _, c)| c.is_none()))
        .or_else(|| failures.first())
}

/// A pipeline that passed every check, with what the checks found.
pub struct Checked {
    /// The pipeline.
    pub spec: PipelineSpec,
    /// The files and agreed schema of every source that could be read.
    pub inputs: JobInputs,
    /// Each stage of rank 0's plan with the schema it emits (a sink: what it writes).
    pub schemas: Vec<(String, Option<SchemaRef>)>,
}

/// One line per column: `name  type` (`not null` where the column holds no nulls by its
/// schema), indented by `indent`.
pub fn schema_lines(schema: &Schema, indent: &str) -> Vec<String> {
    let width = schema.fields().iter().map(|f| f.name().chars().count()).max().unwrap_or(0);
    schema
        .fields()
        .iter()
        .map(|f| {
            let null = if f.is_nullable() { "" } else { " not null" };
            format!("{indent}{:<width$}  {}{null}", f.name(), type_name(f.data_type()))
        })
        .collect()
}

/// A type as pipelines spell it where they can (`int64`, `utf8`, `timestamp[us, UTC]`), else
/// Arrow's own name.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Timestamp(unit, tz) => {
            let unit = match unit {
                TimeUnit::Second => "s",
                TimeUnit::Millisecond => "ms",
                TimeUnit::Microsecond => "us",
                TimeUnit::Nanosecond => "ns",
            };
            tz.as_ref().map_or_else(|| format!("timestamp[{unit}]"), |z| format!("timestamp[{unit}, {z}]"))
        }
        DataType::Dictionary(k, v) => format!("dictionary<{}, {}>", type_name(k), type_name(v)),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
            let bits = if matches!(t, DataType::Decimal128(..)) { 128 } else { 256 };
            format!("decimal{bits}({p}, {s})")
        }
        _ => t.to_string().to_lowercase(),
    }
}

/// Reads and validates a pipeline file, then agrees its inputs as a job of `world` workers
/// would (every file listed and its schema read) and checks its columns and types (see
/// [`updraft_operators::check`]). Sources that cannot be read because a service cannot be
/// reached are named on stderr; what follows them is not checked.
///
/// # Errors
/// Every problem in the file, with its inputs, or with its columns, each at its key path.
pub fn load_checked_pipeline(path: &Path, world: u32) -> Result<Checked, ConfigErrors> {
    let (spec, text) = load(path)?;
    let check = updraft_operators::check::check_columns(&spec, world, crate::registry());
    for u in &check.unchecked {
        eprintln!("note: {}: columns after `{}` not checked: {}", path.display(), u.path, u.message);
    }
    let mut problems: Vec<(String, String)> =
        check.problems.into_iter().map(|p| (p.path, p.message)).collect();
    if let Ok(plan) = plan_for(&spec, world.max(1), &check.inputs)
        && let Err(e) = crate::limits::check(plan.stages.len(), world.max(1))
    {
        problems.push((String::new(), e));
    }
    if problems.is_empty() {
        return Ok(Checked { spec, inputs: check.inputs, schemas: check.schemas });
    }
    Err(errors_at(&text, &path.display().to_string(), &problems))
}

fn load(path: &Path) -> Result<(PipelineSpec, String), ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse_pipeline_with(&text, &name, crate::registry()).map(|spec| (spec, text)),
        Err(e) => Err(ConfigErrors {
            source_name: name,
            errors: vec![ConfigError {
                path: String::new(),
                line: 0,
                column: 0,
                message: format!("cannot read the file: {e}"),
            }],
        }),
    }
}

/// The plan rank 0 of `world` workers runs, with the inputs `validate` agreed (sources it could
/// not read are planned without files).
///
/// # Errors
/// As for [`updraft_operators::build_plan_with`].
pub fn plan_for(
    spec: &PipelineSpec,
    world: u32,
    inputs: &JobInputs,
) -> anyhow::Result<updraft_runtime::plan::PhysicalPlan> {
    let mut inputs = inputs.clone();
    for s in &spec.sources {
        if matches!(s.kind, updraft_config::SourceKind::Files { .. }) && !inputs.sources.contains_key(&s.name)
        {
            let empty = updraft_operators::inputs::SourceInputs {
                files: Vec::new(),
                per_rank: false,
                schema: std::sync::Arc::new(arrow_schema::Schema::empty()),
            };
            inputs.sources.insert(s.name.clone(), empty);
        }
    }
    let outputs = updraft_operators::outputs::JobOutputs::new(spec, 0, world, "0000000000000000");
    let memory = updraft_runtime::MemoryPool::unbounded();
    let ctx = updraft_operators::PlanContext {
        rank: 0,
        world,
        inputs: &inputs,
        outputs: &outputs,
        memory: &memory,
    };
    Ok(updraft_operators::build_plan_with(spec, ctx, crate::registry())?)
}

/// Prices from `path`, or the shipped defaults.
///
/// # Errors
/// An unreadable or invalid file, named.
pub fn load_pricing(path: Option<&Path>) -> anyhow::Result<updraft_config::pricing::Pricing> {
    use updraft_config::pricing::Pricing;
    match path {
        None => Pricing::defaults().map_err(anyhow::Error::msg),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| BadInput(format!("cannot read {}: {e}", p.display())))?;
            Pricing::parse(&text).map_err(|e| BadInput(format!("{}: {e}", p.display())).into())
        }
    }
}

/// Dollars with enough digits for sub-cent amounts.
pub fn usd(x: f64) -> String {
    format!("${x:.6}")
}

/// The cost lines of a job summary: the run as if on Lambda (each worker billed for the job's
/// wall time at `memory_gb`), next to the same wall time on an always-on cluster of VMs.
pub fn print_cost(
    job: &JobReport,
    memory_gb: f64,
    puts: u64,
    gets: u64,
    pricing: &updraft_config::pricing::Pricing,
) {
    let seconds = job.wall_us as f64 / 1e6;
    let e = pricing.estimate(job.world, seconds, memory_gb, puts, gets);
    println!(
        "  cost as if on Lambda: {} ({} workers x {seconds:.3} s x {memory_gb} GB = {:.3} GB-s: compute {}, \
         invocations {}, S3 requests {} for {puts} PUT/LIST and {gets} GET; {} prices of {})",
        usd(e.lambda_total),
        job.world,
        e.gb_seconds,
        usd(e.lambda_compute),
        usd(e.lambda_requests),
        usd(e.s3_requests),
        pricing.region,
        pricing.as_of
    );
    println!("  same wall time on {} always-on VMs ({}): {}", job.world, pricing.vm.name, usd(e.vm_total));
}

/// Milliseconds with one decimal.
pub fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// Bytes in binary units.
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", units[u]) }
}

/// Prints the job summary: sinks (rows, checksum), the phase table, traffic.
pub fn print_job(job: &JobReport) {
    println!("job `{}` on {} workers: ok", job.job, job.world);
    for s in &job.sinks {
        if s.summary.columns.is_empty() {
            println!("  sink {:<16} rows {:>12}", s.name, s.summary.rows);
        } else {
            println!(
                "  sink {:<16} rows {:>12}   checksum {:016x}",
                s.name, s.summary.rows, s.summary.row_checksum
            );
            for c in &s.summary.columns {
                println!("       {:<16} column {:<20} {:016x}", "", c.name, c.checksum);
            }
        }
    }
    println!();
    println!("  {:<20} {:>12} {:>12} {:>12}", "phase", "busy max", "busy mean", "done at");
    for p in &job.phases {
        println!(
            "  {:<20} {:>12} {:>12} {:>12}",
            p.phase.label(),
            ms(p.busy_max_us),
            ms(p.busy_mean_us),
            ms(p.end_max_us)
        );
    }
    println!("  {:<20} {:>12} {:>12} {:>12}", "total (wall)", "", "", ms(job.wall_us));
    let pairs = u64::from(job.world) * u64::from(job.world.saturating_sub(1)) / 2;
    let (by_channel, relayed) = job.pairs_by_channel();
    let direct = by_channel.iter().find(|(c, _)| c == "direct").map_or(0, |(_, n)| u64::from(*n));
    if relayed.is_empty() {
        println!(
            "  links: {pairs} pairs punched concurrently in {} (slowest worker), {} connect attempts",
            ms(job.mesh_us),
            job.punch_attempts
        );
    } else {
        let counts: Vec<String> = by_channel.iter().map(|(c, n)| format!("{n} {c}")).collect();
        let shown: Vec<String> = relayed.iter().take(8).map(|(a, b, c)| format!("{a}-{b} {c}")).collect();
        let more =
            if relayed.len() > 8 { format!(", and {} more", relayed.len() - 8) } else { String::new() };
        println!("  links: {pairs} pairs: {}; relayed: {}{more}", counts.join(", "), shown.join(", "));
        if direct > 0 {
            println!(
                "         {direct} punched concurrently in {} (slowest worker), {} connect attempts",
                ms(job.mesh_us),
                job.punch_attempts
            );
        }
    }
    let mut by_channel: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for w in &job.workers {
        for c in &w.bytes_sent_by_channel {
            *by_channel.entry(c.channel.as_str()).or_default() += c.bytes;
        }
    }
    let sealed = match job.encryption.as_str() {
        "none" => String::new(),
        "" => ", sealed".to_string(),
        name => format!(", sealed with {name}"),
    };
    if by_channel.len() > 1 {
        let parts: Vec<String> = by_channel.iter().map(|(c, n)| format!("{c} {}", bytes(*n))).collect();
        println!("  sent over links: {} ({}){sealed}", bytes(job.bytes_sent), parts.join(", "));
    } else {
        println!("  sent over links: {}{sealed}", bytes(job.bytes_sent));
    }
    if job.encryption == "none" {
        println!(
            "  warning: links carried frames in the clear (runtime.encryption = \"none\"): anyone on the \
             path could read and alter the job's data"
        );
    }
}
