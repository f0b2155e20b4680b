"""In-process materialization of a pipeline on a Dagster instance (what ``hub run`` does).

A range of partitions becomes one run per partition, like a Dagster backfill: the first run also
loads the unpartitioned (reference) sources; file drops get one run per file; models and exports run
last, once, so nothing is loaded more often than needed and models see every partition.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg
from dagster._utils.error import SerializableErrorInfo

from hub.dagster.definitions import FULL_REFRESH_TAG, partitions_def, pipeline_assets, pool_for
from hub.dagster.flows import flow_asset
from hub.dagster.recovery import recover_dead_runs, run_tags, wait_for_pool
from hub.errors import HubError, PartitionKeyError
from hub.files import ready_files
from hub.runtime import tracing
from hub.spec import Pipeline
from hub.warehouse.base import QUARANTINE_SUFFIX

#: The assets an in-process run materializes (its ad-hoc job has no asset selection of its own): for hub runs.
ASSETS_TAG = "hub/assets"
#: In-process runs log nothing to the console: a failure's stack trace is in the Dagster event log (and in
#: :attr:`RunOutcome.trace`); the CLI prints one line per failure and the trace only with ``--verbose``.
#: Dagster's console logger logs STEP_FAILURE at ERROR, so only CRITICAL keeps it quiet.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
#: ``--verbose``: warnings and failures, with their stack traces, as Dagster logs them.
VERBOSE_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class RunOutcome:
    partition: str | None
    run_id: str
    success: bool
    assets: list[str]
    error: str | None = None
    row_counts: dict[str, int] = field(default_factory=dict)
    rows_loaded: dict[str, int] = field(default_factory=dict)  # by this run (an incremental read: the changes)
    quarantined: dict[str, int] = field(default_factory=dict)  # rows rejected by mapping or rules, per asset
    quarantine_tables: dict[str, str] = field(default_factory=dict)  # where they are: <table>__quarantine
    file_status: dict[str, str] = field(default_factory=dict)  # file drops: loaded | already loaded | duplicate of
    reasons: list[str] = field(default_factory=list)  # one line per failed step: "<step>: <message>"


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


def _root_error(error: SerializableErrorInfo | None) -> SerializableErrorInfo | None:
    """The error a step raised, below Dagster's wrappers (DagsterExecutionStepExecutionError ...)."""
    while error is not None and error.cause is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    return error


def one_line(error: SerializableErrorInfo | None) -> str:
    """A failure as one readable line: the hub's own errors (:mod:`hub.errors`, written for people) without
    their class path; anything else (a bug) keeps its class name, which is then part of the story."""
    if error is None:
        return "unknown error"
    text = error.message.strip()
    text = re.sub(rf"^hub\.errors\.{re.escape(error.cls_name or '')}: ", "", text)
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _failures(result: dg.ExecuteInProcessResult) -> list[tuple[str, SerializableErrorInfo | None]]:
    failed = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE" and event.step_failure_data is not None:
            failed.append((event.step_key or "run", event.step_failure_data.error))
    return failed


def _failure(result: dg.ExecuteInProcessResult) -> str:
    messages = []
    for step, error in _failures(result):
        err = _root_error(error)
        messages.append(f"{step}: {err.message.strip() if err is not None else 'unknown error'}")
    return "\n".join(messages) or "run failed"


def _reasons(result: dg.ExecuteInProcessResult) -> list[str]:
    """One line per failed step (the stack traces stay in the event log, and on the console when verbose)."""
    return [f"{step}: {one_line(_root_error(error))}" for step, error in _failures(result)] or ["run failed"]


