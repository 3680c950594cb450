//! File encodings: Parquet files written here with every codec Parquet writers use are read as
//! one source, and a sink writes each codec it offers (every output file read back with the
//! `parquet` crate, its codec checked in the footer, its rows compared with the input); JSON
//! lines files whose fields differ are read with one agreed schema and written back; Arrow IPC
//! files and streams are read as one source.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::fs::File;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use common::*;
use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};

/// Every codec of the Parquet format a writer uses today (LZO aside), by a name for file names.
fn codecs() -> Vec<(&'static str, Compression)> {
    vec![
        ("none", Compression::UNCOMPRESSED),
        ("snappy", Compression::SNAPPY),
        ("gzip", Compression::GZIP(GzipLevel::default())),
        ("brotli", Compression::BROTLI(BrotliLevel::default())),
        ("lz4-hadoop", Compression::LZ4),
        ("lz4-raw", Compression::LZ4_RAW),
        ("zstd", Compression::ZSTD(ZstdLevel::default())),
    ]
}

fn rows(f: usize) -> RecordBatch {
    let ids: Vec<i64> = (0..500).map(|i| (f * 500 + i) as i64).collect();
    let text: Vec<String> = ids.iter().map(|i| format!("row {i} of file {f}")).collect();
    RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("text", Arc::new(StringArray::from(text)) as ArrayRef),
    ])
    .expect("batch")
}

/// The codecs of every column chunk of a Parquet file, as its footer records them.
fn codecs_of(path: &std::path::Path) -> Vec<Compression> {
    let reader = SerializedFileReader::new(File::open(path).expect("open")).expect("parquet");
    let meta = reader.metadata();
    meta.row_groups().iter().flat_map(|g| g.columns().iter().map(|c| c.compression())).collect()
}

#[test]
fn every_parquet_codec_is_read_and_every_offered_one_written() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    let codecs = codecs();
    for (f, (name, codec)) in codecs.iter().enumerate() {
        let path = dir.path().join(format!("data/in-{name}.parquet"));
        let props = WriterProperties::builder().set_compression(*codec).build();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            File::create(&path).expect("create"),
            rows(f).schema(),
            Some(props),
        )
        .expect("writer");
        w.write(&rows(f)).expect("write");
        w.close().expect("close");
        assert_eq!(codecs_of(&path), vec![*codec; 2], "{name} input written as asked");
    }
    let want_ids: Vec<i64> = (0..codecs.len() as i64 * 500).collect();
    for (setting, level, expect) in [
        ("snappy", None, Compression::SNAPPY),
        ("gzip", Some(9), Compression::GZIP(GzipLevel::try_new(9).expect("level"))),
        ("brotli", Some(5), Compression::BROTLI(BrotliLevel::try_new(5).expect("level"))),
        ("lz4", None, Compression::LZ4_RAW),
        ("zstd", Some(19), Compression::ZSTD(ZstdLevel::try_new(19).expect("level"))),
        ("none", None, Compression::UNCOMPRESSED),
    ] {
        let level = level.map_or_else(String::new, |l| format!("compression_level = {l}"));
        let pipeline = format!(
            r#"
[source.all]
kind = "parquet"
path = "data/in-*.parquet"

[sink.out]
kind = "parquet"
input = "all"
path = "out/part-{{rank}}.parquet"
compression = "{setting}"
{level}
"#
        );
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let (out, _) = run_cluster(dir.path(), &pipeline, 2);
        assert!(out.status.success(), "{setting}: {}", String::from_utf8_lossy(&out.stderr));
        let mut ids = Vec::new();
        for (file, batches) in read_parquet_files(&dir.path().join("out"), "part-") {
            let codecs = codecs_of(&dir.path().join("out").join(&file));
            // A footer names the codec, not the level it was written at.
            let same = |c: &Compression| std::mem::discriminant(c) == std::mem::discriminant(&expect);
            assert!(!codecs.is_empty() && codecs.iter().all(same), "{setting}: {file} has {codecs:?}");
            for b in batches {
                let (id, text) = (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_string::<i32>());
                for i in 0..b.num_rows() {
                    let f = id.value(i) / 500;
                    assert_eq!(text.value(i), format!("row {} of file {f}", id.value(i)));
                    ids.push(id.value(i));
                }
            }
        }
        ids.sort_unstable();
        assert_eq!(ids, want_ids, "{setting}: every row of every codec once");
    }
}

