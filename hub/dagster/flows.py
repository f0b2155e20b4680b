"""Flows as Dagster assets: each flow is an asset (its table holds one row per item with status and outputs),
with asset checks on its failed, dead-lettered and unknown items, a job of its own (flows act on systems, so
no pipeline run starts one by accident), a schedule when its trigger is a cron and an eager automation
condition when its trigger is ``after: <asset>``. A flow after a time-partitioned table has the pipeline's
partitions: the eager condition requests the partition that was just materialized, and its run reads only
that partition's items. A flow after a table loaded per file (an SFTP drop) has that source's file partitions
the same way: one run per file, reading that file's items."""


from collections.abc import Iterator
from typing import Any

import dagster as dg

from hub.runs import FLOW_CHECKS as CHECKS
from hub.runs import flow_checks, flow_metadata
from hub.runtime.secrets import mask
from hub.runtime.window import KeyPartition, Window
from hub.spec.loader import Pipeline


def _partitions(pipeline: Pipeline, name: str, parts: dg.PartitionsDefinition | None) -> Any:
    """The flow's partitions: the pipeline's time partitions after a table partitioned by time, the source's
    files after a table loaded per file, else none."""
    source = pipeline.flow_files(name)
    if source is not None:
        from hub.dagster.files import file_partitions

        return file_partitions(pipeline.sources[source])
    return parts if pipeline.flow_partitioned(name) else None


def _check_name(flow: str, what: str) -> str:
    return f"{flow}_{what}"


def flow_asset(pipeline: Pipeline, name: str, pool: str | None,
               parts: dg.PartitionsDefinition | None = None) -> dg.AssetsDefinition:
    """The flow's asset; *parts*: the pipeline's time partitions, which a flow triggered after a partitioned
    table shares (each partition's run reads that partition's items only)."""
    flow = pipeline.spec.flows[name]
    parts = _partitions(pipeline, name, parts)
    per_file = pipeline.flow_files(name) is not None
    limits = flow.checks
    specs = [dg.AssetCheckSpec(_check_name(name, what), asset=name, blocking=getattr(limits, what) is not None,
                               description=f"{what} items of the flow's last run (at most "
                                           f"{getattr(limits, what) if getattr(limits, what) is not None else 0}"
                                           f"{'' if getattr(limits, what) is not None else ', a warning'})")
             for what in CHECKS]
    # after an asset, or after the sensor of a stream source absorbed a batch of events into its table
    # a flow an agent planned and nobody approved has no trigger (its run refuses, naming the command)
    automation = dg.AutomationCondition.eager() if (flow.trigger.after or flow.trigger.events) and flow.approved \
        else None

    @dg.asset(name=name, group_name=pipeline.name, kinds={"flow"}, deps=pipeline.flow_deps.get(name, []),
              pool=pool, check_specs=specs, automation_condition=automation, partitions_def=parts,
              description=flow.description or f"flow {name}: {len(flow.steps)} step(s) per item",
              metadata={"hub/spec": str(pipeline.path), "hub/flow_steps": ", ".join(s.name for s in flow.steps)})
    def _asset(context: dg.AssetExecutionContext) -> Iterator[Any]:
        from hub.flows.engine import run_flow

        window: Window | KeyPartition | None = None
        if per_file:
            window = KeyPartition(context.partition_key)
        elif parts is not None:
            tw = context.partition_time_window
            window = Window(key=context.partition_key, start=tw.start, end=tw.end)
        # the flow holds the warehouse's writer lock while it runs (hub.flows.engine.FlowRun.run)
        report = run_flow(pipeline, name, run_id=context.run_id, echo=context.log.info, window=window)
        yield dg.MaterializeResult(metadata=flow_metadata(report))
        for check in flow_checks(pipeline, name, report, None):
            yield dg.AssetCheckResult(
                check_name=check["check"], passed=check["passed"], metadata=check["metadata"],
                severity=dg.AssetCheckSeverity.ERROR if check["blocking"] else dg.AssetCheckSeverity.WARN)
        if report.stopped:
            raise dg.Failure(description=mask(report.stopped))

    return _asset


def flow_definitions(pipeline: Pipeline, pool: str | None,
                     parts: dg.PartitionsDefinition | None = None) -> dg.Definitions:
    """The flow assets of *pipeline*, a job per flow and the schedules of scheduled flows."""
    if not pipeline.spec.flows:
        return dg.Definitions()
    assets = [flow_asset(pipeline, name, pool, parts) for name in pipeline.spec.flows]
    jobs = []
    schedules = []
    for name, flow in pipeline.spec.flows.items():
        job = dg.define_asset_job(f"{pipeline.name}_{name}_flow", selection=dg.AssetSelection.assets(name),
                                  description=flow.description or f"flow {name}",
                                  partitions_def=_partitions(pipeline, name, parts))
        jobs.append(job)
        if flow.trigger.schedule and flow.approved:
            schedules.append(dg.ScheduleDefinition(name=f"{pipeline.name}_{name}_schedule", job=job,
                                                   cron_schedule=flow.trigger.schedule))
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules)
