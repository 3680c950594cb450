//! The types real tables carry, end to end on 1 and 3 workers: dictionary-encoded (pandas
//! `category`) keys, timestamps with and without a time zone, unsigned integers beyond i64,
//! decimals. Inputs are Parquet files written here; every answer is computed here from plain
//! Rust values and compared with the rows read back from the job's output.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Int32Type, Int64Type, TimestampMicrosecondType, UInt64Type};
use arrow_array::{
    Array, ArrayRef, Decimal128Array, DictionaryArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use arrow_schema::{DataType, TimeUnit};
use common::*;

fn run_ok(dir: &Path, pipeline: &str, workers: u32) {
    let _ = std::fs::remove_dir_all(dir.join("out"));
    let (out, _) = run_cluster(dir, pipeline, workers);
    assert!(
        out.status.success(),
        "{workers} workers:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn batches(dir: &Path) -> Vec<RecordBatch> {
    read_parquet_files(&dir.join("out"), "part-").into_iter().flat_map(|(_, b)| b).collect()
}

/// Customer names of left row `i` (a category column: some rows null).
fn customer(i: usize) -> Option<String> {
    (i % 9 != 4).then(|| format!("customer {}", (i * 7) % 13))
}

fn write_category_tables(dir: &Path) {
    std::fs::create_dir_all(dir.join("data")).expect("mkdir");
    for f in 0..2 {
        let rows: Vec<usize> = (f * 300..(f + 1) * 300).collect();
        let names: Vec<Option<String>> = rows.iter().map(|&i| customer(i)).collect();
        let names: DictionaryArray<Int32Type> = names.iter().map(Option::as_deref).collect();
        let left = RecordBatch::try_from_iter(vec![
            ("name", Arc::new(names) as ArrayRef),
            ("amount", Arc::new(Int64Array::from_iter_values(rows.iter().map(|&i| i as i64))) as ArrayRef),
        ])
        .expect("left");
        assert!(matches!(left.schema().field(0).data_type(), DataType::Dictionary(..)));
        write_parquet(&dir.join(format!("data/orders-{f}.parquet")), &left);
    }
    let names: Vec<Option<String>> = (0..15).map(|c| (c != 3).then(|| format!("customer {c}"))).collect();
    let right = RecordBatch::try_from_iter(vec![
        ("name", Arc::new(StringArray::from(names)) as ArrayRef),
        ("region", Arc::new(Int64Array::from_iter_values(0..15)) as ArrayRef),
    ])
    .expect("right");
    write_parquet(&dir.join("data/customers.parquet"), &right);
}

#[test]
fn a_category_key_joins_and_groups_exactly_like_plain_strings() {
    let dir = tempfile::tempdir().expect("tmp");
    write_category_tables(dir.path());
    // Independent answer: per customer name of the left rows that find a customer (null names
    // and customer 3 find none, customers 13 and 14 have no orders): count, sum, max region.
    let mut want: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for i in 0..600 {
        let Some(name) = customer(i) else { continue };
        let c: i64 = name["customer ".len()..].parse().expect("number");
        if c == 3 {
            continue;
        }
        let e = want.entry(name).or_insert((0, 0, 0));
        e.0 += 1;
        e.1 += i as i64;
        e.2 = e.2.max(c);
    }
    let pipeline = r#"
[source.orders]
kind = "parquet"
path = "data/orders-*.parquet"

[source.customers]
kind = "parquet"
path = "data/customers.parquet"

[operator.joined]
kind = "join"
left = "orders"
right = "customers"
on = ["name"]

[operator.totals]
kind = "group_by"
input = "joined"
keys = ["name"]
aggregate = { n = "count()", total = "sum(amount)", top = "max(region)" }

[sink.out]
kind = "parquet"
input = "totals"
path = "out/part-{rank}.parquet"
"#;
    for workers in [1, 3] {
        run_ok(dir.path(), pipeline, workers);
        let mut got = BTreeMap::new();
        for b in batches(dir.path()) {
            assert_eq!(b.schema().field(0).data_type(), &DataType::Utf8, "group keys come out as values");
            let (k, n, s, t) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_primitive::<Int64Type>(),
                b.column(2).as_primitive::<Int64Type>(),
                b.column(3).as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                got.insert(k.value(i).to_string(), (n.value(i), s.value(i), t.value(i)));
            }
        }
        assert_eq!(got, want, "{workers} workers");
    }
}

#[test]
fn a_category_column_deduplicates_and_sorts_by_value_and_stays_encoded() {
    let dir = tempfile::tempdir().expect("tmp");
    write_category_tables(dir.path());
    let mut want: Vec<Option<String>> = (0..600).map(customer).collect();
    want.sort();
    want.dedup();
    want.reverse(); // descending, nulls first: None sorts first in Rust, so it ends up last here
    want.rotate_right(1);
    assert_eq!(want[0], None);
    let pipeline = r#"
[source.orders]
kind = "parquet"
path = "data/orders-*.parquet"

[operator.names]
kind = "distinct"
input = "orders"
columns = ["name"]

[operator.ordered]
kind = "sort"
input = "names"
by = ["`name` desc nulls first"]

[sink.out]
kind = "parquet"
input = "ordered"
path = "out/part-{rank}.parquet"
"#;
    for workers in [1, 3] {
        run_ok(dir.path(), pipeline, workers);
        let mut got: Vec<Option<String>> = Vec::new();
        for b in batches(dir.path()) {
            assert!(
                matches!(b.schema().field(0).data_type(), DataType::Dictionary(..)),
                "passed through encoded"
            );
            let plain = arrow_cast::cast(b.column(0), &DataType::Utf8).expect("decode");
            got.extend(plain.as_string::<i32>().iter().map(|v| v.map(str::to_string)));
        }
        assert_eq!(got, want, "{workers} workers: one row per name, in order across the ranks' files");
    }
}

const TS0: i64 = 1_719_792_000_000_000; // 2024-07-01T00:00:00Z in µs

/// Row `i` of the typed table: (event time key, timestamp with zone, u64, decimal cents).
fn typed_row(i: i64) -> (i64, i64, u64, i128) {
    let day = 86_400_000_000i64;
    let u = if i % 3 == 0 { u64::MAX - i as u64 } else { i as u64 };
    (TS0 + (i % 5) * day, TS0 + i * 1_000_003, u, i128::from(i) * 100_001 + 99_999_999_999_999)
}

fn write_typed_table(dir: &Path, files: i64, rows_per_file: i64) {
    std::fs::create_dir_all(dir.join("data")).expect("mkdir");
    for f in 0..files {
        let rows: Vec<(i64, i64, u64, i128)> =
            (f * rows_per_file..(f + 1) * rows_per_file).map(typed_row).collect();
        let batch = RecordBatch::try_from_iter(vec![
            (
                "day",
                Arc::new(TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            ),
            (
                "at",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ) as ArrayRef,
            ),
            ("big", Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.2))) as ArrayRef),
            (
                "price",
                Arc::new(
                    Decimal128Array::from_iter_values(rows.iter().map(|r| r.3))
                        .with_precision_and_scale(18, 2)
                        .expect("decimal"),
                ) as ArrayRef,
            ),
        ])
        .expect("typed");
        write_parquet(&dir.join(format!("data/typed-{f}.parquet")), &batch);
    }
}

