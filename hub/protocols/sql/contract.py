"""SQL's contract (:meth:`hub.protocols.sql.SqlProtocol.collect` and ``compare``): the columns, types and keys of
the tables the sources read and the flows write, and the stored procedures flows call
(:func:`adapters.sql.catalog.describe`); the columns each source and flow uses; and the changes between a
snapshot and the live database.

Imported by the plugin's hooks on first use (it needs :mod:`hub.contracts`, above the spec layer).
"""

from __future__ import annotations

from typing import Any

from hub.contracts.diff import Change, Differ, column_relation, compare_columns
from hub.contracts.usage import Usage, column_paths, flow_uses, key_paths, system_sources
from hub.spec.loader import Pipeline
from hub.spec.models import ResolvedSource


def collect_sql(pipeline: Pipeline, system: str) -> dict[str, Any]:
    from adapters.sql.catalog import describe, describe_procedures
    from hub.spec.flows import flow_calls

    sources = system_sources(pipeline, system)
    written = sql_flow_writes(pipeline, system)
    calls = flow_calls(pipeline.spec.flows, system)
    flow_tables = {written[c.operation] for c in calls if c.operation in written}
    called = sql_flow_procedures(pipeline, system)
    flow_procs = {called[c.operation] for c in calls if c.operation in called}
    if not sources and not flow_tables and not flow_procs:
        return {"tables": {}}
    block = pipeline.spec.systems[system]
    cfg = block.protocol.resolve_system(system, block, root=pipeline.root)
    procedures: dict[str, Any] = {}
    for schema_name in sorted({s for s, _ in flow_procs}, key=lambda s: s or ""):  # what flows call, by schema
        names = {p for s, p in flow_procs if s == schema_name}
        for name, proc in describe_procedures(cfg, names, schema_name).items():
            procedures[table_key(name, schema_name)] = proc
    wanted: dict[str | None, set[str]] = {}
    for schema_name, table_name in flow_tables:  # the tables flows write are part of the contract too
        wanted.setdefault(schema_name, set()).add(table_name)
    for source in sources:
        sql = source.config
        assert sql is not None
        if sql.table is not None:
            wanted.setdefault(sql.schema_, set()).add(sql.table)
        elif sql.query is not None:
            for key in query_columns(sql.query, sqlglot_dialect(source)):
                prefix, _, table = key.rpartition(".")
                wanted.setdefault(prefix or None, set()).add(table)
    tables: dict[str, Any] = {}
    dialect = None
    for schema, names in sorted(wanted.items(), key=lambda kv: kv[0] or ""):
        catalog = describe(cfg, schema=schema, tables=names)
        dialect = catalog["dialect"]
        for t in catalog["tables"]:
            tables[table_key(t["name"], schema)] = {
                "kind": t["kind"], "columns": t["columns"], "primary_key": t["primary_key"],
                "foreign_keys": [{k: v for k, v in fk.items() if v is not None} for fk in t["foreign_keys"]]}
    out: dict[str, Any] = {"dialect": dialect, "tables": tables}
    if flow_procs:
        out["procedures"] = procedures
    return out


def sql_flow_writes(pipeline: Pipeline, system: str) -> dict[str, tuple[str | None, str]]:
    """The writes of the system's ``writes:`` block as flows call them: action operation (``upsert_paid``)
    -> (schema, table). Procedures have no columns to reflect and are left out."""
    block = pipeline.spec.systems.get(system)
    writes = getattr(block.config, "writes", None) if block is not None else None
    if writes is None:
        return {}
    return {f"{mode}_{table}": (writes.schema_, table) for table, spec in writes.tables.items()
            for mode in spec.modes}


def sql_flow_procedures(pipeline: Pipeline, system: str) -> dict[str, tuple[str | None, str]]:
    """The procedures of the system's ``writes:`` block as flows call them: operation (``call_settle``) ->
    (schema, procedure)."""
    block = pipeline.spec.systems.get(system)
    writes = getattr(block.config, "writes", None) if block is not None else None
    if writes is None:
        return {}
    return {f"call_{proc}": (writes.schema_, proc) for proc in writes.procedures}


def sql_usage(pipeline: Pipeline, system: str) -> Usage:
    """Scope ``table:NAME``: the columns each table or query source reads, and each column a flow writes
    (a parameter of ``insert_/update_/upsert_<table>``): renaming or removing it breaks the flow. Scope
    ``procedure:NAME``: a stored procedure a flow calls (its arguments are positional: removing it or changing
    its parameters' number, order or types breaks the flow)."""
    usage = Usage()
    written = sql_flow_writes(pipeline, system)
    called = sql_flow_procedures(pipeline, system)

    def flow_scopes(op: str) -> tuple[str, str, None, None] | None:
        if op in called:
            scope = f"procedure:{table_key(called[op][1], called[op][0])}"
            return scope, f"{scope}:args", None, None
        if op not in written:
            return None
        scope = f"table:{table_key(written[op][1], written[op][0])}"
        return f"{scope}:write", scope, None, None  # the op scope is not compared: a table's columns are

    flow_uses(usage, pipeline, system, flow_scopes)
    for source in system_sources(pipeline, system):
        sql = source.config
        if sql.table is not None:
            scope = f"table:{table_key(sql.table, sql.schema_)}"
            if sql.select is not None:
                for col in sql.select:
                    usage.add(scope, (col,), source.name, f"select {col}")
            elif source.spec.columns:
                for path, _ in column_paths(source):
                    usage.add(scope, (path.split(".")[0],), source.name, f"column {path}")
            else:
                usage.add(scope, (), source.name, "all columns")
            for key in key_paths(source):
                usage.add(scope, (key.split(".")[0],), source.name, f"primary key {key}", key=True)
            if sql.incremental is not None:
                cursor = sql.incremental.cursor
                usage.add(scope, (cursor,), source.name, f"incremental cursor {cursor}", key=True)
        elif sql.query is not None:
            for table, columns in query_columns(sql.query, sqlglot_dialect(source)).items():
                scope = f"table:{table}"
                if columns is None:
                    usage.add(scope, (), source.name, "query (all columns)")
                else:
                    for col in columns:
                        usage.add(scope, (col,), source.name, f"query column {col}")
    return usage


