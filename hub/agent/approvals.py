"""Pending approvals of write actions: requested by an agent (over MCP), decided by a person.

An agent never approves its own writes. When ``call_action`` asks for a write that the pipeline's allow-list
permits, the MCP server either asks the user to confirm it there and then (MCP elicitation, when the client
supports it) or records it here as **pending** and answers with the approval's id; a person then runs
``hub agent approve ID`` (or ``hub agent reject ID``), which executes the call through the guard
(:mod:`hub.agent.guard`: allow-list, budget, parameter check, audit) **at most once**.

A **flow** an agent planned over MCP (``plan_pipeline`` on a request that acts) is recorded the same way, as
the action ``flow:<name>`` with the planned spec and every write's sample request: approving it writes the
spec into the project's ``pipelines/`` with ``approved: true`` (its trigger then runs it, and ``hub flow run``
needs no ``--approve``); it never overwrites a file, and rejecting it writes nothing.

The store is a SQLite file in the project's state folder (``$HUB_STATE_DIR`` or ``.hub/approvals.sqlite``
next to the spec's project root), created readable by its owner only: it keeps the exact parameters the write
will send (the audit table keeps them masked). Exactly once: approving moves a row from ``pending`` to
``executing`` in one ``BEGIN IMMEDIATE`` transaction; only the process that made that move calls the system,
and a second approval of the same id is refused with what happened the first time. A call interrupted between
the two (a crash) stays ``executing`` and is never retried: for writes, at most once is the safe side.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hub.agent.catalog import Action
from hub.agent.guard import CallResult, Guard, mask_params
from hub.errors import HubError, Refused
from hub.runtime.secrets import mask

FILE_NAME = "approvals.sqlite"
#: A pending approval older than this is expired: nobody approves a write they no longer remember.
DEFAULT_TTL = timedelta(days=7)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    action TEXT NOT NULL,
    system TEXT NOT NULL,
    target TEXT NOT NULL,
    params TEXT NOT NULL,
    params_masked TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    agent TEXT NOT NULL,
    session TEXT NOT NULL,
    status TEXT NOT NULL,
    decided_by TEXT,
    decided_at TEXT,
    via TEXT,
    call_id TEXT,
    outcome TEXT,
    message TEXT
)
"""


class ApprovalNotFound(HubError):
    """No approval with that id in the store(s) searched."""


@dataclass
class Approval:
    """One requested write and what became of it (``params`` are the exact ones; show ``params_masked``)."""

    id: str
    created_at: str
    expires_at: str
    pipeline: str
    action: str
    system: str
    target: str
    params: dict[str, Any]
    params_masked: dict[str, Any]
    requested_by: str
    agent: str
    session: str
    status: str                 # pending | executing | executed | failed | refused | rejected | expired
    decided_by: str | None = None
    decided_at: str | None = None
    via: str | None = None      # cli | elicitation
    call_id: str | None = None
    outcome: str | None = None  # the guarded call's outcome: ok | refused | error
    message: str | None = None

    def public(self) -> dict[str, Any]:
        """Everything but the unmasked parameters: what a listing, a client or a log may show."""
        out = asdict(self)
        out.pop("params")
        out["params"] = out.pop("params_masked")
        return out

    def summary(self) -> str:
        """One paragraph a person reads before approving: the exact write, parameters masked."""
        return (f"{self.action} on system {self.system} ({self.target}), pipeline {self.pipeline}\n"
                f"parameters: {json.dumps(self.params_masked, sort_keys=True, default=str)}\n"
                f"requested by {self.requested_by} via {self.agent} at {self.created_at}; approval id {self.id}")


def target_of(action: Action) -> str:
    """Where a write goes, in words: ``POST /customers``, ``SOAP operation X``, ``GraphQL mutation Y``..."""
    from hub import protocols

    binding = action.binding or {}
    known = protocols.get(action.protocol).write_target(binding)
    if known is not None:
        return known
    for key, label in (("operation", f"{action.protocol.upper()} operation"), ("table", "table"),
                       ("path", "path")):
        if binding.get(key):
            return f"{label} {binding[key]}"
    return f"{action.protocol} action {action.name}"


def _now() -> datetime:
    return datetime.now(UTC)


