//! The rendezvous: where workers of a job find each other.
//!
//! ```text
//!  worker r (port P) ──Register{job, rank, world, private, mac}──▶ rendezvous
//!                                             (records the public address it sees: NAT binding)
//!  ... once all `world` ranks of the job are in ...
//!  worker r ◀──Peers[{rank, public, private}; world]── rendezvous      (then the connection ends)
//! ```
//!
//! A wrong MAC, a rank outside the world, or a world that disagrees with the job's is refused
//! with a reason. A rank that registers again replaces its earlier entry (a restarted worker).
//! A job whose ranks do not all arrive within the TTL expires, and the waiting workers are told
//! which ranks never came. Every step has a deadline on both sides.

pub mod client;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod state;

pub use client::{PeerAddr, Registered, Registration, RendezvousError, push_metrics, register};
pub use metrics::MetricsStore;
pub use protocol::{PeerEntry, RendezvousMsg};
pub use server::{RendezvousServer, ServerConfig};
pub use state::RendezvousState;
