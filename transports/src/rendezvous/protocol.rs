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

/// One line of a worker's plan fingerprint: a key path of what it will run (the pipeline's
/// keys, updraft's version and build, the wire version, the registered operators) and a hash
/// of its value. Ranks whose lines differ would compute different things; the rendezvous
/// refuses such a job, naming the first path where they differ.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PlanLine {
    /// Key path, e.g. `operator.totals.aggregate.m`.
    pub path: String,
    /// The first 8 bytes of the SHA-256 of the value (as text).
    pub hash: u64,
}

impl PlanLine {
    /// The line for `path` = `value`.
    pub fn new(path: &str, value: &str) -> PlanLine {
        use sha2::Digest;
        let d = sha2::Sha256::digest(value.as_bytes());
        let mut h = [0u8; 8];
        h.copy_from_slice(&d[..8]);
        PlanLine { path: path.to_string(), hash: u64::from_le_bytes(h) }
    }
}

/// A digest of a whole plan fingerprint (its lines in order).
pub fn plan_digest(lines: &[PlanLine]) -> [u8; 32] {
    use sha2::Digest;
    let mut d = sha2::Sha256::new();
    for l in lines {
        d.update((l.path.len() as u64).to_le_bytes());
        d.update(l.path.as_bytes());
        d.update(l.hash.to_le_bytes());
    }
    d.finalize().into()
}

/// The first key path where two sorted fingerprints differ (present in one only, or with
/// another value), if any.
pub fn first_difference<'a>(a: &'a [PlanLine], b: &'a [PlanLine]) -> Option<&'a str> {
    let (mut i, mut j) = (0, 0);
    loop {
        match (a.get(i), b.get(j)) {
            (None, None) => return None,
            (Some(x), None) => return Some(&x.path),
            (None, Some(y)) => return Some(&y.path),
            (Some(x), Some(y)) => match x.path.cmp(&y.path) {
                std::cmp::Ordering::Less => return Some(&x.path),
                std::cmp::Ordering::Greater => return Some(&y.path),
                std::cmp::Ordering::Equal if x.hash != y.hash => return Some(&x.path),
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                }
            },
        }
    }
}

/// Messages between a worker and the rendezvous.
///
/// ```text
///  worker                                   rendezvous
///    │ connect ─────────────────────────────▶ │
///    │ ◀──────────────────── Challenge{nonce} │  fresh per connection
///    │ Register{.., nonce, MAC(challenge, nonce, fields)} ─▶ │  refused unless the MAC holds
///    │ ◀───── Peers{table, run, MAC(challenge, nonce, job, rank, reply)}  (or Refused, likewise)
/// ```
///
/// Every MAC is keyed with the job key, so a registration cannot be replayed on another
/// connection (its challenge differs) and a reply cannot be forged or moved to another
/// registration (it binds the worker's nonce).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum RendezvousMsg {
    /// Server → worker, first on every connection: the nonce the worker's MAC must cover.
    Challenge {
        /// Random per connection.
        nonce: [u8; 16],
    },
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
        /// What the worker will run, sorted by path (see [`PlanLine`]).
        plan: Vec<PlanLine>,
        /// How long the worker waits for the peer table, ms: the rendezvous expires the job
        /// just before, naming the ranks that never came.
        wait_ms: u64,
        /// The worker's random nonce: the reply's MAC covers it.
        nonce: [u8; 16],
        /// MAC with the job key over the server's challenge and the fields above (the plan
        /// through its digest).
        mac: [u8; 32],
    },
    /// Server → worker: every rank's addresses, in rank order.
    Peers {
        /// The table, all ranks including the receiver.
        peers: Vec<PeerEntry>,
        /// This run of the job: random, the same for every rank; names its temporary files
        /// and keys its links.
        run: u64,
        /// See [`RendezvousMsg::signed`].
        mac: [u8; 32],
    },
    /// Worker → server: the worker's metrics, Prometheus text exposition; no answer.
    Metrics {
        /// Job id.
        job: String,
        /// The worker's rank.
        rank: u32,
        /// The exposition.
        text: String,
        /// MAC with the job key over the server's challenge, job, rank and text.
        mac: [u8; 32],
    },
    /// Server → worker: registration refused or expired.
    Refused {
        /// The class of the failure, for the workers' reports (`Config` for what a rerun
        /// cannot fix, `Rendezvous` or `Link` for what it may).
        class: updraft_runtime::FailureClass,
        /// Why.
        reason: String,
        /// See [`RendezvousMsg::signed`]; zeros when the server could not tie the refusal to a
        /// registration (a malformed first message): the worker reports it as unauthenticated.
        mac: [u8; 32],
    },
}

/// What a reply's MAC binds it to: the registration it answers.
#[derive(Debug, Clone, Copy)]
pub struct ReplyBinding<'a> {
    /// The server's challenge on that connection.
    pub challenge: &'a [u8; 16],
    /// The worker's nonce.
    pub nonce: &'a [u8; 16],
    /// Job id.
    pub job: &'a str,
    /// Rank.
    pub rank: u32,
}

impl RendezvousMsg {
    /// A refusal, not yet signed.
    pub fn refused(reason: String, class: updraft_runtime::FailureClass) -> RendezvousMsg {
        RendezvousMsg::Refused { reason, class, mac: [0; 32] }
    }

    /// This reply with its MAC set: HMAC with the job key over the registration it answers and
    /// the reply's own archived bytes with the MAC zeroed. Other messages are returned as they
    /// are.
    ///
    /// # Errors
    /// If rkyv fails.
    pub fn signed(mut self, key: &crate::JobKey, to: ReplyBinding<'_>) -> Result<RendezvousMsg, WireError> {
        let mac = self.reply_mac(key, to)?;
        match &mut self {
            RendezvousMsg::Peers { mac: m, .. } | RendezvousMsg::Refused { mac: m, .. } => *m = mac,
            _ => {}
        }
        Ok(self)
    }

    /// Whether this reply's MAC is right for `to` (false for messages that are not replies).
    pub fn verify_reply(&self, key: &crate::JobKey, to: ReplyBinding<'_>) -> bool {
        let got = match self {
            RendezvousMsg::Peers { mac, .. } | RendezvousMsg::Refused { mac, .. } => *mac,
            _ => return false,
        };
        self.reply_mac(key, to).is_ok_and(|want| crate::auth::equal(&want, &got))
    }

    fn reply_mac(&self, key: &crate::JobKey, to: ReplyBinding<'_>) -> Result<[u8; 32], WireError> {
        let mut unsigned = self.clone();
        if let RendezvousMsg::Peers { mac, .. } | RendezvousMsg::Refused { mac, .. } = &mut unsigned {
            *mac = [0; 32];
        }
        let bytes =
            rkyv::to_bytes::<rancor::Error>(&unsigned).map_err(|e| WireError::Encode(e.to_string()))?;
        Ok(key.reply_mac(to.challenge, to.nonce, to.job, to.rank, &bytes))
    }

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
