"""SOAP's actions for the catalog and their guarded execution: every operation of the chosen service and port of
the WSDL (:func:`adapters.soap.catalog.describe`), input and output JSON Schemas from the XSD. An operation is a
read when its name starts with Get/List/Find/Search/Query/Check/Read/Describe/Fetch, else a write. A guarded
call (:func:`soap_call`) goes through the SOAP adapter.

Imported by the plugin's hooks on first use (it needs :mod:`hub.agent`, above the spec layer); the guard
(and pyarrow with it) only by the calls, so building the catalog stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hub.agent.catalog import Action
from hub.spec.loader import Pipeline

if TYPE_CHECKING:
    from hub.agent.guard import Fetched


READ_PREFIXES = ("get", "list", "find", "search", "query", "check", "read", "describe", "fetch", "lookup", "count")


def soap_side_effect(operation: str) -> str:
    """``read`` when the operation's name starts with a reading verb (GetOrders, ListX, FindY...), else ``write``."""
    lowered = operation.lower()
    return "read" if any(lowered.startswith(p) for p in READ_PREFIXES) else "write"


def _system_description(pipeline: Pipeline, system: str) -> str:
    return pipeline.spec.systems[system].description or ""


def soap_actions(pipeline: Pipeline, system: str) -> list[Action]:
    block = pipeline.spec.systems[system]
    cfg = block.protocol.resolve_system(system, block)  # first: a missing secret fails before zeep is imported

    from adapters.soap import load_wsdl, select_port
    from adapters.soap.catalog import describe
    from hub.materialize import cache_dir

    # the arguments a flow's sender loads it with (hub.protocols.soap.send): the parsed WSDL is then reused
    wsdl = load_wsdl(cfg, cache_dir=cache_dir(pipeline) / "wsdl", base_dir=pipeline.root, system_name=system)
    service, port = select_port(wsdl, cfg)
    catalog = describe(wsdl)
    entry = next(p for s in catalog["services"] if s["name"] == service.name for p in s["ports"]
                 if p["name"] == port.name)
    declared = {s.config.operation: s for s in pipeline.sources.values() if s.system_name == system}
    out = []
    for op in entry["operations"]:
        name = op["name"]
        source = declared.get(name)
        records = source.config.records if source is not None else None
        output = op.get("output") or {"type": "object", "properties": {}}
        record_schema, found = _soap_record(output, records)
        description = f"SOAP operation {name} of {service.name}/{port.name}"
        if source is not None and source.spec.description:
            description += f"; read by source {source.name}: {source.spec.description}"
        elif _system_description(pipeline, system):
            description += f" ({_system_description(pipeline, system)})"
        binding: dict[str, Any] = {"operation": name}
        if found:
            binding["records"] = found
        out.append(Action(
            name=f"{system}.{name}", system=system, protocol="soap", description=description,
            input_schema=op.get("input") or {"type": "object", "properties": {}},
            output_schema=record_schema,
            side_effect=soap_side_effect(name),
            binding=binding, pipeline=pipeline.name))
    return out


def _soap_record(output: dict[str, Any], records: str | None) -> tuple[dict[str, Any], str | None]:
    """The schema of one record of an operation's output, and the record element's name: the element the
    source names, else the first repeated element (depth first), else the whole output."""
    def walk(schema: dict[str, Any], depth: int) -> tuple[dict[str, Any], str] | None:
        if depth > 6:
            return None
        for key, sub in (schema.get("properties") or {}).items():
            node = sub.get("anyOf", [sub])[0] if isinstance(sub, dict) else {}
            if node.get("type") == "array":
                items = node.get("items") or {}
                if records is None or key == records:
                    return items, key
            if records is not None and key == records:
                return node, key
            if node.get("type") == "object":
                found = walk(node, depth + 1)
                if found:
                    return found
            if node.get("type") == "array":
                found = walk(node.get("items") or {}, depth + 1)
                if found:
                    return found
        return None

    hit = walk(output, 0)
    if hit is None:
        props = output.get("properties") or {}
        if len(props) == 1:  # a wrapper element (GetCustomerResult): the record is inside it
            key, inner = next(iter(props.items()))
            inner = inner.get("anyOf", [inner])[0] if isinstance(inner, dict) else {}
            if inner.get("type") == "object":
                return inner, records or key
        return output, records
    return hit[0], hit[1]


def soap_call(pipeline: Pipeline, action: Action, params: dict[str, Any], limit: int) -> Fetched:
    from adapters.soap import SoapSource, SoapSourceConfig
    from hub.agent.guard import Fetched, take  # pyarrow: only when calling, so building the catalog stays light
    from hub.materialize import cache_dir

    block = pipeline.spec.systems[action.system]
    system = block.protocol.resolve_system(action.system, block)
    operation = str(action.binding["operation"])
    records = action.binding.get("records") or operation + "Result"
    source = SoapSourceConfig.model_validate({"operation": operation, "params": params, "records": records})
    adapter = SoapSource(system, source, name=action.name, cache_dir=cache_dir(pipeline) / "wsdl",
                         base_dir=pipeline.root)
    batches = adapter.batches()
    try:
        return Fetched(*take(batches, limit))
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
