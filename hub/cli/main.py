"""The ``hub`` command."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from hub import protocols
from hub.contracts.cli import register as register_contract_commands
from hub.errors import HubError, SpecError
from hub.runtime.secrets import mask_url
from hub.spec import Pipeline, load
from hub.spec.loader import project_root
from hub.validation.cli import register as register_validation_commands

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Hub: coordinate REST, SOAP, SFTP and SQL systems as Dagster assets.")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
REPO = Path(__file__).resolve().parents[2]
DEMO_SPEC = REPO / "pipelines" / "demo.yaml"
DEMO_RANGE = ("2024-01-01", "2024-01-07")


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _load(spec: Path) -> Pipeline:
    try:
        return load(spec)
    except SpecError as exc:
        raise _fail(str(exc)) from None


@app.command()
def validate(specs: list[Path] = typer.Argument(..., help="Pipeline spec files (YAML).")) -> None:
    """Check specs: every problem is reported with file, line and field. The other specs of the same folder
    and project are checked with them (asset and pipeline names must be unique across a project)."""
    from hub.spec.project import check_together

    failed = False
    for spec, error in check_together(specs).items():
        if error is not None:
            typer.echo(str(error), err=True)
            failed = True
            continue
        p = load(spec)
        parts = p.spec.partitions
        console.print(f"[green]ok[/] {spec}: pipeline [bold]{p.name}[/], {len(p.sources)} source(s), "
                      f"{len(p.spec.models)} model(s), partitions: {parts.kind if parts else 'none'}", highlight=False)
        console.print(f"   project root {p.root} — warehouse {mask_url(p.warehouse_url)}, state {p.root / '.hub'}, "
                      f"contracts {p.root / 'contracts'}, reports {p.root / 'reports'}", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command()
def run(
    spec: Path = typer.Argument(..., help="Pipeline spec file."),
    asset: list[str] = typer.Option(None, "--asset", "-a", help="Only these assets (repeatable)."),
    partition: str = typer.Option(None, "--partition", "-p", help="One partition key, e.g. 2024-01-31 (for a "
                                                                  "file drop: a file name)."),
    start: str = typer.Option(None, "--from", help="First partition of a range."),
    end: str = typer.Option(None, "--to", help="Last partition of a range (inclusive)."),
    full_refresh: bool = typer.Option(False, "--full-refresh", help="Incremental sources read everything again "
                                                                    "and replace their table."),
) -> None:
    """Materialize a pipeline in-process on the local Dagster instance, with progress."""
    pipeline = _load(spec)
    if not _run(pipeline, asset or None, partition, start, end, full_refresh=full_refresh):
        raise typer.Exit(1)


def _run(pipeline: Pipeline, assets: list[str] | None, partition: str | None, start: str | None,
         end: str | None, *, full_refresh: bool = False) -> bool:
    from hub.dagster import progress as progress_hook
    from hub.dagster.instance import local_instance
    from hub.dagster.run import partition_keys, run_pipeline

    files: list[str] | None = None
    keys: list[str | None]
    per_file = bool(assets) and all(a in pipeline.sources and pipeline.sources[a].per_file for a in assets or [])
    try:
        if per_file:  # file drops: --partition names a file (default: every file that is ready)
            keys, files = [None], ([partition] if partition else None)
        else:
            keys = partition_keys(pipeline, partition=partition, start=start, end=end)
    except HubError as exc:
        raise _fail(str(exc)) from None
    instance = local_instance(pipeline.root)
    ok = True
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        tasks: dict[str, TaskID] = {}
        current: dict[str, str | None] = {"key": None}

        def on_rows(asset_name: str, rows: int) -> None:
            label = f"{asset_name}" + (f" [{current['key']}]" if current["key"] else "")
            if label not in tasks:
                tasks[label] = bar.add_task(escape(label), total=None)
            bar.update(tasks[label], description=f"{escape(label)}: {rows:,} rows")

        progress_hook.listen(on_rows)
        try:
            outcomes = run_pipeline(pipeline, instance, assets=assets, partitions=keys, files=files, quiet=True,
                                    before_run=lambda key: current.update(key=key), full_refresh=full_refresh)
        finally:
            progress_hook.listen(None)
    for o in outcomes:
        where = f"partition {o.partition}" if o.partition else "unpartitioned"
        if o.success:
            counts = ", ".join(f"{a}={n:,}" + (f" ({o.rows_loaded[a]:,} read)" if pipeline.sources.get(a) is not None
                                                and pipeline.sources[a].incremental and a in o.rows_loaded else "")
                               for a, n in o.row_counts.items())
            console.print(f"[green]✓[/] {where}: {counts} (run {o.run_id[:8]})")
        else:
            ok = False
            err.print(f"[red]✗[/] {where} failed (run {o.run_id[:8]}):\n{o.error}", highlight=False)
    return ok


@app.command()
def demo() -> None:
    """Start the demo estate (CRM over REST, ERP over SOAP, on loopback), run the demo pipeline for a
    week, and show what landed."""
    from hub.demo import estate

    with estate.running(console.print, state_dir=project_root(DEMO_SPEC) / ".hub" / "demo") as services:
        pipeline = _load(DEMO_SPEC)
        console.print(f"running pipeline [bold]{pipeline.name}[/] for {DEMO_RANGE[0]} .. {DEMO_RANGE[1]} "
                      f"into {pipeline.warehouse_url}")
        ok = _run(pipeline, None, None, *DEMO_RANGE)
        if ok and "inventory_levels" in pipeline.sources:
            moved = services["inventory"].tick(3)
            console.print(f"the inventory moved stock of {', '.join(f'{s}@WH{w:02d}' for w, s in moved)}: "
                          "an incremental run reads only what changed (plus its 10-minute lookback)")
            ok = _run(pipeline, ["inventory_levels", "stock_cover"], None, None, None)
    if not ok:
        raise typer.Exit(1)
    _summary(pipeline)


def _summary(pipeline: Pipeline) -> None:
    from hub.warehouse import connect

    wh = connect(pipeline.warehouse_url)
    table = Table(title=f"What landed in {pipeline.warehouse_url}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("partitions", justify="right")
    for name in wh.tables():
        rows = wh.query(f'SELECT count(*) AS n FROM "{name}"').column("n")[0].as_py()
        parts = "-"
        cols = wh.query(f'SELECT * FROM "{name}" LIMIT 0').column_names
        if "_hub_partition" in cols:
            n = wh.query(f'SELECT count(DISTINCT _hub_partition) AS n FROM "{name}"').column("n")[0].as_py()
            parts = str(n) if n else "-"
        table.add_row(name, f"{rows:,}", parts)
    console.print(table)
    if "order_payments" in pipeline.spec.models:
        paid = wh.query("SELECT count(*) FILTER (WHERE open_amount = 0) AS paid, count(*) FILTER (WHERE open_amount "
                        "> 0) AS open, sum(received) AS received FROM order_payments").to_pylist()[0]
        console.print(f"order_payments: {paid['paid']:,} orders paid in full, {paid['open']:,} waiting for money; "
                      f"the bank booked {paid['received'] or 0:,.2f} EUR")
    if "revenue_by_region" in pipeline.spec.models:
        top = wh.query("SELECT region, sum(orders) AS orders, sum(revenue) AS revenue FROM revenue_by_region "
                       "GROUP BY region ORDER BY revenue DESC")
        t = Table(title="revenue_by_region (ERP orders x CRM regions, summed over the week)")
        for c in top.column_names:
            t.add_column(c, justify="right" if c != "region" else "left")
        for row in top.to_pylist():
            t.add_row(row["region"], f"{row['orders']:,}", f"{row['revenue']:,.2f}")
        console.print(t)


@app.command()
def ui(
    demo_estate: bool = typer.Option(True, "--demo/--no-demo", help="Also start the demo estate services."),
    port: int = typer.Option(3000, help="Dagster webserver port."),
) -> None:
    """Start the Dagster UI (`dagster dev -w workspace.yaml`) on the local instance."""
    from contextlib import nullcontext

    from hub.dagster.instance import local_instance
    from hub.demo import estate

    root = project_root(DEMO_SPEC)
    local_instance(root)
    dagster = shutil.which("dagster") or str(Path(sys.executable).parent / "dagster")
    with estate.running(console.print, drip=120, state_dir=root / ".hub" / "demo") if demo_estate else nullcontext():
        proc = subprocess.Popen([dagster, "dev", "-w", str(root / "workspace.yaml"), "-p", str(port)], cwd=root)
        try:
            proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    raise typer.Exit(proc.returncode or 0)


catalog_app = typer.Typer(no_args_is_help=True, help="Discover what systems offer: operations, inputs, outputs.")
app.add_typer(catalog_app, name="catalog")


for _protocol in protocols.all():  # `hub catalog <protocol>`: what a protocol's plugin can describe on its own
    _command = _protocol.catalog_command()
    if _command is not None:
        catalog_app.command(_protocol.name)(_command)


@catalog_app.command("actions")
def catalog_actions(
    specs: list[Path] = typer.Argument(None, help="Pipeline specs (default: pipelines/*.yaml)."),
    search: str = typer.Option(None, "--search", "-s", help="Only the actions matching this query, best first "
                                                            "(keywords and synonyms)."),
    limit: int = typer.Option(20, "--limit", "-n", help="With --search: how many actions."),
    as_json: bool = typer.Option(False, "--json", help="Print the actions as JSON (with their JSON Schemas)."),
) -> None:
    """List the actions the pipelines' systems offer (SOAP operations, REST operations, SQL tables, SFTP
    drops), read from the live systems, with their side effect (read/write)."""
    import json

    from hub.agent.catalog import build_catalog

    catalog = build_catalog(_load_specs(specs))
    actions = catalog.search(search, limit) if search else catalog.actions
    for system, reason in catalog.errors.items():
        err.print(f"[yellow]warning[/]: system {escape(system)} could not be read: {escape(reason)}", highlight=False)
    if as_json:
        typer.echo(json.dumps([a.to_dict() for a in actions], indent=2, default=str))
        return
    table = Table(title=f"{len(actions)} action(s)" + (f" matching '{escape(search)}'" if search else ""))
    for col in ("action", "protocol", "effect", "description"):
        table.add_column(col)
    for a in actions:
        table.add_row(escape(a.name), a.protocol, "[red]write[/]" if a.side_effect == "write" else "read",
                      escape(a.description[:100]))
    console.print(table)


def _load_specs(specs: list[Path] | None) -> list[Pipeline]:
    """The given specs, or every spec of pipelines/."""
    from hub.spec.loader import discover

    paths = list(specs or []) or discover(DEMO_SPEC.parent)
    if not paths:
        raise _fail("no pipeline specs given or found in pipelines/")
    return [_load(p) for p in paths]


agent_app = typer.Typer(no_args_is_help=True, help="The agent layer: call actions under guard, plan pipelines.")
app.add_typer(agent_app, name="agent")


@agent_app.command("run")
def agent_run(
    action: str = typer.Argument(..., help="Action name, e.g. erp.GetOrders (see hub catalog actions)."),
    params: str = typer.Option("{}", "--params", "-p", help="Parameters as a JSON object."),
    spec: list[Path] = typer.Option(None, "--spec", help="Pipeline spec(s) (default: pipelines/*.yaml)."),
    approve: bool = typer.Option(False, "--approve", help="Approve a write action (it must also be in the "
                                                          "spec's agent.allow_writes)."),
    user: str = typer.Option(None, "--user", help="Who calls, for the audit (default: $USER)."),
    max_rows: int = typer.Option(None, "--max-rows", help="Records to return at most."),
) -> None:
    """Call one action through the hub's adapters, guarded (writes need allow-list + --approve, per-system
    budgets and rate limits) and audited in the warehouse table _hub_audit."""
    import json
    import os

    from hub.agent.guard import Guard

    try:
        values = json.loads(params)
    except json.JSONDecodeError as exc:
        raise _fail(f"--params is not JSON: {exc}") from None
    if not isinstance(values, dict):
        raise _fail("--params must be a JSON object")
    guard = Guard.from_pipelines(_load_specs(spec), actor=user or os.environ.get("USER") or "cli",
                                 agent="hub-cli")
    result = guard.call(action, values, approve=approve, max_rows=max_rows)
    typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
    if result.outcome != "ok":  # one line on stderr says why (the JSON on stdout has the details)
        typer.echo(f"{result.outcome}: {' '.join(result.message.split())}", err=True)
        raise typer.Exit(1 if result.outcome == "error" else 3)


@agent_app.command("plan")
def agent_plan(
    request: str = typer.Argument(..., help="What you want, e.g. \"every morning load yesterday's ERP orders, "
                                            "join CRM customers and give me revenue per region\"."),
    spec: list[Path] = typer.Option(None, "--spec", help="Pipeline spec(s) whose systems to use (default: "
                                                         "pipelines/*.yaml)."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the spec here (only when it is valid and its "
                                                             "dry run succeeded)."),
    backend: str = typer.Option("offline", "--backend", "-b",
                                help="offline (no model) or llm (HUB_LLM_BASE_URL, HUB_LLM_MODEL, HUB_LLM_API_KEY)."),
    partition: str = typer.Option(None, "--partition", "-p", help="Partition of the dry run (default: the first)."),
    no_dry_run: bool = typer.Option(False, "--no-dry-run", help="Skip the dry run (never with -o)."),
) -> None:
    """Plan a pipeline spec from a request: actions from the catalog, joins from their schemas, partitions and
    schedule from time words; validated (spec, actions, parameters, model SQL) and dry-run on one partition
    into a temporary warehouse. Write requests are refused. Exit 0 valid, 1 rejected, 3 refused."""
    from hub.agent.planner import plan

    if backend not in ("offline", "llm"):
        raise _fail(f"--backend: '{backend}' is not offline or llm")
    if no_dry_run and output is not None:
        raise _fail("-o writes only dry-run plans; drop --no-dry-run")
    try:
        llm = None
        if backend == "llm":  # the model backend builds on the planner, so it is handed in
            from hub.agent.llm import LLMConfig

            llm = LLMConfig.from_env()
        result = plan(request, _load_specs(spec), backend, output=output, partition=partition,  # type: ignore[arg-type]
                      dry_run=not no_dry_run, llm=llm)
    except HubError as exc:
        raise _fail(str(exc)) from None
    if result.spec_text and result.ok and output is None:
        typer.echo(result.spec_text)
    for note in result.notes:
        err.print(f"[dim]note[/]: {escape(note)}", highlight=False)
    if result.refused:
        err.print(f"[yellow]refused[/]: {escape(result.reason)}", highlight=False)
        raise typer.Exit(3)
    if not result.ok:
        err.print(f"[red]rejected[/]: {escape(result.reason)}", highlight=False)
        raise typer.Exit(1)
    where = f"written to {output}" if output else "valid"
    err.print(f"[green]plan {where}[/]: dry run {result.partition or '(unpartitioned)'}: "
              + ", ".join(f"{k} {v} rows" for k, v in result.dry_run.items()), highlight=False)


@app.command("mcp")
def mcp_server(
    specs: list[Path] = typer.Argument(None, help="Pipeline specs (default: pipelines/*.yaml)."),
    user: str = typer.Option(None, "--user", help="Who the calls are audited as (default: $USER)."),
) -> None:
    """Serve the hub to AI agents over MCP (stdio): list/search/describe/call actions (guarded and audited),
    plan pipelines, materialize and check runs."""
    import logging
    import os

    from hub.agent.mcp_server import serve

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    pipelines = _load_specs(specs)
    serve(pipelines, actor=user or os.environ.get("USER") or "mcp-client")


contracts_app = typer.Typer(no_args_is_help=True, help="Expectation suites and contract tests: what the pipelines "
                                                       "rely on, checked against the live systems.")
app.add_typer(contracts_app, name="contracts")
register_contract_commands(contracts_app)  # hub contracts snapshot | test (hub/contracts/cli.py)
register_validation_commands(contracts_app)  # hub contracts suggest (hub/validation/cli.py)





def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
