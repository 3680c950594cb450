//! Relay channels: the frames of a pair of workers through Redis or S3 instead of a punched
//! TCP link, for pairs that cannot be punched and for comparing channels on one job.
//!
//! A relay carries the same wire frames as a TCP link (length, header, body), several frames
//! per message when the writer has more queued. Each direction of each pair is one FIFO:
//!
//! | relay | one direction `from → to` | one message | end of stream |
//! |---|---|---|---|
//! | Redis | list `updraft:{job}:{from}:{to}` (RPUSH / BLPOP) | a list element | an empty element |
//! | S3 | objects `{prefix}{job}/{from}-{to}/{seq:016x}` | an object | an empty object |
//!
//! `{job}` names one run: the job hash and a hash of the peer table ([`run_key`]). The reader
//! deletes what it consumed (BLPOP removes the element; an S3 object is deleted once read). A
//! Redis list is capped ([`REDIS_MAX_ITEMS`] messages: the writer waits while it is full) and
//! expires [`KEY_TTL`] after its last write, so a crashed job leaves nothing for long. When a
//! job ends each worker deletes whatever is left of its incoming directions; S3 has no expiry,
//! so a bucket used as a relay wants a lifecycle rule for stray objects of crashed jobs. Every
//! request has a deadline. The Redis relay needs Redis 6 or newer (fractional BLPOP timeouts).

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use updraft_config::{ChannelPolicy, RuntimeSettings};

use crate::s3env::{client_from_env, count_get, count_put, describe, is_missing};

/// Messages a Redis list may hold before the writer waits.
pub const REDIS_MAX_ITEMS: usize = 64;

/// A relay key lives this long after its last write.
pub const KEY_TTL: Duration = Duration::from_secs(3600);

/// Longest pause between two polls of an S3 direction that had nothing new.
const S3_MAX_BACKOFF: Duration = Duration::from_millis(50);

/// The name of one run of a job in relay keys: the job hash and a hash of the run id (random
/// per run, from the rendezvous) and the whole peer table (every rank's public and private
/// address), which every worker of the run knows, so leftovers of an earlier run of the same
/// job are never read.
pub fn run_key(
    job_hash: u64,
    run: u64,
    me: u32,
    public: std::net::SocketAddr,
    private: std::net::SocketAddr,
    peers: &[crate::rendezvous::PeerAddr],
) -> String {
    let mut table: Vec<(u32, String)> =
        peers.iter().map(|p| (p.rank, format!("{}|{}", p.public, p.private))).collect();
    table.push((me, format!("{public}|{private}")));
    table.sort();
    let text: String = table.iter().map(|(r, a)| format!("{r}={a};")).collect();
    format!("{job_hash:016x}-{:016x}", updraft_runtime::ids::job_hash(&format!("{run:016x};{text}")))
}

/// Where a job's relay lives.
#[derive(Clone)]
pub enum Relay {
    /// A Redis server.
    Redis {
        /// Client (connections are opened per link).
        client: redis::Client,
        /// The server's URL, for messages.
        url: String,
    },
    /// An S3 bucket and key prefix.
    S3 {
        /// Client.
        client: aws_sdk_s3::Client,
        /// Bucket.
        bucket: String,
        /// Key prefix, empty or ending in `/`.
        prefix: String,
    },
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Relay {
    /// The relay a job falls back to or is forced onto, from its settings: `None` when the
    /// policy needs none (or, for `auto`, none is configured).
    ///
    /// # Errors
    /// A bad Redis URL or missing S3 credentials.
    pub fn from_settings(settings: &RuntimeSettings) -> Result<Option<Relay>, String> {
        let redis = || -> Result<Relay, String> {
            let url = settings.redis.as_deref().ok_or("no `redis` URL configured")?;
            let client = redis::Client::open(url).map_err(|e| format!("redis URL `{url}`: {e}"))?;
            Ok(Relay::Redis { client, url: url.to_string() })
        };
        let s3 = || -> Result<Relay, String> {
            let url = settings.s3_relay.as_deref().ok_or("no `s3_relay` configured")?;
            let rest = url.strip_prefix("s3://").ok_or_else(|| format!("`{url}` is not an s3:// URL"))?;
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = if prefix.is_empty() || prefix.ends_with('/') {
                prefix.to_string()
            } else {
                format!("{prefix}/")
            };
            Ok(Relay::S3 { client: client_from_env()?, bucket: bucket.to_string(), prefix })
        };
        match settings.channel {
            ChannelPolicy::Direct => Ok(None),
            ChannelPolicy::Redis => redis().map(Some),
            ChannelPolicy::S3 => s3().map(Some),
            ChannelPolicy::Auto if settings.redis.is_some() => redis().map(Some),
            ChannelPolicy::Auto if settings.s3_relay.is_some() => s3().map(Some),
            ChannelPolicy::Auto => Ok(None),
        }
    }

    /// `redis` or `s3`.
    pub fn name(&self) -> &'static str {
        match self {
            Relay::Redis { .. } => "redis",
            Relay::S3 { .. } => "s3",
        }
    }

