"""SOAP's contract (:meth:`hub.protocols.soap.SoapProtocol.collect` and ``compare``): the WSDL's chosen service
and port, every operation with input and output JSON Schemas (:func:`adapters.soap.catalog.describe`), and
whether the first response of each source still matches the WSDL; what each source and flow uses of it; and the
changes between a snapshot and the live system.

Imported by the plugin's hooks on first use (it needs :mod:`hub.contracts`, above the spec layer).
"""

from __future__ import annotations

from typing import Any

from hub.contracts.collect import first_window, scrub
from hub.contracts.diff import Change, Differ, find_renames
from hub.contracts.schema import canonical, find_property
from hub.contracts.usage import Usage, Use, flow_uses, record_uses, system_sources
from hub.errors import AdapterError, HTTPStatusError, ResponseFormatError, SoapFault, TransportError
from hub.runtime.window import render_config
from hub.spec.loader import Pipeline


def collect_soap(pipeline: Pipeline, system: str) -> dict[str, Any]:
    from adapters.soap import SoapSource, load_wsdl, select_port
    from adapters.soap.catalog import describe

    block = pipeline.spec.systems[system]
    cfg = block.protocol.resolve_system(system, block).model_copy(update={"wsdl_cache_ttl": 0})  # the live WSDL
    wsdl = load_wsdl(cfg, base_dir=pipeline.root)
    service, port = select_port(wsdl, cfg)
    catalog = describe(wsdl)
    entry = next(p for s in catalog["services"] if s["name"] == service.name for p in s["ports"]
                 if p["name"] == port.name)
    operations = {op["name"]: {k: v for k, v in op.items() if k != "name"} for op in entry["operations"]}
    responses: dict[str, Any] = {}
    window = first_window(pipeline)
    for source in system_sources(pipeline, system):
        rendered = render_config(source.config, window, field=f"sources.{source.name}")
        adapter = SoapSource(cfg, rendered, name=source.name,
                             base_dir=pipeline.root, lists={c.path for c in source.spec.children.values()})
        adapter._wsdl = wsdl  # the document just loaded
        outcome: dict[str, Any] = {"operation": source.config.operation, "records": source.config.records}
        batches = adapter.batches()
        try:
            next(batches, None)  # the first page is enough
            outcome["conforms"] = True
        except (HTTPStatusError, TransportError):
            raise
        except SoapFault as exc:
            if "Authentication" in exc.code or "Security" in exc.code:
                raise  # our credentials, not the contract: the test cannot tell
            outcome.update(conforms=False, problem="fault", error=scrub(str(exc)))
        except ResponseFormatError as exc:
            outcome.update(conforms=False, problem="format", error=scrub(str(exc)))
        except AdapterError as exc:  # e.g. the operation or the records element is gone
            outcome.update(conforms=False, problem="adapter", error=scrub(str(exc)))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        responses[source.name] = outcome
    return {"service": service.name, "port": port.name, "binding": entry["binding"],
            "soap_version": entry["soap_version"], "operations": operations, "responses": responses}


def soap_usage(pipeline: Pipeline, system: str, doc: dict[str, Any]) -> Usage:
    """Scopes ``op:NAME`` (the operation), ``op:NAME:input`` (parameters), ``op:NAME:output`` (response)."""
    usage = Usage()
    operations_of = doc.get("operations") or {}

    def flow_scopes(op: str) -> tuple[str, str, None, str] | None:
        return (f"op:{op}", f"op:{op}:input", None, f"op:{op}:output") if op in operations_of else None

    flow_uses(usage, pipeline, system, flow_scopes)
    operations = doc.get("operations") or {}
    for source in system_sources(pipeline, system):
        soap = source.config
        op = soap.operation
        usage.add(f"op:{op}", (), source.name, f"operation {op}")
        params = dict.fromkeys(soap.params)
        paging = soap.paginate
        if paging is not None:
            if paging.page_number:
                params[paging.page_number.param] = None
                if paging.page_number.size_param:
                    params[paging.page_number.size_param] = None
            if paging.offset:
                params[paging.offset.param] = None
                if paging.offset.limit_param:
                    params[paging.offset.limit_param] = None
            if paging.token:
                params[paging.token.param] = None
        for param in params:
            usage.add(f"op:{op}:input", (param,), source.name, f"param {param}", key=True)
        output = (operations.get(op) or {}).get("output") or {}
        root = find_property(output, soap.records) or (soap.records,)
        record_uses(usage, f"op:{op}:output", root, source, f"records {soap.records}")
        if paging is not None and paging.token:
            token = find_property(output, paging.token.element) or (paging.token.element,)
            usage.add(f"op:{op}:output", token, source.name, f"continuation token {paging.token.element}")
    return usage


