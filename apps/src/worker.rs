//! One worker: register at the rendezvous (with its plan fingerprint), punch links to every
//! peer, agree the job's inputs with every peer, run the plan in an actix system, exchange
//! reports, commit the outputs, close the links.
//!
//! ```text
//!  register(plan lines) ─▶ peer table + run id ─▶ punch / relay links ─▶ TransportActor
//!    ─▶ agree inputs (rank 0 lists, every rank reads its files' schemas, allgather, unify)
//!    ─▶ plan ─▶ run_job (stages, Done, commit, Committed) ─▶ close links
//! ```
//!
//! A worker stops early when told to (the `cancel` sender: its launcher went away, SIGTERM or
//! SIGINT): before its operators start it simply fails; once they run, the job driver fails the
//! job, tells the peers and removes the outputs' temporaries. Every failure is reported with its
//! class ([`FailureClass`]), which launchers use to decide whether a retry can help.

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
use updraft_runtime::job::{JobContext, cancelled, run_job};
use updraft_runtime::messages::{AttachCollectives, TransportPort};
use updraft_runtime::report::{JobReport, PeerChannel, WorkerReport};
use updraft_runtime::testing::{Fault, FaultHook, FaultPlan, Faulty};
use updraft_runtime::{FailureClass, JobError};
use updraft_transports::punch::handshake::Identity;
use updraft_transports::punch::{MeshConfig, PunchError, punch_mesh};
use updraft_transports::relay::{Relay, run_key};
use updraft_transports::rendezvous::{Registered, Registration, register};
use updraft_transports::secure::Session;
use updraft_transports::transport::await_links;
use updraft_transports::{Endpoint, InjectLinkFault, JobKey, Shutdown, TransportActor};

use crate::output;
use crate::telemetry::Pusher;

/// `updraft worker` arguments.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Rendezvous address, HOST:PORT (a name is resolved once, at start).
    #[arg(long, value_parser = resolve)]
    pub rendezvous: SocketAddr,
    /// Job id (the same on every worker of the job; default under Slurm, Open MPI or from
    /// UPDRAFT_JOB).
    #[arg(long)]
    pub job: String,
    /// This worker's rank (default: from Slurm, Open MPI, PMI, a Kubernetes Indexed Job or
    /// UPDRAFT_RANK; see README "Clusters").
    #[arg(long)]
    pub rank: u32,
    /// Number of workers (default: from Slurm, Open MPI, PMI or UPDRAFT_WORLD).
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
    /// Which attempt of a retried job this is (1-based; launchers that retry set it).
    #[arg(long, default_value_t = 1, hide = true)]
    pub attempt: u32,
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
    /// The error's class, if the job failed here.
    #[serde(default)]
    pub error_class: Option<FailureClass>,
    /// This worker's report.
    pub report: Option<WorkerReport>,
    /// The whole job's report (rank 0 only).
    pub job: Option<JobReport>,
    /// Ranks this worker had no link to at the mesh deadline, when that failed its job (a job
    /// with a relay sends through it instead and does not fail).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unlinked: Vec<u32>,
}

/// Environment variable a launcher sets to the number of workers it starts on this machine,
/// which share its memory (see [`updraft_runtime::MemoryPool::for_job`]); 1 when unset.
pub const WORKERS_ON_HOST: &str = "UPDRAFT_WORKERS_ON_HOST";

/// How long a worker whose launcher went away has to fail its job and remove its temporaries
/// before the process exits regardless.
const LAUNCHER_GONE_GRACE: Duration = Duration::from_millis(800);

