"""Frames: lazy plans rendered to updraft pipelines, run by the engine in worker processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.ipc

from updraft import _native

# What the package exports: updraft/__init__.py re-exports exactly these.
__all__ = [
    "Col",
    "Frame",
    "GroupBy",
    "JobError",
    "Pipeline",
    "ValidationError",
    "col",
    "from_arrow",
    "from_pandas",
    "read_csv",
    "read_ipc",
    "read_json",
    "read_parquet",
]


# --- errors -----------------------------------------------------------------------------------


@dataclass
class Problem:
    """One problem of a pipeline: where (`path`, e.g. ``operator.o1.on[0]``; `line` and
    `column` in the rendered TOML, 1-based, 0 when it has no place) and what (`message`)."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{where}{self.message}"


class ValidationError(ValueError):
    """The pipeline or its inputs are wrong; ``problems`` lists every problem found, with the
    key paths and messages of ``updraft validate``."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class JobError(RuntimeError):
    """The job failed. ``exit_code`` is the command's status (1 the job failed, 2 bad input or
    data, 3 infrastructure); ``ranks`` maps each failed rank to its error (with its class in
    brackets, e.g. ``[Data]``); ``message`` is what the launcher printed."""

    def __init__(self, message: str, exit_code: int, ranks: Dict[int, str]):
        self.message = message
        self.exit_code = exit_code
        self.ranks = ranks
        super().__init__(message)


# --- expressions ------------------------------------------------------------------------------


def _name(column: str) -> str:
    """A column reference: bare when it is an identifier, else in backticks."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", column):
        return column
    if "`" in column:
        raise ValueError(f"column name {column!r} holds a backtick, which expressions cannot quote")
    return f"`{column}`"


def _literal(value: Any) -> str:
    if isinstance(value, Col):
        return value.expr
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if "'" in value:
            raise ValueError(f"string {value!r} holds a quote ('), which updraft expressions cannot hold")
        return f"'{value}'"
    raise TypeError(f"cannot use {type(value).__name__} {value!r} in an expression")


class Col:
    """An expression in updraft's expression language (``config/src/expr.rs``), built with
    Python operators: ``col("amount") * 2 > 100``, ``(col("a") == 1) & col("b").is_null()``.
    Aggregates (``col("amount").sum()``) are for :meth:`GroupBy.agg`."""

    def __init__(self, expr: str):
        self.expr = expr

    def __repr__(self) -> str:
        return f"Col({self.expr!r})"

    def _bin(self, op: str, other: Any, flip: bool = False) -> "Col":
        a, b = self.expr, _literal(other)
        return Col(f"({b} {op} {a})" if flip else f"({a} {op} {b})")

    def __eq__(self, other: Any) -> "Col":  # type: ignore[override]
        return self._bin("==", other)

    def __ne__(self, other: Any) -> "Col":  # type: ignore[override]
        return self._bin("!=", other)

    def __lt__(self, other: Any) -> "Col":
        return self._bin("<", other)

    def __le__(self, other: Any) -> "Col":
        return self._bin("<=", other)

    def __gt__(self, other: Any) -> "Col":
        return self._bin(">", other)

    def __ge__(self, other: Any) -> "Col":
        return self._bin(">=", other)

    def __add__(self, other: Any) -> "Col":
        return self._bin("+", other)

    def __radd__(self, other: Any) -> "Col":
        return self._bin("+", other, flip=True)

    def __sub__(self, other: Any) -> "Col":
        return self._bin("-", other)

    def __rsub__(self, other: Any) -> "Col":
        return self._bin("-", other, flip=True)

    def __mul__(self, other: Any) -> "Col":
        return self._bin("*", other)

    def __rmul__(self, other: Any) -> "Col":
        return self._bin("*", other, flip=True)

    def __truediv__(self, other: Any) -> "Col":
        return self._bin("/", other)

    def __mod__(self, other: Any) -> "Col":
        return self._bin("%", other)

    def __and__(self, other: Any) -> "Col":
        return self._bin("and", other)

    def __or__(self, other: Any) -> "Col":
        return self._bin("or", other)

    def __invert__(self) -> "Col":
        return Col(f"(not {self.expr})")

    def __hash__(self) -> int:
        return hash(self.expr)

    def is_null(self) -> "Col":
        return Col(f"({self.expr} is null)")

    def is_not_null(self) -> "Col":
        return Col(f"({self.expr} is not null)")

    def is_in(self, values: Sequence[Any]) -> "Col":
        return Col(f"({self.expr} in ({', '.join(_literal(v) for v in values)}))")

    def cast(self, to: str) -> "Col":
        """``cast(x as TYPE)``; TYPE as pipelines write it (``int64``, ``utf8``, ``date32``, ...)."""
        return Col(f"cast({self.expr} as {to})")

    # Aggregates: the text of `aggregate = { out = "fn(column)" }`.
    def _agg(self, fn: str, *extra: Any) -> str:
        args = ", ".join([self.expr, *(repr(e) for e in extra)])
        return f"{fn}({args})"

    def sum(self) -> str:
        return self._agg("sum")

    def count(self) -> str:
        return self._agg("count")

    def mean(self) -> str:
        return self._agg("mean")

    def min(self) -> str:
        return self._agg("min")

    def max(self) -> str:
        return self._agg("max")

    def var(self) -> str:
        return self._agg("var")

    def std(self) -> str:
        return self._agg("std")

    def nunique(self) -> str:
        return self._agg("nunique")

    def first(self) -> str:
        return self._agg("first")

    def last(self) -> str:
        return self._agg("last")

    def median(self) -> str:
        return self._agg("median")

    def quantile(self, q: float) -> str:
        return self._agg("quantile", float(q))


