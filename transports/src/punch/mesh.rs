//! The punching driver: fires the attempts [`PunchSchedule`] asks for, accepts on the shared
//! port, authenticates every connection, and keeps one link per pair.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use updraft_runtime::metrics as names;

use crate::admission::{Admission, Limits, Slot};
use crate::punch::handshake::{How, Identity, drop_link, handshake, keep};
use crate::punch::schedule::{Failure, PunchSchedule};
use crate::rendezvous::PeerAddr;
use crate::secure::Session;
use crate::sock::{orderly_close, punch_socket};

/// Bounds on connections to a punch port that have not finished their handshake: 64 per
/// source (every peer of a local job connects from one address), 512 in all, the oldest evicted beyond that. Peers finish theirs within a round
/// trip; strangers are cut at the handshake deadline. Bytes are bounded by the handshake's
/// frames instead (4 KiB each, read one at a time), so the byte bounds are not used here.
pub const PUNCH_ADMISSION: Limits =
    Limits { per_source: 64, total: 512, bytes_per_source: u64::MAX, bytes_total: u64::MAX };

/// Punching settings.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// One connect attempt.
    pub attempt: Duration,
    /// One handshake.
    pub handshake_timeout: Duration,
    /// The whole mesh.
    pub timeout: Duration,
    /// Return the pairs that were linked when some were not (their traffic goes through a
    /// relay) instead of failing.
    pub partial_ok: bool,
}

/// How one pair was linked.
#[derive(Debug, Clone, PartialEq)]
pub struct PairStats {
    /// The peer.
    pub peer: u32,
    /// Connect attempts made towards it (all endpoints).
    pub attempts: u32,
    /// Whether our connect or our listener produced the link.
    pub how: How,
    /// From the start of punching to the link.
    pub elapsed: Duration,
}

/// An authenticated connection and its protection.
#[derive(Debug)]
pub struct Connection {
    /// The socket.
    pub stream: TcpStream,
    /// The keys its frames are sealed with (or none, without encryption).
    pub session: Session,
}

/// The links of one worker.
#[derive(Debug)]
pub struct Mesh {
    /// One authenticated connection per peer.
    pub links: Vec<(u32, Connection)>,
    /// Per pair.
    pub pairs: Vec<PairStats>,
    /// Whole mesh.
    pub elapsed: Duration,
    /// Ranks not linked by the deadline (only with [`MeshConfig::partial_ok`]), and why.
    pub unreachable: Option<PunchError>,
}

/// Why the mesh could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PunchError {
    /// Some pairs were not linked by the deadline.
    #[error("no link to ranks {missing:?} within {after:?} ({attempts}); {nat}")]
    Unreachable {
        /// Ranks without a link.
        missing: Vec<u32>,
        /// The deadline.
        after: Duration,
        /// Attempts per missing rank, as text.
        attempts: String,
        /// What this worker saw of its own NAT.
        nat: String,
    },
}

enum Event {
    Attempt {
        target: usize,
        peer: u32,
        result: std::io::Result<TcpStream>,
        took: Duration,
    },
    Shaken(Result<crate::punch::handshake::Handshaken, String>),
    /// Lower rank: the higher rank confirmed this connection.
    Committed {
        peer: u32,
        conn: Connection,
        how: How,
    },
    /// Lower rank: the confirmation did not come.
    CommitFailed {
        peer: u32,
        error: String,
    },
}

