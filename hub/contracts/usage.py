"""Consumer-driven contracts: which parts of a system each pipeline actually uses.

A source uses what its spec names: the declared ``columns`` (dotted paths), its ``primary_key``, the
``records`` path, the paths of its child tables, the JSONPaths its pagination reads, the parameters it
sends, a SQL source's ``select`` / incremental cursor / the columns its query names. A source without
``columns`` uses every field of its records. A change to something no source uses is reported, never
breaking.

Uses are recorded per *scope* (one operation's input or output, one endpoint's response, one file
layout, one table) as paths without array markers; a change at path P concerns a use at path U when one
is a prefix of the other (a removed parent removes the field; a consumer of a whole structure sees every
change inside it).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.contracts.schema import ITEMS, Path, bare
from hub.spec.loader import Pipeline
from hub.spec.models import ResolvedSource

_JSONPATH_TOKEN = re.compile(r"\.([A-Za-z_$][\w$-]*)|\['([^']+)'\]|\[\"([^\"]+)\"\]|\[(\*|\d+)\]")


@dataclass(frozen=True)
class Use:
    source: str
    path: Path  # without array markers
    why: str
    key: bool = False  # a primary key or cursor: must never be missing or null

    def label(self) -> str:
        return f"{self.source} ({self.why})"


class Usage:
    """Every use of one system by one pipeline, by scope."""

    def __init__(self) -> None:
        self._uses: dict[str, list[Use]] = defaultdict(list)

    def add(self, scope: str, path: Path, source: str, why: str, *, key: bool = False) -> None:
        self._uses[scope].append(Use(source, bare(path), why, key))

    def users(self, scope: str, path: Path) -> list[Use]:
        """The uses a change at *path* of *scope* concerns."""
        p = bare(path)
        out = []
        for use in self._uses.get(scope, []):
            n = min(len(p), len(use.path))
            if p[:n] == use.path[:n]:
                out.append(use)
        return out


def labels(uses: list[Use]) -> list[str]:
    """``source (what)`` for each use, one entry per source with its reasons joined."""
    by_source: dict[str, list[str]] = defaultdict(list)
    for u in uses:
        if u.why not in by_source[u.source]:
            by_source[u.source].append(u.why)
    return [f"{s} ({', '.join(whys)})" for s, whys in sorted(by_source.items())]


def jsonpath_to_path(expr: str) -> Path | None:
    """``$.data[*]`` -> ``("data", "[]")``; None for expressions beyond plain member/index steps."""
    expr = expr.strip()
    if not expr.startswith("$"):
        return None
    rest, pos, out = expr[1:], 0, []
    while pos < len(rest):
        m = _JSONPATH_TOKEN.match(rest, pos)
        if m is None:
            return None
        name = m.group(1) or m.group(2) or m.group(3)
        out.append(name if name is not None else ITEMS)
        pos = m.end()
    return tuple(out)


def column_paths(source: ResolvedSource) -> list[tuple[str, str]]:
    """(source path, output name) of every declared column."""
    return [(path, spec.name or path) for path, spec in source.spec.column_specs()]


def key_paths(source: ResolvedSource) -> list[str]:
    """The source paths of the primary key columns (keys name output columns)."""
    by_name = {name: path for path, name in column_paths(source)}
    return [by_name.get(k, k) for k in source.spec.primary_key]


def record_uses(usage: Usage, scope: str, root: Path, source: ResolvedSource, records_label: str) -> None:
    """Columns (or every field), keys and child tables of *source*, relative to its records at *root*."""
    name = source.name
    if source.spec.columns:
        for path, _ in column_paths(source):
            usage.add(scope, (*root, *path.split(".")), name, f"column {path}")
    else:
        usage.add(scope, root, name, f"all fields of {records_label}")
    for key in key_paths(source):
        usage.add(scope, (*root, *key.split(".")), name, f"primary key {key}", key=True)
    for child, cspec in source.spec.children.items():
        base = (*root, *cspec.path.split("."))
        if cspec.columns:
            for path, _ in cspec.column_specs():
                usage.add(scope, (*base, *path.split(".")), name, f"child table {child} column {path}")
        else:
            usage.add(scope, base, name, f"child table {child}")


def system_sources(pipeline: Pipeline, system: str) -> list[ResolvedSource]:
    return [s for s in pipeline.sources.values() if s.system_name == system]


# --- per protocol --------------------------------------------------------------------------------------

def flow_uses(usage: Usage, pipeline: Pipeline, system: str, scopes: Any) -> None:
    """What the pipeline's flows send to and read from *system*: *scopes(operation)* gives the operation's
    scopes ``(operation, params, body, response)`` (None: the system has no such operation); a parameter, a
    field of a JSON body a flow writes, or a response field it reads is a use, so renaming it breaks."""
    from hub.spec.flows import flow_calls

    for call in flow_calls(pipeline.spec.flows, system):
        found = scopes(call.operation)
        if found is None:
            continue
        op_scope, params_scope, body_scope, response_scope = found
        who = f"flow {call.flow}"
        usage.add(op_scope, (), who, f"{call.why} {call.step}")
        for key, value in call.params.items():
            if key == "body" and body_scope is not None:
                for path in _dict_paths(value):
                    usage.add(body_scope, path, who, f"{call.step} writes body.{'.'.join(path)}", key=True)
            else:
                usage.add(params_scope, (key,), who, f"{call.step} sends {key}", key=True)
                for path in _dict_paths(value):
                    usage.add(params_scope, (key, *path), who, f"{call.step} sends {key}.{'.'.join(path)}",
                              key=True)
        for out, expr in call.outputs.items():
            read = jsonpath_to_path(expr)
            if read is not None and response_scope is not None:
                usage.add(response_scope, read, who, f"{call.step} reads {out}")


def _dict_paths(value: Any, prefix: Path = ()) -> list[Path]:
    if not isinstance(value, dict):
        return []
    out: list[Path] = []
    for k, v in value.items():
        out.append((*prefix, str(k)))
        out += _dict_paths(v, (*prefix, str(k)))
    return out


def stream_usage(pipeline: Pipeline, system: str, scope: Callable[[str], str]) -> Usage:
    """Scope ``scope(SOURCE)``: the fields of the records of a stream source's payloads it reads (its columns
    and keys, or every field)."""
    usage = Usage()
    for source in system_sources(pipeline, system):
        if source.stream is not None:
            records = source.stream.records
            record_uses(usage, scope(source.name), (), source, f"records {records}" if records else "the payload")
    return usage


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
