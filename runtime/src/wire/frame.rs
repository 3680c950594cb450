//! Frame header, limits, and reading/writing whole frames on an async byte stream.

use arrow_buffer::{Buffer, MutableBuffer};
use bytes::Bytes;
use rkyv::rancor;
use rkyv::util::AlignedVec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// `"UPDF"`: the first header field; anything else is not our protocol.
pub const MAGIC: u32 = 0x5550_4446;
/// Wire format version; a peer with another version is refused.
pub const VERSION: u16 = 3;
/// Size of the archived [`FrameHeader`] in bytes (checked by a unit test).
pub const HEADER_LEN: usize = 40;

/// What a frame body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum FrameKind {
    /// Arrow IPC stream messages (schema, dictionaries, record batch) of one channel.
    Data = 1,
    /// An rkyv [`crate::wire::Control`].
    Control = 2,
}

/// The fixed frame header, archived with rkyv (little-endian, aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FrameHeader {
    /// [`MAGIC`].
    pub magic: u32,
    /// [`VERSION`].
    pub version: u16,
    /// [`FrameKind`] as a number.
    pub kind: u16,
    /// Channel (plan edge) for data, credit and end frames; 0 otherwise.
    pub channel: u32,
    /// Body length in bytes.
    pub body_len: u32,
    /// [`crate::ids::job_hash`] of the job.
    pub job: u64,
    /// Per-channel sequence number of data and end frames.
    pub seq: u64,
    /// CRC-32C of the body.
    pub checksum: u32,
    /// Zero.
    pub reserved: u32,
}

/// Limits applied to every frame read.
#[derive(Debug, Clone, Copy)]
pub struct WireLimits {
    /// Frames of another job are refused.
    pub job: u64,
    /// Largest body accepted.
    pub max_body: u32,
}

/// Why a frame could not be read, written or understood.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The header failed validation.
    #[error("bad frame header: {0}")]
    BadHeader(String),
    /// The body length is above the limit.
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// Limit.
        max: u32,
    },
    /// The body does not match its checksum.
    #[error("frame checksum mismatch on channel {channel} (seq {seq})")]
    Checksum {
        /// Channel of the frame.
        channel: u32,
        /// Sequence number of the frame.
        seq: u64,
    },
    /// A sealed record that does not open under the link's key: altered, replayed, reordered,
    /// dropped (the next one fails), or from another connection.
    #[error(
        "record {record} failed authentication: altered, replayed, reordered, dropped or from another connection"
    )]
    Unauthentic {
        /// The record's number on the link (counted from zero in each direction).
        record: u64,
    },
    /// A frame of another job.
    #[error("frame belongs to another job (hash {got:#x}, expected {expected:#x})")]
    WrongJob {
        /// Job hash in the frame.
        got: u64,
        /// Ours.
        expected: u64,
    },
    /// A control body that is not a valid archived message.
    #[error("bad control message: {0}")]
    BadControl(String),
    /// Serialisation failed.
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// A frame to send. The writer fills in job, length and checksum.
#[derive(Debug, Clone)]
pub struct OutFrame {
    /// Data or control.
    pub kind: FrameKind,
    /// Channel (plan edge id) or 0.
    pub channel: u32,
    /// Sequence number on the channel, or 0.
    pub seq: u64,
    /// The body.
    pub body: OutBody,
}

/// A frame body: Arrow buffers written as they are (no concatenation), or plain bytes.
#[derive(Debug, Clone)]
pub enum OutBody {
    /// Arrow IPC stream messages, as made by `StreamEncoder`.
    Buffers(Vec<Buffer>),
    /// Encoded control message.
    Bytes(Bytes),
}

impl OutBody {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            OutBody::Buffers(b) => b.iter().map(|b| b.len()).sum(),
            OutBody::Bytes(b) => b.len(),
        }
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// CRC-32C of the bytes.
    pub fn checksum(&self) -> u32 {
        match self {
            OutBody::Buffers(bufs) => bufs.iter().fold(0, |crc, b| crc32c::crc32c_append(crc, b.as_slice())),
            OutBody::Bytes(b) => crc32c::crc32c(b),
        }
    }
}

impl OutFrame {
    /// A control frame on `channel`.
    ///
    /// # Errors
    /// If the message cannot be encoded.
    pub fn control(channel: u32, seq: u64, msg: &crate::wire::Control) -> Result<OutFrame, WireError> {
        Ok(OutFrame {
            kind: FrameKind::Control,
            channel,
            seq,
            body: OutBody::Bytes(crate::wire::encode_control(msg)?),
        })
    }
}

/// A frame received: header fields and a 64-byte aligned body.
#[derive(Debug, Clone)]
pub struct InFrame {
    /// Data or control.
    pub kind: FrameKind,
    /// Channel or 0.
    pub channel: u32,
    /// Sequence number.
    pub seq: u64,
    /// The body, aligned for zero-copy decoding.
    pub body: Buffer,
}

