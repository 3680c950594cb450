//! One worker: register at the rendezvous (with its plan fingerprint), punch links to every
//! peer, agree the job's inputs with every peer, run the plan in an actix system, exchange
//! reports, commit the outputs, close the links.
//!
//! ```text
//!  register(plan lines) ─▶ peer table + run id ─▶ punch / relay links ─▶ TransportActor
//!    ─▶ agree inputs (rank 0 lists, every rank reads its files' schemas, allgather, unify)
//!    ─▶ plan ─▶ run_job (stages, Done, commit, Committed) ─▶ close links
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use updraft_config::{ChannelPolicy, PipelineSpec};
use updraft_operators::inputs::{JobInputs, Listing, ShareReport, agree, list, read_share};
use updraft_operators::outputs::JobOutputs;
use updraft_operators::{PlanContext, build_plan_with};
use updraft_runtime::collective::Communicator;
use updraft_runtime::ids::job_hash;
use updraft_runtime::job::{JobContext, run_job};
use updraft_runtime::messages::{AttachCollectives, TransportPort};
use updraft_runtime::report::{JobReport, PeerChannel, WorkerReport};
use updraft_transports::punch::handshake::Identity;
use updraft_transports::punch::{MeshConfig, PunchError, punch_mesh};
use updraft_transports::relay::{Relay, run_key};
use updraft_transports::rendezvous::{Registered, Registration, register};
use updraft_transports::transport::await_links;
use updraft_transports::{Endpoint, JobKey, Shutdown, TransportActor};

use crate::output;
use crate::telemetry::Pusher;

/// `updraft worker` arguments.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Rendezvous address, HOST:PORT (a name is resolved once, at start).
    #[arg(long, value_parser = resolve)]
    pub rendezvous: SocketAddr,
    /// Job id (the same on every worker of the job).
    #[arg(long)]
    pub job: String,
    /// This worker's rank.
    #[arg(long)]
    pub rank: u32,
    /// Number of workers.
    #[arg(long)]
    pub world: u32,
    /// Pipeline file.
    #[arg(long)]
    pub pipeline: PathBuf,
    /// Local address to bind (port is picked by the kernel).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind: IpAddr,
    /// File holding the shared secret (default: the UPDRAFT_SECRET environment variable).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Print one JSON line (for launchers) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Exit when standard input closes (the launcher went away).
    #[arg(long)]
    pub watch_stdin: bool,
    /// Also serve this worker's own `/metrics` here (it always pushes them to the rendezvous).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

/// The first address `HOST:PORT` resolves to.
fn resolve(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{text}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{text}` has no address"))
}

/// What a worker prints with `--json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerOutput {
    /// Rank.
    pub rank: u32,
    /// Process id.
    pub pid: u32,
    /// Error, if the job failed here.
    pub error: Option<String>,
    /// This worker's report.
    pub report: Option<WorkerReport>,
    /// The whole job's report (rank 0 only).
    pub job: Option<JobReport>,
}

/// Runs `updraft worker`.
pub fn main(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    if args.watch_stdin {
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            eprintln!("updraft worker: the launcher went away; exiting");
            std::process::exit(3);
        });
    }
    let spec = match output::load_pipeline(&args.pipeline) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    if args.world == 0 || args.rank >= args.world {
        anyhow::bail!("--rank {} is outside 0..{} (--world)", args.rank, args.world);
    }
    let secret = crate::secret::load(args.secret_file.as_deref())?;
    let out = run(&args, spec, &secret);
    let failed = out.error.is_some();
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else if let Some(e) = &out.error {
        eprintln!("updraft worker {}: job failed: {e}", args.rank);
    } else if let Some(job) = &out.job {
        output::print_job(job);
    } else {
        println!("updraft worker {}: done", args.rank);
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Runs the worker to completion; errors end up in the output.
pub fn run(args: &WorkerArgs, spec: PipelineSpec, secret: &[u8]) -> WorkerOutput {
    let mut out =
        WorkerOutput { rank: args.rank, pid: std::process::id(), error: None, report: None, job: None };
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("updraft-io")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the tokio runtime: {e}"))
    });
    let result = system.block_on(run_async(args, &spec, secret, &mut out));
    if let Err(e) = result {
        out.error = Some(format!("{e:#}"));
    }
    out
}

