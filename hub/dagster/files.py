"""Dagster glue for file drops: one dynamic partition per file, a job and a sensor per source, and
assets for outbound exports."""

# No `from __future__ import annotations`: Dagster inspects the `context` annotation at definition time.

import json
from typing import Any

import dagster as dg

from hub.dagster.journal import metadata
from hub.dagster.progress import report
from hub.dagster.validation import check_results, check_specs
from hub.exports import run_export
from hub.files import build_sftp, ingest_file
from hub.runs import file_metadata
from hub.runtime import tracing
from hub.spec import Pipeline
from hub.spec.models import ResolvedSource
from hub.warehouse.calls import calls_sink
from hub.warehouse.lock import writer_lock


def file_partitions(source: ResolvedSource) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{source.name}_files")


def file_asset(pipeline: Pipeline, source: ResolvedSource, pool: str | None) -> dg.AssetsDefinition:
    files = source.config.files
    description = source.spec.description or (
        f"Files {files.glob} in {files.path} of {source.kind.upper()} system {source.system_name}, one partition "
        "per file")

    @dg.asset(name=source.name, group_name=pipeline.name, kinds={source.kind, pipeline.warehouse_kind},
              description=description,
              partitions_def=file_partitions(source), pool=pool,
              metadata={"hub/system": source.system_name, "hub/load_mode": "replace_partition (per file)",
                        "hub/folder": files.path, "hub/glob": files.glob, "hub/spec": str(pipeline.path)},
              tags={"hub/system": source.system_name}, check_specs=check_specs(pipeline, [source.name]) or None)
    def _asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        with writer_lock(pipeline.warehouse_url, what=f"Dagster run {context.run_id[:8]} ({source.name})",
                         say=context.log.info):
            outcome = ingest_file(pipeline, source.name, context.partition_key, run_id=context.run_id,
                                  progress=report)
            # the suite checks this file's rows (its partition), also when the file had been loaded before
            checks = check_results(context, pipeline, source.name, context.partition_key)
        context.log.info(f"{source.name} {outcome.file}: {outcome.status}, {outcome.after}"
                         + (f", {outcome.load.rows_loaded} rows, {outcome.rejected} rejected" if outcome.load else ""))
        for warning in str(outcome.details.get("encoding_warnings") or "").splitlines():
            context.log.warning(f"{source.name}: {warning}")
        if outcome.details.get("remote_name"):
            context.log.warning(f"{source.name}: the file's name is {outcome.details['remote_name']}")
        return dg.MaterializeResult(metadata=metadata(file_metadata(outcome)), check_results=checks)

    return _asset


def file_job(pipeline: Pipeline, source: ResolvedSource) -> Any:
    return dg.define_asset_job(f"{source.name}_job", selection=[source.name],
                               partitions_def=file_partitions(source),
                               description=f"Load one file of {source.name} (a partition per file)")


def file_sensor(pipeline: Pipeline, source: ResolvedSource, job: Any) -> dg.SensorDefinition:
    """New stable files -> one run each. The cursor keeps the newest mtime requested and what each file
    looked like when first seen: a file is requested once it has looked the same for ``stable_for``."""
    sensor = source.config.sensor
    assert sensor is not None
    parts = file_partitions(source)
    cfg = source.config.files

    @dg.sensor(name=f"{source.name}_sensor", job=job, minimum_interval_seconds=int(sensor.every),
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Watches {cfg.path} ({cfg.glob}) on {source.system_name} for new stable files")
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        state = json.loads(context.cursor) if context.cursor else {}
        seen = {path: (v[0], v[1], v[2]) for path, v in state.get("seen", {}).items()}
        adapter = build_sftp(pipeline, source)
        with adapter.session() as session:
            files, taken, now = adapter.observe(session, seen)
        # remember each file as it looks now; a changed file starts its stability clock again
        observed = {f.path: seen[f.path] if f.path in seen and seen[f.path][:2] == (f.size, f.mtime)
                    else (f.size, f.mtime, now) for f in files}
        newest = max([int(state.get("newest_mtime", 0)), *(f.mtime for f in taken)])
        # f.name and f.path are printable (a name that is not UTF-8 is escaped): valid partition keys and tags
        requests = [dg.RunRequest(run_key=f.key, partition_key=f.name, tags={"hub/file": f.path}) for f in taken]
        waiting = len(files) - len(taken)
        context.log.info(f"{len(taken)} file(s) ready, {waiting} not (yet) stable or already requested")
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[parts.build_add_request([f.name for f in taken])] if taken else [],
            cursor=json.dumps({"newest_mtime": newest, "seen": observed}))

    return _sensor


def export_asset(pipeline: Pipeline, name: str, pool: str | None) -> dg.AssetsDefinition:
    export = pipeline.spec.exports[name]
    fmt = "CSV" if export.format.csv is not None else "fixed-width"
    kind = pipeline.spec.systems[export.system].kind

    @dg.asset(name=name, group_name=pipeline.name, kinds={kind, "csv" if fmt == "CSV" else "file"},
              deps=pipeline.export_deps.get(name, []), pool=pool,
              description=export.description or f"{fmt} export of {export.table or 'a query'} to {export.path}",
              metadata={"hub/system": export.system, "hub/path": export.path, "hub/spec": str(pipeline.path)})
    def _asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        with writer_lock(pipeline.warehouse_url, what=f"Dagster run {context.run_id[:8]} ({name})",
                         say=context.log.info), \
                tracing.asset_scope(name, run_id=context.run_id, pipeline=pipeline.name,
                                    sink=calls_sink(pipeline.warehouse_url), kind="export") as scope:
            outcome = run_export(pipeline, name)
            scope.rows = outcome.rows
        context.log.info(f"{name}: {outcome.rows} rows, {outcome.bytes} bytes uploaded to {outcome.remote_path}")
        return dg.MaterializeResult(metadata={
            "dagster/row_count": outcome.rows, "hub/remote_path": outcome.remote_path, "hub/bytes": outcome.bytes,
            "hub/duration_s": dg.FloatMetadataValue(round(outcome.duration_s, 3))})

    return _asset
