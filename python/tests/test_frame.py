"""The Python API against pandas on the same data, on 1 to 4 local workers."""

import math
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

import updraft as ud

WORKERS = [1, 2, 4]


def rows(table: pa.Table, by):
    """The rows of `table` as a sorted list of tuples (None for null, NaN kept)."""
    df = table.to_pandas()
    out = [tuple(None if (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is None else v for v in r)
           for r in df[by].itertuples(index=False)]
    return sorted(out, key=lambda r: tuple((v is None, v) for v in r))


@pytest.fixture()
def data(tmp_path, monkeypatch):
    """orders in 3 Parquet files, customers in one CSV; run from `tmp_path`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    n = 3000
    orders = pd.DataFrame(
        {
            "order_id": range(n),
            "customer_id": [(i * 37) % 211 if i % 17 else None for i in range(n)],
            "amount": [round(((i * 7919) % 1000) / 7.0, 2) for i in range(n)],
        }
    )
    orders["customer_id"] = orders["customer_id"].astype("Int64")
    for part in range(3):
        chunk = orders.iloc[part * 1000 : (part + 1) * 1000]
        pq.write_table(pa.Table.from_pandas(chunk, preserve_index=False), tmp_path / f"data/orders-{part}.parquet")
    customers = pd.DataFrame(
        {"customer_id": range(200), "country": [["DE", "FR", "US", "JP", "Côte d'Ivoire"][i % 5] for i in range(200)]}
    )
    pa.csv.write_csv(pa.Table.from_pandas(customers, preserve_index=False), tmp_path / "data/customers.csv")
    return orders, customers


@pytest.mark.parametrize("workers", WORKERS)
def test_the_example_of_the_readme_matches_pandas(data, workers):
    orders, customers = data
    got = (
        ud.read_parquet("data/orders-*.parquet")
        .join(ud.read_csv("data/customers.csv"), on="customer_id")
        .group_by("country")
        .agg(total=ud.col("amount").sum())
        .sort("total", descending=True)
        .collect(workers=workers)
    )
    want = (
        orders.dropna(subset=["customer_id"])
        .merge(customers, on="customer_id")
        .groupby("country", as_index=False)["amount"]
        .sum()
        .sort_values("amount", ascending=False)
    )
    assert got.column_names == ["country", "total"]
    assert got.column("country").to_pylist() == want["country"].tolist(), "in sort order"
    assert got.column("total").to_pylist() == pytest.approx(want["amount"].tolist())


@pytest.mark.parametrize("workers", WORKERS)
def test_every_builder_method_against_pandas(data, workers):
    orders, customers = data
    o = ud.read_parquet("data/orders-*.parquet")
    c = ud.from_pandas(customers)
    # filter + select + with_columns
    got = o.filter(ud.col("amount") > 100).select("order_id", doubled=ud.col("amount") * 2).collect(workers)
    want = orders[orders.amount > 100].assign(doubled=lambda d: d.amount * 2)
    assert rows(got, ["order_id", "doubled"]) == rows(pa.Table.from_pandas(want[["order_id", "doubled"]]), ["order_id", "doubled"])
    got = o.with_columns(big=ud.col("amount") >= 100).collect(workers)
    assert got.column_names == ["order_id", "customer_id", "amount", "big"]
    assert sum(got.column("big").to_pylist()) == int((orders.amount >= 100).sum())
    # left join keeps unmatched orders
    got = o.join(c, on="customer_id", how="left").collect(workers)
    assert got.num_rows == len(orders.merge(customers, on="customer_id", how="left"))
    # group-by with several aggregates, and a whole-table aggregate
    got = o.group_by("customer_id").agg(n="count()", hi=ud.col("amount").max(), lo=ud.col("amount").min()).collect(workers)
    want = orders.groupby("customer_id", dropna=False).agg(n=("order_id", "size"), hi=("amount", "max"), lo=("amount", "min")).reset_index()
    assert rows(got, ["customer_id", "n", "hi", "lo"]) == rows(pa.Table.from_pandas(want, preserve_index=False), ["customer_id", "n", "hi", "lo"])
    total = o.group_by().agg(s=ud.col("amount").sum(), m=ud.col("amount").median()).collect(workers)
    assert total.column("s")[0].as_py() == pytest.approx(orders.amount.sum())
    assert total.column("m")[0].as_py() == pytest.approx(orders.amount.median())
    # sort + head / tail / slice
    ordered = orders.sort_values(["amount", "order_id"], ascending=[False, True])
    top = o.sort(["amount", "order_id"], descending=[True, False]).head(7).collect(workers)
    assert top.column("order_id").to_pylist() == ordered.order_id.head(7).tolist()
    bottom = o.sort(["amount", "order_id"], descending=[True, False]).tail(5).collect(workers)
    assert bottom.column("order_id").to_pylist() == ordered.order_id.tail(5).tolist()
    page = o.sort("order_id").slice(100, 10).collect(workers)
    assert page.column("order_id").to_pylist() == list(range(100, 110))
    # distinct and set operations
    got = o.select("customer_id").distinct().collect(workers)
    assert got.num_rows == orders.customer_id.nunique(dropna=False)
    ids = o.select("customer_id")
    got = ids.union(c.select("customer_id"), distinct=True).collect(workers)
    assert got.num_rows == len(set(orders.customer_id.dropna()) | set(customers.customer_id)) + 1  # one null
    got = c.select("customer_id").subtract(ids).collect(workers)
    assert sorted(got.column("customer_id").to_pylist()) == sorted(set(customers.customer_id) - set(orders.customer_id.dropna()))
    got = c.select("customer_id").intersect(ids).collect(workers)
    assert sorted(got.column("customer_id").to_pylist()) == sorted(set(customers.customer_id) & set(orders.customer_id.dropna()))
    # repartition keeps every row
    assert o.repartition(["customer_id"]).collect(workers).num_rows == len(orders)


def test_arrow_types_round_trip_through_from_arrow_and_collect(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import datetime
    import decimal

    table = pa.table(
        {
            "i8": pa.array([1, None, -3], pa.int8()),
            "u64": pa.array([2**64 - 1, 0, None], pa.uint64()),
            "f": pa.array([1.5, float("nan"), None], pa.float64()),
            "s": pa.array(["a", None, "ü"], pa.large_string()),
            "b": pa.array([b"\x00", b"x", None], pa.binary()),
            "bool": pa.array([True, None, False]),
            "d": pa.array([datetime.date(2024, 7, 1), None, datetime.date(1970, 1, 1)], pa.date32()),
            "ts": pa.array([1, 2, None], pa.timestamp("us", tz="Europe/Paris")),
            "dec": pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("-3.10")], pa.decimal128(18, 2)),
            "cat": pa.array(["x", "y", "x"]).dictionary_encode(),
            "i16": pa.array([1, None, -3], pa.int16()),
            "i32": pa.array([1, None, -3], pa.int32()),
            "u8": pa.array([1, None, 255], pa.uint8()),
            "u16": pa.array([1, None, 3], pa.uint16()),
            "u32": pa.array([1, None, 3], pa.uint32()),
            "f32": pa.array([1.5, None, -0.0], pa.float32()),
            "f16": pa.array([1.5, None, 2.0], pa.float16()),
            "utf8": pa.array(["a", None, "ü"], pa.string()),
            "view": pa.array(["a", None, "a longer string than twelve bytes"], pa.string_view()),
            "lb": pa.array([b"a", None, b""], pa.large_binary()),
            "fsb": pa.array([b"ab", None, b"cd"], pa.binary(2)),
            "d64": pa.array([1, None, 3], pa.date64()),
            "t32": pa.array([1, None, 3], pa.time32("s")),
            "t64": pa.array([1, None, 3], pa.time64("ns")),
            "dur": pa.array([1, None, 3], pa.duration("ms")),
            "tsns": pa.array([1, None, 3], pa.timestamp("ns")),
            "iv": pa.array([pa.MonthDayNano([1, 2, 3]), None, pa.MonthDayNano([0, 0, 0])], pa.month_day_nano_interval()),
            "dec256": pa.array([decimal.Decimal("1.5"), None, decimal.Decimal("2")], pa.decimal256(40, 2)),
            "list": pa.array([[1, 2], None, []], pa.list_(pa.int64())),
            "llist": pa.array([["a"], None, []], pa.large_list(pa.string())),
            "struct": pa.array([{"x": 1, "y": "a"}, None, {"x": None, "y": "b"}]),
            "map": pa.array([[("a", 1)], None, []], pa.map_(pa.string(), pa.int64())),
            "null": pa.array([None, None, None], pa.null()),
        }
    )
    for workers in [1, 3]:
        got = ud.from_arrow(table).collect(workers)
        assert got.num_rows == 3
        for name in table.column_names:
            want = table.column(name)
            if name == "cat":  # IPC sinks write dictionaries decoded
                want = want.cast(pa.string())
            assert got.column(name).type == want.type, name
            assert got.column(name).to_pylist() == want.to_pylist() or name == "f", name
        assert math.isnan(got.column("f")[1].as_py())


def test_errors_are_exceptions_with_key_paths(data):
    with pytest.raises(ud.ValidationError) as e:
        ud.read_parquet("data/orders-*.parquet").group_by("no_such").agg(n="count()").validate()
    assert any("no_such" in p.message and p.path.startswith("operator.") for p in e.value.problems), e.value.problems
    with pytest.raises(ud.ValidationError) as e:
        ud.read_parquet("data/nothing-*.parquet").collect(2)
    assert "nothing-*.parquet" in str(e.value)
    # A run-time failure: an int64 sum that overflows, with each rank's error and class.
    big = ud.from_arrow(pa.table({"k": [1, 1], "v": [2**63 - 1, 1]}))
    with pytest.raises(ud.JobError) as e:
        big.group_by("k").agg(s=ud.col("v").sum()).collect(2)
    assert e.value.exit_code == 2 and e.value.ranks and all("[Data]" in m for m in e.value.ranks.values())


def test_pipelines_from_toml_and_back(data, tmp_path):
    frame = ud.read_parquet("data/orders-*.parquet").filter("amount > 50").group_by("customer_id").agg(n="count()")
    text = frame.to_toml()
    assert '[operator.o0]\nkind = "filter"' in text and 'where = "amount > 50"' in text
    (tmp_path / "p.toml").write_text(text)
    report = ud.Pipeline.from_toml(tmp_path / "p.toml").run(workers=2)
    assert report["world"] == 2 and report["sinks"][0]["summary"]["rows"] > 0
    assert "rows cross ranks" in frame.explain(workers=2)


def test_interrupting_a_job_stops_its_workers(data, tmp_path):
    """Ctrl-C in the Python process stops the launcher and every worker; nothing is left."""
    script = tmp_path / "long.py"
    # A join of two 20M-row generated tables: many seconds on any machine.
    pipeline = (
        '[source.a]\nkind = "generate"\nrows = 10000000\n'
        '[source.b]\nkind = "generate"\nrows = 10000000\nseed = 2\n'
        '[operator.j]\nkind = "join"\nleft = "a"\nright = "b"\non = "key"\n'
        '[sink.s]\nkind = "summary"\ninput = "j"\n'
    )
    script.write_text(
        "import updraft as ud\n"
        f"text = {pipeline!r}\n"
        "print('starting', flush=True)\n"
        "ud.Pipeline(text).run(workers=2)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, text=True)
    assert proc.stdout.readline().strip() == "starting"
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode != 0
    time.sleep(1.5)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "updraft._cli worker" not in ps and "updraft._cli run" not in ps, ps
