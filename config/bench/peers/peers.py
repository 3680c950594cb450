#!/usr/bin/env python3
"""updraft against the single-node engines a user would otherwise run: DataFusion, Polars and
DuckDB, on the same Parquet files, at equal cores.

Tasks (tables l(key, a, b) and r(key, c, d) of N rows each; key int64 uniform over
[0, 0.9 N), a and c int64, b and d float64):
  join     inner join of l and r on key, every output column consumed:
           count(*), sum(a), sum(b), sum(c), sum(d)
  groupby  l grouped by key: count, sum(a), mean(b), min(a), max(b)
  sort     l sorted by (key, a)

Each run is a separate process (updraft: its launcher and workers) that writes its result as
Arrow IPC files (updraft: one per rank), measured by the parent:
wall time, CPU time (user + system of the process and every descendant it waited for) and
peak RSS (the largest resident set of any one of them, from wait4; it includes the few tens
of MB of this small parent at fork). Engines run in turn, repeated, each repetition starting
with another engine; the table gives medians and each one's ratio to the fastest peer of the same
setting. Every engine's answer is checked against the others (float sums to 1e-9 relative;
sort order by a positional digest of (key, a)).

  peers.py gen DIR --rows N [--files F]
  peers.py bench DIR --updraft BIN [--tasks join,groupby,sort] [--settings 1,2] [--reps R]
  peers.py one ENGINE TASK DIR THREADS OUT   (one timed run; used by bench)
"""

import argparse
import decimal
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PEERS = ["datafusion", "polars", "duckdb"]
TASKS = ["join", "groupby", "sort"]

SQL = {
    "join": "SELECT count(*) AS n, sum(a) AS a, sum(b) AS b, sum(c) AS c, sum(d) AS d "
    "FROM l JOIN r ON l.key = r.key",
    "groupby": "SELECT key, count(*) AS n, sum(a) AS sa, avg(b) AS mb, min(a) AS mina, max(b) AS maxb "
    "FROM l GROUP BY key",
    "sort": "SELECT key, a, b FROM l ORDER BY key, a",
}


# --- data -------------------------------------------------------------------------------------


def generate(folder, rows, files):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(20261130)
    keys = max(int(rows * 0.9), 1)
    for name, (ia, fb) in {"l": ("a", "b"), "r": ("c", "d")}.items():
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        for f in range(files):
            n = rows * (f + 1) // files - rows * f // files
            table = pa.table(
                {
                    "key": rng.integers(0, keys, n, dtype=np.int64),
                    ia: rng.integers(-(10**9), 10**9, n, dtype=np.int64),
                    fb: rng.random(n),
                }
            )
            pq.write_table(table, os.path.join(folder, name, f"part-{f:03d}.parquet"), row_group_size=1 << 20)


# --- answers ----------------------------------------------------------------------------------


def digest(task, table):
    """An order-independent summary of a result (for sort: with a positional digest of the
    order keys), comparable across engines."""
    import numpy as np
    import pyarrow.compute as pc

    d = {"rows": table.num_rows}
    if task == "join":
        row = table.to_pylist()[0]
        d.update({k: (row[k] or 0) for k in ["n", "a", "b", "c", "d"]})
        d["rows"] = row["n"]
    elif task == "groupby":
        for c in ["n", "sa", "mb", "mina", "maxb"]:
            d[c] = pc.sum(table.column(c)).as_py() or 0
    else:
        key = table.column("key").to_numpy().astype(np.uint64)
        a = table.column("a").to_numpy().astype(np.uint64)
        weight = (np.arange(len(key), dtype=np.uint64) % np.uint64(1009)) + np.uint64(1)
        d["order"] = int(np.sum(key * weight + a * (weight + np.uint64(7)), dtype=np.uint64))
        d["b"] = pc.sum(table.column("b")).as_py() or 0
    # Exact integer sums may come as decimals (DuckDB's HUGEINT): as plain numbers.
    return {k: (int(v) if v == v.to_integral_value() else float(v)) if isinstance(v, decimal.Decimal) else v
            for k, v in d.items()}


