//! Where source and sink files live: local paths or S3 objects (`s3://bucket/key`), and glob
//! patterns over either.
//!
//! Local files are streamed. An S3 object is fetched whole into memory (Parquet, CSV and IPC
//! are then decoded from that buffer without another copy) and a sink's object is uploaded
//! once, when its input ends.
//!
//! The S3 client is configured from the environment, as AWS tools are (see
//! [`updraft_transports::s3env`]). Every request has a deadline (`UPDRAFT_S3_TIMEOUT`, default
//! 60 s). Operators run on plain threads, so the client runs on a small runtime of its own
//! and callers wait for answers on a channel.

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use updraft_runtime::OperatorError;
use updraft_transports::s3env::{client_from_env, count_get, count_put, describe};

/// A file's location.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Location {
    /// A local path.
    Local(PathBuf),
    /// An S3 object.
    S3 {
        /// Bucket.
        bucket: String,
        /// Object key.
        key: String,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

fn invalid(msg: String) -> OperatorError {
    OperatorError::Invalid(msg)
}

impl Location {
    /// Reads a path or an `s3://bucket/key` URL.
    ///
    /// # Errors
    /// An `s3://` URL without a bucket or key.
    pub fn parse(text: &str) -> Result<Location, OperatorError> {
        match text.strip_prefix("s3://") {
            Some(rest) => match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
                    Ok(Location::S3 { bucket: bucket.to_string(), key: key.to_string() })
                }
                _ => Err(invalid(format!("`{text}` is not an S3 object URL; expected s3://bucket/key"))),
            },
            None => Ok(Location::Local(PathBuf::from(text))),
        }
    }
}

