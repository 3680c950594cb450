//! Registering with the rendezvous from the port the worker will punch from.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use updraft_runtime::wire::{WireError, read_frame, write_frame};

use crate::auth::{JobKey, RegisterFields};
use crate::rendezvous::protocol::{
    PeerEntry, PlanLine, RendezvousMsg, ReplyBinding, client_limits, plan_digest, rendezvous_job_hash,
};
use crate::sock::{bound_socket, shared_listener};

/// What a worker registers.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Job id.
    pub job: String,
    /// This worker's rank.
    pub rank: u32,
    /// Number of workers.
    pub world: u32,
    /// The job key.
    pub key: JobKey,
    /// Local address to bind (`0.0.0.0:0` or `127.0.0.1:0`; port 0 lets the kernel pick).
    pub bind: SocketAddr,
    /// The rendezvous.
    pub rendezvous: SocketAddr,
    /// What this worker will run, as `(key path, value)` lines (see [`PlanLine`]); ranks whose
    /// lines differ are refused together.
    pub plan: Vec<(String, String)>,
}

/// A peer's two endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr {
    /// Rank.
    pub rank: u32,
    /// As the rendezvous saw it (the NAT's binding).
    pub public: SocketAddr,
    /// As the peer sees itself.
    pub private: SocketAddr,
}

/// A registered worker: its punching port, listener, and the peer table.
#[derive(Debug)]
pub struct Registered {
    /// The local address every punch attempt binds (from `getsockname`, never from the table).
    pub local: SocketAddr,
    /// Listener on the same port, opened before registering so that early peers find it.
    pub listener: TcpListener,
    /// The rendezvous connection; kept open until punching ends so the NAT binding stays.
    pub rendezvous_conn: TcpStream,
    /// This worker's public address as the rendezvous saw it.
    pub public: SocketAddr,
    /// Every other rank.
    pub peers: Vec<PeerAddr>,
    /// This run of the job (the same on every rank).
    pub run: u64,
}

/// Why registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    /// Could not reach the rendezvous before the deadline.
    #[error("cannot reach the rendezvous at {addr} within {after:?}: {last}")]
    Unreachable {
        /// Its address.
        addr: SocketAddr,
        /// The deadline.
        after: Duration,
        /// Last error seen.
        last: String,
    },
    /// The rendezvous did not answer in time.
    #[error(
        "the rendezvous at {addr} did not send the peer table within {after:?} (are all {world} workers started?)"
    )]
    Timeout {
        /// Its address.
        addr: SocketAddr,
        /// The deadline.
        after: Duration,
        /// World size.
        world: u32,
    },
    /// The rendezvous refused us.
    #[error("the rendezvous refused the registration: {reason}")]
    Refused {
        /// Why.
        reason: String,
        /// What kind of failure.
        class: updraft_runtime::FailureClass,
    },
    /// Local socket trouble.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// Malformed answer.
    #[error("bad answer from the rendezvous: {0}")]
    Protocol(String),
}

/// Binds a port, opens a listener on it, registers from it and waits for the peer table.
/// Connecting is retried until `timeout` (the rendezvous may still be starting), and so is the
/// whole registration if the connection drops before the answer (from a fresh port: the
/// rendezvous replaces the earlier entry of this rank).
///
/// # Errors
/// See [`RendezvousError`].
pub async fn register(reg: &Registration, timeout: Duration) -> Result<Registered, RendezvousError> {
    let started = Instant::now();
    let waiting = Waiting(std::sync::Mutex::new(Some("no connection yet".into())));
    let work = register_until(reg, timeout, &waiting);
    tokio::pin!(work);
    let mut note = tokio::time::interval_at(started + WAIT_NOTE_EVERY, WAIT_NOTE_EVERY);
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = note.tick() => {
                let waited = started.elapsed().as_secs();
                let (addr, rank, job) = (reg.rendezvous, reg.rank, &reg.job);
                match waiting.last_error() {
                    Some(err) => tracing::warn!(
                        "rank {rank}: the rendezvous at {addr} is not reachable yet ({err}); waited {waited} s of {timeout:?}"
                    ),
                    None => tracing::warn!(
                        "rank {rank}: connected to the rendezvous at {addr}; waiting for the other ranks of \
                         job `{job}` (world {}); waited {waited} s of {timeout:?}",
                        reg.world
                    ),
                }
            }
        }
    }
}

