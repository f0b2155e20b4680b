"""Per-source field mapping: pick (dotted paths into nested records), rename and cast, on Arrow batches.

Mapping is vectorized (struct field extraction and Arrow casts); only when a cast fails for some rows
does it fall back to row-by-row conversion, to split the batch into good rows and quarantined rows,
each bad row with the column, the value and the reason. A bad partner record never fails the whole
load silently, and never disappears.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hub.errors import MappingError
from hub.runtime.records import ERROR, LINE, RAW
from hub.transform.types import JSON, parse_type


@dataclass(frozen=True)
class Column:
    path: tuple[str, ...]
    name: str
    type: pa.DataType | str | None  # None: keep the source type; "json": serialize
    fmt: dict[str, Any] = field(default_factory=dict)  # how the text is written: format, decimal_point


@dataclass
class Mapped:
    batch: pa.RecordBatch
    quarantine: list[dict[str, Any]]  # {"row": int, "column": str, "value": str, "reason": str, "record": str}
    kept: pa.BooleanArray | None = None  # which input rows are in `batch` (None: all of them)


#: Reserved columns adapters may add (named in hub.runtime.records, where the readers write them): a record they
#: could not read faithfully carries the reason in ``_hub_error`` (and its raw text in ``_hub_raw``); ``_hub_line``
#: is the record's line in its file. The Mapper turns them into quarantine rows and never passes them on.
ERROR_COLUMN, RAW_COLUMN, LINE_COLUMN = ERROR, RAW, LINE
RESERVED = (ERROR_COLUMN, RAW_COLUMN, LINE_COLUMN)


class Mapper:
    """Applies a source's row rules to every batch: adapter-reported errors, the ``columns`` mapping
    (pick, rename, cast) and required (primary key) columns. Rows failing any of them are split off
    with the reason; the rest continue."""

    def __init__(self, columns: list[tuple[str, str | None, str | None]] | None, *,
                 required: tuple[str, ...] | list[str] = (), where: str = "source",
                 formats: dict[str, dict[str, Any]] | None = None) -> None:
        """*columns*: (source dotted path, output name, type name) triples; None keeps every field.
        *required*: output columns that must not be null (the primary key). *formats*: per output name,
        how its text is written (``format`` for dates and timestamps, ``decimal_point``)."""
        formats = formats or {}
        self.columns = None if columns is None else [
            Column(tuple(path.split(".")), name or path.split(".")[-1], parse_type(t) if t else None,
                   formats.get(name or path.split(".")[-1], {}))
            for path, name, t in columns
        ]
        self.required = tuple(required)
        self.where = where

    def apply(self, batch: pa.RecordBatch) -> Mapped:
        bad_rows: dict[int, dict[str, Any]] = {}
        source = batch
        lines = raw = None
        if any(batch.schema.get_field_index(c) >= 0 for c in RESERVED):
            names = batch.schema.names
            lines = batch.column(LINE_COLUMN).to_pylist() if LINE_COLUMN in names else None
            raw = batch.column(RAW_COLUMN).to_pylist() if RAW_COLUMN in names else None
            if ERROR_COLUMN in names:
                for i, message in enumerate(batch.column(ERROR_COLUMN).to_pylist()):
                    if message:
                        bad_rows[i] = {"row": i, "column": message.split(":", 1)[0], "value": None,
                                       "reason": message}
            batch = batch.select([n for n in names if n not in RESERVED])
        if self.columns is None:
            out = batch
        else:
            arrays: list[pa.Array] = []
            for col in self.columns:
                arr, bad = _cast(extract(batch, col.path), col)
                arrays.append(arr)
                for row, (value, reason) in bad.items():
                    bad_rows.setdefault(row, {"row": row, "column": col.name, "value": value, "reason": reason})
            out = pa.RecordBatch.from_arrays(arrays, names=[c.name for c in self.columns])
        missing = [k for k in self.required if out.schema.get_field_index(k) < 0]
        if missing and out.num_rows:
            raise MappingError(f"{self.where}.primary_key: column(s) {', '.join(missing)} not in the records "
                               f"(columns: {', '.join(out.schema.names)})")
        for key in self.required:
            if key in missing:
                continue
            nulls = out.column(key).is_null()
            if pc.any(nulls).as_py():
                for i in pc.indices_nonzero(nulls).to_pylist():
                    bad_rows.setdefault(i, {"row": i, "column": key, "value": None,
                                            "reason": f"primary key {', '.join(self.required)} is null"})
        if not bad_rows:
            return Mapped(out, [])
        keep = pa.array([i not in bad_rows for i in range(batch.num_rows)])
        records = batch.filter(pc.invert(keep)).to_pylist()
        quarantine = []
        for rec, (i, info) in zip(records, sorted(bad_rows.items()), strict=True):
            text = raw[i] if raw is not None and raw[i] is not None else \
                json.dumps({k: v for k, v in rec.items() if v is not None or raw is None}, default=str,
                           ensure_ascii=False)
            row = lines[i] if lines is not None and lines[i] is not None else info["row"]
            quarantine.append({**info, "row": row, "record": text})
        del source
        return Mapped(out.filter(keep), quarantine, keep)


def extract(batch: pa.RecordBatch, path: tuple[str, ...]) -> pa.Array:
    """The values at a dotted path; rows where any step is missing or null give null."""
    idx = batch.schema.get_field_index(path[0])
    if idx < 0:
        return pa.nulls(batch.num_rows)
    arr: pa.Array = batch.column(idx)
    for step in path[1:]:
        if not pa.types.is_struct(arr.type) or arr.type.get_field_index(step) < 0:
            return pa.nulls(batch.num_rows)
        arr = pc.struct_field(arr, step)
    return arr


def _cast(arr: pa.Array, col: Column) -> tuple[pa.Array, dict[int, tuple[str, str]]]:
    target = col.type
    if target is None:
        return (arr.cast(pa.string()) if pa.types.is_null(arr.type) else arr), {}
    if target == JSON:
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            return arr, {}  # already JSON text (adapters serialize repeated children this way)
        return pa.array([None if v is None else json.dumps(v, default=str, ensure_ascii=False)
                         for v in arr.to_pylist()], pa.string()), {}
    assert isinstance(target, pa.DataType)
    if arr.type == target:
        return arr, {}
    if col.fmt and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        if col.fmt.get("thousands"):
            arr = pc.replace_substring(arr, col.fmt["thousands"], "")
        if col.fmt.get("decimal_point") and col.fmt["decimal_point"] != ".":
            arr = pc.replace_substring(arr, col.fmt["decimal_point"], ".")
        if col.fmt.get("format") and (pa.types.is_timestamp(target) or pa.types.is_date(target)):
            return _strptime(arr, target, col.fmt["format"], col.name)
    try:
        return _vector_cast(arr, target), {}
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return _row_cast(arr, target, col.name)


def _strptime(arr: pa.Array, target: pa.DataType, fmt: str,
              name: str) -> tuple[pa.Array, dict[int, tuple[str, str]]]:
    """Dates and timestamps written in a declared format (``%d.%m.%Y``); naive values are taken as UTC.

    Arrow's strptime normalizes impossible dates (31.02. becomes 02.03.), so every value whose parse
    does not print back to the same text is checked again by Python's strptime, which refuses them.
    """
    tz = target.tz if pa.types.is_timestamp(target) else None
    parsed = pc.strptime(arr, format=fmt, unit="us", error_is_null=True)
    echo = pc.strftime(parsed, format=fmt)
    suspect = pc.or_kleene(pc.and_(pc.is_null(parsed), pc.is_valid(arr)),
                           pc.not_equal(echo, pc.utf8_trim_whitespace(arr)))
    values = parsed.to_pylist()
    bad: dict[int, tuple[str, str]] = {}
    if pc.any(suspect).as_py():
        raw = arr.to_pylist()
        for i in pc.indices_nonzero(pc.fill_null(suspect, False)).to_pylist():
            try:
                values[i] = datetime.strptime(raw[i].strip(), fmt)
            except ValueError as exc:
                bad[i] = (str(raw[i])[:200], f"column {name}: cannot read {raw[i]!r} as {target} in format "
                                             f"{fmt!r}: {exc}")
                values[i] = None
    out = pa.array(values, pa.timestamp("us"))
    if tz is not None:
        out = out.cast(pa.timestamp("us", tz=tz))
    return out.cast(target), bad


def _vector_cast(arr: pa.Array, target: pa.DataType) -> pa.Array:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        if pa.types.is_timestamp(target) and target.tz is not None:
            # ISO strings with offsets ("...+02:00", "Z") normalize to UTC; naive ones are taken as UTC.
            parsed = pc.cast(arr, pa.timestamp(target.unit, tz="UTC"))
            return parsed.cast(target)
        if pa.types.is_boolean(target):
            lowered = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
            truthy = pc.is_in(lowered, pa.array(["true", "1", "yes", "y", "t"]))
            falsy = pc.is_in(lowered, pa.array(["false", "0", "no", "n", "f"]))
            if pc.any(pc.and_(pc.invert(pc.or_(truthy, falsy)), pc.is_valid(arr))).as_py():
                raise pa.ArrowInvalid("not a boolean")
            return pc.if_else(pc.is_valid(arr), truthy, pa.scalar(None, pa.bool_()))
    if pa.types.is_timestamp(arr.type) and pa.types.is_date(target):
        return pc.cast(arr, target)
    return pc.cast(arr, target, safe=True)


def _row_cast(arr: pa.Array, target: pa.DataType, name: str) -> tuple[pa.Array, dict[int, tuple[str, str]]]:
    good: list[Any] = []
    bad: dict[int, tuple[str, str]] = {}
    for i, v in enumerate(arr.to_pylist()):
        if v is None:
            good.append(None)
            continue
        try:
            good.append(_convert(v, target))
        except (ValueError, TypeError, InvalidOperation, OverflowError, pa.ArrowInvalid) as exc:
            bad[i] = (str(v)[:200], f"column {name}: cannot convert {v!r} to {target}: {exc}")
            good.append(None)
    return pa.array(good, type=target), bad


def _convert(v: Any, target: pa.DataType) -> Any:
    if pa.types.is_integer(target):
        if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
            raise ValueError("not an integer")
        out = int(v)
        pa.scalar(out, target)  # range check
        return out
    if pa.types.is_floating(target):
        return float(v)
    if pa.types.is_decimal(target):
        d = Decimal(str(v))
        pa.scalar(d, target)
        return d
    if pa.types.is_boolean(target):
        s = str(v).strip().lower()
        if s in ("true", "1", "yes", "y", "t"):
            return True
        if s in ("false", "0", "no", "n", "f"):
            return False
        raise ValueError("not a boolean")
    if pa.types.is_date(target):
        return v if isinstance(v, date) else date.fromisoformat(str(v)[:10])
    if pa.types.is_timestamp(target):
        ts = v if isinstance(v, datetime) else datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        return ts
    if pa.types.is_string(target):
        return v if isinstance(v, str) else json.dumps(v, default=str)
    return pa.scalar(v).cast(target).as_py()
