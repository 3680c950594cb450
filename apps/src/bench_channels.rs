//! `updraft bench channels`: the same messages over direct links, the Redis relay and the S3
//! relay, measured in one run: ping-pong latency by message size, one-way throughput, and
//! barrier and allreduce times by worker count. Workers run in this process (one transport
//! each), so the figures are the channels', not process start-up's.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow_array::{ArrayRef, Int64Array};
use bytes::Bytes;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use updraft_config::{ChannelPolicy, RuntimeSettings};
use updraft_runtime::collective::{Communicator, ReduceOp};
use updraft_transports::local::{LocalChannel, local_cluster, shutdown};
use updraft_transports::relay::Relay;

use crate::output::bytes as show_bytes;

/// `updraft bench channels` arguments.
#[derive(Args, Debug, Clone)]
pub struct ChannelArgs {
    /// Channels to measure (a relay without its address is skipped with a note).
    #[arg(long, value_delimiter = ',', default_value = "direct,redis,s3")]
    pub channels: Vec<String>,
    /// Redis server for the Redis relay (default: UPDRAFT_BENCH_REDIS).
    #[arg(long)]
    pub redis: Option<String>,
    /// Bucket and prefix for the S3 relay, e.g. s3://bucket/bench/ (default:
    /// UPDRAFT_BENCH_S3; credentials and endpoint from the AWS environment).
    #[arg(long)]
    pub s3: Option<String>,
    /// Ping-pong message sizes.
    #[arg(long, value_delimiter = ',', default_value = "8B,1KiB,64KiB,1MiB,8MiB,64MiB")]
    pub sizes: Vec<String>,
    /// Round trips per size (fewer for messages of 1 MiB and more, and within --budget).
    #[arg(long, default_value_t = 50)]
    pub repeats: u32,
    /// Time allowed per measurement before it stops repeating.
    #[arg(long, default_value = "3s")]
    pub budget: String,
    /// Worker counts for barrier and allreduce.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16,32")]
    pub workers: Vec<u32>,
    /// Largest worker count measured on the S3 relay (every idle direction polls the bucket).
    #[arg(long, default_value_t = 8)]
    pub s3_max_workers: u32,
    /// Bytes sent one way for the throughput figure.
    #[arg(long, default_value = "256MiB")]
    pub stream: String,
    /// Where channels.json and the plots go.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
}

/// A measured distribution, in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Samples taken.
    pub samples: usize,
    /// Median.
    pub median_s: f64,
    /// 99th percentile (nearest rank).
    pub p99_s: f64,
}

impl Timing {
    fn of(mut v: Vec<f64>) -> Timing {
        v.sort_by(f64::total_cmp);
        let at =
            |q: f64| v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
        Timing { samples: v.len(), median_s: at(0.5), p99_s: at(0.99) }
    }
}

/// Everything measured on one channel.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelResult {
    /// `direct`, `redis` or `s3`.
    pub channel: String,
    /// (message bytes, round-trip time).
    pub ping_pong: Vec<(u64, Timing)>,
    /// One-way throughput, bytes per second.
    pub throughput_bps: f64,
    /// (workers, barrier time).
    pub barrier: Vec<(u32, Timing)>,
    /// (workers, allreduce of one int64 = 8 B).
    pub allreduce_8b: Vec<(u32, Timing)>,
    /// (workers, allreduce of 131072 int64 = 1 MiB).
    pub allreduce_1mib: Vec<(u32, Timing)>,
}