#[test]
fn timestamp_keys_unsigned_extremes_and_decimal_sums_are_exact() {
    let dir = tempfile::tempdir().expect("tmp");
    let (files, per) = (3, 400);
    write_typed_table(dir.path(), files, per);
    // Independent answer per day over the rows whose u64 exceeds 5 (those ≥ 2^63 included):
    // count, min and max of the zoned timestamp, max of the u64, exact decimal sum.
    let mut want: BTreeMap<i64, (i64, i64, i64, u64, i128)> = BTreeMap::new();
    for i in 0..files * per {
        let (day, at, big, price) = typed_row(i);
        if big <= 5 {
            continue;
        }
        let e = want.entry(day).or_insert((0, i64::MAX, i64::MIN, 0, 0));
        e.0 += 1;
        e.1 = e.1.min(at);
        e.2 = e.2.max(at);
        e.3 = e.3.max(big);
        e.4 += price;
    }
    let pipeline = r#"
[source.typed]
kind = "parquet"
path = "data/typed-*.parquet"

[operator.kept]
kind = "filter"
input = "typed"
where = "big > 5"

[operator.daily]
kind = "group_by"
input = "kept"
keys = ["day"]
aggregate = { n = "count()", first_at = "min(at)", last_at = "max(at)", big = "max(big)", revenue = "sum(price)" }

[sink.out]
kind = "parquet"
input = "daily"
path = "out/part-{rank}.parquet"
"#;
    for workers in [1, 3] {
        run_ok(dir.path(), pipeline, workers);
        let mut got = BTreeMap::new();
        for b in batches(dir.path()) {
            let s = b.schema();
            assert_eq!(s.field(0).data_type(), &DataType::Timestamp(TimeUnit::Microsecond, None));
            assert_eq!(
                s.field(2).data_type(),
                &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            );
            assert_eq!(s.field(4).data_type(), &DataType::UInt64);
            assert_eq!(s.field(5).data_type(), &DataType::Decimal128(28, 2), "sum widens precision by 10");
            let day = b.column(0).as_primitive::<TimestampMicrosecondType>();
            let n = b.column(1).as_primitive::<Int64Type>();
            let lo = b.column(2).as_primitive::<TimestampMicrosecondType>();
            let hi = b.column(3).as_primitive::<TimestampMicrosecondType>();
            let big = b.column(4).as_primitive::<UInt64Type>();
            let rev = b.column(5).as_primitive::<Decimal128Type>();
            for i in 0..b.num_rows() {
                assert!(big.is_valid(i) && rev.is_valid(i), "no value turned null");
                got.insert(day.value(i), (n.value(i), lo.value(i), hi.value(i), big.value(i), rev.value(i)));
            }
        }
        assert_eq!(got, want, "{workers} workers");
    }
}

