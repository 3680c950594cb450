use super::*;
use crate::aggregates::quantile;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Float64Array, Int64Array};

fn agg(func: AggFn, column: Option<&str>, output: &str) -> Agg {
    let quantile = (func == AggFn::Median).then_some(0.5);
    Agg { func, column: column.map(str::to_string), output: output.to_string(), quantile }
}

fn params(aggs: Vec<Agg>) -> GroupParams {
    GroupParams { name: "g".into(), keys: vec!["k".into()], aggs, batch_rows: 2, owns_whole_table: true }
}

fn input(k: Vec<Option<i64>>, v: Vec<Option<i64>>) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        ("k", Arc::new(Int64Array::from(k)) as ArrayRef),
        ("v", Arc::new(Int64Array::from(v)) as ArrayRef),
    ])
    .expect("batch")
}

/// Runs one operator over `batches` and returns its output concatenated.
fn run(op: &mut GroupBy, batches: Vec<RecordBatch>) -> RecordBatch {
    let mut out = Output::default();
    for b in batches {
        op.on_batch(0, b, &mut out).expect("batch");
    }
    let mut flow = op.on_end(0, &mut out).expect("end");
    while flow == Flow::More {
        flow = op.resume(&mut out).expect("resume");
    }
    let got: Vec<RecordBatch> = out.drain().map(|(_, b)| b).collect();
    assert!(got.iter().all(|b| b.num_rows() <= 2), "output in batches of batch_rows");
    arrow_select::concat::concat_batches(&got[0].schema(), &got).expect("concat")
}

/// (key, column values as f64 or None) sorted by key (null key first).
fn by_key(b: &RecordBatch) -> Vec<(Option<i64>, Vec<Option<f64>>)> {
    let k = arrow_cast::cast(b.column(0), &DataType::Int64).expect("keys");
    let k = k.as_primitive::<Int64Type>();
    let cols: Vec<ArrayRef> = (1..b.num_columns())
        .map(|c| arrow_cast::cast(b.column(c), &DataType::Float64).expect("cast"))
        .collect();
    let mut rows: Vec<_> = (0..b.num_rows())
        .map(|i| {
            let vals = cols
                .iter()
                .map(|col| {
                    let col = col.as_primitive::<Float64Type>();
                    col.is_valid(i).then(|| col.value(i))
                })
                .collect();
            (k.is_valid(i).then(|| k.value(i)), vals)
        })
        .collect();
    rows.sort_by_key(|r| r.0);
    rows
}

#[test]
fn dictionary_and_null_typed_values_count_their_nulls_and_first_keeps_negative_zero() {
    let values: ArrayRef = Arc::new(arrow_array::StringArray::from(vec![Some("a"), None]));
    let dict: ArrayRef = Arc::new(
        arrow_array::DictionaryArray::try_new(arrow_array::Int32Array::from(vec![0, 1, 1]), values)
            .expect("dict"),
    );
    let ints: ArrayRef = Arc::new(
        arrow_array::DictionaryArray::try_new(
            arrow_array::Int32Array::from(vec![0, 1, 0]),
            Arc::new(Int64Array::from(vec![5, 7])) as ArrayRef,
        )
        .expect("dict"),
    );
    let b = RecordBatch::try_from_iter(vec![
        ("k", Arc::new(Int64Array::from(vec![1, 1, 1])) as ArrayRef),
        ("d", dict),
        ("z", Arc::new(arrow_array::NullArray::new(3)) as ArrayRef),
        ("f", Arc::new(Float64Array::from(vec![-0.0, 1.0, 2.0])) as ArrayRef),
        ("i", ints),
    ])
    .expect("batch");
    let aggs = vec![
        agg(AggFn::Count, Some("d"), "cd"),
        agg(AggFn::NUnique, Some("d"), "ud"),
        agg(AggFn::Count, Some("z"), "cz"),
        agg(AggFn::NUnique, Some("z"), "uz"),
        agg(AggFn::Sum, Some("z"), "sz"),
        agg(AggFn::First, Some("f"), "ff"),
        agg(AggFn::Sum, Some("i"), "si"),
    ];
    let out = run(&mut GroupBy::new(params(aggs), Mode::Complete), vec![b]);
    let int = |c: usize| out.column(c).as_primitive::<Int64Type>().value(0);
    assert_eq!((int(1), int(2), int(3), int(4)), (1, 1, 0, 0), "null values are not counted");
    assert!(out.column(5).is_null(0), "the sum of no values is null");
    let first = out.column(6).as_primitive::<Float64Type>().value(0);
    assert!(first == 0.0 && first.is_sign_negative(), "first keeps -0.0");
    assert_eq!(int(7), 17, "a dictionary of integers sums its values, exactly");
}

