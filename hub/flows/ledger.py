"""The delivery ledger ``_hub_deliveries``: one row per flow, step and item key, so no effect repeats.

A row holds the hash of the payload last sent for the key, its status, the attempts, the deterministic
idempotency key sent with it, the outputs the flow read from the answer (later steps and re-runs use them)
and a short response summary. The protocol of a delivery (:mod:`hub.flows.engine`):

1. before a request goes out, the row is written as ``sent`` (attempts + 1), committed: a process killed
   after this point leaves ``sent`` behind. A flow queues the ``sent`` rows of the items it prepares ahead
   of their turn (:mod:`hub.flows.engine`) and commits them with :meth:`Ledger.commit` when the first of
   them is about to leave: one transaction for a batch of items, each row still committed before its own
   request leaves (a crash can therefore leave ``sent`` rows of prepared items that never left: resolved
   like any other, never sent blindly);
2. the outcome is written after the answer: ``ok`` (with outputs), ``failed`` (the partner said no, or
   nothing was sent), ``dead`` (failed and dead-lettered by ``on_error``), ``compensated`` (undone by a
   saga) or ``unknown`` (sent, no answer, nothing could resolve it). Outcomes are written *deferred*
   (``durable=False``): committed with the next ``sent`` row, or about :data:`FLUSH_AFTER` seconds later, or
   when the ledger closes. A crash before then loses only the outcome: the row stays ``sent``, which a
   later run treats as below (never as "not sent");
3. a later run finding ``sent`` or ``unknown`` for the same payload never sends blindly: a ``verify:``
   lookup decides, or an idempotency key the partner deduplicates on makes sending again safe; otherwise
   the row stays ``unknown`` for ``hub flows review``.

``pending`` is what a dry run reports for a delivery it would send, and what a ``sent`` row becomes again when
its run stopped (``max_failures``) before the request's turn came: it never left. DuckDB allows one writing
process per file: the ledger holds one connection for the run (see :class:`Ledger`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from hub.errors import HubError
from hub.warehouse import LoadRequest, Warehouse, connect
from hub.warehouse.base import LOADED_AT_COLUMN, RUN_COLUMN

TABLE = "_hub_deliveries"
STATUSES = ("pending", "sent", "ok", "failed", "dead", "unknown", "compensated")
#: Statuses after which the effect exists (a re-run skips an unchanged payload).
DONE = frozenset({"ok"})
#: Statuses whose outcome is not known: never sent again blindly.
OPEN = frozenset({"sent", "unknown"})
SUMMARY_CHARS = 4000
#: Seconds a deferred row (an outcome) may wait for the next commit before the ledger commits it on its own.
FLUSH_AFTER = 0.2
SCHEMA = pa.schema([
    ("flow", pa.string()), ("step", pa.string()), ("item_key", pa.string()), ("pipeline", pa.string()),
    ("action", pa.string()), ("payload_hash", pa.string()), ("status", pa.string()), ("attempts", pa.int64()),
    ("idempotency_key", pa.string()), ("request", pa.string()), ("outputs", pa.string()),
    ("response", pa.string()), ("error", pa.string()), ("run_id", pa.string()), ("trace_id", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")), ("updated_at", pa.timestamp("us", tz="UTC")),
    ("seq", pa.int64())])
#: The current state of every delivery: the latest row of each key (DuckDB appends one row per transition
#: during a run and keeps only the latest at the end of it; a killed run leaves its transitions).
LATEST = (f"(SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY flow, step, item_key ORDER BY seq DESC "
          f"NULLS LAST) AS _n FROM {TABLE}) AS d WHERE _n = 1)")


def canonical(value: Any) -> str:
    """*value* as canonical JSON (sorted keys, no spaces): what payload hashes are computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def payload_hash(action: str, request: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({"action": action, "request": request}).encode()).hexdigest()


