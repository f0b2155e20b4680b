"""Reading a table or a query into Arrow record batches, incrementally when asked.

Rows are streamed with a server-side cursor (PostgreSQL: ADBC, which reads ``COPY ... BINARY`` in C++
straight into Arrow; MySQL/MariaDB: an unbuffered cursor; SQLite: the lazy cursor), one batch of
``batch_rows`` at a time, so memory stays bounded whatever the table's size. The reading runs in a
background thread a batch or two ahead (:mod:`hub.runtime.prefetch`), overlapping the warehouse's write.

Incremental sources read ``cursor >= high-water mark - lookback``. The new high-water mark is the
largest cursor value actually read (not the clock), so rows are never skipped because of clock skew
between the hub and the database; the hub stores it in the same warehouse transaction as the rows.
Reading from the mark inclusively, and re-reading the lookback window, re-delivers some rows: the hub
merges on the primary key, so they replace themselves.

A connection that breaks before the first batch is retried here. One that breaks after batches were
handed over raises :class:`~hub.errors.SourceInterrupted`: the load rolls back and starts again.

A query never outlives the hub's interest in it: the system's ``statement_timeout`` bounds it on the
server, and when the process is told to stop (SIGTERM, Ctrl-C; :mod:`hub.runtime.interrupts`) or the
consumer of the batches fails, the running statement is cancelled on the server (libpq's cancel request
for psycopg and ADBC, ``KILL QUERY`` from a second connection on MySQL/MariaDB, an interrupt on SQLite)
before the process goes on.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from adapters.sql._engine import CLIENT_CHECK_PG, adbc_uri, canceller, engine, shown, source_url, timed_out, transient
from adapters.sql._guard import check_read_only
from adapters.sql._types import adbc_schema, arrow_type, column_array, infer_type, is_char, normalize_adbc
from adapters.sql.config import SqlSourceConfig, SqlSystemConfig
from hub.errors import AdapterError, SourceInterrupted, TransportError
from hub.runtime import tracing
from hub.runtime.breaker import breaker_for
from hub.runtime.duration import seconds
from hub.runtime.interrupts import cancel_on_interrupt
from hub.runtime.prefetch import prefetch
from hub.runtime.ratelimit import limiter_for, system_key
from hub.runtime.retry import RetryPolicy
from hub.runtime.secrets import mask

#: Dialects that sort NULLs last in ascending order (checkpointed reads want them first).
_NULLS_LAST = frozenset({"postgresql", "oracle"})

#: Kinds of high-water marks, by the cursor column's Arrow type.
_KINDS = {"timestamp": pa.types.is_timestamp, "date": pa.types.is_date, "int": pa.types.is_integer,
          "decimal": pa.types.is_decimal, "float": pa.types.is_floating, "string": pa.types.is_string}


def mark_kind(dtype: pa.DataType) -> str:
    """How a high-water mark of a cursor of *dtype* is stored and compared."""
    for kind, test in _KINDS.items():
        if test(dtype):
            return kind
    raise AdapterError(f"a column of type {dtype} cannot be an incremental cursor (use a timestamp, a date or "
                       "an increasing number)")


def parse_mark(value: str, kind: str) -> Any:
    if kind == "timestamp":
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "int":
        return int(value)
    if kind in ("decimal", "float"):
        import decimal

        return decimal.Decimal(value)
    return value


def format_mark(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else str(value)


class SqlSource:
    """One source of a SQL system. ``batches()`` may be called again after :class:`SourceInterrupted`."""

    def __init__(self, system: SqlSystemConfig, source: SqlSourceConfig, *, name: str,
                 high_water_mark: str | None = None, full_refresh: bool = False,
                 batch_rows: int | None = None, system_name: str | None = None,
                 state_dir: Path | None = None) -> None:
        self.system, self.source, self.name = system, source, name
        self.url = source_url(system)
        self.where = f"sources.{name}"
        self.dialect = self.url.get_backend_name()
        self.batch_rows = batch_rows or source.batch_rows
        self.policy = RetryPolicy.from_config(system.retries)
        self.stored_mark = None if full_refresh else high_water_mark
        self.full_refresh = full_refresh
        self.high_water_mark: str | None = high_water_mark  # after batches(): the new mark
        self.cursor_kind: str | None = None
        self.lower_bound: Any = None
        self.rows = 0
        self.retries = 0
        self.restarts = 0
        self.fast_path = system.fast_path and self.dialect == "postgresql" and _adbc_available()
        if source.query is not None:
            check_read_only(source.query, self.dialect, where=f"{self.where}.query")
        self._lookback: str | int | None = source.incremental.lookback if source.incremental else None
        self._ordered = False  # read in cursor order (checkpointed, see resumable_batches)
        self._resume_from: tuple[str, str] | None = None  # (mark, kind) a checkpoint continues from
        # Each query (attempt) is one request for the system's shared rate limit and circuit breaker.
        key = system_key(system_name, self.url.render_as_string(hide_password=True))
        self.limiter = limiter_for(key, system.rate_limit, state_dir)
        self.breaker = breaker_for(key, system.circuit_breaker, state_dir)
        self.system_label = system_name or self.dialect  # spans and _hub_calls
        self._cancel_lock = threading.Lock()
        self._cancel_query: Callable[[], None] | None = None  # set by the reading thread while a query runs
        self._cancel = self._cancel_running  # one object: registered with hub.runtime.interrupts by identity

    # --- public ----------------------------------------------------------------------------------------

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows, as record batches of one schema; the query (with its retries) is one traced call
        (:mod:`hub.runtime.tracing`) whose span is never current across a ``yield``."""
        what = self.source.table or "query"
        call = tracing.start_call(self.system_label, "query", f"{shown(self.url)} {what}", protocol="sql",
                                  attributes={"db.system.name": self.dialect, "db.collection.name": self.source.table})
        before, nbytes = self.retries, 0
        try:
            for batch in self._interruptible_batches():
                nbytes += batch.nbytes
                yield batch
        except GeneratorExit:
            call.end(cancelled=True)
            raise
        except BaseException as exc:
            call.attempts, call.rows, call.bytes = 1 + self.retries - before, self.rows, nbytes
            call.end(exc)
            raise
        call.attempts, call.rows, call.bytes = 1 + self.retries - before, self.rows, nbytes
        call.end()

    def _interruptible_batches(self) -> Iterator[pa.RecordBatch]:
        """The rows; SIGTERM / SIGINT meanwhile cancel the running query on the server first."""
        with cancel_on_interrupt(self._cancel):
            yield from self._breaker_batches()

    def _cancel_running(self) -> None:
        """Cancel the statement the reading thread waits on, if any (from any thread)."""
        with self._cancel_lock:
            cancel = self._cancel_query
        if cancel is not None:
            cancel()

    def _running(self, cancel: Callable[[], None] | None) -> None:
        with self._cancel_lock:
            self._cancel_query = cancel

    def _breaker_batches(self) -> Iterator[pa.RecordBatch]:
        """The rows, as record batches of one schema. Retries a broken connection (see the module notes);
        through the system's circuit breaker when it has one (a connection lost for good is a failure)."""
        if self.breaker is None:
            yield from self._batches()
            return
        self.breaker.before_call()
        try:
            yield from self._batches()
        except (TransportError, SourceInterrupted):
            self.breaker.failure("connection lost")
            raise
        except AdapterError:
            self.breaker.success()  # the database answered (with an error)
            raise
        self.breaker.success()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        tries = 0
        handed = False
        self.rows = 0
        best: Any = None
        while True:
            tries += 1
            if self.limiter is not None:
                self.limiter.acquire()
            try:
                for batch in prefetch(self._extract(), name=f"hub-sql-{self.name}", cancel=self._cancel):
                    if batch.num_rows == 0:
                        continue
                    best = self._track(batch, best)
                    handed = True
                    self.rows += batch.num_rows
                    yield batch
                break
            except _ERRORS as exc:
                if not transient(exc):
                    hint = (f" (stopped by the database at the system's statement_timeout of "
                            f"{self.system.statement_timeout}; raise it on the sql system if the query must run "
                            "longer)") if timed_out(exc) else ""
                    raise AdapterError(f"{self.where}: {shown(self.url)}: {_reason(exc)}{hint}") from None
                if handed:
                    self.restarts += 1
                    raise SourceInterrupted(
                        f"{self.where}: the connection to {shown(self.url)} broke after {self.rows:,} rows "
                        f"({_reason(exc)}); the load is rolled back and starts again",
                        max_restarts=self.policy.max_retries, backoff=self.policy.backoff,
                        max_backoff=self.policy.max_backoff) from None
                if tries > self.policy.max_retries:
                    raise TransportError(f"{self.where}: {shown(self.url)}: {_reason(exc)} (gave up after {tries} "
                                         "attempts)") from None
                self.retries += 1
                self.policy.sleep(tries)
        if best is not None:
            self.high_water_mark = format_mark(best)

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": shown(self.url), "rows": self.rows,
                               "reader": "adbc (COPY binary)" if self.fast_path else f"sqlalchemy ({self.dialect})"}
        if self.source.incremental:
            out["cursor"] = self.source.incremental.cursor
            out["read_from"] = "(everything)" if self.lower_bound is None else format_mark(self.lower_bound)
            out["high_water_mark"] = self.high_water_mark or "(none)"
            if self.full_refresh:
                out["full_refresh"] = True
        if self.retries or self.restarts:
            out["retries"] = self.retries + self.restarts
        if self.limiter is not None:
            out["rate_limit_wait_s"] = round(self.limiter.waited, 3)
        if self.breaker is not None:
            out["circuit"] = self.breaker.details()
        return out

    # --- checkpoints (hub.runtime.checkpoint) ------------------------------------------------------------

    def resume_blocker(self, window_closed: bool) -> str | None:
        """Why this source cannot resume from a checkpoint (None: it can). Only incremental sources have a
        position: read in cursor order, the last spooled cursor value is where the rest begins."""
        if self.source.incremental is None:
            return "a SQL source without an incremental cursor has no position to resume from: it is read again"
        if self.dialect == "sqlite" and self.source.query is not None:
            return "SQLite compares timestamps as text: a query source is not read in a resumable order"
        return None

    def resumable_batches(self, resume: dict[str, Any] | None) -> Iterator[tuple[pa.RecordBatch,
                                                                                 dict[str, Any] | None]]:
        """The rows in cursor order (NULLs first), each batch with the token ``cursor >= <the largest value so
        far>``. A resumed read starts there, inclusive: rows at the boundary are read again and merged on the
        primary key (incremental sources always have one), so nothing is skipped and nothing duplicated."""
        inc = self.source.incremental
        assert inc is not None, "resume_blocker refuses sources without an incremental cursor"
        self._ordered = True
        if resume is not None:
            self._resume_from = (str(resume["value"]), str(resume["mark_kind"]))
        top: Any = None
        for batch in self.batches():
            high = pc.max(batch.column(inc.cursor)).as_py()
            if high is not None and (top is None or high > top):
                top = high
            yield batch, None if top is None else {
                "kind": "cursor", "value": format_mark(top), "mark_kind": self.cursor_kind,
                "at": f"{inc.cursor} >= {format_mark(top)}"}
        if top is None and resume is not None:  # nothing after the spooled rows: their largest value is the mark
            self.high_water_mark = str(resume["value"])

    # --- building the statement ------------------------------------------------------------------------

    def _plan(self, conn: sa.Connection) -> tuple[Any, dict[str, Any], dict[str, pa.DataType] | None,
                                                 set[str]]:
        """(statement, parameters, column types when known from reflection, CHAR columns to trim)."""
        src = self.source
        tz = self.system.timezone
        if src.table is not None:
            try:
                table = sa.Table(src.table, sa.MetaData(), schema=src.schema_, autoload_with=conn)
            except sa.exc.NoSuchTableError:
                names = sa.inspect(conn).get_table_names(schema=src.schema_) + \
                    sa.inspect(conn).get_view_names(schema=src.schema_)
                raise AdapterError(f"{self.where}.table: no table or view '{src.table}' in {shown(self.url)} "
                                   f"(found: {', '.join(sorted(names)[:30]) or 'none'})") from None
            columns = list(table.columns)
            if src.select is not None:
                missing = [c for c in src.select if c not in table.columns]
                if missing:
                    raise AdapterError(f"{self.where}.select: no column {', '.join(missing)} in {src.table} "
                                       f"(columns: {', '.join(table.columns.keys())})")
                columns = [table.columns[c] for c in src.select]
            types = {c.name: arrow_type(c.type, timezone=tz, dialect=self.dialect) for c in columns}
            trim = {c.name for c in columns if src.trim_char and is_char(c.type)}
            stmt: Any = sa.select(*columns)
            params: dict[str, Any] = {}
            if src.incremental:
                cursor = src.incremental.cursor
                if cursor not in table.columns:
                    raise AdapterError(f"{self.where}.incremental.cursor: no column {cursor} in {src.table} "
                                       f"(columns: {', '.join(table.columns.keys())})")
                self.cursor_kind = mark_kind(arrow_type(table.columns[cursor].type, timezone=tz, dialect=self.dialect))
                if cursor not in types:
                    raise AdapterError(f"{self.where}.select: the cursor column {cursor} must be selected")
                column = table.columns[cursor]
                bound = self._bound(column.type)
                if bound is not None:
                    since = sa.bindparam("_hub_since", bound, type_=column.type)
                    if self.dialect == "sqlite" and self.cursor_kind == "timestamp":
                        # SQLite compares timestamps as text, and writers differ ("T" or " ", with or without
                        # fractions): compare normalized to whole seconds (a superset; merged on the key)
                        stmt = stmt.where(sa.func.datetime(column) >= sa.func.datetime(since))
                    else:
                        stmt = stmt.where(column >= since)
                if self._ordered:  # checkpointed: rows come in cursor order, NULLs first (see resumable_batches)
                    text_time = self.dialect == "sqlite" and self.cursor_kind == "timestamp"
                    key = sa.func.datetime(column) if text_time else column
                    stmt = stmt.order_by(key.asc().nulls_first() if self.dialect in _NULLS_LAST else key.asc())
            return stmt, params, types, trim
        assert src.query is not None
        query = src.query.strip().rstrip(";")
        params = {key: _typed_param(value) for key, value in src.params.items()}
        if src.incremental:
            cursor = src.incremental.cursor
            quoted = conn.dialect.identifier_preparer.quote(cursor)
            bound = self._bound(None)
            if bound is not None:
                query = f"SELECT * FROM ({query}) _hub_q WHERE _hub_q.{quoted} >= :_hub_since"
                params["_hub_since"] = bound
            if self._ordered:
                nulls = " NULLS FIRST" if self.dialect in _NULLS_LAST else ""
                query = (f"{query} ORDER BY _hub_q.{quoted}{nulls}" if bound is not None
                         else f"SELECT * FROM ({query}) _hub_q ORDER BY _hub_q.{quoted}{nulls}")
        return sa.text(query), params, None, set()

    def _bound(self, column_type: Any) -> Any:
        """The lower bound of an incremental read: the stored mark minus the lookback (None: read all)."""
        inc = self.source.incremental
        assert inc is not None
        raw = self.stored_mark if self.stored_mark is not None else inc.initial
        if self._resume_from is not None:  # a checkpoint's last cursor value: exactly there, no lookback
            raw, self.cursor_kind = self._resume_from
        if raw is None:
            return None
        kind = self.cursor_kind or _guess_kind(raw)
        self.cursor_kind = kind
        value = parse_mark(str(raw), kind)
        if self._lookback is not None and self._resume_from is None:
            if kind == "timestamp":
                value = value - dt.timedelta(seconds=seconds(self._lookback))
            elif kind == "date":
                value = value - dt.timedelta(days=max(1, round(seconds(self._lookback) / 86400)))
            elif kind in ("int", "decimal", "float"):
                value = value - type(value)(self._lookback)
        if kind == "timestamp" and isinstance(value, dt.datetime) and value.tzinfo is not None:
            naive_column = column_type is not None and not getattr(column_type, "timezone", False)
            if naive_column:  # the database compares wall-clock times in the system's zone
                zone = self.system.timezone
                if zone:
                    from zoneinfo import ZoneInfo

                    value = value.astimezone(ZoneInfo(zone))
                value = value.replace(tzinfo=None)
        self.lower_bound = value
        return value

    # --- reading ---------------------------------------------------------------------------------------

    def _extract(self) -> Iterator[pa.RecordBatch]:
        eng = engine(self.system, self.url)
        try:
            with eng.connect() as conn:
                self._running(canceller(self.dialect, conn.connection.dbapi_connection, eng.raw_connection))
                stmt, params, types, trim = self._plan(conn)
                if self.fast_path:
                    scaled: dict[str, pa.Decimal128Type] = {}
                    if types is not None:
                        stmt, scaled = _scaled_decimals(stmt, types)
                    sql = _literal_sql(stmt, params)
                    self._running(None)
                    conn.close()  # the ADBC connection does the reading
                    yield from self._adbc(sql, trim, scaled)
                    return
                result = conn.execution_options(stream_results=True, yield_per=self.batch_rows).execute(stmt, params)
                names = list(result.keys())
                description = result.cursor.description if result.cursor is not None else None
                schema: dict[str, pa.DataType] = dict(types or {})
                for rows in result.partitions(self.batch_rows):
                    yield self._batch(names, rows, schema, description, trim)
        finally:
            self._running(None)
            eng.dispose()

    def _batch(self, names: list[str], rows: Any, schema: dict[str, pa.DataType],
               description: Any, trim: set[str]) -> pa.RecordBatch:
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        arrays = []
        for i, (name, column) in enumerate(zip(names, columns, strict=True)):
            values = list(column)
            target = schema.get(name)
            if target is None or pa.types.is_null(target):
                target = infer_type(values, description[i] if description else None)
                if self.system.timezone and pa.types.is_timestamp(target) and target.tz is None:
                    target = pa.timestamp("us", tz="UTC")
                schema[name] = target
            array = column_array(values, target, encoding=self.system.text_encoding, timezone=self.system.timezone,
                                 where=f"{self.where} column {name}")
            if name in trim and pa.types.is_string(array.type):
                array = pc.utf8_rtrim(array, characters=" ")
            arrays.append(array)
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def _adbc(self, sql: str, trim: set[str], scaled: dict[str, pa.Decimal128Type]) -> Iterator[pa.RecordBatch]:
        import adbc_driver_postgresql.dbapi as adbc

        with adbc.connect(adbc_uri(self.url, self.system)) as conn, conn.cursor() as cur:
            self._running(cur.adbc_cancel)
            cur.execute(CLIENT_CHECK_PG)
            cur.fetchall()
            # ADBC cuts batches by bytes: about batch_rows rows of 64 bytes, at most 16 MiB, keeps memory and
            # the time to the first batch small
            hint = min(16 << 20, max(64 << 10, self.batch_rows * 64))
            cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(hint)})
            cur.execute(sql)
            reader = cur.fetch_record_batch()
            schema = adbc_schema(reader.schema, timezone=self.system.timezone, scaled=scaled)
            pending: list[pa.RecordBatch] = []
            size = 0
            for raw in reader:
                batch = normalize_adbc(raw, schema, timezone=self.system.timezone, trim=trim, scaled=scaled)
                pending.append(batch)
                size += batch.num_rows
                if size >= self.batch_rows:
                    yield from pa.Table.from_batches(pending, schema=schema).to_batches(max_chunksize=self.batch_rows)
                    pending, size = [], 0
            if pending:
                yield from pa.Table.from_batches(pending, schema=schema).to_batches(max_chunksize=self.batch_rows)

    def _track(self, batch: pa.RecordBatch, best: Any) -> Any:
        inc = self.source.incremental
        if inc is None:
            return None
        if inc.cursor not in batch.schema.names:
            raise AdapterError(f"{self.where}.incremental.cursor: the rows have no column {inc.cursor} "
                               f"(columns: {', '.join(batch.schema.names)})")
        column = batch.column(inc.cursor)
        if self.cursor_kind is None:
            self.cursor_kind = mark_kind(column.type)
        top = pc.max(column).as_py()
        if top is None:
            return best
        return top if best is None or top > best else best


