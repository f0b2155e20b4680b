"""The default warehouse: one DuckDB file.

DuckDB allows one writing process per file. The hub holds no connection between operations (except a flow
run, which holds the file for its whole run under the writer lock: :meth:`DuckDBWarehouse.held`), and every
Dagster asset writing here shares one concurrency pool of size 1 (see :mod:`hub.dagster`), so the
connection a load keeps open from its first batch to its commit never meets another writer.

Batches are buffered into chunks of ``chunk_rows`` rows and inserted as the source is extracted:
DuckDB works outside the GIL, so compressing and writing a chunk overlaps the adapter fetching the
next pages. Everything happens in one transaction; a failure rolls back, and a killed process leaves
an uncommitted transaction that DuckDB discards when the file is next opened.

Connection settings can ride on the URL: ``duckdb:///warehouse/hub.duckdb?memory_limit=2GB&threads=4``, and
``load_memory_limit`` (default 160MB) caps DuckDB's memory during loads, ``load_threads`` (default: the URL's
``threads``, else half the CPUs, at least one) its worker threads during loads. A load that only appends (modes
``replace_partition`` and ``replace``) is capped at ``append_memory_limit`` (default 64MB) until the hub runs its
own SQL in it (hub/files_csv.py, which reads a file and sorts): DuckDB keeps the blocks a load has written in its
buffer pool until the limit pushes them out, a cache such a load never reads, which grew a 1 GB file's load by
the whole limit.

SQL a spec author wrote (models, export queries) runs on a connection of its own opened with
``enable_external_access=false`` and ``lock_configuration=true`` (:data:`SANDBOX`): DuckDB then refuses
every file, URL, extension install and ``ATTACH`` (``read_csv('/etc/passwd')``, ``read_text``, ``glob``,
``COPY``), and a ``SET`` that would turn access back on fails because the configuration is locked. The
hub's own loads keep a normal connection (they need ``SET memory_limit`` and Arrow relations). DuckDB
opens a file once per process with one configuration: a model cannot run while the same process holds
another connection to the warehouse (the hub never does; a clear error says so).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl

import duckdb
import pyarrow as pa

from hub.errors import WarehouseError
from hub.warehouse.base import (
    LOADED_AT_COLUMN,
    PARTITION_COLUMN,
    RUN_COLUMN,
    Load,
    LoadRequest,
    LoadResult,
    StreamingLoad,
    Warehouse,
    check_user_query,
    ident,
    literal,
    typed_columns,
)

_QUARANTINE_COLUMNS = (
    f'"{PARTITION_COLUMN}" VARCHAR, row_number BIGINT, column_name VARCHAR, value VARCHAR, reason VARCHAR, '
    f'record VARCHAR, "{RUN_COLUMN}" VARCHAR, "{LOADED_AT_COLUMN}" TIMESTAMPTZ'
)
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
            "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL")
_CHUNK = "_hub_chunk"
DEFAULT_LOAD_MEMORY = "160MB"
DEFAULT_APPEND_MEMORY = "64MB"


def default_load_threads() -> int:
    """DuckDB threads for a load: half the CPUs. A load inserts chunks while the adapter's event loop and the
    mapping keep the other cores busy; every DuckDB thread more only competes with them, and each keeps its
    own allocator cache (the REST benchmark on 2 vCPUs: 16 MB less peak RSS and no slower with one thread
    instead of two; docs/benchmarks.md)."""
    return max(1, (os.cpu_count() or 2) // 2)


#: Configuration of connections that run user SQL (models, export queries): no file system, network or
#: extension access, and no way to change that from SQL.
SANDBOX: dict[str, str | bool | int | float | list[str]] = {"enable_external_access": False,
                                                            "lock_configuration": True}


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
        self.append_memory_limit = str(self.config.pop("append_memory_limit", DEFAULT_APPEND_MEMORY))
        threads = self.config.pop("load_threads", self.config.get("threads", default_load_threads()))
        try:
            self.load_threads = int(str(threads))
        except ValueError:
            raise WarehouseError(f"{url}: load_threads must be a whole number, not {threads!r}") from None
        if self.load_threads < 1:
            raise WarehouseError(f"{url}: load_threads must be at least 1, not {self.load_threads}")
        # Another process holding the file (a listener absorbing events for a moment) is waited for, up to
        # lock_wait seconds (default $HUB_DUCKDB_LOCK_WAIT or 10); the listener itself uses 0 and backs off.
        self.lock_wait = float(str(self.config.pop("lock_wait", os.environ.get("HUB_DUCKDB_LOCK_WAIT", 10))))
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _connect(self, sandboxed: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.open(sandboxed=sandboxed)
        try:
            yield con
        finally:
            con.close()

    def open(self, *, sandboxed: bool = False) -> duckdb.DuckDBPyConnection:
        """A new connection (the caller closes it); *sandboxed*: for user SQL (:data:`SANDBOX`). While another
        process holds the file, tries again for up to ``lock_wait`` seconds."""
        deadline = time.monotonic() + self.lock_wait
        pause = 0.02
        while True:
            try:
                return duckdb.connect(self.path, config={**self.config, **SANDBOX} if sandboxed else self.config)
            except duckdb.Error as exc:
                if "lock" in str(exc).lower() and time.monotonic() + pause < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.5)
                    continue
                self._open_failed(exc, sandboxed)

    def _open_failed(self, exc: duckdb.Error, sandboxed: bool) -> NoReturn:
        text = str(exc).lower()
        hint = (" (another process is writing to it; hub assets share the hub_duckdb pool so this does "
                "not happen between them)" if "lock" in text else "")
        if "different configuration" in text:
            hint = (" (user SQL runs on a sandboxed connection, which cannot share the file with another "
                    "open connection of this process: close it first)" if sandboxed else
                    " (a sandboxed connection for user SQL is open in this process)")
        raise WarehouseError(f"cannot open DuckDB warehouse {self.path}: {exc}{hint}") from None

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep the file open in this process meanwhile (one connection, closed at the end). DuckDB shares an
        open database between the connections of a process that use the same configuration, so the short
        connections of a flow run (its input, ledger, results, ``_hub_calls``, owners) each cost microseconds
        instead of opening the file, replaying its WAL and checkpointing it on close (~50 ms each on a busy
        machine). The writer lock the caller holds keeps other processes out meanwhile anyway. A sandboxed
        connection (user SQL) cannot be opened inside: run it before."""
        con = self.open()
        try:
            yield
        finally:
            con.close()

    # --- reading -------------------------------------------------------------------------------------

    def query(self, sql: str, *, sandboxed: bool = False) -> pa.Table:
        if sandboxed:
            check_user_query(sql, f"query on {self.path}")
        with self._connect(sandboxed) as con:
            try:
                return con.sql(sql).to_arrow_table()
            except duckdb.Error as exc:
                raise WarehouseError(f"query on {self.path} failed: {exc}") from None

    def stream(self, sql: str, batch_rows: int = 65_536, *, sandboxed: bool = False) -> Iterator[pa.RecordBatch]:
        if sandboxed:
            check_user_query(sql, f"query on {self.path}")
        with self._connect(sandboxed) as con:
            try:
                reader = con.sql(sql).to_arrow_reader(batch_rows)
            except duckdb.Error as exc:
                raise WarehouseError(f"query on {self.path} failed: {exc}") from None
            yield from reader

    def read_only(self, sql: str) -> pa.Table:
        """One SELECT on a connection opened read-only, with file access off and the configuration locked
        (DuckDB can read and write files from SQL: ``read_csv('/etc/passwd')``, ``COPY ... TO``)."""
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise WarehouseError(f"query on {self.path}: {exc}") from None
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise WarehouseError(f"query on {self.path}: only one SELECT statement is allowed "
                                 f"(got {', '.join(s.type.name for s in statements) or 'none'})")
        if self.path != ":memory:" and not Path(self.path).exists():
            raise WarehouseError(f"no DuckDB warehouse at {self.path} (nothing has been loaded yet?)")
        config = {**self.config, "enable_external_access": False, "lock_configuration": True}
        try:
            con = duckdb.connect(self.path, read_only=True, config=config)
        except duckdb.Error as exc:
            raise WarehouseError(f"cannot open DuckDB warehouse {self.path} read-only: {exc}") from None
        try:
            return con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise WarehouseError(f"query on {self.path} failed: {exc}") from None
        finally:
            con.close()

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
        check_user_query(sql, f"model {name}")
        with self._connect(sandboxed=True) as con:
            try:
                con.execute("BEGIN TRANSACTION")
                con.execute(f"CREATE OR REPLACE TABLE {ident(name)} AS {sql}")
                rows = _count(con, ident(name))
                result = LoadResult(table=name, rows_loaded=rows, rows_deleted=0, table_rows=rows,
                                    columns=list(_columns(con, ident(name)).items()))
                con.execute("COMMIT")
                return result
            except duckdb.Error as exc:
                con.execute("ROLLBACK")
                raise WarehouseError(f"model {name}: SQL failed in {self.path}, the previous table is kept: "
                                     f"{exc}") from None


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    """Column name → type of *relation* (a temporary table of this connection, or a table of the
    warehouse; quoted), in order."""
    return {r[0]: r[1] for r in con.execute(f"DESCRIBE {relation}").fetchall()}


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether the warehouse (not an attached database, not a temporary table) has *table*."""
    return bool(_count_of(con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = "
                                      "current_database() AND schema_name = 'main' AND NOT temporary "
                                      "AND table_name = ?", [table])))


def _count(con: duckdb.DuckDBPyConnection, relation: str) -> int:
    return _count_of(con.execute(f"SELECT count(*) FROM {relation}"))


class _DuckDBLoad(StreamingLoad[DuckDBWarehouse, duckdb.DuckDBPyConnection, duckdb.DuckDBPyConnection]):
    """One load: an open connection and transaction, written chunk by chunk."""

    _driver_errors = (duckdb.Error,)
    _errors = (duckdb.Error, WarehouseError)
    _memory = ""  # the memory limit the load's connection runs with (set by the load without a parent)

    # --- connection and catalog ----------------------------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        return self.warehouse.open()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        return self._live()

    def _begin(self, con: duckdb.DuckDBPyConnection) -> None:
        if self._parent is None:
            wh = self.warehouse
            # appending loads need no working memory beyond a chunk (see the module notes); merges do, at commit
            self._memory = wh.append_memory_limit if self.request.mode in ("replace_partition", "replace") \
                else wh.load_memory_limit
            con.execute(f"SET memory_limit = {literal(self._memory)}")
            con.execute(f"SET threads = {self.warehouse.load_threads:d}")
            con.execute("BEGIN TRANSACTION")

    def _relation(self, table: str) -> str:
        return ident(table)

    def _table_exists(self, con: duckdb.DuckDBPyConnection, table: str) -> bool:
        return _exists(con, table)

    def _describe(self, con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
        return _columns(con, relation)

    def _size(self, con: duckdb.DuckDBPyConnection, relation: str) -> int:
        return _count(con, relation)

    def _rowcount(self, con: duckdb.DuckDBPyConnection, sql: str) -> int:
        return _count_of(con.execute(sql))

    def _commit_transaction(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("COMMIT")

    def _rollback_transaction(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("ROLLBACK")

    def _disconnect(self, con: duckdb.DuckDBPyConnection) -> None:
        con.close()

    def _location(self) -> str:
        return self.warehouse.path

    # --- writing -------------------------------------------------------------------------------------

    def _cover(self, con: duckdb.DuckDBPyConnection, keys: pa.RecordBatch) -> None:
        rel = con.from_arrow(keys)
        if self._keys is None:
            table = ident(f"_hub_keys_{self.request.table}")
            rel.query(_CHUNK, f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM {_CHUNK}")
            self._keys = table
        else:
            rel.query(_CHUNK, f"INSERT INTO {self._keys} BY NAME SELECT * FROM {_CHUNK}")

    def _insert(self, con: duckdb.DuckDBPyConnection, chunk: pa.Table) -> None:
        target, have = self._prepare_target(con)
        # The chunk is queried as a relation, not registered: DuckDB keeps a registered Arrow table alive
        # until the transaction ends, which made a long load hold every chunk in memory.
        self._insert_relation(con, con.from_arrow(typed_columns(chunk, have, self._untyped)), target, have,
                              with_meta=False)

    def _insert_relation(self, con: duckdb.DuckDBPyConnection, rel: duckdb.DuckDBPyRelation, target: str,
                         have: dict[str, str], *, with_meta: bool) -> int:
        """Insert *rel* into *target* (created by the first rows); *with_meta*: *rel* has the hub's columns."""
        req = self.request
        meta = "" if with_meta else (
            f", CAST({literal(req.partition)} AS VARCHAR) AS {ident(PARTITION_COLUMN)}, "
            f"CAST({literal(req.run_id)} AS VARCHAR) AS {ident(RUN_COLUMN)}, now() AS {ident(LOADED_AT_COLUMN)}")
        if not self._target_exists:
            kind = "TEMP TABLE" if self._staging else "TABLE"
            rel.query(_CHUNK, f"CREATE OR REPLACE {kind} {target} AS SELECT *{meta} FROM {_CHUNK}")
            self._target_exists = True
            return _count(con, target)
        described = rel.query(_CHUNK, f"DESCRIBE SELECT * FROM {_CHUNK}")
        assert described is not None
        incoming = [(r[0], r[1]) for r in described.fetchall()]
        self._reconcile(con, target, have, incoming, fresh=self._fresh, untyped=self._untyped)
        inserted = rel.query(_CHUNK, f"INSERT INTO {target} BY NAME SELECT *{meta} FROM {_CHUNK}")
        return _count_of(inserted) if inserted is not None else 0  # type: ignore[arg-type]

    # --- the hub's own SQL in the load (hub/files_csv.py) ----------------------------------------------

    native_sql = "duckdb"

    def _working_memory(self, con: duckdb.DuckDBPyConnection) -> None:
        """The hub's own SQL reads files, aggregates and sorts in the load: from now on ``load_memory_limit``."""
        root = self
        while root._parent is not None:
            root = root._parent
        if root._memory != self.warehouse.load_memory_limit:
            con.execute(f"SET memory_limit = {literal(self.warehouse.load_memory_limit)}")
            root._memory = self.warehouse.load_memory_limit

    def insert_query(self, select: str) -> int:
        self._flush()
        try:
            con = self._cursor()
            self._working_memory(con)
            target, have = self._prepare_target(con)
            inserted = self._insert_relation(con, con.sql(select), target, have, with_meta=True)
        except self._errors as exc:
            self._fail(exc)
        self.rows += inserted
        return inserted

    def sql(self, statement: str, table: pa.Table | None = None) -> pa.Table:
        try:
            con = self._cursor()
            self._working_memory(con)
            rel = con.sql(statement) if table is None else con.from_arrow(table).query("_hub_arrow", statement)
            return rel.to_arrow_table() if rel is not None else pa.table({})
        except self._errors as exc:
            self._fail(exc)

    @property
    def target(self) -> str:
        if self._target is None:
            raise WarehouseError(f"load of {self.request.table}: no rows inserted yet")
        return self._target

    def _start_target(self, con: duckdb.DuckDBPyConnection) -> None:
        req = self.request
        if req.mode in ("merge", "replace_keys") and self._existed:
            # Upserting into an existing table: collect the rows aside, swap them in at commit.
            self._target, self._target_exists, self._fresh = ident(f"_hub_staged_{req.table}"), False, True
            self._staging = True
        elif req.mode == "replace" and self._existed:
            self._deleted = _count(con, self._table)
            self._target, self._target_exists, self._fresh = self._table, False, True  # recreated by the 1st chunk
        else:
            self._target, self._target_exists, self._fresh = self._table, self._existed, not self._existed

    def _set_type(self, con: duckdb.DuckDBPyConnection, relation: str, name: str, dtype: str) -> None:
        con.execute(f"ALTER TABLE {relation} ALTER {ident(name)} TYPE {dtype}")

    def _supertype(self, con: duckdb.DuckDBPyConnection, current: str, dtype: str) -> str:
        rows = con.execute(f"SELECT typeof(x) FROM (SELECT NULL::{current} AS x UNION ALL "
                           f"SELECT NULL::{dtype}) LIMIT 1").fetchall()
        return str(rows[0][0]) if rows else "VARCHAR"

    def _widens(self, current: str, wider: str) -> bool:
        return _widens(current, wider)

    # --- finishing -----------------------------------------------------------------------------------

    def _merge(self, con: duckdb.DuckDBPyConnection) -> int:
        req = self.request
        assert self._target is not None
        keys = ", ".join(ident(k) for k in req.primary_key)
        target = self._target
        columns = self._staged_columns(con)
        self._check_keys(columns)
        # Within one load the last row of a key wins: rows are appended in extraction order. Counting
        # distinct keys first is a cheap hash aggregate; the window only runs when there are duplicates.
        duplicates = _count_of(con.execute(f"SELECT count(*) - count(DISTINCT ({keys})) FROM {target}"))
        if duplicates:
            _count_of(con.execute(
                f"DELETE FROM {target} WHERE rowid IN (SELECT rowid FROM (SELECT rowid, row_number() OVER "
                f"(PARTITION BY {keys} ORDER BY rowid DESC) AS n FROM {target}) WHERE n > 1)"))
        if not self._staging:
            return self.rows - duplicates
        self._reconcile_staged(con, columns)
        self._deleted = self._delete_keys(con, target)
        loaded = self._move(con, columns, target)
        con.execute(f"DROP TABLE {target}")
        return loaded

    def _delete_keys(self, con: duckdb.DuckDBPyConnection, source: str) -> int:
        keys = ", ".join(ident(k) for k in self.request.primary_key)
        return _count_of(con.execute(f"DELETE FROM {self._table} WHERE ({keys}) IN (SELECT ({keys}) FROM {source})"))

    def _move(self, con: duckdb.DuckDBPyConnection, staged: dict[str, str], source: str) -> int:
        return _count_of(con.execute(f"INSERT INTO {self._table} BY NAME SELECT * FROM {source}"))

    def _quarantine_table(self, con: duckdb.DuckDBPyConnection, name: str) -> str:
        qtable = ident(name)
        con.execute(f"CREATE TABLE IF NOT EXISTS {qtable} ({_QUARANTINE_COLUMNS})")
        return qtable

    def _insert_quarantine(self, con: duckdb.DuckDBPyConnection, qtable: str, rows: list[dict[str, Any]]) -> None:
        req = self.request
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
