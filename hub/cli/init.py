"""``hub init [DIR]``: scaffold a project (hub/scaffold)."""

from __future__ import annotations

from pathlib import Path

import typer

from hub.errors import HubError


def init(
    directory: Path = typer.Argument(Path("."), help="The project folder (created when missing; default: here)."),
    name: str = typer.Option(None, "--name", help="The project's name (default: the folder's name); its Python "
                                                  "package is this name in snake_case."),
) -> None:
    """Start a new project: pipelines/ with a commented example spec, contracts/, a Dagster code location
    (workspace.yaml, and pyproject.toml for `dg`), .env.example, .gitignore and a README. Existing files are
    never overwritten."""
    from hub.scaffold import init as scaffold

    try:
        written, kept = scaffold(directory, name)
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    root = directory.resolve()
    for path in written:
        typer.echo(f"wrote {path.relative_to(root)}")
    for path in kept:
        typer.echo(f"kept  {path.relative_to(root)} (already there)")
    where = "" if root == Path.cwd().resolve() else f"cd {directory}\n  "
    typer.echo(f"\nnext:\n  {where}hub validate pipelines/*.yaml\n  hub demo --serve   # another shell: the systems "
               "pipelines/example.yaml reads\n  hub run pipelines/example.yaml --from 2024-01-01 --to 2024-01-03\n"
               "  hub ui")


def register(app: typer.Typer) -> None:
    """Add ``hub init`` to the ``hub`` command."""
    app.command("init")(init)
