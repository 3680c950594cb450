//! Joins, sorts and group-bys under a memory budget far below their input: they spill, their
//! answers equal independent computations (plain Rust over the same values), their spill files
//! are gone afterwards, and what cannot spill fails with a resources-exhausted error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch};
use updraft_config::{AggFn, JoinAlgorithm, JoinHow};
use updraft_operators::groupby::{Agg, GroupBy, GroupParams, Mode};
use updraft_operators::join::{Join, JoinParams};
use updraft_operators::setops::{SetKind, SetOp};
use updraft_operators::sort::{LocalSort, SortKey};
use updraft_runtime::{Flow, MemoryPool, Operator, OperatorError, Output};

/// A small deterministic generator (SplitMix64), independent of the code under test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `batches` batches of `rows` rows: `key` in `0..keys` (every 50th null), `payload` random
/// in a range whose sums cannot overflow.
fn table(seed: u64, batches: usize, rows: usize, keys: u64) -> Vec<RecordBatch> {
    let mut rng = Rng(seed);
    (0..batches)
        .map(|_| {
            let k: Vec<Option<i64>> = (0..rows)
                .map(|_| {
                    let v = rng.next();
                    (!v.is_multiple_of(50)).then_some(((v >> 8) % keys) as i64)
                })
                .collect();
            let p: Vec<i64> = (0..rows).map(|_| (rng.next() % 1_000_000) as i64 - 500_000).collect();
            RecordBatch::try_from_iter(vec![
                ("key", Arc::new(Int64Array::from(k)) as ArrayRef),
                ("payload", Arc::new(Int64Array::from(p)) as ArrayRef),
            ])
            .expect("batch")
        })
        .collect()
}

fn pairs(batches: &[RecordBatch]) -> Vec<(Option<i64>, i64)> {
    batches
        .iter()
        .flat_map(|b| {
            let k = b.column(0).as_primitive::<Int64Type>().clone();
            let p = b.column(1).as_primitive::<Int64Type>().clone();
            (0..b.num_rows()).map(move |i| (k.is_valid(i).then(|| k.value(i)), p.value(i)))
        })
        .collect()
}

/// Feeds `inputs` (port, batch) to `op`, ends every port, drains it.
fn drive(
    op: &mut dyn Operator,
    ports: usize,
    inputs: Vec<(usize, RecordBatch)>,
) -> Result<Vec<RecordBatch>, OperatorError> {
    drive_ending(op, inputs, &[], ports)
}

/// Feeds `inputs` (port, batch) to `op`, ending the ports in `early` first (before any input),
/// then the others up to `ports`; calls `resume` whenever the operator asks, as the runtime does.
fn drive_ending(
    op: &mut dyn Operator,
    inputs: Vec<(usize, RecordBatch)>,
    early: &[usize],
    ports: usize,
) -> Result<Vec<RecordBatch>, OperatorError> {
    let mut out = Output::default();
    let more = |op: &mut dyn Operator, mut flow: Flow, out: &mut Output| {
        while flow == Flow::More || out.take_more() {
            flow = op.resume(out)?;
        }
        Ok::<(), OperatorError>(())
    };
    let (first, rest): (Vec<_>, Vec<_>) = inputs.into_iter().partition(|(port, _)| early.contains(port));
    for (port, b) in first {
        op.on_batch(port, b, &mut out)?;
        more(op, Flow::Idle, &mut out)?;
    }
    for &port in early {
        let flow = op.on_end(port, &mut out)?;
        more(op, flow, &mut out)?;
    }
    for (port, b) in rest {
        op.on_batch(port, b, &mut out)?;
        more(op, Flow::Idle, &mut out)?;
    }
    for port in (0..ports).filter(|p| !early.contains(p)) {
        let flow = op.on_end(port, &mut out)?;
        more(op, flow, &mut out)?;
    }
    Ok(out.drain().map(|(_, b)| b).collect())
}

