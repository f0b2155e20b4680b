"""Absorbing stored events into a stream source's table, exactly once.

The table's high-water mark is the last store position it holds (``_hub_state``, cursor ``_hub_position``,
written by :func:`hub.state.save_mark`). An absorb reads the events after the mark (up to a bound, in
chunks: bounded memory), parses their payloads into records (:mod:`hub.events.payloads`) and Arrow batches
(:func:`hub.runtime.records.records_to_batch`), applies the source's ``columns:`` mapping, ``rules:`` and
thresholds (the same :class:`~hub.transform.mapping.Mapper`, :class:`~hub.validation.rules.RowRules` and
:class:`~hub.validation.rules.Threshold` every source uses; bad rows go to quarantine with the reason and
the event's position as their row), and loads them, the new mark saved IN THE SAME warehouse transaction.
A crash before the commit changes nothing; after it, the mark covers exactly the rows loaded.

Rows are merged: on the source's ``primary_key`` (the latest event of a key wins, events being applied in
store order, so per-key order holds), or, without one, on the event's message id and the record's index in
it (``_hub_message_id``, ``_hub_record``). Absorbing an event twice therefore never duplicates a row. Every
row also carries ``_hub_position``, and ``_hub_partition`` names the position range of its absorb.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from hub import owners
from hub.errors import HubError, ThresholdExceeded
from hub.events.payloads import PayloadError, PayloadReader
from hub.events.publish import emit
from hub.events.store import Event, EventStore, open_store
from hub.materialize import mapper_for, screens_for
from hub.runtime.records import records_to_batch
from hub.spec.loader import Pipeline
from hub.spec.models import ResolvedSource
from hub.state import read_mark, save_mark
from hub.warehouse import LoadMode, LoadRequest, LoadResult, Warehouse, connect

POSITION, MESSAGE_ID, RECORD = "_hub_position", "_hub_message_id", "_hub_record"
#: Events read from the store at a time (a chunk of records in memory).
CHUNK_EVENTS = 5_000
Progress = Callable[[str, int], None]


@dataclass
class AbsorbOutcome:
    """What one absorb (or replay) did."""

    asset: str
    events: int
    first: int | None  # store positions absorbed (None: nothing new)
    last: int | None
    mark: int  # the table's mark after the absorb
    load: LoadResult | None = None
    duration_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def stream_source(pipeline: Pipeline, name: str) -> ResolvedSource:
    source = pipeline.sources.get(name)
    if source is None or source.stream is None:
        streams = [n for n, s in pipeline.sources.items() if s.stream is not None]
        raise HubError(f"{pipeline.path}: '{name}' is not a stream source (stream sources: "
                       f"{', '.join(streams) or 'none'})")
    return source


def table_mark(warehouse: Warehouse, name: str) -> int:
    """The last store position the table of *name* holds (0: none)."""
    mark = read_mark(warehouse, name)
    return int(mark) if mark else 0


def merge_key(source: ResolvedSource) -> tuple[str, ...]:
    return tuple(source.spec.primary_key) or (MESSAGE_ID, RECORD)


def absorb_source(pipeline: Pipeline, name: str, *, run_id: str, store: EventStore | None = None,
                  max_events: int | None = None, progress: Progress | None = None,
                  warehouse: Warehouse | None = None) -> AbsorbOutcome:
    """Absorb the events of stream source *name* after its table's mark (at most *max_events*: a short
    transaction that a listener can repeat) into the table, in one warehouse transaction with the new mark.
    The store's copy of the mark is updated after the commit."""
    source = stream_source(pipeline, name)
    store = store or open_store(pipeline.warehouse_url, pipeline.root)
    warehouse = warehouse or connect(pipeline.warehouse_url)
    after = table_mark(warehouse, name)
    upto = store.position_after(name, after, max_events) if max_events else store.last_position(name)
    if upto <= after:
        store.mark_absorbed(name, after)
        return AbsorbOutcome(name, 0, None, None, after)
    try:
        outcome = load_events(pipeline, source, store, warehouse, after=after, upto=upto, mode="merge",
                              run_id=run_id, new_mark=upto, progress=progress)
    except HubError as exc:
        store.mark_absorbed(name, after, error=str(exc).splitlines()[0][:500])
        if isinstance(exc, ThresholdExceeded):
            emit(pipeline, "quarantine.threshold_exceeded", asset=name, run_id=run_id, positions=f"{after + 1}-{upto}",
                 error=str(exc))
        raise
    store.mark_absorbed(name, upto)
    load = outcome.load
    emit(pipeline, "asset.materialized", asset=name, run_id=run_id, positions=f"{outcome.first}-{outcome.last}",
         events=outcome.events, table=load.table if load else None, rows_loaded=load.rows_loaded if load else None,
         rows_quarantined=load.rows_quarantined if load else None)
    return outcome


