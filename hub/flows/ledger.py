"""The delivery ledger ``_hub_deliveries``: one row per flow, step and item key, so no effect repeats.

A row holds the hash of the payload last sent for the key, its status, the attempts, the deterministic
idempotency key sent with it, the outputs the flow read from the answer (later steps and re-runs use them)
and a short response summary. The protocol of a delivery (:mod:`hub.flows.engine`):

1. before a request goes out, the row is written as ``sent`` (attempts + 1) in a transaction of its own,
   committed: a process killed after this point leaves ``sent`` behind;
2. the outcome is written after the answer: ``ok`` (with outputs), ``failed`` (the partner said no, or
   nothing was sent), ``dead`` (failed and dead-lettered by ``on_error``), ``compensated`` (undone by a
   saga) or ``unknown`` (sent, no answer, nothing could resolve it);
3. a later run finding ``sent`` or ``unknown`` for the same payload never sends blindly: a ``verify:``
   lookup decides, or an idempotency key the partner deduplicates on makes sending again safe; otherwise
   the row stays ``unknown`` for ``hub flows review``.

``pending`` is what a dry run reports for a delivery it would send. DuckDB allows one writing process per
file, so every write is a short transaction of its own (no connection is held between them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from hub.errors import HubError
from hub.warehouse import LoadRequest, Warehouse, connect

TABLE = "_hub_deliveries"
STATUSES = ("pending", "sent", "ok", "failed", "dead", "unknown", "compensated")
#: Statuses after which the effect exists (a re-run skips an unchanged payload).
DONE = frozenset({"ok"})
#: Statuses whose outcome is not known: never sent again blindly.
OPEN = frozenset({"sent", "unknown"})
SUMMARY_CHARS = 4000
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
        out = asdict(self)
        out["outputs"] = canonical(self.outputs)
        return out


@dataclass
class _Pending:
    """A row waiting for the next group commit."""

    row: dict[str, Any]
    delivery: Delivery
    audit: dict[str, Any] | None
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


class Ledger:
    """The deliveries of one flow: read once when a run starts, each change written in its own transaction.

    On DuckDB the ledger holds one connection for the run (a flow run is a warehouse writer like a load, in
    the ``hub_duckdb`` pool under Dagster): a commit then costs about 2 ms instead of the ~45 ms of opening
    and checkpointing the file per write. Call :meth:`close` when the run ends. Other warehouses write each
    change through a merge load."""

    def __init__(self, warehouse_url: str, pipeline: str, flow: str, *, read_only: bool = False) -> None:
        self.url, self.pipeline, self.flow = warehouse_url, pipeline, flow
        self.read_only = read_only
        self._lock = threading.Lock()
        self.rows: dict[tuple[str, str], Delivery] = {}
        self._con: Any = None
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._flushing = False
        self._load()
        if not read_only and warehouse_url.startswith("duckdb:"):
            self._open_duckdb()

    def _open_duckdb(self) -> None:
        from hub.flows.audit import AUDIT_SCHEMA, AUDIT_TABLE
        from hub.warehouse.duckdb import DuckDBWarehouse

        con = DuckDBWarehouse(self.url).open()
        try:
            for table, schema in ((TABLE, SCHEMA), (AUDIT_TABLE, AUDIT_SCHEMA)):
                con.execute(_ddl(table, schema))
                have = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
                for f in schema:
                    if f.name not in have:  # the agent's audit rows have no trace id
                        con.execute(f'ALTER TABLE {table} ADD COLUMN "{f.name}" {_DUCK_TYPES[f.type]}')
        except Exception:
            con.close()
            raise
        self._con = con

    def close(self) -> None:
        """Release the warehouse connection (DuckDB); later writes open their own."""
        with self._cond:
            while self._flushing:
                self._cond.wait()
            if self._con is not None:
                self._compact()
                self._con.close()
                self._con = None

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
        table = wh.query(f"SELECT * FROM {LATEST} AS l WHERE flow = '{quoted}' AND pipeline = '{pipe}'")
        for r in table.to_pylist():
            d = Delivery(**{k: r.get(k) for k in Delivery.__dataclass_fields__ if k != "outputs"},
                         outputs=json.loads(r.get("outputs") or "{}"))
            self.rows[(d.step, d.item_key)] = d

    def get(self, step: str, item_key: str) -> Delivery | None:
        return self.rows.get((step, item_key))

    def record(self, delivery: Delivery, *, audit: dict[str, Any] | None = None) -> None:
        """Write *delivery* (and, in the same transaction, the audit row *audit*), committed on return.

        On DuckDB, writes of concurrent callers are committed together (group commit): the first caller to
        find no transaction in progress writes every row queued so far in one transaction, the others wait
        for it; each call still returns only once its own row is committed."""
        delivery.updated_at = datetime.now(UTC)
        delivery.seq = time.time_ns()
        with self._lock:
            self.rows[(delivery.step, delivery.item_key)] = delivery
            if self.read_only:
                return
            if self._con is None:
                self._record_load(delivery, audit)
                return
        entry = _Pending(delivery.row(), delivery, audit)
        with self._cond:
            self._queue.append(entry)
            while not entry.done:
                if self._flushing:
                    self._cond.wait()
                    continue
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
                    self._cond.notify_all()
        if entry.error is not None:
            raise entry.error

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

    def _write_duckdb(self, batch: list[_Pending]) -> HubError | None:
        """One transaction appending the queued transitions (and audit rows); the error, if it failed.
        Appending keeps a commit at a couple of milliseconds however large the ledger grows: the current
        state is the latest row of each key (:data:`LATEST`), and :meth:`close` compacts."""
        import duckdb

        from hub.flows.audit import AUDIT_SCHEMA, AUDIT_TABLE

        con = self._con
        if con is None:
            return HubError(f"flow {self.flow}: the delivery ledger is closed")
        now = datetime.now(UTC)
        names = [f.name for f in SCHEMA]
        anames = [f.name for f in AUDIT_SCHEMA]
        insert = (f"INSERT INTO {TABLE} ({', '.join(f'{chr(34)}{n}{chr(34)}' for n in names)}, _hub_run_id, "
                  f"_hub_loaded_at) VALUES ({', '.join('?' for _ in range(len(names) + 2))})")
        audit_insert = (f"INSERT INTO {AUDIT_TABLE} ({', '.join(f'{chr(34)}{n}{chr(34)}' for n in anames)}, "
                        f"_hub_run_id, _hub_loaded_at) VALUES ({', '.join('?' for _ in range(len(anames) + 2))})")
        try:
            con.execute("BEGIN TRANSACTION")
            for e in batch:  # parameterized single-row inserts: cheaper than registering Arrow for a few rows
                con.execute(insert, [*(e.row[n] for n in names), e.delivery.run_id, now])
                if e.audit is not None:
                    con.execute(audit_insert, [*(e.audit.get(n) for n in anames), e.delivery.run_id, now])
            con.execute("COMMIT")
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
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
