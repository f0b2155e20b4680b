"""Report the runs of ``hub run`` (:mod:`hub.runs`, which runs without Dagster) into the Dagster instance.

Each finished run of the journal (``$DAGSTER_HOME/hub-runs/*.json``) becomes runless asset events:
an :class:`dagster.AssetMaterialization` per asset it materialized, with the metadata a Dagster run would
have recorded and the tags ``hub/run_id`` / ``hub/pipeline``, and an :class:`dagster.AssetCheckEvaluation`
per expectation it checked (``DagsterInstance.report_runless_asset_event``, Dagster's API for assets
materialized outside it). The UI's asset pages then show them like any other materialization; ``hub runs``
lists the runs themselves from the journal (:func:`hub.dagster.run.recent_runs`).

Each event is reported exactly once: one reporter at a time (a ``flock`` on ``.report.lock``, taken before
Dagster is imported, so a second detached reporter exits at once); a record is marked ``reporting`` before
its first event is written and ``reported`` after its last (each an atomic rename). A reporter killed in
between leaves the record ``reporting``: the next one looks up the events the instance already holds with
the record's run id (materialization tags, check metadata ``hub/run_id``) and writes only the others. Old
reported records are pruned beyond :data:`KEEP`.

``python -m hub.dagster.journal DAGSTER_HOME`` is the detached process ``hub run`` starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.runs import journal_dir, read_records

if TYPE_CHECKING:
    import dagster as dg

#: Reported records kept in the journal (older ones are deleted): what ``hub runs`` can list of fast runs.
KEEP = 1000


@contextlib.contextmanager
def _reporter(home: Path, *, wait: bool) -> Iterator[bool]:
    """Hold the reporter lock of *home*'s journal; yields False (without waiting) when another process has it
    and *wait* is False."""
    folder = journal_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".report.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _pending(home: Path) -> list[dict[str, Any]]:
    return [r for r in read_records(home) if r.get("status") in ("SUCCESS", "FAILURE") and not r.get("reported")
            and r.get("ended")]


def metadata(md: dict[str, Any]) -> dict[str, Any]:
    """Plain journal metadata (:func:`hub.runs.typed` values) as Dagster metadata values."""
    import dagster as dg

    out: dict[str, Any] = {}
    for key, value in md.items():
        if isinstance(value, dict) and set(value) == {"hub_type", "value"}:
            kind, v = value["hub_type"], value["value"]
            convert: dict[str, Callable[[Any], Any]] = {
                        "float": lambda x: dg.FloatMetadataValue(float(x)), "url": dg.UrlMetadataValue,
                        "json": dg.MetadataValue.json, "md": dg.MetadataValue.md, "path": dg.MetadataValue.path,
                        "table_schema": lambda cols: dg.TableSchema(
                            columns=[dg.TableColumn(name=n, type=t) for n, t in cols])}
            out[key] = convert[kind](v)
        else:
            out[key] = value
    return out


def report_pending(instance: dg.DagsterInstance, home: Path, *, wait: bool = True) -> int:
    """Report every finished, unreported run of *home*'s journal into *instance*; returns how many runs were
    reported. Without *wait*, returns 0 at once when another process is reporting."""

    reported = 0
    with _reporter(home, wait=wait) as mine:
        if not mine:
            return 0
        while True:
            pending = _pending(home)
            if not pending:
                break
            for record in sorted(pending, key=lambda r: r["started"]):
                _report(instance, record)
                reported += 1
        _prune(home)
    return reported


def _rewrite(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _event_keys(instance: dg.DagsterInstance, record: dict[str, Any]) -> set[tuple[str, ...]]:
    """What of *record* the instance already holds: materializations by (asset, partition), check evaluations
    by (asset, check, partition), of events tagged with the record's run id since the run ended."""
    from dagster._core.event_api import EventRecordsFilter
    from dagster._core.events import DagsterEventType

    run_id = record["run_id"]
    since = float(record["ended"]) - 60  # reported after the run ended; a minute of slack for clock steps
    found: set[tuple[str, ...]] = set()
    for kind in (DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_CHECK_EVALUATION):
        for rec in instance.event_log_storage.get_event_records(
                EventRecordsFilter(event_type=kind, after_timestamp=since), limit=100_000, ascending=True):
            event = rec.event_log_entry.dagster_event
            if event is None:
                continue
            data: Any = event.event_specific_data
            if kind == DagsterEventType.ASSET_MATERIALIZATION:
                mat = data.materialization
                if (mat.tags or {}).get("hub/run_id") == run_id:
                    found.add(("m", mat.asset_key.to_user_string(), str(mat.partition)))
            else:
                tag = data.metadata.get("hub/run_id")
                if tag is not None and getattr(tag, "value", tag) == run_id:
                    part = data.metadata.get("hub/partition")
                    found.add(("c", data.asset_key.to_user_string(), data.check_name,
                               str(getattr(part, "value", part)) if part is not None else str(data.partition)))
    return found


