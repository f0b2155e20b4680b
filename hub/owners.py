"""Which pipeline owns which warehouse table, so one pipeline never silently replaces another's table.

Two specs of one project may name the same asset (a plan written next to the demo reuses the demo's
table names) and, on one warehouse, the second would overwrite the first's table with rows of another
shape. ``hub validate`` catches that across a project's specs; this ledger catches it where specs were
never validated together (another folder, another checkout): each load records its tables' owner in
``_hub_tables`` in the load's own transaction, and a load of a table another pipeline owns is refused,
naming both.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from hub.errors import WarehouseError
from hub.spec.loader import Pipeline
from hub.warehouse import Load, LoadRequest, Warehouse

OWNERS_TABLE = "_hub_tables"


class TableOwnedError(WarehouseError):
    """The table belongs to another pipeline; nothing was loaded."""


def check(warehouse: Warehouse, pipeline: Pipeline, tables: list[str]) -> None:
    """Raise :class:`TableOwnedError` when another pipeline owns one of *tables*."""
    if OWNERS_TABLE not in warehouse.tables(internal=True):
        return
    quoted = ", ".join("'" + t.replace("'", "''") + "'" for t in tables)
    for row in warehouse.query(f"SELECT table_name, pipeline, spec FROM {OWNERS_TABLE} "
                               f"WHERE table_name IN ({quoted})").to_pylist():
        if row["pipeline"] != pipeline.name:
            raise TableOwnedError(
                f"table {row['table_name']} belongs to pipeline '{row['pipeline']}' ({row['spec']}); pipeline "
                f"'{pipeline.name}' ({pipeline.path}) would replace it, so nothing was loaded. Give the asset "
                f"another name in {pipeline.path}, or use another warehouse")


def claim(load: Load, pipeline: Pipeline, tables: list[str], run_id: str) -> None:
    """Record *pipeline* as the owner of *tables*, in *load*'s transaction."""
    owners = load.attach(LoadRequest(OWNERS_TABLE, "merge", run_id, primary_key=("table_name",)))
    owners.write(_rows(pipeline, tables, run_id))
    owners.commit()


def claim_now(warehouse: Warehouse, pipeline: Pipeline, tables: list[str], run_id: str) -> None:
    """Record the owner of *tables* in a transaction of its own (model tables, rebuilt by one statement)."""
    warehouse.load(LoadRequest(OWNERS_TABLE, "merge", run_id, primary_key=("table_name",)),
                   [_rows(pipeline, tables, run_id)])


def _rows(pipeline: Pipeline, tables: list[str], run_id: str) -> pa.RecordBatch:
    now = datetime.now(UTC)
    return pa.RecordBatch.from_pydict({
        "table_name": tables, "pipeline": [pipeline.name] * len(tables), "spec": [str(pipeline.path)] * len(tables),
        "run_id": [run_id] * len(tables), "updated_at": pa.array([now] * len(tables), pa.timestamp("us", tz="UTC"))})
