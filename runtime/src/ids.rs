//! Identifiers shared by every worker of a job.

/// A worker's index in the job, `0..world`.
pub type Rank = u32;

/// One edge of the physical plan (producer stage → consumer stage input). Edges are numbered
/// the same way on every worker, so the id doubles as the channel id on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeId(pub u32);

impl std::fmt::Display for EdgeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "edge {}", self.0)
    }
}

/// A 64-bit digest of the job id, carried in every frame header so that frames of another job
/// (a stale connection, a stranger) are refused.
pub fn job_hash(job_id: &str) -> u64 {
    // FNV-1a: stable across builds and platforms, which is all this needs.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in job_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
