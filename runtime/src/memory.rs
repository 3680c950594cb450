//! The memory budget of one worker and the directory its operators spill to.
//!
//! Every operator that holds data beyond a batch (a join's two sides, a sort's input, a
//! group-by's table, a set operation's rows) takes a [`Reservation`] from the worker's
//! [`MemoryPool`] and grows it before it keeps more. Each reservation may hold a fair share of
//! the limit: the limit divided by the number of reservations alive (DataFusion's
//! `FairSpillPool`), so that an operator that started early cannot starve one that starts
//! later, and every operator can always make progress by spilling. When the pool refuses a
//! request, the operator either spills (writes what it holds to disk, releases it, and goes on)
//! or, when nothing it holds can be spilled, fails with a [`ResourcesExhausted`] error naming
//! itself. It is accounting, not allocation: the bytes counted are Arrow buffer sizes and the
//! operators' own tables.
//!
//! What the limit does not count, and so what a worker's peak resident set may exceed it by:
//! the program and its libraries, the batches in flight between operators (bounded by
//! `runtime.channel_credit` per channel), one batch per operator being worked on, and the
//! allocator's slack. `ARCHITECTURE.md` states the bound.
//!
//! Spill files live in one directory per worker and job, made on first use under
//! `runtime.spill_dir` (`updraft-spill-<pid>-XXXXXX`), and removed with the pool: when the job
//! ends, whether it succeeded or failed. A directory left behind by a killed process (its pid no
//! longer running) is removed by the next pool made on that machine.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Prefix of a worker's spill directory.
pub const SPILL_PREFIX: &str = "updraft-spill-";

/// A request the pool could not grant, with what was held when it came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "memory limit reached: `{operator}` holds {held} bytes and asked for {requested} more, beyond its share of {share} bytes (runtime.memory_limit = {limit} bytes shared by {consumers} operators){hint}"
)]
pub struct ResourcesExhausted {
    /// The operator that asked.
    pub operator: String,
    /// Bytes asked for.
    pub requested: u64,
    /// Bytes that operator held.
    pub held: u64,
    /// Bytes each operator may hold: the limit over the operators holding reservations.
    pub share: u64,
    /// Operators holding reservations.
    pub consumers: u64,
    /// The limit.
    pub limit: u64,
    /// What the operator could not spill, and what to do (starts with `; `), or empty.
    pub hint: String,
}

/// One worker's memory budget: a limit in bytes and what the operators hold against it.
#[derive(Debug)]
pub struct MemoryPool {
    limit: u64,
    used: AtomicU64,
    consumers: AtomicU64,
    peak: AtomicU64,
    spilled_bytes: AtomicU64,
    spill_files: AtomicU64,
    spill_base: PathBuf,
    spill_dir: Mutex<Option<PathBuf>>,
}

impl MemoryPool {
    /// A pool of `limit` bytes whose operators spill under `spill_base` (created on first use).
    pub fn new(limit: u64, spill_base: PathBuf) -> Arc<MemoryPool> {
        Arc::new(MemoryPool {
            limit,
            used: AtomicU64::new(0),
            consumers: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            spilled_bytes: AtomicU64::new(0),
            spill_files: AtomicU64::new(0),
            spill_base,
            spill_dir: Mutex::new(None),
        })
    }

    /// The pool of one worker's job: `runtime.memory_limit`, or by default
    /// [`updraft_config::defaults::MEMORY_FRACTION`] of the memory there is, shared by
    /// `workers_here` workers on this machine; spilling under `runtime.spill_dir` or the system's
    /// temporary directory. Starts a new peak for [`peak_rss`].
    pub fn for_job(settings: &updraft_config::RuntimeSettings, workers_here: u32) -> Arc<MemoryPool> {
        let limit = settings
            .memory_limit
            .or_else(|| default_limit(updraft_config::defaults::MEMORY_FRACTION, workers_here))
            .unwrap_or(u64::MAX);
        let base = settings.spill_dir.as_ref().map_or_else(std::env::temp_dir, PathBuf::from);
        reset_peak_rss();
        MemoryPool::new(limit, base)
    }

