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

/// The part files of sink path `pattern` that exist now (written by any earlier run, on any
/// number of workers, appended or not), sorted.
///
/// # Errors
/// Listing failures.
pub fn existing_parts(pattern: &str) -> Result<Vec<String>, OperatorError> {
    let Some((before, after)) = pattern.split_once("{rank}") else { return Ok(Vec::new()) };
    let re = regex::Regex::new(&format!(
        "^{}[0-9]+(?:-[0-9a-f]{{16}})?{}$",
        regex::escape(before),
        regex::escape(after)
    ))
    .map_err(|e| OperatorError::Invalid(format!("sink path `{pattern}`: {e}")))?;
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
        Arc::new(JobOutputs { rank, world, run: run.to_string(), sinks, staged: Mutex::new(Vec::new()) })
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

    /// Removes part files of overwritten sinks that this run did not write.
    fn remove_stale(&self) -> Result<(), OperatorError> {
        for s in self.sinks.iter().filter(|s| s.mode == WriteMode::Overwrite) {
            let new: Vec<String> =
                (0..self.world).map(|r| part_path(&s.pattern, r, self.world, s.mode, &self.run)).collect();
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
                // Temporaries of earlier runs that were killed before they could clean up.
                let mine = part_path(&s.pattern, self.rank, self.world, s.mode, &self.run);
                for leftover in leftover_temps(&mine, &self.run) {
                    remove(&leftover.to_string_lossy());
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

/// Temporary files of part file `dest` left by runs other than `run`.
fn leftover_temps(dest: &str, run: &str) -> Vec<PathBuf> {
    let path = Path::new(dest);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return Vec::new() };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!(".{}.updraft-", name.to_string_lossy());
    let mine = format!("{prefix}{run}.tmp");
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".tmp") && *n != mine)
        .map(|n| dir.join(n))
        .collect()
}

impl Commit for JobOutputs {
    fn commit(&self) -> Result<(), String> {
        let staged = self.staged().clone();
        if let Some(open) = staged.iter().find(|s| !s.closed) {
            return Err(format!("{} was not finished", open.dest));
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
}