/// Runs the benchmark.
pub fn run(args: ChannelArgs) -> anyhow::Result<ExitCode> {
    let sizes: Vec<u64> = args
        .sizes
        .iter()
        .map(|s| updraft_config::parse_bytes(s).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    if sizes.contains(&0) {
        bail!("--sizes: messages must have at least one byte");
    }
    let budget = updraft_config::parse_duration(&args.budget).map_err(anyhow::Error::msg)?;
    let stream = updraft_config::parse_bytes(&args.stream).map_err(anyhow::Error::msg)?;
    let mut channels = Vec::new();
    for name in &args.channels {
        match channel(name, &args)? {
            Some(c) => channels.push(c),
            None => eprintln!("note: skipping the {name} channel: no address (see --help)"),
        }
    }
    if channels.is_empty() {
        bail!("no channel to measure");
    }
    let steps: u64 =
        channels.iter().map(|c| (sizes.len() + 1) as u64 + 3 * worker_counts(&args, c).len() as u64).sum();
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let system = actix::System::with_tokio_rt(move || runtime);
    let mut results = Vec::new();
    for c in &channels {
        let r = system.block_on(measure(c, &args, &sizes, budget, stream, &bar))?;
        results.push(r);
    }
    bar.finish_and_clear();
    print_table(&results);
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let json = args.out.join("channels.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&results)?)?;
    plot_latency(&args.out.join("channels-latency.svg"), &results)?;
    plot_collectives(&args.out.join("channels-collectives.svg"), &results)?;
    println!(
        "\nwrote {}, {} and {}",
        json.display(),
        args.out.join("channels-latency.svg").display(),
        args.out.join("channels-collectives.svg").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn channel(name: &str, args: &ChannelArgs) -> anyhow::Result<Option<LocalChannel>> {
    let env = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
    let mut s = RuntimeSettings::default();
    match name {
        "direct" => return Ok(Some(LocalChannel::Direct)),
        "redis" => {
            let Some(url) = args.redis.clone().or_else(|| env("UPDRAFT_BENCH_REDIS")) else {
                return Ok(None);
            };
            s.channel = ChannelPolicy::Redis;
            s.redis = Some(url);
        }
        "s3" => {
            let Some(url) = args.s3.clone().or_else(|| env("UPDRAFT_BENCH_S3")) else { return Ok(None) };
            s.channel = ChannelPolicy::S3;
            s.s3_relay = Some(url);
        }
        other => bail!("unknown channel `{other}`; expected direct, redis or s3"),
    }
    let relay = Relay::from_settings(&s).map_err(anyhow::Error::msg)?.context("relay")?;
    Ok(Some(LocalChannel::Relay(relay)))
}

fn worker_counts(args: &ChannelArgs, c: &LocalChannel) -> Vec<u32> {
    let cap = if c.name() == "s3" { args.s3_max_workers } else { u32::MAX };
    args.workers.iter().copied().filter(|w| *w >= 2 && *w <= cap).collect()
}

fn settings() -> RuntimeSettings {
    RuntimeSettings { mesh_timeout: Duration::from_secs(30), ..RuntimeSettings::default() }
}

async fn measure(
    c: &LocalChannel,
    args: &ChannelArgs,
    sizes: &[u64],
    budget: Duration,
    stream: u64,
    bar: &ProgressBar,
) -> anyhow::Result<ChannelResult> {
    let name = c.name();
    let job = format!("bench-{name}-{}", std::process::id());
    let timeout = Duration::from_secs(120);
    let mut workers = local_cluster(2, c, &job, &settings(), timeout).await.map_err(anyhow::Error::msg)?;
    let (mut b, mut a) = (workers.pop().context("rank 1")?, workers.pop().context("rank 0")?);
    let mut result = ChannelResult {
        channel: name.to_string(),
        ping_pong: Vec::new(),
        throughput_bps: 0.0,
        barrier: Vec::new(),
        allreduce_8b: Vec::new(),
        allreduce_1mib: Vec::new(),
    };
    for &size in sizes {
        bar.set_message(format!("{name}: ping-pong {}", show_bytes(size)));
        let reps = if size >= 1 << 20 { args.repeats.clamp(1, 10) } else { args.repeats.max(1) };
        let (times, comms) = ping_pong(a.comm, b.comm, size as usize, reps, budget).await?;
        (a.comm, b.comm) = comms;
        result.ping_pong.push((size, Timing::of(times)));
        bar.inc(1);
    }
    bar.set_message(format!("{name}: throughput"));
    let (bps, comms) = throughput(a.comm, b.comm, stream).await?;
    (a.comm, b.comm) = comms;
    result.throughput_bps = bps;
    bar.inc(1);
    shutdown(vec![a.transport, b.transport], c, &job, Duration::from_secs(5)).await;
    for world in worker_counts(args, c) {
        let job = format!("bench-{name}-{world}-{}", std::process::id());
        bar.set_message(format!("{name}: {world} workers"));
        let workers =
            local_cluster(world, c, &job, &settings(), timeout).await.map_err(anyhow::Error::msg)?;
        let reps = if name == "direct" { 50 } else { 10 };
        let (comms, transports): (Vec<_>, Vec<_>) =
            workers.into_iter().map(|w| (w.comm, w.transport)).unzip();
        let (t, comms) = collective(comms, reps, budget, Op::Barrier).await?;
        result.barrier.push((world, t));
        bar.inc(1);
        let (t, comms) = collective(comms, reps, budget, Op::AllReduce(1)).await?;
        result.allreduce_8b.push((world, t));
        bar.inc(1);
        let (t, _) = collective(comms, reps.min(10), budget, Op::AllReduce(131_072)).await?;
        result.allreduce_1mib.push((world, t));
        bar.inc(1);
        shutdown(transports, c, &job, Duration::from_secs(5)).await;
    }
    Ok(result)
}

type Pair = (Communicator, Communicator);

async fn ping_pong(
    mut a: Communicator,
    mut b: Communicator,
    size: usize,
    reps: u32,
    budget: Duration,
) -> anyhow::Result<(Vec<f64>, Pair)> {
    let msg = Bytes::from(vec![0x5a; size]);
    // Rank 1 echoes until told the count; rank 0 stops at `reps` or when the budget is spent.
    let echo = tokio::spawn(async move {
        let mut tag = 0u32;
        loop {
            let got = b.recv(0, tag).await?;
            if got.is_empty() && tag > 0 {
                return Ok::<_, updraft_runtime::collective::CollectiveError>(b);
            }
            b.send(0, tag, got)?;
            tag += 1;
        }
    });
    let mut times = Vec::new();
    let start = Instant::now();
    // One warm-up round, not counted.
    for i in 0..=reps {
        let t = Instant::now();
        a.send(1, i, msg.clone())?;
        let back = a.recv(1, i).await?;
        if back.len() != size {
            bail!("echo of {} bytes instead of {size}", back.len());
        }
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
        if start.elapsed() > budget && times.len() >= 3 {
            let tag = i + 1;
            a.send(1, tag, Bytes::new())?;
            let b = echo.await??;
            return Ok((times, (a, b)));
        }
    }
    a.send(1, reps + 1, Bytes::new())?;
    let b = echo.await??;
    Ok((times, (a, b)))
}

async fn throughput(mut a: Communicator, mut b: Communicator, total: u64) -> anyhow::Result<(f64, Pair)> {
    const CHUNK: usize = 1 << 20;
    let count = (total as usize).div_ceil(CHUNK).max(1) as u32;
    let receiver = tokio::spawn(async move {
        for i in 0..count {
            b.recv(0, i).await?;
        }
        b.send(0, count, Bytes::from_static(b"done"))?;
        Ok::<_, updraft_runtime::collective::CollectiveError>(b)
    });
    let chunk = Bytes::from(vec![0xa5; CHUNK]);
    let start = Instant::now();
    for i in 0..count {
        a.send(1, i, chunk.clone())?;
    }
    a.recv(1, count).await?;
    let secs = start.elapsed().as_secs_f64();
    let b = receiver.await??;
    Ok((f64::from(count) * CHUNK as f64 / secs, (a, b)))
}

#[derive(Clone, Copy)]
enum Op {
    Barrier,
    AllReduce(usize),
}

/// Runs `op` `reps` times on every rank (within the budget: all ranks agree on the count
/// first); returns rank 0's times.
async fn collective(
    comms: Vec<Communicator>,
    reps: u32,
    budget: Duration,
    op: Op,
) -> anyhow::Result<(Timing, Vec<Communicator>)> {
    let tasks: Vec<_> = comms
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let data: ArrayRef = match op {
                    Op::Barrier => Arc::new(Int64Array::from(Vec::<i64>::new())),
                    Op::AllReduce(n) => Arc::new(Int64Array::from(vec![i64::from(c.rank()); n])),
                };
                let start = Instant::now();
                let mut times = Vec::new();
                c.barrier().await?;
                for _ in 0..reps {
                    let t = Instant::now();
                    match op {
                        Op::Barrier => c.barrier().await?,
                        Op::AllReduce(_) => {
                            c.allreduce(ReduceOp::Sum, Arc::clone(&data)).await?;
                        }
                    }
                    times.push(t.elapsed().as_secs_f64());
                    // Stop together: rank 0's verdict, broadcast.
                    let stop = (c.rank() == 0).then(|| Bytes::from(vec![u8::from(start.elapsed() > budget)]));
                    if c.broadcast(0, stop).await?.first() == Some(&1) {
                        break;
                    }
                }
                Ok::<_, updraft_runtime::collective::CollectiveError>((times, c))
            })
        })
        .collect();
    let mut comms = Vec::new();
    let mut rank0 = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let (times, c) = t.await??;
        if i == 0 {
            rank0 = times;
        }
        comms.push(c);
    }
    Ok((Timing::of(rank0), comms))
}

