"""Turning parsed records (dicts from JSON, XML, CSV ...) into typed Arrow record batches.

Arrow infers one type per field over the whole batch (the union of keys over all records, unlike
``RecordBatch.from_pylist`` which trusts the first row). When a field mixes kinds (a number in one
record, text in the next) only that column becomes text, so one odd partner record never loses the
types of every other column.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def records_to_batch(records: Sequence[Any]) -> pa.RecordBatch:
    """Convert *records* (dicts, or scalars wrapped as ``value``) to one record batch.

    Built column by column: each column's type is inferred from its own values (the union of keys over
    all records, not only the first record's), and a column whose values mix kinds (a number in one
    record, text in the next) becomes text while every other column keeps its type. Column-wise
    conversion is also ~2.5x faster than ``pa.array`` over the whole list of dicts.
    """
    rows = [r if isinstance(r, dict) else {"value": r} for r in records]
    if not rows:
        return pa.RecordBatch.from_pydict({})
    first = rows[0].keys()
    if all(r.keys() == first for r in rows):
        keys: Iterable[str] = list(first)
    else:
        keys = dict.fromkeys(k for row in rows for k in row)
    columns: dict[str, pa.Array] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        try:
            columns[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            columns[key] = pa.array([_text(v) for v in values], type=pa.string())
    return pa.RecordBatch.from_pydict(columns)