    /// Opens one direction for writing.
    ///
    /// # Errors
    /// The relay cannot be reached within `timeout`.
    pub async fn sender(&self, job: &str, from: u32, to: u32, timeout: Duration) -> Result<Sender, String> {
        let key = self.key(job, from, to);
        match self {
            Relay::Redis { client, url } => {
                let con = connect(client, Some(timeout)).await.map_err(|e| format!("{e} (at {url})"))?;
                Ok(Sender::Redis { con, key })
            }
            Relay::S3 { client, bucket, .. } => {
                Ok(Sender::S3(S3Direction { client: client.clone(), bucket: bucket.clone(), key, seq: 0 }))
            }
        }
    }

    /// Opens one direction for reading.
    ///
    /// # Errors
    /// The relay cannot be reached within `timeout`.
    pub async fn receiver(
        &self,
        job: &str,
        from: u32,
        to: u32,
        timeout: Duration,
    ) -> Result<Receiver, String> {
        let key = self.key(job, from, to);
        match self {
            // Blocking pops get a connection of their own, with no response timeout of the
            // client's: each pop carries its own deadline.
            Relay::Redis { client, url } => {
                let con = tokio::time::timeout(timeout, connect(client, None))
                    .await
                    .map_err(|_| format!("no answer from Redis at {url} within {timeout:?}"))?
                    .map_err(|e| format!("{e} (at {url})"))?;
                Ok(Receiver::Redis { con, key })
            }
            Relay::S3 { client, bucket, .. } => {
                Ok(Receiver::S3(S3Direction { client: client.clone(), bucket: bucket.clone(), key, seq: 0 }))
            }
        }
    }

    fn key(&self, job: &str, from: u32, to: u32) -> String {
        match self {
            Relay::Redis { .. } => format!("updraft:{job}:{from}:{to}"),
            Relay::S3 { prefix, .. } => format!("{prefix}{job}/{from}-{to}/"),
        }
    }

    /// Deletes what is left of the directions `peer → me` (and, with `outgoing`, `me → peer`)
    /// for every peer, within `timeout`.
    ///
    /// # Errors
    /// What could not be deleted.
    pub async fn cleanup(
        &self,
        job: &str,
        me: u32,
        peers: &[u32],
        outgoing: bool,
        timeout: Duration,
    ) -> Result<(), String> {
        let mut keys: Vec<String> = peers.iter().map(|p| self.key(job, *p, me)).collect();
        if outgoing {
            keys.extend(peers.iter().map(|p| self.key(job, me, *p)));
        }
        let work = async {
            match self {
                Relay::Redis { client, .. } => {
                    let mut con = connect(client, Some(timeout)).await?;
                    if !keys.is_empty() {
                        redis::cmd("DEL").arg(&keys).exec_async(&mut con).await.map_err(|e| e.to_string())?;
                    }
                }
                Relay::S3 { client, bucket, .. } => {
                    for prefix in &keys {
                        let mut pages =
                            client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
                        while let Some(page) = pages.next().await {
                            let page = page.map_err(describe)?;
                            for key in page.contents().iter().filter_map(|o| o.key()) {
                                client
                                    .delete_object()
                                    .bucket(bucket)
                                    .key(key)
                                    .send()
                                    .await
                                    .map_err(describe)?;
                            }
                        }
                    }
                }
            }
            Ok::<(), String>(())
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("cleaning up the {} relay took more than {timeout:?}", self.name()))?
    }
}

async fn connect(
    client: &redis::Client,
    response_timeout: Option<Duration>,
) -> Result<MultiplexedConnection, String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(response_timeout);
    match client.get_multiplexed_async_connection_with_config(&config).await {
        Ok(con) => Ok(con),
        Err(e) => Err(match server_refusal(client).await {
            Some(said) => format!("Redis refused the connection: the server said: {said}"),
            None => format!("Redis: {e}"),
        }),
    }
}

/// What a Redis server that refuses clients says when one connects: a server in protected
/// mode, or at its client limit, writes an error line (`-DENIED ...`, `-ERR max number of
/// clients reached`) and closes, which the client library may report only as a broken pipe.
/// Read back within a second on a fresh plain TCP connection; `None` when it says nothing.
async fn server_refusal(client: &redis::Client) -> Option<String> {
    let redis::ConnectionAddr::Tcp(host, port) = client.get_connection_info().addr() else { return None };
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await.ok()?;
        let mut buf = vec![0u8; 1024];
        let mut n = 0;
        while n < buf.len() {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
            if buf[..n].ends_with(b"\r\n") {
                break;
            }
        }
        let line = String::from_utf8_lossy(&buf[..n]);
        let said = line.strip_prefix('-')?.trim_end();
        (!said.is_empty()).then(|| said.to_string())
    };
    tokio::time::timeout(Duration::from_secs(1), probe).await.ok().flatten()
}