/// Punches every peer at once from `local`, accepting on `listener` (bound to the same port).
/// `public` is this worker's address as the rendezvous saw it, used to describe the NAT when
/// punching fails.
///
/// # Errors
/// [`PunchError::Unreachable`] naming the ranks not linked by the deadline.
pub async fn punch_mesh(
    id: &Identity,
    local: SocketAddr,
    public: SocketAddr,
    listener: &TcpListener,
    peers: &[PeerAddr],
    cfg: &MeshConfig,
) -> Result<Mesh, PunchError> {
    let start = Instant::now();
    let deadline = start + cfg.timeout;
    // Export the failure counter from the start, so a dashboard sees zero rather than nothing.
    metrics::counter!(names::PUNCH_FAILURES).increment(0);
    let targets: Vec<(u32, Vec<SocketAddr>)> = peers.iter().map(|p| (p.rank, endpoints(p, public))).collect();
    let mut schedule = PunchSchedule::new(start.into_std(), &targets, cfg.attempt, deadline.into_std());
    let (tx, mut rx) = mpsc::channel::<Event>(peers.len() * 4 + 16);
    let mut tasks = JoinSet::new();
    let mut links: BTreeMap<u32, Connection> = BTreeMap::new();
    let mut pairs: Vec<PairStats> = Vec::new();
    let mut pending: BTreeSet<u32> = BTreeSet::new();
    let admission = Admission::new(PUNCH_ADMISSION);

    while !schedule.complete() {
        for (target, peer, endpoint) in schedule.due(std::time::Instant::now()) {
            metrics::counter!(names::PUNCH_ATTEMPTS).increment(1);
            let tx = tx.clone();
            tasks.spawn(async move {
                let t0 = Instant::now();
                let result = match punch_socket(local) {
                    Ok(socket) => match tokio::time::timeout_at(deadline, socket.connect(endpoint)).await {
                        Ok(Ok(stream)) => orderly_close(&stream).map(|()| stream),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "connect attempt timed out",
                        )),
                    },
                    Err(e) => Err(e),
                };
                let _ = tx.send(Event::Attempt { target, peer, result, took: t0.elapsed() }).await;
            });
        }
        let wake = Instant::from_std(schedule.next_wakeup());
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, from)) => match admission.admit(from.ip()) {
                        Ok(slot) => {
                            let hs = (id, How::Accept, cfg.handshake_timeout);
                            spawn_handshake(&mut tasks, &tx, stream, hs, Some(slot));
                        }
                        Err(why) => tracing::debug!(%from, %why, "punch port: connection closed at once"),
                    },
                    Err(e) => {
                        // E.g. out of file descriptors: do not spin; attempts and the deadline go on.
                        tracing::warn!(%e, "accept failed while punching");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            Some(event) = rx.recv() => match event {
                Event::Attempt { target, peer, result, took } => match result {
                    Ok(stream) => {
                        schedule.connected(target, std::time::Instant::now());
                        if !links.contains_key(&peer) {
                            spawn_handshake(&mut tasks, &tx, stream, (id, How::Connect, cfg.handshake_timeout), None);
                        }
                    }
                    Err(e) => {
                        tracing::trace!(peer, %e, "punch attempt failed");
                        let why = if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                            Failure::Busy
                        } else if took < cfg.attempt / 2 {
                            Failure::Refused
                        } else {
                            Failure::TimedOut
                        };
                        schedule.failed(target, std::time::Instant::now(), why);
                    }
                },
                Event::Shaken(Ok(h)) => match h.keep {
                    // Higher rank: the lower rank kept this connection and we confirmed it.
                    Some(true) => {
                        let conn = Connection { stream: h.stream, session: h.session };
                        link(&mut links, &mut pairs, &mut schedule, h.peer, conn, h.how, start);
                    }
                    Some(false) => {}
                    // Lower rank: the first authenticated connection of a pair is kept, once
                    // confirmed; any other is dropped.
                    None if links.contains_key(&h.peer) || pending.contains(&h.peer) => {
                        tasks.spawn(drop_link(h.stream, h.session, id.job_hash, cfg.handshake_timeout));
                    }
                    None => {
                        pending.insert(h.peer);
                        let tx = tx.clone();
                        let (job, timeout) = (id.job_hash, cfg.handshake_timeout);
                        tasks.spawn(async move {
                            let (peer, how, mut stream, mut session) = (h.peer, h.how, h.stream, h.session);
                            let event = match keep(&mut stream, &mut session, job, timeout).await {
                                Ok(()) => Event::Committed { peer, conn: Connection { stream, session }, how },
                                Err(error) => Event::CommitFailed { peer, error },
                            };
                            let _ = tx.send(event).await;
                        });
                    }
                },
                Event::Committed { peer, conn, how } => {
                    pending.remove(&peer);
                    link(&mut links, &mut pairs, &mut schedule, peer, conn, how, start);
                }
                Event::CommitFailed { peer, error } => {
                    pending.remove(&peer);
                    tracing::debug!(peer, %error, "link not confirmed; punching goes on");
                }
                Event::Shaken(Err(e)) => tracing::debug!(%e, "connection refused during the handshake"),
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
        if Instant::now() >= deadline && !schedule.complete() {
            break;
        }
    }
    tasks.abort_all();
    if !schedule.complete() {
        let missing = schedule.missing();
        metrics::counter!(names::PUNCH_FAILURES).increment(missing.len() as u64);
        let attempts: Vec<String> =
            missing.iter().map(|p| format!("rank {p}: {} attempts", schedule.attempts(*p))).collect();
        let nat = if public.port() == local.port() && public.ip() == local.ip() {
            format!("this worker is not behind a NAT ({local})")
        } else if public.port() == local.port() {
            format!("this worker's NAT keeps ports ({local} appears as {public})")
        } else {
            format!(
                "this worker's NAT translates ports ({local} appears as {public}): punchable if it keeps one \
                 mapping for every destination, not if it is symmetric (a new port per destination)"
            )
        };
        let error =
            PunchError::Unreachable { missing, after: cfg.timeout, attempts: attempts.join(", "), nat };
        if !cfg.partial_ok {
            return Err(error);
        }
        return Ok(Mesh {
            links: links.into_iter().collect(),
            pairs,
            elapsed: start.elapsed(),
            unreachable: Some(error),
        });
    }
    Ok(Mesh { links: links.into_iter().collect(), pairs, elapsed: start.elapsed(), unreachable: None })
}

