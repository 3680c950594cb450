"""Running pipelines: the engine's command line in child processes, where a job runs (local
worker processes, this process as one rank of separate workers, or Lambda functions), the
scratch data a job reads and writes there, and the progress line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import pyarrow as pa
import pyarrow.ipc

from updraft import _native
from updraft._errors import JobError, Problem, ValidationError

PROGRESS = "progress: "


def worker_env() -> Dict[str, str]:
    """This process's environment, with the launcher told to start workers as this interpreter
    running the engine's command line (so one installation is package and engine)."""
    env = dict(os.environ)
    env["UPDRAFT_WORKER_COMMAND"] = json.dumps([sys.executable, "-m", "updraft._cli"])
    return env


def _in_jupyter() -> bool:
    try:
        from IPython import get_ipython  # type: ignore[import-not-found]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class ProgressView:
    """Shows the launcher's progress line (elapsed time, rows per phase, rows into sinks,
    bytes over links, ranks still working): redrawn in place on a terminal, as an output that
    updates itself in Jupyter, nowhere otherwise. `show` is `None` for "where it can be seen",
    `True` to draw on stderr even when it is not a terminal, `False` for never."""

    def __init__(self, show: Optional[bool] = None):
        self.kind: Optional[str] = None
        self.handle: Any = None
        self.width = 0
        if show is False:
            return
        if _in_jupyter():
            self.kind = "jupyter"
        elif show or sys.stderr.isatty():
            self.kind = "stream"

    def show(self, text: str) -> None:
        if self.kind == "stream":
            line = f"updraft: {text}"
            sys.stderr.write("\r" + line.ljust(self.width))
            sys.stderr.flush()
            self.width = len(line)
        elif self.kind == "jupyter":
            from IPython.display import Pretty, display  # type: ignore[import-not-found]

            if self.handle is None:
                self.handle = display(Pretty(text), display_id=True)
            else:
                self.handle.update(Pretty(text))

    def close(self) -> None:
        if self.kind == "stream" and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()
            self.width = 0