/// The writing end of one direction.
pub enum Sender {
    /// A Redis list.
    Redis {
        /// Connection.
        con: MultiplexedConnection,
        /// List key.
        key: String,
    },
    /// S3 objects under a prefix.
    S3(S3Direction),
}

/// One direction of a pair on the S3 relay: objects numbered from 0 under a prefix.
pub struct S3Direction {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Prefix of this direction.
    key: String,
    /// Next object number.
    seq: u64,
}

impl Sender {
    /// Appends one message (an empty one ends the stream), waiting while a Redis list is full;
    /// gives up at `deadline`.
    ///
    /// # Errors
    /// The relay failed or stayed full until the deadline.
    pub async fn push(&mut self, payload: Vec<u8>, deadline: Instant) -> Result<(), String> {
        let what = match self {
            Sender::Redis { .. } => "the Redis list stayed full (is the peer reading?)",
            Sender::S3(_) => "S3 accepted nothing",
        };
        let work = async {
            match self {
                Sender::Redis { con, key } => {
                    // One transaction, so no list is ever left without its expiry.
                    let (len, _): (usize, bool) = redis::pipe()
                        .atomic()
                        .cmd("RPUSH")
                        .arg(&*key)
                        .arg(payload)
                        .cmd("EXPIRE")
                        .arg(&*key)
                        .arg(KEY_TTL.as_secs())
                        .query_async(con)
                        .await
                        .map_err(|e| format!("Redis RPUSH: {e}"))?;
                    let mut pause = Duration::from_millis(1);
                    let mut len = len;
                    while len > REDIS_MAX_ITEMS {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(S3_MAX_BACKOFF);
                        len = redis::cmd("LLEN")
                            .arg(&*key)
                            .query_async(con)
                            .await
                            .map_err(|e| format!("Redis LLEN: {e}"))?;
                    }
                    Ok(())
                }
                Sender::S3(S3Direction { client, bucket, key, seq }) => {
                    let name = format!("{key}{:016x}", *seq);
                    count_put();
                    client
                        .put_object()
                        .bucket(&*bucket)
                        .key(&name)
                        .body(ByteStream::from(payload))
                        .send()
                        .await
                        .map_err(|e| format!("S3 put {name}: {}", describe(e)))?;
                    *seq += 1;
                    Ok(())
                }
            }
        };
        tokio::time::timeout_at(deadline, work).await.map_err(|_| format!("{what} until the deadline"))?
    }
}

/// The reading end of one direction.
pub enum Receiver {
    /// A Redis list.
    Redis {
        /// Connection of its own (blocking pops).
        con: MultiplexedConnection,
        /// List key.
        key: String,
    },
    /// S3 objects under a prefix.
    S3(S3Direction),
}

