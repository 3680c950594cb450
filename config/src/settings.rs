//! Runtime settings: deadlines, credit and batch sizes. Read from a pipeline's `[runtime]` table;
//! anything left out takes its value from [`crate::defaults`].

use std::time::Duration;

use crate::defaults;
use crate::reader::Table;

/// Deadlines and sizes a worker runs with. Passed explicitly; there is no global config.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeSettings {
    /// Rows per batch made by sources.
    pub batch_rows: usize,
    /// Credit per channel in bytes.
    pub channel_credit: u64,
    /// Largest frame body accepted, in bytes.
    pub max_frame: u64,
    /// Deadline for making all links.
    pub mesh_timeout: Duration,
    /// Pause before retrying a punch target whose address pair our own connection holds.
    pub punch_attempt: Duration,
    /// Deadline for a link's handshake.
    pub handshake_timeout: Duration,
    /// Deadline for the rendezvous answer.
    pub rendezvous_timeout: Duration,
    /// Silence after which a peer is lost.
    pub peer_timeout: Duration,
    /// Heartbeat interval on idle links.
    pub heartbeat: Duration,
    /// Deadline for the whole job.
    pub job_timeout: Duration,
    /// Writer queue length per link, in frames.
    pub link_queue_frames: usize,
    /// Which channel each pair of workers uses.
    pub channel: ChannelPolicy,
    /// Redis server for the Redis relay, e.g. `redis://127.0.0.1:6379/`.
    pub redis: Option<String>,
    /// Bucket and key prefix for the S3 relay, e.g. `s3://bucket/relay/`.
    pub s3_relay: Option<String>,
    /// How frames are protected on every link (direct and relayed).
    pub encryption: Encryption,
    /// Bytes the operators of one worker may hold (tables, sort buffers, collected join
    /// sides) before they spill to disk; `None`: [`defaults::MEMORY_FRACTION`] of the memory
    /// the machine, cgroup or function gives the worker's process, shared by the workers on
    /// that machine.
    pub memory_limit: Option<u64>,
    /// Directory operators spill to; `None`: the system's temporary directory (`TMPDIR`, else
    /// `/tmp`, which is the writable disk of a Lambda function).
    pub spill_dir: Option<String>,
}

/// How links protect their frames. Every link is authenticated by a key exchange bound to the
/// job secret whatever the choice; this picks what protects the frames after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    /// AES-256-GCM records (hardware-accelerated on x86-64 and ARMv8): the default.
    #[default]
    Aes256Gcm,
    /// ChaCha20-Poly1305 records, for CPUs without AES instructions.
    ChaCha20Poly1305,
    /// Frames in the clear, checked by CRC only: for networks where every host is trusted.
    /// Anyone on the path can read and rewrite the job's data; job summaries say so.
    None,
}

impl Encryption {
    /// The name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Encryption::Aes256Gcm => "aes-256-gcm",
            Encryption::ChaCha20Poly1305 => "chacha20-poly1305",
            Encryption::None => "none",
        }
    }

    /// Every accepted name, in the order configs list them.
    pub const NAMES: &'static [&'static str] = &["aes-256-gcm", "chacha20-poly1305", "none"];

    /// The setting called `name`, if any.
    pub fn from_name(name: &str) -> Option<Encryption> {
        [Encryption::Aes256Gcm, Encryption::ChaCha20Poly1305, Encryption::None]
            .into_iter()
            .find(|e| e.name() == name)
    }
}

/// How pairs of workers are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelPolicy {
    /// A punched TCP link; pairs not punched by `mesh_timeout` use a relay when one is
    /// configured (Redis first, then S3), and the job fails otherwise.
    Auto,
    /// Punched TCP links only.
    Direct,
    /// Every pair through the Redis relay (no punching).
    Redis,
    /// Every pair through the S3 relay (no punching).
    S3,
}

impl ChannelPolicy {
    /// The name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            ChannelPolicy::Auto => "auto",
            ChannelPolicy::Direct => "direct",
            ChannelPolicy::Redis => "redis",
            ChannelPolicy::S3 => "s3",
        }
    }
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            batch_rows: defaults::BATCH_ROWS,
            channel_credit: defaults::CHANNEL_CREDIT,
            max_frame: defaults::MAX_FRAME,
            mesh_timeout: defaults::MESH_TIMEOUT,
            punch_attempt: defaults::PUNCH_ATTEMPT,
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            rendezvous_timeout: defaults::RENDEZVOUS_TIMEOUT,
            peer_timeout: defaults::PEER_TIMEOUT,
            heartbeat: defaults::HEARTBEAT,
            job_timeout: defaults::JOB_TIMEOUT,
            link_queue_frames: defaults::LINK_QUEUE_FRAMES,
            channel: ChannelPolicy::Auto,
            redis: None,
            s3_relay: None,
            encryption: Encryption::default(),
            memory_limit: None,
            spill_dir: None,
        }
    }
}

const KEYS: &[&str] = &[
    "batch_rows",
    "channel_credit",
    "max_frame",
    "mesh_timeout",
    "punch_attempt",
    "handshake_timeout",
    "rendezvous_timeout",
    "peer_timeout",
    "heartbeat",
    "job_timeout",
    "link_queue_frames",
    "channel",
    "redis",
    "s3_relay",
    "encryption",
    "memory_limit",
    "spill_dir",
];

