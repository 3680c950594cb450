//! `updraft bench mesh`: full-mesh set-up time behind real NATs, in the lab that
//! `../shared/netlab` builds (needs root). For each size N: the lab with N sites, the rendezvous
//! on its public host, N workers (one per site) running a trivial job; repeated, with
//! min / median / max of the punching time and the connect attempts per pair.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::output::ms;
use crate::worker::WorkerOutput;

const RDV: &str = "198.51.100.10:7000";

/// Arguments of `updraft bench mesh`.
#[derive(clap::Args, Debug)]
pub struct MeshArgs {
    /// Mesh sizes (sites, one worker each; the lab has at most 32).
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16,32")]
    pub sizes: Vec<u32>,
    /// Runs per size.
    #[arg(long, default_value_t = 5)]
    pub repeats: u32,
    /// NAT mode of every site: cone, shift (or a comma list per site, as netlab takes it).
    #[arg(long, default_value = "cone")]
    pub nat: String,
    /// The netlab script.
    #[arg(long, default_value = "../shared/netlab/netlab")]
    pub netlab: PathBuf,
}

struct Lab<'a>(&'a Path);

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.0).arg("down").output();
    }
}

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the benchmark.
pub fn run(args: MeshArgs) -> anyhow::Result<ExitCode> {
    if !args.netlab.exists() {
        bail!("netlab not found at {} (pass --netlab PATH)", args.netlab.display());
    }
    if let Some(n) = args.sizes.iter().find(|n| **n < 2 || **n > 32) {
        bail!("mesh size {n} is outside 2..=32 (the lab has at most 32 sites)");
    }
    let exe = std::env::current_exe().context("cannot find the updraft executable")?;
    let secret = crate::secret::fresh();
    let dir = tempfile::tempdir()?;
    let pipeline = dir.path().join("mesh.toml");
    std::fs::write(
        &pipeline,
        "[source.s]\nkind = \"generate\"\nrows = 1\n\n[sink.out]\nkind = \"summary\"\ninput = \"s\"\n",
    )?;
    ensure_neighbour_table(*args.sizes.iter().max().unwrap_or(&2))?;
    let _lab = Lab(&args.netlab);
    println!(
        "bench mesh: NAT {}, {} run(s) per size; punching = peer table to every link, slowest worker",
        args.nat, args.repeats
    );
    println!(
        "  {:>4} {:>6} {:>11} {:>11} {:>11} {:>13} {:>16}",
        "N", "pairs", "punch min", "median", "max", "set-up median", "attempts / pair"
    );
    for &n in &args.sizes {
        let up =
            Command::new(&args.netlab).args(["up", &n.to_string()]).env("NETLAB_NAT", &args.nat).output()?;
        if !up.status.success() {
            bail!("netlab up {n} failed: {}", String::from_utf8_lossy(&up.stderr));
        }
        let mut rdv = Command::new(&args.netlab)
            .args(["exec", "rdv"])
            .arg(&exe)
            .args(["rendezvous", "--listen", RDV])
            .env(crate::secret::ENV, &secret)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let ready = rdv.stdout.take().and_then(|o| BufReader::new(o).lines().next());
        let _rdv = Kill(vec![rdv]);
        if !ready.is_some_and(|l| l.is_ok_and(|l| l.contains("listening"))) {
            bail!("the rendezvous did not start in the lab");
        }
        let mut punch = Vec::new();
        let mut setup = Vec::new();
        let mut attempts = Vec::new();
        for r in 0..args.repeats {
            let job = format!("mesh-{n}-{r}");
            let report = run_once(&args.netlab, &exe, &secret, &pipeline, &job, n)?;
            punch.push(report.0);
            setup.push(report.1);
            attempts.push(report.2 as f64 / f64::from(n * (n - 1)));
        }
        punch.sort_unstable();
        setup.sort_unstable();
        let mean_attempts = attempts.iter().sum::<f64>() / attempts.len().max(1) as f64;
        println!(
            "  {:>4} {:>6} {:>11} {:>11} {:>11} {:>13} {:>16.2}",
            n,
            n * (n - 1) / 2,
            ms(punch[0]),
            ms(punch[punch.len() / 2]),
            ms(punch[punch.len() - 1]),
            ms(setup[setup.len() / 2]),
            mean_attempts
        );
    }
    println!("  (attempts count each endpoint tried, public and private, by both sides of a pair)");
    Ok(ExitCode::SUCCESS)
}

