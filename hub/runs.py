"""``hub run`` without Dagster: the same materializations, in this process, in a second instead of five.

Importing Dagster (and pandas, which it imports) and opening its instance cost 3-6 s and 100 MB before a
row moved; the data path below Dagster (:mod:`hub.materialize`, :mod:`hub.files`, :mod:`hub.exports`,
:mod:`hub.events.absorb`, :mod:`hub.validation.runner`) never needed it. So ``hub run`` calls that path
directly and keeps what Dagster gave it:

* **one writer per DuckDB file**: the writer lock (:mod:`hub.warehouse.lock`) for the whole run, which
  every Dagster asset that writes also takes, instead of the ``hub_duckdb`` pool;
* **the same plan** as the Dagster path (:func:`hub.dagster.run.run_pipeline`): time-partitioned sources one
  run per partition (reference sources with the first), file drops one run per file, models and exports last
  in dependency order; an asset whose upstream failed is skipped, the next run is not started;
* **expectation suites** right after each load, on the rows just loaded; a failed blocking expectation fails
  the asset (its rows stay loaded) and skips what depends on it, like a blocking Dagster asset check;
* **the record of the run**: a JSON file per run under ``$DAGSTER_HOME/hub-runs/`` (written when the run
  starts, with its pid, and when it ends, with every materialization's metadata and every check's result),
  which :mod:`hub.dagster.journal` reports into the Dagster instance as runless asset events (so the UI's
  asset pages show the materializations and checks) — in a detached process right after the run, or in the
  next command that opens the instance (``hub runs``, ``hub ui``, ``hub run --dagster``). ``hub runs`` lists
  these runs with Dagster's; a run whose process died shows as failed.

What it does not give: the runs are not Dagster runs (no run page, no event log of steps, no re-execution from
the UI); ``hub run --dagster`` runs through Dagster as before (docs/operations.md).

Each load is one warehouse transaction (:func:`hub.materialize.materialize_source`), so a SIGKILL leaves
nothing half-committed, and the lock is the kernel's, released with the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hub.errors import HubError
from hub.spec import Pipeline

#: Run tags and record fields shared with the Dagster path.
QUARANTINE_SUFFIX = "__quarantine"  # hub.warehouse.base.QUARANTINE_SUFFIX, without importing the warehouse
JOURNAL = "hub-runs"
#: ``hub run`` starts a detached process that reports the run into the Dagster instance, unless this is "defer"
#: (then the next ``hub runs`` / ``hub ui`` / ``hub run --dagster`` does).
REPORT_ENV = "HUB_REPORT_RUNS"
FAST_JOB = "hub run"
DAGSTER_YAML = """\
# Written by hub for local use; see docs/operations.md for production settings.
telemetry:
  enabled: false
concurrency:
  pools:
    granularity: op
"""


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
    traces: list[str] = field(default_factory=list)  # the stack trace of each failure (shown with --verbose)


def one_line(message: str, cls_name: str | None = None) -> str:
    """A failure as one readable line: the hub's own errors (:mod:`hub.errors`, written for people) without
    their class path; anything else (a bug) keeps its class name, which is then part of the story."""
    text = message.strip()
    if cls_name:
        text = re.sub(rf"^hub\.errors\.{re.escape(cls_name)}: ", "", text)
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _exception_line(exc: BaseException) -> str:
    """*exc* as Dagster's event log has it (``module.Class: message``), then :func:`one_line`."""
    return one_line("".join(traceback.format_exception_only(type(exc), exc)), type(exc).__name__)


def read_metadata(outcome: RunOutcome, asset: str, md: dict[str, Any]) -> None:
    """The numbers of one materialization (rows, quarantined rows and where, file status), for the CLI's
    summary: the same metadata the Dagster UI shows. *md* holds plain values."""
    for key, into in (("dagster/row_count", outcome.row_counts), ("hub/rows_loaded", outcome.rows_loaded),
                      ("hub/rows_quarantined", outcome.quarantined)):
        if md.get(key) is not None:
            into[asset] = int(md[key])
    table = md.get("dagster/table_name")
    outcome.quarantine_tables[asset] = f"{table if table is not None else asset}{QUARANTINE_SUFFIX}"
    if md.get("hub/status") is not None:
        outcome.file_status[asset] = str(md["hub/status"])