/// Writes a line to stderr; a closed stderr (a dead launcher's pipe) is not an error.
fn note(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Runs `updraft worker`.
pub fn main(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let stop = Stop::default();
    if args.watch_stdin {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            note("updraft worker: the launcher went away; stopping");
            stop.stop("the launcher went away");
            std::thread::sleep(LAUNCHER_GONE_GRACE);
            // Cancelled (status 1), as when the stop is handled in time.
            std::process::exit(1);
        });
    }
    let spec = match output::load_pipeline(&args.pipeline) {
        Ok(s) => s,
        Err(e) => {
            note(&e.to_string());
            return Ok(ExitCode::from(2));
        }
    };
    if args.world == 0 || args.rank >= args.world {
        let msg = format!("--rank {} is outside 0..{} (--world)", args.rank, args.world);
        return Err(output::BadInput(msg).into());
    }
    let secret = crate::secret::load(args.secret_file.as_deref())?;
    let out = run(&args, spec, &secret, &stop, true);
    let failed = out.error.is_some();
    use std::io::Write;
    let mut stdout = std::io::stdout();
    if args.json {
        let _ = writeln!(stdout, "{}", serde_json::to_string(&out)?);
    } else if let Some(e) = &out.error {
        note(&format!("updraft worker {}: job failed: {e}", args.rank));
    } else if let Some(job) = &out.job {
        output::print_job(job);
    } else {
        let _ = writeln!(stdout, "updraft worker {}: done", args.rank);
    }
    Ok(if failed { output::failure_exit(out.error_class) } else { ExitCode::SUCCESS })
}

/// Tells a running worker to stop; cloned to whoever may need to (a watcher thread, a signal
/// handler).
#[derive(Clone)]
pub struct Stop(std::sync::Arc<tokio::sync::watch::Sender<Option<String>>>);

impl Default for Stop {
    fn default() -> Self {
        Stop(std::sync::Arc::new(tokio::sync::watch::channel(None).0))
    }
}

impl Stop {
    /// Stops the worker, giving `reason` (the first reason wins).
    pub fn stop(&self, reason: &str) {
        self.0.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason.to_string());
                true
            } else {
                false
            }
        });
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.0.subscribe()
    }
}

/// Runs the worker to completion; errors end up in the output, with their class. `stop`
/// stops it early; with `signals`, so do SIGTERM and SIGINT.
pub fn run(args: &WorkerArgs, spec: PipelineSpec, secret: &[u8], stop: &Stop, signals: bool) -> WorkerOutput {
    let mut out = WorkerOutput {
        rank: args.rank,
        pid: std::process::id(),
        error: None,
        error_class: None,
        report: None,
        job: None,
        unlinked: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("updraft-io")
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(format!("cannot start the tokio runtime: {e}"));
            out.error_class = Some(FailureClass::Unavailable);
            return out;
        }
    };
    let system = actix::System::with_tokio_rt(move || runtime);
    let cancel = stop.subscribe();
    let result = system.block_on(async {
        if signals {
            let stop = stop.clone();
            tokio::spawn(async move {
                let reason = stop_signal().await;
                stop.stop(&reason);
            });
        }
        run_async(args, &spec, secret, &mut out, cancel).await
    });
    if let Err(e) = result {
        out.error = Some(format!("{e:#}"));
        out.error_class = Some(classify(&e));
        out.unlinked = unlinked_ranks(&e);
    }
    out
}

/// The ranks a failed mesh left without a link, when `e` is (or was caused by) that failure.
fn unlinked_ranks(e: &anyhow::Error) -> Vec<u32> {
    e.chain()
        .find_map(|c| {
            c.downcast_ref::<PunchError>().map(|PunchError::Unreachable { missing, .. }| missing.clone())
        })
        .unwrap_or_default()
}

/// Waits for SIGTERM or SIGINT, and names it.
async fn stop_signal() -> String {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "stopped by SIGTERM".to_string(),
            _ = int.recv() => "stopped by SIGINT".to_string(),
        },
        _ => std::future::pending().await,
    }
}

/// An error with the class of failure it is (for errors no typed error of a crate carries).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What kind of failure.
    pub class: FailureClass,
    /// What happened.
    pub message: String,
}

