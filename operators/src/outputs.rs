//! Outputs that appear whole or not at all: part-file names, temporary files, and the commit.
//!
//! A file sink writes its part file under a temporary name next to the final one,
//! `.NAME.updraft-RUN.tmp` (hidden: globs, directory sources and tools such as Spark skip names
//! starting with `.` or `_`). When every rank has finished every stage, the job commits
//! ([`updraft_runtime::commit`]): each rank renames its temporaries to their final names
//! (local files: an atomic rename in the same directory; S3: a server-side copy, then the
//! temporary object is deleted), and with `mode = "overwrite"` removes the part files of the
//! path that this run did not write (an earlier run on more workers, or appended parts).
//! A job that fails removes its temporaries instead, and those of any other rank it can reach
//! (names are a function of the path, the rank and the run id), so a failed job leaves the
//! output location as it was.
//!
//! Part numbers are zero-padded to the width of the largest rank, so `part-{rank}` sorts in
//! rank order (`part-00` … `part-11` on 12 workers); `mode = "append"` adds the run id after
//! the rank (`part-3-0f2a…`) so runs never collide.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use updraft_config::{PipelineSpec, SinkKind, WriteMode};
use updraft_runtime::OperatorError;
use updraft_runtime::commit::Commit;

use crate::storage::{Location, s3_copy, s3_delete, s3_list};

/// Decimal digits of `n`.
fn digits(n: u32) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// The final path of rank `rank`'s part file of sink path `pattern`.
pub fn part_path(pattern: &str, rank: u32, world: u32, mode: WriteMode, run: &str) -> String {
    let width = digits(world.saturating_sub(1));
    let mut r = format!("{rank:0width$}");
    if mode == WriteMode::Append {
        r.push('-');
        r.push_str(run);
    }
    pattern.replace("{rank}", &r)
}

/// The temporary name a part file is written under until the job commits.
pub fn temp_path(final_path: &str, run: &str) -> String {
    let (dir, name) = match final_path.rsplit_once('/') {
        Some((d, n)) => (format!("{d}/"), n),
        None => (String::new(), final_path),
    };
    format!("{dir}.{name}.updraft-{run}.tmp")
}

/// The names sink path `pattern` owns: `PREFIX<digits>[-<16 hex digits>]SUFFIX` (any rank, any
/// padding, appended or not). `overwrite` deletes such files that a run did not write.
///
/// # Errors
/// A pattern without `{rank}` (validated before) or one the regex engine refuses.
pub fn part_regex(pattern: &str) -> Result<regex::Regex, OperatorError> {
    let Some((before, after)) = pattern.split_once("{rank}") else {
        return Err(OperatorError::Invalid(format!("sink path `{pattern}` has no {{rank}}")));
    };
    regex::Regex::new(&format!(
        "^{}[0-9]+(?:-[0-9a-f]{{16}})?{}$",
        regex::escape(before),
        regex::escape(after)
    ))
    .map_err(|e| OperatorError::Invalid(format!("sink path `{pattern}`: {e}")))
}

/// The first pair of file sinks of `spec` whose part files could be taken for each other's
/// (the same path, or one path's part names matching the other's pattern, on up to 1000
/// workers), as `(sink, message)`: one sink's `overwrite` would delete the other's files.
pub fn sink_conflict(spec: &PipelineSpec) -> Option<(String, String)> {
    let sinks: Vec<(&str, &str)> = spec
        .sinks
        .iter()
        .filter_map(|s| match &s.kind {
            SinkKind::File { path, .. } => Some((s.name.as_str(), path.as_str())),
            SinkKind::Summary => None,
        })
        .collect();
    for (i, (a, pa)) in sinks.iter().enumerate() {
        let Ok(ra) = part_regex(pa) else { continue };
        for (b, pb) in sinks.iter().skip(i + 1) {
            let Ok(rb) = part_regex(pb) else { continue };
            for rank in 0..1000u32 {
                let (na, nb) =
                    (pa.replace("{rank}", &rank.to_string()), pb.replace("{rank}", &rank.to_string()));
                let clash = if rb.is_match(&na) {
                    Some(na)
                } else if ra.is_match(&nb) {
                    Some(nb)
                } else {
                    None
                };
                if let Some(name) = clash {
                    return Some((
                        (*b).to_string(),
                        format!(
                            "sink `{b}` (`{pb}`) and sink `{a}` (`{pa}`) both claim part files such as {name}: give them paths that cannot be taken for each other's"
                        ),
                    ));
                }
            }
        }
    }
    None
}

