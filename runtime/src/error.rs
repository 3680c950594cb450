//! Typed errors at the runtime's boundary.

use std::time::Duration;

use crate::ids::{EdgeId, Rank};

/// An operator failed. Operators return this from their callbacks.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// Bad input data or parameters, with what and where.
    #[error("{0}")]
    Invalid(String),
    /// A service the operator depends on (S3, a credential provider) could not be reached, or
    /// failed on its side: the input itself may be fine, and a later attempt may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// File or other I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (names the file).
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Why a job failed on this worker.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// An operator failed.
    #[error("operator `{stage}` failed on rank {rank}: {error}")]
    Operator {
        /// Stage name.
        stage: String,
        /// Where.
        rank: Rank,
        /// What.
        error: String,
    },
    /// A link to a peer broke or went silent.
    #[error("lost rank {peer}: {error}")]
    PeerLost {
        /// The peer.
        peer: Rank,
        /// What happened on the link.
        error: String,
    },
    /// A peer failed and told us.
    #[error("rank {peer} aborted the job: {reason}")]
    PeerAborted {
        /// The peer.
        peer: Rank,
        /// Its reason.
        reason: String,
    },
    /// Data on a channel broke the protocol (sequence gap, counts that do not add up).
    #[error("protocol violation on {edge} from rank {peer}: {detail}")]
    Protocol {
        /// Channel.
        edge: EdgeId,
        /// Sender.
        peer: Rank,
        /// What was wrong.
        detail: String,
    },
    /// The job did not finish in time.
    #[error("job did not finish within {limit:?} ({waiting})")]
    Timeout {
        /// The deadline.
        limit: Duration,
        /// What was still outstanding.
        waiting: String,
    },
    /// Every rank finished, but the outputs of a rank could not be published.
    #[error("the outputs of rank {rank} could not be committed: {error}")]
    Commit {
        /// The rank.
        rank: Rank,
        /// What failed.
        error: String,
    },
    /// The plan cannot run.
    #[error("invalid plan: {0}")]
    Plan(String),
    /// The transport is gone.
    #[error("transport stopped: {0}")]
    Transport(String),
}
