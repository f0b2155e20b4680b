"""Dagster glue for stream sources (Dagster-only deployments; ``hub listen`` is the low-latency way).

A sensor per stream source drains a bounded batch per tick into the event store (acknowledging after the
store committed, :func:`hub.events.drain.drain`) and requests ONE run for everything stored since its
cursor: ``run_key`` = source and position range, cursor = the last position. The asset absorbs from the
store (:func:`hub.events.absorb.absorb_source`); lag (broker backlog, positions not yet absorbed) is
asset metadata. Never one run per message."""

# No `from __future__ import annotations`: Dagster inspects the `context` annotation at definition time.

import asyncio
from typing import Any

import dagster as dg

from hub.dagster.progress import report
from hub.dagster.validation import check_results, check_specs
from hub.events.absorb import absorb_source, merge_key
from hub.events.drain import Drained, drain
from hub.events.store import open_store
from hub.spec import Pipeline
from hub.spec.models import ResolvedSource
from hub.warehouse.lock import writer_lock

#: Messages a sensor tick drains at most; seconds between ticks.
TICK_MESSAGES = 5_000
TICK_SECONDS = 30
LAG_TAG = "hub/broker_lag"


def stream_asset(pipeline: Pipeline, source: ResolvedSource, pool: str | None) -> dg.AssetsDefinition:
    endpoint = source.protocol.endpoint(source)
    description = source.spec.description or f"{source.kind.upper()} stream {endpoint or source.name}, absorbed " \
                                              "from the event store"
    static_md: dict[str, Any] = {"hub/system": source.system_name, "hub/load_mode": "merge on "
                                 + ", ".join(merge_key(source)), "hub/spec": str(pipeline.path)}
    if endpoint:
        static_md["hub/endpoint"] = endpoint

    @dg.asset(name=source.name, group_name=pipeline.name, kinds={source.kind, pipeline.warehouse_kind},
              description=description, pool=pool, metadata=static_md, tags={"hub/system": source.system_name},
              check_specs=check_specs(pipeline, [source.name]) or None)
    def _asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        store = open_store(pipeline.warehouse_url, pipeline.root)
        with writer_lock(pipeline.warehouse_url, what=f"Dagster run {context.run_id[:8]} ({source.name})",
                         say=context.log.info):
            outcome = absorb_source(pipeline, source.name, run_id=context.run_id, store=store, progress=report)
            checks = check_results(context, pipeline, source.name, None)
        pending = store.status([source.name])[0].pending
        context.log.info(f"{source.name}: {outcome.events} event(s) absorbed (positions {outcome.first}-"
                         f"{outcome.last}), {pending} not yet absorbed")
        md: dict[str, Any] = {"hub/events": outcome.events, "hub/mark": outcome.mark, "hub/lag_events": pending,
                              "hub/duration_s": dg.FloatMetadataValue(round(outcome.duration_s, 3))}
        lag = context.run.tags.get(LAG_TAG)
        if lag is not None:
            md["hub/lag_broker"] = int(lag)
        if outcome.load is not None:
            load = outcome.load
            md.update({"dagster/row_count": load.table_rows, "hub/rows_loaded": load.rows_loaded,
                       "hub/rows_quarantined": load.rows_quarantined, "dagster/table_name": load.table,
                       "dagster/column_schema": dg.TableSchema(
                           columns=[dg.TableColumn(name=n, type=t) for n, t in load.columns])})
        return dg.MaterializeResult(metadata=md, check_results=checks)

    return _asset


def stream_job(pipeline: Pipeline, source: ResolvedSource) -> Any:
    return dg.define_asset_job(f"{source.name}_job", selection=[source.name],
                               description=f"Absorb the stored events of {source.name}")


def stream_sensor(pipeline: Pipeline, source: ResolvedSource, job: Any) -> dg.SensorDefinition:
    """Drain a bounded batch into the store, then one run for the positions stored since the cursor."""

    @dg.sensor(name=f"{source.name}_sensor", job=job, minimum_interval_seconds=TICK_SECONDS,
               default_status=dg.DefaultSensorStatus.RUNNING if source.stream is not None
               and source.stream.sensor == "running" else dg.DefaultSensorStatus.STOPPED,
               description=f"Drains up to {TICK_MESSAGES} messages of {source.name} into the event store per tick "
                           "(acknowledged after the store commits) and requests one run for them")
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        # a pushed source (webhooks) is stored by `hub serve`: nothing to drain, only the run to request
        drained = Drained() if source.protocol.pushed else \
            asyncio.run(drain(pipeline, source.name, max_messages=TICK_MESSAGES))
        store = open_store(pipeline.warehouse_url, pipeline.root)
        cursor = int(context.cursor or 0)
        last = store.last_position(source.name)
        context.log.info(f"{source.name}: {drained.received} received, {drained.stored} stored, "
                         f"{drained.duplicates} duplicates, {drained.dead} dead-lettered; broker lag {drained.lag}")
        if last <= cursor:
            return dg.SensorResult(skip_reason=f"no new events (position {last})", cursor=str(cursor))
        tags = {"hub/positions": f"{cursor + 1}-{last}"}
        if drained.lag is not None:
            tags[LAG_TAG] = str(drained.lag)
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"{source.name}:{cursor + 1}-{last}", tags=tags)],
                               cursor=str(last))

    return _sensor
