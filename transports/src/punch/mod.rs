//! TCP hole punching of the whole mesh at once.
//!
//! ```text
//!  worker A (port Pa)                                          worker B (port Pb)
//!    │ listen on Pa (SO_REUSEPORT)                                │ listen on Pb
//!    │ connect Pa → B.public, B.private (every `punch_attempt`)   │ connect Pb → A.public, A.private
//!    │   first SYN opens A's NAT for B; B's SYN then passes it:  │
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

pub mod handshake;
pub mod mesh;
pub mod schedule;

pub use mesh::{Connection, Mesh, MeshConfig, PairStats, PunchError, punch_mesh};
pub use schedule::PunchSchedule;
