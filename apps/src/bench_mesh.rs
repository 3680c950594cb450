//! `updraft bench mesh`: full-mesh set-up time behind real NATs, in the lab that
//! `../shared/netlab` builds (needs root; up to 64 sites). For each size N: the lab with N
//! sites, the rendezvous on its public host, N workers (one per site) running a trivial job;
//! repeated, with min / median / max of the punching time, the connect attempts per pair and
//! the pairs not punched by the mesh deadline. Exits 1 when some pair was not punched.

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
    /// Mesh sizes (sites, one worker each; the lab has at most 64).
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
    if let Some(n) = args.sizes.iter().find(|n| **n < 2 || **n > 64) {
        bail!("mesh size {n} is outside 2..=64 (the lab has at most 64 sites)");
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
        "  {:>4} {:>6} {:>11} {:>11} {:>11} {:>13} {:>16} {:>12}",
        "N", "pairs", "punch min", "median", "max", "set-up median", "attempts / pair", "not punched"
    );
    let mut all_punched = true;
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
        let mut unpunched = Vec::new();
        for r in 0..args.repeats {
            let job = format!("mesh-{n}-{r}");
            match run_once(&args.netlab, &exe, &secret, &pipeline, &job, n)? {
                Outcome::Linked { punch_us, setup_us, attempts: a } => {
                    punch.push(punch_us);
                    setup.push(setup_us);
                    attempts.push(a as f64 / f64::from(n * (n - 1)));
                    unpunched.push(0);
                }
                Outcome::Unpunched(pairs) => unpunched.push(pairs),
            }
        }
        punch.sort_unstable();
        setup.sort_unstable();
        let at = |v: &[u64], i: usize| v.get(i).map_or_else(|| "-".to_string(), |x| ms(*x));
        let mean_attempts = if attempts.is_empty() {
            "-".to_string()
        } else {
            format!("{:.2}", attempts.iter().sum::<f64>() / attempts.len() as f64)
        };
        let worst = unpunched.iter().max().copied().unwrap_or(0);
        println!(
            "  {:>4} {:>6} {:>11} {:>11} {:>11} {:>13} {:>16} {:>12}",
            n,
            n * (n - 1) / 2,
            at(&punch, 0),
            at(&punch, punch.len() / 2),
            at(&punch, punch.len().saturating_sub(1)),
            at(&setup, setup.len() / 2),
            mean_attempts,
            worst
        );
        all_punched &= worst == 0;
    }
    println!("  (attempts count each endpoint tried, public and private, by both sides of a pair;");
    println!(
        "   not punched: pairs without a link at the mesh deadline, worst run; times over runs that linked every pair)"
    );
    Ok(if all_punched { ExitCode::SUCCESS } else { ExitCode::from(1) })
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

/// How one job of the benchmark went.
enum Outcome {
    /// Every pair linked: punching and set-up time of the slowest worker (µs) and the connect
    /// attempts of all workers, from rank 0's job report.
    Linked { punch_us: u64, setup_us: u64, attempts: u64 },
    /// The job failed because this many pairs had no link at the mesh deadline.
    Unpunched(usize),
}

/// The pairs the workers reported without a link at the mesh deadline (rank, its unlinked
/// peers), each pair counted once.
fn unpunched_pairs(unlinked: &[(u32, Vec<u32>)]) -> usize {
    let mut pairs = std::collections::BTreeSet::new();
    for (rank, peers) in unlinked {
        for peer in peers {
            pairs.insert((*peer.min(rank), *peer.max(rank)));
        }
    }
    pairs.len()
}

/// One job of `n` workers.
fn run_once(
    netlab: &Path,
    exe: &Path,
    secret: &str,
    pipeline: &Path,
    job: &str,
    n: u32,
) -> anyhow::Result<Outcome> {
    // Each worker's output goes to a file: rank 0's line holds every worker's report (tens of
    // KiB at 64 workers), more than a pipe holds while nobody reads it.
    let outs = tempfile::tempdir()?;
    let mut workers = Kill(Vec::new());
    for rank in 0..n {
        let out = std::fs::File::create(outs.path().join(format!("{rank}.out")))?;
        let child = Command::new(netlab)
            .args(["exec", &format!("w{}", rank + 1)])
            .arg(exe)
            .args(["worker", "--json", "--rendezvous", RDV, "--job", job])
            .args(["--rank", &rank.to_string(), "--world", &n.to_string()])
            .arg("--pipeline")
            .arg(pipeline)
            .env(crate::secret::ENV, secret)
            .stdout(out)
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
    for rank in 0..n {
        let text = std::fs::read_to_string(outs.path().join(format!("{rank}.out"))).unwrap_or_default();
        let parsed: Option<WorkerOutput> = text.lines().find_map(|l| serde_json::from_str(l).ok());
        outputs.push(parsed);
    }
    let errors: Vec<(u32, String)> = outputs
        .iter()
        .zip(0u32..)
        .filter_map(|(o, rank)| match o {
            None => Some((rank, "no result".to_string())),
            Some(o) => o.error.clone().map(|e| (rank, e)),
        })
        .collect();
    if !errors.is_empty() {
        let unlinked: Vec<(u32, Vec<u32>)> =
            outputs.iter().flatten().map(|o| (o.rank, o.unlinked.clone())).collect();
        let pairs = unpunched_pairs(&unlinked);
        if pairs > 0 {
            return Ok(Outcome::Unpunched(pairs));
        }
        let lines: Vec<String> = errors.iter().map(|(r, e)| format!("rank {r}: {e}")).collect();
        bail!("job {job} failed:\n  {}", lines.join("\n  "));
    }
    let parsed = outputs.swap_remove(0).with_context(|| format!("rank 0 of job {job} printed no result"))?;
    let jobr = parsed.job.with_context(|| format!("rank 0 of job {job} has no job report"))?;
    Ok(Outcome::Linked { punch_us: jobr.mesh_us, setup_us: jobr.setup_us, attempts: jobr.punch_attempts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpunched_pairs_are_counted_once_from_both_sides() {
        let unlinked = vec![(0, vec![3, 5]), (3, vec![0]), (5, vec![0, 7]), (2, vec![])];
        // (0,3), (0,5), (5,7).
        assert_eq!(unpunched_pairs(&unlinked), 3);
        assert_eq!(unpunched_pairs(&[(1, vec![])]), 0);
    }
}
