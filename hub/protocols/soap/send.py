"""SOAP's flow writes (:meth:`hub.protocols.soap.SoapProtocol.send`): one call sent exactly once, as
:mod:`hub.flows.senders` describes.

Imported by the plugin's hook on first use.
"""

from __future__ import annotations

import threading
from typing import Any

from hub.protocols import Sent
from hub.spec.loader import Pipeline

_soap_adapters: dict[tuple[str, str, str, str], Any] = {}
_soap_lock = threading.Lock()
#: (id of the system block, operation) -> (the block, spec path, adapter): dumping the block to JSON for the key
#: of :data:`_soap_adapters` on every send cost ~0.1 ms; the block object kept here makes the id safe to reuse
_soap_seen: dict[tuple[int, str], tuple[Any, str, Any]] = {}


def soap_send(pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None,
              key_header: str | None) -> Sent:
    """One SOAP call of the action's operation with *request* as its parameters (the idempotency key, when
    declared, is one of them: SOAP has no standard header for it)."""
    from adapters.soap import SoapSource, SoapSourceConfig
    from hub.materialize import cache_dir

    block = pipeline.spec.systems[action.system]
    operation = str(action.binding["operation"])
    seen = _soap_seen.get((id(block), operation))  # the same block object as last time: no key to build
    if seen is not None and seen[0] is block and seen[1] == str(pipeline.path):
        return _soap_call(seen[2], request)
    key = (str(pipeline.path), action.system, block.model_dump_json(), operation)
    with _soap_lock:  # one adapter (its WSDL loaded once: ~40 ms) per system, spec and operation
        adapter = _soap_adapters.get(key)
        if adapter is None:
            system = block.protocol.resolve_system(action.system, block)
            source = SoapSourceConfig.model_validate({"operation": operation, "records": operation + "Response"})
            adapter = SoapSource(system, source, name=action.name, cache_dir=cache_dir(pipeline) / "wsdl",
                                 base_dir=pipeline.root, system_name=action.system)
            _soap_adapters[key] = adapter
        _soap_seen[(id(block), operation)] = (block, str(pipeline.path), adapter)
    return _soap_call(adapter, request)


def _soap_call(adapter: Any, request: dict[str, Any]) -> Sent:
    status, response = adapter.send(dict(request))
    return Sent(response, status, f"HTTP {status}")
