"""A PostgreSQL warehouse: for when the warehouse has to be a server that several writers, readers and BI
tools share, rather than one DuckDB file with one writing process.

Rows go in with ``COPY … FROM STDIN``, as CSV that Arrow's C++ writer produces chunk by chunk (64 Ki rows)
while the source is still being extracted: INSERTs would turn every value into a Python object and a bind
parameter, COPY lets the server parse text at its own speed. CSV has exactly one spelling of NULL (an
unquoted empty field) and Arrow quotes every string, so an empty string stays an empty string. What CSV
cannot carry as it is, is rewritten column-wise first: bytes as ``\\x`` hex, nested values as JSON text
(for ``jsonb``), durations as microseconds.

A load is one transaction from ``begin`` to ``commit``, and PostgreSQL's DDL is transactional, so a table
that was created, a column that was added or widened, a table that was swapped all disappear with a
rollback; a killed process's transaction is aborted by the server when the connection drops. No
connection is held between operations (``NullPool``): the writers are Dagster steps in separate
processes, a pool would only keep idle server sessions around.

Unlike DuckDB, PostgreSQL lets loads run side by side, so each load takes a transaction-level advisory
lock on its table: two merges of the same key would otherwise both insert it, and two first loads would
both try to create the table. Loads of different tables do not wait for each other. ``replace`` builds the
new rows in a table of their own and swaps it in at commit, so readers keep the old table (and are not
locked out) for as long as the load runs. ``merge`` stages rows in a temporary table with their arrival
number: the heap's order is not the insertion order in general, and the last row of a key must win.

SQL that users write (models, exports, queries in the code base) is DuckDB's dialect; sqlglot translates it,
and this module expands the two DuckDB conveniences sqlglot passes through unchanged (``GROUP BY ALL``,
``ORDER BY ALL``). What cannot be translated fails with a :class:`~hub.errors.WarehouseError` before
anything runs.

Results come back as Arrow typed from the result's column types, not guessed from values, so a stream's
first batch already has the schema of all: ``numeric(p,s)`` becomes ``decimal128(p,s)``; a ``numeric``
without a declared precision (what ``sum()`` and ``avg()`` return) becomes ``float64`` (cast in SQL to keep
exact digits). Model tables are the exception worth making: their plain numeric columns are declared
``numeric(38,s)`` after the build, as DuckDB types a sum of decimals, so revenue stays exact when read.
``timestamptz`` becomes ``timestamp[us, UTC]`` (sessions run in UTC).

SQL a spec author wrote (models, export queries) is checked after translation against the SQL sources'
function deny-list (:data:`adapters.sql._guard.DENIED_FUNCTIONS`: no ``pg_read_file``, ``lo_import``,
``dblink``, ``pg_terminate_backend``, ``set_config`` …) before it runs; a sandboxed query also runs in a
read-only transaction. A model needs write privileges (it creates its table), so the database role of the
warehouse is the last line: it should not be a superuser nor hold ``pg_read_server_files`` /
``pg_execute_server_program``.

The URL is an ordinary libpq URL, ``postgresql://user:password@host:5432/db``, with an optional
``?schema=NAME`` (default ``public``; created when missing); other parameters go to libpq.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import numpy as np
import orjson
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlglot
from psycopg.types.string import TextLoader
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError, UnsupportedError

from adapters.sql import WriteRefused, check_functions
from hub.errors import WarehouseError
from hub.runtime.secrets import mask, mask_url, register
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
    typed_columns,
)

SCHEMES = ("postgresql", "postgresql+psycopg", "postgres")
DEFAULT_SCHEMA = "public"
MAX_IDENTIFIER = 63  # bytes: PostgreSQL silently truncates longer names (NAMEDATALEN - 1)
_SEQ = "_hub_seq"  # staging tables only: the arrival number of a row (the last row of a key wins)
_META = ((PARTITION_COLUMN, "text"), (RUN_COLUMN, "text"), (LOADED_AT_COLUMN, "timestamp with time zone"))
_QUARANTINE_COLUMNS = (
    f'"{PARTITION_COLUMN}" text, row_number bigint, column_name text, value text, reason text, record text, '
    f'"{RUN_COLUMN}" text, "{LOADED_AT_COLUMN}" timestamp with time zone'
)
_CSV = pa_csv.WriteOptions(include_header=False, batch_size=8192)

# Type names exactly as format_type() spells them, so the catalog and the loader agree.
_INTEGERS = {"smallint": 5, "integer": 10, "bigint": 19}  # decimal digits each can hold
_FLOATS = ("real", "double precision")
_NUMERIC = re.compile(r"numeric(?:\((\d+),(-?\d+)\))?$")
_TIMESTAMP, _TIMESTAMPTZ = "timestamp without time zone", "timestamp with time zone"


def _check_name(name: str, what: str) -> None:
    if len(name.encode()) > MAX_IDENTIFIER:
        raise WarehouseError(f"{what} name {name!r} is longer than PostgreSQL's {MAX_IDENTIFIER} bytes "
                             "(PostgreSQL would silently cut it)")


# --- URLs --------------------------------------------------------------------------------------------


def sqlalchemy_url(url: str) -> tuple[URL, str]:
    """The SQLAlchemy URL (psycopg 3 driver) for *url*, and the schema its ``?schema=`` names."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise WarehouseError(f"not a PostgreSQL URL: {mask_url(url)} (expected postgresql://user@host:port/db)")
    try:
        parsed = make_url("postgresql+psycopg://" + rest)
    except ArgumentError as exc:
        raise WarehouseError(f"invalid PostgreSQL URL {mask_url(url)}: {mask(str(exc))}") from None
    schema = parsed.query.get("schema", DEFAULT_SCHEMA)
    if not isinstance(schema, str) or not schema:
        raise WarehouseError(f"invalid schema parameter in {mask_url(url)}: give one ?schema=NAME")
    _check_name(schema, "schema")
    return parsed.difference_update_query(["schema"]), schema


# --- SQL translation -----------------------------------------------------------------------------------


def to_postgres(sql: str) -> tuple[str, bool]:
    """*sql* (DuckDB's dialect) in PostgreSQL's, and whether it is a query (returns rows).

    Raises :class:`WarehouseError` when it is not one statement or cannot be translated faithfully."""
    try:
        trees = [t for t in sqlglot.parse(sql, read="duckdb") if t is not None]
        if len(trees) != 1:
            raise WarehouseError(f"expected one SQL statement, got {len(trees)}")
        tree = _adapt(cast(exp.Expression, trees[0]))
        for star in tree.find_all(exp.Star):
            used = [k.rstrip("_").upper() for k in ("except_", "replace", "rename", "ilike") if star.args.get(k)]
            if used:
                raise UnsupportedError(f"SELECT * {used[0]} has no PostgreSQL equivalent; list the columns")
        text = tree.sql(dialect="postgres", unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as exc:
        raise WarehouseError(f"cannot translate the SQL from DuckDB's dialect to PostgreSQL's: "
                             f"{str(exc).strip()}") from None
    return text, isinstance(tree, exp.Query)


def _adapt(tree: exp.Expression) -> exp.Expression:
    """Rewrite what sqlglot leaves as DuckDB has it, or translates for ``json`` only: a subquery in FROM
    gets a name (PostgreSQL before 16 requires one); ``GROUP BY ALL`` and ``ORDER BY ALL`` become
    output-column ordinals; JSON paths (``->``, ``->>``, ``json_extract``) become ``#>`` / ``#>>``
    (sqlglot writes ``json_extract_path``, which does not take the ``jsonb`` nested values are loaded as)."""
    for n, sub in enumerate(tree.find_all(exp.Subquery)):
        if isinstance(sub.parent, exp.From | exp.Join) and not sub.alias:  # PostgreSQL < 16 wants a name
            sub.set("alias", exp.TableAlias(this=exp.to_identifier(f"_hub_sub{n}")))
    for node in list(tree.find_all(exp.JSONExtract, exp.JSONExtractScalar)):
        path = _json_path(node.expression)
        if path is not None:
            kind = exp.JSONBExtractScalar if isinstance(node, exp.JSONExtractScalar) else exp.JSONBExtract
            node.replace(exp.Paren(this=kind(this=node.this, expression=exp.Literal.string(path))))
    for query in list(tree.find_all(exp.Query)):
        group = query.args.get("group")
        if isinstance(query, exp.Select) and group is not None and group.args.get("all"):
            projections = _projections(query, "GROUP BY ALL")
            keys = [i for i, p in enumerate(projections, 1) if not _aggregates(p)]
            query.set("group", exp.Group(expressions=[exp.Literal.number(i) for i in keys]) if keys else None)
        order = query.args.get("order")
        if order is None:
            continue
        every = [o for o in order.expressions if isinstance(o, exp.Ordered) and isinstance(o.this, exp.Var)
                 and o.this.name.upper() == "ALL"]
        if not every:
            continue
        if len(order.expressions) == 1 and any(_is_star(p) for p in query.selects):
            # Columns unknown: order the rows as whole rows, which compares them column by column.
            query.set("order", None)
            ordered = exp.Ordered(this=exp.column("_hub_all"), desc=every[0].args.get("desc"),
                                  nulls_first=every[0].args.get("nulls_first"))
            wrapped = exp.select("*").from_(exp.Subquery(this=query.copy(), alias=exp.TableAlias(
                this=exp.to_identifier("_hub_all")))).order_by(ordered)
            if query is tree:
                tree = wrapped
            else:
                query.replace(wrapped)
            continue
        items: list[exp.Expression] = []
        for item in order.expressions:
            if item in every:
                count = len(_projections(query, "ORDER BY ALL"))
                items.extend(exp.Ordered(this=exp.Literal.number(i), desc=item.args.get("desc"),
                                         nulls_first=item.args.get("nulls_first")) for i in range(1, count + 1))
            else:
                items.append(item)
        order.set("expressions", items)
    return tree


def _is_star(projection: Any) -> bool:
    return isinstance(projection, exp.Star) or (isinstance(projection, exp.Column) and
                                                isinstance(projection.this, exp.Star))


def _json_path(path: exp.Expression) -> str | None:
    """A literal JSON path of keys and indexes as PostgreSQL's path array (``'{a,0,b}'``); None for others."""
    if not isinstance(path, exp.JSONPath):
        return None
    parts = []
    for part in path.expressions:
        if isinstance(part, exp.JSONPathRoot):
            continue
        if isinstance(part, exp.JSONPathKey) and isinstance(part.this, str):
            parts.append(part.this)
        elif isinstance(part, exp.JSONPathSubscript) and isinstance(part.this, int):
            parts.append(str(part.this))
        else:
            return None  # wildcards, slices, filters: left to sqlglot
    return "{" + ",".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts) + "}"


def _projections(query: exp.Query, what: str) -> list[exp.Expression]:
    projections = cast(list[exp.Expression], list(query.selects))
    if any(_is_star(p) for p in projections):
        raise UnsupportedError(f"{what} over SELECT * cannot be translated; list the columns")
    return projections


def _aggregates(projection: exp.Expression) -> bool:
    """Whether *projection* aggregates (or is a window function) at its own query level."""
    for node in projection.find_all(exp.AggFunc, exp.Window):
        inside: Any = node  # sqlglot's node classes changed base across versions
        while inside is not None and inside is not projection and not isinstance(inside, exp.Query):
            inside = inside.parent
        if not isinstance(inside, exp.Query):  # not in a subquery of the projection
            return True
    return False


# --- Arrow → PostgreSQL ---------------------------------------------------------------------------------


def pg_type(dtype: pa.DataType) -> str:
    """The column type a value of Arrow type *dtype* is loaded into (see the module notes)."""
    t = pa.types
    if t.is_dictionary(dtype):
        return pg_type(dtype.value_type)
    if isinstance(dtype, pa.BaseExtensionType):
        return pg_type(dtype.storage_type)
    if t.is_boolean(dtype):
        return "boolean"
    if t.is_int8(dtype) or t.is_int16(dtype) or t.is_uint8(dtype):
        return "smallint"
    if t.is_int32(dtype) or t.is_uint16(dtype):
        return "integer"
    if t.is_int64(dtype) or t.is_uint32(dtype):
        return "bigint"
    if t.is_uint64(dtype):
        return "numeric(20,0)"
    if t.is_float16(dtype) or t.is_float32(dtype):
        return "real"
    if t.is_float64(dtype):
        return "double precision"
    if t.is_decimal(dtype):
        precision, scale = dtype.precision, dtype.scale
        return f"numeric({precision},{scale})" if 0 <= scale <= precision else "numeric"
    if t.is_string(dtype) or t.is_large_string(dtype) or t.is_string_view(dtype):
        return "text"
    if _is_binary(dtype):
        return "bytea"
    if t.is_date(dtype):
        return "date"
    if t.is_timestamp(dtype):
        return _TIMESTAMPTZ if dtype.tz else _TIMESTAMP
    if t.is_time(dtype):
        return "time without time zone"
    if t.is_duration(dtype) or t.is_interval(dtype):
        return "interval"
    if t.is_nested(dtype):
        return "jsonb"
    return "text"


def _is_binary(dtype: pa.DataType) -> bool:
    t = pa.types
    return bool(t.is_binary(dtype) or t.is_large_binary(dtype) or t.is_fixed_size_binary(dtype)
                or t.is_binary_view(dtype))


def _csv_column(column: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """*column* as values PostgreSQL's CSV input reads as the type :func:`pg_type` names."""
    dtype = column.type
    t = pa.types
    if t.is_dictionary(dtype):
        return _csv_column(column.cast(dtype.value_type))
    if isinstance(dtype, pa.BaseExtensionType):
        return _csv_column(pa.chunked_array([c.storage for c in column.chunks], dtype.storage_type))
    if _is_binary(dtype):
        return _hex(column)
    if t.is_string_view(dtype):
        return column.cast(pa.large_string())
    if t.is_float16(dtype):
        return column.cast(pa.float32())
    if t.is_date64(dtype):
        return column.cast(pa.date32())
    if t.is_timestamp(dtype) and dtype.tz and dtype.tz != "UTC":
        return column.cast(pa.timestamp(dtype.unit, tz="UTC"))  # written with Z: no offset parsing
    if t.is_duration(dtype):
        micros = pc.cast(column, pa.duration("us"), safe=False).cast(pa.int64()).cast(pa.string())
        return pc.binary_join_element_wise(micros, " microseconds", "")
    if t.is_interval(dtype):
        return pa.array([None if v is None else f"{v.months} months {v.days} days {v.nanoseconds // 1000} "
                         "microseconds" for v in column.to_pylist()], pa.string())
    if t.is_nested(dtype):
        return pa.array([None if v is None else orjson.dumps(v, default=_json_default,
                                                             option=orjson.OPT_NON_STR_KEYS).decode()
                         for v in column.to_pylist(maps_as_pydicts="lossy")], pa.large_string())
    if pg_type(dtype) == "text" and not (t.is_string(dtype) or t.is_large_string(dtype)):
        return column.cast(pa.string())
    return column


def _json_default(value: Any) -> Any:
    """JSON for what orjson does not know: decimals as strings (exact, as the mapper's JSON columns have
    them), bytes as ``\\x`` hex (bytea's text form), anything else as its text."""
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex(column: pa.ChunkedArray) -> pa.Array:
    """Binary values as bytea's hex input (``\\x0aff``), column-wise: no value becomes a Python object."""
    array = column.combine_chunks()
    if not (pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type)):
        array = array.cast(pa.binary())
    array = array.cast(pa.large_binary())  # 64-bit offsets
    n = len(array)
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=n + 1, offset=array.offset * 8)
    start, end = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buf, dtype=np.uint8, count=end - start, offset=start) if end > start else \
        np.empty(0, dtype=np.uint8)
    digits = np.empty(2 * len(data), dtype=np.uint8)
    digits[0::2] = _HEX_DIGITS[data >> 4]
    digits[1::2] = _HEX_DIGITS[data & 15]
    hexed = pa.LargeStringArray.from_buffers(n, pa.py_buffer((offsets - start) * 2), pa.py_buffer(digits))
    text = pa.large_string()
    joined = pc.binary_join_element_wise(pa.scalar("\\x", text), hexed, pa.scalar("", text))
    return pc.if_else(array.is_valid(), joined, pa.scalar(None, joined.type)) if array.null_count else joined


