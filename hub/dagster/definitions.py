"""Build Dagster ``Definitions`` from pipeline specs.

One asset per source and per model, grouped by pipeline; partitioned sources share the pipeline's
time-window partitions; every asset that writes to a DuckDB warehouse is in the ``hub_duckdb`` pool
(limit 1, set by ``hub ui`` / ``hub run`` on the instance) because DuckDB allows one writer per file.
"""

# No `from __future__ import annotations`: Dagster inspects the `context` annotation at definition time.

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import partition_loading_context

from hub.dagster.contract_checks import contract_definitions
from hub.dagster.executor import executor_from_env
from hub.dagster.files import export_asset, file_asset, file_job, file_sensor
from hub.dagster.flows import flow_definitions
from hub.dagster.journal import metadata
from hub.dagster.progress import report
from hub.dagster.streams import stream_asset, stream_job, stream_sensor
from hub.dagster.tracing import run_trace_sensors
from hub.dagster.validation import check_results, check_specs
from hub.materialize import Outcome, child_mode, load_mode, materialize_model, materialize_source
from hub.runs import load_metadata
from hub.runtime.window import Window
from hub.spec import Pipeline, discover, load
from hub.spec.models import PartitionsConfig, ResolvedSource
from hub.warehouse.lock import writer_lock

DUCKDB_POOL = "hub_duckdb"


def partitions_def(cfg: PartitionsConfig | None) -> dg.TimeWindowPartitionsDefinition | None:
    if cfg is None:
        return None
    w = cfg.window
    start = w.start.isoformat()
    if cfg.kind == "daily":
        return dg.DailyPartitionsDefinition(start_date=start, timezone=w.timezone, end_offset=w.end_offset)
    return dg.MonthlyPartitionsDefinition(start_date=start, timezone=w.timezone, end_offset=w.end_offset)


def window_from_context(context: dg.AssetExecutionContext) -> Window:
    tw = context.partition_time_window
    return Window(key=context.partition_key, start=tw.start, end=tw.end)


def locked(pipeline: Pipeline, context: dg.AssetExecutionContext, asset: str) -> Any:
    """The warehouse's writer lock (:mod:`hub.warehouse.lock`) for one step: the pool keeps Dagster's steps
    apart, the lock keeps them apart from ``hub run``'s loads, which run without Dagster."""
    return writer_lock(pipeline.warehouse_url, what=f"Dagster run {context.run_id[:8]} ({asset})",
                       say=context.log.info)


#: Run tag that makes incremental sources read everything again and replace their table.
FULL_REFRESH_TAG = "hub/full_refresh"


def pool_for(pipeline: Pipeline, system: str | None = None) -> str | None:
    """An op has one pool. Writing to a DuckDB file, that is ``hub_duckdb`` (one writer per file wins over
    everything else); on other warehouses a source asset is in its system's pool ``hub_system_<name>``,
    unlimited until an operator sets a limit (``dagster instance concurrency set hub_system_crm 2``).
    Request rates per system are the rate limiter's job, across runs and processes alike."""
    if pipeline.warehouse_url.startswith("duckdb"):
        return DUCKDB_POOL
    return f"hub_system_{system}" if system else None


def _metadata(outcome: Outcome, partitioned: bool) -> dict[str, Any]:
    """The metadata of a load (:func:`hub.runs.load_metadata`, shared with the fast path)."""
    return metadata(load_metadata(outcome.load, partitioned=partitioned, duration_s=outcome.duration_s,
                                  source_url=outcome.source_url, details=outcome.details))


