"""What a system offers now, as a contract document: read from the live system through the hub's adapters by
the system's protocol (:meth:`hub.protocols.Protocol.collect`; the built-ins' in
``hub/protocols/<name>/contract.py``), wrapped here in the envelope every snapshot shares:

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
