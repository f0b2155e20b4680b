"""Expectation suites as Dagster asset checks.

Each expectation of an asset's suite (``checks:`` in the spec) is one :class:`dagster.AssetCheckSpec` on that
asset, named ``<expectation_type>__<column>``; severity ``error`` makes it blocking (a failure stops the
assets downstream in the same run), ``warn`` only reports. The asset runs the suite right after its load,
on exactly the rows it loaded, and returns one :class:`dagster.AssetCheckResult` per expectation with the
observed value, unexpected count and percent, and up to ten failing rows.
"""

# No `from __future__ import annotations`: kept like the other Dagster glue modules.

from collections.abc import Iterable

import dagster as dg

from hub.dagster.journal import metadata
from hub.runs import check_records
from hub.spec import Pipeline
from hub.validation.runner import CheckOutcome, SuiteRun, validate


def check_specs(pipeline: Pipeline, assets: Iterable[str]) -> list[dg.AssetCheckSpec]:
    """The asset checks of *assets* (each expectation of each one's suite)."""
    out = []
    for asset in assets:
        suite = pipeline.suites.get(asset)
        if suite is None:
            continue
        file = pipeline.spec.checks[asset]
        for exp in suite.expectations:
            args = ", ".join(f"{k}={v!r}" for k, v in exp.kwargs.items())
            out.append(dg.AssetCheckSpec(
                exp.name, asset=asset, blocking=exp.blocking,
                description=(exp.description + " " if exp.description else "") + f"{exp.type}({args}), "
                            f"severity {exp.severity}, from {file}",
                metadata={"hub/suite": file, "hub/expectation_type": exp.type, "hub/severity": exp.severity}))
    return out


def check_results(context: dg.AssetExecutionContext, pipeline: Pipeline, asset: str,
                  partition: str | None) -> list[dg.AssetCheckResult]:
    """Run *asset*'s suite on *partition* (None: the whole table) and report it; [] without a suite."""
    run = validate(pipeline, asset, partition, run_id=context.run_id)
    if run is None:
        return []
    failed = [o.expectation.name for o in run.outcomes if not o.passed]
    context.log.info(
        f"{asset}: {len(run.outcomes) - len(failed)} of {len(run.outcomes)} expectations passed on "
        + (f"partition {partition}" if partition is not None else "the whole table")
        + f" ({run.rows:,} rows) in {run.duration_s:.2f}s" + (f"; failed: {', '.join(failed)}" if failed else "")
        + (f"; Data Docs: {run.docs}" if run.docs else ""))
    return [_result(asset, run, o) for o in run.outcomes]


def _result(asset: str, run: SuiteRun, o: CheckOutcome) -> dg.AssetCheckResult:
    """One expectation's result (:func:`hub.runs.check_records`, shared with the fast path)."""
    [record] = check_records(SuiteRun(asset=run.asset, partition=run.partition, rows=run.rows, outcomes=[o],
                                      duration_s=run.duration_s, docs=run.docs))
    return dg.AssetCheckResult(
        asset_key=asset, check_name=record["check"], passed=record["passed"], metadata=metadata(record["metadata"]),
        description=record["description"],
        severity=dg.AssetCheckSeverity.ERROR if record["blocking"] else dg.AssetCheckSeverity.WARN)