fn pool(limit: u64) -> (tempfile::TempDir, Arc<MemoryPool>) {
    let dir = tempfile::tempdir().expect("spill base");
    let pool = MemoryPool::new(limit, dir.path().to_path_buf());
    (dir, pool)
}

/// Files left under the spill base (the worker's spill directory is removed with its pool).
fn left_behind(base: &tempfile::TempDir) -> usize {
    walk(base.path())
}

fn walk(p: &std::path::Path) -> usize {
    std::fs::read_dir(p)
        .map(|d| d.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
        .unwrap_or(0)
}

#[test]
fn an_external_sort_equals_a_stable_sort_of_the_values() {
    // 40 batches of 2,000 rows: ~1.3 MB held, against 256 KiB.
    let input = table(7, 40, 2000, 5000);
    let (base, pool) = pool(256 << 10);
    let keys = vec![SortKey { column: "key".into(), descending: false, nulls_first: false }];
    let mut sort = LocalSort::new("s", keys, 3000).with_memory(&pool);
    let out = drive(&mut sort, 1, input.iter().cloned().map(|b| (0, b)).collect()).expect("sorted");
    let (bytes, files) = pool.spilled();
    assert!(files >= 3 && bytes > 0, "spilled {files} runs");
    assert_eq!(pool.used(), 0, "everything given back");
    let mut expected = pairs(&input);
    // Stable: equal keys keep their input order; nulls last.
    expected.sort_by_key(|(k, _)| (k.is_none(), *k));
    assert_eq!(pairs(&out), expected);
    drop(sort);
    drop(pool);
    assert_eq!(left_behind(&base), 0);
}

fn join_params(how: JoinHow, algorithm: JoinAlgorithm) -> JoinParams {
    JoinParams {
        name: "j".into(),
        left_on: vec!["key".into()],
        right_on: vec!["key".into()],
        suffixes: ("_l".into(), "_r".into()),
        how,
        algorithm,
        build: None,
        batch_rows: 4096,
    }
}

type JoinRow = (Option<i64>, Option<i64>, Option<i64>);

fn join_rows(batches: &[RecordBatch]) -> Vec<JoinRow> {
    let mut rows: Vec<JoinRow> = Vec::new();
    for b in batches {
        let c = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
        let (k, l, r) = (c(0), c(1), c(2));
        for i in 0..b.num_rows() {
            let v = |a: &arrow_array::Int64Array| a.is_valid(i).then(|| a.value(i));
            rows.push((v(&k), v(&l), v(&r)));
        }
    }
    rows.sort();
    rows
}

/// The join computed from the values: equal non-null keys match; a preserved side keeps its
/// unmatched rows (the key from whichever side has the row).
fn expected_join(left: &[(Option<i64>, i64)], right: &[(Option<i64>, i64)], how: JoinHow) -> Vec<JoinRow> {
    let mut by_key: HashMap<i64, Vec<i64>> = HashMap::new();
    for (k, p) in right {
        if let Some(k) = k {
            by_key.entry(*k).or_default().push(*p);
        }
    }
    let (keep_left, keep_right) = how.preserves();
    let mut matched_keys = std::collections::HashSet::new();
    let mut rows = Vec::new();
    for (k, p) in left {
        match k.and_then(|k| by_key.get(&k).map(|m| (k, m))) {
            Some((k, m)) => {
                matched_keys.insert(k);
                rows.extend(m.iter().map(|r| (Some(k), Some(*p), Some(*r))));
            }
            None if keep_left => rows.push((*k, Some(*p), None)),
            None => {}
        }
    }
    if keep_right {
        for (k, p) in right {
            if k.is_none_or(|k| !matched_keys.contains(&k)) {
                rows.push((*k, None, Some(*p)));
            }
        }
    }
    rows.sort();
    rows
}

#[test]
fn a_probe_side_larger_than_the_budget_streams_through_the_build_side_without_spilling() {
    // 2,000 build rows (about 50 KiB held with the index) against 600,000 probe rows (about 9.6
    // MiB) under a 1 MiB budget: only the build side is held.
    let build = table(21, 4, 500, 3_000);
    let probe = table(22, 300, 2000, 3_000);
    for how in [JoinHow::Inner, JoinHow::Left, JoinHow::Right, JoinHow::Full] {
        let (base, pool) = pool(1 << 20);
        let mut p = join_params(how, JoinAlgorithm::Hash);
        p.build = Some(1);
        let mut join = Join::new(p).with_memory(&pool);
        let inputs: Vec<(usize, RecordBatch)> =
            build.iter().map(|b| (1, b.clone())).chain(probe.iter().map(|b| (0, b.clone()))).collect();
        let out = drive_ending(&mut join, inputs, &[1], 2).expect("joined");
        assert_eq!(pool.spilled().1, 0, "{how:?}: nothing spilled");
        assert_eq!(join_rows(&out), expected_join(&pairs(&probe), &pairs(&build), how), "{how:?}");
        drop(join);
        drop(pool);
        assert_eq!(left_behind(&base), 0);
    }
}

#[test]
fn a_grace_hash_join_equals_the_join_of_the_values_for_every_kind() {
    let left = table(11, 30, 2000, 20_000);
    let right = table(12, 30, 2000, 20_000);
    // Collected (build side chosen at the end), sort-merge, and a named build side: its rows
    // arriving with the probe side's, or all before them (spilling once the build side alone
    // outgrows the budget).
    let modes = [
        (JoinAlgorithm::Hash, None, false),
        (JoinAlgorithm::SortMerge, None, false),
        (JoinAlgorithm::Hash, Some(1), false),
        (JoinAlgorithm::Hash, Some(0), true),
    ];
    for how in [JoinHow::Inner, JoinHow::Left, JoinHow::Full] {
        for (algorithm, build, build_first) in modes {
            let (base, pool) = pool(512 << 10);
            let mut p = join_params(how, algorithm);
            p.build = build;
            let mut join = Join::new(p).with_memory(&pool);
            let inputs: Vec<(usize, RecordBatch)> =
                left.iter().zip(&right).flat_map(|(l, r)| [(0, l.clone()), (1, r.clone())]).collect();
            let early: Vec<usize> = build.filter(|_| build_first).into_iter().collect();
            let out = drive_ending(&mut join, inputs, &early, 2).expect("joined");
            let algorithm = (algorithm, build);
            assert!(pool.spilled().1 > 0, "{how:?} {algorithm:?} spilled");
            assert_eq!(
                join_rows(&out),
                expected_join(&pairs(&left), &pairs(&right), how),
                "{how:?} {algorithm:?}"
            );
            drop(join);
            drop(pool);
            assert_eq!(left_behind(&base), 0);
        }
    }
}

fn agg(func: AggFn, column: Option<&str>, output: &str) -> Agg {
    Agg { func, column: column.map(str::to_string), output: output.into(), quantile: None }
}

fn group_params(aggs: Vec<Agg>) -> GroupParams {
    GroupParams {
        name: "g".into(),
        keys: vec!["key".into()],
        aggs,
        batch_rows: 4096,
        owns_whole_table: false,
    }
}

type Groups = BTreeMap<Option<i64>, (i64, i64, i64, i64, f64)>;

/// key → (count, sum, min, max, mean) from the values.
fn expected_groups(rows: &[(Option<i64>, i64)]) -> Groups {
    let mut g: BTreeMap<Option<i64>, (i64, i64, i64, i64)> = BTreeMap::new();
    for (k, p) in rows {
        let e = g.entry(*k).or_insert((0, 0, i64::MAX, i64::MIN));
        e.0 += 1;
        e.1 += p;
        e.2 = e.2.min(*p);
        e.3 = e.3.max(*p);
    }
    g.into_iter().map(|(k, (n, s, lo, hi))| (k, (n, s, lo, hi, s as f64 / n as f64))).collect()
}

fn groups_of(batches: &[RecordBatch]) -> Groups {
    let mut g = BTreeMap::new();
    for b in batches {
        let i = |c: usize| b.column(c).as_primitive::<Int64Type>().clone();
        let (k, n, s, lo, hi) = (i(0), i(1), i(2), i(3), i(4));
        let m = b.column(5).as_primitive::<Float64Type>().clone();
        for r in 0..b.num_rows() {
            let key = k.is_valid(r).then(|| k.value(r));
            let row = (n.value(r), s.value(r), lo.value(r), hi.value(r), m.value(r));
            assert!(g.insert(key, row).is_none(), "key {key:?} came out twice");
        }
    }
    g
}

/// Integer aggregates exactly, the mean within 1e-9 (its summation order differs).
fn assert_groups(got: &Groups, expected: &Groups) {
    assert_eq!(got.len(), expected.len());
    for (k, (n, s, lo, hi, m)) in expected {
        let g = got.get(k).unwrap_or_else(|| panic!("group {k:?} missing"));
        assert_eq!((g.0, g.1, g.2, g.3), (*n, *s, *lo, *hi), "key {k:?}");
        assert!((g.4 - m).abs() <= 1e-9 * m.abs().max(1.0), "mean of {k:?}: {} vs {m}", g.4);
    }
}

#[test]
fn a_spilling_group_by_equals_the_groups_of_the_values() {
    let input = table(21, 40, 2000, 30_000);
    let aggs = vec![
        agg(AggFn::Count, None, "n"),
        agg(AggFn::Sum, Some("payload"), "s"),
        agg(AggFn::Min, Some("payload"), "lo"),
        agg(AggFn::Max, Some("payload"), "hi"),
        agg(AggFn::Mean, Some("payload"), "m"),
    ];
    let expected = expected_groups(&pairs(&input));
    // Complete (raw rows in) and partial then final: both under the budget.
    let (base, pool) = pool(256 << 10);
    let mut complete = GroupBy::new(group_params(aggs.clone()), Mode::Complete).with_memory(&pool);
    let out = drive(&mut complete, 1, input.iter().cloned().map(|b| (0, b)).collect()).expect("complete");
    assert!(pool.spilled().1 > 0, "the complete stage spilled");
    assert_groups(&groups_of(&out), &expected);
    let mut partial = GroupBy::new(group_params(aggs.clone()), Mode::Partial).with_memory(&pool);
    let states = drive(&mut partial, 1, input.iter().cloned().map(|b| (0, b)).collect()).expect("partial");
    assert!(states.len() > 1, "the partial stage handed its table on when full");
    let mut last = GroupBy::new(group_params(aggs), Mode::Final).with_memory(&pool);
    let out = drive(&mut last, 1, states.into_iter().map(|b| (0, b)).collect()).expect("final");
    assert_groups(&groups_of(&out), &expected);
    drop((complete, partial, last));
    drop(pool);
    assert_eq!(left_behind(&base), 0);
}

#[test]
fn what_cannot_spill_fails_with_resources_exhausted_naming_the_operator() {
    let input = table(31, 20, 2000, 30_000);
    let (_base, pool) = pool(64 << 10);
    let mut median =
        GroupBy::new(group_params(vec![agg(AggFn::Median, Some("payload"), "med")]), Mode::Complete)
            .with_memory(&pool);
    let e = drive(&mut median, 1, input.iter().cloned().map(|b| (0, b)).collect()).expect_err("over");
    assert!(matches!(e, OperatorError::ResourcesExhausted(ref r) if r.operator == "g"), "{e}");
    assert!(e.to_string().contains("median") && e.to_string().contains("runtime.memory_limit"), "{e}");
    let mut distinct = SetOp::new("d", SetKind::Distinct { columns: vec![] }, 1).with_memory(&pool);
    let e = drive(&mut distinct, 1, input.into_iter().map(|b| (0, b)).collect()).expect_err("over");
    assert!(matches!(e, OperatorError::ResourcesExhausted(ref r) if r.operator == "d"), "{e}");
    assert_eq!(e.class(), updraft_runtime::FailureClass::ResourcesExhausted);
}
