"""The exceptions of the package: a pipeline that is wrong, a job that failed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence


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