def same(x, y):
    if x.keys() != y.keys():
        return False
    for k in x:
        a, b = x[k], y[k]
        if isinstance(a, float) or isinstance(b, float):
            if abs(a - b) > 1e-9 * max(abs(a), abs(b), 1.0):
                return False
        elif a != b:
            return False
    return True


# --- one run ----------------------------------------------------------------------------------


def run_peer(engine, task, folder, threads):
    l, r = os.path.join(folder, "l", "*.parquet"), os.path.join(folder, "r", "*.parquet")
    if engine == "datafusion":
        import datafusion

        config = datafusion.SessionConfig().with_target_partitions(threads)
        ctx = datafusion.SessionContext(config)
        ctx.register_parquet("l", os.path.join(folder, "l") + "/")
        ctx.register_parquet("r", os.path.join(folder, "r") + "/")
        import pyarrow as pa

        return pa.Table.from_batches(ctx.sql(SQL[task]).collect())
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute(f"SET threads = {threads}")
        con.execute(f"CREATE VIEW l AS SELECT * FROM read_parquet('{l}')")
        con.execute(f"CREATE VIEW r AS SELECT * FROM read_parquet('{r}')")
        return con.execute(SQL[task]).to_arrow_table()
    if engine == "polars":
        import polars as pl  # POLARS_MAX_THREADS is set by the parent

        lf, rf = pl.scan_parquet(l), pl.scan_parquet(r)
        if task == "join":
            q = lf.join(rf, on="key").select(
                n=pl.len(), a=pl.col("a").sum(), b=pl.col("b").sum(), c=pl.col("c").sum(), d=pl.col("d").sum()
            )
        elif task == "groupby":
            q = lf.group_by("key").agg(
                n=pl.len(), sa=pl.col("a").sum(), mb=pl.col("b").mean(), mina=pl.col("a").min(), maxb=pl.col("b").max()
            )
        else:
            q = lf.sort(["key", "a"])
        return q.collect().to_arrow()
    raise SystemExit(f"unknown engine {engine}")


def updraft_pipeline(task, folder, out):
    head = f'[job]\nname = "peers-{task}"\n\n'
    l = f'[source.l]\nkind = "parquet"\npath = "{folder}/l/"\n\n'
    r = f'[source.r]\nkind = "parquet"\npath = "{folder}/r/"\n\n'
    sink = f'[sink.out]\nkind = "ipc"\ninput = "result"\npath = "{out}/part-{{rank}}.arrow"\n'
    if task == "join":
        body = (
            '[operator.j]\nkind = "join"\nleft = "l"\nright = "r"\non = ["key"]\n\n'
            '[operator.result]\nkind = "group_by"\ninput = "j"\nkeys = []\n'
            'aggregate = { n = "count()", a = "sum(a)", b = "sum(b)", c = "sum(c)", d = "sum(d)" }\n\n'
        )
        return head + l + r + body + sink
    if task == "groupby":
        body = (
            '[operator.result]\nkind = "group_by"\ninput = "l"\nkeys = ["key"]\n'
            'aggregate = { n = "count()", sa = "sum(a)", mb = "mean(b)", mina = "min(a)", maxb = "max(b)" }\n\n'
        )
        return head + l + body + sink
    body = '[operator.result]\nkind = "sort"\ninput = "l"\nby = ["key", "a"]\n\n'
    return head + l + body + sink


def read_parts(out):
    import pyarrow as pa
    import pyarrow.ipc

    files = sorted(os.listdir(out), key=lambda f: int("".join(ch for ch in f if ch.isdigit()) or 0))
    return pa.concat_tables([pa.ipc.open_file(os.path.join(out, f)).read_all() for f in files])


# --- the benchmark ----------------------------------------------------------------------------


