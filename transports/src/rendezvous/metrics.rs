//! Metrics pushed by workers that cannot be scraped (functions behind NATs, short-lived
//! processes): each worker sends its Prometheus text exposition to the rendezvous every few
//! seconds and once at the end; the rendezvous keeps the latest per (job, rank) and renders them
//! as one exposition with `job` and `worker` labels added to every sample.
//!
//! Plain state, no I/O: the server feeds it, an HTTP endpoint renders it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Latest snapshot per (job, rank).
#[derive(Debug)]
pub struct MetricsStore {
    keep: Duration,
    snapshots: BTreeMap<(String, u32), (Instant, String)>,
}

/// Largest exposition accepted from one worker.
pub const MAX_SNAPSHOT: usize = 4 * 1024 * 1024;

impl MetricsStore {
    /// A store that forgets a worker `keep` after its last push.
    pub fn new(keep: Duration) -> Self {
        MetricsStore { keep, snapshots: BTreeMap::new() }
    }

    /// Records a worker's latest exposition.
    pub fn push(&mut self, now: Instant, job: &str, rank: u32, text: String) {
        self.snapshots.insert((job.to_string(), rank), (now, text));
    }

    /// Number of workers with a snapshot.
    pub fn workers(&self) -> usize {
        self.snapshots.len()
    }

    /// Drops snapshots older than the retention.
    pub fn expire(&mut self, now: Instant) {
        let keep = self.keep;
        self.snapshots.retain(|_, (t, _)| now.duration_since(*t) < keep);
    }

    /// One exposition for every worker: `# HELP`/`# TYPE` once per metric family, every sample
    /// with `run` (the job id workers registered with) and `worker` labels first; workers label
    /// their samples with the pipeline's `job` name themselves.
    pub fn render(&self) -> String {
        // family name -> (help/type lines, samples)
        let mut families: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for ((job, rank), (_, text)) in &self.snapshots {
            let mut family = String::new();
            for line in text.lines() {
                let line = line.trim_end();
                if line.is_empty() {
                    continue;
                }
                if let Some(rest) = line.strip_prefix("# ") {
                    let mut parts = rest.splitn(3, ' ');
                    let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    if kind == "HELP" || kind == "TYPE" {
                        family = name.to_string();
                        let entry = families.entry(family.clone()).or_default();
                        if !entry.0.iter().any(|l| l == line) {
                            entry.0.push(line.to_string());
                        }
                    }
                    continue;
                }
                let labelled = add_labels(line, job, *rank);
                let name = sample_name(line);
                let key = if name.starts_with(&family) && !family.is_empty() {
                    family.clone()
                } else {
                    name.to_string()
                };
                families.entry(key).or_default().1.push(labelled);
            }
        }
        let mut out = String::new();
        let mut seen = BTreeSet::new();
        for (name, (meta, samples)) in families {
            if !seen.insert(name) {
                continue;
            }
            for m in meta {
                out.push_str(&m);
                out.push('\n');
            }
            for s in samples {
                out.push_str(&s);
                out.push('\n');
            }
        }
        out
    }
}

fn sample_name(line: &str) -> &str {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    &line[..end]
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `name{a="b"} 1` -> `name{run="j",worker="r",a="b"} 1`; `name 1` -> `name{run="j",worker="r"} 1`.
fn add_labels(line: &str, job: &str, rank: u32) -> String {
    let ours = format!("run=\"{}\",worker=\"{rank}\"", escape(job));
    let name = sample_name(line);
    let rest = &line[name.len()..];
    match rest.strip_prefix('{') {
        Some(inner) if inner.starts_with('}') => format!("{name}{{{ours}}}{}", &inner[1..]),
        Some(inner) => format!("{name}{{{ours},{inner}"),
        None => format!("{name}{{{ours}}}{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "# HELP updraft_rows rows\n# TYPE updraft_rows counter\nupdraft_rows{operator=\"j\"} 5\nupdraft_rows{operator=\"s\"} 2\n\n# TYPE up gauge\nup 1\n";

    #[test]
    fn labels_are_added_and_families_merged() {
        let mut m = MetricsStore::new(Duration::from_secs(60));
        let t = Instant::now();
        m.push(t, "job1", 0, A.to_string());
        m.push(t, "job1", 1, A.replace(" 5", " 7"));
        let out = m.render();
        assert_eq!(out.matches("# TYPE updraft_rows counter").count(), 1);
        assert!(out.contains("updraft_rows{run=\"job1\",worker=\"0\",operator=\"j\"} 5"), "{out}");
        assert!(out.contains("updraft_rows{run=\"job1\",worker=\"1\",operator=\"j\"} 7"), "{out}");
        assert!(out.contains("up{run=\"job1\",worker=\"1\"} 1"), "{out}");
        // Samples of a family stay together, after its HELP and TYPE.
        let type_at = out.find("# TYPE updraft_rows").expect("type");
        let last_sample = out.rfind("updraft_rows{").expect("sample");
        assert!(type_at < last_sample);
        assert!(!out[type_at..last_sample].contains("# TYPE up "));
    }

    #[test]
    fn stale_workers_are_forgotten_and_the_latest_push_wins() {
        let mut m = MetricsStore::new(Duration::from_secs(10));
        let t = Instant::now();
        m.push(t, "j", 0, "a 1\n".into());
        m.push(t + Duration::from_secs(5), "j", 0, "a 2\n".into());
        m.push(t, "j", 1, "a 3\n".into());
        m.expire(t + Duration::from_secs(12));
        assert_eq!(m.workers(), 1);
        assert_eq!(m.render(), "a{run=\"j\",worker=\"0\"} 2\n");
    }

    #[test]
    fn histogram_suffixes_stay_in_their_family() {
        let text =
            "# TYPE t histogram\nt_bucket{le=\"1\"} 1\nt_bucket{le=\"+Inf\"} 1\nt_sum 0.5\nt_count 1\n";
        let mut m = MetricsStore::new(Duration::from_secs(10));
        m.push(Instant::now(), "j", 3, text.into());
        let out = m.render();
        assert!(
            out.starts_with("# TYPE t histogram\nt_bucket{run=\"j\",worker=\"3\",le=\"1\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("t_count{run=\"j\",worker=\"3\"} 1"));
    }
}