/// The archived header of `frame` for job `job`, with `checksum` (the body's CRC-32C, or 0
/// where an AEAD protects the frame instead). `room` bytes of framing around the header and
/// body must still fit a 32-bit length.
///
/// # Errors
/// [`WireError::TooLarge`] if the body does not fit; [`WireError::Encode`] if rkyv fails.
pub fn encode_header(
    job: u64,
    frame: &OutFrame,
    checksum: u32,
    room: u32,
) -> Result<[u8; HEADER_LEN], WireError> {
    let body_len = frame.body.len();
    let max_body = u32::MAX - HEADER_LEN as u32 - room;
    let body_len = u32::try_from(body_len)
        .ok()
        .filter(|n| *n <= max_body)
        .ok_or(WireError::TooLarge { len: body_len as u64, max: max_body })?;
    let header = FrameHeader {
        magic: MAGIC,
        version: VERSION,
        kind: frame.kind as u16,
        channel: frame.channel,
        body_len,
        job,
        seq: frame.seq,
        checksum,
        reserved: 0,
    };
    let head = rkyv::to_bytes::<rancor::Error>(&header).map_err(|e| WireError::Encode(e.to_string()))?;
    <[u8; HEADER_LEN]>::try_from(head.as_slice()).map_err(|_| {
        WireError::Encode(format!("header archived to {} bytes, expected {HEADER_LEN}", head.len()))
    })
}

/// Validates a received header: `head` is its [`HEADER_LEN`] bytes, `body_len` how many body
/// bytes the framing around it holds. Returns the header and its kind.
///
/// # Errors
/// [`WireError::BadHeader`] (not ours, another version, lengths that disagree, unknown kind),
/// [`WireError::WrongJob`].
pub fn check_header(
    head: &[u8],
    body_len: u64,
    limits: WireLimits,
) -> Result<(FrameHeader, FrameKind), WireError> {
    let mut aligned = AlignedVec::<16>::with_capacity(HEADER_LEN);
    aligned.extend_from_slice(head);
    let header = rkyv::access::<ArchivedFrameHeader, rancor::Error>(&aligned)
        .map_err(|e| WireError::BadHeader(e.to_string()))?;
    let header: FrameHeader = rkyv::deserialize::<FrameHeader, rancor::Error>(header)
        .map_err(|e| WireError::BadHeader(e.to_string()))?;
    if header.magic != MAGIC {
        return Err(WireError::BadHeader(format!("magic {:#x} is not updraft's", header.magic)));
    }
    if header.version != VERSION {
        return Err(WireError::BadHeader(format!(
            "wire version {} (this build speaks {VERSION})",
            header.version
        )));
    }
    if u64::from(header.body_len) != body_len {
        return Err(WireError::BadHeader(format!(
            "body length {} disagrees with the frame's length ({body_len} body bytes)",
            header.body_len
        )));
    }
    if header.job != limits.job {
        return Err(WireError::WrongJob { got: header.job, expected: limits.job });
    }
    let kind = match header.kind {
        1 => FrameKind::Data,
        2 => FrameKind::Control,
        k => return Err(WireError::BadHeader(format!("unknown frame kind {k}"))),
    };
    Ok((header, kind))
}

/// The bytes [`write_frame`] puts on the wire for `frame`, in one buffer.
///
/// # Errors
/// As for [`encode_header`].
pub fn frame_bytes(job: u64, frame: &OutFrame) -> Result<Vec<u8>, WireError> {
    let head = encode_header(job, frame, frame.body.checksum(), 0)?;
    let mut out = Vec::with_capacity(4 + HEADER_LEN + frame.body.len());
    out.extend_from_slice(&((HEADER_LEN + frame.body.len()) as u32).to_le_bytes());
    out.extend_from_slice(&head);
    match &frame.body {
        OutBody::Buffers(bufs) => bufs.iter().for_each(|b| out.extend_from_slice(b.as_slice())),
        OutBody::Bytes(b) => out.extend_from_slice(b),
    }
    Ok(out)
}

/// Writes one frame. Returns the number of bytes put on the wire.
///
/// # Errors
/// I/O errors, or a body longer than 4 GiB.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    job: u64,
    frame: &OutFrame,
) -> Result<u64, WireError> {
    let body_len = frame.body.len();
    let head = encode_header(job, frame, frame.body.checksum(), 0)?;
    let total = (HEADER_LEN + body_len) as u32;
    w.write_all(&total.to_le_bytes()).await?;
    w.write_all(&head).await?;
    match &frame.body {
        OutBody::Buffers(bufs) => {
            for b in bufs {
                w.write_all(b.as_slice()).await?;
            }
        }
        OutBody::Bytes(b) => w.write_all(b).await?,
    }
    Ok((4 + HEADER_LEN + body_len) as u64)
}