/// The class of a worker's failure, from the typed errors in its chain.
pub fn classify(e: &anyhow::Error) -> FailureClass {
    use updraft_runtime::collective::CollectiveError;
    use updraft_transports::rendezvous::RendezvousError;
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.class;
        }
        if let Some(j) = cause.downcast_ref::<JobError>() {
            return j.class();
        }
        if let Some(a) = cause.downcast_ref::<updraft_operators::inputs::AgreeError>() {
            return a.class;
        }
        if let Some(o) = cause.downcast_ref::<updraft_runtime::OperatorError>() {
            return o.class();
        }
        if let Some(r) = cause.downcast_ref::<RendezvousError>() {
            return match r {
                RendezvousError::Refused { class, .. } => *class,
                _ => FailureClass::Rendezvous,
            };
        }
        if cause.downcast_ref::<PunchError>().is_some() || cause.downcast_ref::<CollectiveError>().is_some() {
            return FailureClass::Link;
        }
    }
    FailureClass::Operator
}

/// Runs `work` unless the worker is told to stop first.
async fn unless_stopped<T>(
    cancel: &mut tokio::sync::watch::Receiver<Option<String>>,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        r = work => r,
        reason = cancelled(cancel) => Err(JobError::Cancelled(reason).into()),
    }
}

/// The plan with the fault of `UPDRAFT_FAULT` injected, when it names this rank (and this
/// attempt, when it names one): a testing aid (see
/// `updraft_runtime::testing::FaultPlan`, and `updraft bench faults`).
///
/// # Errors
/// A fault that cannot be read, or names a stage the plan does not have.
fn with_fault(
    mut plan: updraft_runtime::plan::PhysicalPlan,
    args: &WorkerArgs,
    transport: &actix::Addr<TransportActor>,
) -> anyhow::Result<updraft_runtime::plan::PhysicalPlan> {
    let Some(text) = std::env::var("UPDRAFT_FAULT").ok().filter(|t| !t.is_empty()) else { return Ok(plan) };
    let fault = FaultPlan::parse(&text)
        .map_err(|e| Failure { class: FailureClass::Config, message: format!("UPDRAFT_FAULT: {e}") })?;
    if fault.rank != args.rank || fault.attempt.is_some_and(|a| a != args.attempt) {
        return Ok(plan);
    }
    let Some(i) = plan.stages.iter().position(|s| s.name == fault.stage) else {
        let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
        return Err(Failure {
            class: FailureClass::Config,
            message: format!("UPDRAFT_FAULT: no stage `{}` (stages: {})", fault.stage, names.join(", ")),
        }
        .into());
    };
    let next = (args.rank + 1) % args.world.max(1);
    let (addr, me) = (transport.clone(), args.rank);
    let hook: FaultHook = std::sync::Arc::new(move |f| match f {
        Fault::Exit => std::process::exit(17),
        Fault::Stop(d) => {
            // Another process resumes this one: a stopped process cannot.
            let pid = std::process::id().to_string();
            let resume = format!("sleep {}; kill -CONT {pid}", d.as_secs_f64());
            let _ = std::process::Command::new("sh").args(["-c", &resume]).spawn();
            let _ = std::process::Command::new("kill").args(["-STOP", &pid]).status();
        }
        Fault::DropLink if next != me => addr.do_send(InjectLinkFault::Drop { peer: next }),
        Fault::CorruptFrame if next != me => addr.do_send(InjectLinkFault::Corrupt { peer: next }),
        Fault::StallLink if next != me => addr.do_send(InjectLinkFault::Stall { peer: next }),
        other => tracing::warn!(fault = ?other, "no link to act on; fault ignored"),
    });
    let mut stage = plan.stages.remove(i);
    stage.operator = Box::new(Faulty::new(stage.operator, fault.at, fault.fault, hook));
    plan.stages.insert(i, stage);
    Ok(plan)
}