#[test]
fn unsigned_keys_beyond_i64_join_by_value_and_match_nothing_signed() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    let big: Vec<u64> = vec![u64::MAX, 1 << 63, 5, 7, u64::MAX, 9];
    let left = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(UInt64Array::from(big.clone())) as ArrayRef),
        ("l", Arc::new(Int64Array::from_iter_values(0..6)) as ArrayRef),
    ])
    .expect("left");
    let right = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(UInt64Array::from(vec![u64::MAX, 1 << 63, 7, 11])) as ArrayRef),
        ("r", Arc::new(Int64Array::from_iter_values(10..14)) as ArrayRef),
    ])
    .expect("right");
    let signed = RecordBatch::try_from_iter(vec![
        ("sid", Arc::new(Int64Array::from(vec![-1, 5, i64::MAX, 9])) as ArrayRef),
        ("s", Arc::new(Int64Array::from_iter_values(20..24)) as ArrayRef),
    ])
    .expect("signed");
    write_parquet(&dir.path().join("data/left.parquet"), &left);
    write_parquet(&dir.path().join("data/right.parquet"), &right);
    write_parquet(&dir.path().join("data/signed.parquet"), &signed);
    let pipeline = |right: &str, on: &str| {
        format!(
            r#"
[source.left]
kind = "parquet"
path = "data/left.parquet"

[source.right]
kind = "parquet"
path = "data/{right}.parquet"

[operator.joined]
kind = "join"
left = "left"
right = "right"
{on}

[sink.out]
kind = "parquet"
input = "joined"
path = "out/part-{{rank}}.parquet"
"#
        )
    };
    for workers in [1, 3] {
        // u64 = u64: u64::MAX twice on the left, 2^63 once, 7 once.
        run_ok(dir.path(), &pipeline("right", r#"on = ["id"]"#), workers);
        let mut got: Vec<(u64, i64, i64)> = Vec::new();
        for b in batches(dir.path()) {
            let (id, l, r) = (
                b.column(0).as_primitive::<UInt64Type>(),
                b.column(1).as_primitive::<Int64Type>(),
                b.column(2).as_primitive::<Int64Type>(),
            );
            got.extend((0..b.num_rows()).map(|i| (id.value(i), l.value(i), r.value(i))));
        }
        got.sort();
        assert_eq!(
            got,
            vec![(7, 3, 12), (1 << 63, 1, 11), (u64::MAX, 0, 10), (u64::MAX, 4, 10)],
            "{workers} workers"
        );
        // u64 = i64: 5 and 9 match; u64 values ≥ 2^63 and -1 match nothing (no wrap-around).
        run_ok(
            dir.path(),
            &pipeline(
                "signed",
                r#"left_on = ["id"]
right_on = ["sid"]"#,
            ),
            workers,
        );
        let mut got: Vec<(u64, i64)> = Vec::new();
        for b in batches(dir.path()) {
            let (id, sid) =
                (b.column(0).as_primitive::<UInt64Type>(), b.column(2).as_primitive::<Int64Type>());
            got.extend((0..b.num_rows()).map(|i| (id.value(i), sid.value(i))));
        }
        got.sort();
        assert_eq!(got, vec![(5, 5), (9, 9)], "{workers} workers");
    }
}

#[test]
fn zoned_timestamps_are_written_to_csv_in_their_zone() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    // 2024-07-01T00:00:00Z and 2024-12-01T12:30:00Z: Paris is UTC+2 in summer, UTC+1 in winter.
    let at = vec![TS0, 1_733_056_200_000_000];
    let batch = RecordBatch::try_from_iter(vec![
        ("utc", Arc::new(TimestampMicrosecondArray::from(at.clone()).with_timezone("UTC")) as ArrayRef),
        ("paris", Arc::new(TimestampMicrosecondArray::from(at).with_timezone("Europe/Paris")) as ArrayRef),
    ])
    .expect("batch");
    write_parquet(&dir.path().join("data/t.parquet"), &batch);
    let pipeline = r#"
[source.t]
kind = "parquet"
path = "data/t.parquet"

[sink.out]
kind = "csv"
input = "t"
path = "out/part-{rank}.csv"
"#;
    run_ok(dir.path(), pipeline, 1);
    let text = std::fs::read_to_string(dir.path().join("out/part-0.csv")).expect("csv");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "utc,paris");
    assert_eq!(lines[1], "2024-07-01T00:00:00Z,2024-07-01T02:00:00+02:00", "{text}");
    assert_eq!(lines[2], "2024-12-01T12:30:00Z,2024-12-01T13:30:00+01:00", "{text}");
}

