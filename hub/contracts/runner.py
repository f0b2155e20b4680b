"""Snapshots and contract tests of a pipeline's systems.

``snapshot`` writes ``contracts/<pipeline>/<system>.contract.json`` for every system the pipeline's sources
read; ``verify`` reads each system again and compares it with its snapshot (see :mod:`hub.contracts.diff`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub import protocols
from hub.contracts.collect import FORMAT, collect
from hub.contracts.diff import Change
from hub.contracts.usage import system_sources
from hub.errors import HubError
from hub.events.publish import emit
from hub.runtime.secrets import mask
from hub.spec.loader import Pipeline

SUFFIX = ".contract.json"


def contracts_dir(pipeline: Pipeline, directory: Path | None = None) -> Path:
    """Where the pipeline's snapshots live: *directory*, else ``contracts/`` in the project."""
    return Path(directory) if directory is not None else pipeline.root / "contracts"


def contract_file(pipeline: Pipeline, system: str, directory: Path | None = None) -> Path:
    return contracts_dir(pipeline, directory) / pipeline.name / f"{system}{SUFFIX}"


def systems_of(pipeline: Pipeline) -> list[str]:
    """The systems the pipeline's sources read and its flows call (exports only write a file: nothing to
    depend on), in spec order."""
    from hub.spec.flows import flow_calls

    used = {s.system_name for s in pipeline.sources.values()}
    used |= {name for name in pipeline.spec.systems if flow_calls(pipeline.spec.flows, name)}
    return [name for name in pipeline.spec.systems if name in used]


def dumps(doc: dict[str, Any]) -> str:
    """Stable, diff-friendly JSON: sorted keys, two-space indent, UTF-8 text, a final newline."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _select(pipeline: Pipeline, systems: list[str] | None) -> list[str]:
    available = systems_of(pipeline)
    if not systems:
        return available
    unknown = [s for s in systems if s not in available]
    if unknown:
        raise HubError(f"pipeline {pipeline.name} reads no system {', '.join(unknown)} "
                       f"(systems with sources: {', '.join(available) or 'none'})")
    return [s for s in available if s in systems]


def snapshot(pipeline: Pipeline, *, directory: Path | None = None, systems: list[str] | None = None) -> list[Path]:
    """Record what each system offers now; returns the files written."""
    written = []
    for system in _select(pipeline, systems):
        doc = collect(pipeline, system)
        path = contract_file(pipeline, system, directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(doc), encoding="utf-8")
        written.append(path)
    return written


def compare(pipeline: Pipeline, system: str, before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """Every change from the snapshot *before* to the live document *after*, classified for this pipeline."""
    protocol = after.get("protocol")
    if before.get("protocol") != protocol:
        return [Change(system, "system", "", "protocol changed", str(before.get("protocol")), str(protocol), True,
                       ["every source"], [s.name for s in system_sources(pipeline, system)])]
    b, a = before.get(str(protocol)) or {}, after.get(str(protocol)) or {}
    return protocols.get(str(protocol)).compare(pipeline, system, b, a)


@dataclass
class ContractResult:
    """The contract test of one system of one pipeline."""

    pipeline: str
    system: str
    protocol: str
    file: Path
    changes: list[Change] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None
    duration_s: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.pipeline}/{self.system}"

    @property
    def breaking(self) -> list[Change]:
        return [c for c in self.changes if c.breaking]

    @property
    def non_breaking(self) -> list[Change]:
        return [c for c in self.changes if not c.breaking]

    @property
    def status(self) -> str:
        """passed (no change), drift (non-breaking changes only), failed (breaking), error, skipped."""
        if self.error is not None:
            return "error"
        if self.skipped is not None:
            return "skipped"
        if self.breaking:
            return "failed"
        return "drift" if self.changes else "passed"

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "drift", "skipped")

    def summary(self) -> str:
        if self.error is not None:
            return f"error: {self.error}"
        if self.skipped is not None:
            return f"skipped: {self.skipped}"
        if not self.changes:
            return "no changes"
        return f"{len(self.breaking)} breaking, {len(self.non_breaking)} non-breaking change(s)"


def verify_system(pipeline: Pipeline, system: str, *, directory: Path | None = None) -> ContractResult:
    """Compare *system* with its snapshot. Never raises for the system's own faults: they become the result's
    error (an unreachable system cannot be said to keep its contract)."""
    path = contract_file(pipeline, system, directory)
    protocol = pipeline.spec.systems[system].kind if system in pipeline.spec.systems else "?"
    result = ContractResult(pipeline.name, system, protocol, path)
    started = time.perf_counter()
    try:
        if not path.exists():
            result.skipped = f"no snapshot {path.name} (take one with `hub contracts snapshot`)"
            return result
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            result.error = f"cannot read the snapshot {path}: {exc}"
            return result
        if before.get("contract") != FORMAT:
            result.error = (f"{path} was written in contract format {before.get('contract')}, this hub writes "
                            f"{FORMAT}: take a new snapshot")
            return result
        try:
            after = collect(pipeline, system)
        except HubError as exc:
            result.error = mask(str(exc))
            return result
        except Exception as exc:  # one system's surprise must not hide the others' results
            result.error = mask(f"{type(exc).__name__}: {exc}")
            return result
        result.changes = compare(pipeline, system, before, after)
        if result.breaking:
            emit(pipeline, "contract.broken", system=system, protocol=protocol,
                 breaking=[c.message() for c in result.breaking][:50], non_breaking=len(result.non_breaking))
        return result
    finally:
        result.duration_s = time.perf_counter() - started


def verify(pipeline: Pipeline, *, directory: Path | None = None, systems: list[str] | None = None
           ) -> list[ContractResult]:
    """The contract test of every system the pipeline reads (or of *systems*)."""
    return [verify_system(pipeline, s, directory=directory) for s in _select(pipeline, systems)]
