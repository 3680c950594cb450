//! Protected links: the key exchange that opens a direct link, and the sealed records that
//! carry every frame after it, on direct and relayed links alike.
//!
//! **Key exchange** (direct links). After both sides' clear `Hello{rank, world, nonce}`, the
//! lower rank runs the Noise pattern `NNpsk0_25519` as initiator (Noise Protocol Framework,
//! revision 34, §9.4; the same construction WireGuard uses), through the `snow` crate:
//!
//! ```text
//!  prologue = "updraft/link/v3" ‖ job hash ‖ run ‖ world ‖ low rank ‖ high rank
//!             ‖ low rank's hello nonce ‖ high rank's hello nonce ‖ encryption name
//!  psk      = HMAC(job key, "link-psk" ‖ run)
//!  low  → high:  psk, e          (payload sealed under a key mixed from the psk)
//!  high → low :  e, ee           (payload sealed under psk and the ephemeral DH)
//! ```
//!
//! Only holders of the job key can produce either message; the prologue binds both to this
//! connection's hellos (fresh random nonces), so messages replayed from another connection or
//! relayed hellos give a man in the middle nothing it can read or write: it can pass bytes
//! along, and every one of them is sealed end to end. Ephemeral keys give forward secrecy for
//! direct links.
//!
//! **Records.** Every frame (data, credit, end, control, collective, heartbeat) becomes one
//! record under the sending direction's key:
//!
//! ```text
//!  ┌───────────────┬──────────────────────────────────────────────┬──────────┐
//!  │ u32 LE length │ AEAD(FrameHeader 40 bytes ‖ body)            │ tag (16) │
//!  │ = 40+body+16  │ nonce = 0u32 ‖ record counter (u64 BE)       │          │
//!  └───────────────┴──────────────────────────────────────────────┴──────────┘
//!  associated data = the 4 length bytes
//! ```
//!
//! Each direction counts its records from zero, so a record altered, dropped, replayed,
//! reordered or taken from another connection (other keys) fails to open, and the link fails
//! with [`WireError::Unauthentic`] naming the record. Relayed links have no connection to bind
//! to: their keys are derived from the job key, the run (random per run, from the rendezvous)
//! and the ordered pair, so a relay's operator sees only ciphertext and cannot forge, replay
//! across runs or directions, or reorder. The AEADs come from `ring` (AES-256-GCM with AES-NI
//! and PCLMULQDQ or ARMv8 crypto extensions; ChaCha20-Poly1305 otherwise).

use arrow_buffer::MutableBuffer;
use ring::aead;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use updraft_config::Encryption;
use updraft_runtime::wire::{
    HEADER_LEN, InFrame, OutBody, OutFrame, WireError, WireLimits, check_header, encode_header, read_frame,
    write_frame,
};

use crate::auth::JobKey;

/// Bytes of an AEAD tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed record adds to a frame's header and body: its length prefix and the tag.
pub const RECORD_OVERHEAD: usize = 4 + TAG_LEN;
/// Offset of a record's plaintext in its receive buffer: the body after the header then starts
/// 64 bytes in, aligned for Arrow.
const PLAINTEXT_AT: usize = 64 - HEADER_LEN;

/// One direction's key and record counter.
struct DirectionKey {
    key: aead::LessSafeKey,
    next: u64,
}

impl DirectionKey {
    fn new(encryption: Encryption, bytes: &[u8; 32]) -> Result<Option<DirectionKey>, WireError> {
        let algorithm = match encryption {
            Encryption::Aes256Gcm => &aead::AES_256_GCM,
            Encryption::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
            Encryption::None => return Ok(None),
        };
        let key = aead::UnboundKey::new(algorithm, bytes)
            .map_err(|_| WireError::Encode("cannot make an AEAD key".into()))?;
        Ok(Some(DirectionKey { key: aead::LessSafeKey::new(key), next: 0 }))
    }