def _scaled_decimals(stmt: Any, types: dict[str, pa.DataType]) -> tuple[Any, dict[str, pa.Decimal128Type]]:
    """Select NUMERIC(p,s) columns with p <= 18 as ``(col * 10^s)::bigint``.

    ADBC hands NUMERIC over as text, and parsing it back costs a third of the extract; an exact scaled
    integer becomes the decimal128 column by reinterpreting its buffer (:func:`decimal_from_scaled`)."""
    scaled = {name: t for name, t in types.items() if pa.types.is_decimal128(t) and t.precision <= 18}
    if not scaled:
        return stmt, {}
    columns = [sa.cast(c * (10 ** scaled[c.name].scale), sa.BigInteger).label(c.name) if c.name in scaled else c
               for c in stmt.selected_columns]
    return stmt.with_only_columns(*columns), scaled


def _typed_param(value: Any) -> Any:
    """A rendered ``{{ partition.start }}`` is ISO 8601 text: bind it as a datetime (or date), so the database
    compares instants, not strings (SQLite would compare '2024-05-01 12:00' with '2024-05-01T00:00+00:00'
    character by character)."""
    if isinstance(value, str) and len(value) >= 10 and value[:4].isdigit() and value[4:5] == "-":
        try:
            return dt.datetime.fromisoformat(value) if "T" in value or " " in value else dt.date.fromisoformat(value)
        except ValueError:
            return value
    return value