#[test]
fn compression_settings_are_checked_at_validate() {
    let dir = tempfile::tempdir().expect("tmp");
    for (sink, want) in [
        (
            r#"kind = "parquet"
compression = "lzo""#,
            "unknown compression `lzo`; expected one of: none, snappy, gzip, brotli, lz4, zstd",
        ),
        (
            r#"kind = "parquet"
compression = "zstd"
compression_level = 23"#,
            "level 23 is out of range for zstd: 1 to 22",
        ),
        (
            r#"kind = "parquet"
compression = "snappy"
compression_level = 3"#,
            "snappy has no compression level",
        ),
        (
            r#"kind = "csv"
compression = "gzip""#,
            "only parquet sinks are compressed",
        ),
        (
            r#"kind = "parquet"
stream = true"#,
            "only ipc sinks choose between the file and stream formats",
        ),
    ] {
        let pipeline = format!(
            r#"
[source.t]
kind = "generate"
rows = 10

[sink.out]
{sink}
input = "t"
path = "out/part-{{rank}}.out"
"#
        );
        let out = validate_pipeline(dir.path(), "p.toml", &pipeline);
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sink} was accepted");
        let key = if sink.contains("stream") { "sink.out.stream" } else { "sink.out.compression" };
        assert!(text.contains(want) && text.contains(key), "{sink}:\n{text}");
    }
}

#[test]
fn json_lines_are_read_with_one_agreed_schema_and_written_back() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    // File 0 has integer scores; file 1 has fractional ones, a null name and a field more.
    let mut lines0 = String::new();
    let mut lines1 = String::new();
    for i in 0..300 {
        lines0.push_str(&format!("{{\"id\": {i}, \"name\": \"n{}\", \"score\": {}}}\n", i % 7, i % 10));
    }
    for i in 300..500 {
        let name = if i % 5 == 0 { "null".to_string() } else { format!("\"n{}\"", i % 7) };
        lines1.push_str(&format!(
            "{{\"id\": {i}, \"name\": {name}, \"score\": {}.5, \"vip\": {}}}\n",
            i % 10,
            i % 2 == 0
        ));
    }
    std::fs::write(dir.path().join("data/a.jsonl"), lines0).expect("write");
    std::fs::write(dir.path().join("data/b.jsonl"), lines1).expect("write");
    let pipeline = r#"
[source.events]
kind = "json"
path = "data/*.jsonl"
missing_columns = "null"

[operator.kept]
kind = "filter"
input = "events"
where = "score >= 4 and (vip is null or vip)"

[sink.out]
kind = "json"
input = "kept"
path = "out/part-{rank}.jsonl"
"#;
    // Independent answer: the rows kept, as (id, name, score, vip).
    let mut want: Vec<(i64, Option<String>, f64, Option<bool>)> = Vec::new();
    for i in 0..500i64 {
        let (name, score, vip) = if i < 300 {
            (Some(format!("n{}", i % 7)), (i % 10) as f64, None)
        } else {
            ((i % 5 != 0).then(|| format!("n{}", i % 7)), (i % 10) as f64 + 0.5, Some(i % 2 == 0))
        };
        if score >= 4.0 && vip.is_none_or(|v| v) {
            want.push((i, name, score, vip));
        }
    }
    for workers in [1, 3] {
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let (out, _) = run_cluster(dir.path(), pipeline, workers);
        assert!(out.status.success(), "{workers} workers: {}", String::from_utf8_lossy(&out.stderr));
        let mut got = Vec::new();
        for file in list_dir(&dir.path().join("out")) {
            let text = std::fs::read_to_string(dir.path().join("out").join(&file)).expect("read");
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
                got.push((
                    v["id"].as_i64().expect("id"),
                    v["name"].as_str().map(str::to_string),
                    v["score"].as_f64().expect("score as a number"),
                    v["vip"].as_bool(),
                ));
            }
        }
        got.sort_by_key(|r| r.0);
        assert_eq!(got, want, "{workers} workers");
    }
}

#[test]
fn arrow_ipc_files_and_streams_are_read_as_one_source() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    let (a, b) = (rows(0), rows(1));
    let mut w = arrow_ipc::writer::FileWriter::try_new(
        File::create(dir.path().join("data/a.arrow")).expect("create"),
        &a.schema(),
    )
    .expect("file writer");
    w.write(&a).expect("write");
    w.finish().expect("finish");
    let mut w = arrow_ipc::writer::StreamWriter::try_new(
        File::create(dir.path().join("data/b.arrow")).expect("create"),
        &b.schema(),
    )
    .expect("stream writer");
    w.write(&b.slice(0, 200)).expect("write");
    w.write(&b.slice(200, 300)).expect("write");
    w.finish().expect("finish");
    let pipeline = r#"
[source.all]
kind = "ipc"
path = "data/"

