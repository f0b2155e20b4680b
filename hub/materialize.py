"""Materializing one asset: source → row rules and mapping → one-transaction warehouse load; or a
model's SQL.

This is the whole data path of the architecture notes, free of Dagster so it can be called from an
asset, a test or a benchmark alike. The Dagster glue (:mod:`hub.dagster`) only adds partitions,
metadata and orchestration on top.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hub import owners
from hub.errors import HubError, SourceInterrupted, ThresholdExceeded
from hub.events.publish import emit  # imports nothing above the spec layer
from hub.protocols import Extractor, ExtractRun
from hub.runtime import tracing
from hub.runtime.checkpoint import Checkpoint, fingerprint, open_resumption
from hub.runtime.duration import over_budget
from hub.runtime.retry import RetryPolicy
from hub.runtime.secrets import mask_url
from hub.runtime.window import Window
from hub.spec.loader import Pipeline
from hub.spec.models import ChildSpec, ColumnSpec, ResolvedSource
from hub.transform.mapping import Mapper, extract
from hub.validation.rules import RowRules, Threshold
from hub.warehouse import LoadMode, LoadRequest, LoadResult, Warehouse, connect
from hub.warehouse.calls import calls_sink

Progress = Callable[[str, int], None]  # (asset name, rows so far)


@dataclass
class Outcome:
    """What one materialization did; becomes Dagster metadata and the CLI summary."""

    asset: str
    load: LoadResult
    duration_s: float
    source_url: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    children: dict[str, LoadResult] = field(default_factory=dict)


def load_mode(source: ResolvedSource, full_refresh: bool = False) -> LoadMode:
    if full_refresh and not source.partitioned:
        return "replace"  # the table becomes exactly what the source holds now (deleted rows go too)
    if source.partitioned:
        return "replace_partition"
    return "merge" if source.spec.primary_key else "replace"


def child_mode(source: ResolvedSource) -> LoadMode:
    """Child rows follow their parent: per partition, per parent key (merge), or whole (replace)."""
    return {"merge": "replace_keys"}.get(load_mode(source), load_mode(source))  # type: ignore[return-value]


def cache_dir(pipeline: Pipeline) -> Path:
    """Downloaded WSDLs and similar reference documents (``$HUB_CACHE_DIR`` or ``.hub/cache``)."""
    return Path(os.environ.get("HUB_CACHE_DIR") or pipeline.root / ".hub" / "cache")


def state_dir(root: Path | None) -> Path:
    """Shared per-system state (rate limits, circuit breakers): ``$HUB_STATE_DIR`` or *root*/.hub."""
    return Path(os.environ.get("HUB_STATE_DIR") or (root or Path.cwd()) / ".hub")


def build_adapter(pipeline: Pipeline, source: ResolvedSource, window: Window | None, *,
                  warehouse: Warehouse | None = None, full_refresh: bool = False) -> Extractor:
    """The adapter of *source* for *window*, from its protocol (:mod:`hub.protocols`): secrets resolved,
    templates rendered; with *warehouse*, an incremental source starts from its high-water mark."""
    return source.protocol.extractor(ExtractRun(pipeline, source, window, warehouse=warehouse,
                                                full_refresh=full_refresh))


def mapper_for(columns: list[tuple[str, ColumnSpec]] | None, required: tuple[str, ...], where: str) -> Mapper:
    """The row rules of a source (or child table): its ``columns`` mapping and its required key."""
    return Mapper([(p, c.name, c.type) for p, c in columns] if columns else None, required=required, where=where,
                  formats={c.name or p: c.formats() for p, c in columns or [] if c.formats()})


def screens_for(source: ResolvedSource, where: str, *, consequence: str | None = None) -> tuple[RowRules, Threshold]:
    """A source's row rules (``rules:``) and its bad-row threshold (``max_bad_rows`` / ``max_bad_fraction``)."""
    spec = source.spec
    threshold = Threshold(spec.max_bad_rows, spec.max_bad_fraction, where=where,
                          **({"consequence": consequence} if consequence else {}))
    return RowRules(spec.rules, primary_key=spec.primary_key, where=f"sources.{source.name}"), threshold


