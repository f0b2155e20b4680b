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

This module holds the bookkeeping (:class:`Usage`) and what every protocol's uses share (a source's columns,
keys and child tables, what flows send and read); each protocol records its own scopes
(``hub/protocols/<name>/contract.py``).
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


# --- for the protocols' usage (hub.protocols.<name>.contract) and stream contracts ---------------------

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


