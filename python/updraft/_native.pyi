"""The engine inside the extension module (see python/src/lib.rs)."""

from typing import List, Optional, Tuple

__version__: str

def cli(argv: List[str]) -> int:
    """Runs the ``updraft`` command line with `argv` (argv[0] is the program name); returns its
    exit status: 0 ok, 1 job failed, 2 bad input, 3 infrastructure."""

def check(text: str, workers: int) -> List[Tuple[str, int, int, str]]:
    """Every problem of pipeline `text` for `workers` workers as (key path, line, column,
    message); empty when it is valid."""

def placement() -> Tuple[Optional[int], Optional[int], Optional[str]]:
    """(rank, world, job) from the scheduler's environment, as ``updraft worker`` reads it; each
    None when not given. Raises ValueError naming a malformed variable."""

def columns(text: str, stage: str) -> List[str]:
    """The column names stage `stage` of pipeline `text` emits; empty when unknown before a run."""