async fn run_async(
    args: &WorkerArgs,
    spec: &PipelineSpec,
    secret: &[u8],
    out: &mut WorkerOutput,
) -> anyhow::Result<()> {
    let started_at = Instant::now();
    let handle = crate::telemetry::install(args.metrics_listen)?;
    let settings = spec.runtime.clone();
    let deadline = tokio::time::Instant::now() + settings.job_timeout;
    let key = JobKey::derive(secret, &args.job);
    let registration = Registration {
        job: args.job.clone(),
        rank: args.rank,
        world: args.world,
        key: key.clone(),
        bind: SocketAddr::new(args.bind, 0),
        rendezvous: args.rendezvous,
        plan: crate::fingerprint::plan_lines(spec, crate::registry()),
    };
    let registered = register(&registration, settings.rendezvous_timeout).await.context("rendezvous")?;
    let pusher = Pusher { rendezvous: args.rendezvous, job: args.job.clone(), rank: args.rank, key, handle };
    let periodic = pusher.spawn_periodic();
    let result = run_registered(args, spec, registered, &pusher, started_at, deadline, out).await;
    periodic.abort();
    pusher.push(Duration::from_secs(2)).await;
    result
}

async fn run_registered(
    args: &WorkerArgs,
    spec: &PipelineSpec,
    registered: Registered,
    pusher: &Pusher,
    started_at: Instant,
    deadline: tokio::time::Instant,
    out: &mut WorkerOutput,
) -> anyhow::Result<()> {
    let settings = spec.runtime.clone();
    let hash = job_hash(&args.job);
    let run = format!("{:016x}", registered.run);
    tracing::info!(rank = args.rank, local = %registered.local, public = %registered.public, %run, "registered; punching");
    let relay = Relay::from_settings(&settings).map_err(|e| anyhow::anyhow!("relay: {e}"))?;
    // Names this run's relay keys: the job and the peer table, which differs between runs.
    let relay_key = run_key(hash, args.rank, registered.public, registered.local, &registered.peers);
    let forced = matches!(settings.channel, ChannelPolicy::Redis | ChannelPolicy::S3);
    let mut endpoints: Vec<(u32, Endpoint)> = Vec::new();
    let mut relayed: Vec<u32> = Vec::new();
    let (mesh_time, punch_attempts) = if forced {
        // Forced onto a relay: no punching; the rendezvous still started every worker together.
        relayed = registered.peers.iter().map(|p| p.rank).collect();
        drop(registered);
        (Duration::ZERO, 0)
    } else {
        let identity = Identity { me: args.rank, world: args.world, key: pusher.key.clone(), job_hash: hash };
        let mesh_cfg = MeshConfig {
            attempt: settings.punch_attempt,
            handshake_timeout: settings.handshake_timeout,
            timeout: settings.mesh_timeout,
            partial_ok: relay.is_some(),
        };
        let mesh = punch_mesh(
            &identity,
            registered.local,
            registered.public,
            &registered.listener,
            &registered.peers,
            &mesh_cfg,
        )
        .await
        .context("making links")?;
        drop(registered);
        if let Some(PunchError::Unreachable { missing, .. }) = &mesh.unreachable {
            tracing::warn!(
                rank = args.rank,
                ?missing,
                relay = relay.as_ref().map_or("", Relay::name),
                "not punched by the deadline; relaying: {}",
                mesh.unreachable.as_ref().map(ToString::to_string).unwrap_or_default()
            );
            relayed = missing.clone();
        }
        let attempts = mesh.pairs.iter().map(|p| u64::from(p.attempts)).sum();
        endpoints.extend(mesh.links.into_iter().map(|(peer, stream)| (peer, Endpoint::Direct(stream))));
        (mesh.elapsed, attempts)
    };
    if let Some(relay) = &relay {
        for &peer in &relayed {
            let t = settings.rendezvous_timeout;
            let sender =
                relay.sender(&relay_key, args.rank, peer, t).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let receiver =
                relay.receiver(&relay_key, peer, args.rank, t).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            endpoints.push((peer, Endpoint::Relay { sender, receiver, name: relay.name() }));
        }
    }
    let channels: Vec<PeerChannel> = endpoints
        .iter()
        .map(|(peer, e)| PeerChannel { peer: *peer, channel: e.channel().to_string() })
        .collect();
    let setup = started_at.elapsed();
    metrics::histogram!(updraft_runtime::metrics::SETUP_SECONDS).record(setup.as_secs_f64());
    tracing::info!(rank = args.rank, links = endpoints.len(), ?setup, "links up; job running");
    // Show the links on the job's /metrics now rather than at the next periodic push.
    let early = pusher.clone();
    tokio::spawn(async move { early.push(Duration::from_secs(2)).await });

    let transport = TransportActor::new(args.rank, hash, &settings, endpoints);
    let (port, addr) = transport.start_port();
    let result = match agree_inputs(spec, args.rank, args.world, &port, deadline).await {
        Ok(inputs) => {
            let outputs = JobOutputs::new(spec, args.rank, args.world, &run);
            let ctx = PlanContext { rank: args.rank, world: args.world, inputs: &inputs, outputs: &outputs };
            match build_plan_with(spec, ctx, crate::registry()) {
                Ok(plan) => {
                    let ctx = JobContext {
                        me: args.rank,
                        world: args.world,
                        settings: settings.clone(),
                        transport: port,
                        started_at,
                        setup,
                        mesh: mesh_time,
                        punch_attempts,
                        channels,
                        deadline,
                        commit: outputs,
                    };
                    run_job(plan, ctx).await.map_err(anyhow::Error::from)
                }
                Err(e) => Err(abort_peers(&port, args.rank, args.world, e.into())),
            }
        }
        Err(e) => Err(abort_peers(&port, args.rank, args.world, e)),
    };
    let flush = if result.is_ok() { settings.peer_timeout } else { Duration::from_secs(2) };
    match addr.send(Shutdown).await {
        Ok(tasks) => await_links(tasks, flush).await,
        Err(e) => tracing::warn!(%e, "transport gone before shutdown"),
    }
    if let Some(relay) = relay.filter(|_| !relayed.is_empty()) {
        // What this worker read is gone already; leftovers of its incoming directions are
        // deleted here. Outgoing ones are left to their readers (an Abort may still be on its
        // way) and to the key's expiry.
        if let Err(e) = relay.cleanup(&relay_key, args.rank, &relayed, false, Duration::from_secs(10)).await {
            tracing::warn!(%e, "relay keys not cleaned up; they expire on their own");
        }
    }
    let outcome = result?;
    if args.rank == 0 {
        let mut all = outcome.peers.clone();
        all.push(outcome.mine.clone());
        out.job = Some(JobReport::combine(&spec.name, all));
    }
    out.report = Some(outcome.mine);
    Ok(())
}

