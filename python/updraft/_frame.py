"""Frames: lazy plans rendered to updraft pipelines, run by the engine in worker processes."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.ipc

from updraft import _native
from updraft._errors import JobError, Problem, ValidationError
from updraft._run import Target, checked, local_parts, problems, run_cli

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
    """Names every node once and writes the pipeline; in-memory tables are handed to
    `tables` (name, table) -> the path the pipeline reads them from."""

    def __init__(self, tables: Optional[Callable[[str, pa.Table], str]]):
        self.names: Dict[int, str] = {}
        self.sources: List[str] = []
        self.operators: List[str] = []
        self.tables = tables

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
        if self.tables is None:
            raise ValueError(
                "this frame holds an in-memory table: to_toml(data_dir=...) writes it to files the pipeline can read"
            )
        return self.tables(name, table)

    def document(self, sinks: str, job: str) -> str:
        parts = [f"[job]\nname = {_toml_value(job)}", *self.sources, *self.operators, sinks]
        return "\n\n".join(parts) + "\n"


class Pipeline:
    """A pipeline file as it is: ``Pipeline.from_toml("p.toml").run(workers=4)``. Relative
    paths in it are relative to the current directory, as for the command line."""

    def __init__(self, text: str):
        self.text = text

    @staticmethod
    def from_toml(path: Union[str, os.PathLike]) -> "Pipeline":
        return Pipeline(Path(path).read_text())

    def validate(self, workers: int = 4) -> None:
        """Raises :class:`ValidationError` with every problem, or returns."""
        found = problems(self.text, workers)
        if found:
            raise ValidationError(found)

    def explain(self, workers: int = 4) -> str:
        """The plan every worker runs, with each stage's columns and each rank's files."""
        with tempfile.TemporaryDirectory(prefix="updraft-") as d:
            path = Path(d) / "pipeline.toml"
            path.write_text(self.text)
            return checked(run_cli(["explain", str(path), "--workers", str(workers)])).stdout

    def run(
        self,
        workers: Optional[int] = None,
        *,
        rendezvous: Optional[str] = None,
        backend: str = "local",
        function: Optional[str] = None,
        rank: Optional[int] = None,
        job: Optional[str] = None,
        progress: Optional[bool] = None,
    ) -> Dict[str, Any]:
        """Runs the pipeline and returns the job report: the JSON of ``updraft run --quiet``
        (rows and checksums per sink, phases, bytes; README "Machine-readable output"), or of
        ``updraft worker --json`` for one rank of separate workers.

        Where it runs: `workers` worker processes on this machine (default 4) with an
        embedded rendezvous; or, with `rendezvous` ("HOST:PORT"), this process runs rank `rank`
        of job `job` of `workers` ranks whose other ranks run elsewhere (each defaults to what
        Slurm, MPI, a Kubernetes Indexed Job or UPDRAFT_RANK/UPDRAFT_WORLD/UPDRAFT_JOB give);
        or, with ``backend="lambda"``, `workers` invocations of the Lambda function `function`
        meeting at `rendezvous`. `progress` shows the progress line (None: on a terminal or in
        Jupyter; local workers only).

        Raises :class:`ValidationError` (the pipeline or its inputs are wrong),
        :class:`JobError` (the job failed), ``ValueError`` (arguments that do not fit)."""
        target = Target(workers, rendezvous, backend, function, rank, job, None, progress)
        try:
            return target.run(self.text, cwd=Path.cwd())
        finally:
            target.close()


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
        build: str = "auto",
    ) -> "Frame":
        """Joins `other` on `on` (or `left_on`/`right_on`); `how` is inner, left, right or
        full; `algorithm` hash or sort_merge; `build` the side a hash join holds in its table
        (left, right, or auto: the smaller input). A key named alike on both sides is one
        column."""
        listify = lambda v: [v] if isinstance(v, str) else (list(v) if v is not None else None)
        return self._then(
            "join",
            [other],
            on=listify(on),
            left_on=listify(left_on),
            right_on=listify(right_on),
            how=how,
            algorithm=algorithm,
            build=build,
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
        """The pipeline, with a ``summary`` sink; in-memory tables are written to `data_dir`
        (split in `workers` Arrow IPC files)."""
        if data_dir is None:
            return self._render(None, _summary_sink())
        folder = Path(data_dir).resolve()

        def write(name: str, table: pa.Table) -> str:
            return local_parts(folder / f"table-{name}", table, workers)

        return self._render(write, _summary_sink())

    def validate(self, workers: int = 4) -> None:
        """Raises :class:`ValidationError` with every problem, or returns."""
        with tempfile.TemporaryDirectory(prefix="updraft-") as d:
            Pipeline(self.to_toml(d, workers)).validate(workers)

    def explain(self, workers: int = 4) -> str:
        """The plan every worker runs (``updraft explain``): stages with their columns and
        types, phases, where rows cross ranks, each rank's files."""
        with tempfile.TemporaryDirectory(prefix="updraft-") as d:
            return Pipeline(self.to_toml(d, workers)).explain(workers)

    def columns(self) -> List[str]:
        """The names of this frame's columns, found as ``validate`` finds them (from the files)."""
        with tempfile.TemporaryDirectory(prefix="updraft-") as d:
            text = self.to_toml(d, 1)
            found = problems(text, 1)
            if found:
                raise ValidationError(found)
            return list(_native.columns(text, "result"))

    # --- running ---
    def collect(
        self,
        workers: Optional[int] = None,
        *,
        rendezvous: Optional[str] = None,
        backend: str = "local",
        function: Optional[str] = None,
        rank: Optional[int] = None,
        job: Optional[str] = None,
        scratch: Optional[str] = None,
        progress: Optional[bool] = None,
    ) -> pa.Table:
        """Runs the plan and returns the result as a ``pyarrow.Table``, ranks in order (rank 0
        first: after a sort, the sorted table). The job report is kept in :attr:`last_report`.

        Where it runs is :meth:`Pipeline.run`'s choice: local workers (default 4; the result is
        memory-mapped from the Arrow IPC files they wrote, not copied); one rank of separate
        workers with `rendezvous` (in-memory tables are this rank's rows, and the table
        returned is this rank's part); Lambda with ``backend="lambda"``, in-memory tables and
        the result passing through the ``s3://`` prefix `scratch`, removed afterwards.

        Raises :class:`ValidationError`, :class:`JobError` or ``ValueError`` as
        :meth:`Pipeline.run` does."""
        target = Target(workers, rendezvous, backend, function, rank, job, scratch, progress)
        try:
            sink = _sink("ipc", target.result_path(), "overwrite")
            self.last_report = target.run(self._render(target.write_table, sink))
            return target.read_result()
        finally:
            target.close()

    def to_pandas(self, workers: Optional[int] = None, **where: Any):
        """:meth:`collect`, as a pandas DataFrame."""
        return self.collect(workers, **where).to_pandas()

    def write_parquet(self, path: str, workers: Optional[int] = None, mode: str = "overwrite", **where: Any) -> Dict[str, Any]:
        """Writes one Parquet part per rank (``{rank}`` in `path`, e.g. ``out/part-{rank}.parquet``,
        or an ``s3://`` URL) and returns the job report; `mode` is overwrite, append or
        error_if_exists; `where` as for :meth:`collect`."""
        return self._write("parquet", path, workers, mode, where)

    def write_csv(self, path: str, workers: Optional[int] = None, mode: str = "overwrite", **where: Any) -> Dict[str, Any]:
        """:meth:`write_parquet`, writing CSV with a header line."""
        return self._write("csv", path, workers, mode, where)

    def write_ipc(self, path: str, workers: Optional[int] = None, mode: str = "overwrite", **where: Any) -> Dict[str, Any]:
        """:meth:`write_parquet`, writing Arrow IPC files."""
        return self._write("ipc", path, workers, mode, where)

    def write_json(self, path: str, workers: Optional[int] = None, mode: str = "overwrite", **where: Any) -> Dict[str, Any]:
        """:meth:`write_parquet`, writing JSON lines."""
        return self._write("json", path, workers, mode, where)

    def _write(self, kind: str, path: str, workers: Optional[int], mode: str, where: Dict[str, Any]) -> Dict[str, Any]:
        if "{rank}" not in path:
            raise ValueError(f"path {path!r} needs {{rank}}: each rank writes its own part")
        target = Target(
            workers,
            where.pop("rendezvous", None),
            where.pop("backend", "local"),
            where.pop("function", None),
            where.pop("rank", None),
            where.pop("job", None),
            where.pop("scratch", None),
            where.pop("progress", None),
        )
        try:
            if where:
                raise TypeError(f"unexpected argument {', '.join(where)}")
            sink = _sink(kind, target.user_path(path), mode)
            self.last_report = target.run(self._render(target.write_table, sink))
            return self.last_report
        finally:
            target.close()

    def _render(self, tables: Optional[Callable[[str, pa.Table], str]], sink: str) -> str:
        r = _Render(tables)
        last = r.name(self._node)
        return r.document(sink.replace("{input}", last), "python")


def _summary_sink() -> str:
    return '[sink.result]\nkind = "summary"\ninput = "{input}"'


def _sink(kind: str, path: str, mode: str) -> str:
    return f'[sink.result]\nkind = "{kind}"\ninput = "{{input}}"\npath = {_toml_value(path)}\nmode = {_toml_value(mode)}'


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
        return {"path": _absolute(os.fspath(paths))}
    return {"paths": [_absolute(os.fspath(p)) for p in paths]}


def _absolute(path: str) -> str:
    """A local path made absolute now (a job may run in another directory); URLs as given."""
    return path if "://" in path else os.path.abspath(path)


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