def _source_asset(pipeline: Pipeline, source: ResolvedSource,
                  parts: dg.PartitionsDefinition | None) -> dg.AssetsDefinition:
    """One asset per source; a source with child tables is a multi-asset (they load in one transaction)."""
    spec = source.spec
    description = spec.description or f"{source.kind.upper()} source {source.name} from system {source.system_name}"
    static_md: dict[str, Any] = {
        "hub/system": source.system_name,
        "hub/load_mode": load_mode(source),
        "hub/spec": str(pipeline.path),
    }
    endpoint = source.protocol.endpoint(source)
    if endpoint:
        static_md["hub/endpoint"] = endpoint
    if spec.primary_key:
        static_md["hub/primary_key"] = ", ".join(spec.primary_key)
    cursor = source.protocol.incremental_cursor(source.config)
    if cursor is not None:
        static_md["hub/incremental_cursor"] = cursor
        description += f" (incremental; run with tag {FULL_REFRESH_TAG}=true to read everything again)"
    kinds = {source.kind, pipeline.warehouse_kind}
    tags = {"hub/system": source.system_name}

    def run(context: dg.AssetExecutionContext) -> Outcome:
        window = window_from_context(context) if parts is not None else None
        full = str(context.run.tags.get(FULL_REFRESH_TAG, "")).lower() in ("1", "true", "yes")
        outcome = materialize_source(pipeline, source.name, window=window, run_id=context.run_id,
                                     progress=report, full_refresh=full)
        context.log.info(
            f"{source.name}: {outcome.load.rows_loaded} rows loaded"
            + (f" into partition {window.key}" if window else "")
            + f", {outcome.load.rows_quarantined} quarantined, {outcome.duration_s:.2f}s"
            + "".join(f"; {c}: {r.rows_loaded} rows" for c, r in outcome.children.items())
        )
        return outcome

    def partition(context: dg.AssetExecutionContext) -> str | None:  # the rows the suite checks
        return context.partition_key if parts is not None else None

    if not spec.children:
        @dg.asset(name=source.name, group_name=pipeline.name, kinds=kinds, description=description,
                  partitions_def=parts, pool=pool_for(pipeline, source.system_name), metadata=static_md, tags=tags,
                  check_specs=check_specs(pipeline, [source.name]) or None)
        def _asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            with locked(pipeline, context, source.name):  # the load and the suite reading it back
                md = _metadata(run(context), parts is not None)
                return dg.MaterializeResult(metadata=md, check_results=check_results(
                    context, pipeline, source.name, partition(context)))

        return _asset

    specs = [dg.AssetSpec(source.name, group_name=pipeline.name, kinds=kinds, description=description,
                          metadata=static_md, tags=tags)]
    for child, cspec in spec.children.items():
        specs.append(dg.AssetSpec(
            child, group_name=pipeline.name, kinds=kinds, tags=tags,
            description=cspec.description or f"{cspec.path} of each {source.name} record, with its "
                                              f"{', '.join(spec.primary_key)}",
            metadata={**static_md, "hub/load_mode": child_mode(source), "hub/parent": source.name,
                      "hub/path": cspec.path}))

    @dg.multi_asset(name=source.name, specs=specs, partitions_def=parts, pool=pool_for(pipeline, source.system_name),
                    can_subset=False,
                    check_specs=check_specs(pipeline, [source.name, *spec.children]) or None)
    def _multi(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        with locked(pipeline, context, source.name):
            outcome = run(context)
            results: list[dg.MaterializeResult] = [dg.MaterializeResult(
                asset_key=source.name, metadata=_metadata(outcome, parts is not None),
                check_results=check_results(context, pipeline, source.name, partition(context)))]
            for child, result in outcome.children.items():
                child_outcome = Outcome(asset=child, load=result, duration_s=outcome.duration_s,
                                        source_url=outcome.source_url)
                results.append(dg.MaterializeResult(
                    asset_key=child, metadata=_metadata(child_outcome, parts is not None),
                    check_results=check_results(context, pipeline, child, partition(context))))
        yield from results

    return _multi


def _model_asset(pipeline: Pipeline, name: str) -> dg.AssetsDefinition:
    model = pipeline.spec.models[name]

    @dg.asset(
        name=name, group_name=pipeline.name, kinds={"sql", pipeline.warehouse_kind},
        description=model.description or f"SQL model {name}", deps=pipeline.model_deps.get(name, []),
        pool=pool_for(pipeline), metadata={"hub/sql": dg.MetadataValue.md(f"```sql\n{model.sql}\n```"),
                                           "hub/spec": str(pipeline.path)},
        check_specs=check_specs(pipeline, [name]) or None,
    )
    def _asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        with locked(pipeline, context, name):
            outcome = materialize_model(pipeline, name, run_id=context.run_id)
            context.log.info(f"{name}: rebuilt with {outcome.load.table_rows} rows in {outcome.duration_s:.2f}s")
            return dg.MaterializeResult(metadata=_metadata(outcome, False),
                                        check_results=check_results(context, pipeline, name, None))

    return _asset


def pipeline_assets(pipeline: Pipeline) -> list[dg.AssetsDefinition]:
    parts = partitions_def(pipeline.spec.partitions)
    pool = pool_for(pipeline)
    assets = [file_asset(pipeline, s, pool) if s.per_file
              else stream_asset(pipeline, s, pool) if s.stream is not None
              else _source_asset(pipeline, s, parts if s.partitioned else None) for s in pipeline.sources.values()]
    assets += [_model_asset(pipeline, name) for name in pipeline.spec.models]
    assets += [export_asset(pipeline, name, pool) for name in pipeline.spec.exports]
    return assets


def _schedule(pipeline: Pipeline, job: Any,
              parts: dg.TimeWindowPartitionsDefinition | None) -> dg.ScheduleDefinition:
    cron = pipeline.spec.schedule
    assert cron is not None
    tz = pipeline.spec.partitions.window.timezone if pipeline.spec.partitions else "UTC"
    if parts is None:
        return dg.ScheduleDefinition(name=f"{pipeline.name}_schedule", job=job, cron_schedule=cron,
                                     execution_timezone=tz)

    def _latest_partition(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        now: datetime = context.scheduled_execution_time
        with partition_loading_context(effective_dt=now):  # "last complete" as of the tick, not wall clock
            key = parts.get_last_partition_key()
        if key is None:
            return dg.SkipReason(f"no complete partition before {now.isoformat()}")
        return dg.RunRequest(run_key=key, partition_key=key)

    return dg.ScheduleDefinition(name=f"{pipeline.name}_schedule", job=job, cron_schedule=cron,
                                 execution_timezone=tz, execution_fn=_latest_partition)


def pipeline_definitions(pipeline: Pipeline) -> dg.Definitions:
    """Assets, the pipeline's job and schedule (time partitions), and a job and sensor per file drop and per
    stream source."""
    parts = partitions_def(pipeline.spec.partitions)
    file_sources = [s for s in pipeline.sources.values() if s.per_file]
    own_jobs = [s.name for s in pipeline.sources.values() if s.per_file or s.stream is not None]
    own_jobs += list(pipeline.spec.flows)  # flows act on systems: their own jobs (hub/dagster/flows.py)
    selection = dg.AssetSelection.groups(pipeline.name) - dg.AssetSelection.assets(*own_jobs)
    job = dg.define_asset_job(f"{pipeline.name}_job", selection=selection,
                              partitions_def=parts, description=pipeline.spec.description or None)
    jobs: list[Any] = [job]
    sensors = []
    for source in file_sources:
        fjob = file_job(pipeline, source)
        jobs.append(fjob)
        if getattr(source.config, "sensor", None) is not None:  # file-drop sources may poll
            sensors.append(file_sensor(pipeline, source, fjob))
    for source in (s for s in pipeline.sources.values() if s.stream is not None):  # a sensor per stream source
        sjob = stream_job(pipeline, source)
        jobs.append(sjob)
        sensors.append(stream_sensor(pipeline, source, sjob))
    schedules = [_schedule(pipeline, job, parts)] if pipeline.spec.schedule else []
    defs = dg.Definitions(assets=pipeline_assets(pipeline), jobs=jobs, schedules=schedules, sensors=sensors)
    defs = dg.Definitions.merge(defs, flow_definitions(pipeline, pool_for(pipeline), parts))
    return dg.Definitions.merge(defs, contract_definitions(pipeline))  # contract tests as asset checks


def build_definitions(folder: str | Path, *, loader: Callable[[Path], Pipeline] = load) -> dg.Definitions:
    """Definitions for every spec in *folder*; an invalid spec fails loading with its full error list. The
    executor of every job is the deployment's choice: ``$HUB_EXECUTOR`` (hub/dagster/executor.py)."""
    pipelines = [loader(p) for p in discover(folder)]
    _check_unique_assets(pipelines)
    defs = dg.Definitions.merge(*[pipeline_definitions(p) for p in pipelines]) if pipelines else dg.Definitions()
    trace_sensors = run_trace_sensors()  # tracing on: the daemon emits the run spans of UI/scheduled runs
    if trace_sensors:
        defs = dg.Definitions.merge(defs, dg.Definitions(sensors=trace_sensors))
    executor = executor_from_env()
    return dg.Definitions.merge(defs, dg.Definitions(executor=executor)) if executor is not None else defs


def _check_unique_assets(pipelines: list[Pipeline]) -> None:
    from hub.spec.project import collisions, describe

    by_path = {p.path: p for p in pipelines}
    for path, problems in collisions(pipelines).items():
        raise describe(by_path[path], problems)
