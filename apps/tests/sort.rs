//! Distributed sort on real local clusters: the concatenation of the ranks' outputs, in rank
//! order, is the input sorted by the keys (checked against a sort done here).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

mod common;

use std::cmp::Ordering;

use arrow_schema::DataType;
use common::*;

/// a descending with nulls first, then b ascending with nulls last.
fn order(x: &Row, y: &Row) -> Ordering {
    let a = |r: &Row| match &r[0] {
        V::I(v) => *v,
        V::S(_) => None,
    };
    let b = |r: &Row| match &r[1] {
        V::S(v) => v.clone(),
        V::I(_) => None,
    };
    let first = match (a(x), a(y)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(p), Some(q)) => q.cmp(&p),
    };
    first.then_with(|| match (b(x), b(y)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(p), Some(q)) => p.cmp(&q),
    })
}

#[test]
fn sorted_across_ranks_in_rank_order_on_1_to_4_workers() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rng = TestRng(17);
    let rows: Vec<Row> = (0..5000)
        .map(|n| {
            let a = if rng.below(15) == 0 { V::I(None) } else { V::I(Some(rng.below(400) as i64 - 200)) };
            let b =
                if rng.below(15) == 0 { V::S(None) } else { V::S(Some(format!("w{:03}", rng.below(50)))) };
            vec![a, b, V::I(Some(n))]
        })
        .collect();
    let types = [DataType::Int64, DataType::Utf8, DataType::Int64];
    let chunk = rows.len().div_ceil(3);
    let files: Vec<String> = (0..3)
        .map(|k| {
            let f = format!("in-{k}.parquet");
            write_parquet(
                &dir.path().join(&f),
                &batch(&["a", "b", "id"], &types, &rows[k * chunk..((k + 1) * chunk).min(rows.len())]),
            );
            format!("\"{f}\"")
        })
        .collect();
    let pipeline = format!(
        "[runtime]\nbatch_rows = 300\n\n[source.s]\nkind = \"parquet\"\npaths = [{}]\n\n\
         [operator.sorted]\nkind = \"sort\"\ninput = \"s\"\nby = [\"a desc nulls first\", \"b\"]\n\n\
         [sink.out]\nkind = \"parquet\"\ninput = \"sorted\"\npath = \"out/s-{{rank}}.parquet\"\n",
        files.join(", ")
    );
    let mut want = rows.clone();
    want.sort_by(order);
    for workers in 1..=4u32 {
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let (out, _) = run_cluster(dir.path(), &pipeline, workers);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut got = Vec::new();
        let mut per_rank = Vec::new();
        for rank in 0..workers {
            let (_, part) = read_parquet_rows(&dir.path().join("out"), &format!("s-{rank}."));
            per_rank.push(part.len());
            got.extend(part);
        }
        assert_eq!(got.len(), want.len(), "{workers} workers: rows");
        for (i, w) in got.windows(2).enumerate() {
            assert_ne!(
                order(&w[0], &w[1]),
                Ordering::Greater,
                "{workers} workers: rows {i} and {} out of order",
                i + 1
            );
        }
        let key = |r: &Row| (r[0].clone(), r[1].clone());
        assert_eq!(
            got.iter().map(key).collect::<Vec<_>>(),
            want.iter().map(key).collect::<Vec<_>>(),
            "{workers} workers: keys"
        );
        let (mut g, mut w) = (got.clone(), want.clone());
        g.sort();
        w.sort();
        assert_eq!(g, w, "{workers} workers: same rows");
        if workers > 1 {
            assert!(
                per_rank.iter().filter(|n| **n > 0).count() > 1,
                "{workers} workers: ranges spread over ranks: {per_rank:?}"
            );
        }
    }
}