def compare_soap(system: str, before: dict[str, Any], after: dict[str, Any], usage: Usage) -> list[Change]:
    d = Differ(system, usage)
    for key in ("service", "port", "binding", "soap_version"):
        if before.get(key) != after.get(key):
            d.add(f"port {before.get('port')}", "", f"{key} changed", before.get(key), after.get(key), uses=[],
                  breaking=False)
    ops_b, ops_a = before.get("operations") or {}, after.get("operations") or {}
    removed = [op for op in ops_b if op not in ops_a]
    added = [op for op in ops_a if op not in ops_b]
    renames = find_renames(removed, added, lambda r, x: (canonical(ops_b[r].get("input") or {}),
                                                     canonical(ops_b[r].get("output") or {}))
                       == (canonical(ops_a[x].get("input") or {}), canonical(ops_a[x].get("output") or {})))
    for op in removed:
        uses = usage.users(f"op:{op}", ())
        what = f"operation renamed to {renames[op]}" if op in renames else "operation removed"
        d.add(f"operation {op}", "", what, op, renames.get(op, "absent"), uses=uses, breaking=bool(uses))
    for op in added:
        if op not in renames.values():
            d.add(f"operation {op}", "", "operation added", "absent", op, uses=[], breaking=False)
    for op, ob in ops_b.items():
        oa = ops_a.get(op)
        if oa is None:
            continue
        for key in ("soap_action", "style"):
            if ob.get(key) != oa.get(key):
                d.add(f"operation {op}", "", f"{key} changed", ob.get(key), oa.get(key),
                      uses=usage.users(f"op:{op}", ()), breaking=False)
        d.schema(ob.get("input"), oa.get("input"), element=f"{op} input", scope=f"op:{op}:input", direction="in")
        if ob.get("input_headers") or oa.get("input_headers"):
            d.schema(ob.get("input_headers") or {"type": "object", "properties": {}},
                     oa.get("input_headers") or {"type": "object", "properties": {}},
                     element=f"{op} input headers", scope=f"op:{op}:headers", direction="in")
        d.schema(ob.get("output"), oa.get("output"), element=f"{op} output", scope=f"op:{op}:output")
    _compare_samples(d, before.get("responses") or {}, after.get("responses") or {})
    return d.changes


_PROBLEMS = {"fault": "the operation answers with a SOAP Fault", "format": "responses no longer match the WSDL",
             "adapter": "the source can no longer read the operation"}


def _compare_samples(d: Differ, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Live responses read by the adapter: one that stopped conforming to the service description breaks."""
    for source, sb in before.items():
        sa = after.get(source)
        if sa is None or sb == sa:
            continue
        element = f"{sa.get('operation', source)} responses"
        uses = [Use(source, (), f"records {sa.get('records', '')}".strip())]
        if sa.get("conforms") is False and sb.get("conforms") is not False:
            d.add(element, "", _PROBLEMS.get(str(sa.get("problem")), _PROBLEMS["format"]), "conform",
                  sa.get("error", "do not conform"), uses=uses, breaking=True)
        elif sa.get("conforms") and sb.get("conforms") is False:
            d.add(element, "", "responses match the WSDL again", sb.get("error", "did not conform"), "conform",
                  uses=uses, breaking=False)
