//! Attacks on links, on loopback: a man in the middle between two workers (passive reading,
//! impersonation with relayed hellos, a flipped bit, a replayed, spliced or dropped record),
//! and a relay operator altering or replaying what Redis or S3 hold (when configured:
//! `UPDRAFT_TEST_REDIS`, `UPDRAFT_TEST_S3_BUCKET`). Each must fail the link naming the peer,
//! and no altered frame may reach the receiving side.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use updraft_config::{Encryption, RuntimeSettings};
use updraft_runtime::collective::{COLLECTIVE_CHANNEL, PEER_GONE};
use updraft_runtime::messages::AttachCollectives;
use updraft_runtime::wire::{FrameKind, OutBody, OutFrame};
use updraft_transports::punch::Connection;
use updraft_transports::punch::handshake::{How, Identity, handshake, keep};
use updraft_transports::secure::{Binding, KeyExchange, Session};
use updraft_transports::{Endpoint, JobKey, TransportActor};

const JOB: u64 = 0x5eed;
const RUN: u64 = 77;
const FRAMES: u64 = 6;
/// Records longer than this are data records (hellos, key-exchange messages, decisions and
/// pings are shorter).
const DATA_RECORD: usize = 500;

/// What the man in the middle does to the stream from rank 0 to rank 1.
#[derive(Clone)]
enum Mangle {
    /// Passes everything, keeping a copy.
    Pass,
    /// Flips one bit in data record `k`.
    Flip(usize),
    /// Sends data record `k` twice.
    Replay(usize),
    /// Leaves data record `k` out.
    Drop(usize),
    /// Puts these bytes (a record of another connection) in place of data record `k`.
    Splice(usize, Vec<u8>),
    /// Relays the hellos but answers the key exchange itself, with a key it guessed.
    Impersonate,
    /// Flips a bit of rank 0's hello nonce.
    AlterHello,
}

fn identity(me: u32, secret: &[u8], encryption: Encryption) -> Identity {
    Identity { me, world: 2, key: JobKey::derive(secret, "attacked"), job_hash: JOB, run: RUN, encryption }
}

/// The body of frame `i`: recognisable text, so a copy of the stream shows whether rows can be
/// read in it.
fn body(i: u64) -> Vec<u8> {
    format!("ROW-{i:04}-customer=alice;card=4111111111111111;").repeat(20).into_bytes()
}

fn frame(i: u64) -> OutFrame {
    OutFrame {
        kind: FrameKind::Data,
        channel: COLLECTIVE_CHANNEL,
        seq: i,
        body: OutBody::Bytes(Bytes::from(body(i))),
    }
}

/// A clear control frame's message.
fn control(unit: &[u8]) -> updraft_runtime::wire::Control {
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&unit[4 + updraft_runtime::wire::HEADER_LEN..]);
    updraft_runtime::wire::decode_control(&aligned).expect("a control frame")
}

