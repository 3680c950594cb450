//! Metrics from a real 4-worker run: every worker's counters appear in the one exposition the
//! launcher gathers (pushed through the rendezvous), with `job` and `worker` labels, agree with
//! the workers' own reports, and pass `promtool check metrics` (required in CI through
//! `UPDRAFT_REQUIRE_PROMTOOL=1`).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use common::*;

/// (name, labels, value) of every sample.
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (head, value) = line.rsplit_once(' ').expect("sample has a value");
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => {
                let inner = rest.strip_suffix('}').expect("closing brace");
                let labels = inner
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("k=\"v\"");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (head.to_string(), BTreeMap::new()),
        };
        out.push((name, labels, value.parse().expect("numeric value")));
    }
    out
}

#[test]
fn one_exposition_holds_every_workers_metrics() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("p.toml");
    std::fs::write(&file, generated_join_pipeline(50_000, 0.9, "")).expect("pipeline");
    let prom = dir.path().join("metrics.prom");
    let report = dir.path().join("report.json");
    let out = Command::new(bin())
        .args(["run", "--quiet", "--workers", "4", "--metrics-file"])
        .arg(&prom)
        .arg("--report")
        .arg(&report)
        .arg(&file)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&prom).expect("metrics file");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    let all = samples(&text);
    let job = all.first().and_then(|s| s.1.get("job")).cloned().expect("a job label");
    for worker in 0..4u32 {
        let w = worker.to_string();
        let of = |name: &str, extra: &[(&str, &str)]| -> Vec<f64> {
            all.iter()
                .filter(|(n, l, _)| {
                    n == name
                        && l.get("worker") == Some(&w)
                        && l.get("job") == Some(&job)
                        && extra.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
                })
                .map(|s| s.2)
                .collect()
        };
        // The worker's own report says how many rows its join emitted.
        let own = report["workers"][worker as usize]["operators"]
            .as_array()
            .expect("operators")
            .iter()
            .find(|o| o["name"] == "joined")
            .and_then(|o| o["rows_out"].as_f64())
            .expect("join stats");
        assert_eq!(of("updraft_operator_rows_out_total", &[("operator", "joined")]), vec![own], "worker {w}");
        assert_eq!(
            of("updraft_punch_successes_total", &[]).iter().sum::<f64>(),
            3.0,
            "worker {w} linked 3 peers"
        );
        let peers: Vec<f64> = (0..4u32)
            .filter(|p| *p != worker)
            .map(|p| of("updraft_link_bytes_sent_total", &[("peer", &p.to_string())]).iter().sum::<f64>())
            .collect();
        assert!(peers.iter().all(|b| *b > 0.0), "worker {w} sent to every peer: {peers:?}");
        assert_eq!(of("updraft_peak_memory_bytes", &[]).len(), 1, "worker {w}");
        assert!(
            !of("updraft_operator_call_seconds_count", &[("operator", "joined")]).is_empty(),
            "histogram of worker {w}"
        );
    }
    assert!(text.contains("# HELP updraft_operator_rows_in_total "), "metrics have help texts");

    let required = std::env::var("UPDRAFT_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("feed promtool");
            let res = child.wait_with_output().expect("promtool");
            assert!(
                res.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&res.stdout),
                String::from_utf8_lossy(&res.stderr)
            );
        }
        Err(e) => {
            assert!(!required, "promtool is required (UPDRAFT_REQUIRE_PROMTOOL=1) but cannot run: {e}");
            eprintln!("promtool not installed; exposition not linted");
        }
    }
}
