"""Where jobs run: this process as one rank of separate workers, Lambda functions (through the
emulated Invoke and Runtime APIs and an S3-compatible server), and the progress line."""

import json
import os
import secrets
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv
import pytest

import updraft as ud

ROOT = Path(__file__).resolve().parents[2]


def start_rendezvous(env):
    """A standalone rendezvous on loopback; returns (process, HOST:PORT)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "updraft._cli", "rendezvous", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("rendezvous listening on "), line
    return proc, line.split()[-1]


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def orders_and_customers(n=2000):
    orders = pd.DataFrame({"order_id": range(n), "customer_id": [(i * 37) % 113 for i in range(n)],
                           "amount": [float((i * 7919) % 1000) for i in range(n)]})
    customers = pd.DataFrame({"customer_id": range(100), "country": [["DE", "FR", "US", "JP"][i % 4] for i in range(100)]})
    return orders, customers


def expected_totals(orders, customers):
    joined = orders.merge(customers, on="customer_id")
    return joined.groupby("country", as_index=False).agg(total=("amount", "sum"), n=("amount", "size")).sort_values("country")


def test_each_rank_of_separate_workers_holds_its_part(tmp_path):
    """Three processes, each one rank of a job meeting at a standalone rendezvous: every rank's
    in-memory table is its own rows, every rank gets its part of the sorted result, and the
    parts in rank order are the answer pandas gives. Rank 2 takes its place from
    UPDRAFT_RANK/UPDRAFT_WORLD/UPDRAFT_JOB, the others from arguments."""
    orders, customers = orders_and_customers()
    pa.csv.write_csv(pa.Table.from_pandas(customers, preserve_index=False), tmp_path / "customers.csv")
    env = {**os.environ, "UPDRAFT_SECRET": secrets.token_hex(16)}
    rendezvous, address = start_rendezvous(env)
    job = f"py-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "rank.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        import pandas as pd, pyarrow as pa
        import updraft as ud
        rank = int(sys.argv[1])
        orders = pd.read_json(sys.argv[2])
        mine = pa.Table.from_pandas(orders.iloc[rank::3], preserve_index=False)
        where = dict(rank=rank, workers=3, job={job!r}) if rank < 2 else {{}}
        got = (ud.from_arrow(mine).join(ud.read_csv("customers.csv"), on="customer_id")
                 .group_by("country").agg(total=ud.col("amount").sum(), n="count()")
                 .sort("country").collect(rendezvous={address!r}, **where))
        print(json.dumps(got.to_pylist()))
    """))
    (tmp_path / "orders.json").write_text(orders.to_json())
    procs = []
    try:
        for rank in range(3):
            rank_env = {**env, "UPDRAFT_RANK": "2", "UPDRAFT_WORLD": "3", "UPDRAFT_JOB": job} if rank == 2 else env
            procs.append(subprocess.Popen([sys.executable, str(script), str(rank), "orders.json"], cwd=tmp_path,
                                          env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        stop(rendezvous)
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    parts = [json.loads(out) for out, _ in outs]
    want = expected_totals(orders, customers)
    got = [r for part in parts for r in part]
    assert [r["country"] for r in got] == list(want.country)
    assert [r["total"] for r in got] == pytest.approx(list(want.total))
    assert [r["n"] for r in got] == list(want.n)
    assert sum(1 for part in parts if part) >= 2, "the sorted result is spread over the ranks"
    left = list(Path(tempfile.gettempdir()).glob(f"updraft-{job}-rank*"))
    assert not left, left


def test_one_rank_needs_its_place():
    frame = ud.from_arrow(pa.table({"a": [1]}))
    for var in ("UPDRAFT_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "JOB_COMPLETION_INDEX"):
        os.environ.pop(var, None)
    with pytest.raises(ValueError, match="give rank=, workers= and job="):
        frame.collect(rendezvous="127.0.0.1:1")
    with pytest.raises(ValueError, match="outside a world of 2"):
        frame.collect(rendezvous="127.0.0.1:1", rank=2, workers=2, job="j")
    with pytest.raises(ValueError, match="needs function= and rendezvous="):
        frame.collect(backend="lambda")
    with pytest.raises(ValueError, match="give scratch='s3://"):
        frame.collect(backend="lambda", function="f", rendezvous="127.0.0.1:1")
    with pytest.raises(ValueError, match="reach only s3:// paths"):
        frame.collect(backend="lambda", function="f", rendezvous="127.0.0.1:1", scratch="/tmp/x")
    with pytest.raises(ValueError, match="backend must be"):
        frame.collect(backend="ec2")


def test_progress_is_drawn_while_a_job_runs(capfd):
    pipeline = ud.Pipeline(
        '[source.a]\nkind = "generate"\nrows = 3000000\n'
        '[source.b]\nkind = "generate"\nrows = 3000000\nseed = 2\n'
        '[operator.j]\nkind = "join"\nleft = "a"\nright = "b"\non = "key"\n'
        '[sink.s]\nkind = "summary"\ninput = "j"\n'
    )
    report = pipeline.run(workers=2, progress=True)
    err = capfd.readouterr().err
    assert "updraft: rows: " in err and "over links" in err, err
    assert report["sinks"][0]["summary"]["rows"] > 0
    pipeline.run(workers=2, progress=False)
    assert "updraft: rows: " not in capfd.readouterr().err


@pytest.fixture()
def lambda_functions(tmp_path):
    """The Lambda emulator running this package's engine as the function, a rendezvous, and a
    bucket on the S3-compatible server of the test run: (function env, rendezvous, bucket)."""
    bucket = os.environ.get("UPDRAFT_TEST_S3_BUCKET")
    if not bucket or not os.environ.get("AWS_ENDPOINT_URL"):
        if os.environ.get("UPDRAFT_REQUIRE_S3"):
            pytest.fail("UPDRAFT_REQUIRE_S3 is set but UPDRAFT_TEST_S3_BUCKET or AWS_ENDPOINT_URL is not")
        pytest.skip("no S3-compatible server (UPDRAFT_TEST_S3_BUCKET, AWS_ENDPOINT_URL)")
    env = {**os.environ, "UPDRAFT_SECRET": secrets.token_hex(16)}
    bootstrap = tmp_path / "bootstrap"
    bootstrap.write_text(f"#!/bin/sh\nexec {sys.executable} -m updraft._cli lambda\n")
    bootstrap.chmod(0o755)
    rendezvous, address = start_rendezvous(env)
    emulator = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts/lambda_emulator.py"), "--handler", str(bootstrap), "--timeout", "60"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    line = emulator.stdout.readline()
    assert line.startswith("invoke="), line
    saved = dict(os.environ)
    os.environ.update(UPDRAFT_SECRET=env["UPDRAFT_SECRET"], AWS_ENDPOINT_URL_LAMBDA=f"http://{line.strip()[7:]}")
    try:
        yield address, bucket
    finally:
        os.environ.clear()
        os.environ.update(saved)
        emulator.stdin.close()
        try:
            emulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emulator.kill()
        stop(rendezvous)


def test_lambda_functions_read_and_return_through_s3(lambda_functions):
    from pyarrow import fs as pafs
    import pyarrow.parquet as pq

    address, bucket = lambda_functions
    s3 = ud._run.s3()
    prefix = f"{bucket}/python-{uuid.uuid4().hex[:8]}"
    orders, customers = orders_and_customers()
    pq.write_table(pa.Table.from_pandas(customers, preserve_index=False), f"{prefix}/customers.parquet", filesystem=s3)
    where = dict(backend="lambda", function="updraft-python", workers=3, rendezvous=address)
    frame = (ud.from_arrow(pa.Table.from_pandas(orders, preserve_index=False))
             .join(ud.read_parquet(f"s3://{prefix}/customers.parquet"), on="customer_id")
             .group_by("country").agg(total=ud.col("amount").sum(), n="count()").sort("country"))
    got = frame.collect(scratch=f"s3://{prefix}/scratch", **where).to_pandas()
    want = expected_totals(orders, customers)
    assert list(got.country) == list(want.country)
    assert list(got.total) == pytest.approx(list(want.total)) and list(got.n) == list(want.n)
    assert frame.last_report["world"] == 3 and frame.last_report["sinks"][0]["summary"]["rows"] == len(want)
    # The scratch data is gone; a write goes where it is told.
    left = s3.get_file_info(pafs.FileSelector(f"{prefix}/scratch", allow_not_found=True, recursive=True))
    assert [i.path for i in left if i.type == pafs.FileType.File] == []
    report = frame.write_parquet(f"s3://{prefix}/out/part-{{rank}}.parquet", scratch=f"s3://{prefix}/scratch", **where)
    assert report["sinks"][0]["summary"]["rows"] == len(want)
    parts = s3.get_file_info(pafs.FileSelector(f"{prefix}/out", recursive=True))
    files = sorted(i.path for i in parts if i.type == pafs.FileType.File)
    assert len(files) == 3, files
    written = pa.concat_tables([pq.read_table(f, filesystem=s3) for f in files]).to_pandas()
    assert list(written.country) == list(want.country)
    # A local path is refused before anything is invoked, at its key path.
    with pytest.raises(ud.JobError, match="sink.result.path"):
        frame.write_parquet(str(Path(tempfile.gettempdir()) / "out-{rank}.parquet"), scratch=f"s3://{prefix}/scratch", **where)
