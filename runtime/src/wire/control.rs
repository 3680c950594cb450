//! Control messages: everything on a link that is not table data.

use bytes::Bytes;
use rkyv::rancor;

use crate::report::WorkerReport;
use crate::wire::frame::WireError;

/// A control message. Channel-scoped ones (`Credit`, `End`) name their channel in the frame
/// header.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Control {
    /// First message on a fresh link, in the clear: who I am, and a fresh nonce that binds the
    /// key exchange to this connection.
    Hello {
        /// Sender's rank.
        rank: u32,
        /// Sender's world size.
        world: u32,
        /// Random per connection.
        nonce: [u8; 16],
    },
    /// A Noise handshake message (`NNpsk0`, the pre-shared key derived from the job key): the
    /// lower rank sends the first, the higher rank answers. See `updraft_transports::secure`.
    Handshake {
        /// The Noise message.
        noise: Vec<u8>,
    },
    /// Sent by the lower rank of a pair: keep this connection as the pair's link, or drop it
    /// (another connection already won).
    Decision {
        /// Keep or drop.
        keep: bool,
    },
    /// The higher rank accepts the lower rank's `Decision{keep: true}`: the link is made.
    Confirm,
    /// The consumer processed `bytes` of this channel's data: the producer may send that much
    /// more.
    Credit {
        /// Bytes returned.
        bytes: u64,
    },
    /// The producer will send nothing more on this channel; counts let the consumer check that
    /// nothing was lost.
    End {
        /// Data batches sent on the channel.
        batches: u64,
        /// Rows sent on the channel.
        rows: u64,
    },
    /// Heartbeat on an idle link.
    Ping,
    /// The sender failed; the job is over.
    Abort {
        /// Human-readable cause.
        reason: String,
        /// The class of the sender's failure (so every rank reports the root cause's class).
        class: crate::error::FailureClass,
    },
    /// The sender finished its part of the job (its sinks staged their outputs); it carries
    /// the sender's report.
    Done {
        /// The sender's report.
        report: WorkerReport,
    },
    /// The sender published its outputs (after every rank's `Done`), or could not.
    Committed {
        /// Why it could not, if it could not.
        error: Option<String>,
    },
}

/// Serialises a control message into a frame body.
///
/// # Errors
/// [`WireError::Encode`] if rkyv fails (it does not for these types, but it is fallible).
pub fn encode_control(msg: &Control) -> Result<Bytes, WireError> {
    rkyv::to_bytes::<rancor::Error>(msg)
        .map(|v| Bytes::from(v.into_vec()))
        .map_err(|e| WireError::Encode(e.to_string()))
}

/// Validates and deserialises a control body. `body` must be 16-byte aligned (receive buffers
/// are 64-byte aligned).
///
/// # Errors
/// [`WireError::BadControl`] if the bytes are not a valid archived [`Control`].
pub fn decode_control(body: &[u8]) -> Result<Control, WireError> {
    rkyv::from_bytes::<Control, rancor::Error>(body).map_err(|e| WireError::BadControl(e.to_string()))
}
