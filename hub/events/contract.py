"""Contracts of stream sources: the payload schema each source observes, and its drift.

A broker has no document describing its messages, and reading it for a snapshot would consume them. The
contract of a stream source is therefore what the hub has received: the latest :data:`SAMPLE_EVENTS` events
of the source **in the event store**, parsed as the source's ``format`` says, their records (``records:``)
run through the schema inference REST responses use (:func:`hub.contracts.schema.infer`: observed types,
properties present in every sampled record as required, string formats). The document holds nothing
run-specific (no hosts, counts, times or values), so a stable producer gives the same snapshot every time.

Drift is classified as for REST (:class:`hub.contracts.diff.Differ`): a field a source's ``columns:`` (or
``primary_key``) use that disappeared or changed type is **breaking**; new fields, widened types and changes
to fields no source uses are not. A source without ``columns:`` uses every field of its records. Every
stream plugin (amqp, nats, mqtt, kafka) answers its ``collect`` / ``compare`` hooks with these two
functions (:class:`hub.protocols._streams.StreamContract`).
"""

from __future__ import annotations

from typing import Any

from hub.contracts.diff import Change, Differ
from hub.contracts.schema import infer
from hub.contracts.usage import stream_usage, system_sources
from hub.events.payloads import PayloadError, PayloadReader
from hub.events.store import open_store
from hub.spec.loader import Pipeline

#: Stored events sampled per source (the newest).
SAMPLE_EVENTS = 200


def _scope(source: str) -> str:
    return f"stream:{source}"


def collect_streams(pipeline: Pipeline, system: str) -> dict[str, Any]:
    """``{"streams": {source: {format, records, sample, payload}}}``: per stream source of *system*, the JSON
    Schema of the records of its latest stored events (``{}`` while none is stored: nothing to compare)."""
    streams: dict[str, Any] = {}
    sources = [s for s in system_sources(pipeline, system) if s.stream is not None]
    store = open_store(pipeline.warehouse_url, pipeline.root) if sources else None
    for source in sources:
        keys = source.stream
        assert keys is not None and store is not None
        reader = PayloadReader(keys, f"sources.{source.name}")
        records: list[Any] = []
        for event in store.latest(source.name, SAMPLE_EVENTS):
            try:
                records.extend(reader.records(reader.parse(event.payload)))
            except PayloadError:
                continue  # a dead letter's business, not a shape
        entry: dict[str, Any] = {"format": keys.format}
        if keys.records is not None:
            entry["records"] = keys.records
        entry["sample"] = (f"the latest {SAMPLE_EVENTS} stored events" if records else
                           "no stored events yet (take a snapshot once messages arrived)")
        entry["payload"] = infer(records)
        streams[source.name] = entry
    return {"streams": streams}


def compare_streams(pipeline: Pipeline, system: str, before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """Every change of the observed payloads from *before* (the snapshot) to *after* (now); breaking when a
    source of the pipeline uses what changed."""
    d = Differ(system, stream_usage(pipeline, system, _scope))
    sb_all, sa_all = before.get("streams") or {}, after.get("streams") or {}
    for name, sb in sb_all.items():
        element = f"{name} payload"
        sa = sa_all.get(name)
        if sa is None:
            d.add(element, "", "no longer read by the pipeline (take a new snapshot)", sb.get("format"), "absent",
                  uses=[], breaking=False)
            continue
        for key in ("format", "records"):
            if sb.get(key) != sa.get(key):
                d.add(element, "", f"the source's {key} changed (take a new snapshot)", sb.get(key), sa.get(key),
                      uses=[], breaking=False)
        d.schema(sb.get("payload"), sa.get("payload"), element=element, scope=_scope(name))
    for name, sa in sa_all.items():
        if name not in sb_all:
            d.add(f"{name} payload", "", "not in the snapshot (take a new snapshot)", "absent", sa.get("format"),
                  uses=[], breaking=False)
    return d.changes
