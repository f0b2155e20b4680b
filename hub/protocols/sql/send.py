"""SQL's flow writes (:meth:`hub.protocols.sql.SqlProtocol.send`): one write sent exactly once, as
:mod:`hub.flows.senders` describes.

Imported by the plugin's hook on first use.
"""

from __future__ import annotations

from typing import Any

from hub.protocols import Sent
from hub.runtime import tracing
from hub.spec.loader import Pipeline


def sql_send(pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None,
             key_header: str | None) -> Sent:
    """One write to a table or stored procedure the system declares writable for flows (``writes:``), in a
    transaction of its own (:func:`adapters.sql.write`)."""
    from adapters.sql import write

    block = pipeline.spec.systems[action.system]
    system = block.protocol.resolve_system(action.system, block)
    binding = action.binding
    where = f"{action.name} ({binding.get('mode')} {binding.get('table') or binding.get('procedure')})"
    with tracing.call(action.system, f"{binding.get('mode')} {binding.get('table') or binding.get('procedure')}",
                      where, protocol="sql") as call:
        rows = write(system, mode=str(binding["mode"]), table=binding.get("table"), schema=binding.get("schema"),
                     key=list(binding.get("key") or []), procedure=binding.get("procedure"), values=request,
                     label=where, arg_types=binding.get("arg_types"))
        call.rows = rows
    return Sent({"rows": rows}, None, f"{rows} row(s)")
