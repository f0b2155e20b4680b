"""The event store: every received message, appended once, in order, before the broker hears back.

**Layout.** DuckDB allows one writing process per file, and a ``hub listen`` appending all day to the
warehouse file would block every Dagster run loading it (and be blocked by a long backfill). So for a
DuckDB warehouse the store is a SQLite database of its own next to the warehouse file
(``warehouse/hub.duckdb`` → ``warehouse/hub.events.sqlite``), in WAL mode: one writer at a time across
processes (a lock held for the few milliseconds of an append), readers never blocked, commits durable
(``synchronous=FULL``: an acknowledged message survives a power cut). The warehouse reads the store when a
table absorbs its events (:mod:`hub.events.absorb`), in a short transaction of its own.

For a PostgreSQL warehouse the same tables live in the warehouse database, in the warehouse's schema
(``_hub_events``, ``_hub_dead_letters``, ``_hub_streams``): PostgreSQL has several writers, so listeners,
sensors and loads share it without a file of their own. Appends of one source are serialized by a row lock
on its ``_hub_streams`` row (taken before positions are drawn from the sequence), so within a source the
positions are increasing *in commit order*: an absorb that has read up to position P can never later see a
committed event of that source below P. Appends of different sources run side by side.

**Tables.** ``events``: position (global, increasing), source, version (per source, 1, 2, ...), message id,
key, type, stream (queue/subject/topic), headers (JSON), payload, published and received time;
``UNIQUE(source, message_id)``: a redelivery or a re-published duplicate is dropped (and counted).
``dead_letters``: messages that will not be stored (unparseable, delivered ``max_deliver`` times), with
the reason and attempts, unique per (source, message id). ``streams``: per source its last version and
counters, and the position the table has absorbed (a copy of the warehouse's mark, written after the
warehouse committed: it is never ahead, so retention can trust it).

An append is one transaction (:meth:`EventStore.append`); the caller acknowledges the broker only after it
returned. Both stores share the append logic (:class:`EventStore`): the batch's known ids are looked up in
one query, the new events inserted with one ``executemany``, the dead letters upserted with another.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hub.errors import HubError
from hub.runtime.secrets import mask_url


class EventStoreError(HubError):
    """The event store cannot be opened or written."""


@dataclass
class Incoming:
    """A message ready to append (its id decided) or to dead-letter (*reason* set)."""

    message_id: str
    payload: bytes
    key: str | None = None
    type: str | None = None
    stream: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    published_at: datetime | None = None
    attempts: int = 1
    reason: str | None = None  # set: goes to the dead letters


@dataclass
class Appended:
    """What one append did: per incoming message, its outcome (``stored``, ``duplicate``, ``dead``)."""

    outcomes: list[str]
    first: int | None = None  # positions of the events stored by this append
    last: int | None = None

    def count(self, outcome: str) -> int:
        return self.outcomes.count(outcome)


@dataclass(frozen=True)
class Event:
    position: int
    source: str
    version: int
    message_id: str
    key: str | None
    type: str | None
    stream: str | None
    headers: str
    payload: bytes
    published_at: str | None
    received_at: str


@dataclass(frozen=True)
class DeadLetter:
    id: int
    source: str
    message_id: str
    key: str | None
    type: str | None
    stream: str | None
    headers: str
    payload: bytes
    reason: str
    attempts: int
    dead_at: str


@dataclass(frozen=True)
class StreamStatus:
    source: str
    events: int  # stored now (after retention)
    last_position: int
    version: int
    duplicates: int
    dead: int
    absorbed: int  # the table's mark, as far as the store knows
    pending: int  # stored events after the mark
    absorbed_at: str | None
    absorb_error: str | None


_EVENT_COLUMNS = ("position, source, version, message_id, key, type, stream, headers, payload, published_at, "
                  "received_at")
_DEAD_COLUMNS = "id, source, message_id, key, type, stream, headers, payload, reason, attempts, dead_at"
#: Message ids looked up per query (SQLite's and PostgreSQL's bind-parameter limits are far above).
_LOOKUP = 900


class EventStore(ABC):
    """The store's interface and the logic both backends share (see the module notes).

    SQL is written once, with ``?`` placeholders and ``{events}`` / ``{dead}`` / ``{streams}`` for the table
    names; a backend fills those in (:meth:`_sql`) and says how to connect, start an append's transaction
    (holding the source's lock) and spell times. Connections are one per thread."""

    where: str  # for messages
    _tables: dict[str, str]
    _errors: tuple[type[BaseException], ...]
    _greatest = "max"  # the two-argument maximum
    _lock_row = ""  # appended to the SELECT of the source's stream row inside an append
    _ts = "?"  # a time parameter

    def __init__(self) -> None:
        self._local = threading.local()

    # -- the backend -----------------------------------------------------------------------------------

    @abstractmethod
    def _connect(self) -> Any:
        """A new connection in autocommit mode (transactions are begun explicitly)."""

    @abstractmethod
    def _begin(self, con: Any) -> None:
        """Begin an append's transaction."""

    @abstractmethod
    def _rollback(self, con: Any) -> None:
        """Roll back the transaction in progress, if any (and drop a broken connection)."""

    def _time(self, when: datetime) -> Any:
        """*when* as a parameter."""
        return when.isoformat()

    def _text(self, value: Any) -> str | None:
        """A time read back, as ISO text."""
        return value.isoformat() if isinstance(value, datetime) else value

    def _sql(self, sql: str) -> str:
        return sql.format(**self._tables, greatest=self._greatest, ts=self._ts)

    def _con(self) -> Any:
        con = getattr(self._local, "con", None)
        if con is None:
            try:
                con = self._connect()
            except self._errors as exc:
                raise EventStoreError(f"cannot open the event store {self.where}: {exc}") from None
            self._local.con = con
        return con

    def _run(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._con().execute(self._sql(sql), tuple(args))

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            with contextlib.suppress(Exception):
                con.close()
            self._local.con = None

    def _transaction(self, what: str, work: Any) -> Any:
        """Run ``work(con)`` in one append transaction; any database error rolls back and becomes an
        :class:`EventStoreError` saying that nothing was stored."""
        con = self._con()
        try:
            self._begin(con)
            done = work(con)
            con.execute("COMMIT")
        except self._errors as exc:
            self._rollback(con)
            raise EventStoreError(f"{what} in {self.where} failed, nothing was stored: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}") from None
        except BaseException:
            self._rollback(con)
            raise
        return done

    # -- writing --------------------------------------------------------------------------------------

    def append(self, source: str, messages: Sequence[Incoming]) -> Appended:
        """Append *messages* of *source* in ONE transaction: new ids become events (with the next positions
        and versions), known ids are dropped as duplicates, messages with a reason become dead letters. When
        this returns, everything is durable: acknowledge the broker then, never before."""
        return self._transaction(f"appending {len(messages)} message(s) of {source}",
                                 lambda con: self._write(con, source, messages))

    def _write(self, con: Any, source: str, messages: Sequence[Incoming]) -> Appended:
        q = self._sql
        con.execute(q("INSERT INTO {streams} (source) VALUES (?) ON CONFLICT (source) DO NOTHING"), (source,))
        start, duplicates, dead = con.execute(
            q("SELECT version, duplicates, dead FROM {streams} WHERE source = ?" + self._lock_row), (source,)
        ).fetchone()
        ids = list(dict.fromkeys(m.message_id for m in messages))
        known: set[str] = set()
        for i in range(0, len(ids), _LOOKUP):
            part = ids[i:i + _LOOKUP]
            found = con.execute(q("SELECT message_id FROM {events} WHERE source = ? AND message_id IN ("
                                  + ",".join("?" * len(part)) + ")"), (source, *part)).fetchall()
            known.update(r[0] for r in found)
        received = self._time(datetime.now(UTC))
        version = start
        outcomes: list[str] = []
        events: list[tuple[Any, ...]] = []
        letters: list[tuple[Any, ...]] = []
        for m in messages:
            if m.message_id in known:
                # stored before (a redelivery, a re-published duplicate, an earlier message of this batch);
                # never dead-lettered either: its first delivery is in the store, only the ack was lost
                duplicates += 1
                outcomes.append("duplicate")
                continue
            headers = json.dumps(m.headers, ensure_ascii=False, sort_keys=True)
            if m.reason is not None:
                letters.append((source, m.message_id, m.key, m.type, m.stream, headers, m.payload, m.reason,
                                m.attempts, received))
                dead += 1
                outcomes.append("dead")
                continue
            version += 1
            known.add(m.message_id)
            published = self._time(m.published_at) if m.published_at else None
            events.append((source, version, m.message_id, m.key, m.type, m.stream, headers, m.payload, published,
                           received))
            outcomes.append("stored")
        cur = con.cursor()
        if letters:
            cur.executemany(q(
                "INSERT INTO {dead} (source, message_id, key, type, stream, headers, payload, reason, attempts, "
                "dead_at) VALUES (?,?,?,?,?,?,?,?,?,{ts}) ON CONFLICT (source, message_id) DO UPDATE SET "
                "reason = excluded.reason, attempts = {greatest}({dead}.attempts, excluded.attempts), "
                "dead_at = excluded.dead_at"), letters)
        first = last = None
        if events:
            cur.executemany(q(
                "INSERT INTO {events} (source, version, message_id, key, type, stream, headers, payload, "
                "published_at, received_at) VALUES (?,?,?,?,?,?,?,?,{ts},{ts})"), events)
            first, last = con.execute(q("SELECT min(position), max(position) FROM {events} WHERE source = ? "
                                        "AND version > ?"), (source, start)).fetchone()
        con.execute(q("UPDATE {streams} SET version = ?, duplicates = ?, dead = ? WHERE source = ?"),
                    (version, duplicates, dead, source))
        return Appended(outcomes, first, last)

    def dead_letter_events(self, source: str, reasons: dict[int, str]) -> int:
        """Move the stored events of *source* at the positions of *reasons* to the dead letters, each with its
        reason, in one transaction (an absorb's rules rejected them beyond the threshold). They leave the
        events table, so the next absorb and every replay read the store without them; ``hub events retry``
        brings one back as a new event. The number moved."""
        if not reasons:
            return 0

        def work(con: Any) -> int:
            q = self._sql
            con.execute(q("INSERT INTO {streams} (source) VALUES (?) ON CONFLICT (source) DO NOTHING"), (source,))
            con.execute(q("SELECT dead FROM {streams} WHERE source = ?" + self._lock_row), (source,)).fetchone()
            now = self._time(datetime.now(UTC))
            moved = 0
            for position, reason in sorted(reasons.items()):
                row = con.execute(q("SELECT message_id, key, type, stream, headers, payload FROM {events} "
                                    "WHERE source = ? AND position = ?"), (source, position)).fetchone()
                if row is None:
                    continue
                con.execute(q(
                    "INSERT INTO {dead} (source, message_id, key, type, stream, headers, payload, reason, attempts, "
                    "dead_at) VALUES (?,?,?,?,?,?,?,?,1,{ts}) ON CONFLICT (source, message_id) DO UPDATE SET "
                    "reason = excluded.reason, attempts = {dead}.attempts + 1, dead_at = excluded.dead_at"),
                    (source, *row[:5], bytes(row[5]), reason, now))
                con.execute(q("DELETE FROM {events} WHERE source = ? AND position = ?"), (source, position))
                moved += 1
            con.execute(q("UPDATE {streams} SET dead = dead + ? WHERE source = ?"), (moved, source))
            return moved

        return self._transaction(f"dead-lettering {len(reasons)} event(s) of {source}", work)

    def mark_absorbed(self, source: str, position: int, error: str | None = None) -> None:
        """Copy the table's new mark (after the warehouse committed it), or the last absorb's error."""
        self._run("INSERT INTO {streams} (source) VALUES (?) ON CONFLICT (source) DO NOTHING", (source,))
        if error is not None:
            self._run("UPDATE {streams} SET absorb_error = ? WHERE source = ?", (error, source))
            return
        self._run("UPDATE {streams} SET absorbed = ?, absorbed_at = {ts}, absorb_error = NULL WHERE source = ?",
                  (position, self._time(datetime.now(UTC)), source))

    def forget(self, source: str, keep: float, *, absorbed: int) -> int:
        """Retention: delete events of *source* received more than *keep* seconds ago, but only those at or
        before *absorbed* (the table has them). The number deleted."""
        cutoff = self._time(datetime.now(UTC) - timedelta(seconds=keep))
        cur = self._run("DELETE FROM {events} WHERE source = ? AND received_at < {ts} AND position <= ?",
                        (source, cutoff, absorbed))
        return int(cur.rowcount)

    # -- reading --------------------------------------------------------------------------------------

    def _event(self, row: Sequence[Any]) -> Event:
        return Event(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], bytes(row[8]),
                     self._text(row[9]), self._text(row[10]) or "")

    def read(self, source: str, *, after: int = 0, upto: int | None = None, since: str | None = None,
             until: str | None = None, limit: int = 5000) -> Iterator[list[Event]]:
        """The events of *source* after position *after* (up to *upto*; received between *since* and
        *until*, ISO times), in position order, *limit* at a time (bounded memory)."""
        for rows in self._pages(_EVENT_COLUMNS, source, after, upto, since, until, limit):
            yield [self._event(r) for r in rows]

    def read_payloads(self, source: str, *, after: int = 0, upto: int | None = None, since: str | None = None,
                      until: str | None = None, limit: int = 5000) -> Iterator[list[tuple[int, str, bytes]]]:
        """Like :meth:`read`, only (position, message id, payload) per event: what an absorb needs, without
        building an :class:`Event` per row (a third of a replay's time)."""
        yield from self._pages("position, message_id, payload", source, after, upto, since, until, limit)

    def _pages(self, columns: str, source: str, after: int, upto: int | None, since: str | None,
               until: str | None, limit: int) -> Iterator[list[Any]]:
        """*columns* (the position first) of *source*'s events in a position range, a page of *limit* at a time."""
        while True:
            sql = f"SELECT {columns} FROM {{events}} WHERE source = ? AND position > ?"
            args: list[Any] = [source, after]
            if upto is not None:
                sql += " AND position <= ?"
                args.append(upto)
            if since is not None:
                sql += " AND received_at >= {ts}"
                args.append(since)
            if until is not None:
                sql += " AND received_at <= {ts}"
                args.append(until)
            rows = self._run(sql + " ORDER BY position LIMIT ?", (*args, limit)).fetchall()
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    def latest(self, source: str, n: int) -> list[Event]:
        """The last *n* events of *source* (newest first): what a contract samples."""
        rows = self._run(f"SELECT {_EVENT_COLUMNS} FROM {{events}} WHERE source = ? ORDER BY position DESC LIMIT ?",
                         (source, n)).fetchall()
        return [self._event(r) for r in rows]

    def position_after(self, source: str, after: int, n: int) -> int:
        """The position of the *n*-th event of *source* after *after* (the last one when there are fewer)."""
        row = self._run("SELECT max(position) FROM (SELECT position FROM {events} WHERE source = ? AND "
                        "position > ? ORDER BY position LIMIT ?) AS firsts", (source, after, n)).fetchone()
        return int(row[0] or after)

    def position_at(self, source: str, when: str, *, first: bool) -> int:
        """The first position of *source* received at or after *when* (*first*), or the last one received at
        or before it; 0 when there is none."""
        sql = ("SELECT min(position) FROM {events} WHERE source = ? AND received_at >= {ts}" if first else
               "SELECT max(position) FROM {events} WHERE source = ? AND received_at <= {ts}")
        row = self._run(sql, (source, when)).fetchone()
        return int(row[0] or 0)

    def last_position(self, source: str) -> int:
        row = self._run("SELECT max(position) FROM {events} WHERE source = ?", (source,)).fetchone()
        return int(row[0] or 0)

    def status(self, sources: Sequence[str]) -> list[StreamStatus]:
        out = []
        for source in sources:
            row = self._run("SELECT version, duplicates, dead, absorbed, absorbed_at, absorb_error FROM {streams} "
                            "WHERE source = ?", (source,)).fetchone() or (0, 0, 0, 0, None, None)
            count, last = self._run("SELECT count(*), coalesce(max(position), 0) FROM {events} WHERE source = ?",
                                    (source,)).fetchone()
            pending = self._run("SELECT count(*) FROM {events} WHERE source = ? AND position > ?",
                                (source, row[3])).fetchone()[0]
            dead_now = self._run("SELECT count(*) FROM {dead} WHERE source = ?", (source,)).fetchone()[0]
            out.append(StreamStatus(source, int(count), int(last), int(row[0]), int(row[1]), int(dead_now),
                                    int(row[3]), int(pending), self._text(row[4]), row[5]))
        return out

    def dead_letters(self, source: str | None = None, ids: Sequence[int] | None = None) -> list[DeadLetter]:
        sql, args = f"SELECT {_DEAD_COLUMNS} FROM {{dead}} WHERE 1=1", list[Any]()
        if source is not None:
            sql += " AND source = ?"
            args.append(source)
        if ids:
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            args.extend(ids)
        return [DeadLetter(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bytes(r[7]), r[8], r[9], self._text(r[10]) or "")
                for r in self._run(sql + " ORDER BY id", args).fetchall()]

    def resolve_dead(self, letter: DeadLetter, retried: Incoming) -> str:
        """Send a dead letter through again, in one transaction: appended as an event (and removed from the
        dead letters) when *retried* has no reason, else kept with the new reason and one more attempt."""
        def work(con: Any) -> str:
            if retried.reason is not None:
                con.execute(self._sql("UPDATE {dead} SET reason = ?, attempts = attempts + 1, dead_at = {ts} "
                                      "WHERE id = ?"), (retried.reason, self._time(datetime.now(UTC)), letter.id))
                return "dead"
            con.execute(self._sql("DELETE FROM {dead} WHERE id = ?"), (letter.id,))
            return self._write(con, letter.source, [retried]).outcomes[0]

        return self._transaction(f"retrying dead letter {letter.id} of {letter.source}", work)


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    version INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    key TEXT,
    type TEXT,
    stream TEXT,
    headers TEXT NOT NULL DEFAULT '{}',
    payload BLOB NOT NULL,
    published_at TEXT,
    received_at TEXT NOT NULL,
    UNIQUE (source, message_id),
    UNIQUE (source, version)
);
CREATE INDEX IF NOT EXISTS events_source_position ON events (source, position);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    message_id TEXT NOT NULL,
    key TEXT,
    type TEXT,
    stream TEXT,
    headers TEXT NOT NULL DEFAULT '{}',
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    dead_at TEXT NOT NULL,
    UNIQUE (source, message_id)
);
CREATE TABLE IF NOT EXISTS streams (
    source TEXT PRIMARY KEY,
    version INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0,
    absorbed INTEGER NOT NULL DEFAULT 0,
    absorbed_at TEXT,
    absorb_error TEXT
);
"""


class SqliteEventStore(EventStore):
    """The store of a DuckDB warehouse: a SQLite file of its own in WAL mode (see the module notes)."""

    _tables = {"events": "events", "dead": "dead_letters", "streams": "streams"}
    _errors = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.where = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EventStoreError(f"cannot open the event store {path}: {exc}") from None
        con = self._con()
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SQLITE_SCHEMA)
        except sqlite3.Error as exc:
            raise EventStoreError(f"cannot open the event store {path}: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=True)
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA busy_timeout=60000")
        return con

    def _begin(self, con: sqlite3.Connection) -> None:
        con.execute("BEGIN IMMEDIATE")  # the writer's lock for the whole append

    def _rollback(self, con: sqlite3.Connection) -> None:
        if con.in_transaction:
            con.execute("ROLLBACK")


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS {events} (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source text NOT NULL,
    version bigint NOT NULL,
    message_id text NOT NULL,
    key text,
    type text,
    stream text,
    headers text NOT NULL DEFAULT '{{}}',
    payload bytea NOT NULL,
    published_at timestamptz,
    received_at timestamptz NOT NULL,
    UNIQUE (source, message_id),
    UNIQUE (source, version)
);
CREATE INDEX IF NOT EXISTS _hub_events_source_position ON {events} (source, position);
CREATE TABLE IF NOT EXISTS {dead} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source text NOT NULL,
    message_id text NOT NULL,
    key text,
    type text,
    stream text,
    headers text NOT NULL DEFAULT '{{}}',
    payload bytea NOT NULL,
    reason text NOT NULL,
    attempts integer NOT NULL,
    dead_at timestamptz NOT NULL,
    UNIQUE (source, message_id)
);
CREATE TABLE IF NOT EXISTS {streams} (
    source text PRIMARY KEY,
    version bigint NOT NULL DEFAULT 0,
    duplicates bigint NOT NULL DEFAULT 0,
    dead bigint NOT NULL DEFAULT 0,
    absorbed bigint NOT NULL DEFAULT 0,
    absorbed_at timestamptz,
    absorb_error text
)
"""


