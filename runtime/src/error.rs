//! Typed errors at the runtime's boundary, and the classes of failure they fall in.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{EdgeId, Rank};

/// What kind of failure ended a job: who is at fault, and whether running the job again (with
/// fresh workers) can help. Launchers retry only retryable classes; Lambda reports the class as
/// the function error's type (`UpdraftError.<name>`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum FailureClass {
    /// The pipeline or its inputs are wrong: a bad setting, a missing file, files that
    /// disagree, workers given different pipelines. Fix the input.
    Config,
    /// An operator refused the data: a value that does not parse, an integer overflow.
    Data,
    /// An operator panicked or broke its contract: a bug in it.
    Operator,
    /// A peer was lost, a link failed, went silent or carried a damaged frame.
    Link,
    /// The rendezvous could not be reached or did not answer in time.
    Rendezvous,
    /// The job (or a function) ran out of time.
    Timeout,
    /// A service the job uses (S3, Redis) could not be reached or failed on its side.
    Unavailable,
    /// Every rank finished but outputs could not be published.
    Commit,
    /// The worker was told to stop: its launcher went away, or a signal.
    Cancelled,
    /// An operator needed more memory than `runtime.memory_limit` leaves and could not spill:
    /// raise the limit, or give the job more workers.
    ResourcesExhausted,
}

impl FailureClass {
    /// Whether a fresh run of the job may succeed where this one failed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            FailureClass::Link | FailureClass::Rendezvous | FailureClass::Timeout | FailureClass::Unavailable
        )
    }

    /// The class of a [`FailureClass::name`].
    pub fn from_name(name: &str) -> Option<FailureClass> {
        [
            FailureClass::Config,
            FailureClass::Data,
            FailureClass::Operator,
            FailureClass::Link,
            FailureClass::Rendezvous,
            FailureClass::Timeout,
            FailureClass::Unavailable,
            FailureClass::Commit,
            FailureClass::Cancelled,
            FailureClass::ResourcesExhausted,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }

    /// A short stable name (`Config`, `Link`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FailureClass::Config => "Config",
            FailureClass::Data => "Data",
            FailureClass::Operator => "Operator",
            FailureClass::Link => "Link",
            FailureClass::Rendezvous => "Rendezvous",
            FailureClass::Timeout => "Timeout",
            FailureClass::Unavailable => "Unavailable",
            FailureClass::Commit => "Commit",
            FailureClass::Cancelled => "Cancelled",
            FailureClass::ResourcesExhausted => "ResourcesExhausted",
        }
    }
}

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
    /// The worker's memory budget cannot hold what the operator must keep.
    #[error("{0}")]
    ResourcesExhausted(#[from] crate::memory::ResourcesExhausted),
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
        /// Data (it refused the data), Operator (it panicked), Unavailable (a service it uses).
        class: FailureClass,
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
        /// The class of its failure.
        class: FailureClass,
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
    /// The worker was told to stop.
    #[error("stopped: {0}")]
    Cancelled(String),
}

impl OperatorError {
    /// The class of a job failed by this error.
    pub fn class(&self) -> FailureClass {
        match self {
            OperatorError::Invalid(_) | OperatorError::Arrow(_) => FailureClass::Data,
            OperatorError::Unavailable(_) | OperatorError::Io { .. } => FailureClass::Unavailable,
            OperatorError::ResourcesExhausted(_) => FailureClass::ResourcesExhausted,
        }
    }
}

impl JobError {
    /// The class of this failure.
    pub fn class(&self) -> FailureClass {
        match self {
            JobError::Operator { class, .. } | JobError::PeerAborted { class, .. } => *class,
            JobError::PeerLost { .. } | JobError::Protocol { .. } | JobError::Transport(_) => {
                FailureClass::Link
            }
            JobError::Timeout { .. } => FailureClass::Timeout,
            JobError::Plan(_) => FailureClass::Config,
            JobError::Commit { .. } => FailureClass::Commit,
            JobError::Cancelled(_) => FailureClass::Cancelled,
        }
    }
}
