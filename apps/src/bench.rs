//! `updraft bench join`: the distributed-join benchmark on local workers, with a raw loopback
//! TCP stream measured in the same run as the baseline for the shuffle.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use updraft_runtime::plan::Phase;

use crate::output::{bytes, ms, print_job};

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Distributed inner join of two generated tables on local workers.
    Join {
        /// Worker processes.
        #[arg(long, default_value_t = 2)]
        workers: u32,
        /// Rows per side per worker.
        #[arg(long, default_value_t = 4_000_000)]
        rows: u64,
        /// Key range as a fraction of the total rows of a side.
        #[arg(long, default_value_t = 0.9)]
        unique_factor: f64,
        /// Runs (the table shows each; the summary the median).
        #[arg(long, default_value_t = 1)]
        repeats: u32,
        /// Bytes sent through the raw loopback baseline stream.
        #[arg(long, default_value = "1GiB")]
        baseline_bytes: String,
        /// Link protection to run with (`runtime.encryption`); several, comma-separated, run
        /// alternately in each repeat and are compared with the first (e.g.
        /// `aes-256-gcm,none` gives the cost of encryption, measured in the same run).
        #[arg(long, default_value = "aes-256-gcm")]
        encryption: String,
    },
    /// All-to-all shuffle of generated in-memory batches (a repartition on the key into a
    /// summary: no files, no join), against one raw loopback TCP stream in the same run.
    Shuffle {
        /// Worker processes.
        #[arg(long, default_value_t = 2)]
        workers: u32,
        /// Rows per worker.
        #[arg(long, default_value_t = 8_000_000)]
        rows: u64,
        /// Runs (the table shows each; the summary the median).
        #[arg(long, default_value_t = 3)]
        repeats: u32,
        /// Bytes sent through the raw loopback baseline stream.
        #[arg(long, default_value = "1GiB")]
        baseline_bytes: String,
        /// Link protection (`runtime.encryption`); several, comma-separated, are compared.
        #[arg(long, default_value = "aes-256-gcm")]
        encryption: String,
    },
    /// Full-mesh set-up time behind real NATs, in the netlab NAT lab (needs root).
    Mesh(crate::bench_mesh::MeshArgs),
    /// Weak and strong scaling of the join on local workers, with results and plots.
    Scaling(crate::bench_scaling::ScalingArgs),
    /// Latency, throughput and collectives over direct links, the Redis relay and the S3 relay.
    Channels(crate::bench_channels::ChannelArgs),
    /// Fault-injection trials: jobs with one injected fault each, and what became of them.
    Faults(crate::bench_faults::FaultArgs),
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Join { workers, rows, unique_factor, repeats, baseline_bytes, encryption } => {
            join_or_shuffle(workers, rows, unique_factor, repeats, &baseline_bytes, &encryption, false)
        }
        BenchCommand::Shuffle { workers, rows, repeats, baseline_bytes, encryption } => {
            join_or_shuffle(workers, rows, 0.9, repeats, &baseline_bytes, &encryption, true)
        }
        BenchCommand::Mesh(args) => crate::bench_mesh::run(args),
        BenchCommand::Scaling(args) => crate::bench_scaling::run(args),
        BenchCommand::Channels(args) => crate::bench_channels::run(args),
        BenchCommand::Faults(args) => crate::bench_faults::run(args),
    }
}

/// `bench join` (or, `shuffle_only`, `bench shuffle`) from its command-line arguments.
fn join_or_shuffle(
    workers: u32,
    rows: u64,
    unique_factor: f64,
    repeats: u32,
    baseline_bytes: &str,
    encryption: &str,
    shuffle_only: bool,
) -> anyhow::Result<ExitCode> {
    let baseline_bytes = updraft_config::parse_bytes(baseline_bytes).map_err(anyhow::Error::msg)?;
    let modes = encryption_modes(encryption)?;
    let repeats = repeats.max(1);
    join(JoinBench { workers, rows, unique_factor, repeats, baseline_bytes, modes, shuffle_only })
}

