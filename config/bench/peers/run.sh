#!/usr/bin/env bash
# updraft against DataFusion, Polars and DuckDB on the same Parquet files at equal cores: an inner
# join, a group-by and a sort (see peers.py). Installs the peers' Python packages into a virtual
# environment of its own (once, under $PEERS_VENV, default ~/.cache/updraft-peers-venv), generates
# the data (two tables of ROWS rows, cached by size under $PEERS_DATA, default ~/.cache), runs every
# engine in turn, REPS times, on 1 worker/1 thread pinned to one core and on 2 workers/2 threads,
# checks every answer against the others and prints the table (medians; ratios to the fastest
# peer). Exit status 1 when answers differ.
#
#   config/bench/peers/run.sh [ROWS] [REPS] [-- peers.py bench flags, e.g. --tasks join]
#
# UPDRAFT (default: the release build under CARGO_TARGET_DIR or target/, built if missing).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROWS=${1:-16000000}
REPS=${2:-3}
shift $(( $# < 2 ? $# : 2 ))
[ "${1:-}" = "--" ] && shift
TARGET=${CARGO_TARGET_DIR:-$HERE/../../../target}
UPDRAFT=${UPDRAFT:-$TARGET/release/updraft}
if [ ! -x "$UPDRAFT" ]; then
    (cd "$HERE/../../.." && cargo build --release -p updraft)
fi
VENV=${PEERS_VENV:-$HOME/.cache/updraft-peers-venv}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import datafusion, polars, duckdb, pyarrow, numpy' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        datafusion==55.0.0 polars==2.1.0 duckdb==2.0.1 pyarrow==26.0.1 numpy
fi
DATA=${PEERS_DATA:-$HOME/.cache/updraft-peers-data}/rows-$ROWS
if [ ! -f "$DATA/done" ]; then
    rm -rf "$DATA"
    "$VENV/bin/python" "$HERE/peers.py" gen "$DATA" --rows "$ROWS"
    touch "$DATA/done"
fi
"$VENV/bin/python" -c 'import datafusion, polars, duckdb; print(f"datafusion {datafusion.__version__}, polars {polars.__version__}, duckdb {duckdb.__version__}")' >&2
"$VENV/bin/python" "$HERE/peers.py" bench "$DATA" --updraft "$(realpath "$UPDRAFT")" --reps "$REPS" "$@"
