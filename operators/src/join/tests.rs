//! Tests of the join operator.

use super::*;
use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Int32Array, Int64Array, StringArray};

fn params(on: &[&str], batch_rows: usize) -> JoinParams {
    JoinParams {
        name: "j".into(),
        left_on: on.iter().map(|s| s.to_string()).collect(),
        right_on: on.iter().map(|s| s.to_string()).collect(),
        suffixes: ("_left".into(), "_right".into()),
        batch_rows,
        how: JoinHow::Inner,
        algorithm: JoinAlgorithm::Hash,
        build: None,
    }
}

/// How a test's join runs: its algorithm, the build side the plan named (`None`: chosen once
/// both sides are collected), and whether the probe side's batches arrive only after the build
/// side ended (streamed through the index) or all before (held, then streamed).
#[derive(Debug, Clone, Copy)]
struct Mode(JoinAlgorithm, Option<usize>, bool);

const ALGORITHMS: [Mode; 6] = [
    Mode(JoinAlgorithm::Hash, None, false),
    Mode(JoinAlgorithm::SortMerge, None, false),
    Mode(JoinAlgorithm::Hash, Some(0), false),
    Mode(JoinAlgorithm::Hash, Some(0), true),
    Mode(JoinAlgorithm::Hash, Some(1), false),
    Mode(JoinAlgorithm::Hash, Some(1), true),
];

struct Case {
    join: Join,
    probe_after_build: bool,
}

fn with(mode: Mode, mut p: JoinParams) -> Case {
    p.algorithm = mode.0;
    p.build = mode.1;
    Case { join: Join::new(p), probe_after_build: mode.2 }
}

/// Calls `resume` for as long as the join asks, as the runtime does.
fn drive(j: &mut Join, mut flow: Flow, out: &mut Output) -> Result<(), OperatorError> {
    while flow == Flow::More || out.take_more() {
        flow = j.resume(out)?;
    }
    Ok(())
}

/// Runs the join over `left` and `right` as the case's mode says; the first error if any.
fn try_run(
    case: &mut Case,
    left: Vec<RecordBatch>,
    right: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>, OperatorError> {
    let mut out = Output::default();
    let j = &mut case.join;
    let mut sides = [left, right];
    // The probe side's batches after the build side ended, or both sides' before either ends.
    let order = match j.p.build {
        Some(b) if case.probe_after_build => [b, 1 - b],
        _ => [0, 1],
    };
    for port in order {
        for b in std::mem::take(&mut sides[port]) {
            j.on_batch(port, b, &mut out)?;
            drive(j, Flow::Idle, &mut out)?;
        }
        if case.probe_after_build {
            let flow = j.on_end(port, &mut out)?;
            drive(j, flow, &mut out)?;
        }
    }
    if !case.probe_after_build {
        for port in [0, 1] {
            let flow = j.on_end(port, &mut out)?;
            drive(j, flow, &mut out)?;
        }
    }
    Ok(out.drain().map(|(_, b)| b).collect())
}

fn run(case: &mut Case, left: Vec<RecordBatch>, right: Vec<RecordBatch>) -> Vec<RecordBatch> {
    try_run(case, left, right).expect("join")
}

fn pairs(batches: &[RecordBatch]) -> Vec<(i64, i64, i64)> {
    let mut v: Vec<(i64, i64, i64)> = batches
        .iter()
        .flat_map(|b| {
            let k = b.column(0).as_primitive::<Int64Type>().clone();
            let l = b.column(1).as_primitive::<Int64Type>().clone();
            let r = b.column(2).as_primitive::<Int64Type>().clone();
            (0..b.num_rows()).map(move |i| (k.value(i), l.value(i), r.value(i)))
        })
        .collect();
    v.sort();
    v
}

fn kv(k: Vec<Option<i64>>, v: Vec<i64>) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        ("key", Arc::new(Int64Array::from(k)) as ArrayRef),
        ("payload", Arc::new(Int64Array::from(v)) as ArrayRef),
    ])
    .expect("batch")
}

#[test]
fn duplicates_nulls_and_chunked_output() {
    let left = kv(vec![Some(1), Some(1), None, Some(2), Some(3)], vec![10, 11, 12, 13, 14]);
    let right = kv(vec![Some(1), None, Some(1), Some(3), Some(4)], vec![20, 21, 22, 23, 24]);
    for a in ALGORITHMS {
        let out = run(&mut with(a, params(&["key"], 2)), vec![left.clone()], vec![right.clone()]);
        assert!(out.iter().all(|b| b.num_rows() <= 2));
        let names: Vec<String> = out[0].schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, vec!["key", "payload_left", "payload_right"]);
        assert_eq!(
            pairs(&out),
            vec![(1, 10, 20), (1, 10, 22), (1, 11, 20), (1, 11, 22), (3, 14, 23)],
            "{a:?}"
        );
    }
}