/// The kernel's neighbour (ARP) table is shared by every network namespace, and its default
/// hard limit (1024 entries) is below what a lab of 32 NAT routers needs (each router resolves
/// every other router, the rendezvous and its worker: about 1100 entries). Past the limit, new
/// entries are refused ("neighbor table overflow"), some routers can never reach each other, and
/// their pairs fail to punch for a reason that has nothing to do with NAT. Raise the limit if
/// it is too low for `sites`.
fn ensure_neighbour_table(sites: u32) -> anyhow::Result<()> {
    const THRESH3: &str = "/proc/sys/net/ipv4/neigh/default/gc_thresh3";
    const THRESH2: &str = "/proc/sys/net/ipv4/neigh/default/gc_thresh2";
    let need = u64::from(sites + 2) * u64::from(sites + 2) * 2;
    let current: u64 = std::fs::read_to_string(THRESH3).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    if current >= need {
        return Ok(());
    }
    let target = need.max(4096);
    println!(
        "raising the kernel's neighbour table limit {current} -> {target} entries (net.ipv4.neigh.default.gc_thresh3) for {sites} lab sites"
    );
    std::fs::write(THRESH2, (target / 2).to_string()).context("cannot raise gc_thresh2 (needs root)")?;
    std::fs::write(THRESH3, target.to_string()).context("cannot raise gc_thresh3 (needs root)")?;
    Ok(())
}

/// One job of `n` workers; (punch µs, set-up µs, attempts) from rank 0's job report.
fn run_once(
    netlab: &Path,
    exe: &Path,
    secret: &str,
    pipeline: &Path,
    job: &str,
    n: u32,
) -> anyhow::Result<(u64, u64, u64)> {
    let mut workers = Kill(Vec::new());
    for rank in 0..n {
        let child = Command::new(netlab)
            .args(["exec", &format!("w{}", rank + 1)])
            .arg(exe)
            .args(["worker", "--json", "--rendezvous", RDV, "--job", job])
            .args(["--rank", &rank.to_string(), "--world", &n.to_string()])
            .arg("--pipeline")
            .arg(pipeline)
            .env(crate::secret::ENV, secret)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        workers.0.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for (rank, c) in workers.0.iter_mut().enumerate() {
        while c.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("worker {rank} of job {job} did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let mut outputs = Vec::new();
    for c in std::mem::take(&mut workers.0) {
        let out = c.wait_with_output()?;
        let parsed: Option<WorkerOutput> =
            String::from_utf8_lossy(&out.stdout).lines().find_map(|l| serde_json::from_str(l).ok());
        outputs.push(parsed);
    }
    let errors: Vec<String> = outputs
        .iter()
        .enumerate()
        .filter_map(|(rank, o)| match o {
            None => Some(format!("rank {rank}: no result")),
            Some(o) => o.error.as_ref().map(|e| format!("rank {rank}: {e}")),
        })
        .collect();
    if !errors.is_empty() {
        bail!("job {job} failed:\n  {}", errors.join("\n  "));
    }
    let parsed = outputs.swap_remove(0).with_context(|| format!("rank 0 of job {job} printed no result"))?;
    let jobr = parsed.job.with_context(|| format!("rank 0 of job {job} has no job report"))?;
    Ok((jobr.mesh_us, jobr.setup_us, jobr.punch_attempts))
}