#[test]
fn a_sink_that_cannot_hold_a_column_is_refused_at_validate() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    let lists =
        arrow_array::ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(vec![Some(1), None]), None]);
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        ("tags", Arc::new(lists) as ArrayRef),
    ])
    .expect("batch");
    write_parquet(&dir.path().join("data/t.parquet"), &batch);
    let pipeline = r#"
[source.t]
kind = "parquet"
path = "data/t.parquet"

[sink.flat]
kind = "csv"
input = "t"
path = "out/flat-{rank}.csv"

[sink.sums]
kind = "summary"
input = "t"

[sink.kept]
kind = "parquet"
input = "t"
path = "out/kept-{rank}.parquet"
"#;
    let out = validate_pipeline(dir.path(), "p.toml", pipeline);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("sink.flat") && text.contains("sink `flat`: cannot write csv files"), "{text}");
    assert!(
        text.contains("sink.sums") && text.contains("the checksum does not cover columns of type List"),
        "{text}"
    );
    assert!(!text.contains("sink.kept"), "Parquet holds lists:\n{text}");
    // The run refuses for the same reasons, before writing anything.
    let (run, _) = run_cluster(dir.path(), pipeline, 1);
    assert!(!run.status.success());
    assert!(list_dir(&dir.path().join("out")).is_empty(), "nothing committed");
}