/// The man in the middle: accepts rank 0's connection, connects to rank 1, and pumps both
/// ways, applying `mangle` from 0 to 1. Returns what it saw from 0 to 1.
async fn middle(front: TcpListener, back: std::net::SocketAddr, mangle: Mangle) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        let (a, _) = front.accept().await.expect("accept rank 0");
        let b = TcpStream::connect(back).await.expect("connect rank 1");
        let (mut a_read, mut a_write) = a.into_split();
        let (mut b_read, mut b_write) = b.into_split();
        let (hello_tx, hello_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
        // 1 → 0: passed through (the impersonator reads rank 1's hello on the way).
        tokio::spawn(async move {
            let mut hello_tx = Some(hello_tx);
            let mut buf = vec![0u8; 64 * 1024];
            let mut first = Vec::new();
            loop {
                let n = match b_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let Some(tx) = hello_tx.take_if(|_| {
                    first.extend_from_slice(&buf[..n]);
                    first.len() >= 4
                        && first.len()
                            >= 4 + u32::from_le_bytes([first[0], first[1], first[2], first[3]]) as usize
                }) {
                    let _ = tx.send(first.clone());
                }
                if a_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        // 0 → 1, record by record.
        let mut hello_rx = Some(hello_rx);
        let mut index = 0usize;
        let mut data = 0usize;
        let mut rank0_hello = None;
        while let Some(u) = unit(&mut a_read).await {
            log.lock().expect("log").push(u.clone());
            index += 1;
            let mut out = vec![u.clone()];
            if index == 1 {
                rank0_hello = Some(u.clone());
                if matches!(mangle, Mangle::AlterHello) {
                    // The nonce is the hello body's last 16 bytes, give or take rkyv padding:
                    // any bit of the body changes what the two sides bind.
                    let last = out[0].len() - 1;
                    out[0][last - 4] ^= 0x01;
                }
            }
            if matches!(mangle, Mangle::Impersonate) && index == 2 {
                // Rank 0's key-exchange message is replaced by one made with a guessed key,
                // bound to the hellos this connection really carried.
                let theirs = hello_rx.take().expect("once").await.expect("rank 1's hello");
                let nonces = |u: &[u8]| match control(u) {
                    updraft_runtime::wire::Control::Hello { nonce, .. } => nonce,
                    other => panic!("expected a hello, got {other:?}"),
                };
                let binding = Binding {
                    job: JOB,
                    run: RUN,
                    world: 2,
                    me: (0, nonces(rank0_hello.as_deref().expect("hello"))),
                    peer: (1, nonces(&theirs)),
                };
                let guessed = JobKey::derive(b"a guess", "attacked");
                let mut kx = KeyExchange::new(&guessed, Encryption::Aes256Gcm, &binding).expect("kx");
                let msg = updraft_runtime::wire::Control::Handshake { noise: kx.write().expect("write") };
                let forged = OutFrame::control(0, 0, &msg).expect("frame");
                let mut bytes = Vec::new();
                updraft_runtime::wire::write_frame(&mut bytes, JOB, &forged).await.expect("encode");
                out = vec![bytes];
            }
            if u.len() > DATA_RECORD {
                match &mangle {
                    Mangle::Flip(k) if *k == data => {
                        let mid = u.len() / 2;
                        out[0][mid] ^= 0x01;
                    }
                    Mangle::Replay(k) if *k == data => out.push(u.clone()),
                    Mangle::Drop(k) if *k == data => out.clear(),
                    Mangle::Splice(k, other) if *k == data => out = vec![other.clone()],
                    _ => {}
                }
                data += 1;
            }
            for o in out {
                if b_write.write_all(&o).await.is_err() {
                    return;
                }
            }
        }
        let _ = b_write.shutdown().await;
    });
    seen
}

/// Reads one length-prefixed unit (a clear frame or a sealed record: both start with a u32 LE
/// length).
async fn unit(r: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.ok()?;
    let mut rest = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut rest).await.ok()?;
    Some([len.to_vec(), rest].concat())
}

/// Links rank 0 and rank 1 through a man in the middle. Returns both ends' results and what
/// the middle saw from rank 0.
async fn linked_through(
    mangle: Mangle,
    encryption: Encryption,
) -> (Result<Connection, String>, Result<Connection, String>, Arc<Mutex<Vec<Vec<u8>>>>) {
    let back = TcpListener::bind("127.0.0.1:0").await.expect("bind rank 1");
    let front = TcpListener::bind("127.0.0.1:0").await.expect("bind middle");
    let (back_addr, front_addr) = (back.local_addr().expect("addr"), front.local_addr().expect("addr"));
    let seen = middle(front, back_addr, mangle).await;
    let t = Duration::from_secs(3);
    let low = async {
        let stream = TcpStream::connect(front_addr).await.map_err(|e| e.to_string())?;
        let mut h = handshake(stream, &identity(0, b"job secret", encryption), How::Connect, t).await?;
        keep(&mut h.stream, &mut h.session, JOB, t).await?;
        Ok::<_, String>(Connection { stream: h.stream, session: h.session })
    };
    let high = async {
        let (stream, _) = back.accept().await.map_err(|e| e.to_string())?;
        let h = handshake(stream, &identity(1, b"job secret", encryption), How::Accept, t).await?;
        Ok::<_, String>(Connection { stream: h.stream, session: h.session })
    };
    let (a, b) = tokio::join!(low, high);
    (a, b, seen)
}

/// Runs rank 1's transport on `endpoint` (from rank 0) and returns what reached its inbox:
/// the frames delivered, then why the link was lost, if it was.
async fn receive(endpoint: Endpoint) -> (Vec<(u64, Vec<u8>)>, Option<String>) {
    let settings = RuntimeSettings { peer_timeout: Duration::from_secs(5), ..RuntimeSettings::default() };
    let (port, _addr) = TransportActor::new(1, JOB, &settings, vec![(0, endpoint)]).start_port();
    let (tx, mut rx) = updraft_runtime::collective::inbox(1 << 30);
    port.attach.send(AttachCollectives { inbox: tx }).await.expect("attach");
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(f)) if f.seq == PEER_GONE => {
                return (got, Some(String::from_utf8_lossy(f.body.as_slice()).into_owned()));
            }
            Ok(Some(f)) => {
                got.push((f.seq, f.body.as_slice().to_vec()));
                if got.len() as u64 == FRAMES {
                    return (got, None);
                }
            }
            Ok(None) => return (got, Some("inbox closed".into())),
            Err(_) => return (got, Some("nothing for 10 s".into())),
        }
    }
}

/// Sends the test frames from rank 0's side of a direct connection.
async fn send_all(mut c: Connection) -> Connection {
    for i in 0..FRAMES {
        c.session.sealer.write(&mut c.stream, JOB, &frame(i), false).await.expect("write");
    }
    c.stream.flush().await.expect("flush");
    c
}

fn in_actix<F: std::future::Future<Output = ()>>(f: F) {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
    });
    system.block_on(f);
}

/// Frames delivered must be exactly the first `n` sent, unaltered.
fn assert_prefix(got: &[(u64, Vec<u8>)], n: u64) {
    assert_eq!(got.len() as u64, n, "frames delivered before the failure");
    for (i, (seq, b)) in got.iter().enumerate() {
        assert_eq!(
            (*seq, b.as_slice()),
            (i as u64, body(i as u64).as_slice()),
            "frame {i} arrived unaltered"
        );
    }
}

/// Runs an attack on data records and checks that rank 1 got exactly `delivered` frames and
/// then lost rank 0 for an unauthentic record.
fn attack(mangle: Mangle, delivered: u64) {
    in_actix(async move {
        let (a, b, _) = linked_through(mangle, Encryption::Aes256Gcm).await;
        let (a, b) = (a.expect("rank 0 linked"), b.expect("rank 1 linked"));
        let sender = tokio::spawn(send_all(a));
        let (got, lost) = receive(Endpoint::Direct(b)).await;
        assert_prefix(&got, delivered);
        let lost = lost.expect("the link must fail");
        assert!(lost.contains("lost rank 0"), "{lost}");
        assert!(lost.contains("failed authentication"), "{lost}");
        drop(sender);
    });
}

#[test]
fn a_passive_middle_relays_the_handshake_but_reads_no_row() {
    in_actix(async {
        let (a, b, seen) = linked_through(Mangle::Pass, Encryption::Aes256Gcm).await;
        let (a, b) = (a.expect("rank 0 linked"), b.expect("rank 1 linked"));
        let sender = tokio::spawn(send_all(a));
        let (got, lost) = receive(Endpoint::Direct(b)).await;
        assert_eq!(lost, None);
        assert_prefix(&got, FRAMES);
        let bytes: Vec<u8> = seen.lock().expect("log").concat();
        assert!(bytes.len() as u64 > FRAMES * 1000, "the middle saw the traffic");
        assert!(!bytes.windows(8).any(|w| w == b"ROW-0000" || w == b"card=411"), "rows readable on the path");
        drop(sender);
    });
}

#[test]
fn without_encryption_the_same_middle_reads_every_row() {
    // The control for the test above: it can fail.
    in_actix(async {
        let (a, b, seen) = linked_through(Mangle::Pass, Encryption::None).await;
        let (a, b) = (a.expect("rank 0 linked"), b.expect("rank 1 linked"));
        let sender = tokio::spawn(send_all(a));
        let (got, _) = receive(Endpoint::Direct(b)).await;
        assert_prefix(&got, FRAMES);
        let bytes: Vec<u8> = seen.lock().expect("log").concat();
        assert!(bytes.windows(8).any(|w| w == b"ROW-0000"));
        drop(sender);
    });
}