def col(name: str) -> Col:
    """The column `name` (any name: quoted in backticks when it is not an identifier)."""
    return Col(_name(name))


def _expr(e: Union[str, Col]) -> str:
    return e.expr if isinstance(e, Col) else str(e)


# --- plans ------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Node:
    kind: str
    params: Dict[str, Any] = field(default_factory=dict)
    inputs: List["_Node"] = field(default_factory=list)
    table: Optional[pa.Table] = None
    source: bool = False


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} in a pipeline")


class _Render:
    """Names every node once and writes the pipeline; in-memory tables go to files under
    `data_dir`, split in `parts` files (one per worker)."""

    def __init__(self, data_dir: Optional[Path], parts: int):
        self.names: Dict[int, str] = {}
        self.sources: List[str] = []
        self.operators: List[str] = []
        self.data_dir = data_dir
        self.parts = max(parts, 1)

    def name(self, node: _Node) -> str:
        if id(node) in self.names:
            return self.names[id(node)]
        inputs = [self.name(i) for i in node.inputs]
        n = f"s{len(self.sources)}" if node.source else f"o{len(self.operators)}"
        self.names[id(node)] = n
        params = dict(node.params)
        if node.table is not None:
            params = {"path": self._write_table(n, node.table)}
        if node.kind in ("join",):
            params = {"left": inputs[0], "right": inputs[1], **params}
        elif node.kind in ("union", "intersect", "subtract"):
            params = {"inputs": inputs, **params}
        elif inputs:
            params = {"input": inputs[0], **params}
        table = "source" if node.source else "operator"
        lines = [f"[{table}.{n}]", f"kind = {_toml_value(node.kind)}"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in params.items()]
        (self.sources if node.source else self.operators).append("\n".join(lines))
        return n

    def _write_table(self, name: str, table: pa.Table) -> str:
        if self.data_dir is None:
            raise ValueError(
                "this frame holds an in-memory table: to_toml(data_dir=...) writes it to files the pipeline can read"
            )
        d = self.data_dir / f"table-{name}"
        d.mkdir(parents=True, exist_ok=True)
        n = table.num_rows
        for i in range(self.parts):
            lo, hi = n * i // self.parts, n * (i + 1) // self.parts
            with pa.OSFile(str(d / f"part-{i:05d}.arrow"), "wb") as f:
                with pa.ipc.new_file(f, table.schema) as w:
                    w.write_table(table.slice(lo, hi - lo))
        return str(d) + "/"

    def document(self, sinks: str, job: str) -> str:
        parts = [f"[job]\nname = {_toml_value(job)}", *self.sources, *self.operators, sinks]
        return "\n\n".join(parts) + "\n"


def _worker_env() -> Dict[str, str]:
    env = dict(os.environ)
    # The launcher starts workers as this interpreter running the engine's command line.
    env["UPDRAFT_WORKER_COMMAND"] = json.dumps([sys.executable, "-m", "updraft._cli"])
    return env


def _cli(args: Sequence[str], capture: bool = True) -> subprocess.CompletedProcess:
    """Runs ``updraft ARGS`` in a child process; Ctrl-C stops it (and so its workers)."""
    command = [sys.executable, "-m", "updraft._cli", *args]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE,
        env=_worker_env(),
        text=True,
    )
    try:
        out, err = proc.communicate()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _problems(text: str, workers: int) -> List[Problem]:
    return [Problem(p, line, column, m) for (p, line, column, m) in _native.check(text, workers)]