def explode(raw: pa.RecordBatch, path: str, kept: pa.BooleanArray | None, parents: pa.RecordBatch,
            where: str) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """The items of the repeated element at *path* of every kept record, as (parent keys, items).

    *parents* holds the kept records' key columns, in order; each item gets its record's keys.
    """
    column = extract(raw, tuple(path.split(".")))
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        raise HubError(f"{where}.path: {path} is not a repeated element of the records (found {column.type})")
    owners = pc.list_parent_indices(column)
    items = pc.list_flatten(column)
    if kept is not None:
        position = pc.subtract(pc.cumulative_sum(kept.cast(pa.int64())), 1)
        keep_items = kept.take(owners)
        owners = position.take(owners).filter(keep_items)
        items = items.filter(keep_items)
    keys = pa.RecordBatch.from_arrays([c.take(owners) for c in parents.columns], names=parents.schema.names)
    if pa.types.is_struct(items.type):
        body = pa.RecordBatch.from_struct_array(items)
    else:
        body = pa.RecordBatch.from_arrays([items], names=["value"])
    return keys, body


def _prepend(keys: pa.RecordBatch, body: pa.RecordBatch) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([*keys.columns, *body.columns], names=[*keys.schema.names, *body.schema.names])


def window_closed(source: ResolvedSource, window: Window | None) -> bool:
    """True for a partition whose window is over: its data is taken as settled (page numbers stay put)."""
    return window is not None and source.partitioned and window.end <= datetime.now(UTC)


def checkpoint_for(pipeline: Pipeline, source: ResolvedSource, adapter: Extractor, window: Window | None
                   ) -> Checkpoint:
    """The checkpoint spool of *source* for *window* (:mod:`hub.runtime.checkpoint`). Its fingerprint covers
    the source's and system's spec as written (no resolved secrets), the masked endpoint and the window, so a
    changed spec, another server or another partition never resumes a stale spool."""
    window = window if source.partitioned else None
    endpoint = getattr(getattr(adapter, "stats", None), "url", None)
    fp = fingerprint(source.kind, source.spec.model_dump(mode="json"), source.system.model_dump(mode="json"),
                     endpoint, [window.key, window.start, window.end] if window else None)
    return Checkpoint.for_asset(state_dir(pipeline.root), pipeline.name, source.name,
                                window.key if window else None, fp)


def materialize_source(pipeline: Pipeline, name: str, *, window: Window | None, run_id: str,
                       progress: Progress | None = None, full_refresh: bool = False) -> Outcome:
    """Extract source *name* for *window* and load it (and its child tables) in one transaction.
    On any error nothing changes. A source whose connection breaks mid-extract
    (:class:`~hub.errors.SourceInterrupted`) is loaded again from the start, after its retry backoff.

    *full_refresh*: an incremental source reads everything again and the table is replaced.

    The materialization is one asset span, and every external call it makes a row of ``_hub_calls`` (written
    after the load, committed or not; see :mod:`hub.runtime.tracing`)."""
    source = pipeline.sources[name]
    with tracing.asset_scope(name, run_id=run_id, partition=window.key if (window and source.partitioned) else None,
                             pipeline=pipeline.name, sink=calls_sink(pipeline.warehouse_url)) as scope:
        restarts = 0
        while True:
            try:
                outcome = _materialize_once(pipeline, name, window=window, run_id=run_id, progress=progress,
                                            full_refresh=full_refresh)
            except ThresholdExceeded as exc:
                emit(pipeline, "quarantine.threshold_exceeded", asset=name, run_id=run_id,
                     partition=window.key if (window and source.partitioned) else None, error=str(exc))
                raise
            except SourceInterrupted as exc:
                restarts += 1
                if restarts > exc.max_restarts:
                    raise
                RetryPolicy(exc.max_restarts, exc.backoff, exc.max_backoff).sleep(restarts)
                continue
            if restarts:
                outcome.details["restarts"] = restarts
            scope.rows = outcome.load.rows_loaded
            emit(pipeline, "asset.materialized", asset=name, run_id=run_id, table=outcome.load.table,
                 partition=window.key if (window and source.partitioned) else None,
                 rows_loaded=outcome.load.rows_loaded, rows_quarantined=outcome.load.rows_quarantined,
                 table_rows=outcome.load.table_rows)
            return outcome


