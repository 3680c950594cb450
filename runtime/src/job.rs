//! The job driver on one worker: starts one actor (on its own arbiter thread) per stage, wires
//! edges and routes, waits for every stage to finish, then exchanges `Done` reports with every
//! peer, commits the outputs (see [`crate::commit`]) and exchanges `Committed`, so that no
//! output appears unless every rank finished, and nobody closes a link another worker still
//! needs. Any failure (an operator, a lost or aborting peer, a protocol violation, the
//! deadline) ends the job, is told to every peer with `Abort`, and removes the outputs' temporary
//! files.
//!
//! ```text
//!   spawn actors (sinks first) ─▶ InstallRoutes ─▶ Start ─▶ wait: all stages done
//!     ─▶ Done(report) to every peer ─▶ wait: Done from every peer (every rank staged its outputs)
//!     ─▶ commit ─▶ Committed to every peer ─▶ wait: Committed from every peer ─▶ stop actors
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use actix::prelude::*;
use updraft_config::RuntimeSettings;

use crate::actor::{ActorSetup, InputPort, OperatorActor};
use crate::commit::Commit;
use crate::error::JobError;
use crate::exchange::{EdgeWiring, OutEdge};
use crate::ids::Rank;
use crate::messages::{EventSink, InstallRoutes, JobEvent, Routes, SendFrame, ToOperator, TransportPort};
use crate::plan::PhysicalPlan;
use crate::report::{OperatorStats, SinkResult, WorkerReport};
use crate::wire::{Control, OutFrame};

/// Who this worker is and what it may use.
pub struct JobContext {
    /// This worker's rank.
    pub me: Rank,
    /// Number of workers.
    pub world: u32,
    /// Deadlines and sizes.
    pub settings: RuntimeSettings,
    /// The transport.
    pub transport: TransportPort,
    /// When the worker started (reports count from here).
    pub started_at: Instant,
    /// Time spent in rendezvous and punching.
    pub setup: Duration,
    /// Time spent punching alone.
    pub mesh: Duration,
    /// Connect attempts made while punching.
    pub punch_attempts: u64,
    /// The channel to each peer.
    pub channels: Vec<crate::report::PeerChannel>,
    /// The job must be over by then.
    pub deadline: tokio::time::Instant,
    /// Publishes the outputs once every rank finished, or removes them on failure.
    pub commit: std::sync::Arc<dyn Commit>,
    /// Turns to `Some(reason)` when the worker must stop (its launcher went away, a signal):
    /// the job then fails at once, telling its peers, and removes its temporaries.
    pub cancel: tokio::sync::watch::Receiver<Option<String>>,
    /// The memory budget the plan's operators reserve from (its peak and spills are reported).
    pub memory: std::sync::Arc<crate::memory::MemoryPool>,
}

/// This worker's report and every peer's.
#[derive(Debug)]
pub struct JobOutcome {
    /// This worker's report.
    pub mine: WorkerReport,
    /// The peers' reports (from their `Done`).
    pub peers: Vec<WorkerReport>,
}

