"""What every warehouse does: load staged Arrow data atomically, rebuild models, answer queries.

A load is described by a :class:`LoadRequest` and always runs in one transaction, so a failed or killed
load leaves the table exactly as it was. The three modes are the three ways a re-run can be made
idempotent:

* ``replace_partition`` — delete the rows of one partition key, insert the new ones (backfills and
  re-runs of a day never duplicate, and never touch another day);
* ``merge`` — upsert on the primary key, the last staged row of a key winning;
* ``replace`` — the table becomes exactly the staged rows (reference data without a key).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from hub.warehouse.stage import Stage

LoadMode = Literal["replace_partition", "merge", "replace"]

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
    #: Rows that failed mapping or key rules: {"row", "column", "value", "reason", "record"}.
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode == "replace_partition" and self.partition is None:
            raise ValueError(f"{self.table}: replace_partition needs a partition key")
        if self.mode == "merge" and not self.primary_key:
            raise ValueError(f"{self.table}: merge needs a primary key")


@dataclass(frozen=True)
class LoadResult:
    """What a load or model rebuild did; surfaced as Dagster metadata."""

    table: str
    rows_loaded: int
    rows_deleted: int
    table_rows: int
    columns: list[tuple[str, str]]  # (name, warehouse type) of the table after the load
    rows_quarantined: int = 0


class Warehouse(ABC):
    """A warehouse target. Implementations open short-lived connections: nothing is held between calls."""

    url: str
    #: Folder for staging files next to the warehouse (None: the system temp folder).
    stage_root: str | None = None

    @abstractmethod
    def load(self, request: LoadRequest, stage: Stage) -> LoadResult:
        """Load everything in *stage* into ``request.table`` in one transaction."""

    @abstractmethod
    def run_model(self, name: str, sql: str) -> LoadResult:
        """Replace table *name* with the result of *sql*, atomically (the old table stays on failure)."""

    @abstractmethod
    def query(self, sql: str) -> pa.Table:
        """Run a read query and return the result as an Arrow table."""

    @abstractmethod
    def tables(self) -> list[str]:
        """Names of the tables the hub loaded (quarantine tables included), sorted."""
