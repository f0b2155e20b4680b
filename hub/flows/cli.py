"""``hub flow run FLOW`` and ``hub flows review``: running a flow outside Dagster, and the deliveries whose
outcome is unknown (or that were dead-lettered), with a way to settle them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hub.errors import HubError, Refused, SpecError

if TYPE_CHECKING:
    from hub.spec import Pipeline

console = Console()
flow_app = typer.Typer(no_args_is_help=True, help="Run a flow (multi-step workflow that acts on systems).")
flows_app = typer.Typer(no_args_is_help=True, help="The flows' delivery ledger: review what is unknown or dead.")


def _pipelines(specs: list[Path] | None) -> list[Pipeline]:
    from hub import project  # the current project's specs, found from where the user stands
    from hub.spec import load

    paths = list(specs or []) or project.current().specs()
    if not paths:
        raise typer.BadParameter("no pipeline specs given (--spec) or found in pipelines/")
    out = []
    for p in paths:
        try:
            out.append(load(p))
        except SpecError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
    return out


def _find(pipelines: list[Pipeline], flow: str) -> Pipeline:
    found = [p for p in pipelines if flow in p.spec.flows]
    if not found:
        known = sorted(f for p in pipelines for f in p.spec.flows)
        typer.echo(f"error: no flow named '{flow}' (flows: {', '.join(known) or 'none'})", err=True)
        raise typer.Exit(1)
    return found[0]


@flow_app.command("run")
def run(flow: str = typer.Argument(..., help="The flow's name (flows: in a spec)."),
        spec: list[Path] = typer.Option(None, "--spec", "-s", help="Pipeline spec(s); default: pipelines/*.yaml."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the exact requests, validated; send nothing."),
        limit: int = typer.Option(None, "--limit", "-n", min=1, help="At most N items."),
        approve: bool = typer.Option(False, "--approve", help="Run a flow an agent planned (approved: false) "
                                                              "this once: you reviewed its writes.")) -> None:
    """Run FLOW once: its items from the warehouse, every write through the delivery ledger (what was already
    delivered is skipped). A flow an agent planned runs only with --approve. Exits 1 when an item failed, 2 when
    the run stopped at max_failures, 3 when an unapproved flow was refused."""
    from hub.flows.engine import run_flow
    from hub.runtime.secrets import mask

    pipeline = _find(_pipelines(spec), flow)
    try:
        report = run_flow(pipeline, flow, dry_run=dry_run, limit=limit, approve=approve,
                          echo=None if dry_run else lambda line: console.print(escape(line), highlight=False))
    except Refused as exc:
        typer.echo(f"refused: {mask(str(exc))}", err=True)
        raise typer.Exit(3) from None
    except HubError as exc:
        typer.echo(f"error: {mask(str(exc))}", err=True)
        raise typer.Exit(1) from None
    if dry_run:
        for p in report.planned:
            what = {"skip": "[dim]skip (already delivered)[/]", "send": "[green]send[/]",
                    "resend": "[yellow]send (payload changed)[/]",
                    "resolve": "[red]resolve (unknown outcome: verify or review)[/]"}[p.ledger]
            console.print(f"{what} {escape(p.item_key)} {escape(p.step)} → {escape(p.action)}", highlight=False)
            console.print("    " + escape(json.dumps(p.request, sort_keys=True, default=str)), highlight=False)
        for item in report.items:
            if item.error:
                console.print(f"[red]{escape(item.status)}[/] {escape(item.key)}: {escape(item.error)}",
                              highlight=False)
        sends = sum(1 for p in report.planned if p.ledger != "skip")
        console.print(f"dry run of {flow}: {len(report.items)} item(s), {sends} request(s) would be sent, "
                      f"{len(report.planned) - sends} skipped by the ledger; nothing was sent")
        return
    counts = ", ".join(f"{n} {s}" for s in ("ok", "skipped", "failed", "dead", "unknown", "compensated")
                       if (n := report.count(s)))
    console.print(f"flow {flow} ({report.run_id}): {len(report.items)} item(s): {counts or 'none'}; "
                  f"{report.sent} request(s) sent, {report.skipped} skipped by the ledger", highlight=False)
    if report.stopped:
        typer.echo(f"error: {report.stopped}", err=True)
        raise typer.Exit(2)
    if report.failed:
        raise typer.Exit(1)


@flows_app.command("review")
def review(spec: list[Path] = typer.Option(None, "--spec", "-s", help="Pipeline spec(s); default: pipelines/."),
           resolve: str = typer.Option(None, "--resolve", help="Settle one delivery: FLOW:STEP:ITEM_KEY."),
           as_: str = typer.Option(None, "--as", help="With --resolve: ok (it took effect: never send it) or "
                                                      "resend (it did not: the next run sends it).")) -> None:
    """Deliveries whose outcome is unknown (sent, no answer, nothing to verify it) or that failed or were
    dead-lettered, per flow; --resolve settles one after you checked the partner."""
    from hub.flows.ledger import Ledger, all_open

    pipelines = _pipelines(spec)
    if resolve:
        if as_ not in ("ok", "resend"):
            raise typer.BadParameter("--as must be ok or resend", param_hint="--as")
        flow, _, rest = resolve.partition(":")
        step, _, key = rest.partition(":")
        pipeline = _find(pipelines, flow)
        ledger = Ledger(pipeline.warehouse_url, pipeline.name, flow)
        row = ledger.get(step, key)
        if row is None:
            typer.echo(f"error: no delivery {resolve} in the ledger", err=True)
            raise typer.Exit(1)
        row.status = "ok" if as_ == "ok" else "failed"
        row.error = f"settled by review as {as_}"
        with ledger:
            ledger.record(row)
        console.print(f"{escape(resolve)}: {row.status}")
        return
    seen: set[str] = set()
    rows = []
    for p in pipelines:
        if p.warehouse_url in seen or not p.spec.flows:
            continue
        seen.add(p.warehouse_url)
        rows += all_open(p.warehouse_url)
    if not rows:
        console.print("nothing to review: every delivery has a known outcome")
        return
    table = Table("flow", "step", "item", "status", "attempts", "error", "run")
    for r in rows:
        table.add_row(r["flow"], r["step"], r["item_key"], r["status"], str(r["attempts"]),
                      escape(str(r["error"] or ""))[:120], r["run_id"] or "")
    console.print(table)
    console.print("settle one with: hub flows review --resolve FLOW:STEP:ITEM_KEY --as ok|resend")


def register(app: typer.Typer) -> None:
    """Add ``hub flow`` and ``hub flows`` to the command line."""
    app.add_typer(flow_app, name="flow")
    app.add_typer(flows_app, name="flows")
