"""``hub listen`` and ``hub events status | dead-letters | retry | replay`` (docs/events.md)."""

from __future__ import annotations

import uuid
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hub.errors import HubError, SpecError
from hub.spec import Pipeline, discover, load

console = Console(soft_wrap=True)
SPECS_HELP = "Pipeline spec files (default: every spec in pipelines/)."


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _pipelines(specs: list[Path] | None) -> list[Pipeline]:
    paths = specs or (discover("pipelines") if Path("pipelines").is_dir() else [])
    try:
        return [load(p) for p in paths]
    except SpecError as exc:
        raise _fail(str(exc)) from None


def _streams(pipelines: list[Pipeline]) -> list[tuple[Pipeline, str]]:
    return [(p, name) for p in pipelines for name, s in p.sources.items() if s.stream is not None]


def _find(pipelines: list[Pipeline], source: str) -> Pipeline:
    for p, name in _streams(pipelines):
        if name == source:
            return p
    known = ", ".join(n for _, n in _streams(pipelines)) or "none"
    raise _fail(f"no stream source {source} in the given specs (stream sources: {known})")


def listen_command(
    specs: list[Path] = typer.Argument(None, help=SPECS_HELP),
    source: list[str] = typer.Option(None, "--source", "-s", help="Only these stream sources (repeatable)."),
    batch: int = typer.Option(500, "--batch", min=1, max=10_000, help="Messages per store transaction."),
    progress_every: float = typer.Option(5.0, "--progress-every", help="Seconds between progress lines."),
) -> None:
    """Consume every stream source into the event store (acknowledged after the store commits) and absorb the
    events into the warehouse; stops cleanly on SIGTERM / Ctrl-C after the batch in hand."""
    from hub.events.listen import ListenOptions, listen

    pipelines = _pipelines(specs)
    options = ListenOptions(batch=batch, progress_every=progress_every)
    streams = _streams(pipelines)
    if not streams:
        raise _fail("no stream sources in the given specs")
    console.print(f"listening to {', '.join(n for _, n in streams)} (Ctrl-C or SIGTERM stops)", highlight=False)
    try:
        listen(pipelines, options=options, sources=source or None,
               echo=lambda line: console.print(escape(line), highlight=False))
    except HubError as exc:
        raise _fail(str(exc)) from None


events_app = typer.Typer(no_args_is_help=True, help="The event store of stream sources: status, dead letters, "
                                                    "retry, replay.")


@events_app.command("status")
def status(specs: list[Path] = typer.Argument(None, help=SPECS_HELP)) -> None:
    """Per stream source: stored events, positions, what the table has absorbed, lag, duplicates, dead letters."""
    from hub.events.store import open_store

    table = Table("source", "events", "last position", "absorbed", "not absorbed", "duplicates", "dead letters",
                  "last absorb")
    for p, name in _streams(_pipelines(specs)):
        st = open_store(p.warehouse_url, p.root).status([name])[0]
        table.add_row(name, f"{st.events:,}", f"{st.last_position:,}", f"{st.absorbed:,}", f"{st.pending:,}",
                      f"{st.duplicates:,}", f"{st.dead:,}",
                      escape(f"error: {st.absorb_error}" if st.absorb_error else (st.absorbed_at or "never")))
    console.print(table)


@events_app.command("dead-letters")
def dead_letters(specs: list[Path] = typer.Argument(None, help=SPECS_HELP),
                 source: str = typer.Option(None, "--source", "-s", help="Only this source.")) -> None:
    """List dead-lettered messages: id, source, message id, attempts, reason, payload head."""
    from hub.events.store import open_store

    table = Table("id", "source", "message id", "attempts", "reason", "payload", "dead at")
    for p, name in _streams(_pipelines(specs)):
        if source and name != source:
            continue
        for d in open_store(p.warehouse_url, p.root).dead_letters(name):
            head = d.payload[:60].decode("utf-8", "replace")
            table.add_row(str(d.id), name, escape(d.message_id), str(d.attempts), escape(d.reason), escape(head),
                          d.dead_at)
    console.print(table)


@events_app.command("retry")
def retry(source: str = typer.Argument(..., help="The stream source."),
          specs: list[Path] = typer.Argument(None, help=SPECS_HELP),
          ids: list[int] = typer.Option(None, "--id", help="Only these dead letters (default: all of the source).")
          ) -> None:
    """Send dead letters through again with the spec as it is now: stored as events when they parse (the
    next absorb loads them), else kept with the new reason."""
    from hub.events.payloads import PayloadReader
    from hub.events.store import Incoming, open_store

    pipeline = _find(_pipelines(specs), source)
    keys = pipeline.sources[source].stream
    assert keys is not None
    reader = PayloadReader(keys, f"sources.{source}")
    store = open_store(pipeline.warehouse_url, pipeline.root)
    counts: dict[str, int] = {}
    for letter in store.dead_letters(source, ids or None):
        import json

        try:
            doc = reader.parse(letter.payload)
            mid, reason = reader.message_id(doc, letter.payload, letter.message_id), None
        except HubError as exc:
            mid, reason = letter.message_id, str(exc)
        retried = Incoming(message_id=mid, payload=letter.payload, key=letter.key, type=letter.type,
                           stream=letter.stream, headers=json.loads(letter.headers), attempts=letter.attempts,
                           reason=reason)
        outcome = store.resolve_dead(letter, retried)
        counts[outcome] = counts.get(outcome, 0) + 1
    console.print(f"{source}: {counts.get('stored', 0)} stored, {counts.get('duplicate', 0)} already stored, "
                  f"{counts.get('dead', 0)} still dead", highlight=False)


@events_app.command("replay")
def replay(source: str = typer.Argument(..., help="The stream source."),
           specs: list[Path] = typer.Argument(None, help=SPECS_HELP),
           start: str = typer.Option(None, "--from", help="First position, or an ISO time (default: the first "
                                                          "event: the table is rebuilt from scratch)."),
           end: str = typer.Option(None, "--to", help="Last position, or an ISO time (default: the last event)."),
           no_models: bool = typer.Option(False, "--no-models", help="Do not rebuild the models reading it.")) -> None:
    """Rebuild a stream source's table from its stored events (deterministic, idempotent), then the models
    that read it."""
    from hub.events.replay import replay_source

    pipeline = _find(_pipelines(specs), source)
    try:
        outcome = replay_source(pipeline, source, run_id=f"replay-{uuid.uuid4().hex[:12]}", start=start, end=end,
                                rebuild_models=not no_models)
    except HubError as exc:
        raise _fail(str(exc)) from None
    rows = sum(a.load.rows_loaded for a in outcome.absorbs if a.load is not None)
    quarantined = sum(a.load.rows_quarantined for a in outcome.absorbs if a.load is not None)
    console.print(f"{source}: replayed {outcome.events:,} event(s) into {rows:,} row(s) ({quarantined:,} "
                  f"quarantined) in {outcome.duration_s:.2f}s; mark {outcome.mark:,}"
                  + (f"; rebuilt {', '.join(outcome.models)}" if outcome.models else ""), highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``hub listen`` and ``hub events ...`` to the ``hub`` command."""
    app.command("listen")(listen_command)
    app.add_typer(events_app, name="events")