/// How often a worker still waiting for its peer table says what it waits for.
const WAIT_NOTE_EVERY: Duration = Duration::from_secs(5);

/// What a registration is waiting for: the last connect error while the rendezvous is not
/// reachable, none once connected.
struct Waiting(std::sync::Mutex<Option<String>>);

impl Waiting {
    fn set(&self, err: Option<String>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = err;
    }

    fn last_error(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

async fn register_until(
    reg: &Registration,
    timeout: Duration,
    waiting: &Waiting,
) -> Result<Registered, RendezvousError> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    loop {
        match register_once(reg, deadline, timeout, waiting).await {
            Err(Attempt::Dropped(why)) => {
                if Instant::now() + backoff >= deadline {
                    return Err(RendezvousError::Unreachable {
                        addr: reg.rendezvous,
                        after: timeout,
                        last: why,
                    });
                }
                tracing::warn!(%why, "rendezvous connection dropped before the answer; registering again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Err(Attempt::Final(e)) => return Err(e),
            Ok(r) => return Ok(r),
        }
    }
}

enum Attempt {
    /// The connection broke before an answer: worth another registration.
    Dropped(String),
    /// Refused, timed out, or malformed: final.
    Final(RendezvousError),
}

impl From<RendezvousError> for Attempt {
    fn from(e: RendezvousError) -> Self {
        Attempt::Final(e)
    }
}

async fn register_once(
    reg: &Registration,
    deadline: Instant,
    timeout: Duration,
    waiting: &Waiting,
) -> Result<Registered, Attempt> {
    let (mut stream, listener) = connect(reg, deadline, timeout, waiting).await?;
    let local = stream.local_addr().map_err(RendezvousError::Io)?;
    let private = local.to_string();
    let timed_out = || RendezvousError::Timeout { addr: reg.rendezvous, after: timeout, world: reg.world };
    let challenge = match receive(&mut stream, deadline).await.map_err(|e| e.or(timed_out()))? {
        RendezvousMsg::Challenge { nonce } => nonce,
        other => {
            return Err(
                RendezvousError::Protocol(format!("expected a challenge, got {}", name(&other))).into()
            );
        }
    };
    let mut plan: Vec<PlanLine> = reg.plan.iter().map(|(p, v)| PlanLine::new(p, v)).collect();
    plan.sort();
    let digest = plan_digest(&plan);
    // What is left of the deadline, as the rendezvous will see it.
    let wait = Duration::from_millis(deadline.saturating_duration_since(Instant::now()).as_millis() as u64);
    let nonce: [u8; 16] = rand::random();
    let fields = RegisterFields {
        challenge: &challenge,
        nonce: &nonce,
        job: &reg.job,
        rank: reg.rank,
        world: reg.world,
        private: &private,
        plan: &digest,
        wait,
    };
    let msg = RendezvousMsg::Register {
        job: reg.job.clone(),
        rank: reg.rank,
        world: reg.world,
        private: private.clone(),
        mac: reg.key.register_mac(&fields),
        plan,
        wait_ms: wait.as_millis() as u64,
        nonce,
    };
    let frame = msg.to_frame().map_err(|e| RendezvousError::Protocol(e.to_string()))?;
    tokio::time::timeout_at(deadline, write_frame(&mut stream, rendezvous_job_hash(), &frame))
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| Attempt::Dropped(e.to_string()))?;
    let reply = receive(&mut stream, deadline).await.map_err(|e| e.or(timed_out()))?;
    let binding = ReplyBinding { challenge: &challenge, nonce: &nonce, job: &reg.job, rank: reg.rank };
    let authentic = reply.verify_reply(&reg.key, binding);
    match reply {
        RendezvousMsg::Peers { .. } if !authentic => Err(RendezvousError::Protocol(
            "the peer table is not authenticated by the job key: the rendezvous holds another secret, or \
             something on the path altered it"
                .into(),
        )
        .into()),
        RendezvousMsg::Peers { peers, run, .. } => {
            let (public, peers) = check_table(&peers, reg.rank, reg.world)?;
            Ok(Registered { local, listener, rendezvous_conn: stream, public, peers, run })
        }
        RendezvousMsg::Refused { reason, class, .. } if authentic => {
            Err(RendezvousError::Refused { reason: annotate(reason, reg), class }.into())
        }
        RendezvousMsg::Refused { reason, .. } => Err(RendezvousError::Refused {
            reason: format!(
                "{reason} (this refusal is not authenticated by the job key: the rendezvous holds another \
                 secret, or something on the path sent it)"
            ),
            class: updraft_runtime::FailureClass::Rendezvous,
        }
        .into()),
        other => {
            Err(RendezvousError::Protocol(format!("unexpected {} from the server", name(&other))).into())
        }
    }
}

/// Why a rendezvous message could not be received: the connection broke (worth another
/// registration), the deadline passed (`None`: the caller names it), or the bytes are wrong.
async fn receive(stream: &mut TcpStream, deadline: Instant) -> Result<RendezvousMsg, Received> {
    let frame = match tokio::time::timeout_at(deadline, read_frame(stream, client_limits())).await {
        Err(_) => return Err(Received::Late),
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => return Err(Received::Dropped("connection closed without an answer".into())),
        Ok(Err(WireError::Io(e))) => return Err(Received::Dropped(e.to_string())),
        Ok(Err(WireError::Truncated)) => {
            return Err(Received::Dropped("connection closed mid-answer".into()));
        }
        Ok(Err(e)) => return Err(Received::Bad(e.to_string())),
    };
    RendezvousMsg::from_frame(&frame).map_err(|e| Received::Bad(e.to_string()))
}

enum Received {
    Dropped(String),
    Late,
    Bad(String),
}

impl Received {
    fn or(self, timed_out: RendezvousError) -> Attempt {
        match self {
            Received::Dropped(why) => Attempt::Dropped(why),
            Received::Late => Attempt::Final(timed_out),
            Received::Bad(why) => Attempt::Final(RendezvousError::Protocol(why)),
        }
    }
}

fn name(msg: &RendezvousMsg) -> &'static str {
    match msg {
        RendezvousMsg::Challenge { .. } => "a challenge",
        RendezvousMsg::Register { .. } => "a registration",
        RendezvousMsg::Peers { .. } => "a peer table",
        RendezvousMsg::Metrics { .. } => "a metrics push",
        RendezvousMsg::Refused { .. } => "a refusal",
    }
}

/// A refusal that names a key path where ranks' plans differ, with this worker's value there.
fn annotate(reason: String, reg: &Registration) -> String {
    let Some(path) = reason.split_once(" at `").and_then(|(_, rest)| rest.split_once('`')).map(|(p, _)| p)
    else {
        return reason;
    };
    match reg.plan.iter().find(|(p, _)| p == path) {
        Some((_, value)) => format!("{reason} (rank {} has {path} = {value})", reg.rank),
        None => format!("{reason} (rank {} has no {path})", reg.rank),
    }
}

/// Sends this worker's metrics (Prometheus text) to the rendezvous, which serves them with
/// every other worker's. Best effort: one connection, one frame, within `timeout`.
///
/// # Errors
/// If the rendezvous cannot be reached or the frame not written in time.
pub async fn push_metrics(
    rendezvous: SocketAddr,
    job: &str,
    rank: u32,
    key: &JobKey,
    text: String,
    timeout: Duration,
) -> Result<(), RendezvousError> {
    let send = async {
        let mut stream = TcpStream::connect(rendezvous).await?;
        let challenge = match read_frame(&mut stream, client_limits())
            .await
            .map(|f| f.map(|f| RendezvousMsg::from_frame(&f)))
        {
            Ok(Some(Ok(RendezvousMsg::Challenge { nonce }))) => nonce,
            Ok(_) => return Err(std::io::Error::other("the rendezvous sent no challenge")),
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        };
        let mac = key.metrics_mac(&challenge, job, rank, &text);
        let msg = RendezvousMsg::Metrics { job: job.to_string(), rank, text, mac };
        let frame = msg.to_frame().map_err(|e| std::io::Error::other(e.to_string()))?;
        write_frame(&mut stream, rendezvous_job_hash(), &frame)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        tokio::io::AsyncWriteExt::shutdown(&mut stream).await
    };
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RendezvousError::Io(e)),
        Err(_) => {
            Err(RendezvousError::Unreachable { addr: rendezvous, after: timeout, last: "timed out".into() })
        }
    }
}