def _job_error(proc: subprocess.CompletedProcess) -> JobError:
    ranks: Dict[int, str] = {}
    for line in (proc.stderr or "").splitlines():
        m = re.match(r"\s+rank (\d+): (.*)", line)
        if m:
            ranks[int(m.group(1))] = m.group(2)
    lines = [l for l in (proc.stderr or "").splitlines() if not l.startswith("updraft: ") or "failed" in l]
    message = "\n".join(lines).strip() or f"updraft exited with status {proc.returncode}"
    return JobError(message, proc.returncode, ranks)


class Pipeline:
    """A pipeline file as it is: ``Pipeline.from_toml("p.toml").run(workers=4)``."""

    def __init__(self, text: str, base: Optional[Path] = None):
        self.text = text
        self.base = base

    @staticmethod
    def from_toml(path: Union[str, os.PathLike]) -> "Pipeline":
        p = Path(path)
        return Pipeline(p.read_text(), p.resolve().parent)

    def validate(self, workers: int = 4) -> None:
        """Raises :class:`ValidationError` with every problem, or returns."""
        problems = _problems(self.text, workers)
        if problems:
            raise ValidationError(problems)

    def explain(self, workers: int = 4) -> str:
        """The plan every worker runs, with each stage's columns and each rank's files."""
        return self._with_file(lambda f: self._checked(_cli(["explain", f, "--workers", str(workers)])).stdout)

    def run(self, workers: int = 4) -> Dict[str, Any]:
        """Runs the pipeline on `workers` local worker processes; returns the job report (the
        JSON of ``updraft run --quiet``: rows and checksums per sink, phases, bytes)."""
        self.validate(workers)
        proc = self._with_file(lambda f: _cli(["run", f, "--workers", str(workers), "--quiet"]))
        return json.loads(self._checked(proc).stdout)

    def _with_file(self, f):
        fd, path = tempfile.mkstemp(suffix=".toml", prefix="updraft-")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(self.text)
            return f(path)
        finally:
            os.unlink(path)

    @staticmethod
    def _checked(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
        if proc.returncode != 0:
            raise _job_error(proc)
        return proc


class Frame:
    """A lazy distributed data frame: every method returns a new frame; nothing runs until
    :meth:`collect` or a ``write_*`` method."""

    def __init__(self, node: _Node):
        self._node = node
        self.last_report: Optional[Dict[str, Any]] = None

    def _then(self, kind: str, inputs: Sequence["Frame"] = (), **params: Any) -> "Frame":
        params = {k: v for k, v in params.items() if v is not None}
        return Frame(_Node(kind, params, [self._node, *(f._node for f in inputs)]))

    # --- operators ---
    def join(
        self,
        other: "Frame",
        on: Union[str, Sequence[str], None] = None,
        left_on: Union[str, Sequence[str], None] = None,
        right_on: Union[str, Sequence[str], None] = None,
        how: str = "inner",
        algorithm: str = "hash",
        suffixes: Tuple[str, str] = ("_left", "_right"),
    ) -> "Frame":
        """Joins `other` on `on` (or `left_on`/`right_on`); `how` is inner, left, right or
        full; `algorithm` hash or sort_merge. A key named alike on both sides is one column."""
        listify = lambda v: [v] if isinstance(v, str) else (list(v) if v is not None else None)
        return self._then(
            "join",
            [other],
            on=listify(on),
            left_on=listify(left_on),
            right_on=listify(right_on),
            how=how,
            algorithm=algorithm,
            suffixes=list(suffixes),
        )

    def group_by(self, *keys: Union[str, Sequence[str]]) -> "GroupBy":
        """Groups by `keys` (none: one row over the whole table); finish with :meth:`GroupBy.agg`."""
        flat: List[str] = []
        for k in keys:
            flat.extend([k] if isinstance(k, str) else list(k))
        return GroupBy(self, flat)

    def sort(
        self,
        by: Union[str, Sequence[str]],
        descending: Union[bool, Sequence[bool]] = False,
        nulls_last: Union[bool, Sequence[bool]] = True,
    ) -> "Frame":
        """A global sort (rank 0 holds the first rows); per-key `descending` and `nulls_last`."""
        names = [by] if isinstance(by, str) else list(by)
        desc = [descending] * len(names) if isinstance(descending, bool) else list(descending)
        last = [nulls_last] * len(names) if isinstance(nulls_last, bool) else list(nulls_last)
        keys = [
            f"{_name(n)}{' desc' if d else ''}{'' if l else ' nulls first'}" for n, d, l in zip(names, desc, last)
        ]
        return self._then("sort", by=keys)

    def filter(self, predicate: Union[str, Col]) -> "Frame":
        """Rows where `predicate` (an expression string or :class:`Col`) is true."""
        return self._then("filter", where=_expr(predicate))

    def select(self, *columns: str, **exprs: Union[str, Col]) -> "Frame":
        """Only `columns`, then the named expressions, in that order."""
        out: Dict[str, str] = {c: _name(c) for c in columns}
        out.update({k: _expr(v) for k, v in exprs.items()})
        return self._then("project", columns=out)

    def with_columns(self, **exprs: Union[str, Col]) -> "Frame":
        """Every column, with the named expressions added (or replacing one of that name)."""
        names = self.columns()
        out: Dict[str, str] = {c: _name(c) for c in names}
        out.update({k: _expr(v) for k, v in exprs.items()})
        return self._then("project", columns=out)

    def distinct(self, columns: Optional[Sequence[str]] = None) -> "Frame":
        """The first row of each distinct combination of `columns` (default: whole rows)."""
        return self._then("distinct", columns=list(columns) if columns else None)

    def union(self, *others: "Frame", distinct: bool = False) -> "Frame":
        return self._then("union", others, distinct=distinct)

    def intersect(self, other: "Frame") -> "Frame":
        return self._then("intersect", [other])

    def subtract(self, other: "Frame") -> "Frame":
        return self._then("subtract", [other])

    def head(self, n: int = 10) -> "Frame":
        return self._then("head", rows=int(n))

    def tail(self, n: int = 10) -> "Frame":
        return self._then("tail", rows=int(n))

    def slice(self, offset: int, n: int) -> "Frame":
        return self._then("slice", offset=int(offset), rows=int(n))

    def repartition(self, keys: Optional[Sequence[str]] = None) -> "Frame":
        return self._then("repartition", keys=list(keys) if keys else None)

    # --- looking at it ---
    def to_toml(self, data_dir: Optional[Union[str, os.PathLike]] = None, workers: int = 4) -> str:
        """The pipeline, with a ``summary`` sink; in-memory tables are written to `data_dir`."""
        return self._render(Path(data_dir) if data_dir else None, workers, _summary_sink())

    def validate(self, workers: int = 4) -> None:
        """Raises :class:`ValidationError` with every problem, or returns."""
        with tempfile.TemporaryDirectory(prefix="updraft-") as d:
            Pipeline(self._render(Path(d), workers, _summary_sink())).validate(workers)

    def explain(self, workers: int = 4) -> str:
        with tempfile.TemporaryDirectory(prefix="updraft-") as d:
            return Pipeline(self._render(Path(d), workers, _summary_sink())).explain(workers)

    def columns(self) -> List[str]:
        """The names of this frame's columns, found as ``validate`` finds them (from the files)."""
        with tempfile.TemporaryDirectory(prefix="updraft-") as d:
            text = self._render(Path(d), 1, _summary_sink())
            problems = _problems(text, 1)
            if problems:
                raise ValidationError(problems)
            return list(_native.columns(text, "result"))

    # --- running ---
    def collect(self, workers: int = 4) -> pa.Table:
        """Runs the plan on `workers` local worker processes and returns the result as a
        ``pyarrow.Table`` (rank order; memory-mapped from the Arrow IPC files the workers
        wrote, not copied). The job report is kept in :attr:`last_report`."""
        tmp = Path(tempfile.mkdtemp(prefix="updraft-"))
        try:
            out = tmp / "result"
            sink = f'[sink.result]\nkind = "ipc"\ninput = "{{input}}"\npath = {_toml_value(str(out / "part-{rank}.arrow"))}'
            text = self._render(tmp / "in", workers, sink)
            self.last_report = Pipeline(text).run(workers)
            files = sorted(out.glob("part-*.arrow"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
            tables = [pa.ipc.open_file(pa.memory_map(str(f))).read_all() for f in files]
            if not tables:
                raise JobError("the job wrote no result file", 0, {})
            return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def to_pandas(self, workers: int = 4):
        return self.collect(workers).to_pandas()

    def write_parquet(self, path: str, workers: int = 4, mode: str = "overwrite") -> Dict[str, Any]:
        """Writes one Parquet part per rank (``{rank}`` in `path`, e.g. ``out/part-{rank}.parquet``)
        and returns the job report."""
        return self._write("parquet", path, workers, mode)

    def write_csv(self, path: str, workers: int = 4, mode: str = "overwrite") -> Dict[str, Any]:
        return self._write("csv", path, workers, mode)

    def write_ipc(self, path: str, workers: int = 4, mode: str = "overwrite") -> Dict[str, Any]:
        return self._write("ipc", path, workers, mode)

    def write_json(self, path: str, workers: int = 4, mode: str = "overwrite") -> Dict[str, Any]:
        return self._write("json", path, workers, mode)

    def _write(self, kind: str, path: str, workers: int, mode: str) -> Dict[str, Any]:
        if "{rank}" not in path:
            raise ValueError(f"path {path!r} needs {{rank}}: each rank writes its own part")
        tmp = Path(tempfile.mkdtemp(prefix="updraft-"))
        try:
            sink = f'[sink.result]\nkind = "{kind}"\ninput = "{{input}}"\npath = {_toml_value(path)}\nmode = {_toml_value(mode)}'
            self.last_report = Pipeline(self._render(tmp / "in", workers, sink)).run(workers)
            return self.last_report
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _render(self, data_dir: Optional[Path], workers: int, sink: str) -> str:
        r = _Render(data_dir, workers)
        last = r.name(self._node)
        return r.document(sink.replace("{input}", last), "python")


def _summary_sink() -> str:
    return '[sink.result]\nkind = "summary"\ninput = "{input}"'


class GroupBy:
    """A frame grouped by keys, waiting for :meth:`agg`."""

    def __init__(self, frame: Frame, keys: List[str]):
        self._frame, self._keys = frame, keys

    def agg(self, **aggregates: str) -> Frame:
        """Named aggregates: ``total=col("amount").sum()`` or ``total="sum(amount)"``;
        ``n="count()"`` counts rows. Functions: count, sum, min, max, mean, var, std, nunique,
        first, last, median, quantile."""
        if not aggregates:
            raise ValueError("agg needs at least one aggregate, e.g. agg(n='count()')")
        return self._frame._then("group_by", keys=self._keys, aggregate=dict(aggregates))


# --- sources ----------------------------------------------------------------------------------


def _paths(paths: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]) -> Dict[str, Any]:
    if isinstance(paths, (str, os.PathLike)):
        return {"path": os.fspath(paths)}
    return {"paths": [os.fspath(p) for p in paths]}


def _source(kind: str, paths, **options: Any) -> Frame:
    params = {**_paths(paths), **{k: v for k, v in options.items() if v is not None}}
    return Frame(_Node(kind, params, source=True))


def read_parquet(paths, missing_columns: Optional[str] = None) -> Frame:
    """Parquet files: a path, directory, glob pattern (``data/orders-*.parquet``), ``s3://``
    URL, or a list of them; ``{rank}`` in a path gives one file per rank."""
    return _source("parquet", paths, missing_columns=missing_columns)


def read_csv(
    paths,
    schema: Optional[Mapping[str, str]] = None,
    header: Optional[bool] = None,
    delimiter: Optional[str] = None,
    null_values: Optional[Sequence[str]] = None,
    missing_columns: Optional[str] = None,
) -> Frame:
    """CSV files; `schema` declares types by column name (``{"id": "int64"}``), the rest are inferred."""
    return _source(
        "csv",
        paths,
        schema=dict(schema) if schema else None,
        header=header,
        delimiter=delimiter,
        null_values=list(null_values) if null_values else None,
        missing_columns=missing_columns,
    )


def read_ipc(paths, missing_columns: Optional[str] = None) -> Frame:
    """Arrow IPC files or streams."""
    return _source("ipc", paths, missing_columns=missing_columns)


def read_json(paths, missing_columns: Optional[str] = None) -> Frame:
    """JSON lines (one object per line)."""
    return _source("json", paths, missing_columns=missing_columns)


def from_arrow(data: Union[pa.Table, pa.RecordBatch, Sequence[pa.RecordBatch]]) -> Frame:
    """A frame over in-memory Arrow data, split evenly across the workers when it runs."""
    if isinstance(data, pa.RecordBatch):
        table = pa.Table.from_batches([data])
    elif isinstance(data, pa.Table):
        table = data
    else:
        table = pa.Table.from_batches(list(data))
    return Frame(_Node("ipc", {}, table=table, source=True))


def from_pandas(df) -> Frame:
    """A frame over a pandas DataFrame (through ``pyarrow.Table.from_pandas``, index dropped)."""
    return from_arrow(pa.Table.from_pandas(df, preserve_index=False))
