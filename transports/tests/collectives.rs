//! Every collective on 1 to 8 workers in this process, over punched TCP on loopback and over
//! the Redis and S3 relays (when configured: `UPDRAFT_TEST_REDIS`, `UPDRAFT_TEST_S3_BUCKET` with
//! the AWS environment; CI sets both and `UPDRAFT_REQUIRE_RELAYS=1`). Results are checked
//! against plain computations over the inputs, including uneven sizes and empty contributions,
//! and both the small-message and the large-message algorithms.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, Int64Array};
use bytes::Bytes;
use updraft_config::{ChannelPolicy, RuntimeSettings};
use updraft_runtime::collective::{Communicator, ReduceOp, SMALL_BYTES};
use updraft_transports::local::{LocalChannel, local_cluster, shutdown};
use updraft_transports::relay::Relay;

fn channels() -> Vec<LocalChannel> {
    let mut out = vec![LocalChannel::Direct];
    let required = std::env::var("UPDRAFT_REQUIRE_RELAYS").is_ok();
    let mut s = RuntimeSettings::default();
    match std::env::var("UPDRAFT_TEST_REDIS") {
        Ok(url) => {
            s.channel = ChannelPolicy::Redis;
            s.redis = Some(url);
            out.push(LocalChannel::Relay(Relay::from_settings(&s).expect("redis").expect("relay")));
        }
        Err(_) => assert!(!required, "UPDRAFT_REQUIRE_RELAYS is set but UPDRAFT_TEST_REDIS is not"),
    }
    match std::env::var("UPDRAFT_TEST_S3_BUCKET") {
        Ok(bucket) => {
            s.channel = ChannelPolicy::S3;
            s.s3_relay = Some(format!("s3://{bucket}/collective-tests/"));
            out.push(LocalChannel::Relay(Relay::from_settings(&s).expect("s3").expect("relay")));
        }
        Err(_) => assert!(!required, "UPDRAFT_REQUIRE_RELAYS is set but UPDRAFT_TEST_S3_BUCKET is not"),
    }
    out
}

/// A deterministic byte string for (a, b) of `len` bytes.
fn blob(a: u32, b: u32, len: usize) -> Bytes {
    Bytes::from(
        (0..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(a * 7 + b * 13) as u8).collect::<Vec<u8>>(),
    )
}

/// Rank r's array for the reductions: element i is r * 1000 + i, null where (r + i) % 5 == 0.
fn contribution(r: u32, len: usize) -> ArrayRef {
    Arc::new(Int64Array::from(
        (0..len)
            .map(
                |i| {
                    if (r as usize + i).is_multiple_of(5) {
                        None
                    } else {
                        Some(i64::from(r) * 1000 + i as i64)
                    }
                },
            )
            .collect::<Vec<_>>(),
    ))
}

