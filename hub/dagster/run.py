"""In-process materialization of a pipeline on a Dagster instance (what ``hub run`` does).

A range of partitions becomes one run per partition, like a Dagster backfill: the first run also
loads the unpartitioned (reference) sources; file drops get one run per file; models and exports run
last, once, so nothing is loaded more often than needed and models see every partition.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg

from hub.dagster.definitions import FULL_REFRESH_TAG, partitions_def, pipeline_assets
from hub.errors import HubError, PartitionKeyError
from hub.files import ready_files
from hub.runtime import tracing
from hub.spec import Pipeline

QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class RunOutcome:
    partition: str | None
    run_id: str
    success: bool
    assets: list[str]
    error: str | None = None
    row_counts: dict[str, int] = field(default_factory=dict)
    rows_loaded: dict[str, int] = field(default_factory=dict)  # by this run (an incremental read: the changes)


def partition_keys(pipeline: Pipeline, *, partition: str | None = None, start: str | None = None,
                   end: str | None = None) -> list[str | None]:
    """The partitions to run: one, a range, or (by default) the last complete one."""
    parts = partitions_def(pipeline.spec.partitions)
    if parts is None:
        if partition or start or end:
            raise HubError(f"{pipeline.path}: pipeline '{pipeline.name}' has no partitions; "
                           "drop --partition/--from/--to")
        return [None]
    if partition:
        _check_key(parts, partition, pipeline)
        return [partition]
    if start or end:
        if not (start and end):
            raise HubError("--from and --to go together")
        _check_key(parts, start, pipeline)
        _check_key(parts, end, pipeline)
        keys = parts.get_partition_keys_in_range(dg.PartitionKeyRange(start, end))
        if not keys:
            raise HubError(f"--from {start} --to {end}: empty range (is --from after --to?)")
        return list(keys)
    last = parts.get_last_partition_key()
    if last is None:
        raise HubError(f"{pipeline.path}: no complete partition yet (partitions start "
                       f"{pipeline.spec.partitions.window.start if pipeline.spec.partitions else '?'})")
    return [last]


def _check_key(parts: dg.TimeWindowPartitionsDefinition, key: str, pipeline: Pipeline) -> None:
    if not parts.has_partition_key(key):
        first = parts.get_first_partition_key()
        raise PartitionKeyError(f"partition '{key}' is not a partition of pipeline '{pipeline.name}' "
                       f"(format {parts.fmt}, first {first}, last {parts.get_last_partition_key()})")


def _failure(result: dg.ExecuteInProcessResult) -> str:
    messages = []
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE" or event.step_failure_data is None:
            continue
        err = event.step_failure_data.error
        while err is not None and err.cause is not None and (err.cls_name or "").startswith("Dagster"):
            err = err.cause
        text = err.message.strip() if err is not None else "unknown error"
        messages.append(f"{event.step_key}: {text}")
    return "\n".join(messages) or "run failed"


def run_pipeline(pipeline: Pipeline, instance: dg.DagsterInstance, *, assets: Sequence[str] | None = None,
                 partitions: Sequence[str | None] = (None,), files: Sequence[str] | None = None, quiet: bool = True,
                 before_run: Callable[[str | None], None] | None = None, full_refresh: bool = False
                 ) -> list[RunOutcome]:
    """Materialize *assets* (default: all) of *pipeline*, in three steps like a backfill would:

    1. time-partitioned sources, one run per key of *partitions* (reference sources with the first);
    2. file drops, one run per file (*files*, or every file that is ready now);
    3. models, then exports, in one run.

    Stops at the first failure. *full_refresh*: incremental sources read everything and replace their table.
    """
    all_assets = pipeline_assets(pipeline)
    names = list(assets) if assets else pipeline.asset_names()
    unknown = [a for a in names if a not in pipeline.asset_names()]
    if unknown:
        raise HubError(f"{pipeline.path}: no asset named {', '.join(unknown)} "
                       f"(assets: {', '.join(pipeline.asset_names())})")
    # A source and its child tables materialize together (one transaction): select them as a group.
    groups = {t: [name, *s.spec.children] for name, s in pipeline.sources.items() for t in (name, *s.spec.children)}
    names = list(dict.fromkeys(m for n in names for m in groups.get(n, [n])))
    partitioned = {t for n, s in pipeline.sources.items() if s.partitioned for t in groups[n]}
    per_file = [n for n in names if n in pipeline.sources and pipeline.sources[n].per_file]
    last = [n for n in names if n in pipeline.spec.models or n in pipeline.spec.exports]
    first = [n for n in names if n not in per_file and n not in last]
    outcomes: list[RunOutcome] = []

    def run(selection: list[str], key: str | None, label: str | None) -> bool:
        if before_run:
            before_run(label)
        started_ns = time.time_ns()
        result = dg.materialize(
            all_assets, instance=instance, partition_key=key, selection=selection, raise_on_error=False,
            run_config=QUIET_RUN_CONFIG if quiet else None,
            tags={"hub/pipeline": pipeline.name, "hub/cli": "run",
                  **({FULL_REFRESH_TAG: "true"} if full_refresh else {})},
        )
        counts: dict[str, int] = {}
        loaded: dict[str, int] = {}
        for mat in result.get_asset_materialization_events():
            if mat.asset_key is None:
                continue
            for key_, into in (("dagster/row_count", counts), ("hub/rows_loaded", loaded)):
                value = mat.materialization.metadata.get(key_)
                if value is not None:
                    into[mat.asset_key.to_user_string()] = int(value.value)  # type: ignore[arg-type]
        outcomes.append(RunOutcome(partition=label, run_id=result.run_id, success=result.success, assets=selection,
                                   error=None if result.success else _failure(result), row_counts=counts,
                                   rows_loaded=loaded))
        # this process saw the whole run: emit its span, with the ids its asset spans point to
        tracing.emit_run_span(result.run_id, start_ns=started_ns, end_ns=time.time_ns(), success=result.success,
                              error=outcomes[-1].error, attributes={
                                  "hub.pipeline": pipeline.name, "hub.partition": label,
                                  "hub.assets": list(selection), "hub.launched_by": "hub run"})
        return result.success

    for i, key in enumerate(partitions if first else []):
        selection = [n for n in first if n in partitioned or i == 0]
        by_time = any(n in partitioned for n in selection)
        if selection and not run(selection, key if by_time else None, key if by_time else None):
            return outcomes
    for name in per_file:
        keys = list(files) if files is not None else [f.name for f in ready_files(pipeline, name)]
        instance.add_dynamic_partitions(f"{name}_files", [k for k in keys
                                                          if not instance.has_dynamic_partition(f"{name}_files", k)])
        for key in keys:
            if not run([name], key, f"file {key}"):
                return outcomes
    if last:
        run(last, None, None)
    return outcomes
