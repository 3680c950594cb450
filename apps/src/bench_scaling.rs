//! `updraft bench scaling`: weak scaling (fixed rows per worker) and strong scaling (fixed total
//! rows) of the distributed join on local workers, for a list of worker counts and repeats.
//! Shows progress with an ETA, can serve live metrics of the running job, and writes per-run
//! results (JSON and CSV) and SVG plots of time and efficiency against workers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use updraft_runtime::plan::Phase;
use updraft_runtime::report::JobReport;

/// Arguments of `updraft bench scaling`.
#[derive(clap::Args, Debug)]
pub struct ScalingArgs {
    /// Worker counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<u32>,
    /// Weak scaling: rows per side per worker.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Strong scaling: rows per side in total (default: rows × the largest worker count).
    #[arg(long)]
    pub total_rows: Option<u64>,
    /// Which runs: weak, strong or both.
    #[arg(long, default_value = "both")]
    pub mode: String,
    /// Runs per configuration.
    #[arg(long, default_value_t = 1)]
    pub repeats: u32,
    /// Key range as a fraction of the rows of a side.
    #[arg(long, default_value_t = 0.9)]
    pub unique_factor: f64,
    /// Directory for results and plots.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Serve the running job's metrics (every worker) here.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Function memory for the cost estimate, in GB.
    #[arg(long, default_value_t = 2.0)]
    pub memory_gb: f64,
}

/// One run's results.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// weak or strong.
    pub mode: String,
    /// Workers.
    pub workers: u32,
    /// Repeat index.
    pub repeat: u32,
    /// Rows per side in total.
    pub rows_per_side: u64,
    /// Output rows.
    pub output_rows: u64,
    /// Job wall time (slowest worker), seconds.
    pub wall_s: f64,
    /// Set-up (rendezvous and punching), seconds.
    pub setup_s: f64,
    /// Busiest worker's time per phase, seconds.
    pub phases: Vec<(String, f64)>,
    /// Bytes over links, all workers.
    pub bytes_sent: u64,
    /// Input rows (both sides) per second of wall time after set-up.
    pub rows_per_s: f64,
    /// Parallel efficiency against the smallest worker count (median runs).
    pub efficiency: f64,
    /// Estimated cost on Lambda at `memory_gb`, dollars.
    pub cost_usd: f64,
}

