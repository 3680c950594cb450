//! TCP hole punching of the whole mesh at once.
//!
//! ```text
//!  worker A (port Pa)                                          worker B (port Pb)
//!    │ listen on Pa (SO_REUSEPORT)                                │ listen on Pb
//!    │ connect Pa → B.public, B.private (every `punch_attempt`)   │ connect Pb → A.public, A.private
//!    │   first SYN opens A's NAT for B; B's SYN then passes it:  │
//!    │◀══════════════ one TCP connection (simultaneous open, or connect+accept) ═══════▶│
//!    │ Hello{rank, world, nonce} ⇄ Hello                           │
//!    │ Proof{HMAC(key, me, peer, my nonce, peer nonce)} ⇄ Proof    │
//!    │ lower rank: Decision{keep} ──────────────────────────────▶ │ (the first authenticated
//!    │                                                             │  connection wins, others dropped)
//! ```
//!
//! All peers are punched concurrently, so set-up takes about as long as the slowest pair, not
//! the sum. Every wait has a deadline: pairs not linked by the mesh deadline are reported by
//! rank, with the attempts made.

pub mod handshake;
pub mod mesh;
pub mod schedule;

pub use mesh::{Mesh, MeshConfig, PairStats, PunchError, punch_mesh};
pub use schedule::PunchSchedule;
