"""Replay: rebuild a stream source's table from its stored events, and retention.

Replay is the answer to "we had a mapping bug for a week": fix the spec, then replay. It is deterministic
(the stored payloads, in store order, through today's spec) and idempotent (rows are merged on the
source's key, or the event's message id and record index, so replaying twice gives the same table).

* without ``--from``: the table is emptied and its mark set to 0 in one transaction (a consistent state:
  the table holds the events up to its mark, none), then every event up to ``--to`` (default: the last) is
  absorbed again in bounded transactions, each moving the mark;
* with ``--from P``: the events from P to ``--to`` are merged again over the table as it is (the mark
  moves forward to ``--to`` only when nothing between the mark and P would be skipped).

Positions or ISO times (``2024-05-01T00:00:00+00:00``) are both accepted as bounds. Models of the
pipeline that read the table are rebuilt afterwards.

Retention (``keep:``) deletes events received longer ago than ``keep`` and only up to the position the
table has absorbed (the store's copy of the mark, written after the warehouse committed, so never ahead):
an event the table has not absorbed is never deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hub.events.absorb import CHUNK_EVENTS, POSITION, AbsorbOutcome, load_events, stream_source, table_mark
from hub.events.store import EventStore, open_store
from hub.materialize import materialize_model
from hub.spec.loader import Pipeline
from hub.state import save_mark
from hub.warehouse import LoadRequest, connect


@dataclass
class ReplayOutcome:
    asset: str
    events: int
    mark: int
    duration_s: float
    absorbs: list[AbsorbOutcome] = field(default_factory=list)
    models: list[str] = field(default_factory=list)


def _position(store: EventStore, name: str, bound: str | None, *, first: bool) -> int | None:
    if bound is None:
        return None
    if bound.strip().isdigit():
        return int(bound)
    return store.position_at(name, bound, first=first) - (1 if first else 0)


def replay_source(pipeline: Pipeline, name: str, *, run_id: str, start: str | None = None, end: str | None = None,
                  rebuild_models: bool = True, chunk: int = 50 * CHUNK_EVENTS) -> ReplayOutcome:
    """Rebuild the table of stream source *name* from stored events between *start* and *end* (positions or
    ISO times, inclusive); see the module notes."""
    started = time.monotonic()
    source = stream_source(pipeline, name)
    store = open_store(pipeline.warehouse_url, pipeline.root)
    warehouse = connect(pipeline.warehouse_url)
    upto = _position(store, name, end, first=False)
    upto = store.last_position(name) if upto is None else upto
    absorbs: list[AbsorbOutcome] = []
    if start is None:
        with warehouse.begin(LoadRequest(table=name, mode="replace", run_id=run_id)) as load:
            save_mark(load, name, POSITION, "0", "position", run_id)
            load.commit()  # the table empty, its mark 0: consistent
        store.mark_absorbed(name, 0)
        after = 0
        while after < upto:
            bound = min(store.position_after(name, after, chunk), upto)
            if bound <= after:
                break
            absorbs.append(load_events(pipeline, source, store, warehouse, after=after, upto=bound, mode="merge",
                                       run_id=run_id, new_mark=bound))
            store.mark_absorbed(name, bound)
            after = bound
        mark = after
    else:
        begin = _position(store, name, start, first=True)
        assert begin is not None
        from_after = max(begin - 1, 0) if start.strip().isdigit() else begin
        current = table_mark(warehouse, name)
        new_mark = upto if current >= from_after and upto > current else None
        absorbs.append(load_events(pipeline, source, store, warehouse, after=from_after, upto=upto, mode="merge",
                                   run_id=run_id, new_mark=new_mark))
        mark = new_mark if new_mark is not None else current
        store.mark_absorbed(name, mark)
    models = downstream_models(pipeline, name) if rebuild_models else []
    for model in models:
        materialize_model(pipeline, model, run_id=run_id)
    return ReplayOutcome(name, sum(a.events for a in absorbs), mark, time.monotonic() - started, absorbs, models)


def downstream_models(pipeline: Pipeline, table: str) -> list[str]:
    """The pipeline's models reading *table*, directly or through other models, each after the models it
    reads."""
    affected = {table}
    grew = True
    while grew:
        grew = False
        for model, deps in pipeline.model_deps.items():
            if model not in affected and affected & set(deps):
                affected.add(model)
                grew = True
    pending = [m for m in pipeline.spec.models if m in affected]
    ordered: list[str] = []
    while pending:
        ready = [m for m in pending if not (set(pipeline.model_deps.get(m, [])) & set(pending))]
        if not ready:  # a cycle cannot pass the spec's checks; keep the declared order
            ready = pending[:1]
        ordered.extend(ready)
        pending = [m for m in pending if m not in ready]
    return ordered


def retain(pipeline: Pipeline, store: EventStore | None = None) -> dict[str, int]:
    """Apply every stream source's ``keep:``; the number of events deleted per source."""
    store = store or open_store(pipeline.warehouse_url, pipeline.root)
    deleted: dict[str, int] = {}
    sources = [s for s in pipeline.sources.values() if s.stream is not None and s.stream.keep]
    for status, source in zip(store.status([s.name for s in sources]), sources, strict=True):
        assert source.stream is not None and source.stream.keep is not None
        deleted[source.name] = store.forget(source.name, source.stream.keep, absorbed=status.absorbed)
    return deleted