impl Receiver {
    /// The next message, or `Ok(None)` when nothing arrived by `deadline`. A message longer than
    /// `max_len` bytes is an error (on S3 before it is read; Redis hands a list element over
    /// whole, so there the bound is the server's `proto-max-bulk-len`, 512 MB by default).
    ///
    /// # Errors
    /// The relay failed, or the message is too long.
    pub async fn pop(&mut self, deadline: Instant, max_len: usize) -> Result<Option<Bytes>, String> {
        let too_long = |len: usize| format!("a relay message of {len} bytes (at most {max_len})");
        match self {
            Receiver::Redis { con, key } => {
                let wait = deadline.saturating_duration_since(Instant::now()).as_secs_f64().max(0.001);
                let mut cmd = redis::cmd("BLPOP");
                cmd.arg(&*key).arg(wait);
                let pop = cmd.query_async::<Option<(String, Vec<u8>)>>(con);
                // The server answers nil at `wait`; a second more for the answer to travel.
                match tokio::time::timeout_at(deadline + Duration::from_secs(1), pop).await {
                    Err(_) => Err("Redis did not answer a blocking pop in time".into()),
                    Ok(Err(e)) => Err(format!("Redis BLPOP: {e}")),
                    Ok(Ok(None)) => Ok(None),
                    Ok(Ok(Some((_, payload)))) if payload.len() > max_len => Err(too_long(payload.len())),
                    Ok(Ok(Some((_, payload)))) => Ok(Some(Bytes::from(payload))),
                }
            }
            Receiver::S3(S3Direction { client, bucket, key, seq }) => {
                let name = format!("{key}{:016x}", *seq);
                let mut pause = Duration::from_millis(1);
                loop {
                    count_get();
                    let get = client.get_object().bucket(&*bucket).key(&name).send();
                    let result = match tokio::time::timeout_at(deadline + Duration::from_secs(5), get).await {
                        Err(_) => return Err(format!("S3 get {name}: no answer in time")),
                        Ok(r) => r,
                    };
                    match result {
                        Ok(out) => {
                            let announced =
                                usize::try_from(out.content_length().unwrap_or(0)).unwrap_or(usize::MAX);
                            if announced > max_len {
                                return Err(format!("S3 get {name}: {}", too_long(announced)));
                            }
                            // Read in chunks, so that a length that lies is caught too.
                            let read = async {
                                let mut body = out.body;
                                let mut buf = Vec::with_capacity(announced);
                                while let Some(chunk) = body.try_next().await.map_err(|e| e.to_string())? {
                                    if buf.len() + chunk.len() > max_len {
                                        return Err(too_long(buf.len() + chunk.len()));
                                    }
                                    buf.extend_from_slice(&chunk);
                                }
                                Ok(Bytes::from(buf))
                            };
                            let body = tokio::time::timeout_at(deadline + Duration::from_secs(30), read)
                                .await
                                .map_err(|_| format!("S3 get {name}: the body did not arrive in time"))?
                                .map_err(|e| format!("S3 get {name}: {e}"))?;
                            let delete = client.delete_object().bucket(&*bucket).key(&name).send();
                            tokio::time::timeout(Duration::from_secs(30), delete)
                                .await
                                .map_err(|_| format!("S3 delete {name}: no answer in time"))?
                                .map_err(|e| format!("S3 delete {name}: {}", describe(e)))?;
                            *seq += 1;
                            return Ok(Some(body));
                        }
                        Err(e) if is_missing(&e) => {
                            if Instant::now() + pause >= deadline {
                                return Ok(None);
                            }
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(S3_MAX_BACKOFF);
                        }
                        Err(e) => {
                            let denied =
                                e.as_service_error().and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
                                    == Some("AccessDenied");
                            let hint = if denied {
                                " (the S3 relay needs s3:ListBucket, or a missing object reads as AccessDenied)"
                            } else {
                                ""
                            };
                            return Err(format!("S3 get {name}: {}{hint}", describe(e)));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_choose_the_relay() {
        let mut s = RuntimeSettings::default();
        assert!(Relay::from_settings(&s).expect("ok").is_none(), "auto without a relay");
        s.redis = Some("redis://127.0.0.1:1/".into());
        assert_eq!(Relay::from_settings(&s).expect("ok").map(|r| r.name()), Some("redis"));
        s.channel = ChannelPolicy::Direct;
        assert!(Relay::from_settings(&s).expect("ok").is_none());
        s.channel = ChannelPolicy::S3;
        let e = Relay::from_settings(&s).expect_err("no s3_relay");
        assert!(e.contains("s3_relay"), "{e}");
    }

    #[test]
    fn run_keys_agree_across_ranks_and_differ_between_runs() {
        use crate::rendezvous::PeerAddr;
        let addr = |port: u16| std::net::SocketAddr::from(([10, 0, 0, 1], port));
        let peer = |rank, port| PeerAddr { rank, public: addr(port), private: addr(port) };
        let zero = run_key(7, 5, 0, addr(100), addr(100), &[peer(1, 200)]);
        let one = run_key(7, 5, 1, addr(200), addr(200), &[peer(0, 100)]);
        assert_eq!(zero, one, "both ranks name the run alike");
        assert_ne!(zero, run_key(7, 5, 0, addr(101), addr(101), &[peer(1, 200)]), "another table");
        assert_ne!(zero, run_key(7, 6, 0, addr(100), addr(100), &[peer(1, 200)]), "another run, same table");
        assert!(zero.starts_with("0000000000000007-"));
    }

    #[tokio::test]
    async fn a_server_that_refuses_clients_is_quoted() {
        // A stand-in for Redis in protected mode: the refusal line, then close.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let said =
                    b"-DENIED Redis is running in protected mode because protected mode is enabled\r\n";
                let _ = tokio::io::AsyncWriteExt::write_all(&mut s, said).await;
            }
        });
        let client = redis::Client::open(format!("redis://{addr}/")).expect("url");
        let e = connect(&client, Some(Duration::from_secs(2))).await.map(|_| ()).expect_err("refused");
        assert!(e.contains("the server said: DENIED Redis is running in protected mode"), "{e}");
    }

    #[test]
    fn keys_name_the_job_and_the_direction() {
        let client = redis::Client::open("redis://127.0.0.1:1/").expect("url");
        assert_eq!(Relay::Redis { client, url: String::new() }.key("j1", 2, 5), "updraft:j1:2:5");
    }
}
