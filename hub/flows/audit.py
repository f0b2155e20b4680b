"""Rows of ``_hub_audit`` for the calls flows make: the same table (and columns) as the agent's guarded
calls (:mod:`hub.agent.guard`), plus the run's trace id, so every write the hub makes is audited in one
place with its parameters masked."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from hub.agent.guard import AUDIT_TABLE, _jsonable, mask_params

AUDIT_SCHEMA = pa.schema([
    ("call_id", pa.string()), ("called_at", pa.timestamp("us", tz="UTC")), ("session", pa.string()),
    ("actor", pa.string()), ("agent", pa.string()), ("action", pa.string()), ("system", pa.string()),
    ("protocol", pa.string()), ("side_effect", pa.string()), ("params", pa.string()), ("approved", pa.bool_()),
    ("outcome", pa.string()), ("message", pa.string()), ("rows_returned", pa.int64()), ("rows_total", pa.int64()),
    ("bytes", pa.int64()), ("duration_ms", pa.float64()), ("trace_id", pa.string())])

__all__ = ["AUDIT_SCHEMA", "AUDIT_TABLE", "audit_row"]


def audit_row(*, run_id: str, flow: str, action: Any, params: dict[str, Any], outcome: str, message: str,
              started: float, response: Any, trace_id: str | None, masked: Any = None) -> dict[str, Any]:
    """One audit row of a flow's call: the actor is ``flow``, the agent the flow's name, the session the run;
    a flow's writes are approved by the spec that declares them. *masked*: ``mask_params(params)`` when the
    caller has it already (a flow masks each request once, for the ledger too)."""
    body = json.dumps(_jsonable(response), default=str) if response is not None else ""
    return {"call_id": uuid.uuid4().hex, "called_at": datetime.now(UTC), "session": run_id, "actor": "flow",
            "agent": flow, "action": action.name, "system": action.system, "protocol": action.protocol,
            "side_effect": action.side_effect,
            "params": json.dumps(_jsonable(mask_params(params) if masked is None else masked), sort_keys=True),
            "approved": True,
            "outcome": outcome, "message": message[:2000], "rows_returned": 1 if response is not None else 0,
            "rows_total": None, "bytes": len(body), "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "trace_id": trace_id}