#[test]
fn keys_of_different_integer_widths_keep_the_right_key_of_unmatched_right_rows() {
    let left = RecordBatch::try_from_iter(vec![
        ("key", Arc::new(Int32Array::from(vec![Some(1), Some(2), None])) as ArrayRef),
        ("payload", Arc::new(Int64Array::from(vec![10, 11, 12])) as ArrayRef),
    ])
    .expect("left");
    let right = kv(vec![Some(1), Some(1 << 40), None], vec![20, 21, 22]);
    for a in ALGORITHMS {
        for how in [JoinHow::Right, JoinHow::Full] {
            let mut p = params(&["key"], 100);
            p.how = how;
            let out = run(&mut with(a, p), vec![left.clone()], vec![right.clone()]);
            assert_eq!(out[0].schema().field(0).data_type(), &DataType::Int64);
            let mut keys: Vec<Option<i64>> = out
                .iter()
                .flat_map(|b| {
                    let k = b.column(0).as_primitive::<Int64Type>().clone();
                    (0..b.num_rows()).map(move |i| k.is_valid(i).then(|| k.value(i)))
                })
                .collect();
            keys.sort();
            let want = if how == JoinHow::Full {
                vec![None, None, Some(1), Some(2), Some(1 << 40)]
            } else {
                vec![None, Some(1), Some(1 << 40)]
            };
            assert_eq!(keys, want, "{a:?} {how:?}");
        }
    }
}

#[test]
fn a_hot_key_is_emitted_in_bounded_batches() {
    let left = kv(vec![Some(5); 300], (0..300).collect());
    let right = kv(vec![Some(5); 200], (0..200).collect());
    for a in ALGORITHMS {
        let out = run(&mut with(a, params(&["key"], 7)), vec![left.clone()], vec![right.clone()]);
        assert!(out.iter().all(|b| b.num_rows() <= 7), "no batch above batch_rows");
        assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 60_000, "{a:?}");
    }
}

fn joined(
    algorithm: Mode,
    how: JoinHow,
    left: RecordBatch,
    right: RecordBatch,
    batch_rows: usize,
) -> Vec<(Option<i64>, Option<i64>, Option<i64>)> {
    let mut p = params(&["key"], batch_rows);
    p.how = how;
    let out = run(&mut with(algorithm, p), vec![left], vec![right]);
    assert!(out.iter().all(|b| b.num_rows() <= batch_rows));
    let mut v: Vec<_> = out
        .iter()
        .flat_map(|b| {
            let k = b.column(0).as_primitive::<Int64Type>().clone();
            let l = b.column(1).as_primitive::<Int64Type>().clone();
            let r = b.column(2).as_primitive::<Int64Type>().clone();
            (0..b.num_rows()).map(move |i| {
                let get = |a: &arrow_array::Int64Array| if a.is_null(i) { None } else { Some(a.value(i)) };
                (get(&k), get(&l), get(&r))
            })
        })
        .collect();
    v.sort();
    v
}

