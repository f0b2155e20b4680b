"""The hub as an MCP server (``hub mcp [SPEC...]``, stdio transport, the official ``mcp`` SDK's MCPServer).

Tools:

* ``list_actions`` / ``search_actions`` / ``describe_action`` — the action catalog (:mod:`hub.agent.catalog`);
* ``call_action`` — a guarded call (:mod:`hub.agent.guard`): reads allowed, writes only when on the spec's
  ``agent.allow_writes`` *and* called with ``approve: true``; budgets, rate limits and the ``_hub_audit``
  table apply. A refused or failed call is a tool error (``is_error``) whose text ends with the call's JSON
  result (``Error executing tool call_action: {"outcome": "refused", "message": ...}``);
* ``plan_pipeline`` — a pipeline spec proposed for a request (``hub.agent.planner.plan``, when installed);
* ``materialize`` — run a pipeline (a partition, or the latest complete one) on the local Dagster instance;
* ``run_status`` — the latest runs and each asset's latest materialization on that instance.

The catalog is read from the live systems once, at the first tool call that needs it (``refresh: true``
reads it again). One server process is one guard session: call budgets count across its calls.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from typing import Any

from hub.agent.catalog import Catalog, build_catalog
from hub.agent.guard import Guard
from hub.errors import HubError
from hub.runtime.secrets import mask
from hub.spec.loader import Pipeline


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Keep stray prints (libraries, Dagster) off stdout, which carries the MCP protocol."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


class HubTools:
    """The tools' logic, free of MCP so it can be tested and reused."""

    def __init__(self, pipelines: list[Pipeline], *, actor: str = "mcp-client", agent: str = "hub-mcp") -> None:
        if not pipelines:
            raise HubError("hub mcp: no pipeline specs")
        self.pipelines = {p.name: p for p in pipelines}
        self.actor = actor
        self.agent = agent
        self._catalog: Catalog | None = None
        self._guard: Guard | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = build_catalog(list(self.pipelines.values()))
        return self._catalog

    @property
    def guard(self) -> Guard:
        if self._guard is None:
            self._guard = Guard(self.catalog, actor=self.actor, agent=self.agent)
        return self._guard

    def refresh(self) -> None:
        session = self._guard.session if self._guard else None
        used = self._guard.used if self._guard else {}
        self._catalog = build_catalog(list(self.pipelines.values()))
        self._guard = Guard(self._catalog, actor=self.actor, agent=self.agent, session=session)
        self._guard.used.update(used)  # a refresh does not reset the budgets

    def pipeline(self, name: str | None) -> Pipeline:
        if name is None:
            if len(self.pipelines) == 1:
                return next(iter(self.pipelines.values()))
            raise HubError(f"several pipelines are loaded; name one of {', '.join(self.pipelines)}")
        if name not in self.pipelines:
            raise HubError(f"no pipeline '{name}' (pipelines: {', '.join(self.pipelines)})")
        return self.pipelines[name]

    # --- catalog ---------------------------------------------------------------------------------------

    def list_actions(self, system: str | None = None, side_effect: str | None = None,
                     refresh: bool = False) -> dict[str, Any]:
        if refresh:
            self.refresh()
        actions = [a.summary() for a in self.catalog.actions
                   if (system is None or a.system == system) and (side_effect is None or a.side_effect == side_effect)]
        out: dict[str, Any] = {"count": len(actions), "actions": actions}
        if self.catalog.errors:
            out["unreadable_systems"] = self.catalog.errors
        return out

    def search_actions(self, query: str, limit: int = 10) -> dict[str, Any]:
        hits = self.catalog.scored(query, max(1, min(limit, 100)))
        return {"query": query, "actions": [{**a.summary(), "score": s} for a, s in hits]}

    def describe_action(self, name: str) -> dict[str, Any]:
        action = self.catalog.get(name)
        out = action.to_dict()
        if action.side_effect == "write":
            out["allowed"] = action.name in self.guard.allowed_writes(action)
            out["needs_approval"] = True
        out["budget_remaining"] = self.guard.remaining(action.system)
        return out

    def call_action(self, name: str, params: dict[str, Any] | None = None, approve: bool = False,
                    max_rows: int | None = None) -> dict[str, Any]:
        with _stdout_to_stderr():
            return self.guard.call(name, params or {}, approve=approve, max_rows=max_rows).to_dict()

    # --- planning and runs -----------------------------------------------------------------------------

    def plan_pipeline(self, request: str, dry_run: bool = False) -> dict[str, Any]:
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
        return {"request": request, "plan": _plain(result)}

    def materialize(self, pipeline: str | None = None, partition: str | None = None,
                    assets: list[str] | None = None) -> dict[str, Any]:
        from hub.dagster.instance import local_instance
        from hub.dagster.run import partition_keys, run_pipeline

        p = self.pipeline(pipeline)
        keys = partition_keys(p, partition=partition)
        with _stdout_to_stderr():
            instance = local_instance(p.root)
            outcomes = run_pipeline(p, instance, assets=assets or None, partitions=keys, quiet=True)
        return {"pipeline": p.name, "success": all(o.success for o in outcomes),
                "runs": [{"run_id": o.run_id, "partition": o.partition, "success": o.success, "assets": o.assets,
                          "row_counts": o.row_counts, **({"error": mask(o.error)} if o.error else {})}
                         for o in outcomes]}

    def run_status(self, pipeline: str | None = None, limit: int = 10) -> dict[str, Any]:
        import dagster as dg

        from hub.dagster.instance import local_instance

        p = self.pipeline(pipeline)
        instance = local_instance(p.root)
        runs = instance.get_run_records(dg.RunsFilter(tags={"hub/pipeline": p.name}), limit=max(1, min(limit, 100)))
        out_runs = []
        for rec in runs:
            run = rec.dagster_run
            out_runs.append({
                "run_id": run.run_id, "status": run.status.value, "partition": run.tags.get("dagster/partition"),
                "assets": sorted(k.to_user_string() for k in (run.asset_selection or [])),
                "started": _ts(rec.start_time), "ended": _ts(rec.end_time)})
        latest: dict[str, Any] = {}
        for name in p.asset_names():
            event = instance.get_latest_materialization_event(dg.AssetKey(name))
            if event is None:
                continue
            mat = event.asset_materialization
            rows = mat.metadata.get("dagster/row_count") if mat is not None else None
            latest[name] = {"at": _ts(event.timestamp), "run_id": event.run_id,
                            "partition": mat.partition if mat is not None else None,
                            "rows": rows.value if rows is not None else None}
        return {"pipeline": p.name, "runs": out_runs, "latest_materializations": latest}


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


