# Four Parquet files of 2M rows (k sorted, so row groups of 250k rows cover key ranges; g, v and
# nine more int64 columns), for config/bench/pushdown/run.sh.
import os
import pyarrow as pa, pyarrow.parquet as pq, numpy as np
os.makedirs("data", exist_ok=True)
rng = np.random.default_rng(1)
n = 2_000_000
for f in range(4):
    k = np.arange(f * n, (f + 1) * n, dtype=np.int64)  # sorted key: row groups cover ranges
    cols = {"k": k, "g": rng.integers(0, 1000, n), "v": rng.integers(0, 1 << 40, n)}
    for i in range(9):
        cols[f"c{i}"] = rng.integers(0, 1 << 60, n)
    pq.write_table(pa.table(cols), f"data/t-{f}.parquet", row_group_size=250_000)
