"""The column type names a spec may use, and their Arrow types.

Checking a name (:func:`check_type`, what the spec models do) needs no pyarrow: ``hub validate`` and the
start of ``hub run`` then do not pay for importing it before a load needs it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

JSON = "json"  # marker: serialize nested values to a JSON text column

_SIMPLE: dict[str, Callable[[Any], pa.DataType]] = {
    **dict.fromkeys(("string", "str", "text", "varchar"), lambda pa: pa.string()),
    **dict.fromkeys(("int", "int64", "integer", "bigint", "long"), lambda pa: pa.int64()),
    "int32": lambda pa: pa.int32(), "int16": lambda pa: pa.int16(), "int8": lambda pa: pa.int8(),
    **dict.fromkeys(("float", "float64", "double"), lambda pa: pa.float64()),
    "float32": lambda pa: pa.float32(),
    **dict.fromkeys(("bool", "boolean"), lambda pa: pa.bool_()),
    "date": lambda pa: pa.date32(),
    "timestamp": lambda pa: pa.timestamp("us"),
    "timestamptz": lambda pa: pa.timestamp("us", tz="UTC"),
    "time": lambda pa: pa.time64("us"),
    "binary": lambda pa: pa.binary(),
}
_DECIMAL = re.compile(r"^decimal\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
KNOWN = ", ".join([*_SIMPLE, "decimal(p,s)", JSON])


def check_type(name: str) -> tuple[str, tuple[int, int] | None]:
    """The normalised type name and, for a decimal, its (precision, scale); ValueError lists what is known."""
    key = name.strip().lower()
    if key in _SIMPLE or key == JSON:
        return key, None
    m = _DECIMAL.match(key)
    if m:
        precision, scale = int(m.group(1)), int(m.group(2))
        if not 1 <= precision <= 38 or scale > precision:
            raise ValueError(f"decimal({precision},{scale}): precision must be 1..38 and scale <= precision")
        return key, (precision, scale)
    raise ValueError(f"unknown type '{name}' (expected one of: {KNOWN})")


def parse_type(name: str) -> pa.DataType | str:
    """Arrow type for a spec type name, or the ``json`` marker. ValueError lists what is known."""
    import pyarrow as pa

    key, decimal = check_type(name)
    if decimal is not None:
        return pa.decimal128(*decimal)
    return JSON if key == JSON else _SIMPLE[key](pa)
