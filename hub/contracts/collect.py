"""What a system offers now, as a contract document: read from the live system through the hub's adapters.

* SOAP: the WSDL's chosen service and port, every operation with input and output JSON Schemas
  (:func:`adapters.soap.catalog.describe`), and whether the first response of each source still matches
  the WSDL;
* REST: the OpenAPI document when the system declares one, and the JSON Schema observed in the first page
  of each source (of the first partition);
* SFTP: the layout of the newest ready file of each drop: name pattern, encoding, delimiter, header,
  columns in order with types inferred from the first rows;
* SQL: the columns, types and keys of the tables the sources read (:func:`adapters.sql.catalog.describe`).

Documents hold nothing run-specific (no hosts, ports, file names, timestamps or row values), so a snapshot
of an unchanged system is byte-for-byte the same every time.
"""

from __future__ import annotations

import re
from typing import Any

from hub.contracts.usage import (
    query_columns,
    sql_flow_procedures,
    sql_flow_writes,
    sqlglot_dialect,
    system_sources,
    table_key,
)
from hub.errors import HubError
from hub.runtime.secrets import mask
from hub.runtime.window import Window, sample_window
from hub.spec.loader import Pipeline

#: Bump when the document layout changes incompatibly.
FORMAT = 1
_URL_HOST = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s]+", re.I)


def first_window(pipeline: Pipeline) -> Window | None:
    """The pipeline's first partition: every partitioned source is sampled there, so samples are stable."""
    parts = pipeline.spec.partitions
    if parts is None:
        return None
    return sample_window(parts.kind, parts.window.start, parts.window.timezone)


def collect(pipeline: Pipeline, system: str) -> dict[str, Any]:
    """The contract document of *system* as the pipeline sees it now."""
    cfg = pipeline.spec.systems.get(system)
    if cfg is None:
        known = ", ".join(pipeline.spec.systems)
        raise HubError(f"pipeline {pipeline.name} has no system '{system}' (systems: {known})")
    protocol = cfg.kind
    body = cfg.protocol.collect(pipeline, system)  # the protocol's own document (hub.protocols)
    if body is None:
        raise HubError(f"systems.{system}: protocol {protocol} has no contract to collect")
    return {"contract": FORMAT, "pipeline": pipeline.name, "system": system, "protocol": protocol, protocol: body}


def scrub(text: str) -> str:
    """A message without secrets and without scheme://host:port (run-specific)."""
    return _URL_HOST.sub("", mask(text)).strip()


# --- SQL -------------------------------------------------------------------------------------------------

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