    /// The next record's nonce (each is used once: a counter that refuses to wrap).
    fn nonce(&mut self) -> Result<(u64, aead::Nonce), WireError> {
        let n = self.next;
        self.next = n.checked_add(1).ok_or_else(|| WireError::Encode("record counter exhausted".into()))?;
        let mut bytes = [0u8; aead::NONCE_LEN];
        bytes[4..].copy_from_slice(&n.to_be_bytes());
        Ok((n, aead::Nonce::assume_unique_for_key(bytes)))
    }
}

/// The sending half of a link's protection: writes frames as sealed records, or in the clear
/// when the job runs without encryption.
pub struct Sealer {
    key: Option<DirectionKey>,
    scratch: Vec<u8>,
}

/// The receiving half: reads sealed records (or clear frames) and checks them.
pub struct Opener {
    key: Option<DirectionKey>,
}

/// Both halves of one link's protection.
pub struct Session {
    /// Frames this side sends.
    pub sealer: Sealer,
    /// Frames this side receives.
    pub opener: Opener,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session(sealed: {})", self.is_sealed())
    }
}

impl Session {
    /// A session whose frames go in the clear (`encryption = "none"`).
    pub fn plain() -> Session {
        Session { sealer: Sealer { key: None, scratch: Vec::new() }, opener: Opener { key: None } }
    }

    /// A session with the given direction keys.
    ///
    /// # Errors
    /// If `ring` refuses a key (it does not for 32-byte keys).
    pub fn new(encryption: Encryption, send: &[u8; 32], receive: &[u8; 32]) -> Result<Session, WireError> {
        Ok(Session {
            sealer: Sealer { key: DirectionKey::new(encryption, send)?, scratch: Vec::new() },
            opener: Opener { key: DirectionKey::new(encryption, receive)? },
        })
    }

    /// The session of the relayed link from `me` to `peer` in run `run`: keys derived from the
    /// job key, the run and each ordered pair.
    ///
    /// # Errors
    /// As for [`Session::new`].
    pub fn relay(
        encryption: Encryption,
        key: &JobKey,
        run: u64,
        me: u32,
        peer: u32,
    ) -> Result<Session, WireError> {
        Session::new(encryption, &key.relay_key(run, me, peer), &key.relay_key(run, peer, me))
    }

    /// True when frames are sealed.
    pub fn is_sealed(&self) -> bool {
        self.sealer.key.is_some()
    }
}

/// Directory named by `UPDRAFT_CAPTURE_FRAMES`, if set, in debug builds only: every frame
/// written (at most [`CAPTURE_MAX`] per process) is also saved there in the clear, one file
/// each, as [`write_frame`] would put it on an unsealed link. Real traffic for the fuzz
/// corpora (see `fuzz/README.md`); release builds ignore it, so it cannot leak data.
pub const CAPTURE_ENV: &str = "UPDRAFT_CAPTURE_FRAMES";

/// Most frames captured per process.
pub const CAPTURE_MAX: u64 = 2000;

fn capture(job: u64, frame: &OutFrame) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static DIR: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(dir) = DIR.get_or_init(|| std::env::var_os(CAPTURE_ENV).map(Into::into)) else { return };
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    if n >= CAPTURE_MAX {
        return;
    }
    if let Ok(bytes) = updraft_runtime::wire::frame_bytes(job, frame) {
        let name = dir.join(format!("{}-{n:05}.frame", std::process::id()));
        if let Err(e) = std::fs::write(&name, bytes) {
            tracing::debug!(%e, path = %name.display(), "frame not captured");
        }
    }
}