class ApprovalStore:
    """The approvals of one project (one SQLite file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_root(cls, root: Path | None) -> ApprovalStore:
        from hub.materialize import state_dir

        return cls(state_dir(root) / FILE_NAME)

    @contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)  # the exact parameters: owner only
            os.close(fd)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(_SCHEMA)
            if write:
                conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if write:
                    conn.execute("ROLLBACK")
                raise
            if write:
                conn.execute("COMMIT")
        finally:
            conn.close()

    @staticmethod
    def _row(row: sqlite3.Row) -> Approval:
        values = dict(row)
        values["params"] = json.loads(values["params"])
        values["params_masked"] = json.loads(values["params_masked"])
        return Approval(**values)

    def request(self, action: Action, params: dict[str, Any], *, requested_by: str, agent: str, session: str,
                ttl: timedelta = DEFAULT_TTL) -> Approval:
        """Record a write awaiting a person's decision."""
        created = _now()
        approval = Approval(
            id=secrets.token_hex(6), created_at=created.isoformat(timespec="seconds"),
            expires_at=(created + ttl).isoformat(timespec="seconds"), pipeline=action.pipeline, action=action.name,
            system=action.system, target=target_of(action), params=params,
            params_masked=mask_params(params), requested_by=requested_by, agent=agent, session=session,
            status="pending")
        return self._insert(approval)

    def request_flow(self, pipeline: str, flow: str, spec_text: str, writes: list[dict[str, Any]], *,
                     requested_by: str, agent: str, session: str, ttl: timedelta = DEFAULT_TTL) -> Approval:
        """Record a planned flow awaiting a person's decision: *pipeline* is the loaded spec whose systems it
        uses (its project receives the file), *writes* the dry run's sample requests (shown, masked)."""
        samples = [{k: w[k] for k in ("step", "action", "target", "effect", "request")} for w in writes
                   if w.get("sample")]
        params = {"flow": flow, "spec": spec_text, "writes": samples}
        created = _now()
        approval = Approval(
            id=secrets.token_hex(6), created_at=created.isoformat(timespec="seconds"),
            expires_at=(created + ttl).isoformat(timespec="seconds"), pipeline=pipeline, action=f"flow:{flow}",
            system=",".join(dict.fromkeys(str(w["action"]).split(".", 1)[0] for w in samples)),
            target=f"flow {flow}: " + "; ".join(f"{w['step']} -> {w['target']}" for w in samples),
            params=params, params_masked=mask_params({**params, "spec": f"({len(spec_text)} characters)"}),
            requested_by=requested_by, agent=agent, session=session, status="pending")
        return self._insert(approval)

    def _insert(self, approval: Approval) -> Approval:
        """Store a new pending *approval* (a single call's or a planned flow's)."""
        with self._connect(write=True) as conn:
            conn.execute(
                "INSERT INTO approvals (id, created_at, expires_at, pipeline, action, system, target, params, "
                "params_masked, requested_by, agent, session, status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (approval.id, approval.created_at, approval.expires_at, approval.pipeline, approval.action,
                 approval.system, approval.target, json.dumps(approval.params, default=str),
                 json.dumps(approval.params_masked, default=str), approval.requested_by, approval.agent,
                 approval.session, approval.status))
        return approval

    def get(self, approval_id: str) -> Approval | None:
        if not self.path.exists():
            return None
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        return self._row(row) if row is not None else None

    def list(self, status: str | None = "pending", limit: int = 100) -> list[Approval]:
        if not self.path.exists():
            return []
        self._expire()
        with self._connect() as conn:
            if status is None:
                rows = conn.execute("SELECT * FROM approvals ORDER BY created_at DESC LIMIT ?", (limit,))
            else:
                rows = conn.execute("SELECT * FROM approvals WHERE status = ? ORDER BY created_at DESC LIMIT ?",
                                    (status, limit))
            return [self._row(r) for r in rows.fetchall()]

    def _expire(self) -> None:
        with self._connect(write=True) as conn:
            conn.execute("UPDATE approvals SET status = 'expired' WHERE status = 'pending' AND expires_at < ?",
                         (_now().isoformat(timespec="seconds"),))

    def claim(self, approval_id: str, *, by: str, via: str) -> Approval:
        """Move a pending approval to ``executing`` (one transaction) and return it; refuse any other state,
        saying what happened before. Only the caller that got the approval back may execute it."""
        self._expire()
        with self._connect(write=True) as conn:
            changed = conn.execute(
                "UPDATE approvals SET status = 'executing', decided_by = ?, decided_at = ?, via = ? "
                "WHERE id = ? AND status = 'pending'",
                (by, _now().isoformat(timespec="seconds"), via, approval_id)).rowcount
            row = conn.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        if row is None:
            raise ApprovalNotFound(f"no approval '{approval_id}' in {self.path}")
        approval = self._row(row)
        if changed != 1:
            raise Refused(_already(approval))
        return approval

    def reject(self, approval_id: str, *, by: str, via: str, reason: str = "") -> Approval:
        with self._connect(write=True) as conn:
            changed = conn.execute(
                "UPDATE approvals SET status = 'rejected', decided_by = ?, decided_at = ?, via = ?, message = ? "
                "WHERE id = ? AND status = 'pending'",
                (by, _now().isoformat(timespec="seconds"), via, reason or "rejected", approval_id)).rowcount
            row = conn.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        if row is None:
            raise ApprovalNotFound(f"no approval '{approval_id}' in {self.path}")
        approval = self._row(row)
        if changed != 1:
            raise Refused(_already(approval))
        return approval

    def finish(self, approval_id: str, result: CallResult) -> Approval:
        status = {"ok": "executed", "refused": "refused"}.get(result.outcome, "failed")
        with self._connect(write=True) as conn:
            conn.execute("UPDATE approvals SET status = ?, call_id = ?, outcome = ?, message = ? WHERE id = ?",
                         (status, result.call_id, result.outcome, mask(result.message)[:2000], approval_id))
            row = conn.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        return self._row(row)


