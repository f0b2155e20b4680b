"""The ``hub`` command."""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import typer.main
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from hub import project
from hub.cli.events import register as register_event_commands
from hub.cli.init import register as register_init_command
from hub.cli.mcp import register as register_mcp_commands
from hub.cli.serve import register as register_serve_command
from hub.contracts.cli import register as register_contract_commands
from hub.errors import HubError, SpecError
from hub.flows.cli import register as register_flow_commands
from hub.validation.cli import register as register_validation_commands

if TYPE_CHECKING:
    from hub.spec import Pipeline

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Hub: coordinate REST, SOAP, SFTP and SQL systems as Dagster assets.")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
DEMO_RANGE = ("2024-01-01", "2024-01-07")  # hub.demo.events.WEEK


@app.callback()
def _options(
    project_dir: Path = typer.Option(None, "--project", envvar=project.ENV, metavar="DIR",
                                     help="The project to work in (default: the nearest folder above the current "
                                          "one with workspace.yaml or pyproject.toml; docs/start.md)."),
) -> None:
    """Hub: coordinate REST, SOAP, SFTP and SQL systems as Dagster assets."""
    try:
        project.use(project_dir)
    except HubError as exc:
        raise _fail(str(exc)) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _load(spec: Path) -> Pipeline:
    from hub.spec import load

    try:
        return load(project.current().spec_path(spec))
    except SpecError as exc:
        raise _fail(str(exc)) from None


@app.command()
def validate(specs: list[Path] = typer.Argument(..., help="Pipeline spec files (YAML).")) -> None:
    """Check specs: every problem is reported with file, line and field. The other specs of the same folder
    and project are checked with them (asset and pipeline names must be unique across a project)."""
    from hub.runtime.secrets import mask_url
    from hub.spec.project import check_together

    failed = False
    loaded: dict[Path, Pipeline] = {}
    here = project.current()
    for spec, error in check_together([here.spec_path(s) for s in specs], loaded).items():
        if error is not None:
            typer.echo(str(error), err=True)
            failed = True
            continue
        p = loaded[spec]
        if p.spec.flows and not _flows_valid(p):
            failed = True
            continue
        parts = p.spec.partitions
        console.print(f"[green]ok[/] {spec}: pipeline [bold]{p.name}[/], {len(p.sources)} source(s), "
                      f"{len(p.spec.models)} model(s), partitions: {parts.kind if parts else 'none'}", highlight=False)
        console.print(f"   project root {p.root} — warehouse {mask_url(p.warehouse_url)}, state {p.root / '.hub'}, "
                      f"contracts {p.root / 'contracts'}, reports {p.root / 'reports'}", highlight=False)
    if failed:
        raise typer.Exit(1)


def _flows_valid(pipeline: Pipeline) -> bool:
    """The checks of the pipeline's flows against the live actions of their systems (hub.flows.check)."""
    from hub.flows.check import check_actions
    from hub.spec.loader import locate

    found, notes = check_actions(pipeline)
    for note in notes:
        console.print(f"[yellow]note[/] {pipeline.path}: {escape(note)}", highlight=False)
    if found:
        typer.echo(str(locate(pipeline.path, found)), err=True)
    return not found


VERBOSE_HELP = "Show Dagster's log and the stack trace of a failure (always in the Dagster event log)."


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
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
    in_dagster: bool = typer.Option(False, "--dagster", help="Run through Dagster (an in-process Dagster run: a run "
                                                             "page and step event log in the UI, 3-6 s slower); "
                                                             "by default the hub loads in this process and "
                                                             "reports the materializations to Dagster."),
) -> None:
    """Materialize a pipeline in this process, with progress, and record it for `hub runs` and the Dagster UI
    (docs/operations.md#hub-run). Each failure is one line (the stack trace with --verbose); exit 1 when
    anything failed."""
    if partition and (start or end):
        raise _fail("--partition runs one partition, --from/--to a range: give one or the other")
    pipeline = _load(spec)
    if not _run(pipeline, asset or None, partition, start, end, full_refresh=full_refresh, verbose=verbose,
                in_dagster=in_dagster):
        raise typer.Exit(1)


