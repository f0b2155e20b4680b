"""Turning parsed records (dicts from JSON, XML, CSV ...) into typed Arrow record batches.

Arrow infers one type per field over the whole batch (``pa.array`` on a list of dicts sees the union
of keys, unlike ``RecordBatch.from_pylist`` which trusts the first row). When a field mixes kinds (a
number in one record, text in the next) the batch is rebuilt column by column and only the mixed
columns become text, so one odd partner record never loses the types of every other column.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa


def _as_dict(record: Any) -> dict[str, Any]:
    return record if isinstance(record, dict) else {"value": record}


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def records_to_batch(records: Sequence[Any]) -> pa.RecordBatch:
    """Convert *records* (dicts, or scalars wrapped as ``value``) to one record batch."""
    rows = [_as_dict(r) for r in records] if records and not isinstance(records[0], dict) else records
    try:
        arr = pa.array(rows)
        if pa.types.is_struct(arr.type) and arr.type.num_fields > 0:
            return pa.RecordBatch.from_struct_array(arr)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        pass
    return _columnwise([_as_dict(r) for r in rows])


def _columnwise(rows: Sequence[dict[str, Any]]) -> pa.RecordBatch:
    keys: dict[str, None] = {}
    for row in rows:
        for k in row:
            keys.setdefault(k, None)
    if not keys:
        return pa.RecordBatch.from_pydict({})
    columns: dict[str, pa.Array] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        try:
            columns[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            columns[key] = pa.array([_text(v) for v in values], type=pa.string())
    return pa.RecordBatch.from_pydict(columns)


def chunked(records: Iterable[Any], size: int) -> Iterable[list[Any]]:
    """Group *records* into lists of at most *size* (bounded memory between parse and convert)."""
    buf: list[Any] = []
    for r in records:
        buf.append(r)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf
