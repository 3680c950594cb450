//! Metrics from a real 4-worker run: every worker's counters appear in the one exposition the
//! launcher gathers (pushed through the rendezvous), with `job` and `worker` labels, agree with
//! the workers' own reports, and pass `promtool check metrics` (required in CI through
//! `UPDRAFT_REQUIRE_PROMTOOL=1`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

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

    // Every metric the bundled Grafana dashboard queries exists in a real run.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/monitoring/grafana-dashboard.json"
    ))
    .expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let mut queried = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            for (i, _) in expr.match_indices("updraft_") {
                let name: String =
                    expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                queried.push(name);
            }
        }
    }
    assert!(queried.len() >= 10);
    for name in queried {
        assert!(
            all.iter().any(|(n, _, _)| *n == name),
            "the dashboard queries {name}, which no worker exports"
        );
    }

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

/// Small pieces of batches to one destination travel coalesced: 8 workers hash-partition
/// batches of 8,192 rows into pieces of about 1,000 rows (~25 KiB), and the links carry about
/// one data frame per MiB (and one credit frame back for each), not one per piece. (That the
/// answers stay right is what every multi-worker test checks.)
#[test]
fn small_pieces_to_one_destination_share_frames() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("p.toml");
    std::fs::write(&file, generated_join_pipeline(250_000, 0.9, "batch_rows = 8192")).expect("pipeline");
    let run = |workers: &str, metrics: &std::path::Path| -> serde_json::Value {
        let out = Command::new(bin())
            .args(["run", "--quiet", "--workers", workers, "--metrics-file"])
            .arg(metrics)
            .arg(&file)
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("report")
    };
    let prom = dir.path().join("m8.prom");
    let eight = run("8", &prom);
    let text = std::fs::read_to_string(&prom).expect("metrics file");
    let total = |name: &str| samples(&text).iter().filter(|s| s.0 == name).map(|s| s.2).sum::<f64>();
    let (frames, bytes) = (total("updraft_link_frames_sent_total"), total("updraft_link_bytes_sent_total"));
    // Each worker's generator makes 250k rows a side in batches of 8,192: uncoalesced, every
    // piece to each of 7 peers is a frame (~2 x 31 x 7 per worker) plus its credit frame.
    let pieces = 2.0 * (250_000f64 / 8192.0).ceil() * 7.0 * 8.0;
    let pairs = 8.0 * 7.0;
    assert!(bytes > 8.0 * 1024.0 * 1024.0, "{bytes} bytes over links");
    assert!(
        frames <= 3.0 * bytes / (1024.0 * 1024.0) + 12.0 * pairs && frames < pieces,
        "{frames} frames for {bytes} bytes ({pieces} pieces)"
    );
    assert!(eight["sinks"][0]["summary"]["rows"].as_u64().is_some_and(|r| r > 1_000_000), "{eight}");
}

/// `bench shuffle` and `bench join` run and report the shuffle against the loopback baseline,
/// for each protection asked for.
#[test]
fn bench_shuffle_and_join_report_the_shuffle_against_loopback() {
    for which in ["shuffle", "join"] {
        let out = Command::new(bin())
            .args(["bench", which, "--workers", "2", "--rows", "20000", "--repeats", "2"])
            .args(["--baseline-bytes", "8MiB", "--encryption", "aes-256-gcm,none"])
            .output()
            .expect("bench");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.starts_with(&format!("bench {which}: 2 workers")), "{text}");
        for mode in ["aes-256-gcm", "none"] {
            let line = text.lines().find(|l| l.starts_with(&format!("median of 2 ({mode})"))).expect(mode);
            let ratio: f64 = line.rsplit(' ').next().and_then(|r| r.parse().ok()).expect("a ratio");
            assert!(ratio > 0.0 && ratio.is_finite(), "{line}");
        }
    }
}

