//! The hello on a fresh connection: both sides send `Hello{rank, world, nonce}`, then a
//! `Proof` (HMAC over both ranks and both nonces with the job key); the higher rank then waits
//! for the lower rank's `Decision`. Strangers, wrong keys and impossible ranks are refused.

use std::time::Duration;

use tokio::net::TcpStream;
use updraft_runtime::wire::{
    Control, FrameKind, OutFrame, WireLimits, decode_control, read_frame, write_frame,
};

use crate::auth::JobKey;

/// Which side of the TCP connection we were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Our connect succeeded (simultaneous open, or the peer's listener accepted).
    Connect,
    /// Our listener accepted it.
    Accept,
}

/// An authenticated connection.
#[derive(Debug)]
pub struct Handshaken {
    /// The peer's rank.
    pub peer: u32,
    /// The connection.
    pub stream: TcpStream,
    /// How it was made.
    pub how: How,
    /// The lower rank's decision, when we are the higher rank.
    pub keep: Option<bool>,
}

/// Who we are, for the handshake.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Our rank.
    pub me: u32,
    /// World size.
    pub world: u32,
    /// Job key.
    pub key: JobKey,
    /// Job hash for frame headers.
    pub job_hash: u64,
}

fn limits(job: u64) -> WireLimits {
    WireLimits { job, max_body: 4096 }
}

async fn send(stream: &mut TcpStream, job: u64, msg: &Control) -> Result<(), String> {
    let frame = OutFrame::control(0, 0, msg).map_err(|e| e.to_string())?;
    write_frame(stream, job, &frame).await.map(|_| ()).map_err(|e| e.to_string())
}

async fn recv(stream: &mut TcpStream, job: u64) -> Result<Control, String> {
    let frame = read_frame(stream, limits(job))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("closed during the handshake")?;
    if frame.kind != FrameKind::Control {
        return Err("data frame during the handshake".into());
    }
    decode_control(frame.body.as_slice()).map_err(|e| e.to_string())
}

/// Runs the handshake on `stream` within `timeout`.
///
/// # Errors
/// A message saying why the connection was refused (wrong key, stranger, timeout, ...).
pub async fn handshake(
    mut stream: TcpStream,
    id: &Identity,
    how: How,
    timeout: Duration,
) -> Result<Handshaken, String> {
    let nonce: [u8; 16] = rand::random();
    let work = async {
        send(&mut stream, id.job_hash, &Control::Hello { rank: id.me, world: id.world, nonce }).await?;
        let Control::Hello { rank: peer, world, nonce: peer_nonce } = recv(&mut stream, id.job_hash).await?
        else {
            return Err("expected a hello".to_string());
        };
        if world != id.world || peer >= id.world || peer == id.me {
            return Err(format!(
                "hello from rank {peer} of world {world} does not fit this job (rank {} of {})",
                id.me, id.world
            ));
        }
        let proof = id.key.link_proof(id.me, peer, &nonce, &peer_nonce);
        send(&mut stream, id.job_hash, &Control::Proof { mac: proof }).await?;
        let Control::Proof { mac } = recv(&mut stream, id.job_hash).await? else {
            return Err(format!("expected a proof from rank {peer}"));
        };
        if !id.key.verify_link(peer, id.me, &peer_nonce, &nonce, &mac) {
            return Err(format!("rank {peer} failed authentication (wrong job secret)"));
        }
        Ok(peer)
    };
    let peer = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("handshake not done within {timeout:?}"))??;
    // The higher rank waits for the lower rank's decision (its own deadline: the lower rank
    // may be busy with other connections) and confirms a kept link.
    let keep = if id.me > peer {
        let decision = async {
            match recv(&mut stream, id.job_hash).await? {
                Control::Decision { keep: true } => {
                    send(&mut stream, id.job_hash, &Control::Confirm).await?;
                    Ok(true)
                }
                Control::Decision { keep: false } => Ok(false),
                _ => Err(format!("expected a decision from rank {peer}")),
            }
        };
        let keep = tokio::time::timeout(timeout, decision)
            .await
            .map_err(|_| format!("no decision from rank {peer} within {timeout:?}"))??;
        Some(keep)
    } else {
        None
    };
    Ok(Handshaken { peer, stream, how, keep })
}

/// The lower rank keeps this connection as the pair's link: it says so, and the link counts
/// only once the higher rank confirms (so both sides always agree on which connection it is).
///
/// # Errors
/// If the decision cannot be written or the confirmation does not arrive in time.
pub async fn keep(stream: &mut TcpStream, job_hash: u64, timeout: Duration) -> Result<(), String> {
    let exchange = async {
        send(stream, job_hash, &Control::Decision { keep: true }).await?;
        match recv(stream, job_hash).await? {
            Control::Confirm => Ok(()),
            other => Err(format!("expected a confirmation, got {other:?}")),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no confirmation within {timeout:?}"))?
}

/// The lower rank drops this connection (the pair has, or is confirming, another one).
pub async fn drop_link(mut stream: TcpStream, job_hash: u64, timeout: Duration) {
    let _ =
        tokio::time::timeout(timeout, send(&mut stream, job_hash, &Control::Decision { keep: false })).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    fn id(me: u32, secret: &[u8]) -> Identity {
        Identity { me, world: 3, key: JobKey::derive(secret, "job"), job_hash: 42 }
    }

    #[tokio::test]
    async fn peers_with_the_key_authenticate_and_decide() {
        let (a, b) = pair().await;
        let t = Duration::from_secs(2);
        let (id0, id2) = (id(0, b"k"), id(2, b"k"));
        let (low, high) = tokio::join!(
            async {
                let mut h = handshake(a, &id0, How::Connect, t).await?;
                keep(&mut h.stream, 42, t).await?;
                Ok::<_, String>(h)
            },
            handshake(b, &id2, How::Accept, t)
        );
        let (low, high) = (low.expect("low side"), high.expect("high side"));
        assert_eq!((low.peer, low.keep), (2, None));
        assert_eq!((high.peer, high.keep), (0, Some(true)));
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_on_both_sides() {
        let (a, b) = pair().await;
        let t = Duration::from_secs(2);
        let (good, bad) = (id(0, b"k"), id(1, b"other"));
        let (x, y) = tokio::join!(handshake(a, &good, How::Connect, t), handshake(b, &bad, How::Accept, t));
        assert!(x.expect_err("refused").contains("failed authentication"));
        assert!(y.expect_err("refused").contains("failed authentication"));
    }

    #[tokio::test]
    async fn a_silent_stranger_times_out() {
        let (a, _b) = pair().await;
        let e = handshake(a, &id(0, b"k"), How::Connect, Duration::from_millis(100))
            .await
            .expect_err("times out");
        assert!(e.contains("not done within"), "{e}");
    }

    #[tokio::test]
    async fn impossible_ranks_are_refused() {
        let (a, b) = pair().await;
        let t = Duration::from_secs(2);
        let (one, same) = (id(1, b"k"), id(1, b"k"));
        let (x, _) = tokio::join!(handshake(a, &one, How::Connect, t), handshake(b, &same, How::Accept, t));
        assert!(x.expect_err("same rank").contains("does not fit"));
    }
}
