"""updraft from Python: lazy distributed data frames on the updraft engine.

A frame is a plan, not data: ``read_parquet``, ``from_arrow`` and the rest build a pipeline
(the same pipeline the TOML files describe, checked by the same code), and ``collect`` runs it on
local worker processes and returns a ``pyarrow.Table``::

    import updraft as ud
    orders = ud.read_parquet("data/orders-*.parquet")
    customers = ud.read_csv("data/customers.csv")
    top = (orders.join(customers, on="customer_id")
                 .group_by("country").agg(total=ud.col("amount").sum())
                 .sort("total", descending=True)
                 .collect(workers=4))

Errors are exceptions: :class:`ValidationError` (the pipeline or its inputs are wrong; every
problem with its key path, as ``updraft validate`` reports them) and :class:`JobError` (the job
failed; each rank's error and its class).
"""

from updraft._frame import *  # noqa: F401,F403 (the names in updraft._frame.__all__)
from updraft._frame import __all__  # noqa: F401
