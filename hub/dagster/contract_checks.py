"""Contract tests as Dagster asset checks: drift of a system shows on its source assets in the UI.

For every system of a pipeline that has a snapshot (``contracts/<pipeline>/<system>.contract.json``), one
multi-asset check compares the live system with it and reports on each source asset reading that system
(check ``contract``): passed when nothing changed, severity WARN for non-breaking drift (or breaking
changes that concern another source), ERROR for changes that break this source or a system that cannot be
read. The checks never block: they run with the assets they target, on their own from the UI, or in the
``<pipeline>_contracts`` job (with an hourly schedule, off until turned on), so drift is visible before
the next run breaks on it.
"""

# No `from __future__ import annotations`: Dagster inspects the `context` annotation at definition time.

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from hub.contracts import Change, ContractResult, contract_file, systems_of, verify_system
from hub.contracts.usage import system_sources
from hub.runtime.secrets import mask
from hub.spec import Pipeline

CHECK_NAME = "contract"


def _table(changes: list[Change]) -> str:
    rows = ["| severity | path | change | before | after | used by |", "| --- | --- | --- | --- | --- | --- |"]
    for c in sorted(changes, key=lambda c: not c.breaking):
        cells = [c.severity, f"`{c.path}`", c.what, c.before, c.after, "; ".join(c.used_by) or "not used"]
        rows.append("| " + " | ".join(mask(x).replace("|", "\\|").replace("\n", " ") for x in cells) + " |")
    return "\n".join(rows)


def check_result(source: str, result: ContractResult) -> dg.AssetCheckResult:
    """The check result of one source asset, from its system's contract test."""
    metadata: dict[str, Any] = {"hub/system": result.system, "hub/snapshot": str(result.file),
                                   "hub/duration_s": dg.FloatMetadataValue(round(result.duration_s, 3))}
    if result.error is not None or result.skipped is not None:
        text = mask(result.error or result.skipped or "")
        metadata["hub/error"] = text
        return dg.AssetCheckResult(asset_key=source, check_name=CHECK_NAME, passed=False,
                                   severity=dg.AssetCheckSeverity.ERROR if result.error else dg.AssetCheckSeverity.WARN,
                                   description=f"{result.system}: {text}", metadata=metadata)
    mine = [c for c in result.breaking if source in c.sources]
    metadata.update({"hub/breaking_changes": len(mine), "hub/changes": len(result.changes),
                     "hub/system_breaking_changes": len(result.breaking)})
    if result.changes:
        metadata["hub/report"] = dg.MetadataValue.md(_table(result.changes))
    if mine:
        return dg.AssetCheckResult(
            asset_key=source, check_name=CHECK_NAME, passed=False, severity=dg.AssetCheckSeverity.ERROR,
            description=f"{len(mine)} breaking change(s) in {result.system}: " + "; ".join(mask(c.message())
                                                                                        for c in mine[:5]),
            metadata=metadata)
    if result.changes:
        return dg.AssetCheckResult(
            asset_key=source, check_name=CHECK_NAME, passed=False, severity=dg.AssetCheckSeverity.WARN,
            description=f"{result.system} drifted from its snapshot: {len(result.changes)} change(s), none breaking "
                        f"for {source}", metadata=metadata)
    return dg.AssetCheckResult(asset_key=source, check_name=CHECK_NAME, passed=True,
                               description=f"{result.system} matches its snapshot", metadata=metadata)


def _system_check(pipeline: Pipeline, system: str, directory: Path | None) -> dg.AssetChecksDefinition:
    sources = [s.name for s in system_sources(pipeline, system)]
    snapshot = contract_file(pipeline, system, directory)
    specs = [dg.AssetCheckSpec(CHECK_NAME, asset=name, blocking=False,
                               description=f"{system} still offers what {name} uses (snapshot {snapshot.name})")
             for name in sources]
    name = re.sub(r"\W", "_", f"{pipeline.name}__{system}_contract")

    @dg.multi_asset_check(specs=specs, name=name, can_subset=True,
                          description=f"Contract test of system {system} against {snapshot}")
    def _check(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        try:
            result = verify_system(pipeline, system, directory=directory)
        except Exception as exc:  # a check reports, it never fails the run
            result = ContractResult(pipeline.name, system, "?", snapshot, error=f"{type(exc).__name__}: {exc}")
        context.log.info(f"contract {result.name}: {result.status} ({mask(result.summary())})")
        for key in context.selected_asset_check_keys:
            yield check_result(key.asset_key.to_user_string(), result)

    return _check


def contract_definitions(pipeline: Pipeline, directory: Path | None = None) -> dg.Definitions:
    """The contract checks of every system of *pipeline* that has a snapshot, a job running only them and
    its hourly schedule (stopped by default)."""
    checks = [_system_check(pipeline, system, directory) for system in systems_of(pipeline)
              if contract_file(pipeline, system, directory).exists()]
    if not checks:
        return dg.Definitions()
    job = dg.define_asset_job(f"{pipeline.name}_contracts", selection=dg.AssetSelection.checks(*checks),
                              description=f"Contract tests of the systems of pipeline {pipeline.name}")
    schedule = dg.ScheduleDefinition(name=f"{pipeline.name}_contracts_schedule", job=job, cron_schedule="0 * * * *",
                                     default_status=dg.DefaultScheduleStatus.STOPPED)
    return dg.Definitions(asset_checks=checks, jobs=[job], schedules=[schedule])
