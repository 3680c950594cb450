//! The rendezvous server: a tokio driver around [`RendezvousState`]. One task per connection
//! reads the registration and waits for the reply; one central task owns the state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use updraft_config::defaults;
use updraft_runtime::wire::{read_frame, write_frame};

use crate::auth::JobKey;
use crate::rendezvous::metrics::MetricsStore;
use crate::rendezvous::protocol::{RendezvousMsg, rendezvous_job_hash, server_limits};
use crate::rendezvous::state::{ConnId, Registration, RendezvousState};

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Shared secret that job keys derive from.
    pub secret: Vec<u8>,
    /// How long a half-registered job may wait for its other ranks.
    pub job_ttl: Duration,
    /// How long a new connection may take to send its registration.
    pub register_timeout: Duration,
    /// Most connections served at once; more are closed at once.
    pub max_connections: usize,
}

impl ServerConfig {
    /// Defaults with `secret`.
    pub fn new(secret: Vec<u8>) -> Self {
        ServerConfig {
            secret,
            job_ttl: defaults::RENDEZVOUS_JOB_TTL,
            register_timeout: Duration::from_secs(5),
            max_connections: 8192,
        }
    }
}

enum Event {
    Register {
        conn: ConnId,
        public: SocketAddr,
        msg: RendezvousMsg,
        reply: oneshot::Sender<RendezvousMsg>,
    },
    Gone {
        conn: ConnId,
    },
    /// The job cannot complete (its launcher saw a worker die): refuse it, with this reason.
    FailJob {
        job: String,
        reason: String,
        class: updraft_runtime::FailureClass,
    },
}

/// A running rendezvous server. Dropping it stops it.
pub struct RendezvousServer {
    local: SocketAddr,
    events: mpsc::Sender<Event>,
    metrics: Arc<Mutex<MetricsStore>>,
    registrations: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RendezvousServer {
    /// Binds `addr` and serves until stopped.
    ///
    /// # Errors
    /// If the address cannot be bound.
    pub async fn bind(addr: SocketAddr, config: ServerConfig) -> std::io::Result<RendezvousServer> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let registrations = Arc::new(AtomicU64::new(0));
        let metrics = Arc::new(Mutex::new(MetricsStore::new(Duration::from_secs(600))));
        let (events, rx) = mpsc::channel::<Event>(1024);
        let shared = Shared { registrations: Arc::clone(&registrations), metrics: Arc::clone(&metrics) };
        let task = tokio::spawn(serve(listener, config, stop_rx, shared, events.clone(), rx));
        tracing::info!(%local, "rendezvous listening");
        Ok(RendezvousServer { local, events, metrics, registrations, stop: Some(stop_tx), task })
    }