def _run(pipeline: Pipeline, assets: list[str] | None, partition: str | None, start: str | None,
         end: str | None, *, full_refresh: bool = False, verbose: bool = False, in_dagster: bool = False) -> bool:
    from hub.runs import dagster_home, run_fast
    from hub.spec.partitions import partition_keys

    files: list[str] | None = None
    keys: list[str | None]
    per_file = bool(assets) and all((a in pipeline.sources and pipeline.sources[a].per_file)
                                    or (a in pipeline.spec.flows and pipeline.flow_files(a) is not None)
                                    for a in assets or [])
    try:
        if per_file:  # file drops (and flows after them): --partition names a file (default: every file)
            keys, files = [None], ([partition] if partition else None)
        else:
            keys = partition_keys(pipeline.spec.partitions, str(pipeline.path), pipeline.name, partition=partition,
                                  start=start, end=end)
    except HubError as exc:
        raise _fail(str(exc)) from None
    home = dagster_home(pipeline.root)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        tasks: dict[str, TaskID] = {}
        current: dict[str, str | None] = {"key": None}

        def on_rows(asset_name: str, rows: int) -> None:
            label = f"{asset_name}" + (f" [{current['key']}]" if current["key"] else "")
            if label not in tasks:
                tasks[label] = bar.add_task(escape(label), total=None)
            bar.update(tasks[label], description=f"{escape(label)}: {rows:,} rows")

        def say(line: str) -> None:
            bar.console.print(escape(line))

        try:
            if in_dagster:
                outcomes = _run_in_dagster(pipeline, home, assets, keys, files, on_rows, current, say,
                                           full_refresh=full_refresh, verbose=verbose)
            else:
                outcomes = run_fast(pipeline, home, assets=assets, partitions=keys, files=files,
                                    before_run=lambda key: current.update(key=key), full_refresh=full_refresh,
                                    progress=on_rows, say=say)
        except HubError as exc:  # an expected failure before any run started (an unknown asset, a file drop)
            bar.stop()
            if verbose:
                err.print_exception()
            raise _fail(_one_line(exc)) from None
    if verbose:  # the fast path's stack traces (Dagster's console log printed its own above)
        for o in outcomes:
            for trace in getattr(o, "traces", []) if not in_dagster else []:
                err.print(escape(trace), highlight=False)
    return _report(pipeline, outcomes, verbose=verbose)


def _run_in_dagster(pipeline: Pipeline, home: Path, assets: list[str] | None, keys: list[str | None],
                    files: list[str] | None, on_rows: Any, current: dict[str, str | None], say: Any, *,
                    full_refresh: bool, verbose: bool) -> list[Any]:
    """``hub run --dagster``: in-process Dagster runs on the local instance (the journal of fast runs is
    reported into it first)."""
    from hub.dagster import progress as progress_hook
    from hub.dagster.instance import local_instance
    from hub.dagster.journal import report_pending
    from hub.dagster.run import run_pipeline

    instance = local_instance(pipeline.root)
    report_pending(instance, home)
    progress_hook.listen(on_rows)
    try:
        return run_pipeline(pipeline, instance, assets=assets, partitions=keys, files=files, quiet=not verbose,
                            before_run=lambda key: current.update(key=key), full_refresh=full_refresh, say=say)
    finally:
        progress_hook.listen(None)


def _one_line(exc: BaseException) -> str:
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def _report(pipeline: Pipeline, outcomes: list[Any], *, verbose: bool) -> bool:
    """A line per run: per asset its rows, its quarantined rows and the table holding them, files skipped as
    already loaded; a failed run: one line per failed step (with --verbose, Dagster's console log above it
    has the stack trace)."""
    ok = True
    for o in outcomes:
        where = f"partition {o.partition}" if o.partition else "unpartitioned"
        if o.success:
            parts = [_asset_summary(pipeline, o, name) for name in dict.fromkeys([*o.row_counts, *o.file_status])]
            console.print(f"[green]✓[/] {escape(where)}: {escape(', '.join(parts) or 'nothing to do')} "
                          f"(run {o.run_id[:8]})", highlight=False)
            continue
        ok = False
        for reason in o.reasons or [o.error or "run failed"]:
            err.print(f"[red]✗[/] {escape(where)} failed (run {o.run_id[:8]}): {escape(reason)}", highlight=False)
    return ok


