"""Database column types -> Arrow types, faithfully.

A warehouse column should mean what the source column meant: DECIMAL(12,2) stays an exact decimal
(never a float), a timestamp with a time zone stays an instant, a naive timestamp stays naive unless the
system declares the zone it is in, binary stays binary. The mapping (documented as a table in the
README) is decided once per column from the database's own description — table reflection, or the
result description of a query — so every batch of a source has the same schema.

=============================================  =================================================
database type                                  Arrow type
=============================================  =================================================
SMALLINT / INTEGER / BIGINT (TINYINT: int8)     int16 / int32 / int64
DECIMAL(p,s), NUMERIC(p,s), p <= 38             decimal128(p, s)
NUMERIC without precision, or p > 38            string (every digit kept; cast under ``columns:``)
REAL (PostgreSQL), FLOAT (MySQL) / DOUBLE        float32 / float64 (SQLite REAL: float64)
BOOLEAN (MySQL BOOL is TINYINT(1): int8)        bool
CHAR(n) / VARCHAR / TEXT / ENUM / UUID / CLOB   string (CHAR padding stripped with ``trim_char``)
DATE                                            date32
TIME                                            time64[us]
TIMESTAMP WITH TIME ZONE                        timestamp[us, UTC]
TIMESTAMP / DATETIME (naive)                    timestamp[us]; with the system's ``timezone``:
                                                timestamp[us, UTC]
INTERVAL                                        duration[us] (a month counts as 30 days)
BYTEA / BLOB / VARBINARY / RAW                  binary
JSON / JSONB / ARRAY / anything else            string (JSON text for JSON and arrays)
=============================================  =================================================
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy.types as sqltypes

from hub.errors import AdapterError

MAX_DECIMAL_PRECISION = 38
UTC_TS = pa.timestamp("us", tz="UTC")


def arrow_type(column_type: Any, *, timezone: str | None = None, dialect: str = "") -> pa.DataType:
    """The Arrow type of a reflected SQLAlchemy column type of a *dialect* database (see the module table)."""
    t = column_type
    name = type(t).__name__.upper()
    if isinstance(t, sqltypes.Boolean):
        return pa.bool_()
    if isinstance(t, sqltypes.Integer):
        if name in ("TINYINT",):
            return pa.int8()
        if isinstance(t, sqltypes.SmallInteger) or name in ("SMALLINT", "MEDIUMINT"):
            return pa.int16() if name == "SMALLINT" else pa.int32()
        if isinstance(t, sqltypes.BigInteger) or name == "BIGINT":
            return pa.int64()
        return pa.int32() if name in ("INTEGER", "INT") else pa.int64()
    if isinstance(t, sqltypes.Float) or name in ("REAL", "DOUBLE", "DOUBLE_PRECISION", "FLOAT"):
        precision = getattr(t, "precision", None)
        single = (dialect == "postgresql" and name == "REAL") or (dialect in ("mysql", "mariadb") and name == "FLOAT") \
            or (name == "FLOAT" and precision is not None and precision <= 24)  # SQLite's REAL is 8 bytes
        return pa.float32() if single else pa.float64()
    if isinstance(t, sqltypes.Numeric):
        precision, scale = getattr(t, "precision", None), getattr(t, "scale", None)
        if precision is not None and 0 < precision <= MAX_DECIMAL_PRECISION:
            return pa.decimal128(precision, scale or 0)
        return pa.string()
    if isinstance(t, sqltypes.DateTime) or name in ("TIMESTAMP", "DATETIME", "DATETIME2", "SMALLDATETIME"):
        aware = bool(getattr(t, "timezone", False)) or name == "DATETIMEOFFSET"
        return UTC_TS if aware or timezone else pa.timestamp("us")
    if isinstance(t, sqltypes.Date):
        return pa.date32()
    if isinstance(t, sqltypes.Time):
        return pa.time64("us")
    if isinstance(t, sqltypes.Interval) or name == "INTERVAL":
        return pa.duration("us")
    if isinstance(t, sqltypes._Binary) or name in ("BYTEA", "BLOB", "LONGBLOB", "MEDIUMBLOB", "RAW", "IMAGE"):
        return pa.binary()
    return pa.string()


def is_char(column_type: Any) -> bool:
    """CHAR(n) (blank-padded) rather than VARCHAR/TEXT."""
    return type(column_type).__name__.upper() in ("CHAR", "NCHAR", "BPCHAR", "CHARACTER")


def _text(value: Any, encoding: str | None) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode(encoding or "utf-8", errors="strict")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def column_array(values: list[Any], target: pa.DataType, *, encoding: str | None, timezone: str | None,
                 where: str) -> pa.Array:
    """Python values of one column (as a DBAPI driver returns them) -> an Arrow array of *target*."""
    if pa.types.is_string(target):
        try:
            return pa.array([_text(v, encoding) for v in values], pa.string())
        except UnicodeDecodeError as exc:
            raise AdapterError(f"{where}: bytes that are not {encoding or 'utf-8'} text ({exc.reason} at byte "
                               f"{exc.start}); set the system's text_encoding to the database's codec") from None
    if pa.types.is_timestamp(target) and target.tz is not None and timezone:
        naive = pa.array([v.replace(tzinfo=None) if isinstance(v, dt.datetime) and v.tzinfo is None else v
                          for v in values], type=pa.timestamp("us")) \
            if not any(isinstance(v, dt.datetime) and v.tzinfo is not None for v in values) else None
        if naive is not None:  # naive values declared to be in the system's time zone
            return pc.assume_timezone(naive, timezone, ambiguous="earliest", nonexistent="earliest").cast(target)
    if pa.types.is_timestamp(target) and target.tz is None:
        values = [v.replace(tzinfo=None) if isinstance(v, dt.datetime) and v.tzinfo is not None else v
                  for v in values]  # SQLite and others may hand a naive column's values back with an offset
    if pa.types.is_binary(target):
        values = [bytes(v) if isinstance(v, memoryview | bytearray) else
                  (v.encode() if isinstance(v, str) else v) for v in values]
    if pa.types.is_time(target):
        values = [(dt.datetime.min + v).time() if isinstance(v, dt.timedelta) else v for v in values]  # MySQL TIME
    if pa.types.is_date32(target):
        values = [v.date() if isinstance(v, dt.datetime) else v for v in values]
    if pa.types.is_floating(target):
        values = [float(v) if isinstance(v, decimal.Decimal) else v for v in values]  # MySQL DOUBLE as Decimal
    try:
        return pa.array(values, type=target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        # e.g. SQLite stores whatever it is given: a text value in an INTEGER column. Such values become
        # text of the whole column for this batch rather than failing the load; the warehouse then refuses
        # the type change, naming the column, unless the spec declares how to map it.
        return column_array(values, pa.string(), encoding=encoding, timezone=timezone, where=where)


def infer_type(values: list[Any], description: tuple[Any, ...] | None) -> pa.DataType:
    """The Arrow type of a query column from its first values (and the DBAPI description's precision and
    scale when the driver gives them): used when there is no table to reflect."""
    sample = next((v for v in values if v is not None), None)
    if sample is None:
        return pa.null()
    if isinstance(sample, bool):
        return pa.bool_()
    if isinstance(sample, int):
        return pa.int64()
    if isinstance(sample, float):
        return pa.float64()
    if isinstance(sample, decimal.Decimal):
        precision = description[4] if description and len(description) > 5 else None
        scale = description[5] if description and len(description) > 5 else None
        if isinstance(precision, int) and isinstance(scale, int) and 0 < precision <= MAX_DECIMAL_PRECISION \
                and 0 <= scale <= precision:
            return pa.decimal128(precision, scale)
        exponents = [-e for v in values if isinstance(v, decimal.Decimal)
                     and isinstance(e := v.as_tuple().exponent, int)]
        return pa.decimal128(MAX_DECIMAL_PRECISION, max(0, min(max(exponents or [0]), 18)))
    if isinstance(sample, dt.datetime):
        return UTC_TS if sample.tzinfo is not None else pa.timestamp("us")
    if isinstance(sample, dt.date):
        return pa.date32()
    if isinstance(sample, dt.time):
        return pa.time64("us")
    if isinstance(sample, dt.timedelta):
        return pa.duration("us")
    if isinstance(sample, bytes | bytearray | memoryview):
        return pa.binary()
    return pa.string()


# --- the PostgreSQL fast path (ADBC) ---------------------------------------------------------------------

def _numeric_type(field: pa.Field) -> pa.DataType:
    meta = field.metadata or {}
    typmod = int(meta.get(b"POSTGRESQL:typmod", b"-1") or -1)
    if typmod >= 4:
        precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        if 0 < precision <= MAX_DECIMAL_PRECISION:
            return pa.decimal128(precision, scale)
    return pa.string()


def adbc_schema(schema: pa.Schema, *, timezone: str | None,
                scaled: dict[str, pa.Decimal128Type] | None = None) -> pa.Schema:
    """The schema the hub hands on for a batch read through ADBC (see :func:`normalize_adbc`); *scaled*
    columns were read as integers scaled by 10^s and become their decimal type."""
    scaled = scaled or {}
    return pa.schema([pa.field(f.name, scaled.get(f.name) or _normalized_type(f, timezone)) for f in schema])


def decimal_from_scaled(column: pa.Array, dtype: pa.Decimal128Type) -> pa.Array:
    """int64 values ``v`` -> decimal128(p,s) values ``v * 10^-s``, by reinterpreting the integers as the
    low words of 128-bit two's complement numbers (no per-value work, no text)."""
    if column.offset:
        column = pa.concat_arrays([column])
    ints = pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    words = np.empty((len(ints), 2), dtype=np.int64)
    words[:, 0] = ints
    words[:, 1] = ints >> 63  # sign extension into the high word
    return pa.Array.from_buffers(dtype, len(column), [column.buffers()[0], pa.py_buffer(words)],
                                 null_count=column.null_count)