def table_key(table: str, schema: str | None) -> str:
    return f"{schema}.{table}" if schema else table


def sqlglot_dialect(source: ResolvedSource) -> str:
    """sqlglot's name for the dialect of a SQL source's database (from its URL's scheme)."""
    url = str(getattr(source.system.config, "url", ""))
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    return {"postgresql": "postgres", "mssql": "tsql", "mariadb": "mysql"}.get(scheme, scheme)


def query_columns(query: str, dialect: str = "") -> dict[str, list[str] | None]:
    """The tables a query reads and the columns it names in each (None: ``*``, every column). Unqualified
    columns of a query over several tables count for each of them."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(query, read=dialect or None)
    except (sqlglot.errors.ParseError, ValueError):
        try:
            tree = sqlglot.parse_one(query)
        except sqlglot.errors.ParseError:
            return {}
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    tables: dict[str, str] = {}  # alias or name -> table key
    for t in tree.find_all(exp.Table):
        if not t.name or t.name in ctes:
            continue
        key = table_key(t.name, t.db or None)
        tables[t.alias_or_name] = key
        tables[t.name] = key
    out: dict[str, list[str] | None] = {key: [] for key in set(tables.values())}
    star = any(isinstance(s, exp.Star) for s in tree.find_all(exp.Star))
    for col in tree.find_all(exp.Column):
        if isinstance(col.this, exp.Star):
            star = True
            continue
        owners = [tables[col.table]] if col.table and col.table in tables else list(out)
        for key in owners:
            cols = out.get(key)
            if cols is not None and col.name not in cols:
                cols.append(col.name)
    if star:
        return dict.fromkeys(out)
    return {k: sorted(v) if v is not None else None for k, v in out.items()}


def compare_sql(system: str, before: dict[str, Any], after: dict[str, Any], usage: Usage) -> list[Change]:
    d = Differ(system, usage)
    if before.get("dialect") != after.get("dialect"):
        d.add("database", "", "dialect changed", before.get("dialect"), after.get("dialect"), uses=[], breaking=False)
    tb, ta = before.get("tables") or {}, after.get("tables") or {}
    for name, table in tb.items():
        scope = f"table:{name}"
        element = f"{table.get('kind', 'table')} {name}"
        live = ta.get(name)
        if live is None:
            uses = usage.users(scope, ())
            d.add(element, "", f"{table.get('kind', 'table')} removed", name, "absent", uses=uses,
                  breaking=bool(uses))
            continue
        compare_columns(d, table.get("columns") or [], live.get("columns") or [], element=element, scope=scope,
                         positional=False, relation_=column_relation, nullability=True)
        if table.get("primary_key") != live.get("primary_key"):
            d.add(element, "primary key", "primary key changed", ", ".join(table.get("primary_key") or []) or "none",
                  ", ".join(live.get("primary_key") or []) or "none", uses=[], breaking=False)
    for name, table in ta.items():
        if name not in tb:
            d.add(f"{table.get('kind', 'table')} {name}", "", "not in the snapshot (take a new snapshot)", "absent",
                  name, uses=[], breaking=False)
    _compare_procedures(d, before.get("procedures") or {}, after.get("procedures") or {}, usage)
    return d.changes


def _signature(params: list[dict[str, Any]], *, names: bool = True) -> str:
    return "(" + ", ".join(f"{p.get('mode', 'IN')} {p.get('name') or '?'} {p.get('type')}" if names
                           else f"{p.get('mode', 'IN')} {p.get('type')}" for p in params) + ")"


def _compare_procedures(d: Differ, before: dict[str, Any], after: dict[str, Any], usage: Usage) -> None:
    """Stored procedures flows call: they take positional arguments, so a procedure removed, or one whose
    parameters changed in number, order, type or mode, breaks every flow that calls it; a parameter renamed
    (same types, same order) does not."""
    for name, proc in before.items():
        element = f"{proc.get('kind', 'procedure')} {name}"
        uses = usage.users(f"procedure:{name}", ())
        live = after.get(name)
        if live is None:
            d.add(element, "", f"{proc.get('kind', 'procedure')} removed", name, "absent", uses=uses,
                  breaking=bool(uses))
            continue
        was, now = proc.get("signatures") or [], live.get("signatures") or []
        if [_signature(s, names=False) for s in was] != [_signature(s, names=False) for s in now]:
            d.add(element, "parameters", "parameters changed", " | ".join(_signature(s) for s in was),
                  " | ".join(_signature(s) for s in now), uses=uses, breaking=bool(uses))
        elif [_signature(s) for s in was] != [_signature(s) for s in now]:
            d.add(element, "parameters", "parameter renamed", " | ".join(_signature(s) for s in was),
                  " | ".join(_signature(s) for s in now), uses=[], breaking=False)
    for name, proc in after.items():
        if name not in before:
            d.add(f"{proc.get('kind', 'procedure')} {name}", "", "not in the snapshot (take a new snapshot)",
                  "absent", name, uses=[], breaking=False)