#[test]
fn an_impersonator_relaying_hellos_is_refused_by_both_ranks() {
    in_actix(async {
        let (a, b, _) = linked_through(Mangle::Impersonate, Encryption::Aes256Gcm).await;
        let b = b.expect_err("rank 1 refuses the forged key exchange");
        assert!(b.contains("rank 0 failed authentication"), "{b}");
        let a = a.expect_err("rank 0 gets no link");
        assert!(a.contains("rank 1"), "{a}");
    });
}

#[test]
fn an_altered_hello_fails_the_key_exchange_on_both_sides() {
    in_actix(async {
        let (a, b, _) = linked_through(Mangle::AlterHello, Encryption::Aes256Gcm).await;
        assert!(a.is_err() && b.is_err(), "{a:?} / {b:?}");
    });
}

#[test]
fn peers_with_different_encryption_settings_do_not_link() {
    in_actix(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let t = Duration::from_secs(3);
        let low = async {
            let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            handshake(stream, &identity(0, b"job secret", Encryption::Aes256Gcm), How::Connect, t).await
        };
        let high = async {
            let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
            handshake(stream, &identity(1, b"job secret", Encryption::None), How::Accept, t).await
        };
        let (a, b) = tokio::join!(low, high);
        assert!(a.is_err(), "rank 0 linked with a peer that sends frames in the clear");
        assert!(b.expect_err("refused").contains("rank 0 failed authentication"));
    });
}

#[test]
fn a_flipped_bit_fails_the_link_and_reaches_no_operator() {
    attack(Mangle::Flip(2), 2);
}

#[test]
fn a_replayed_record_fails_the_link() {
    attack(Mangle::Replay(1), 2);
}

#[test]
fn a_dropped_record_fails_the_link_at_the_next_one() {
    attack(Mangle::Drop(3), 3);
}

#[test]
fn a_record_spliced_from_another_connection_fails_the_link() {
    in_actix(async {
        // Record 2 of one connection between the same two ranks, in the same run ...
        let (a, b, seen) = linked_through(Mangle::Pass, Encryption::Aes256Gcm).await;
        let (a, b) = (a.expect("rank 0 linked"), b.expect("rank 1 linked"));
        let _first = send_all(a).await;
        let (got, _) = receive(Endpoint::Direct(b)).await;
        assert_prefix(&got, FRAMES);
        let donor = seen.lock().expect("log").iter().filter(|u| u.len() > DATA_RECORD).nth(2).cloned();
        let donor = donor.expect("a data record");
        // ... put in place of record 2 of another: same length, same position, other keys.
        let (a, b, _) = linked_through(Mangle::Splice(2, donor), Encryption::Aes256Gcm).await;
        let (a, b) = (a.expect("rank 0 linked"), b.expect("rank 1 linked"));
        let sender = tokio::spawn(send_all(a));
        let (got, lost) = receive(Endpoint::Direct(b)).await;
        assert_prefix(&got, 2);
        let lost = lost.expect("the link must fail");
        assert!(lost.contains("lost rank 0") && lost.contains("failed authentication"), "{lost}");
        drop(sender);
    });
}