/// Runs `plan` on this worker until the whole job is done everywhere, or fails.
///
/// Must be called inside an actix `System` backed by a multi-threaded tokio runtime.
///
/// # Errors
/// The first failure seen, as a [`JobError`]; peers have been sent an `Abort` by then.
pub async fn run_job(plan: PhysicalPlan, ctx: JobContext) -> Result<JobOutcome, JobError> {
    let edges = plan.edges()?;
    let n = plan.stages.len();
    let names: Vec<String> = plan.stages.iter().map(|s| s.name.clone()).collect();
    let starts_after: Vec<Option<(usize, usize)>> = plan.stages.iter().map(|s| s.start_after).collect();
    let (events, mut rx) = EventSink::channel(EventSink::capacity(n, ctx.world));
    let mut addrs: Vec<Option<Addr<OperatorActor>>> = vec![None; n];
    let mut arbiters = Vec::with_capacity(n);

    for (i, stage) in plan.stages.into_iter().enumerate().rev() {
        let mut outputs = Vec::new();
        for e in edges.iter().filter(|e| e.from == i) {
            let consumer =
                addrs[e.to].clone().ok_or_else(|| JobError::Plan(format!("stage {} has no actor", e.to)))?;
            let wiring = EdgeWiring {
                id: e.id,
                exchange: e.exchange,
                port: e.port,
                local: consumer.recipient(),
                transport: ctx.transport.send.clone(),
            };
            outputs.push(OutEdge::new(
                wiring,
                ctx.me,
                ctx.world,
                ctx.settings.channel_credit,
                ctx.settings.max_frame,
            ));
        }
        let setup = ActorSetup {
            stage: i,
            name: stage.name.clone(),
            phase: stage.phase,
            me: ctx.me,
            inputs: stage.inputs.iter().map(|inp| InputPort::new(inp.exchange, ctx.me, ctx.world)).collect(),
            edge_ports: edges.iter().filter(|e| e.to == i).map(|e| (e.id, e.port)).collect(),
            outputs,
            transport: ctx.transport.send.clone(),
            events: events.clone(),
            started_at: ctx.started_at,
        };
        let arbiter = Arbiter::new();
        let op = stage.operator;
        let addr = OperatorActor::start_in_arbiter(&arbiter.handle(), move |_| OperatorActor::new(setup, op));
        addrs[i] = Some(addr);
        arbiters.push(arbiter);
    }
    let addrs: Vec<Addr<OperatorActor>> = addrs.into_iter().flatten().collect();
    let mut consumers = Vec::with_capacity(edges.len());
    let mut producers = Vec::with_capacity(edges.len());
    for e in &edges {
        consumers.push(addrs[e.to].clone().recipient());
        producers.push(addrs[e.from].clone().recipient());
    }
    ctx.transport
        .install
        .do_send(InstallRoutes { routes: Routes { consumers, producers }, events: events.clone() });
    // A stage that starts after another's input ended is announced to that stage before any
    // stage starts, so the input cannot end unseen.
    for (i, after) in starts_after.iter().enumerate() {
        if let Some((stage, port)) = *after {
            addrs[stage].do_send(ToOperator::StartAfter { port, dependent: addrs[i].clone().recipient() });
        }
    }
    for (addr, after) in addrs.iter().zip(&starts_after) {
        if after.is_none() {
            addr.do_send(ToOperator::Start);
        }
    }

    let mut driver = Driver {
        ctx: &ctx,
        names: &names,
        peers_done: BTreeMap::new(),
        peers_committed: BTreeMap::new(),
        committed: false,
        lost_after_commit: Vec::new(),
    };
    let result = driver.run(&mut rx, n).await;
    for arbiter in &arbiters {
        arbiter.stop();
    }
    // A failure is told to the peers, and the outputs' temporaries removed, at once.
    if let Err(e) = &result {
        if !driver.committed {
            ctx.commit.abort();
        }
        let (reason, class) = (e.to_string(), e.class());
        for peer in (0..ctx.world).filter(|p| *p != ctx.me) {
            if let Ok(frame) = OutFrame::control(0, 0, &Control::Abort { reason: reason.clone(), class }) {
                ctx.transport.send.do_send(SendFrame { peer, frame });
            }
        }
    }
    // Stage threads end before the job does, so a process that runs job after job (a warm
    // function) never carries one job's threads into the next. After a success they are idle;
    // after a failure one may be in the middle of a long operator call: it gets a second to
    // return, then is left behind (named in the log) rather than holding the failure up.
    let limit = if result.is_ok() { Duration::from_secs(5) } else { Duration::from_secs(1) };
    let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
    let joiner = std::thread::Builder::new().name("updraft-join".into()).spawn(move || {
        for arbiter in arbiters {
            let _ = arbiter.join();
        }
        let _ = joined_tx.send(());
    });
    if joiner.is_ok() && tokio::time::timeout(limit, joined_rx).await.is_err() {
        tracing::warn!(after = ?limit, "stage threads still busy after the job ended; left behind");
    }
    match result {
        Ok(mine) => Ok(JobOutcome { mine, peers: driver.peers_done.into_values().collect() }),
        Err(e) => {
            if !driver.committed {
                // A stage that was still writing may have created a temporary file since.
                ctx.commit.abort();
            }
            Err(e)
        }
    }
}

