//! The fuzz targets' corpora (`fuzz/corpus/<target>/`), replayed on stable through the same
//! entry points the targets call: every seed, and every input a fuzzing run kept or found a
//! problem with, is checked on every test run.
//!
//! `cargo test -p updraft --test fuzz_corpus -- --ignored write_seeds` (re)writes the seeds:
//! frames captured from a real 3-worker job (`UPDRAFT_CAPTURE_FRAMES`), their control and
//! collective bodies, sealed records of them, rendezvous messages, and the bundled pipelines
//! and expressions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use updraft_runtime::wire::{OutBody, OutFrame};

type Harness = fn(&[u8]);

const TARGETS: &[(&str, Harness)] = &[
    ("frame", updraft_runtime::fuzzing::frame),
    ("control", control),
    ("record", updraft_transports::fuzzing::record),
    ("rendezvous", updraft_transports::fuzzing::rendezvous),
    ("pipeline", updraft_config::fuzzing::pipeline),
    ("expr", updraft_config::fuzzing::expr),
];

/// As `fuzz/fuzz_targets/control.rs`.
fn control(data: &[u8]) {
    updraft_runtime::fuzzing::control(data);
    updraft_operators::fuzzing::agree(data);
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

#[test]
fn every_corpus_input_passes_its_target() {
    for (target, harness) in TARGETS {
        let dir = corpus_dir(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("entry").path();
            let data = std::fs::read(&path).expect("read");
            harness(&data);
            n += 1;
        }
        assert!(n >= 5, "corpus of `{target}` has {n} inputs");
    }
}

fn write(target: &str, data: &[u8]) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let name = format!("seed-{:016x}", updraft_runtime::ids::job_hash(&format!("{data:?}")));
    std::fs::write(dir.join(name), data).expect("write seed");
}

/// A small job whose traffic touches every frame kind: generated sources, a join, a group-by,
/// a sort, a filter and a union, on tiny batches.
const CAPTURE_PIPELINE: &str = r#"
[job]
name = "capture"

[runtime]
batch_rows = 8

[source.left]
kind = "generate"
rows = 40
unique_factor = 0.5
seed = 1

[source.right]
kind = "generate"
rows = 40
unique_factor = 0.5
seed = 2

[operator.joined]
kind = "join"
left = "left"
right = "right"
on = ["key"]

[operator.kept]
kind = "filter"
input = "joined"
where = "(payload_left % 3 == 0 or key < 100) and payload_right is not null"

[operator.totals]
kind = "group_by"
input = "kept"
keys = ["key"]
aggregate = { n = "count()", top = "max(payload_left)", avg = "mean(payload_right)" }

[operator.ordered]
kind = "sort"
input = "totals"
by = ["key"]

[operator.both]
kind = "union"
inputs = ["left", "right"]

[sink.summary]
kind = "summary"
input = "ordered"

[sink.all]
kind = "summary"
input = "both"
"#;

const EXPRESSIONS: &[&str] = &[
    "(lv % 3 == 0 or tag == 't1') and tag is not null and key < 90",
    "(payload_left % 3 == 0 or key < 100) and payload_right is not null",
    "payload_left is null or payload_right is null",
    "a + 2 * b > 10 and not c is null or d == 'x'",
    "lv * 2 - key",
    "`odd name` is not null",
    "payload > 'x'",
    "key <= -3.5e2 and key >= 0 or key != 7",
];

#[test]
#[ignore = "writes the seed corpora; run by hand after changing a wire format"]
fn write_seeds() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pipeline = tmp.path().join("capture.toml");
    std::fs::write(&pipeline, CAPTURE_PIPELINE).expect("pipeline");
    let cap = tmp.path().join("frames");
    std::fs::create_dir_all(&cap).expect("dir");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_updraft"))
        .args(["run", pipeline.to_str().expect("utf-8"), "--workers", "3", "--quiet"])
        .env("UPDRAFT_CAPTURE_FRAMES", &cap)
        .status()
        .expect("run");
    assert!(status.success());

    // Real frames: for each (kind, channel), the smallest, a middle one and the largest.
    let mut by_class: BTreeMap<(u16, u32), Vec<Vec<u8>>> = BTreeMap::new();
    for e in std::fs::read_dir(&cap).expect("captured") {
        let f = std::fs::read(e.expect("entry").path()).expect("read");
        if f.len() >= 44 && f.len() <= 32 * 1024 {
            let class =
                (u16::from_le_bytes([f[10], f[11]]), u32::from_le_bytes([f[12], f[13], f[14], f[15]]));
            by_class.entry(class).or_default().push(f);
        }
    }
    let mut kept = Vec::new();
    for frames in by_class.values_mut() {
        frames.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        frames.dedup();
        let picks: BTreeSet<usize> = [0, frames.len() / 2, frames.len() - 1].into_iter().collect();
        kept.extend(picks.into_iter().map(|i| frames[i].clone()));
    }
    assert!(kept.len() >= 20, "{} frames kept from {} classes", kept.len(), by_class.len());
    for f in &kept {
        write("frame", f);
        write("control", &f[44..]);
    }
    write("frame", &kept.iter().take(6).flatten().copied().collect::<Vec<u8>>());

    // Sealed records of them (mode 0), and frame descriptions to seal and open (mode 1).
    let outs: Vec<OutFrame> = kept
        .iter()
        .step_by(3)
        .map(|f| {
            let kind = if u16::from_le_bytes([f[10], f[11]]) == 1 {
                updraft_runtime::wire::FrameKind::Data
            } else {
                updraft_runtime::wire::FrameKind::Control
            };
            let channel = u32::from_le_bytes([f[12], f[13], f[14], f[15]]);
            OutFrame { kind, channel, seq: 0, body: OutBody::Bytes(Bytes::copy_from_slice(&f[44..])) }
        })
        .collect();
    write("record", &[vec![0u8], updraft_transports::fuzzing::sealed(&outs)].concat());
    write("record", &[vec![0u8], updraft_transports::fuzzing::sealed(&outs[..1])].concat());
    for f in &outs {
        let OutBody::Bytes(b) = &f.body else { continue };
        let b = &b[..b.len().min(7 * 255)];
        let mut d = vec![1u8, f.kind as u8, (f.channel % 256) as u8, (b.len() / 7) as u8];
        d.extend_from_slice(&b[..b.len() / 7 * 7]);
        write("record", &d);
    }

    let doc: toml::Table = toml::from_str(CAPTURE_PIPELINE).expect("toml");
    for m in updraft_transports::fuzzing::rendezvous_seeds(&updraft_config::canonical_lines(&doc)) {
        write("rendezvous", &m);
    }
    for path in ["config/example-join.toml", "apps/examples/custom-operator.toml"] {
        write(
            "pipeline",
            &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).expect("pipeline"),
        );
    }
    write("pipeline", CAPTURE_PIPELINE.as_bytes());
    write("pipeline", b"[job]\nname = \"x\"\n[runtime]\nchannel = \"redis\"\n");
    write("pipeline", b"[job]\nname = \"csv\"\n[source.c]\nkind = \"csv\"\npath = \"in/*.csv\"\nschema = { a = \"int64\", b = \"utf8\" }\n[sink.s]\nkind = \"summary\"\ninput = \"c\"\n");
    for e in EXPRESSIONS {
        write("expr", e.as_bytes());
    }
}