def idempotency_key(flow: str, step: str, item_key: str, digest: str) -> str:
    """The same flow, step, item and payload always give the same key (a partner that stores the first answer
    per key then answers a repeat without acting twice); a changed payload gets a new one."""
    return hashlib.sha256(f"{flow}\x1f{step}\x1f{item_key}\x1f{digest}".encode()).hexdigest()[:40]


@dataclass
class Delivery:
    """One row of the ledger."""

    flow: str
    step: str
    item_key: str
    pipeline: str
    action: str
    payload_hash: str
    status: str = "pending"
    attempts: int = 0
    idempotency_key: str | None = None
    request: str | None = None  # masked
    outputs: dict[str, Any] = field(default_factory=dict)
    response: str | None = None
    error: str | None = None
    run_id: str | None = None
    trace_id: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    seq: int = 0  # orders the transitions of a key (nanoseconds since the epoch when written)

    def row(self) -> dict[str, Any]:
        """The row as written (a shallow copy: ``asdict`` deep-copies every value, a cost on every write)."""
        out = {name: getattr(self, name) for name in _FIELDS}
        out["outputs"] = canonical(self.outputs)
        return out


_FIELDS = tuple(Delivery.__dataclass_fields__)


@dataclass
class Written:
    """A row recorded in the ledger, waiting for (or done with) its commit: see :meth:`Ledger.commit`."""

    row: dict[str, Any]
    delivery: Delivery
    audit: dict[str, Any] | None
    queued: float = 0.0  # time.monotonic() when queued
    durable: bool = True  # its caller waits for the commit (else the error is kept for the next call)
    done: bool = False
    error: HubError | None = None


def summary(value: Any) -> str:
    """A response as JSON, cut to :data:`SUMMARY_CHARS`."""
    text = canonical(value)
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS] + "..."


#: DDL of the two tables when the ledger creates them (the columns a warehouse load would give them).
_META = '"_hub_partition" VARCHAR, "_hub_run_id" VARCHAR, "_hub_loaded_at" TIMESTAMPTZ'
_DUCK_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN", pa.float64(): "DOUBLE",
               pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ"}


def _ddl(table: str, schema: pa.Schema) -> str:
    cols = ", ".join(f'"{f.name}" {_DUCK_TYPES[f.type]}' for f in schema)
    return f'CREATE TABLE IF NOT EXISTS "{table}" ({cols}, {_META})'


