"""The hub as an MCP server (``hub mcp [SPEC...]``, the official ``mcp`` SDK's ``MCPServer``), over stdio or
Streamable HTTP (``hub mcp --http``).

Tools (every one annotated — ``readOnlyHint``, ``destructiveHint``, ``idempotentHint``, ``openWorldHint`` — and
with an output schema; results are structured content that validates against it):

* discovery, search first so a catalog of thousands of actions never floods the client:
  ``search_actions`` (best matches for words, paged), ``describe_action`` (one action's input/output schema,
  policy and hints), ``list_actions`` (a filtered, paged listing); each action carries the hints its side
  effect implies (:func:`action_hints`);
* ``read_action`` — a guarded call of a *read* action (read-only, so a client may run it without asking);
* ``call_action`` — any action (:mod:`hub.agent.guard`: allow-list, budgets, parameters, audit). A write is
  never executed on the agent's word: when the client supports elicitation the server asks the user to confirm
  the exact write (target, action, masked parameters) and runs it on "yes"; otherwise the answer is
  ``pending_approval`` with an id that a person approves with ``hub agent approve ID``
  (:mod:`hub.agent.approvals`, executed at most once); ``approval_status`` tells the agent what became of it;
* ``plan_pipeline``, ``materialize``, ``run_status`` — plan, run and check pipelines.

Resources: each pipeline's spec, each contract snapshot, the recent audit rows, the pending approvals.
Prompts: ``plan_pipeline_from_request``, ``investigate_failed_run``.

Sessions: each MCP session (the stdio connection, or one ``mcp-session-id`` over HTTP) has its own guard —
system budgets count per session — and a budget of tool calls (``session_budget``). Over HTTP every request
needs a bearer token (``$HUB_MCP_TOKEN``, a ``--tokens`` file of ``user token`` lines, or one generated and
printed once at start); the token names the user the session's calls are audited as, and a session belongs to
the user who opened it (the SDK refuses it to anyone else). A request whose ``Origin`` is not the server's own
(or one allowed with ``--allow-origin``) is refused with 403 before anything else.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import secrets
import sys
import threading
import weakref
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.to_thread
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resources import FunctionResource
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from hub.agent.approvals import Approval, ApprovalStore, execute_approved, stores_of
from hub.agent.catalog import Action, Catalog, build_catalog
from hub.agent.guard import AUDIT_TABLE, CallResult, Guard
from hub.errors import HubError, Refused
from hub.runtime.secrets import mask
from hub.spec.loader import Pipeline

log = logging.getLogger(__name__)

DEFAULT_SESSION_BUDGET = 1000
MAX_PAGE = 200


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Keep stray prints (libraries, Dagster) off stdout, which carries the MCP protocol."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


# --- hints from side effects ---------------------------------------------------------------------------

class ActionHints(BaseModel):
    """What calling one action does to its system, as the MCP tool annotations would say it."""

    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool = True


def action_hints(action: Action) -> ActionHints:
    """The hints an action's side effect implies: a read changes nothing (and repeats safely); a write creates
    (POST: additive, not idempotent), replaces (PUT: destructive, idempotent), changes (PATCH: destructive) or
    removes (DELETE: destructive, idempotent); a write whose verb is unknown (SOAP, GraphQL mutations) is
    taken as destructive and not idempotent. Every action reaches an external system (open world)."""
    if action.side_effect != "write":
        return ActionHints(read_only=True, destructive=False, idempotent=True)
    method = str((action.binding or {}).get("method") or "").upper()
    destructive, idempotent = {"POST": (False, False), "PUT": (True, True), "PATCH": (True, False),
                               "DELETE": (True, True)}.get(method, (True, False))
    return ActionHints(read_only=False, destructive=destructive, idempotent=idempotent)


# --- output models (the tools' output schemas) -----------------------------------------------------------

class ActionSummary(BaseModel):
    name: str
    system: str
    protocol: str
    side_effect: str
    description: str
    hints: ActionHints
    score: float | None = None


class ActionPage(BaseModel):
    """One page of actions: ``next_offset`` is where the next page starts (None: this is the last)."""

    total: int | None = Field(description="matching actions in all (None: more than were ranked)")
    offset: int
    returned: int
    next_offset: int | None
    actions: list[ActionSummary]
    query: str | None = None
    unreadable_systems: dict[str, str] = Field(default_factory=dict)


class ActionDetail(BaseModel):
    name: str
    system: str
    protocol: str
    side_effect: str
    description: str
    pipeline: str
    binding: dict[str, Any]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    hints: ActionHints
    allowed: bool | None = Field(None, description="a write: on the pipeline's agent.allow_writes")
    needs_approval: bool
    budget_remaining: int | None


class ApprovalInfo(BaseModel):
    id: str
    status: str
    action: str
    system: str
    pipeline: str
    target: str
    params: dict[str, Any] = Field(description="masked")
    requested_by: str
    created_at: str
    expires_at: str
    decided_by: str | None = None
    decided_at: str | None = None
    via: str | None = None
    call_id: str | None = None
    outcome: str | None = None
    message: str | None = None

    @classmethod
    def of(cls, approval: Approval) -> ApprovalInfo:
        return cls.model_validate(approval.public())


class CallOutput(BaseModel):
    """What a call did: ``ok`` (records), ``refused``, ``error``, or ``pending_approval`` (a write waiting for a
    person: ``approval`` says which, and ``hub agent approve <id>`` runs it)."""

    call_id: str | None = None
    action: str
    outcome: Literal["ok", "refused", "error", "pending_approval"]
    message: str = ""
    total: int | None = None
    total_at_least: int | None = None
    returned: int = 0
    truncated: bool = False
    records: list[dict[str, Any]] = Field(default_factory=list)
    duration_s: float = 0.0
    approval: ApprovalInfo | None = None

    @classmethod
    def of(cls, result: CallResult, approval: Approval | None = None) -> CallOutput:
        return cls(call_id=result.call_id, action=result.action, outcome=result.outcome,
                   message=result.message, total=result.total, total_at_least=result.total_at_least,
                   returned=len(result.records), truncated=result.truncated, records=result.records,
                   duration_s=round(result.duration_s, 3),
                   approval=ApprovalInfo.of(approval) if approval is not None else None)


class PlanOutput(BaseModel):
    request: str
    plan: Any = Field(description="the planner's result (spec text, validation, dry run, notes)")
    outcome: Literal["planned", "pending_approval"] = Field(
        "planned", description="pending_approval: the plan is a flow that writes; a person approves it with "
                               "`hub agent approve <approval.id>` (it is never run by the agent)")
    approval: ApprovalInfo | None = None


class RunOutcomeInfo(BaseModel):
    run_id: str
    partition: str | None
    success: bool
    assets: list[str]
    row_counts: dict[str, int]
    error: str | None = None


class MaterializeOutput(BaseModel):
    pipeline: str
    success: bool
    runs: list[RunOutcomeInfo]


class RunInfo(BaseModel):
    run_id: str
    status: str
    partition: str | None
    assets: list[str]
    started: str | None
    ended: str | None


class Materialization(BaseModel):
    at: str | None
    run_id: str | None
    partition: str | None
    rows: int | None


class RunStatusOutput(BaseModel):
    pipeline: str
    runs: list[RunInfo]
    latest_materializations: dict[str, Materialization]


class ConfirmWrite(BaseModel):
    """What the user answers when the server asks to confirm a write (MCP elicitation, form mode)."""

    confirm: bool = Field(description="Send this write to the system now?")


# --- the tools' logic, free of MCP ---------------------------------------------------------------------

class SessionState:
    """One MCP session: who it is, its guard (system budgets count per session) and its tool-call budget."""

    def __init__(self, catalog_guard: Guard, actor: str, budget: int | None) -> None:
        self.guard = catalog_guard
        self.actor = actor
        self.budget = budget
        self.calls = 0
        self._lock = threading.Lock()

    def spend(self, tool: str) -> None:
        with self._lock:
            if self.budget is not None and self.calls >= self.budget:
                raise ToolError(f"{tool}: this session's budget of {self.budget} tool calls is spent; open a new "
                                "session (nothing was done)")
            self.calls += 1


class HubTools:
    """The tools' logic, free of MCP so it can be tested and reused. One instance serves every session."""

    def __init__(self, pipelines: list[Pipeline], *, actor: str = "mcp-client", agent: str = "hub-mcp",
                 session_budget: int | None = DEFAULT_SESSION_BUDGET, elicitation: bool = True) -> None:
        if not pipelines:
            raise HubError("hub mcp: no pipeline specs")
        self.pipelines = {p.name: p for p in pipelines}
        self.actor = actor
        self.agent = agent
        self.session_budget = session_budget
        self.elicitation = elicitation
        self._catalog: Catalog | None = None
        self._catalog_lock = threading.Lock()
        self._guard: Guard | None = None  # the default session's (callers without MCP)
        self._sessions: weakref.WeakKeyDictionary[Any, SessionState] = weakref.WeakKeyDictionary()
        self._guards: weakref.WeakSet[Guard] = weakref.WeakSet()

    @property
    def catalog(self) -> Catalog:
        with self._catalog_lock:
            if self._catalog is None:
                with _stdout_to_stderr():
                    self._catalog = build_catalog(list(self.pipelines.values()))
            return self._catalog

    def new_guard(self, actor: str) -> Guard:
        guard = Guard(self.catalog, actor=actor, agent=self.agent)
        self._guards.add(guard)
        return guard

    @property
    def guard(self) -> Guard:
        if self._guard is None:
            self._guard = self.new_guard(self.actor)
        return self._guard

    def session(self, key: Any, actor: str | None) -> SessionState:
        """The state of MCP session *key* (created at its first tool call)."""
        state = self._sessions.get(key)
        if state is None:
            guard = self.new_guard(actor or self.actor)
            if getattr(key, "session_id", None):  # the HTTP session's id: the audit rows name it
                guard.session = str(key.session_id)
            state = SessionState(guard, actor or self.actor, self.session_budget)
            self._sessions[key] = state
        return state

    def refresh(self) -> None:
        """Read the catalog again; the guards keep their budgets (a refresh does not reset them)."""
        with _stdout_to_stderr():
            catalog = build_catalog(list(self.pipelines.values()))
        with self._catalog_lock:
            self._catalog = catalog
        for guard in list(self._guards):
            guard.catalog = catalog

    def pipeline(self, name: str | None) -> Pipeline:
        if name is None:
            if len(self.pipelines) == 1:
                return next(iter(self.pipelines.values()))
            raise HubError(f"several pipelines are loaded; name one of {', '.join(self.pipelines)}")
        if name not in self.pipelines:
            raise HubError(f"no pipeline '{name}' (pipelines: {', '.join(self.pipelines)})")
        return self.pipelines[name]

    def store(self, action: Action) -> ApprovalStore:
        return ApprovalStore.for_root(self.catalog.pipeline_of(action).root)

    def stores(self) -> list[ApprovalStore]:
        return stores_of([p.root for p in self.pipelines.values()])

    # --- catalog ---------------------------------------------------------------------------------------

    @staticmethod
    def _summary(action: Action, score: float | None = None) -> ActionSummary:
        summary = action.summary()
        description = summary["description"] or ""
        summary["description"] = description if len(description) <= 300 else description[:297] + "..."
        return ActionSummary(**summary, hints=action_hints(action), score=score)

    def list_actions(self, system: str | None = None, side_effect: str | None = None, offset: int = 0,
                     limit: int = 50, refresh: bool = False) -> ActionPage:
        if refresh:
            self.refresh()
        offset, limit = max(0, offset), max(1, min(limit, MAX_PAGE))
        matching = [a for a in self.catalog.actions
                    if (system is None or a.system == system) and (side_effect is None or a.side_effect == side_effect)]
        page = matching[offset:offset + limit]
        end = offset + len(page)
        return ActionPage(total=len(matching), offset=offset, returned=len(page),
                          next_offset=end if end < len(matching) else None,
                          actions=[self._summary(a) for a in page], unreadable_systems=dict(self.catalog.errors))

    def search_actions(self, query: str, limit: int = 10, offset: int = 0) -> ActionPage:
        offset, limit = max(0, offset), max(1, min(limit, 50))
        ranked = self.catalog.scored(query, offset + limit + 1)  # one more: is there a next page?
        page = ranked[offset:offset + limit]
        more = len(ranked) > offset + limit
        return ActionPage(total=None if more else len(ranked), offset=offset, returned=len(page),
                          next_offset=offset + len(page) if more else None, query=query,
                          actions=[self._summary(a, round(s, 4)) for a, s in page])

    def describe_action(self, name: str, guard: Guard | None = None) -> ActionDetail:
        guard = guard or self.guard
        action = self.catalog.get(name)
        out = action.to_dict()
        write = action.side_effect == "write"
        return ActionDetail(**out, hints=action_hints(action),
                            allowed=action.name in guard.allowed_writes(action) if write else None,
                            needs_approval=write, budget_remaining=guard.remaining(action.system))

    def read_action(self, guard: Guard, name: str, params: dict[str, Any] | None = None,
                    max_rows: int | None = None) -> CallOutput:
        action = self.catalog.get(name)
        if action.side_effect == "write":
            raise HubError(f"{name} is a write action: read_action runs reads only (use call_action; a write "
                           "needs a person's approval)")
        with _stdout_to_stderr():
            return CallOutput.of(guard.call(name, params or {}, max_rows=max_rows))

    def call_read_or_refuse(self, guard: Guard, name: str, params: dict[str, Any],
                            max_rows: int | None) -> tuple[Action | None, CallOutput | None]:
        """A read (or an unknown action) is called now; a write that the policy refuses is refused now (and
        audited); a write the policy allows comes back as its action, to be approved."""
        try:
            action = self.catalog.get(name)
        except HubError:
            return None, CallOutput.of(guard.call(name, params))  # refused and audited, with the suggestions
        if action.side_effect != "write":
            with _stdout_to_stderr():
                return action, CallOutput.of(guard.call(name, params, max_rows=max_rows))
        try:
            guard.check(action, params, approve=True)  # everything but the approval: allow-list, budget, params
        except Refused as exc:
            return action, CallOutput.of(guard.refuse(action, params, str(exc)))
        return action, None

    def request_approval(self, state: SessionState, action: Action, params: dict[str, Any]) -> Approval:
        return self.store(action).request(action, params, requested_by=state.actor, agent=self.agent,
                                          session=state.guard.session)

    def run_approved(self, state: SessionState, approval: Approval, max_rows: int | None) -> CallOutput:
        store = ApprovalStore.for_root(self.pipelines[approval.pipeline].root)
        with _stdout_to_stderr():
            decided, result = execute_approved(store, approval.id, state.guard, by=state.actor, via="elicitation",
                                               max_rows=max_rows)
        return CallOutput.of(result, decided)

    def declined(self, state: SessionState, action: Action, params: dict[str, Any], approval: Approval,
                 answer: str) -> CallOutput:
        store = self.store(action)
        decided = store.reject(approval.id, by=state.actor, via="elicitation", reason=f"{answer} by the user")
        result = state.guard.refuse(action, params, f"{action.name}: the user {answer} the write in the client; "
                                                    "nothing was sent")
        return CallOutput.of(result, decided)

    def call_action(self, name: str, params: dict[str, Any] | None = None,
                    max_rows: int | None = None) -> dict[str, Any]:
        """``call_action`` without a client to ask (the default session): a read runs, a write the policy
        refuses is refused, an allowed write waits for a person (``pending_approval``); the result as JSON."""
        state = self.session(self, None)
        values = dict(params or {})
        action, done = self.call_read_or_refuse(state.guard, name, values, max_rows)
        if done is None:
            assert action is not None
            done = _pending(action, self.request_approval(state, action, values))
        return done.model_dump(mode="json")

    def approval_status(self, approval_id: str) -> ApprovalInfo:
        from hub.agent.approvals import find

        return ApprovalInfo.of(find(self.stores(), approval_id)[1])

    # --- planning and runs -----------------------------------------------------------------------------

    def plan_pipeline(self, request: str, dry_run: bool = False, requested_by: str = "mcp-client"
                      ) -> PlanOutput:
        try:
            from hub.agent import planner  # the planner is developed separately; imported only when asked
        except ImportError as exc:
            raise HubError(f"the pipeline planner is not available in this installation (hub.agent.planner: "
                           f"{exc})") from None
        plan_fn = getattr(planner, "plan", None)
        if plan_fn is None:
            raise HubError("hub.agent.planner has no plan(request, pipelines) function")
        import inspect

        accepted = inspect.signature(plan_fn).parameters
        extra: dict[str, Any] = {}
        if "catalog" in accepted:
            extra["catalog"] = self.catalog  # the catalog this server already read
        if "dry_run" in accepted:
            extra["dry_run"] = dry_run
        with _stdout_to_stderr():
            result = plan_fn(request, list(self.pipelines.values()), **extra)
        out = PlanOutput(request=request, plan=_plain(result))
        if getattr(result, "flow", None) and getattr(result, "ok", False) and result.spec_text:
            # a plan that acts is never run by the agent: a person approves it (hub agent approve ID)
            base = next((p for p in self.pipelines.values()
                         if any(str(w["action"]).split(".", 1)[0] in p.spec.systems for w in result.writes)),
                        next(iter(self.pipelines.values())))
            approval = ApprovalStore.for_root(base.root).request_flow(
                base.name, result.flow, result.spec_text, result.writes, requested_by=requested_by, agent=self.agent,
                session="plan")
            out.approval = ApprovalInfo.of(approval)
            out.outcome = "pending_approval"
        return out

    def materialize(self, pipeline: str | None = None, partition: str | None = None,
                    assets: list[str] | None = None) -> MaterializeOutput:
        from hub.dagster.instance import local_instance
        from hub.dagster.run import partition_keys, run_pipeline

        p = self.pipeline(pipeline)
        keys = partition_keys(p, partition=partition)
        with _stdout_to_stderr():
            instance = local_instance(p.root)
            outcomes = run_pipeline(p, instance, assets=assets or None, partitions=keys, quiet=True)
        return MaterializeOutput(pipeline=p.name, success=all(o.success for o in outcomes), runs=[
            RunOutcomeInfo(run_id=o.run_id, partition=o.partition, success=o.success, assets=list(o.assets),
                           row_counts=dict(o.row_counts), error=mask(o.error) if o.error else None)
            for o in outcomes])

    def run_status(self, pipeline: str | None = None, limit: int = 10) -> RunStatusOutput:
        import dagster as dg

        from hub.dagster.instance import local_instance

        p = self.pipeline(pipeline)
        instance = local_instance(p.root)
        runs = instance.get_run_records(dg.RunsFilter(tags={"hub/pipeline": p.name}), limit=max(1, min(limit, 100)))
        out_runs = []
        for rec in runs:
            run = rec.dagster_run
            out_runs.append(RunInfo(
                run_id=run.run_id, status=run.status.value, partition=run.tags.get("dagster/partition"),
                assets=sorted(k.to_user_string() for k in (run.asset_selection or [])),
                started=_ts(rec.start_time), ended=_ts(rec.end_time)))
        latest: dict[str, Materialization] = {}
        for name in p.asset_names():
            event = instance.get_latest_materialization_event(dg.AssetKey(name))
            if event is None:
                continue
            mat = event.asset_materialization
            rows = mat.metadata.get("dagster/row_count") if mat is not None else None
            latest[name] = Materialization(at=_ts(event.timestamp), run_id=event.run_id,
                                           partition=mat.partition if mat is not None else None,
                                           rows=rows.value if rows is not None else None)
        return RunStatusOutput(pipeline=p.name, runs=out_runs, latest_materializations=latest)

    # --- resources -------------------------------------------------------------------------------------

    def spec_text(self, name: str) -> str:
        return mask(self.pipeline(name).path.read_text(encoding="utf-8"))

    def contract_files(self) -> list[tuple[str, str, Path]]:
        """(pipeline, system, file) of every contract snapshot of the loaded pipelines."""
        from hub.contracts.runner import SUFFIX, contracts_dir

        found = []
        for p in self.pipelines.values():
            folder = contracts_dir(p) / p.name
            for path in sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []:
                found.append((p.name, path.name.removesuffix(SUFFIX), path))
        return found

    def recent_audit(self, limit: int = 50) -> list[dict[str, Any]]:
        from hub.warehouse import connect

        rows: list[dict[str, Any]] = []
        for url in dict.fromkeys(p.warehouse_url for p in self.pipelines.values()):
            try:
                table = connect(url).query(f"SELECT * FROM {AUDIT_TABLE} ORDER BY called_at DESC LIMIT {int(limit)}")
            except Exception as exc:  # no audit table yet, or the warehouse is busy: say so, do not fail
                log.debug("audit of %s unreadable: %s", mask(url), exc)
                continue
            rows.extend(table.to_pylist())
        rows.sort(key=lambda r: r.get("called_at") or datetime.min.replace(tzinfo=UTC), reverse=True)
        return json.loads(json.dumps(rows[:limit], default=str))

    def pending(self) -> list[dict[str, Any]]:
        return [a.public() for store in self.stores() for a in store.list("pending")]


