"""Guarded execution of catalog actions, for agents and people alike.

Every call goes through :meth:`Guard.call`, which

1. refuses a **write** action unless it is on the pipeline's allow-list (``agent: {allow_writes: [...]}``)
   *and* the call is explicitly approved (``approve=True``, ``hub agent run --approve``);
2. refuses a call once the system's **budget** of calls for this session is spent
   (``systems.<name>.agent.budget``, else ``agent.budget``, default 100) and spaces calls to honour the
   system's **rate limit** (``systems.<name>.agent.rate_limit`` calls per second);
3. checks the parameters against the action's full input JSON Schema (:mod:`hub.agent.params`: types,
   required and known names, bounds, lengths, patterns, enums, formats), every problem named at once;
4. calls the system through its protocol (:meth:`hub.protocols.Protocol.execute`; the built-ins' in
   ``hub/protocols/<name>/actions.py``), which uses the hub's adapters — REST (GET/POST through
   :mod:`adapters.rest`, other methods with the same auth), SOAP (:mod:`adapters.soap`), SQL (one read-only,
   parameter-bound SELECT through :mod:`adapters.sql`), SFTP (list the drop, or read one file's records) —
   and returns the first ``max_rows`` records with the total count; a read of a REST action derived from a
   spec source follows the source's pagination (``RestSource.batches()``) until more than ``max_rows``
   records were seen, and the total is then unknown (``total_at_least``, ``truncated``);
5. writes one row to the audit table ``_hub_audit`` of the pipeline's warehouse: who (user and agent),
   what (action, system, side effect), the parameters with secrets masked, approval, outcome
   (``ok`` / ``refused`` / ``error``) and why, rows returned and total, duration. Refused calls are audited
   too; an audit that cannot be written fails the call (nothing happens unaudited... except the call
   itself, which has already happened: the error then says so).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pyarrow as pa

from hub import protocols
from hub.agent.catalog import Action, Catalog, build_catalog
from hub.agent.params import closed, problems
from hub.errors import HubError, Refused
from hub.runtime.secrets import mask
from hub.spec.loader import Pipeline

AUDIT_TABLE = "_hub_audit"
DEFAULT_BUDGET = 100
DEFAULT_MAX_ROWS = 100
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api[_-]?key|authorization|credential|private", re.I)


class Fetched(NamedTuple):
    """What an action returned: its first records, the total count (None: unknown, as pages were left unread)
    and, when the total is unknown, the records seen, which it is at least."""

    records: list[dict[str, Any]]
    total: int | None
    at_least: int | None = None


@dataclass
class CallResult:
    """What a guarded call did."""

    call_id: str
    action: str
    outcome: str                      # ok | refused | error
    records: list[dict[str, Any]] = field(default_factory=list)
    total: int | None = None          # records the system returned in all (None: unknown)
    total_at_least: int | None = None  # when the total is unknown: records seen before reading stopped
    truncated: bool = False
    duration_s: float = 0.0
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"call_id": self.call_id, "action": self.action, "outcome": self.outcome}
        if self.message:
            out["message"] = self.message
        if self.outcome == "ok":
            out.update(total=self.total, returned=len(self.records), truncated=self.truncated)
            if self.total is None and self.total_at_least is not None:
                out["total_at_least"] = self.total_at_least
            out["records"] = self.records
        out["duration_s"] = round(self.duration_s, 3)
        return out


def mask_params(value: Any, key: str = "") -> Any:
    """*value* with secret-looking keys replaced by ``***`` and registered secrets masked in strings."""
    if key and _SECRET_KEY.search(key) and value not in (None, ""):
        return "***"
    if isinstance(value, dict):
        return {k: mask_params(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_params(v) for v in value]
    if isinstance(value, str):
        return mask(value)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class Guard:
    """A session of guarded calls over a catalog (budgets count per guard instance)."""

    def __init__(self, catalog: Catalog, *, actor: str = "agent", agent: str = "hub", session: str | None = None,
                 audit: bool = True) -> None:
        self.catalog = catalog
        self.actor = actor
        self.agent = agent
        self.session = session or uuid.uuid4().hex[:16]
        self.audit_enabled = audit
        self.used: dict[str, int] = {}
        self._last_call: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_pipelines(cls, pipelines: list[Pipeline], **kwargs: Any) -> Guard:
        return cls(build_catalog(pipelines), **kwargs)

    # --- policy ----------------------------------------------------------------------------------------

    def budget(self, action: Action) -> int:
        pipeline = self.catalog.pipeline_of(action)
        system = pipeline.spec.systems[action.system].agent
        if system is not None and system.budget is not None:
            return system.budget
        return pipeline.spec.agent.budget if pipeline.spec.agent is not None else DEFAULT_BUDGET

    def remaining(self, system: str) -> int | None:
        action = next((a for a in self.catalog.actions if a.system == system), None)
        return None if action is None else self.budget(action) - self.used.get(system, 0)

    def allowed_writes(self, action: Action) -> list[str]:
        agent = self.catalog.pipeline_of(action).spec.agent
        return list(agent.allow_writes) if agent is not None else []

    def check(self, action: Action, params: dict[str, Any], approve: bool) -> None:
        """Raise :class:`Refused` when the call may not be made."""
        if action.side_effect == "write":
            allowed = self.allowed_writes(action)
            if action.name not in allowed:
                raise Refused(f"{action.name} is a write action and is not in the allow-list of pipeline "
                              f"{action.pipeline} (agent.allow_writes: {allowed or 'empty'}); nothing was sent")
            if not approve:
                raise Refused(f"{action.name} is a write action: it is allowed but needs an explicit approval "
                              "(approve=true / --approve); nothing was sent")
        budget = self.budget(action)
        if self.used.get(action.system, 0) >= budget:
            raise Refused(f"the call budget of system {action.system} is spent ({budget} call(s) per session); "
                          "nothing was sent")
        self._check_params(action, params)

    @staticmethod
    def _check_params(action: Action, params: dict[str, Any]) -> None:
        """Refuse *params* that break the action's full input schema (types, required, bounds, lengths,
        patterns, enums, formats, nested objects and arrays), naming every problem at once. SQL, SFTP and
        SOAP actions, and REST actions that declare parameters, take no parameter they do not name."""
        schema = action.input_schema or {"type": "object"}
        if action.protocol not in protocols.registry() or protocols.get(action.protocol).closed_inputs(action):
            schema = closed(schema)
        found = problems(schema, params)
        if found:
            raise Refused(f"{action.name}: {len(found)} invalid parameter(s), nothing was sent: "
                          + "; ".join(found))

    def _pace(self, action: Action) -> None:
        agent = self.catalog.pipeline_of(action).spec.systems[action.system].agent
        if agent is None or agent.rate_limit is None:
            return
        gap = 1.0 / agent.rate_limit
        wait = self._last_call.get(action.system, 0.0) + gap - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    # --- the call --------------------------------------------------------------------------------------

    def call(self, name: str, params: dict[str, Any] | None = None, *, approve: bool = False,
             max_rows: int | None = None) -> CallResult:
        """Call action *name* with *params* under the guard; never raises for refusals or system errors (the
        result says what happened), only when the audit itself cannot be written."""
        params = dict(params or {})
        call_id = uuid.uuid4().hex
        started = time.monotonic()
        try:
            action = self.catalog.get(name)
        except HubError as exc:
            unknown = CallResult(call_id, name, "refused", message=str(exc),
                                 duration_s=time.monotonic() - started)
            first = next(iter(self.catalog.pipelines), "")
            if self.audit_enabled and first:
                self._audit(Action(name=name, system="", protocol="", description="", input_schema={},
                                   output_schema={}, side_effect="unknown", binding={}, pipeline=first),
                            params, approve, unknown)
            return unknown
        limit = max_rows or self._max_rows(action)
        result = CallResult(call_id, action.name, "ok")
        with self._lock:
            try:
                self.check(action, params, approve)
                self._pace(action)
                self.used[action.system] = self.used.get(action.system, 0) + 1
                self._last_call[action.system] = time.monotonic()
            except Refused as exc:
                result.outcome, result.message = "refused", str(exc)
        if result.outcome == "ok":
            try:
                fetched = execute(self.catalog, action, params, limit)
                result.records = [_jsonable(r) for r in fetched.records]
                result.total, result.total_at_least = fetched.total, fetched.at_least
                result.truncated = fetched.total is None or fetched.total > len(fetched.records)
                if fetched.total is None and fetched.at_least is not None:
                    result.message = (f"stopped at the row limit ({limit}): the pages after were not read, so the "
                                      f"total is unknown (at least {fetched.at_least})")
            except Refused as exc:
                result.outcome, result.message = "refused", str(exc)
            except HubError as exc:
                result.outcome, result.message = "error", mask(str(exc))
            except Exception as exc:  # a bug or an unexpected library error: still audited
                result.outcome, result.message = "error", mask(f"{type(exc).__name__}: {exc}")
        result.duration_s = time.monotonic() - started
        if self.audit_enabled:
            self._audit(action, params, approve, result)
        return result

    def refuse(self, action: Action, params: dict[str, Any], message: str) -> CallResult:
        """Record a call refused before it reached the guard's own checks (a caller's policy: a write the
        user declined, one awaiting approval): audited like any refusal, nothing sent, no budget spent."""
        result = CallResult(uuid.uuid4().hex, action.name, "refused", message=message)
        if self.audit_enabled:
            self._audit(action, dict(params), False, result)
        return result

    def _max_rows(self, action: Action) -> int:
        agent = self.catalog.pipeline_of(action).spec.agent
        return agent.max_rows if agent is not None else DEFAULT_MAX_ROWS

    def _audit(self, action: Action, params: dict[str, Any], approve: bool, result: CallResult) -> None:
        from hub.warehouse import LoadRequest, connect

        row = {
            "call_id": result.call_id, "called_at": datetime.now(UTC), "session": self.session, "actor": self.actor,
            "agent": self.agent, "action": action.name, "system": action.system, "protocol": action.protocol,
            "side_effect": action.side_effect,
            "params": json.dumps(_jsonable(mask_params(params)), sort_keys=True),
            "approved": bool(approve), "outcome": result.outcome, "message": result.message[:2000],
            "rows_returned": len(result.records), "rows_total": result.total,
            "bytes": len(json.dumps(result.records, default=str)) if result.records else 0,
            "duration_ms": round(result.duration_s * 1000, 1),
        }
        schema = pa.schema([("call_id", pa.string()), ("called_at", pa.timestamp("us", tz="UTC")),
                            ("session", pa.string()),
                            ("actor", pa.string()), ("agent", pa.string()), ("action", pa.string()),
                            ("system", pa.string()), ("protocol", pa.string()), ("side_effect", pa.string()),
                            ("params", pa.string()), ("approved", pa.bool_()), ("outcome", pa.string()),
                            ("message", pa.string()), ("rows_returned", pa.int64()), ("rows_total", pa.int64()),
                            ("bytes", pa.int64()), ("duration_ms", pa.float64())])
        batch = pa.RecordBatch.from_pylist([row], schema=schema)
        pipeline = self.catalog.pipeline_of(action)
        try:
            wh = connect(pipeline.warehouse_url)
            with wh.begin(LoadRequest(table=AUDIT_TABLE, mode="merge", run_id=f"agent-{self.session}",
                                      primary_key=("call_id",))) as load:
                load.write(batch)
                load.commit()
        except HubError as exc:
            raise HubError(f"{action.name}: the call was {result.outcome} but its audit row could not be written "
                           f"to {AUDIT_TABLE}: {exc}") from None


# --- execution: the protocol's hook -------------------------------------------------------------------

def execute(catalog: Catalog, action: Action, params: dict[str, Any], limit: int) -> Fetched:
    """Run *action* with *params*: the first *limit* records and the total count (or a lower bound of it)."""
    pipeline = catalog.pipeline_of(action)
    result: Fetched = protocols.get(action.protocol).execute(pipeline, action, params, limit)
    return result


def take(batches: Iterator[pa.RecordBatch], limit: int) -> tuple[list[dict[str, Any]], int]:
    """The first *limit* records of *batches* (without the hub's ``_hub_`` columns) and the total count: what
    a protocol's :meth:`~hub.protocols.Protocol.execute` returns when its adapter yields record batches."""
    rows: list[dict[str, Any]] = []
    total = 0
    for batch in batches:
        total += batch.num_rows
        if len(rows) < limit:
            keep = [c for c in batch.schema.names if not c.startswith("_hub_")]
            rows.extend(batch.select(keep).slice(0, limit - len(rows)).to_pylist())
    return rows, total


