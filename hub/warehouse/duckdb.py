"""The default warehouse: one DuckDB file.

DuckDB allows one writing process per file. The hub holds no connection between operations, and every
Dagster asset writing here shares one concurrency pool of size 1 (see :mod:`hub.dagster`), so the
connection a load keeps open from its first batch to its commit never meets another writer.

Batches are buffered into chunks of ``chunk_rows`` rows and inserted as the source is extracted:
DuckDB works outside the GIL, so compressing and writing a chunk overlaps the adapter fetching the
next pages. Everything happens in one transaction; a failure rolls back, and a killed process leaves
an uncommitted transaction that DuckDB discards when the file is next opened.

Connection settings can ride on the URL: ``duckdb:///warehouse/hub.duckdb?memory_limit=2GB&threads=4``, and
``load_memory_limit`` (default 160MB) caps DuckDB's memory during loads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import duckdb
import pyarrow as pa

from hub.errors import WarehouseError
from hub.warehouse.base import (
    LOADED_AT_COLUMN,
    PARTITION_COLUMN,
    QUARANTINE_SUFFIX,
    RUN_COLUMN,
    Load,
    LoadRequest,
    LoadResult,
    Warehouse,
)

_QUARANTINE_COLUMNS = (
    f'"{PARTITION_COLUMN}" VARCHAR, row_number BIGINT, column_name VARCHAR, value VARCHAR, reason VARCHAR, '
    f'record VARCHAR, "{RUN_COLUMN}" VARCHAR, "{LOADED_AT_COLUMN}" TIMESTAMPTZ'
)
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
            "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL")
_CHUNK = "_hub_chunk"
DEFAULT_LOAD_MEMORY = "160MB"


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str | None) -> str:
    """A SQL string literal (or NULL)."""
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def _count_of(cursor: duckdb.DuckDBPyConnection) -> int:
    """The single number a statement returns (the row count of a DELETE or INSERT, a count(*)).

    fetchall, not fetchone: DuckDB keeps a result open until it is fully read, and refuses the next
    statement on the connection meanwhile."""
    rows = cursor.fetchall()
    return int(rows[0][0]) if rows else 0


def _is_numeric(dtype: str) -> bool:
    return dtype.split("(")[0] in _NUMERIC


def _widens(current: str, wider: str) -> bool:
    """True when changing a column from *current* to *wider* keeps every value and its meaning."""
    if _is_numeric(current) and _is_numeric(wider):
        return True
    return current.startswith("STRUCT(") and wider.startswith("STRUCT(")  # a nested field was added


class DuckDBWarehouse(Warehouse):
    def __init__(self, url: str) -> None:
        if not url.startswith("duckdb:///"):
            raise WarehouseError(f"not a DuckDB URL: {url} (expected duckdb:///path/to/file.duckdb)")
        self.url = url
        path, _, query = url[len("duckdb:///"):].partition("?")
        self.path = path
        self.config: dict[str, str | bool | int | float | list[str]] = dict(parse_qsl(query))
        # Loads cap DuckDB's own memory (it spills what does not fit): an uncommitted load otherwise keeps
        # every row it appended in memory until the commit. Queries and models keep DuckDB's default.
        self.load_memory_limit = str(self.config.pop("load_memory_limit", DEFAULT_LOAD_MEMORY))
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.open()
        try:
            yield con
        finally:
            con.close()

    def open(self) -> duckdb.DuckDBPyConnection:
        """A new connection (the caller closes it)."""
        try:
            return duckdb.connect(self.path, config=self.config)
        except duckdb.Error as exc:
            hint = (" (another process is writing to it; hub assets share the hub_duckdb pool so this does "
                    "not happen between them)" if "lock" in str(exc).lower() else "")
            raise WarehouseError(f"cannot open DuckDB warehouse {self.path}: {exc}{hint}") from None

    # --- reading -------------------------------------------------------------------------------------

    def query(self, sql: str) -> pa.Table:
        with self._connect() as con:
            try:
                return con.sql(sql).to_arrow_table()
            except duckdb.Error as exc:
                raise WarehouseError(f"query on {self.path} failed: {exc}") from None

    def stream(self, sql: str, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        with self._connect() as con:
            try:
                reader = con.sql(sql).to_arrow_reader(batch_rows)
            except duckdb.Error as exc:
                raise WarehouseError(f"query on {self.path} failed: {exc}") from None
            yield from reader

    def tables(self, internal: bool = False) -> list[str]:
        with self._connect() as con:
            rows = con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                               "AND schema_name = 'main' AND NOT temporary ORDER BY table_name").fetchall()
        return [r[0] for r in rows if internal or not r[0].startswith("_hub_")]

    # --- loading -------------------------------------------------------------------------------------

    def begin(self, request: LoadRequest) -> Load:
        return _DuckDBLoad(self, request)

    # --- models --------------------------------------------------------------------------------------

    def run_model(self, name: str, sql: str) -> LoadResult:
        with self._connect() as con:
            try:
                con.execute("BEGIN TRANSACTION")
                con.execute(f"CREATE OR REPLACE TABLE {ident(name)} AS {sql}")
                rows = _table_rows(con, name)
                result = LoadResult(table=name, rows_loaded=rows, rows_deleted=0, table_rows=rows,
                                    columns=_columns(con, name))
                con.execute("COMMIT")
                return result
            except duckdb.Error as exc:
                con.execute("ROLLBACK")
                raise WarehouseError(f"model {name}: SQL failed in {self.path}, the previous table is kept: "
                                     f"{exc}") from None


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    """(name, type) of every column of *table* (a temporary table of this connection, or a table of the
    warehouse), in order."""
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {ident(table)}").fetchall()]


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether the warehouse (not an attached database, not a temporary table) has *table*."""
    return bool(_count_of(con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = "
                                      "current_database() AND schema_name = 'main' AND NOT temporary "
                                      "AND table_name = ?", [table])))