/// Runs the benchmark.
pub fn run(args: ScalingArgs) -> anyhow::Result<ExitCode> {
    let modes: Vec<&str> = match args.mode.as_str() {
        "both" => vec!["weak", "strong"],
        "weak" => vec!["weak"],
        "strong" => vec!["strong"],
        other => bail!("--mode {other}: expected weak, strong or both"),
    };
    let mut workers = args.workers.clone();
    workers.sort_unstable();
    workers.dedup();
    if workers.is_empty() || workers[0] == 0 {
        bail!("--workers needs positive worker counts");
    }
    let max_workers = *workers.last().unwrap_or(&1);
    let total = args.total_rows.unwrap_or(args.rows * u64::from(max_workers));
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let dir = tempfile::tempdir()?;
    let pricing = crate::output::load_pricing(None)?;
    let runs = modes.len() as u64 * workers.len() as u64 * u64::from(args.repeats.max(1));
    let bar = ProgressBar::new(runs);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} runs, {elapsed} elapsed, ETA {eta}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if let Some(addr) = args.metrics_listen {
        bar.println(format!("live metrics of the running job: http://{addr}/metrics"));
    }
    let mut results: Vec<RunResult> = Vec::new();
    for mode in &modes {
        for &n in &workers {
            let per_worker = if *mode == "weak" { args.rows } else { total.div_ceil(u64::from(n)) };
            let pipeline = dir.path().join(format!("{mode}-{n}.toml"));
            std::fs::write(
                &pipeline,
                crate::bench::join_pipeline("bench-scaling", per_worker, args.unique_factor),
            )?;
            for repeat in 0..args.repeats.max(1) {
                bar.set_message(format!("{mode} scaling, {n} workers, {per_worker} rows/side/worker"));
                let opts = crate::cluster::LocalOptions {
                    deadline: Duration::from_secs(1800),
                    grace: Duration::from_secs(15),
                    metrics_listen: args.metrics_listen,
                    metrics_linger: Duration::ZERO,
                    attempt: 1,
                };
                let quiet = crate::progress::Progress::new(false, None);
                let run = crate::cluster::run_local(&pipeline, n, &opts, &quiet)?;
                let Some(job) = run.job else {
                    let why: Vec<String> =
                        run.failures.iter().map(|(r, e, _)| format!("rank {r}: {e}")).collect();
                    bail!("{mode} run on {n} workers failed: {}", why.join("; "));
                };
                results.push(result(
                    mode,
                    n,
                    repeat,
                    per_worker * u64::from(n),
                    &job,
                    args.memory_gb,
                    &pricing,
                ));
                bar.inc(1);
            }
        }
    }
    bar.finish_with_message("done");
    fill_efficiency(&mut results);
    write_outputs(&args.out, &results)?;
    print_table(&results);
    println!(
        "\nresults: {0}/scaling.json, {0}/scaling.csv; plots: {0}/scaling-time-weak.svg, {0}/scaling-time-strong.svg, {0}/scaling-efficiency.svg",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn result(
    mode: &str,
    workers: u32,
    repeat: u32,
    rows_per_side: u64,
    job: &JobReport,
    memory_gb: f64,
    pricing: &updraft_config::pricing::Pricing,
) -> RunResult {
    let s = |us: u64| us as f64 / 1e6;
    let wall_s = s(job.wall_us);
    let compute = s(job.wall_us.saturating_sub(job.setup_us)).max(1e-6);
    let phases = job
        .phases
        .iter()
        .filter(|p| p.phase != Phase::Other)
        .map(|p| (p.phase.label().to_string(), s(p.busy_max_us)))
        .collect();
    RunResult {
        mode: mode.to_string(),
        workers,
        repeat,
        rows_per_side,
        output_rows: job.sinks.iter().find(|k| k.name == "summary").map_or(0, |k| k.summary.rows),
        wall_s,
        setup_s: s(job.setup_us),
        phases,
        bytes_sent: job.bytes_sent,
        rows_per_s: (2 * rows_per_side) as f64 / compute,
        efficiency: 0.0,
        cost_usd: pricing.estimate(workers, wall_s, memory_gb, 0, 0).lambda_total,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Median wall time per (mode, workers).
fn medians(results: &[RunResult], mode: &str) -> Vec<(u32, f64)> {
    let mut ns: Vec<u32> = results.iter().filter(|r| r.mode == mode).map(|r| r.workers).collect();
    ns.sort_unstable();
    ns.dedup();
    ns.into_iter()
        .map(|n| {
            (
                n,
                median(
                    results.iter().filter(|r| r.mode == mode && r.workers == n).map(|r| r.wall_s).collect(),
                ),
            )
        })
        .collect()
}

/// Weak: T(base) / T(N). Strong: base × T(base) / (N × T(N)).
fn fill_efficiency(results: &mut [RunResult]) {
    for mode in ["weak", "strong"] {
        let m = medians(results, mode);
        let Some(&(base_n, base_t)) = m.first() else { continue };
        for r in results.iter_mut().filter(|r| r.mode == mode) {
            let t = m.iter().find(|(n, _)| *n == r.workers).map_or(r.wall_s, |x| x.1).max(1e-9);
            r.efficiency = if mode == "weak" {
                base_t / t
            } else {
                f64::from(base_n) * base_t / (f64::from(r.workers) * t)
            };
        }
    }
}

fn print_table(results: &[RunResult]) {
    println!(
        "\n  {:<7} {:>7} {:>12} {:>10} {:>10} {:>14} {:>11} {:>11}",
        "mode", "workers", "rows/side", "wall", "set-up", "input rows/s", "efficiency", "cost $"
    );
    for mode in ["weak", "strong"] {
        for (n, t) in medians(results, mode) {
            let rs: Vec<&RunResult> = results.iter().filter(|r| r.mode == mode && r.workers == n).collect();
            let Some(first) = rs.first() else { continue };
            println!(
                "  {:<7} {:>7} {:>12} {:>9.3}s {:>9.3}s {:>14.0} {:>11.3} {:>11.6}",
                mode,
                n,
                first.rows_per_side,
                t,
                median(rs.iter().map(|r| r.setup_s).collect()),
                median(rs.iter().map(|r| r.rows_per_s).collect()),
                first.efficiency,
                median(rs.iter().map(|r| r.cost_usd).collect())
            );
        }
    }
}

fn write_outputs(out: &Path, results: &[RunResult]) -> anyhow::Result<()> {
    std::fs::write(
        out.join("scaling.json"),
        serde_json::to_vec_pretty(&serde_json::json!({ "runs": results }))?,
    )?;
    let phase_names: Vec<String> =
        results.first().map(|r| r.phases.iter().map(|p| p.0.clone()).collect()).unwrap_or_default();
    let mut csv = String::from(
        "mode,workers,repeat,rows_per_side,output_rows,wall_s,setup_s,bytes_sent,rows_per_s,efficiency,cost_usd",
    );
    for p in &phase_names {
        csv.push_str(&format!(",busy_{}_s", p.replace(['+', '-'], "_")));
    }
    csv.push('\n');
    for r in results {
        csv.push_str(&format!(
            "{},{},{},{},{},{:.6},{:.6},{},{:.1},{:.4},{:.8}",
            r.mode,
            r.workers,
            r.repeat,
            r.rows_per_side,
            r.output_rows,
            r.wall_s,
            r.setup_s,
            r.bytes_sent,
            r.rows_per_s,
            r.efficiency,
            r.cost_usd
        ));
        for p in &phase_names {
            let v = r.phases.iter().find(|x| &x.0 == p).map_or(0.0, |x| x.1);
            csv.push_str(&format!(",{v:.6}"));
        }
        csv.push('\n');
    }
    std::fs::write(out.join("scaling.csv"), csv)?;
    for mode in ["weak", "strong"] {
        if results.iter().any(|r| r.mode == mode) {
            plot_time(&out.join(format!("scaling-time-{mode}.svg")), results, mode, &phase_names)?;
        }
    }
    plot_efficiency(&out.join("scaling-efficiency.svg"), results)?;
    Ok(())
}

fn series(results: &[RunResult], mode: &str, value: impl Fn(&RunResult) -> f64) -> Vec<(f64, f64)> {
    let mut ns: Vec<u32> = results.iter().filter(|r| r.mode == mode).map(|r| r.workers).collect();
    ns.sort_unstable();
    ns.dedup();
    ns.into_iter()
        .map(|n| {
            (
                f64::from(n),
                median(results.iter().filter(|r| r.mode == mode && r.workers == n).map(&value).collect()),
            )
        })
        .collect()
}

fn plot(path: &Path, title: &str, y_desc: &str, lines: crate::plot::Lines) -> anyhow::Result<()> {
    crate::plot::lines(path, title, "workers", y_desc, false, lines)
}

fn plot_time(path: &Path, results: &[RunResult], mode: &str, phases: &[String]) -> anyhow::Result<()> {
    let mut lines = vec![("wall".to_string(), series(results, mode, |r| r.wall_s))];
    for p in phases {
        let name = p.clone();
        lines.push((
            format!("{p} (busiest worker)"),
            series(results, mode, move |r| r.phases.iter().find(|x| x.0 == name).map_or(0.0, |x| x.1)),
        ));
    }
    plot(path, &format!("{mode} scaling: time per phase"), "seconds", lines)
}

fn plot_efficiency(path: &Path, results: &[RunResult]) -> anyhow::Result<()> {
    let lines = ["weak", "strong"]
        .into_iter()
        .filter(|m| results.iter().any(|r| r.mode == *m))
        .map(|m| (format!("{m} scaling"), series(results, m, |r| r.efficiency)))
        .collect();
    plot(path, "parallel efficiency", "efficiency", lines)
}
