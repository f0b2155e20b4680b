"""What every warehouse does: stream Arrow batches into a table in one transaction, rebuild models,
answer queries.

A load is opened with :meth:`Warehouse.begin` and is one transaction from the first batch to
:meth:`Load.commit`, so a failed or killed load leaves the table exactly as it was. Batches are
written while the source is still being extracted: the warehouse's own (GIL-free) work overlaps the
adapter's, and nothing is spooled to disk twice. The three modes are the three ways a re-run is made
idempotent:

* ``replace_partition`` — delete the rows of one partition key, insert the new ones (backfills and
  re-runs of a day never duplicate, and never touch another day);
* ``merge`` — upsert on the primary key, the last row of a key within the load winning;
* ``replace`` — the table becomes exactly the loaded rows (reference data without a key);
* ``replace_keys`` — the rows of every key the load covers (:meth:`Load.cover`) are replaced by the
  loaded rows: the mode of child tables (an order's lines) under a merged parent.

Several tables can change in one transaction: :meth:`Load.attach` opens a load that commits with its
parent (a record and its child rows land together or not at all).

Schema evolution: a new field becomes a new column (earlier rows NULL); a column whose values arrive
with a wider type (int → float, int32 → int64) is widened; any other type change of an existing column
is refused with an error naming the column, because downstream models depend on it. Within a table's
first load, differing types are unified (ultimately to text), as Arrow/DuckDB unification does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import pyarrow as pa

LoadMode = Literal["replace_partition", "merge", "replace", "replace_keys"]

#: Columns the hub adds to every loaded table (data columns come first, these last).
PARTITION_COLUMN = "_hub_partition"
RUN_COLUMN = "_hub_run_id"
LOADED_AT_COLUMN = "_hub_loaded_at"
QUARANTINE_SUFFIX = "__quarantine"


@dataclass(frozen=True)
class LoadRequest:
    table: str
    mode: LoadMode
    run_id: str
    partition: str | None = None
    primary_key: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode == "replace_partition" and self.partition is None:
            raise ValueError(f"{self.table}: replace_partition needs a partition key")
        if self.mode in ("merge", "replace_keys") and not self.primary_key:
            raise ValueError(f"{self.table}: {self.mode} needs key columns (primary_key)")


@dataclass(frozen=True)
class LoadResult:
    """What a load or model rebuild did; surfaced as Dagster metadata."""

    table: str
    rows_loaded: int
    rows_deleted: int
    table_rows: int
    columns: list[tuple[str, str]]  # (name, warehouse type) of the table after the load
    rows_quarantined: int = 0


class Load(ABC):
    """One load in progress (one open transaction). Use as a context manager: leaving the block
    without :meth:`commit` (an exception, a cancelled run) rolls everything back."""

    request: LoadRequest
    rows: int = 0  # rows written so far

    @abstractmethod
    def write(self, batch: pa.RecordBatch) -> None:
        """Add *batch* to the load."""

    @abstractmethod
    def reject(self, rows: list[dict[str, Any]]) -> None:
        """Record quarantined rows: dicts with row, column, value, reason, record."""

    @abstractmethod
    def attach(self, request: LoadRequest) -> Load:
        """A load of another table in this load's transaction; commit it before this one."""

    @abstractmethod
    def cover(self, keys: pa.RecordBatch) -> None:
        """``replace_keys`` mode: these key values are re-loaded (even those with no rows now)."""

    @abstractmethod
    def commit(self) -> LoadResult:
        """Make the load visible, atomically, and close it."""

    @abstractmethod
    def rollback(self) -> None:
        """Discard everything written and close. Safe to call more than once."""

    def __enter__(self) -> Load:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.rollback()  # a no-op after commit


class Warehouse(ABC):
    """A warehouse target. Connections are short-lived: nothing is held between loads and queries."""

    url: str

    @abstractmethod
    def begin(self, request: LoadRequest) -> Load:
        """Open a load of ``request.table``."""

    def load(self, request: LoadRequest, batches: Iterable[pa.RecordBatch],
             rejected: Iterable[dict[str, Any]] = ()) -> LoadResult:
        """Load every batch of *batches* (and the *rejected* rows) in one transaction."""
        with self.begin(request) as load:
            for batch in batches:
                load.write(batch)
            load.reject(list(rejected))
            return load.commit()

    @abstractmethod
    def run_model(self, name: str, sql: str) -> LoadResult:
        """Replace table *name* with the result of *sql*, atomically (the old table stays on failure)."""

    @abstractmethod
    def query(self, sql: str) -> pa.Table:
        """Run a read query and return the result as an Arrow table."""

    @abstractmethod
    def stream(self, sql: str, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Run a read query and stream the result in batches (bounded memory)."""

    @abstractmethod
    def tables(self, internal: bool = False) -> list[str]:
        """Names of the tables the hub loaded (quarantine tables included), sorted; with *internal*, also
        the hub's own bookkeeping tables (``_hub_*``, e.g. the file ledger)."""
