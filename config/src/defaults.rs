//! Every default in one place, with its unit and the assumption behind it.

use std::time::Duration;

/// Rows per batch made by sources. The benchmark tables have 16 bytes a row, so a batch is
/// about 1 MiB: large enough to amortise per-batch costs, small enough to keep a pipeline busy.
pub const BATCH_ROWS: usize = 65_536;

/// Credit per channel (one producer, one consumer, one edge), in bytes. Eight 1 MiB batches in
/// flight keep a loopback link (about 1.5 GiB/s) busy across a consumer pause of a few ms, and
/// 64 workers × 2 edges × 8 MiB stays well below a 10 GB function.
pub const CHANNEL_CREDIT: u64 = 8 * 1024 * 1024;

/// Largest frame body accepted from the network, in bytes. A bigger length means a corrupt or
/// hostile stream; senders split batches well below it.
pub const MAX_FRAME: u64 = 256 * 1024 * 1024;

/// Deadline for making every link of the mesh (all pairs punched at once).
pub const MESH_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause before a punch target is tried again when our own connection to that peer (accepted,
/// still being authenticated) holds the address pair (see `transports/src/punch/mod.rs`: a
/// connect attempt itself stays open until the mesh deadline); 250 ms is a few RTTs on a
/// continent, time for that connection's handshake to finish.
pub const PUNCH_ATTEMPT: Duration = Duration::from_millis(250);

/// Deadline for the hello/proof/decision exchange on a fresh connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a worker waits for the rendezvous to answer with the peer table (all ranks must
/// register within it: it covers process start-up skew, which is seconds on Lambda).
pub const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(30);

/// Silence on a link after which the peer is declared lost. Heartbeats keep live links loud.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// Interval between heartbeats on an otherwise idle link.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// Deadline for the whole job on one worker, set-up included.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(600);

/// Frames a link's writer queue holds before the transport keeps further frames aside (those
/// are bounded by credit).
pub const LINK_QUEUE_FRAMES: usize = 1024;

/// How long a registration may wait at the rendezvous for the rest of its job before the whole
/// half-registered job is dropped.
pub const RENDEZVOUS_JOB_TTL: Duration = Duration::from_secs(60);

/// Rows of a CSV object (S3) looked at to infer column types when `infer_rows` is not set.
/// Local files are read whole for inference; an object is fetched whole too, but 100,000 rows
/// bound the time spent guessing types on a large one. A value of another type after them
/// fails the read, naming the file, line and column.
pub const CSV_INFER_ROWS: u64 = 100_000;

/// Most rows a batch may have. Batches are units of work and of credit: 16M rows of a few
/// columns is already hundreds of MiB, and larger values only overflow buffers.
pub const MAX_BATCH_ROWS: u64 = 1 << 24;

/// Most frames a link's writer queue may hold.
pub const MAX_LINK_QUEUE_FRAMES: u64 = 1 << 20;

/// Largest size setting (credit, frame), in bytes: 4 GiB (frame lengths are 32-bit).
pub const MAX_SIZE: u64 = 4 << 30;

/// Largest `runtime.memory_limit`: 1 TiB.
pub const MAX_MEMORY_LIMIT: u64 = 1 << 40;

/// Share of the memory a worker's process may use (the machine's, its cgroup's or its Lambda
/// function's, whichever is least, divided among the workers on that machine) that its
/// operators may hold by default. The rest covers what the budget does not count: the program,
/// batches in flight (up to `channel_credit` per channel) and allocator slack; at 64 workers
/// a 10 GB function keeps 3 GB for them.
pub const MEMORY_FRACTION: f64 = 0.7;

/// Longest duration setting: a week. Longer deadlines are mistakes (and overflow instants).
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