/// The relays configured for tests (see `collectives.rs`).
fn relays() -> Vec<updraft_transports::relay::Relay> {
    use updraft_config::ChannelPolicy;
    let required = std::env::var("UPDRAFT_REQUIRE_RELAYS").is_ok();
    let mut out = Vec::new();
    let mut s = RuntimeSettings::default();
    match std::env::var("UPDRAFT_TEST_REDIS") {
        Ok(url) => {
            s.channel = ChannelPolicy::Redis;
            s.redis = Some(url);
            out.push(updraft_transports::relay::Relay::from_settings(&s).expect("redis").expect("relay"));
        }
        Err(_) => assert!(!required, "UPDRAFT_REQUIRE_RELAYS is set but UPDRAFT_TEST_REDIS is not"),
    }
    match std::env::var("UPDRAFT_TEST_S3_BUCKET") {
        Ok(bucket) => {
            s.channel = ChannelPolicy::S3;
            s.s3_relay = Some(format!("s3://{bucket}/attack-tests/"));
            out.push(updraft_transports::relay::Relay::from_settings(&s).expect("s3").expect("relay"));
        }
        Err(_) => assert!(!required, "UPDRAFT_REQUIRE_RELAYS is set but UPDRAFT_TEST_S3_BUCKET is not"),
    }
    if out.is_empty() {
        eprintln!("skipped: no relay configured (UPDRAFT_TEST_REDIS, UPDRAFT_TEST_S3_BUCKET)");
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Tamper {
    /// One bit of the second stored message flipped.
    Alter,
    /// The second stored message replaced by a copy of the first.
    Replay,
    /// The second stored message replaced by one sealed for another run of the same job.
    OtherRun,
}

/// Reads, changes and writes back message `i` of the direction `job`, 0 → 1, where the relay
/// stores it.
async fn rewrite(
    relay: &updraft_transports::relay::Relay,
    job: &str,
    i: usize,
    f: impl FnOnce(Vec<u8>) -> Vec<u8>,
) {
    use updraft_transports::relay::Relay;
    match relay {
        Relay::Redis { client, .. } => {
            let mut con = client.get_multiplexed_async_connection().await.expect("redis");
            let key = format!("updraft:{job}:0:1");
            let old: Vec<u8> =
                redis::cmd("LINDEX").arg(&key).arg(i).query_async(&mut con).await.expect("LINDEX");
            let _: () =
                redis::cmd("LSET").arg(&key).arg(i).arg(f(old)).query_async(&mut con).await.expect("LSET");
        }
        Relay::S3 { client, bucket, prefix } => {
            let key = format!("{prefix}{job}/0-1/{i:016x}");
            let old = client.get_object().bucket(bucket).key(&key).send().await.expect("GET");
            let old = old.body.collect().await.expect("body").into_bytes().to_vec();
            let new = aws_sdk_s3::primitives::ByteStream::from(f(old));
            client.put_object().bucket(bucket).key(&key).body(new).send().await.expect("PUT");
        }
    }
}

/// Reads message `i` of the direction `job`, 0 → 1.
async fn stored(relay: &updraft_transports::relay::Relay, job: &str, i: usize) -> Vec<u8> {
    let mut copy = None;
    rewrite(relay, job, i, |m| {
        copy = Some(m.clone());
        m
    })
    .await;
    copy.expect("read")
}

#[test]
fn relay_contents_altered_or_replayed_fail_the_link_naming_the_peer() {
    for relay in relays() {
        for tamper in [Tamper::Alter, Tamper::Replay, Tamper::OtherRun] {
            let relay = relay.clone();
            in_actix(async move {
                let t = Duration::from_secs(10);
                let job = format!("attack-{}-{tamper:?}-{:x}", relay.name(), rand::random::<u64>());
                let key = JobKey::derive(b"job secret", "attacked");
                let enc = Encryption::Aes256Gcm;
                let mut sender = relay.sender(&job, 0, 1, t).await.expect("sender");
                let mut sealed = Session::relay(enc, &key, RUN, 0, 1).expect("session");
                let mut other_run = Session::relay(enc, &key, RUN + 1, 0, 1).expect("session");
                let mut foreign = Vec::new();
                for i in 0..3 {
                    let mut payload = Vec::new();
                    sealed.sealer.write(&mut payload, JOB, &frame(i), false).await.expect("seal");
                    sender.push(payload, tokio::time::Instant::now() + t).await.expect("push");
                    let mut payload = Vec::new();
                    other_run.sealer.write(&mut payload, JOB, &frame(i), false).await.expect("seal");
                    foreign.push(payload);
                }
                match tamper {
                    Tamper::Alter => {
                        rewrite(&relay, &job, 1, |mut m| {
                            let mid = m.len() / 2;
                            m[mid] ^= 0x04;
                            m
                        })
                        .await
                    }
                    Tamper::Replay => {
                        let first = stored(&relay, &job, 0).await;
                        rewrite(&relay, &job, 1, |_| first).await;
                    }
                    Tamper::OtherRun => rewrite(&relay, &job, 1, |_| foreign[1].clone()).await,
                }
                let endpoint = Endpoint::Relay {
                    sender: relay.sender(&job, 1, 0, t).await.expect("sender"),
                    receiver: relay.receiver(&job, 0, 1, t).await.expect("receiver"),
                    name: relay.name(),
                    session: Session::relay(enc, &key, RUN, 1, 0).expect("session"),
                };
                let (got, lost) = receive(endpoint).await;
                assert_prefix(&got, 1);
                let lost = lost.expect("the link must fail");
                let want = format!("lost rank 0: {} relay: record 1 failed authentication", relay.name());
                assert!(lost.contains(&want), "{tamper:?}: {lost}");
                relay.cleanup(&job, 1, &[0], true, t).await.expect("cleanup");
            });
        }
    }
}

/// A direct link between rank 0 (returned as a connection, driven by the test) and rank 1
/// (returned as an endpoint for a transport), without a middle.
async fn direct_pair() -> (Connection, Endpoint) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let t = Duration::from_secs(3);
    let low = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut h =
            handshake(stream, &identity(0, b"job secret", Encryption::Aes256Gcm), How::Connect, t).await?;
        keep(&mut h.stream, &mut h.session, JOB, t).await?;
        Ok::<_, String>(Connection { stream: h.stream, session: h.session })
    };
    let high = async {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let h = handshake(stream, &identity(1, b"job secret", Encryption::Aes256Gcm), How::Accept, t).await?;
        Ok::<_, String>(Connection { stream: h.stream, session: h.session })
    };
    let (a, b) = tokio::join!(low, high);
    (a.expect("rank 0"), Endpoint::Direct(b.expect("rank 1")))
}