/// Where to reach `peer` from a worker whose public address is `public`: its public endpoint,
/// and its private one only when both are behind the same public address (one NAT, one LAN).
/// Behind different NATs a private address is another network's: a SYN to it can only be
/// dropped (or reach a stranger), and at 64 workers those SYNs doubled the packets every NAT
/// handles while the mesh is made.
fn endpoints(peer: &PeerAddr, public: SocketAddr) -> Vec<SocketAddr> {
    if peer.public.ip() == public.ip() && peer.private != peer.public {
        vec![peer.public, peer.private]
    } else {
        vec![peer.public]
    }
}

/// Records the link of a pair (replacing an earlier one: the lower rank's latest decision wins).
fn link(
    links: &mut BTreeMap<u32, Connection>,
    pairs: &mut Vec<PairStats>,
    schedule: &mut PunchSchedule,
    peer: u32,
    conn: Connection,
    how: How,
    start: Instant,
) {
    let elapsed = start.elapsed();
    let remote = conn.stream.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
    tracing::info!(peer, %remote, how = how_label(how), ?elapsed, attempts = schedule.attempts(peer), "link made");
    metrics::counter!(names::PUNCH_SUCCESSES, "how" => how_label(how)).increment(1);
    metrics::histogram!(names::PUNCH_SECONDS).record(elapsed.as_secs_f64());
    pairs.retain(|p| p.peer != peer);
    pairs.push(PairStats { peer, attempts: schedule.attempts(peer), how, elapsed });
    links.insert(peer, conn);
    schedule.linked(peer);
}

fn how_label(how: How) -> &'static str {
    match how {
        How::Connect => "connect",
        How::Accept => "accept",
    }
}

/// Runs the handshake on `stream`; an accepted connection holds its admission `slot` until
/// the handshake ends.
fn spawn_handshake(
    tasks: &mut JoinSet<()>,
    tx: &mpsc::Sender<Event>,
    stream: TcpStream,
    (id, how, timeout): (&Identity, How, Duration),
    slot: Option<Slot>,
) {
    let tx = tx.clone();
    let id = id.clone();
    tasks.spawn(async move {
        let r = match &slot {
            Some(s) => {
                let evicted = s.evicted();
                tokio::select! {
                    r = handshake(stream, &id, how, timeout) => r,
                    () = evicted => Err("evicted to make room for newer connections".to_string()),
                }
            }
            None => handshake(stream, &id, how, timeout).await,
        };
        drop(slot);
        let _ = tx.send(Event::Shaken(r)).await;
    });
}
