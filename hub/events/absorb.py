"""Absorbing stored events into a stream source's table, exactly once.

The table's high-water mark is the last store position it holds (``_hub_state``, cursor ``_hub_position``,
written by :func:`hub.state.save_mark`). An absorb reads the events after the mark (up to a bound, in
chunks: bounded memory), parses their payloads into records (:mod:`hub.events.payloads`) and Arrow batches
(:func:`hub.runtime.records.records_to_batch`), applies the source's ``columns:`` mapping, ``rules:`` and
thresholds (the same :class:`~hub.transform.mapping.Mapper`, :class:`~hub.validation.rules.RowRules` and
:class:`~hub.validation.rules.Threshold` every source uses; bad rows go to quarantine with the reason and
the event's position as their row), and loads them, the new mark saved IN THE SAME warehouse transaction.
A crash before the commit changes nothing; after it, the mark covers exactly the rows loaded.

More rejected rows than the threshold allows do not stop the source: the absorb rolls back, every event with
a rejected row moves to the dead letters with the row's reason (one store transaction), and the rest is
absorbed again. The decision is recorded in the store (those events are no longer there), so a replay, which
applies no threshold, rebuilds the same table whatever its chunks (:func:`load_events`).

Rows are merged: on the source's ``primary_key`` (the latest event of a key wins, events being applied in
store order, so per-key order holds), or, without one, on the event's message id and the record's index in
it (``_hub_message_id``, ``_hub_record``). Absorbing an event twice therefore never duplicates a row. Every
row also carries ``_hub_position``, and ``_hub_partition`` names the position range of its absorb.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.json as pa_json

from hub import owners
from hub.errors import HubError, ThresholdExceeded
from hub.events.payloads import PayloadError, PayloadReader
from hub.events.publish import emit
from hub.events.store import EventStore, open_store
from hub.materialize import mapper_for, screens_for
from hub.runtime.jsonsafe import MAX_DEPTH
from hub.runtime.records import ERROR_COLUMN, records_to_batch
from hub.spec.loader import Pipeline
from hub.spec.models import ResolvedSource
from hub.state import read_mark, save_mark
from hub.validation.rules import Threshold
from hub.warehouse import LoadMode, LoadRequest, LoadResult, Warehouse, connect

POSITION, MESSAGE_ID, RECORD = "_hub_position", "_hub_message_id", "_hub_record"
#: Events read from the store at a time (a chunk of records in memory).
CHUNK_EVENTS = 5_000
Progress = Callable[[str, int], None]
#: What a load does with rows rejected beyond the source's threshold (see :func:`load_events`).
Beyond = Literal["fail", "dead-letter", "ignore"]


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
                              run_id=run_id, new_mark=upto, progress=progress, beyond="dead-letter")
    except HubError as exc:
        store.mark_absorbed(name, after, error=str(exc).splitlines()[0][:500])
        if isinstance(exc, ThresholdExceeded):
            emit(pipeline, "quarantine.threshold_exceeded", asset=name, run_id=run_id, positions=f"{after + 1}-{upto}",
                 error=str(exc))
        raise
    store.mark_absorbed(name, upto)
    if outcome.details.get("dead_lettered"):  # beyond the threshold: the offenders went to the dead letters
        emit(pipeline, "quarantine.threshold_exceeded", asset=name, run_id=run_id, positions=f"{after + 1}-{upto}",
             dead_lettered=outcome.details["dead_lettered"])
    load = outcome.load
    emit(pipeline, "asset.materialized", asset=name, run_id=run_id, positions=f"{outcome.first}-{outcome.last}",
         events=outcome.events, table=load.table if load else None, rows_loaded=load.rows_loaded if load else None,
         rows_quarantined=load.rows_quarantined if load else None)
    return outcome


class _Offenders(HubError):
    """Inside a load: the threshold was exceeded; these events (position → reason) go to the dead letters."""

    def __init__(self, reasons: dict[int, str], error: ThresholdExceeded) -> None:
        super().__init__(str(error))
        self.reasons, self.error = reasons, error


def load_events(pipeline: Pipeline, source: ResolvedSource, store: EventStore, warehouse: Warehouse, *,
                after: int, upto: int | None, mode: LoadMode, run_id: str, new_mark: int | None,
                since: str | None = None, until: str | None = None, progress: Progress | None = None,
                beyond: Beyond = "fail") -> AbsorbOutcome:
    """Load the events of *source* in (after, upto] (received between *since* and *until*) into its table
    with *mode*, and save *new_mark* in the same transaction (None: the mark stays).

    *beyond* says what happens when more rows are rejected than ``max_bad_rows`` / ``max_bad_fraction``
    allow: ``fail`` rolls back and raises :class:`~hub.errors.ThresholdExceeded`; ``dead-letter`` (an absorb)
    rolls back, moves every event with a rejected row to the dead letters (with the rows' reason) and loads
    the rest again, so one bad producer never stops a source; ``ignore`` (a replay) quarantines bad rows
    without a threshold: the store holds only events that passed it when they were absorbed, so a replay
    with the same spec rebuilds the same table whatever its chunks."""
    moved = 0
    for attempt in range(3):
        try:
            outcome = _load_events(pipeline, source, store, warehouse, after=after, upto=upto, mode=mode,
                                   run_id=run_id, new_mark=new_mark, since=since, until=until, progress=progress,
                                   beyond=beyond)
        except _Offenders as found:
            if attempt == 2:  # removing the offenders made others fail: a spec problem, not a bad producer
                raise found.error from None
            moved += store.dead_letter_events(source.name, found.reasons)
            continue
        outcome.details["dead_lettered"] = moved
        return outcome
    raise AssertionError("unreachable")


def _load_events(pipeline: Pipeline, source: ResolvedSource, store: EventStore, warehouse: Warehouse, *,
                 after: int, upto: int | None, mode: LoadMode, run_id: str, new_mark: int | None,
                 since: str | None, until: str | None, progress: Progress | None, beyond: Beyond
                 ) -> AbsorbOutcome:
    assert source.stream is not None
    started = time.monotonic()
    name, where = source.name, f"sources.{source.name}"
    reader = PayloadReader(source.stream, where)
    keys = tuple(source.spec.primary_key)
    mapper = mapper_for(source.spec.column_specs() if source.spec.columns else None, keys, where)
    rules, threshold = screens_for(source, where)
    if beyond == "ignore":
        threshold = Threshold(None, None, where=where)
    owners.check(warehouse, pipeline, [name])
    count, first, last = 0, None, None
    label = f"events {after + 1}-{upto}" if upto is not None else f"events after {after}"
    offenders: dict[int, str] = {}  # event position → the reason of its first rejected row
    exceeded: list[ThresholdExceeded] = []

    def screen(rows: int, rejected: list[dict[str, Any]]) -> None:
        """Count rejected rows (already carrying their event's position as "row") against the threshold."""
        for bad in rejected:
            if isinstance(bad.get("row"), int):
                offenders.setdefault(bad["row"], str(bad.get("reason") or "rejected"))
        try:
            threshold.add(rows, rejected)
        except ThresholdExceeded as exc:
            if beyond != "dead-letter":
                raise
            exceeded[:] = [exc]  # keep reading: every offending event of the range must be known

    request = LoadRequest(table=name, mode=mode, run_id=run_id, partition=label,
                          primary_key=merge_key(source) if mode == "merge" else ())
    with warehouse.begin(request) as load:
        owners.claim(load, pipeline, [name], run_id)
        for events in store.read_payloads(name, after=after, upto=upto, since=since, until=until,
                                          limit=CHUNK_EVENTS):
            count += len(events)
            first = first if first is not None else events[0][0]
            last = events[-1][0]
            raw, meta, broken = records_of(reader, events)
            if broken:
                screen(len(broken), broken)
                load.reject(broken)
            if raw.num_rows == 0:
                continue
            mapped = mapper.apply(raw)
            if rules:
                mapped = rules.apply(mapped, raw)
            kept = meta if mapped.kept is None else meta.filter(mapped.kept)
            batch = mapped.batch
            load.write(pa.RecordBatch.from_arrays([*batch.columns, *kept.columns],
                                                  names=[*batch.schema.names, *kept.schema.names]))
            positions = meta.column(0).to_pylist()
            rejected = [{**bad, "row": positions[bad["row"]] if isinstance(bad["row"], int)
                         and bad["row"] < len(positions) else bad["row"]} for bad in mapped.quarantine]
            screen(raw.num_rows, rejected)
            load.reject(rejected)
            if progress:
                progress(name, load.rows)
        rules.finish()
        try:
            threshold.check()
        except ThresholdExceeded as exc:
            if beyond != "dead-letter":
                raise  # nothing is loaded, the mark stays
            exceeded[:] = [exc]
        if exceeded:  # roll back; the offending events go to the dead letters, the rest is loaded again
            limits = ", ".join(f"{k}={v}" for k, v in (("max_bad_rows", threshold.max_bad_rows),
                                                       ("max_bad_fraction", threshold.max_bad_fraction))
                               if v is not None)
            context = (f"rejected beyond the threshold of {where} ({threshold.rejected} of {threshold.total} "
                       f"rows rejected absorbing {label}; {limits})")
            raise _Offenders({pos: f"{reason}; {context}" for pos, reason in offenders.items()}, exceeded[0])
        if new_mark is not None:
            save_mark(load, name, POSITION, str(new_mark), "position", run_id)
        result = load.commit()
    return AbsorbOutcome(name, count, first, last, new_mark if new_mark is not None else after, result,
                         time.monotonic() - started)


def records_of(reader: PayloadReader, events: list[tuple[int, str, bytes]]) -> tuple[
        pa.RecordBatch, pa.RecordBatch, list[dict[str, Any]]]:
    """The records of *events* (position, message id, payload) as one batch, their event columns (position,
    message id, record index) and the events that no longer parse (quarantined whole: the spec's format
    changed since they were stored). JSON payloads that are one record each take :func:`fast_json` when it
    can answer exactly as the general path would."""
    if reader.keys.format == "json" and reader.keys.records is None:
        batch = fast_json([e[2] for e in events])
        if batch is not None:
            meta = pa.RecordBatch.from_pydict({
                POSITION: pa.array([e[0] for e in events], pa.int64()),
                MESSAGE_ID: pa.array([e[1] for e in events], pa.string()),
                RECORD: pa.nulls(len(events), pa.int32()).fill_null(0)})
            return batch, meta, []
    return _records(reader, events)


#: Every digit as ``0``: 19 zeros in a row are maybe an integer beyond int64, which Arrow's JSON reader makes
#: a double and the general path an uint64 or text; such chunks take the general path.
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


def _depth(dtype: pa.DataType) -> int:
    """Levels of nesting of *dtype* (a scalar: 0)."""
    if pa.types.is_struct(dtype):
        return 1 + max((_depth(f.type) for f in dtype), default=0)
    if pa.types.is_list(dtype):
        return 1 + _depth(dtype.value_type)
    return 0


def _no_timestamps(dtype: pa.DataType) -> pa.DataType:
    """*dtype* with every timestamp (Arrow's JSON reader infers them from ISO strings) as a string again."""
    if pa.types.is_timestamp(dtype):
        return pa.string()
    if pa.types.is_struct(dtype):
        return pa.struct([f.with_type(_no_timestamps(f.type)) for f in dtype])
    if pa.types.is_list(dtype):
        return pa.list_(dtype.value_field.with_type(_no_timestamps(dtype.value_type)))
    return dtype


def fast_json(payloads: list[bytes]) -> pa.RecordBatch | None:
    """JSON payloads, one object each, as one batch parsed by Arrow's JSON reader in C++ (5-10x the general
    path: :func:`hub.runtime.jsonsafe.loads` + :func:`~hub.runtime.records.records_to_batch`), or None when
    the result could differ from the general path's, which then runs: a payload that is not an object or
    does not parse, a repeated key, nesting that may pass ``MAX_DEPTH``, a column mixing kinds, an integer
    beyond 64 bits. Strings stay strings (the reader's timestamp inference is undone by reading again with
    those fields declared as strings), so absorb and replay give the same table whichever path a chunk takes
    (tests/test_events.py compares the two)."""
    if not payloads:
        return None
    joined = b"\n".join(payloads)
    if joined.count(b"\n") != len(payloads) - 1 or b"\r" in joined:
        # line breaks are whitespace between JSON tokens (inside strings they must be escaped)
        joined = b"\n".join(p.replace(b"\n", b" ").replace(b"\r", b" ") for p in payloads)
    if _LONG_NUMBER in joined.translate(_DIGITS):
        return None
    options = pa_json.ReadOptions(use_threads=False, block_size=len(joined) + 1)
    try:
        table = pa_json.read_json(io.BytesIO(joined), read_options=options)
        plain = pa.schema([f.with_type(_no_timestamps(f.type)) for f in table.schema])
        if plain != table.schema:
            table = pa_json.read_json(io.BytesIO(joined), read_options=options,
                                      parse_options=pa_json.ParseOptions(explicit_schema=plain))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(payloads) or table.num_columns == 0 or ERROR_COLUMN in table.column_names:
        return None
    if max(_depth(f.type) for f in table.schema) > MAX_DEPTH // 2:
        return None  # deep values: the general path decides where nesting becomes too deep
    return table.combine_chunks().to_batches()[0]


def _records(reader: PayloadReader, events: list[tuple[int, str, bytes]]) -> tuple[
        pa.RecordBatch, pa.RecordBatch, list[dict[str, Any]]]:
    """The general path of :func:`records_of`: every payload parsed by the source's reader."""
    records: list[Any] = []
    positions: list[int] = []
    ids: list[str] = []
    index: list[int] = []
    broken: list[dict[str, Any]] = []
    for position, message_id, payload in events:
        try:
            found = reader.records(reader.parse(payload))
        except PayloadError as exc:
            broken.append({"row": position, "column": "payload", "value": None, "reason": str(exc),
                           "record": payload[:2000].decode("utf-8", "replace")})
            continue
        for i, record in enumerate(found):
            records.append(record)
            positions.append(position)
            ids.append(message_id)
            index.append(i)
    meta = pa.RecordBatch.from_pydict({POSITION: pa.array(positions, pa.int64()),
                                       MESSAGE_ID: pa.array(ids, pa.string()), RECORD: pa.array(index, pa.int32())})
    return records_to_batch(records), meta, broken