def _table_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return _count_of(con.execute(f"SELECT count(*) FROM {ident(table)}"))


class _DuckDBLoad(Load):
    """One load: an open connection and transaction, written chunk by chunk."""

    def __init__(self, warehouse: DuckDBWarehouse, request: LoadRequest, chunk_rows: int = 64 * 1024,
                 parent: _DuckDBLoad | None = None) -> None:
        self.warehouse, self.request, self.chunk_rows = warehouse, request, chunk_rows
        self._parent = parent  # an attached load shares its parent's connection and transaction
        self._staged = f"_hub_staged_{request.table}"
        self._keys_table = f"_hub_keys_{request.table}"
        self._has_keys = False
        self.rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._rejected: list[dict[str, Any]] = []
        self._untyped: set[str] = set()  # columns this load created while they held only NULLs
        self._deleted = 0
        self._target: str | None = None  # where chunks go: the table, or the staging table of a merge
        self._target_exists = False
        self._fresh = False  # the target was created by this load (its column types may still change)
        self._con: duckdb.DuckDBPyConnection | None = parent._live() if parent else warehouse.open()
        try:
            if parent is None:
                self._con.execute(f"SET memory_limit = {_literal(warehouse.load_memory_limit)}")
                self._con.execute("BEGIN TRANSACTION")
            self._existed = _exists(self._con, request.table)
            if self._existed and request.mode == "replace_partition":
                self._deleted = _count_of(self._con.execute(
                    f"DELETE FROM {ident(request.table)} WHERE {ident(PARTITION_COLUMN)} = ?", [request.partition]))
        except duckdb.Error as exc:
            self._fail(exc)

    # --- writing -------------------------------------------------------------------------------------

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0 or batch.num_columns == 0:
            return
        if self._pending and not batch.schema.equals(self._pending[0].schema):
            self._flush()
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= self.chunk_rows:
            self._flush()

    def reject(self, rows: list[dict[str, Any]]) -> None:
        self._rejected.extend(rows)

    def attach(self, request: LoadRequest) -> Load:
        return _DuckDBLoad(self.warehouse, request, self.chunk_rows, parent=self)

    def cover(self, keys: pa.RecordBatch) -> None:
        if self.request.mode != "replace_keys" or keys.num_rows == 0:
            return
        rel = self._live().from_arrow(keys)
        try:
            if not self._has_keys:
                rel.query(_CHUNK, f"CREATE OR REPLACE TEMP TABLE {ident(self._keys_table)} AS SELECT * FROM {_CHUNK}")
                self._has_keys = True
            else:
                rel.query(_CHUNK, f"INSERT INTO {ident(self._keys_table)} BY NAME SELECT * FROM {_CHUNK}")
        except duckdb.Error as exc:
            self._fail(exc)

    def _flush(self) -> None:
        if not self._pending:
            return
        chunk = pa.Table.from_batches(self._pending)
        self._pending, self._pending_rows = [], 0
        try:
            self._insert(chunk)
        except (duckdb.Error, WarehouseError) as exc:
            self._fail(exc)

    def _insert(self, chunk: pa.Table) -> None:
        con = self._live()
        req = self.request
        meta = (f"CAST({_literal(req.partition)} AS VARCHAR) AS {ident(PARTITION_COLUMN)}, "
                f"CAST({_literal(req.run_id)} AS VARCHAR) AS {ident(RUN_COLUMN)}, "
                f"now() AS {ident(LOADED_AT_COLUMN)}")
        if self._target is None:
            self._start_target(con)
        assert self._target is not None
        have = dict(_columns(con, self._target)) if self._target_exists else {}
        # The chunk is queried as a relation, not registered: DuckDB keeps a registered Arrow table alive
        # until the transaction ends, which made a long load hold every chunk in memory.
        rel = con.from_arrow(self._typed(chunk, have))
        if not self._target_exists:
            kind = "TEMP TABLE" if self._target == self._staged else "TABLE"
            rel.query(_CHUNK, f"CREATE OR REPLACE {kind} {ident(self._target)} AS SELECT *, {meta} FROM {_CHUNK}")
            self._target_exists = True
            return
        described = rel.query(_CHUNK, f"DESCRIBE SELECT * FROM {_CHUNK}")
        assert described is not None
        incoming = [(r[0], r[1]) for r in described.fetchall()]
        self._reconcile(con, self._target, have, incoming, fresh=self._fresh, untyped=self._untyped)
        rel.query(_CHUNK, f"INSERT INTO {ident(self._target)} BY NAME SELECT *, {meta} FROM {_CHUNK}")

    def _start_target(self, con: duckdb.DuckDBPyConnection) -> None:
        req = self.request
        if req.mode in ("merge", "replace_keys") and self._existed:
            # Upserting into an existing table: collect the rows aside, swap them in at commit.
            self._target, self._target_exists, self._fresh = self._staged, False, True
        elif req.mode == "replace" and self._existed:
            self._deleted = _table_rows(con, req.table)
            self._target, self._target_exists, self._fresh = req.table, False, True  # recreated by the 1st chunk
        else:
            self._target, self._target_exists, self._fresh = req.table, self._existed, not self._existed

    def _typed(self, chunk: pa.Table, have: dict[str, str]) -> pa.Table:
        """Columns that are NULL in every row carry no type: leave them out when the table already has
        them (they load as NULL), otherwise create them as text and remember they are still untyped."""
        if not any(pa.types.is_null(f.type) for f in chunk.schema):
            return chunk
        keep, arrays = [], []
        for field, column in zip(chunk.schema, chunk.columns, strict=True):
            if pa.types.is_null(field.type):
                if field.name in have:
                    continue
                self._untyped.add(field.name)
                column = column.cast(pa.string())
            keep.append(field.name)
            arrays.append(column)
        return pa.Table.from_arrays(arrays, names=keep)

    def _reconcile(self, con: duckdb.DuckDBPyConnection, table: str, have: dict[str, str],
                   incoming: list[tuple[str, str]], *, fresh: bool, untyped: set[str]) -> None:
        """Make *table* able to take columns of the *incoming* types (see the module notes of base).

        *untyped*: columns of *table* that this load created while every value was NULL; the first
        real values decide their type (and remove them from the set).
        """
        for name, dtype in incoming:
            current = have.get(name)
            if current is None:
                con.execute(f"ALTER TABLE {ident(table)} ADD COLUMN {ident(name)} {dtype}")
                continue
            if name in untyped:
                untyped.discard(name)
                if current != dtype:
                    con.execute(f"ALTER TABLE {ident(table)} ALTER {ident(name)} TYPE {dtype}")
                continue
            if current == dtype:
                continue
            rows = con.execute(f"SELECT typeof(x) FROM (SELECT NULL::{current} AS x UNION ALL "
                               f"SELECT NULL::{dtype}) LIMIT 1").fetchall()
            wider = str(rows[0][0]) if rows else "VARCHAR"
            if wider == current:
                continue  # the new values fit the column as it is (e.g. integers into DOUBLE)
            if fresh or _widens(current, wider):
                con.execute(f"ALTER TABLE {ident(table)} ALTER {ident(name)} TYPE {wider}")
                continue
            raise WarehouseError(
                f"column {name} of table {self.request.table} is {current}, but the new rows have {dtype}; "
                f"refusing to change the type of an existing column (declare the column's type under "
                f"`columns:` in the spec so bad values are quarantined, or migrate the table)")

    # --- finishing -----------------------------------------------------------------------------------

    def commit(self) -> LoadResult:
        """Finish the load. An attached load only finishes its table; its parent's commit makes both
        visible at once (commit the attached loads first)."""
        self._flush()
        con = self._live()
        req = self.request
        try:
            loaded = self._finish(con)
            quarantined = self._quarantine(con)
            exists = _exists(con, req.table)
            result = LoadResult(table=req.table, rows_loaded=loaded, rows_deleted=self._deleted,
                                table_rows=_table_rows(con, req.table) if exists else 0,
                                columns=_columns(con, req.table) if exists else [],
                                rows_quarantined=quarantined)
            if self._parent is None:
                con.execute("COMMIT")
        except (duckdb.Error, WarehouseError) as exc:
            self._fail(exc)
        self._close()
        return result

    def _finish(self, con: duckdb.DuckDBPyConnection) -> int:
        """Apply the mode's last step; return the number of rows the load put in the table."""
        req = self.request
        table = ident(req.table)
        if req.mode == "replace_keys":  # covered keys lose their rows even when no row arrived
            return self._replace_keys(con)
        if self._target is None:  # nothing arrived: an empty partition or reference set is still a fact
            if self._existed and req.mode == "replace":
                self._deleted = _count_of(con.execute(f"DELETE FROM {table}"))
            return 0
        if req.mode != "merge":
            return self.rows
        keys = ", ".join(ident(k) for k in req.primary_key)
        target = ident(self._target)
        columns = dict(_columns(con, self._target))
        missing = [k for k in req.primary_key if k not in columns]
        if missing:
            raise WarehouseError(f"primary key column(s) {', '.join(missing)} are not in the loaded rows "
                                 f"(columns: {', '.join(c for c in columns if not c.startswith('_hub_'))})")
        # Within one load the last row of a key wins: rows are appended in extraction order. Counting
        # distinct keys first is a cheap hash aggregate; the window only runs when there are duplicates.
        duplicates = _count_of(con.execute(f"SELECT count(*) - count(DISTINCT ({keys})) FROM {target}"))
        if duplicates:
            _count_of(con.execute(
                f"DELETE FROM {target} WHERE rowid IN (SELECT rowid FROM (SELECT rowid, row_number() OVER "
                f"(PARTITION BY {keys} ORDER BY rowid DESC) AS n FROM {target}) WHERE n > 1)"))
        if self._target != self._staged:
            return self.rows - duplicates
        have = dict(_columns(con, req.table))
        # Staged columns that are still all-NULL carry no type: the table's own type stands.
        incoming = [(n, t) for n, t in columns.items() if not (n in self._untyped and n in have)]
        self._reconcile(con, req.table, have, incoming, fresh=False, untyped=set())
        self._deleted = _count_of(con.execute(
            f"DELETE FROM {table} WHERE ({keys}) IN (SELECT ({keys}) FROM {target})"))
        loaded = _count_of(con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {target}"))
        con.execute(f"DROP TABLE {target}")
        return loaded

    def _replace_keys(self, con: duckdb.DuckDBPyConnection) -> int:
        """Delete every row whose key was covered by this load, then insert the new rows (1:N children:
        a parent re-loaded with fewer children loses the others)."""
        req = self.request
        table, keys = ident(req.table), ", ".join(ident(k) for k in req.primary_key)
        if self._existed and self._has_keys:
            self._deleted = _count_of(con.execute(
                f"DELETE FROM {table} WHERE ({keys}) IN (SELECT ({keys}) FROM {ident(self._keys_table)})"))
        if self._has_keys:
            con.execute(f"DROP TABLE {ident(self._keys_table)}")
        if self._target != self._staged:
            return self.rows
        target = ident(self._staged)
        have = dict(_columns(con, req.table))
        staged = dict(_columns(con, self._staged))
        incoming = [(n, t) for n, t in staged.items() if not (n in self._untyped and n in have)]
        self._reconcile(con, req.table, have, incoming, fresh=False, untyped=set())
        loaded = _count_of(con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {target}"))
        con.execute(f"DROP TABLE {target}")
        return loaded

    def _quarantine(self, con: duckdb.DuckDBPyConnection) -> int:
        """Replace this partition's (or this unpartitioned table's) quarantined rows with the new ones."""
        req, rows = self.request, self._rejected
        qname = req.table + QUARANTINE_SUFFIX
        if not rows and not _exists(con, qname):
            return 0
        qtable = ident(qname)
        con.execute(f"CREATE TABLE IF NOT EXISTS {qtable} ({_QUARANTINE_COLUMNS})")
        if req.partition is None:
            con.execute(f"DELETE FROM {qtable} WHERE {ident(PARTITION_COLUMN)} IS NULL")
        else:
            con.execute(f"DELETE FROM {qtable} WHERE {ident(PARTITION_COLUMN)} = ?", [req.partition])
        if rows:
            table = pa.table({
                PARTITION_COLUMN: pa.array([req.partition] * len(rows), pa.string()),
                "row_number": pa.array([q.get("row") for q in rows], pa.int64()),
                "column_name": pa.array([q.get("column") for q in rows], pa.string()),
                "value": pa.array([None if q.get("value") is None else str(q["value"]) for q in rows], pa.string()),
                "reason": pa.array([q.get("reason") for q in rows], pa.string()),
                "record": pa.array([q.get("record") for q in rows], pa.string()),
                RUN_COLUMN: pa.array([req.run_id] * len(rows), pa.string()),
            })
            con.from_arrow(table).query(_CHUNK, f"INSERT INTO {qtable} BY NAME SELECT *, now() AS "
                                                f"{ident(LOADED_AT_COLUMN)} FROM {_CHUNK}")
        return len(rows)

    def rollback(self) -> None:
        if self._con is None:
            return
        if self._parent is not None:  # the whole shared transaction goes
            self._close()
            self._parent.rollback()
            return
        with contextlib.suppress(duckdb.Error):  # the transaction may already have ended with the error
            self._con.execute("ROLLBACK")
        self._close()

    def _close(self) -> None:
        if self._con is not None:
            if self._parent is None:
                self._con.close()
            self._con = None

    def _live(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise WarehouseError(f"load of {self.request.table} is already closed")
        return self._con

    def _fail(self, exc: Exception) -> None:
        self.rollback()
        where = f" partition {self.request.partition}" if self.request.partition else ""
        raise WarehouseError(f"loading {self.request.table} into {self.warehouse.path}{where} failed, nothing "
                             f"was changed: {exc}") from None