    /// A pool without a limit (tests, tools that run operators directly).
    pub fn unbounded() -> Arc<MemoryPool> {
        MemoryPool::new(u64::MAX, std::env::temp_dir())
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Most bytes held at once since the pool was made.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Bytes written to spill files, and the number of files, since the pool was made.
    pub fn spilled(&self) -> (u64, u64) {
        (self.spilled_bytes.load(Ordering::Relaxed), self.spill_files.load(Ordering::Relaxed))
    }

    /// Counts one spill file of `bytes` bytes (for the report and the metrics).
    pub fn count_spill(&self, bytes: u64) {
        self.spilled_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.spill_files.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::SPILLED_BYTES).increment(bytes);
    }

    /// A reservation of zero bytes for `operator`; the pool's share per operator shrinks while
    /// it lives.
    pub fn reserve(self: &Arc<Self>, operator: &str) -> Reservation {
        self.consumers.fetch_add(1, Ordering::Relaxed);
        Reservation { pool: Arc::clone(self), operator: operator.to_string(), bytes: 0 }
    }

    /// Operators holding reservations, and the bytes each may hold.
    fn share(&self) -> (u64, u64) {
        let n = self.consumers.load(Ordering::Relaxed).max(1);
        (n, self.limit / n)
    }

    fn take(&self, bytes: u64) {
        let next = self.used.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes);
        self.peak.fetch_max(next, Ordering::Relaxed);
    }

    fn give(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// This worker's spill directory, made on first use.
    ///
    /// # Errors
    /// The directory cannot be made (the message names it).
    pub fn spill_dir(&self) -> Result<PathBuf, std::io::Error> {
        let mut dir = self.spill_dir.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(d) = dir.as_ref() {
            return Ok(d.clone());
        }
        remove_orphans(&self.spill_base);
        std::fs::create_dir_all(&self.spill_base).map_err(|e| {
            std::io::Error::new(e.kind(), format!("spill directory {}: {e}", self.spill_base.display()))
        })?;
        // Removed by this pool (`remove_spill_files`), not by the temporary directory's drop.
        let path = tempfile::Builder::new()
            .prefix(&format!("{SPILL_PREFIX}{}-", std::process::id()))
            .tempdir_in(&self.spill_base)
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("spill directory in {}: {e}", self.spill_base.display()),
                )
            })?
            .keep();
        *dir = Some(path.clone());
        Ok(path)
    }
}

impl MemoryPool {
    /// Removes the spill directory and every file in it now (the job is over, whether or not
    /// every operator holding a spill file is gone yet: a stage stuck after a failure must not
    /// leave its files). Later spills would make a new directory.
    pub fn remove_spill_files(&self) {
        let mut dir = self.spill_dir.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(d) = dir.take()
            && let Err(e) = std::fs::remove_dir_all(&d)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %d.display(), error = %e, "cannot remove the spill directory");
        }
    }
}

impl Drop for MemoryPool {
    fn drop(&mut self) {
        self.remove_spill_files();
    }
}

/// Removes spill directories under `base` whose process is no longer running (Linux: no
/// `/proc/<pid>`), left by a worker that was killed.
fn remove_orphans(base: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SPILL_PREFIX)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Bytes one operator holds against its worker's [`MemoryPool`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    pool: Arc<MemoryPool>,
    operator: String,
    bytes: u64,
}

impl Reservation {
    /// Bytes held.
    pub fn size(&self) -> u64 {
        self.bytes
    }

    /// The pool this reservation draws on.
    pub fn pool(&self) -> &Arc<MemoryPool> {
        &self.pool
    }

    /// Holds `bytes` more, if this operator's share of the pool has them.
    ///
    /// # Errors
    /// [`ResourcesExhausted`] (with an empty hint) when the reservation would pass its share;
    /// nothing is taken then.
    pub fn try_grow(&mut self, bytes: u64) -> Result<(), ResourcesExhausted> {
        let (_, share) = self.pool.share();
        if self.bytes.saturating_add(bytes) > share {
            return Err(self.exhausted(bytes, String::new()));
        }
        self.pool.take(bytes);
        self.bytes += bytes;
        Ok(())
    }

    /// Holds `bytes` more whatever the limit: memory the operator cannot do without once it
    /// decided to go on (one batch per sorted run while merging). It counts for everyone else.
    pub fn grow(&mut self, bytes: u64) {
        self.pool.take(bytes);
        self.bytes += bytes;
    }