def load_events(pipeline: Pipeline, source: ResolvedSource, store: EventStore, warehouse: Warehouse, *,
                after: int, upto: int | None, mode: LoadMode, run_id: str, new_mark: int | None,
                since: str | None = None, until: str | None = None, progress: Progress | None = None
                ) -> AbsorbOutcome:
    """Load the events of *source* in (after, upto] (received between *since* and *until*) into its table
    with *mode*, and save *new_mark* in the same transaction (None: the mark stays)."""
    assert source.stream is not None
    started = time.monotonic()
    name, where = source.name, f"sources.{source.name}"
    reader = PayloadReader(source.stream, where)
    keys = tuple(source.spec.primary_key)
    mapper = mapper_for(source.spec.column_specs() if source.spec.columns else None, keys, where)
    rules, threshold = screens_for(source, where)
    owners.check(warehouse, pipeline, [name])
    count, first, last = 0, None, None
    label = f"events {after + 1}-{upto}" if upto is not None else f"events after {after}"
    request = LoadRequest(table=name, mode=mode, run_id=run_id, partition=label,
                          primary_key=merge_key(source) if mode == "merge" else ())
    with warehouse.begin(request) as load:
        owners.claim(load, pipeline, [name], run_id)
        for events in store.read(name, after=after, upto=upto, since=since, until=until, limit=CHUNK_EVENTS):
            count += len(events)
            first = first if first is not None else events[0].position
            last = events[-1].position
            raw, meta, broken = _records(reader, events)
            if broken:
                threshold.add(len(broken), broken)
                load.reject(broken)
            if raw.num_rows == 0:
                continue
            mapped = mapper.apply(raw)
            if rules:
                mapped = rules.apply(mapped, raw)
            threshold.add(raw.num_rows, mapped.quarantine)
            kept = meta if mapped.kept is None else meta.filter(mapped.kept)
            batch = mapped.batch
            load.write(pa.RecordBatch.from_arrays([*batch.columns, *kept.columns],
                                                  names=[*batch.schema.names, *kept.schema.names]))
            positions = meta.column(0).to_pylist()
            load.reject([{**bad, "row": positions[bad["row"]] if isinstance(bad["row"], int)
                          and bad["row"] < len(positions) else bad["row"]} for bad in mapped.quarantine])
            if progress:
                progress(name, load.rows)
        rules.finish()
        threshold.check()  # beyond max_bad_rows / max_bad_fraction: nothing is loaded, the mark stays
        if new_mark is not None:
            save_mark(load, name, POSITION, str(new_mark), "position", run_id)
        result = load.commit()
    return AbsorbOutcome(name, count, first, last, new_mark if new_mark is not None else after, result,
                         time.monotonic() - started)


def _records(reader: PayloadReader, events: list[Event]) -> tuple[pa.RecordBatch, pa.RecordBatch,
                                                                   list[dict[str, Any]]]:
    """The records of *events* as one batch, their event columns (position, message id, record index) and
    the events that no longer parse (quarantined whole: the spec's format changed since they were stored)."""
    records: list[Any] = []
    positions: list[int] = []
    ids: list[str] = []
    index: list[int] = []
    broken: list[dict[str, Any]] = []
    for ev in events:
        try:
            found = reader.records(reader.parse(ev.payload))
        except PayloadError as exc:
            broken.append({"row": ev.position, "column": "payload", "value": None, "reason": str(exc),
                           "record": ev.payload[:2000].decode("utf-8", "replace")})
            continue
        for i, record in enumerate(found):
            records.append(record)
            positions.append(ev.position)
            ids.append(ev.message_id)
            index.append(i)
    meta = pa.RecordBatch.from_pydict({POSITION: pa.array(positions, pa.int64()),
                                       MESSAGE_ID: pa.array(ids, pa.string()), RECORD: pa.array(index, pa.int32())})
    return records_to_batch(records), meta, broken
