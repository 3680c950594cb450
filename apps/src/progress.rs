//! The progress line of `updraft run` on a terminal: elapsed time, rows each phase has emitted
//! across workers, bytes sent over links, and which ranks are still working. Read from the
//! metrics every worker pushes to the launcher's rendezvous (so it moves as often as they push).

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use updraft_runtime::metrics as names;
use updraft_runtime::plan::PhysicalPlan;

/// A progress line, or nothing when it is off.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Plain lines on stderr instead of a bar: when the last one was printed.
    lines: Option<std::sync::Mutex<Option<std::time::Instant>>>,
    /// (stage name, phase label) of every stage, in plan order.
    stages: Vec<(String, &'static str)>,
}

impl Progress {
    /// A progress line for a job running `plan`, drawn on stderr when `on`.
    pub fn new(on: bool, plan: Option<&PhysicalPlan>) -> Progress {
        let stages = plan
            .map(|p| p.stages.iter().map(|s| (s.name.clone(), s.phase.label())).collect())
            .unwrap_or_default();
        let bar = on.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Progress { bar, lines: None, stages }
    }

    /// The progress line as plain text on stderr, `progress: ...` at most once a second, for a
    /// program that reads it from a pipe and shows it itself (the Python package does).
    pub fn lines(plan: Option<&PhysicalPlan>) -> Progress {
        Progress { lines: Some(std::sync::Mutex::new(None)), ..Progress::new(false, plan) }
    }

    /// Shows the state described by `exposition` (every worker's pushed metrics) with the
    /// ranks `running` still working out of `world`.
    pub fn update(&self, exposition: &str, running: &[u32], world: u32) {
        if let Some(bar) = &self.bar {
            bar.set_message(self.line(exposition, running, world));
        }
        if let Some(Ok(mut last)) = self.lines.as_ref().map(|l| l.lock())
            && last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            *last = Some(std::time::Instant::now());
            eprintln!("progress: {}", self.line(exposition, running, world));
        }
    }

    /// The progress line's text.
    pub fn line(&self, exposition: &str, running: &[u32], world: u32) -> String {
        let rows = sum_by_label(exposition, names::OPERATOR_ROWS_OUT, "operator");
        let mut by_phase: Vec<(&'static str, f64)> = Vec::new();
        for (stage, phase) in &self.stages {
            let n = rows.get(stage).copied().unwrap_or(0.0);
            match by_phase.iter_mut().find(|(p, _)| p == phase) {
                Some((_, total)) => *total += n,
                None => by_phase.push((phase, n)),
            }
        }
        let phases: Vec<String> = by_phase
            .iter()
            .filter(|(p, _)| *p != "write")
            .map(|(p, n)| format!("{p} {}", count(*n)))
            .collect();
        let received = sum_by_label(exposition, names::OPERATOR_ROWS_IN, "operator");
        let written: f64 = self
            .stages
            .iter()
            .filter(|(_, p)| *p == "write")
            .filter_map(|(s, _)| received.get(s).copied())
            .fold(0.0, |a, b| a + b);
        let sent = sum_by_label(exposition, names::LINK_BYTES_SENT, "").values().fold(0.0, |a, b| a + b);
        let working = if running.is_empty() {
            "every rank done".to_string()
        } else if running.len() <= 8 {
            format!("working: rank {}", running.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
        } else {
            format!("{} of {world} ranks working", running.len())
        };
        format!(
            "rows: {} | into sinks {} | {} over links | {working}",
            if phases.is_empty() { "-".into() } else { phases.join(", ") },
            count(written),
            bytes(sent)
        )
    }

    /// Removes the line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The values of `metric` in a Prometheus text exposition, summed by the value of `label`
/// (all under `""` when `label` is empty).
pub fn sum_by_label(exposition: &str, metric: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(metric) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        let key = if label.is_empty() {
            String::new()
        } else {
            let needle = format!("{label}=\"");
            match rest.find(&needle) {
                Some(at) => rest[at + needle.len()..].split('"').next().unwrap_or_default().to_string(),
                None => continue,
            }
        };
        *out.entry(key).or_insert(0.0) += value;
    }
    out
}

/// `n` rows, short: 950, 12.3k, 4.44M, 1.20G.
fn count(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.2}G", n / 1e9),
        n if n >= 1e6 => format!("{:.2}M", n / 1e6),
        n if n >= 1e4 => format!("{:.1}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

/// `n` bytes in binary units.
fn bytes(n: f64) -> String {
    match n {
        n if n >= 1024.0 * 1024.0 * 1024.0 => format!("{:.2} GiB", n / (1024.0 * 1024.0 * 1024.0)),
        n if n >= 1024.0 * 1024.0 => format!("{:.1} MiB", n / (1024.0 * 1024.0)),
        n if n >= 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n => format!("{n:.0} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# HELP updraft_operator_rows_out_total Rows emitted by an operator.
updraft_operator_rows_out_total{job=\"j\",worker=\"0\",operator=\"left\"} 1500000
updraft_operator_rows_out_total{job=\"j\",worker=\"1\",operator=\"left\"} 500000
updraft_operator_rows_out_total{job=\"j\",worker=\"0\",operator=\"joined\"} 12000
updraft_operator_rows_out_total_other{job=\"j\",worker=\"0\",operator=\"left\"} 7
updraft_operator_rows_in_total{job=\"j\",worker=\"0\",operator=\"out\"} 11000
updraft_link_bytes_sent_total{job=\"j\",worker=\"0\",peer=\"1\",link=\"direct\"} 1048576
updraft_link_bytes_sent_total{job=\"j\",worker=\"1\",peer=\"0\",link=\"direct\"} 1048576
";

    #[test]
    fn the_line_sums_workers_by_phase() {
        let p = Progress {
            bar: None,
            lines: None,
            stages: vec![("left".into(), "read"), ("joined".into(), "join"), ("out".into(), "write")],
        };
        assert_eq!(
            p.line(EXPOSITION, &[1, 3], 4),
            "rows: read 2.00M, join 12.0k | into sinks 11.0k | 2.0 MiB over links | working: rank 1, 3"
        );
        assert!(p.line("", &[], 4).ends_with("every rank done"));
    }
}