def _already(approval: Approval) -> str:
    if approval.status == "executing":
        return (f"approval {approval.id} was approved by {approval.decided_by} at {approval.decided_at} and its "
                "call started; it is never run twice (nothing was sent now)")
    if approval.status == "expired":
        return f"approval {approval.id} expired at {approval.expires_at}; ask for the write again (nothing was sent)"
    if approval.status == "rejected":
        return (f"approval {approval.id} was rejected by {approval.decided_by} at {approval.decided_at}; nothing "
                "was sent")
    return (f"approval {approval.id} was already decided: {approval.status} by {approval.decided_by} at "
            f"{approval.decided_at} (call {approval.call_id}, outcome {approval.outcome}); it is never run twice, "
            "nothing was sent now")


def execute_approved(store: ApprovalStore, approval_id: str, guard: Guard, *, by: str, via: str,
                     max_rows: int | None = None) -> tuple[Approval, CallResult]:
    """Claim approval *approval_id* and run its call once through *guard* (allow-list, budget, parameters and
    the audit still apply; the call is audited as approved). Raises :class:`Refused` when it is not pending."""
    approval = store.claim(approval_id, by=by, via=via)
    if approval.action.startswith("flow:"):
        try:
            result = adopt_flow(approval, guard.catalog.pipeline_of_name(approval.pipeline).root, by=by)
        except HubError as exc:
            result = CallResult(call_id="", action=approval.action, outcome="refused", message=str(exc))
        return store.finish(approval_id, result), result
    try:
        result = guard.call(approval.action, approval.params, approve=True, max_rows=max_rows)
    except BaseException as exc:  # the audit failed: the row says so; never retried
        store.finish(approval_id, CallResult(call_id="", action=approval.action, outcome="error",
                                             message=f"{type(exc).__name__}: {exc}"))
        raise
    return store.finish(approval_id, result), result


def adopt_flow(approval: Approval, root: Path, *, by: str) -> CallResult:
    """Write an approved flow's spec to ``<root>/pipelines/<pipeline>.yaml`` with ``approved: true`` (who
    approved it and when in ``planned_by``); refuse when that file exists: nothing is overwritten."""
    import yaml

    from hub.spec import loads

    text = str(approval.params["spec"])
    flow = str(approval.params["flow"])
    data = yaml.safe_load(text)
    name = str(data.get("pipeline") or flow)
    path = root / "pipelines" / f"{name}.yaml"
    if path.exists():
        raise Refused(f"{path} exists: the approved flow {flow} was not written (nothing is overwritten; move the "
                      "file away and approve a new plan)")
    marked = re.sub(r"(?m)^(\s+)approved: false\s*$", r"\1approved: true", text, count=1)
    stamp = f"; approved by {by} at {_now():%Y-%m-%d %H:%M} UTC (approval {approval.id})"
    marked = re.sub(r"(?m)^(\s+planned_by: )(.*)$", lambda m: f"{m.group(1)}{json.dumps(_unquote(m.group(2)) + stamp)}",
                    marked, count=1)
    loads(marked, path)  # still a valid spec (SpecError otherwise: a HubError, reported as refused)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(marked, encoding="utf-8")
    return CallResult(call_id=approval.id, action=approval.action, outcome="ok",
                      message=f"flow {flow} approved and written to {path}: its trigger runs it; `hub flow run {flow} "
                              f"--spec {path}` runs it now")


def _unquote(value: str) -> str:
    import yaml

    loaded = yaml.safe_load(value)
    return str(loaded) if loaded is not None else ""


def stores_of(roots: list[Path]) -> list[ApprovalStore]:
    """The distinct stores of these project roots (one per state folder)."""
    seen: dict[Path, ApprovalStore] = {}
    for root in roots:
        store = ApprovalStore.for_root(root)
        seen.setdefault(store.path.resolve(), store)
    return list(seen.values())


def find(stores: list[ApprovalStore], approval_id: str) -> tuple[ApprovalStore, Approval]:
    for store in stores:
        approval = store.get(approval_id)
        if approval is not None:
            return store, approval
    where = ", ".join(str(s.path) for s in stores) or "no store"
    raise ApprovalNotFound(f"no approval '{approval_id}' (looked in {where})")
