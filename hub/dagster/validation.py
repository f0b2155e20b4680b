"""Expectation suites as Dagster asset checks.

Each expectation of an asset's suite (``checks:`` in the spec) is one :class:`dagster.AssetCheckSpec` on that
asset, named ``<expectation_type>__<column>``; severity ``error`` makes it blocking (a failure stops the
assets downstream in the same run), ``warn`` only reports. The asset runs the suite right after its load,
on exactly the rows it loaded, and returns one :class:`dagster.AssetCheckResult` per expectation with the
observed value, unexpected count and percent, and up to ten failing rows.
"""

# No `from __future__ import annotations`: kept like the other Dagster glue modules.

import json
from collections.abc import Iterable
from typing import Any

import dagster as dg

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
    exp = o.expectation
    md: dict[str, Any] = {
        "partition": run.partition if run.partition is not None else "(whole table)",
        "rows_validated": run.rows,
        "severity": exp.severity,
        "expectation": dg.MetadataValue.json({"type": exp.type, "kwargs": json.loads(json.dumps(exp.kwargs,
                                                                                               default=str))}),
    }
    if o.observed is not None:
        md["observed_value"] = o.observed if isinstance(o.observed, int | float | str) and \
            not isinstance(o.observed, bool) else dg.MetadataValue.json({"value": o.observed})
    if o.element_count is not None:
        md["element_count"] = int(o.element_count)
    if o.unexpected_count is not None:
        md["unexpected_count"] = int(o.unexpected_count)
    if o.unexpected_percent is not None:
        md["unexpected_percent"] = dg.FloatMetadataValue(round(float(o.unexpected_percent), 4))
    if o.unexpected_values:
        md["unexpected_values"] = dg.MetadataValue.json(o.unexpected_values)
    if o.sample_rows:
        md["failing_rows"] = dg.MetadataValue.md(_markdown(o.sample_rows))
        md["failing_rows_json"] = dg.MetadataValue.json(o.sample_rows)
    if o.error:
        md["error"] = o.error
    if run.docs is not None:
        md["data_docs"] = dg.MetadataValue.path(str(run.docs))
    if o.error:
        text = f"could not be evaluated: {o.error}"
    elif o.unexpected_count is not None:
        text = f"{o.unexpected_count:,} of {o.element_count or 0:,} rows unexpected" + \
            (f" ({o.unexpected_percent:.2f}%)" if o.unexpected_percent is not None else "")
    else:
        text = f"observed {o.observed!r}"
    return dg.AssetCheckResult(
        asset_key=asset, check_name=exp.name, passed=o.passed, metadata=md, description=text,
        severity=dg.AssetCheckSeverity.ERROR if exp.blocking else dg.AssetCheckSeverity.WARN)


def _markdown(rows: list[dict[str, Any]]) -> str:
    """Failing rows as a markdown table (values cut at 60 characters)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v: Any) -> str:
        text = "" if v is None else v if isinstance(v, str) else json.dumps(v, default=str)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= 60 else text[:57] + "..."

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