impl Sealer {
    /// Writes `frame` of job `job`; with `tamper`, one bit in the middle of what goes on the
    /// wire is flipped after sealing (fault injection). Returns the bytes written.
    ///
    /// # Errors
    /// I/O errors; a frame too large for a 32-bit record length.
    pub async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        job: u64,
        frame: &OutFrame,
        tamper: bool,
    ) -> Result<u64, WireError> {
        capture(job, frame);
        let Some(key) = &mut self.key else {
            if !tamper {
                return write_frame(w, job, frame).await;
            }
            let mut bytes = Vec::with_capacity(frame.body.len() + 64);
            let n = write_frame(&mut bytes, job, frame).await?;
            flip_middle_bit(&mut bytes[4 + HEADER_LEN..]);
            w.write_all(&bytes).await?;
            return Ok(n);
        };
        let head = encode_header(job, frame, 0, RECORD_OVERHEAD as u32)?;
        let body_len = frame.body.len();
        let length = (HEADER_LEN + body_len + TAG_LEN) as u32;
        let length = length.to_le_bytes();
        let scratch = &mut self.scratch;
        scratch.clear();
        scratch.reserve(HEADER_LEN + body_len);
        scratch.extend_from_slice(&head);
        match &frame.body {
            OutBody::Buffers(bufs) => bufs.iter().for_each(|b| scratch.extend_from_slice(b.as_slice())),
            OutBody::Bytes(b) => scratch.extend_from_slice(b),
        }
        let (_, nonce) = key.nonce()?;
        let tag = key
            .key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(length), scratch)
            .map_err(|_| WireError::Encode("sealing a record failed".into()))?;
        if tamper {
            flip_middle_bit(&mut scratch[HEADER_LEN..]);
        }
        w.write_all(&length).await?;
        w.write_all(scratch).await?;
        w.write_all(tag.as_ref()).await?;
        // Large scratch buffers are not kept between frames.
        if scratch.capacity() > 4 * 1024 * 1024 {
            *scratch = Vec::new();
        }
        Ok((RECORD_OVERHEAD + HEADER_LEN + body_len) as u64)
    }
}

fn flip_middle_bit(bytes: &mut [u8]) {
    let at = bytes.len() / 2;
    if let Some(b) = bytes.get_mut(at) {
        *b ^= 0x10;
    }
}

impl Opener {
    /// Bytes a frame with a body of `body` bytes took on the wire.
    pub fn wire_len(&self, body: usize) -> u64 {
        let tag = if self.key.is_some() { TAG_LEN } else { 0 };
        (4 + HEADER_LEN + body + tag) as u64
    }

    /// Reads one frame. `Ok(None)`: the stream ended between frames.
    ///
    /// # Errors
    /// I/O errors and truncation; a record that fails authentication
    /// ([`WireError::Unauthentic`]); every check of [`read_frame`] on what it holds.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        limits: WireLimits,
    ) -> Result<Option<InFrame>, WireError> {
        let Some(key) = &mut self.key else { return read_frame(r, limits).await };
        let mut len = [0u8; 4];
        match r.read(&mut len[..1]).await? {
            0 => return Ok(None),
            _ => read_exact(r, &mut len[1..]).await?,
        }
        let length = u32::from_le_bytes(len) as usize;
        let Some(body_len) = length.checked_sub(HEADER_LEN + TAG_LEN) else {
            return Err(WireError::BadHeader(format!(
                "record length {length} is shorter than a sealed header"
            )));
        };
        if body_len as u64 > u64::from(limits.max_body) {
            return Err(WireError::TooLarge { len: body_len as u64, max: limits.max_body });
        }
        let mut buf = MutableBuffer::from_len_zeroed(PLAINTEXT_AT + length);
        let record = &mut buf.as_slice_mut()[PLAINTEXT_AT..];
        read_exact(r, record).await?;
        let (counter, nonce) = key.nonce()?;
        let plain = key
            .key
            .open_in_place(nonce, aead::Aad::from(len), record)
            .map_err(|_| WireError::Unauthentic { record: counter })?;
        let (header, kind) = check_header(&plain[..HEADER_LEN], body_len as u64, limits)?;
        let body = arrow_buffer::Buffer::from(buf).slice_with_length(PLAINTEXT_AT + HEADER_LEN, body_len);
        Ok(Some(InFrame { kind, channel: header.channel, seq: header.seq, body }))
    }
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), WireError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(WireError::Truncated),
        Err(e) => Err(WireError::Io(e)),
    }
}

/// Largest Noise message (`e` plus a tag; payloads are empty).
const NOISE_MESSAGE: usize = 128;

/// One side of the link key exchange (see the module docs).
pub struct KeyExchange {
    state: snow::HandshakeState,
    encryption: Encryption,
}