def _asset_summary(pipeline: Pipeline, o: Any, name: str) -> str:
    """``products=3 (3 quarantined → products__quarantine)``, ``bank_statements: already loaded, skipped``."""
    status = o.file_status.get(name)
    if status is not None and status != "loaded":
        return f"{name}: {status}, skipped"
    text = f"{name}={o.row_counts.get(name, 0):,}"
    source = pipeline.sources.get(name)
    if source is not None and source.incremental and name in o.rows_loaded:
        text += f" ({o.rows_loaded[name]:,} read)"
    if o.quarantined.get(name):
        text += f" ({o.quarantined[name]:,} quarantined → {o.quarantine_tables.get(name, name + '__quarantine')})"
    return text


@app.command()
def demo(
    serve: bool = typer.Option(False, "--serve", help="Only start the estate and keep it running (until Ctrl-C or "
                                                      "SIGTERM); print the export lines another shell needs."),
    directory: Path = typer.Option(None, "--dir", help="The project to put the demo in (default: the current "
                                                       "project, else the current folder)."),
) -> None:
    """Start the demo estate on loopback: a CRM over REST, an ERP over SOAP, a bank's SFTP drop and an
    inventory database over SQL; run the demo pipeline for a week, and show what landed. With --serve, keep
    the estate running instead and print `export NAME=value` lines for every variable pipelines/demo.yaml
    reads, to paste into another shell for `hub run pipelines/demo.yaml`, `hub catalog`, `hub agent`,
    `hub mcp`. The demo's spec, suites and contract snapshots are copied into the project where it lacks
    them (pipelines/demo.yaml, contracts/demo/); the warehouse and state are the project's."""
    from hub.demo import estate

    here = _demo_project(directory)
    state_dir = here.state_dir / "demo"
    if serve:
        _serve_demo(state_dir)
        return
    with estate.running(console.print, state_dir=state_dir) as services:
        pipeline = _load(here.root / project.DEMO_SPEC)
        from hub.demo import events as demo_events

        demo_events.land(pipeline, *demo_events.WEEK, lambda line: console.print(escape(line), highlight=False))
        console.print(f"running pipeline [bold]{pipeline.name}[/] for {DEMO_RANGE[0]} .. {DEMO_RANGE[1]} "
                      f"into {pipeline.warehouse_url}")
        ok = _run(pipeline, None, None, *DEMO_RANGE)
        if ok and "inventory_levels" in pipeline.sources:
            moved = services["inventory"].tick(3)
            console.print(f"the inventory moved stock of {', '.join(f'{s}@WH{w:02d}' for w, s in moved)}: "
                          "an incremental run reads only what changed (plus its 10-minute lookback)")
            ok = _run(pipeline, ["inventory_levels", "stock_cover"], None, None, None)
        if ok and pipeline.spec.flows:
            demo_events.bind_paid_queue(pipeline, lambda line: console.print(escape(line), highlight=False))
            ok = _demo_flows(pipeline)
    if not ok:
        raise typer.Exit(1)
    _summary(pipeline)


def _demo_project(directory: Path | None) -> project.Project:
    """The project the demo runs in (``--dir``, else the current one), with the demo's files copied into it
    where it lacks them. Nothing is written anywhere else (never into the installed package)."""
    root = directory.resolve() if directory is not None else project.current().root
    root.mkdir(parents=True, exist_ok=True)
    written = project.install_demo(root)
    if written:
        console.print(f"added the demo to {escape(str(root))}: " + ", ".join(
            escape(str(p.relative_to(root))) for p in written[:4]) + (" ..." if len(written) > 4 else ""),
            highlight=False)
    return project.find(root)