/// The link protections named in `--encryption` (comma-separated).
fn encryption_modes(names: &str) -> anyhow::Result<Vec<updraft_config::Encryption>> {
    names
        .split(',')
        .map(|name| {
            let name = name.trim();
            updraft_config::Encryption::from_name(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "--encryption: unknown `{name}`; expected {}",
                    updraft_config::Encryption::NAMES.join(", ")
                )
            })
        })
        .collect()
}

/// The shuffle benchmark's pipeline: a generated table of `rows` rows per worker, repartitioned
/// on `key` (every rank sends to every rank), into a summary sink.
pub fn shuffle_pipeline(name: &str, rows: u64) -> String {
    format!(
        "[job]\nname = \"{name}\"\n\n\
         [source.data]\nkind = \"generate\"\nrows = {rows}\nseed = 1\n\n\
         [operator.moved]\nkind = \"repartition\"\ninput = \"data\"\nkeys = [\"key\"]\n\n\
         [sink.summary]\nkind = \"summary\"\ninput = \"moved\"\n"
    )
}

/// The benchmark pipeline: two generated tables (seeds 1 and 2) of `rows` rows per worker,
/// joined on `key`, into a summary sink.
pub fn join_pipeline(name: &str, rows: u64, unique_factor: f64) -> String {
    format!(
        "[job]\nname = \"{name}\"\n\n\
         [source.left]\nkind = \"generate\"\nrows = {rows}\nunique_factor = {unique_factor}\nseed = 1\n\n\
         [source.right]\nkind = \"generate\"\nrows = {rows}\nunique_factor = {unique_factor}\nseed = 2\n\n\
         [operator.joined]\nkind = \"join\"\nleft = \"left\"\nright = \"right\"\non = [\"key\"]\n\n\
         [sink.summary]\nkind = \"summary\"\ninput = \"joined\"\n"
    )
}