class PostgresEventStore(EventStore):
    """The store of a PostgreSQL warehouse: ``_hub_events``, ``_hub_dead_letters`` and ``_hub_streams`` in
    the warehouse's schema (see the module notes: a row lock per source orders its positions)."""

    _greatest = "greatest"
    _lock_row = " FOR UPDATE"
    _ts = "?::timestamptz"

    def __init__(self, url: str) -> None:
        import psycopg

        from hub.warehouse.postgres import sqlalchemy_url

        super().__init__()
        self._errors = (psycopg.Error,)
        sa_url, self.schema = sqlalchemy_url(url)
        self.url = url
        self.where = f"the event tables of {mask_url(url)}"
        self._conninfo = sa_url.set(drivername="postgresql").render_as_string(hide_password=False)
        schema = _ident(self.schema)
        self._tables = {k: f"{schema}.{_ident(v)}" for k, v in
                        (("events", "_hub_events"), ("dead", "_hub_dead_letters"), ("streams", "_hub_streams"))}
        con = self._con()
        try:
            with con.transaction():
                # one creator at a time: CREATE ... IF NOT EXISTS races between sessions otherwise
                con.execute("SELECT pg_advisory_xact_lock(hashtext('hub.events.schema'))")
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                for statement in _PG_SCHEMA.format(**self._tables).split(";"):
                    con.execute(statement)
        except psycopg.Error as exc:
            raise EventStoreError(f"cannot create {self.where}: {exc}") from None

    def _connect(self) -> Any:
        import psycopg

        con = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
        con.execute("SET TimeZone = 'UTC'")
        return con

    def _sql(self, sql: str) -> str:
        return super()._sql(sql).replace("?", "%s")

    def _time(self, when: datetime) -> Any:
        return when

    def _begin(self, con: Any) -> None:
        con.execute("BEGIN")  # the source's row lock is taken by _write (FOR UPDATE)

    def _rollback(self, con: Any) -> None:
        from psycopg.pq import TransactionStatus

        if con.broken or con.closed:
            self._local.con = None
            return
        if con.info.transaction_status != TransactionStatus.IDLE:
            with contextlib.suppress(Exception):
                con.execute("ROLLBACK")

    def _con(self) -> Any:
        con = getattr(self._local, "con", None)
        if con is not None and (con.closed or con.broken):
            self._local.con = None  # the server restarted or the connection was cut: connect again
        return super()._con()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def store_path(warehouse_url: str, root: Path) -> Path:
    """Where the SQLite store of a DuckDB warehouse lives: next to its file (``X.duckdb`` → ``X.events.sqlite``);
    an in-memory warehouse's in the project's ``.hub``."""
    raw = warehouse_url[len("duckdb:///"):].split("?", 1)[0]
    if raw in ("", ":memory:"):
        return root / ".hub" / "events.sqlite"
    path = Path(raw)
    return path.with_name(path.name.removesuffix(".duckdb") + ".events.sqlite")


_OPEN: dict[tuple[str, int], EventStore] = {}


def open_store(warehouse_url: str, root: Path) -> EventStore:
    """The event store of a warehouse (see the module notes on the layout): SQLite next to a DuckDB file,
    tables in the database of a PostgreSQL warehouse. A PostgreSQL store is opened once per process (its
    tables are checked once, its connections kept per thread)."""
    if warehouse_url.startswith("duckdb:"):
        return SqliteEventStore(store_path(warehouse_url, root))
    if warehouse_url.split("://", 1)[0] in ("postgresql", "postgresql+psycopg", "postgres"):
        key = (warehouse_url, os.getpid())
        store = _OPEN.get(key)
        if store is None:
            store = _OPEN[key] = PostgresEventStore(warehouse_url)
        return store
    raise EventStoreError(f"no event store for the warehouse {mask_url(warehouse_url)} (DuckDB and PostgreSQL "
                          "warehouses have one)")