    /// Holds exactly `bytes` (growing by [`Reservation::try_grow`] or shrinking).
    ///
    /// # Errors
    /// As for [`Reservation::try_grow`].
    pub fn try_resize(&mut self, bytes: u64) -> Result<(), ResourcesExhausted> {
        if bytes > self.bytes {
            return self.try_grow(bytes - self.bytes);
        }
        self.shrink(self.bytes - bytes);
        Ok(())
    }

    /// Gives back `bytes` (at most what is held).
    pub fn shrink(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.pool.give(bytes);
        self.bytes -= bytes;
    }

    /// Gives back everything held.
    pub fn free(&mut self) {
        self.shrink(self.bytes);
    }

    /// The error for a request of `requested` bytes this operator cannot spill its way out of;
    /// `hint` says why and what to do.
    pub fn exhausted_error(&self, requested: u64, hint: &str) -> ResourcesExhausted {
        let hint = if hint.is_empty() { String::new() } else { format!("; {hint}") };
        self.exhausted(requested, hint)
    }

    fn exhausted(&self, requested: u64, hint: String) -> ResourcesExhausted {
        let (consumers, share) = self.pool.share();
        ResourcesExhausted {
            operator: self.operator.clone(),
            requested,
            held: self.bytes,
            share,
            consumers,
            limit: self.pool.limit,
            hint,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.give(self.bytes);
        self.pool.consumers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Memory this worker may use by default: `fraction` of what the machine (or the cgroup, or the
/// Lambda function) gives the process, shared by `workers_here` workers on this machine. `None`
/// when nothing says how much memory there is.
pub fn default_limit(fraction: f64, workers_here: u32) -> Option<u64> {
    let lambda = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        .ok()
        .and_then(|m| m.trim().parse::<u64>().ok())
        .map(|mib| mib << 20);
    let cgroup =
        std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib << 10)
    });
    let have = [lambda, cgroup, total].into_iter().flatten().min()?;
    Some((have as f64 * fraction / f64::from(workers_here.max(1))) as u64)
}

/// Peak resident set of this process in bytes (`VmHWM`), where the system reports it.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib << 10)
}

/// Starts a new peak for [`peak_rss`] (Linux: `/proc/self/clear_refs`), so that a worker that
/// runs several jobs (a warm function) reports each job's own.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_limit_fairly_and_give_back_on_drop() {
        let pool = MemoryPool::new(100, std::env::temp_dir());
        let mut a = pool.reserve("a");
        a.try_grow(80).expect("alone, the whole limit");
        let mut b = pool.reserve("b");
        // Two operators: 50 each. `a` may keep what it has, not take more.
        assert!(a.try_grow(1).is_err());
        let e = b.try_grow(60).expect_err("over its share");
        assert_eq!((e.operator.as_str(), e.requested, e.held, e.share, e.consumers), ("b", 60, 0, 50, 2));
        assert!(e.to_string().contains("`b`") && e.to_string().contains("runtime.memory_limit"));
        b.try_grow(50).expect("fits exactly");
        assert_eq!(pool.used(), 130);
        a.try_resize(10).expect("shrinks");
        assert_eq!(pool.used(), 60);
        b.grow(200);
        assert_eq!((pool.used(), pool.peak()), (260, 260));
        drop(b);
        a.try_grow(90).expect("alone again");
        drop(a);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn the_spill_directory_goes_with_the_pool_and_orphans_are_swept() {
        let base = std::env::temp_dir().join(format!("updraft-pool-test-{}", std::process::id()));
        // A directory of a process that cannot be running (pid beyond pid_max).
        let orphan = base.join(format!("{SPILL_PREFIX}4294967294-0"));
        std::fs::create_dir_all(&orphan).expect("orphan");
        let pool = MemoryPool::new(10, base.clone());
        let dir = pool.spill_dir().expect("dir");
        assert_eq!(pool.spill_dir().expect("same"), dir);
        std::fs::write(dir.join("run-0.arrow"), b"x").expect("file");
        assert!(!orphan.exists(), "a dead process's directory is removed");
        drop(pool);
        assert!(!dir.exists(), "removed with its pool");
        std::fs::remove_dir_all(&base).expect("clean");
    }
}