class _CopySink:
    """A writable file object over a COPY, for Arrow's CSV writer: the CSV goes to the server as it is
    produced, never whole in memory."""

    closed = False

    def __init__(self, copy: psycopg.Copy) -> None:
        self._copy = copy

    def write(self, data: bytes) -> int:
        self._copy.write(data)
        return len(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass


# --- schema evolution ----------------------------------------------------------------------------------


def _digits(dtype: str) -> tuple[int, int] | None:
    """(precision, scale) of an integer or numeric type; None for an unconstrained numeric."""
    if dtype in _INTEGERS:
        return _INTEGERS[dtype], 0
    match = _NUMERIC.match(dtype)
    return (int(match[1]), int(match[2])) if match and match[1] else None


def _is_numeric(dtype: str) -> bool:
    return dtype in _INTEGERS or dtype in _FLOATS or bool(_NUMERIC.match(dtype))


def supertype(a: str, b: str) -> str:
    """The narrowest type holding the values of both: integers widen to the wider integer, then numeric,
    then double precision; dates to timestamps; anything else meets in text."""
    if a == b:
        return a
    if a in _INTEGERS and b in _INTEGERS:
        return a if _INTEGERS[a] >= _INTEGERS[b] else b
    if _is_numeric(a) and _is_numeric(b):
        if a in _FLOATS or b in _FLOATS:
            return "double precision"
        da, db = _digits(a), _digits(b)
        if da is None or db is None:
            return "numeric"
        scale = max(da[1], db[1], 0)
        precision = max(da[0] - da[1], db[0] - db[1]) + scale
        return f"numeric({precision},{scale})" if precision <= 1000 else "numeric"
    pair = {a, b}
    if pair == {"date", _TIMESTAMP}:
        return _TIMESTAMP
    if pair <= {"date", _TIMESTAMP, _TIMESTAMPTZ}:
        return _TIMESTAMPTZ
    return "text"


def _widens(current: str, wider: str) -> bool:
    """True when changing a column from *current* to *wider* keeps every value and its meaning."""
    return _is_numeric(current) and _is_numeric(wider)


# --- catalog helpers -------------------------------------------------------------------------------------


def _columns(cur: psycopg.Cursor[Any], relation: str) -> dict[str, str]:
    """Column name → type of *relation* (a qualified, quoted name), in order."""
    rows = cur.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                       "%s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum", [relation]).fetchall()
    return {r[0]: r[1] for r in rows}