def _ts(value: float | None) -> str | None:
    return datetime.fromtimestamp(value, UTC).isoformat() if value else None


def _plain(value: Any) -> Any:
    """A JSON-friendly form of whatever the planner returns."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if is_dataclass(value) and not isinstance(value, type):
        try:
            return json.loads(json.dumps(asdict(value), default=str))
        except Exception:  # a field that does not copy: its text
            return str(value)
    if isinstance(value, (dict, list, str, int, float, bool)) or value is None:
        return json.loads(json.dumps(value, default=str))
    return str(value)


# --- the MCP server ------------------------------------------------------------------------------------

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


def _user_of(ctx: Context) -> str | None:
    """The authenticated user of an HTTP request (the bearer token's user); None over stdio."""
    request = getattr(ctx.request_context, "request", None)
    user = getattr(request, "scope", {}).get("user") if request is not None else None
    return user.access_token.client_id if isinstance(user, AuthenticatedUser) else None


def _connection(ctx: Context) -> Any:
    """What identifies the MCP session: the SDK makes a ``ServerSession`` per request, over the connection the
    client keeps (the stdio pipe, or one ``mcp-session-id`` over HTTP); the SDK has no public accessor yet."""
    return getattr(ctx.session, "_connection", None) or ctx.session


def _elicits(ctx: Context) -> bool:
    caps = ctx.client_capabilities
    return caps is not None and caps.elicitation is not None


def _result(output: CallOutput) -> CallToolResult:
    """A call's result as structured content; a refusal or a failure is also a tool error (``is_error``) whose
    text ends with the result's JSON."""
    data = output.model_dump(mode="json")
    text = json.dumps(data, default=str)
    error = output.outcome in ("refused", "error")
    return CallToolResult(content=[TextContent(type="text", text=f"Error executing tool: {text}" if error else text)],
                          structured_content=data, is_error=error)


def build_server(tools: HubTools, **server_options: Any) -> MCPServer:
    """The MCP server exposing *tools* (``server_options`` go to ``MCPServer``: auth, token verifier)."""
    server: MCPServer = MCPServer(
        "hub", instructions="Integration hub: find actions of the connected systems with search_actions (then "
                            "describe_action for one action's schema), call reads with read_action, ask for a "
                            "write with call_action (a person approves it: in this client if it can ask, else "
                            "with `hub agent approve ID`), plan and materialize pipelines, and check their runs.",
        **server_options)

    async def run(ctx: Context, tool: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        state = tools.session(_connection(ctx), _user_of(ctx))
        state.spend(tool)
        try:
            return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
        except ToolError:
            raise
        except HubError as exc:
            raise ToolError(mask(str(exc))) from None
        except Exception as exc:  # shown to the client too (masked), not only the SDK's generic message
            raise ToolError(mask(f"{type(exc).__name__}: {exc}")) from None

    @server.tool(annotations=READ.model_copy(update={"open_world_hint": True}))
    async def list_actions(ctx: Context, system: str | None = None, side_effect: str | None = None,
                           offset: int = 0, limit: int = 50, refresh: bool = False) -> ActionPage:
        """A page of the actions the systems offer (name, system, side effect, short description, hints),
        filtered by system and/or side_effect ('read'/'write'); at most 200 a page, next_offset for the next.
        Prefer search_actions to find an action; refresh=true reads the systems again."""
        page: ActionPage = await run(ctx, "list_actions", tools.list_actions, system, side_effect, offset, limit,
                                     refresh)
        return page

    @server.tool(annotations=READ)
    async def search_actions(ctx: Context, query: str, limit: int = 10, offset: int = 0) -> ActionPage:
        """The actions best matching a request in words ('purchase orders', 'client accounts', 'stock
        levels'), best first with a score, at most 50 a page (next_offset for more). Then describe_action."""
        page: ActionPage = await run(ctx, "search_actions", tools.search_actions, query, limit, offset)
        return page

    @server.tool(annotations=READ)
    async def describe_action(ctx: Context, name: str) -> ActionDetail:
        """One action in full: input schema (its parameters), output schema (one record), binding, side
        effect and hints, whether a write is allowed, and the call budget left for its system."""
        state = tools.session(_connection(ctx), _user_of(ctx))
        detail: ActionDetail = await run(ctx, "describe_action", tools.describe_action, name, state.guard)
        return detail

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                                             open_world_hint=True))
    async def read_action(ctx: Context, name: str, params: dict[str, Any] | None = None,
                          max_rows: int | None = None) -> Annotated[CallToolResult, CallOutput]:
        """Call a read action (its side_effect is 'read') with parameters matching its input schema; returns
        the first records and the total count. Writes are refused here: use call_action."""
        state = tools.session(_connection(ctx), _user_of(ctx))
        output: CallOutput = await run(ctx, "read_action", tools.read_action, state.guard, name, params, max_rows)
        return _result(output)

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                                             open_world_hint=True))
    async def call_action(ctx: Context, name: str, params: dict[str, Any] | None = None,
                          max_rows: int | None = None) -> Annotated[CallToolResult, CallOutput]:
        """Call any action with parameters matching its input schema. A read runs now. A write runs only
        with a person's approval: if this client can ask its user, the server asks to confirm the exact write
        and runs it on yes; otherwise the outcome is 'pending_approval' with approval.id, which a person
        approves with `hub agent approve <id>` (see approval_status). Writes not on the pipeline's allow-list,
        spent budgets and invalid parameters are refused. Every call is audited."""
        state = tools.session(_connection(ctx), _user_of(ctx))
        values = dict(params or {})
        action, done = await run(ctx, "call_action", tools.call_read_or_refuse, state.guard, name, values, max_rows)
        if done is not None:
            return _result(done)
        assert action is not None
        approval: Approval = await anyio.to_thread.run_sync(lambda: tools.request_approval(state, action, values))
        if not (tools.elicitation and _elicits(ctx)):
            return _result(_pending(action, approval))
        try:
            answer = await ctx.elicit(f"Approve this write?\n{approval.summary()}", ConfirmWrite)
        except Exception as exc:  # the client could not ask after all: the approval stays pending
            log.info("elicitation failed (%s); approval %s stays pending", exc, approval.id)
            return _result(_pending(action, approval))
        if answer.action == "accept" and answer.data.confirm:
            output: CallOutput = await anyio.to_thread.run_sync(
                lambda: tools.run_approved(state, approval, max_rows))
            return _result(output)
        verdict = "declined" if answer.action in ("accept", "decline") else "cancelled"
        declined: CallOutput = await anyio.to_thread.run_sync(
            lambda: tools.declined(state, action, values, approval, verdict))
        return _result(declined)

    @server.tool(annotations=READ)
    async def approval_status(ctx: Context, approval_id: str) -> ApprovalInfo:
        """What became of a write awaiting approval: pending, executed (with the call's id and outcome),
        rejected, refused, failed or expired."""
        info: ApprovalInfo = await run(ctx, "approval_status", tools.approval_status, approval_id)
        return info

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                                             open_world_hint=True))
    async def plan_pipeline(ctx: Context, request: str, dry_run: bool = False) -> PlanOutput:
        """Propose a pipeline spec for a request in words, from the catalog of actions (dry_run=true also
        runs one partition of it into a temporary warehouse to prove it works; nothing is written to the
        systems or the project). A request that acts ("when a payment arrives, mark the order paid") is planned
        as a flow: its writes and sample requests come back with outcome 'pending_approval' and an approval id;
        a person approves it with `hub agent approve <id>`, never the agent."""
        plan: PlanOutput = await run(ctx, "plan_pipeline", tools.plan_pipeline, request, dry_run,
                                     _user_of(ctx) or tools.actor)
        return plan

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                             open_world_hint=True))
    async def materialize(ctx: Context, pipeline: str | None = None, partition: str | None = None,
                          assets: list[str] | None = None) -> MaterializeOutput:
        """Materialize a pipeline (all assets, or these) for a partition (default: the latest complete one)
        on the local Dagster instance; returns the runs with row counts. It only reads the systems and
        rewrites the partition in the hub's warehouse (running it again gives the same rows)."""
        out: MaterializeOutput = await run(ctx, "materialize", tools.materialize, pipeline, partition, assets)
        return out

    @server.tool(annotations=READ)
    async def run_status(ctx: Context, pipeline: str | None = None, limit: int = 10) -> RunStatusOutput:
        """The latest runs of a pipeline on the local Dagster instance and each asset's latest
        materialization (time, partition, rows)."""
        out: RunStatusOutput = await run(ctx, "run_status", tools.run_status, pipeline, limit)
        return out

    _resources(server, tools)
    _prompts(server, tools)
    return server