#[test]
fn quantiles_interpolate_between_the_nearest_ranks() {
    assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), Some(2.5));
    assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.9), Some(3.0 + 0.7));
    assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.0), Some(1.0));
    assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 1.0), Some(4.0));
    assert_eq!(quantile(&[7.0], 0.3), Some(7.0));
    assert_eq!(quantile(&[], 0.5), None);
    assert!(quantile(&[1.0, f64::NAN], 1.0).is_some_and(f64::is_nan), "NaN is the largest");
    assert_eq!(quantile(&[-0.0, 5.0, f64::NAN], 0.5), Some(5.0));
}

#[test]
fn every_function_on_groups_with_nulls() {
    let aggs = vec![
        agg(AggFn::Count, None, "n"),
        agg(AggFn::Count, Some("v"), "c"),
        agg(AggFn::Sum, Some("v"), "s"),
        agg(AggFn::Min, Some("v"), "lo"),
        agg(AggFn::Max, Some("v"), "hi"),
        agg(AggFn::Mean, Some("v"), "mean"),
        agg(AggFn::Var, Some("v"), "var"),
        agg(AggFn::Std, Some("v"), "std"),
        agg(AggFn::NUnique, Some("v"), "u"),
        agg(AggFn::First, Some("v"), "first"),
        agg(AggFn::Last, Some("v"), "last"),
    ];
    let a = input(vec![Some(1), Some(1), None, Some(2)], vec![Some(4), None, Some(7), None]);
    let b = input(vec![Some(1), Some(1), None], vec![Some(8), Some(4), Some(7)]);
    let out = by_key(&run(&mut GroupBy::new(params(aggs), Mode::Complete), vec![a, b]));
    // Key 1: values 4, null, 8, 4. Sample variance of 4, 8, 4 is 16/3.
    let var = 16.0 / 3.0;
    let f = |x: f64| Some(x);
    assert_eq!(
        out,
        vec![
            (
                None,
                vec![f(2.0), f(2.0), f(14.0), f(7.0), f(7.0), f(7.0), f(0.0), f(0.0), f(1.0), f(7.0), f(7.0)]
            ),
            (
                Some(1),
                vec![
                    f(4.0),
                    f(3.0),
                    f(16.0),
                    f(4.0),
                    f(8.0),
                    f(16.0 / 3.0),
                    f(var),
                    f(var.sqrt()),
                    f(2.0),
                    f(4.0),
                    f(4.0)
                ]
            ),
            // Only a null value: counts are 1 and 0, everything else null (variance of
            // fewer than two values too), nunique 0.
            (Some(2), vec![f(1.0), f(0.0), None, None, None, None, None, None, f(0.0), None, None]),
        ]
    );
}

