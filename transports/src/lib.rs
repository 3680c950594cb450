//! updraft's links between workers.
//!
//! - [`rendezvous`]: the small server every worker registers with, and its client. The server
//!   records the public address it sees for each worker and, once a job's ranks are all in,
//!   sends each the peer table.
//! - [`punch`]: TCP hole punching of the whole mesh at once, from the port registered at the
//!   rendezvous, then an authenticated hello that settles one link per pair.
//! - [`link`]: the reader and writer tasks that own a connected socket or a relay direction.
//! - [`local`]: several workers' transports in one process over one channel (tests, benchmarks).
//! - [`relay`]: Redis and S3 relays for pairs that are not punched (or are forced off TCP).
//! - [`s3env`]: the S3 client configured from the environment.
//! - [`transport`]: the transport actor, which owns every link of a worker and routes frames
//!   between links and operator actors.
//!
//! Protocol logic is kept apart from I/O where it has state: [`rendezvous::state`] and
//! [`punch::schedule`] are plain state machines driven with explicit time, tested without
//! sockets.

pub mod admission;
pub mod auth;
#[doc(hidden)]
pub mod fuzzing;
pub mod link;
pub mod local;
pub mod punch;
pub mod relay;
pub mod rendezvous;
pub mod s3env;
pub mod secure;
pub mod sock;
pub mod transport;

pub use auth::JobKey;
pub use transport::{Endpoint, InjectLinkFault, Shutdown, TransportActor};
