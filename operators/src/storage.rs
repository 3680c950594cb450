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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use updraft_runtime::OperatorError;
use updraft_transports::s3env::{client_from_env, count_get, count_put, describe, is_not_found};

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
    /// Reads a list entry: a path, an `s3://bucket/key` URL, or `s3://bucket/prefix/` (a
    /// directory of objects; `s3://bucket/` is the whole bucket).
    ///
    /// # Errors
    /// An `s3://` URL without a bucket.
    pub fn parse_entry(text: &str) -> Result<Location, OperatorError> {
        match text.strip_prefix("s3://") {
            Some(rest) => match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() => {
                    Ok(Location::S3 { bucket: bucket.to_string(), key: key.to_string() })
                }
                _ => Err(invalid(format!("`{text}` is not an S3 URL; expected s3://bucket/key"))),
            },
            None => Ok(Location::Local(PathBuf::from(text))),
        }
    }

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

/// Expands a list of paths, directories and glob patterns into files, in order: each plain
/// file as given, each pattern's matches sorted, each directory's files with one of
/// `extensions` sorted (names starting with `.` or `_`, such as temporary files, are
/// skipped). An `s3://` entry ending with `/` is a directory (a prefix).
///
/// # Errors
/// Bad patterns; patterns and directories that match nothing (naming them, and the working
/// directory for relative paths); local files that do not exist; listing failures.
pub fn expand(entries: &[String], extensions: &[&str]) -> Result<Vec<Location>, OperatorError> {
    let mut out = Vec::new();
    for entry in entries {
        let at = Location::parse_entry(entry)?;
        if !updraft_config::is_glob(entry) {
            match &at {
                Location::Local(path) if path.is_dir() => {
                    let found = list_dir(path, extensions)?;
                    if found.is_empty() {
                        return Err(invalid(format!(
                            "directory `{entry}`{} holds no file ending in .{}; to read files of other \
                             names, give a pattern such as `{}`",
                            relative_to_cwd(path),
                            extensions.join(", ."),
                            Path::new(entry).join("*").display()
                        )));
                    }
                    out.extend(found);
                }
                Location::Local(path) if !path.is_file() => {
                    return Err(invalid(format!("`{entry}`{} does not exist", relative_to_cwd(path))));
                }
                Location::S3 { bucket, key } if key.is_empty() || key.ends_with('/') => {
                    let mut found: Vec<Location> = s3_list(bucket, key)?
                        .into_iter()
                        .filter(|k| {
                            k[key.len()..].split('/').count() == 1 && wanted(&k[key.len()..], extensions)
                        })
                        .map(|k| Location::S3 { bucket: bucket.clone(), key: k })
                        .collect();
                    if found.is_empty() {
                        return Err(invalid(format!(
                            "`{entry}` holds no object ending in .{}; to read objects of other names, give \
                             a pattern such as `{entry}*`",
                            extensions.join(", .")
                        )));
                    }
                    found.sort();
                    out.extend(found);
                }
                _ => out.push(at),
            }
            continue;
        }
        let pattern = glob::Pattern::new(entry)
            .map_err(|e| invalid(format!("`{entry}` is not a valid glob pattern: {e}")))?;
        // `*` stops at `/` in keys as it does at directory boundaries on disk.
        let same_as_local = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
        let mut found = match at {
            Location::Local(_) => {
                let paths = glob::glob(entry)
                    .map_err(|e| invalid(format!("`{entry}` is not a valid glob pattern: {e}")))?;
                let mut found = Vec::new();
                for p in paths {
                    let p = p.map_err(|e| invalid(format!("expanding `{entry}`: {e}")))?;
                    if p.is_file() && !hidden(&p.to_string_lossy()) {
                        found.push(Location::Local(p));
                    }
                }
                found
            }
            Location::S3 { bucket, key } => {
                let prefix_end = key.find(['*', '?', '[']).unwrap_or(key.len());
                let keys = s3_list(&bucket, &key[..prefix_end])?;
                keys.into_iter()
                    .filter(|k| {
                        !hidden(k) && pattern.matches_with(&format!("s3://{bucket}/{k}"), same_as_local)
                    })
                    .map(|k| Location::S3 { bucket: bucket.clone(), key: k })
                    .collect()
            }
        };
        if found.is_empty() {
            let cwd = match Location::parse_entry(entry)? {
                Location::Local(p) => relative_to_cwd(&p),
                Location::S3 { .. } => String::new(),
            };
            return Err(invalid(format!("`{entry}`{cwd} matches no file")));
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// ` (relative to DIR)` for a relative path, for messages.
fn relative_to_cwd(path: &Path) -> String {
    if path.is_absolute() {
        return String::new();
    }
    std::env::current_dir().map(|d| format!(" (relative to {})", d.display())).unwrap_or_default()
}

/// True when the last component of `path` starts with `.` or `_`: hidden files, and the
/// temporary files and staging objects of jobs still writing (see [`crate::outputs`]).
pub fn hidden(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|name| name.starts_with(['.', '_']))
}

/// True for a file name with one of `extensions` that is not hidden or temporary.
fn wanted(name: &str, extensions: &[&str]) -> bool {
    if hidden(name) {
        return false;
    }
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    ext.is_some_and(|e| extensions.contains(&e.as_str()))
}

/// The files of directory `dir` with one of `extensions`, sorted (not recursive).
fn list_dir(dir: &Path, extensions: &[&str]) -> Result<Vec<Location>, OperatorError> {
    let entries = std::fs::read_dir(dir).map_err(|source| OperatorError::Io {
        context: format!("cannot list directory {}", dir.display()),
        source,
    })?;
    let mut found = Vec::new();
    for e in entries {
        let e = e.map_err(|source| OperatorError::Io {
            context: format!("cannot list directory {}", dir.display()),
            source,
        })?;
        let name = e.file_name().to_string_lossy().to_string();
        if wanted(&name, extensions) && e.path().is_file() {
            found.push(Location::Local(e.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The whole content of an S3 object.
///
/// # Errors
/// Missing objects, credentials or network failures, with the URL.
pub fn s3_get(bucket: &str, key: &str) -> Result<Bytes, OperatorError> {
    let (b, k) = (bucket.to_string(), key.to_string());
    run(format!("s3://{bucket}/{key}"), "read", move |c| async move {
        count_get();
        let out = c.get_object().bucket(b).key(k).send().await.map_err(fail)?;
        let data = out.body.collect().await.map_err(|e| S3Fail::Other(e.to_string()))?;
        Ok(data.into_bytes())
    })
}

/// The last `n` bytes of an S3 object, and its whole size (a HEAD for the size, then a bounded
/// range: some S3-compatible servers do not serve suffix ranges longer than the object).
///
/// # Errors
/// Missing objects, credentials or network failures, with the URL.
pub fn s3_get_tail(bucket: &str, key: &str, n: u64) -> Result<(Bytes, u64), OperatorError> {
    let (b, k) = (bucket.to_string(), key.to_string());
    run(format!("s3://{bucket}/{key}"), "read", move |c| async move {
        count_get();
        let head = c.head_object().bucket(&b).key(&k).send().await.map_err(fail)?;
        let size = head.content_length().and_then(|l| u64::try_from(l).ok()).unwrap_or(0);
        if size == 0 {
            return Ok((Bytes::new(), 0));
        }
        count_get();
        let range = format!("bytes={}-{}", size.saturating_sub(n), size - 1);
        let out = c.get_object().bucket(b).key(k).range(range).send().await.map_err(fail)?;
        let data = out.body.collect().await.map_err(|e| S3Fail::Other(e.to_string()))?.into_bytes();
        Ok((data, size))
    })
}

/// Copies an S3 object within its bucket (a server-side copy).
///
/// # Errors
/// Missing objects, credentials or network failures, with the URLs.
pub fn s3_copy(bucket: &str, from: &str, to: &str) -> Result<(), OperatorError> {
    let (b, f, t) = (bucket.to_string(), from.to_string(), to.to_string());
    run(format!("s3://{bucket}/{from} to s3://{bucket}/{to}"), "copy", move |c| async move {
        count_put();
        c.copy_object().bucket(&b).copy_source(format!("{b}/{f}")).key(t).send().await.map_err(fail)?;
        Ok(())
    })
}

/// Deletes an S3 object (deleting a missing object succeeds, as in S3).
///
/// # Errors
/// Credentials or network failures, with the URL.
pub fn s3_delete(bucket: &str, key: &str) -> Result<(), OperatorError> {
    let (b, k) = (bucket.to_string(), key.to_string());
    run(format!("s3://{bucket}/{key}"), "delete", move |c| async move {
        c.delete_object().bucket(b).key(k).send().await.map_err(fail)?;
        Ok(())
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
        c.put_object().bucket(b).key(k).body(ByteStream::from(data)).send().await.map_err(fail)?;
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
            let page = page.map_err(fail)?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        Ok(keys)
    })
}

/// Why an S3 request failed: the object or bucket is not there (an answer about the input), or
/// anything else (the service, the network, credentials).
enum S3Fail {
    Missing(String),
    Other(String),
}

fn fail<E>(e: aws_sdk_s3::error::SdkError<E>) -> S3Fail
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + 'static,
{
    if is_not_found(&e) { S3Fail::Missing(describe(e)) } else { S3Fail::Other(describe(e)) }
}

struct S3 {
    client: Client,
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
}

/// The process's S3 client: made on first use and reused by every later job (a warm function
/// keeps it); a failure to make it is not kept, so a later request tries again.
static S3_CLIENT: Mutex<Option<Arc<S3>>> = Mutex::new(None);

fn client() -> Result<Arc<S3>, String> {
    let mut slot = S3_CLIENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(s3) = slot.as_ref() {
        return Ok(Arc::clone(s3));
    }
    let s3 = Arc::new(connect()?);
    *slot = Some(Arc::clone(&s3));
    Ok(s3)
}

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
///
/// # Errors
/// [`OperatorError::Invalid`] when the object or bucket does not exist,
/// [`OperatorError::Unavailable`] for every other failure; both name the URL.
fn run<T, F, Fut>(url: String, what: &str, f: F) -> Result<T, OperatorError>
where
    T: Send + 'static,
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, S3Fail>> + Send + 'static,
{
    let unavailable = |e: &str| OperatorError::Unavailable(format!("cannot {what} {url}: {e}"));
    let s3 = client().map_err(|e| unavailable(&e))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let request = f(s3.client.clone());
    let timeout = s3.timeout;
    s3.runtime.spawn(async move {
        let result = match tokio::time::timeout(timeout, request).await {
            Ok(r) => r,
            Err(_) => Err(S3Fail::Other(format!("no answer within {timeout:?}"))),
        };
        // The caller waits on the other end; it cannot have gone.
        let _ = tx.send(result);
    });
    match rx.recv_timeout(timeout + Duration::from_secs(5)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(S3Fail::Missing(e))) => Err(invalid(format!("cannot {what} {url}: {e}"))),
        Ok(Err(S3Fail::Other(e))) => Err(unavailable(&e)),
        Err(_) => Err(unavailable(&format!("no answer within {timeout:?}"))),
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
        let found = expand(std::slice::from_ref(&pattern), &["csv"]).expect("expand");
        assert_eq!(
            found,
            vec![Location::Local(dir.path().join("a.csv")), Location::Local(dir.path().join("b.csv"))]
        );
        let none = format!("{}/*.parquet", dir.path().display());
        let e = expand(&[none], &["parquet"]).expect_err("no match").to_string();
        assert!(e.contains("matches no file"), "{e}");
        // A directory: the files with the format's extensions, hidden and temporary ones skipped.
        std::fs::write(dir.path().join(".a.csv.updraft-1.tmp"), "x").expect("write");
        std::fs::write(dir.path().join("_staging.csv"), "x").expect("write");
        let found = expand(&[dir.path().display().to_string()], &["csv"]).expect("expand");
        assert_eq!(
            found,
            vec![Location::Local(dir.path().join("a.csv")), Location::Local(dir.path().join("b.csv"))]
        );
        let e = expand(&[dir.path().display().to_string()], &["parquet"]).expect_err("none").to_string();
        assert!(e.contains("holds no file ending in .parquet") && e.contains("/*`"), "{e}");
        let e =
            expand(&[format!("{}/nope.csv", dir.path().display())], &["csv"]).expect_err("gone").to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