    /// Refuses job `job`, now and for ranks that register later (within the job TTL), with
    /// `reason`: a launcher that saw one of the job's workers die tells the others at once.
    pub async fn fail_job(&self, job: &str, reason: &str, class: updraft_runtime::FailureClass) {
        let event = Event::FailJob { job: job.to_string(), reason: reason.to_string(), class };
        let _ = tokio::time::timeout(Duration::from_secs(1), self.events.send(event)).await;
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Every worker's latest pushed metrics as one Prometheus exposition (`job` and `worker`
    /// labels added), and the number of workers in it.
    pub fn metrics(&self) -> (String, usize) {
        match self.metrics.lock() {
            Ok(mut m) => {
                m.expire(std::time::Instant::now());
                (m.render(), m.workers())
            }
            Err(_) => (String::new(), 0),
        }
    }

    /// A handle on the metrics store, for serving it elsewhere.
    pub fn metrics_store(&self) -> Arc<Mutex<MetricsStore>> {
        Arc::clone(&self.metrics)
    }

    /// Registrations processed so far (accepted or refused).
    pub fn registrations(&self) -> u64 {
        self.registrations.load(Ordering::Relaxed)
    }

    /// Stops accepting and ends every connection.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }

    /// Serves until the task ends (it ends only on shutdown or a listener failure).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for RendezvousServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counters and stores the server shares with its owner.
struct Shared {
    registrations: Arc<AtomicU64>,
    metrics: Arc<Mutex<MetricsStore>>,
}

async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    mut stop: oneshot::Receiver<()>,
    shared: Shared,
    tx: mpsc::Sender<Event>,
    mut rx: mpsc::Receiver<Event>,
) {
    let Shared { registrations, metrics } = shared;
    let mut state = RendezvousState::new(config.secret.clone(), config.job_ttl);
    let mut waiting: HashMap<ConnId, oneshot::Sender<RendezvousMsg>> = HashMap::new();
    let mut conns = JoinSet::new();
    let mut next_conn: ConnId = 0;
    // After a failed accept (out of file descriptors, say) accepting pauses, doubling up to 1 s,
    // rather than spinning.
    let mut accept_pause: Option<Instant> = None;
    let mut backoff = Duration::from_millis(10);
    loop {
        let expiry = state.next_expiry().map(Instant::from_std);
        tokio::select! {
            _ = &mut stop => break,
            _ = sleep_until_opt(accept_pause) => accept_pause = None,
            accepted = listener.accept(), if accept_pause.is_none() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(10);
                    if conns.len() >= config.max_connections {
                        tracing::warn!(%peer, "rendezvous at its connection limit; closing");
                        continue;
                    }
                    next_conn += 1;
                    let push = Push { store: Arc::clone(&metrics), secret: config.secret.clone() };
                    conns.spawn(connection(next_conn, stream, peer, tx.clone(), config.register_timeout, config.job_ttl, push));
                }
                Err(e) => {
                    tracing::warn!(%e, pause = ?backoff, "rendezvous accept failed; pausing");
                    accept_pause = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            Some(event) = rx.recv() => match event {
                Event::Register { conn, public, msg, reply } => {
                    let RendezvousMsg::Register { job, rank, world, private, plan, wait_ms, mac } = msg else {
                        let _ = reply.send(RendezvousMsg::Refused { reason: "expected a registration".into(), class: updraft_runtime::FailureClass::Rendezvous });
                        continue;
                    };
                    waiting.insert(conn, reply);
                    registrations.fetch_add(1, Ordering::Relaxed);
                    let replies = state.register(std::time::Instant::now(), conn, public, Registration { job: &job, rank, world, private: &private, plan: &plan, wait: Duration::from_millis(wait_ms), mac: &mac });
                    for r in replies {
                        if let Some(tx) = waiting.remove(&r.conn) {
                            let _ = tx.send(r.msg);
                        }
                    }
                }
                Event::Gone { conn } => {
                    waiting.remove(&conn);
                    state.disconnected(conn);
                }
                Event::FailJob { job, reason, class } => {
                    for r in state.fail_job(std::time::Instant::now(), &job, &reason, class) {
                        if let Some(tx) = waiting.remove(&r.conn) {
                            let _ = tx.send(r.msg);
                        }
                    }
                }
            },
            _ = sleep_until_opt(expiry) => {
                for r in state.expire(std::time::Instant::now()) {
                    if let Some(tx) = waiting.remove(&r.conn) {
                        let _ = tx.send(r.msg);
                    }
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Where pushed metrics go, and the secret to check them with.
struct Push {
    store: Arc<Mutex<MetricsStore>>,
    secret: Vec<u8>,
}

async fn connection(
    conn: ConnId,
    mut stream: TcpStream,
    public: SocketAddr,
    events: mpsc::Sender<Event>,
    register_timeout: Duration,
    ttl: Duration,
    push: Push,
) {
    let first = tokio::time::timeout(register_timeout, read_frame(&mut stream, server_limits())).await;
    let msg = match first {
        Ok(Ok(Some(frame))) => match RendezvousMsg::from_frame(&frame) {
            Ok(msg) => msg,
            Err(e) => return refuse(&mut stream, format!("not a registration: {e}")).await,
        },
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return refuse(&mut stream, format!("bad frame: {e}")).await,
        Err(_) => return refuse(&mut stream, format!("no registration within {register_timeout:?}")).await,
    };
    if let RendezvousMsg::Metrics { job, rank, text, mac } = msg {
        if JobKey::derive(&push.secret, &job).verify_metrics(&job, rank, &text, &mac) {
            if let Ok(mut store) = push.store.lock() {
                store.push(std::time::Instant::now(), &job, rank, text);
            }
        } else {
            tracing::debug!(%job, rank, "metrics push with a wrong MAC ignored");
        }
        return;
    }
    let (reply_tx, reply_rx) = oneshot::channel();
    if events.send(Event::Register { conn, public, msg, reply: reply_tx }).await.is_err() {
        return;
    }
    // Wait for the reply while watching the socket: a worker that goes away is forgotten.
    let mut probe = [0u8; 1];
    let reply = tokio::select! {
        r = reply_rx => r.ok(),
        _ = stream.read(&mut probe) => None,
        _ = tokio::time::sleep(ttl + Duration::from_secs(1)) => None,
    };
    match reply {
        Some(msg) => {
            send(&mut stream, &msg).await;
            // Keep the connection (and with it the worker's NAT binding) until the worker closes
            // it after punching, within the job's TTL.
            let mut rest = [0u8; 64];
            let _ = tokio::time::timeout(ttl, async {
                while let Ok(n) = stream.read(&mut rest).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
        None => {
            let _ = events.send(Event::Gone { conn }).await;
        }
    }
}

async fn refuse(stream: &mut TcpStream, reason: String) {
    tracing::debug!(%reason, "rendezvous refused a connection");
    send(stream, &RendezvousMsg::Refused { reason, class: updraft_runtime::FailureClass::Rendezvous }).await;
}

async fn send(stream: &mut TcpStream, msg: &RendezvousMsg) {
    if let Ok(frame) = msg.to_frame() {
        let _ =
            tokio::time::timeout(Duration::from_secs(5), write_frame(stream, rendezvous_job_hash(), &frame))
                .await;
    }
}