def _demo_flows(pipeline: Pipeline) -> bool:
    """Run each flow of the demo twice: the first run acts on the systems, the second finds every effect in
    the delivery ledger and sends nothing (docs/flows.md)."""
    from hub.flows.engine import run_flow

    for name in pipeline.spec.flows:
        for attempt in ("first", "second"):
            try:
                report = run_flow(pipeline, name)
            except HubError as exc:
                console.print(f"[red]✗[/] flow {escape(name)}: {escape(str(exc))}", highlight=False)
                return False
            counts = ", ".join(f"{n} {s}" for s in ("ok", "skipped", "failed", "dead", "unknown", "compensated")
                               if (n := report.count(s)))
            console.print(f"flow [bold]{escape(name)}[/] ({attempt} run): {len(report.items)} item(s): "
                          f"{counts or 'none'}; {report.sent} request(s) sent, {report.skipped} skipped by the "
                          "delivery ledger", highlight=False)
            for item in [i for i in report.items if i.error and attempt == "first"][:3]:
                console.print(f"   {escape(item.status)} {escape(item.key)}: {escape(item.error or '')[:160]}",
                              highlight=False)
    return True


def _serve_demo(state_dir: Path) -> None:
    """Run the estate until SIGINT or SIGTERM, then stop every service (the context manager does). Every
    line but the exports starts with ``#``, so the whole output can be pasted into a shell."""
    import shlex
    import threading

    from hub.demo import estate

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with estate.running(lambda line: print(f"# {line}", flush=True), state_dir=state_dir) as services:
            print("# paste these lines into another shell, then: hub run pipelines/demo.yaml --from 2024-01-01 "
                  "--to 2024-01-07 (or hub catalog actions, hub agent ..., hub mcp)", flush=True)
            for name, value in estate.environment(services).items():
                print(f"export {name}={shlex.quote(value)}", flush=True)
            print("# the demo estate is running; Ctrl-C (or SIGTERM) stops it", flush=True)
            while not stop.wait(0.5):
                pass
        print("# the demo estate stopped", flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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

    from hub.cli.children import run_child
    from hub.dagster.instance import local_instance
    from hub.demo import estate

    here = project.current()
    root = here.root
    if not here.workspace.is_file():
        raise _fail(f"{root} has no workspace.yaml: `hub init` makes a project Dagster can load "
                    "(in a Dagster project of your own, run `dg dev`)")
    from hub.dagster.journal import report_pending
    from hub.runs import dagster_home

    report_pending(local_instance(root), dagster_home(root))
    dagster = shutil.which("dagster") or str(Path(sys.executable).parent / "dagster")
    with estate.running(console.print, drip=120, state_dir=here.state_dir / "demo") if demo_estate else nullcontext():
        status = run_child([dagster, "dev", "-w", str(root / "workspace.yaml"), "-p", str(port)], cwd=root)
    raise typer.Exit(status)


@app.command()
def runs(
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many runs, newest first."),
    spec: Path = typer.Option(None, "--spec", help="A pipeline spec: use its project's Dagster instance "
                                                   "(default: $DAGSTER_HOME, else this project's .dagster)."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs as JSON."),
) -> None:
    """List recent runs of the local Dagster instance (hub run, the UI, schedules, sensors): run id, pipeline
    and job, status, start, duration, assets and partition, and why a failed run failed."""
    import json

    from hub.dagster.instance import local_instance
    from hub.dagster.journal import report_pending
    from hub.dagster.run import recent_runs
    from hub.runs import dagster_home

    root = _load(spec).root if spec else project.current().root
    instance = local_instance(root)
    home = dagster_home(root)
    report_pending(instance, home)  # what hub run's detached reporter has not reported yet
    found = recent_runs(instance, limit, home)
    if as_json:
        typer.echo(json.dumps([{**r.__dict__, "started": r.started.isoformat() if r.started else None}
                               for r in found], indent=2))
        return
    if not found:
        console.print("no runs yet (hub run SPEC starts one)")
        return
    table = Table(title=f"{len(found)} most recent run(s)")
    for col in ("run", "started (UTC)", "status", "took", "pipeline / job", "assets", "partition", "reason"):
        table.add_column(col, justify="right" if col == "took" else "left", overflow="fold",
                         no_wrap=col in ("run", "started (UTC)", "status", "took"))
    colours = {"SUCCESS": "green", "FAILURE": "red", "CANCELED": "yellow"}
    for r in found:
        colour = colours.get(r.status, "default")
        # hub run's runs are ad-hoc asset jobs: the pipeline says more than Dagster's job name
        job = r.pipeline if r.pipeline and r.job in ("__ephemeral_asset_job__", "hub run") \
            else f"{r.pipeline or '-'} / {r.job}"
        table.add_row(r.run_id[:8], r.started.strftime("%Y-%m-%d %H:%M:%S") if r.started else "-",
                      f"[{colour}]{r.status}[/]", f"{r.duration_s:.1f}s" if r.duration_s is not None else "-",
                      escape(job),
                      escape(", ".join(r.assets) or "(all)"), escape(r.partition or "-"), escape(r.reason or ""))
    console.print(table)


@app.command()
def show(
    table: str = typer.Argument(..., help="A warehouse table: a source or model, a quarantine table "
                                          "(<table>__quarantine), _hub_files, _hub_calls, _hub_audit ..."),
    where: str = typer.Option(None, "--where", "-w", help="An SQL condition, e.g. \"reason LIKE 'rules.%'\" "
                                                          "(read-only: it runs on a read-only connection)."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many rows at most."),
    spec: Path = typer.Option(None, "--spec", help="Read the warehouse this spec names (default: "
                                                   "$HUB_WAREHOUSE, else the project's warehouse/hub.duckdb)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON (one object per row)."),
) -> None:
    """Print rows of a warehouse table, with every secret of the pipelines' systems masked."""
    import json

    from hub.spec.loader import warehouse_url
    from hub.warehouse import connect
    from hub.warehouse.base import ident

    pipelines = [_load(spec)] if spec else _quiet_specs()
    _register_secrets(pipelines)
    url = pipelines[0].warehouse_url if spec else warehouse_url(None, project.current().root)
    try:
        wh = connect(url)
        known = wh.tables(internal=True) if not url.startswith("duckdb:///") or _exists(url) else []
        if table not in known:
            raise _fail(f"no table {table} in {_masked(url)} (tables: {', '.join(known) or 'none yet'})")
        if where:
            _check_condition(where)
        sql = f"SELECT * FROM {ident(table)}" + (f" WHERE ({where}\n)" if where else "") + f" LIMIT {int(limit)}"
        rows = wh.read_only(sql)
    except HubError as exc:
        raise _fail(_one_line(exc)) from None
    records = [{k: _mask_value(v) for k, v in row.items()} for row in rows.to_pylist()]
    if as_json:
        typer.echo(json.dumps(records, indent=2, default=str, ensure_ascii=False))
        return
    out = Table(title=f"{table}: {len(records)} row(s)" + (f" where {escape(where)}" if where else "")
                + (f" (--limit {limit})" if len(records) == limit else ""))
    for name, dtype in zip(rows.column_names, rows.schema.types, strict=True):
        out.add_column(f"{escape(name)}\n[dim]{escape(str(dtype))}[/]", overflow="fold")
    for record in records:
        out.add_row(*(escape(_cell(v)) for v in record.values()))
    console.print(out)


def _check_condition(where: str) -> None:
    """Refuse a --where that holds more than a condition: a statement separator ends the condition and
    starts another statement (the read-only connection would refuse a write anyway; this says why)."""
    import sqlglot
    from sqlglot.tokens import TokenType

    try:
        tokens = sqlglot.tokenize(where, read="duckdb")
    except sqlglot.errors.SqlglotError as exc:
        raise _fail(f"--where: not SQL: {exc}") from None
    if any(t.token_type == TokenType.SEMICOLON for t in tokens):
        raise _fail("--where takes one condition, not statements: remove the ';' (hub show only reads)")


def _quiet_specs() -> list[Pipeline]:
    """The project's specs that load (for their secrets); a broken one is `hub validate`'s business."""
    from hub.spec.loader import load

    found = []
    for path in project.current().specs():
        try:
            found.append(load(path))
        except SpecError:
            continue
    return found


def _register_secrets(pipelines: list[Pipeline]) -> None:
    """Register every credential the pipelines' systems name that the environment holds, so shown rows mask
    them wherever they appear (a response echoed into a quarantine record, an audited parameter)."""
    from hub.runtime.secrets import address_fields, register_referenced

    for p in pipelines:
        for name, system in p.spec.systems.items():
            register_referenced(system.config.model_dump(by_alias=True, exclude_none=True),
                                field=system.protocol.field(name), addresses=address_fields(type(system.config)))


def _exists(url: str) -> bool:
    return Path(url[len("duckdb:///"):].partition("?")[0]).exists()


def _masked(url: str) -> str:
    from hub.runtime.secrets import mask_url

    return mask_url(url)


def _mask_value(value: Any) -> Any:
    """*value* with registered secrets masked; numbers and booleans stay what they are unless they hold one."""
    from hub.runtime.secrets import mask

    if value is None or isinstance(value, bool | int | float):
        text = str(value)
        return value if mask(text) == text else mask(text)
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _mask_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_value(v) for v in value]
    return mask(str(value))  # dates, decimals, bytes: shown as text


def _cell(value: Any) -> str:
    import json

    if value is None:
        return "∅"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


class _CatalogGroup(TyperGroup):
    """``hub catalog``: ``actions`` plus one command per protocol that can describe a system from its address
    alone (:meth:`hub.protocols.Protocol.catalog_command`). The protocols are loaded only when ``catalog`` is
    the command being run or listed, so ``hub --help`` and every other command start without them."""

    _loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        from hub import protocols

        for proto in protocols.all():
            command = proto.catalog_command()
            if command is not None and proto.name not in self.commands:
                one = typer.Typer()
                one.command(proto.name)(command)
                self.add_command(typer.main.get_command(one), proto.name)

    def list_commands(self, ctx: Any) -> list[str]:
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        self._load()
        return super().get_command(ctx, cmd_name)


catalog_app = typer.Typer(cls=_CatalogGroup, no_args_is_help=True,
                          help="Discover what systems offer: operations, inputs, outputs.")
app.add_typer(catalog_app, name="catalog")


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
    """The given specs, or every spec of the project's pipelines/."""
    here = project.current()
    paths = list(specs or []) or here.specs()
    if not paths:
        raise _fail(f"no pipeline specs given or found in {', '.join(map(str, here.spec_folders))}")
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
    into a temporary warehouse. A request that acts through the catalog's write actions ("when a payment
    arrives, mark the order paid in the ERP") becomes a flow (approved: false): validated, dry-run, every write
    printed with its target and a sample request, nothing sent; destructive requests the policy forbids and
    writes no action does are refused. Exit 0 valid, 1 rejected, 3 refused."""
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
    if result.flow is not None:  # a plan that acts: every write with its target and a sample request
        from hub.agent.flowplan import describe_writes

        for line in describe_writes(result):
            err.print(escape(line), highlight=False)
        spec_arg = f" --spec {output}" if output else ""
        err.print(f"[green]flow {escape(result.flow)} {where}[/], approved: false: nothing was sent; review it with "
                  f"`hub flow run {escape(result.flow)}{escape(spec_arg)} --dry-run`, run it with "
                  f"`hub flow run {escape(result.flow)}{escape(spec_arg)} --approve`", highlight=False)
        return
    err.print(f"[green]plan {where}[/]: dry run {result.partition or '(unpartitioned)'}: "
              + ", ".join(f"{k} {v} rows" for k, v in result.dry_run.items()), highlight=False)


contracts_app = typer.Typer(no_args_is_help=True, help="Expectation suites and contract tests: what the pipelines "
                                                       "rely on, checked against the live systems.")
app.add_typer(contracts_app, name="contracts")
register_contract_commands(contracts_app)  # hub contracts snapshot | test (hub/contracts/cli.py)
register_validation_commands(contracts_app)  # hub contracts suggest (hub/validation/cli.py)
register_event_commands(app)  # hub listen, hub events status | dead-letters | retry | replay (hub/cli/events.py)
register_serve_command(app)  # hub serve (hub/cli/serve.py)
register_init_command(app)  # hub init (hub/cli/init.py)
register_mcp_commands(app, agent_app, _load_specs)  # hub mcp, hub agent pending|approve|reject (hub/cli/mcp.py)
register_flow_commands(app)  # hub flow run | hub flows review (hub/flows/cli.py)





def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