def _exists(cur: psycopg.Cursor[Any], schema: str, table: str) -> bool:
    return cur.execute("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = "
                       "%s AND c.relname = %s AND c.relkind IN ('r', 'p')", [schema, table]).fetchone() is not None


def _count(cur: psycopg.Cursor[Any], relation: str) -> int:
    row = cur.execute(f"SELECT count(*) FROM {relation}").fetchone()
    return int(row[0]) if row else 0


def _lock(cur: psycopg.Cursor[Any], key: str) -> None:
    """A transaction-level advisory lock on *key* (released by the commit or rollback)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"hub:{key}"])


# --- results → Arrow -----------------------------------------------------------------------------------

_TYPES = psycopg.postgres.types


def _oid(name: str) -> int:
    info = _TYPES.get(name)
    assert info is not None, name
    return info.oid


_ARROW: dict[int, pa.DataType] = {
    _oid("bool"): pa.bool_(), _oid("int2"): pa.int16(), _oid("int4"): pa.int32(), _oid("int8"): pa.int64(),
    _oid("oid"): pa.int64(), _oid("float4"): pa.float32(), _oid("float8"): pa.float64(),
    _oid("text"): pa.string(), _oid("varchar"): pa.string(), _oid("bpchar"): pa.string(), _oid("name"): pa.string(),
    _oid('"char"'): pa.string(), _oid("bytea"): pa.binary(), _oid("date"): pa.date32(),
    _oid("timestamp"): pa.timestamp("us"), _oid("timestamptz"): pa.timestamp("us", tz="UTC"),
    _oid("time"): pa.time64("us"), _oid("interval"): pa.duration("us"),
}
_NUMERIC_OID = _oid("numeric")
# Loaded as their text: numeric (cast by Arrow, exactly), JSON (kept as JSON text), uuid, time with time zone.
_AS_TEXT = ("numeric", "json", "jsonb", "uuid", "timetz")


def _result_type(column: psycopg.Column) -> tuple[pa.DataType, str]:
    """The Arrow type of a result column, and how its values are converted: ``direct`` (psycopg's Python
    values), ``parse`` (text cast by Arrow) or ``text`` (anything else, as text; arrays as JSON)."""
    if column.type_code == _NUMERIC_OID:
        precision, scale = column.precision, column.scale
        if precision is not None and scale is not None and 0 <= scale <= precision <= 76:
            return (pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)), "parse"
        return pa.float64(), "parse"
    known = _ARROW.get(column.type_code)
    return (known, "direct") if known is not None else (pa.string(), "text")


def _as_text(value: Any) -> str:
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    return str(value)


def _batch(rows: list[tuple[Any, ...]], schema: pa.Schema, kinds: list[str]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in kinds]
    arrays = []
    for values, field, kind in zip(columns, schema, kinds, strict=True):
        if kind == "direct":
            arrays.append(pa.array(values, field.type))
        elif kind == "parse":
            arrays.append(pa.array(values, pa.string()).cast(field.type))
        else:
            arrays.append(pa.array([None if v is None else _as_text(v) for v in values], pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# --- the warehouse -------------------------------------------------------------------------------------


class PostgresWarehouse(Warehouse):
    def __init__(self, url: str) -> None:
        self.url = url
        self.sa_url, self.schema = sqlalchemy_url(url)
        if isinstance(self.sa_url.password, str):
            register(self.sa_url.password)  # masked in every message from here on
        self.where = mask_url(url)
        connect_args: dict[str, Any] = {} if "connect_timeout" in self.sa_url.query else {"connect_timeout": 10}
        self._engine = create_engine(self.sa_url, poolclass=NullPool, connect_args=connect_args)
        event.listen(self._engine, "connect", self._on_connect)

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        """Every session: UTC, the warehouse's schema first on the search path, numeric/JSON read as text."""
        conn = cast(psycopg.Connection[Any], dbapi_connection)
        path = ident(self.schema) + ("" if self.schema == DEFAULT_SCHEMA else ", public")
        conn.execute("SELECT set_config('TimeZone', 'UTC', false), set_config('search_path', %s, false)", [path])
        conn.commit()
        for name in _AS_TEXT:
            conn.adapters.register_loader(name, TextLoader)

    def qualified(self, table: str) -> str:
        return f"{ident(self.schema)}.{ident(table)}"

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[Any]]:
        raw = self.open()
        try:
            yield raw.driver_connection
        finally:
            with contextlib.suppress(Exception):
                raw.close()

    def open(self) -> Any:
        """A new connection (SQLAlchemy's proxy: ``.driver_connection`` is psycopg's; the caller closes it)."""
        try:
            return self._engine.raw_connection()
        except (SQLAlchemyError, psycopg.Error) as exc:
            raise WarehouseError(f"cannot connect to the PostgreSQL warehouse {self.where}: "
                                 f"{self.message(exc)}") from None

    def message(self, exc: BaseException) -> str:
        """The text of *exc* for an error message: the driver's own words, no secrets."""
        if isinstance(exc, DBAPIError) and exc.orig is not None:
            exc = exc.orig
        text = str(exc).strip()
        if isinstance(exc, psycopg.Error) and exc.diag.message_detail:
            text += f" ({exc.diag.message_detail})"
        return mask(text)  # the URL's password is registered (hub.runtime.secrets)

    def ensure_schema(self, cur: psycopg.Cursor[Any]) -> None:
        """Create the schema if it is missing (in the caller's transaction; concurrent creators wait)."""
        if cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [self.schema]).fetchone():
            return
        _lock(cur, f"schema {self.schema}")
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema)}")

    # --- reading -------------------------------------------------------------------------------------

    def query(self, sql: str, *, sandboxed: bool = False) -> pa.Table:
        text, is_query = self._translate(sql, sandboxed)
        with self._connect() as conn:
            if sandboxed:
                conn.execute("SET TRANSACTION READ ONLY")
            schema, batches = self._read(conn, text, is_query, 65_536)
            return pa.Table.from_batches(list(batches), schema=schema)

    def stream(self, sql: str, batch_rows: int = 65_536, *, sandboxed: bool = False) -> Iterator[pa.RecordBatch]:
        text, is_query = self._translate(sql, sandboxed)
        with self._connect() as conn:
            if sandboxed:
                conn.execute("SET TRANSACTION READ ONLY")
            _, batches = self._read(conn, text, is_query, batch_rows)
            yield from batches

    def read_only(self, sql: str) -> pa.Table:
        """One query (translated from DuckDB's dialect, which refuses more than one statement) in a
        READ ONLY transaction, rolled back at the end: PostgreSQL refuses any write inside it."""
        text, is_query = self._translate(sql, sandboxed=True)
        if not is_query:
            raise WarehouseError(f"query on {self.where}: only a query (SELECT) is allowed")
        with self._connect() as conn:
            try:
                conn.read_only = True
                schema, batches = self._read(conn, text, True, 65_536)
                return pa.Table.from_batches(list(batches), schema=schema)
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()

    def _translate(self, sql: str, sandboxed: bool = False) -> tuple[str, bool]:
        where = f"query on {self.where}"
        try:
            if sandboxed:
                check_user_query(sql, where)
            text, is_query = to_postgres(sql)
            if sandboxed:
                check_functions(text, "postgresql", where=where, what="a query of the warehouse only reads it")
            return text, is_query
        except WriteRefused as exc:
            raise WarehouseError(str(exc)) from None
        except WarehouseError as exc:
            raise WarehouseError(exc.args[0] if str(exc).startswith(where) else f"{where}: {exc}") from None

    def _read(self, conn: psycopg.Connection[Any], sql: str, is_query: bool,
              batch_rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Run *sql*; its result's schema and batches. A query runs in a server-side cursor (bounded memory);
        anything else with a client-side one, and is committed."""
        try:
            cur: psycopg.Cursor[Any]
            if is_query:
                cur = conn.cursor(name=f"hub_{uuid.uuid4().hex}")
                cur.itersize = batch_rows
            else:
                cur = conn.cursor()
            cur.execute(sql)
            description = cur.description or []
        except psycopg.Error as exc:
            raise WarehouseError(f"query on {self.where} failed: {self.message(exc)}") from None
        types = [_result_type(c) for c in description]
        schema = pa.schema([pa.field(c.name, t) for c, (t, _) in zip(description, types, strict=True)])
        kinds = [k for _, k in types]

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                while description:
                    rows = cur.fetchmany(batch_rows)
                    if not rows:
                        break
                    yield _batch(rows, schema, kinds)
                cur.close()
                conn.commit()
            except (psycopg.Error, pa.ArrowException) as exc:
                raise WarehouseError(f"query on {self.where} failed: {self.message(exc)}") from None

        return schema, batches()

    def tables(self, internal: bool = False) -> list[str]:
        with self._connect() as conn:
            try:
                rows = conn.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                    "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')", [self.schema]).fetchall()
            except psycopg.Error as exc:
                raise WarehouseError(f"listing the tables of {self.where} failed: {self.message(exc)}") from None
        return sorted(r[0] for r in rows if internal or not r[0].startswith("_hub_"))

    # --- loading -------------------------------------------------------------------------------------

    def begin(self, request: LoadRequest) -> Load:
        return _PostgresLoad(self, request)

    # --- models --------------------------------------------------------------------------------------

    def run_model(self, name: str, sql: str) -> LoadResult:
        try:
            _check_name(name, "model")
            text, is_query = to_postgres(sql)
            if not is_query:
                raise WarehouseError("the model SQL must be a query (SELECT …)")
            check_functions(text, "postgresql", where=f"model {name}",
                            what="a model only reads the warehouse's tables")
        except WriteRefused as exc:
            raise WarehouseError(f"{exc}; the previous table is kept") from None
        except WarehouseError as exc:
            raise WarehouseError(f"model {name}: {exc}; the previous table is kept") from None
        building = f"_hub_model_{uuid.uuid4().hex[:16]}"
        with self._connect() as conn:
            try:
                cur = conn.cursor()
                self.ensure_schema(cur)
                _lock(cur, f"{self.schema}.{name}")
                cur.execute(f"CREATE TABLE {self.qualified(building)} AS {text}")
                _declare_numerics(cur, self.qualified(building))
                cur.execute(f"DROP TABLE IF EXISTS {self.qualified(name)}")
                cur.execute(f"ALTER TABLE {self.qualified(building)} RENAME TO {ident(name)}")
                rows = _count(cur, self.qualified(name))
                result = LoadResult(table=name, rows_loaded=rows, rows_deleted=0, table_rows=rows,
                                    columns=list(_columns(cur, self.qualified(name)).items()))
                conn.commit()
                return result
            except psycopg.Error as exc:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
                raise WarehouseError(f"model {name}: SQL failed in {self.where}, the previous table is kept: "
                                     f"{self.message(exc)}") from None


def _declare_numerics(cur: psycopg.Cursor[Any], relation: str) -> None:
    """Give the plain ``numeric`` columns of a model (sums and other arithmetic on decimals) a precision
    and scale, ``numeric(38, s)`` with the largest scale of its values, as DuckDB types a sum of decimals:
    they then read back as exact ``decimal128`` instead of float64. Columns whose values do not fit (or are
    NaN or infinite) stay as they are."""
    plain = [c for c, t in _columns(cur, relation).items() if t == "numeric"]
    if not plain:
        return
    stats = ", ".join(f"max(abs({ident(c)}))::text, max(scale({ident(c)}))" for c in plain)
    row = cur.execute(f"SELECT {stats} FROM {relation}").fetchone() or ()
    for i, column in enumerate(plain):
        biggest, scale = row[2 * i], row[2 * i + 1]
        if biggest is None or scale is None:
            continue  # no values (or only NaN): nothing to go by
        value = Decimal(biggest)
        if not value.is_finite() or (value.adjusted() + 1 if value else 1) + scale > 38:
            continue
        cur.execute(f"ALTER TABLE {relation} ALTER COLUMN {ident(column)} TYPE numeric(38,{scale})")


class _PostgresLoad(StreamingLoad[PostgresWarehouse, psycopg.Connection[Any], psycopg.Cursor[Any]]):
    """One load: an open connection and transaction, written chunk by chunk with COPY."""

    _driver_errors = (psycopg.Error,)
    _errors = (psycopg.Error, WarehouseError, pa.ArrowException, orjson.JSONEncodeError)

    def __init__(self, warehouse: PostgresWarehouse, request: LoadRequest, chunk_rows: int = 64 * 1024,
                 parent: _PostgresLoad | None = None) -> None:
        _check_name(request.table, "table")
        self._swap: str | None = None  # replace: the name of the table that replaces the old one at commit
        self._seq = 0  # staging: the arrival number of the next row
        self._raw: Any = None
        self._now: datetime = parent._now if parent else datetime.now(UTC)  # replaced by the transaction's
        super().__init__(warehouse, request, chunk_rows, parent)

    # --- connection and catalog ----------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        self._raw = self.warehouse.open()
        return cast(psycopg.Connection[Any], self._raw.driver_connection)

    def _cursor(self) -> psycopg.Cursor[Any]:
        return self._live().cursor()

    def _begin(self, cur: psycopg.Cursor[Any]) -> None:
        if self._parent is None:
            self.warehouse.ensure_schema(cur)
            self._now = cast(tuple[datetime], cur.execute("SELECT now()").fetchone())[0]
        _lock(cur, f"{self.warehouse.schema}.{self.request.table}")

    def _relation(self, table: str) -> str:
        return self.warehouse.qualified(table)

    def _table_exists(self, cur: psycopg.Cursor[Any], table: str) -> bool:
        return _exists(cur, self.warehouse.schema, table)

    def _describe(self, cur: psycopg.Cursor[Any], relation: str) -> dict[str, str]:
        return _columns(cur, relation)

    def _size(self, cur: psycopg.Cursor[Any], relation: str) -> int:
        return _count(cur, relation)

    def _rowcount(self, cur: psycopg.Cursor[Any], sql: str) -> int:
        return cur.execute(sql).rowcount

    def _commit_transaction(self, conn: psycopg.Connection[Any]) -> None:
        conn.commit()

    def _rollback_transaction(self, conn: psycopg.Connection[Any]) -> None:
        conn.rollback()

    def _disconnect(self, conn: psycopg.Connection[Any]) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close()

    def _location(self) -> str:
        return self.warehouse.where

    def _message(self, exc: Exception) -> str:
        return self.warehouse.message(exc)

    # --- writing -------------------------------------------------------------------------------------

    def _cover(self, cur: psycopg.Cursor[Any], keys: pa.RecordBatch) -> None:
        table, types = self._csv_table(pa.Table.from_batches([keys]), {}, set())
        if self._keys is None:
            self._keys = f"pg_temp.{ident('_hub_keys_' + uuid.uuid4().hex[:12])}"
            cur.execute(f"CREATE TEMP TABLE {self._keys} ({_definition(types)}) ON COMMIT DROP")
        self._copy(cur, self._keys, table)

    def _insert(self, cur: psycopg.Cursor[Any], chunk: pa.Table) -> None:
        target, have = self._prepare_target(cur)
        table, incoming = self._csv_table(chunk, have, self._untyped)
        for name in table.column_names:
            _check_name(name, "column")
        n = table.num_rows
        req = self.request
        meta = [pa.nulls(n, pa.string()) if req.partition is None else pa.repeat(pa.scalar(req.partition), n),
                pa.repeat(pa.scalar(req.run_id), n), pa.repeat(pa.scalar(self._now, pa.timestamp("us", "UTC")), n)]
        for (name, _), values in zip(_META, meta, strict=True):
            table = table.append_column(name, values)
        if self._staging:
            table = table.append_column(_SEQ, pa.array(np.arange(self._seq, self._seq + n, dtype=np.int64)))
            self._seq += n
        if not self._target_exists:
            columns = [*incoming, *_META, *([(_SEQ, "bigint")] if self._staging else [])]
            if self._staging:
                cur.execute(f"CREATE TEMP TABLE {target} ({_definition(columns)}) ON COMMIT DROP")
            else:
                cur.execute(f"CREATE TABLE {target} ({_definition(columns)})")
            self._target_exists = True
        else:
            self._reconcile(cur, target, have, incoming, fresh=self._fresh, untyped=self._untyped)
        self._copy(cur, target, table)

    def _start_target(self, cur: psycopg.Cursor[Any]) -> None:
        req = self.request
        if req.mode == "merge" or (req.mode == "replace_keys" and self._existed):
            # Collect the rows aside (merge: to pick the last row of each key), move them in at commit.
            self._target = f"pg_temp.{ident('_hub_staged_' + uuid.uuid4().hex[:12])}"
            self._target_exists, self._fresh, self._staging = False, True, True
        elif req.mode == "replace" and self._existed:
            # Build the new table aside: readers keep the old one until the commit swaps them.
            self._deleted = _count(cur, self._table)
            self._swap = f"_hub_new_{uuid.uuid4().hex[:16]}"
            self._target, self._target_exists, self._fresh = self.warehouse.qualified(self._swap), False, True
        else:
            self._target, self._target_exists, self._fresh = self._table, self._existed, not self._existed

    @staticmethod
    def _csv_table(chunk: pa.Table, have: dict[str, str], untyped: set[str]) -> tuple[pa.Table, list[tuple[str, str]]]:
        """The chunk as CSV-ready columns (see :func:`~hub.warehouse.base.typed_columns` for columns that are
        NULL in every row), and the column type of each."""
        table = typed_columns(chunk, have, untyped)
        arrays = [_csv_column(column) for column in table.columns]
        types = [(field.name, pg_type(field.type)) for field in table.schema]
        return pa.Table.from_arrays(arrays, names=table.column_names), types

    @staticmethod
    def _copy(cur: psycopg.Cursor[Any], relation: str, table: pa.Table) -> None:
        columns = ", ".join(ident(c) for c in table.column_names)
        with cur.copy(f"COPY {relation} ({columns}) FROM STDIN (FORMAT csv)") as copy:
            pa_csv.write_csv(table, _CopySink(copy), _CSV)

    def _set_type(self, cur: psycopg.Cursor[Any], relation: str, name: str, dtype: str) -> None:
        column = ident(name)
        cur.execute(f"ALTER TABLE {relation} ALTER COLUMN {column} TYPE {dtype} USING {column}::{dtype}")

    def _supertype(self, cur: psycopg.Cursor[Any], current: str, dtype: str) -> str:
        return supertype(current, dtype)

    def _widens(self, current: str, wider: str) -> bool:
        return _widens(current, wider)

    # --- finishing -----------------------------------------------------------------------------------

    def _swap_in(self, cur: psycopg.Cursor[Any]) -> None:
        if self._swap is not None:
            cur.execute(f"DROP TABLE {self._table}")
            cur.execute(f"ALTER TABLE {self._target} RENAME TO {ident(self.request.table)}")

    def _merge(self, cur: psycopg.Cursor[Any]) -> int:
        req = self.request
        assert self._target is not None
        staged = self._staged_columns(cur)
        self._check_keys(staged)
        keys = ", ".join(ident(k) for k in req.primary_key)
        if self._existed:
            self._reconcile_staged(cur, staged)
            self._deleted = self._delete_keys(cur, self._target)
        else:
            cur.execute(f"CREATE TABLE {self._table} ({_definition(list(staged.items()))})")
        # Within one load the last row of a key wins: the highest arrival number.
        latest = (f"(SELECT DISTINCT ON ({keys}) * FROM {self._target} "
                  f"ORDER BY {keys}, {ident(_SEQ)} DESC) AS latest")
        loaded = self._move(cur, staged, latest)
        cur.execute(f"DROP TABLE {self._target}")
        return loaded

    def _staged_columns(self, cur: psycopg.Cursor[Any]) -> dict[str, str]:
        return {n: t for n, t in super()._staged_columns(cur).items() if n != _SEQ}

    def _delete_keys(self, cur: psycopg.Cursor[Any], source: str) -> int:
        keys = ", ".join(ident(k) for k in self.request.primary_key)
        return cur.execute(f"DELETE FROM {self._table} WHERE ({keys}) IN (SELECT {keys} FROM {source})").rowcount

    def _move(self, cur: psycopg.Cursor[Any], staged: dict[str, str], source: str) -> int:
        """INSERT the staged columns from *source* into the table, each cast to the table's type (an all-NULL
        staged column is text; PostgreSQL assigns text to no other type implicitly)."""
        have = _columns(cur, self._table)
        names = ", ".join(ident(n) for n in staged)
        values = ", ".join(f"CAST({ident(n)} AS {have[n]})" for n in staged)
        return int(cur.execute(f"INSERT INTO {self._table} ({names}) SELECT {values} FROM {source}").rowcount)

    def _quarantine_table(self, cur: psycopg.Cursor[Any], name: str) -> str:
        _check_name(name, "quarantine table")
        qtable = self.warehouse.qualified(name)
        cur.execute(f"CREATE TABLE IF NOT EXISTS {qtable} ({_QUARANTINE_COLUMNS})")
        return qtable

    def _insert_quarantine(self, cur: psycopg.Cursor[Any], qtable: str, rows: list[dict[str, Any]]) -> None:
        req = self.request
        columns = (PARTITION_COLUMN, "row_number", "column_name", "value", "reason", "record", RUN_COLUMN,
                   LOADED_AT_COLUMN)
        with cur.copy(f"COPY {qtable} ({', '.join(ident(c) for c in columns)}) FROM STDIN") as copy:
            for q in rows:
                copy.write_row((req.partition, q.get("row"), q.get("column"),
                                None if q.get("value") is None else str(q["value"]), q.get("reason"),
                                q.get("record"), req.run_id, self._now))


def _definition(columns: list[tuple[str, str]]) -> str:
    return ", ".join(f"{ident(n)} {t}" for n, t in columns)


__all__ = ["PostgresWarehouse", "pg_type", "sqlalchemy_url", "supertype", "to_postgres"]
