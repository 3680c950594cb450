//! The Redis and S3 relays as channels of real jobs: a 4-worker join forced onto each relay
//! gives the rows a direct run gives (and a naive join computes), every pair reports the
//! channel it used, and nothing is left in the relay afterwards.

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

/// Keys of the Redis relay still present.
fn redis_leftovers(url: &str) -> Vec<String> {
    let out = Command::new("redis-cli").args(["-u", url, "--scan", "--pattern", "updraft:*"]).output();
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
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Redis"), "{err}");
}