def _pending(action: Action, approval: Approval) -> CallOutput:
    return CallOutput(action=action.name, outcome="pending_approval", approval=ApprovalInfo.of(approval),
                      message=f"{action.name} is a write: nothing was sent. It waits for a person's approval: "
                              f"`hub agent approve {approval.id}` (or `hub agent reject {approval.id}`); "
                              "approval_status tells what became of it.")


def _resources(server: MCPServer, tools: HubTools) -> None:
    """Pipeline specs, contract snapshots, the recent audit and the pending approvals, as resources."""
    for name in tools.pipelines:
        def spec(name: str = name) -> str:
            return tools.spec_text(name)

        server.add_resource(FunctionResource.from_function(
            spec, uri=f"hub://pipelines/{name}/spec", name=f"{name} spec", mime_type="application/yaml",
            description=f"The pipeline spec of {name} (YAML; secrets are references, never values)."))
    for pipeline, system, path in tools.contract_files():
        def contract(path: Path = path) -> str:
            return mask(path.read_text(encoding="utf-8"))

        server.add_resource(FunctionResource.from_function(
            contract, uri=f"hub://contracts/{pipeline}/{system}", name=f"{pipeline}/{system} contract",
            mime_type="application/json",
            description=f"The contract snapshot of system {system} as pipeline {pipeline} relies on it."))

    def audit() -> str:
        return json.dumps(tools.recent_audit(), indent=1)

    def pending() -> str:
        return json.dumps(tools.pending(), indent=1)

    server.add_resource(FunctionResource.from_function(
        audit, uri="hub://audit/recent", name="recent audit", mime_type="application/json",
        description=f"The latest 50 guarded calls ({AUDIT_TABLE}): who, what, parameters masked, outcome."))
    server.add_resource(FunctionResource.from_function(
        pending, uri="hub://approvals/pending", name="pending approvals", mime_type="application/json",
        description="Writes waiting for a person's approval (hub agent approve ID), parameters masked."))


