"""Discovery: every table and view of a database with columns, types, keys and a JSON Schema per table.

What a person reads to write a source (``hub catalog sql URL``) and what the agent layer turns into
read actions. Types are reported three ways: as the database names them, as the Arrow type the hub
loads them as, and as JSON Schema.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from adapters.sql._engine import engine, shown, source_url
from adapters.sql._types import arrow_type
from adapters.sql.config import SqlSystemConfig
from hub.errors import AdapterError


def json_type(dtype: pa.DataType) -> dict[str, Any]:
    """JSON Schema of values of an Arrow type."""
    if pa.types.is_boolean(dtype):
        return {"type": "boolean"}
    if pa.types.is_integer(dtype):
        return {"type": "integer"}
    if pa.types.is_floating(dtype):
        return {"type": "number"}
    if pa.types.is_decimal(dtype):
        return {"type": "string", "format": "decimal", "x-precision": dtype.precision, "x-scale": dtype.scale}
    if pa.types.is_timestamp(dtype):
        return {"type": "string", "format": "date-time"}
    if pa.types.is_date(dtype):
        return {"type": "string", "format": "date"}
    if pa.types.is_time(dtype):
        return {"type": "string", "format": "time"}
    if pa.types.is_duration(dtype):
        return {"type": "string", "format": "duration"}
    if pa.types.is_binary(dtype):
        return {"type": "string", "contentEncoding": "base64"}
    return {"type": "string"}


def describe(cfg: SqlSystemConfig, schema: str | None = None, tables: Collection[str] | None = None) -> dict[str, Any]:
    """The catalog of the database of *cfg*: tables and views of *schema* (default: the connection's); only
    those named in *tables* when given (names that do not exist are left out)."""
    url = source_url(cfg)
    eng = engine(cfg, url)
    try:
        with eng.connect() as conn:
            insp = sa.inspect(conn)
            found = [(n, "table") for n in insp.get_table_names(schema=schema)]
            found += [(n, "view") for n in insp.get_view_names(schema=schema)]
            if tables is not None:
                found = [(n, k) for n, k in found if n in tables]
            dialect = url.get_backend_name()
            out = [_table(insp, name, kind, schema, cfg.timezone, dialect) for name, kind in sorted(found)]
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise AdapterError(f"catalog of {shown(url)}: {reason}") from None
    finally:
        eng.dispose()
    return {"url": shown(url), "dialect": url.get_backend_name(), "schema": schema, "tables": out}


def _table(insp: Any, name: str, kind: str, schema: str | None, timezone: str | None,
           dialect: str) -> dict[str, Any]:
    columns = insp.get_columns(name, schema=schema)
    pk = (insp.get_pk_constraint(name, schema=schema) or {}).get("constrained_columns") or [] if kind == "table" \
        else []
    fks = insp.get_foreign_keys(name, schema=schema) if kind == "table" else []
    props: dict[str, Any] = {}
    cols = []
    for col in columns:
        dtype = arrow_type(col["type"], timezone=timezone, dialect=dialect)
        js = json_type(dtype)
        if col.get("nullable", True):
            js = {"anyOf": [js, {"type": "null"}]}
        if col.get("comment"):
            js["description"] = col["comment"]
        props[col["name"]] = js
        cols.append({"name": col["name"], "type": str(col["type"]), "arrow": str(dtype),
                     "nullable": bool(col.get("nullable", True))})
    try:
        comment = (insp.get_table_comment(name, schema=schema) or {}).get("text")
    except NotImplementedError:
        comment = None
    required = [c["name"] for c in columns if not c.get("nullable", True)]
    return {
        "name": name, "kind": kind, "description": comment, "columns": cols, "primary_key": list(pk),
        "foreign_keys": [{"columns": fk["constrained_columns"], "references": fk["referred_table"],
                          "referred_columns": fk["referred_columns"], "referred_schema": fk.get("referred_schema")}
                         for fk in fks],
        "schema": {"type": "object", "title": name, "properties": props, "required": required},
    }


#: JSON Schema of a routine parameter by the type name information_schema gives (lower case); others: any value.
_PARAM_TYPES: dict[str, dict[str, Any]] = {
    name: {"type": kind} if kind else {}
    for kind, names in (
        ("integer", ("smallint", "integer", "int", "bigint", "tinyint", "mediumint")),
        ("number", ("numeric", "decimal", "real", "double precision", "double", "float")),
        ("boolean", ("boolean", "bool")),
        ("string", ("text", "character varying", "varchar", "character", "char", "uuid", "date", "time",
                    "timestamp without time zone", "timestamp with time zone", "timestamp", "datetime",
                    "mediumtext", "longtext", "tinytext", "enum")),
        ("", ("json", "jsonb")))
    for name in names}

_ROUTINES = sa.text("""
SELECT r.routine_name, r.routine_type, r.specific_name, p.ordinal_position, p.parameter_name, p.data_type,
       p.parameter_mode
FROM information_schema.routines r
LEFT JOIN information_schema.parameters p
       ON p.specific_schema = r.routine_schema AND p.specific_name = r.specific_name AND p.ordinal_position > 0
WHERE r.routine_schema = :schema AND r.routine_name IN :names
ORDER BY r.routine_name, r.specific_name, p.ordinal_position
""").bindparams(sa.bindparam("names", expanding=True))


def describe_procedures(cfg: SqlSystemConfig, names: Collection[str], schema: str | None = None) -> dict[str, Any]:
    """The stored procedures (and functions) *names* of *schema* (default: the connection's) as the database's
    ``information_schema`` describes them: ``{name: {"kind", "signatures": [[{"name", "type", "mode"}...]]}}``,
    one signature per overload, parameters in call order. Names that do not exist are left out; a database
    without routines (SQLite) has none. What a flow's ``call_<procedure>`` is checked against, and what its
    contract keeps."""
    url = source_url(cfg)
    if not names or url.get_backend_name() == "sqlite":
        return {}
    eng = engine(cfg, url)
    found: dict[str, Any] = {}
    try:
        with eng.connect() as conn:
            where = schema or sa.inspect(conn).default_schema_name
            rows = conn.execute(_ROUTINES, {"schema": where, "names": sorted(names)}).all()
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise AdapterError(f"procedures of {shown(url)}: {reason}") from None
    finally:
        eng.dispose()
    overloads: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for name, kind, specific, position, param, dtype, mode in rows:
        entry = found.setdefault(str(name), {"kind": str(kind).lower(), "signatures": []})
        params = overloads.get((str(name), str(specific)))
        if params is None:
            params = overloads[(str(name), str(specific))] = []
            entry["signatures"].append(params)
        if position is not None:
            params.append({"name": param, "type": str(dtype).lower(), "mode": str(mode or "IN").upper()})
    return found


def procedure_schema(signatures: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """The JSON Schema of a ``call_<procedure>`` request (``{"args": [...]}``, positional) for a procedure with
    one signature: as many arguments as parameters, each of its parameter's type; with overloads, any list."""
    if len(signatures) != 1:
        return {"type": "object", "properties": {"args": {"type": "array"}}, "required": ["args"]}
    [params] = signatures
    items = [{**_PARAM_TYPES.get(p["type"], {}), "title": p["name"] or f"${i + 1}",
              "description": f"{p['mode']} {p['type']}"} for i, p in enumerate(params)]
    items = [{"anyOf": [item, {"type": "null"}], "title": item["title"], "description": item["description"]}
             if "type" in item else item for item in items]
    return {"type": "object", "required": ["args"], "properties": {"args": {
        "type": "array", "prefixItems": items, "minItems": len(params), "maxItems": len(params),
        "description": "the procedure's arguments, in order: "
                       + ", ".join(f"{p['name'] or '$' + str(i + 1)} ({p['type']})" for i, p in enumerate(params))}}}