fn values(a: &ArrayRef) -> Vec<Option<i64>> {
    let a = a.as_primitive::<Int64Type>();
    (0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect()
}

/// The reduction of ranks `0..upto` computed element by element (nulls skipped).
fn expected(op: ReduceOp, upto: u32, len: usize) -> Vec<Option<i64>> {
    (0..len)
        .map(|i| {
            let vals: Vec<i64> = (0..upto)
                .filter(|r| !(*r as usize + i).is_multiple_of(5))
                .map(|r| i64::from(r) * 1000 + i as i64)
                .collect();
            match op {
                ReduceOp::Count => Some(vals.len() as i64),
                _ if vals.is_empty() => None,
                ReduceOp::Sum => Some(vals.iter().sum()),
                ReduceOp::Min => vals.iter().min().copied(),
                ReduceOp::Max => vals.iter().max().copied(),
            }
        })
        .collect()
}

/// Every collective on one rank, checked; returns the time it left the barrier.
async fn exercise(
    mut c: Communicator,
    entered: Arc<Vec<std::sync::Mutex<Option<Instant>>>>,
) -> Result<(), String> {
    let (p, r) = (c.world(), c.rank());
    let e = |what: &str, err: updraft_runtime::collective::CollectiveError| {
        format!("rank {r} of {p}: {what}: {err}")
    };

    // Barrier: nobody leaves before everybody entered.
    tokio::time::sleep(Duration::from_millis(u64::from(r) * 15)).await;
    *entered[r as usize].lock().expect("lock") = Some(Instant::now());
    c.barrier().await.map_err(|x| e("barrier", x))?;
    let left = Instant::now();
    for (q, t) in entered.iter().enumerate() {
        let t =
            t.lock().expect("lock").ok_or(format!("rank {r} left the barrier before rank {q} entered"))?;
        assert!(t <= left);
    }

    // Broadcast: a small and a large (scattered) message from different roots.
    for (root, len) in [(p - 1, 100usize), (0, SMALL_BYTES * 3 + 17)] {
        let data = (r == root).then(|| blob(root, 99, len));
        let got = c.broadcast(root, data).await.map_err(|x| e("broadcast", x))?;
        if got != blob(root, 99, len) {
            return Err(format!("rank {r} of {p}: broadcast of {len} bytes from {root} differs"));
        }
    }

    // Gather(v): rank q gives q * 3 bytes (rank 0 gives nothing).
    let root = 1 % p;
    let got = c.gather(root, blob(r, 1, r as usize * 3)).await.map_err(|x| e("gather", x))?;
    match got {
        Some(all) if r == root => {
            let want: Vec<Bytes> = (0..p).map(|q| blob(q, 1, q as usize * 3)).collect();
            if all != want {
                return Err(format!("rank {r} of {p}: gather differs"));
            }
        }
        None if r != root => {}
        _ => return Err(format!("rank {r} of {p}: gather result on the wrong rank")),
    }

    // Allgather(v): small (Bruck) and large (ring), uneven and empty contributions.
    for base in [0usize, SMALL_BYTES] {
        let size = |q: u32| if q % 3 == 2 { 0 } else { base + q as usize * 5 };
        let got = c.allgather(blob(r, 2, size(r))).await.map_err(|x| e("allgather", x))?;
        let want: Vec<Bytes> = (0..p).map(|q| blob(q, 2, size(q))).collect();
        if got != want {
            return Err(format!("rank {r} of {p}: allgather (base {base}) differs"));
        }
    }

    // Alltoall(v): part r → q of (r + q) % 4 * 10 bytes, small and large.
    for base in [0usize, SMALL_BYTES + 1] {
        let size =
            |a: u32, b: u32| if (a + b).is_multiple_of(4) { 0 } else { base + ((a + b) % 4) as usize * 10 };
        let parts: Vec<Bytes> = (0..p).map(|q| blob(r, q, size(r, q))).collect();
        let got = c.alltoall(parts).await.map_err(|x| e("alltoall", x))?;
        let want: Vec<Bytes> = (0..p).map(|q| blob(q, r, size(q, r))).collect();
        if got != want {
            return Err(format!("rank {r} of {p}: alltoall (base {base}) differs"));
        }
    }

    // Reductions on arrays with nulls: small (doubling) and large (ring) allreduce.
    for len in [10usize, SMALL_BYTES / 8 * 3 + 7] {
        for op in [ReduceOp::Sum, ReduceOp::Min, ReduceOp::Max, ReduceOp::Count] {
            let got = c.allreduce(op, contribution(r, len)).await.map_err(|x| e("allreduce", x))?;
            if values(&got) != expected(op, p, len) {
                return Err(format!("rank {r} of {p}: allreduce {} of {len} differs", op.name()));
            }
        }
    }
    let got = c.reduce(p / 2, ReduceOp::Sum, contribution(r, 33)).await.map_err(|x| e("reduce", x))?;
    match got {
        Some(a) if r == p / 2 => {
            if values(&a) != expected(ReduceOp::Sum, p, 33) {
                return Err(format!("rank {r} of {p}: reduce differs"));
            }
        }
        None if r != p / 2 => {}
        _ => return Err(format!("rank {r} of {p}: reduce result on the wrong rank")),
    }
    // A scalar is an array of one.
    let one: ArrayRef = Arc::new(Int64Array::from(vec![i64::from(r) + 1]));
    let got = c.allreduce(ReduceOp::Max, one.clone()).await.map_err(|x| e("allreduce scalar", x))?;
    if values(&got) != vec![Some(i64::from(p))] {
        return Err(format!("rank {r} of {p}: scalar max differs"));
    }
    // Inclusive scan: rank r gets the sum of ranks 0..=r.
    let got = c.scan(ReduceOp::Sum, contribution(r, 12)).await.map_err(|x| e("scan", x))?;
    if values(&got) != expected(ReduceOp::Sum, r + 1, 12) {
        return Err(format!("rank {r} of {p}: scan differs"));
    }
    // Point to point, out of order: tags keep them apart.
    if p > 1 {
        let next = (r + 1) % p;
        c.send(next, 7, blob(r, 7, 3)).map_err(|x| e("send", x))?;
        c.send(next, 5, blob(r, 5, 4)).map_err(|x| e("send", x))?;
        let prev = (r + p - 1) % p;
        let five = c.recv(prev, 5).await.map_err(|x| e("recv", x))?;
        let seven = c.recv(prev, 7).await.map_err(|x| e("recv", x))?;
        if five != blob(prev, 5, 4) || seven != blob(prev, 7, 3) {
            return Err(format!("rank {r} of {p}: point to point differs"));
        }
        // Two messages with one tag arrive in the order sent.
        c.send(next, 9, blob(r, 1, 2)).map_err(|x| e("send", x))?;
        c.send(next, 9, blob(r, 2, 5)).map_err(|x| e("send", x))?;
        let (first, second) = (c.recv(prev, 9).await, c.recv(prev, 9).await);
        if first.map_err(|x| e("recv", x))? != blob(prev, 1, 2)
            || second.map_err(|x| e("recv", x))? != blob(prev, 2, 5)
        {
            return Err(format!("rank {r} of {p}: same-tag messages out of order"));
        }
        if c.send(next, 1 << 24, Bytes::new()).is_ok() {
            return Err("a tag of 2^24 was accepted".into());
        }
    }
    c.barrier().await.map_err(|x| e("final barrier", x))?;
    Ok(())
}

fn run_world(channel: &LocalChannel, world: u32) -> Result<(), String> {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
    });
    let channel = channel.clone();
    system.block_on(async move {
        let job = format!("coll-{}-{world}-{}", channel.name(), std::process::id());
        let settings = RuntimeSettings::default();
        let workers = local_cluster(world, &channel, &job, &settings, Duration::from_secs(20)).await?;
        let entered = Arc::new((0..world).map(|_| std::sync::Mutex::new(None)).collect::<Vec<_>>());
        let mut transports = Vec::new();
        let mut tasks = Vec::new();
        for w in workers {
            transports.push(w.transport);
            tasks.push(tokio::spawn(exercise(w.comm, Arc::clone(&entered))));
        }
        let mut result = Ok(());
        for t in tasks {
            let r = t.await.map_err(|e| e.to_string()).and_then(|r| r);
            if result.is_ok() {
                result = r;
            }
        }
        shutdown(transports, &channel, &job, Duration::from_secs(5)).await;
        result
    })
}

#[test]
fn every_collective_on_1_to_8_workers_on_every_channel() {
    for channel in channels() {
        for world in 1..=8 {
            let t = Instant::now();
            run_world(&channel, world)
                .unwrap_or_else(|e| panic!("{} channel, {world} workers: {e}", channel.name()));
            eprintln!("{} channel, {world} workers: {:?}", channel.name(), t.elapsed());
        }
    }
}