def run_pipeline(pipeline: Pipeline, instance: dg.DagsterInstance, *, assets: Sequence[str] | None = None,
                 partitions: Sequence[str | None] = (None,), files: Sequence[str] | None = None, quiet: bool = True,
                 before_run: Callable[[str | None], None] | None = None, full_refresh: bool = False,
                 say: Callable[[str], None] | None = None) -> list[RunOutcome]:
    """Materialize *assets* (default: all) of *pipeline*, in three steps like a backfill would:

    1. time-partitioned sources, one run per key of *partitions* (reference sources with the first);
    2. file drops, one run per file (*files*, or every file that is ready now);
    3. models, then exports, in one run;
    4. flows named in *assets* (never by default: they act on systems), one run each, per key of *partitions*
       when the flow is partitioned.

    Stops at the first failure. *full_refresh*: incremental sources read everything and replace their table.
    Before each run, runs of this host whose process died are marked failed and their pool slots freed, and a
    pool held by a live run is waited for without spinning (:mod:`hub.dagster.recovery`); *say* hears about
    both.
    """
    tell = say or (lambda _line: None)
    pool = pool_for(pipeline)
    parts = partitions_def(pipeline.spec.partitions)
    all_assets = pipeline_assets(pipeline) + [flow_asset(pipeline, f, pool, parts) for f in pipeline.spec.flows]
    names = list(assets) if assets else pipeline.asset_names()  # flows only when named: they act on systems
    known = [*pipeline.asset_names(), *pipeline.spec.flows]
    unknown = [a for a in names if a not in known]
    if unknown:
        raise HubError(f"{pipeline.path}: no asset named {', '.join(unknown)} (assets: {', '.join(known)})")
    flows = [n for n in names if n in pipeline.spec.flows]
    names = [n for n in names if n not in pipeline.spec.flows]
    # A source and its child tables materialize together (one transaction): select them as a group.
    groups = {t: [name, *s.spec.children] for name, s in pipeline.sources.items() for t in (name, *s.spec.children)}
    names = list(dict.fromkeys(m for n in names for m in groups.get(n, [n])))
    partitioned = {t for n, s in pipeline.sources.items() if s.partitioned for t in groups[n]}
    per_file = [n for n in names if n in pipeline.sources and pipeline.sources[n].per_file]
    last = [n for n in names if n in pipeline.spec.models or n in pipeline.spec.exports]
    first = [n for n in names if n not in per_file and n not in last]
    outcomes: list[RunOutcome] = []

    def run(selection: list[str], key: str | None, label: str | None) -> bool:
        for line in recover_dead_runs(instance):
            tell(line)
        wait_for_pool(instance, pool, tell)
        if before_run:
            before_run(label)
        started_ns = time.time_ns()
        result = dg.materialize(
            all_assets, instance=instance, partition_key=key, selection=selection, raise_on_error=False,
            run_config=QUIET_RUN_CONFIG if quiet else VERBOSE_RUN_CONFIG,
            tags={"hub/pipeline": pipeline.name, "hub/cli": "run", ASSETS_TAG: ",".join(selection), **run_tags(),
                  **({FULL_REFRESH_TAG: "true"} if full_refresh else {})},
        )
        outcome = RunOutcome(partition=label, run_id=result.run_id, success=result.success, assets=selection)
        _read_metadata(result, outcome)
        if not result.success:
            outcome.error = _failure(result)
            outcome.reasons = _reasons(result)
        outcomes.append(outcome)
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
    if last and not run(last, None, None):
        return outcomes
    for name in flows:  # last, each in a run of its own (as its own job would): per partition when partitioned
        for key in partitions if pipeline.flow_partitioned(name) else [None]:
            if not run([name], key, key):
                return outcomes
    return outcomes


def _read_metadata(result: dg.ExecuteInProcessResult, outcome: RunOutcome) -> None:
    """The numbers of the run's materializations (rows, quarantined rows and where, file status), for the
    CLI's summary: the same metadata the Dagster UI shows."""
    ints = (("dagster/row_count", outcome.row_counts), ("hub/rows_loaded", outcome.rows_loaded),
            ("hub/rows_quarantined", outcome.quarantined))
    for mat in result.get_asset_materialization_events():
        if mat.asset_key is None:
            continue
        name = mat.asset_key.to_user_string()
        md = mat.materialization.metadata
        for key, into in ints:
            value = md.get(key)
            if value is not None:
                into[name] = int(value.value)  # type: ignore[arg-type]
        table = md.get("dagster/table_name")
        outcome.quarantine_tables[name] = f"{table.value if table is not None else name}{QUARANTINE_SUFFIX}"
        status = md.get("hub/status")
        if status is not None:
            outcome.file_status[name] = str(status.value)


@dataclass
class RunSummary:
    """One run of the instance, for ``hub runs``."""

    run_id: str
    job: str
    pipeline: str | None
    status: str
    started: datetime | None
    duration_s: float | None
    assets: list[str]
    partition: str | None
    reason: str | None  # why it failed, one line per failed step joined by "; "


def recent_runs(instance: dg.DagsterInstance, limit: int = 20) -> list[RunSummary]:
    """The newest *limit* runs of *instance* (launched by ``hub run``, the UI, schedules or sensors alike),
    newest first, each failure's reason read from its event log."""
    out = []
    for record in instance.get_run_records(limit=limit):
        run = record.dagster_run
        start, end = record.start_time, record.end_time
        reason = None
        if run.status == dg.DagsterRunStatus.FAILURE:
            failures = [(e.step_key or "run", e.dagster_event.step_failure_data.error)
                        for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
                        if e.dagster_event is not None and e.dagster_event.step_failure_data is not None]
            reason = "; ".join(f"{step}: {one_line(_root_error(error))}" for step, error in failures) or None
            if reason is None:  # a run that failed outside any step (it could not start, ...)
                ends = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
                reason = one_line(None) if not ends else (ends[-1].message or "run failed").splitlines()[0]
        out.append(RunSummary(
            run_id=run.run_id, job=run.job_name, pipeline=run.tags.get("hub/pipeline"), status=run.status.value,
            started=datetime.fromtimestamp(start, UTC) if start else None,
            duration_s=(end - start) if start and end else None,
            assets=sorted(k.to_user_string() for k in run.asset_selection or []) or [
                a for a in run.tags.get(ASSETS_TAG, "").split(",") if a],
            partition=run.tags.get("dagster/partition"), reason=reason))
    return out