#[test]
fn head_after_sort_is_the_top_n_on_rank_0_and_repartition_keeps_every_row() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rng = TestRng(23);
    let rows: Vec<Row> = (0..3000)
        .map(|n| vec![V::I(Some(rng.below(100_000) as i64)), V::S(Some(format!("r{n}"))), V::I(Some(n))])
        .collect();
    let types = [DataType::Int64, DataType::Utf8, DataType::Int64];
    for k in 0..3 {
        write_parquet(
            &dir.path().join(format!("in-{k}.parquet")),
            &batch(&["a", "b", "id"], &types, &rows[k * 1000..(k + 1) * 1000]),
        );
    }
    let pipeline = "[runtime]\nbatch_rows = 128\n\n[source.s]\nkind = \"parquet\"\npaths = [\"in-0.parquet\", \"in-1.parquet\", \"in-2.parquet\"]\n\n\
         [operator.sorted]\nkind = \"sort\"\ninput = \"s\"\nby = [\"a desc\", \"id\"]\n\n[operator.top]\nkind = \"head\"\ninput = \"sorted\"\nrows = 25\n\n\
         [operator.spread]\nkind = \"repartition\"\ninput = \"s\"\n\n\
         [sink.out]\nkind = \"parquet\"\ninput = \"top\"\npath = \"out/t-{rank}.parquet\"\n\n\
         [sink.spread_files]\nkind = \"parquet\"\ninput = \"spread\"\npath = \"out/r-{rank}.parquet\"\n";
    let mut want = rows.clone();
    want.sort_by(|x, y| match (&x[0], &y[0], &x[2], &y[2]) {
        (V::I(a), V::I(b), V::I(i), V::I(j)) => b.cmp(a).then(i.cmp(j)),
        _ => Ordering::Equal,
    });
    want.truncate(25);
    let (out, _) = run_cluster(dir.path(), pipeline, 3);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, top) = read_parquet_rows(&dir.path().join("out"), "t-0.");
    assert_eq!(top, want, "the top 25, in order, on rank 0");
    let heads: Vec<String> =
        list_dir(&dir.path().join("out")).into_iter().filter(|f| f.starts_with("t-")).collect();
    assert_eq!(heads, ["t-0.parquet"], "only rank 0 writes a head's rows; no empty part files");
    let mut spread_total = Vec::new();
    let mut ranks_with_rows = 0;
    for rank in 0..3 {
        let (_, part) = read_parquet_rows(&dir.path().join("out"), &format!("r-{rank}."));
        ranks_with_rows += usize::from(!part.is_empty());
        spread_total.extend(part);
    }
    spread_total.sort();
    let mut all = rows.clone();
    all.sort();
    assert_eq!(spread_total, all, "repartition keeps every row once");
    assert_eq!(ranks_with_rows, 3, "round-robin spreads batches over every rank");
}

#[test]
fn tail_and_slice_after_sort_cut_the_sorted_table_on_1_to_4_workers() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rng = TestRng(29);
    let rows: Vec<Row> = (0..2000)
        .map(|n| vec![V::I(Some(rng.below(50_000) as i64)), V::S(Some(format!("r{n}"))), V::I(Some(n))])
        .collect();
    let types = [DataType::Int64, DataType::Utf8, DataType::Int64];
    // Uneven files: one rank may hold far fewer rows than the tail needs.
    for (k, range) in [(0, 0..1500), (1, 1500..1510), (2, 1510..2000)] {
        write_parquet(
            &dir.path().join(format!("in-{k}.parquet")),
            &batch(&["a", "b", "id"], &types, &rows[range]),
        );
    }
    let mut sorted = rows.clone();
    sorted.sort_by(|x, y| match (&x[0], &y[0], &x[2], &y[2]) {
        (V::I(a), V::I(b), V::I(i), V::I(j)) => a.cmp(b).then(i.cmp(j)),
        _ => Ordering::Equal,
    });
    let pipeline = "[runtime]\nbatch_rows = 97\n\n[source.s]\nkind = \"parquet\"\npaths = [\"in-0.parquet\", \"in-1.parquet\", \"in-2.parquet\"]\n\n\
         [operator.sorted]\nkind = \"sort\"\ninput = \"s\"\nby = [\"a\", \"id\"]\n\n\
         [operator.bottom]\nkind = \"tail\"\ninput = \"sorted\"\nrows = 130\n\n\
         [operator.page]\nkind = \"slice\"\ninput = \"sorted\"\noffset = 990\nrows = 45\n\n\
         [operator.past]\nkind = \"slice\"\ninput = \"sorted\"\noffset = 1990\nrows = 45\n\n\
         [sink.bottom_rows]\nkind = \"parquet\"\ninput = \"bottom\"\npath = \"out/t-{rank}.parquet\"\n\n\
         [sink.page_rows]\nkind = \"parquet\"\ninput = \"page\"\npath = \"out/p-{rank}.parquet\"\n\n\
         [sink.past_rows]\nkind = \"parquet\"\ninput = \"past\"\npath = \"out/e-{rank}.parquet\"\n";
    for workers in 1..=4 {
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let (out, _) = run_cluster(dir.path(), pipeline, workers);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (_, tail) = read_parquet_rows(&dir.path().join("out"), "t-");
        assert_eq!(tail, sorted[2000 - 130..].to_vec(), "{workers} workers: the last 130, in order");
        let (_, page) = read_parquet_rows(&dir.path().join("out"), "p-");
        assert_eq!(page, sorted[990..1035].to_vec(), "{workers} workers: rows 990 to 1034");
        let (_, past) = read_parquet_rows(&dir.path().join("out"), "e-");
        assert_eq!(past, sorted[1990..].to_vec(), "{workers} workers: a slice past the end is cut short");
        let files = list_dir(&dir.path().join("out"));
        assert_eq!(
            files,
            ["e-0.parquet", "p-0.parquet", "t-0.parquet"],
            "{workers} workers: rank 0 alone writes"
        );
    }
}