struct Driver<'a> {
    ctx: &'a JobContext,
    names: &'a [String],
    peers_done: BTreeMap<Rank, WorkerReport>,
    /// Peers' commit results (`Some(error)` when it failed).
    peers_committed: BTreeMap<Rank, Option<String>>,
    /// This rank published its outputs: a later failure cannot take them back.
    committed: bool,
    lost_after_commit: Vec<Rank>,
}

impl Driver<'_> {
    async fn run(
        &mut self,
        rx: &mut tokio::sync::mpsc::Receiver<JobEvent>,
        n: usize,
    ) -> Result<WorkerReport, JobError> {
        let mut finished: HashMap<usize, (OperatorStats, Option<crate::report::TableSummary>)> =
            HashMap::new();
        while finished.len() < n {
            let waiting = || {
                let open: Vec<&str> =
                    (0..n).filter(|i| !finished.contains_key(i)).map(|i| self.names[i].as_str()).collect();
                format!("stages still running: {}", open.join(", "))
            };
            let event = self.next(rx, &waiting).await?;
            if let JobEvent::OperatorDone { stage, stats, summary } = event {
                finished.insert(stage, (stats, summary));
            } else {
                self.handle(event)?;
            }
        }
        let (bytes_sent, bytes_received) = self.ctx.transport.traffic.snapshot();
        let mut stages: Vec<(usize, (OperatorStats, Option<crate::report::TableSummary>))> =
            finished.into_iter().collect();
        stages.sort_by_key(|(i, _)| *i);
        let mut report = WorkerReport {
            rank: self.ctx.me,
            setup_us: self.ctx.setup.as_micros() as u64,
            mesh_us: self.ctx.mesh.as_micros() as u64,
            punch_attempts: self.ctx.punch_attempts,
            wall_us: self.ctx.started_at.elapsed().as_micros() as u64,
            bytes_sent,
            bytes_received,
            channels: self.ctx.channels.clone(),
            bytes_sent_by_channel: self
                .ctx
                .transport
                .traffic
                .sent_by_channel()
                .into_iter()
                .map(|(channel, bytes)| crate::report::ChannelBytes { channel, bytes })
                .collect(),
            data_frames_sent: self
                .ctx
                .transport
                .traffic
                .data_frames_sent
                .load(std::sync::atomic::Ordering::Relaxed),
            peak_rss_bytes: crate::memory::peak_rss().unwrap_or(0),
            memory_peak_bytes: self.ctx.memory.peak(),
            spilled_bytes: self.ctx.memory.spilled().0,
            spill_files: self.ctx.memory.spilled().1,
            ..WorkerReport::default()
        };
        for (_, (stats, summary)) in stages {
            if let Some(summary) = summary {
                report.sinks.push(SinkResult { name: stats.name.clone(), summary });
            }
            metrics::histogram!(crate::metrics::PHASE_SECONDS, "phase" => stats.phase.label())
                .record(stats.busy_us as f64 / 1e6);
            report.operators.push(stats);
        }
        let done = OutFrame::control(0, 0, &Control::Done { report: report.clone() })
            .map_err(|e| JobError::Transport(e.to_string()))?;
        for peer in (0..self.ctx.world).filter(|p| *p != self.ctx.me) {
            self.ctx.transport.send.do_send(SendFrame { peer, frame: done.clone() });
        }
        while self.peers_done.len() + 1 < self.ctx.world as usize {
            let waiting = || {
                let open: Vec<String> = (0..self.ctx.world)
                    .filter(|p| *p != self.ctx.me && !self.peers_done.contains_key(p))
                    .map(|p| p.to_string())
                    .collect();
                format!("finished here; waiting for ranks {} to finish", open.join(", "))
            };
            let event = self.next(rx, &waiting).await?;
            self.handle(event)?;
        }
        // Every rank finished every stage, so every rank staged its outputs: publish ours.
        let error = self.ctx.commit.commit().err();
        self.committed = error.is_none();
        let committed = OutFrame::control(0, 0, &Control::Committed { error: error.clone() })
            .map_err(|e| JobError::Transport(e.to_string()))?;
        for peer in (0..self.ctx.world).filter(|p| *p != self.ctx.me) {
            self.ctx.transport.send.do_send(SendFrame { peer, frame: committed.clone() });
        }
        if let Some(error) = error {
            return Err(JobError::Commit { rank: self.ctx.me, error });
        }
        while self.peers_committed.len() + 1 < self.ctx.world as usize {
            let waiting = || {
                let open: Vec<String> = (0..self.ctx.world)
                    .filter(|p| *p != self.ctx.me && !self.peers_committed.contains_key(p))
                    .map(|p| p.to_string())
                    .collect();
                format!("outputs committed here; waiting for ranks {} to commit theirs", open.join(", "))
            };
            let event = self.next(rx, &waiting).await?;
            self.handle(event)?;
        }
        if let Some((rank, Some(error))) = self.peers_committed.iter().find(|(_, e)| e.is_some()) {
            return Err(JobError::Commit { rank: *rank, error: error.clone() });
        }
        Ok(report)
    }

    async fn next(
        &self,
        rx: &mut tokio::sync::mpsc::Receiver<JobEvent>,
        waiting: &dyn Fn() -> String,
    ) -> Result<JobEvent, JobError> {
        let mut cancel = self.ctx.cancel.clone();
        tokio::select! {
            event = tokio::time::timeout_at(self.ctx.deadline, rx.recv()) => match event {
                Err(_) => Err(JobError::Timeout { limit: self.ctx.settings.job_timeout, waiting: waiting() }),
                Ok(None) => Err(JobError::Transport("job event queue closed".into())),
                Ok(Some(event)) => Ok(event),
            },
            reason = cancelled(&mut cancel) => Err(JobError::Cancelled(reason)),
        }
    }

    fn handle(&mut self, event: JobEvent) -> Result<(), JobError> {
        match event {
            JobEvent::OperatorDone { .. } => Ok(()),
            JobEvent::OperatorFailed { stage, error, class } => Err(JobError::Operator {
                stage: self.names.get(stage).cloned().unwrap_or_default(),
                rank: self.ctx.me,
                error,
                class,
            }),
            JobEvent::Protocol { edge, peer, detail } => Err(JobError::Protocol { edge, peer, detail }),
            JobEvent::PeerLost { peer, error } => {
                if self.peers_committed.contains_key(&peer) {
                    self.lost_after_commit.push(peer);
                    Ok(())
                } else if self.peers_done.contains_key(&peer) {
                    Err(JobError::PeerLost {
                        peer,
                        error: format!("{error} (after it finished, before it committed its outputs)"),
                    })
                } else {
                    Err(JobError::PeerLost { peer, error })
                }
            }
            JobEvent::PeerAborted { peer, reason, class } => {
                Err(JobError::PeerAborted { peer, reason, class })
            }
            JobEvent::PeerDone { peer, report } => {
                self.peers_done.insert(peer, *report);
                Ok(())
            }
            JobEvent::PeerCommitted { peer, error } => {
                self.peers_committed.insert(peer, error);
                Ok(())
            }
        }
    }
}

/// Waits until `cancel` holds a reason (never, if its sender is gone without one).
pub async fn cancelled(cancel: &mut tokio::sync::watch::Receiver<Option<String>>) -> String {
    loop {
        if let Some(reason) = cancel.borrow_and_update().clone() {
            return reason;
        }
        if cancel.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}