def timed(command, env, pin):
    """Runs `command`; returns (wall s, CPU s, peak RSS bytes) of it and its descendants."""
    if pin:
        command = ["taskset", "-c", "0", *command]
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{err}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def bench(args):
    folder = os.path.abspath(args.dir)
    work = tempfile.mkdtemp(prefix="peers-")
    results = {}  # (task, setting, engine) -> [(wall, cpu, rss)]
    answers = {}  # (task, engine) -> digest
    settings = [int(s) for s in args.settings.split(",")]
    tasks = args.tasks.split(",")
    try:
        engines = [*PEERS, "updraft"]
        for rep in range(args.reps):
            # Engines take turns going first: each process inherits the memory state its
            # predecessor left (freed pages to fault in again), and none should always pay it.
            order = engines[rep % len(engines) :] + engines[: rep % len(engines)]
            for task in tasks:
                for setting in settings:
                    for engine in order:
                        out = os.path.join(work, f"{task}-{engine}-{setting}")
                        shutil.rmtree(out, ignore_errors=True)
                        env = dict(os.environ, POLARS_MAX_THREADS=str(setting))
                        if engine == "updraft":
                            pipeline = os.path.join(work, f"{task}.toml")
                            with open(pipeline, "w") as f:
                                f.write(updraft_pipeline(task, folder, out))
                            command = [args.updraft, "run", pipeline, "--workers", str(setting), "--quiet"]
                        else:
                            command = [sys.executable, __file__, "one", engine, task, folder, str(setting), out]
                        sample = timed(command, env, pin=setting == 1)
                        results.setdefault((task, setting, engine), []).append(sample)
                        if rep == 0:
                            # In a child process: Linux counts the forking process's resident
                            # set at fork/exec in a child's peak RSS, so this one stays small.
                            check = [sys.executable, __file__, "digest", task, out]
                            answers[(task, engine, setting)] = json.loads(subprocess.check_output(check))
                        print(f"  {task:8} {engine:10} {setting} worker(s)/thread(s): {sample[0]:.2f} s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wrong = []
    for (task, engine, setting), d in answers.items():
        ref = answers[(task, PEERS[0], settings[0])]
        if not same(ref, d):
            wrong.append(f"{task}: {engine} with {setting} gives {d}, {PEERS[0]} gives {ref}")
    print(f"| task | setting | engine | wall s | CPU s | peak RSS | wall / fastest peer |")
    print(f"|---|---|---|---|---|---|---|")
    for task in tasks:
        for setting in settings:
            med = {
                e: tuple(statistics.median(s[i] for s in results[(task, setting, e)]) for i in range(3))
                for e in [*PEERS, "updraft"]
            }
            fastest = min(med[e][0] for e in PEERS)
            label = f"{setting} worker{'s' if setting > 1 else ''} / {setting} thread{'s' if setting > 1 else ''}"
            for e in [*PEERS, "updraft"]:
                wall, cpu, rss = med[e]
                print(f"| {task} | {label} | {e} | {wall:.2f} | {cpu:.2f} | {rss / 2**20:.0f} MiB | {wall / fastest:.2f}x |")
    if wrong:
        print("ANSWERS DIFFER:\n" + "\n".join(wrong))
        return 1
    print(f"every engine gives the same answers ({args.reps} repetition(s), medians)")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("dir")
    g.add_argument("--rows", type=int, required=True)
    g.add_argument("--files", type=int, default=8)
    b = sub.add_parser("bench")
    b.add_argument("dir")
    b.add_argument("--updraft", required=True)
    b.add_argument("--tasks", default=",".join(TASKS))
    b.add_argument("--settings", default="1,2")
    b.add_argument("--reps", type=int, default=3)
    o = sub.add_parser("one")
    for a in ["engine", "task", "dir", "threads", "out"]:
        o.add_argument(a)
    d = sub.add_parser("digest")
    d.add_argument("task")
    d.add_argument("out")
    args = p.parse_args()
    if args.cmd == "digest":
        print(json.dumps(digest(args.task, read_parts(args.out))))
        return 0
    if args.cmd == "gen":
        generate(args.dir, args.rows, args.files)
        return 0
    if args.cmd == "bench":
        return bench(args)
    # The result is written as updraft writes it (Arrow IPC), and checked by the parent.
    import pyarrow as pa
    import pyarrow.ipc

    table = run_peer(args.engine, args.task, args.dir, int(args.threads))
    os.makedirs(args.out, exist_ok=True)
    with pa.OSFile(os.path.join(args.out, "part-0.arrow"), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