/// One TCP stream over loopback, one thread each side: bytes per second.
pub fn loopback_throughput(total: u64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            got += n as u64;
        }
    });
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let chunk = vec![7u8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let n = chunk.len().min((total - sent) as usize);
        s.write_all(&chunk[..n])?;
        sent += n as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let got = receiver.join().map_err(|_| anyhow::anyhow!("baseline receiver panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    if got != total {
        bail!("baseline stream delivered {got} of {total} bytes");
    }
    Ok(total as f64 / secs)
}

/// What `bench join` runs.
struct JoinBench {
    workers: u32,
    rows: u64,
    unique_factor: f64,
    repeats: u32,
    baseline_bytes: u64,
    /// Link protections, compared with the first.
    modes: Vec<updraft_config::Encryption>,
    /// `bench shuffle`: one generated table repartitioned, no join.
    shuffle_only: bool,
}

/// One run's figures.
struct JoinRun {
    setup_us: u64,
    rows_per_s: f64,
    /// Mean over workers of bytes sent per second of shuffle.
    shuffle: f64,
    /// `shuffle` over the loopback baseline measured just before.
    vs_loopback: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn join(b: JoinBench) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let names: Vec<&str> = b.modes.iter().map(|m| m.name()).collect();
    println!(
        "bench {}: {} workers, {} rows per side per worker, unique factor {}, {} run(s), encryption {}",
        if b.shuffle_only { "shuffle" } else { "join" },
        b.workers,
        b.rows,
        b.unique_factor,
        b.repeats,
        names.join(" / ")
    );
    // results[mode][repeat]
    let mut results: Vec<Vec<JoinRun>> = b.modes.iter().map(|_| Vec::new()).collect();
    for i in 0..b.repeats {
        // Modes take turns going first, so drift on a shared machine does not favour one.
        let n = b.modes.len();
        for k in 0..n {
            let m = (k + i as usize) % n;
            let mode = b.modes[m];
            let pipeline = dir.path().join(format!("bench-join-{}.toml", mode.name()));
            let text = if b.shuffle_only {
                shuffle_pipeline("bench-shuffle", b.rows)
            } else {
                join_pipeline("bench-join", b.rows, b.unique_factor)
            };
            let text =
                text.replacen("\n\n", &format!("\n\n[runtime]\nencryption = \"{}\"\n\n", mode.name()), 1);
            std::fs::write(&pipeline, text)?;
            let run = join_once(&pipeline, &b).with_context(|| format!("run {} ({})", i + 1, mode.name()))?;
            results[m].push(run);
        }
    }
    if b.repeats > 1 || b.modes.len() > 1 {
        println!();
        for (mode, runs) in b.modes.iter().zip(&results) {
            println!(
                "median of {} ({}): set-up {}, input rows/s {:.0}, shuffle {}/s per worker, shuffle/loopback {:.3}",
                runs.len(),
                mode.name(),
                ms(median(runs.iter().map(|r| r.setup_us as f64).collect()) as u64),
                median(runs.iter().map(|r| r.rows_per_s).collect()),
                bytes(median(runs.iter().map(|r| r.shuffle).collect()) as u64),
                median(runs.iter().map(|r| r.vs_loopback).collect()),
            );
        }
        for (mode, runs) in b.modes.iter().zip(&results).skip(1) {
            // Each repeat's pair measured back to back; the median of the per-pair ratios.
            let ratios: Vec<f64> = results[0].iter().zip(runs).map(|(x, y)| x.shuffle / y.shuffle).collect();
            println!(
                "shuffle throughput, {} / {}: {:.3} (median of {} pairs; each pair run back to back)",
                b.modes[0].name(),
                mode.name(),
                median(ratios.clone()),
                ratios.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One run of the join benchmark, printed; the loopback baseline measured just before it.
fn join_once(pipeline: &std::path::Path, b: &JoinBench) -> anyhow::Result<JoinRun> {
    let base = loopback_throughput(b.baseline_bytes).context("loopback baseline")?;
    let opts = crate::cluster::LocalOptions {
        deadline: Duration::from_secs(900),
        grace: Duration::from_secs(15),
        metrics_listen: None,
        metrics_linger: Duration::ZERO,
        attempt: 1,
    };
    let run =
        crate::cluster::run_local(pipeline, b.workers, &opts, &crate::progress::Progress::new(false, None))?;
    let Some(job) = run.job else {
        for (rank, e, _) in run.failures {
            eprintln!("  rank {rank}: {e}");
        }
        bail!("the job failed");
    };
    println!();
    print_job(&job);
    let input_rows = if b.shuffle_only { 1 } else { 2 } * b.rows * u64::from(b.workers);
    let compute_us = job.wall_us.saturating_sub(job.setup_us).max(1);
    let rows_per_s = input_rows as f64 / (compute_us as f64 / 1e6);
    // Per worker: bytes it sent / time from set-up end to its last shuffle stage's end.
    let mut rates = Vec::new();
    for w in &job.workers {
        let end =
            w.operators.iter().filter(|o| o.phase == Phase::Shuffle).map(|o| o.end_us).max().unwrap_or(0);
        let span = end.saturating_sub(w.setup_us).max(1);
        rates.push(w.bytes_sent as f64 / (span as f64 / 1e6));
    }
    let shuffle = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    println!(
        "  input rows/s               {:>14.0}  ({} rows in {})",
        rows_per_s,
        input_rows,
        ms(compute_us)
    );
    println!("  shuffle bytes/s per worker {:>14}/s", bytes(shuffle as u64));
    let frames: u64 = job.workers.iter().map(|w| w.data_frames_sent).sum();
    let pairs = u64::from(b.workers) * u64::from(b.workers.saturating_sub(1));
    if frames > 0 && pairs > 0 {
        let sent: u64 = job.workers.iter().map(|w| w.bytes_sent).sum();
        println!(
            "  data frames per (sender, receiver) pair {:>14.1}  ({} frames, {} a frame on average)",
            frames as f64 / pairs as f64,
            frames,
            bytes(sent / frames)
        );
    }
    println!("  raw loopback TCP, 1 stream {:>14}/s  (baseline, same run)", bytes(base as u64));
    println!("  shuffle / loopback         {:>14.3}", shuffle / base);
    Ok(JoinRun { setup_us: job.setup_us, rows_per_s, shuffle, vs_loopback: shuffle / base })
}