def build_server(tools: HubTools) -> Any:
    """The MCP server exposing *tools*."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations

    server: Any = MCPServer(
        "hub", instructions="Integration hub: discover actions of the connected systems (REST, SOAP, SQL, SFTP), "
                            "call them under guard (writes need an allow-list entry and approve=true), plan and "
                            "materialize pipelines, and check their runs.")

    def guarded(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = fn(*args, **kwargs)
        except HubError as exc:
            raise ToolError(mask(str(exc))) from None
        except Exception as exc:  # shown to the client too (masked), not only the SDK's generic message
            raise ToolError(mask(f"{type(exc).__name__}: {exc}")) from None
        return result

    read_only = ToolAnnotations(read_only_hint=True)

    @server.tool(annotations=read_only)
    def list_actions(system: str | None = None, side_effect: str | None = None,
                     refresh: bool = False) -> dict[str, Any]:
        """Every action the systems offer (name, system, protocol, read/write, description); filter by system
        or side_effect ('read'/'write'); refresh=true reads the systems again."""
        return guarded(tools.list_actions, system, side_effect, refresh)

    @server.tool(annotations=read_only)
    def search_actions(query: str, limit: int = 10) -> dict[str, Any]:
        """The actions best matching a query in words (keywords and synonyms, e.g. 'purchase orders',
        'client accounts', 'stock levels'), best first, with a score."""
        return guarded(tools.search_actions, query, limit)

    @server.tool(annotations=read_only)
    def describe_action(name: str) -> dict[str, Any]:
        """One action in full: input schema (its parameters), output schema (one record), binding, side
        effect, whether a write is allowed, and the call budget left for its system."""
        return guarded(tools.describe_action, name)

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, open_world_hint=True))
    def call_action(name: str, params: dict[str, Any] | None = None, approve: bool = False,
                    max_rows: int | None = None) -> dict[str, Any]:
        """Call an action with parameters (an object matching its input schema). Read actions run directly;
        write actions run only when the pipeline allows them AND approve=true. Returns the first records and
        the total count; every call is audited. A refused or failed call is an error with the reason."""
        result = guarded(tools.call_action, name, params, approve, max_rows)
        if result["outcome"] != "ok":
            raise ToolError(json.dumps(result, default=str))
        return result

    @server.tool()
    def plan_pipeline(request: str, dry_run: bool = False) -> dict[str, Any]:
        """Propose a pipeline spec for a request in words, from the catalog of actions (dry_run=true also
        runs one partition of it to prove it works)."""
        return guarded(tools.plan_pipeline, request, dry_run)

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=True))
    def materialize(pipeline: str | None = None, partition: str | None = None,
                    assets: list[str] | None = None) -> dict[str, Any]:
        """Materialize a pipeline (all assets, or these) for a partition (default: the latest complete one)
        on the local Dagster instance; returns the runs with row counts."""
        return guarded(tools.materialize, pipeline, partition, assets)

    @server.tool(annotations=read_only)
    def run_status(pipeline: str | None = None, limit: int = 10) -> dict[str, Any]:
        """The latest runs of a pipeline on the local Dagster instance and each asset's latest
        materialization (time, partition, rows)."""
        return guarded(tools.run_status, pipeline, limit)

    return server


def serve(pipelines: list[Pipeline], *, actor: str = "mcp-client") -> None:
    """Serve the tools over stdio until the client closes the connection."""
    build_server(HubTools(pipelines, actor=actor)).run("stdio")