def _report(instance: dg.DagsterInstance, record: dict[str, Any]) -> None:
    """Report one record's events, exactly once.

    The record is marked ``reporting`` (atomically) before its first event is written and ``reported`` after
    its last. A record found ``reporting`` was being reported by a process that died: the events the instance
    already has (tagged with the run id) are skipped, the rest written. The marker makes that look-up happen
    only after such a crash, not for every run."""
    import dagster as dg

    path = Path(record.pop("path"))
    done = _event_keys(instance, record) if record.get("reporting") else set()
    if not record.get("reporting"):
        record["reporting"] = True
        _rewrite(path, record)
    run_id = record["run_id"]
    tags = {"hub/run_id": run_id, "hub/pipeline": record["pipeline"], "hub/cli": "run"}
    for name, keys in record.get("dynamic_partitions", {}).items():
        instance.add_dynamic_partitions(name, [k for k in keys if not instance.has_dynamic_partition(name, k)])
    for mat in record["materializations"]:
        if ("m", mat["asset"], str(mat["partition"])) in done:
            continue
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=mat["asset"], partition=mat["partition"], metadata=metadata(mat["metadata"]), tags=tags,
            description=f"hub run {run_id[:8]}"))
    for check in record["checks"]:
        if ("c", check["asset"], check["check"], str(check["partition"])) in done:
            continue
        # Dagster keeps one runless evaluation per (check, partition): the second run of a partition would be
        # refused (a unique constraint), so a partition's evaluation is reported without one, naming it in
        # its metadata; the check's history then lists every run's result, the newest first
        part = {"hub/partition": check["partition"]} if check["partition"] is not None else {}
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(check["asset"]), check_name=check["check"], passed=check["passed"],
            metadata={**metadata(check["metadata"]), "hub/run_id": run_id, **part}, description=check["description"],
            blocking=check["blocking"], partition=None,
            severity=dg.AssetCheckSeverity.ERROR if check["blocking"] else dg.AssetCheckSeverity.WARN))
    record["reported"] = True
    _rewrite(path, record)


def _prune(home: Path) -> None:
    done = [r for r in read_records(home) if r.get("reported")]
    for record in done[KEEP:]:
        with contextlib.suppress(OSError):
            Path(record["path"]).unlink()


def main(argv: list[str]) -> int:
    home = Path(argv[0])
    with _reporter(home, wait=False) as mine:  # cheap: no Dagster import when another reporter runs
        if not mine:
            return 0
    os.environ["DAGSTER_HOME"] = str(home)
    from hub.dagster.instance import local_instance

    instance = local_instance(home)
    for _ in range(3):  # a run that ended while another reporter finished is reported by this one
        report_pending(instance, home, wait=False)
        if not _pending(home):
            break
        time.sleep(0.5)
    return 0


if __name__ == "__main__":  # pragma: no cover - the detached reporter
    sys.exit(main(sys.argv[1:]))
