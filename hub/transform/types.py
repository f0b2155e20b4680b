"""The column type names a spec may use, and their Arrow types."""

from __future__ import annotations

import re

import pyarrow as pa

JSON = "json"  # marker: serialize nested values to a JSON text column

_SIMPLE: dict[str, pa.DataType] = {
    "string": pa.string(), "str": pa.string(), "text": pa.string(), "varchar": pa.string(),
    "int": pa.int64(), "int64": pa.int64(), "integer": pa.int64(), "bigint": pa.int64(), "long": pa.int64(),
    "int32": pa.int32(), "int16": pa.int16(), "int8": pa.int8(),
    "float": pa.float64(), "float64": pa.float64(), "double": pa.float64(), "float32": pa.float32(),
    "bool": pa.bool_(), "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "time": pa.time64("us"),
    "binary": pa.binary(),
}
_DECIMAL = re.compile(r"^decimal\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
KNOWN = ", ".join([*_SIMPLE, "decimal(p,s)", JSON])


def parse_type(name: str) -> pa.DataType | str:
    """Arrow type for a spec type name, or the ``json`` marker. ValueError lists what is known."""
    key = name.strip().lower()
    if key in _SIMPLE:
        return _SIMPLE[key]
    if key == JSON:
        return JSON
    m = _DECIMAL.match(key)
    if m:
        precision, scale = int(m.group(1)), int(m.group(2))
        if not 1 <= precision <= 38 or scale > precision:
            raise ValueError(f"decimal({precision},{scale}): precision must be 1..38 and scale <= precision")
        return pa.decimal128(precision, scale)
    raise ValueError(f"unknown type '{name}' (expected one of: {KNOWN})")