# --- metadata as plain JSON: typed values are {"hub_type": ..., "value": ...} --------------------------------

def typed(kind: str, value: Any) -> dict[str, Any]:
    """A metadata value Dagster shows as *kind* (float, url, json, md, path, table_schema)."""
    return {"hub_type": kind, "value": value}


def load_metadata(load: Any, *, partitioned: bool, duration_s: float, source_url: str | None = None,
                  details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata of a load (:class:`hub.warehouse.LoadResult`), as the UI shows it on the asset."""
    md: dict[str, Any] = {
        "dagster/row_count": load.rows_loaded if partitioned else load.table_rows,
        "dagster/column_schema": typed("table_schema", [[n, t] for n, t in load.columns]),
        "dagster/table_name": load.table,
        "hub/rows_loaded": load.rows_loaded,
        "hub/rows_replaced": load.rows_deleted,
        "hub/rows_quarantined": load.rows_quarantined,
        "hub/table_rows": load.table_rows,
        "hub/duration_s": typed("float", round(duration_s, 3)),
    }
    if source_url:
        md["hub/source_url"] = typed("url", source_url)
    for key, value in (details or {}).items():
        md[f"hub/{key}"] = value
    return md


def file_metadata(outcome: Any) -> dict[str, Any]:
    """The metadata of one file of a drop (:class:`hub.files.FileOutcome`)."""
    md: dict[str, Any] = {"hub/file": outcome.file, "hub/status": outcome.status, "hub/after": outcome.after,
                          "hub/duration_s": typed("float", round(outcome.duration_s, 3))}
    if outcome.sha256:
        md["hub/sha256"] = outcome.sha256
    if outcome.load is not None:
        load = outcome.load
        md.update({"dagster/row_count": load.rows_loaded, "hub/rows_replaced": load.rows_deleted,
                   "hub/rows_quarantined": load.rows_quarantined, "hub/table_rows": load.table_rows,
                   "dagster/table_name": load.table,
                   "dagster/column_schema": typed("table_schema", [[n, t] for n, t in load.columns])})
    md.update({f"hub/{k}": v for k, v in outcome.details.items()})
    return md


def stream_metadata(outcome: Any, pending: int) -> dict[str, Any]:
    """The metadata of absorbing a stream source's events (:class:`hub.events.absorb.AbsorbOutcome`)."""
    md: dict[str, Any] = {"hub/events": outcome.events, "hub/mark": outcome.mark, "hub/lag_events": pending,
                          "hub/duration_s": typed("float", round(outcome.duration_s, 3))}
    if outcome.load is not None:
        load = outcome.load
        md.update({"dagster/row_count": load.table_rows, "hub/rows_loaded": load.rows_loaded,
                   "hub/rows_quarantined": load.rows_quarantined, "dagster/table_name": load.table,
                   "dagster/column_schema": typed("table_schema", [[n, t] for n, t in load.columns])})
    return md


def check_records(run: Any) -> list[dict[str, Any]]:
    """One record per expectation of a suite run (:class:`hub.validation.runner.SuiteRun`): name, passed,
    blocking, description and metadata, as the Dagster asset check shows it."""
    out = []
    for o in run.outcomes:
        exp = o.expectation
        md: dict[str, Any] = {
            "partition": run.partition if run.partition is not None else "(whole table)",
            "rows_validated": run.rows,
            "severity": exp.severity,
            "expectation": typed("json", {"type": exp.type, "kwargs": json.loads(json.dumps(exp.kwargs,
                                                                                          default=str))}),
        }
        if o.observed is not None:
            md["observed_value"] = o.observed if isinstance(o.observed, int | float | str) and \
                not isinstance(o.observed, bool) else typed("json", {"value": _plain(o.observed)})
        if o.element_count is not None:
            md["element_count"] = int(o.element_count)
        if o.unexpected_count is not None:
            md["unexpected_count"] = int(o.unexpected_count)
        if o.unexpected_percent is not None:
            md["unexpected_percent"] = typed("float", round(float(o.unexpected_percent), 4))
        if o.unexpected_values:
            md["unexpected_values"] = typed("json", _plain(o.unexpected_values))
        if o.sample_rows:
            md["failing_rows"] = typed("md", _markdown(o.sample_rows))
            md["failing_rows_json"] = typed("json", _plain(o.sample_rows))
        if o.error:
            md["error"] = o.error
        if run.docs is not None:
            md["data_docs"] = typed("path", str(run.docs))
        if o.error:
            text = f"could not be evaluated: {o.error}"
        elif o.unexpected_count is not None:
            text = f"{o.unexpected_count:,} of {o.element_count or 0:,} rows unexpected" + \
                (f" ({o.unexpected_percent:.2f}%)" if o.unexpected_percent is not None else "")
        else:
            text = f"observed {o.observed!r}"
        out.append({"asset": run.asset, "check": exp.name, "passed": bool(o.passed), "blocking": exp.blocking,
                    "partition": run.partition, "description": text, "metadata": md})
    return out


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


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


# --- the journal of runs ------------------------------------------------------------------------------------

def dagster_home(root: Path) -> Path:
    """``$DAGSTER_HOME`` when set, else ``<project>/.dagster`` (created, with the hub's dagster.yaml): the
    instance ``hub run``, ``hub runs`` and ``hub ui`` share. Sets ``$DAGSTER_HOME`` for this process."""
    home = Path(os.environ.get("DAGSTER_HOME") or root / ".dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        # written whole or not at all: a second process (the detached reporter, ``hub runs``) that reads it
        # meanwhile must never see an empty file; an existing one (the operator's) is never replaced
        tmp = cfg.with_name(f".dagster.yaml.{os.getpid()}.tmp")
        tmp.write_text(DAGSTER_YAML, encoding="utf-8")
        try:
            os.link(tmp, cfg)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def journal_dir(home: Path) -> Path:
    return home / JOURNAL


def _write(path: Path, record: dict[str, Any]) -> None:
    """Replace *path* atomically (a reader sees the old record or the new one, never half of one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_records(home: Path) -> list[dict[str, Any]]:
    """Every run record of the journal, newest first; a run still STARTED whose process (on this host) is
    gone is returned as FAILURE, with why."""
    folder = journal_dir(home)
    out = []
    for path in sorted(folder.glob("*.json"), reverse=True) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # removed or replaced while we read: the next listing has it
        if record.get("status") == "STARTED" and record.get("host") == socket.gethostname() \
                and not _alive(int(record.get("pid") or 0)):
            # its assets committed before the end are in the record (written after each): the reporter sends
            # them into Dagster like a finished run's, with the time the record was last written as its end
            with contextlib.suppress(OSError):
                record["ended"] = record.get("ended") or path.stat().st_mtime
            record.update(status="FAILURE", reason=f"the process of this run (pid {record.get('pid')} on "
                                                   f"{record.get('host')}) is gone (killed or crashed)")
        record["path"] = str(path)
        out.append(record)
    return out


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def report_in_background(home: Path) -> None:
    """Start the detached process that reports finished runs into the Dagster instance
    (``python -m hub.dagster.journal HOME``); it outlives this command and prints nothing."""
    if os.environ.get(REPORT_ENV, "").lower() == "defer":
        return
    with contextlib.suppress(OSError):
        subprocess.Popen([sys.executable, "-m", "hub.dagster.journal", str(home)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                         close_fds=True, env={**os.environ, "DAGSTER_HOME": str(home)})


# --- the fast path -----------------------------------------------------------------------------------------

Say = Callable[[str], None]


def run_fast(pipeline: Pipeline, home: Path, *, assets: Sequence[str] | None = None,
             partitions: Sequence[str | None] = (None,), files: Sequence[str] | None = None,
             before_run: Callable[[str | None], None] | None = None, full_refresh: bool = False,
             progress: Callable[[str, int], None] | None = None, say: Say | None = None) -> list[RunOutcome]:
    """Materialize *assets* (default: all) of *pipeline* in this process, planned like
    :func:`hub.dagster.run.run_pipeline`; each run is recorded in the journal of *home*. Stops at the first
    failed run."""
    from hub.runtime.lazy import pyarrow_without_pandas
    from hub.warehouse.lock import writer_lock

    pyarrow_without_pandas()
    tell = say or (lambda _line: None)
    plan = plan_runs(pipeline, assets)
    outcomes: list[RunOutcome] = []
    folder = journal_dir(home)
    folder.mkdir(parents=True, exist_ok=True)

    def run(selection: list[str], key: str | None, label: str | None) -> bool:
        run_id = str(uuid.uuid4())
        if before_run:
            before_run(label)
        outcome = _one_run(pipeline, folder, run_id, selection, key, label, full_refresh=full_refresh,
                           progress=progress)
        outcomes.append(outcome)
        return outcome.success

    try:
        with writer_lock(pipeline.warehouse_url, what=f"hub run of pipeline {pipeline.name}", say=tell):
            run_plan(pipeline, plan, partitions, files, run)
            return outcomes
    finally:
        if outcomes:
            report_in_background(home)


@dataclass
class RunPlan:
    """The runs ``hub run`` makes of a selection, in this order: *first* (sources with their child tables, per
    partition for the *partitioned* ones, the others once), *per_file* sources (a run per file), *last* (models
    then exports, in dependency order, once), *flows* (each in runs of its own, per partition when partitioned)."""

    first: list[str]
    partitioned: set[str]
    per_file: list[str]
    last: list[str]
    flows: list[str]


def plan_runs(pipeline: Pipeline, assets: Sequence[str] | None) -> RunPlan:
    """The plan for *assets* (default: every asset; flows only when named, since they act on systems). A source
    and its child tables materialize together (one transaction), so naming one selects the group."""
    names = list(assets) if assets else pipeline.asset_names()
    known = [*pipeline.asset_names(), *pipeline.spec.flows]
    unknown = [a for a in names if a not in known]
    if unknown:
        raise HubError(f"{pipeline.path}: no asset named {', '.join(unknown)} (assets: {', '.join(known)})")
    flows = [n for n in names if n in pipeline.spec.flows]
    names = [n for n in names if n not in pipeline.spec.flows]
    groups = {t: [name, *s.spec.children] for name, s in pipeline.sources.items() for t in (name, *s.spec.children)}
    names = list(dict.fromkeys(m for n in names for m in groups.get(n, [n])))
    partitioned = {t for n, s in pipeline.sources.items() if s.partitioned for t in groups[n]}
    per_file = [n for n in names if n in pipeline.sources and pipeline.sources[n].per_file]
    last = [n for n in names if n in pipeline.spec.models or n in pipeline.spec.exports]
    first = [n for n in names if n not in per_file and n not in last]
    return RunPlan(first, partitioned, per_file, _ordered(pipeline, last), flows)


def run_plan(pipeline: Pipeline, plan: RunPlan, partitions: Sequence[str | None], files: Sequence[str] | None,
             run: Callable[[list[str], str | None, str | None], bool],
             on_files: Callable[[str, list[str]], None] | None = None) -> None:
    """Make *plan*'s runs with *run(selection, partition key, label)*, stopping at the first that fails.
    *files*: the file keys of per-file sources (default: the files ready now); *on_files* hears them first."""
    for i, key in enumerate(partitions if plan.first else []):
        selection = [n for n in plan.first if n in plan.partitioned or i == 0]
        by_time = any(n in plan.partitioned for n in selection)
        if selection and not run(selection, key if by_time else None, key if by_time else None):
            return
    for name in plan.per_file:
        from hub.files import ready_files

        keys = list(files) if files is not None else [f.name for f in ready_files(pipeline, name)]
        if on_files:
            on_files(name, keys)
        for key in keys:
            if not run([name], key, f"file {key}"):
                return
    if plan.last and not run(plan.last, None, None):
        return
    for name in plan.flows:  # each in a run of its own (as its own job would): per partition when partitioned
        source = pipeline.flow_files(name)
        if source is not None:  # per file of the source it follows: the files named, else every file loaded
            flow_keys: Sequence[str | None] = list(files) if files is not None else _loaded_files(pipeline, source)
        else:
            flow_keys = partitions if pipeline.flow_partitioned(name) else [None]
        for key in flow_keys:
            if not run([name], key, f"file {key}" if source is not None else key):
                return


def _loaded_files(pipeline: Pipeline, source: str) -> list[str | None]:
    """The files of a source loaded per file that its table holds (its ``_hub_partition`` values)."""
    from hub.warehouse import connect
    from hub.warehouse.base import PARTITION_COLUMN, ident

    wh = connect(pipeline.warehouse_url)
    if source not in wh.tables():
        return []
    rows = wh.query(f"SELECT DISTINCT {ident(PARTITION_COLUMN)} AS k FROM {ident(source)} ORDER BY 1").to_pylist()
    return [str(r["k"]) for r in rows if r["k"] is not None]


def _ordered(pipeline: Pipeline, names: list[str]) -> list[str]:
    """Models (by their dependencies), then exports: the order Dagster's plan would run them in."""
    deps = {**pipeline.model_deps, **pipeline.export_deps}
    out: list[str] = []

    def visit(name: str, path: tuple[str, ...] = ()) -> None:
        if name in out or name in path or name not in names:
            return
        for dep in deps.get(name, []):
            visit(dep, (*path, name))
        out.append(name)

    for name in [n for n in names if n in pipeline.spec.models] + [n for n in names if n not in pipeline.spec.models]:
        visit(name)
    return out


def _one_run(pipeline: Pipeline, folder: Path, run_id: str, selection: list[str], key: str | None,
             label: str | None, *, full_refresh: bool, progress: Callable[[str, int], None] | None) -> RunOutcome:
    from hub.runtime import tracing

    started = time.time()
    started_ns = time.time_ns()
    path = folder / f"{datetime.fromtimestamp(started, UTC).strftime('%Y%m%dT%H%M%S%f')}-{run_id}.json"
    record: dict[str, Any] = {
        "run_id": run_id, "job": FAST_JOB, "pipeline": pipeline.name, "spec": str(pipeline.path),
        "status": "STARTED", "started": started, "ended": None, "assets": selection, "partition": key,
        "host": socket.gethostname(), "pid": os.getpid(), "full_refresh": full_refresh, "reason": None,
        "materializations": [], "checks": [], "reported": False, "dynamic_partitions": {},
    }
    _write(path, record)
    outcome = RunOutcome(partition=label, run_id=run_id, success=True, assets=selection)
    failed: set[str] = set()  # assets that failed or were skipped: what depends on them is skipped
    deps = {**pipeline.model_deps, **pipeline.export_deps}
    done: set[str] = set()
    for asset in selection:
        if asset in done or asset in failed:  # a child table, materialized (or failed) with its source
            continue
        if any(d in failed for d in deps.get(asset, [])):
            failed.add(asset)
            continue
        if asset in pipeline.spec.flows:
            _flow_step(pipeline, asset, key, run_id, outcome, record, failed)
            continue
        try:
            materialized = _materialize(pipeline, asset, key, run_id, full_refresh=full_refresh, progress=progress)
        except Exception as exc:  # one asset's failure: recorded, its dependents skipped, like a failed step
            step = asset
            failed.update([asset, *pipeline.sources[asset].spec.children] if asset in pipeline.sources else [asset])
            outcome.success = False
            outcome.reasons.append(f"{step}: {_exception_line(exc)}")
            outcome.traces.append("".join(traceback.format_exception(exc)))
            continue
        blocked: list[str] = []
        for name, md, part in materialized:
            done.add(name)
            read_metadata(outcome, name, md)
            record["materializations"].append({"asset": name, "partition": part, "metadata": md})
            if name in pipeline.suites:
                checks = _checks(pipeline, name, part, run_id)
                record["checks"].extend(checks)
                bad = [c["check"] for c in checks if c["blocking"] and not c["passed"]]
                if bad:
                    blocked.append(f"{name}: blocking expectation(s) failed: {', '.join(bad)} (the rows are "
                                   "loaded; what depends on them is skipped)")
                    failed.add(name)
        if asset in pipeline.sources and pipeline.sources[asset].per_file and key is not None:
            record["dynamic_partitions"].setdefault(f"{asset}_files", []).append(key)
        if materialized:
            # committed: on record now, so a run killed later still reports what it loaded (read_records)
            _write(path, record)
        if blocked:
            outcome.success = False
            outcome.reasons.extend(blocked)
    if not outcome.success:
        outcome.error = "\n".join(outcome.reasons)
    record.update(status="SUCCESS" if outcome.success else "FAILURE", ended=time.time(),
                  reason="; ".join(outcome.reasons) or None)
    _write(path, record)
    tracing.emit_run_span(run_id, start_ns=started_ns, end_ns=time.time_ns(), success=outcome.success,
                          error=outcome.error, attributes={"hub.pipeline": pipeline.name, "hub.partition": label,
                                                           "hub.assets": list(selection),
                                                           "hub.launched_by": "hub run"})
    return outcome


def _checks(pipeline: Pipeline, asset: str, partition: str | None, run_id: str) -> list[dict[str, Any]]:
    from hub.validation.runner import validate

    run = validate(pipeline, asset, partition, run_id=run_id)
    return check_records(run) if run is not None else []


def _materialize(pipeline: Pipeline, asset: str, key: str | None, run_id: str, *, full_refresh: bool,
                 progress: Callable[[str, int], None] | None) -> list[tuple[str, dict[str, Any], str | None]]:
    """Materialize one asset (a source with its child tables, a file, a stream, a model, an export): what
    was materialized, with its metadata and partition."""
    if asset in pipeline.sources:
        source = pipeline.sources[asset]
        if source.per_file:
            from hub.files import ingest_file

            assert key is not None
            f = ingest_file(pipeline, asset, key, run_id=run_id, progress=progress)
            return [(asset, file_metadata(f), key)]
        if source.stream is not None:
            from hub.events.absorb import absorb_source
            from hub.events.store import open_store

            store = open_store(pipeline.warehouse_url, pipeline.root)
            a = absorb_source(pipeline, asset, run_id=run_id, store=store, progress=progress)
            return [(asset, stream_metadata(a, store.status([asset])[0].pending), None)]
        from hub.materialize import materialize_source

        window = None
        if source.partitioned and key is not None:
            from hub.spec.partitions import window as window_of

            assert pipeline.spec.partitions is not None
            window = window_of(pipeline.spec.partitions, key)
        o = materialize_source(pipeline, asset, window=window, run_id=run_id, progress=progress,
                               full_refresh=full_refresh)
        part = key if source.partitioned else None
        out = [(asset, load_metadata(o.load, partitioned=part is not None, duration_s=o.duration_s,
                                     source_url=o.source_url, details=o.details), part)]
        for child, result in o.children.items():
            out.append((child, load_metadata(result, partitioned=part is not None, duration_s=o.duration_s,
                                             source_url=o.source_url), part))
        return out
    if asset in pipeline.spec.models:
        from hub.materialize import materialize_model

        m = materialize_model(pipeline, asset, run_id=run_id)
        return [(asset, load_metadata(m.load, partitioned=False, duration_s=m.duration_s), None)]
    from hub.exports import run_export
    from hub.runtime import tracing
    from hub.warehouse.calls import calls_sink

    with tracing.asset_scope(asset, run_id=run_id, pipeline=pipeline.name, sink=calls_sink(pipeline.warehouse_url),
                             kind="export") as scope:
        e = run_export(pipeline, asset)
        scope.rows = e.rows
    return [(asset, {"dagster/row_count": e.rows, "hub/remote_path": e.remote_path, "hub/bytes": e.bytes,
                     "hub/duration_s": typed("float", round(e.duration_s, 3))}, None)]


def _flow_step(pipeline: Pipeline, name: str, key: str | None, run_id: str, outcome: RunOutcome,
               record: dict[str, Any], failed: set[str]) -> None:
    """One flow in a run: its materialization and checks recorded, the run failed when it stopped or a
    blocking check (a limit of ``checks:``) failed, as the flow's Dagster asset does."""
    from hub.runtime.secrets import mask

    try:
        report, part = _flow(pipeline, name, key, run_id)
    except Exception as exc:  # it could not start (its input unreadable, an unknown action)
        failed.add(name)
        outcome.success = False
        outcome.reasons.append(f"{name}: {_exception_line(exc)}")
        outcome.traces.append("".join(traceback.format_exception(exc)))
        return
    md = flow_metadata(report)
    read_metadata(outcome, name, md)
    record["materializations"].append({"asset": name, "partition": part, "metadata": md})
    checks = flow_checks(pipeline, name, report, part)
    record["checks"].extend(checks)
    why = [mask(report.stopped)] if report.stopped else []
    bad = [c["check"] for c in checks if c["blocking"] and not c["passed"]]
    if bad:
        why.append(f"blocking check(s) failed: {', '.join(bad)}")
    if why:
        failed.add(name)
        outcome.success = False
        outcome.reasons.append(f"{name}: {'; '.join(why)}")


def flow_window(pipeline: Pipeline, name: str, key: str | None) -> tuple[Any, str | None]:
    """The partition flow *name* runs for, given partition *key*: a file's key for a flow after a source loaded
    per file, a time window for a flow after a time-partitioned table, else None; and the key it applies."""
    if pipeline.flow_files(name) is not None and key is not None:
        from hub.runtime.window import KeyPartition

        return KeyPartition(key), key
    part = key if pipeline.flow_partitioned(name) else None
    if part is None:
        return None, None
    from hub.spec.partitions import window as window_of

    assert pipeline.spec.partitions is not None
    return window_of(pipeline.spec.partitions, part), part


def _flow(pipeline: Pipeline, name: str, key: str | None, run_id: str) -> tuple[Any, str | None]:
    """Run flow *name* (:func:`hub.flows.engine.run_flow`) for partition *key* when it is partitioned: its
    report and partition."""
    from hub.flows.engine import run_flow

    window, part = flow_window(pipeline, name, key)
    return run_flow(pipeline, name, run_id=run_id, window=window), part


def flow_metadata(report: Any) -> dict[str, Any]:
    """The metadata of a flow's run (:class:`hub.flows.engine.FlowReport`): items per status and per step."""
    from hub.runtime.secrets import mask

    counts = {s: report.count(s) for s in ("ok", "skipped", "failed", "dead", "unknown", "compensated")}
    steps: dict[str, int] = {}
    for item in report.items:
        for step in item.outputs:
            steps[step] = steps.get(step, 0) + 1
    return {"dagster/row_count": len(report.items), "hub/sent": report.sent, "hub/skipped_by_ledger": report.skipped,
            **{f"hub/items_{k}": v for k, v in counts.items()},
            **{f"hub/step_{k}_items": v for k, v in steps.items()},
            **({"hub/stopped": mask(report.stopped)} if report.stopped else {})}


FLOW_CHECKS = ("failed", "dead", "unknown")


def flow_checks(pipeline: Pipeline, name: str, report: Any, partition: str | None) -> list[dict[str, Any]]:
    """The flow's checks on its failed, dead-lettered and unknown items (as :func:`check_records`): blocking
    when the spec sets a limit (``checks:``), warnings otherwise."""
    from hub.runtime.secrets import mask

    limits = pipeline.spec.flows[name].checks
    out = []
    for what in FLOW_CHECKS:
        n = report.count(what) + (report.count("compensated") if what == "failed" else 0)
        limit = getattr(limits, what)
        bad = [f"{i.key}: {i.error}" for i in report.items if i.status == what][:5]
        out.append({"asset": name, "check": f"{name}_{what}", "passed": n <= (limit or 0),
                    "blocking": limit is not None, "partition": partition,
                    "description": f"{n} {what} item(s) (at most {limit or 0})",
                    "metadata": {"count": n, "threshold": limit or 0, "examples": mask("\n".join(bad)) or "none"}})
    return out
