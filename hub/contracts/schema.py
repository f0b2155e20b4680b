"""JSON Schemas for contracts: inferred from sampled records, normalized for comparison, and how two leaf
types relate (same, widened, narrowed, changed).

Paths into a schema are tuples of property names with ``"[]"`` for the items of an array
(``("data", "[]", "address", "city")`` is shown as ``data[].address.city``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

Path = tuple[str, ...]
ITEMS = "[]"

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


def show(path: Path) -> str:
    """``("data", "[]", "id")`` -> ``data[].id``; the root is shown as ``(root)``."""
    out = ""
    for part in path:
        out += part if part == ITEMS else (f".{part}" if out else part)
    return out or "(root)"


def bare(path: Path) -> Path:
    """The path without array markers, as consumers name fields (``data.id``)."""
    return tuple(p for p in path if p != ITEMS)


# --- inference -----------------------------------------------------------------------------------------

def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string"


def _string_format(values: list[str]) -> str | None:
    if not values:
        return None
    for name, pattern in (("date-time", _DATETIME), ("date", _DATE), ("time", _TIME)):
        if all(pattern.match(v) for v in values):
            return name
    return None


def infer(values: Iterable[Any]) -> dict[str, Any]:
    """The JSON Schema of *values* (all samples of one place in a document): observed types, the properties
    of objects (``required`` = present in every sampled object), array items, and string formats
    (date-time, date, time) when every sampled string has one. No samples: ``{}`` (unknown)."""
    values = list(values)
    if not values:
        return {}
    types = {_json_type(v) for v in values}
    if "integer" in types and "number" in types:
        types.discard("integer")
    schema: dict[str, Any] = {"type": sorted(types)[0] if len(types) == 1 else sorted(types)}
    objects = [v for v in values if isinstance(v, dict)]
    if objects:
        keys = sorted({k for o in objects for k in o})
        schema["properties"] = {k: infer(o[k] for o in objects if k in o) for k in keys}
        required = [k for k in keys if all(k in o for o in objects)]
        if required:
            schema["required"] = required
    arrays = [v for v in values if isinstance(v, list)]
    if arrays:
        schema["items"] = infer(item for a in arrays for item in a)
    strings = [v for v in values if isinstance(v, str)]
    fmt = _string_format(strings)
    if fmt:
        schema["format"] = fmt
    return schema


# --- normalization -------------------------------------------------------------------------------------

def unwrap(schema: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
    """(the schema without its null alternative, whether null is allowed). Understands ``anyOf`` with a
    null member (the SOAP catalog's nillable elements), ``type: [..., "null"]`` (inferred schemas) and
    OpenAPI 3.0's ``nullable: true``. A schema that allows only null becomes ``({}, True)``."""
    schema = dict(schema or {})
    nullable = bool(schema.pop("nullable", False))
    any_of = schema.get("anyOf")
    if isinstance(any_of, list):
        rest = [s for s in any_of if not (isinstance(s, dict) and s.get("type") == "null")]
        if len(rest) < len(any_of):
            nullable = True
        if len(rest) == 1:
            inner, inner_null = unwrap(rest[0])
            extra = {k: v for k, v in schema.items() if k != "anyOf"}
            return {**inner, **extra}, nullable or inner_null
        schema["anyOf"] = rest
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        nullable = nullable or len(kinds) < len(kind)
        if not kinds:
            return {}, True
        schema["type"] = kinds[0] if len(kinds) == 1 else kinds
    elif kind == "null":
        return {}, True
    return schema, nullable


def kind(schema: dict[str, Any]) -> str:
    """object | array | leaf | unknown (an empty schema: nothing observed)."""
    t = schema.get("type")
    if t == "object" or "properties" in schema:
        return "object"
    if t == "array" or "items" in schema:
        return "array"
    if not schema or (t is None and not schema.get("enum") and "anyOf" not in schema):
        return "unknown"
    return "leaf"


def properties(schema: dict[str, Any]) -> dict[str, Any]:
    props = schema.get("properties")
    return props if isinstance(props, dict) else {}


def required(schema: dict[str, Any]) -> set[str]:
    req = schema.get("required")
    return set(req) if isinstance(req, list) else set()


def canonical(schema: dict[str, Any]) -> Any:
    """A comparable form of a schema (nullability and descriptions ignored): what two elements must share
    to count as one element renamed."""
    inner, _ = unwrap(schema)
    out: dict[str, Any] = {}
    for key, value in sorted(inner.items()):
        if key in ("description", "title", "example", "examples", "x-element"):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {k: canonical(v) for k, v in sorted(value.items())}
        elif key == "items" and isinstance(value, dict):
            out[key] = canonical(value)
        elif isinstance(value, list):
            out[key] = [canonical(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out


def find_property(schema: dict[str, Any], name: str, max_depth: int = 12) -> Path | None:
    """The path to the first property called *name* (breadth first; an array preferred, as the SOAP
    adapter prefers a repeated element for ``records``). Array items appear as ``"[]"``."""
    queue: list[tuple[Path, dict[str, Any]]] = [((), schema)]
    best: Path | None = None
    while queue:
        path, node = queue.pop(0)
        if len(path) > max_depth:
            continue
        inner, _ = unwrap(node)
        if kind(inner) == "array":
            queue.append(((*path, ITEMS), inner.get("items") or {}))
            continue
        for key, child in properties(inner).items():
            child_inner, _ = unwrap(child)
            if key == name:
                if kind(child_inner) == "array":
                    return (*path, key)
                best = best or (*path, key)
            queue.append(((*path, key), child))
    return best


# --- leaf types ----------------------------------------------------------------------------------------

#: XSD integer types by width (the catalog keeps the XSD name under ``x-xsd-type``).
_XSD_INT_RANK = {"byte": 1, "unsignedByte": 1, "short": 2, "unsignedShort": 2, "int": 3, "unsignedInt": 3,
                 "long": 4, "unsignedLong": 4, "integer": 5, "nonNegativeInteger": 5, "positiveInteger": 5,
                 "nonPositiveInteger": 5, "negativeInteger": 5}
_OPENAPI_INT_RANK = {"int32": 3, "int64": 4}


def leaf_label(schema: dict[str, Any]) -> str:
    """A short, readable name of a leaf type: ``integer (xsd long)``, ``number decimal(14,2)``,
    ``string date-time``, ``string enum[open, shipped]``."""
    inner, nullable = unwrap(schema)
    k = kind(inner)
    if k == "unknown":
        label = "null" if nullable else "any"
        return label
    if k == "object":
        xsd = inner.get("x-xsd-type")
        label = f"object ({str(xsd).rsplit('}', 1)[-1]})" if xsd else "object"
    elif k == "array":
        label = f"array of {leaf_label(inner.get('items') or {})}"
    else:
        t = inner.get("type")
        label = "|".join(t) if isinstance(t, list) else str(t or "any")
        if "x-precision" in inner:
            label += f" decimal({inner['x-precision']},{inner.get('x-scale', 0)})"
        elif inner.get("format"):
            label += f" {inner['format']}"
        if inner.get("contentEncoding"):
            label += f" {inner['contentEncoding']}"
        xsd = inner.get("x-xsd-type")
        if xsd and "x-precision" not in inner and xsd not in (t, "string", "boolean", "dateTime", "date", "time"):
            label += f" (xsd {str(xsd).rsplit('}', 1)[-1]})"
        if inner.get("enum"):
            label += " enum[" + ", ".join(map(str, inner["enum"])) + "]"
    return label + (" or null" if nullable else "")


def _int_rank(schema: dict[str, Any]) -> int | None:
    xsd = schema.get("x-xsd-type")
    if isinstance(xsd, str) and xsd in _XSD_INT_RANK:
        return _XSD_INT_RANK[xsd]
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _OPENAPI_INT_RANK:
        return _OPENAPI_INT_RANK[fmt]
    return None


def relation(before: dict[str, Any], after: dict[str, Any]) -> str:
    """How leaf type *after* relates to *before*: ``same``, ``widened`` (every old value still fits),
    ``narrowed`` (some old values would not fit) or ``changed``. Enumerations are compared separately."""
    b = {k: v for k, v in unwrap(before)[0].items() if k not in ("enum", "description", "title", "example")}
    a = {k: v for k, v in unwrap(after)[0].items() if k not in ("enum", "description", "title", "example")}
    if b == a:
        return "same"
    tb, ta = b.get("type"), a.get("type")
    if isinstance(tb, list) or isinstance(ta, list):
        sb = set(tb) if isinstance(tb, list) else {tb}
        sa = set(ta) if isinstance(ta, list) else {ta}
        return "same" if sb == sa else "widened" if sb < sa else "narrowed" if sa < sb else "changed"
    if tb == "integer" and ta == "integer":
        rb, ra = _int_rank(b), _int_rank(a)
        if rb is None or ra is None or rb == ra:
            return "same" if _strip_names(b) == _strip_names(a) else "changed"
        return "widened" if ra > rb else "narrowed"
    if tb == "integer" and ta == "number":
        return "widened"
    if tb == "number" and ta == "integer":
        return "narrowed"
    if tb == "number" and ta == "number":
        pb, pa = (b.get("x-precision"), b.get("x-scale", 0)), (a.get("x-precision"), a.get("x-scale", 0))
        if pb[0] is None and pa[0] is None:
            return "same" if b.get("format") == a.get("format") else "changed"
        if pb[0] is None:  # an unbounded number became a decimal
            return "narrowed"
        if pa[0] is None:
            return "widened"
        digits_b, digits_a = pb[0] - pb[1], pa[0] - pa[1]
        if digits_a >= digits_b and pa[1] >= pb[1]:
            return "widened" if (digits_a, pa[1]) != (digits_b, pb[1]) else "same"
        if digits_a <= digits_b and pa[1] <= pb[1]:
            return "narrowed"
        return "changed"
    if tb == ta == "string":
        if b.get("format") == a.get("format") and b.get("contentEncoding") == a.get("contentEncoding"):
            return "same" if _strip_names(b) == _strip_names(a) else "changed"
        return "changed"
    if tb == ta:
        return "same" if _strip_names(b) == _strip_names(a) else "changed"
    return "changed"


def _strip_names(schema: dict[str, Any]) -> dict[str, Any]:
    """A leaf schema without facets that do not change what values look like (names, bounds, defaults)."""
    ignore = {"x-xsd-type", "minimum", "maximum", "minLength", "maxLength", "default", "pattern", "x-element"}
    return {k: v for k, v in schema.items() if k not in ignore}