#[test]
fn partial_then_final_equals_complete() {
    let aggs = || {
        vec![
            agg(AggFn::Count, None, "n"),
            agg(AggFn::Sum, Some("v"), "s"),
            agg(AggFn::Min, Some("v"), "lo"),
            agg(AggFn::Mean, Some("v"), "m"),
            agg(AggFn::Std, Some("v"), "sd"),
        ]
    };
    let parts: Vec<RecordBatch> = (0..3)
        .map(|p| {
            let k: Vec<Option<i64>> =
                (0..50).map(|i| if i % 11 == 0 { None } else { Some((i * p) % 7) }).collect();
            let v: Vec<Option<i64>> =
                (0..50).map(|i| if i % 13 == 0 { None } else { Some(i * 3 - p) }).collect();
            input(k, v)
        })
        .collect();
    let complete = by_key(&run(&mut GroupBy::new(params(aggs()), Mode::Complete), parts.clone()));
    // Each part pre-aggregated on its own "rank", the partial states merged.
    let partials: Vec<RecordBatch> =
        parts.into_iter().map(|p| run(&mut GroupBy::new(params(aggs()), Mode::Partial), vec![p])).collect();
    let merged = by_key(&run(&mut GroupBy::new(params(aggs()), Mode::Final), partials));
    assert_close(&merged, &complete);
}

/// A partial aggregation that finds nearly every row a group of its own stops hashing after
/// its probe and sends the rows on as they are; merged, the answer is the complete one. Keys are
/// Int32 (the integer key path), with nulls; min/max over floats with NaN and signed zeros.
#[test]
fn a_partial_aggregation_that_stops_hashing_still_merges_to_the_complete_answer() {
    let aggs = || {
        vec![
            agg(AggFn::Count, None, "n"),
            agg(AggFn::Sum, Some("v"), "s"),
            agg(AggFn::Min, Some("f"), "lo"),
            agg(AggFn::Max, Some("f"), "hi"),
            agg(AggFn::Mean, Some("v"), "m"),
        ]
    };
    let batch = |lo: i32, n: i32| {
        let k: Vec<Option<i32>> =
            (lo..lo + n).map(|i| if i % 997 == 0 { None } else { Some(i % 150_000) }).collect();
        let v: Vec<Option<i64>> = (lo..lo + n).map(|i| (i % 13 != 0).then_some(i as i64 % 1000)).collect();
        let f: Vec<Option<f64>> = (lo..lo + n)
            .map(|i| match i % 5 {
                0 => None,
                1 => Some(f64::NAN),
                2 => Some(-0.0),
                _ => Some(f64::from(i % 77) - 30.0),
            })
            .collect();
        RecordBatch::try_from_iter(vec![
            ("k", Arc::new(arrow_array::Int32Array::from(k)) as ArrayRef),
            ("v", Arc::new(Int64Array::from(v)) as ArrayRef),
            ("f", Arc::new(Float64Array::from(f)) as ArrayRef),
        ])
        .expect("batch")
    };
    // 200k rows over 150k keys: past the probe, groups/rows is above the ratio.
    let parts: Vec<RecordBatch> = (0..4).map(|p| batch(p * 50_000, 50_000)).collect();
    let drive = |mode: Mode, input: Vec<RecordBatch>| {
        let mut op = GroupBy::new(GroupParams { batch_rows: 1 << 20, ..params(aggs()) }, mode);
        let mut out = Output::default();
        for b in input {
            op.on_batch(0, b, &mut out).expect("batch");
        }
        let mut flow = op.on_end(0, &mut out).expect("end");
        while flow == Flow::More {
            flow = op.resume(&mut out).expect("resume");
        }
        (op.passthrough.is_some(), out.drain().map(|(_, b)| b).collect::<Vec<_>>())
    };
    let (skipped, partial) = drive(Mode::Partial, parts.clone());
    assert!(skipped, "the partial stage stops hashing");
    // The states of the probe's groups, then the raw rows themselves.
    assert!(is_states(&partial[0].schema()), "states first");
    assert!(partial.iter().skip(1).all(|b| !is_states(&b.schema())), "then raw rows");
    let (_, merged) = drive(Mode::Final, partial);
    let (_, complete) = drive(Mode::Complete, parts);
    let all = |b: Vec<RecordBatch>| {
        by_key(&arrow_select::concat::concat_batches(&b[0].schema(), &b).expect("concat"))
    };
    let (merged, complete) = (all(merged), all(complete));
    // Keys 0..150k, but those seen only where the key is null; and the null key.
    let keys: std::collections::BTreeSet<Option<i64>> =
        (0..200_000i64).map(|i| (i % 997 != 0).then_some(i % 150_000)).collect();
    assert_eq!(complete.len(), keys.len());
    assert_close(&merged, &complete);
}

