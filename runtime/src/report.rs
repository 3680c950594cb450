//! What a worker reports when its part of a job is done, and how rank 0 combines the reports of
//! all workers into the job's report. Reports travel in `Control::Done` (rkyv) and are printed
//! as JSON (serde).

use serde::{Deserialize, Serialize};

use crate::plan::Phase;

/// Row count and order-independent checksums of a table. Checksums are wrapping sums of per-row
/// hashes, so partial summaries from any number of workers add up to the summary of the whole.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct TableSummary {
    /// Rows seen.
    pub rows: u64,
    /// Sum over rows of a hash of the whole row (ties columns together).
    pub row_checksum: u64,
    /// Sum over rows of a hash of each column's value, in column order.
    pub columns: Vec<ColumnChecksum>,
}

/// The checksum of one column.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ColumnChecksum {
    /// Column name.
    pub name: String,
    /// Wrapping sum of value hashes.
    pub checksum: u64,
}

impl TableSummary {
    /// Adds another partial summary of the same table. A summary with no columns (a worker that
    /// never saw a schema) adopts the other's columns.
    pub fn merge(&mut self, other: &TableSummary) {
        self.rows += other.rows;
        self.row_checksum = self.row_checksum.wrapping_add(other.row_checksum);
        if self.columns.is_empty() {
            self.columns = other.columns.clone();
        } else {
            for (mine, theirs) in self.columns.iter_mut().zip(&other.columns) {
                mine.checksum = mine.checksum.wrapping_add(theirs.checksum);
            }
        }
    }
}

/// Counters and times of one operator on one worker.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct OperatorStats {
    /// Stage name.
    pub name: String,
    /// Phase it is accounted to.
    pub phase: Phase,
    /// Rows received.
    pub rows_in: u64,
    /// Rows emitted.
    pub rows_out: u64,
    /// Batches received.
    pub batches_in: u64,
    /// Time spent inside the operator's code, in µs.
    pub busy_us: u64,
    /// When the operator finished, in µs since the worker started.
    pub end_us: u64,
}

/// A sink's result on one worker (or, in a [`JobReport`], on all).
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct SinkResult {
    /// Sink name.
    pub name: String,
    /// What went into it.
    pub summary: TableSummary,
}

/// One worker's report.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct WorkerReport {
    /// The worker's rank.
    pub rank: u32,
    /// Rendezvous plus punching, in µs.
    pub setup_us: u64,
    /// Punching alone (peer table to every link), in µs.
    pub mesh_us: u64,
    /// Connect attempts made while punching.
    pub punch_attempts: u64,
    /// From worker start to its operators all finished, in µs.
    pub wall_us: u64,
    /// Per operator.
    pub operators: Vec<OperatorStats>,
    /// Per sink.
    pub sinks: Vec<SinkResult>,
    /// Bytes written to links (frames, headers included).
    pub bytes_sent: u64,
    /// Bytes read from links.
    pub bytes_received: u64,
    /// The channel to each peer.
    #[serde(default)]
    pub channels: Vec<PeerChannel>,
    /// Bytes written to links, by channel (only channels used).
    #[serde(default)]
    pub bytes_sent_by_channel: Vec<ChannelBytes>,
    /// Peak resident set of the worker process during the job, in bytes (0 where the system
    /// does not report it).
    #[serde(default)]
    pub peak_rss_bytes: u64,
    /// Most bytes the operators held against `runtime.memory_limit` at once.
    #[serde(default)]
    pub memory_peak_bytes: u64,
    /// Bytes written to spill files.
    #[serde(default)]
    pub spilled_bytes: u64,
    /// Spill files written.
    #[serde(default)]
    pub spill_files: u64,
    /// Data frames written to links (every channel).
    #[serde(default)]
    pub data_frames_sent: u64,
}

/// Bytes one worker wrote over one channel.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ChannelBytes {
    /// `direct`, `redis` or `s3`.
    pub channel: String,
    /// Bytes, frames and headers included.
    pub bytes: u64,
}

/// Which channel a worker used for one peer.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct PeerChannel {
    /// The peer's rank.
    pub peer: u32,
    /// `direct`, `redis` or `s3`.
    pub channel: String,
}

/// One row of the per-phase timing table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRow {
    /// The phase.
    pub phase: Phase,
    /// Largest per-worker busy time, in µs (the phase's critical path when it does not overlap).
    pub busy_max_us: u64,
    /// Mean per-worker busy time, in µs.
    pub busy_mean_us: u64,
    /// When the last worker finished the phase, in µs since worker start.
    pub end_max_us: u64,
}

/// The combined report of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    /// Job name.
    pub job: String,
    /// Number of workers.
    pub world: u32,
    /// Slowest worker's wall time, in µs.
    pub wall_us: u64,
    /// Slowest worker's set-up time, in µs.
    pub setup_us: u64,
    /// Slowest worker's punching time, in µs.
    pub mesh_us: u64,
    /// Connect attempts over all workers.
    pub punch_attempts: u64,
    /// Sinks, merged over workers.
    pub sinks: Vec<SinkResult>,
    /// The phase table.
    pub phases: Vec<PhaseRow>,
    /// Total bytes sent over links by all workers.
    pub bytes_sent: u64,
    /// Every worker's own report, by rank.
    pub workers: Vec<WorkerReport>,
    /// How links protected their frames (`runtime.encryption`: `aes-256-gcm`,
    /// `chacha20-poly1305` or `none`).
    #[serde(default)]
    pub encryption: String,
}