/// Reads one frame. `Ok(None)` means the stream ended cleanly between frames.
///
/// # Errors
/// I/O errors, truncation, and every validation failure listed in [`WireError`].
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: WireLimits,
) -> Result<Option<InFrame>, WireError> {
    let mut len = [0u8; 4];
    match r.read(&mut len[..1]).await? {
        0 => return Ok(None),
        _ => read_exact(r, &mut len[1..]).await?,
    }
    let total = u32::from_le_bytes(len) as u64;
    if total < HEADER_LEN as u64 {
        return Err(WireError::BadHeader(format!("frame length {total} is shorter than the header")));
    }
    if total - HEADER_LEN as u64 > u64::from(limits.max_body) {
        return Err(WireError::TooLarge { len: total - HEADER_LEN as u64, max: limits.max_body });
    }
    let mut head = [0u8; HEADER_LEN];
    read_exact(r, &mut head).await?;
    let (header, kind) = check_header(&head, total - HEADER_LEN as u64, limits)?;
    let mut body = MutableBuffer::from_len_zeroed(header.body_len as usize);
    read_exact(r, body.as_slice_mut()).await?;
    if crc32c::crc32c(body.as_slice()) != header.checksum {
        return Err(WireError::Checksum { channel: header.channel, seq: header.seq });
    }
    Ok(Some(InFrame { kind, channel: header.channel, seq: header.seq, body: body.into() }))
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), WireError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(WireError::Truncated),
        Err(e) => Err(WireError::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Control, decode_control};

    const LIMITS: WireLimits = WireLimits { job: 7, max_body: 1 << 20 };

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime")
    }

    #[test]
    fn header_has_the_documented_size() {
        let h = FrameHeader {
            magic: MAGIC,
            version: VERSION,
            kind: 1,
            channel: 0,
            body_len: 0,
            job: 0,
            seq: 0,
            checksum: 0,
            reserved: 0,
        };
        let bytes = rkyv::to_bytes::<rancor::Error>(&h).expect("archive");
        assert_eq!(bytes.len(), HEADER_LEN);
    }

    #[test]
    fn control_frames_round_trip() {
        rt().block_on(async {
            let msg = Control::End { batches: 3, rows: 99 };
            let frame = OutFrame::control(5, 4, &msg).expect("encode");
            let mut wire = Vec::new();
            let n = write_frame(&mut wire, 7, &frame).await.expect("write");
            assert_eq!(n as usize, wire.len());
            let got = read_frame(&mut wire.as_slice(), LIMITS).await.expect("read").expect("a frame");
            assert_eq!((got.kind, got.channel, got.seq), (FrameKind::Control, 5, 4));
            assert_eq!(decode_control(got.body.as_slice()).expect("decode"), msg);
            assert!(read_frame(&mut &wire[wire.len()..], LIMITS).await.expect("eof").is_none());
        });
    }

    #[test]
    fn corruption_and_limits_are_detected() {
        rt().block_on(async {
            let frame = OutFrame {
                kind: FrameKind::Data,
                channel: 1,
                seq: 0,
                body: OutBody::Bytes(Bytes::from(vec![1u8; 100])),
            };
            let mut wire = Vec::new();
            write_frame(&mut wire, 7, &frame).await.expect("write");

            let mut flipped = wire.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 0xff;
            assert!(matches!(
                read_frame(&mut flipped.as_slice(), LIMITS).await,
                Err(WireError::Checksum { channel: 1, .. })
            ));

            let other_job = WireLimits { job: 8, ..LIMITS };
            assert!(matches!(
                read_frame(&mut wire.as_slice(), other_job).await,
                Err(WireError::WrongJob { got: 7, .. })
            ));

            let small = WireLimits { max_body: 50, ..LIMITS };
            assert!(matches!(
                read_frame(&mut wire.as_slice(), small).await,
                Err(WireError::TooLarge { len: 100, .. })
            ));

            assert!(matches!(read_frame(&mut &wire[..30], LIMITS).await, Err(WireError::Truncated)));

            let mut garbage = wire.clone();
            garbage[4] ^= 0x55; // inside the magic
            assert!(matches!(
                read_frame(&mut garbage.as_slice(), LIMITS).await,
                Err(WireError::BadHeader(_))
            ));
        });
    }

    #[test]
    fn garbage_control_bodies_are_refused() {
        let mut body = MutableBuffer::from_len_zeroed(24);
        body.as_slice_mut().copy_from_slice(&[0xAB; 24]);
        let body: Buffer = body.into();
        assert!(decode_control(body.as_slice()).is_err());
    }
}