#[test]
fn a_peer_flooding_collective_messages_is_cut_at_the_inbox_bound() {
    in_actix(async {
        let (mut a, b) = direct_pair().await;
        let (port, _addr) =
            TransportActor::new(1, JOB, &RuntimeSettings::default(), vec![(0, b)]).start_port();
        let cap = 16 * 1024;
        let (tx, mut rx) = updraft_runtime::collective::inbox(cap);
        port.attach.send(AttachCollectives { inbox: tx }).await.expect("attach");
        // Far more than the cap, while nothing on rank 1 receives (until they all went out).
        for i in 0..40 {
            a.session.sealer.write(&mut a.stream, JOB, &frame(i), false).await.expect("write");
        }
        a.stream.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut bytes = 0;
        let lost = loop {
            let f = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("in time")
                .expect("open");
            if f.seq == PEER_GONE {
                break String::from_utf8_lossy(f.body.as_slice()).into_owned();
            }
            bytes += f.body.len() as u64;
        };
        assert!(bytes <= cap, "{bytes} bytes held beyond the cap");
        assert!(bytes > 0, "frames within the cap were delivered");
        assert!(lost.contains("lost rank 0") && lost.contains("beyond its 16384-byte inbox"), "{lost}");
    });
}

#[test]
fn a_peer_that_reads_nothing_is_cut_at_the_backlog_bound() {
    in_actix(async {
        // Rank 0 never reads; rank 1's transport keeps sending to it.
        let (_silent, b) = direct_pair().await;
        let settings = RuntimeSettings {
            max_frame: 256 * 1024,
            channel_credit: 16 * 1024,
            link_queue_frames: 4,
            ..RuntimeSettings::default()
        };
        let cap = 1024 * 1024; // 4 x max_frame, as the transport computes it
        let (port, _addr) = TransportActor::new(1, JOB, &settings, vec![(0, b)]).start_port();
        let (tx, mut rx) = updraft_runtime::collective::inbox(1 << 20);
        port.attach.send(AttachCollectives { inbox: tx }).await.expect("attach");
        let big = OutFrame {
            kind: FrameKind::Data,
            channel: COLLECTIVE_CHANNEL,
            seq: 0,
            body: OutBody::Bytes(Bytes::from(vec![7u8; 200 * 1024])),
        };
        // 64 MiB: more than the socket buffers and the writer's queue can absorb, by far.
        for _ in 0..320 {
            port.send.do_send(updraft_runtime::messages::SendFrame { peer: 0, frame: big.clone() });
        }
        let f =
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("in time").expect("open");
        assert_eq!(f.seq, PEER_GONE);
        let lost = String::from_utf8_lossy(f.body.as_slice()).into_owned();
        assert!(lost.contains(&format!("more than {cap} bytes queued for rank 0")), "{lost}");
    });
}
