"""Discovery: every service, port and operation of a WSDL, with input and output as JSON Schema.

This is what a person reads to write a source (``hub catalog soap WSDL``) and what the agent layer
turns into actions.
"""

from __future__ import annotations

from typing import Any

from adapters.soap._schema import json_schema
from adapters.soap.client import Wsdl, soap_version
from hub.runtime.secrets import mask_url


def _message_schema(message: Any, wsdl: Wsdl) -> dict[str, Any]:
    body = getattr(message, "body", None)
    if body is None:
        return {"type": "object", "properties": {}}
    schema = json_schema(body, wsdl.facets)
    schema["x-element"] = body.qname.text if hasattr(body.qname, "text") else str(body.qname)
    return schema


def _headers_schema(message: Any, wsdl: Wsdl) -> dict[str, Any] | None:
    header = getattr(message, "header", None)
    if header is None or not getattr(header.type, "elements", None):
        return None
    return json_schema(header, wsdl.facets)


def describe(wsdl: Wsdl) -> dict[str, Any]:
    """The catalog of *wsdl*: services → ports → operations, each with JSON Schemas."""
    services = []
    for service in wsdl.client.wsdl.services.values():
        ports = []
        for port in service.ports.values():
            binding = port.binding
            operations = []
            for name, op in sorted(getattr(binding, "_operations", {}).items()):
                entry: dict[str, Any] = {
                    "name": name,
                    "soap_action": getattr(op, "soapaction", None),
                    "style": getattr(op, "style", None),
                    "input": _message_schema(op.input, wsdl) if op.input is not None else None,
                    "output": _message_schema(op.output, wsdl) if op.output is not None else None,
                }
                headers = _headers_schema(op.input, wsdl) if op.input is not None else None
                if headers:
                    entry["input_headers"] = headers
                operations.append(entry)
            ports.append({
                "name": port.name,
                "binding": binding.name.text if hasattr(binding.name, "text") else str(binding.name),
                "soap_version": soap_version(binding) if hasattr(binding, "_operations") else None,
                "address": mask_url(port.binding_options.get("address", "") or ""),
                "operations": operations,
            })
        services.append({"name": service.name, "ports": ports})
    return {"wsdl": mask_url(wsdl.location), "services": services}
