//! The handshake on a fresh connection: both sides send `Hello{rank, world, nonce}` in the
//! clear, then run the key exchange of [`crate::secure`] (the lower rank first); from then on
//! every frame is a sealed record. The higher rank then waits for the lower rank's sealed
//! `Decision`. Strangers, wrong keys, other runs and impossible ranks are refused; a stranger's
//! frames are small (4 KiB at most) and the whole handshake has a deadline.

use std::time::Duration;

use tokio::net::TcpStream;
use updraft_config::Encryption;
use updraft_runtime::wire::{Control, FrameKind, OutFrame, WireLimits, decode_control};

use crate::auth::JobKey;
use crate::secure::{Binding, KeyExchange, Session};

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
    /// Its protection.
    pub session: Session,
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
    /// This run of the job (from the rendezvous): binds the key exchange to it.
    pub run: u64,
    /// How frames are protected after the exchange.
    pub encryption: Encryption,
}

/// Largest frame body before and during the handshake.
const MAX_HANDSHAKE_BODY: u32 = 4096;

async fn send(stream: &mut TcpStream, session: &mut Session, job: u64, msg: &Control) -> Result<(), String> {
    let frame = OutFrame::control(0, 0, msg).map_err(|e| e.to_string())?;
    session.sealer.write(stream, job, &frame, false).await.map(|_| ()).map_err(|e| e.to_string())
}

async fn recv(stream: &mut TcpStream, session: &mut Session, job: u64) -> Result<Control, String> {
    let limits = WireLimits { job, max_body: MAX_HANDSHAKE_BODY };
    let frame = session
        .opener
        .read(stream, limits)
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
    let job = id.job_hash;
    let work = async {
        let mut clear = Session::plain();
        send(&mut stream, &mut clear, job, &Control::Hello { rank: id.me, world: id.world, nonce }).await?;
        let Control::Hello { rank: peer, world, nonce: peer_nonce } =
            recv(&mut stream, &mut clear, job).await?
        else {
            return Err("expected a hello".to_string());
        };
        if world != id.world || peer >= id.world || peer == id.me {
            return Err(format!(
                "hello from rank {peer} of world {world} does not fit this job (rank {} of {})",
                id.me, id.world
            ));
        }
        let binding =
            Binding { job, run: id.run, world: id.world, me: (id.me, nonce), peer: (peer, peer_nonce) };
        let mut kx = KeyExchange::new(&id.key, id.encryption, &binding)?;
        let refused = |e: String| {
            format!(
                "rank {peer} failed authentication ({e}): another job secret or run, or the connection was \
                 tampered with"
            )
        };
        if kx.is_initiator() {
            send(&mut stream, &mut clear, job, &Control::Handshake { noise: kx.write()? }).await?;
        }
        let answer = recv(&mut stream, &mut clear, job).await.map_err(|e| {
            format!("rank {peer} broke off the key exchange ({e}): it may hold another job secret or run")
        })?;
        let Control::Handshake { noise } = answer else {
            return Err(format!("expected a key-exchange message from rank {peer}"));
        };
        kx.read(&noise).map_err(refused)?;
        if !kx.is_initiator() {
            send(&mut stream, &mut clear, job, &Control::Handshake { noise: kx.write()? }).await?;
        }
        Ok((peer, kx.finish()?))
    };
    let (peer, mut session) = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("handshake not done within {timeout:?}"))??;
    // The higher rank waits for the lower rank's decision (its own deadline: the lower rank
    // may be busy with other connections) and confirms a kept link.
    let keep = if id.me > peer {
        let decision = async {
            match recv(&mut stream, &mut session, job).await? {
                Control::Decision { keep: true } => {
                    send(&mut stream, &mut session, job, &Control::Confirm).await?;
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
    Ok(Handshaken { peer, stream, session, how, keep })
}

/// The lower rank keeps this connection as the pair's link: it says so, and the link counts
/// only once the higher rank confirms (so both sides always agree on which connection it is).
///
/// # Errors
/// If the decision cannot be written or the confirmation does not arrive in time.
pub async fn keep(
    stream: &mut TcpStream,
    session: &mut Session,
    job_hash: u64,
    timeout: Duration,
) -> Result<(), String> {
    let exchange = async {
        send(stream, session, job_hash, &Control::Decision { keep: true }).await?;
        match recv(stream, session, job_hash).await? {
            Control::Confirm => Ok(()),
            other => Err(format!("expected a confirmation, got {other:?}")),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no confirmation within {timeout:?}"))?
}

/// The lower rank drops this connection (the pair has, or is confirming, another one).
pub async fn drop_link(mut stream: TcpStream, mut session: Session, job_hash: u64, timeout: Duration) {
    let decision = send(&mut stream, &mut session, job_hash, &Control::Decision { keep: false });
    let _ = tokio::time::timeout(timeout, decision).await;
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
        Identity {
            me,
            world: 3,
            key: JobKey::derive(secret, "job"),
            job_hash: 42,
            run: 7,
            encryption: Encryption::default(),
        }
    }

    #[tokio::test]
    async fn peers_with_the_key_authenticate_and_decide() {
        let (a, b) = pair().await;
        let t = Duration::from_secs(2);
        let (id0, id2) = (id(0, b"k"), id(2, b"k"));
        let (low, high) = tokio::join!(
            async {
                let mut h = handshake(a, &id0, How::Connect, t).await?;
                keep(&mut h.stream, &mut h.session, 42, t).await?;
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
        // The higher rank cannot open the lower rank's first message; the lower rank sees the
        // connection end instead of an answer.
        assert!(x.expect_err("refused").contains("broke off the key exchange"));
        assert!(y.expect_err("refused").contains("rank 0 failed authentication"));
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