def _pg_type(field: pa.Field) -> str:
    meta = field.metadata or {}
    return (meta.get(b"POSTGRESQL:type") or b"").decode()


def _normalized_type(field: pa.Field, timezone: str | None) -> pa.DataType:
    t = field.type
    pg = _pg_type(field)
    if pg == "numeric":
        return _numeric_type(field)
    if isinstance(t, pa.BaseExtensionType) or pa.types.is_list(t) or pa.types.is_struct(t) or pa.types.is_map(t):
        return pa.string()
    if pa.types.is_interval(t):
        return pa.duration("us")  # json, jsonb, uuid, arrays, composite types: text (JSON for the nested ones)
    if pa.types.is_timestamp(t) and t.tz is None and timezone:
        return UTC_TS
    if pa.types.is_large_string(t):
        return pa.string()
    return t


def normalize_adbc(batch: pa.RecordBatch, schema: pa.Schema, *, timezone: str | None,
                   trim: set[str], scaled: dict[str, pa.Decimal128Type] | None = None) -> pa.RecordBatch:
    """An ADBC batch in the hub's types: NUMERIC(p,s) (ADBC hands it over as text) -> decimal128(p,s);
    JSON, UUID and arrays -> text; naive timestamps of a declared zone -> UTC; CHAR padding stripped."""
    arrays = []
    for field, column, out in zip(batch.schema, batch.columns, schema, strict=True):
        if scaled and field.name in scaled:
            arrays.append(decimal_from_scaled(column.cast(pa.int64()), scaled[field.name]))
            continue
        t = field.type
        if isinstance(t, pa.BaseExtensionType):
            storage = column.storage
            if pa.types.is_fixed_size_binary(storage.type):  # uuid
                column = pa.array([None if v is None else str(uuid.UUID(bytes=v)) for v in storage.to_pylist()],
                                  pa.string())
            else:
                column = storage
        if pa.types.is_list(column.type) or pa.types.is_struct(column.type) or pa.types.is_map(column.type):
            column = pa.array([None if v is None else json.dumps(v, default=str, ensure_ascii=False)
                               for v in column.to_pylist()], pa.string())
        if pa.types.is_interval(column.type):  # months count as 30 days, as in the DBAPI drivers' timedelta
            column = pa.array([None if v is None else (v.months * 30 + v.days) * 86_400_000_000 + v.nanoseconds // 1000
                               for v in column.to_pylist()], pa.int64()).cast(pa.duration("us"))
        if pa.types.is_timestamp(column.type) and column.type.tz is None and out.type.tz is not None:
            column = pc.assume_timezone(column, timezone, ambiguous="earliest", nonexistent="earliest")
        if field.name in trim and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            column = pc.utf8_rtrim(column, characters=" ")
        if column.type != out.type:
            column = column.cast(out.type)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
