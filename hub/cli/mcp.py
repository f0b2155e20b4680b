"""``hub mcp`` (the MCP server, stdio or Streamable HTTP) and the approvals of the writes agents ask for:
``hub agent pending``, ``hub agent approve ID``, ``hub agent reject ID`` (:mod:`hub.agent.approvals`)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from hub.errors import HubError

if TYPE_CHECKING:
    from hub.spec import Pipeline


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _user(user: str | None, default: str) -> str:
    return user or os.environ.get("USER") or default


def register(app: typer.Typer, agent_app: typer.Typer, load_specs: Callable[[list[Path] | None], list[Pipeline]],
             ) -> None:
    """Add ``hub mcp`` to *app* and the approval commands to *agent_app* (*load_specs*: the CLI's loader)."""

    @app.command("mcp")
    def mcp_server(
        specs: list[Path] = typer.Argument(None, help="Pipeline specs (default: pipelines/*.yaml)."),
        user: str = typer.Option(None, "--user", help="Who the calls are audited as over stdio, and the user "
                                                      "of $HUB_MCP_TOKEN or a generated token (default: $USER)."),
        http: bool = typer.Option(False, "--http", help="Serve Streamable HTTP at http://HOST:PORT/mcp instead "
                                                        "of stdio (bearer token required)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind with --http (default loopback "
                                                             "only)."),
        port: int = typer.Option(8765, "--port", help="Port with --http."),
        tokens: Path = typer.Option(None, "--tokens", help="With --http: a file of 'user token' lines, one per "
                                                           "user (else $HUB_MCP_TOKEN, else one generated and "
                                                           "printed once)."),
        allow_origin: list[str] = typer.Option(None, "--allow-origin", help="With --http: a browser Origin to "
                                                                            "accept besides the server's own "
                                                                            "(scheme://host:port)."),
        session_budget: int = typer.Option(None, "--session-budget", help="Tool calls one session may make "
                                                                          "(default 1000)."),
        no_elicitation: bool = typer.Option(False, "--no-elicitation", help="Never ask the client's user to "
                                                                            "confirm a write: every write waits "
                                                                            "for `hub agent approve`."),
    ) -> None:
        """Serve the hub to AI agents over MCP (stdio, or Streamable HTTP with --http): search/describe/call
        actions (guarded and audited; writes need a person's approval), plan pipelines, materialize and check
        runs; specs, contracts and the audit as resources."""
        import logging

        from hub.agent import mcp_server as server

        logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
        pipelines = load_specs(specs)
        actor = _user(user, "mcp-client")
        try:
            if not http:
                server.serve(pipelines, actor=actor, session_budget=session_budget, elicitation=not no_elicitation)
                return
            known = server.read_tokens(tokens) if tokens is not None else None
            if known is None and os.environ.get("HUB_MCP_TOKEN"):
                known = {os.environ["HUB_MCP_TOKEN"]: actor}
            server.serve_http(pipelines, host=host, port=port, tokens=known, actor=actor,
                              allowed_origins=list(allow_origin or []), session_budget=session_budget,
                              elicitation=not no_elicitation)
        except HubError as exc:
            raise _fail(str(exc)) from None

    @agent_app.command("pending")
    def agent_pending(
        spec: list[Path] = typer.Option(None, "--spec", help="Pipeline spec(s) (default: pipelines/*.yaml)."),
        all_: bool = typer.Option(False, "--all", help="Every approval, decided ones too (latest 100)."),
        as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
    ) -> None:
        """The writes agents asked for that wait for a person's approval (parameters masked)."""
        from hub.agent.approvals import stores_of

        stores = stores_of([p.root for p in load_specs(spec)])
        found = [a for store in stores for a in store.list(None if all_ else "pending")]
        if as_json:
            typer.echo(json.dumps([a.public() for a in found], indent=2, default=str))
            return
        if not found:
            typer.echo("no pending approvals" if not all_ else "no approvals")
            return
        table = Table("id", "status", "action", "target", "parameters (masked)", "requested by", "at")
        for a in found:
            table.add_row(a.id, a.status, a.action, a.target, json.dumps(a.params_masked, default=str)[:200],
                          a.requested_by, a.created_at)
        Console(soft_wrap=True).print(table)

    @agent_app.command("approve")
    def agent_approve(
        approval_id: str = typer.Argument(..., help="The approval's id (hub agent pending)."),
        spec: list[Path] = typer.Option(None, "--spec", help="Pipeline spec(s) (default: pipelines/*.yaml)."),
        user: str = typer.Option(None, "--user", help="Who approves, for the audit (default: $USER)."),
        max_rows: int = typer.Option(None, "--max-rows", help="Records of the answer to show at most."),
    ) -> None:
        """Approve a write an agent asked for and execute it now, once, through the guard (allow-list, budget,
        parameters, audit). Approving it again is refused. Exit 0 done, 3 refused, 1 failed."""
        from hub.agent.approvals import execute_approved, find, stores_of
        from hub.agent.guard import Guard

        pipelines = load_specs(spec)
        try:
            store, approval = find(stores_of([p.root for p in pipelines]), approval_id)
            if approval.pipeline not in {p.name for p in pipelines}:
                raise HubError(f"approval {approval_id} is for pipeline {approval.pipeline}, which is not loaded "
                               "(name its spec with --spec)")
            if approval.status == "pending":
                typer.echo(f"approving: {approval.summary()}", err=True)
            guard = Guard.from_pipelines(pipelines, actor=_user(user, "cli"), agent=approval.agent,
                                         session=approval.session)
            decided, result = execute_approved(store, approval_id, guard, by=_user(user, "cli"), via="cli",
                                               max_rows=max_rows)
        except HubError as exc:  # Refused (not pending any more) is one: exit 3
            from hub.errors import Refused

            raise _fail(str(exc), 3 if isinstance(exc, Refused) else 1) from None
        typer.echo(json.dumps({"approval": decided.public(), "result": result.to_dict()}, indent=2, default=str))
        if result.outcome != "ok":
            typer.echo(f"{result.outcome}: {' '.join(result.message.split())}", err=True)
            raise typer.Exit(1 if result.outcome == "error" else 3)

    @agent_app.command("reject")
    def agent_reject(
        approval_id: str = typer.Argument(..., help="The approval's id (hub agent pending)."),
        spec: list[Path] = typer.Option(None, "--spec", help="Pipeline spec(s) (default: pipelines/*.yaml)."),
        user: str = typer.Option(None, "--user", help="Who rejects (default: $USER)."),
        reason: str = typer.Option("", "--reason", help="Why, for the agent (approval_status shows it)."),
    ) -> None:
        """Reject a write an agent asked for: it is never executed."""
        from hub.agent.approvals import find, stores_of
        from hub.errors import Refused

        try:
            store, _ = find(stores_of([p.root for p in load_specs(spec)]), approval_id)
            decided = store.reject(approval_id, by=_user(user, "cli"), via="cli", reason=reason)
        except HubError as exc:
            raise _fail(str(exc), 3 if isinstance(exc, Refused) else 1) from None
        typer.echo(json.dumps(decided.public(), indent=2, default=str))