async fn run_async(
    args: &WorkerArgs,
    spec: &PipelineSpec,
    secret: &[u8],
    out: &mut WorkerOutput,
    mut cancel: tokio::sync::watch::Receiver<Option<String>>,
) -> anyhow::Result<()> {
    let started_at = Instant::now();
    let (handle, metrics_server) = crate::telemetry::install(args.metrics_listen, &spec.name).await?;
    let result = run_with_metrics(args, spec, secret, out, &mut cancel, started_at, handle).await;
    if let Some(server) = metrics_server {
        server.abort();
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_with_metrics(
    args: &WorkerArgs,
    spec: &PipelineSpec,
    secret: &[u8],
    out: &mut WorkerOutput,
    cancel: &mut tokio::sync::watch::Receiver<Option<String>>,
    started_at: Instant,
    handle: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
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
    let registering =
        async { register(&registration, settings.rendezvous_timeout).await.context("rendezvous") };
    let registered = unless_stopped(cancel, registering).await?;
    let pusher = Pusher { rendezvous: args.rendezvous, job: args.job.clone(), rank: args.rank, key, handle };
    crate::telemetry::set_job_state(crate::telemetry::JobState::Running);
    let periodic = pusher.spawn_periodic();
    let result = run_registered(args, spec, registered, &pusher, started_at, deadline, out, cancel).await;
    periodic.abort();
    let failed = result.is_err() || out.error.is_some();
    let state =
        if failed { crate::telemetry::JobState::Failed } else { crate::telemetry::JobState::Succeeded };
    crate::telemetry::set_job_state(state);
    pusher.push(Duration::from_secs(2)).await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_registered(
    args: &WorkerArgs,
    spec: &PipelineSpec,
    registered: Registered,
    pusher: &Pusher,
    started_at: Instant,
    deadline: tokio::time::Instant,
    out: &mut WorkerOutput,
    cancel: &mut tokio::sync::watch::Receiver<Option<String>>,
) -> anyhow::Result<()> {
    let settings = spec.runtime.clone();
    let hash = job_hash(&args.job);
    let run_id = registered.run;
    let run = format!("{run_id:016x}");
    tracing::info!(rank = args.rank, local = %registered.local, public = %registered.public, %run, "registered; punching");
    let relay = Relay::from_settings(&settings).map_err(|e| anyhow::anyhow!("relay: {e}"))?;
    // Names this run's relay keys: the job and the peer table, which differs between runs.
    let relay_key =
        run_key(hash, registered.run, args.rank, registered.public, registered.local, &registered.peers);
    let forced = matches!(settings.channel, ChannelPolicy::Redis | ChannelPolicy::S3);
    let mut endpoints: Vec<(u32, Endpoint)> = Vec::new();
    let mut relayed: Vec<u32> = Vec::new();
    let (mesh_time, punch_attempts) = if forced {
        // Forced onto a relay: no punching; the rendezvous still started every worker together.
        relayed = registered.peers.iter().map(|p| p.rank).collect();
        drop(registered);
        (Duration::ZERO, 0)
    } else {
        let identity = Identity {
            me: args.rank,
            world: args.world,
            key: pusher.key.clone(),
            job_hash: hash,
            run: registered.run,
            encryption: settings.encryption,
        };
        let mesh_cfg = MeshConfig {
            attempt: settings.punch_attempt,
            handshake_timeout: settings.handshake_timeout,
            timeout: settings.mesh_timeout,
            partial_ok: relay.is_some(),
        };
        let punching = async {
            punch_mesh(
                &identity,
                registered.local,
                registered.public,
                &registered.listener,
                &registered.peers,
                &mesh_cfg,
            )
            .await
            .context("making links")
        };
        let mesh = unless_stopped(cancel, punching).await?;
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
        endpoints.extend(mesh.links.into_iter().map(|(peer, conn)| (peer, Endpoint::Direct(conn))));
        (mesh.elapsed, attempts)
    };
    if let Some(relay) = &relay {
        for &peer in &relayed {
            let t = settings.rendezvous_timeout;
            let unavailable = |e: String| Failure { class: FailureClass::Unavailable, message: e };
            let sender = relay.sender(&relay_key, args.rank, peer, t).await.map_err(unavailable)?;
            let receiver = relay.receiver(&relay_key, peer, args.rank, t).await.map_err(unavailable)?;
            let session = Session::relay(settings.encryption, &pusher.key, run_id, args.rank, peer)
                .map_err(|e| anyhow::anyhow!("relay keys: {e}"))?;
            endpoints.push((peer, Endpoint::Relay { sender, receiver, name: relay.name(), session }));
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
    let agreeing = agree_inputs(spec, args.rank, args.world, &port, deadline);
    let result = match unless_stopped(cancel, agreeing).await {
        Ok(inputs) => {
            let outputs = JobOutputs::new(spec, args.rank, args.world, &run);
            let workers_here =
                std::env::var(WORKERS_ON_HOST).ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(1);
            let memory = updraft_runtime::MemoryPool::for_job(&settings, workers_here);
            let ctx = PlanContext {
                rank: args.rank,
                world: args.world,
                inputs: &inputs,
                outputs: &outputs,
                memory: &memory,
            };
            let planned =
                build_plan_with(spec, ctx, crate::registry()).map_err(anyhow::Error::from).and_then(|plan| {
                    crate::limits::check(plan.stages.len(), args.world)
                        .map_err(|message| Failure { class: FailureClass::Config, message })?;
                    with_fault(plan, args, &addr)
                });
            match planned {
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
                        cancel: cancel.clone(),
                        memory: std::sync::Arc::clone(&memory),
                    };
                    let result = run_job(plan, ctx).await.map_err(anyhow::Error::from);
                    memory.remove_spill_files();
                    result
                }
                Err(e) => Err(abort_peers(&port, args.rank, args.world, e)),
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
        let mut job = JobReport::combine(&spec.name, all);
        job.encryption = spec.runtime.encryption.name().to_string();
        out.job = Some(job);
    }
    out.report = Some(outcome.mine);
    Ok(())
}

/// Tells every peer that this worker fails before the job's operators started (once they run,
/// the job driver does this), so that each names the cause rather than a closed link.
fn abort_peers(port: &TransportPort, me: u32, world: u32, e: anyhow::Error) -> anyhow::Error {
    let reason = format!("{e:#}");
    let abort = updraft_runtime::wire::Control::Abort { reason, class: classify(&e) };
    if let Ok(frame) = updraft_runtime::wire::OutFrame::control(0, 0, &abort) {
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
    let (tx, rx) = updraft_runtime::collective::inbox(updraft_runtime::collective::default_inbox_bytes(
        spec.runtime.max_frame,
    ));
    port.attach.send(AttachCollectives { inbox: tx }).await.map_err(|e| anyhow::anyhow!("transport: {e}"))?;
    let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
    let mut comm = Communicator::new(rank, world, port.send.clone(), rx, wait);
    let listing = if rank == 0 {
        let owned = spec.clone();
        let listed =
            tokio::task::spawn_blocking(move || list(&owned, world).map_err(|e| e.to_agree_error())).await?;
        Some(bytes::Bytes::from(Listing::to_bytes(&listed).map_err(anyhow::Error::msg)?))
    } else {
        None
    };
    let listing = comm.broadcast(0, listing).await.context("agreeing the inputs")?;
    let listing = match Listing::from_bytes(&listing).map_err(anyhow::Error::msg)? {
        Ok(l) => l,
        Err(e) => return Err(anyhow::Error::from(e).context("inputs (listed by rank 0)")),
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
    agree(spec, &listing, &reports).map_err(|e| anyhow::Error::from(e).context("inputs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_mesh_names_its_unlinked_ranks_in_the_output() {
        let mesh = PunchError::Unreachable {
            missing: vec![3, 9],
            after: Duration::from_secs(3),
            attempts: "rank 3: 12".into(),
            nat: "cone".into(),
        };
        let e = anyhow::Error::new(mesh).context("making links");
        assert_eq!(unlinked_ranks(&e), vec![3, 9]);
        assert!(unlinked_ranks(&anyhow::anyhow!("lost rank 2")).is_empty());
        let out = WorkerOutput {
            rank: 1,
            pid: 7,
            error: Some(format!("{e:#}")),
            error_class: Some(classify(&e)),
            report: None,
            job: None,
            unlinked: unlinked_ranks(&e),
        };
        let back: WorkerOutput =
            serde_json::from_str(&serde_json::to_string(&out).expect("json")).expect("parse");
        assert_eq!(back.unlinked, vec![3, 9]);
        assert_eq!(back.error_class, Some(FailureClass::Link));
        // Older outputs without the field still parse.
        let old: WorkerOutput =
            serde_json::from_str(r#"{"rank":0,"pid":1,"error":null,"report":null,"job":null}"#).expect("old");
        assert!(old.unlinked.is_empty());
    }
}