[sink.out]
kind = "parquet"
input = "all"
path = "out/part-{rank}.parquet"
"#;
    let (out, _) = run_cluster(dir.path(), pipeline, 2);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut ids: Vec<i64> = read_parquet_files(&dir.path().join("out"), "part-")
        .into_iter()
        .flat_map(|(_, batches)| batches)
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..1000).collect::<Vec<i64>>(), "both files, every row once");
}

#[test]
fn a_json_field_that_is_sometimes_a_number_is_read_as_text_and_ipc_sinks_take_changing_dictionaries() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    std::fs::write(dir.path().join("data/a.jsonl"), "{\"id\": 1}\n{\"id\": \"A7\"}\n{\"id\": 2.5}\n")
        .expect("write");
    let pipeline = "[source.j]\nkind = \"json\"\npath = \"data/a.jsonl\"\n\n[sink.out]\nkind = \"parquet\"\ninput = \"j\"\npath = \"out/part-{rank}.parquet\"\n";
    let (out, _) = run_cluster(dir.path(), pipeline, 1);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ids: Vec<String> = read_parquet_files(&dir.path().join("out"), "part-")
        .into_iter()
        .flat_map(|(_, b)| b)
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ids, vec!["1", "A7", "2.5"]);

    // A category column in many row groups, shuffled on 3 workers, then written as Arrow IPC:
    // every batch brings its own dictionary.
    let names: Vec<String> = (0..600).map(|i| format!("c{}", (i * 7) % 90)).collect();
    let dict: arrow_array::DictionaryArray<arrow_array::types::Int32Type> =
        names.iter().map(|s| Some(s.as_str())).collect();
    let batch = RecordBatch::try_from_iter(vec![
        ("cat", Arc::new(dict) as ArrayRef),
        ("id", Arc::new(Int64Array::from_iter_values(0..600)) as ArrayRef),
    ])
    .expect("batch");
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(50)).build();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        File::create(dir.path().join("data/c.parquet")).expect("create"),
        batch.schema(),
        Some(props),
    )
    .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    let pipeline = "[runtime]\nbatch_rows = 40\n\n[source.c]\nkind = \"parquet\"\npath = \"data/c.parquet\"\n\n[operator.s]\nkind = \"shuffle\"\ninput = \"c\"\nkeys = [\"id\"]\n\n[sink.out]\nkind = \"ipc\"\ninput = \"s\"\npath = \"ipc/part-{rank}.arrow\"\n\n[sink.stream]\nkind = \"ipc\"\nstream = true\ninput = \"s\"\npath = \"streams/part-{rank}.arrows\"\n";
    let (out, _) = run_cluster(dir.path(), pipeline, 3);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut got: Vec<(i64, String)> = Vec::new();
    for file in list_dir(&dir.path().join("ipc")) {
        let reader = arrow_ipc::reader::FileReader::try_new(
            File::open(dir.path().join("ipc").join(file)).expect("open"),
            None,
        )
        .expect("ipc");
        for b in reader {
            let b = b.expect("batch");
            let cat = b.column(0).as_string::<i32>();
            let id = b.column(1).as_primitive::<Int64Type>();
            got.extend((0..b.num_rows()).map(|i| (id.value(i), cat.value(i).to_string())));
        }
    }
    got.sort();
    let want: Vec<(i64, String)> = (0..600).map(|i| (i, names[i as usize].clone())).collect();
    assert_eq!(got, want, "decoded, every row once");

    // The stream format keeps the dictionaries, replacing them batch by batch.
    let mut got: Vec<(i64, String)> = Vec::new();
    let streams = list_dir(&dir.path().join("streams"));
    assert_eq!(streams.len(), 3, "{streams:?}");
    for file in streams {
        let path = dir.path().join("streams").join(file);
        assert!(!std::fs::read(&path).expect("read").starts_with(b"ARROW1"), "a stream, not a file");
        let reader =
            arrow_ipc::reader::StreamReader::try_new(File::open(path).expect("open"), None).expect("stream");
        for b in reader {
            let b = b.expect("batch");
            assert!(
                matches!(b.column(0).data_type(), arrow_schema::DataType::Dictionary(..)),
                "{}",
                b.column(0).data_type()
            );
            let cat = arrow_cast::cast(b.column(0), &arrow_schema::DataType::Utf8).expect("decode");
            let id = b.column(1).as_primitive::<Int64Type>();
            got.extend((0..b.num_rows()).map(|i| (id.value(i), cat.as_string::<i32>().value(i).to_string())));
        }
    }
    got.sort();
    assert_eq!(got, want, "stream sink: every row once");
}
