# %% [markdown]
# # updraft from Python
#
# Orders in Parquet files, customers in a CSV: revenue per country on 4 local workers,
# checked against pandas. Run it with `python python/examples/orders.py` (it writes its data to
# a temporary directory), or cell by cell in Jupyter.

# %%
import os
import tempfile

import pandas as pd
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq

import updraft as ud

os.chdir(tempfile.mkdtemp())
os.makedirs("data")
n = 100_000
orders = pd.DataFrame({"order_id": range(n), "customer_id": [i % 997 for i in range(n)], "amount": [i % 250 / 4 for i in range(n)]})
for part in range(4):
    pq.write_table(pa.Table.from_pandas(orders.iloc[part::4], preserve_index=False), f"data/orders-{part}.parquet")
customers = pd.DataFrame({"customer_id": range(997), "country": [["DE", "FR", "US", "JP"][i % 4] for i in range(997)]})
pa.csv.write_csv(pa.Table.from_pandas(customers, preserve_index=False), "data/customers.csv")

# %% The plan: nothing runs yet.
revenue = (
    ud.read_parquet("data/orders-*.parquet")
    .join(ud.read_csv("data/customers.csv"), on="customer_id")
    .group_by("country")
    .agg(total=ud.col("amount").sum(), orders=ud.col("order_id").count())
    .sort("total", descending=True)
)
print(revenue.explain(workers=4))

# %% Run it: a pyarrow.Table back, and the job report.
table = revenue.collect(workers=4)
print(table.to_pandas())
print("rows over links:", revenue.last_report["bytes_sent"], "bytes")

# %% The same with pandas.
want = orders.merge(customers, on="customer_id").groupby("country")["amount"].sum().sort_values(ascending=False)
assert all(abs(a - b) < 1e-6 for a, b in zip(table.column("total").to_pylist(), want.tolist()))
assert table.column("country").to_pylist() == want.index.tolist()
print("same as pandas")
