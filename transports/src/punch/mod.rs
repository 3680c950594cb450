//! TCP hole punching of the whole mesh at once.
//!
//! ```text
//!  worker A (port Pa)                                          worker B (port Pb)
//!    │ listen on Pa (SO_REUSEPORT)                                │ listen on Pb
//!    │ connect Pa → B.public (+ B.private behind the same NAT)    │ connect Pb → A.public (+ ...)
//!    │   first SYN opens A's NAT for B; B's SYN then passes it:  │
//!    │   (each connect stays open until the mesh deadline)       │
//!    │◀══════════════ one TCP connection (simultaneous open, or connect+accept) ═══════▶│
//!    │ Hello{rank, world, nonce} ⇄ Hello  (in the clear)           │
//!    │ lower: Noise NNpsk0 `psk, e` ─────────────────────────────▶ │ (psk from the job key and run;
//!    │ ◀──────────────────────────────────────────── `e, ee` :higher│  prologue binds both hellos)
//!    │ lower rank: sealed Decision{keep} ─────────────────────────▶ │ (the first authenticated
//!    │ ◀─────────────────────────────────────────── sealed Confirm  │  connection wins, others dropped)
//! ```
//!
//! All peers are punched concurrently, so set-up takes about as long as the slowest pair, not
//! the sum. Every wait has a deadline: pairs not linked by the mesh deadline are reported by
//! rank, with the attempts made.
//!
//! A connect attempt is never abandoned before the mesh deadline. Of two SYNs of a pair, the
//! later one always passes the other side's NAT (the earlier one opened it), so two live
//! attempts need nothing more. Abandoning an attempt to fire a fresh one (a new initial
//! sequence number on the same address pair) left, at 64 NATed workers, half-open connections
//! on the peer's listener answering the old sequence number; NATs drop those answers as out of
//! window, and the pair stayed stuck for the minute the half-open connection lives. A failed
//! attempt is retried: after 20 ms when refused, after `punch_attempt` when our own connection
//! to that peer holds the address pair (`EADDRNOTAVAIL`).

pub mod handshake;
pub mod mesh;
pub mod schedule;

pub use mesh::{Connection, Mesh, MeshConfig, PairStats, PunchError, punch_mesh};
pub use schedule::{Failure, PunchSchedule};