/// The part files of sink path `pattern` that exist now (written by any earlier run, on any
/// number of workers, appended or not), sorted.
///
/// # Errors
/// Listing failures.
pub fn existing_parts(pattern: &str) -> Result<Vec<String>, OperatorError> {
    let re = part_regex(pattern)?;
    let candidates: Vec<String> = match Location::parse_entry(&pattern.replace("{rank}", "*"))? {
        Location::Local(glob_path) => {
            let g = glob_path.to_string_lossy().to_string();
            match glob::glob(&g) {
                Ok(paths) => paths.filter_map(Result::ok).map(|p| p.to_string_lossy().to_string()).collect(),
                Err(e) => return Err(OperatorError::Invalid(format!("sink path `{pattern}`: {e}"))),
            }
        }
        Location::S3 { bucket, key } => {
            let prefix = key.split('*').next().unwrap_or("");
            s3_list(&bucket, prefix)?.into_iter().map(|k| format!("s3://{bucket}/{k}")).collect()
        }
    };
    let mut found: Vec<String> = candidates.into_iter().filter(|c| re.is_match(c)).collect();
    found.sort();
    Ok(found)
}

/// One file sink of the job.
#[derive(Debug, Clone)]
struct SinkFiles {
    name: String,
    pattern: String,
    mode: WriteMode,
}

/// One part file this rank is writing or has written.
#[derive(Debug, Clone)]
struct Staged {
    temp: String,
    dest: String,
    closed: bool,
}

/// The file outputs of one rank in one job run: the names its sinks write, and their commit
/// ([`Commit`]). Shared by the rank's sinks (which report what they open and close) and the
/// job driver (which commits or aborts).
#[derive(Debug)]
pub struct JobOutputs {
    rank: u32,
    world: u32,
    run: String,
    /// Another run's temporary file older than this belongs to a run that is over.
    stale_after: Duration,
    sinks: Vec<SinkFiles>,
    staged: Mutex<Vec<Staged>>,
}

/// Where one sink of one rank writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartTarget {
    /// The final name, visible after the commit.
    pub dest: Location,
    /// The name written until then.
    pub temp: Location,
}

impl JobOutputs {
    /// The outputs of rank `rank` of `world` in the run `run` (16 hex digits, the same on
    /// every rank) of `spec`.
    pub fn new(spec: &PipelineSpec, rank: u32, world: u32, run: &str) -> Arc<JobOutputs> {
        let sinks = spec
            .sinks
            .iter()
            .filter_map(|s| match &s.kind {
                SinkKind::File { path, mode, .. } => {
                    Some(SinkFiles { name: s.name.clone(), pattern: path.clone(), mode: *mode })
                }
                SinkKind::Summary => None,
            })
            .collect();
        // Every worker of a run stops by its job timeout; twice that (an hour at least) is over.
        let stale_after = (spec.runtime.job_timeout * 2).max(Duration::from_secs(3600));
        Arc::new(JobOutputs {
            rank,
            world,
            run: run.to_string(),
            stale_after,
            sinks,
            staged: Mutex::new(Vec::new()),
        })
    }

    /// The run id.
    pub fn run(&self) -> &str {
        &self.run
    }

