//! The rendezvous server: a tokio driver around [`RendezvousState`]. One task per connection
//! challenges the client, reads and authenticates its registration (or metrics push) and
//! waits for the reply, which it signs for that registration; one central task owns the state.
//!
//! Strangers are bounded before they authenticate ([`crate::admission`]): connections and
//! message bytes per source address and in total, a deadline for the first message, and a
//! connection that does not fit, or is refused, is closed at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::admission::{Admission, Limits, Slot};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use updraft_config::defaults;
use updraft_runtime::wire::{read_frame, write_frame};

use crate::auth::JobKey;
use crate::auth::RegisterFields;
use crate::rendezvous::metrics::MetricsStore;
use crate::rendezvous::protocol::{
    RendezvousMsg, ReplyBinding, plan_digest, rendezvous_job_hash, server_limits,
};
use crate::rendezvous::state::{ConnId, Registration, RendezvousState};

/// Server settings.
#[derive(Clone)]
pub struct ServerConfig {
    /// Shared secret that job keys derive from.
    pub secret: Vec<u8>,
    /// How long a half-registered job may wait for its other ranks.
    pub job_ttl: Duration,
    /// How long a new connection may take to send its registration.
    pub register_timeout: Duration,
    /// Most connections served at once; more are closed at once.
    pub max_connections: usize,
    /// Bounds on connections that have not yet authenticated.
    pub admission: Limits,
    /// How long a worker's pushed metrics are served after its last push (a finished job's
    /// series disappear this long after it ended).
    pub metrics_keep: Duration,
}

/// Default of [`ServerConfig::metrics_keep`]: 10 minutes, long enough for a scrape interval of
/// a few minutes to see a finished job's last values.
pub const METRICS_KEEP: Duration = Duration::from_secs(600);

/// Default bounds on unauthenticated rendezvous connections: 64 per source (a job's workers
/// behind one NAT register within milliseconds; one refused retries), 1024 in all with the
/// oldest evicted beyond, 16 MiB of first messages per source, 64 MiB in all.
pub const ADMISSION: Limits =
    Limits { per_source: 64, total: 1024, bytes_per_source: 16 << 20, bytes_total: 64 << 20 };

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("secret", &"..")
            .field("job_ttl", &self.job_ttl)
            .field("register_timeout", &self.register_timeout)
            .field("max_connections", &self.max_connections)
            .field("admission", &self.admission)
            .finish()
    }
}

impl ServerConfig {
    /// Defaults with `secret`.
    pub fn new(secret: Vec<u8>) -> Self {
        ServerConfig {
            secret,
            job_ttl: defaults::RENDEZVOUS_JOB_TTL,
            register_timeout: Duration::from_secs(5),
            max_connections: 8192,
            admission: ADMISSION,
            metrics_keep: METRICS_KEEP,
        }
    }
}