def _prompts(server: MCPServer, tools: HubTools) -> None:
    @server.prompt(title="Plan a pipeline from a request")
    def plan_pipeline_from_request(request: str) -> str:
        """Turn a request in words into a pipeline spec, finding the actions by search first."""
        return (f"Plan a hub pipeline for this request:\n\n{request}\n\n"
                "Steps: 1. search_actions with the request's nouns (what data, which system) and read the best "
                "few with describe_action (input and output schemas). 2. If a needed field is offered by no "
                "system, say so and name the closest candidates instead of guessing. 3. Call plan_pipeline with "
                "the request (dry_run=true to prove it on one partition) and report the spec, every assumption "
                "it made and the dry run's row counts. Never call a write action to plan: writes need a "
                "person's approval. The loaded pipelines' specs are the resources hub://pipelines/<name>/spec "
                f"({', '.join(tools.pipelines)}).")

    @server.prompt(title="Investigate a failed run")
    def investigate_failed_run(pipeline: str, run_id: str = "") -> str:
        """Find out why a pipeline run failed and what to do about it."""
        which = f"run {run_id}" if run_id else "its latest failed run"
        return (f"Investigate {which} of pipeline {pipeline}.\n\n"
                f"1. run_status(pipeline='{pipeline}') lists the runs with their status and partition, and each "
                "asset's latest materialization. 2. Read the spec (hub://pipelines/"
                f"{pipeline}/spec) to see which system and source feed the failed asset. 3. Compare the system "
                f"with its contract snapshot (hub://contracts/{pipeline}/<system>): a changed field or operation "
                "is a likely cause. 4. Check the system answers now with a small read (read_action, max_rows=3). "
                "5. Report the cause, the evidence, and the fix; re-run with materialize only when the cause is "
                "gone. Do not call write actions.")