/// Who the two sides of a fresh connection are, as their hellos said.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    /// Job hash.
    pub job: u64,
    /// The run, from the rendezvous.
    pub run: u64,
    /// World size.
    pub world: u32,
    /// This side's rank and hello nonce.
    pub me: (u32, [u8; 16]),
    /// The peer's rank and hello nonce.
    pub peer: (u32, [u8; 16]),
}

impl KeyExchange {
    /// Starts the exchange for `binding`: the lower rank is the initiator.
    ///
    /// # Errors
    /// If `snow` cannot build the state (it does not for these fixed parameters).
    pub fn new(key: &JobKey, encryption: Encryption, binding: &Binding) -> Result<KeyExchange, String> {
        let params = match encryption {
            Encryption::ChaCha20Poly1305 => "Noise_NNpsk0_25519_ChaChaPoly_SHA256",
            Encryption::Aes256Gcm | Encryption::None => "Noise_NNpsk0_25519_AESGCM_SHA256",
        };
        let params: snow::params::NoiseParams =
            params.parse().map_err(|e| format!("noise parameters: {e}"))?;
        let (low, high) = if binding.me.0 < binding.peer.0 {
            (binding.me, binding.peer)
        } else {
            (binding.peer, binding.me)
        };
        let mut prologue = Vec::with_capacity(96);
        prologue.extend_from_slice(b"updraft/link/v3");
        prologue.extend_from_slice(&binding.job.to_le_bytes());
        prologue.extend_from_slice(&binding.run.to_le_bytes());
        prologue.extend_from_slice(&binding.world.to_le_bytes());
        prologue.extend_from_slice(&low.0.to_le_bytes());
        prologue.extend_from_slice(&high.0.to_le_bytes());
        prologue.extend_from_slice(&low.1);
        prologue.extend_from_slice(&high.1);
        prologue.extend_from_slice(encryption.name().as_bytes());
        let psk = key.link_psk(binding.run);
        let builder = snow::Builder::new(params)
            .psk(0, &psk)
            .and_then(|b| b.prologue(&prologue))
            .map_err(|e| format!("noise: {e}"))?;
        let initiator = binding.me.0 < binding.peer.0;
        let state = if initiator { builder.build_initiator() } else { builder.build_responder() }
            .map_err(|e| format!("noise: {e}"))?;
        Ok(KeyExchange { state, encryption })
    }

    /// True when this side sends the first message.
    pub fn is_initiator(&self) -> bool {
        self.state.is_initiator()
    }

    /// This side's next message.
    ///
    /// # Errors
    /// Out of turn.
    pub fn write(&mut self) -> Result<Vec<u8>, String> {
        let mut out = vec![0u8; NOISE_MESSAGE];
        let n = self.state.write_message(&[], &mut out).map_err(|e| format!("noise: {e}"))?;
        out.truncate(n);
        Ok(out)
    }

    /// Reads the peer's message.
    ///
    /// # Errors
    /// The message does not authenticate (another job key or run, another connection, altered)
    /// or is malformed.
    pub fn read(&mut self, message: &[u8]) -> Result<(), String> {
        let mut payload = [0u8; NOISE_MESSAGE];
        if message.len() > NOISE_MESSAGE {
            return Err(format!("a key-exchange message of {} bytes", message.len()));
        }
        self.state.read_message(message, &mut payload).map(|_| ()).map_err(|e| format!("{e}"))
    }

    /// The link's session, once both messages are through.
    ///
    /// # Errors
    /// The exchange is not finished.
    pub fn finish(mut self) -> Result<Session, String> {
        if !self.state.is_handshake_finished() {
            return Err("key exchange not finished".into());
        }
        if self.encryption == Encryption::None {
            return Ok(Session::plain());
        }
        // Noise's Split: the first key protects initiator → responder.
        let (to_responder, to_initiator) = self.state.dangerously_get_raw_split();
        let (send, receive) = if self.state.is_initiator() {
            (to_responder, to_initiator)
        } else {
            (to_initiator, to_responder)
        };
        Session::new(self.encryption, &send, &receive).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use updraft_runtime::wire::Control;
    use updraft_runtime::wire::FrameKind;

    const LIMITS: WireLimits = WireLimits { job: 9, max_body: 1 << 20 };

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime")
    }

