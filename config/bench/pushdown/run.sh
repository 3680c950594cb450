#!/usr/bin/env bash
# What reading only the used columns and skipping row groups buys, as ratios measured in one
# run: a group-by over 2 of 12 columns (proj) against the same group-by with a second consumer
# that needs every column (all), and a filter selecting 10% of a sorted key (prune) against the
# same filter written so that statistics cannot decide it (noprune). Needs Python with pyarrow
# and numpy.   config/bench/pushdown/run.sh [WORKERS] [REPEATS]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
UPDRAFT=${UPDRAFT:-$HERE/../../../target/release/updraft}
WORKERS=${1:-2} REPEATS=${2:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
python3 "$HERE/gen.py"
cp "$HERE"/*.toml .
declare -A times
for _ in $(seq "$REPEATS"); do
    for p in proj all prune noprune; do
        s=$(date +%s%N)
        "$UPDRAFT" run "$p.toml" --workers "$WORKERS" --quiet > "$p.json" 2> "$p.err" || { cat "$p.err" >&2; exit 1; }
        times[$p]+="$(( ($(date +%s%N) - s) / 1000000 )) "
    done
done
median() { tr ' ' '\n' <<< "$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for p in proj all prune noprune; do echo "$p: $(median "${times[$p]}") ms (median of $REPEATS)"; done
python3 - <<'PY'
import json
m = {p: json.load(open(f"{p}.json")) for p in ["proj", "all", "prune", "noprune"]}
same = lambda a, b: m[a]["sinks"][0]["summary"] == m[b]["sinks"][0]["summary"]
print("same answers:", same("proj", "all") and same("prune", "noprune"))
PY