fn us(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn print_table(results: &[ChannelResult]) {
    let direct = results.iter().find(|r| r.channel == "direct");
    println!("round-trip time (median / p99) by message size; ratio = relay median / direct median");
    print!("  {:>9}", "size");
    for r in results {
        print!("  {:>22}", r.channel);
    }
    for r in results.iter().filter(|r| r.channel != "direct") {
        print!("  {:>12}", format!("{}/direct", r.channel));
    }
    println!();
    let sizes: Vec<u64> =
        results.first().map(|r| r.ping_pong.iter().map(|p| p.0).collect()).unwrap_or_default();
    for (i, size) in sizes.iter().enumerate() {
        print!("  {:>9}", show_bytes(*size));
        for r in results {
            let t = &r.ping_pong[i].1;
            print!("  {:>22}", format!("{} / {}", us(t.median_s), us(t.p99_s)));
        }
        for r in results.iter().filter(|r| r.channel != "direct") {
            let ratio = direct.map_or(0.0, |d| r.ping_pong[i].1.median_s / d.ping_pong[i].1.median_s);
            print!("  {:>12}", format!("{ratio:.1}x"));
        }
        println!();
    }
    print!("  {:>9}", "one-way");
    for r in results {
        print!("  {:>22}", format!("{}/s", show_bytes(r.throughput_bps as u64)));
    }
    for r in results.iter().filter(|r| r.channel != "direct") {
        let ratio = direct.map_or(0.0, |d| d.throughput_bps / r.throughput_bps);
        print!("  {:>12}", format!("{ratio:.1}x slower"));
    }
    println!("\n\ncollectives (median time at rank 0)");
    println!(
        "  {:>8} {:>8} {:>14} {:>14} {:>14}",
        "channel", "workers", "barrier", "allreduce 8B", "allreduce 1MiB"
    );
    for r in results {
        for (i, (w, t)) in r.barrier.iter().enumerate() {
            println!(
                "  {:>8} {:>8} {:>14} {:>14} {:>14}",
                r.channel,
                w,
                us(t.median_s),
                us(r.allreduce_8b[i].1.median_s),
                us(r.allreduce_1mib[i].1.median_s)
            );
        }
    }
}

fn plot_latency(path: &Path, results: &[ChannelResult]) -> anyhow::Result<()> {
    let lines = results
        .iter()
        .map(|r| (r.channel.clone(), r.ping_pong.iter().map(|(s, t)| (*s as f64, t.median_s)).collect()))
        .collect();
    crate::plot::lines(
        path,
        "ping-pong round trip by message size",
        "message bytes",
        "seconds (median)",
        true,
        lines,
    )
}

fn plot_collectives(path: &Path, results: &[ChannelResult]) -> anyhow::Result<()> {
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in results {
        for (what, v) in [
            ("barrier", &r.barrier),
            ("allreduce 8B", &r.allreduce_8b),
            ("allreduce 1MiB", &r.allreduce_1mib),
        ] {
            if !v.is_empty() {
                lines.push((
                    format!("{} {what}", r.channel),
                    v.iter().map(|(w, t)| (f64::from(*w), t.median_s)).collect(),
                ));
            }
        }
    }
    crate::plot::lines(path, "collectives by worker count", "workers", "seconds (median)", true, lines)
}