impl RuntimeSettings {
    pub(crate) fn read(t: &Table<'_, '_>) -> RuntimeSettings {
        let d = RuntimeSettings::default();
        let limits = |key: &str| -> u64 {
            match key {
                "batch_rows" => defaults::MAX_BATCH_ROWS,
                "link_queue_frames" => defaults::MAX_LINK_QUEUE_FRAMES,
                "memory_limit" => defaults::MAX_MEMORY_LIMIT,
                _ => defaults::MAX_SIZE,
            }
        };
        let positive = |key: &str, v: Option<u64>| -> Option<u64> {
            match v {
                Some(0) => {
                    t.error(key, "must be greater than zero");
                    None
                }
                Some(v) if v > limits(key) => {
                    t.error(key, format!("must be at most {}", limits(key)));
                    None
                }
                other => other,
            }
        };
        let nonzero = |key: &str, v: Option<Duration>| -> Option<Duration> {
            match v {
                Some(d) if d.is_zero() => {
                    t.error(key, "must be longer than zero");
                    None
                }
                Some(d) if d > defaults::MAX_DURATION => {
                    t.error(key, format!("must be at most {:?} (a week)", defaults::MAX_DURATION));
                    None
                }
                other => other,
            }
        };
        let s = RuntimeSettings {
            batch_rows: positive("batch_rows", t.opt_u64("batch_rows")).map_or(d.batch_rows, |v| v as usize),
            channel_credit: positive("channel_credit", t.opt_bytes("channel_credit"))
                .unwrap_or(d.channel_credit),
            max_frame: positive("max_frame", t.opt_bytes("max_frame")).unwrap_or(d.max_frame),
            mesh_timeout: nonzero("mesh_timeout", t.opt_duration("mesh_timeout")).unwrap_or(d.mesh_timeout),
            punch_attempt: nonzero("punch_attempt", t.opt_duration("punch_attempt"))
                .unwrap_or(d.punch_attempt),
            handshake_timeout: nonzero("handshake_timeout", t.opt_duration("handshake_timeout"))
                .unwrap_or(d.handshake_timeout),
            rendezvous_timeout: nonzero("rendezvous_timeout", t.opt_duration("rendezvous_timeout"))
                .unwrap_or(d.rendezvous_timeout),
            peer_timeout: nonzero("peer_timeout", t.opt_duration("peer_timeout")).unwrap_or(d.peer_timeout),
            heartbeat: nonzero("heartbeat", t.opt_duration("heartbeat")).unwrap_or(d.heartbeat),
            job_timeout: nonzero("job_timeout", t.opt_duration("job_timeout")).unwrap_or(d.job_timeout),
            link_queue_frames: positive("link_queue_frames", t.opt_u64("link_queue_frames"))
                .map_or(d.link_queue_frames, |v| v as usize),
            channel: match t.opt_str("channel").as_deref() {
                None | Some("auto") => ChannelPolicy::Auto,
                Some("direct") => ChannelPolicy::Direct,
                Some("redis") => ChannelPolicy::Redis,
                Some("s3") => ChannelPolicy::S3,
                Some(other) => {
                    t.error(
                        "channel",
                        format!("unknown channel `{other}`; expected one of: auto, direct, redis, s3"),
                    );
                    d.channel
                }
            },
            redis: t.opt_str("redis"),
            s3_relay: t.opt_str("s3_relay"),
            memory_limit: positive("memory_limit", t.opt_bytes("memory_limit")),
            spill_dir: t.opt_str("spill_dir"),
            encryption: match t.opt_str("encryption") {
                None => d.encryption,
                Some(name) => Encryption::from_name(&name).unwrap_or_else(|| {
                    t.error(
                        "encryption",
                        format!(
                            "unknown encryption `{name}`; expected one of: {}",
                            Encryption::NAMES.join(", ")
                        ),
                    );
                    d.encryption
                }),
            },
        };
        if let Some(url) = &s.redis
            && !(url.starts_with("redis://") || url.starts_with("unix://"))
        {
            t.error("redis", "must be a redis://HOST:PORT/ URL");
        }
        if let Some(url) = &s.s3_relay
            && !url.strip_prefix("s3://").is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        {
            t.error("s3_relay", "must be an s3://BUCKET/PREFIX URL");
        }
        if s.channel == ChannelPolicy::Redis && s.redis.is_none() {
            t.error("channel", "channel = \"redis\" needs `redis`, the server's URL");
        }
        if s.channel == ChannelPolicy::S3 && s.s3_relay.is_none() {
            t.error("channel", "channel = \"s3\" needs `s3_relay`, e.g. \"s3://bucket/relay/\"");
        }
        if s.heartbeat >= s.peer_timeout {
            t.error("heartbeat", "must be shorter than `peer_timeout`, or live peers would be declared lost");
        }
        if s.max_frame > u32::MAX as u64 {
            t.error("max_frame", "must be below 4GiB (frame lengths are 32-bit)");
        }
        s
    }

    pub(crate) fn keys() -> &'static [&'static str] {
        KEYS
    }
}