# --- transports ----------------------------------------------------------------------------------------

def serve(pipelines: list[Pipeline], *, actor: str = "mcp-client", session_budget: int | None = None,
          elicitation: bool = True) -> None:
    """Serve the tools over stdio until the client closes the connection."""
    tools = HubTools(pipelines, actor=actor, session_budget=session_budget or DEFAULT_SESSION_BUDGET,
                     elicitation=elicitation)
    build_server(tools).run("stdio")


class StaticTokens:
    """Bearer tokens of known users (token -> user), compared in constant time."""

    def __init__(self, tokens: dict[str, str]) -> None:
        if not tokens:
            raise HubError("hub mcp --http: no bearer token")
        self._tokens = dict(tokens)

    async def verify_token(self, token: str) -> AccessToken | None:
        for known, user in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return AccessToken(token="***", client_id=user, scopes=["hub"], subject=user)
        return None


def read_tokens(path: Path) -> dict[str, str]:
    """A tokens file: one ``user token`` a line (``#`` comments); returns token -> user."""
    tokens: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise HubError(f"--tokens {path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) < 16:
            raise HubError(f"--tokens {path}:{number}: expected 'user token' with a token of 16+ characters")
        tokens[parts[1]] = parts[0]
    if not tokens:
        raise HubError(f"--tokens {path}: no 'user token' line")
    return tokens


def generate_token() -> str:
    return secrets.token_urlsafe(32)


class OriginGuard:
    """Refuse (403) any request whose ``Origin`` header is not one of *allowed*, before authentication, so a web
    page in a browser cannot drive the server (DNS rebinding, cross-site requests). No Origin (a non-browser
    client) passes. An allowed origin is ``scheme://host:port``; ``scheme://host:*`` allows any port."""

    def __init__(self, app: Any, allowed: list[str]) -> None:
        self.app = app
        self.allowed = allowed

    def ok(self, origin: str) -> bool:
        for allowed in self.allowed:
            if origin == allowed or (allowed.endswith(":*") and origin.startswith(allowed[:-1])
                                     and origin[len(allowed) - 1:].isdigit()):
                return True
        return False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            origin = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"origin"), None)
            if origin is not None and not self.ok(origin):
                body = json.dumps({"error": "forbidden", "error_description": "Origin not allowed"}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def http_app(tools: HubTools, *, host: str, port: int, tokens: dict[str, str],
             allowed_origins: list[str] | None = None) -> Any:
    """The Streamable HTTP app (``/mcp``): origin check, bearer auth, one session per ``mcp-session-id`` bound
    to the user who opened it."""
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.transport_security import TransportSecuritySettings

    own = [host, "localhost", "127.0.0.1", "[::1]"] if host in ("127.0.0.1", "localhost", "::1") else [host]
    own = [f"[{h}]" if ":" in h and not h.startswith("[") else h for h in own]
    origins = [f"{scheme}://{h}:{port}" for h in own for scheme in ("http", "https")] + list(allowed_origins or [])
    server = build_server(tools, token_verifier=StaticTokens(tokens),
                          auth=AuthSettings(issuer_url=f"http://{own[0]}:{port}",
                                            resource_server_url=None, required_scopes=["hub"]))
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                         allowed_hosts=[f"{h}:{port}" for h in own] + own,
                                         allowed_origins=origins)
    app = server.streamable_http_app(transport_security=security, host=host)
    return OriginGuard(app, origins)


def serve_http(pipelines: list[Pipeline], *, host: str = "127.0.0.1", port: int = 8765,
               tokens: dict[str, str] | None = None, actor: str = "mcp-client",
               allowed_origins: list[str] | None = None, session_budget: int | None = None,
               elicitation: bool = True) -> None:
    """Serve the tools over Streamable HTTP at ``http://host:port/mcp`` until interrupted. Without *tokens*
    one is generated for *actor* and printed once on stderr."""
    import uvicorn

    if not tokens:
        token = generate_token()
        tokens = {token: actor}
        print(f"hub mcp: bearer token for user {actor} (shown once; send 'Authorization: Bearer <token>'): "
              f"{token}", file=sys.stderr, flush=True)
    tools = HubTools(pipelines, actor=actor, session_budget=session_budget or DEFAULT_SESSION_BUDGET,
                     elicitation=elicitation)
    app = http_app(tools, host=host, port=port, tokens=tokens, allowed_origins=allowed_origins)
    shown = f"[{host}]" if ":" in host else host
    print(f"hub mcp: serving MCP (Streamable HTTP) at http://{shown}:{port}/mcp for "
          f"{len(set(tokens.values()))} user(s)", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)).run()
