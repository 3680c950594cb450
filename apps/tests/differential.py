"""Reference side of the differential test (apps/tests/differential.rs).

Reads a JSON manifest of cases from the path in argv[1]. Each case names a directory whose
`data/l-*.parquet` and `data/r-*.parquet` are the tables `l` and `r`, the SQL that DuckDB runs
over them, where updraft wrote its result (`out/part-*.parquet`, read in rank order), and how
many leading columns must come out in the order DuckDB gives (0: compare as multisets).
Prints one JSON line per case: {"id": ..., "ok": bool, "detail": "..."}.

Values are compared after one normalisation on both sides: -0.0 is 0.0, every NaN is "NaN",
integral decimals are integers, floats agree to 1e-9 relative.
"""

import decimal
import glob
import json
import math
import os
import sys

import duckdb
import pyarrow.parquet as pq


def norm(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        return 0.0 if v == 0 else v
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else v
    return v


def sort_key(row):
    # None first, then by type name, then by value: a total order over mixed rows.
    return tuple((0, "", 0) if v is None else (1, type(v).__name__, v) for v in row)


def close(a, b):
    if isinstance(a, float) and isinstance(b, (float, int)) or isinstance(b, float) and isinstance(a, int):
        return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1.0)
    if isinstance(a, decimal.Decimal) or isinstance(b, decimal.Decimal):
        try:
            return decimal.Decimal(a) == decimal.Decimal(b)
        except (TypeError, decimal.InvalidOperation):
            return False
    return a == b


def rows_of(table):
    cols = [[norm(v) for v in c.to_pylist()] for c in table.columns]
    return [tuple(c[i] for c in cols) for i in range(table.num_rows)]


def updraft_rows(out):
    files = sorted(glob.glob(os.path.join(out, "part-*.parquet")))
    tables = [pq.read_table(f) for f in files]
    rows = []
    for t in tables:
        rows.extend(rows_of(t))
    return rows


def same(got, want):
    if len(got) != len(want):
        return False
    return all(len(a) == len(b) and all(close(x, y) for x, y in zip(a, b)) for a, b in zip(got, want))


def check(case):
    con = duckdb.connect()
    for t in ("l", "r"):
        files = sorted(glob.glob(os.path.join(case["dir"], "data", f"{t}-*.parquet")))
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet({files!r})")
    want = rows_of(con.execute(case["sql"]).to_arrow_table())
    got = updraft_rows(os.path.join(case["dir"], "out"))
    ordered = case["ordered"]
    if ordered:
        prefix = lambda rows: [r[:ordered] for r in rows]
        if not same(prefix(got), prefix(want)):
            return f"order differs: updraft {prefix(got)[:8]} ... vs duckdb {prefix(want)[:8]} ..."
    if case.get("limit_ties"):
        # A limit cuts through ties: only the ordered prefix is determined.
        return None
    got_sorted, want_sorted = sorted(got, key=sort_key), sorted(want, key=sort_key)
    if not same(got_sorted, want_sorted):
        extra = [r for r in got_sorted if r not in want_sorted][:5]
        missing = [r for r in want_sorted if r not in got_sorted][:5]
        return f"{len(got)} rows vs {len(want)}; only in updraft {extra}; only in duckdb {missing}"
    return None


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    for case in cases:
        try:
            detail = check(case)
        except Exception as e:  # a query DuckDB refuses is a harness bug: report it
            detail = f"reference failed: {e!r}"
        print(json.dumps({"id": case["id"], "ok": detail is None, "detail": detail or ""}), flush=True)


if __name__ == "__main__":
    main()