#[test]
fn bench_scaling_writes_results_and_plots() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("results");
    let run = Command::new(bin())
        .args(["bench", "scaling", "--workers", "1,2", "--rows", "5000", "--out"])
        .arg(&out)
        .output()
        .expect("run");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    for f in [
        "scaling.json",
        "scaling.csv",
        "scaling-time-weak.svg",
        "scaling-time-strong.svg",
        "scaling-efficiency.svg",
    ] {
        assert!(out.join(f).metadata().is_ok_and(|m| m.len() > 0), "{f} missing");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("scaling.json")).expect("json")).expect("parse");
    let runs = json["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 4, "weak and strong on 1 and 2 workers");
    // Weak scaling on N workers joins the generated tables of N ranks: check the row counts
    // against the specification computed here.
    for n in [1u32, 2] {
        let run = runs.iter().find(|r| r["mode"] == "weak" && r["workers"] == n).expect("weak run");
        let expected = naive_join(
            &generated_table(1, 5000, n, 0.9),
            &generated_table(2, 5000, n, 0.9),
            &[0],
            &[0],
            &[0],
        );
        assert_eq!(run["output_rows"].as_u64(), Some(expected.len() as u64), "weak, {n} workers");
    }
    let weak1 = runs.iter().find(|r| r["mode"] == "weak" && r["workers"] == 1).expect("base");
    assert_eq!(weak1["efficiency"].as_f64(), Some(1.0), "the base run defines efficiency 1");
    let csv = std::fs::read_to_string(out.join("scaling.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 5, "header and one line per run");
    assert!(csv.lines().next().is_some_and(|h| h.contains("busy_join_s")), "{csv}");
}

/// GET /metrics over a plain TCP connection; None while nothing answers.
fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let (head, rest) = body.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| rest.to_string())
}