/// Checks the peer table: every rank of the world exactly once, addresses that parse. Returns
/// our own public address and the other ranks.
fn check_table(
    peers: &[PeerEntry],
    me: u32,
    world: u32,
) -> Result<(SocketAddr, Vec<PeerAddr>), RendezvousError> {
    let bad = |m: String| RendezvousError::Protocol(format!("bad peer table: {m}"));
    let mut seen = vec![false; world as usize];
    let mut out = Vec::with_capacity(peers.len());
    let mut public = None;
    for p in peers {
        let slot = seen
            .get_mut(p.rank as usize)
            .ok_or_else(|| bad(format!("rank {} in a world of {world}", p.rank)))?;
        if std::mem::replace(slot, true) {
            return Err(bad(format!("rank {} appears twice", p.rank)));
        }
        let parse =
            |s: &str| s.parse::<SocketAddr>().map_err(|_| bad(format!("address `{s}` of rank {}", p.rank)));
        let entry = PeerAddr { rank: p.rank, public: parse(&p.public)?, private: parse(&p.private)? };
        if p.rank == me {
            public = Some(entry.public);
        } else {
            out.push(entry);
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(bad(format!("rank {missing} is missing")));
    }
    let public = public.ok_or_else(|| bad("this rank is missing".into()))?;
    Ok((public, out))
}

async fn connect(
    reg: &Registration,
    deadline: Instant,
    timeout: Duration,
    waiting: &Waiting,
) -> Result<(TcpStream, TcpListener), RendezvousError> {
    let mut backoff = Duration::from_millis(20);
    loop {
        let socket = bound_socket(reg.bind)?;
        let port = socket.local_addr()?.port();
        let listener = shared_listener(SocketAddr::new(reg.bind.ip(), port))?;
        let err = match tokio::time::timeout_at(deadline, socket.connect(reg.rendezvous)).await {
            Ok(Ok(stream)) => {
                waiting.set(None);
                return Ok((stream, listener));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        if Instant::now() + backoff >= deadline {
            return Err(RendezvousError::Unreachable { addr: reg.rendezvous, after: timeout, last: err });
        }
        tracing::debug!(%err, "rendezvous not reachable yet; retrying");
        waiting.set(Some(err.clone()));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rank: u32) -> PeerEntry {
        PeerEntry {
            rank,
            public: format!("198.51.100.1:{}", 1000 + rank),
            private: format!("10.0.0.1:{}", 1000 + rank),
        }
    }

    #[test]
    fn peer_tables_must_name_every_rank_once() {
        let (public, peers) = check_table(&[entry(0), entry(1), entry(2)], 1, 3).expect("valid");
        assert_eq!(public.port(), 1001);
        assert_eq!(peers.iter().map(|p| p.rank).collect::<Vec<_>>(), vec![0, 2]);
        let e = |t: &[PeerEntry]| check_table(t, 0, 3).expect_err("invalid").to_string();
        assert!(e(&[entry(0), entry(1), entry(1)]).contains("rank 1 appears twice"));
        assert!(e(&[entry(0), entry(1)]).contains("rank 2 is missing"));
        assert!(e(&[entry(0), entry(1), entry(7)]).contains("rank 7 in a world of 3"));
        let mut garbled = entry(2);
        garbled.public = "nowhere".into();
        assert!(e(&[entry(0), entry(1), garbled]).contains("address `nowhere`"));
    }
}