/// Expands a list of paths and glob patterns into files, in order: each plain entry as given,
/// each pattern's matches sorted. The result is the same on every rank.
///
/// # Errors
/// Bad patterns, patterns that match nothing, and listing failures.
pub fn expand(entries: &[String]) -> Result<Vec<Location>, OperatorError> {
    let mut out = Vec::new();
    for entry in entries {
        if !updraft_config::is_glob(entry) {
            out.push(Location::parse(entry)?);
            continue;
        }
        let pattern = glob::Pattern::new(entry)
            .map_err(|e| invalid(format!("`{entry}` is not a valid glob pattern: {e}")))?;
        // `*` stops at `/` in keys as it does at directory boundaries on disk.
        let same_as_local = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
        let mut found = match Location::parse(entry)? {
            Location::Local(_) => {
                let paths = glob::glob(entry)
                    .map_err(|e| invalid(format!("`{entry}` is not a valid glob pattern: {e}")))?;
                let mut found = Vec::new();
                for p in paths {
                    let p = p.map_err(|e| invalid(format!("expanding `{entry}`: {e}")))?;
                    if p.is_file() {
                        found.push(Location::Local(p));
                    }
                }
                found
            }
            Location::S3 { bucket, key } => {
                let prefix_end = key.find(['*', '?', '[']).unwrap_or(key.len());
                let keys = s3_list(&bucket, &key[..prefix_end])?;
                keys.into_iter()
                    .filter(|k| pattern.matches_with(&format!("s3://{bucket}/{k}"), same_as_local))
                    .map(|k| Location::S3 { bucket: bucket.clone(), key: k })
                    .collect()
            }
        };
        if found.is_empty() {
            return Err(invalid(format!("`{entry}` matches no file")));
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// The whole content of an S3 object.
///
/// # Errors
/// Missing objects, credentials or network failures, with the URL.
pub fn s3_get(bucket: &str, key: &str) -> Result<Bytes, OperatorError> {
    let (b, k) = (bucket.to_string(), key.to_string());
    run(format!("s3://{bucket}/{key}"), "read", move |c| async move {
        count_get();
        let out = c.get_object().bucket(b).key(k).send().await.map_err(describe)?;
        let data = out.body.collect().await.map_err(|e| e.to_string())?;
        Ok(data.into_bytes())
    })
}

/// Stores `data` as an S3 object.
///
/// # Errors
/// Credentials or network failures, with the URL.
pub fn s3_put(bucket: &str, key: &str, data: Vec<u8>) -> Result<(), OperatorError> {
    let (b, k) = (bucket.to_string(), key.to_string());
    run(format!("s3://{bucket}/{key}"), "write", move |c| async move {
        count_put();
        c.put_object().bucket(b).key(k).body(ByteStream::from(data)).send().await.map_err(describe)?;
        Ok(())
    })
}

/// Keys under `prefix`, in the order the server lists them.
///
/// # Errors
/// Credentials or network failures, with the URL.
pub fn s3_list(bucket: &str, prefix: &str) -> Result<Vec<String>, OperatorError> {
    let (b, p) = (bucket.to_string(), prefix.to_string());
    run(format!("s3://{bucket}/{prefix}"), "list", move |c| async move {
        let mut keys = Vec::new();
        let mut pages = c.list_objects_v2().bucket(b).prefix(p).into_paginator().send();
        while let Some(page) = pages.next().await {
            count_put();
            let page = page.map_err(describe)?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        Ok(keys)
    })
}

struct S3 {
    client: Client,
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
}

static S3_CLIENT: OnceLock<Result<S3, String>> = OnceLock::new();

fn connect() -> Result<S3, String> {
    let timeout = match std::env::var("UPDRAFT_S3_TIMEOUT").ok().filter(|t| !t.is_empty()) {
        Some(t) => updraft_config::parse_duration(&t).map_err(|e| format!("UPDRAFT_S3_TIMEOUT: {e}"))?,
        None => Duration::from_secs(60),
    };
    let client = client_from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("updraft-s3")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the S3 client's runtime: {e}"))?;
    Ok(S3 { client, runtime, timeout })
}

/// Runs one S3 request on the client's runtime and waits for it, within the deadline.
fn run<T, F, Fut>(url: String, what: &str, f: F) -> Result<T, OperatorError>
where
    T: Send + 'static,
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let s3 = match S3_CLIENT.get_or_init(connect) {
        Ok(s3) => s3,
        Err(e) => return Err(invalid(format!("cannot {what} {url}: {e}"))),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let request = f(s3.client.clone());
    let timeout = s3.timeout;
    s3.runtime.spawn(async move {
        let result = match tokio::time::timeout(timeout, request).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        // The caller waits on the other end; it cannot have gone.
        let _ = tx.send(result);
    });
    match rx.recv_timeout(timeout + Duration::from_secs(5)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(invalid(format!("cannot {what} {url}: {e}"))),
        Err(_) => Err(invalid(format!("cannot {what} {url}: no answer within {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        assert_eq!(
            Location::parse("s3://b/dir/x.parquet").expect("url"),
            Location::S3 { bucket: "b".into(), key: "dir/x.parquet".into() }
        );
        assert_eq!(
            Location::parse("data/x.csv").expect("path"),
            Location::Local(PathBuf::from("data/x.csv"))
        );
        assert!(Location::parse("s3://bucket-only").is_err());
        assert!(Location::parse("s3:///key").is_err());
    }

    #[test]
    fn local_globs_expand_sorted_and_empty_matches_are_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        for name in ["b.csv", "a.csv", "c.txt"] {
            std::fs::write(dir.path().join(name), "x\n1\n").expect("write");
        }
        let pattern = format!("{}/*.csv", dir.path().display());
        let found = expand(std::slice::from_ref(&pattern)).expect("expand");
        assert_eq!(
            found,
            vec![Location::Local(dir.path().join("a.csv")), Location::Local(dir.path().join("b.csv"))]
        );
        let none = format!("{}/*.parquet", dir.path().display());
        let e = expand(&[none]).expect_err("no match").to_string();
        assert!(e.contains("matches no file"), "{e}");
    }
}