#[test]
fn a_running_job_is_visible_on_one_live_endpoint() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("p.toml");
    // Large enough to still be running while the endpoint is scraped.
    std::fs::write(&file, generated_join_pipeline(3_000_000, 0.9, "")).expect("pipeline");
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(bin())
        .args(["run", "--quiet", "--workers", "4", "--metrics-listen", &addr])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut live = None;
    while std::time::Instant::now() < deadline {
        if let Some(text) = scrape(&addr) {
            // Every worker, each with its links up (pushed as soon as the mesh is made).
            let workers: std::collections::BTreeSet<String> = samples(&text)
                .into_iter()
                .filter(|(n, _, _)| n == "updraft_punch_successes_total")
                .filter_map(|(_, l, _)| l.get("worker").cloned())
                .collect();
            if workers.len() == 4 {
                live = Some(text);
                break;
            }
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let still_running = child.try_wait().expect("wait").is_none();
    let status = child.wait().expect("wait");
    assert!(status.success());
    let text = live.expect("all 4 workers on the live endpoint before the job ended");
    assert!(still_running, "the scrape happened while the job ran");
    assert!(text.contains("updraft_punch_successes_total{"), "{text}");
}

#[test]
fn a_standalone_rendezvous_serves_the_metrics_of_workers_started_by_hand() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("p.toml");
    std::fs::write(&file, generated_join_pipeline(20_000, 0.9, "")).expect("pipeline");
    let mut rdv = Command::new(bin())
        .args([
            "rendezvous",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--metrics-keep",
            "3s",
        ])
        .env("UPDRAFT_SECRET", "standalone-secret")
        .stdout(Stdio::piped())
        .spawn()
        .expect("rendezvous");
    let mut lines = BufReader::new(rdv.stdout.take().expect("stdout")).lines();
    let mut next = |prefix: &str| {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        line.strip_prefix(prefix).map(str::to_string).unwrap_or_else(|| panic!("expected `{prefix}`: {line}"))
    };
    let listen = next("rendezvous listening on ");
    let metrics = next("job metrics at http://").trim_end_matches("/metrics").to_string();
    let _rdv = Kill(vec![rdv]);
    // Workers name the rendezvous by host name, as on separate hosts.
    let port = listen.rsplit(':').next().expect("port").to_string();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(bin())
                .args(["worker", "--rendezvous", &format!("localhost:{port}"), "--job", "by-hand"])
                .args(["--rank", &rank.to_string(), "--world", "2", "--bind", "127.0.0.1", "--pipeline"])
                .arg(&file)
                .env("UPDRAFT_SECRET", "standalone-secret")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("worker")
        })
        .collect();
    let workers: Vec<_> = children.into_iter().map(|c| c.wait_with_output().expect("worker")).collect();
    for (rank, out) in workers.iter().enumerate() {
        assert!(out.status.success(), "rank {rank}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = scrape(&metrics).expect("the rendezvous serves /metrics");
    for rank in 0..2 {
        assert!(
            text.contains(&format!("worker=\"{rank}\"")) && text.contains("run=\"by-hand\""),
            "worker {rank}'s metrics are missing:\n{}",
            &text[..text.len().min(2000)]
        );
    }
    // A finished job's series leave the endpoint `--metrics-keep` after its last push.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let later = scrape(&metrics).expect("the rendezvous still serves /metrics");
    assert!(!later.contains("run=\"by-hand\""), "expired series are still served:\n{later}");
}

/// A GET of `path` on `addr` (HTTP/1.1, connection closed), the body when the answer is 200.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let (head, rest) = body.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| rest.to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// A real Prometheus server scrapes a job's live endpoint: every worker's series arrive, named
/// by the pipeline's job and the run, and the job's state ends as succeeded on every worker.
#[test]
fn a_prometheus_server_scrapes_every_worker_of_a_job() {
    let Ok(version) = Command::new("prometheus").arg("--version").output() else {
        assert!(
            std::env::var("UPDRAFT_REQUIRE_PROMTOOL").is_err(),
            "UPDRAFT_REQUIRE_PROMTOOL is set but there is no prometheus server (Debian: apt install prometheus)"
        );
        eprintln!("skipped: no prometheus server installed");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().expect("tmp");
    let (metrics_port, prom_port) = (free_port(), free_port());
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: updraft\n    honor_labels: true\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus");
    let _prom = Kill(vec![prom]);
    let prom_addr = format!("127.0.0.1:{prom_port}");
    let ready = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Ready, and scraping the target (it applies discovered targets every few seconds).
    let scraping = |body: &str| body.contains("\"health\":\"down\"") || body.contains("\"health\":\"up\"");
    while !http_get(&prom_addr, "/api/v1/targets").is_some_and(|b| scraping(&b)) {
        assert!(std::time::Instant::now() < ready, "prometheus did not start scraping");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let file = dir.path().join("p.toml");
    let pipeline = generated_join_pipeline(200_000, 0.9, "").replacen(
        "[source",
        "[job]\nname = \"scraped\"\n\n[source",
        1,
    );
    std::fs::write(&file, pipeline).expect("pipeline");
    let out = Command::new(bin())
        .current_dir(dir.path())
        .args(["run", "--quiet", "--workers", "3", "--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .args(["--metrics-linger", "4s"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Prometheus has scraped during the job and the linger; ask what it holds (over a range:
    // the series went stale when the endpoint closed).
    let query = "/api/v1/query?query=max_over_time(updraft_job_state%7Bstate%3D%22succeeded%22%7D%5B5m%5D)";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut workers = std::collections::BTreeSet::new();
    let mut last = String::new();
    while std::time::Instant::now() < deadline && workers.len() < 3 {
        if let Some(body) = http_get(&prom_addr, query) {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            workers = v["data"]["result"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter(|s| s["metric"]["job"] == "scraped" && s["metric"]["run"].is_string())
                        .filter(|s| s["value"][1] == "1")
                        .filter_map(|s| s["metric"]["worker"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            last = body;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(workers.len(), 3, "every worker's final state in Prometheus: {last}");
}
