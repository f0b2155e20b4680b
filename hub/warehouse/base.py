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

:class:`StreamingLoad` is the part of a load every backend shares (buffering batches into chunks, rejected
rows, attached loads, covered keys, the last step of each mode, the quarantine table, schema evolution,
rollback); a backend adds its SQL through the hooks it declares.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, Literal, NoReturn, Protocol, Self, TypeVar

import pyarrow as pa

from hub.errors import WarehouseError

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

    #: The SQL dialect of :meth:`insert_query` and :meth:`sql` when the backend can run the hub's own SQL inside
    #: the load's transaction (``"duckdb"``), else None: callers then stream Arrow batches.
    native_sql: ClassVar[str | None] = None

    def insert_query(self, select: str) -> int:
        """Insert the rows of *select* (SQL the hub built, never a spec author's: it runs with file access) into
        the load's target, in this transaction, with the same schema evolution as :meth:`write`; *select*
        gives the data columns and the hub's three (partition, run id, loaded at). Returns the rows inserted
        (added to :attr:`rows`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot run SQL in its load")

    def sql(self, statement: str, table: pa.Table | None = None) -> pa.Table:
        """Run the hub's own *statement* in this load's transaction (``_hub_arrow`` names *table* in it);
        its result as Arrow (a DELETE or UPDATE: the number of rows changed)."""
        raise NotImplementedError(f"{type(self).__name__} cannot run SQL in its load")

    @property
    def target(self) -> str:
        """The relation the rows of this load went to (quoted), once the first rows arrived."""
        raise NotImplementedError(f"{type(self).__name__} has no SQL target")

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
        """Replace table *name* with the result of *sql*, atomically (the old table stays on failure). The SQL
        is a spec author's: it runs sandboxed (see :func:`check_user_query` and each backend)."""

    @abstractmethod
    def query(self, sql: str, *, sandboxed: bool = False) -> pa.Table:
        """Run a read query and return the result as an Arrow table; *sandboxed* for SQL a spec author wrote
        (as for models: no files, no settings, no server functions)."""

    @abstractmethod
    def stream(self, sql: str, batch_rows: int = 65_536, *, sandboxed: bool = False) -> Iterator[pa.RecordBatch]:
        """Run a read query and stream the result in batches (bounded memory); *sandboxed* as for query."""

    @abstractmethod
    def read_only(self, sql: str) -> pa.Table:
        """Run *sql*, one query, on a read-only connection: for SQL a person typed (``hub show --where``),
        which may read but never change anything. Anything but exactly one query is refused."""

    @abstractmethod
    def tables(self, internal: bool = False) -> list[str]:
        """Names of the tables the hub loaded (quarantine tables included), sorted; with *internal*, also
        the hub's own bookkeeping tables (``_hub_*``, e.g. the file ledger)."""

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Inside, the warehouse may stay open in this process so that many short connections in a row (a flow
        run's) are cheap; only for a process holding the writer lock (:mod:`hub.warehouse.lock`). Nothing to
        hold for a server database: its connections are cheap already."""
        yield


# --- what the backends' loads share ----------------------------------------------------------------------


def check_user_query(sql: str, where: str) -> None:
    """Raise :class:`WarehouseError` unless *sql* (DuckDB's dialect) is exactly one query: SQL a spec author
    wrote (a model, an export) is run as one SELECT, so it cannot carry a ``SET``, ``ATTACH``, ``COPY`` or
    ``INSTALL`` of its own, whatever the spec loader let through."""
    import sqlglot  # a model or an export is being run: sqlglot is worth loading
    from sqlglot import exp

    try:
        trees = [t for t in sqlglot.parse(sql, read="duckdb") if t is not None]
    except sqlglot.errors.SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WarehouseError(f"{where}: the SQL does not parse ({first}); it was not run") from None
    if len(trees) != 1 or not isinstance(trees[0], exp.Query):
        kinds = ", ".join(t.key.upper() for t in trees) or "nothing"
        raise WarehouseError(f"{where}: expected exactly one SELECT (or WITH ... SELECT) statement, found "
                             f"{kinds}; it was not run")


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str | None) -> str:
    """A SQL string literal (or NULL); PostgreSQL has standard_conforming_strings on since 9.1."""
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def typed_columns(chunk: pa.Table, have: Container[str], untyped: set[str]) -> pa.Table:
    """*chunk* without type-less columns. A column that is NULL in every row carries no type: it is left out
    when the target already has it (it loads as NULL), otherwise created as text and added to *untyped*
    (its first real values decide its type)."""
    if not any(pa.types.is_null(f.type) for f in chunk.schema):
        return chunk
    keep, arrays = [], []
    for field, column in zip(chunk.schema, chunk.columns, strict=True):
        if pa.types.is_null(field.type):
            if field.name in have:
                continue
            untyped.add(field.name)
            column = column.cast(pa.string())
        keep.append(field.name)
        arrays.append(column)
    return pa.Table.from_arrays(arrays, names=keep)


class Cursor(Protocol):
    """What the shared load code runs statements on (DuckDB: its connection; PostgreSQL: a cursor)."""

    def execute(self, query: str, /) -> Any: ...


WarehouseT = TypeVar("WarehouseT", bound=Warehouse)  # the backend's warehouse
ConnectionT = TypeVar("ConnectionT")  # the backend's connection
CursorT = TypeVar("CursorT", bound=Cursor)  # the backend's cursor


class StreamingLoad(Load, Generic[WarehouseT, ConnectionT, CursorT]):
    """One load: an open connection and transaction, written chunk by chunk.

    Batches are buffered into chunks of ``chunk_rows`` rows, each inserted (:meth:`_insert`) into the
    target the backend picks for the mode (:meth:`_start_target`): the table, or a table set aside that the
    commit moves or swaps in. Relations (``_table``, ``_target``, ``_keys``) are SQL text as the backend
    names them (quoted, and qualified where it needs to be)."""

    #: the driver's exceptions: a rollback ignores them (the transaction may already have ended)
    _driver_errors: ClassVar[tuple[type[Exception], ...]]
    #: the exceptions of a failing step, which roll the load back and are raised as a WarehouseError
    _errors: ClassVar[tuple[type[Exception], ...]]

    def __init__(self, warehouse: WarehouseT, request: LoadRequest, chunk_rows: int = 64 * 1024,
                 parent: Self | None = None) -> None:
        self.warehouse, self.request, self.chunk_rows = warehouse, request, chunk_rows
        self._parent = parent  # an attached load shares its parent's connection and transaction
        self.rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._rejected: list[dict[str, Any]] = []
        self._untyped: set[str] = set()  # columns this load created while they held only NULLs
        self._deleted = 0
        self._table = self._relation(request.table)
        self._target: str | None = None  # where chunks go: the table, a staging table or a table to swap in
        self._target_exists = False
        self._staging = False  # the target is a staging table whose rows the commit moves to the table
        self._fresh = False  # the target was created by this load (its column types may still change)
        self._keys: str | None = None  # replace_keys: the temporary table of covered keys
        self._conn: ConnectionT | None = parent._live() if parent else self._connect()
        try:
            cur = self._cursor()
            self._begin(cur)
            self._existed = self._table_exists(cur, request.table)
            if self._existed and request.mode == "replace_partition":
                self._deleted = self._rowcount(cur, f"DELETE FROM {self._table} WHERE {ident(PARTITION_COLUMN)} = "
                                                    f"{literal(request.partition)}")
        except self._errors as exc:
            self._fail(exc)

    # --- hooks: connection and catalog ---------------------------------------------------------------

    @abstractmethod
    def _connect(self) -> ConnectionT:
        """A new connection for a load that has no parent (errors are raised as they are)."""

    @abstractmethod
    def _cursor(self) -> CursorT:
        """What to run this load's statements on."""

    @abstractmethod
    def _begin(self, cur: CursorT) -> None:
        """Start this load: the load without a parent opens the transaction; every load claims its table."""

    @abstractmethod
    def _relation(self, table: str) -> str:
        """*table* of the warehouse as SQL names it."""

    @abstractmethod
    def _table_exists(self, cur: CursorT, table: str) -> bool:
        """Whether the warehouse has *table* (a name, not a relation)."""

    @abstractmethod
    def _describe(self, cur: CursorT, relation: str) -> dict[str, str]:
        """Column name → type of *relation*, in order."""

    @abstractmethod
    def _size(self, cur: CursorT, relation: str) -> int:
        """The number of rows of *relation*."""

    @abstractmethod
    def _rowcount(self, cur: CursorT, sql: str) -> int:
        """Run *sql* (a DELETE or INSERT); the number of rows it changed."""

    @abstractmethod
    def _commit_transaction(self, conn: ConnectionT) -> None:
        """Commit the transaction."""

    @abstractmethod
    def _rollback_transaction(self, conn: ConnectionT) -> None:
        """Roll the transaction back."""

    @abstractmethod
    def _disconnect(self, conn: ConnectionT) -> None:
        """Close the connection of a load without a parent."""

    @abstractmethod
    def _location(self) -> str:
        """The warehouse, for messages."""

    def _message(self, exc: Exception) -> str:
        """The text of *exc* for a message."""
        return str(exc)

    # --- hooks: writing ------------------------------------------------------------------------------

    @abstractmethod
    def _start_target(self, cur: CursorT) -> None:
        """Pick the target of the chunks (``_target``, ``_target_exists``, ``_staging``, ``_fresh``)."""

    @abstractmethod
    def _insert(self, cur: CursorT, chunk: pa.Table) -> None:
        """Insert *chunk* into the target (starting with :meth:`_prepare_target`)."""

    @abstractmethod
    def _cover(self, cur: CursorT, keys: pa.RecordBatch) -> None:
        """Add *keys* to the temporary table ``_keys`` (created by the first call)."""

    @abstractmethod
    def _set_type(self, cur: CursorT, relation: str, name: str, dtype: str) -> None:
        """Change the type of column *name* of *relation* to *dtype*."""

    @abstractmethod
    def _supertype(self, cur: CursorT, current: str, dtype: str) -> str:
        """The narrowest type holding the values of both."""

    @abstractmethod
    def _widens(self, current: str, wider: str) -> bool:
        """True when changing a column from *current* to *wider* keeps every value and its meaning."""

    # --- hooks: finishing ----------------------------------------------------------------------------

    @abstractmethod
    def _merge(self, cur: CursorT) -> int:
        """``merge``: upsert the target's rows (the last row of a key wins); the number of rows loaded."""

    @abstractmethod
    def _delete_keys(self, cur: CursorT, source: str) -> int:
        """Delete the rows of the table whose key is in *source*; the number deleted."""

    @abstractmethod
    def _move(self, cur: CursorT, staged: dict[str, str], source: str) -> int:
        """Insert the *staged* columns of *source* into the table; the number of rows inserted."""

    def _staged_columns(self, cur: CursorT) -> dict[str, str]:
        """The columns of the staging table that go to the table."""
        assert self._target is not None
        return self._describe(cur, self._target)

    def _swap_in(self, cur: CursorT) -> None:
        """The last step of ``replace`` and ``replace_partition`` (a table built aside replaces the old one)."""

    @abstractmethod
    def _quarantine_table(self, cur: CursorT, name: str) -> str:
        """The quarantine table *name*, created when missing."""

    @abstractmethod
    def _insert_quarantine(self, cur: CursorT, qtable: str, rows: list[dict[str, Any]]) -> None:
        """Insert the quarantined *rows* into *qtable*."""

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
        return type(self)(self.warehouse, request, self.chunk_rows, parent=self)

    def cover(self, keys: pa.RecordBatch) -> None:
        if self.request.mode != "replace_keys" or keys.num_rows == 0:
            return
        try:
            self._cover(self._cursor(), keys)
        except self._errors as exc:
            self._fail(exc)

    def _flush(self) -> None:
        if not self._pending:
            return
        chunk = pa.Table.from_batches(self._pending)
        self._pending, self._pending_rows = [], 0
        try:
            self._insert(self._cursor(), chunk)
        except self._errors as exc:
            self._fail(exc)

    def _prepare_target(self, cur: CursorT) -> tuple[str, dict[str, str]]:
        """The target (picked by the first chunk), and its columns when it exists."""
        if self._target is None:
            self._start_target(cur)
        assert self._target is not None
        return self._target, self._describe(cur, self._target) if self._target_exists else {}

    def _reconcile(self, cur: CursorT, relation: str, have: Mapping[str, str], incoming: list[tuple[str, str]], *,
                   fresh: bool, untyped: set[str]) -> None:
        """Make *relation* able to take columns of the *incoming* types (see the module notes).

        *untyped*: columns of *relation* that this load created while every value was NULL; the first
        real values decide their type (and remove them from the set).
        """
        for name, dtype in incoming:
            current = have.get(name)
            if current is None:
                cur.execute(f"ALTER TABLE {relation} ADD COLUMN {ident(name)} {dtype}")
                continue
            if name in untyped:
                untyped.discard(name)
                if current != dtype:
                    self._set_type(cur, relation, name, dtype)
                continue
            if current == dtype:
                continue
            wider = self._supertype(cur, current, dtype)
            if wider == current:
                continue  # the new values fit the column as it is (e.g. integers into a floating-point column)
            if fresh or self._widens(current, wider):
                self._set_type(cur, relation, name, wider)
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
        req = self.request
        try:
            cur = self._cursor()
            loaded = self._finish(cur)
            quarantined = self._quarantine(cur)
            exists = self._table_exists(cur, req.table)
            result = LoadResult(table=req.table, rows_loaded=loaded, rows_deleted=self._deleted,
                                table_rows=self._size(cur, self._table) if exists else 0,
                                columns=list(self._describe(cur, self._table).items()) if exists else [],
                                rows_quarantined=quarantined)
            if self._parent is None:
                self._commit_transaction(self._live())
        except self._errors as exc:
            self._fail(exc)
        self._close()
        return result

    def _finish(self, cur: CursorT) -> int:
        """Apply the mode's last step; return the number of rows the load put in the table."""
        req = self.request
        if req.mode == "replace_keys":  # covered keys lose their rows even when no row arrived
            return self._replace_keys(cur)
        if self._target is None:  # nothing arrived: an empty partition or reference set is still a fact
            if self._existed and req.mode == "replace":
                self._deleted = self._rowcount(cur, f"DELETE FROM {self._table}")
            return 0
        if req.mode == "merge":
            return self._merge(cur)
        self._swap_in(cur)
        return self.rows

    def _replace_keys(self, cur: CursorT) -> int:
        """Delete every row whose key was covered by this load, then insert the new rows (1:N children:
        a parent re-loaded with fewer children loses the others)."""
        if self._keys is not None:
            if self._existed:
                self._deleted = self._delete_keys(cur, self._keys)
            cur.execute(f"DROP TABLE {self._keys}")
            self._keys = None
        if not self._staging:
            return self.rows
        assert self._target is not None
        staged = self._staged_columns(cur)
        self._reconcile_staged(cur, staged)
        loaded = self._move(cur, staged, self._target)
        cur.execute(f"DROP TABLE {self._target}")
        return loaded

    def _check_keys(self, columns: Mapping[str, str]) -> None:
        """Refuse a merge whose rows lack a primary key column."""
        missing = [k for k in self.request.primary_key if k not in columns]
        if missing:
            raise WarehouseError(f"primary key column(s) {', '.join(missing)} are not in the loaded rows "
                                 f"(columns: {', '.join(c for c in columns if not c.startswith('_hub_'))})")

    def _reconcile_staged(self, cur: CursorT, staged: Mapping[str, str]) -> None:
        """Make the table able to take the *staged* columns."""
        have = self._describe(cur, self._table)
        # Staged columns that are still all-NULL carry no type: the table's own type stands.
        incoming = [(n, t) for n, t in staged.items() if not (n in self._untyped and n in have)]
        self._reconcile(cur, self._table, have, incoming, fresh=False, untyped=set())

    def _quarantine(self, cur: CursorT) -> int:
        """Replace this partition's (or this unpartitioned table's) quarantined rows with the new ones."""
        req, rows = self.request, self._rejected
        name = req.table + QUARANTINE_SUFFIX
        if not rows and not self._table_exists(cur, name):
            return 0
        qtable = self._quarantine_table(cur, name)
        partition = ident(PARTITION_COLUMN)
        cur.execute(f"DELETE FROM {qtable} WHERE {partition} IS NULL" if req.partition is None else
                    f"DELETE FROM {qtable} WHERE {partition} = {literal(req.partition)}")
        if rows:
            self._insert_quarantine(cur, qtable, rows)
        return len(rows)

    def rollback(self) -> None:
        if self._conn is None:
            return
        if self._parent is not None:  # the whole shared transaction goes
            self._close()
            self._parent.rollback()
            return
        with contextlib.suppress(*self._driver_errors):  # the transaction may already have ended with the error
            self._rollback_transaction(self._conn)
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            if self._parent is None:
                self._disconnect(self._conn)
            self._conn = None

    def _live(self) -> ConnectionT:
        if self._conn is None:
            raise WarehouseError(f"load of {self.request.table} is already closed")
        return self._conn

    def _fail(self, exc: Exception) -> NoReturn:
        self.rollback()
        where = f" partition {self.request.partition}" if self.request.partition else ""
        raise WarehouseError(f"loading {self.request.table} into {self._location()}{where} failed, nothing "
                             f"was changed: {self._message(exc)}") from None