    fn data(n: usize, seq: u64) -> OutFrame {
        OutFrame {
            kind: FrameKind::Data,
            channel: 3,
            seq,
            body: OutBody::Bytes(Bytes::from(
                (0..n).map(|i| (i * 7 + seq as usize) as u8).collect::<Vec<_>>(),
            )),
        }
    }

    fn pair(encryption: Encryption) -> (Session, Session) {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        (
            Session::new(encryption, &a, &b).expect("session"),
            Session::new(encryption, &b, &a).expect("session"),
        )
    }

    async fn sealed(s: &mut Session, frames: &[OutFrame]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for f in frames {
            let mut bytes = Vec::new();
            s.sealer.write(&mut bytes, 9, f, false).await.expect("write");
            out.push(bytes);
        }
        out
    }

    #[test]
    fn records_round_trip_aligned_and_hide_the_body() {
        rt().block_on(async {
            for enc in [Encryption::Aes256Gcm, Encryption::ChaCha20Poly1305] {
                let (mut a, mut b) = pair(enc);
                let frames =
                    [data(1000, 0), data(0, 1), OutFrame::control(3, 2, &Control::Ping).expect("ping")];
                let wire = sealed(&mut a, &frames).await;
                let OutBody::Bytes(first) = &frames[0].body else { unreachable!() };
                assert!(!wire[0].windows(16).any(|w| w == &first[100..116]), "the body is not in the clear");
                let all: Vec<u8> = wire.concat();
                let mut r = all.as_slice();
                for f in &frames {
                    let got = b.opener.read(&mut r, LIMITS).await.expect("read").expect("frame");
                    assert_eq!((got.kind, got.channel, got.seq), (f.kind, f.channel, f.seq));
                    let OutBody::Bytes(want) = &f.body else { unreachable!() };
                    assert_eq!(got.body.as_slice(), &want[..]);
                    assert_eq!(got.body.as_ptr() as usize % 64, 0, "body aligned for Arrow");
                }
                assert!(b.opener.read(&mut r, LIMITS).await.expect("eof").is_none());
            }
        });
    }

    #[test]
    fn altered_replayed_reordered_dropped_and_foreign_records_are_refused() {
        rt().block_on(async {
            let frames: Vec<OutFrame> = (0..3).map(|i| data(200, i)).collect();
            let (mut a, _) = pair(Encryption::Aes256Gcm);
            let wire = sealed(&mut a, &frames).await;
            let refused = |bytes: Vec<u8>, skip: usize| async move {
                let (_, mut b) = pair(Encryption::Aes256Gcm);
                let mut r = bytes.as_slice();
                for _ in 0..skip {
                    b.opener.read(&mut r, LIMITS).await.expect("read").expect("frame");
                }
                b.opener.read(&mut r, LIMITS).await
            };
            let mut flipped = wire[0].clone();
            flipped[150] ^= 1;
            assert!(matches!(refused(flipped, 0).await, Err(WireError::Unauthentic { record: 0 })));
            let replayed = [wire[0].clone(), wire[0].clone()].concat();
            assert!(matches!(refused(replayed, 1).await, Err(WireError::Unauthentic { record: 1 })));
            let reordered = [wire[1].clone(), wire[0].clone()].concat();
            assert!(matches!(refused(reordered, 0).await, Err(WireError::Unauthentic { record: 0 })));
            let dropped = [wire[0].clone(), wire[2].clone()].concat();
            assert!(matches!(refused(dropped, 1).await, Err(WireError::Unauthentic { record: 1 })));
            // Another connection's keys.
            let (mut other, _) = {
                let (x, y) = ([5u8; 32], [6u8; 32]);
                (Session::new(Encryption::Aes256Gcm, &x, &y).expect("s"), ())
            };
            let foreign = sealed(&mut other, &frames[..1]).await.concat();
            assert!(matches!(refused(foreign, 0).await, Err(WireError::Unauthentic { record: 0 })));
            // A length that lies.
            let mut short = wire[0].clone();
            short[..4].copy_from_slice(&10u32.to_le_bytes());
            assert!(matches!(refused(short, 0).await, Err(WireError::BadHeader(_))));
            let mut huge = wire[0].clone();
            huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
            assert!(matches!(refused(huge, 0).await, Err(WireError::TooLarge { .. })));
            let cut = wire[0][..wire[0].len() - 1].to_vec();
            assert!(matches!(refused(cut, 0).await, Err(WireError::Truncated)));
        });
    }

