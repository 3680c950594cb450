//! Rendezvous messages, carried as control frames of the worker wire format.

use rkyv::rancor;
use updraft_runtime::ids::job_hash;
use updraft_runtime::wire::{FrameKind, InFrame, OutBody, OutFrame, WireError, WireLimits};

/// Job hash used on rendezvous connections (they are not yet part of a job).
pub fn rendezvous_job_hash() -> u64 {
    job_hash("updraft/rendezvous/v1")
}

/// Limits for frames read by the server: a registration is small.
pub fn server_limits() -> WireLimits {
    WireLimits {
        job: rendezvous_job_hash(),
        max_body: crate::rendezvous::metrics::MAX_SNAPSHOT as u32 + 4096,
    }
}

/// Limits for frames read by a worker: a peer table of thousands of ranks fits.
pub fn client_limits() -> WireLimits {
    WireLimits { job: rendezvous_job_hash(), max_body: 16 * 1024 * 1024 }
}

/// One rank's addresses in the peer table.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PeerEntry {
    /// The rank.
    pub rank: u32,
    /// Address the rendezvous saw (the NAT binding), `ip:port`.
    pub public: String,
    /// Address the worker registered (its own socket's address), `ip:port`.
    pub private: String,
}

/// Messages between a worker and the rendezvous.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum RendezvousMsg {
    /// Worker → server.
    Register {
        /// Job id.
        job: String,
        /// The worker's rank.
        rank: u32,
        /// Number of workers.
        world: u32,
        /// The worker's local address (`getsockname` of this connection).
        private: String,
        /// MAC with the job key over the fields above.
        mac: [u8; 32],
    },
    /// Server → worker: every rank's addresses, in rank order.
    Peers {
        /// The table, all ranks including the receiver.
        peers: Vec<PeerEntry>,
    },
    /// Worker → server: the worker's metrics, Prometheus text exposition; no answer.
    Metrics {
        /// Job id.
        job: String,
        /// The worker's rank.
        rank: u32,
        /// The exposition.
        text: String,
        /// MAC with the job key over job, rank and text.
        mac: [u8; 32],
    },
    /// Server → worker: registration refused or expired.
    Refused {
        /// Why.
        reason: String,
    },
}

impl RendezvousMsg {
    /// As a frame.
    ///
    /// # Errors
    /// If rkyv fails.
    pub fn to_frame(&self) -> Result<OutFrame, WireError> {
        let bytes = rkyv::to_bytes::<rancor::Error>(self).map_err(|e| WireError::Encode(e.to_string()))?;
        Ok(OutFrame {
            kind: FrameKind::Control,
            channel: 0,
            seq: 0,
            body: OutBody::Bytes(bytes.into_vec().into()),
        })
    }

    /// From a frame, validated.
    ///
    /// # Errors
    /// If the frame is not a valid rendezvous message.
    pub fn from_frame(frame: &InFrame) -> Result<RendezvousMsg, WireError> {
        if frame.kind != FrameKind::Control {
            return Err(WireError::BadControl("rendezvous frames are control frames".into()));
        }
        rkyv::from_bytes::<RendezvousMsg, rancor::Error>(frame.body.as_slice())
            .map_err(|e| WireError::BadControl(e.to_string()))
    }
}
