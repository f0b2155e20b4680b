"""The run span of runs launched by the Dagster UI, a schedule or a sensor.

Their steps may each run in a process of their own, so none of them sees the whole run; the daemon does.
Two run status sensors (success, failure) emit each finished run's span with the ids its asset spans
already point to (:func:`hub.runtime.tracing.run_ids`) and the run's real start and end times. They exist
only when tracing is on in the code location's environment, and skip runs of ``hub run``, which emits its
runs' spans itself.
"""

# No `from __future__ import annotations`: Dagster inspects the `context` annotation at definition time.

import dagster as dg

from hub.runtime import tracing

#: Tag of the runs ``hub run`` launches (hub.dagster.run): their span is already emitted.
CLI_TAG = "hub/cli"


def _emit(context: dg.RunStatusSensorContext, success: bool) -> None:
    run = context.dagster_run
    if run.tags.get(CLI_TAG):
        return
    stats = context.instance.get_run_stats(run.run_id)
    start = stats.start_time or stats.launch_time or stats.enqueued_time
    end = stats.end_time
    if start is None or end is None:
        return
    error = None
    if not success:
        data = getattr(context.dagster_event, "event_specific_data", None)
        err = getattr(data, "error", None)
        error = getattr(err, "message", None) or context.dagster_event.message or "run failed"
    tracing.emit_run_span(run.run_id, start_ns=int(start * 1e9), end_ns=int(end * 1e9), success=success, error=error,
                          attributes={"hub.pipeline": run.tags.get("hub/pipeline"), "hub.job": run.job_name,
                                      "hub.partition": run.tags.get("dagster/partition"),
                                      "hub.launched_by": "dagster"})


def run_trace_sensors() -> list[dg.SensorDefinition]:
    """The sensors that emit run spans, when tracing is on (else none: nothing to emit)."""
    if not tracing.enabled():
        return []

    @dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="hub_run_traces",
                          default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=15,
                          description="Emits the OpenTelemetry span of every successful run (docs/observability.md)")
    def _succeeded(context: dg.RunStatusSensorContext) -> None:
        _emit(context, True)

    @dg.run_status_sensor(run_status=dg.DagsterRunStatus.FAILURE, name="hub_run_traces_failed",
                          default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=15,
                          description="Emits the OpenTelemetry span of every failed run (docs/observability.md)")
    def _failed(context: dg.RunStatusSensorContext) -> None:
        _emit(context, False)

    return [_succeeded, _failed]