    fn sink(&self, name: &str) -> Result<&SinkFiles, OperatorError> {
        self.sinks
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| OperatorError::Invalid(format!("sink `{name}` is not a file sink of this job")))
    }

    /// Where sink `name` of this rank writes.
    ///
    /// # Errors
    /// An unknown sink or a bad URL.
    pub fn target(&self, name: &str) -> Result<PartTarget, OperatorError> {
        let s = self.sink(name)?;
        let dest = part_path(&s.pattern, self.rank, self.world, s.mode, &self.run);
        let temp = temp_path(&dest, &self.run);
        Ok(PartTarget { dest: Location::parse(&dest)?, temp: Location::parse(&temp)? })
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Vec<Staged>> {
        self.staged.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A sink created its temporary file.
    pub fn opened(&self, target: &PartTarget) {
        self.staged().push(Staged {
            temp: target.temp.to_string(),
            dest: target.dest.to_string(),
            closed: false,
        });
    }

    /// A sink finished writing its temporary file.
    pub fn closed(&self, target: &PartTarget) {
        let temp = target.temp.to_string();
        for s in self.staged().iter_mut().filter(|s| s.temp == temp) {
            s.closed = true;
        }
    }

    fn publish(&self, s: &Staged) -> Result<(), OperatorError> {
        match (Location::parse(&s.temp)?, Location::parse(&s.dest)?) {
            (Location::Local(from), Location::Local(to)) => {
                std::fs::rename(&from, &to).map_err(|source| OperatorError::Io {
                    context: format!("cannot rename {} to {}", from.display(), to.display()),
                    source,
                })
            }
            (Location::S3 { bucket, key: from }, Location::S3 { key: to, .. }) => {
                s3_copy(&bucket, &from, &to)?;
                s3_delete(&bucket, &from)
            }
            _ => Err(OperatorError::Invalid(format!("{} and {} are not in one store", s.temp, s.dest))),
        }
    }

    /// Removes part files of overwritten sinks that this run did not write (never a file any
    /// sink of this run wrote).
    fn remove_stale(&self) -> Result<(), OperatorError> {
        let new: Vec<String> = self
            .sinks
            .iter()
            .flat_map(|s| (0..self.world).map(|r| part_path(&s.pattern, r, self.world, s.mode, &self.run)))
            .collect();
        for s in self.sinks.iter().filter(|s| s.mode == WriteMode::Overwrite) {
            let local = !s.pattern.starts_with("s3://");
            // Objects are shared: one rank lists and deletes. Local paths may be a different
            // disk on every rank: each cleans its own view.
            if !local && self.rank != 0 {
                continue;
            }
            for stale in existing_parts(&s.pattern)?.into_iter().filter(|p| !new.contains(p)) {
                remove(&stale);
            }
            if local {
                // Temporaries of earlier runs that were killed before they could clean up: old
                // enough that their run is over (a live run's are left alone).
                let mine = part_path(&s.pattern, self.rank, self.world, s.mode, &self.run);
                for (leftover, age) in other_temps(&mine, &self.run) {
                    if age >= self.stale_after {
                        remove(&leftover.to_string_lossy());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Removes a file or object, ignoring one that is already gone.
fn remove(at: &str) {
    match Location::parse(at) {
        Ok(Location::Local(p)) => {
            if let Err(e) = std::fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %p.display(), %e, "cannot remove");
            }
        }
        Ok(Location::S3 { bucket, key }) => {
            if let Err(e) = s3_delete(&bucket, &key) {
                tracing::warn!(%bucket, %key, %e, "cannot delete");
            }
        }
        Err(_) => {}
    }
}

/// Temporary files of part file `dest` (local) of runs other than `run`, with their age.
fn other_temps(dest: &str, run: &str) -> Vec<(PathBuf, Duration)> {
    let path = Path::new(dest);
    if dest.starts_with("s3://") {
        return Vec::new();
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return Vec::new() };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!(".{}.updraft-", name.to_string_lossy());
    let mine = format!("{prefix}{run}.tmp");
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.starts_with(&prefix) && n.ends_with(".tmp") && n != mine
        })
        .map(|e| {
            let age = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            (e.path(), age.unwrap_or_default())
        })
        .collect()
}

impl Commit for JobOutputs {
    fn commit(&self) -> Result<(), String> {
        let staged = self.staged().clone();
        if let Some(open) = staged.iter().find(|s| !s.closed) {
            return Err(format!("{} was not finished", open.dest));
        }
        // Another job writing the same files now: publishing would mix the two jobs' parts.
        for s in &staged {
            if let Some((other, _)) =
                other_temps(&s.dest, &self.run).into_iter().find(|(_, age)| *age < self.stale_after)
            {
                return Err(format!(
                    "another job is writing {} at the same time ({} exists); jobs must not write one path at once",
                    s.dest,
                    other.display()
                ));
            }
        }
        for s in &staged {
            self.publish(s).map_err(|e| e.to_string())?;
        }
        self.staged().clear();
        self.remove_stale().map_err(|e| e.to_string())
    }

    fn abort(&self) {
        let staged = std::mem::take(&mut *self.staged());
        for s in &staged {
            remove(&s.temp);
        }
        // Other ranks' temporaries, in case they died before they could remove them: their
        // names are known. Objects are deleted by rank 0 only (one request per object).
        for s in &self.sinks {
            for r in (0..self.world).filter(|r| *r != self.rank) {
                let temp = temp_path(&part_path(&s.pattern, r, self.world, s.mode, &self.run), &self.run);
                if !temp.starts_with("s3://") || self.rank == 0 {
                    remove(&temp);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_are_padded_to_the_largest_rank() {
        assert_eq!(part_path("out/p-{rank}.parquet", 3, 4, WriteMode::Overwrite, "r"), "out/p-3.parquet");
        assert_eq!(part_path("out/p-{rank}.parquet", 3, 12, WriteMode::Overwrite, "r"), "out/p-03.parquet");
        assert_eq!(part_path("out/p-{rank}.parquet", 10, 11, WriteMode::Overwrite, "r"), "out/p-10.parquet");
        assert_eq!(part_path("p-{rank}.csv", 0, 1, WriteMode::Append, "00ff"), "p-0-00ff.csv");
        assert_eq!(temp_path("out/p-3.parquet", "ab"), "out/.p-3.parquet.updraft-ab.tmp");
        assert_eq!(temp_path("s3://b/k/p-3.parquet", "ab"), "s3://b/k/.p-3.parquet.updraft-ab.tmp");
        assert_eq!(temp_path("p.csv", "ab"), ".p.csv.updraft-ab.tmp");
    }

    #[test]
    fn existing_parts_match_any_width_and_appended_runs_only() {
        let dir = tempfile::tempdir().expect("tmp");
        for name in [
            "p-0.csv",
            "p-07.csv",
            "p-3-0123456789abcdef.csv",
            "p-x.csv",
            "q-1.csv",
            ".p-1.csv.updraft-a.tmp",
        ] {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        let pattern = format!("{}/p-{{rank}}.csv", dir.path().display());
        let found = existing_parts(&pattern).expect("list");
        let names: Vec<String> =
            found.iter().map(|p| p.rsplit('/').next().unwrap_or_default().to_string()).collect();
        assert_eq!(names, vec!["p-0.csv", "p-07.csv", "p-3-0123456789abcdef.csv"]);
    }

    #[test]
    fn commit_publishes_and_removes_stale_parts_and_abort_removes_temporaries() {
        let dir = tempfile::tempdir().expect("tmp");
        let pattern = format!("{}/out/p-{{rank}}.csv", dir.path().display());
        let spec = updraft_config::parse_pipeline(
            &format!(
                "[source.a]\nkind = \"generate\"\nrows = 1\n[sink.s]\nkind = \"csv\"\ninput = \"a\"\npath = {pattern:?}\n"
            ),
            "t",
        )
        .expect("valid");
        std::fs::create_dir_all(dir.path().join("out")).expect("dir");
        for stale in ["p-5.csv", "p-00.csv", ".p-0.csv.updraft-0000000000000001.tmp"] {
            std::fs::write(dir.path().join("out").join(stale), "old").expect("write");
        }
        // The killed run's temporary file is two hours old.
        let old = std::fs::File::options()
            .write(true)
            .open(dir.path().join("out/.p-0.csv.updraft-0000000000000001.tmp"))
            .expect("open");
        old.set_modified(std::time::SystemTime::now() - Duration::from_secs(7200)).expect("mtime");
        let outputs = JobOutputs::new(&spec, 0, 2, "00000000000000aa");
        let t = outputs.target("s").expect("target");
        let Location::Local(temp) = &t.temp else { panic!("local") };
        std::fs::write(temp, "new").expect("write");
        outputs.opened(&t);
        assert!(outputs.commit().is_err(), "an unfinished file is not published");
        outputs.closed(&t);
        outputs.commit().expect("commit");
        let mut left: Vec<String> = std::fs::read_dir(dir.path().join("out"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(left, vec!["p-0.csv"]);

        let failed = JobOutputs::new(&spec, 1, 2, "00000000000000bb");
        let mine = failed.target("s").expect("target");
        let Location::Local(temp) = &mine.temp else { panic!("local") };
        std::fs::write(temp, "half").expect("write");
        failed.opened(&mine);
        // Rank 0 of the same run died after creating its temporary.
        let other = temp_path(
            &part_path(&pattern, 0, 2, WriteMode::Overwrite, "00000000000000bb"),
            "00000000000000bb",
        );
        std::fs::write(&other, "half").expect("write");
        failed.abort();
        assert!(!temp.exists() && !Path::new(&other).exists());
        assert_eq!(std::fs::read_to_string(dir.path().join("out/p-0.csv")).expect("kept"), "new");
    }

    #[test]
    fn a_commit_refuses_to_mix_with_a_live_run_and_overlapping_sinks_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let pattern = format!("{}/p-{{rank}}.csv", dir.path().display());
        let pipeline = |extra: &str| {
            format!(
                "[source.a]\nkind = \"generate\"\nrows = 1\n[sink.s]\nkind = \"csv\"\ninput = \"a\"\npath = {pattern:?}\n{extra}"
            )
        };
        let spec = updraft_config::parse_pipeline(&pipeline(""), "t").expect("valid");
        let outputs = JobOutputs::new(&spec, 0, 1, "00000000000000aa");
        let t = outputs.target("s").expect("target");
        let Location::Local(temp) = &t.temp else { panic!("local") };
        std::fs::write(temp, "mine").expect("write");
        outputs.opened(&t);
        outputs.closed(&t);
        std::fs::write(dir.path().join(".p-0.csv.updraft-00000000000000bb.tmp"), "theirs").expect("write");
        let e = outputs.commit().expect_err("a live run writes the same file");
        assert!(e.contains("another job is writing") && e.contains("00000000000000bb"), "{e}");
        assert!(!dir.path().join("p-0.csv").exists());

        let same = pipeline(&format!("[sink.t]\nkind = \"csv\"\ninput = \"a\"\npath = {pattern:?}\n"));
        let (sink, msg) =
            sink_conflict(&updraft_config::parse_pipeline(&same, "t").expect("valid")).expect("clash");
        assert_eq!(sink, "t");
        assert!(msg.contains("both claim part files"), "{msg}");
        let nested = pipeline(&format!(
            "[sink.t]\nkind = \"csv\"\ninput = \"a\"\npath = {:?}\n",
            format!("{}/p-1{{rank}}.csv", dir.path().display())
        ));
        assert!(sink_conflict(&updraft_config::parse_pipeline(&nested, "t").expect("valid")).is_some());
        let apart = pipeline(&format!(
            "[sink.t]\nkind = \"csv\"\ninput = \"a\"\npath = {:?}\n",
            format!("{}/q-{{rank}}.csv", dir.path().display())
        ));
        assert!(sink_conflict(&updraft_config::parse_pipeline(&apart, "t").expect("valid")).is_none());
    }
}