def _arrow(columns: tuple[str, ...], schema: pa.Schema, rows: list[dict[str, Any]], run_ids: list[str | None],
           now: datetime) -> pa.Table:
    """*rows* as an Arrow table with exactly the table's *columns*, in its order (a table made by an older hub, or
    by the agent's audit, may order them otherwise): the schema's columns from the rows, the run id and load
    time, nulls for any other column."""
    types = {f.name: f.type for f in schema}
    arrays: list[pa.Array] = []
    for name in columns:
        if name in types:
            arrays.append(pa.array([r.get(name) for r in rows], types[name]))
        elif name == RUN_COLUMN:
            arrays.append(pa.array(run_ids, pa.string()))
        elif name == LOADED_AT_COLUMN:
            arrays.append(pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")))
        else:
            arrays.append(pa.nulls(len(rows)))
    return pa.Table.from_arrays(arrays, names=list(columns))


class Ledger:
    """The deliveries of one flow: read once when a run starts, each change committed before it matters.

    On DuckDB the ledger holds one connection for the run (a flow run is a warehouse writer like a load, in
    the ``hub_duckdb`` pool under Dagster): a commit then costs a couple of milliseconds (the WAL's sync)
    instead of the ~45 ms of opening and checkpointing the file per write. Rows written at the same time by
    several threads are committed together (group commit), and deferred rows ride along with the next
    commit, so a run pays about one commit per batch of items rather than two per request. Call
    :meth:`close` when the run ends. Other warehouses write each change through a merge load."""

    def __init__(self, warehouse_url: str, pipeline: str, flow: str, *, read_only: bool = False) -> None:
        self.url, self.pipeline, self.flow = warehouse_url, pipeline, flow
        self.read_only = read_only
        self._lock = threading.Lock()
        self.rows: dict[tuple[str, str], Delivery] = {}
        self._con: Any = None
        self._cond = threading.Condition()
        self._queue: list[Written] = []
        self._flushing = False
        self._closing = False
        self._closed = threading.Event()  # ends the background flush
        self._flusher: threading.Thread | None = None
        self._deferred_error: HubError | None = None  # a failed commit of deferred rows, raised by the next call
        self.commits = 0  # transactions written (the benchmark reports rows per commit)
        self._layout: dict[str, tuple[str, ...]] = {}  # DuckDB: each table's columns, in the table's order
        if not read_only and warehouse_url.startswith("duckdb:"):
            con = self._open_duckdb()  # and read the rows through it: each open of the file costs tens of ms
            try:
                self._rows_from(con.sql(f"SELECT * FROM {LATEST} AS l WHERE flow = ? AND pipeline = ?",
                                        params=[flow, pipeline]).to_arrow_table())
            except Exception:
                con.close()
                self._con = None
                raise
        else:
            self._load()

    def _open_duckdb(self) -> Any:
        from hub.flows.audit import AUDIT_SCHEMA, AUDIT_TABLE
        from hub.warehouse.duckdb import DuckDBWarehouse

        con = DuckDBWarehouse(self.url).open()
        try:
            for table, schema in ((TABLE, SCHEMA), (AUDIT_TABLE, AUDIT_SCHEMA)):
                con.execute(_ddl(table, schema))
                have = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
                for f in schema:
                    if f.name not in have:  # the agent's audit rows have no trace id
                        con.execute(f'ALTER TABLE {table} ADD COLUMN "{f.name}" {_DUCK_TYPES[f.type]}')
                        have.append(f.name)
                self._layout[table] = tuple(have)
        except Exception:
            con.close()
            raise
        self._con = con
        return con

    def flush(self) -> None:
        """Commit every deferred row now; the error of a failed commit of deferred rows, if one failed."""
        with self._cond:
            if self._queue and self._con is not None:
                self._wait_committed(self._queue[-1])
            error, self._deferred_error = self._deferred_error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Commit the deferred rows and release the warehouse connection (DuckDB); later writes open their own.
        Raises the error of a deferred commit that failed (those outcomes stay ``sent`` in the ledger: a
        later run resolves them like any delivery whose answer was not recorded)."""
        with self._cond:
            if self._queue and self._con is not None:
                self._wait_committed(self._queue[-1])
            self._closing = True
            self._closed.set()
            while self._flushing:
                self._cond.wait()
            if self._con is not None:
                self._compact()
                self._con.close()
                self._con = None
            error, self._deferred_error = self._deferred_error, None
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join()
            self._flusher = None
        if error is not None:
            raise error

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _warehouse(self) -> Warehouse:
        return connect(self.url)

    def _load(self) -> None:
        wh = self._warehouse()
        if TABLE not in wh.tables(internal=True):
            return
        quoted = self.flow.replace("'", "''")
        pipe = self.pipeline.replace("'", "''")
        self._rows_from(wh.query(f"SELECT * FROM {LATEST} AS l WHERE flow = '{quoted}' AND pipeline = '{pipe}'"))

    def _rows_from(self, table: pa.Table) -> None:
        for r in table.to_pylist():
            d = Delivery(**{k: r.get(k) for k in Delivery.__dataclass_fields__ if k != "outputs"},
                         outputs=json.loads(r.get("outputs") or "{}"))
            self.rows[(d.step, d.item_key)] = d

    def get(self, step: str, item_key: str) -> Delivery | None:
        return self.rows.get((step, item_key))

    def record(self, delivery: Delivery, *, audit: dict[str, Any] | None = None,
               durable: bool = True) -> Written | None:
        """Write *delivery* (and, in the same transaction, the audit row *audit*).

        *durable*: committed on return. On DuckDB, writes of concurrent callers are committed together (group
        commit): the first caller to find no transaction in progress writes every row queued so far in one
        transaction, the others wait for it; each call still returns only once its own row is committed.

        Not *durable*: queued, and committed by the next commit of any row, by :meth:`commit` of the returned
        :class:`Written` (a ``sent`` row, committed right before its request leaves: the rows of the items
        prepared meanwhile go in the same transaction), by a background flush about :data:`FLUSH_AFTER`
        seconds later, or by :meth:`flush` / :meth:`close`, whichever comes first. The row is current in
        :attr:`rows` at once; queued rows are committed in the order they were recorded. Returns None when
        the row was written at once (a read-only ledger, or a warehouse other than DuckDB)."""
        delivery.updated_at = datetime.now(UTC)
        delivery.seq = time.time_ns()
        with self._lock:
            self.rows[(delivery.step, delivery.item_key)] = delivery
            if self.read_only:
                return None
            if self._con is None:
                self._record_load(delivery, audit)
                return None
        entry = Written(delivery.row(), delivery, audit, time.monotonic(), durable)
        with self._cond:
            if self._closing:
                raise HubError(f"flow {self.flow}: the delivery ledger is closed")
            self._queue.append(entry)
            if not durable:
                if self._flusher is None:
                    self._flusher = threading.Thread(target=self._flush_later, name=f"ledger-{self.flow}",
                                                     daemon=True)
                    self._flusher.start()
                return entry  # no notify: waking the threads waiting on _cond per row cost more than the row
            self._wait_committed(entry)
            error, self._deferred_error = self._deferred_error, None
        if entry.error is not None:
            raise entry.error
        if error is not None:
            raise error
        return entry

    def commit(self, written: Written | None) -> None:
        """Make sure the row *written* (from :meth:`record`) is committed, with every row queued before it:
        at once when an earlier transaction took it along, else in one transaction now."""
        if written is None or written.done:
            if written is not None and written.error is not None:
                raise written.error
            return
        with self._cond:
            written.durable = True  # its error is raised here, not kept for a later call
            self._wait_committed(written)
        if written.error is not None:
            raise written.error

    def _wait_committed(self, entry: Written) -> None:
        """Until *entry* is committed: write the queue when no other thread is writing it (``_cond`` held)."""
        while not entry.done:
            if self._flushing:
                self._cond.wait()
                continue
            self._write_queue()

    def _write_queue(self) -> None:
        """Write every queued row in one transaction (``_cond`` held on entry and exit, released while writing)."""
        self._flushing = True
        batch, self._queue = self._queue, []
        self._cond.release()
        try:
            error = self._write_duckdb(batch)
        finally:
            self._cond.acquire()
            self._flushing = False
            for e in batch:
                e.done, e.error = True, error
            if error is not None and self._deferred_error is None and not all(e.durable for e in batch):
                self._deferred_error = error
            self._cond.notify_all()

    def _flush_later(self) -> None:
        """The background flush: deferred rows are committed about :data:`FLUSH_AFTER` seconds (at most one and a
        half times that) after they were queued, when no other commit took them along sooner (a run waiting on
        a slow partner or a backoff). It looks twice per period rather than being woken per row."""
        while not self._closed.wait(FLUSH_AFTER / 2):
            with self._cond:
                if self._closing:
                    return
                if self._queue and not self._flushing and \
                        self._queue[0].queued + FLUSH_AFTER <= time.monotonic():
                    self._write_queue()

    def _record_load(self, delivery: Delivery, audit: dict[str, Any] | None) -> None:
        batch = pa.RecordBatch.from_pylist([delivery.row()], schema=SCHEMA)
        try:
            with self._warehouse().begin(LoadRequest(table=TABLE, mode="merge", run_id=delivery.run_id or "",
                                                     primary_key=("flow", "step", "item_key"))) as load:
                load.write(batch)
                if audit is not None:
                    from hub.flows.audit import AUDIT_SCHEMA, AUDIT_TABLE

                    audited = load.attach(LoadRequest(table=AUDIT_TABLE, mode="merge",
                                                      run_id=delivery.run_id or "", primary_key=("call_id",)))
                    audited.write(pa.RecordBatch.from_pylist([audit], schema=AUDIT_SCHEMA))
                    audited.commit()
                load.commit()
        except HubError as exc:
            raise HubError(f"flow {self.flow}: the delivery ledger {TABLE} could not be written "
                           f"({delivery.step} for {delivery.item_key}, status {delivery.status}): {exc}") from None

    def _write_duckdb(self, batch: list[Written]) -> HubError | None:
        """One transaction appending the queued transitions (and audit rows); the error, if it failed.
        Appending keeps a commit at a couple of milliseconds however large the ledger grows: the current
        state is the latest row of each key (:data:`LATEST`), and :meth:`close` compacts. Each table's rows go
        in as one Arrow relation: a multi-row ``INSERT ... VALUES`` cost DuckDB ~0.2 ms of planning per row (a
        batch of a flow holds ~30), an Arrow insert about the same for any number of rows."""
        import duckdb

        from hub.flows.audit import AUDIT_SCHEMA, AUDIT_TABLE

        con = self._con
        if con is None:
            return HubError(f"flow {self.flow}: the delivery ledger is closed")
        now = datetime.now(UTC)
        audited = [e for e in batch if e.audit is not None]
        try:
            tables = [(TABLE, _arrow(self._layout[TABLE], SCHEMA, [e.row for e in batch],
                                     [e.delivery.run_id for e in batch], now))]
            if audited:
                tables.append((AUDIT_TABLE, _arrow(self._layout[AUDIT_TABLE], AUDIT_SCHEMA,
                                                   [e.audit for e in audited if e.audit is not None],
                                                   [e.delivery.run_id for e in audited], now)))
            con.execute("BEGIN TRANSACTION")
            for table, rows in tables:
                con.from_arrow(rows).insert_into(table)
            con.execute("COMMIT")
            self.commits += 1
        except (duckdb.Error, pa.ArrowException) as exc:
            with contextlib.suppress(duckdb.Error):  # no transaction when the rows could not be converted
                con.execute("ROLLBACK")
            return HubError(f"flow {self.flow}: the delivery ledger {TABLE} could not be written "
                            f"({len(batch)} row(s)): {exc}")
        return None

    def _compact(self) -> None:
        """Keep only the latest row of each of this flow's deliveries (one short transaction)."""
        import duckdb

        with contextlib.suppress(duckdb.Error):  # tidiness only: readers take the latest row of each key anyway
            self._con.execute(
                f"DELETE FROM {TABLE} AS t WHERE flow = ? AND EXISTS (SELECT 1 FROM {TABLE} AS n WHERE "
                "n.flow = t.flow AND n.step = t.step AND n.item_key = t.item_key AND n.seq > t.seq)", [self.flow])

    def open_rows(self) -> list[Delivery]:
        """Deliveries whose outcome is not known (``sent`` or ``unknown``)."""
        return [d for d in self.rows.values() if d.status in OPEN]


def all_open(warehouse_url: str) -> list[dict[str, Any]]:
    """Every delivery of every flow whose outcome is unknown, or dead-lettered: what ``hub flows review``
    lists."""
    wh = connect(warehouse_url)
    if TABLE not in wh.tables(internal=True):
        return []
    return wh.query(f"SELECT pipeline, flow, step, item_key, action, status, attempts, idempotency_key, error, "
                    f"run_id, updated_at FROM {LATEST} AS l WHERE status IN ('sent', 'unknown', 'dead', 'failed') "
                    "ORDER BY pipeline, flow, step, item_key").to_pylist()