#[test]
fn an_empty_input_gives_an_empty_result_with_the_output_columns() {
    let out = run(
        &mut GroupBy::new(params(vec![agg(AggFn::Sum, Some("v"), "s")]), Mode::Complete),
        vec![input(vec![], vec![])],
    );
    assert_eq!(out.num_rows(), 0);
    let schema = out.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, vec!["k", "s"]);
}

/// Per key: values (None for null), in input order.
type Values = std::collections::BTreeMap<Option<i64>, Vec<Option<i64>>>;

/// Count of values, sum, min, max, mean, sample variance of each group's values, computed
/// directly (two passes, exact integers).
fn reference(groups: &Values) -> Vec<(Option<i64>, Vec<Option<f64>>)> {
    groups
        .iter()
        .map(|(k, vs)| {
            let v: Vec<i64> = vs.iter().flatten().copied().collect();
            let n = v.len() as f64;
            let sum: i64 = v.iter().sum();
            let mean = (!v.is_empty()).then(|| sum as f64 / n);
            let var = (v.len() > 1).then(|| {
                let m = sum as f64 / n;
                v.iter().map(|x| (*x as f64 - m).powi(2)).sum::<f64>() / (n - 1.0)
            });
            let some = |x: Option<i64>| x.map(|x| x as f64);
            let stats = vec![
                Some(n),
                some((!v.is_empty()).then_some(sum)),
                some(v.iter().min().copied()),
                some(v.iter().max().copied()),
                mean,
                var,
            ];
            (*k, stats)
        })
        .collect()
}

/// Same keys, same values: within 1e-9 (relative past 1), NaN equal to NaN, nulls exactly.
fn assert_close(got: &[(Option<i64>, Vec<Option<f64>>)], expected: &[(Option<i64>, Vec<Option<f64>>)]) {
    assert_eq!(got.len(), expected.len(), "groups");
    for ((gk, g), (ek, e)) in got.iter().zip(expected) {
        assert_eq!(gk, ek);
        for (i, (x, y)) in g.iter().zip(e).enumerate() {
            match (x, y) {
                (Some(x), Some(y)) if y.is_nan() => assert!(x.is_nan(), "key {gk:?} column {i}: {x} vs NaN"),
                (Some(x), Some(y)) => {
                    assert!((x - y).abs() <= 1e-9 * y.abs().max(1.0), "key {gk:?} column {i}: {x} vs {y}")
                }
                _ => assert_eq!(x, y, "key {gk:?} column {i}"),
            }
        }
    }
}