enum Event {
    Register {
        conn: ConnId,
        public: SocketAddr,
        msg: RendezvousMsg,
        challenge: [u8; 16],
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
        let metrics = Arc::new(Mutex::new(MetricsStore::new(config.metrics_keep)));
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

    /// The Prometheus text of every worker's pushed metrics, as a `/metrics` endpoint serves it:
    /// series of finished jobs past their keep time expired first. Empty if the store's lock is
    /// poisoned.
    pub fn metrics_exposition(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let store = self.metrics_store();
        move || {
            store
                .lock()
                .map(|mut s| {
                    s.expire(std::time::Instant::now());
                    s.render()
                })
                .unwrap_or_default()
        }
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
    let admission = Admission::new(config.admission);
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
                    let slot = match admission.admit(peer.ip()) {
                        Ok(slot) => slot,
                        Err(why) => {
                            metrics::counter!(updraft_runtime::metrics::RENDEZVOUS_REFUSED).increment(1);
                            tracing::debug!(%peer, %why, "connection closed at once");
                            continue;
                        }
                    };
                    next_conn += 1;
                    let push = Push { store: Arc::clone(&metrics), secret: config.secret.clone() };
                    let timing = (config.register_timeout, config.job_ttl);
                    conns.spawn(connection(next_conn, stream, peer, slot, tx.clone(), timing, push));
                }
                Err(e) => {
                    tracing::warn!(%e, pause = ?backoff, "rendezvous accept failed; pausing");
                    accept_pause = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            Some(event) = rx.recv() => match event {
                Event::Register { conn, public, msg, challenge, reply } => {
                    let RendezvousMsg::Register { job, rank, world, private, plan, wait_ms, nonce, mac } = msg else {
                        let _ = reply.send(RendezvousMsg::refused("expected a registration".into(), updraft_runtime::FailureClass::Rendezvous));
                        continue;
                    };
                    waiting.insert(conn, reply);
                    registrations.fetch_add(1, Ordering::Relaxed);
                    let reg = Registration { job: &job, rank, world, private: &private, plan: &plan, wait: Duration::from_millis(wait_ms), challenge: &challenge, nonce: &nonce, mac: &mac };
                    let replies = state.register(std::time::Instant::now(), conn, public, reg);
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

/// Reads the first message of a connection: its length first, so that the bytes are reserved
/// against the stranger's budget before they are read.
async fn read_first(stream: &mut TcpStream, slot: &mut Slot) -> Result<Option<RendezvousMsg>, String> {
    let mut len = [0u8; 4];
    match stream.read(&mut len[..1]).await {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(e.to_string()),
    }
    stream.read_exact(&mut len[1..]).await.map_err(|e| e.to_string())?;
    let limits = server_limits();
    let total = u64::from(u32::from_le_bytes(len));
    let most = u64::from(limits.max_body) + updraft_runtime::wire::HEADER_LEN as u64;
    if total > most {
        return Err(format!("a first message of {total} bytes (at most {most})"));
    }
    slot.reserve(total)?;
    let mut whole = (&len[..]).chain(stream);
    let frame = read_frame(&mut whole, limits).await.map_err(|e| e.to_string())?;
    let Some(frame) = frame else { return Err("closed in the middle of a message".into()) };
    RendezvousMsg::from_frame(&frame).map(Some).map_err(|e| format!("not a registration: {e}"))
}

async fn connection(
    conn: ConnId,
    mut stream: TcpStream,
    public: SocketAddr,
    mut slot: Slot,
    events: mpsc::Sender<Event>,
    (register_timeout, ttl): (Duration, Duration),
    push: Push,
) {
    let challenge: [u8; 16] = rand::random();
    let unauthenticated =
        |reason: String| RendezvousMsg::refused(reason, updraft_runtime::FailureClass::Rendezvous);
    let evicted = slot.evicted();
    let first = async {
        send(&mut stream, &RendezvousMsg::Challenge { nonce: challenge }).await?;
        tokio::select! {
            read = read_first(&mut stream, &mut slot) => read,
            () = evicted => Err("evicted to make room for newer connections".to_string()),
        }
    };
    let msg = match tokio::time::timeout(register_timeout, first).await {
        Ok(Ok(Some(msg))) => msg,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            return send(&mut stream, &unauthenticated(format!("refused: {e}"))).await.unwrap_or(());
        }
        Err(_) => {
            let why = format!("no registration within {register_timeout:?}");
            return send(&mut stream, &unauthenticated(why)).await.unwrap_or(());
        }
    };
    if let RendezvousMsg::Metrics { job, rank, text, mac } = msg {
        if JobKey::derive(&push.secret, &job).verify_metrics(&challenge, &job, rank, &text, &mac) {
            slot.release();
            if let Ok(mut store) = push.store.lock() {
                store.push(std::time::Instant::now(), &job, rank, text);
            }
        } else {
            tracing::debug!(%job, rank, "metrics push with a wrong MAC ignored");
        }
        return;
    }
    let RendezvousMsg::Register { job, rank, world, private, plan, wait_ms, nonce, mac } = &msg else {
        let refusal = unauthenticated("expected a registration or a metrics push".into());
        return send(&mut stream, &refusal).await.unwrap_or(());
    };
    let key = JobKey::derive(&push.secret, job);
    let digest = plan_digest(plan);
    let wait = Duration::from_millis(*wait_ms);
    let fields = RegisterFields {
        challenge: &challenge,
        nonce,
        job,
        rank: *rank,
        world: *world,
        private,
        plan: &digest,
        wait,
    };
    if !key.verify_register(&fields, mac) {
        // Nothing unauthenticated reaches the state or gets a reply signed with the job key:
        // the refusal goes out unsigned, and the worker reports it as such.
        metrics::counter!(updraft_runtime::metrics::RENDEZVOUS_REFUSED).increment(1);
        let refusal = unauthenticated(crate::rendezvous::state::authentication_failed(job, *rank));
        return send(&mut stream, &refusal).await.unwrap_or(());
    }
    // Authenticated: it no longer counts against strangers' bounds.
    slot.release();
    let (job, rank, nonce) = (job.clone(), *rank, *nonce);
    let binding = ReplyBinding { challenge: &challenge, nonce: &nonce, job: &job, rank };
    let (reply_tx, reply_rx) = oneshot::channel();
    if events.send(Event::Register { conn, public, msg, challenge, reply: reply_tx }).await.is_err() {
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
            let refused = matches!(msg, RendezvousMsg::Refused { .. });
            match msg.signed(&key, binding) {
                Ok(signed) => send(&mut stream, &signed).await.unwrap_or(()),
                Err(e) => tracing::warn!(%e, "cannot sign a rendezvous reply"),
            }
            if refused {
                // Closed at once: a refused registration holds nothing.
                return;
            }
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

/// Sends `msg` within 5 s.
///
/// # Errors
/// The message could not be encoded or written in time.
async fn send(stream: &mut TcpStream, msg: &RendezvousMsg) -> Result<(), String> {
    let frame = msg.to_frame().map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), write_frame(stream, rendezvous_job_hash(), &frame))
        .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the peer read nothing for 5 s".into()),
    }
}