def _guess_kind(raw: Any) -> str:
    if isinstance(raw, int):
        return "int"
    text = str(raw)
    if text.lstrip("-").isdigit():
        return "int"
    try:
        dt.date.fromisoformat(text)
        return "date"
    except ValueError:
        pass
    try:
        dt.datetime.fromisoformat(text)
        return "timestamp"
    except ValueError:
        return "string"


def _literal_sql(stmt: Any, params: dict[str, Any]) -> str:
    """A PostgreSQL statement with its parameters rendered as SQL literals (ADBC reads with ``COPY (query)
    TO STDOUT``, which takes no bind parameters). Values are the spec's own and the partition window's,
    escaped by SQLAlchemy; the dialect is the plain one, so a ``%`` in the query stays one ``%``."""
    from sqlalchemy.dialects import postgresql

    if isinstance(stmt, sa.TextClause):
        stmt = stmt.bindparams(*[sa.bindparam(k, v, type_=_literal_type(v)) for k, v in params.items()])
    return str(stmt.compile(dialect=postgresql.dialect(paramstyle="named"), compile_kwargs={"literal_binds": True}))


def _literal_type(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return sa.DateTime(timezone=value.tzinfo is not None)
    if isinstance(value, dt.date):
        return sa.Date()
    return None


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    raw = str(orig).strip()
    # ADBC quotes the failing statement, over several lines, before the cause: keep the cause
    # ("Failed to execute query: server closed the connection unexpectedly"), not the statement's first line.
    quoted = re.match(r"(?s)^(.*?) '.*?\n': (.*)$", raw)
    if quoted:
        raw = f"{quoted[1]}: {quoted[2]}"
    text = raw.splitlines()[0] if raw else type(orig).__name__
    return mask(f"{type(orig).__name__}: {text}")


def _adbc_available() -> bool:
    try:
        import adbc_driver_postgresql.dbapi  # noqa: F401
    except ImportError:
        return False
    return True


def _adbc_errors() -> tuple[type[BaseException], ...]:
    try:
        import adbc_driver_manager
    except ImportError:
        return ()
    return (adbc_driver_manager.Error,)


#: What a broken connection or a failing query raises, whichever reader is used.
_ERRORS: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError, OSError, TimeoutError, pa.ArrowException,
                                           *_adbc_errors())
