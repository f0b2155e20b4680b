"""Materializing one asset: source → mapping → one-transaction warehouse load; or a model's SQL.

This is the whole data path of the architecture notes, free of Dagster so it can be called from an
asset, a test or a benchmark alike. The Dagster glue (:mod:`hub.dagster`) only adds partitions,
metadata and orchestration on top.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from adapters.rest import RestSource, RestSourceConfig, RestSystemConfig
from hub.errors import HubError
from hub.runtime.secrets import mask_url, resolve_tree
from hub.runtime.window import Window, render_tree
from hub.spec.loader import Pipeline
from hub.spec.models import ResolvedSource
from hub.transform.mapping import Mapper
from hub.warehouse import LoadRequest, LoadResult, connect
from hub.warehouse.base import LoadMode

Progress = Callable[[str, int], None]  # (asset name, rows so far)


@dataclass
class Outcome:
    """What one materialization did; becomes Dagster metadata and the CLI summary."""

    asset: str
    load: LoadResult
    duration_s: float
    source_url: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def load_mode(source: ResolvedSource) -> LoadMode:
    if source.partitioned:
        return "replace_partition"
    return "merge" if source.spec.primary_key else "replace"


def build_rest(source: ResolvedSource, window: Window | None, batch_size: int = 10_000) -> RestSource:
    """The REST adapter for *source* with secrets resolved and partition templates rendered."""
    assert source.system.rest is not None and source.rest is not None
    field = f"systems.{source.system_name}.rest"
    system_raw = resolve_tree(source.system.rest.model_dump(by_alias=True, exclude_none=True), field=field)
    src_raw = render_tree(source.rest.model_dump(by_alias=True, exclude_none=True), window,
                          field=f"sources.{source.name}")
    return RestSource(RestSystemConfig.model_validate(system_raw), RestSourceConfig.model_validate(src_raw),
                      name=source.name, batch_size=batch_size)


def _null_key_rows(batch: pa.RecordBatch, keys: list[str]) -> pa.Array | None:
    """Mask of rows whose primary key is incomplete; None when every row has a full key."""
    mask: pa.Array | None = None
    for k in keys:
        idx = batch.schema.get_field_index(k)
        col_null = pc.is_null(batch.column(idx)) if idx >= 0 else pa.array([True] * batch.num_rows)
        mask = col_null if mask is None else pc.or_(mask, col_null)
    if mask is None or not pc.any(mask).as_py():
        return None
    return mask


def materialize_source(pipeline: Pipeline, name: str, *, window: Window | None, run_id: str,
                       progress: Progress | None = None) -> Outcome:
    """Extract source *name* for *window* and load it in one transaction. On any error nothing changes."""
    source = pipeline.sources[name]
    started = time.monotonic()
    if source.kind != "rest":  # pragma: no cover - other protocols arrive with their adapters
        raise HubError(f"sources.{name}: protocol {source.kind} is not supported yet")
    adapter = build_rest(source, window if source.partitioned else None)
    cols = source.spec.column_specs()
    mapper = Mapper([(p, c.name, c.type) for p, c in cols] if source.spec.columns else None)
    keys = source.spec.primary_key
    partition = window.key if (window and source.partitioned) else None
    request = LoadRequest(table=name, mode=load_mode(source), run_id=run_id, partition=partition,
                          primary_key=tuple(keys))
    seen = 0
    with connect(pipeline.warehouse_url).begin(request) as load:
        for raw in adapter.batches():
            mapped = mapper.apply(raw)
            rejected = [{**bad, "row": seen + bad["row"]} for bad in mapped.quarantine]
            batch = mapped.batch
            missing_in_schema = [k for k in keys if batch.schema.get_field_index(k) < 0]
            if missing_in_schema and batch.num_rows:
                raise HubError(f"sources.{name}.primary_key: column(s) {', '.join(missing_in_schema)} not in "
                               f"the records (columns: {', '.join(batch.schema.names)})")
            null_mask = _null_key_rows(batch, keys) if keys else None
            if null_mask is not None:
                for i, rec in enumerate(batch.filter(null_mask).to_pylist()):
                    rejected.append({"row": seen + i, "column": ",".join(keys), "value": None,
                                     "reason": f"primary key {', '.join(keys)} is null", "record": str(rec)})
                batch = batch.filter(pc.invert(null_mask))
            load.write(batch)
            load.reject(rejected)
            seen += raw.num_rows
            if progress:
                progress(name, load.rows)
        result = load.commit()
    stats = adapter.stats
    return Outcome(
        asset=name, load=result, duration_s=time.monotonic() - started, source_url=mask_url(stats.url),
        details={"pages": stats.pages, "records": stats.records, "bytes": stats.bytes,
                 "retries": stats.retries, "concurrent_pages": stats.concurrent},
    )


def materialize_model(pipeline: Pipeline, name: str) -> Outcome:
    """Rebuild model *name* from its SQL inside the warehouse."""
    started = time.monotonic()
    model = pipeline.spec.models[name]
    result = connect(pipeline.warehouse_url).run_model(name, model.sql)
    return Outcome(asset=name, load=result, duration_s=time.monotonic() - started)
