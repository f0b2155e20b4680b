"""``hub contracts snapshot`` and ``hub contracts test`` (registered on the ``hub contracts`` command group)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from hub.errors import HubError, SpecError

if TYPE_CHECKING:
    from hub.spec import Pipeline

console = Console(soft_wrap=True, highlight=False)
_STYLE = {"passed": "green", "drift": "yellow", "failed": "red", "error": "red", "skipped": "dim"}


def _specs(specs: list[Path] | None, demo: bool) -> list[Path]:
    """The specs named, else (``--demo``) the demo's in the current project (copied there when missing),
    else every spec of the current project."""
    from hub import project

    here = project.current()
    if specs:
        return [here.spec_path(s) for s in specs]
    if demo:
        project.install_demo(here.root)
        return [here.root / project.DEMO_SPEC]
    found = here.specs()
    if not found:
        raise HubError(f"no pipeline specs in {', '.join(map(str, here.spec_folders))} (name the specs to use)")
    return found


def _load(paths: list[Path]) -> list[Pipeline]:
    from hub.spec import load

    pipelines = []
    for path in paths:
        try:
            pipelines.append(load(path))
        except SpecError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
    return pipelines


@contextmanager
def _estate(demo: bool, pipelines: list[Pipeline]) -> Iterator[None]:
    """The demo estate for the duration of the command (``--demo``), with the demo week's events landed in the
    event store (stream contracts are read from there; skipped when a broker is not running)."""
    if not demo:
        yield
        return
    from hub.demo import estate
    from hub.demo import events as demo_events

    def say(line: str) -> None:
        console.print(f"[dim]{escape(line)}[/]")

    with estate.running(say):
        for pipeline in pipelines:
            demo_events.land(pipeline, *demo_events.WEEK, say)
        yield


def register(app: typer.Typer) -> None:
    """Add ``snapshot`` and ``test`` to the ``hub contracts`` group."""

    @app.command("snapshot")
    def snapshot_command(
        specs: list[Path] = typer.Argument(None, help="Pipeline specs (default: pipelines/*.yaml)."),
        system: list[str] = typer.Option(None, "--system", "-s", help="Only these systems (repeatable)."),
        directory: Path = typer.Option(None, "--dir", help="Contracts folder (default: contracts/ in the project)."),
        demo: bool = typer.Option(False, "--demo", help="Start the demo estate for the duration (and default to "
                                                        "pipelines/demo.yaml)."),
    ) -> None:
        """Record what each pipeline depends on in each system: contracts/<pipeline>/<system>.contract.json."""
        from hub.contracts import snapshot

        try:
            paths = _specs(specs, demo)
        except HubError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        pipelines = _load(paths)
        with _estate(demo, pipelines):
            for pipeline in pipelines:
                try:
                    written = snapshot(pipeline, directory=directory, systems=system or None)
                except HubError as exc:
                    typer.echo(f"error: {pipeline.name}: {exc}", err=True)
                    raise typer.Exit(1) from None
                for path in written:
                    console.print(f"[green]wrote[/] {escape(_shown(path))}")

    @app.command("test")
    def test_command(
        specs: list[Path] = typer.Argument(None, help="Pipeline specs (default: pipelines/*.yaml)."),
        system: list[str] = typer.Option(None, "--system", "-s", help="Only these systems (repeatable)."),
        directory: Path = typer.Option(None, "--dir", help="Contracts folder (default: contracts/ in the project)."),
        junit: Path = typer.Option(None, "--junit", help="JUnit XML report (default: reports/contracts.xml)."),
        html: Path = typer.Option(None, "--html", help="HTML report (default: reports/contracts.html)."),
        markdown: Path = typer.Option(None, "--markdown", help="Markdown summary (default: reports/contracts.md)."),
        reports: Path = typer.Option(None, "--reports", help="Folder of the default reports (default: reports/ "
                                                             "in the project)."),
        demo: bool = typer.Option(False, "--demo", help="Start the demo estate for the duration (and default to "
                                                        "pipelines/demo.yaml)."),
    ) -> None:
        """Compare the live systems with the snapshots. Exit 1 on breaking changes, 2 when a system could not
        be compared."""
        from hub.contracts import verify
        from hub.contracts.report import write_html, write_junit, write_markdown

        try:
            paths = _specs(specs, demo)
        except HubError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        pipelines = _load(paths)
        results = []
        with _estate(demo, pipelines):
            for pipeline in pipelines:
                try:
                    results += verify(pipeline, directory=directory, systems=system or None)
                except HubError as exc:
                    typer.echo(f"error: {pipeline.name}: {exc}", err=True)
                    raise typer.Exit(1) from None
        for r in results:
            style = _STYLE[r.status]
            console.print(f"[{style}]{r.status:>7}[/] {escape(r.name)} ({r.protocol}): {escape(r.summary())}")
            for c in sorted(r.changes, key=lambda c: not c.breaking):
                console.print(f"          [{'red' if c.breaking else 'yellow'}]{c.severity}[/] {escape(c.message())}")
        folder = reports or (pipelines[0].root / "reports" if pipelines else Path("reports"))
        written = [write_junit(results, junit or folder / "contracts.xml"),
                   write_html(results, html or folder / "contracts.html"),
                   write_markdown(results, markdown or folder / "contracts.md")]
        console.print("reports: " + ", ".join(escape(_shown(p)) for p in written))
        if any(r.status == "failed" for r in results):
            raise typer.Exit(1)
        if any(r.status == "error" for r in results):
            raise typer.Exit(2)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