    #[test]
    fn relay_sessions_are_per_run_and_direction() {
        rt().block_on(async {
            let key = JobKey::derive(b"s", "j");
            let mut a = Session::relay(Encryption::Aes256Gcm, &key, 7, 0, 1).expect("a");
            let wire = sealed(&mut a, &[data(64, 0)]).await.concat();
            let try_open = |mut s: Session, bytes: Vec<u8>| async move {
                s.opener.read(&mut bytes.as_slice(), LIMITS).await.map(|f| f.is_some())
            };
            let b = Session::relay(Encryption::Aes256Gcm, &key, 7, 1, 0).expect("b");
            assert!(try_open(b, wire.clone()).await.expect("the peer opens it"));
            let next_run = Session::relay(Encryption::Aes256Gcm, &key, 8, 1, 0).expect("b");
            assert!(try_open(next_run, wire.clone()).await.is_err(), "another run's keys");
            let reflected = Session::relay(Encryption::Aes256Gcm, &key, 7, 0, 1).expect("a");
            assert!(try_open(reflected, wire.clone()).await.is_err(), "the other direction's key");
            let third = Session::relay(Encryption::Aes256Gcm, &key, 7, 2, 0).expect("c");
            assert!(try_open(third, wire).await.is_err(), "another pair's key");
        });
    }

    fn exchange(
        a: (&JobKey, u64),
        b: (&JobKey, u64),
        nonces: ([u8; 16], [u8; 16]),
    ) -> Result<(Session, Session), String> {
        let bind = |me: u32, run: u64| Binding {
            job: 1,
            run,
            world: 4,
            me: (me, if me == 0 { nonces.0 } else { nonces.1 }),
            peer: (1 - me, if me == 0 { nonces.1 } else { nonces.0 }),
        };
        let mut low = KeyExchange::new(a.0, Encryption::Aes256Gcm, &bind(0, a.1))?;
        let mut high = KeyExchange::new(b.0, Encryption::Aes256Gcm, &bind(1, b.1))?;
        assert!(low.is_initiator() && !high.is_initiator());
        high.read(&low.write()?)?;
        low.read(&high.write()?)?;
        Ok((low.finish()?, high.finish()?))
    }

    #[test]
    fn the_key_exchange_needs_the_job_key_and_run_and_gives_working_sessions() {
        rt().block_on(async {
            let key = JobKey::derive(b"s", "j");
            let n = ([1u8; 16], [2u8; 16]);
            let (mut low, mut high) = exchange((&key, 5), (&key, 5), n).expect("exchange");
            let wire = sealed(&mut low, &[data(10, 0)]).await.concat();
            assert!(high.opener.read(&mut wire.as_slice(), LIMITS).await.expect("open").is_some());
            let wrong = JobKey::derive(b"other", "j");
            assert!(exchange((&key, 5), (&wrong, 5), n).is_err());
            assert!(exchange((&key, 5), (&key, 6), n).is_err());
        });
    }

    #[test]
    fn a_first_message_replayed_on_another_connection_is_refused() {
        let key = JobKey::derive(b"s", "j");
        let bind = |me: u32, high_nonce: [u8; 16]| Binding {
            job: 1,
            run: 5,
            world: 2,
            me: (me, if me == 0 { [1; 16] } else { high_nonce }),
            peer: (1 - me, if me == 0 { high_nonce } else { [1; 16] }),
        };
        let mut low = KeyExchange::new(&key, Encryption::Aes256Gcm, &bind(0, [2; 16])).expect("low");
        let first = low.write().expect("write");
        let mut fresh = KeyExchange::new(&key, Encryption::Aes256Gcm, &bind(1, [3; 16])).expect("high");
        assert!(fresh.read(&first).is_err(), "bound to the hellos of its own connection");
    }
}
