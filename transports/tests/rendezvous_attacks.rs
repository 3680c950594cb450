//! Strangers and men in the middle at the rendezvous and at punch ports, on loopback: floods of
//! idle, garbage, oversize and slow connections; a replayed registration; a forged peer table.
//! Legitimate workers started at the same time must still link, and forgeries must be refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use updraft_config::Encryption;
use updraft_runtime::wire::{FrameKind, OutBody, OutFrame, WireLimits, read_frame, write_frame};
use updraft_transports::JobKey;
use updraft_transports::punch::handshake::Identity;
use updraft_transports::rendezvous::protocol::{RendezvousMsg, rendezvous_job_hash};
use updraft_transports::rendezvous::{
    Registration, RendezvousError, RendezvousServer, ServerConfig, register,
};

const JOB: u64 = 0xf100d;
const SECRET: &[u8] = b"rendezvous attack tests";

fn body(i: u64) -> Vec<u8> {
    format!("frame {i} ").repeat(50).into_bytes()
}

fn frame(i: u64) -> OutFrame {
    OutFrame { kind: FrameKind::Data, channel: 1, seq: i, body: OutBody::Bytes(Bytes::from(body(i))) }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

async fn server(config: ServerConfig) -> RendezvousServer {
    RendezvousServer::bind("127.0.0.1:0".parse().expect("addr"), config).await.expect("rendezvous")
}

fn registration(rdv: SocketAddr, job: &str, rank: u32, world: u32) -> Registration {
    Registration {
        job: job.into(),
        rank,
        world,
        key: JobKey::derive(SECRET, job),
        bind: "127.0.0.1:0".parse().expect("addr"),
        rendezvous: rdv,
        plan: Vec::new(),
    }
}
/// A connection from 127.0.0.2 (strangers get an address of their own on loopback, as they
/// would on a network); `None` if it was refused outright.
async fn stranger(to: std::net::SocketAddr) -> Option<TcpStream> {
    let s = tokio::net::TcpSocket::new_v4().ok()?;
    s.bind("127.0.0.2:0".parse().ok()?).ok()?;
    tokio::time::timeout(Duration::from_secs(2), s.connect(to)).await.ok()?.ok()
}

/// Every kind of stranger at `to`: `idle` silent connections, garbage, an oversize length, and a
/// slow writer. Returns the connections to keep open.
async fn flood(to: std::net::SocketAddr, idle: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..idle {
        held.extend(stranger(to).await);
    }
    if let Some(mut s) = stranger(to).await {
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let _ = s.write_all(&garbage).await;
        held.push(s);
    }
    if let Some(mut s) = stranger(to).await {
        let _ = s.write_all(&0xFFFF_FFF0u32.to_le_bytes()).await;
        held.push(s);
    }
    if let Some(s) = stranger(to).await {
        tokio::spawn(async move {
            let mut s = s;
            let _ = s.write_all(&1000u32.to_le_bytes()).await;
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if s.write_all(&[0x55]).await.is_err() {
                    break;
                }
            }
        });
    }
    held
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[test]
fn strangers_flooding_the_rendezvous_and_punch_ports_do_not_stop_a_job() {
    use updraft_transports::punch::{MeshConfig, punch_mesh};
    raise_fd_limit();
    rt().block_on(async {
        let srv = server(ServerConfig::new(SECRET.to_vec())).await;
        let rdv = srv.local_addr();
        let at_rendezvous = flood(rdv, 1500).await;
        let world = 3u32;
        let mut workers = Vec::new();
        for rank in 0..world {
            workers.push(tokio::spawn(async move {
                let reg = registration(rdv, "flooded-job", rank, world);
                let r = register(&reg, Duration::from_secs(20)).await.expect("registered despite the flood");
                let at_port = flood(r.local, 400).await;
                let id = Identity {
                    me: rank,
                    world,
                    key: reg.key.clone(),
                    job_hash: JOB,
                    run: r.run,
                    encryption: Encryption::Aes256Gcm,
                };
                let cfg = MeshConfig {
                    attempt: Duration::from_millis(250),
                    handshake_timeout: Duration::from_secs(3),
                    timeout: Duration::from_secs(20),
                    partial_ok: false,
                };
                let mesh =
                    punch_mesh(&id, r.local, r.public, &r.listener, &r.peers, &cfg).await.expect("mesh");
                // Strangers beyond the punch port's bound were closed at once, unanswered.
                let mut closed_at_once = 0;
                for s in at_port {
                    let (got, closed) = outcome(s, Duration::from_millis(300)).await;
                    closed_at_once += usize::from(closed && got.is_empty());
                }
                let bound = updraft_transports::punch::mesh::PUNCH_ADMISSION.per_source;
                assert!(closed_at_once >= 400 - bound, "{closed_at_once} strangers closed at once");
                // Every link carries a sealed frame both ways.
                let mut links = mesh.links;
                for (_, c) in &mut links {
                    c.session
                        .sealer
                        .write(&mut c.stream, JOB, &frame(u64::from(rank)), false)
                        .await
                        .expect("write");
                }
                let mut seen = Vec::new();
                for (peer, c) in &mut links {
                    let limits = WireLimits { job: JOB, max_body: 1 << 20 };
                    let f = c.session.opener.read(&mut c.stream, limits).await.expect("read").expect("frame");
                    assert_eq!(f.body.as_slice(), body(u64::from(*peer)).as_slice());
                    seen.push(*peer);
                }
                seen
            }));
        }
        for (rank, w) in workers.into_iter().enumerate() {
            let mut seen =
                tokio::time::timeout(Duration::from_secs(60), w).await.expect("in time").expect("worker");
            seen.sort_unstable();
            let want: Vec<u32> = (0..world).filter(|p| *p != rank as u32).collect();
            assert_eq!(seen, want);
        }
        drop(at_rendezvous);
    });
}

/// What a stranger's connection got: the bytes sent before the server closed it, and whether
/// it was closed within `wait`.
async fn outcome(mut s: TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

#[test]
fn the_rendezvous_holds_few_strangers_and_not_for_long() {
    raise_fd_limit();
    rt().block_on(async {
        let mut config = ServerConfig::new(SECRET.to_vec());
        config.register_timeout = Duration::from_millis(800);
        let per_source = config.admission.per_source;
        let srv = server(config).await;
        let rdv = srv.local_addr();
        let mut idle = Vec::new();
        for _ in 0..per_source + 100 {
            idle.push(stranger(rdv).await.expect("connect"));
        }
        // Beyond the bound, connections are closed at once, before any byte is sent.
        let mut refused = 0;
        let mut challenged = Vec::new();
        for s in idle {
            let (got, closed) = outcome(s, Duration::from_millis(300)).await;
            if closed && got.is_empty() {
                refused += 1;
            } else {
                assert!(!got.is_empty(), "an admitted stranger is challenged");
                challenged.push(got);
            }
        }
        assert_eq!(refused, 100, "connections over the per-source bound are closed at once");
        assert_eq!(challenged.len(), per_source);
        // The admitted ones are cut at the registration deadline (0.8 s): a new stranger is
        // admitted again afterwards.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let (got, _) = outcome(stranger(rdv).await.expect("connect"), Duration::from_millis(300)).await;
        assert!(!got.is_empty(), "slots are freed by the deadline");
        // An oversize length is refused without being read, and the connection closed.
        let mut s = stranger(rdv).await.expect("connect");
        s.write_all(&0xFFFF_FF00u32.to_le_bytes()).await.expect("write");
        let t0 = Instant::now();
        let (got, closed) = outcome(s, Duration::from_secs(2)).await;
        assert!(closed && t0.elapsed() < Duration::from_secs(1), "closed at once");
        assert!(String::from_utf8_lossy(&got).contains("first message of"), "a refusal naming the length");
        // A slow writer is cut at the deadline.
        let mut s = stranger(rdv).await.expect("connect");
        s.write_all(&200u32.to_le_bytes()).await.expect("write");
        let t0 = Instant::now();
        let (_, closed) = outcome(s, Duration::from_secs(3)).await;
        assert!(closed && t0.elapsed() < Duration::from_secs(2), "cut at the deadline");
    });
}

/// A front for the rendezvous that records what workers send (per connection, as it arrives)
/// and can rewrite what the rendezvous answers.
async fn front(
    real: SocketAddr,
    rewrite: fn(RendezvousMsg) -> RendezvousMsg,
) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&sent);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let up = TcpStream::connect(real).await.expect("connect");
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = up.into_split();
                let index = {
                    let mut log = log.lock().expect("log");
                    log.push(Vec::new());
                    log.len() - 1
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        log.lock().expect("log")[index].extend_from_slice(&buf[..n]);
                        if uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let limits = WireLimits { job: rendezvous_job_hash(), max_body: 1 << 24 };
                while let Ok(Some(f)) = read_frame(&mut ur, limits).await {
                    let msg = rewrite(RendezvousMsg::from_frame(&f).expect("a rendezvous message"));
                    let out = msg.to_frame().expect("frame");
                    // Re-encoded whole: header and checksum are right for the new contents.
                    if write_frame(&mut cw, rendezvous_job_hash(), &out).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, sent)
}

#[test]
fn a_refusal_forged_on_the_path_is_reported_as_unauthenticated() {
    rt().block_on(async {
        let srv = server(ServerConfig::new(SECRET.to_vec())).await;
        let refuse = |msg| match msg {
            RendezvousMsg::Peers { .. } => RendezvousMsg::Refused {
                class: updraft_runtime::FailureClass::Config,
                reason: "your pipeline is wrong; give up".into(),
                mac: [7; 32],
            },
            other => other,
        };
        let (forged, _) = front(srv.local_addr(), refuse).await;
        let t = Duration::from_secs(5);
        let (zero, one) =
            (registration(forged, "refused", 0, 2), registration(srv.local_addr(), "refused", 1, 2));
        let (a, _) = tokio::join!(register(&zero, t), register(&one, t));
        match a.expect_err("refused") {
            RendezvousError::Refused { reason, class } => {
                assert!(reason.contains("not authenticated by the job key"), "{reason}");
                assert_eq!(class, updraft_runtime::FailureClass::Rendezvous, "not the forged class");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    });
}

#[test]
fn a_forged_peer_table_is_refused() {
    rt().block_on(async {
        let srv = server(ServerConfig::new(SECRET.to_vec())).await;
        let point_elsewhere = |msg| match msg {
            RendezvousMsg::Peers { mut peers, run, mac } => {
                for p in &mut peers {
                    p.public = "127.0.0.1:9".into();
                }
                RendezvousMsg::Peers { peers, run, mac }
            }
            other => other,
        };
        let (forged, _) = front(srv.local_addr(), point_elsewhere).await;
        let t = Duration::from_secs(5);
        let (zero, one) =
            (registration(forged, "forged", 0, 2), registration(srv.local_addr(), "forged", 1, 2));
        let (a, b) = tokio::join!(register(&zero, t), register(&one, t));
        let e = a.expect_err("the forged table is refused");
        assert!(matches!(e, RendezvousError::Protocol(_)), "{e:?}");
        assert!(e.to_string().contains("peer table is not authenticated"), "{e}");
        b.expect("the table reaching rank 1 untouched is accepted");
    });
}

#[test]
fn a_replayed_registration_is_refused_and_evicts_no_one() {
    rt().block_on(async {
        let srv = server(ServerConfig::new(SECRET.to_vec())).await;
        let (recording, sent) = front(srv.local_addr(), |m| m).await;
        let t = Duration::from_secs(5);
        // Rank 0 of a job registers through the recording front and is waiting for rank 1.
        let zero = registration(recording, "replayed", 0, 2);
        let waiting = tokio::spawn(async move { register(&zero, t).await });
        let captured = loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let bytes = sent.lock().expect("log").first().cloned().unwrap_or_default();
            let whole = bytes.len() >= 4
                && bytes.len() >= 4 + u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            if whole {
                break bytes;
            }
            assert!(!waiting.is_finished(), "rank 0 finished before its registration was captured");
        };
        // A stranger replays those bytes on a connection of its own, after reading the
        // server's (fresh) challenge.
        let mut s = TcpStream::connect(srv.local_addr()).await.expect("connect");
        let limits = WireLimits { job: rendezvous_job_hash(), max_body: 1 << 20 };
        let challenge = read_frame(&mut s, limits).await.expect("read").expect("challenge");
        assert!(matches!(RendezvousMsg::from_frame(&challenge), Ok(RendezvousMsg::Challenge { .. })));
        s.write_all(&captured).await.expect("replay");
        let reply = read_frame(&mut s, limits).await.expect("read").expect("reply");
        match RendezvousMsg::from_frame(&reply).expect("message") {
            RendezvousMsg::Refused { reason, mac, .. } => {
                assert!(reason.contains("replayed from another connection"), "{reason}");
                // Nothing unauthenticated gets a reply signed with the job key.
                assert_eq!(mac, [0; 32], "the refusal of an unauthenticated registration is not signed");
            }
            other => panic!("a replayed registration must be refused, got {other:?}"),
        }
        // Rank 0 was not evicted: rank 1 completes the job with it.
        let one = register(&registration(srv.local_addr(), "replayed", 1, 2), t).await.expect("rank 1");
        let zero = waiting.await.expect("task").expect("rank 0 still registered");
        assert_eq!(one.run, zero.run);
        assert_eq!(one.peers[0].private, zero.local);
    });
}