def _materialize_once(pipeline: Pipeline, name: str, *, window: Window | None, run_id: str,
                      progress: Progress | None, full_refresh: bool) -> Outcome:
    source = pipeline.sources[name]
    started = time.monotonic()
    warehouse = connect(pipeline.warehouse_url)
    adapter = build_adapter(pipeline, source, window if source.partitioned else None, warehouse=warehouse,
                            full_refresh=full_refresh)
    keys = tuple(source.spec.primary_key)
    where = f"sources.{name}"
    mapper = mapper_for(source.spec.column_specs() if source.spec.columns else None, keys, where)
    partition = window.key if (window and source.partitioned) else None
    children: dict[str, tuple[ChildSpec, Mapper]] = {
        child: (cspec, mapper_for(cspec.column_specs() if cspec.columns else None, (), f"{where}.children.{child}"))
        for child, cspec in source.spec.children.items()}
    seen = 0
    rules, threshold = screens_for(source, where)
    mode = load_mode(source, full_refresh)
    resumption = open_resumption(adapter, checkpoint_for(pipeline, source, adapter, window),
                                 window_closed=window_closed(source, window), full_refresh=full_refresh)
    owned = [name, *children]
    owners.check(warehouse, pipeline, owned)
    with resumption, warehouse.begin(LoadRequest(table=name, mode=mode, run_id=run_id, partition=partition,
                                                 primary_key=keys)) as load:
        owners.claim(load, pipeline, owned, run_id)
        child_loads = {child: load.attach(LoadRequest(table=child, mode=child_mode(source), run_id=run_id,
                                                      partition=partition, primary_key=keys))
                       for child in children}
        for raw in resumption.batches(adapter):  # spooled batches of an earlier attempt first, if any
            if time.monotonic() - started > source.spec.max_duration:  # REST and SOAP also stop mid-page
                raise over_budget(name, source.spec.max_duration, f"{seen + raw.num_rows} rows read")
            mapped = mapper.apply(raw)
            if rules:
                mapped = rules.apply(mapped, raw)
            threshold.add(raw.num_rows, mapped.quarantine)
            load.write(mapped.batch)
            load.reject([{**bad, "row": seen + bad["row"]} for bad in mapped.quarantine])
            if children:
                parent_keys = mapped.batch.select(list(keys))
                for child, (cspec, cmapper) in children.items():
                    key_cols, body = explode(raw, cspec.path, mapped.kept, parent_keys,
                                             f"{where}.children.{child}")
                    cmapped = cmapper.apply(body)
                    kept_keys = key_cols if cmapped.kept is None else key_cols.filter(cmapped.kept)
                    child_loads[child].cover(parent_keys)
                    child_loads[child].write(_prepend(kept_keys, cmapped.batch))
                    child_loads[child].reject(cmapped.quarantine)
            seen += raw.num_rows
            if progress:
                progress(name, load.rows)
        rules.finish()
        threshold.check()  # beyond max_bad_rows / max_bad_fraction: the load rolls back, nothing changes
        child_results = {child: cl.commit() for child, cl in child_loads.items()}
        source.protocol.before_commit(load, source, adapter, run_id)  # e.g. SQL: the high-water mark
        result = load.commit()
    details = {**adapter.details(), **resumption.details}
    url = details.pop("url", None)
    return Outcome(asset=name, load=result, duration_s=time.monotonic() - started,
                   source_url=mask_url(url) if url else None, details=details, children=child_results)


def materialize_model(pipeline: Pipeline, name: str, *, run_id: str | None = None) -> Outcome:
    """Rebuild model *name* from its SQL inside the warehouse (an asset span in the trace of *run_id*)."""
    started = time.monotonic()
    model = pipeline.spec.models[name]
    with tracing.asset_scope(name, run_id=run_id, pipeline=pipeline.name, kind="model") if run_id \
            else contextlib.nullcontext() as scope:
        warehouse = connect(pipeline.warehouse_url)
        owners.check(warehouse, pipeline, [name])
        result = warehouse.run_model(name, model.sql)
        owners.claim_now(warehouse, pipeline, [name], run_id or "model")
        if scope is not None:
            scope.rows = result.table_rows
    return Outcome(asset=name, load=result, duration_s=time.monotonic() - started)
