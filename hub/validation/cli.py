"""``hub contracts suggest`` (registered on the ``hub contracts`` command group)."""

from __future__ import annotations

from pathlib import Path

import typer

from hub.errors import HubError, SpecError


def _pipeline_of(asset: str, spec: Path | None):  # type: ignore[no-untyped-def]  # -> Pipeline
    """The pipeline of *spec*, or the one among ``pipelines/*.yaml`` that has *asset*."""
    from hub import project
    from hub.spec import load

    here = project.current()
    if spec is not None:
        return load(here.spec_path(spec))
    for path in here.specs():
        pipeline = load(path)
        if asset in pipeline.tables() or asset in pipeline.spec.models:
            return pipeline
    raise HubError(f"no pipeline in {', '.join(map(str, here.spec_folders))} has an asset named {asset} "
                   "(name the spec with --spec)")


def suggest(
    asset: str = typer.Argument(..., help="A source, child table or model."),
    spec: Path = typer.Option(None, "--spec", "-s", help="Its pipeline spec (default: the spec in pipelines/ that "
                                                         "has the asset)."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the suite to this file instead of printing it."),
    partition: str = typer.Option(None, "--partition", "-p", help="Only the rows of this partition (default: all "
                                                                  "rows of the table)."),
) -> None:
    """Propose an expectation suite from the loaded data, for review: column exists, not null where there are
    no nulls, observed ranges of numbers and dates, allowed values of low-cardinality text, a unique
    primary key."""
    from hub.validation.suggest import suggest_yaml

    try:
        text = suggest_yaml(_pipeline_of(asset, spec), asset, partition)
    except (SpecError, HubError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if output is None:
        typer.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    count = sum(1 for line in text.splitlines() if line.startswith("- "))
    typer.echo(f"wrote {count} expectations for {asset} to {output}; review them, then name the file in the "
               f"spec: checks: {{{asset}: {output}}}", err=True)


def register(group: typer.Typer) -> None:
    """Add ``suggest`` to the ``hub contracts`` group."""
    group.command("suggest")(suggest)
