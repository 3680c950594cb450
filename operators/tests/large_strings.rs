//! Inputs whose strings exceed what 32-bit offsets can address (2 GiB) in one operator: the
//! sort, the join and head must give the right rows, not an offset overflow.
//! About 2.2 GiB of strings, 7 GB of memory at peak and a minute of CPU: ignored by default,
//! run before a release with
//!
//!     cargo test --release -p updraft-operators --test large_strings -- --ignored

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use updraft_config::{JoinAlgorithm, JoinHow};
use updraft_operators::head::{GatherHead, RowRange};
use updraft_operators::join::{Join, JoinParams};
use updraft_operators::sort::{LocalSort, SortKey};
use updraft_runtime::{Flow, Operator, Output};

/// Bytes of each string: 2,200 rows make 2.2 GiB.
const STRING: usize = 1 << 20;
const ROWS: i64 = 2_200;

/// The string of row `i`: `STRING` copies of one letter picked by `i`.
fn letter(i: i64) -> u8 {
    b'a' + (i % 26) as u8
}

/// Batches of 100 rows: `k` = i (descending order of arrival: the sort must move them), `s` the
/// string of i.
fn input() -> Vec<RecordBatch> {
    (0..ROWS / 100)
        .map(|b| {
            let ids: Vec<i64> = (0..100).map(|j| ROWS - 1 - (b * 100 + j)).collect();
            let strings: Vec<String> =
                ids.iter().map(|i| String::from_utf8(vec![letter(*i); STRING]).expect("ascii")).collect();
            RecordBatch::try_from_iter(vec![
                ("k", Arc::new(Int64Array::from(ids)) as ArrayRef),
                ("s", Arc::new(StringArray::from(strings)) as ArrayRef),
            ])
            .expect("batch")
        })
        .collect()
}

fn drive(op: &mut dyn Operator, ports: usize, inputs: Vec<(usize, RecordBatch)>) -> Vec<RecordBatch> {
    let mut out = Output::default();
    for (port, b) in inputs {
        op.on_batch(port, b, &mut out).expect("batch");
    }
    let mut flow = Flow::Idle;
    for port in 0..ports {
        flow = op.on_end(port, &mut out).expect("end");
    }
    while flow == Flow::More {
        flow = op.resume(&mut out).expect("resume");
    }
    out.drain().map(|(_, b)| b).collect()
}

/// Every (k, s) row of `batches` checked against the string of k; the keys in order.
fn keys_checked(batches: &[RecordBatch]) -> Vec<i64> {
    let mut keys = Vec::new();
    for b in batches {
        let k = b.column(0).as_primitive::<Int64Type>();
        let s = b.column(1).as_string::<i32>();
        for r in 0..b.num_rows() {
            let v = s.value(r).as_bytes();
            assert!(v.len() == STRING && v.iter().all(|c| *c == letter(k.value(r))), "row {}", k.value(r));
            keys.push(k.value(r));
        }
    }
    keys
}

#[test]
#[ignore = "2.2 GiB of strings: run with --ignored"]
fn operators_holding_more_than_2_gib_of_strings_give_every_row() {
    let key = vec![SortKey { column: "k".into(), descending: false, nulls_first: false }];
    let sorted = drive(&mut LocalSort::new("s", key, 64), 1, input().into_iter().map(|b| (0, b)).collect());
    assert_eq!(keys_checked(&sorted), (0..ROWS).collect::<Vec<_>>(), "sorted ascending");
    drop(sorted);

    // Join the strings (left) with every third key (right).
    let right = RecordBatch::try_from_iter(vec![(
        "k",
        Arc::new(Int64Array::from((0..ROWS).step_by(3).collect::<Vec<_>>())) as ArrayRef,
    )])
    .expect("right");
    let params = JoinParams {
        name: "j".into(),
        left_on: vec!["k".into()],
        right_on: vec!["k".into()],
        suffixes: ("_l".into(), "_r".into()),
        how: JoinHow::Inner,
        algorithm: JoinAlgorithm::Hash,
        build: Some(1),
        batch_rows: 64,
    };
    let mut inputs: Vec<(usize, RecordBatch)> = input().into_iter().map(|b| (0, b)).collect();
    inputs.push((1, right));
    let joined = drive(&mut Join::new(params), 2, inputs);
    let mut keys = keys_checked(&joined);
    keys.sort_unstable();
    assert_eq!(keys, (0..ROWS).step_by(3).collect::<Vec<_>>());
    drop(joined);

    // The last 5 rows of everything.
    let mut head = GatherHead::new(RowRange { offset: 0, rows: 5, from_end: true });
    let tail = drive(&mut head, 1, input().into_iter().map(|b| (0, b)).collect());
    assert_eq!(keys_checked(&tail), vec![4, 3, 2, 1, 0]);
}
