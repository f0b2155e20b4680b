"""Exactly-once ingestion of file drops (SFTP sources).

Each file is a unit: listed as ready, downloaded to a local spool and hashed, checked against the
ledger (``_hub_files`` in the warehouse), loaded into its own partition (the file's name) in one
transaction that also writes its ledger row, and only then archived, deleted or left on the server.

* the same file (same name, size and mtime, already loaded) is never loaded twice;
* a re-dropped file whose content is identical to one already loaded is skipped (and tidied up);
* a changed file (same name, new content) is reloaded and replaces its previous rows;
* a file with more rejected rows than the spec allows fails: nothing is loaded or archived;
* a failure between the commit and the archive move leaves the file in place, and the next run sees it
  in the ledger as loaded and only moves it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from adapters.sftp import Fetching, LocalCopy, ReadNotes, RemoteFile, SftpSource
from hub import files_csv, owners
from hub.errors import FileMissing, ThresholdExceeded, WarehouseError
from hub.events.publish import emit
from hub.materialize import mapper_for, screens_for
from hub.runtime import tracing
from hub.runtime.prefetch import prefetch
from hub.spec.loader import Pipeline
from hub.spec.models import ResolvedSource
from hub.transform.mapping import Mapped, Mapper
from hub.validation.rules import RowRules, Threshold
from hub.warehouse import LoadRequest, LoadResult, Warehouse, connect
from hub.warehouse.calls import calls_sink

LEDGER = "_hub_files"
Progress = Callable[[str, int], None]
log = logging.getLogger("hub.files")


@dataclass(frozen=True)
class LedgerEntry:
    file: str
    path: str
    size: int
    mtime: int
    sha256: str
    status: str
    rows: int


@dataclass
class FileOutcome:
    """What happened to one file."""

    file: str
    status: str  # loaded | already loaded | duplicate of <file>
    load: LoadResult | None = None
    rejected: int = 0
    after: str = ""
    duration_s: float = 0.0
    sha256: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def build_sftp(pipeline: Pipeline, source: ResolvedSource) -> SftpSource:
    """The file-drop adapter of *source*, from its protocol (:meth:`hub.protocols.Protocol.file_extractor`)."""
    adapter: SftpSource = source.protocol.file_extractor(pipeline, source)
    return adapter


def ledger(warehouse: Warehouse, source: str) -> dict[str, LedgerEntry]:
    """The ledger rows of *source*, by file."""
    if LEDGER not in warehouse.tables(internal=True):
        return {}
    rows = warehouse.query(
        f"SELECT file, path, size, mtime, sha256, status, rows FROM {LEDGER} "
        f"WHERE source = '{source.replace(chr(39), chr(39) * 2)}'").to_pylist()
    return {r["file"]: LedgerEntry(**r) for r in rows}


def _ledger_row(source: str, remote: RemoteFile, sha256: str, status: str, rows: int, run_id: str) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({
        "source": [source], "file": [remote.name], "path": [remote.path], "size": pa.array([remote.size], pa.int64()),
        "mtime": pa.array([remote.mtime], pa.int64()),
        "mtime_at": pa.array([datetime.fromtimestamp(remote.mtime, UTC)], pa.timestamp("us", tz="UTC")),
        "sha256": [sha256], "status": [status], "rows": pa.array([rows], pa.int64()), "run_id": [run_id],
    })


def _record(warehouse: Warehouse, source: str, remote: RemoteFile, sha256: str, status: str, run_id: str) -> None:
    warehouse.load(LoadRequest(LEDGER, "merge", run_id, primary_key=("source", "file")),
                   [_ledger_row(source, remote, sha256, status, 0, run_id)])


def ready_files(pipeline: Pipeline, name: str) -> list[RemoteFile]:
    """The files of source *name* that are completely uploaded (see :func:`adapters.sftp.client.ready`)."""
    adapter = build_sftp(pipeline, pipeline.sources[name])
    with adapter.session() as session:
        return adapter.ready_files(session)


def ingest_file(pipeline: Pipeline, name: str, file: str, *, run_id: str,
                progress: Progress | None = None) -> FileOutcome:
    """Load one file of source *name* (its partition key: the path below the drop folder) exactly once; one
    asset span, and its SFTP calls in ``_hub_calls`` (:mod:`hub.runtime.tracing`)."""
    with tracing.asset_scope(name, run_id=run_id, partition=file, pipeline=pipeline.name,
                             sink=calls_sink(pipeline.warehouse_url), kind="file") as scope:
        try:
            outcome = _ingest_file(pipeline, name, file, run_id=run_id, progress=progress)
        except ThresholdExceeded as exc:
            emit(pipeline, "quarantine.threshold_exceeded", asset=name, run_id=run_id, file=file, error=str(exc))
            raise
        scope.rows = outcome.load.rows_loaded if outcome.load is not None else 0
        if outcome.status == "loaded" and outcome.load is not None:
            emit(pipeline, "file.loaded", asset=name, run_id=run_id, file=file, sha256=outcome.sha256,
                 table=outcome.load.table, rows_loaded=outcome.load.rows_loaded, rows_rejected=outcome.rejected)
        return outcome


def _ingest_file(pipeline: Pipeline, name: str, file: str, *, run_id: str,
                 progress: Progress | None = None) -> FileOutcome:
    source = pipeline.sources[name]
    started = time.monotonic()
    adapter = build_sftp(pipeline, source)
    warehouse = connect(pipeline.warehouse_url)
    seen = ledger(warehouse, name)
    with adapter.session() as session:
        remote = adapter.find(session, file)
        entry = seen.get(file)
        if remote is None:
            if entry is not None and entry.status != "failed":
                return FileOutcome(file, f"already {entry.status} (no longer on the server)", sha256=entry.sha256)
            raise FileMissing(f"sources.{name}: no file {file} in {adapter.url} (listed: "
                           f"{', '.join(f.name for f in adapter.listing(session)[0][:10]) or 'none'})")
        if entry is not None and entry.status == "loaded" and (entry.size, entry.mtime) == (remote.size, remote.mtime):
            after = adapter.finish(session, remote)
            return FileOutcome(file, "already loaded", after=after, sha256=entry.sha256,
                               duration_s=time.monotonic() - started)

        def twin_of(copy: LocalCopy) -> LedgerEntry | None:
            return next((e for e in seen.values() if e.sha256 == copy.sha256 and e.status == "loaded"
                         and e.file != file), None)

        fetching = adapter.start_fetch(session, remote)
        twin: LedgerEntry | None
        try:
            if adapter.streams(remote):
                # read while it downloads; its hash is known only at the end, so the twin check comes then
                try:
                    outcome = _load(pipeline, source, adapter, remote, fetching, run_id, progress, twin_of)
                    copy = fetching.result()
                except _Duplicate as dup:
                    copy, twin = dup.copy, dup.twin
                except Exception:
                    # what a download that finished first would have raised, or found, comes first
                    copy = fetching.result()
                    twin = twin_of(copy)
                    if twin is None:
                        raise
                else:
                    twin = None
            else:
                copy = fetching.result()
                twin = twin_of(copy)
                if twin is None:
                    outcome = _load(pipeline, source, adapter, remote, copy, run_id, progress, twin_of)
            if twin is not None:
                _record(warehouse, name, remote, copy.sha256, f"duplicate of {twin.file}", run_id)
                after = adapter.finish(session, remote)
                return FileOutcome(file, f"duplicate of {twin.file}", after=after, sha256=copy.sha256,
                                   duration_s=time.monotonic() - started)
        finally:
            if fetching.complete():  # else the download's own failure decided whether its partial copy stays
                fetching.path.unlink(missing_ok=True)
        outcome.after = adapter.finish(session, remote)  # only now that the rows are committed
        outcome.details["sftp_retries"] = session.retries
        if remote.escaped:
            # the partition key, ledger and messages use the escaped name; the server was addressed by its bytes
            outcome.details["remote_name"] = ("not valid UTF-8 (or holds control characters): shown escaped as "
                                              f"{remote.name}")
            log.warning("sources.%s: the name of %s is %s", name, remote.path, outcome.details["remote_name"])
        # A download an earlier attempt left half done continues from its last byte (adapters/sftp fetch).
        outcome.details["resumed"] = copy.resumed_from > 0
        if copy.resumed_from:
            outcome.details["resumed_from"] = f"byte {copy.resumed_from} of {copy.size}"
            outcome.details["resumed_bytes"] = copy.resumed_from
        if copy.resumed_in_run:
            outcome.details["download_resumes"] = copy.resumed_in_run
    outcome.duration_s = time.monotonic() - started
    return outcome


class _Duplicate(Exception):  # never leaves this module: it rolls the load back and says why
    """The file turned out, once downloaded and hashed, to be a copy of a file already loaded (*twin*)."""

    def __init__(self, copy: LocalCopy, twin: LedgerEntry) -> None:
        super().__init__(f"{copy.remote.name} is a duplicate of {twin.file}")
        self.copy, self.twin = copy, twin


def _screened(adapter: SftpSource, copy: LocalCopy | Fetching, notes: ReadNotes, mapper: Mapper,
              rules: RowRules) -> Iterator[tuple[int, Mapped]]:
    """(rows read, mapped and screened batch) for every batch of the file. Run in a thread of its own
    (:func:`hub.runtime.prefetch.prefetch`) so that parsing, casting and rules (Arrow work that releases the GIL)
    overlap with the warehouse inserting the previous batch: on two cores that took a CSV load from the sum
    of the two to about the larger."""
    for raw in adapter.batches(copy, notes):
        mapped = mapper.apply(raw)
        if rules:
            mapped = rules.apply(mapped, raw)
        yield raw.num_rows, mapped


def _load(pipeline: Pipeline, source: ResolvedSource, adapter: SftpSource, remote: RemoteFile,
          copy: LocalCopy | Fetching, run_id: str, progress: Progress | None,
          twin_of: Callable[[LocalCopy], LedgerEntry | None]) -> FileOutcome:
    """Load *copy* in one transaction. A download still in progress (:class:`Fetching`) is read as it grows: once
    it is complete its hash is checked against the ledger (*twin_of*), and a duplicate rolls the load back
    (:class:`_Duplicate`) before anything is reported, as when the check came before the load."""
    name = source.name
    keys = tuple(source.spec.primary_key)
    mapper = mapper_for(source.spec.column_specs() if source.spec.columns else None, keys, f"sources.{name}")
    rules, threshold = screens_for(source, f"sources.{name}: file {remote.name}",
                                   consequence="nothing was loaded and the file stays where it is")
    notes = ReadNotes()
    warehouse = connect(pipeline.warehouse_url)
    owners.check(warehouse, pipeline, [name])
    request = LoadRequest(name, "replace_partition", run_id, partition=remote.name, primary_key=keys)
    if isinstance(copy, LocalCopy) and adapter.source.format.csv is not None:
        native = _load_csv(pipeline, adapter, remote, copy, run_id, progress, warehouse, request, mapper, rules,
                           threshold)
        if native is not None:
            return native
    fetching = copy if isinstance(copy, Fetching) else None
    local = copy if isinstance(copy, LocalCopy) else None

    def checked() -> LocalCopy | None:
        """The complete copy, once it is (a duplicate raises :class:`_Duplicate`)."""
        if fetching is None or not fetching.done():
            return local
        done = fetching.result()
        twin = twin_of(done)
        if twin is not None:
            raise _Duplicate(done, twin)
        return done

    with warehouse.begin(request) as load:
        owners.claim(load, pipeline, [name], run_id)
        files = load.attach(LoadRequest(LEDGER, "merge", run_id, primary_key=("source", "file")))
        batches = prefetch(_screened(adapter, copy, notes, mapper, rules), name=f"hub-file-{name}",
                           cancel=fetching.abandon if fetching is not None else None)
        for rows_read, mapped in batches:
            threshold.add(rows_read, mapped.quarantine)
            load.write(mapped.batch)
            load.reject(mapped.quarantine)
            if local is None:
                local = checked()
            if progress and local is not None:  # not before a duplicate could be told apart
                progress(name, load.rows)
        local = checked() if local is None else local
        assert local is not None  # the reader ended: the download is complete
        rules.finish()
        threshold.check()  # beyond it: nothing is loaded, the file is not archived
        files.write(_ledger_row(name, remote, local.sha256, "loaded", load.rows, run_id))
        files.commit()
        result = load.commit()
    details: dict[str, Any] = {"file_bytes": local.size, "file_mtime": remote.mtime, "rows_read": threshold.total}
    if notes.pyarrow_records:  # JSON lines: blocks pyarrow's reader read (adapters/sftp/_formats.py)
        details["reader"] = "pyarrow"
        details["records_read_by_pyarrow"] = notes.pyarrow_records
    if notes.encoding_warnings:
        # loaded as declared (the spec may be right), but a likely mis-declared encoding must not pass unnoticed
        for warning in notes.encoding_warnings:
            log.warning("sources.%s: %s", name, warning)
        details["encoding_warnings"] = "\n".join(notes.encoding_warnings)
        details["mojibake_lines"] = notes.mojibake_lines
    return FileOutcome(remote.name, "loaded", load=result, rejected=threshold.rejected, sha256=local.sha256,
                       details=details)


def _load_csv(pipeline: Pipeline, adapter: SftpSource, remote: RemoteFile, copy: LocalCopy, run_id: str,
              progress: Progress | None, warehouse: Warehouse, request: LoadRequest, mapper: Mapper,
              rules: RowRules, threshold: Threshold) -> FileOutcome | None:
    """A CSV file read by DuckDB itself in the load's transaction (:mod:`hub.files_csv`); None
    when the Arrow path must load it (then nothing was changed: the transaction was rolled back)."""
    name = request.table
    try:
        with warehouse.begin(request) as load:
            plan = files_csv.plan(adapter.source.format, copy.path, remote.name, mapper, rules, load)
            if isinstance(plan, str):
                log.debug("sources.%s: %s goes the Arrow way: %s", name, remote.name, plan)
                return None
            owners.claim(load, pipeline, [name], run_id)
            files = load.attach(LoadRequest(LEDGER, "merge", run_id, primary_key=("source", "file")))
            loaded = files_csv.load(plan, load, copy.path, remote.name, mapper)
            threshold.add(loaded.rows_read, loaded.quarantine)
            threshold.check()  # beyond it: nothing is loaded, the file is not archived
            load.reject(loaded.quarantine)
            if progress:
                progress(name, load.rows)
            files.write(_ledger_row(name, remote, copy.sha256, "loaded", load.rows, run_id))
            files.commit()
            result = load.commit()
    except (files_csv.NativeUnsupported, WarehouseError) as exc:
        log.info("sources.%s: %s: DuckDB's reader gave way to the Arrow path: %s", name, remote.name, exc)
        threshold.reset()
        return None
    details: dict[str, Any] = {"file_bytes": copy.size, "file_mtime": remote.mtime, "rows_read": threshold.total,
                               "reader": "duckdb"}
    return FileOutcome(remote.name, "loaded", load=result, rejected=threshold.rejected, sha256=copy.sha256,
                       details=details)