#[test]
fn many_groups_over_many_chunks_and_slab_blocks_equal_a_direct_computation() {
    let aggs = vec![
        agg(AggFn::Count, Some("v"), "c"),
        agg(AggFn::Sum, Some("v"), "s"),
        agg(AggFn::Min, Some("v"), "lo"),
        agg(AggFn::Max, Some("v"), "hi"),
        agg(AggFn::Mean, Some("v"), "mean"),
        agg(AggFn::Var, Some("v"), "var"),
    ];
    // 30,000 rows over 9,001 keys (several slab blocks of 4,096 groups, many chunks of
    // CHUNK_ROWS), a null key, null values, and batches that are offset slices of one array.
    let rows = 30_000usize;
    let key = |i: usize| if i.is_multiple_of(997) { None } else { Some(((i * 7919) % 9_001) as i64 - 4_000) };
    let value =
        |i: usize| if i.is_multiple_of(13) { None } else { Some((i as i64 * 104_729) % 20_011 - 10_000) };
    let all = input((0..rows + 3).map(key).collect(), (0..rows + 3).map(value).collect());
    let batches: Vec<RecordBatch> =
        [(3, 9_000), (9_003, 5), (9_008, 20_995)].iter().map(|&(at, n)| all.slice(at, n)).collect();
    let mut groups = Values::new();
    for i in 3..rows + 3 {
        groups.entry(key(i)).or_default().push(value(i));
    }
    let expected = reference(&groups);
    let complete = run(&mut GroupBy::new(params(aggs.clone()), Mode::Complete), batches.clone());
    assert_close(&by_key(&complete), &expected);
    // Partial on two ranks' shares, then final over their states.
    let mut states = Vec::new();
    for share in [&batches[..1], &batches[1..]] {
        let mut partial = GroupBy::new(params(aggs.clone()), Mode::Partial);
        let got = run(&mut partial, share.to_vec());
        states.push(got);
    }
    let merged = run(&mut GroupBy::new(params(aggs), Mode::Final), states);
    assert_close(&by_key(&merged), &expected);
}

#[test]
fn whole_table_sums_and_counts_by_kernels_equal_a_direct_computation_and_overflow_is_an_error() {
    let n = 5_000usize;
    let v: Vec<Option<i64>> = (0..n).map(|i| (i % 7 != 0).then_some(i as i64 * 3 - 7_000)).collect();
    let f: Vec<Option<f64>> = (0..n).map(|i| (i % 5 != 0).then_some(i as f64 / 8.0 - 100.0)).collect();
    let u: Vec<u64> = (0..n).map(|i| i as u64 * 11).collect();
    let dict: ArrayRef = Arc::new(
        arrow_array::DictionaryArray::try_new(
            arrow_array::Int32Array::from((0..n as i32).map(|i| i % 3).collect::<Vec<_>>()),
            Arc::new(Int64Array::from(vec![Some(5), None, Some(-2)])) as ArrayRef,
        )
        .expect("dict"),
    );
    let batch = RecordBatch::try_from_iter(vec![
        ("v", Arc::new(Int64Array::from(v.clone())) as ArrayRef),
        ("f", Arc::new(Float64Array::from(f.clone())) as ArrayRef),
        ("u", Arc::new(arrow_array::UInt64Array::from(u.clone())) as ArrayRef),
        ("d", dict),
        ("z", arrow_array::new_null_array(&DataType::Null, n)),
    ])
    .expect("batch");
    let aggs = vec![
        agg(AggFn::Count, None, "rows"),
        agg(AggFn::Count, Some("v"), "cv"),
        agg(AggFn::Count, Some("d"), "cd"),
        agg(AggFn::Count, Some("z"), "cz"),
        agg(AggFn::Sum, Some("v"), "sv"),
        agg(AggFn::Sum, Some("u"), "su"),
        agg(AggFn::Sum, Some("d"), "sd"),
        agg(AggFn::Sum, Some("f"), "sf"),
        agg(AggFn::Mean, Some("f"), "mf"),
        agg(AggFn::Sum, Some("z"), "sz"),
        agg(AggFn::Min, Some("v"), "lo"),
    ];
    let whole = |aggs: Vec<Agg>| GroupParams { keys: vec![], ..params(aggs) };
    // Two batches, the second a slice: the kernels see offsets too.
    let got =
        run(&mut GroupBy::new(whole(aggs.clone()), Mode::Complete), vec![batch.clone(), batch.slice(1, 10)]);
    let vs: Vec<i64> = v.iter().flatten().copied().chain(v[1..11].iter().flatten().copied()).collect();
    let fs: Vec<f64> = f.iter().flatten().copied().chain(f[1..11].iter().flatten().copied()).collect();
    let ds: Vec<i64> = (0..n).chain(1..11).filter_map(|i| [Some(5), None, Some(-2)][i % 3]).collect();
    let sf: f64 = fs.iter().sum();
    let int = |c: usize| got.column(c).as_primitive::<Int64Type>().value(0);
    let float = |c: usize| got.column(c).as_primitive::<Float64Type>().value(0);
    assert_eq!(got.num_rows(), 1);
    assert_eq!((int(0), int(1), int(2), int(3)), ((n + 10) as i64, vs.len() as i64, ds.len() as i64, 0));
    assert_eq!(int(4), vs.iter().sum::<i64>());
    let su: u64 = u.iter().chain(&u[1..11]).sum();
    assert_eq!(got.column(5).as_primitive::<arrow_array::types::UInt64Type>().value(0), su);
    assert_eq!(int(6), ds.iter().sum::<i64>());
    assert!((float(7) - sf).abs() <= 1e-9 * sf.abs());
    assert!((float(8) - sf / fs.len() as f64).abs() <= 1e-9);
    assert!(got.column(9).is_null(0), "the sum of no values is null");
    assert_eq!(int(10), *vs.iter().min().expect("values"));
    let big = input(vec![None, None], vec![Some(i64::MAX), Some(1)]);
    let e = GroupBy::new(whole(vec![agg(AggFn::Sum, Some("v"), "s")]), Mode::Complete)
        .on_batch(0, big, &mut Output::default())
        .expect_err("overflow");
    assert!(e.to_string().contains("overflows int64") && e.to_string().contains("sum(v)"), "{e}");
}