def run_cli(
    args: Sequence[str],
    cwd: Optional[Path] = None,
    progress: Optional[ProgressView] = None,
    watch_stdin: bool = False,
) -> subprocess.CompletedProcess:
    """Runs ``updraft ARGS`` in a child process and returns its status, stdout and stderr
    (without the ``progress:`` lines, which go to `progress`). An exception here, Ctrl-C
    included, stops the child, and with it the workers it started."""
    command = [sys.executable, "-m", "updraft._cli", *args]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE if watch_stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=worker_env(),
        cwd=str(cwd) if cwd else None,
        text=True,
    )
    errors: List[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(PROGRESS):
                if progress is not None:
                    progress.show(line[len(PROGRESS) :].rstrip("\n"))
            else:
                errors.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        reader.join(timeout=10)
        if progress is not None:
            progress.close()
    return subprocess.CompletedProcess(command, proc.returncode, out, "".join(errors))


def problems(text: str, workers: int) -> List[Problem]:
    """Every problem of pipeline `text` for `workers` workers, as ``updraft validate`` finds them."""
    return [Problem(p, line, column, m) for (p, line, column, m) in _native.check(text, workers)]


def job_error(proc: subprocess.CompletedProcess) -> JobError:
    """The launcher's failure as a :class:`JobError`: each ``rank N: ...`` line it printed."""
    ranks: Dict[int, str] = {}
    for line in (proc.stderr or "").splitlines():
        m = re.match(r"\s+rank (\d+): (.*)", line)
        if m:
            ranks[int(m.group(1))] = m.group(2)
    lines = [l for l in (proc.stderr or "").splitlines() if not l.startswith("updraft: ") or "failed" in l]
    message = "\n".join(lines).strip() or f"updraft exited with status {proc.returncode}"
    return JobError(message, proc.returncode, ranks)


def checked(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        raise job_error(proc)
    return proc


def s3() -> Any:
    """A pyarrow S3 filesystem configured as the engine's S3 client is: region from
    ``AWS_REGION``/``AWS_DEFAULT_REGION``, endpoint from ``AWS_ENDPOINT_URL_S3`` or
    ``AWS_ENDPOINT_URL`` (an S3-compatible server), credentials from the usual chain."""
    from pyarrow import fs

    kw: Dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kw["endpoint_override"] = host.rstrip("/") if host else scheme
        kw["scheme"] = scheme if host else "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kw["region"] = region
    return fs.S3FileSystem(**kw)


def write_parts(table: pa.Table, parts: int, open_part: Callable[[int], Any]) -> None:
    """`table` as `parts` Arrow IPC files (rows split evenly, in order); part `i` is written to
    the stream `open_part(i)`."""
    n = table.num_rows
    for i in range(parts):
        lo, hi = n * i // parts, n * (i + 1) // parts
        with open_part(i) as f, pa.ipc.new_file(f, table.schema) as w:
            w.write_table(table.slice(lo, hi - lo))


def local_parts(folder: Path, table: pa.Table, parts: int) -> str:
    """`table` as `parts` Arrow IPC files in `folder`; returns the folder as a pipeline path."""
    folder.mkdir(parents=True, exist_ok=True)
    write_parts(table, max(parts, 1), lambda i: pa.OSFile(str(folder / f"part-{i:05d}.arrow"), "wb"))
    return str(folder) + "/"


def _rank_of(path: str) -> int:
    m = re.search(r"(\d+)\.arrow$", path)
    return int(m.group(1)) if m else 0


class Target:
    """Where a job runs, and where its scratch data (in-memory tables, the result) lives.

    - ``local``: `workers` local worker processes started by a launcher with an embedded
      rendezvous; scratch in a new temporary directory.
    - ``rank``: this process runs one rank of a job whose other ranks run elsewhere (other
      processes, hosts, a scheduler's tasks), meeting at `rendezvous`; rank, world and job id
      come from the arguments or the scheduler's environment. In-memory tables are *this
      rank's* rows and the result is *this rank's* part (the whole result is the ranks' parts
      in rank order), as in a distributed data frame; scratch in a directory of this rank.
    - ``lambda``: `workers` Lambda functions invoked by a driver in a child process; scratch
      under the ``s3://`` prefix `scratch`, removed afterwards.
    """

    def __init__(
        self,
        workers: Optional[int],
        rendezvous: Optional[str],
        backend: str,
        function: Optional[str],
        rank: Optional[int],
        job: Optional[str],
        scratch: Optional[str],
        progress: Optional[bool],
    ):
        if backend not in ("local", "lambda"):
            raise ValueError(f"backend must be 'local' or 'lambda', not {backend!r}")
        self.rendezvous = rendezvous
        self.function = function
        self.progress = progress
        self.rank: Optional[int] = None
        self.job: Optional[str] = None
        if backend == "lambda":
            missing = [n for n, v in (("function", function), ("rendezvous", rendezvous)) if not v]
            if missing:
                raise ValueError(
                    f"backend='lambda' needs {' and '.join(m + '=' for m in missing)}: the function to invoke "
                    "and a rendezvous it can reach (HOST:PORT)"
                )
            if scratch is not None and not scratch.startswith("s3://"):
                raise ValueError(f"scratch={scratch!r}: Lambda functions reach only s3:// paths")
            self.mode = "lambda"
            self.world = int(workers or 4)
            self.base = f"{scratch.rstrip('/')}/updraft-{uuid.uuid4().hex[:12]}" if scratch else ""
            self.fs = s3() if scratch else None
        elif rendezvous:
            env_rank, env_world, env_job = _native.placement()
            self.rank = rank if rank is not None else env_rank
            world = workers if workers is not None else env_world
            self.job = job or env_job
            if self.rank is None or world is None or not self.job:
                raise ValueError(
                    "collect(rendezvous=...) runs this process as one rank of a job: give rank=, workers= and "
                    "job= (or start it under Slurm, MPI, a Kubernetes Indexed Job or with "
                    "UPDRAFT_RANK/UPDRAFT_WORLD/UPDRAFT_JOB set)"
                )
            self.world = int(world)
            if not 0 <= self.rank < self.world:
                raise ValueError(f"rank {self.rank} is outside a world of {self.world} workers")
            self.mode = "rank"
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.job)
            self.dir = Path(tempfile.gettempdir()) / f"updraft-{safe}-rank{self.rank}"
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir.mkdir(parents=True)
            # Relative paths: the pipeline, which every rank must hold alike, names no
            # directory of this rank.
            self.base = "."
        else:
            if function:
                raise ValueError("function= is for backend='lambda'")
            self.mode = "local"
            self.world = int(workers or 4)
            self.dir = Path(tempfile.mkdtemp(prefix="updraft-"))
            self.base = str(self.dir)
        if self.world < 1:
            raise ValueError(f"workers must be at least 1, not {self.world}")

    @property
    def parts(self) -> int:
        """How many files an in-memory table is split into (one per rank, or this rank's own)."""
        return 1 if self.mode == "rank" else self.world

    def write_table(self, name: str, table: pa.Table) -> str:
        """Writes `table` where the job's ranks read it; returns the path for the pipeline."""
        folder = f"{self.scratch()}/in/table-{name}"
        if self.mode == "rank":
            mine = self.dir / "in" / f"table-{name}"
            mine.mkdir(parents=True, exist_ok=True)
            write_parts(table, 1, lambda _: pa.OSFile(str(mine / f"part-{self.rank}.arrow"), "wb"))
            return f"{folder}/part-{{rank}}.arrow"
        if self.mode == "lambda":
            key = folder[len("s3://") :]
            write_parts(table, self.world, lambda i: self.fs.open_output_stream(f"{key}/part-{i:05d}.arrow"))
            return folder + "/"
        return local_parts(Path(folder), table, self.world)

    def scratch(self) -> str:
        """Where the job's scratch data goes, as the pipeline names it."""
        if not self.base:
            raise ValueError(
                "on Lambda, in-memory tables and results go through S3: give scratch='s3://BUCKET/PREFIX' "
                "(the functions and this process must both reach it)"
            )
        return self.base

    def result_path(self) -> str:
        """The path pattern of the result sink (one Arrow IPC file per rank)."""
        return f"{self.scratch()}/result/part-{{rank}}.arrow"

    def user_path(self, path: str) -> str:
        """A path the user gave, absolute unless it is a URL (a rank runs in its own directory)."""
        return path if "://" in path else os.path.abspath(path)

    def run(self, text: str, cwd: Optional[Path] = None) -> Dict[str, Any]:
        """Runs pipeline `text`, its relative paths relative to `cwd` (default: the current
        directory; a rank's own directory for a rank); returns the job report (a rank: its
        worker's ``--json`` line).

        Raises :class:`ValidationError` for a pipeline that is wrong before it runs and
        :class:`JobError` for a job that failed."""
        if self.mode != "rank":
            found = problems(text, self.world)
            if found:
                raise ValidationError(found)
        folder = self.dir if self.mode != "lambda" else Path(tempfile.mkdtemp(prefix="updraft-"))
        pipeline = folder / "pipeline.toml"
        pipeline.write_text(text)
        view = ProgressView(self.progress)
        try:
            if self.mode == "local":
                args = ["run", str(pipeline), "--workers", str(self.world), "--quiet", "--progress-lines"]
                return json.loads(checked(run_cli(args, progress=view)).stdout)
            if self.mode == "lambda":
                args = ["run", str(pipeline), "--backend", "lambda", "--function", str(self.function)]
                args += ["--rendezvous", str(self.rendezvous), "--workers", str(self.world), "--quiet"]
                return json.loads(checked(run_cli(args, progress=view)).stdout)
            args = ["worker", "--rendezvous", str(self.rendezvous), "--job", str(self.job)]
            args += ["--rank", str(self.rank), "--world", str(self.world), "--pipeline", str(pipeline)]
            proc = run_cli([*args, "--json", "--watch-stdin"], cwd=cwd or self.dir, watch_stdin=True)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
            line = json.loads(lines[-1]) if lines else None
            if proc.returncode != 0 or line is None or line.get("error"):
                if line is None or not line.get("error"):
                    raise job_error(proc)
                klass = f" [{line['error_class']}]" if line.get("error_class") else ""
                raise JobError(f"rank {self.rank}: {line['error']}{klass}", proc.returncode, {self.rank: line["error"] + klass})
            return line
        finally:
            if self.mode == "lambda":
                shutil.rmtree(folder, ignore_errors=True)

    def read_result(self) -> pa.Table:
        """The result the job wrote, ranks in order: memory-mapped from local files (no copy),
        read from S3 for Lambda."""
        if self.mode == "lambda":
            from pyarrow import fs

            infos = self.fs.get_file_info(fs.FileSelector(f"{self.base[len('s3://'):]}/result", allow_not_found=True))
            paths = sorted((i.path for i in infos if i.path.endswith(".arrow")), key=_rank_of)
            tables = [pa.ipc.open_file(self.fs.open_input_file(p)).read_all() for p in paths]
        else:
            files = sorted((self.dir / "result").glob("part-*.arrow"), key=lambda p: _rank_of(p.name))
            tables = [pa.ipc.open_file(pa.memory_map(str(f))).read_all() for f in files]
        if not tables:
            raise JobError("the job wrote no result file", 0, {})
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def close(self) -> None:
        """Removes the scratch data (local files stay readable where they are memory-mapped)."""
        if self.mode == "lambda":
            if self.fs is None:
                return
            from pyarrow import fs

            # File by file: S3 has no directories to remove (and S3-compatible servers differ in
            # how they answer for one).
            try:
                selector = fs.FileSelector(self.base[len("s3://") :], allow_not_found=True, recursive=True)
                for info in self.fs.get_file_info(selector):
                    if info.type == fs.FileType.File:
                        self.fs.delete_file(info.path)
            except OSError as e:
                warnings.warn(f"updraft: could not remove the job's scratch data under {self.base}: {e}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