/// Pairs per channel name, e.g. `[("direct", 5), ("redis", 1)]`.
pub type ChannelCounts = Vec<(String, u32)>;

/// Relayed pairs: (lower rank, higher rank, channel).
pub type RelayedPairs = Vec<(u32, u32, String)>;

impl JobReport {
    /// Pairs per channel, each pair once (as its lower rank saw it), and the relayed pairs.
    pub fn pairs_by_channel(&self) -> (ChannelCounts, RelayedPairs) {
        let mut counts: std::collections::BTreeMap<String, u32> = std::collections::BTreeMap::new();
        let mut relayed = Vec::new();
        for w in &self.workers {
            for c in w.channels.iter().filter(|c| c.peer > w.rank) {
                *counts.entry(c.channel.clone()).or_default() += 1;
                if c.channel != "direct" {
                    relayed.push((w.rank, c.peer, c.channel.clone()));
                }
            }
        }
        (counts.into_iter().collect(), relayed)
    }
}

impl JobReport {
    /// Combines the reports of all ranks (in any order).
    pub fn combine(job: &str, mut workers: Vec<WorkerReport>) -> JobReport {
        workers.sort_by_key(|w| w.rank);
        let world = workers.len() as u32;
        let mut sinks: Vec<SinkResult> = Vec::new();
        for w in &workers {
            for s in &w.sinks {
                match sinks.iter_mut().find(|m| m.name == s.name) {
                    Some(m) => m.summary.merge(&s.summary),
                    None => sinks.push(s.clone()),
                }
            }
        }
        let mut phases = vec![PhaseRow {
            phase: Phase::Setup,
            busy_max_us: workers.iter().map(|w| w.setup_us).max().unwrap_or(0),
            busy_mean_us: mean(workers.iter().map(|w| w.setup_us)),
            end_max_us: workers.iter().map(|w| w.setup_us).max().unwrap_or(0),
        }];
        for phase in [Phase::Read, Phase::Shuffle, Phase::Join, Phase::Aggregate, Phase::Write, Phase::Other]
        {
            let busy: Vec<u64> = workers
                .iter()
                .map(|w| w.operators.iter().filter(|o| o.phase == phase).map(|o| o.busy_us).sum())
                .collect();
            let ends = workers
                .iter()
                .flat_map(|w| w.operators.iter().filter(|o| o.phase == phase).map(|o| o.end_us));
            let present = workers.iter().any(|w| w.operators.iter().any(|o| o.phase == phase));
            if present {
                phases.push(PhaseRow {
                    phase,
                    busy_max_us: busy.iter().copied().max().unwrap_or(0),
                    busy_mean_us: mean(busy.iter().copied()),
                    end_max_us: ends.max().unwrap_or(0),
                });
            }
        }
        JobReport {
            job: job.to_string(),
            world,
            wall_us: workers.iter().map(|w| w.wall_us).max().unwrap_or(0),
            setup_us: workers.iter().map(|w| w.setup_us).max().unwrap_or(0),
            mesh_us: workers.iter().map(|w| w.mesh_us).max().unwrap_or(0),
            punch_attempts: workers.iter().map(|w| w.punch_attempts).sum(),
            sinks,
            phases,
            bytes_sent: workers.iter().map(|w| w.bytes_sent).sum(),
            workers,
            encryption: String::new(),
        }
    }
}

fn mean(values: impl Iterator<Item = u64>) -> u64 {
    let (sum, n) = values.fold((0u128, 0u128), |(s, n), v| (s + u128::from(v), n + 1));
    sum.checked_div(n).map_or(0, |m| m as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(rows: u64, row: u64, col: u64) -> TableSummary {
        TableSummary {
            rows,
            row_checksum: row,
            columns: vec![ColumnChecksum { name: "k".into(), checksum: col }],
        }
    }

    #[test]
    fn summaries_add_up_and_wrap() {
        let mut a = summary(2, u64::MAX, 5);
        a.merge(&summary(3, 2, 6));
        assert_eq!(a, summary(5, 1, 11));
        let mut empty = TableSummary::default();
        empty.merge(&summary(1, 1, 1));
        assert_eq!(empty, summary(1, 1, 1));
    }

    #[test]
    fn job_report_merges_sinks_and_phases() {
        let w = |rank, busy| WorkerReport {
            rank,
            setup_us: 10 + u64::from(rank),
            mesh_us: 5,
            punch_attempts: 1,
            wall_us: 100 * u64::from(rank + 1),
            operators: vec![OperatorStats {
                name: "j".into(),
                phase: Phase::Join,
                rows_in: 1,
                rows_out: 1,
                batches_in: 1,
                busy_us: busy,
                end_us: busy + 1,
            }],
            sinks: vec![SinkResult { name: "s".into(), summary: summary(u64::from(rank), 1, 1) }],
            bytes_sent: 3,
            bytes_received: 3,
            channels: Vec::new(),
            bytes_sent_by_channel: Vec::new(),
            ..WorkerReport::default()
        };
        let r = JobReport::combine("job", vec![w(1, 40), w(0, 20)]);
        assert_eq!(r.world, 2);
        assert_eq!(r.wall_us, 200);
        assert_eq!(r.setup_us, 11);
        assert_eq!(r.sinks[0].summary, summary(1, 2, 2));
        let join = r.phases.iter().find(|p| p.phase == Phase::Join).expect("join row");
        assert_eq!((join.busy_max_us, join.busy_mean_us, join.end_max_us), (40, 30, 41));
        assert_eq!(r.workers[0].rank, 0);
        assert_eq!(r.bytes_sent, 6);
    }
}
