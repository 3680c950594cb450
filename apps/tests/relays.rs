//! The Redis and S3 relays as channels of real jobs: a 4-worker join forced onto each relay
//! gives the rows a direct run gives (and a naive join computes), every pair reports the
//! channel it used, and nothing is left in the relay afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::process::Command;

use common::*;

fn channels(report: &serde_json::Value) -> Vec<String> {
    report["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .flat_map(|w| w["channels"].as_array().expect("channels").iter())
        .map(|c| c["channel"].as_str().expect("channel").to_string())
        .collect()
}

/// Keys of job runs (`updraft:{job hash}-{peer table hash}:...`) still in the Redis relay. The
/// benchmark test in this file uses the same server at the same time under other names.
fn redis_leftovers(url: &str) -> Vec<String> {
    let hex = "[0-9a-f]".repeat(16);
    let pattern = format!("updraft:{hex}-{hex}:*");
    let out = Command::new("redis-cli").args(["-u", url, "--scan", "--pattern", &pattern]).output();
    match out {
        Ok(o) if o.status.success() => {
            String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()
        }
        _ => panic!("redis-cli is needed to check the relay's keys"),
    }
}

#[test]
fn a_join_forced_onto_each_relay_matches_direct_links_and_a_naive_join() {
    let (rows, uf) = (20_000u64, 0.9);
    let expected =
        naive_join(&generated_table(1, rows, 4, uf), &generated_table(2, rows, 4, uf), &[0], &[0], &[0]);
    let (want_n, want_sum, want_cols) = checksum(&expected);
    let dir = tempfile::tempdir().expect("tmp");
    let mut tried = Vec::new();
    for channel in ["direct", "redis", "s3"] {
        let relay = if channel == "direct" {
            String::new()
        } else {
            match relay_settings(channel) {
                Some(r) => r,
                None => continue,
            }
        };
        // Small credit and batches: many frames, several per relay message.
        let runtime =
            format!("channel = \"{channel}\"\n{relay}\nbatch_rows = 4096\nchannel_credit = \"256KiB\"");
        let (out, report) = run_cluster(dir.path(), &generated_join_pipeline(rows, uf, &runtime), 4);
        assert!(out.status.success(), "{channel}: {}", String::from_utf8_lossy(&out.stderr));
        let report = report.expect("report");
        let (n, sum, cols) = sink(&report, "summary");
        assert_eq!((n, sum), (want_n, want_sum), "{channel}: rows and checksum");
        assert_eq!(cols.iter().map(|c| c.1).collect::<Vec<_>>(), want_cols, "{channel}: column checksums");
        let used = channels(&report);
        assert_eq!(used.len(), 12, "every worker names a channel for each of its 3 peers");
        assert!(used.iter().all(|c| c == channel), "{channel}: {used:?}");
        for w in report["workers"].as_array().expect("workers") {
            let by = w["bytes_sent_by_channel"].as_array().expect("bytes by channel");
            assert_eq!(by.len(), 1, "{channel}: {by:?}");
            assert_eq!(by[0]["channel"], channel);
            assert_eq!(by[0]["bytes"], w["bytes_sent"], "every byte went over {channel}");
        }
        tried.push(channel);
        if channel == "redis" {
            let url = std::env::var("UPDRAFT_TEST_REDIS").expect("url");
            assert_eq!(redis_leftovers(&url), Vec::<String>::new(), "the job's lists are gone");
        }
        if channel == "s3" {
            let bucket = std::env::var("UPDRAFT_TEST_S3_BUCKET").expect("bucket");
            let left = updraft_operators::storage::s3_list(&bucket, "relay-tests/").expect("list");
            assert_eq!(left, Vec::<String>::new(), "the job's objects are gone");
        }
    }
    eprintln!("channels checked: {tried:?}");
}

#[test]
fn a_relay_that_cannot_be_reached_fails_the_job_clearly() {
    let dir = tempfile::tempdir().expect("tmp");
    // Port 1 on loopback: nothing listens there.
    let runtime = "channel = \"redis\"\nredis = \"redis://127.0.0.1:1/\"\nrendezvous_timeout = \"5s\"";
    let (out, _) = run_cluster(dir.path(), &generated_join_pipeline(100, 0.9, runtime), 2);
    assert_eq!(out.status.code(), Some(3), "the infrastructure's fault");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Redis"), "{err}");
}

#[test]
fn bench_channels_measures_every_configured_channel_and_writes_json_and_plots() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut args: Vec<String> =
        ["bench", "channels", "--sizes", "8B,70KiB", "--workers", "2,3", "--stream", "4MiB"]
            .into_iter()
            .map(String::from)
            .collect();
    args.extend(["--budget", "300ms", "--repeats", "5", "--out"].map(String::from));
    args.push(dir.path().display().to_string());
    let mut want = vec!["direct"];
    if let Ok(url) = std::env::var("UPDRAFT_TEST_REDIS") {
        args.extend(["--redis".to_string(), url]);
        want.push("redis");
    }
    if let Ok(bucket) = std::env::var("UPDRAFT_TEST_S3_BUCKET") {
        args.extend(["--s3".to_string(), format!("s3://{bucket}/bench-tests/")]);
        want.push("s3");
    }
    let out = Command::new(bin()).args(&args).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("round-trip time") && table.contains("collectives"), "{table}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("channels.json")).expect("json"))
            .expect("parse");
    let got: Vec<&str> =
        json.as_array().expect("array").iter().map(|c| c["channel"].as_str().expect("name")).collect();
    assert_eq!(got, want);
    for c in json.as_array().expect("array") {
        let pp = c["ping_pong"].as_array().expect("ping_pong");
        assert_eq!(pp.len(), 2);
        for entry in pp {
            assert!(entry[1]["samples"].as_u64() > Some(0) && entry[1]["median_s"].as_f64() > Some(0.0));
        }
        assert!(c["throughput_bps"].as_f64() > Some(0.0));
        assert_eq!(c["barrier"].as_array().map(Vec::len), Some(2), "2 and 3 workers");
        assert_eq!(c["allreduce_1mib"].as_array().map(Vec::len), Some(2));
    }
    for svg in ["channels-latency.svg", "channels-collectives.svg"] {
        let text = std::fs::read_to_string(dir.path().join(svg)).expect("plot");
        assert!(text.starts_with("<svg") && text.contains("direct"), "{svg}");
    }
}
