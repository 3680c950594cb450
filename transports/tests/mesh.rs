//! Rendezvous and punching over real sockets on 127.0.0.1: full meshes, several jobs at once,
//! wrong secrets, restarts and expiry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

use std::net::SocketAddr;
use std::time::Duration;

use updraft_runtime::ids::job_hash;
use updraft_runtime::wire::{Control, OutFrame, WireLimits};
use updraft_transports::JobKey;
use updraft_transports::punch::handshake::Identity;
use updraft_transports::punch::{MeshConfig, punch_mesh};
use updraft_transports::rendezvous::{
    Registration, RendezvousError, RendezvousServer, ServerConfig, register,
};

const SECRET: &[u8] = b"mesh-test-secret";

async fn server(ttl: Duration) -> RendezvousServer {
    let mut cfg = ServerConfig::new(SECRET.to_vec());
    cfg.job_ttl = ttl;
    RendezvousServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await.expect("bind")
}

fn registration(rdv: SocketAddr, job: &str, rank: u32, world: u32, secret: &[u8]) -> Registration {
    Registration {
        job: job.to_string(),
        rank,
        world,
        key: JobKey::derive(secret, job),
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        rendezvous: rdv,
        plan: vec![("job".to_string(), job.to_string())],
    }
}

/// One worker: register, punch, then prove every link reaches the right peer by sending our
/// rank and reading theirs. Returns (peer ranks seen, punch attempts).
async fn worker(rdv: SocketAddr, job: String, rank: u32, world: u32) -> Vec<u32> {
    let reg = registration(rdv, &job, rank, world, SECRET);
    let r = register(&reg, Duration::from_secs(10)).await.expect("registered");
    let id = Identity {
        me: rank,
        world,
        key: reg.key.clone(),
        job_hash: job_hash(&job),
        run: r.run,
        encryption: updraft_config::Encryption::default(),
    };
    let cfg = MeshConfig {
        attempt: Duration::from_millis(250),
        handshake_timeout: Duration::from_secs(3),
        timeout: Duration::from_secs(10),
        partial_ok: false,
    };
    let mesh = punch_mesh(&id, r.local, r.public, &r.listener, &r.peers, &cfg).await.expect("mesh");
    assert_eq!(mesh.links.len() as u32, world - 1);
    assert_eq!(mesh.pairs.len() as u32, world - 1);
    let mut seen = Vec::new();
    // Each side sends a sealed ping whose sequence number is its rank: the sessions of both
    // ends must match for it to open.
    let mut links = mesh.links;
    let hash = job_hash(&job);
    for (_, c) in &mut links {
        let ping = OutFrame::control(0, u64::from(rank), &Control::Ping).expect("ping");
        c.session.sealer.write(&mut c.stream, hash, &ping, false).await.expect("write");
    }
    for (peer, c) in &mut links {
        let limits = WireLimits { job: hash, max_body: 4096 };
        let frame =
            tokio::time::timeout(Duration::from_secs(5), c.session.opener.read(&mut c.stream, limits))
                .await
                .expect("in time")
                .expect("read")
                .expect("a frame");
        assert_eq!(frame.seq, u64::from(*peer), "link to {peer} reaches {peer}");
        seen.push(*peer);
    }
    seen.sort_unstable();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_meshes_for_two_jobs_at_once() {
    let srv = server(Duration::from_secs(30)).await;
    let rdv = srv.local_addr();
    let mut tasks = Vec::new();
    for (job, world) in [("job-a", 6u32), ("job-b", 3u32)] {
        for rank in 0..world {
            tasks.push((world, rank, tokio::spawn(worker(rdv, job.to_string(), rank, world))));
        }
    }
    for (world, rank, t) in tasks {
        let seen = t.await.expect("worker");
        let expected: Vec<u32> = (0..world).filter(|r| *r != rank).collect();
        assert_eq!(seen, expected);
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_refused_by_the_rendezvous() {
    let srv = server(Duration::from_secs(30)).await;
    let reg = registration(srv.local_addr(), "j", 0, 2, b"not the secret");
    match register(&reg, Duration::from_secs(5)).await {
        Err(RendezvousError::Refused { reason, .. }) => {
            assert!(reason.contains("authentication failed"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_registered_job_expires_naming_the_missing_ranks() {
    let srv = server(Duration::from_millis(300)).await;
    let reg = registration(srv.local_addr(), "lonely", 0, 3, SECRET);
    match register(&reg, Duration::from_secs(5)).await {
        Err(RendezvousError::Refused { reason, .. }) => {
            assert!(reason.contains("ranks 1, 2 of job `lonely` never registered"), "{reason}")
        }
        other => panic!("expected expiry, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_rendezvous_fails_at_the_deadline() {
    // Bind and drop a listener to get a loopback port with nothing behind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let reg = registration(port, "j", 0, 2, SECRET);
    let t0 = std::time::Instant::now();
    let e = register(&reg, Duration::from_millis(400)).await.expect_err("nobody there");
    assert!(matches!(e, RendezvousError::Unreachable { .. }), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_rank_replaces_its_earlier_registration() {
    let srv = server(Duration::from_secs(30)).await;
    let rdv = srv.local_addr();
    let first =
        tokio::spawn(
            async move { register(&registration(rdv, "r", 0, 2, SECRET), Duration::from_secs(5)).await },
        );
    // Wait until the first registration is in, so the second one comes after it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while srv.registrations() < 1 {
        assert!(std::time::Instant::now() < deadline, "first registration never arrived");
        tokio::task::yield_now().await;
    }
    let second =
        tokio::spawn(
            async move { register(&registration(rdv, "r", 0, 2, SECRET), Duration::from_secs(5)).await },
        );
    match first.await.expect("task") {
        Err(RendezvousError::Refused { reason, .. }) => {
            assert!(reason.contains("registered again"), "{reason}")
        }
        other => panic!("expected the first registration to be replaced, got {other:?}"),
    }
    let peer = register(&registration(rdv, "r", 1, 2, SECRET), Duration::from_secs(5)).await.expect("rank 1");
    let replaced = second.await.expect("task").expect("rank 0, second try");
    assert_eq!(peer.peers[0].rank, 0);
    assert_eq!(peer.peers[0].private, replaced.local, "the table has the newer registration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_rendezvous_connection_is_retried() {
    let srv = server(Duration::from_secs(30)).await;
    let real = srv.local_addr();
    // A front that drops the first connection before the rendezvous's challenge, then forwards.
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let front_addr = front.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut conn, _)) = front.accept().await {
            if std::mem::take(&mut first) {
                drop(conn);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut up) = tokio::net::TcpStream::connect(real).await {
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                }
            });
        }
    });
    let flaky = tokio::spawn(async move {
        register(&registration(front_addr, "f", 0, 2, SECRET), Duration::from_secs(5)).await
    });
    let direct =
        register(&registration(real, "f", 1, 2, SECRET), Duration::from_secs(5)).await.expect("rank 1");
    let retried = flaky.await.expect("task").expect("rank 0 registered on its second try");
    assert_eq!(retried.peers[0].rank, 1);
    assert_eq!(direct.peers[0].rank, 0);
    assert_eq!(direct.peers[0].private, retried.local, "the table holds the retried registration");
}