/// Tells every peer that this worker fails before the job's operators started (once they run,
/// the job driver does this), so that each names the cause rather than a closed link.
fn abort_peers(port: &TransportPort, me: u32, world: u32, e: anyhow::Error) -> anyhow::Error {
    let reason = format!("{e:#}");
    if let Ok(frame) =
        updraft_runtime::wire::OutFrame::control(0, 0, &updraft_runtime::wire::Control::Abort { reason })
    {
        for peer in (0..world).filter(|p| *p != me) {
            port.send.do_send(updraft_runtime::messages::SendFrame { peer, frame: frame.clone() });
        }
    }
    e
}

/// Agrees the job's inputs with every peer before any data moves (see
/// `updraft_operators::inputs`): rank 0 lists every file source and broadcasts the list; every
/// rank checks its view of it and reads the schemas of the files it will read; the reports are
/// gathered everywhere and every rank computes the same agreed inputs, or fails with the same
/// problems.
///
/// # Errors
/// Every rank's problems (files missing on a rank, schemas that disagree), or a lost peer.
async fn agree_inputs(
    spec: &PipelineSpec,
    rank: u32,
    world: u32,
    port: &TransportPort,
    deadline: tokio::time::Instant,
) -> anyhow::Result<JobInputs> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    port.attach.send(AttachCollectives { inbox: tx }).await.map_err(|e| anyhow::anyhow!("transport: {e}"))?;
    let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
    let mut comm = Communicator::new(rank, world, port.send.clone(), rx, wait);
    let listing = if rank == 0 {
        let owned = spec.clone();
        let listed =
            tokio::task::spawn_blocking(move || list(&owned, world).map_err(|e| e.messages())).await?;
        Some(bytes::Bytes::from(Listing::to_bytes(&listed).map_err(anyhow::Error::msg)?))
    } else {
        None
    };
    let listing = comm.broadcast(0, listing).await.context("agreeing the inputs")?;
    let listing = match Listing::from_bytes(&listing).map_err(anyhow::Error::msg)? {
        Ok(l) => l,
        Err(problems) => anyhow::bail!("inputs (listed by rank 0): {}", problems.join("; ")),
    };
    for (source, files) in &listing.sources {
        tracing::info!(rank, %source, files = files.len(), "inputs listed");
    }
    let (owned, shared) = (spec.clone(), listing.clone());
    let report = tokio::task::spawn_blocking(move || read_share(&owned, &shared, rank, world)).await?;
    let report = bytes::Bytes::from(report.to_bytes().map_err(anyhow::Error::msg)?);
    let reports = comm.allgather(report).await.context("agreeing the inputs")?;
    let reports = reports
        .iter()
        .map(|b| ShareReport::from_bytes(b))
        .collect::<Result<Vec<_>, String>>()
        .map_err(anyhow::Error::msg)?;
    agree(spec, &listing, &reports).map_err(|problems| anyhow::anyhow!("inputs: {}", problems.join("; ")))
}