#[test]
fn whole_table_sums_add_in_row_order_as_grouped_ones_do() {
    let whole = |aggs: Vec<Agg>| GroupParams { keys: vec![], ..params(aggs) };
    // The running sum leaves int64 and comes back: fine row by row, so fine here too.
    let ints =
        vec![input(vec![None], vec![Some(-1)]), input(vec![None, None], vec![Some(i64::MAX), Some(1)])];
    let got = run(&mut GroupBy::new(whole(vec![agg(AggFn::Sum, Some("v"), "s")]), Mode::Complete), ints);
    assert_eq!(got.column(0).as_primitive::<Int64Type>().value(0), i64::MAX);
    // Floats: each 1.0 added to 1e16 rounds away, in row order.
    let f = RecordBatch::try_from_iter(vec![(
        "f",
        Arc::new(Float64Array::from(vec![1e16, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])) as ArrayRef,
    )])
    .expect("batch");
    let got = run(&mut GroupBy::new(whole(vec![agg(AggFn::Sum, Some("f"), "s")]), Mode::Complete), vec![f]);
    assert_eq!(got.column(0).as_primitive::<Float64Type>().value(0), 1e16);
}

#[test]
fn negative_counts_in_partial_states_are_refused() {
    let aggs =
        vec![agg(AggFn::Count, None, "n"), agg(AggFn::Sum, Some("v"), "s"), agg(AggFn::Std, Some("v"), "sd")];
    let states = run(
        &mut GroupBy::new(params(aggs.clone()), Mode::Partial),
        vec![input(vec![Some(1)], vec![Some(4)])],
    );
    for (column, negative) in [("n", 0), ("s.n", 1), ("sd.n", 2)] {
        let i = states.schema().index_of(column).expect("state column");
        let mut cols = states.columns().to_vec();
        cols[i] = if negative == 2 {
            Arc::new(Float64Array::from(vec![-1.0])) as ArrayRef
        } else {
            Arc::new(Int64Array::from(vec![-1])) as ArrayRef
        };
        let bad = RecordBatch::try_new(states.schema(), cols).expect("batch");
        let e = GroupBy::new(params(aggs.clone()), Mode::Final)
            .on_batch(0, bad, &mut Output::default())
            .expect_err("negative count");
        assert!(e.to_string().contains("count"), "{column}: {e}");
    }
}
