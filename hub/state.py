"""High-water marks of incremental sources, kept in the warehouse next to the data they describe.

The mark is written by a load attached to the data load (:meth:`hub.warehouse.Load.attach`), so both
commit in one transaction: a run that fails after reading leaves the old mark and the old rows, never a
new mark over missing rows (lost data) or new rows under an old mark (only re-read, then merged).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from hub.warehouse import Load, LoadRequest, Warehouse

STATE_TABLE = "_hub_state"


def read_mark(warehouse: Warehouse, source: str) -> str | None:
    """The stored high-water mark of *source* (None before its first incremental load)."""
    if STATE_TABLE not in warehouse.tables(internal=True):
        return None
    rows = warehouse.query(f"SELECT high_water_mark FROM {STATE_TABLE} "
                           f"WHERE source = '{source.replace(chr(39), chr(39) * 2)}'").to_pylist()
    return rows[0]["high_water_mark"] if rows else None


def save_mark(load: Load, source: str, cursor: str, mark: str | None, kind: str | None, run_id: str) -> None:
    """Record *mark* for *source* in *load*'s transaction (None after a full refresh of an empty table)."""
    state = load.attach(LoadRequest(STATE_TABLE, "merge", run_id, primary_key=("source",)))
    state.write(pa.RecordBatch.from_pydict({
        "source": [source], "cursor_column": [cursor], "high_water_mark": pa.array([mark], pa.string()),
        "kind": pa.array([kind], pa.string()), "run_id": [run_id],
        "updated_at": pa.array([datetime.now(UTC)], pa.timestamp("us", tz="UTC"))}))
    state.commit()