/// Independent outer join over plain values: (key, left payload, right payload).
fn naive(
    how: JoinHow,
    left: &[(Option<i64>, i64)],
    right: &[(Option<i64>, i64)],
) -> Vec<(Option<i64>, Option<i64>, Option<i64>)> {
    let (keep_left, keep_right) = how.preserves();
    let mut out = Vec::new();
    let mut right_used = vec![false; right.len()];
    for (lk, lv) in left {
        let mut any = false;
        for (j, (rk, rv)) in right.iter().enumerate() {
            if lk.is_some() && lk == rk {
                out.push((*lk, Some(*lv), Some(*rv)));
                right_used[j] = true;
                any = true;
            }
        }
        if !any && keep_left {
            out.push((*lk, Some(*lv), None));
        }
    }
    if keep_right {
        for (j, (rk, rv)) in right.iter().enumerate() {
            if !right_used[j] {
                out.push((*rk, None, Some(*rv)));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn outer_joins_keep_unmatched_rows_of_the_preserved_sides() {
    let l: Vec<(Option<i64>, i64)> =
        vec![(Some(1), 10), (Some(1), 11), (None, 12), (Some(2), 13), (Some(3), 14)];
    let r: Vec<(Option<i64>, i64)> =
        vec![(Some(1), 20), (None, 21), (Some(1), 22), (Some(3), 23), (Some(4), 24), (Some(4), 25)];
    let batch = |rows: &[(Option<i64>, i64)]| {
        kv(rows.iter().map(|x| x.0).collect(), rows.iter().map(|x| x.1).collect())
    };
    for a in ALGORITHMS {
        for how in [JoinHow::Inner, JoinHow::Left, JoinHow::Right, JoinHow::Full] {
            for batch_rows in [1, 2, 100] {
                // Both build-side choices: the smaller side is built.
                assert_eq!(
                    joined(a, how, batch(&l), batch(&r), batch_rows),
                    naive(how, &l, &r),
                    "{a:?} {how:?}, batch {batch_rows}"
                );
                assert_eq!(
                    joined(a, how, batch(&r), batch(&l), batch_rows),
                    naive(how, &r, &l),
                    "{a:?} {how:?} swapped"
                );
            }
        }
        // An empty preserved side yields nothing; an empty other side keeps every preserved row.
        let none: Vec<(Option<i64>, i64)> = Vec::new();
        assert_eq!(joined(a, JoinHow::Left, batch(&l), batch(&none), 10), naive(JoinHow::Left, &l, &none));
        assert_eq!(joined(a, JoinHow::Right, batch(&l), batch(&none), 10), Vec::new());
        assert_eq!(joined(a, JoinHow::Full, batch(&none), batch(&r), 10), naive(JoinHow::Full, &none, &r));
    }
}

#[test]
fn sort_merge_output_is_in_key_order_with_null_keys_last() {
    let keys: Vec<Option<i64>> =
        (0..500).map(|i| if i % 17 == 0 { None } else { Some((i * 7919) % 113) }).collect();
    let left = kv(keys.clone(), (0..500).collect());
    let right = kv(keys.iter().rev().copied().collect(), (0..500).collect());
    let mut p = params(&["key"], 64);
    p.how = JoinHow::Full;
    let out = run(&mut with(ALGORITHMS[1], p), vec![left], vec![right]);
    let got: Vec<Option<i64>> = out
        .iter()
        .flat_map(|b| {
            let k = b.column(0).as_primitive::<Int64Type>().clone();
            (0..b.num_rows()).map(move |i| if k.is_null(i) { None } else { Some(k.value(i)) })
        })
        .collect();
    let valid: Vec<i64> = got.iter().map_while(|k| *k).collect();
    assert!(valid.windows(2).all(|w| w[0] <= w[1]), "keys ascend");
    assert!(got[valid.len()..].iter().all(Option::is_none), "null keys come last");
    let nulls = keys.iter().filter(|k| k.is_none()).count();
    assert_eq!(got.len() - valid.len(), 2 * nulls, "every null-key row of both sides, unmatched");
}

#[test]
fn string_and_multi_column_keys() {
    let b = |k: Vec<Option<&str>>, n: Vec<i32>, v: Vec<i64>| {
        RecordBatch::try_from_iter(vec![
            ("s", Arc::new(StringArray::from(k)) as ArrayRef),
            ("n", Arc::new(Int32Array::from(n)) as ArrayRef),
            ("v", Arc::new(Int64Array::from(v)) as ArrayRef),
        ])
        .expect("batch")
    };
    let left = b(vec![Some("a"), Some("a"), Some("b"), None], vec![1, 2, 1, 1], vec![1, 2, 3, 4]);
    let right = b(vec![Some("a"), Some("b"), Some("b"), None], vec![2, 1, 1, 1], vec![5, 6, 7, 8]);
    for a in ALGORITHMS {
        let out = run(&mut with(a, params(&["s", "n"], 100)), vec![left.clone()], vec![right.clone()]);
        let rows: usize = out.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 3, "(a,2) once, (b,1) twice; the null key matches nothing ({a:?})");
        assert_eq!(out[0].schema().fields().len(), 4, "s, n, v_left, v_right");
    }
}

#[test]
fn an_empty_side_gives_an_empty_batch_with_the_schema() {
    let left = kv(vec![Some(1)], vec![1]);
    let right = kv(vec![], vec![]);
    for mode in ALGORITHMS {
        let out = run(&mut with(mode, params(&["key"], 10)), vec![left.clone()], vec![right.clone()]);
        assert_eq!(out.len(), 1, "{mode:?}");
        assert_eq!(out[0].num_rows(), 0);
        assert_eq!(out[0].schema().fields().len(), 3);
    }
    let out = run(&mut with(ALGORITHMS[0], params(&["key"], 10)), vec![left], vec![right]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].num_rows(), 0);
    assert_eq!(out[0].schema().fields().len(), 3);
}

#[test]
fn a_full_join_of_two_large_categories_on_narrow_dictionaries_merges_their_values() {
    // 70 categories a side in Int8 dictionaries: the two together overflow an Int8 key.
    let side = |prefix: &str, v: i64| {
        let names: Vec<String> = (0..70).map(|i| format!("{prefix}{i}")).collect();
        let dict: arrow_array::DictionaryArray<arrow_array::types::Int8Type> =
            names.iter().map(|s| Some(s.as_str())).collect();
        RecordBatch::try_from_iter(vec![
            ("cat", Arc::new(dict) as ArrayRef),
            (if v == 0 { "l" } else { "r" }, Arc::new(Int64Array::from(vec![v; 70])) as ArrayRef),
        ])
        .expect("batch")
    };
    for algorithm in ALGORITHMS {
        let mut p = params(&["cat"], 1000);
        p.how = JoinHow::Full;
        let out = run(&mut with(algorithm, p), vec![side("a", 0)], vec![side("b", 1)]);
        let rows: usize = out.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 140, "{algorithm:?}: nothing matches, every row kept once");
        assert_eq!(out[0].schema().field(0).data_type(), &DataType::Utf8, "the shared key decoded");
    }
}

#[test]
fn mismatched_key_types_are_reported() {
    let left = RecordBatch::try_from_iter(vec![("k", Arc::new(StringArray::from(vec!["1"])) as ArrayRef)])
        .expect("batch");
    let right = RecordBatch::try_from_iter(vec![("k", Arc::new(Int64Array::from(vec![1])) as ArrayRef)])
        .expect("batch");
    let mut j = Join::new(params(&["k"], 10));
    let mut out = Output::default();
    j.on_batch(0, left, &mut out).expect("left");
    j.on_batch(1, right, &mut out).expect("right");
    j.on_end(0, &mut out).expect("end");
    let e = j.on_end(1, &mut out).expect_err("types differ").to_string();
    assert!(e.contains("Utf8 on the left but Int64 on the right"), "{e}");
}

#[test]
fn key_type_and_column_errors_are_reported_whichever_side_builds() {
    let strings = RecordBatch::try_from_iter(vec![("k", Arc::new(StringArray::from(vec!["1"])) as ArrayRef)])
        .expect("batch");
    let ints = RecordBatch::try_from_iter(vec![("k", Arc::new(Int64Array::from(vec![1])) as ArrayRef)])
        .expect("batch");
    let wider = RecordBatch::try_from_iter(vec![
        ("k", Arc::new(Int64Array::from(vec![2])) as ArrayRef),
        ("extra", Arc::new(Int64Array::from(vec![3])) as ArrayRef),
    ])
    .expect("batch");
    for mode in ALGORITHMS {
        let mut case = with(mode, params(&["k"], 10));
        let e = feed(&mut case, vec![strings.clone()], vec![ints.clone()]);
        assert!(e.contains("Utf8 on the left but Int64 on the right"), "{mode:?}: {e}");
        // Two ranks' batches of one side with different columns.
        let mut case = with(mode, params(&["k"], 10));
        let e = feed(&mut case, vec![ints.clone(), wider.clone()], vec![ints.clone()]);
        assert!(e.contains("the left input has batches with different columns"), "{mode:?}: {e}");
    }
}

/// The error a join gives (panics if there is none).
fn feed(case: &mut Case, left: Vec<RecordBatch>, right: Vec<RecordBatch>) -> String {
    try_run(case, left, right).map(|_| ()).expect_err("an error was expected").to_string()
}

#[test]
fn probe_batches_from_ranks_of_different_nullability_join_as_one_side() {
    let strict = Arc::new(arrow_schema::Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("payload", DataType::Int64, false),
    ]));
    let first = RecordBatch::try_new(
        strict,
        vec![Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef, Arc::new(Int64Array::from(vec![10, 11]))],
    )
    .expect("batch");
    let later = kv(vec![Some(1), None], vec![12, 13]);
    let build = kv(vec![Some(1), Some(3)], vec![20, 21]);
    for mode in ALGORITHMS {
        let mut p = params(&["key"], 100);
        p.how = JoinHow::Full;
        let out = run(&mut with(mode, p), vec![first.clone(), later.clone()], vec![build.clone()]);
        let got = joined_rows(&out);
        // The unmatched right row's key comes from the right.
        let want = vec![
            (None, Some(13), None),
            (Some(1), Some(10), Some(20)),
            (Some(1), Some(12), Some(20)),
            (Some(2), Some(11), None),
            (Some(3), None, Some(21)),
        ];
        assert_eq!(got, want, "{mode:?}");
    }
}

fn joined_rows(out: &[RecordBatch]) -> Vec<(Option<i64>, Option<i64>, Option<i64>)> {
    let mut v: Vec<_> = out
        .iter()
        .flat_map(|b| {
            let c = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
            let (k, l, r) = (c(0), c(1), c(2));
            (0..b.num_rows()).map(move |i| {
                let get = |a: &Int64Array| a.is_valid(i).then(|| a.value(i));
                (get(&k), get(&l), get(&r))
            })
        })
        .collect();
    v.sort();
    v
}
