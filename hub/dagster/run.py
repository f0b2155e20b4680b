"""In-process materialization of a pipeline on a Dagster instance (what ``hub run`` does).

A range of partitions becomes one run per partition, like a Dagster backfill: the first run also
loads the unpartitioned (reference) sources; file drops get one run per file; models and exports run
last, once, so nothing is loaded more often than needed and models see every partition.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from dagster._utils.error import SerializableErrorInfo

from hub.dagster.definitions import FULL_REFRESH_TAG, partitions_def, pipeline_assets, pool_for
from hub.dagster.flows import flow_asset
from hub.dagster.recovery import recover_dead_runs, run_tags, wait_for_pool
from hub.runs import RunOutcome, plan_runs, read_metadata, read_records, run_plan
from hub.runs import one_line as one_text
from hub.runtime import tracing
from hub.spec import Pipeline
from hub.spec.partitions import partition_keys as keys_for

__all__ = ["RunOutcome", "RunSummary", "partition_keys", "recent_runs", "run_pipeline"]

#: The assets an in-process run materializes (its ad-hoc job has no asset selection of its own): for hub runs.
ASSETS_TAG = "hub/assets"
#: In-process runs log nothing to the console: a failure's stack trace is in the Dagster event log (and in
#: :attr:`RunOutcome.trace`); the CLI prints one line per failure and the trace only with ``--verbose``.
#: Dagster's console logger logs STEP_FAILURE at ERROR, so only CRITICAL keeps it quiet.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
#: ``--verbose``: warnings and failures, with their stack traces, as Dagster logs them.
VERBOSE_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def partition_keys(pipeline: Pipeline, *, partition: str | None = None, start: str | None = None,
                   end: str | None = None) -> list[str | None]:
    """The partitions to run: one, a range, or (by default) the last complete one
    (:func:`hub.spec.partitions.partition_keys`, the same answers as Dagster's partitions definition)."""
    return keys_for(pipeline.spec.partitions, str(pipeline.path), pipeline.name, partition=partition, start=start,
                    end=end)


def _root_error(error: SerializableErrorInfo | None) -> SerializableErrorInfo | None:
    """The error a step raised, below Dagster's wrappers (DagsterExecutionStepExecutionError ...)."""
    while error is not None and error.cause is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    return error


def one_line(error: SerializableErrorInfo | None) -> str:
    """A failure as one readable line (:func:`hub.runs.one_line`)."""
    if error is None:
        return "unknown error"
    return one_text(error.message, error.cls_name)


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
    plan = plan_runs(pipeline, assets)
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

    def register(name: str, keys: list[str]) -> None:  # the files become the source's dynamic partitions
        instance.add_dynamic_partitions(f"{name}_files", [k for k in keys
                                                          if not instance.has_dynamic_partition(f"{name}_files", k)])

    run_plan(pipeline, plan, partitions, files, run, on_files=register)
    return outcomes


def _read_metadata(result: dg.ExecuteInProcessResult, outcome: RunOutcome) -> None:
    """The numbers of the run's materializations, for the CLI's summary (:func:`hub.runs.read_metadata`)."""
    for mat in result.get_asset_materialization_events():
        if mat.asset_key is None:
            continue
        md = {k: v.value for k, v in mat.materialization.metadata.items()}
        read_metadata(outcome, mat.asset_key.to_user_string(), md)


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


def recent_runs(instance: dg.DagsterInstance, limit: int = 20, home: Path | None = None) -> list[RunSummary]:
    """The newest *limit* runs of *instance* (launched by the UI, schedules, sensors or ``hub run --dagster``)
    and of the journal of ``hub run`` in *home* (:mod:`hub.runs`), newest first, each failure's reason read
    from its event log or its record."""
    out = [] if home is None else [_journal_summary(r) for r in read_records(home)[:limit]]
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
    epoch = datetime.fromtimestamp(0, UTC)
    return sorted(out, key=lambda r: r.started or epoch, reverse=True)[:limit]


def _journal_summary(record: dict[str, object]) -> RunSummary:
    start, end = record.get("started"), record.get("ended")
    return RunSummary(
        run_id=str(record["run_id"]), job=str(record.get("job") or "hub run"),
        pipeline=str(record["pipeline"]) if record.get("pipeline") else None, status=str(record["status"]),
        started=datetime.fromtimestamp(float(start), UTC) if isinstance(start, int | float) else None,
        duration_s=float(end) - float(start) if isinstance(start, int | float) and isinstance(end, int | float)
        else None,
        assets=[str(a) for a in record.get("assets") or []],  # type: ignore[attr-defined]
        partition=str(record["partition"]) if record.get("partition") else None,
        reason=str(record["reason"]) if record.get("reason") else None)
