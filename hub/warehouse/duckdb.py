"""The default warehouse: one DuckDB file.

DuckDB allows one writing process per file, so the hub never holds a connection between calls and
every Dagster asset writing here shares one concurrency pool of size 1 (see :mod:`hub.dagster`). Each
load is one transaction over the staged Parquet files: the table is either fully updated or untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from hub.errors import WarehouseError
from hub.warehouse.base import (
    LOADED_AT_COLUMN,
    PARTITION_COLUMN,
    QUARANTINE_SUFFIX,
    RUN_COLUMN,
    LoadRequest,
    LoadResult,
    Warehouse,
)
from hub.warehouse.stage import Stage

_QUARANTINE_COLUMNS = (
    f'"{PARTITION_COLUMN}" VARCHAR, row_number BIGINT, column_name VARCHAR, value VARCHAR, reason VARCHAR, '
    f'record VARCHAR, "{RUN_COLUMN}" VARCHAR, "{LOADED_AT_COLUMN}" TIMESTAMPTZ'
)


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


class DuckDBWarehouse(Warehouse):
    def __init__(self, url: str) -> None:
        if not url.startswith("duckdb:///"):
            raise WarehouseError(f"not a DuckDB URL: {url} (expected duckdb:///path/to/file.duckdb)")
        self.url = url
        self.path = url[len("duckdb:///"):]
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.stage_root = str(Path(self.path).parent / ".stage")

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            con = duckdb.connect(self.path)
        except duckdb.Error as exc:
            raise WarehouseError(f"cannot open DuckDB warehouse {self.path}: {exc}") from None
        try:
            yield con
        finally:
            con.close()

    # --- reading -------------------------------------------------------------------------------------

    def query(self, sql: str) -> pa.Table:
        with self._connect() as con:
            try:
                return con.sql(sql).to_arrow_table()
            except duckdb.Error as exc:
                raise WarehouseError(f"query on {self.path} failed: {exc}") from None

    def tables(self) -> list[str]:
        with self._connect() as con:
            rows = con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                               "AND table_name NOT LIKE '\\_hub\\_%' ESCAPE '\\' ORDER BY table_name").fetchall()
        return [r[0] for r in rows]

    @staticmethod
    def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
        rows = con.execute("SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
                           [table]).fetchall()
        return [(r[0], r[1]) for r in rows]

    @staticmethod
    def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
        row = con.execute(f"SELECT count(*) FROM {ident(table)}").fetchone()
        return int(row[0]) if row else 0

    # --- loading -------------------------------------------------------------------------------------

    def load(self, request: LoadRequest, stage: Stage) -> LoadResult:
        files = stage.seal()
        with self._connect() as con:
            try:
                con.execute("BEGIN TRANSACTION")
                loaded, deleted = self._load(con, request, files)
                quarantined = self._quarantine(con, request)
                result = LoadResult(table=request.table, rows_loaded=loaded, rows_deleted=deleted,
                                    table_rows=self._count(con, request.table) if self._exists(con, request.table)
                                    else 0, columns=self._columns(con, request.table),
                                    rows_quarantined=quarantined)
                con.execute("COMMIT")
                return result
            except (duckdb.Error, WarehouseError) as exc:
                con.execute("ROLLBACK")
                where = f" partition {request.partition}" if request.partition else ""
                raise WarehouseError(f"loading {request.table} into {self.path}{where} failed, nothing was "
                                     f"changed: {exc}") from None

    @staticmethod
    def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
        return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' "
                                "AND table_name = ?", [table]).fetchone()[0])  # type: ignore[index]

    def _load(self, con: duckdb.DuckDBPyConnection, req: LoadRequest, files: list[Path]) -> tuple[int, int]:
        table = ident(req.table)
        exists = self._exists(con, req.table)
        if not files:
            # Nothing arrived: an empty partition or an empty reference set is still a fact to record.
            if not exists:
                return 0, 0
            if req.mode == "replace_partition":
                n = con.execute(f"DELETE FROM {table} WHERE {ident(PARTITION_COLUMN)} = ?",
                                [req.partition]).fetchone()
                return 0, int(n[0]) if n else 0
            if req.mode == "replace":
                n = con.execute(f"DELETE FROM {table}").fetchone()
                return 0, int(n[0]) if n else 0
            return 0, 0
        extra = [f"CAST(? AS VARCHAR) AS {ident(PARTITION_COLUMN)}", f"CAST(? AS VARCHAR) AS {ident(RUN_COLUMN)}",
                 f"now() AS {ident(LOADED_AT_COLUMN)}"]
        source = f"read_parquet({_sql_list(files)}, union_by_name = true, filename = true, file_row_number = true)"
        if req.mode == "merge":
            keys = ", ".join(ident(k) for k in req.primary_key)
            # The last staged row of a key wins (files and rows are in the order they were extracted).
            source = (f"(SELECT * FROM {source} QUALIFY row_number() OVER (PARTITION BY {keys} "
                      f"ORDER BY filename DESC, file_row_number DESC) = 1)")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _hub_staged AS SELECT * EXCLUDE (filename, file_row_number), "
                    f"{', '.join(extra)} FROM {source}", [req.partition, req.run_id])
        staged_cols = self._temp_columns(con)
        if req.mode == "replace" or not exists:
            replaced = self._count(con, req.table) if exists else 0
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _hub_staged")
            return self._count(con, req.table), replaced
        have = {name for name, _ in self._columns(con, req.table)}
        for name, dtype in staged_cols:
            if name not in have:  # schema evolution: a new field appears; earlier rows get NULL
                con.execute(f"ALTER TABLE {table} ADD COLUMN {ident(name)} {dtype}")
        if req.mode == "replace_partition":
            row = con.execute(f"DELETE FROM {table} WHERE {ident(PARTITION_COLUMN)} = ?", [req.partition]).fetchone()
        else:
            missing = [k for k in req.primary_key if k not in dict(staged_cols)]
            if missing:
                raise WarehouseError(f"primary key column(s) {', '.join(missing)} missing from the staged rows")
            keys = ", ".join(ident(k) for k in req.primary_key)
            row = con.execute(f"DELETE FROM {table} WHERE ({keys}) IN (SELECT ({keys}) FROM _hub_staged)").fetchone()
        deleted = int(row[0]) if row else 0
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _hub_staged")
        loaded_row = con.execute("SELECT count(*) FROM _hub_staged").fetchone()
        return (int(loaded_row[0]) if loaded_row else 0), deleted

    @staticmethod
    def _temp_columns(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in con.execute("DESCRIBE _hub_staged").fetchall()]

    def _quarantine(self, con: duckdb.DuckDBPyConnection, req: LoadRequest) -> int:
        """Replace this partition's (or this unpartitioned table's) quarantined rows with the new ones."""
        qtable = ident(req.table + QUARANTINE_SUFFIX)
        if not req.quarantine and not self._exists(con, req.table + QUARANTINE_SUFFIX):
            return 0
        con.execute(f"CREATE TABLE IF NOT EXISTS {qtable} ({_QUARANTINE_COLUMNS})")
        if req.partition is None:
            con.execute(f"DELETE FROM {qtable} WHERE {ident(PARTITION_COLUMN)} IS NULL")
        else:
            con.execute(f"DELETE FROM {qtable} WHERE {ident(PARTITION_COLUMN)} = ?", [req.partition])
        if req.quarantine:
            rows = pa.table({
                PARTITION_COLUMN: pa.array([req.partition] * len(req.quarantine), pa.string()),
                "row_number": pa.array([q.get("row") for q in req.quarantine], pa.int64()),
                "column_name": pa.array([q.get("column") for q in req.quarantine], pa.string()),
                "value": pa.array([None if q.get("value") is None else str(q["value"]) for q in req.quarantine],
                                  pa.string()),
                "reason": pa.array([q.get("reason") for q in req.quarantine], pa.string()),
                "record": pa.array([q.get("record") for q in req.quarantine], pa.string()),
                RUN_COLUMN: pa.array([req.run_id] * len(req.quarantine), pa.string()),
            })
            con.register("_hub_quarantine_rows", rows)
            try:
                con.execute(f"INSERT INTO {qtable} BY NAME SELECT *, now() AS {ident(LOADED_AT_COLUMN)} "
                            "FROM _hub_quarantine_rows")
            finally:
                con.unregister("_hub_quarantine_rows")
        return len(req.quarantine)

    # --- models --------------------------------------------------------------------------------------

    def run_model(self, name: str, sql: str) -> LoadResult:
        with self._connect() as con:
            try:
                con.execute("BEGIN TRANSACTION")
                con.execute(f"CREATE OR REPLACE TABLE {ident(name)} AS {sql}")
                result = LoadResult(table=name, rows_loaded=self._count(con, name), rows_deleted=0,
                                    table_rows=self._count(con, name), columns=self._columns(con, name))
                con.execute("COMMIT")
                return result
            except duckdb.Error as exc:
                con.execute("ROLLBACK")
                raise WarehouseError(f"model {name}: SQL failed in {self.path}, the previous table is kept: "
                                     f"{exc}") from None
