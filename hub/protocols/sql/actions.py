"""SQL's actions for the catalog and their guarded execution: every table and view (of the schemas the sources
read; :func:`adapters.sql.catalog.describe`), read-only, and the writes of the system's ``writes:`` block, for
flows only. A guarded call (:func:`sql_call`) is one read-only, parameter-bound SELECT through the SQL adapter.

Imported by the plugin's hooks on first use (it needs :mod:`hub.agent`, above the spec layer); the guard
(and pyarrow with it) only by the calls, so building the catalog stays light.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from hub.agent.catalog import Action
from hub.errors import Refused
from hub.spec.loader import Pipeline

if TYPE_CHECKING:
    from hub.agent.guard import Fetched

SQL_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "columns": {"type": "array", "items": {"type": "string"}, "description": "Columns to return (default all)."},
        "where": {"type": "object", "description": "Column -> value: rows where every column equals its value."},
        "order_by": {"type": "array", "items": {"type": "string"}, "description": "Columns to sort by; "
                                                                                   "'-col' for descending."},
        "limit": {"type": "integer", "minimum": 1, "description": "Rows to return at most."},
    },
    "required": [],
    "additionalProperties": False,
}


def sql_system(pipeline: Pipeline, system: str) -> Any:
    """The resolved SQL system config; a relative SQLite path is taken from the project root."""
    block = pipeline.spec.systems[system]
    return block.protocol.resolve_system(system, block, root=pipeline.root)


def sql_actions(pipeline: Pipeline, system: str) -> list[Action]:
    from adapters.sql.catalog import describe

    cfg = sql_system(pipeline, system)
    schemas = {s.config.schema_ for s in pipeline.sources.values() if s.system_name == system}
    out = []
    for schema in sorted(schemas, key=lambda s: s or "") or [None]:
        catalog = describe(cfg, schema=schema)
        for t in catalog["tables"]:
            readers = [s.name for s in pipeline.sources.values() if s.system_name == system
                       and s.config.table == t["name"]]
            text = f"Rows of the {t['kind']} {t['name']}" + (f" ({t['description']})" if t["description"] else "")
            text += f"; columns {', '.join(c['name'] for c in t['columns'])}"
            if t["primary_key"]:
                text += f"; primary key {', '.join(t['primary_key'])}"
            if readers:
                text += f"; read by source {', '.join(readers)}"
            binding: dict[str, Any] = {"table": t["name"], "kind": t["kind"]}
            if schema:
                binding["schema"] = schema
            name = f"{system}.{t['name']}" if not schema else f"{system}.{schema}.{t['name']}"
            out.append(Action(name=name, system=system, protocol="sql", description=text,
                              input_schema=copy.deepcopy(SQL_INPUT), output_schema=t["schema"],
                              side_effect="read", binding=binding, pipeline=pipeline.name))
    return out


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def sql_call(pipeline: Pipeline, action: Action, params: dict[str, Any], limit: int) -> Fetched:
    from adapters.sql import SqlSource, SqlSourceConfig
    from hub.agent.guard import Fetched, take  # pyarrow: only when calling, so building the catalog stays light

    known = list(action.output_schema.get("properties") or {})

    def column(name: Any, what: str) -> str:
        if not isinstance(name, str) or name not in known or not _IDENT.match(name):
            raise Refused(f"{action.name}: {what} '{name}' is not a column of {action.binding['table']} "
                          f"(columns: {', '.join(known)})")
        return f'"{name}"'

    cols = params.get("columns") or []
    if not isinstance(cols, list):
        raise Refused(f"{action.name}: columns must be a list of column names")
    selected = ", ".join(column(c, "column") for c in cols) or "*"
    where = params.get("where") or {}
    if not isinstance(where, dict):
        raise Refused(f"{action.name}: where must be an object (column -> value)")
    table = str(action.binding["table"])
    if not _IDENT.match(table):
        raise Refused(f"{action.name}: table name {table!r} cannot be queried safely")
    qualified = f'"{action.binding["schema"]}"."{table}"' if action.binding.get("schema") else f'"{table}"'
    bound: dict[str, Any] = {}
    conditions = []
    for i, (key, value) in enumerate(where.items()):
        if value is None:
            conditions.append(f"{column(key, 'where column')} IS NULL")
        else:
            conditions.append(f"{column(key, 'where column')} = :p{i}")
            bound[f"p{i}"] = value
    clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    order = []
    for item in params.get("order_by") or []:
        desc = isinstance(item, str) and item.startswith("-")
        order.append(column(item[1:] if desc else item, "order_by column") + (" DESC" if desc else ""))
    order_clause = f" ORDER BY {', '.join(order)}" if order else ""
    want = min(int(params.get("limit") or limit), limit)
    cfg = sql_system(pipeline, action.system)

    def run(query: str) -> list[dict[str, Any]]:
        src = SqlSource(cfg, SqlSourceConfig.model_validate({"query": query, "params": bound}), name=action.name)
        rows, _ = take(src.batches(), want)
        return rows

    rows = run(f"SELECT {selected} FROM {qualified}{clause}{order_clause} LIMIT {int(want)}")
    total = run(f"SELECT count(*) AS n FROM {qualified}{clause}")[0]["n"]
    return Fetched(rows, int(total))


def write_actions(pipeline: Pipeline, system: str, reads: list[Any]) -> list[Any]:
    """The writes the system's ``writes:`` block declares, for flows: ``<mode>_<table>`` (insert, update,
    upsert; the table's columns as parameters, the key required for update and upsert) and
    ``call_<procedure>`` (positional ``args``)."""
    cfg = pipeline.spec.systems[system].config
    writes = cfg.writes
    if writes is None:
        return []
    out = []
    columns = {a.binding.get("table"): a.output_schema for a in reads}
    for table, spec in writes.tables.items():
        props = {k: {kk: vv for kk, vv in v.items() if kk != "description"}
                 for k, v in ((columns.get(table) or {}).get("properties") or {}).items()}
        for mode in spec.modes:
            out.append(Action(
                name=f"{system}.{mode}_{table}", system=system, protocol="sql",
                description=f"{mode} one row of {table} (flows only)",
                input_schema={"type": "object", "properties": props,
                              "required": list(spec.key) if mode != "insert" else []},
                output_schema={"type": "object", "properties": {"rows": {"type": "integer"}}}, side_effect="write",
                binding={"table": table, "schema": writes.schema_, "mode": mode, "key": list(spec.key), "write": True,
                         "idempotent": mode in ("update", "upsert")},
                pipeline=pipeline.name))
    if writes.procedures:
        from adapters.sql.catalog import describe_procedures, procedure_schema

        live = describe_procedures(sql_system(pipeline, system), writes.procedures, writes.schema_)
    for proc in writes.procedures:
        found = live.get(proc)
        what = f"{found['kind']} {proc}" if found else f"{proc} (not found in the database)"
        out.append(Action(
            name=f"{system}.call_{proc}", system=system, protocol="sql", description=f"call {what} (flows only)",
            input_schema=procedure_schema(found["signatures"] if found else []),
            output_schema={}, side_effect="write",
            binding={"procedure": proc, "schema": writes.schema_, "mode": "call", "write": True,
                     **({"arg_types": [p["type"] for p in found["signatures"][0]]}
                        if found and len(found["signatures"]) == 1 else {})},
            pipeline=pipeline.name))
    return out
